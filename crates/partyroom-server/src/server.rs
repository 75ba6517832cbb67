//! Routing `/parties/...` to rooms, and serving with graceful shutdown.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::{HeaderValue, Method, StatusCode, header};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use partyroom_room::{
    ConnectError, ConnectRequest, ConnectionSink, LookupError, RoomRequest, RoomResponse, Rooms,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection::{self, Connection, Writer};
use crate::frame_reader::{FrameReader, Source};
use crate::handshake::Handshake;
use crate::outbox::Outbox;
use crate::path::{PathError, RoomPath};

/// Upgrade-request headers that only serve the handshake.
const HANDSHAKE_HEADERS: [&str; 6] = [
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-accept",
];

/// Limits of the server. Every limit is explicit; the defaults suit a public game server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Concurrent WebSocket connections; upgrades beyond it get `503`. Default 100,000.
    pub max_connections: usize,
    /// Largest accepted WebSocket message and frame. Default 64 KiB.
    pub max_message_bytes: usize,
    /// Bytes asked of a socket per read. Default 4 KiB. The read buffer exists only while a
    /// connection has something to read, so idle connections cost nothing here; a frame
    /// larger than this gets a buffer of its size.
    pub read_buffer_bytes: usize,
    /// Largest accepted HTTP request body. Default 1 MiB.
    pub max_body_bytes: usize,
    /// Messages a client may send per second (sustained); bursts up to twice that are
    /// allowed. Messages beyond it are dropped (logged at debug level), so one client cannot
    /// monopolize its room. Default 100.
    pub max_messages_per_second: u32,
    /// The secret shards present in `x-access-shard` (`SHARD_SECRET`). Requests that claim
    /// to come from a shard (`x-shard-id` on an upgrade, `x-forwarded-by-shard` on HTTP) are
    /// refused with `401` unless it matches (compared in constant time); with no secret
    /// configured, every such request is refused.
    pub shard_secret: Option<String>,
    /// How long a client may take to send an HTTP request's headers (on a new connection or
    /// between keep-alive requests) before the connection is closed. Default 30 s.
    pub header_read_timeout: std::time::Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_connections: 100_000,
            max_message_bytes: 64 * 1024,
            read_buffer_bytes: 4096,
            max_body_bytes: 1024 * 1024,
            max_messages_per_second: 100,
            shard_secret: None,
            header_read_timeout: std::time::Duration::from_secs(30),
        }
    }
}

struct Shared {
    rooms: Rooms,
    config: ServerConfig,
    connections: Arc<Semaphore>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// A partyroom server over a set of [`Rooms`].
///
/// ```no_run
/// # use partyroom_server::Server;
/// # async fn demo(rooms: partyroom_room::Rooms) -> std::io::Result<()> {
/// let listener = partyroom_server::bind("127.0.0.1:3000").await?;
/// Server::new(rooms).serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await
/// # }
/// ```
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
    extra: Router,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("rooms", &self.shared.rooms)
            .field("config", &self.shared.config)
            .finish()
    }
}

impl Server {
    /// A server with default limits.
    pub fn new(rooms: Rooms) -> Self {
        Self::with_config(rooms, ServerConfig::default())
    }

    /// A server with the given limits.
    pub fn with_config(rooms: Rooms, config: ServerConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                rooms,
                connections: Arc::new(Semaphore::new(config.max_connections)),
                config,
                shutdown: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
            extra: Router::new(),
        }
    }

    /// Serve other routes (a game page, assets, health checks) next to `/parties/...`.
    #[must_use]
    pub fn merge(mut self, router: Router) -> Self {
        self.extra = self.extra.merge(router);
        self
    }

    /// The rooms served.
    pub fn rooms(&self) -> &Rooms {
        &self.shared.rooms
    }

    /// The axum router: `/parties/{*rest}` plus the merged routes.
    pub fn router(&self) -> Router {
        let parties = Router::new()
            .route("/parties/{*rest}", axum::routing::any(handle_party))
            .with_state(self.shared.clone());
        parties.merge(self.extra.clone())
    }

    /// Serve until `shutdown` completes; then stop accepting, close every WebSocket with 1001
    /// and wait for the connection tasks to finish.
    ///
    /// Each accepted TCP connection is served by hyper (HTTP/1.1) in its own task; an
    /// upgraded WebSocket continues in a task of its own, whose socket the room writes to
    /// directly (see the `outbox` module).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let token = self.shared.shutdown.clone();
        let service = TowerToHyperService::new(self.router());
        let mut http = hyper::server::conn::http1::Builder::new();
        http.keep_alive(true)
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(self.shared.config.header_read_timeout);
        tokio::pin!(shutdown);
        loop {
            let tcp = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        accept_error(e).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            // Small frames must leave at once: Nagle's algorithm would hold them for up to
            // 40 ms.
            let _ = tcp.set_nodelay(true);
            let conn = http
                .serve_connection(TokioIo::new(tcp), service.clone())
                .with_upgrades();
            let stop = token.clone();
            self.shared.tasks.spawn(async move {
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    () = stop.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
        }
        drop(listener);
        token.cancel();
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
        // Every connection is closed; save every room before returning.
        self.shared.rooms.shutdown().await;
        Ok(())
    }
}

