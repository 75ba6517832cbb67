//! The shard gateway: serves `/parties/shard/<shardId>` (spec section 3) in front of a main
//! room server, and reports connection counts to the world.
//!
//! - **WebSocket.** Each client socket becomes its own upstream WebSocket to
//!   `/parties/main/<room>?<the client's query>` on the main server, with `x-shard-id`,
//!   `x-shard-world-id` and `x-access-shard: <SHARD_SECRET>`. Frames and close frames are
//!   relayed unchanged both ways, so the client sees exactly what a direct client sees
//!   (session ids, `name`, transfer tokens and room guards all work through the shard). The
//!   upstream socket is opened before the client's upgrade is accepted: a room that refuses
//!   the client (401, 403, 404...) refuses it with the same HTTP answer.
//! - **HTTP.** `/parties/shard/<id>/<path>?<query>` goes to `/parties/main/<room>/<path>?<query>`
//!   (the original forwarded its own full path, so every request 404ed: bug 7.2.2), with
//!   `x-forwarded-by-shard: true` and the secret. Headers a client could use to pose as a
//!   shard are dropped from what it sent.
//! - **Stats.** The gateway counts client sockets per shard and reports them to
//!   `POST /parties/world/<worldId>/update-shard` shortly after a change (debounced, one
//!   report at a time so they never arrive out of order) and every `stats_interval`. A shard
//!   the world no longer knows (removed after missed heartbeats, or forgotten by a restarted
//!   world) registers again through `POST .../register-shard` while it has clients (bug
//!   7.2.13); one without clients is forgotten.
//!
//! The shard id is `<room>:<worldId>:<suffix>`; the world id of shorter ids comes from
//! [`GatewayConfig::world_id`] (`WORLD_ID`, `SIGNE_WORLD_ID`, else `world-default`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{CloseFrame as AxClose, Message as AxMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame as TClose, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as TMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::SHARD_HEADER;
use crate::http_client::{self, BaseUrl};
use crate::model::ShardId;

/// Settings of a shard gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The main room server (`http://host:port`).
    pub main_url: BaseUrl,
    /// The world service (`http://host:port`).
    pub world_url: BaseUrl,
    /// `SHARD_SECRET`, sent to the main server and the world.
    pub shard_secret: String,
    /// World of shard ids that do not name one (`game:shard-1`).
    pub world_id: String,
    /// Party of the main rooms. Default `main`.
    pub main_party: String,
    /// Party of the worlds. Default `world`.
    pub world_party: String,
    /// Report every shard this often (heartbeat). Default 30 s.
    pub stats_interval: Duration,
    /// Wait this long after a change before reporting, to send one report for a burst of
    /// joins. Default 200 ms.
    pub report_debounce: Duration,
    /// Client sockets the gateway accepts at once; more get `503`. Default 100,000.
    pub max_connections: usize,
    /// Largest client message and frame. Default 64 KiB.
    pub max_message_bytes: usize,
    /// Largest HTTP body, both ways. Default 1 MiB.
    pub max_body_bytes: usize,
    /// Timeout of calls to the main server and the world. Default 10 s.
    pub request_timeout: Duration,
    /// Also relay `/parties/world/...` (HTTP and WebSocket) to the world, so that one public
    /// address serves both what `connectionWorld` needs when the world runs elsewhere.
    pub forward_world: bool,
    /// Ping a relayed client that has sent nothing for this long (and again each interval);
    /// `None`: no pings and no liveness check. Default 25 s, as the room server.
    pub ping_interval: Option<Duration>,
    /// Drop a relayed client from which nothing (a message, a pong) has come for this long.
    /// Default 60 s.
    pub liveness_timeout: Duration,
    /// Drop a relayed client that takes no frame for this long (it stopped reading; the room
    /// server would otherwise see the gateway as its slow client). Default 10 s.
    pub write_timeout: Duration,
}

