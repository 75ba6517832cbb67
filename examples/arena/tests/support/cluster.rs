//! Cluster mode over real processes: arena nodes (`partyroom-arena --cluster <url> ...`)
//! sharing one PostgreSQL database, the cluster's tables read directly, and WebSocket players
//! that keep moving and reconnect across nodes with the same session.
//!
//! Every cluster gets its own table prefix (`t<hex>`), so tests share the test database
//! without seeing each other, and its tables are dropped when the [`Cluster`] goes away (after
//! its nodes are killed), passed or not.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use partyroom_state::{ClientMirror, Packet};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

/// The cluster secret every node of a test cluster shares.
pub const SECRET: &str = "s";
/// The header relayed requests carry (its value: the cluster secret).
pub const RELAY_HEADER: &str = "x-partyroom-relay";
/// How long a node may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a node may take to exit after SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one HTTP request may take (a relayed one may wait for a lease to expire).
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

const URL_VAR: &str = "PARTYROOM_TEST_POSTGRES_URL";

/// The PostgreSQL server to test against, or `None` (after saying so) when none is configured
/// outside CI. In CI (`CI=true`) a missing server fails the test: it is never skipped. (The
/// same rule as `crates/partyroom-storage/tests/support/postgres.rs`.)
pub fn postgres_url() -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
                panic!(
                    "{URL_VAR} is not set, and CI=true: cluster mode must be tested in CI \
                     (scripts/test.sh starts a PostgreSQL server and sets it)"
                );
            }
            eprintln!(
                "cluster test skipped: set {URL_VAR} \
                 (e.g. postgres://postgres@127.0.0.1:55432/partyroom_test) to run it"
            );
            None
        }
    }
}

/// The tests of this file run one at a time: each one measures or races real processes, and
/// sharing two cores between several clusters would only measure the sharing.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// A fresh table prefix: `t` and 12 hex digits (a plain identifier, as the nodes require).
pub fn table_prefix() -> String {
    format!("t{:012x}", fastrand::u64(..) & 0xffff_ffff_ffff)
}

// ---------------------------------------------------------------------------------------------
// Nodes

/// One cluster node (a child process of the including test's `NODE_BIN`: the arena's or the
/// `shards` binary). Killed when dropped.
#[derive(Debug)]
pub struct Node {
    id: String,
    port: u16,
    child: Child,
}

