//! Cluster mode's metrics, through the [`metrics`] facade (recorded at each event: they are
//! rare next to messages).
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `partyroom_cluster_leases_held` | gauge | | leases this node holds (rooms it owns), as of the last renewal tick (every TTL/3) |
//! | `partyroom_cluster_lease_claims_total` | counter | | rooms claimed by this node |
//! | `partyroom_cluster_leases_released_total` | counter | | leases released after their room unloaded or at drain |
//! | `partyroom_cluster_leases_lost_total` | counter | `why` | leases lost: `not renewed in time`, `lease taken over` |
//! | `partyroom_cluster_renewal_failures_total` | counter | | renewals that failed or timed out |
//! | `partyroom_cluster_heartbeat_failures_total` | counter | | heartbeats that failed or timed out |

/// `partyroom_cluster_leases_held`.
pub const LEASES_HELD: &str = "partyroom_cluster_leases_held";
/// `partyroom_cluster_lease_claims_total`.
pub const LEASE_CLAIMS: &str = "partyroom_cluster_lease_claims_total";
/// `partyroom_cluster_leases_released_total`.
pub const LEASES_RELEASED: &str = "partyroom_cluster_leases_released_total";
/// `partyroom_cluster_leases_lost_total`.
pub const LEASES_LOST: &str = "partyroom_cluster_leases_lost_total";
/// `partyroom_cluster_renewal_failures_total`.
pub const RENEWAL_FAILURES: &str = "partyroom_cluster_renewal_failures_total";
/// `partyroom_cluster_heartbeat_failures_total`.
pub const HEARTBEAT_FAILURES: &str = "partyroom_cluster_heartbeat_failures_total";

/// Describe cluster mode's metrics to the installed recorder.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!(LEASES_HELD, "Leases this node holds");
    describe_counter!(LEASE_CLAIMS, "Rooms claimed by this node");
    describe_counter!(LEASES_RELEASED, "Leases released by this node");
    describe_counter!(LEASES_LOST, "Leases lost by this node, by reason");
    describe_counter!(RENEWAL_FAILURES, "Lease renewals that failed or timed out");
    describe_counter!(HEARTBEAT_FAILURES, "Heartbeats that failed or timed out");
}