impl GatewayConfig {
    /// A gateway in front of `main_url`, reporting to `world_url`, with default settings.
    pub fn new(main_url: BaseUrl, world_url: BaseUrl, shard_secret: impl Into<String>) -> Self {
        Self {
            main_url,
            world_url,
            shard_secret: shard_secret.into(),
            world_id: default_world_id(),
            main_party: "main".into(),
            world_party: "world".into(),
            stats_interval: Duration::from_secs(30),
            report_debounce: Duration::from_millis(200),
            max_connections: 100_000,
            max_message_bytes: 64 * 1024,
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            ping_interval: Some(Duration::from_secs(25)),
            liveness_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            forward_world: false,
        }
    }
}

/// The world of shard ids without one: `WORLD_ID`, else `SIGNE_WORLD_ID` (non-empty), else
/// `world-default` (spec 3.1).
pub fn default_world_id() -> String {
    ["WORLD_ID", "SIGNE_WORLD_ID"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find(|v| !v.is_empty())
        .unwrap_or_else(|| "world-default".into())
}

/// What the gateway knows of one shard.
#[derive(Debug, Clone)]
struct Tracked {
    world: String,
    connections: usize,
    reported: Option<usize>,
}

struct Inner {
    config: GatewayConfig,
    shards: Mutex<HashMap<String, Tracked>>,
    changed: Notify,
    sockets: Arc<Semaphore>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// A shard gateway; cheap to clone.
#[derive(Clone)]
pub struct ShardGateway {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ShardGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardGateway")
            .field("main_url", &self.inner.config.main_url)
            .field("world_url", &self.inner.config.world_url)
            .finish()
    }
}

/// Counts one client socket for its shard while alive.
struct SocketCount {
    inner: Arc<Inner>,
    shard: String,
    _permit: OwnedSemaphorePermit,
}

impl Drop for SocketCount {
    fn drop(&mut self) {
        if let Some(t) = self
            .inner
            .shards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&self.shard)
        {
            t.connections = t.connections.saturating_sub(1);
        }
        self.inner.changed.notify_one();
    }
}

impl ShardGateway {
    /// A gateway; call [`ShardGateway::start`] to run its reporter.
    pub fn new(config: GatewayConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                sockets: Arc::new(Semaphore::new(config.max_connections)),
                config,
                shards: Mutex::new(HashMap::new()),
                changed: Notify::new(),
                shutdown: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &GatewayConfig {
        &self.inner.config
    }

    /// The routes: `/parties/shard/{*rest}`, and `/parties/world/{*rest}` when
    /// [`GatewayConfig::forward_world`] is set. Merged next to a partyroom server's
    /// `/parties/{*rest}`, these more specific routes take precedence.
    pub fn router(&self) -> Router {
        let mut router = Router::new().route("/parties/shard/{*rest}", axum::routing::any(shard));
        if self.inner.config.forward_world {
            router = router.route("/parties/world/{*rest}", axum::routing::any(world));
        }
        router.with_state(self.clone())
    }

    /// Start the stats reporter (a task that lives until [`ShardGateway::shutdown`]).
    pub fn start(&self) {
        let inner = self.inner.clone();
        self.inner.tasks.spawn(reporter(inner));
    }

    /// Client sockets per shard id.
    pub fn connections(&self) -> HashMap<String, usize> {
        self.inner
            .shards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.connections))
            .collect()
    }

    /// Report every shard now (what the periodic heartbeat does).
    pub async fn report_now(&self) {
        self.inner.report(true).await;
    }

    /// Close every client socket (1001) and stop the reporter; waits for them.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

