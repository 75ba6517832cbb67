//! Routing `/parties/...` to rooms, and serving with graceful shutdown.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::{HeaderValue, Method, StatusCode, header};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use partyroom_room::{
    ConnectError, ConnectRequest, ConnectionSink, Located, RoomHandle, RoomRequest, RoomResponse,
    Rooms,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::metrics::{CountedPermit, OpenGuard, Refusal, ServerMetrics, TrackedOutbox};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection::{self, Connection, Limits, RoomPeer, Writer};
use crate::frame_reader::{FrameReader, Source};
use crate::handshake::Handshake;
use crate::outbox::Outbox;
use crate::owner_relay;
use crate::path::{PathError, RoomPath};
use crate::relay::RELAY_HEADER;

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
///
/// Every deadline exists so that no peer can hold a connection, a task or kernel memory
/// forever: a client that never finishes its headers, its request body, a frame or its
/// reads, or that stops answering, is dropped after a bounded time.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Concurrent connections, counted from `accept`: plain HTTP connections, unfinished
    /// handshakes and WebSockets alike. A connection beyond it is answered `503` and closed
    /// at once. Default 100,000. The process's open-file limit caps connections too (one
    /// descriptor each; see [`crate::raise_fd_limit`]).
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
    /// between keep-alive requests; this bounds a WebSocket handshake too) before the
    /// connection is closed. Default 10 s.
    pub header_read_timeout: Duration,
    /// How long a client may take to send an HTTP request's body; past it the request is
    /// answered `408` and the connection closed. Default 10 s.
    pub body_read_timeout: Duration,
    /// Ping a WebSocket client that has sent nothing for this long (and again each interval
    /// while it stays silent). `None`: no pings and no liveness check. Default 25 s.
    pub ping_interval: Option<Duration>,
    /// Drop a WebSocket client from which nothing at all (a message, a pong, a part of a
    /// frame) has come for this long. Applies with [`ping_interval`](Self::ping_interval)
    /// set; give it more than one interval. Default 60 s.
    pub liveness_timeout: Duration,
    /// How long a frame (or a fragmented message) may take to arrive once it has started;
    /// past it the connection is closed with 1008. `None`: no limit. Default 15 s.
    pub frame_read_timeout: Option<Duration>,
    /// Drop a WebSocket connection when frames wait for it and its socket takes none of
    /// their bytes for this long (a client that stopped reading). Its descriptor is freed and
    /// what the kernel held for it discarded. Default 10 s.
    pub write_timeout: Duration,
    /// The kernel send buffer of each WebSocket (`SO_SNDBUF`; Linux doubles the value for
    /// its bookkeeping). Without a cap the kernel grows it up to the system maximum
    /// (megabytes) for a client that does not read, before the outgoing queue even starts.
    /// `None` leaves the kernel's automatic sizing. Default 32 KiB.
    ///
    /// The trade-off: a connection's sustained throughput is then about this much per round
    /// trip (64 KiB as counted: some 1.3 MB/s at 50 ms), plenty for patches and for snapshots
    /// of a few hundred KiB (slow start dominates those anyway), slower for megabytes in a
    /// row. Raise it for rooms that stream large payloads over long links.
    pub send_buffer_bytes: Option<usize>,
    /// How long [`Server::serve`] waits for connections to close after its shutdown signal
    /// before saving the rooms and returning anyway. Default 10 s.
    pub shutdown_timeout: Duration,
    /// The secret cluster nodes present in `x-partyroom-relay` when they relay a request to
    /// the room's owner ([`relay::RELAY_HEADER`](crate::relay::RELAY_HEADER)). A request that
    /// carries the header with another value (or when no secret is set) is refused with
    /// `401`. Only used in cluster mode (rooms built with a placement).
    pub cluster_secret: Option<String>,
    /// In cluster mode, how long a request for a room whose owner cannot be reached keeps
    /// trying (the owner died: its lease must expire before another node may claim the
    /// room). Default 10 s.
    pub failover_wait: Duration,
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
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            ping_interval: Some(Duration::from_secs(25)),
            liveness_timeout: Duration::from_secs(60),
            frame_read_timeout: Some(Duration::from_secs(15)),
            write_timeout: Duration::from_secs(10),
            send_buffer_bytes: Some(32 * 1024),
            shutdown_timeout: Duration::from_secs(10),
            cluster_secret: None,
            failover_wait: Duration::from_secs(10),
        }
    }
}

