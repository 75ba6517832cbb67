//! (h) connect_world against a fake world endpoint (axum) served next to real arena rooms in
//! parties `main` and `shard`.

mod support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use partyroom::prelude::{Rooms, Server};
use partyroom::storage::MemoryStorage;
use partyroom_arena::Arena;
use partyroom_client::{WorldError, WorldOptions, connect_world, request_shard};
use serde_json::{Value, json};
use support::{TestServer, WAIT, fast_policy, free_port, http_get};

/// What the fake world answers, and what it was asked.
#[derive(Clone, Default)]
struct Script {
    calls: Arc<Mutex<Vec<(String, Value)>>>,
    answers: Arc<Mutex<VecDeque<(u16, String)>>>,
    default: Arc<Mutex<Option<(u16, String)>>>,
}

impl Script {
    fn new(default: (u16, Value)) -> Self {
        let s = Script::default();
        *s.default.lock().unwrap() = Some((default.0, default.1.to_string()));
        s
    }

    fn then(self, status: u16, body: &str) -> Self {
        self.answers
            .lock()
            .unwrap()
            .push_back((status, body.to_owned()));
        self
    }

    fn calls(&self) -> Vec<(String, Value)> {
        self.calls.lock().unwrap().clone()
    }
}

async fn world_connect(
    State(script): State<Script>,
    Path(world): Path<String>,
    body: String,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let parsed = serde_json::from_str(&body).unwrap_or(Value::Null);
    script.calls.lock().unwrap().push((world, parsed));
    let next = script.answers.lock().unwrap().pop_front();
    let (status, body) = next
        .or_else(|| script.default.lock().unwrap().clone())
        .unwrap();
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        body,
    )
}

async fn start(script: &Script) -> TestServer {
    let storage = Arc::new(MemoryStorage::new());
    let rooms = Rooms::builder()
        .room::<Arena>("main")
        .unwrap()
        .room::<Arena>("shard")
        .unwrap()
        .storage(storage.clone())
        .build();
    let world = Router::new()
        .route(
            "/parties/world/{world}/connect",
            axum::routing::post(world_connect),
        )
        .with_state(script.clone());
    TestServer::serve(Server::new(rooms).merge(world), storage, 0).await
}

fn ok_answer() -> (u16, Value) {
    (
        200,
        json!({"success": true, "shardId": "lobby:world-eu:1-1", "url": "lobby-shard-1"}),
    )
}

fn options(server: &TestServer) -> WorldOptions {
    WorldOptions::new(format!("http://127.0.0.1:{}", server.port), "lobby")
        .retry_delay(Duration::from_millis(50))
        .client(|c| c.reconnect(fast_policy()))
}

#[tokio::test]
async fn connects_to_the_assigned_shard() {
    let script = Script::new(ok_answer());
    let server = start(&script).await;
    let conn = connect_world(
        options(&server)
            .world_id("world-eu")
            .client(|c| c.query("name", "Wanda")),
    )
    .await
    .expect("connected through the world");
    assert_eq!(conn.shard.shard_id, "lobby:world-eu:1-1");
    assert_eq!(conn.shard.url, "lobby-shard-1");
    assert!(
        conn.client.url().starts_with(&format!(
            "ws://127.0.0.1:{}/parties/shard/lobby-shard-1?_pk=",
            server.port
        )),
        "{}",
        conn.client.url()
    );
    assert_eq!(
        script.calls(),
        vec![(
            "world-eu".to_owned(),
            json!({"roomId": "lobby", "autoCreate": true})
        )]
    );
    let pid = conn.client.pid().unwrap();
    assert_eq!(conn.client.state()["players"][&pid]["name"], "Wanda");
    conn.client.emit("move", json!({"x": 77, "y": 88})).unwrap();
    let p = pid.clone();
    conn.client
        .wait_for(move |s| s["players"][&p]["x"] == 77.0, WAIT)
        .await
        .unwrap();
    // It really is the shard room on the server.
    let seen = http_get(server.port, "/parties/shard/lobby-shard-1/state").await;
    assert_eq!(seen["players"][&pid]["x"], 77.0);
    conn.client.close();
    server.stop().await;
}