fn json_error(status: StatusCode, message: &str) -> Response {
    let mut r = partyroom_room::RoomResponse::error(status, message);
    r.apply_cors();
    let mut out = Response::new(Body::from(r.body));
    *out.status_mut() = r.status;
    *out.headers_mut() = r.headers;
    out
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Headers never relayed: hop-by-hop ones, the WebSocket handshake, and the ones that claim
/// shard identity (only the gateway sets those).
fn relayed(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "host"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "proxy-authenticate"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
            | "sec-websocket-key"
            | "sec-websocket-version"
            | "sec-websocket-extensions"
            | "sec-websocket-accept"
            | "sec-websocket-protocol"
            | "x-shard-id"
            | "x-shard-world-id"
            | "x-access-shard"
            | "x-forwarded-by-shard"
            | "x-original-client-ip"
    )
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if relayed(name) {
            to.append(name.clone(), value.clone());
        }
    }
}

fn enc(segment: &str) -> String {
    utf8_percent_encode(segment, NON_ALPHANUMERIC).to_string()
}

/// A shard request: the decoded shard id, its world, and the rest of the path (encoded).
struct Target {
    shard: ShardId,
    world: String,
    rest: String,
}

fn parse_target(path: &str, prefix: &str, default_world: &str) -> Result<Target, Response> {
    let tail = path.strip_prefix(prefix).unwrap_or_default();
    let (segment, rest) = match tail.find('/') {
        Some(i) => (&tail[..i], &tail[i..]),
        None => (tail, ""),
    };
    let decoded = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| json_error(StatusCode::BAD_REQUEST, "Bad shard URL: malformed escape"))?;
    let shard = ShardId::parse(&decoded)
        .map_err(|e| json_error(StatusCode::BAD_REQUEST, &format!("Bad shard URL: {e}")))?;
    let world = shard
        .world
        .clone()
        .unwrap_or_else(|| default_world.to_owned());
    Ok(Target {
        shard,
        world,
        rest: rest.to_owned(),
    })
}

async fn shard(State(gw): State<ShardGateway>, request: Request) -> Response {
    let config = &gw.inner.config;
    let target = match parse_target(request.uri().path(), "/parties/shard/", &config.world_id) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let query = request.uri().query().map(str::to_owned);
    let mut extra = HeaderMap::new();
    let value = |s: &str| HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""));
    extra.insert("x-shard-id", value(&target.shard.id));
    extra.insert("x-shard-world-id", value(&target.world));
    extra.insert(SHARD_HEADER, value(&config.shard_secret));
    let room_path = format!(
        "/parties/{}/{}",
        enc(&config.main_party),
        enc(&target.shard.room)
    );
    if is_upgrade(request.headers()) {
        if !matches!(target.rest.as_str(), "" | "/") {
            return json_error(StatusCode::NOT_FOUND, "Not found");
        }
        let Ok(permit) = gw.inner.sockets.clone().try_acquire_owned() else {
            return json_error(StatusCode::SERVICE_UNAVAILABLE, "Too many connections");
        };
        let url = format!(
            "{}{room_path}{}",
            config.main_url.ws(),
            query.map(|q| format!("?{q}")).unwrap_or_default()
        );
        let counted = Some((target, permit));
        return proxy_ws(&gw, request, &url, extra, counted).await;
    }
    extra.insert("x-forwarded-by-shard", HeaderValue::from_static("true"));
    let path = format!(
        "{room_path}{}{}",
        target.rest,
        query.map(|q| format!("?{q}")).unwrap_or_default()
    );
    proxy_http(&gw, request, &config.main_url, &path, extra).await
}

async fn world(State(gw): State<ShardGateway>, request: Request) -> Response {
    let config = &gw.inner.config;
    let path_and_query = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_owned(),
        |p| p.as_str().to_owned(),
    );
    if is_upgrade(request.headers()) {
        let url = format!("{}{path_and_query}", config.world_url.ws());
        return proxy_ws(&gw, request, &url, HeaderMap::new(), None).await;
    }
    proxy_http(
        &gw,
        request,
        &config.world_url,
        &path_and_query,
        HeaderMap::new(),
    )
    .await
}

