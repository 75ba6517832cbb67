//! An arena server started in-process, and small helpers.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use partyroom::server::Server;
use partyroom::storage::{MemoryStorage, Storage};
use partyroom_client::{ClientOptions, ReconnectPolicy};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running in-process server.
pub struct TestServer {
    pub port: u16,
    pub storage: Arc<dyn Storage>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// The arena demo on a fresh port with fresh memory storage.
    pub async fn arena() -> TestServer {
        Self::arena_on(Arc::new(MemoryStorage::new()), 0).await
    }

    /// The arena demo with the given storage, on `port` (0: any free port).
    pub async fn arena_on(storage: Arc<dyn Storage>, port: u16) -> TestServer {
        let options = partyroom_arena::Options {
            storage: storage.clone(),
            ..Default::default()
        };
        Self::serve(partyroom_arena::server(&options), storage, port).await
    }

    /// Serve `server` on `port` (retrying the bind for a while, for restarts on one port).
    pub async fn serve(server: Server, storage: Arc<dyn Storage>, port: u16) -> TestServer {
        let listener = bind(port).await;
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async move {
            let _ = rx.await;
        }));
        TestServer {
            port,
            storage,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Graceful shutdown: sockets closed with 1001, rooms saved.
    pub async fn stop(mut self) {
        self.stop_inner().await;
    }

    async fn stop_inner(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server stops within 10 s")
                .expect("server task")
                .expect("server result");
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Client options for a room of party main on this server, with a fast policy.
    pub fn options(&self, room: &str) -> ClientOptions {
        ClientOptions::new(self.host(), room).reconnect(fast_policy())
    }

    /// `GET /parties/main/<room>/state`.
    pub async fn arena_state(&self, room: &str) -> Value {
        http_get(self.port, &format!("/parties/main/{room}/state")).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn bind(port: u16) -> TcpListener {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut tries = 0;
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if tries < 100 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("bind {addr}: {e}"),
        }
    }
}

/// A port nothing listens on (bound, then released).
pub async fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// Quick reconnections for tests: 50 ms, growing to 200 ms, no jitter.
pub fn fast_policy() -> ReconnectPolicy {
    ReconnectPolicy {
        min_delay: Duration::from_millis(50),
        jitter: Duration::ZERO,
        max_delay: Duration::from_millis(200),
        connection_timeout: Duration::from_secs(2),
        ..Default::default()
    }
}

/// A plain HTTP/1.1 GET returning the JSON body.
pub async fn http_get(port: u16, path: &str) -> Value {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (_, body) = out.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap_or_else(|_| panic!("JSON body: {out}"))
}

pub const WAIT: Duration = Duration::from_secs(5);
