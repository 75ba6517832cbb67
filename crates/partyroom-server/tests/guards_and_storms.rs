//! maxUsers under a storm of concurrent joins, and connect guards refusing before the upgrade,
//! over real sockets on 127.0.0.1:0.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use partyroom_room::{Handlers, Refusal, Room, RoomConfig, Rooms};
use partyroom_server::Server;
use partyroom_state::{State, StateMap};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

#[derive(State, Default, Clone)]
struct Seat {
    #[state(connected)]
    here: bool,
}

#[derive(State, Default, Clone)]
struct Table {
    #[state(users)]
    seats: StateMap<Seat>,
}

impl Room for Table {
    fn config() -> RoomConfig {
        RoomConfig::new("table-{n}").max_users(4)
    }
    fn handlers(h: &mut Handlers<Self>) {
        h.connect_guard(|_t: &Self, info| match info.query("ticket") {
            Some("banned") => Err(Refusal::forbidden("banned")),
            _ => Ok(()),
        })
        .connect_guard_async(|info| async move {
            // Stands for a lookup in another service.
            tokio::time::sleep(Duration::from_millis(1)).await;
            if info.header("authorization").is_some() || info.query("ticket").is_some() {
                Ok(())
            } else {
                Err(Refusal::unauthorized("a ticket is required"))
            }
        });
    }
}

async fn start() -> SocketAddr {
    let rooms = Rooms::builder().room::<Table>("main").unwrap().build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(Server::new(rooms).serve(listener, std::future::pending()));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_joins_admit_exactly_the_limit() {
    let addr = start().await;
    let mut joins = Vec::new();
    for i in 0..50 {
        joins.push(tokio::spawn(async move {
            let url = format!("ws://{addr}/parties/main/table-1?id=s{i}&ticket=ok");
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            // Admitted clients get their first packet; refused ones a close frame (4003).
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                Ok(Some(Ok(Message::Text(_)))) => Ok(ws),
                Ok(Some(Ok(Message::Close(Some(frame))))) => Err(u16::from(frame.code)),
                other => panic!("unexpected: {other:?}"),
            }
        }));
    }
    let mut admitted = Vec::new();
    let mut refused = 0;
    for j in joins {
        match j.await.unwrap() {
            Ok(ws) => admitted.push(ws),
            Err(code) => {
                assert_eq!(code, 4003, "refused with the room-full code");
                refused += 1;
            }
        }
    }
    assert_eq!(admitted.len(), 4, "exactly max_users clients got in");
    assert_eq!(refused, 46);
}

#[tokio::test]
async fn connect_guards_refuse_before_the_upgrade() {
    let addr = start().await;
    // No ticket: the async guard answers 401 and no WebSocket is opened.
    match tokio_tungstenite::connect_async(format!("ws://{addr}/parties/main/table-2")).await {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status(), 401);
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned());
            assert_eq!(body.as_deref(), Some(r#"{"error":"a ticket is required"}"#));
        }
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }
    // The state-aware guard answers 403.
    match tokio_tungstenite::connect_async(format!(
        "ws://{addr}/parties/main/table-2?ticket=banned"
    ))
    .await
    {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }
    // A header satisfies the async guard.
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{addr}/parties/main/table-2"),
    )
    .unwrap();
    req.headers_mut()
        .insert("authorization", "Bearer x".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert!(matches!(ws.next().await, Some(Ok(Message::Text(_)))));
}

#[tokio::test]
async fn requests_claiming_to_come_from_a_shard_need_the_secret() {
    use partyroom_server::ServerConfig;
    let rooms = Rooms::builder().room::<Table>("main").unwrap().build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ServerConfig {
        shard_secret: Some("s3cret".into()),
        ..ServerConfig::default()
    };
    tokio::spawn(Server::with_config(rooms, config).serve(listener, std::future::pending()));
    let upgrade = |secret: Option<&'static str>| {
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                format!("ws://{addr}/parties/main/table-9?ticket=ok"),
            )
            .unwrap();
        req.headers_mut()
            .insert("x-shard-id", "table-9:world-default:1-1".parse().unwrap());
        if let Some(s) = secret {
            req.headers_mut()
                .insert("x-access-shard", s.parse().unwrap());
        }
        req
    };
    for bad in [None, Some("wrong"), Some("s3cre")] {
        match tokio_tungstenite::connect_async(upgrade(bad)).await {
            Err(WsError::Http(r)) => assert_eq!(r.status(), 401, "{bad:?}"),
            other => panic!("expected 401 for {bad:?}, got {other:?}"),
        }
    }
    assert!(
        tokio_tungstenite::connect_async(upgrade(Some("s3cret")))
            .await
            .is_ok()
    );
    assert!(partyroom_server::constant_time_eq(b"abc", b"abc"));
    assert!(!partyroom_server::constant_time_eq(b"abc", b"abd"));
}
