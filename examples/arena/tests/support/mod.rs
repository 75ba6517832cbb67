//! Starting the arena binary and talking to it over real sockets.

#![allow(dead_code)]

pub mod cluster;
pub mod db_link;

/// The binary [`cluster`] starts as its nodes.
pub const NODE_BIN: &str = env!("CARGO_BIN_EXE_partyroom-arena");

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use partyroom_state::ClientMirror;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// A running arena server process.
pub struct Arena {
    pub child: Child,
    pub port: u16,
}

impl Arena {
    /// Start `partyroom-arena --port 0` with extra arguments; waits for its port.
    pub fn start(args: &[&str]) -> Arena {
        let mut child = Command::new(env!("CARGO_BIN_EXE_partyroom-arena"))
            .args(["--port", "0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("arena binary starts");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("server prints its address")
                .expect("stdout readable");
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest.rsplit(':').next().unwrap().trim().parse().unwrap();
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Arena { child, port }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }

    pub async fn state(&self, room: &str) -> Value {
        http_get(self.port, &format!("/parties/main/{room}/state")).await
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn http_get(port: u16, path: &str) -> Value {
    let (_, body) = http_get_text(port, path).await;
    serde_json::from_str(&body).unwrap_or_else(|_| panic!("JSON body: {body}"))
}

/// `GET path` on `port` (HTTP/1.1, `Connection: close`): the status and the body.
pub async fn http_get_text(port: u16, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket client that mirrors the room like the official client.
pub struct Client {
    pub ws: Ws,
    pub mirror: ClientMirror,
}

impl Client {
    pub async fn connect(port: u16, room: &str, session: &str) -> Client {
        let url = format!("ws://127.0.0.1:{port}/parties/main/{room}?id={session}&name={session}");
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut c = Client {
            ws,
            mirror: ClientMirror::new(),
        };
        while c.mirror.pid().is_none() {
            c.next().await.expect("first packet");
        }
        c
    }

    pub fn pid(&self) -> String {
        self.mirror.pid().unwrap().to_owned()
    }

    /// Read one frame into the mirror (None when the socket closed).
    pub async fn next(&mut self) -> Option<()> {
        match tokio::time::timeout(Duration::from_secs(5), self.ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                self.mirror.apply_packet(&t);
                Some(())
            }
            Ok(Some(Ok(_))) => Some(()),
            _ => None,
        }
    }

    pub async fn send(&mut self, action: &str, value: Value) -> bool {
        let msg = serde_json::json!({"action": action, "value": value}).to_string();
        self.ws.send(Message::text(msg)).await.is_ok()
    }

    pub fn me(&self) -> Value {
        self.mirror.state()["players"][self.pid()].clone()
    }
}

/// `PRAGMA integrity_check` of a SQLite file.
pub fn integrity(path: &Path) -> String {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
        .unwrap()
}