pub(crate) struct Shared {
    pub(crate) rooms: Rooms,
    pub(crate) config: ServerConfig,
    connections: Arc<Semaphore>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
    pub(crate) metrics: ServerMetrics,
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

/// The connection-count permit of one accepted TCP connection, put in each of its requests'
/// extensions: an upgrade takes it along into the WebSocket's task, so that a connection is
/// counted once from `accept` to its end.
#[derive(Clone)]
pub(crate) struct ConnPermit(Arc<Mutex<Option<CountedPermit>>>);

impl ConnPermit {
    pub(crate) fn take(&self) -> Option<CountedPermit> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// What a connection refused at `accept` is sent (if its socket takes it at once).
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\ncontent-length: 32\r\nconnection: close\r\n\r\n\
{\"error\":\"Too many connections\"}";

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
                metrics: ServerMetrics::new(),
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

    /// Serve until `shutdown` completes; then stop accepting, close every WebSocket with 1001,
    /// wait for the connection tasks to finish (at most
    /// [`ServerConfig::shutdown_timeout`]) and save every room.
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
        let router = self.router();
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
            let Ok(permit) = self.shared.connections.clone().try_acquire_owned() else {
                tracing::debug!("connection refused: max_connections reached");
                self.shared.metrics.refused(Refusal::TooMany);
                let _ = tcp.try_write(TOO_MANY_CONNECTIONS);
                continue;
            };
            let permit = CountedPermit::new(permit, &self.shared.metrics.connections_open);
            // Small frames must leave at once: Nagle's algorithm would hold them for up to
            // 40 ms.
            let _ = tcp.set_nodelay(true);
            let permit = ConnPermit(Arc::new(Mutex::new(Some(permit))));
            let router = router.clone();
            let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                let mut req = req.map(Body::new);
                req.extensions_mut().insert(permit.clone());
                tower_service::Service::call(&mut router.clone(), req)
            });
            let conn = http
                .serve_connection(TokioIo::new(tcp), service)
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
        let deadline = self.shared.config.shutdown_timeout;
        if tokio::time::timeout(deadline, self.shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                connections = self.shared.tasks.len(),
                "connections still open after the shutdown timeout; saving the rooms anyway"
            );
        }
        // Save every room before returning, whatever the connections do.
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
    let relayed_in = headers.contains_key(RELAY_HEADER);
    if relayed_in
        && !secret_ok(
            shared.config.cluster_secret.as_deref(),
            headers,
            RELAY_HEADER,
        )
    {
        return json_error(StatusCode::UNAUTHORIZED, "Invalid relay credentials");
    }
    match owner_relay::locate(&shared, &path, relayed_in).await {
        Ok(Located::Here(room)) => serve_here(shared, room, path, request).await,
        Ok(Located::Elsewhere(owner)) => {
            owner_relay::relay_to_owner(shared, path, owner, request).await
        }
        Err(refusal) => refusal,
    }
}

