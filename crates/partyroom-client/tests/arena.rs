//! The client against a real partyroom server (the arena demo) started in-process.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use partyroom::storage::{MemoryStorage, Storage};
use partyroom_client::{Client, ConnectError, SendError, Status, WaitError};
use serde::Deserialize;
use serde_json::{Value, json};
use support::{TestServer, WAIT, fast_policy, free_port};

#[derive(Deserialize, Debug)]
struct Point {
    x: i64,
    y: i64,
}

#[derive(Deserialize, Debug)]
struct Player {
    name: String,
    connected: bool,
    x: f64,
    y: f64,
    score: u32,
}

#[derive(Deserialize, Debug)]
struct Arena {
    star: Point,
    players: HashMap<String, Player>,
}

fn at(pid: &str, x: f64, y: f64) -> impl Fn(&Value) -> bool {
    let pid = pid.to_owned();
    move |s: &Value| s["players"][&pid]["x"] == x && s["players"][&pid]["y"] == y
}

/// (a) Join: pId and full state; a move comes back in the mirror.
#[tokio::test]
async fn join_then_move() {
    let server = TestServer::arena().await;
    let client = Client::connect(server.options("room-a").query("name", "Ann"))
        .await
        .expect("connects");
    assert_eq!(client.status(), Status::Open);
    let pid = client.pid().expect("pId");
    assert_eq!(pid.len(), 8);
    assert!(
        client
            .url()
            .contains(&format!("_pk={}", client.session_id()))
    );
    assert!(
        client
            .url()
            .contains(&format!("&id={}", client.session_id()))
    );

    let state: Arena = client.state_as().unwrap();
    let me = &state.players[&pid];
    assert_eq!(me.name, "Ann");
    assert!(me.connected);
    assert!(me.x >= 0.0 && me.y >= 0.0, "spawned: {me:?}");
    assert_eq!(me.score, 0);
    assert!((36..=864).contains(&state.star.x) && (36..=524).contains(&state.star.y));

    client.emit("move", json!({"x": 100, "y": 200})).unwrap();
    let state = client
        .wait_for(at(&pid, 100.0, 200.0), WAIT)
        .await
        .expect("the move is mirrored");
    assert_eq!(state["players"][&pid]["name"], "Ann");
    // Positions are clamped by the room.
    client.emit("move", json!({"x": -50, "y": 10_000})).unwrap();
    client
        .wait_for(at(&pid, 16.0, 544.0), WAIT)
        .await
        .expect("clamped");
    client.close();
    client.closed().await;
    server.stop().await;
}

