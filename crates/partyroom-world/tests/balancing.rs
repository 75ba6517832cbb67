//! Shard assignment over a real `--role all` process: the three strategies, auto-creation,
//! capacity, draining and scale-down, and HTTP through a shard.

mod support;

use std::collections::{BTreeSet, HashMap};

use http::{Method, StatusCode};
use serde_json::json;
use support::*;

const W: &str = "world-default";

fn room(
    name: &str,
    strategy: &str,
    per_shard: u32,
    min: u32,
    max: Option<u32>,
) -> serde_json::Value {
    let mut r = json!({
        "name": name, "balancingStrategy": strategy, "public": true,
        "maxPlayersPerShard": per_shard, "minShards": min,
    });
    if let Some(max) = max {
        r["maxShards"] = json!(max);
    }
    r
}

async fn room_shards(p: &Proc, room: &str) -> Vec<String> {
    shards(p, W, Some(room)).await.keys().cloned().collect()
}

#[tokio::test]
async fn round_robin_goes_around_and_survives_full_shards() {
    let p = Proc::spawn(&[]);
    register_room(&p, W, room("rr", "round-robin", 2, 3, None)).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(connect(&p, W, "rr").await);
    }
    let distinct: BTreeSet<_> = ids[..3].iter().collect();
    assert_eq!(distinct.len(), 3, "{ids:?}");
    assert_eq!(ids[3], ids[0]);
    // Fill two shards with real clients: the available list shrinks to one shard, and the
    // counter (now past it) must not crash the assignment (the original answered 500).
    let mut clients = Vec::new();
    for (i, shard) in ids[..2].iter().enumerate() {
        for j in 0..2 {
            clients.push(shard_client(&p, shard, &format!("rr-{i}-{j}")).await);
        }
        wait_connections(&p, W, shard, 2).await;
    }
    for _ in 0..3 {
        assert_eq!(connect(&p, W, "rr").await, ids[2]);
    }
    for c in clients {
        c.close().await;
    }
}

#[tokio::test]
async fn least_connections_picks_the_emptiest_shard_with_room() {
    let p = Proc::spawn(&[]);
    register_room(&p, W, room("lc", "least-connections", 3, 3, None)).await;
    let ids = room_shards(&p, "lc").await;
    assert_eq!(ids.len(), 3);
    let mut clients = Vec::new();
    // 3 (full), 1, 2 connections.
    for (shard, n) in ids.iter().zip([3, 1, 2]) {
        for j in 0..n {
            clients.push(shard_client(&p, shard, &format!("{shard}-{j}").replace(':', "_")).await);
        }
        wait_connections(&p, W, shard, n).await;
    }
    for _ in 0..3 {
        assert_eq!(connect(&p, W, "lc").await, ids[1]);
    }
    for c in clients {
        c.close().await;
    }
}

#[tokio::test]
async fn random_spreads_over_every_shard() {
    let p = Proc::spawn(&[]);
    register_room(&p, W, room("rnd", "random", 75, 5, None)).await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..60 {
        *counts.entry(connect(&p, W, "rnd").await).or_default() += 1;
    }
    assert!(counts.len() > 1, "{counts:?}");
    assert!(counts.values().all(|&n| n <= 30), "{counts:?}");
    // The assignment alone changes no count and creates no shard.
    assert_eq!(room_shards(&p, "rnd").await.len(), 5);
}

#[tokio::test]
async fn auto_create_capacity_and_limits() {
    let p = Proc::spawn(&["--max-auto-rooms", "3"]);
    // An unknown room is created with one shard.
    let first = connect(&p, W, "auto").await;
    assert!(first.starts_with("auto:world-default:"), "{first}");
    assert_eq!(room_shards(&p, "auto").await, vec![first.clone()]);
    // Without autoCreate: 404 for a missing room.
    let (status, body) = world_post(
        &p,
        W,
        "connect",
        json!({"roomId": "ghost", "autoCreate": false}),
        &[],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("Room ghost does not exist"))
    );
    // Bad requests.
    for (body, error) in [
        ("", "Request body is empty"),
        ("{", "Invalid JSON in request body"),
        ("null", "roomId parameter is required"),
        ("{}", "roomId parameter is required"),
    ] {
        let r = partyroom_world::http_client::send(
            &p.base,
            Method::POST,
            "/parties/world/world-default/connect",
            Default::default(),
            bytes::Bytes::from(body),
            std::time::Duration::from_secs(5),
            1 << 20,
        )
        .await
        .unwrap();
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(r.error_message().as_deref(), Some(error));
    }
    // Names that would corrupt the registry or shard ids are refused.
    for bad in ["a.b", "a:b", "a b", &"x".repeat(65)] {
        let (status, _) = world_post(&p, W, "connect", json!({"roomId": bad}), &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }
    // Capacity: one player per shard, two shards at most.
    register_room(&p, W, room("cap", "round-robin", 1, 1, Some(2))).await;
    let a = connect(&p, W, "cap").await;
    let ca = shard_client(&p, &a, "cap-a").await;
    wait_connections(&p, W, &a, 1).await;
    let b = connect(&p, W, "cap").await;
    assert_ne!(a, b, "a full shard gets a new one next to it");
    let cb = shard_client(&p, &b, "cap-b").await;
    wait_connections(&p, W, &b, 1).await;
    let (status, body) = world_post(&p, W, "connect", json!({"roomId": "cap"}), &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "No shard capacity available for room cap");
    // The world creates rooms by itself only up to its limit (auto, cap and one more).
    connect(&p, W, "third").await;
    let (status, body) = world_post(&p, W, "connect", json!({"roomId": "fourth"}), &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("World room limit reached")
        )
    );
    ca.close().await;
    cb.close().await;
}

