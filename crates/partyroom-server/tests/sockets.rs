//! The server over real sockets on 127.0.0.1:0: URL handling, WebSocket lifecycle, HTTP to
//! rooms, and bad input of every kind.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use partyroom_room::{Handlers, HttpCx, Json, Room, RoomConfig, RoomResponse, Rooms};
use partyroom_server::Server;
use partyroom_state::{State, StateMap};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

#[derive(State, Default, Clone)]
struct Player {
    name: String,
    #[state(connected)]
    online: bool,
}

#[derive(State, Default, Clone)]
struct Game {
    count: i64,
    #[state(users)]
    users: StateMap<Player>,
}

#[derive(serde::Deserialize, garde::Validate)]
struct AddBody {
    #[garde(range(min = 1, max = 100))]
    n: i64,
}

impl Room for Game {
    fn config() -> RoomConfig {
        RoomConfig::new("game-{id}").max_users(3)
    }
    fn handlers(h: &mut Handlers<Self>) {
        h.action("inc", |g: &mut Self, _cx, ()| g.count += 1)
            .get("/status", |g: &Self, cx: &mut HttpCx<'_>| {
                Json(json!({"count": g.count, "room": cx.room_id(), "id": cx.param("id")}))
            })
            .get("/users/:id", |g: &Self, cx: &mut HttpCx<'_>| {
                let id = cx.path_param("id").unwrap_or_default();
                match g.users.get(id) {
                    Some(u) => RoomResponse::success(&json!({"name": u.name})),
                    None => RoomResponse::not_found(Some("User not found")),
                }
            })
            .post("/add", |g: &mut Self, cx: &mut HttpCx<'_>| {
                let body: AddBody = cx.valid_json()?;
                g.count += body.n;
                Ok::<_, RoomResponse>(Json(json!({"count": g.count})))
            });
    }
}

/// Users without a connected flag: leaving is announced with `user_disconnected`.
#[derive(State, Default, Clone)]
struct Plain {
    #[state(users)]
    users: StateMap<Nameless>,
}

#[derive(State, Default, Clone)]
struct Nameless {
    n: i64,
}

impl Room for Plain {
    fn config() -> RoomConfig {
        RoomConfig::new("plain")
    }
    fn handlers(_: &mut Handlers<Self>) {}
}

/// No users collection at all.
#[derive(State, Default, Clone)]
struct Counter {
    n: i64,
}

impl Room for Counter {
    fn config() -> RoomConfig {
        RoomConfig::new("counter")
    }
    fn handlers(_: &mut Handlers<Self>) {}
}

async fn start() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let rooms = Rooms::builder()
        .room::<Game>("main")
        .unwrap()
        .room::<Plain>("main")
        .unwrap()
        .room::<Counter>("main")
        .unwrap()
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(Server::new(rooms).serve(listener, async move {
        let _ = rx.await;
    }));
    (addr, tx)
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn ws(addr: SocketAddr, path: &str) -> Ws {
    let (ws, _) = connect_async(format!("ws://{addr}{path}")).await.unwrap();
    ws
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .expect("stream open")
            .expect("no error");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).expect("JSON frame");
        }
    }
}

async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| f.code.into()),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) | Ok(None) => return None,
            Err(_) => panic!("no close within 5 s"),
        }
    }
}

async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status: u16 = out[9..12].parse().unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