/// Serve a request for a room that runs here.
pub(crate) async fn serve_here(
    shared: Arc<Shared>,
    room: RoomHandle,
    path: RoomPath,
    request: Request,
) -> Response {
    let is_upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if is_upgrade {
        return upgrade(shared, room, path, request).await;
    }
    let (parts, body) = request.into_parts();
    let body = match read_body(&parts.headers, body, &shared.config).await {
        Ok(b) => b,
        Err(refusal) => return refusal,
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
            Err(_) => match shared.rooms.locate(&path.party, &path.room).await {
                Ok(Located::Here(fresh)) => room = fresh,
                _ => break,
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
        Err(e) => {
            shared.metrics.refused(Refusal::Handshake);
            return handshake_refusal(e);
        }
    };
    // Served by `serve`, the connection's own permit goes on with the WebSocket; under any
    // other server, the WebSocket needs one of its own.
    let counted = parts.extensions.get::<ConnPermit>().cloned();
    let own_permit = match &counted {
        Some(_) => None,
        None => match shared.connections.clone().try_acquire_owned() {
            Ok(p) => Some(CountedPermit::new(p, &shared.metrics.connections_open)),
            Err(_) => {
                shared.metrics.refused(Refusal::TooMany);
                return json_error(StatusCode::SERVICE_UNAVAILABLE, "Too many connections");
            }
        },
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
                shared.metrics.refused(Refusal::Guard);
                return json_error(refusal.status, &refusal.reason);
            }
            Err(_) => match shared.rooms.locate(&path.party, &path.room).await {
                Ok(Located::Here(fresh)) => room = fresh,
                _ => break,
            },
        }
    }
    if !admitted {
        shared.metrics.refused(Refusal::Unavailable);
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "Room unavailable");
    }
    let Some(permit) = own_permit.or_else(|| counted.and_then(|c| c.take())) else {
        shared.metrics.refused(Refusal::TooMany);
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "Too many connections");
    };
    let shared2 = shared.clone();
    let response = handshake.response();
    let on_upgrade = handshake.on_upgrade;
    // Its own task, tracked for graceful shutdown: the HTTP connection's task ends with the
    // upgrade. With debug on, its events carry `connection{party, room, conn}` (`conn` once
    // joined; the room's `joined` event pairs it with the public user id); without, the task
    // is not instrumented (entering a span on each poll costs).
    let span = tracing::debug_span!(
        "connection",
        party = %path.party,
        room = %path.room,
        conn = tracing::field::Empty
    );
    let task = async move {
        let _permit = permit;
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let (reader, writer) = socket_parts(upgraded, &outbox, &shared2.config);
        let _tracked = TrackedOutbox::new(&outbox);
        shared2.metrics.room_sockets.increment(1);
        let _open = OpenGuard::new(&shared2.metrics.room_sockets_open);
        let retry = Retry {
            session_id,
            query,
            headers,
            sink,
            path,
        };
        // The connect request's parts (headers, query) are freed once the client is in: the
        // task keeps only what its connection needs, for as long as it lives.
        let joined = join(&shared2, room, first, retry).await;
        let (room, conn) = match joined {
            Ok(joined) => joined,
            Err(refused) => {
                connection::refuse(writer, &outbox, refused.close_frame()).await;
                return;
            }
        };
        tracing::Span::current().record("conn", conn);
        tracing::debug!("connected");
        let config = &shared2.config;
        connection::run(Connection {
            reader,
            writer,
            outbox,
            peer: RoomPeer::new(room, conn, config.max_messages_per_second),
            shutdown: shared2.shutdown.clone(),
            limits: Limits::of(config),
        })
        .await;
        tracing::debug!("disconnected");
    };
    if span.is_disabled() {
        shared.tasks.spawn(task);
    } else {
        shared
            .tasks
            .spawn(tracing::Instrument::instrument(task, span));
    }
    response
}

/// What connecting again takes, if the room instance unloads itself meanwhile.
struct Retry {
    session_id: Option<String>,
    query: Vec<(String, String)>,
    headers: http::HeaderMap,
    sink: Arc<dyn ConnectionSink>,
    path: RoomPath,
}

/// Connect an admitted client to its room (to the new instance, up to twice, when the one it
/// was admitted to unloaded itself meanwhile).
async fn join(
    shared: &Shared,
    mut room: partyroom_room::RoomHandle,
    first: ConnectRequest,
    retry: Retry,
) -> Result<(partyroom_room::RoomHandle, partyroom_room::ConnId), ConnectError> {
    let mut prepared = Some(first);
    for attempt in 1..=3 {
        let req = prepared.take().unwrap_or_else(|| {
            ConnectRequest::with_sink(
                retry.session_id.clone(),
                retry.query.clone(),
                retry.headers.clone(),
                retry.sink.clone(),
            )
        });
        match room.connect(req).await {
            Ok(conn) => return Ok((room, conn)),
            Err(ConnectError::RoomGone) if attempt < 3 => {
                match shared
                    .rooms
                    .locate(&retry.path.party, &retry.path.room)
                    .await
                {
                    Ok(Located::Here(fresh)) => room = fresh,
                    _ => break,
                }
            }
            Err(refused) => return Err(refused),
        }
    }
    Err(ConnectError::RoomGone)
}