#[tokio::test]
async fn draining_and_scale_down() {
    let p = Proc::spawn(&[]);
    register_room(&p, W, room("drain", "round-robin", 75, 2, Some(4))).await;
    let ids = room_shards(&p, "drain").await;
    let client = shard_client(&p, &ids[0], "drainer").await;
    wait_connections(&p, W, &ids[0], 1).await;
    // An admin drains the shard: no new client goes there; it stays while it has one.
    let (status, body) = world_post(
        &p,
        W,
        "update-shard",
        json!({"shardId": ids[0], "connections": 1, "status": "draining"}),
        &admin(W),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for _ in 0..4 {
        assert_eq!(connect(&p, W, "drain").await, ids[1]);
    }
    assert_eq!(
        shards(&p, W, Some("drain")).await[&ids[0]]["status"],
        "draining"
    );
    // The last client leaves: the gateway reports 0 and the world removes the shard.
    client.close().await;
    eventually(10, "the drained shard to go", || async {
        (!shards(&p, W, Some("drain")).await.contains_key(&ids[0])).then_some(())
    })
    .await;
    // Scale up with a template, then down: empty shards go at once.
    let scale = |n: u32| json!({"roomId": "drain", "targetShardCount": n, "shardTemplate": {"urlTemplate": "{shardId}", "maxConnections": 10}});
    let (status, _) = world_post(&p, W, "scale-room", scale(4), &admin(W)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(room_shards(&p, "drain").await.len(), 4);
    let (status, body) = world_post(&p, W, "scale-room", scale(5), &admin(W)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["error"],
        "Cannot scale beyond maximum allowed shards (4)"
    );
    let (status, _) = world_post(&p, W, "scale-room", scale(1), &admin(W)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(room_shards(&p, "drain").await.len(), 1);
    // Stats for a shard the world dropped: 404 (the gateway registers it again if it has
    // clients; see the process tests).
    let (status, body) = update_shard(&p, W, json!({"shardId": ids[0], "connections": 0})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], format!("Shard {} not found", ids[0]));
}

#[tokio::test]
async fn shards_relay_http_and_play_the_room() {
    let p = Proc::spawn(&[]);
    let shard = connect(&p, W, "play").await;
    // HTTP through the shard reaches the room's own route (no doubled path).
    let (status, body) = request(
        &p,
        Method::GET,
        &format!("/parties/shard/{shard}/count"),
        None,
        &[],
    )
    .await;
    assert_eq!((status, body), (StatusCode::OK, json!({"count": 0})));
    let (status, _) = request(
        &p,
        Method::GET,
        &format!("/parties/shard/{shard}/nope"),
        None,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Two clients through the shard share the room with a direct client.
    let mut a = shard_client(&p, &shard, "player-a").await;
    let mut direct = ws(p.port, "/parties/main/play?id=player-d", &[])
        .await
        .unwrap();
    direct.next().await.unwrap();
    a.emit("increment", json!({"amount": 5})).await;
    direct
        .wait_for("count 5", |v| v["value"]["count"] == 5)
        .await;
    a.wait_for("count 5", |v| v["value"]["count"] == 5).await;
    let (_, body) = request(
        &p,
        Method::GET,
        &format!("/parties/shard/{shard}/count"),
        None,
        &[],
    )
    .await;
    assert_eq!(body, json!({"count": 5}));
    // Reconnecting with the same session id through the shard keeps the user.
    let pid = a.frames[0]["value"]["pId"].clone();
    a.close().await;
    let again = shard_client(&p, &shard, "player-a").await;
    assert_eq!(again.frames[0]["value"]["pId"], pid);
    // Shard ids that are not valid are refused before anything is opened.
    assert_eq!(
        ws(p.port, "/parties/shard/a.b:world-default:1", &[])
            .await
            .err(),
        Some(StatusCode::BAD_REQUEST)
    );
    again.close().await;
}
