//! The Rust client's `connect_world` through a world, a shard gateway and the arena, served
//! in-process on loopback by the same code as the `shards` example.

use std::time::Duration;

use clap::Parser;
use partyroom_client::{WorldError, WorldOptions, connect_world};
use partyroom_world::cli::{App, Args, serve_on};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

async fn start() -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let args = Args::parse_from([
        "shards",
        "--jwt-secret",
        "jwt",
        "--shard-secret",
        "shard",
        "--stats-interval-ms",
        "200",
    ]);
    let app = App {
        rooms: Box::new(|b| b.room::<partyroom_arena::Arena>("main").unwrap()),
        pages: axum::Router::new(),
    };
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move { serve_on(listener, args, app, token).await.unwrap() });
    (url, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_world_plays_the_arena_through_a_shard() {
    let (host, stop) = start().await;
    let conn = connect_world(
        WorldOptions::new(host.clone(), "rust-arena").client(|c| c.query("name", "Rusty")),
    )
    .await
    .expect("connected through the world");
    assert!(
        conn.shard.shard_id.starts_with("rust-arena:world-default:"),
        "{:?}",
        conn.shard
    );
    assert_eq!(conn.shard.url, conn.shard.shard_id);
    let client = conn.client;
    let me = client.pid().expect("pId");
    client
        .wait_for(|s| s["players"][&me]["name"] == "Rusty", WAIT)
        .await
        .unwrap();
    // Walk onto the star and collect it.
    let state = client.state();
    let (x, y) = (
        state["star"]["x"].as_f64().unwrap(),
        state["star"]["y"].as_f64().unwrap(),
    );
    client.emit("move", json!({"x": x, "y": y})).unwrap();
    client
        .wait_for(|s| s["players"][&me]["x"] == x, WAIT)
        .await
        .unwrap();
    client.emit("collect", ()).unwrap();
    client
        .wait_for(|s| s["players"][&me]["score"] == 1, WAIT)
        .await
        .unwrap();

    // A second player in another world lands in the same arena room through its own shard.
    let other = connect_world(
        WorldOptions::new(host.clone(), "rust-arena")
            .world_id("world-eu")
            .client(|c| c.query("name", "Eve")),
    )
    .await
    .unwrap();
    assert!(other.shard.shard_id.starts_with("rust-arena:world-eu:"));
    client
        .wait_for(
            |s| s["players"].as_object().is_some_and(|p| p.len() == 2),
            WAIT,
        )
        .await
        .unwrap();

    // The world's refusals reach the client as they are.
    let err = connect_world(WorldOptions::new(host, "bad.name").retry_count(1))
        .await
        .unwrap_err();
    match err {
        WorldError::Service { status, message } => {
            assert_eq!(status, 400);
            assert!(message.starts_with("Invalid roomId"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    client.close();
    other.client.close();
    stop.cancel();
}
