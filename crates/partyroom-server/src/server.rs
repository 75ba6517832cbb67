//! Routing `/parties/...` to rooms, and serving with graceful shutdown.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};
use partyroom_room::{ConnectError, ConnectRequest, LookupError, RoomRequest, RoomResponse, Rooms};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection;
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
    /// Read buffer per connection. Default 1 KiB: client messages are small, and larger ones
    /// are read in several chunks (tungstenite's default of 128 KiB per socket would cost
    /// 1.3 GB for 10,000 idle clients).
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_connections: 100_000,
            max_message_bytes: 64 * 1024,
            read_buffer_bytes: 1024,
            max_body_bytes: 1024 * 1024,
            max_messages_per_second: 100,
            shard_secret: None,
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
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
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
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use axum::serve::ListenerExt;
        // Small frames must leave at once: Nagle's algorithm would hold them for up to 40 ms.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let token = self.shared.shutdown.clone();
        let router = self.router();
        let signal = token.clone();
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                signal.cancel();
            })
            .await?;
        token.cancel();
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
        // Every connection is closed; save every room before returning.
        self.shared.rooms.shutdown().await;
        Ok(())
    }
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
    let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "Too many connections");
    };
    let (mut parts, _) = request.into_parts();
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
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
    // Guards run before the upgrade, so a refused client gets a plain HTTP error.
    let (mut first, first_channels) = ConnectRequest::new(
        session_id.clone(),
        query.clone(),
        headers.clone(),
        room.config().outgoing_queue_len(),
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
    let config = &shared.config;
    let shared2 = shared.clone();
    ws.read_buffer_size(config.read_buffer_bytes)
        .max_message_size(config.max_message_bytes)
        .max_frame_size(config.max_message_bytes)
        .on_upgrade(move |mut socket| async move {
            let _permit = permit;
            let mut room = room;
            let mut attempts = 0;
            let mut prepared = Some((first, first_channels));
            loop {
                attempts += 1;
                let (req, channels) = prepared.take().unwrap_or_else(|| {
                    ConnectRequest::new(
                        session_id.clone(),
                        query.clone(),
                        headers.clone(),
                        room.config().outgoing_queue_len(),
                    )
                });
                match room.connect(req).await {
                    Ok(conn) => {
                        let token = shared2.shutdown.clone();
                        let limit = shared2.config.max_messages_per_second;
                        // Its own task: the upgrade future (and what it captured) is freed now.
                        shared2
                            .tasks
                            .spawn(connection::run(socket, room, conn, channels, token, limit));
                        return;
                    }
                    // The instance unloaded itself meanwhile: connect to the new one.
                    Err(ConnectError::RoomGone) if attempts < 3 => {
                        match shared2.rooms.get(&path.party, &path.room) {
                            Ok(fresh) => room = fresh,
                            Err(_) => break,
                        }
                    }
                    Err(refused) => {
                        let _ = socket
                            .send(connection::close_message(refused.close_frame()))
                            .await;
                        return;
                    }
                }
            }
            let _ = socket
                .send(connection::close_message(
                    ConnectError::RoomGone.close_frame(),
                ))
                .await;
        })
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
