//! A node refuses to join with settings it cannot work with, with a clear error and before
//! (or instead of) touching any database; an unreachable database fails within the TTL.

use std::time::{Duration, Instant};

use partyroom_cluster::{Cluster, ClusterConfig, ClusterError};

/// A database URL nothing listens on (the discard port of loopback).
const NOWHERE: &str = "postgres://postgres@127.0.0.1:9/partyroom";

fn config() -> ClusterConfig {
    ClusterConfig::new("node-a", "http://127.0.0.1:3000", "secret")
}

async fn refused(url: &str, config: ClusterConfig) -> ClusterError {
    match Cluster::connect(url, config).await {
        Ok(_) => panic!("joined with bad settings"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn settings_are_checked_before_the_database() {
    let mut c = config();
    c.node_id = String::new();
    assert!(matches!(refused(NOWHERE, c).await, ClusterError::Config(_)));

    let mut c = config();
    c.secret = String::new();
    assert!(matches!(refused(NOWHERE, c).await, ClusterError::Config(_)));

    let mut c = config();
    c.lease_ttl = Duration::from_millis(299);
    let e = refused(NOWHERE, c).await;
    assert!(matches!(e, ClusterError::Config(_)), "{e}");
    assert!(e.to_string().contains("lease TTL"), "{e}");

    for url in ["https://10.0.0.1:3000", "10.0.0.1:3000", "http://a/b", ""] {
        let mut c = config();
        c.advertise_url = url.into();
        let e = refused(NOWHERE, c).await;
        assert!(
            matches!(e, ClusterError::Config(_)),
            "advertise {url:?}: {e}"
        );
    }

    // Table names are checked before a connection is made.
    let mut c = config();
    c.table_prefix = "bad; DROP TABLE x".into();
    assert!(matches!(refused(NOWHERE, c).await, ClusterError::Open(_)));
}

#[tokio::test]
async fn a_malformed_or_unreachable_database_is_an_error_within_the_ttl() {
    let e = refused("not a url at all ://", config()).await;
    assert!(matches!(e, ClusterError::Open(_)), "{e}");

    let mut c = config();
    c.lease_ttl = Duration::from_millis(500);
    let started = Instant::now();
    let e = refused(NOWHERE, c).await;
    assert!(matches!(e, ClusterError::Open(_)), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "gave up after {:?}",
        started.elapsed()
    );
}