async fn proxy_http(
    gw: &ShardGateway,
    request: Request,
    base: &BaseUrl,
    path_and_query: &str,
    extra: HeaderMap,
) -> Response {
    let config = &gw.inner.config;
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, config.max_body_bytes).await else {
        return json_error(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large");
    };
    let mut headers = HeaderMap::new();
    copy_headers(&parts.headers, &mut headers);
    for (name, value) in &extra {
        headers.insert(name.clone(), value.clone());
    }
    match http_client::send(
        base,
        parts.method,
        path_and_query,
        headers,
        body,
        config.request_timeout,
        config.max_body_bytes,
    )
    .await
    {
        Ok(r) => {
            let mut out = Response::new(Body::from(r.body));
            *out.status_mut() = r.status;
            for (name, value) in &r.headers {
                if relayed(name) {
                    out.headers_mut().append(name.clone(), value.clone());
                }
            }
            out
        }
        Err(e) => {
            tracing::warn!(error = %e, "error forwarding request");
            json_error(StatusCode::BAD_GATEWAY, "Error forwarding request")
        }
    }
}

type Upstream = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn proxy_ws(
    gw: &ShardGateway,
    request: Request,
    url: &str,
    extra: HeaderMap,
    counted: Option<(Target, OwnedSemaphorePermit)>,
) -> Response {
    let config = &gw.inner.config;
    let (mut parts, _) = request.into_parts();
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let Ok(mut upstream_request) = url.into_client_request() else {
        return json_error(StatusCode::BAD_REQUEST, "Bad shard URL");
    };
    copy_headers(&parts.headers, upstream_request.headers_mut());
    for (name, value) in &extra {
        upstream_request
            .headers_mut()
            .insert(name.clone(), value.clone());
    }
    // Frames from the room can be large (a full snapshot); frames from the client are
    // bounded by the gateway's own limit below.
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(16 << 20));
    let upstream = match tokio::time::timeout(
        config.request_timeout,
        tokio_tungstenite::connect_async_with_config(upstream_request, Some(ws_config), true),
    )
    .await
    {
        Ok(Ok((upstream, _))) => upstream,
        // The room refused the client: answer with its own status and body.
        Ok(Err(WsError::Http(refusal))) => {
            let (rparts, body) = refusal.into_parts();
            let mut out = Response::new(Body::from(body.unwrap_or_default()));
            *out.status_mut() = rparts.status;
            for (name, value) in &rparts.headers {
                if relayed(name) {
                    out.headers_mut().append(name.clone(), value.clone());
                }
            }
            return out;
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, url, "upstream WebSocket failed");
            return json_error(
                StatusCode::BAD_GATEWAY,
                "Shard not connected to main server",
            );
        }
        Err(_) => {
            return json_error(StatusCode::GATEWAY_TIMEOUT, "Main server did not answer");
        }
    };
    let count = counted.map(|(target, permit)| {
        gw.inner.track(&target);
        SocketCount {
            inner: gw.inner.clone(),
            shard: target.shard.id,
            _permit: permit,
        }
    });
    let shutdown = gw.inner.shutdown.clone();
    let tasks = gw.inner.tasks.clone();
    let limits = RelayLimits::of(config);
    ws.max_message_size(config.max_message_bytes)
        .max_frame_size(config.max_message_bytes)
        .on_upgrade(move |socket| async move {
            tasks
                .track_future(async move {
                    relay(socket, upstream, shutdown, limits).await;
                    drop(count);
                })
                .await;
        })
}

fn to_tungstenite_close(frame: Option<AxClose>) -> Option<TClose> {
    frame.map(|f| TClose {
        code: f.code.into(),
        reason: f.reason.as_str().into(),
    })
}

fn to_axum_close(frame: Option<TClose>) -> Option<AxClose> {
    frame.map(|f| AxClose {
        code: f.code.into(),
        reason: f.reason.as_str().into(),
    })
}

/// The deadlines of one relayed client (from [`GatewayConfig`]).
#[derive(Debug, Clone, Copy)]
struct RelayLimits {
    ping_interval: Option<Duration>,
    liveness_timeout: Duration,
    write_timeout: Duration,
}