/// The upgraded connection as a WebSocket reader and a writer. A plain TCP stream (what
/// [`Server::serve`] accepts) is split so that the room can write to it directly; any other
/// transport (a router served by something else) is written by the connection task alone.
pub(crate) fn socket_parts(
    upgraded: Upgraded,
    outbox: &Arc<Outbox>,
    config: &ServerConfig,
) -> (FrameReader, Writer) {
    let (max_message, read_chunk) = (config.max_message_bytes, config.read_buffer_bytes);
    let (reader, writer) = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let tcp = parts.io.into_inner();
            if let Some(bytes) = config.send_buffer_bytes {
                let _ = rustix::net::sockopt::set_socket_send_buffer_size(&tcp, bytes);
            }
            let (read, write) = tcp.into_split();
            let write = Arc::new(write);
            outbox.attach(write.clone());
            let reader =
                FrameReader::new(Source::Tcp(read), &parts.read_buf, max_message, read_chunk);
            (reader, Writer::Tcp(write))
        }
        Err(upgraded) => {
            let (read, write) = tokio::io::split(TokioIo::new(upgraded));
            let reader = FrameReader::new(Source::Io(Box::new(read)), &[], max_message, read_chunk);
            (reader, Writer::io(Box::new(write)))
        }
    };
    (reader.with_frame_timeout(config.frame_read_timeout), writer)
}

impl Limits {
    /// A connection's deadlines under `config`.
    pub(crate) fn of(config: &ServerConfig) -> Self {
        Self {
            ping_interval: config.ping_interval,
            liveness_timeout: config.liveness_timeout,
            write_timeout: config.write_timeout,
        }
    }
}

/// Read a request's body within the size limit and the body timeout: `413` when it is too
/// large, `408` when it does not arrive in time, `400` when it is malformed (a broken
/// chunked encoding) or the connection fails; each closes the connection.
pub(crate) async fn read_body(
    headers: &http::HeaderMap,
    body: Body,
    config: &ServerConfig,
) -> Result<bytes::Bytes, Response> {
    // A declared length over the limit is refused before any of the body is waited for.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let read = axum::body::to_bytes(body, config.max_body_bytes);
    let mut refusal = match declared {
        Some(n) if n > config.max_body_bytes as u64 => {
            json_error(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large")
        }
        _ => match tokio::time::timeout(config.body_read_timeout, read).await {
            Ok(Ok(body)) => return Ok(body),
            Ok(Err(e)) => {
                let too_large = e
                    .into_inner()
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some();
                if too_large {
                    json_error(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large")
                } else {
                    json_error(StatusCode::BAD_REQUEST, "Malformed request body")
                }
            }
            Err(_) => json_error(StatusCode::REQUEST_TIMEOUT, "Request body timeout"),
        },
    };
    refusal
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    Err(refusal)
}

/// Whether `x-access-shard` carries the configured shard secret (constant-time comparison).
fn shard_secret_ok(secret: Option<&str>, headers: &http::HeaderMap) -> bool {
    secret_ok(secret, headers, "x-access-shard")
}

/// Whether header `name` carries `secret` (constant-time comparison); never without one.
fn secret_ok(secret: Option<&str>, headers: &http::HeaderMap, name: &str) -> bool {
    let (Some(secret), Some(given)) = (secret, headers.get(name)) else {
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

/// A refused handshake: its status, with the headers the RFC asks for (the version this
/// server speaks, after a version it does not).
pub(crate) fn handshake_refusal(e: crate::handshake::HandshakeError) -> Response {
    let mut response = json_error(e.status(), &e.to_string());
    for (name, value) in e.headers() {
        response.headers_mut().insert(
            http::HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    response
}

pub(crate) fn json_error(status: StatusCode, message: &str) -> Response {
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
