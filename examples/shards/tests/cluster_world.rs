//! The world service in cluster mode over real processes: two `shards --cluster <url>` nodes
//! on one PostgreSQL database (`PARTYROOM_TEST_POSTGRES_URL`; skipped when unset, except in
//! CI), each serving worlds, arena rooms and a shard gateway.
//!
//! What it shows: a world's registry is one, whichever node a change goes through (admin
//! requests, shard secrets, a gateway's reports, `/connect`); it is saved in PostgreSQL, and
//! when the node that owns the world is killed with SIGKILL, the other node serves the world
//! after the lease TTL with the same rooms and shards.
//!
//! The nodes are started by the arena's cluster test support (shared, not copied).

#[allow(dead_code)]
#[path = "../../arena/tests/support/cluster.rs"]
mod cluster;

use std::time::{Duration, Instant};

use cluster::{Cluster, HttpResponse, http, http_with_body, postgres_url, serial};
use futures_util::StreamExt;
use partyroom_world::auth::{Claims, sign};
use serde_json::{Value, json};

/// The binary the cluster support starts as its nodes.
const NODE_BIN: &str = env!("CARGO_BIN_EXE_shards");

/// The lease TTL of the test cluster (short, so that the failover is quick).
const LEASE_TTL: Duration = Duration::from_millis(1500);
const JWT_SECRET: &str = "cluster-world-jwt";
const SHARD_SECRET: &str = "cluster-world-shard";
const WORLD: &str = "world-default";

fn admin_token() -> String {
    sign(&Claims::new(&["*"], Duration::from_secs(3600)), JWT_SECRET)
}

/// `method /parties/world/<WORLD>/<path>` on `port` as an admin (or, with `shard`, with the
/// shard secret), with a JSON body for POSTs; its answer.
async fn world(port: u16, method: &str, path: &str, body: Option<Value>, shard: bool) -> Value {
    let token = format!("Bearer {}", admin_token());
    let mut headers = vec![("content-type", "application/json")];
    if shard {
        headers.push(("x-access-shard", SHARD_SECRET));
    } else {
        headers.push(("authorization", token.as_str()));
    }
    let path = format!("/parties/world/{WORLD}/{path}");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let r: HttpResponse = http_with_body(port, method, &path, &headers, &body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path} on port {port}: {e}"));
    assert_eq!(r.status, 200, "{method} {path} on port {port}: {r:?}");
    r.json()
}

/// `POST /parties/world/<WORLD>/connect` on `port` (no credentials); the shard id it names.
async fn connect(port: u16, body: Value) -> String {
    let path = format!("/parties/world/{WORLD}/connect");
    let r = http_with_body(
        port,
        "POST",
        &path,
        &[("content-type", "application/json")],
        &body.to_string(),
    )
    .await
    .unwrap_or_else(|e| panic!("POST {path} on port {port}: {e}"));
    assert_eq!(r.status, 200, "POST {path} on port {port}: {r:?}");
    r.json()["shardId"].as_str().unwrap_or_default().to_owned()
}

/// The world's shards and rooms, as an admin sees them through `port`.
async fn registry(port: u16) -> (Value, Value) {
    let shards = world(port, "GET", "shards", None, false).await["shards"].take();
    let rooms = world(port, "GET", "rooms", None, false).await["rooms"].take();
    (shards, rooms)
}