/// An `accept` that failed: errors of one connection are skipped; others (out of file
/// descriptors) are logged and retried after a pause, as axum's server does.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; retrying in 1 s");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
}

async fn handle_party(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let path = match RoomPath::parse(request.uri().path()) {
        Ok(p) => p,
        Err(PathError::NotRoomPath) => return json_error(StatusCode::NOT_FOUND, "Not found"),
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("Bad room URL: {e}")),
    };
    if request.method() == Method::OPTIONS {
        return to_axum(RoomResponse::json(StatusCode::OK, &serde_json::json!({})));
    }
    let headers = request.headers();
    if (headers.contains_key("x-shard-id") || headers.contains_key("x-forwarded-by-shard"))
        && !shard_secret_ok(shared.config.shard_secret.as_deref(), headers)
    {
        return json_error(StatusCode::UNAUTHORIZED, "Invalid shard credentials");
    }
    let room = match shared.rooms.get(&path.party, &path.room) {
        Ok(room) => room,
        Err(LookupError::UnknownParty(_) | LookupError::NoMatch(_)) => {
            return json_error(StatusCode::NOT_FOUND, "Not found");
        }
        Err(_) => return json_error(StatusCode::NOT_FOUND, "Not found"),
    };
    let is_upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if is_upgrade {
        return upgrade(shared, room, path, request).await;
    }
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, shared.config.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => return json_error(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large"),
    };
    let req = RoomRequest {
        method: parts.method,
        path: path.rest,
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body,
    };
    // A room that unloads itself at this very moment answers `RoomGone`: ask the new instance.
    let mut room = room;
    for _ in 0..3 {
        match room.request(req.clone()).await {
            Ok(response) => return to_axum(response),
            Err(_) => match shared.rooms.get(&path.party, &path.room) {
                Ok(fresh) => room = fresh,
                Err(_) => break,
            },
        }
    }
    json_error(StatusCode::SERVICE_UNAVAILABLE, "Room unavailable")
}

