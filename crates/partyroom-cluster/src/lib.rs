//! Cluster mode: N identical partyroom nodes on one PostgreSQL database.
//!
//! - **Membership.** Each node registers its id and advertised address and heartbeats
//!   ([`partyroom_storage::Members`]); a node silent for the lease TTL is dead.
//! - **Ownership.** A room has at most one owner at a time: a lease row with an epoch
//!   ([`partyroom_storage::Leases`]), claimed by the first node asked for the room and renewed
//!   while the room is loaded ([`ownership`]). A room is started only after its lease is
//!   claimed, and released once it has unloaded (saved).
//! - **Fencing.** Every write of a room goes through [`FencedStorage`]: one transaction that
//!   checks and share-locks the lease. A node that lost the lease (expired during a pause, or
//!   claimed by another node) has its writes refused, never applied, and drops the room: its
//!   clients are closed with 1012 and reconnect.
//! - **Routing.** [`Cluster`] is the rooms' [`Placement`](partyroom_room::Placement): the
//!   server relays a request for a room owned elsewhere to its owner (see
//!   `partyroom_server`'s owner relay), so any node serves any room URL.
//!
//! ```no_run
//! # async fn demo(builder: partyroom_room::RoomsBuilder) -> Result<(), Box<dyn std::error::Error>> {
//! use partyroom_cluster::{Cluster, ClusterConfig};
//! let config = ClusterConfig::new("node-1", "http://10.0.0.1:3000", "cluster-secret");
//! let cluster = Cluster::connect("postgres://partyroom@db/partyroom", config).await?;
//! let rooms = builder
//!     .storage(cluster.storage())
//!     .placement(cluster.placement())
//!     .build();
//! cluster.start(rooms.clone());
//! // ... serve `rooms` (with `cluster.server_config(...)`), then on SIGTERM:
//! cluster.drain().await;
//! # Ok(()) }
//! ```

#[cfg(feature = "cli")]
pub mod cli;
mod config;
mod fenced_storage;
mod forward;
mod handoff;
pub mod metrics;
pub mod ownership;
mod status;
mod upkeep;

pub use config::ClusterConfig;
pub use fenced_storage::FencedStorage;
pub use ownership::Cluster;

/// Why a node could not join its cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The database could not be opened, or a table could not be created.
    #[error("cluster database: {0}")]
    Open(#[from] partyroom_storage::OpenError),
    /// The first heartbeat failed.
    #[error("registering the node: {0}")]
    Register(#[from] partyroom_storage::StorageError),
    /// A setting is invalid.
    #[error("invalid cluster setting: {0}")]
    Config(String),
}
