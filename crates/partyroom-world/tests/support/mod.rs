//! Real processes of the `partyroom-world` binary on loopback, and small HTTP/WebSocket
//! clients to drive them.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use partyroom_world::auth::{Claims, sign};
use partyroom_world::http_client::{self, BaseUrl};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub const JWT_SECRET: &str = "test-jwt-secret";
pub const SHARD_SECRET: &str = "test-shard-secret";

/// A running `partyroom-world` process, killed on drop.
pub struct Proc {
    child: Child,
    pub port: u16,
    pub base: BaseUrl,
    logs: Arc<Mutex<String>>,
}

impl Proc {
    /// Start `partyroom-world --port 0 <args>` with the test secrets and fast timers.
    pub fn spawn(args: &[&str]) -> Proc {
        let mut all = vec!["--port", "0", "--stats-interval-ms", "150"];
        all.extend_from_slice(args);
        let mut child = Command::new(env!("CARGO_BIN_EXE_partyroom-world"))
            .args(&all)
            .env("AUTH_JWT_SECRET", JWT_SECRET)
            .env("SHARD_SECRET", SHARD_SECRET)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("PORT")
            .env_remove("WORLD_ID")
            .env_remove("SIGNE_WORLD_ID")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn partyroom-world");
        let logs = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().expect("stderr");
        let sink = logs.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on http://127.0.0.1:").nth(1) {
                    let _ = tx.send(rest.trim().parse::<u16>().ok());
                    break;
                }
            }
            for _ in lines {}
        });
        let port = rx
            .recv_timeout(Duration::from_secs(30))
            .ok()
            .flatten()
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!(
                    "partyroom-world {all:?} did not start: {}",
                    logs.lock().unwrap()
                )
            });
        Proc {
            child,
            port,
            base: BaseUrl::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
            logs,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What the process logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- logs of partyroom-world on port {} ---\n{}",
                self.port,
                self.logs()
            );
        }
    }
}

/// An admin token for `worlds`, valid for a minute.
pub fn token(worlds: &[&str]) -> String {
    sign(&Claims::new(worlds, Duration::from_secs(60)), JWT_SECRET)
}

/// `Authorization: Bearer <token>`.
pub fn bearer(token: &str) -> Vec<(&'static str, String)> {
    vec![("authorization", format!("Bearer {token}"))]
}

/// An admin header for `world`.
pub fn admin(world: &str) -> Vec<(&'static str, String)> {
    bearer(&token(&[world]))
}

/// The shard secret header.
pub fn shard_secret() -> Vec<(&'static str, String)> {
    vec![("x-access-shard", SHARD_SECRET.to_owned())]
}

