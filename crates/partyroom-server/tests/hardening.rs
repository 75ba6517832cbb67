//! Connections that a hostile or unlucky client holds open, over real sockets on 127.0.0.1:0:
//! clients that stop reading, never answer, send half a frame or half a body, too many
//! connections, oversize session ids, and shutdown with all of them present.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use partyroom_room::storage::{MemoryStorage, RoomKey};
use partyroom_room::{Handlers, Room, RoomConfig, Rooms};
use partyroom_server::{Server, ServerConfig};
use partyroom_state::State;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

#[derive(State, Default, Clone)]
struct Hard {
    count: i64,
    blob: String,
}

impl Room for Hard {
    fn config() -> RoomConfig {
        // Only the final save writes (the throttle is longer than any test), and few frames
        // may wait for a slow client.
        RoomConfig::new("hard")
            .throttle_storage(Duration::from_secs(600))
            .outgoing_queue(8)
    }
    fn handlers(h: &mut Handlers<Self>) {
        blob_handlers(h, |r| (&mut r.count, &mut r.blob));
    }
}

/// `inc`, and `blob`: a patch of `n` KiB for everyone, different each time.
fn blob_handlers<R: Room>(h: &mut Handlers<R>, fields: fn(&mut R) -> (&mut i64, &mut String)) {
    h.action("inc", move |r: &mut R, _cx, ()| *fields(r).0 += 1)
        .action("blob", move |r: &mut R, _cx, n: Value| {
            let (count, blob) = fields(r);
            let c = char::from(b'a' + (*count % 26) as u8);
            *count += 1;
            *blob = c
                .to_string()
                .repeat(n.as_u64().unwrap_or(1) as usize * 1024);
        });
}

/// As [`Hard`], with a room's default queue of 1,024 frames: a client that does not read
/// stays stuck for a long time before it is closed as too slow.
#[derive(State, Default, Clone)]
struct Wide {
    count: i64,
    blob: String,
}

impl Room for Wide {
    fn config() -> RoomConfig {
        RoomConfig::new("wide").throttle_storage(Duration::from_secs(600))
    }
    fn handlers(h: &mut Handlers<Self>) {
        blob_handlers(h, |r| (&mut r.count, &mut r.blob));
    }
}

/// A running server: its address, its storage, the shutdown trigger and the serve task.
struct Running {
    addr: SocketAddr,
    storage: Arc<MemoryStorage>,
    stop: Option<oneshot::Sender<()>>,
    served: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Trigger shutdown; `Ok` if `serve` returned within `within`.
    async fn shut_down(mut self, within: Duration) -> Result<Arc<MemoryStorage>, &'static str> {
        let _ = self.stop.take().unwrap().send(());
        match tokio::time::timeout(within, &mut self.served).await {
            Ok(r) => {
                r.unwrap().unwrap();
                Ok(self.storage)
            }
            Err(_) => {
                self.served.abort();
                Err("serve did not return")
            }
        }
    }
}

async fn serve(config: ServerConfig) -> Running {
    let storage = Arc::new(MemoryStorage::new());
    let rooms = Rooms::builder()
        .room::<Hard>("main")
        .unwrap()
        .room::<Wide>("main")
        .unwrap()
        .storage(storage.clone())
        .build();
    let listener = partyroom_server::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(
        Server::with_config(rooms, config).serve(listener, async move {
            let _ = stopped.await;
        }),
    );
    Running {
        addr,
        storage,
        stop: Some(stop),
        served,
    }
}

/// The `count` the room `room` saved.
fn saved_count(storage: &MemoryStorage, room: &str) -> Option<i64> {
    let saved = storage.room(&RoomKey::new("main", room));
    saved.get("state/count").and_then(Value::as_i64)
}

/// The code of the first close frame among `frames`.
fn close_code(frames: &[(u8, Vec<u8>)]) -> Option<u16> {
    frames
        .iter()
        .find(|(op, _)| *op == 0x8)
        .map(|(_, p)| u16::from_be_bytes([p[0], p[1]]))
}

/// Whether a close frame is among `frames`.
fn has_close(frames: &[(u8, Vec<u8>)]) -> bool {
    close_code(frames).is_some()
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\r\n"
    )
}

/// A raw WebSocket client after its `101`, with what came after the response's head.
async fn raw_ws(addr: SocketAddr, receive_buffer: Option<u32>) -> (TcpStream, Vec<u8>) {
    raw_ws_to(addr, "hard", receive_buffer).await
}