/// (b) Two clients see each other's moves; listeners and subscriptions get frames by type.
#[tokio::test]
async fn two_clients_see_each_other() {
    let server = TestServer::arena().await;
    let a = Client::connect(server.options("room-b").query("name", "A"))
        .await
        .unwrap();
    let a_syncs = Arc::new(AtomicUsize::new(0));
    let counter = a_syncs.clone();
    let listener = a.on("sync", move |event| {
        assert!(event.value().is_object());
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let mut a_sub = a.subscribe("sync");

    let b = Client::connect(server.options("room-b").query("name", "B"))
        .await
        .unwrap();
    let (pa, pb) = (a.pid().unwrap(), b.pid().unwrap());
    assert_ne!(pa, pb);
    // A sees B join.
    let pb2 = pb.clone();
    a.wait_for(move |s| s["players"][&pb2]["connected"] == true, WAIT)
        .await
        .unwrap();
    assert_eq!(a.state()["players"][&pb]["name"], "B");

    a.emit("move", json!({"x": 300, "y": 301})).unwrap();
    b.emit("move", json!({"x": 400, "y": 401})).unwrap();
    b.wait_for(at(&pa, 300.0, 301.0), WAIT).await.unwrap();
    a.wait_for(at(&pb, 400.0, 401.0), WAIT).await.unwrap();
    a.wait_for(at(&pa, 300.0, 301.0), WAIT).await.unwrap();
    b.wait_for(at(&pb, 400.0, 401.0), WAIT).await.unwrap();

    // Every sync packet reached the subscription, after it was applied.
    let event = a_sub.recv().await.unwrap();
    assert_eq!(event.kind(), Some("sync"));
    assert!(a_syncs.load(Ordering::SeqCst) >= 1);

    // B leaves: A sees it disconnected (arena users have a connected flag).
    b.close();
    let pb2 = pb.clone();
    a.wait_for(move |s| s["players"][&pb2]["connected"] == false, WAIT)
        .await
        .unwrap();
    drop(listener);
    let before = a_syncs.load(Ordering::SeqCst);
    a.emit("move", json!({"x": 310, "y": 311})).unwrap();
    a.wait_for(at(&pa, 310.0, 311.0), WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(a_syncs.load(Ordering::SeqCst), before, "listener removed");
    a.close();
    server.stop().await;
}

/// (c) The server stops and a new one starts on the same port with the same storage: the
/// client reconnects by itself and gets the same player back (pId, score, position).
#[tokio::test]
async fn reconnects_after_server_restart() {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let server = TestServer::arena_on(storage.clone(), 0).await;
    let port = server.port;
    let client = Client::connect(server.options("room-c").query("name", "Cat"))
        .await
        .unwrap();
    let pid = client.pid().unwrap();

    // Collect the star: move onto it, then `collect`.
    let star: Arena = client.state_as().unwrap();
    let (sx, sy) = (star.star.x as f64, star.star.y as f64);
    client.emit("move", json!({"x": sx, "y": sy})).unwrap();
    client.wait_for(at(&pid, sx, sy), WAIT).await.unwrap();
    client.emit("collect", ()).unwrap();
    let p = pid.clone();
    client
        .wait_for(move |s| s["players"][&p]["score"] == 1, WAIT)
        .await
        .expect("star collected");
    client.emit("move", json!({"x": 123, "y": 321})).unwrap();
    client.wait_for(at(&pid, 123.0, 321.0), WAIT).await.unwrap();
    assert_eq!(client.changes().borrow().syncs(), 1);

    server.stop().await;
    client
        .wait_status(|s| s == Status::Reconnecting, WAIT)
        .await
        .expect("the client notices the drop");
    // Queued while the server is down, sent after the reconnection.
    client.emit("move", json!({"x": 222, "y": 111})).unwrap();

    let server = TestServer::arena_on(storage.clone(), port).await;
    let view = client
        .wait_view(|v| v.syncs() >= 2, Duration::from_secs(10))
        .await
        .expect("reconnected by itself");
    assert_eq!(view.pid(), Some(pid.as_str()), "same session, same player");
    assert_eq!(view.state()["players"][&pid]["score"], 1);
    assert_eq!(view.state()["players"][&pid]["name"], "Cat");
    assert_eq!(view.state()["players"][&pid]["connected"], true);
    assert_eq!(client.status(), Status::Open);
    client
        .wait_for(at(&pid, 222.0, 111.0), WAIT)
        .await
        .expect("the queued move was sent after reconnecting");
    let seen = server.arena_state("room-c").await;
    assert_eq!(seen["players"][&pid]["score"], 1);
    assert_eq!(seen["players"].as_object().unwrap().len(), 1);
    client.close();
    server.stop().await;
}

/// (d) After a run of moves by two clients, both mirrors equal the server's own view.
#[tokio::test]
async fn mirror_matches_server_view() {
    let server = TestServer::arena().await;
    let a = Client::connect(server.options("room-d").query("name", "A"))
        .await
        .unwrap();
    let b = Client::connect(server.options("room-d").query("name", "B"))
        .await
        .unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    for i in 0..40 {
        let c = if i % 2 == 0 { &a } else { &b };
        c.emit(
            "move",
            json!({"x": rng.i32(-20..950), "y": rng.i32(-20..600)}),
        )
        .unwrap();
        if i % 5 == 0 {
            c.emit("collect", ()).unwrap();
        }
        if i % 8 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    // A final, known move each, seen by both.
    a.emit("move", json!({"x": 111, "y": 112})).unwrap();
    b.emit("move", json!({"x": 221, "y": 222})).unwrap();
    let (pa, pb) = (a.pid().unwrap(), b.pid().unwrap());
    for c in [&a, &b] {
        c.wait_for(at(&pa, 111.0, 112.0), WAIT).await.unwrap();
        c.wait_for(at(&pb, 221.0, 222.0), WAIT).await.unwrap();
    }
    let view = server.arena_state("room-d").await;
    let expected = json!({"star": view["star"], "players": view["players"]});
    for c in [&a, &b] {
        assert_eq!(c.state(), expected, "mirror == GET /state");
    }
    a.close();
    b.close();
    server.stop().await;
}

/// (e) While disconnected the send buffer is bounded; queued messages go out in order once
/// connected, the refused one never.
#[tokio::test]
async fn send_buffer_is_bounded_while_disconnected() {
    let port = free_port().await;
    let client = Client::start(
        partyroom_client::ClientOptions::new(format!("127.0.0.1:{port}"), "room-e")
            .reconnect(fast_policy())
            .send_buffer(4),
    );
    for i in 1..=4 {
        client
            .emit("move", json!({"x": i * 100, "y": i * 100}))
            .expect("fits in the buffer");
    }
    assert!(matches!(
        client.emit("move", json!({"x": 500, "y": 500})),
        Err(SendError::BufferFull)
    ));
    client
        .wait_status(|s| s == Status::Reconnecting, WAIT)
        .await
        .unwrap();
    assert!(matches!(
        client.emit("move", json!({"x": 600, "y": 500})),
        Err(SendError::BufferFull)
    ));

    let server = TestServer::arena_on(Arc::new(MemoryStorage::new()), port).await;
    let pid = client.wait_ready(Duration::from_secs(10)).await.unwrap();
    client
        .wait_for(at(&pid, 400.0, 400.0), WAIT)
        .await
        .expect("the four queued moves were applied, the last one last");
    // Nothing else arrives: the refused moves were dropped.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(client.state()["players"][&pid]["x"], 400.0);
    let seen = server.arena_state("room-e").await;
    assert_eq!(seen["players"][&pid]["x"], 400.0);
    // The buffer is usable again.
    client.emit("move", json!({"x": 50, "y": 60})).unwrap();
    client.wait_for(at(&pid, 50.0, 60.0), WAIT).await.unwrap();
    client.close();
    server.stop().await;
}

/// (f) close(): code 1000, no reconnection, emit fails, subscriptions end.
#[tokio::test]
async fn close_stops_reconnecting() {
    let server = TestServer::arena().await;
    let client = Client::connect(server.options("room-f")).await.unwrap();
    let pid = client.pid().unwrap();
    let mut sub = client.subscribe("sync");
    client.close();
    assert_eq!(client.status(), Status::Closed);
    assert!(matches!(
        client.emit("move", json!({})),
        Err(SendError::Closed)
    ));
    tokio::time::timeout(WAIT, client.closed())
        .await
        .expect("the task ends");
    assert!(
        tokio::time::timeout(WAIT, async { while sub.recv().await.is_some() {} })
            .await
            .is_ok(),
        "subscriptions end"
    );
    assert!(client.subscribe("sync").recv().await.is_none());
    assert_eq!(
        client.wait_for(|_| false, WAIT).await,
        Err(WaitError::Closed)
    );

    let seen = server.arena_state("room-f").await;
    assert_eq!(seen["players"][&pid]["connected"], false);
    // Several reconnection delays later, still disconnected.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = server.arena_state("room-f").await;
    assert_eq!(seen["players"][&pid]["connected"], false);
    assert_eq!(client.status(), Status::Closed);
    // The state last seen stays readable.
    assert_eq!(client.pid(), Some(pid));
    server.stop().await;
}

/// Dropping every handle closes the connection too.
#[tokio::test]
async fn dropping_the_client_closes_it() {
    let server = TestServer::arena().await;
    let client = Client::connect(server.options("room-g")).await.unwrap();
    let pid = client.pid().unwrap();
    let copy = client.clone();
    drop(client);
    assert_eq!(copy.status(), Status::Open, "a clone keeps it alive");
    drop(copy);
    let mut ok = false;
    for _ in 0..50 {
        let seen = server.arena_state("room-g").await;
        if seen["players"][&pid]["connected"] == false {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "the server saw the disconnection");
    server.stop().await;
}

/// connect() reports a refused upgrade and an unreachable server without waiting for the
/// timeout.
#[tokio::test]
async fn connect_errors() {
    let server = TestServer::arena().await;
    // The arena's pattern only accepts [A-Za-z0-9_-]+: 404 before the upgrade.
    let err = Client::connect(server.options("bad:room"))
        .await
        .unwrap_err();
    match err {
        ConnectError::Refused { status, body } => {
            assert_eq!(status, 404);
            assert!(body.contains("Not found"), "{body}");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    let port = free_port().await;
    let started = std::time::Instant::now();
    let err = Client::connect(partyroom_client::ClientOptions::new(
        format!("127.0.0.1:{port}"),
        "x",
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, ConnectError::Transport(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // No TLS in this build: wss fails at once, with a transport error.
    let err = Client::connect(
        server
            .options("room-h")
            .protocol(partyroom_client::Protocol::Wss),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ConnectError::Transport(_)), "{err:?}");
    assert!(err.to_string().contains("TLS"), "{err}");
    server.stop().await;
}