/// Poll `f` until it returns `Some`; panics with `what` after `within`.
async fn eventually<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not so after {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn world_registry_is_shared_by_the_nodes_and_survives_its_owner() {
    let Some(url) = postgres_url() else { return };
    let _serial = serial().await;
    let mut cluster = Cluster::start(
        &url,
        LEASE_TTL,
        &[
            "--jwt-secret",
            JWT_SECRET,
            "--shard-secret",
            SHARD_SECRET,
            "--worlds",
            WORLD,
            "--stats-interval-ms",
            "200",
            // The periodic cleanup runs (and must leave live shards alone) on every node.
            "--cleanup-interval-ms",
            "200",
        ],
        2,
    );
    let (a, b) = (cluster.node("n1").port(), cluster.node("n2").port());

    // (a) Changes through node A are seen through node B, and the other way round.
    world(
        a,
        "POST",
        "register-room",
        Some(json!({
            "name": "lobby",
            "balancingStrategy": "least-connections",
            "public": true,
            "maxPlayersPerShard": 10,
            "minShards": 2,
        })),
        false,
    )
    .await;
    let (shards, rooms) = registry(b).await;
    assert_eq!(rooms["lobby"]["maxPlayersPerShard"], 10, "{rooms}");
    let lobby: Vec<String> = shards
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, s)| s["roomId"] == "lobby")
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(lobby.len(), 2, "{shards}");
    // A shard reports through A (with the shard secret), another registers through B.
    world(
        a,
        "POST",
        "update-shard",
        Some(json!({"shardId": lobby[0], "connections": 7})),
        true,
    )
    .await;
    let registered = world(
        b,
        "POST",
        "register-shard",
        Some(json!({"shardId": "lobby:world-default:extra", "connections": 1})),
        true,
    )
    .await;
    assert_eq!(registered["registered"], true, "{registered}");
    let (shards, _) = registry(b).await;
    assert_eq!(shards[&lobby[0]]["currentConnections"], 7, "{shards}");
    let (shards, _) = registry(a).await;
    assert_eq!(
        shards["lobby:world-default:extra"]["currentConnections"], 1,
        "{shards}"
    );
    // `/connect` answers from the same registry on both nodes: the emptiest lobby shard
    // (`lobby[1]`, none), and an auto-created room made through B is known to A.
    for port in [a, b] {
        assert_eq!(connect(port, json!({"roomId": "lobby"})).await, lobby[1]);
    }
    let auto_shard = connect(b, json!({"roomId": "arena-1", "autoCreate": true})).await;
    assert!(
        auto_shard.starts_with("arena-1:world-default:"),
        "{auto_shard}"
    );
    let (shards, rooms) = registry(a).await;
    assert!(rooms.get("arena-1").is_some(), "{rooms}");
    assert!(shards.get(&auto_shard).is_some(), "{shards}");

    // A real client of that shard on node B: B's gateway relays it to the arena room and
    // reports it to the world (owned by whichever node), where A's admins see it.
    let (mut client, _) = tokio_tungstenite::connect_async(format!(
        "ws://127.0.0.1:{b}/parties/shard/{auto_shard}?id=player-1&name=player-1"
    ))
    .await
    .expect("shard socket through node B");
    assert!(client.next().await.is_some(), "the arena room answers");
    eventually(
        Duration::from_secs(10),
        "A sees B's gateway report",
        || async {
            let (shards, _) = registry(a).await;
            (shards[&auto_shard]["currentConnections"] == 1).then_some(())
        },
    )
    .await;

    // One owner for the world, in PostgreSQL.
    let pg = cluster.pg().await;
    let leases = pg.leases().await;
    let lease = leases
        .iter()
        .find(|l| l.party == "world" && l.room == WORLD)
        .unwrap_or_else(|| panic!("no lease of the world: {leases:?}"))
        .clone();
    assert!(lease.live, "{lease:?}");
    let owner = lease.owner.clone();
    let survivor = if owner == "n1" { "n2" } else { "n1" };
    assert!(
        cluster
            .node(&owner)
            .cluster_view()
            .await
            .rooms
            .iter()
            .any(|r| r.party == "world" && r.room == WORLD),
        "the owner lists the world"
    );

    // The registry as it is now (the client disconnects first), once PostgreSQL holds it:
    // the world saves at most 2 s after a change.
    drop(client);
    let before = eventually(Duration::from_secs(10), "the gateway reports 0", || async {
        let (shards, rooms) = registry(b).await;
        (shards[&auto_shard]["currentConnections"] == 0).then_some((shards, rooms))
    })
    .await;
    let saved = |rows: &[(String, Value)]| {
        let text = serde_json::to_string(rows).unwrap();
        text.contains("arena-1") && text.contains("lobby:world-default:extra")
    };
    eventually(Duration::from_secs(10), "the registry is saved", || async {
        let rows = pg.party_state_rows("world", WORLD).await;
        saved(&rows).then_some(())
    })
    .await;
    // Past the save throttle, so that the last report (0 connections) is stored too.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // (b) SIGKILL the owner: after the lease TTL the survivor serves the world, restored.
    let killed_at = Instant::now();
    cluster.remove(&owner).kill9();
    let port = cluster.node(survivor).port();
    let after = registry(port).await;
    let took = killed_at.elapsed();
    assert_eq!(after.1, before.1, "rooms after the failover");
    let ids = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(ids(&after.0), ids(&before.0), "shards after the failover");
    // Connection counts are live data, not saved: gateways report them again.
    for (id, shard) in before.0.as_object().unwrap() {
        for field in ["roomId", "worldId", "maxConnections", "status", "url"] {
            assert_eq!(after.0[id][field], shard[field], "{field} of shard {id}");
        }
    }
    let lease = pg
        .leases()
        .await
        .into_iter()
        .find(|l| l.party == "world" && l.room == WORLD)
        .unwrap();
    assert_eq!(lease.owner, survivor, "{lease:?}");
    assert!(lease.epoch > 0 && lease.live, "{lease:?}");
    eprintln!("world served again by {survivor} {took:?} after SIGKILL of {owner}");
    // And it goes on answering: `/connect` through the survivor, from the restored registry
    // (lobby[0] reports 7 again: the emptiest is still lobby[1]).
    world(
        port,
        "POST",
        "update-shard",
        Some(json!({"shardId": lobby[0], "connections": 7})),
        true,
    )
    .await;
    assert_eq!(connect(port, json!({"roomId": "lobby"})).await, lobby[1]);
    let health = http(port, "GET", "/healthz", &[]).await.unwrap();
    assert_eq!(health.status, 200);
    // The tables are dropped when `cluster` goes away (after its nodes are killed).
}