impl RelayLimits {
    fn of(config: &GatewayConfig) -> Self {
        Self {
            ping_interval: config.ping_interval,
            liveness_timeout: config.liveness_timeout,
            write_timeout: config.write_timeout,
        }
    }
}

/// How long a closing relay may take to send its close frames.
const RELAY_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Relay frames both ways until either side closes, the client stops reading or answering,
/// or the gateway shuts down. No send waits longer than the write timeout, so a client that
/// stops reading cannot hold the relay (nor, through it, the room server's connection).
async fn relay(
    client: WebSocket,
    upstream: Upstream,
    shutdown: CancellationToken,
    limits: RelayLimits,
) {
    let (mut client_tx, mut client_rx) = client.split();
    let (mut up_tx, mut up_rx) = upstream.split();
    let started = tokio::time::Instant::now();
    // When the client was last heard, in milliseconds since `started`.
    let heard = std::sync::atomic::AtomicU64::new(0);
    let heard_now = || {
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        heard.store(ms, std::sync::atomic::Ordering::Relaxed);
    };
    let shutting_down = {
        let client_to_room = async {
            while let Some(msg) = client_rx.next().await {
                heard_now();
                let out = match msg {
                    Ok(AxMessage::Text(t)) => TMessage::Text(t.as_str().into()),
                    Ok(AxMessage::Binary(b)) => TMessage::Binary(b),
                    Ok(AxMessage::Close(frame)) => {
                        let close = up_tx.send(TMessage::Close(to_tungstenite_close(frame)));
                        let _ = tokio::time::timeout(RELAY_CLOSE_TIMEOUT, close).await;
                        return;
                    }
                    Ok(_) => continue,
                    Err(_) => break,
                };
                if up_tx.send(out).await.is_err() {
                    return;
                }
            }
            // The client went away without a close frame.
            let close = up_tx.send(TMessage::Close(None));
            let _ = tokio::time::timeout(RELAY_CLOSE_TIMEOUT, close).await;
        };
        let room_to_client = async {
            // No ticks when the interval is beyond what the clock can say: never.
            let mut ticks = limits.ping_interval.and_then(|every| {
                let mut t = tokio::time::interval_at(started.checked_add(every)?, every);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                Some(t)
            });
            loop {
                let tick = async {
                    match ticks.as_mut() {
                        Some(t) => t.tick().await,
                        None => std::future::pending().await,
                    }
                };
                let out = tokio::select! {
                    msg = up_rx.next() => match msg {
                        Some(Ok(TMessage::Text(t))) => AxMessage::Text(t.as_str().into()),
                        Some(Ok(TMessage::Binary(b))) => AxMessage::Binary(b),
                        Some(Ok(TMessage::Close(frame))) => {
                            let close = client_tx.send(AxMessage::Close(to_axum_close(frame)));
                            let _ = tokio::time::timeout(RELAY_CLOSE_TIMEOUT, close).await;
                            return;
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(_)) | None => break,
                    },
                    now = tick => {
                        let last = started
                            + Duration::from_millis(heard.load(std::sync::atomic::Ordering::Relaxed));
                        let silent = now.saturating_duration_since(last);
                        if silent >= limits.liveness_timeout {
                            tracing::debug!("dropping relayed client: no answer to pings");
                            return;
                        }
                        if silent < limits.ping_interval.unwrap_or(Duration::MAX) {
                            continue;
                        }
                        AxMessage::Ping(Default::default())
                    }
                };
                match tokio::time::timeout(limits.write_timeout, client_tx.send(out)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(_) => {
                        tracing::debug!("dropping relayed client: it stopped reading");
                        return;
                    }
                }
            }
            // The room server went away without a close frame.
            let close = client_tx.send(AxMessage::Close(Some(AxClose {
                code: 1011,
                reason: "main server connection lost".into(),
            })));
            let _ = tokio::time::timeout(RELAY_CLOSE_TIMEOUT, close).await;
        };
        tokio::select! {
            () = client_to_room => false,
            () = room_to_client => false,
            () = shutdown.cancelled() => true,
        }
    };
    if shutting_down {
        let close = client_tx.send(AxMessage::Close(Some(AxClose {
            code: 1001,
            reason: "server shutting down".into(),
        })));
        let _ = tokio::time::timeout(RELAY_CLOSE_TIMEOUT, close).await;
        let _ = tokio::time::timeout(RELAY_CLOSE_TIMEOUT, up_tx.send(TMessage::Close(None))).await;
    }
}

