//! The client against a scripted WebSocket server, for exact frame sequences: mirror reset on
//! reconnection, dispatch by type, non-JSON frames, send order, failure paths.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use partyroom_client::{Client, ClientOptions, ConnectError, ReconnectPolicy, Status};
use serde_json::{Value, json};
use support::{WAIT, fast_policy, free_port};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

type Conn = (String, WebSocketStream<TcpStream>);

/// A server that accepts WebSockets and hands each one (with its request URI) to the test.
async fn fake_server() -> (u16, mpsc::Receiver<Conn>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let mut uri = String::new();
            let ws =
                tokio_tungstenite::accept_hdr_async(stream, |req: &Request, resp: Response| {
                    uri = req.uri().to_string();
                    Ok(resp)
                })
                .await;
            if let Ok(ws) = ws
                && tx.send((uri, ws)).await.is_err()
            {
                break;
            }
        }
    });
    (port, rx)
}

async fn send(ws: &mut WebSocketStream<TcpStream>, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
}

async fn next_json(ws: &mut WebSocketStream<TcpStream>) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time")
            .expect("socket open")
            .expect("no error");
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

#[tokio::test]
async fn frames_reset_and_order() {
    let (port, mut conns) = fake_server().await;
    let client = Client::start(
        ClientOptions::new(format!("127.0.0.1:{port}"), "r1")
            .session_id("s 1")
            .query("name", "Zed")
            .reconnect(fast_policy()),
    );
    let mut custom = client.subscribe("custom");
    let mut all = client.subscribe_all();

    let (uri, mut ws) = conns.recv().await.unwrap();
    assert_eq!(uri, "/parties/main/r1?_pk=s%201&id=s%201&name=Zed");
    send(&mut ws, "not json").await;
    // An incremental packet before the pId packet (allowed by the protocol).
    send(
        &mut ws,
        r#"{"type":"sync","value":{"users":{"x":{"n":1}}}}"#,
    )
    .await;
    send(
        &mut ws,
        r#"{"type":"sync","value":{"pId":"p1","a":1,"b":{"c":2,"d":3}}}"#,
    )
    .await;
    send(&mut ws, r#"{"type":"custom","value":5}"#).await;
    send(&mut ws, r#"{"hello":"world"}"#).await;
    send(&mut ws, "[1,2]").await;
    send(&mut ws, r#"{"type":"sync","value":{"b":{"c":"$delete"}}}"#).await;
    send(&mut ws, r#"{"type":"sync"}"#).await;

    assert_eq!(client.wait_ready(WAIT).await.unwrap(), "p1");
    client
        .wait_for(|s| *s == json!({"a":1,"b":{"d":3}}), WAIT)
        .await
        .expect("pId packet replaced the earlier state, $delete removed c");

    let e = custom.recv().await.unwrap();
    assert_eq!(e.kind(), Some("custom"));
    assert_eq!(e.value(), &json!(5));
    assert_eq!(
        e.text(),
        r#"{"type":"custom","value":5}"#,
        "the text as received"
    );
    let mut kinds = Vec::new();
    for _ in 0..7 {
        let e = tokio::time::timeout(WAIT, all.recv())
            .await
            .unwrap()
            .unwrap();
        kinds.push((e.kind().map(str::to_owned), e.frame().clone()));
    }
    assert_eq!(kinds[0].0.as_deref(), Some("sync"));
    assert_eq!(kinds[1].1["value"]["pId"], "p1");
    assert_eq!(kinds[2].0.as_deref(), Some("custom"));
    assert_eq!(kinds[3], (None, json!({"hello":"world"})));
    assert_eq!(kinds[4], (None, json!([1, 2])));
    assert_eq!(kinds[5].1["value"]["b"]["c"], "$delete");
    assert_eq!(kinds[6].1, json!({"type":"sync"}));
    assert_eq!(all.skipped(), 0);

    client.emit("one", 1).unwrap();
    client.emit("two", json!({"k": "v"})).unwrap();
    assert_eq!(next_json(&mut ws).await, json!({"action":"one","value":1}));
    assert_eq!(
        next_json(&mut ws).await,
        json!({"action":"two","value":{"k":"v"}})
    );

    // The server goes away; messages sent meanwhile are queued.
    ws.close(Some(CloseFrame {
        code: CloseCode::Away,
        reason: "restart".into(),
    }))
    .await
    .unwrap();
    // Read the client's close reply, then end the connection, like a real server.
    tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} });
    client
        .wait_status(|s| s == Status::Reconnecting, WAIT)
        .await
        .unwrap();
    client.emit("three", 3).unwrap();
    client.emit("four", 4).unwrap();

    let (uri2, mut ws2) = conns.recv().await.unwrap();
    assert_eq!(uri2, uri, "same URL, same session");
    assert_eq!(
        next_json(&mut ws2).await,
        json!({"action":"three","value":3})
    );
    assert_eq!(
        next_json(&mut ws2).await,
        json!({"action":"four","value":4})
    );
    // A fresh first packet: keys deleted meanwhile (`b`) disappear from the mirror.
    send(&mut ws2, r#"{"type":"sync","value":{"pId":"p2","a":2}}"#).await;
    let view = client
        .wait_view(|v| v.syncs() == 2, WAIT)
        .await
        .expect("second first packet");
    assert_eq!(view.state(), &json!({"a":2}));
    assert_eq!(client.pid().as_deref(), Some("p2"));
    assert_eq!(client.status(), Status::Open);

    // close() sends a 1000 close frame.
    client.close();
    let frame = loop {
        match tokio::time::timeout(WAIT, ws2.next()).await.unwrap() {
            Some(Ok(Message::Close(f))) => break f,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(frame.map(|f| f.code), Some(CloseCode::Normal));
    tokio::time::timeout(WAIT, client.closed()).await.unwrap();
    // No reconnection.
    assert!(
        tokio::time::timeout(Duration::from_millis(400), conns.recv())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn closed_before_first_packet() {
    let (port, mut conns) = fake_server().await;
    let server = tokio::spawn(async move {
        let (_, mut ws) = conns.recv().await.unwrap();
        ws.close(Some(CloseFrame {
            code: CloseCode::Library(4001),
            reason: "no".into(),
        }))
        .await
        .unwrap();
        while let Some(Ok(_)) = ws.next().await {}
        conns
    });
    let err = Client::connect(
        ClientOptions::new(format!("127.0.0.1:{port}"), "r").reconnect(fast_policy()),
    )
    .await
    .unwrap_err();
    match err {
        ConnectError::ClosedBeforeSync { code, reason } => {
            assert_eq!(code, Some(4001));
            assert_eq!(reason, "no");
        }
        other => panic!("expected ClosedBeforeSync, got {other:?}"),
    }
    let _ = server.await;
}

#[tokio::test]
async fn handshake_timeout_and_first_packet_timeout() {
    // Accepts TCP but never answers the upgrade.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let err = Client::connect(
        ClientOptions::new(format!("127.0.0.1:{port}"), "r").reconnect(ReconnectPolicy {
            connection_timeout: Duration::from_millis(200),
            ..fast_policy()
        }),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ConnectError::AttemptTimeout(_)), "{err:?}");

    // Upgrades but never sends the pId packet.
    let (port, mut conns) = fake_server().await;
    let keep = tokio::spawn(async move { conns.recv().await });
    let err = Client::connect(
        ClientOptions::new(format!("127.0.0.1:{port}"), "r")
            .connect_timeout(Duration::from_millis(300)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ConnectError::Timeout(_)), "{err:?}");
    drop(keep);
    drop(silent);
}

#[tokio::test]
async fn retries_are_bounded_by_policy() {
    let port = free_port().await;
    let client = Client::start(
        ClientOptions::new(format!("127.0.0.1:{port}"), "r").reconnect(ReconnectPolicy {
            max_retries: Some(2),
            ..fast_policy()
        }),
    );
    client
        .wait_status(|s| s == Status::Closed, WAIT)
        .await
        .expect("gives up after 3 attempts");
    tokio::time::timeout(WAIT, client.closed()).await.unwrap();
    assert!(client.emit("x", 1).is_err());
}

#[tokio::test]
async fn server_that_closes_without_ending_the_connection() {
    let (port, mut conns) = fake_server().await;
    let client = Client::start(
        ClientOptions::new(format!("127.0.0.1:{port}"), "r").reconnect(fast_policy()),
    );
    let (_, mut ws) = conns.recv().await.unwrap();
    send(&mut ws, r#"{"type":"sync","value":{"pId":"p1"}}"#).await;
    client.wait_ready(WAIT).await.unwrap();
    // Close frame sent, but the socket is neither read nor closed afterwards.
    ws.send(Message::Close(None)).await.unwrap();
    let started = std::time::Instant::now();
    let (_, mut ws2) = tokio::time::timeout(WAIT, conns.recv())
        .await
        .expect("the client gives up on the old socket and reconnects")
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(900));
    send(&mut ws2, r#"{"type":"sync","value":{"pId":"p1"}}"#).await;
    client.wait_view(|v| v.syncs() == 2, WAIT).await.unwrap();
    client.close();
    drop(ws);
}