impl Node {
    /// Start the binary with `args` (which must include `--port 0`); waits for its address.
    fn start(id: &str, args: &[String]) -> Node {
        let mut child = Command::new(super::NODE_BIN)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("PARTYROOM_TEST_NODE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env_remove("PARTYROOM_ADVERTISE_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node binary starts");
        // Its log, prefixed with its id (shown with the test's output when a test fails).
        let stderr = child.stderr.take().unwrap();
        let tag = id.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[{tag}] {line}");
            }
        });
        // Its address, then its log (on stdout too), so that it never blocks on a full pipe.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let tag = id.to_owned();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("[{tag}] {line}");
                if let Some(rest) = line.split("listening on http://").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let port = rest.rsplit(':').next().unwrap().trim().parse::<u16>();
                    let _ = tx.send(port.expect("a port after the address"));
                }
            }
        });
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(port) => Node {
                id: id.to_owned(),
                port,
                child,
            },
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait();
                panic!("node {id} exited before listening ({status:?}); arguments: {args:?}")
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node {id} did not listen within {START_TIMEOUT:?}; arguments: {args:?}")
            }
        }
    }

    /// The node id (`--node-id`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {} failed", self.id);
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP: the process freezes (its sockets stay open, it renews nothing).
    pub fn stop(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Node::stop`].
    pub fn cont(&self) {
        self.signal("-CONT");
    }

    /// SIGTERM, then its exit status (panics if it does not exit in time).
    pub async fn terminate(mut self) -> ExitStatus {
        self.signal("-TERM");
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the node") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "node {} still running {EXIT_TIMEOUT:?} after SIGTERM",
                self.id
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `GET /parties/main/<room>/state` (must answer 200).
    pub async fn state(&self, room: &str) -> Value {
        let r = http(self.port, "GET", &state_path(room), &[])
            .await
            .unwrap_or_else(|e| panic!("GET state of {room} on {}: {e}", self.id));
        assert_eq!(r.status, 200, "GET state of {room} on {}: {r:?}", self.id);
        r.json()
    }

    /// `GET /cluster`: the node's id and the rooms it owns.
    pub async fn cluster_view(&self) -> ClusterView {
        let r = http(self.port, "GET", "/cluster", &[])
            .await
            .unwrap_or_else(|e| panic!("GET /cluster on {}: {e}", self.id));
        assert_eq!(r.status, 200, "GET /cluster on {}: {r:?}", self.id);
        let v = r.json();
        let rooms = v["rooms"]
            .as_array()
            .unwrap_or_else(|| panic!("GET /cluster on {}: no rooms array: {v}", self.id))
            .iter()
            .map(|r| OwnedRoom {
                party: r["party"].as_str().unwrap_or_default().to_owned(),
                room: r["room"].as_str().unwrap_or_default().to_owned(),
                epoch: r["epoch"].as_i64().unwrap_or(-1),
            })
            .collect();
        ClusterView {
            node: v["node"].as_str().unwrap_or_default().to_owned(),
            rooms,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // SIGKILL also ends a stopped process.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of `GET /cluster`.
#[derive(Debug, Clone)]
pub struct ClusterView {
    /// The node's id.
    pub node: String,
    /// The rooms it owns now.
    pub rooms: Vec<OwnedRoom>,
}

/// One room of a [`ClusterView`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRoom {
    pub party: String,
    pub room: String,
    pub epoch: i64,
}

/// A test cluster: its nodes, its table prefix, and its tables (dropped last).
#[derive(Debug)]
pub struct Cluster {
    // Field order matters: the nodes are killed before the tables are dropped.
    nodes: Vec<Node>,
    url: String,
    prefix: String,
    ttl: Duration,
    extra: Vec<String>,
    started: usize,
    _tables: Tables,
}

impl Cluster {
    /// A cluster of `nodes` nodes (`n1`, `n2`, ...) with lease TTL `ttl`, each started with the
    /// `extra` arguments too, on fresh tables in the database at `url`.
    pub fn start(url: &str, ttl: Duration, extra: &[&str], nodes: usize) -> Cluster {
        let prefix = table_prefix();
        let mut cluster = Cluster {
            nodes: Vec::new(),
            url: url.to_owned(),
            prefix: prefix.clone(),
            ttl,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            started: 0,
            _tables: Tables {
                url: url.to_owned(),
                prefix,
            },
        };
        for _ in 0..nodes {
            cluster.start_node();
        }
        cluster
    }

    /// The arguments of node `id`.
    pub fn args(&self, id: &str) -> Vec<String> {
        self.args_via(id, &self.url)
    }

    /// The arguments of node `id` reaching the database at `url`.
    fn args_via(&self, id: &str, url: &str) -> Vec<String> {
        let mut args: Vec<String> = [
            "--port",
            "0",
            "--cluster",
            url,
            "--node-id",
            id,
            "--cluster-secret",
            SECRET,
            "--lease-ttl-ms",
            &self.ttl.as_millis().to_string(),
            "--cluster-table-prefix",
            &self.prefix,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(self.extra.iter().cloned());
        args
    }

    /// Start one more node (ids are never reused); returns its id.
    pub fn start_node(&mut self) -> String {
        self.started += 1;
        let id = format!("n{}", self.started);
        let node = Node::start(&id, &self.args(&id));
        self.nodes.push(node);
        id
    }

    /// Start one more node that reaches the database at `url` (e.g. through a
    /// [`DbLink`](super::db_link::DbLink)); returns its id.
    pub fn start_node_via(&mut self, url: &str) -> String {
        self.started += 1;
        let id = format!("n{}", self.started);
        let node = Node::start(&id, &self.args_via(&id, url));
        self.nodes.push(node);
        id
    }

    /// The node `id` (panics if it is not running).
    pub fn node(&self, id: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no running node {id}"))
    }

    /// Take node `id` out of the cluster (to kill or terminate it).
    pub fn remove(&mut self, id: &str) -> Node {
        let i = self
            .nodes
            .iter()
            .position(|n| n.id == id)
            .unwrap_or_else(|| panic!("no running node {id}"));
        self.nodes.remove(i)
    }

    /// The running nodes' ids, oldest first.
    pub fn ids(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.id.clone()).collect()
    }

    /// The running nodes' ids and ports, oldest first.
    pub fn live(&self) -> Vec<(String, u16)> {
        self.nodes.iter().map(|n| (n.id.clone(), n.port)).collect()
    }

    /// The lease TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The table prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A connection to the cluster's tables.
    pub async fn pg(&self) -> Pg {
        Pg::connect(&self.url, &self.prefix).await
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// Drops a cluster's tables when dropped (from a thread of its own: `Drop` cannot await).
#[derive(Debug)]
struct Tables {
    url: String,
    prefix: String,
}

impl Drop for Tables {
    fn drop(&mut self) {
        let (url, prefix) = (self.url.clone(), self.prefix.clone());
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(drop_tables(&url, &prefix));
        })
        .join();
        if dropped.is_err() {
            eprintln!("could not drop the tables of prefix {}", self.prefix);
        }
    }
}

/// Drop `<prefix>_state`, `<prefix>_leases` and `<prefix>_members`.
pub async fn drop_tables(url: &str, prefix: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    let conn = tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS \"{prefix}_state\", \"{prefix}_leases\", \"{prefix}_members\""
        ))
        .await
        .expect("drop the cluster's tables");
    drop(client);
    let _ = conn.await;
}

/// One row of the lease table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    pub party: String,
    pub room: String,
    pub owner: String,
    pub epoch: i64,
    /// `expires_at > now()`.
    pub live: bool,
}

/// A connection to one cluster's tables.
#[derive(Debug)]
pub struct Pg {
    client: tokio_postgres::Client,
    prefix: String,
}

impl Pg {
    pub async fn connect(url: &str, prefix: &str) -> Pg {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test database");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Pg {
            client,
            prefix: prefix.to_owned(),
        }
    }

    /// Rows of `sql`; a table not created yet reads as empty.
    async fn rows(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Vec<tokio_postgres::Row> {
        match self.client.query(sql, params).await {
            Ok(rows) => rows,
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
                Vec::new()
            }
            Err(e) => panic!("{sql}: {e}"),
        }
    }

    /// Every lease row.
    pub async fn leases(&self) -> Vec<LeaseRow> {
        let sql = format!(
            "SELECT party, room, owner, epoch, expires_at > now() FROM \"{}_leases\" \
             ORDER BY party, room",
            self.prefix
        );
        self.rows(&sql, &[])
            .await
            .iter()
            .map(|r| LeaseRow {
                party: r.get(0),
                room: r.get(1),
                owner: r.get(2),
                epoch: r.get(3),
                live: r.get(4),
            })
            .collect()
    }

    /// The lease row of room `room` of party `main`.
    pub async fn lease(&self, room: &str) -> Option<LeaseRow> {
        let sql = format!(
            "SELECT party, room, owner, epoch, expires_at > now() FROM \"{}_leases\" \
             WHERE party = 'main' AND room = $1",
            self.prefix
        );
        self.rows(&sql, &[&room]).await.first().map(|r| LeaseRow {
            party: r.get(0),
            room: r.get(1),
            owner: r.get(2),
            epoch: r.get(3),
            live: r.get(4),
        })
    }

    /// Poll the lease of `room` until `cond` holds; panics with `what` after `within`.
    pub async fn wait_lease(
        &self,
        room: &str,
        within: Duration,
        what: &str,
        cond: impl Fn(&Option<LeaseRow>) -> bool,
    ) -> Option<LeaseRow> {
        let deadline = Instant::now() + within;
        loop {
            let lease = self.lease(room).await;
            if cond(&lease) {
                return lease;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not so after {within:?}; lease of {room}: {lease:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The stored rows (key, value) of room `room` of party `main`.
    pub async fn state_rows(&self, room: &str) -> Vec<(String, Value)> {
        self.party_state_rows("main", room).await
    }

    /// The stored rows (key, value) of room `room` of party `party`.
    pub async fn party_state_rows(&self, party: &str, room: &str) -> Vec<(String, Value)> {
        let sql = format!(
            "SELECT key, value::text FROM \"{}_state\" WHERE party = $1 AND room = $2 \
             ORDER BY key",
            self.prefix
        );
        self.rows(&sql, &[&party, &room])
            .await
            .iter()
            .map(|r| {
                let value: String = r.get(1);
                (r.get(0), serde_json::from_str(&value).unwrap())
            })
            .collect()
    }

    /// The stored row of player `pid` in `room` (`state/players/<pid>`, see
    /// docs/ARCHITECTURE.md: one row per entry of the users map).
    pub async fn player_row(&self, room: &str, pid: &str) -> Option<Value> {
        let suffix = format!("/{pid}");
        self.state_rows(room)
            .await
            .into_iter()
            .find(|(key, _)| key.starts_with("state/") && key.ends_with(&suffix))
            .map(|(_, value)| value)
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

impl HttpResponse {
    /// The body as JSON (panics if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("JSON body: {self:?}"))
    }
}

/// The path of a room's `/state`.
pub fn state_path(room: &str) -> String {
    format!("/parties/main/{room}/state")
}

/// One HTTP/1.1 request (`Connection: close`) with extra `headers`.
pub async fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<HttpResponse, String> {
    http_with_body(port, method, path, headers, "").await
}

/// [`http`] with a body.
pub async fn http_with_body(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<HttpResponse, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
        for (name, value) in headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("Connection: close\r\n\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok::<_, String>(out)
    };
    let out = tokio::time::timeout(HTTP_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{method} {path}: no answer within {HTTP_TIMEOUT:?}"))??;
    parse_response(&out).ok_or_else(|| {
        format!(
            "{method} {path}: not an HTTP response: {:?}",
            String::from_utf8_lossy(&out)
        )
    })
}

fn parse_response(raw: &[u8]) -> Option<HttpResponse> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Some(HttpResponse {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&rest[..eol]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size..)?.strip_prefix(b"\r\n")?;
    }
}

/// `GET /state` of `room` on `port`, retried every 50 ms until it answers 200 (a node may
/// refuse while a dead owner's lease runs out) or `within` has passed.
pub async fn state_eventually(port: u16, room: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let answer = http(port, "GET", &state_path(room), &[]).await;
        match &answer {
            Ok(r) if r.status == 200 => return r.json(),
            _ => assert!(
                Instant::now() < deadline,
                "GET state of {room} on port {port}: no 200 within {within:?}; last: {answer:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// WebSocket clients

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The URL of `room` for session `session`.
pub fn room_url(port: u16, room: &str, session: &str) -> String {
    format!("ws://127.0.0.1:{port}/parties/main/{room}?id={session}&name={session}")
}

/// The status of a WebSocket handshake on `room` sent with extra `headers` (101: accepted).
pub async fn ws_handshake_status(
    port: u16,
    room: &str,
    session: &str,
    headers: &[(&'static str, &str)],
) -> Result<u16, String> {
    let mut request = room_url(port, room, session)
        .into_client_request()
        .map_err(|e| e.to_string())?;
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(*name, value.parse().map_err(|e| format!("{e}"))?);
    }
    let handshake = tokio::time::timeout(HTTP_TIMEOUT, tokio_tungstenite::connect_async(request))
        .await
        .map_err(|_| "handshake timed out".to_owned())?;
    match handshake {
        Ok((ws, response)) => {
            drop(ws);
            Ok(response.status().as_u16())
        }
        Err(tungstenite::Error::Http(response)) => Ok(response.status().as_u16()),
        Err(e) => Err(e.to_string()),
    }
}

/// What [`WsConn::next_until`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A frame (text frames are applied to the mirror).
    Frame,
    /// The socket closed; the close frame's code if there was one.
    Closed(Option<u16>),
    /// Nothing before the deadline.
    Timeout,
}

/// One WebSocket connection to a room, mirrored like the official client.
#[derive(Debug)]
pub struct WsConn {
    ws: Ws,
    /// The mirrored room.
    pub mirror: ClientMirror,
    /// The node it was opened to.
    pub node: String,
    /// When its first sync packet (with the public id) arrived.
    pub first_packet_at: Instant,
    /// The other messages it received (`send`/`broadcast` by room code), oldest first.
    pub received: Vec<Value>,
}

impl WsConn {
    /// Connect to `room` on node `node` (at `port`) and read up to the first sync packet, all
    /// within `timeout`.
    pub async fn connect(
        node: &str,
        port: u16,
        room: &str,
        session: &str,
        timeout: Duration,
    ) -> Result<WsConn, String> {
        Self::connect_with(node, port, room, session, "", timeout).await
    }

    /// [`WsConn::connect`] with more query parameters (`extra`: `&k=v...`).
    pub async fn connect_with(
        node: &str,
        port: u16,
        room: &str,
        session: &str,
        extra: &str,
        timeout: Duration,
    ) -> Result<WsConn, String> {
        let url = format!("{}{extra}", room_url(port, room, session));
        let open = async {
            let (ws, _) = tokio_tungstenite::connect_async(url)
                .await
                .map_err(|e| format!("handshake with {node}: {e}"))?;
            let mut conn = WsConn {
                ws,
                mirror: ClientMirror::new(),
                node: node.to_owned(),
                first_packet_at: Instant::now(),
                received: Vec::new(),
            };
            while conn.mirror.pid().is_none() {
                match conn.next_until(Instant::now() + timeout).await {
                    Event::Frame => {}
                    Event::Closed(code) => {
                        return Err(format!("{node} closed before the first packet ({code:?})"));
                    }
                    Event::Timeout => return Err(format!("no first packet from {node}")),
                }
            }
            conn.first_packet_at = Instant::now();
            Ok(conn)
        };
        tokio::time::timeout(timeout, open)
            .await
            .map_err(|_| format!("{node}: no first packet within {timeout:?}"))?
    }

    /// The public id.
    pub fn pid(&self) -> &str {
        self.mirror.pid().expect("connected")
    }

    /// Read one frame, waiting until `deadline` at most.
    pub async fn next_until(&mut self, deadline: Instant) -> Event {
        match tokio::time::timeout_at(deadline.into(), self.ws.next()).await {
            Err(_) => Event::Timeout,
            Ok(None) | Ok(Some(Err(_))) => Event::Closed(None),
            Ok(Some(Ok(Message::Text(t)))) => {
                if let Packet::Other(_) = self.mirror.apply_packet(&t)
                    && let Ok(v) = serde_json::from_str(&t)
                {
                    self.received.push(v);
                }
                Event::Frame
            }
            Ok(Some(Ok(Message::Close(frame)))) => Event::Closed(frame.map(|f| f.code.into())),
            Ok(Some(Ok(_))) => Event::Frame,
        }
    }

    /// Send a `move`; false if the socket is gone.
    pub async fn send_move(&mut self, x: f64, y: f64) -> bool {
        let msg = json!({"action": "move", "value": {"x": x, "y": y}}).to_string();
        self.ws.send(Message::text(msg)).await.is_ok()
    }

    /// Send an action with its value; false if the socket is gone.
    pub async fn send_action(&mut self, action: &str, value: Value) -> bool {
        let msg = json!({"action": action, "value": value}).to_string();
        self.ws.send(Message::text(msg)).await.is_ok()
    }

    /// Close the socket (politely, without waiting for the server's answer).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_millis(500), self.ws.close(None)).await;
    }
}

/// The position of move number `seq`: unlike any spawn point (those are integers, and every
/// move's `y` ends in .5), inside the arena, and one per `seq` up to 400,000.
pub fn position(seq: u64) -> (f64, f64) {
    (20.0 + (seq % 800) as f64, 20.5 + (seq / 800) as f64)
}

/// The move number a player's position shows (`None`: not a position of [`position`]).
pub fn move_number(player: &Value) -> Option<u64> {
    let (x, y) = (player["x"].as_f64()?, player["y"].as_f64()?);
    let (col, row) = (x - 20.0, y - 20.5);
    let whole = |v: f64| v >= 0.0 && v.fract() == 0.0;
    (whole(col) && col < 800.0 && whole(row)).then(|| row as u64 * 800 + col as u64)
}

/// How [`Player::play`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayEnd {
    /// The stop flag was set; the socket is still open.
    Stopped,
    /// The socket closed (the close code, if any).
    Closed(Option<u16>),
}

/// A successful [`Player::reconnect`].
#[derive(Debug, Clone)]
pub struct Reconnected {
    /// When the first packet arrived.
    pub at: Instant,
    /// The node that accepted the connection.
    pub node: String,
    /// Connection attempts it took.
    pub attempts: usize,
    /// The move number the first packet showed for this player.
    pub restored: Option<u64>,
}

/// A player: a session that moves (move numbers 1, 2, ... at the positions of [`position`])
/// and records when each of its moves came back in its own mirror (acknowledged).
#[derive(Debug)]
pub struct Player {
    /// The private session id.
    pub session: String,
    /// The public id, once known.
    pub pid: Option<String>,
    /// The open connection, if any.
    pub conn: Option<WsConn>,
    /// The last move number sent.
    pub sent: u64,
    /// (when, move number) of every acknowledged move, in order.
    pub acks: Vec<(Instant, u64)>,
    /// Close codes of the connections that closed under it.
    pub closes: Vec<Option<u16>>,
}

impl Player {
    pub fn new(session: impl Into<String>) -> Player {
        Player {
            session: session.into(),
            pid: None,
            conn: None,
            sent: 0,
            acks: Vec::new(),
            closes: Vec::new(),
        }
    }

    /// The public id (panics before the first connection).
    pub fn pid(&self) -> &str {
        self.pid.as_deref().expect("connected once")
    }

    /// The node the open connection goes to.
    pub fn node(&self) -> Option<&str> {
        self.conn.as_ref().map(|c| c.node.as_str())
    }

    /// The last acknowledged move number (0: none).
    pub fn acked(&self) -> u64 {
        self.acks.last().map_or(0, |(_, seq)| *seq)
    }

    /// The last move number acknowledged at or before `t` (0: none).
    pub fn acked_before(&self, t: Instant) -> u64 {
        self.acks
            .iter()
            .take_while(|(at, _)| *at <= t)
            .last()
            .map_or(0, |(_, seq)| *seq)
    }

    /// The move number the mirror shows for this player now.
    pub fn shown(&self) -> Option<u64> {
        let conn = self.conn.as_ref()?;
        move_number(&conn.mirror.state()["players"][conn.pid()])
    }

    /// Record an acknowledgement if the mirror shows a newer move of ours.
    fn observe(conn: &WsConn, acks: &mut Vec<(Instant, u64)>) {
        if let Some(seq) = move_number(&conn.mirror.state()["players"][conn.pid()])
            && acks.last().is_none_or(|(_, last)| seq > *last)
        {
            acks.push((Instant::now(), seq));
        }
    }

    /// Open a connection through `node` (replacing any open one). The public id must stay
    /// the same as before. Returns the move number the first packet showed.
    pub async fn connect(
        &mut self,
        node: &str,
        port: u16,
        room: &str,
        timeout: Duration,
    ) -> Result<Option<u64>, String> {
        if let Some(old) = self.conn.take() {
            old.close().await;
        }
        let conn = WsConn::connect(node, port, room, &self.session, timeout).await?;
        self.adopt(conn)
    }

    fn adopt(&mut self, conn: WsConn) -> Result<Option<u64>, String> {
        if let Some(pid) = &self.pid
            && pid != conn.pid()
        {
            return Err(format!(
                "{}: public id changed from {pid} to {} (through {})",
                self.session,
                conn.pid(),
                conn.node
            ));
        }
        self.pid = Some(conn.pid().to_owned());
        self.conn = Some(conn);
        Ok(self.shown())
    }

    /// Reconnect after a close: try the `nodes` in turn from index `start`, every `retry`,
    /// each attempt within `attempt`, until one serves the room or `deadline` passes.
    pub async fn reconnect(
        &mut self,
        room: &str,
        nodes: &[(String, u16)],
        start: usize,
        retry: Duration,
        attempt: Duration,
        deadline: Instant,
    ) -> Result<Reconnected, String> {
        assert!(!nodes.is_empty(), "no node to reconnect to");
        if let Some(old) = self.conn.take() {
            old.close().await;
        }
        let mut last_error = String::new();
        for attempts in 1.. {
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "{}: no node served {room} by the deadline ({} attempts; last: {last_error})",
                    self.session,
                    attempts - 1
                ));
            }
            let (node, port) = &nodes[(start + attempts - 1) % nodes.len()];
            let within = attempt.min(deadline - now);
            match WsConn::connect(node, *port, room, &self.session, within).await {
                Ok(conn) => {
                    let at = conn.first_packet_at;
                    let node = conn.node.clone();
                    let restored = self.adopt(conn)?;
                    return Ok(Reconnected {
                        at,
                        node,
                        attempts,
                        restored,
                    });
                }
                Err(e) => last_error = e,
            }
            tokio::time::sleep(retry).await;
        }
        unreachable!()
    }

    /// Send the next move; false if the socket is gone (then the player has no connection).
    pub async fn send_next(&mut self) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        self.sent += 1;
        let (x, y) = position(self.sent);
        if conn.send_move(x, y).await {
            true
        } else {
            self.conn = None;
            self.closes.push(None);
            false
        }
    }

    /// Send the next move and wait until it is acknowledged; its number.
    pub async fn step(&mut self, within: Duration) -> Result<u64, String> {
        if !self.send_next().await {
            return Err(format!("{}: socket closed", self.session));
        }
        let seq = self.sent;
        let deadline = Instant::now() + within;
        let Player {
            conn,
            acks,
            closes,
            session,
            ..
        } = self;
        let c = conn.as_mut().expect("connected");
        while acks.last().is_none_or(|(_, last)| *last < seq) {
            match c.next_until(deadline).await {
                Event::Frame => Self::observe(c, acks),
                Event::Closed(code) => {
                    *conn = None;
                    closes.push(code);
                    return Err(format!("{session}: socket closed ({code:?})"));
                }
                Event::Timeout => {
                    return Err(format!(
                        "{session}: move {seq} not acknowledged in {within:?}"
                    ));
                }
            }
        }
        Ok(seq)
    }

    /// Move every `interval` and record acknowledgements until `stop` is set or the socket
    /// closes.
    pub async fn play(&mut self, stop: &AtomicBool, interval: Duration) -> PlayEnd {
        loop {
            if stop.load(Ordering::Relaxed) {
                return PlayEnd::Stopped;
            }
            if !self.send_next().await {
                return PlayEnd::Closed(None);
            }
            let deadline = Instant::now() + interval;
            let Player {
                conn, acks, closes, ..
            } = self;
            let c = conn.as_mut().expect("connected");
            loop {
                match c.next_until(deadline).await {
                    Event::Timeout => break,
                    Event::Frame => Self::observe(c, acks),
                    Event::Closed(code) => {
                        *conn = None;
                        closes.push(code);
                        return PlayEnd::Closed(code);
                    }
                }
            }
        }
    }

    /// Read until the socket closes (its close code), or `Err` after `within`.
    pub async fn wait_closed(&mut self, within: Duration) -> Result<Option<u16>, String> {
        let deadline = Instant::now() + within;
        let conn = self.conn.as_mut().expect("connected");
        loop {
            match conn.next_until(deadline).await {
                Event::Frame => {}
                Event::Closed(code) => {
                    self.conn = None;
                    self.closes.push(code);
                    return Ok(code);
                }
                Event::Timeout => {
                    return Err(format!("{}: still open after {within:?}", self.session));
                }
            }
        }
    }
}

/// The `p`-th percentile (nearest rank) of `samples`, which must not be empty.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