async fn upgrade(
    shared: Arc<Shared>,
    room: partyroom_room::RoomHandle,
    path: RoomPath,
    request: Request,
) -> Response {
    if path.rest != "/" {
        return json_error(StatusCode::NOT_FOUND, "Not found");
    }
    let (mut parts, _) = request.into_parts();
    let handshake = match Handshake::check(&mut parts) {
        Ok(h) => h,
        Err(e) => return json_error(e.status(), &e.to_string()),
    };
    let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "Too many connections");
    };
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let session_id = query
        .iter()
        .find(|(k, _)| k == "id")
        .or_else(|| query.iter().find(|(k, _)| k == "_pk"))
        .map(|(_, v)| v.clone());
    // Copy the headers: hyper's values are slices of its whole read buffer (16 KiB), which a
    // kept `HeaderValue` would hold for the life of the connection.
    // The WebSocket handshake's own headers are of no use to rooms and are not kept.
    let kept: Vec<_> = parts
        .headers
        .iter()
        .filter(|(k, _)| !HANDSHAKE_HEADERS.contains(&k.as_str()))
        .collect();
    let mut headers = http::HeaderMap::with_capacity(kept.len());
    for (k, v) in kept {
        if let Ok(v) = http::HeaderValue::from_bytes(v.as_bytes()) {
            headers.append(k.clone(), v);
        }
    }
    let outbox = Arc::new(Outbox::new(room.config().outgoing_queue_len()));
    let sink: Arc<dyn ConnectionSink> = outbox.clone();
    // Guards run before the upgrade, so a refused client gets a plain HTTP error.
    let mut first = ConnectRequest::with_sink(
        session_id.clone(),
        query.clone(),
        headers.clone(),
        sink.clone(),
    );
    let mut room = room;
    let mut admitted = false;
    for _ in 0..3 {
        match room.admit(&mut first).await {
            Ok(()) => {
                admitted = true;
                break;
            }
            Err(ConnectError::Refused(refusal)) => {
                return json_error(refusal.status, &refusal.reason);
            }
            Err(_) => match shared.rooms.get(&path.party, &path.room) {
                Ok(fresh) => room = fresh,
                Err(_) => break,
            },
        }
    }
    if !admitted {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "Room unavailable");
    }
    let shared2 = shared.clone();
    let response = handshake.response();
    let on_upgrade = handshake.on_upgrade;
    // Its own task, tracked for graceful shutdown: the HTTP connection's task ends with the
    // upgrade.
    shared.tasks.spawn(async move {
        let _permit = permit;
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let (reader, writer) = socket_parts(upgraded, &outbox, &shared2.config);
        let mut room = room;
        let mut prepared = Some(first);
        for attempt in 1..=3 {
            let req = prepared.take().unwrap_or_else(|| {
                ConnectRequest::with_sink(
                    session_id.clone(),
                    query.clone(),
                    headers.clone(),
                    sink.clone(),
                )
            });
            match room.connect(req).await {
                Ok(conn) => {
                    connection::run(Connection {
                        reader,
                        writer,
                        outbox,
                        room,
                        conn,
                        shutdown: shared2.shutdown.clone(),
                        messages_per_second: shared2.config.max_messages_per_second,
                    })
                    .await;
                    return;
                }
                // The instance unloaded itself meanwhile: connect to the new one.
                Err(ConnectError::RoomGone) if attempt < 3 => {
                    match shared2.rooms.get(&path.party, &path.room) {
                        Ok(fresh) => room = fresh,
                        Err(_) => break,
                    }
                }
                Err(refused) => {
                    connection::refuse(writer, &outbox, refused.close_frame()).await;
                    return;
                }
            }
        }
        connection::refuse(writer, &outbox, ConnectError::RoomGone.close_frame()).await;
    });
    response
}

/// The upgraded connection as a WebSocket reader and a writer. A plain TCP stream (what
/// [`Server::serve`] accepts) is split so that the room can write to it directly; any other
/// transport (a router served by something else) is written by the connection task alone.
fn socket_parts(
    upgraded: Upgraded,
    outbox: &Arc<Outbox>,
    config: &ServerConfig,
) -> (FrameReader, Writer) {
    let (max_message, read_chunk) = (config.max_message_bytes, config.read_buffer_bytes);
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let (read, write) = parts.io.into_inner().into_split();
            let write = Arc::new(write);
            outbox.attach(write.clone());
            let reader =
                FrameReader::new(Source::Tcp(read), &parts.read_buf, max_message, read_chunk);
            (reader, Writer::Tcp(write))
        }
        Err(upgraded) => {
            let (read, write) = tokio::io::split(TokioIo::new(upgraded));
            let reader = FrameReader::new(Source::Io(Box::new(read)), &[], max_message, read_chunk);
            (reader, Writer::Io(Box::new(write)))
        }
    }
}

/// Whether `x-access-shard` carries the configured shard secret (constant-time comparison).
fn shard_secret_ok(secret: Option<&str>, headers: &http::HeaderMap) -> bool {
    let (Some(secret), Some(given)) = (secret, headers.get("x-access-shard")) else {
        return false;
    };
    !secret.is_empty() && constant_time_eq(secret.as_bytes(), given.as_bytes())
}

/// Compare two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn json_error(status: StatusCode, message: &str) -> Response {
    let mut r = RoomResponse::error(status, message);
    r.apply_cors();
    to_axum(r)
}

/// Convert a room response, adding the CORS headers unless it is raw.
fn to_axum(mut response: RoomResponse) -> Response {
    if response.cors {
        response.apply_cors();
    }
    let mut out = Response::new(Body::from(response.body));
    *out.status_mut() = response.status;
    *out.headers_mut() = response.headers;
    if !out.headers().contains_key(header::CONTENT_TYPE) {
        out.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    out
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM: the usual shutdown signal to pass to
/// [`Server::serve`].
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
