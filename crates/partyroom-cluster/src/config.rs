//! The settings of a cluster node.

use std::time::Duration;

/// Settings of one node.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's id, unique in the cluster.
    pub node_id: String,
    /// Where other nodes reach this one (`http://host:port`).
    pub advertise_url: String,
    /// The secret nodes present to each other on relayed requests.
    pub secret: String,
    /// How long a lease (and a heartbeat) lasts without renewal. A crashed node's rooms are
    /// served again by another node about this long after the crash. Default 3 s.
    pub lease_ttl: Duration,
    /// Prefix of the tables: `<prefix>_state`, `<prefix>_leases`, `<prefix>_members`.
    /// Default `partyroom`.
    pub table_prefix: String,
    /// Timeout of room-to-room requests to other nodes. Default 10 s.
    pub request_timeout: Duration,
}

impl ClusterConfig {
    /// A node with default settings.
    pub fn new(
        node_id: impl Into<String>,
        advertise_url: impl Into<String>,
        secret: impl Into<String>,
    ) -> Self {
        Self {
            node_id: node_id.into(),
            advertise_url: advertise_url.into(),
            secret: secret.into(),
            lease_ttl: Duration::from_secs(3),
            table_prefix: "partyroom".into(),
            request_timeout: Duration::from_secs(10),
        }
    }

    /// Renew leases and heartbeat this often: a third of the TTL, so that two renewals may
    /// fail before a lease is lost.
    pub fn renew_every(&self) -> Duration {
        self.lease_ttl / 3
    }

    /// How long this node trusts a lease after the renewal that granted it began: the TTL
    /// less a tenth, so that it stops serving a room before the database lets another node
    /// claim it even if its clock runs a little slow.
    pub fn trusted_for(&self) -> Duration {
        self.lease_ttl - self.lease_ttl / 10
    }

    pub(crate) fn table(&self, what: &str) -> String {
        format!("{}_{what}", self.table_prefix)
    }
}