fn header_map(headers: &[(&str, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    map
}

/// A request; returns the status and the JSON body (`Null` if not JSON).
pub async fn request(
    p: &Proc,
    method: Method,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, String)],
) -> (StatusCode, Value) {
    let mut map = header_map(headers);
    let body = match body {
        Some(b) => {
            map.insert("content-type", HeaderValue::from_static("application/json"));
            bytes::Bytes::from(b.to_string())
        }
        None => bytes::Bytes::new(),
    };
    let r = http_client::send(
        &p.base,
        method,
        path,
        map,
        body,
        Duration::from_secs(10),
        16 << 20,
    )
    .await
    .expect("request");
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

/// `POST /parties/world/<world>/<action>`.
pub async fn world_post(
    p: &Proc,
    world: &str,
    action: &str,
    body: Value,
    headers: &[(&str, String)],
) -> (StatusCode, Value) {
    request(
        p,
        Method::POST,
        &format!("/parties/world/{world}/{action}"),
        Some(&body),
        headers,
    )
    .await
}

/// `POST .../connect` for `room`; returns the shard id (panics unless 200).
pub async fn connect(p: &Proc, world: &str, room: &str) -> String {
    let (status, body) = world_post(
        p,
        world,
        "connect",
        serde_json::json!({"roomId": room, "autoCreate": true}),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "connect {room}: {body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["url"], body["shardId"]);
    body["shardId"].as_str().unwrap().to_owned()
}

/// The world's shards (admin listing), optionally of one room.
pub async fn shards(p: &Proc, world: &str, room: Option<&str>) -> serde_json::Map<String, Value> {
    let path = match room {
        Some(r) => format!("/parties/world/{world}/shards?roomId={r}"),
        None => format!("/parties/world/{world}/shards"),
    };
    let (status, body) = request(p, Method::GET, &path, None, &admin(world)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["shards"].as_object().cloned().unwrap_or_default()
}

/// Register a room as an admin.
pub async fn register_room(p: &Proc, world: &str, room: Value) {
    let (status, body) = world_post(p, world, "register-room", room, &admin(world)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Report stats for a shard as a shard.
pub async fn update_shard(p: &Proc, world: &str, body: Value) -> (StatusCode, Value) {
    world_post(p, world, "update-shard", body, &shard_secret()).await
}

/// Poll `f` until it returns `Some`, for up to `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until the world reports `n` connections for `shard`.
pub async fn wait_connections(p: &Proc, world: &str, shard: &str, n: u64) {
    eventually(
        10,
        &format!("{shard} to report {n} connections"),
        || async {
            let s = shards(p, world, None).await;
            (s.get(shard)?.get("currentConnections")?.as_u64()? == n).then_some(())
        },
    )
    .await;
}

type Stream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket client that parses every text frame as JSON.
pub struct Ws {
    stream: Stream,
    pub frames: Vec<Value>,
    pub closed: Option<(u16, String)>,
}

/// Open `ws://127.0.0.1:<port><path>`; `Err(status)` if the upgrade is refused.
pub async fn ws(port: u16, path: &str, headers: &[(&str, String)]) -> Result<Ws, StatusCode> {
    let mut req = format!("ws://127.0.0.1:{port}{path}")
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((stream, _)) => Ok(Ws {
            stream,
            frames: Vec::new(),
            closed: None,
        }),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status()),
        Err(e) => panic!("ws {path}: {e}"),
    }
}

/// A client of `shard` through the gateway of `p`, with session `id`.
pub async fn shard_client(p: &Proc, shard: &str, id: &str) -> Ws {
    let mut ws = ws(
        p.port,
        &format!("/parties/shard/{shard}?id={id}&name={id}"),
        &[],
    )
    .await
    .unwrap_or_else(|s| panic!("shard socket refused: {s}"));
    let first = ws.next().await.expect("first packet");
    assert_eq!(first["type"], "sync", "{first}");
    assert!(first["value"]["pId"].is_string(), "{first}");
    ws
}

impl Ws {
    /// The next JSON frame (5 s), or `None` once closed.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(5), self.stream.next())
                .await
                .ok()??;
            match msg {
                Ok(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("JSON frame");
                    self.frames.push(v.clone());
                    return Some(v);
                }
                Ok(Message::Close(frame)) => {
                    self.closed = Some(frame.map_or((1005, String::new()), |f| {
                        (f.code.into(), f.reason.as_str().to_owned())
                    }));
                    return None;
                }
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Read frames until one satisfies `pred`.
    pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            match self.next().await {
                Some(v) if pred(&v) => return v,
                Some(_) => continue,
                None => panic!("no frame for {what}; got {:?}", self.frames),
            }
        }
    }

    /// Send `{"action":..,"value":..}`.
    pub async fn emit(&mut self, action: &str, value: Value) {
        let text = serde_json::json!({"action": action, "value": value}).to_string();
        self.stream.send(Message::text(text)).await.unwrap();
    }

    /// Close and wait for the close handshake.
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
        while let Ok(Some(Ok(_))) =
            tokio::time::timeout(Duration::from_secs(2), self.stream.next()).await
        {}
    }
}