impl Inner {
    fn track(&self, target: &Target) {
        let mut shards = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        let t = shards.entry(target.shard.id.clone()).or_insert(Tracked {
            world: target.world.clone(),
            connections: 0,
            reported: None,
        });
        t.connections += 1;
        drop(shards);
        self.changed.notify_one();
    }

    /// Report the shards whose count changed (or all, when `force`), one at a time.
    async fn report(&self, force: bool) {
        let batch: Vec<(String, String, usize)> = self
            .shards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, t)| force || t.reported != Some(t.connections))
            .map(|(id, t)| (id.clone(), t.world.clone(), t.connections))
            .collect();
        for (id, world, connections) in batch {
            self.report_one(&id, &world, connections).await;
        }
    }

    fn world_path(&self, world: &str, action: &str) -> String {
        format!(
            "/parties/{}/{}/{action}",
            enc(&self.config.world_party),
            enc(world)
        )
    }

    async fn report_one(&self, id: &str, world: &str, connections: usize) {
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&self.config.shard_secret) {
            headers.insert(SHARD_HEADER, v);
        }
        let body = serde_json::json!({"shardId": id, "worldId": world, "connections": connections});
        let timeout = self.config.request_timeout;
        let url = &self.config.world_url;
        let result = http_client::post_json(
            url,
            &self.world_path(world, "update-shard"),
            headers.clone(),
            &body,
            timeout,
        )
        .await;
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(shard = id, error = %e, "error updating world stats");
                return;
            }
        };
        if response.status.is_success() {
            self.mark_reported(id, connections);
            return;
        }
        let message = response.error_message().unwrap_or_default();
        if response.status != StatusCode::NOT_FOUND || message != format!("Shard {id} not found") {
            tracing::warn!(
                shard = id,
                status = %response.status,
                error = %message,
                "failed to update world stats"
            );
            return;
        }
        // The world does not know this shard (any more).
        if connections == 0 {
            let mut shards = self.shards.lock().unwrap_or_else(|e| e.into_inner());
            if shards.get(id).is_some_and(|t| t.connections == 0) {
                shards.remove(id);
            }
            return;
        }
        match http_client::post_json(
            url,
            &self.world_path(world, "register-shard"),
            headers,
            &body,
            timeout,
        )
        .await
        {
            Ok(r) if r.status.is_success() => {
                tracing::info!(shard = id, "shard registered again with its world");
                self.mark_reported(id, connections);
            }
            Ok(r) => tracing::warn!(
                shard = id,
                status = %r.status,
                error = %r.error_message().unwrap_or_default(),
                "world refused to register the shard again"
            ),
            Err(e) => tracing::warn!(shard = id, error = %e, "error registering the shard"),
        }
    }

    fn mark_reported(&self, id: &str, connections: usize) {
        if let Some(t) = self
            .shards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(id)
        {
            t.reported = Some(connections);
        }
    }
}