#[tokio::test]
async fn websocket_lifecycle_over_real_sockets() {
    let (addr, _stop) = start().await;
    let mut a = ws(addr, "/parties/main/game-1?id=sess-a").await;
    let first = next_json(&mut a).await;
    let pid = first["value"]["pId"].as_str().unwrap().to_owned();
    assert_eq!(first["value"]["users"][&pid]["online"], true);

    // `_pk` (what the official client sends) is the session id too.
    let mut a2 = ws(addr, "/parties/main/game-1?_pk=sess-a").await;
    assert_eq!(next_json(&mut a2).await["value"]["pId"], pid.as_str());

    a.send(Message::text(r#"{"action":"inc"}"#)).await.unwrap();
    assert_eq!(
        next_json(&mut a).await,
        json!({"type":"sync","value":{"count":1}})
    );
    assert_eq!(
        next_json(&mut a2).await,
        json!({"type":"sync","value":{"count":1}})
    );

    // Bad frames change nothing and keep the socket open.
    for bad in ["nope", "[]", "{}", r#"{"action":"zzz"}"#] {
        a.send(Message::text(bad)).await.unwrap();
    }
    a.send(Message::binary(b"\xff\xfe".to_vec())).await.unwrap();
    a.send(Message::text(r#"{"action":"inc"}"#)).await.unwrap();
    assert_eq!(
        next_json(&mut a).await,
        json!({"type":"sync","value":{"count":2}})
    );

    // Closing one tab of the session changes nothing for the others; closing the last one
    // marks the user offline.
    let mut b = ws(addr, "/parties/main/game-1?id=sess-b").await;
    next_json(&mut b).await;
    a2.close(None).await.unwrap();
    a.close(None).await.unwrap();
    assert_eq!(
        next_json(&mut b).await,
        json!({"type":"sync","value":{"users":{ &pid: {"online": false}}}})
    );
}

#[tokio::test]
async fn oversize_frames_close_that_socket_only() {
    let (addr, _stop) = start().await;
    let mut a = ws(addr, "/parties/main/game-2?id=a").await;
    next_json(&mut a).await;
    let mut b = ws(addr, "/parties/main/game-2?id=b").await;
    next_json(&mut b).await;
    next_json(&mut a).await; // b joined
    let huge = format!(r#"{{"action":"inc","pad":"{}"}}"#, "x".repeat(100_000));
    let _ = a.send(Message::text(huge)).await;
    let code = close_code(&mut a).await;
    assert!(
        code.is_none() || code == Some(1009),
        "closed as too big: {code:?}"
    );
    b.send(Message::text(r#"{"action":"inc"}"#)).await.unwrap();
    let mut got = next_json(&mut b).await;
    while got["value"]["count"].is_null() {
        got = next_json(&mut b).await; // a's departure
    }
    assert_eq!(got["value"]["count"], 1);
}

#[tokio::test]
async fn room_full_is_refused_with_a_reason() {
    let (addr, _stop) = start().await;
    let mut keep = Vec::new();
    for i in 0..3 {
        let mut c = ws(addr, &format!("/parties/main/game-3?id=s{i}")).await;
        next_json(&mut c).await;
        keep.push(c);
    }
    let mut late = ws(addr, "/parties/main/game-3?id=late").await;
    assert_eq!(close_code(&mut late).await, Some(4003));
}

#[tokio::test]
async fn user_disconnected_and_rooms_without_users() {
    let (addr, _stop) = start().await;
    let mut a = ws(addr, "/parties/main/plain?id=a").await;
    next_json(&mut a).await;
    let mut b = ws(addr, "/parties/main/plain?id=b").await;
    let pid_b = next_json(&mut b).await["value"]["pId"]
        .as_str()
        .unwrap()
        .to_owned();
    next_json(&mut a).await; // b's user entry
    b.close(None).await.unwrap();
    assert_eq!(
        next_json(&mut a).await,
        json!({"type":"user_disconnected","value":{"publicId": pid_b}})
    );

    let mut c1 = ws(addr, "/parties/main/counter?id=same").await;
    let mut c2 = ws(addr, "/parties/main/counter?id=same").await;
    let p1 = next_json(&mut c1).await["value"]["pId"].clone();
    let p2 = next_json(&mut c2).await["value"]["pId"].clone();
    assert_ne!(p1, p2, "no users collection: every socket is its own user");
}

#[tokio::test]
async fn bad_urls_and_unknown_rooms() {
    let (addr, _stop) = start().await;
    for (path, status) in [
        ("/parties/main/game-1%zz/status", 400),
        ("/parties/main/%ff/status", 400),
        ("/parties/main//status", 400),
        ("/parties/main/", 400),
        ("/parties/main/a%2Fb", 400),
        (&*format!("/parties/main/{}", "a".repeat(200)), 400),
        ("/parties/nope/game-1/status", 404),
        ("/parties/main/unknown.room/status", 404),
        ("/nothing/here", 404),
    ] {
        let (got, _, _) = http(addr, "GET", path, None).await;
        assert_eq!(got, status, "{path}");
    }
    // A WebSocket to a room id no room type matches is refused before the upgrade.
    let err = connect_async(format!("ws://{addr}/parties/main/nomatch")).await;
    assert!(err.is_err());
    let err = connect_async(format!("ws://{addr}/parties/main/game-1%zz")).await;
    assert!(err.is_err());
}

#[tokio::test]
async fn http_routes_bodies_and_cors() {
    let (addr, _stop) = start().await;
    let (s, head, body) = http(addr, "GET", "/parties/main/game-7/status", None).await;
    assert_eq!(s, 200);
    assert!(head.contains("access-control-allow-origin: *"));
    assert!(head.contains("content-type: application/json"));
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"count":0,"room":"game-7","id":"7"})
    );
    // Exact matching: no prefix routes (quirk Q18 fixed).
    assert_eq!(
        http(addr, "GET", "/parties/main/game-7/statusXYZ", None)
            .await
            .0,
        404
    );
    let (s, _, body) = http(addr, "GET", "/parties/main/game-7/nope", None).await;
    assert_eq!((s, body.as_str()), (404, r#"{"error":"Not found"}"#));
    let (s, _, body) = http(addr, "GET", "/parties/main/game-7/users/none", None).await;
    assert_eq!((s, body.as_str()), (404, r#"{"error":"User not found"}"#));

    let (s, _, body) = http(addr, "POST", "/parties/main/game-7/add", Some(r#"{"n":5}"#)).await;
    assert_eq!((s, body.as_str()), (200, r#"{"count":5}"#));
    let (s, _, body) = http(addr, "POST", "/parties/main/game-7/add", Some("{oops")).await;
    assert_eq!(
        (s, body.as_str()),
        (400, r#"{"error":"Failed to parse request body"}"#)
    );
    let (s, _, body) = http(
        addr,
        "POST",
        "/parties/main/game-7/add",
        Some(r#"{"n":"x"}"#),
    )
    .await;
    assert_eq!(s, 400);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "Invalid request body");
    assert!(v["details"].is_object());
    let (s, _, body) = http(
        addr,
        "POST",
        "/parties/main/game-7/add",
        Some(r#"{"n":1000}"#),
    )
    .await;
    assert_eq!(s, 400, "{body}");

    let (s, head, body) = http(addr, "OPTIONS", "/parties/main/anything/at/all", None).await;
    assert_eq!((s, body.as_str()), (200, "{}"));
    assert!(head.contains("access-control-allow-methods: get, post, put, delete, patch, options"));
}

/// Send `request` on a fresh TCP connection and read until the server closes it or `until`
/// is found; returns what was read.
async fn raw_exchange(addr: SocketAddr, request: &[u8], until: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap_or(0);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
        if !until.is_empty() && out.windows(until.len()).any(|w| w == until) {
            return out;
        }
    }
}

fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n",
        extra = extra
    )
}

const GOOD_UPGRADE: &str = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

#[tokio::test]
async fn malformed_handshakes_get_http_errors() {
    let (addr, _stop) = start().await;
    let cases = [
        (
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
            "400",
            "Sec-WebSocket-Key",
        ),
        (
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: a2V5a2V5a2V5a2V5a2V5aw==\r\n",
            "400",
            "Sec-WebSocket-Version",
        ),
        (
            "Connection: keep-alive\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: a2V5a2V5a2V5a2V5a2V5aw==\r\n",
            "400",
            "upgrade",
        ),
    ];
    for (headers, status, mentions) in cases {
        let req = upgrade_request(
            "/parties/main/game-h1",
            &format!("{headers}Connection: close\r\n"),
        );
        // (A second Connection header line is merged by hyper; `close` makes it end.)
        let out = raw_exchange(addr, req.as_bytes(), b"").await;
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status}")),
            "{headers:?} -> {text}"
        );
        assert!(text.contains(mentions), "{headers:?} -> {text}");
    }
    // An upgrade with a method other than GET.
    let req = format!(
        "POST /parties/main/game-h1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n{GOOD_UPGRADE}\r\n"
    );
    let out = raw_exchange(addr, req.as_bytes(), b"\r\n\r\n").await;
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 405"));
}

#[tokio::test]
async fn the_accept_key_follows_rfc_6455() {
    let (addr, _stop) = start().await;
    let req = upgrade_request("/parties/main/game-h2?id=k", GOOD_UPGRADE);
    let out = raw_exchange(addr, req.as_bytes(), b"\r\n\r\n").await;
    let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 101"), "{text}");
    assert!(
        text.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{text}"
    );
}

/// A client frame masked with key `m` (clients must mask, RFC 6455 5.3).
fn masked_text_frame(payload: &[u8]) -> Vec<u8> {
    let m = [1u8, 2, 3, 4];
    assert!(payload.len() < 126);
    let mut out = vec![0x81, 0x80 | payload.len() as u8];
    out.extend_from_slice(&m);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
    out
}

#[tokio::test]
async fn a_frame_sent_with_the_handshake_is_not_lost() {
    // The first action travels in the same TCP write as the upgrade request: hyper has read
    // it already, and the server must hand those bytes to the WebSocket reader.
    let (addr, _stop) = start().await;
    let mut req = upgrade_request("/parties/main/game-h3?id=early", GOOD_UPGRADE).into_bytes();
    req.extend(masked_text_frame(br#"{"action":"inc"}"#));
    // The action is applied: as a patch after the first packet, or already in the first
    // packet when the room handled the join and the action in one batch.
    let out = raw_exchange(addr, &req, br#""count":1"#).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    assert!(text.contains(r#""count":1"#), "{text}");
}

/// The code of the close frame among the WebSocket frames after an HTTP 101 response.
fn close_code_of(out: &[u8]) -> Option<u16> {
    let start = out.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let mut at = start;
    while at + 2 <= out.len() {
        let (op, len) = (out[at] & 0x0F, usize::from(out[at + 1] & 0x7F));
        let (len, header) = match len {
            126 => (
                usize::from(u16::from_be_bytes([out[at + 2], out[at + 3]])),
                4,
            ),
            n => (n, 2),
        };
        if op == 0x8 {
            return Some(u16::from_be_bytes([out[at + header], out[at + header + 1]]));
        }
        at += header + len;
    }
    None
}

#[tokio::test]
async fn protocol_violations_close_with_the_rfc_codes() {
    let (addr, _stop) = start().await;
    let mut unmasked = br#"{"action":"inc"}"#.to_vec();
    unmasked.splice(0..0, [0x81, unmasked.len() as u8]);
    let mut reserved_bits = masked_text_frame(b"{}");
    reserved_bits[0] |= 0x40;
    let mut reserved_opcode = masked_text_frame(b"{}");
    reserved_opcode[0] = 0x83;
    let mut lone_continuation = masked_text_frame(b"{}");
    lone_continuation[0] = 0x80;
    let not_utf8 = masked_text_frame(&[b'"', 0xff, 0xfe, b'"']);
    // A header announcing 1 MiB: refused before the payload is sent.
    let too_big = vec![0x81, 0x80 | 127, 0, 0, 0, 0, 0, 0x10, 0, 0, 1, 2, 3, 4];
    let cases: [(&str, Vec<u8>, u16); 6] = [
        ("unmasked", unmasked, 1002),
        ("reserved bits", reserved_bits, 1002),
        ("reserved opcode", reserved_opcode, 1002),
        ("continuation", lone_continuation, 1002),
        ("not UTF-8", not_utf8, 1007),
        ("too big", too_big, 1009),
    ];
    for (i, (what, frame, code)) in cases.into_iter().enumerate() {
        let mut req =
            upgrade_request(&format!("/parties/main/game-p{i}?id=p"), GOOD_UPGRADE).into_bytes();
        req.extend(frame);
        let out = raw_exchange(addr, &req, b"").await;
        assert!(out.starts_with(b"HTTP/1.1 101"), "{what}");
        assert_eq!(close_code_of(&out), Some(code), "{what}");
    }
    // The room lives on: a well-behaved client still plays.
    let mut a = ws(addr, "/parties/main/game-p0?id=q").await;
    next_json(&mut a).await;
    a.send(Message::text(r#"{"action":"inc"}"#)).await.unwrap();
    assert_eq!(next_json(&mut a).await["value"]["count"], 1);
}

#[tokio::test]
async fn a_client_close_is_answered_with_its_code() {
    let (addr, _stop) = start().await;
    let m = [9u8, 8, 7, 6];
    let mut req = upgrade_request("/parties/main/game-c1?id=c", GOOD_UPGRADE).into_bytes();
    let payload = [0x0F, 0xA0, b'b', b'y', b'e']; // 4000 "bye"
    req.extend([0x88, 0x80 | payload.len() as u8]);
    req.extend(m);
    req.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
    let out = raw_exchange(addr, &req, b"").await;
    assert_eq!(close_code_of(&out), Some(4000));
}

#[tokio::test]
async fn pings_are_answered_between_room_frames() {
    let (addr, _stop) = start().await;
    let mut a = ws(addr, "/parties/main/game-h4?id=p").await;
    next_json(&mut a).await;
    a.send(Message::Ping(b"hi".to_vec().into())).await.unwrap();
    a.send(Message::text(r#"{"action":"inc"}"#)).await.unwrap();
    let mut pong = false;
    let mut synced = false;
    while !(pong && synced) {
        match tokio::time::timeout(Duration::from_secs(5), a.next()).await {
            Ok(Some(Ok(Message::Pong(p)))) => {
                assert_eq!(&p[..], b"hi");
                pong = true;
            }
            Ok(Some(Ok(Message::Text(t)))) => {
                assert_eq!(t.as_str(), r#"{"type":"sync","value":{"count":1}}"#);
                synced = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_dropped() {
    use partyroom_server::ServerConfig;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rooms = Rooms::builder().room::<Counter>("main").unwrap().build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ServerConfig {
        header_read_timeout: Duration::from_millis(200),
        ..ServerConfig::default()
    };
    tokio::spawn(Server::with_config(rooms, config).serve(listener, std::future::pending()));
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /parties/main/counter HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the server closes the connection after the header timeout"
    );
}

/// Large patches, to fill socket buffers.
#[derive(State, Default, Clone)]
struct Blob {
    n: i64,
    blob: String,
}

impl Room for Blob {
    fn config() -> RoomConfig {
        RoomConfig::new("blob-{id}")
    }
    fn handlers(h: &mut Handlers<Self>) {
        h.action("grow", |b: &mut Self, _cx, Json(n): Json<i64>| {
            b.n = n;
            b.blob = format!("{n}:{}", "x".repeat(60_000));
        });
    }
}

#[tokio::test]
async fn frames_to_a_client_that_reads_late_arrive_whole_and_in_order() {
    // 11 MB of patches for a client that does not read: the socket buffers fill, frames
    // wait in the connection's queue (some written partly), and must come out whole and in
    // order once the client reads.
    let rooms = Rooms::builder().room::<Blob>("main").unwrap().build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(Server::new(rooms).serve(listener, std::future::pending()));
    let mut reader = ws(addr, "/parties/main/blob-1?id=r").await;
    next_json(&mut reader).await;
    let mut writer = ws(addr, "/parties/main/blob-1?id=w").await;
    next_json(&mut writer).await;
    let moves = 190; // under the rate limit's burst of 200
    for n in 1..=moves {
        writer
            .send(Message::text(format!(r#"{{"action":"grow","value":{n}}}"#)))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut last = 0;
    while last < moves {
        let v = next_json(&mut reader).await;
        let n = v["value"]["n"].as_i64().expect("n in every patch");
        assert!(n > last, "in order: {n} after {last}");
        let blob = v["value"]["blob"].as_str().expect("blob in every patch");
        assert_eq!(blob, format!("{n}:{}", "x".repeat(60_000)), "whole");
        last = n;
    }
}
