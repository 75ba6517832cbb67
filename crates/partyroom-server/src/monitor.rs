//! The monitor: a live page of the rooms running in this process (users, messages per
//! second, size), each room's connections, sessions and state, and a button to disconnect a
//! user; with the JSON API it is built on. Every route needs the operator's credential.
//!
//! | route | what |
//! |---|---|
//! | `GET /monitor?token=…` | the page (it sends the token on as `Authorization: Bearer`) |
//! | `GET /monitor/api/rooms` | `{"rooms": [{party, room, connections, users, sessions, messages, framesSent, stateBytes}], "truncated"}` |
//! | `GET /monitor/api/rooms/{party}/{room}` | `{stats, connections: [{conn, user}], sessions: [{user, connections, disconnectedMs}], state}` |
//! | `POST /monitor/api/rooms/{party}/{room}/users/{user}/disconnect` | closes the user's sockets (4000); `{"closed": n}` |
//!
//! The credential is a shared secret ([`Monitor::with_token`], compared in constant time) or
//! any check of the request's headers and query ([`Monitor::with_auth`], e.g. the world's
//! admin JWT). Without it: `401`. Private session ids are never shown. The monitor sees the
//! rooms of this process only (in a cluster, each node shows the rooms it owns).
//!
//! ```no_run
//! # fn demo(rooms: partyroom_room::Rooms) {
//! let monitor = partyroom_server::monitor::Monitor::with_token(rooms.clone(), "s3cret");
//! let server = partyroom_server::Server::new(rooms).merge(monitor.router());
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use partyroom_room::Rooms;
use serde_json::json;

/// Rooms listed at most by `GET /monitor/api/rooms`.
const MAX_LISTED: usize = 500;

/// How long a room may take to answer the monitor.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// Decides whether a request carries the operator's credential: its headers and raw query.
pub type MonitorAuth = Arc<dyn Fn(&HeaderMap, Option<&str>) -> bool + Send + Sync>;

/// The monitor's routes over a set of rooms.
#[derive(Clone)]
pub struct Monitor {
    rooms: Rooms,
    auth: MonitorAuth,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor").finish_non_exhaustive()
    }
}

/// The bearer token of a request: `Authorization: Bearer <t>`, else `?token=<t>`.
pub fn bearer_token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(v.trim().to_owned());
    }
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

impl Monitor {
    /// A monitor whose credential is `token` (as `Authorization: Bearer` or `?token=`). An
    /// empty token refuses everyone.
    pub fn with_token(rooms: Rooms, token: impl Into<String>) -> Self {
        let token = token.into();
        Self::with_auth(
            rooms,
            Arc::new(move |headers, query| {
                !token.is_empty()
                    && bearer_token(headers, query)
                        .is_some_and(|t| crate::constant_time_eq(t.as_bytes(), token.as_bytes()))
            }),
        )
    }

    /// A monitor that lets in the requests `auth` accepts.
    pub fn with_auth(rooms: Rooms, auth: MonitorAuth) -> Self {
        Self { rooms, auth }
    }

    /// The routes (under `/monitor`).
    pub fn router(self) -> Router {
        Router::new()
            .route("/monitor", get(page))
            .route("/monitor/api/rooms", get(list))
            .route("/monitor/api/rooms/{party}/{room}", get(inspect))
            .route(
                "/monitor/api/rooms/{party}/{room}/users/{user}/disconnect",
                post(disconnect),
            )
            .with_state(Arc::new(self))
    }
}

/// Proof that a request carries the operator's credential: an extractor, so every handler
/// that takes it refuses the others with `401` before it runs.
struct Operator;

impl FromRequestParts<Arc<Monitor>> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, m: &Arc<Monitor>) -> Result<Self, Response> {
        if (m.auth)(&parts.headers, parts.uri.query()) {
            Ok(Operator)
        } else {
            Err(error(
                StatusCode::UNAUTHORIZED,
                "Monitor credentials required",
            ))
        }
    }
}

/// `response`, never cached (what the monitor shows is live and private).
fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, "no-store".parse().expect("static"));
    r
}

fn error(status: StatusCode, message: &str) -> Response {
    no_store((status, axum::Json(json!({ "error": message }))).into_response())
}

fn json_body(body: serde_json::Value) -> Response {
    no_store(axum::Json(body).into_response())
}

async fn page(_: Operator) -> Response {
    no_store(Html(PAGE).into_response())
}

async fn list(_: Operator, State(m): State<Arc<Monitor>>) -> Response {
    let live = m.rooms.running();
    let truncated = live.len() > MAX_LISTED;
    let asked = live.into_iter().take(MAX_LISTED).map(|(party, room, handle)| async move {
        let stats = tokio::time::timeout(ANSWER_WITHIN, handle.stats()).await;
        match stats {
            Ok(Ok(s)) => Some(json!({
                "party": party, "room": room,
                "connections": s.connections, "users": s.users, "sessions": s.sessions,
                "messages": s.messages, "framesSent": s.frames_sent, "stateBytes": s.state_bytes,
            })),
            // Stopped meanwhile, or too busy to answer: left out of this listing.
            _ => None,
        }
    });
    let rooms: Vec<_> = futures_util::future::join_all(asked)
        .await
        .into_iter()
        .flatten()
        .collect();
    json_body(json!({ "rooms": rooms, "truncated": truncated }))
}

async fn inspect(
    _: Operator,
    State(m): State<Arc<Monitor>>,
    Path((party, room)): Path<(String, String)>,
) -> Response {
    ask_room(&m, &party, &room, |h| async move {
        h.inspect().await.map(|i| json!(i))
    })
    .await
}

async fn disconnect(
    _: Operator,
    State(m): State<Arc<Monitor>>,
    Path((party, room, user)): Path<(String, String, String)>,
) -> Response {
    ask_room(&m, &party, &room, |h| async move {
        h.disconnect_user(&user)
            .await
            .map(|closed| json!({ "closed": closed }))
    })
    .await
}

/// Ask the running instance of a room (`404` if none runs here, `503` if it does not answer
/// within [`ANSWER_WITHIN`]).
async fn ask_room<F, Fut>(m: &Monitor, party: &str, room: &str, ask: F) -> Response
where
    F: FnOnce(partyroom_room::RoomHandle) -> Fut,
    Fut: std::future::Future<Output = Result<serde_json::Value, partyroom_room::RoomGone>>,
{
    let Some(handle) = m.rooms.live_room(party, room) else {
        return error(StatusCode::NOT_FOUND, "No such room running here");
    };
    match tokio::time::timeout(ANSWER_WITHIN, ask(handle)).await {
        Ok(Ok(body)) => json_body(body),
        Ok(Err(_)) => error(StatusCode::NOT_FOUND, "No such room running here"),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "The room did not answer in time",
        ),
    }
}

/// The page: plain HTML and script, no build step, no external resources.
const PAGE: &str = include_str!("monitor.html");
