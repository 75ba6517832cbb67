//! The parts in separate processes: a shard gateway killed and its shards cleaned up, a new
//! gateway whose clients bring the shard back, several worlds kept apart.

mod support;

use http::{Method, StatusCode};
use serde_json::json;
use support::*;

#[tokio::test]
async fn killed_gateway_shards_are_cleaned_up_and_come_back() {
    let world = Proc::spawn(&[
        "--role",
        "world,rooms",
        "--heartbeat-timeout-ms",
        "1500",
        "--cleanup-interval-ms",
        "200",
    ]);
    let gateway_args = |w: &Proc| {
        vec![
            "--role".to_owned(),
            "shards".to_owned(),
            "--main-url".to_owned(),
            w.url(),
            "--world-url".to_owned(),
            w.url(),
        ]
    };
    let args = gateway_args(&world);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut gateway = Proc::spawn(&args);
    let w = "world-default";
    // The gateway relays /parties/world/... too, so one address serves connectionWorld.
    let shard = connect(&gateway, w, "kill").await;
    assert!(shard.starts_with("kill:world-default:"));
    let mut admin_ws = ws(
        world.port,
        &format!("/parties/world/{w}?world-auth-token={}", token(&[w])),
        &[],
    )
    .await
    .unwrap();
    admin_ws.next().await.unwrap();
    let client = shard_client(&gateway, &shard, "survivor").await;
    wait_connections(&world, w, &shard, 1).await;
    // Heartbeats keep the shard alive past the timeout.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert!(shards(&world, w, None).await.contains_key(&shard));

    gateway.kill();
    drop(client);
    // No request reaches the world: the periodic cleanup removes the silent shard, and admins
    // see it go.
    admin_ws
        .wait_for("the shard's removal", |v| {
            v["value"]["shards"][&shard] == "$delete"
        })
        .await;
    assert!(!shards(&world, w, None).await.contains_key(&shard));

    // A new gateway: a client that reconnects to the same shard brings it back.
    let gateway = Proc::spawn(&args);
    let client = shard_client(&gateway, &shard, "survivor").await;
    wait_connections(&world, w, &shard, 1).await;
    let info = &shards(&world, w, None).await[&shard];
    assert_eq!(
        (info["status"].as_str(), info["roomId"].as_str()),
        (Some("active"), Some("kill"))
    );
    assert!(
        gateway.logs().contains("registered again"),
        "{}",
        gateway.logs()
    );
    // And it is assigned again.
    assert_eq!(connect(&gateway, w, "kill").await, shard);
    client.close().await;
    // With no client left the gateway reports 0 and keeps the shard alive.
    wait_connections(&world, w, &shard, 0).await;
}

#[tokio::test]
async fn worlds_are_isolated() {
    let p = Proc::spawn(&["--worlds", "world-default,world-eu"]);
    let d = connect(&p, "world-default", "shared").await;
    let e = connect(&p, "world-eu", "shared").await;
    assert!(d.starts_with("shared:world-default:") && e.starts_with("shared:world-eu:"));
    let eu = shards(&p, "world-eu", None).await;
    assert_eq!(eu.keys().collect::<Vec<_>>(), vec![&e]);
    assert_eq!(eu[&e]["worldId"], "world-eu");
    assert!(!shards(&p, "world-default", None).await.contains_key(&e));
    // A client of each world's shard ends up in the same main room, and each world counts
    // its own shard.
    let a = shard_client(&p, &d, "iso-a").await;
    let b = shard_client(&p, &e, "iso-b").await;
    wait_connections(&p, "world-default", &d, 1).await;
    wait_connections(&p, "world-eu", &e, 1).await;
    // Stats and tokens do not cross worlds.
    let (status, _) = update_shard(&p, "world-eu", json!({"shardId": d, "connections": 5})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = update_shard(
        &p,
        "world-default",
        json!({"shardId": d, "worldId": "world-eu", "connections": 5}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = request(
        &p,
        Method::GET,
        "/parties/world/world-eu/shards",
        None,
        &admin("world-default"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = world_post(
        &p,
        "world-eu",
        "register-shard",
        json!({"shardId": "shared:world-default:x", "connections": 1}),
        &shard_secret(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Worlds that are not served do not exist.
    let (status, _) = world_post(&p, "world-xyz", "connect", json!({"roomId": "a"}), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    a.close().await;
    b.close().await;
}
