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
use axum::extract::{Request, State};
use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use partyroom_server::http_client::{self, BaseUrl};
use partyroom_server::relay::{self, HeaderPolicy, RelayLimits, Upstream, json_error};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::SHARD_HEADER;
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

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
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
    let limits = gw.inner.limits();
    let (parts, body) = request.into_parts();
    let body = match relay::read_body(body, limits.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    relay::relay_http(
        &limits,
        &parts,
        body,
        base,
        path_and_query,
        &extra,
        HeaderPolicy::FromClient,
    )
    .await
    .unwrap_or_else(relay::RelayError::into_response)
}

async fn proxy_ws(
    gw: &ShardGateway,
    request: Request,
    url: &str,
    extra: HeaderMap,
    counted: Option<(Target, OwnedSemaphorePermit)>,
) -> Response {
    let limits = gw.inner.limits();
    let (mut parts, _) = request.into_parts();
    let upstream = match relay::connect_upstream(
        &limits,
        &parts.headers,
        url,
        &extra,
        HeaderPolicy::FromClient,
    )
    .await
    {
        Upstream::Open(upstream) => upstream,
        // The room refused the client: answer with its own status and body.
        Upstream::Refused(refusal) => return refusal,
        Upstream::Failed(e) => {
            tracing::warn!(error = %e, url, "upstream WebSocket failed");
            return json_error(
                StatusCode::BAD_GATEWAY,
                "Shard not connected to main server",
            );
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
    let tasks = gw.inner.tasks.clone();
    relay::accept_and_relay(
        &mut parts,
        *upstream,
        limits,
        gw.inner.shutdown.clone(),
        move |relaying| {
            tasks.spawn(relaying);
        },
        move || drop(count),
    )
    .await
}

impl Inner {
    /// The relay's limits, from the settings.
    fn limits(&self) -> RelayLimits {
        let c = &self.config;
        RelayLimits {
            max_message_bytes: c.max_message_bytes,
            max_body_bytes: c.max_body_bytes,
            request_timeout: c.request_timeout,
            ping_interval: c.ping_interval,
            liveness_timeout: c.liveness_timeout,
            write_timeout: c.write_timeout,
        }
    }

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
}
