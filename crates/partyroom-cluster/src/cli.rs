//! The command-line flags of a cluster node (feature `cli`), for programs built with
//! [clap](https://docs.rs/clap): flatten [`ClusterArgs`] into the program's arguments, then
//! [`ClusterArgs::join`] once the listener is bound.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use clap::Parser;
//! use partyroom_cluster::cli::ClusterArgs;
//!
//! #[derive(Parser)]
//! struct Args {
//!     #[command(flatten)]
//!     cluster: ClusterArgs,
//! }
//!
//! let args = Args::parse();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! if let Some(cluster) = args.cluster.join(listener.local_addr()?).await? {
//!     // Build the rooms with `cluster.storage()` and `cluster.placement()`...
//! #   drop(cluster);
//! }
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use crate::{Cluster, ClusterConfig, ClusterError};

/// The flags of cluster mode: `--cluster <postgres url>` (`PARTYROOM_CLUSTER`), `--node-id`,
/// `--advertise-url`, `--cluster-secret` (`PARTYROOM_CLUSTER_SECRET`), `--lease-ttl-ms` and
/// `--cluster-table-prefix`. Every flag but `--cluster` requires it.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct ClusterArgs {
    /// Cluster mode: run as one node of a cluster on this PostgreSQL database
    /// (`postgres://user:password@host/db`). Rooms are saved there instead of SQLite, each
    /// owned by one node at a time, and any node serves any room.
    #[arg(long, env = "PARTYROOM_CLUSTER")]
    pub cluster: Option<String>,
    /// Cluster mode: this node's id, unique in the cluster (default: a random one).
    #[arg(long, env = "PARTYROOM_NODE_ID", requires = "cluster")]
    pub node_id: Option<String>,
    /// Cluster mode: the address other nodes reach this one at (default: http:// and the
    /// bound address).
    #[arg(long, env = "PARTYROOM_ADVERTISE_URL", requires = "cluster")]
    pub advertise_url: Option<String>,
    /// Cluster mode: the secret nodes present to each other on relayed requests (required).
    #[arg(
        long,
        env = "PARTYROOM_CLUSTER_SECRET",
        requires = "cluster",
        hide_env_values = true
    )]
    pub cluster_secret: Option<String>,
    /// Cluster mode: how long a room's lease lasts without renewal, in milliseconds; a
    /// crashed node's rooms come back on another node about this long after the crash.
    #[arg(long, default_value_t = 3000, requires = "cluster")]
    pub lease_ttl_ms: u64,
    /// Cluster mode: prefix of the cluster's tables (`<prefix>_state`, `_leases`, `_members`).
    #[arg(long, default_value = "partyroom", requires = "cluster")]
    pub cluster_table_prefix: String,
}

impl Default for ClusterArgs {
    /// No cluster (the flags' defaults).
    fn default() -> Self {
        Self {
            cluster: None,
            node_id: None,
            advertise_url: None,
            cluster_secret: None,
            lease_ttl_ms: 3000,
            cluster_table_prefix: "partyroom".into(),
        }
    }
}

/// Why the flags could not make this process a cluster node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// `--cluster` without a (non-empty) secret.
    #[error("--cluster needs --cluster-secret (or PARTYROOM_CLUSTER_SECRET)")]
    MissingSecret,
    /// No `--advertise-url`, and the bound address is no address other nodes can reach.
    #[error("--cluster with --host {0}: set --advertise-url to an address other nodes can reach")]
    NoAdvertiseUrl(std::net::IpAddr),
    /// The node could not join the cluster.
    #[error("joining the cluster")]
    Connect(#[source] ClusterError),
}

impl ClusterArgs {
    /// Whether cluster mode is on (`--cluster` was given).
    pub fn enabled(&self) -> bool {
        self.cluster.is_some()
    }

    /// The settings of the node the flags describe, listening on `addr`: a random node id
    /// when none is given, and `http://<addr>` as its address unless `addr` is unspecified
    /// (`0.0.0.0`), which needs `--advertise-url`.
    pub fn config(&self, addr: SocketAddr) -> Result<ClusterConfig, JoinError> {
        let secret = self
            .cluster_secret
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or(JoinError::MissingSecret)?;
        let node_id = self
            .node_id
            .clone()
            .unwrap_or_else(|| format!("node-{:08x}", fastrand::u32(..)));
        let advertise = match &self.advertise_url {
            Some(url) => url.clone(),
            None if addr.ip().is_unspecified() => return Err(JoinError::NoAdvertiseUrl(addr.ip())),
            None => format!("http://{addr}"),
        };
        let mut config = ClusterConfig::new(node_id, advertise, secret);
        config.lease_ttl = Duration::from_millis(self.lease_ttl_ms);
        config.table_prefix = self.cluster_table_prefix.clone();
        Ok(config)
    }

    /// Join the cluster on the `--cluster` database as the node the flags describe,
    /// listening on `addr`; `None` without `--cluster`.
    pub async fn join(&self, addr: SocketAddr) -> Result<Option<Cluster>, JoinError> {
        let Some(url) = &self.cluster else {
            return Ok(None);
        };
        let config = self.config(addr)?;
        let cluster = Cluster::connect(url, config)
            .await
            .map_err(JoinError::Connect)?;
        let config = cluster.config();
        tracing::info!(node = %config.node_id, url = %config.advertise_url, "cluster node");
        Ok(Some(cluster))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Args {
        #[command(flatten)]
        cluster: ClusterArgs,
    }

    fn parse(args: &[&str]) -> Result<ClusterArgs, clap::Error> {
        Args::try_parse_from(std::iter::once("node").chain(args.iter().copied())).map(|a| a.cluster)
    }

    #[test]
    fn defaults_mean_no_cluster() {
        let args = parse(&[]).unwrap();
        assert_eq!(args, ClusterArgs::default());
        assert!(!args.enabled());
    }

    #[test]
    fn node_flags_require_cluster() {
        assert!(parse(&["--node-id", "a"]).is_err());
        assert!(parse(&["--lease-ttl-ms", "1500"]).is_err());
    }

    #[test]
    fn config_from_flags() {
        let args = parse(&[
            "--cluster",
            "postgres://db/x",
            "--node-id",
            "n1",
            "--cluster-secret",
            "s",
            "--lease-ttl-ms",
            "1500",
            "--cluster-table-prefix",
            "t1",
        ])
        .unwrap();
        let config = args.config("127.0.0.1:4000".parse().unwrap()).unwrap();
        assert_eq!(config.node_id, "n1");
        assert_eq!(config.advertise_url, "http://127.0.0.1:4000");
        assert_eq!(config.lease_ttl, Duration::from_millis(1500));
        assert_eq!(config.table_prefix, "t1");
    }

    #[test]
    fn config_needs_a_secret_and_a_reachable_address() {
        let mut args = ClusterArgs {
            cluster: Some("postgres://db/x".into()),
            ..ClusterArgs::default()
        };
        let addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert!(matches!(args.config(addr), Err(JoinError::MissingSecret)));
        args.cluster_secret = Some(String::new());
        assert!(matches!(args.config(addr), Err(JoinError::MissingSecret)));
        args.cluster_secret = Some("s".into());
        assert!(matches!(
            args.config("0.0.0.0:4000".parse().unwrap()),
            Err(JoinError::NoAdvertiseUrl(_))
        ));
        args.advertise_url = Some("http://10.0.0.1:4000".into());
        let config = args.config("0.0.0.0:4000".parse().unwrap()).unwrap();
        assert_eq!(config.advertise_url, "http://10.0.0.1:4000");
        assert!(config.node_id.starts_with("node-"));
    }
}