/// [`raw_ws`] to the room `room` of the `main` party.
async fn raw_ws_to(
    addr: SocketAddr,
    room: &str,
    receive_buffer: Option<u32>,
) -> (TcpStream, Vec<u8>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(bytes) = receive_buffer {
        // Before connecting, so that the window the server sees is small from the start.
        socket.set_recv_buffer_size(bytes).unwrap();
    }
    let mut s = socket.connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(upgrade_request(&format!("/parties/main/{room}")).as_bytes())
        .await
        .unwrap();
    let (head, rest) = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    (s, rest)
}

/// Read an HTTP response's head; returns it and the bytes read past it.
async fn read_head(s: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(at + 4);
            return (String::from_utf8_lossy(&buf).into_owned(), rest);
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("response head in time")
            .unwrap();
        assert!(n > 0, "connection closed before the response head");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A masked client frame.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [7u8, 1, 9, 3];
    let mut out = vec![0x80 | opcode];
    if payload.len() < 126 {
        out.push(0x80 | payload.len() as u8);
    } else {
        out.push(0x80 | 126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    out
}

/// Server frames (unmasked) parsed off the front of `buf`: (opcode, payload).
fn server_frames(buf: &mut Vec<u8>) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        if buf.len() < 2 {
            return out;
        }
        let (len, header) = match buf[1] & 0x7F {
            126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
            127 if buf.len() >= 10 => (
                usize::try_from(u64::from_be_bytes(buf[2..10].try_into().unwrap())).unwrap(),
                10,
            ),
            126 | 127 => return out,
            n => (usize::from(n), 2),
        };
        if buf.len() < header + len {
            return out;
        }
        let opcode = buf[0] & 0x0F;
        let payload = buf[header..header + len].to_vec();
        buf.drain(..header + len);
        out.push((opcode, payload));
    }
}

/// Read server frames until `done` says so, the stream ends or `within` passes; returns the
/// frames read and whether the stream ended (EOF or reset).
async fn read_frames(
    s: &mut TcpStream,
    mut buf: Vec<u8>,
    within: Duration,
    mut done: impl FnMut(&[(u8, Vec<u8>)]) -> bool,
) -> (Vec<(u8, Vec<u8>)>, bool) {
    let mut frames = server_frames(&mut buf);
    let deadline = tokio::time::Instant::now() + within;
    let mut chunk = vec![0u8; 64 * 1024];
    while !done(&frames) {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => return (frames, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (frames, true),
            Ok(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                frames.extend(server_frames(&mut buf));
            }
        }
    }
    (frames, false)
}

/// The socket's pending error (`SO_ERROR`), read without reading the socket: a reset shows
/// as `ECONNRESET` here even while unread data waits.
fn socket_error(s: &TcpStream) -> Option<std::io::Error> {
    s.take_error().unwrap()
}