#[tokio::test]
async fn retries_then_succeeds() {
    let script = Script::new(ok_answer())
        .then(503, r#"{"error":"busy"}"#)
        .then(500, "not json");
    let server = start(&script).await;
    let started = Instant::now();
    let conn = connect_world(options(&server).auto_create(false))
        .await
        .expect("third attempt succeeds");
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "fixed delay"
    );
    let calls = script.calls();
    assert_eq!(calls.len(), 3);
    for (world, body) in calls {
        assert_eq!(world, "world-default");
        assert_eq!(body, json!({"roomId": "lobby", "autoCreate": false}));
    }
    assert!(conn.client.pid().is_some());
    conn.client.close();
    server.stop().await;
}

#[tokio::test]
async fn invalid_response() {
    let script = Script::new((200, json!({"success": true, "url": "lobby-shard-1"})));
    let server = start(&script).await;
    let err = connect_world(options(&server).retry_count(2))
        .await
        .unwrap_err();
    assert!(matches!(err, WorldError::InvalidResponse), "{err:?}");
    assert_eq!(
        err.to_string(),
        "Invalid response from World service: missing url or shardId"
    );
    assert_eq!(script.calls().len(), 2);
    // An empty shardId is missing too.
    let script = Script::new((200, json!({"url": "u", "shardId": ""})));
    let server2 = start(&script).await;
    let err = request_shard(&options(&server2).retry_count(1))
        .await
        .unwrap_err();
    assert!(matches!(err, WorldError::InvalidResponse));
    server.stop().await;
    server2.stop().await;
}

#[tokio::test]
async fn client_errors_are_retried_then_returned() {
    let script = Script::new((404, json!({"error": "Room lobby not found"})));
    let server = start(&script).await;
    let err = connect_world(options(&server)).await.unwrap_err();
    match &err {
        WorldError::Service { status, message } => {
            assert_eq!(*status, 404);
            assert_eq!(message, "Room lobby not found");
        }
        other => panic!("expected Service, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "World service returned 404: Room lobby not found"
    );
    assert_eq!(script.calls().len(), 3, "4xx answers are retried");

    // Without an `error` field.
    let script = Script::new((400, json!({})));
    let server2 = start(&script).await;
    let err = request_shard(&options(&server2).retry_count(1))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "World service returned 400: Unknown error");
    server.stop().await;
    server2.stop().await;
}

#[tokio::test]
async fn no_attempts_bad_hosts_and_network_errors() {
    let script = Script::new(ok_answer());
    let server = start(&script).await;
    let err = connect_world(options(&server).retry_count(0))
        .await
        .unwrap_err();
    assert!(matches!(err, WorldError::NoAttempts));
    assert_eq!(
        err.to_string(),
        "Failed to get shard after all retry attempts"
    );
    assert!(script.calls().is_empty());

    let err = connect_world(WorldOptions::new("https://example.com", "lobby"))
        .await
        .unwrap_err();
    assert!(matches!(err, WorldError::InvalidUrl(_)), "{err:?}");
    let err = connect_world(WorldOptions::new("localhost:3000", "lobby"))
        .await
        .unwrap_err();
    assert!(matches!(err, WorldError::InvalidUrl(_)), "{err:?}");

    let port = free_port().await;
    let started = Instant::now();
    let err = request_shard(
        &WorldOptions::new(format!("http://127.0.0.1:{port}"), "lobby")
            .retry_count(2)
            .retry_delay(Duration::from_millis(50)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, WorldError::Io(_)), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(50));

    // The shard assigned does not exist: the world call succeeds, the connection does not.
    let script = Script::new((200, json!({"shardId": "s", "url": "bad:shard"})));
    let server2 = start(&script).await;
    let err = connect_world(options(&server2)).await.unwrap_err();
    assert!(matches!(err, WorldError::Connect(_)), "{err:?}");
    server.stop().await;
    server2.stop().await;
}
