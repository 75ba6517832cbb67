//! The WebSocket opening handshake (RFC 6455, sections 4.2.1 and 4.2.2) over real sockets:
//! raw upgrade requests with a bad, duplicated or missing `Sec-WebSocket-Key`,
//! `Sec-WebSocket-Version` or `Host` are refused with an HTTP error, never `101`, and good
//! ones are still accepted.

use std::net::SocketAddr;
use std::time::Duration;

use partyroom_room::{Handlers, Room, RoomConfig, Rooms};
use partyroom_server::Server;
use partyroom_state::State;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A room with nothing in it: the handshake is all these tests look at.
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

/// The room every request of these tests upgrades to.
const PATH: &str = "/parties/main/counter";

/// Start a server on 127.0.0.1:0; it stops when the sender is dropped.
async fn start() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let rooms = Rooms::builder().room::<Counter>("main").unwrap().build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(Server::new(rooms).serve(listener, async move {
        let _ = rx.await;
    }));
    (addr, tx)
}

/// The header lines of a good upgrade request, in order.
const GOOD: [(&str, &str); 5] = [
    ("Host", "x"),
    ("Connection", "Upgrade"),
    ("Upgrade", "websocket"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

/// The good header lines with every `name` line replaced by one line per value (none: the
/// header is missing).
fn with(name: &str, values: &[&str]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = GOOD
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case(name))
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    out.extend(values.iter().map(|v| (name.to_owned(), (*v).to_owned())));
    out
}

/// An upgrade request to [`PATH`] with these header lines.
fn request(version: &str, headers: &[(String, String)]) -> String {
    let mut req = format!("GET {PATH} {version}\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    req
}

/// Send `request` on a fresh connection; the status code and the lowercased response head
/// (status line and headers). Only the head is read.
async fn exchange(addr: SocketAddr, request: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
    let head = text.split("\r\n\r\n").next().unwrap_or_default().to_owned();
    let status = head
        .strip_prefix("http/1.1 ")
        .or_else(|| head.strip_prefix("http/1.0 "))
        .and_then(|rest| rest.get(..3))
        .unwrap_or("none")
        .to_owned();
    (status, head)
}

/// Send each case and check its status (and, if given, a header line of the answer); every
/// mismatch is listed in the one failure.
async fn expect_all(addr: SocketAddr, cases: &[(&str, String, &str, Option<&str>)]) {
    let mut failures = Vec::new();
    for (what, req, want, line) in cases {
        let (status, head) = exchange(addr, req).await;
        if status != *want {
            failures.push(format!("{what}: status {status}, want {want}\n{head}"));
        } else if let Some(line) = line
            && !head.lines().any(|l| l.trim() == *line)
        {
            failures.push(format!("{what}: no `{line}` header\n{head}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[tokio::test]
async fn bad_keys_get_400() {
    let (addr, _stop) = start().await;
    let bad = [
        ("missing", None),
        ("empty", Some("")),
        ("too short", Some("abc")),
        ("23 characters", Some("dGhlIHNhbXBsZSBub25jZQ=")),
        ("25 characters", Some("dGhlIHNhbXBsZSBub25jZQ===")),
        ("no padding", Some("dGhlIHNhbXBsZSBub25jZQ")),
        ("URL-safe alphabet", Some("-_52z05ZR_xyGXQh6mhB0g==")),
        ("non-alphabet character", Some("dGhlIHNhbXBsZSBub25jZ!==")),
        ("inner space", Some("dGhlIHNhbXBs ZSBub25jZQ==")),
        ("only padding", Some("========================")),
        ("padding in the middle", Some("dGhlIHNhbXBs==ZSBub25jZQ")),
        ("15 bytes", Some("AAECAwQFBgcICQoLDA0O")),
        ("15 bytes, padded to 24", Some("AAECAwQFBgcICQoLDA0O====")),
        ("17 bytes", Some("AAECAwQFBgcICQoLDA0ODxA=")),
        (
            "17 bytes, 28 characters",
            Some("AAECAwQFBgcICQoLDA0ODxAR=="),
        ),
        ("nonzero padding bits", Some("dGhlIHNhbXBsZSBub25jZR==")),
        (
            "two keys in one line",
            Some("dGhlIHNhbXBsZSBub25jZQ==, AAECAwQFBgcICQoLDA0ODw=="),
        ),
    ];
    let cases: Vec<_> = bad
        .iter()
        .map(|(what, key)| {
            let headers = with("Sec-WebSocket-Key", key.as_slice());
            (*what, request("HTTP/1.1", &headers), "400", None)
        })
        .collect();
    expect_all(addr, &cases).await;
}

#[tokio::test]
async fn duplicate_and_missing_headers_get_400() {
    let (addr, _stop) = start().await;
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let other = "AAECAwQFBgcICQoLDA0ODw==";
    let version = "sec-websocket-version: 13";
    let cases = [
        (
            "the same key twice",
            with("Sec-WebSocket-Key", &[key, key]),
            None,
        ),
        (
            "two different keys",
            with("Sec-WebSocket-Key", &[key, other]),
            None,
        ),
        (
            "version 13 twice",
            with("Sec-WebSocket-Version", &["13", "13"]),
            Some(version),
        ),
        ("Host twice", with("Host", &["x", "x"]), None),
        ("two different hosts", with("Host", &["x", "y"]), None),
        ("no Host", with("Host", &[]), None),
        ("empty Host", with("Host", &[""]), None),
    ];
    let cases: Vec<_> = cases
        .into_iter()
        .map(|(what, headers, line)| (what, request("HTTP/1.1", &headers), "400", line))
        .collect();
    expect_all(addr, &cases).await;
}

#[tokio::test]
async fn an_unsupported_version_gets_400_naming_version_13() {
    // RFC 6455, section 4.4: the refusal carries the versions the server speaks.
    let (addr, _stop) = start().await;
    let version = Some("sec-websocket-version: 13");
    let cases: Vec<_> = [
        ("version 8", &["8"][..]),
        ("version 14", &["14"]),
        ("versions 13 and 8 in one line", &["13, 8"]),
        ("empty version", &[""]),
        ("no version", &[]),
    ]
    .into_iter()
    .map(|(what, values)| {
        let headers = with("Sec-WebSocket-Version", values);
        (what, request("HTTP/1.1", &headers), "400", version)
    })
    .collect();
    expect_all(addr, &cases).await;
}

#[tokio::test]
async fn http_1_0_is_not_upgraded() {
    // RFC 6455, section 4.2.1: the handshake is an HTTP/1.1 (or higher) GET. 426 must name
    // the protocol to upgrade to (RFC 9110, section 15.5.22).
    let (addr, _stop) = start().await;
    // (`with` one `Host: x`: the good request as it is.)
    let cases = [(
        "HTTP/1.0",
        request("HTTP/1.0", &with("Host", &["x"])),
        "426",
        Some("upgrade: websocket"),
    )];
    expect_all(addr, &cases).await;
}

#[tokio::test]
async fn good_handshakes_get_101() {
    let (addr, _stop) = start().await;
    let keys = [
        // RFC 6455, section 1.3, with its accept value.
        ("dGhlIHNhbXBsZSBub25jZQ==", "s3pplmbitxaq9kygzzhzrbk+xoo="),
        // 16 zero bytes, 16 bytes 0xff, and 16 random bytes.
        ("AAAAAAAAAAAAAAAAAAAAAA==", ""),
        ("/////////////////////w==", ""),
        ("y+52z05ZR/xyGXQh6mhB0g==", ""),
    ];
    let mut failures = Vec::new();
    for (key, accept) in keys {
        let (status, head) = exchange(
            addr,
            &request("HTTP/1.1", &with("Sec-WebSocket-Key", &[key])),
        )
        .await;
        if status != "101" || !head.contains(&format!("sec-websocket-accept: {accept}")) {
            failures.push(format!("{key}: {head}"));
        }
    }
    // Header names and the token values are case-insensitive; a Host with a port.
    let lower = "GET /parties/main/counter HTTP/1.1\r\nhost: 127.0.0.1:80\r\n\
                 connection: keep-alive, upgrade\r\nupgrade: WebSocket\r\n\
                 sec-websocket-version: 13\r\nsec-websocket-key: hDsfFdCqUbgnHxDdxbtzmQ==\r\n\r\n";
    let (status, head) = exchange(addr, lower).await;
    if status != "101" {
        failures.push(format!("lowercase names: {head}"));
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}