async fn reporter(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(inner.config.stats_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            () = inner.shutdown.cancelled() => break,
            () = inner.changed.notified() => {
                tokio::select! {
                    () = tokio::time::sleep(inner.config.report_debounce) => {}
                    () = inner.shutdown.cancelled() => break,
                }
                inner.report(false).await;
            }
            _ = tick.tick() => inner.report(true).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A raw client through the relay at `addr`: it sends `first` as its one message and then
    /// neither reads nor answers pings (its receive buffer is small, so that the gateway's
    /// sends to it stall soon).
    async fn raw_client(addr: std::net::SocketAddr, first: &str) -> TcpStream {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut s = socket.connect(addr).await.unwrap();
        s.write_all(
            b"GET /r HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut b = [0u8; 1];
            assert_eq!(s.read(&mut b).await.unwrap(), 1);
            head.push(b[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101"));
        let mask = [1u8, 2, 3, 4];
        let mut frame = vec![0x81, 0x80 | first.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(first.bytes().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        s.write_all(&frame).await.unwrap();
        s
    }

    /// The relay's deadlines over real sockets: a relayed client that stops reading while the
    /// room floods it is dropped after the write timeout, and one that stays silent (no pongs)
    /// after the liveness timeout; either way the relay ends instead of waiting forever.
    #[tokio::test]
    async fn relayed_clients_that_stop_reading_or_answering_are_dropped() {
        // The room side: floods after "flood", stays quiet after anything else.
        let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up_addr = up.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = up.accept().await {
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                        return;
                    };
                    if let Some(Ok(TMessage::Text(t))) = ws.next().await
                        && t.as_str() == "flood"
                    {
                        let big = "x".repeat(60_000);
                        while ws.send(TMessage::text(big.clone())).await.is_ok() {}
                    } else {
                        while let Some(Ok(_)) = ws.next().await {}
                    }
                });
            }
        });
        let limits = RelayLimits {
            ping_interval: Some(Duration::from_millis(150)),
            liveness_timeout: Duration::from_millis(500),
            write_timeout: Duration::from_millis(300),
        };
        let (done_tx, mut done) = tokio::sync::mpsc::channel::<()>(4);
        let app = axum::Router::new().route(
            "/r",
            axum::routing::get(move |ws: WebSocketUpgrade| async move {
                let (upstream, _) = tokio_tungstenite::connect_async(format!("ws://{up_addr}/"))
                    .await
                    .unwrap();
                ws.on_upgrade(move |socket| async move {
                    relay(socket, upstream, CancellationToken::new(), limits).await;
                    let _ = done_tx.send(()).await;
                })
            }),
        );
        let gw = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gw_addr = gw.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(gw, app).await });
        for (first, within) in [
            ("flood", Duration::from_secs(5)),
            ("quiet", Duration::from_secs(3)),
        ] {
            let started = tokio::time::Instant::now();
            let _client = raw_client(gw_addr, first).await;
            let ended = tokio::time::timeout(within, done.recv()).await;
            assert!(ended.is_ok(), "{first}: the relay let go of the client");
            if first == "quiet" {
                assert!(
                    started.elapsed() >= Duration::from_millis(450),
                    "{first}: not before the liveness timeout"
                );
            }
        }
    }

    #[test]
    fn targets() {
        let t = parse_target(
            "/parties/shard/demo%3Aworld-eu%3A1-a/x/y",
            "/parties/shard/",
            "world-default",
        )
        .ok()
        .unwrap();
        assert_eq!(
            (t.shard.room.as_str(), t.world.as_str(), t.rest.as_str()),
            ("demo", "world-eu", "/x/y")
        );
        let t = parse_target("/parties/shard/game:shard-1", "/parties/shard/", "world-x")
            .ok()
            .unwrap();
        assert_eq!((t.world.as_str(), t.rest.as_str()), ("world-x", ""));
        assert!(parse_target("/parties/shard/a.b:world-x:1", "/parties/shard/", "w").is_err());
        assert!(parse_target("/parties/shard/%E0%A4%A", "/parties/shard/", "w").is_err());
    }

    #[test]
    fn spoofing_headers_are_dropped() {
        for h in [
            "x-access-shard",
            "x-shard-id",
            "x-forwarded-by-shard",
            "host",
            "upgrade",
        ] {
            assert!(!relayed(&HeaderName::from_static(h)));
        }
        assert!(relayed(&header::AUTHORIZATION));
    }
}