/// Wait until the server has reset `s` (without reading it), at most `within`.
async fn reset_within(s: &TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(e) = socket_error(s) {
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A client (tungstenite, which answers pings) that sends actions and reads what comes.
async fn driver(
    addr: SocketAddr,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>> {
    driver_to(addr, "hard").await
}

/// [`driver`] in the room `room` of the `main` party.
async fn driver_to(
    addr: SocketAddr,
    room: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/parties/main/{room}"))
        .await
        .unwrap();
    assert!(matches!(ws.next().await, Some(Ok(Message::Text(_)))));
    ws
}

/// Send `blob` actions of `kib` KiB, `times` times, reading the patches as they come.
async fn broadcast_blobs(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
    kib: usize,
    times: usize,
) {
    for _ in 0..times {
        ws.send(Message::text(format!(
            r#"{{"action":"blob","value":{kib}}}"#
        )))
        .await
        .unwrap();
        // Each action's patch comes back to the sender too.
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("patch in time");
        assert!(matches!(m, Some(Ok(Message::Text(_)))), "{m:?}");
    }
}

/// Issue item 1: a client that stops reading fills its queue, is closed with 1013, and is
/// then dropped (reset) within the close-flush deadline instead of holding its task and
/// descriptor until it reads again.
#[tokio::test]
async fn a_client_that_stops_reading_is_reset_after_its_queue_fills() {
    let server = serve(ServerConfig {
        write_timeout: Duration::from_secs(60),
        ..ServerConfig::default()
    })
    .await;
    let (stuck, _) = raw_ws(server.addr, Some(4096)).await;
    let mut ws = driver(server.addr).await;
    // 8 KiB patches: the kernel buffers (capped) and then the 8-frame queue fill up.
    broadcast_blobs(&mut ws, 8, 40).await;
    assert!(
        reset_within(&stuck, Duration::from_secs(5)).await,
        "the server let go of the client that does not read"
    );
    // The room goes on for the others.
    broadcast_blobs(&mut ws, 1, 1).await;
    server.shut_down(Duration::from_secs(5)).await.unwrap();
}

/// The write deadline: frames wait (fewer than the queue holds) and the socket takes none of
/// them: the connection is dropped after `write_timeout`.
#[tokio::test]
async fn a_socket_that_takes_nothing_is_dropped_after_the_write_timeout() {
    let server = serve(ServerConfig {
        write_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    })
    .await;
    let (stuck, _) = raw_ws(server.addr, Some(4096)).await;
    let mut ws = driver(server.addr).await;
    // 3 patches of 60 KiB: more than the kernel buffers take, fewer than the queue's 8.
    broadcast_blobs(&mut ws, 60, 3).await;
    let started = Instant::now();
    assert!(
        reset_within(&stuck, Duration::from_secs(3)).await,
        "dropped after the write timeout"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    server.shut_down(Duration::from_secs(5)).await.unwrap();
}

/// Issue item 1, the deploy case: SIGTERM's shutdown with a client that stopped reading
/// finishes within the close deadline, and the final save runs.
#[tokio::test]
async fn shutdown_with_a_stuck_client_finishes_and_saves() {
    let server = serve(ServerConfig {
        // Neither deadline may be what ends the stuck connection here.
        write_timeout: Duration::from_secs(600),
        shutdown_timeout: Duration::from_secs(600),
        ..ServerConfig::default()
    })
    .await;
    let (stuck, _) = raw_ws_to(server.addr, "wide", Some(4096)).await;
    let mut ws = driver_to(server.addr, "wide").await;
    // 3 MB: more than the kernel buffers take even uncapped, far from the 1,024 frames of
    // the queue: the connection is stuck, not closed.
    broadcast_blobs(&mut ws, 60, 50).await;
    ws.send(Message::text(r#"{"action":"inc","value":null}"#))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(socket_error(&stuck).is_none(), "still connected");
    let storage = server
        .shut_down(Duration::from_secs(6))
        .await
        .expect("shutdown finishes with a client that does not read");
    assert_eq!(saved_count(&storage, "wide"), Some(51));
}

/// The shutdown deadline: a request whose body never finishes holds its HTTP connection;
/// `serve` still returns after `shutdown_timeout`, and saves.
#[tokio::test]
async fn shutdown_is_bounded_by_its_timeout_and_still_saves() {
    let server = serve(ServerConfig {
        body_read_timeout: Duration::from_secs(600),
        shutdown_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    })
    .await;
    let mut ws = driver(server.addr).await;
    ws.send(Message::text(r#"{"action":"inc","value":null}"#))
        .await
        .unwrap();
    let _ = ws.next().await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(
        b"POST /parties/main/hard/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let storage = server
        .shut_down(Duration::from_secs(5))
        .await
        .expect("serve returns after its shutdown timeout");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(saved_count(&storage, "hard"), Some(1));
}

/// Issue item 2: a silent client is pinged each interval and dropped after the liveness
/// timeout; one that answers stays.
#[tokio::test]
async fn silent_clients_are_pinged_then_dropped_and_answering_ones_stay() {
    let server = serve(ServerConfig {
        ping_interval: Some(Duration::from_millis(150)),
        liveness_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    })
    .await;
    let (mut silent, rest) = raw_ws(server.addr, None).await;
    // tungstenite answers pings while it reads.
    let mut alive = driver(server.addr).await;
    let reader = tokio::spawn(async move {
        let mut pings = 0;
        let until = tokio::time::Instant::now() + Duration::from_millis(1200);
        while let Ok(Some(m)) = tokio::time::timeout_at(until, alive.next()).await {
            match m {
                Ok(Message::Ping(_)) => pings += 1,
                Ok(_) => {}
                Err(e) => panic!("the answering client was dropped: {e}"),
            }
        }
        // Still connected: an action gets its patch.
        alive
            .send(Message::text(r#"{"action":"inc","value":null}"#))
            .await
            .unwrap();
        let m = tokio::time::timeout(Duration::from_secs(2), alive.next()).await;
        assert!(matches!(m, Ok(Some(Ok(Message::Text(_))))), "{m:?}");
        pings
    });
    let started = Instant::now();
    let (frames, ended) = read_frames(&mut silent, rest, Duration::from_secs(3), |_| false).await;
    let elapsed = started.elapsed();
    let pings = frames.iter().filter(|(op, _)| *op == 0x9).count();
    assert!(ended, "the silent client was dropped");
    assert!(pings >= 2, "pinged each interval: {pings} pings");
    assert!(
        elapsed >= Duration::from_millis(400) && elapsed < Duration::from_millis(1500),
        "dropped at the liveness timeout: {elapsed:?}"
    );
    assert!(
        reader.await.unwrap() >= 4,
        "the answering client is pinged too"
    );
    server.shut_down(Duration::from_secs(5)).await.unwrap();
}

/// Issue item 2: half a frame, then nothing: the connection is closed with 1008 after the
/// frame read timeout (pings off, so that only that deadline applies).
#[tokio::test]
async fn half_a_frame_is_closed_after_the_frame_timeout() {
    let server = serve(ServerConfig {
        ping_interval: None,
        frame_read_timeout: Some(Duration::from_millis(300)),
        ..ServerConfig::default()
    })
    .await;
    for cut in [1, 2, 6, 10] {
        let (mut s, rest) = raw_ws(server.addr, None).await;
        let frame = client_frame(0x1, br#"{"action":"inc","value":null}"#);
        s.write_all(&frame[..cut]).await.unwrap();
        let (frames, _) = read_frames(&mut s, rest, Duration::from_secs(3), has_close).await;
        assert_eq!(
            close_code(&frames),
            Some(1008),
            "cut after {cut} bytes: {frames:?}"
        );
    }
    // A fragmented message that never ends, too.
    let (mut s, rest) = raw_ws(server.addr, None).await;
    let mut first = client_frame(0x1, b"{\"action\"");
    first[0] &= 0x7F; // not FIN
    s.write_all(&first).await.unwrap();
    let (frames, _) = read_frames(&mut s, rest, Duration::from_secs(3), has_close).await;
    assert_eq!(close_code(&frames), Some(1008));
    server.shut_down(Duration::from_secs(5)).await.unwrap();
}

/// Issue item 3: what the kernel absorbs for a client that does not read is capped by the
/// send buffer: after it stops reading, the bytes that still reach it (the kernel buffers on
/// both sides, and the frame being written) stay small.
#[tokio::test]
async fn the_kernel_send_buffer_is_capped() {
    let server = serve(ServerConfig {
        write_timeout: Duration::from_secs(60),
        ..ServerConfig::default()
    })
    .await;
    let (mut stuck, rest) = raw_ws(server.addr, Some(16 * 1024)).await;
    let mut ws = driver(server.addr).await;
    // 2.4 MB in 40 patches while the client does not read: the queue (8 frames) fills and
    // the server closes with 1013, dropping what it queued.
    broadcast_blobs(&mut ws, 60, 40).await;
    // Read now, before the close deadline: what arrives before the close frame is what the
    // kernel buffers held.
    let mut before_close = 0usize;
    let (frames, _) = read_frames(&mut stuck, rest, Duration::from_secs(3), has_close).await;
    for (op, payload) in &frames {
        if *op == 0x8 {
            break;
        }
        before_close += payload.len();
    }
    assert_eq!(close_code(&frames), Some(1013), "closed as too slow");
    // The server's 32 KiB (64 KiB as the kernel counts it), the client's 16 KiB (32 KiB), and
    // the 60 KiB frame that was being written when the queue was dropped; without the cap
    // the kernel absorbed all 2.4 MB here, and the queue never filled.
    assert!(
        before_close <= 300 * 1024,
        "{before_close} bytes absorbed by the kernel for a client that does not read"
    );
    server.shut_down(Duration::from_secs(5)).await.unwrap();
}

/// Issue item 4: a body shorter than its Content-Length is answered 408 after the body
/// timeout, and the connection closed.
#[tokio::test]
async fn a_body_that_never_finishes_is_answered_408() {
    let server = serve(ServerConfig {
        body_read_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    })
    .await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(
        b"POST /parties/main/hard/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let (head, _) = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(started.elapsed() < Duration::from_secs(2));
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the connection is closed after the 408");
    server.shut_down(Duration::from_secs(5)).await.unwrap();
}

/// Issue item 5: a malformed chunked body is a bad request (400), an oversize one 413.
#[tokio::test]
async fn body_errors_are_400_and_oversize_bodies_413() {
    let server = serve(ServerConfig {
        max_body_bytes: 64,
        ..ServerConfig::default()
    })
    .await;
    let cases: [(&[u8], &str); 4] = [
        (
            b"POST /parties/main/hard/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
            "HTTP/1.1 400",
        ),
        (
            b"POST /parties/main/hard/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n",
            "HTTP/1.1 400",
        ),
        (
            b"POST /parties/main/hard/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n",
            "HTTP/1.1 413",
        ),
        (
            b"POST /parties/main/hard/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n50\r\n01234567890123456789012345678901234567890123456789012345678901234567890123456789\r\n0\r\n\r\n",
            "HTTP/1.1 413",
        ),
    ];
    for (request, want) in cases {
        eprintln!("case {:?}", String::from_utf8_lossy(request));
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let (head, _) = read_head(&mut s).await;
        assert!(
            head.starts_with(want),
            "{want} for {:?}: {head}",
            String::from_utf8_lossy(request)
        );
    }
    server.shut_down(Duration::from_secs(5)).await.unwrap();
}

/// Issue item 4: plain HTTP connections and unfinished handshakes count towards
/// `max_connections`; a connection beyond it is answered 503 at once; a WebSocket keeps the
/// count of its connection, and a closed one frees it.
#[tokio::test]
async fn every_tcp_connection_counts_towards_max_connections() {
    let server = serve(ServerConfig {
        max_connections: 2,
        ..ServerConfig::default()
    })
    .await;
    let status = |addr| async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = s
            .write_all(b"GET /parties/main/hard/x HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await;
        String::from_utf8_lossy(&buf).into_owned()
    };
    // Two connections that never finish their request head.
    let mut idle_a = TcpStream::connect(server.addr).await.unwrap();
    idle_a.write_all(b"GET /parties/main/hard").await.unwrap();
    let idle_b = TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let third = status(server.addr).await;
    assert!(third.starts_with("HTTP/1.1 503"), "{third}");
    drop(idle_a);
    drop(idle_b);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let served = status(server.addr).await;
    assert!(
        served.starts_with("HTTP/1.1 404") || served.starts_with("HTTP/1.1 200"),
        "{served}"
    );
    // A WebSocket and an idle connection fill the two places.
    let ws = driver(server.addr).await;
    let idle = TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(status(server.addr).await.starts_with("HTTP/1.1 503"));
    drop(ws);
    drop(idle);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = driver(server.addr).await;
    again
        .send(Message::text(r#"{"action":"inc","value":null}"#))
        .await
        .unwrap();
    assert!(matches!(again.next().await, Some(Ok(Message::Text(_)))));
    server.shut_down(Duration::from_secs(5)).await.unwrap();
}

/// Issue item 7: a session id over 128 bytes is refused with a clear 400 before the
/// upgrade; 128 bytes pass.
#[tokio::test]
async fn session_ids_over_128_bytes_are_refused() {
    let server = serve(ServerConfig::default()).await;
    for (id, want) in [
        ("a".repeat(129), "HTTP/1.1 400"),
        ("b".repeat(60_000), "HTTP/1.1 400"),
        ("c".repeat(128), "HTTP/1.1 101"),
    ] {
        for param in ["id", "_pk"] {
            let mut s = TcpStream::connect(server.addr).await.unwrap();
            s.write_all(upgrade_request(&format!("/parties/main/hard?{param}={id}")).as_bytes())
                .await
                .unwrap();
            let (head, mut rest) = read_head(&mut s).await;
            assert!(head.starts_with(want), "{} bytes: {head}", id.len());
            if want.ends_with("400") {
                while !rest.contains(&b'}') {
                    let mut chunk = [0u8; 512];
                    let n = s.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    rest.extend_from_slice(&chunk[..n]);
                }
                let body = String::from_utf8_lossy(&rest);
                assert!(body.contains("Session id too long"), "{body}");
            }
        }
    }
    server.shut_down(Duration::from_secs(5)).await.unwrap();
}
