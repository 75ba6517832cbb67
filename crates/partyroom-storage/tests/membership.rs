//! Cluster membership on a real PostgreSQL (`PARTYROOM_TEST_POSTGRES_URL`; required when
//! `CI=true`): nodes are alive while they heartbeat, dead after the TTL, gone when they leave.
#![cfg(feature = "postgres")]

use std::time::Duration;

use partyroom_storage::{Members, PostgresStorage};

mod support;
use support::postgres::{drop_table, postgres_url, table_name};

async fn alive_ids(members: &Members, ttl: Duration) -> Vec<String> {
    let alive = members.alive(ttl).await.unwrap();
    alive.into_iter().map(|m| m.node).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_alive_while_they_heartbeat() {
    let Some(url) = postgres_url() else { return };
    let (data, table) = (table_name("members_data"), table_name("members"));
    let store = PostgresStorage::connect(&url, &data).await.unwrap();
    let members = Members::open(store.pool().clone(), &table).await.unwrap();
    let ttl = Duration::from_millis(1_000);

    members
        .heartbeat("node-a", "http://127.0.0.1:4001")
        .await
        .unwrap();
    members
        .heartbeat("node-b", "http://127.0.0.1:4002")
        .await
        .unwrap();
    let alive = members.alive(ttl).await.unwrap();
    let ids: Vec<&str> = alive.iter().map(|m| m.node.as_str()).collect();
    assert_eq!(ids, ["node-a", "node-b"]);
    assert!(alive.iter().all(|m| m.silent_for < ttl), "{alive:?}");

    // node-b keeps beating, node-a goes silent past the TTL: dead.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        members
            .heartbeat("node-b", "http://127.0.0.1:4002")
            .await
            .unwrap();
    }
    assert_eq!(alive_ids(&members, ttl).await, ["node-b"]);
    assert_eq!(members.get("node-a", ttl).await.unwrap(), None);
    // With a longer TTL it is still listed: death is a reader's verdict, not a deletion.
    assert!(
        members
            .get("node-a", Duration::from_secs(60))
            .await
            .unwrap()
            .is_some()
    );

    // A restarted node comes back, at its new address.
    members
        .heartbeat("node-a", "http://127.0.0.1:4011")
        .await
        .unwrap();
    let a = members.get("node-a", ttl).await.unwrap().unwrap();
    assert_eq!(a.url, "http://127.0.0.1:4011");

    // Leaving takes it out at once.
    assert!(members.leave("node-b").await.unwrap());
    assert!(!members.leave("node-b").await.unwrap());
    assert_eq!(alive_ids(&members, ttl).await, ["node-a"]);
    drop(members);
    drop(store);
    drop_table(&url, &table).await;
    drop_table(&url, &data).await;
}
