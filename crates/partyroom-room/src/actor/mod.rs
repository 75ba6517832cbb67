//! The room actor: one task per live room instance, owning its state, sessions and
//! connections. Everything that touches a room goes through its mailbox.

use std::collections::{BTreeSet, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, StatusCode};
use partyroom_state::{State, Tracker};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::RoomConfig;
use crate::conn::{CloseFrame, Conn, ConnId, ConnInfo, ConnectRequest, Push};
use crate::context::{Cx, HttpCx, Outbound, RoomScope};
use crate::handler::{Handlers, Rejection};
use crate::http::{RoomRequest, RoomResponse};
use crate::pattern::Params;
use crate::room::Room;
use crate::sync::{SyncScheduler, initial_packet, json_frame, sync_packet};

mod persist;
pub(crate) use persist::Persistence;

/// Messages a room actor handles.
#[derive(Debug)]
pub(crate) enum RoomMsg {
    Connect(
        ConnectRequest,
        oneshot::Sender<Result<ConnId, ConnectError>>,
    ),
    Message(ConnId, Bytes),
    Disconnect(ConnId),
    Request(RoomRequest, oneshot::Sender<RoomResponse>),
    /// Save everything, close every connection (1001) and stop.
    Shutdown(oneshot::Sender<()>),
}

/// Why a connection was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The room has `max_users` users already.
    #[error("room is full")]
    RoomFull,
    /// The room instance stopped.
    #[error("room is gone")]
    RoomGone,
}

impl ConnectError {
    /// The close frame to send to the refused client.
    pub fn close_frame(&self) -> CloseFrame {
        match self {
            ConnectError::RoomFull => CloseFrame {
                code: 4003,
                reason: "room is full".into(),
            },
            ConnectError::RoomGone => CloseFrame {
                code: 1011,
                reason: "room is unavailable".into(),
            },
        }
    }
}

/// The envelope of a client message: `{"action": "...", "value": ...}`.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    action: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    value: Option<&'a RawValue>,
}

#[derive(Debug)]
struct Session {
    public_id: String,
    live: u32,
    created_ms: u64,
    /// When the last connection closed (monotonic, for expiry) ...
    disconnected: Option<Instant>,
    /// ... and the same moment in wall-clock milliseconds (what is stored).
    disconnected_ms: Option<u64>,
}

pub(crate) struct RoomActor<R: Room> {
    id: Arc<str>,
    params: Params,
    config: Arc<RoomConfig>,
    handlers: Arc<Handlers<R>>,
    tracker: Tracker<R>,
    conns: indexmap::IndexMap<ConnId, Conn>,
    next_conn: ConnId,
    sessions: HashMap<String, Session>,
    expiries: BTreeSet<(Instant, String)>,
    sync: SyncScheduler,
    rng: fastrand::Rng,
    outbox: Vec<Outbound>,
    slow: Vec<ConnId>,
    persist: persist::Persistence,
    /// Since when the room has had no connection (for unloading).
    idle_since: Option<Instant>,
}

/// What the actor needs from the registry to unload itself.
pub(crate) struct Unload {
    pub(crate) live: Arc<std::sync::Mutex<HashMap<String, crate::registry::RoomHandle>>>,
    pub(crate) tx: mpsc::Sender<RoomMsg>,
}

impl<R: Room> RoomActor<R> {
    pub(crate) fn new(
        id: Arc<str>,
        params: Params,
        config: Arc<RoomConfig>,
        handlers: Arc<Handlers<R>>,
        rng: fastrand::Rng,
        persist: persist::Persistence,
    ) -> Self {
        let state = R::init(&id, &params);
        Self {
            persist,
            idle_since: Some(Instant::now()),
            sync: SyncScheduler::new(config.throttle_sync),
            id,
            params,
            config,
            handlers,
            tracker: Tracker::new(state),
            conns: indexmap::IndexMap::new(),
            next_conn: 1,
            sessions: HashMap::new(),
            expiries: BTreeSet::new(),
            rng,
            outbox: Vec::new(),
            slow: Vec::new(),
        }
    }

    pub(crate) async fn run(mut self, mut mailbox: mpsc::Receiver<RoomMsg>, unload: Unload) {
        if let Err(err) = self.restore().await {
            // Never serve (and later overwrite) a room whose stored state could not be read:
            // stop; the next request starts a new instance that tries again.
            tracing::error!(room = %self.id, %err, "cannot restore room state");
            mailbox.close();
            return;
        }
        let mut shutdown: Option<oneshot::Sender<()>> = None;
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                msg = mailbox.recv(), if shutdown.is_none() => match msg {
                    Some(RoomMsg::Shutdown(reply)) => {
                        self.flush_state();
                        self.persist.due_now();
                        shutdown = Some(reply);
                    }
                    Some(msg) => self.handle(msg),
                    None => break,
                },
                done = self.persist.written() => self.on_written(done),
                () = sleep_until(deadline) => self.on_timer(),
            }
            self.maybe_save();
            if let Some(reply) = shutdown.take() {
                if self.persist.is_idle() {
                    for (_, mut conn) in self.conns.drain(..) {
                        conn.close(CloseFrame::going_away());
                    }
                    let _ = reply.send(());
                    break;
                }
                shutdown = Some(reply);
            } else if self.should_unload() && unload.try_remove(&self.id, &mailbox) {
                tracing::debug!(room = %self.id, "unloaded idle room");
                break;
            }
        }
        mailbox.close();
        // Messages that raced with the unload are dropped; their senders see `RoomGone` and
        // retry on a new instance.
        while mailbox.try_recv().is_ok() {}
        for (_, mut conn) in self.conns.drain(..) {
            conn.close(CloseFrame::going_away());
        }
    }

    fn handle(&mut self, msg: RoomMsg) {
        match msg {
            RoomMsg::Connect(req, reply) => {
                let result = self.on_connect(req);
                let _ = reply.send(result);
            }
            RoomMsg::Message(conn, text) => self.on_message(conn, &text),
            RoomMsg::Disconnect(conn) => self.on_disconnect(conn),
            RoomMsg::Request(req, reply) => {
                let response = self.on_request(&req);
                let _ = reply.send(response);
            }
            RoomMsg::Shutdown(reply) => {
                let _ = reply.send(());
            }
        }
        self.drop_slow();
        self.idle_since = if self.conns.is_empty() {
            Some(Instant::now())
        } else {
            None
        };
    }

    fn next_deadline(&self) -> Option<Instant> {
        let unload = match (self.idle_since, self.config.idle_timeout) {
            (Some(since), Some(after)) => Some(since + after),
            _ => None,
        };
        [
            self.sync.deadline(),
            self.expiries.first().map(|(t, _)| *t),
            self.persist.deadline(),
            unload,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        if let Some(patch) = self.sync.fire(now) {
            self.broadcast(sync_packet(&patch));
        }
        while let Some((at, _)) = self.expiries.first() {
            if *at > now {
                break;
            }
            let (_, private_id) = self.expiries.pop_first().expect("checked non-empty");
            self.expire_session(&private_id, now);
        }
        self.drop_slow();
    }

    fn should_unload(&self) -> bool {
        match (self.idle_since, self.config.idle_timeout) {
            (Some(since), Some(after)) => {
                self.conns.is_empty()
                    && Instant::now() >= since + after
                    && self.persist.is_idle()
                    && self.sync.deadline().is_none()
            }
            _ => false,
        }
    }

    // ----- connections -------------------------------------------------------------------

    fn on_connect(&mut self, req: ConnectRequest) -> Result<ConnId, ConnectError> {
        let conn_id = self.next_conn;
        self.next_conn += 1;
        let has_users = R::USERS_FIELD.is_some();
        let private_id = req
            .session_id
            .clone()
            .unwrap_or_else(|| format!("{}:{conn_id}", random_id(&mut self.rng, 16)));

        let public_id = if has_users {
            match self.sessions.get(&private_id) {
                Some(s) => s.public_id.clone(),
                None => {
                    if self
                        .config
                        .max_users
                        .is_some_and(|max| self.sessions.len() >= max)
                    {
                        return Err(ConnectError::RoomFull);
                    }
                    let public_id = self.new_public_id();
                    self.sessions.insert(
                        private_id.clone(),
                        Session {
                            public_id: public_id.clone(),
                            live: 0,
                            created_ms: now_ms(),
                            disconnected: None,
                            disconnected_ms: None,
                        },
                    );
                    public_id
                }
            }
        } else {
            if self
                .config
                .max_users
                .is_some_and(|max| self.conns.len() >= max)
            {
                return Err(ConnectError::RoomFull);
            }
            self.new_public_id()
        };

        if has_users {
            let session = self
                .sessions
                .get_mut(&private_id)
                .expect("session ensured above");
            session.live += 1;
            session.disconnected = None;
            session.disconnected_ms = None;
            self.persist.session_changed(&private_id);
            let users = self
                .tracker
                .state_mut()
                .users_mut()
                .expect("room has a users field");
            // A session whose user entry is missing gets a fresh user (quirk Q15 fixed).
            let user = users.get_or_insert_with(&public_id, <R::User as Default>::default);
            user.set_connected(true);
        }

        let info = ConnInfo {
            id: conn_id,
            private_id,
            public_id: public_id.clone(),
            query: req.query,
            headers: req.headers,
        };
        if let Some(hook) = &self.handlers.on_join {
            let mut cx = Cx {
                scope: RoomScope {
                    room_id: &self.id,
                    params: &self.params,
                    rng: &mut self.rng,
                    outbox: &mut self.outbox,
                },
                conn: Some(&info),
            };
            let state = self.tracker.state_mut();
            if catch_unwind(AssertUnwindSafe(|| hook(state, &mut cx))).is_err() {
                tracing::error!(room = %self.id, "on_join panicked");
            }
        }
        // Others see the join as one coalesced patch; the new client is not listed yet and
        // gets the full snapshot instead.
        self.flush_state();
        let first = initial_packet(&public_id, &self.tracker.sync_snapshot());
        let conn = Conn {
            info,
            frames: req.frames,
            close: Some(req.close),
        };
        if conn.push(first) == Push::Full {
            self.slow.push(conn_id);
        }
        self.conns.insert(conn_id, conn);
        self.deliver_outbox();
        Ok(conn_id)
    }

    fn on_disconnect(&mut self, conn_id: ConnId) {
        let Some(conn) = self.conns.shift_remove(&conn_id) else {
            return;
        };
        if R::USERS_FIELD.is_none() {
            return;
        }
        let info = conn.info;
        let Some(session) = self.sessions.get_mut(&info.private_id) else {
            return;
        };
        session.live = session.live.saturating_sub(1);
        if session.live > 0 {
            // Another tab of the same session is still open.
            return;
        }
        let now = Instant::now();
        session.disconnected = Some(now);
        session.disconnected_ms = Some(now_ms());
        self.persist.session_changed(&info.private_id);
        if let Some(after) = self.config.session_expiry {
            self.expiries.insert((now + after, info.private_id.clone()));
        }
        let has_flag = {
            let users = self.tracker.state_mut().users_mut().expect("users field");
            match users.get_mut(&info.public_id) {
                Some(user) => user.set_connected(false),
                None => return,
            }
        };
        if let Some(hook) = &self.handlers.on_leave {
            let mut cx = Cx {
                scope: RoomScope {
                    room_id: &self.id,
                    params: &self.params,
                    rng: &mut self.rng,
                    outbox: &mut self.outbox,
                },
                conn: Some(&info),
            };
            let state = self.tracker.state_mut();
            if catch_unwind(AssertUnwindSafe(|| hook(state, &mut cx))).is_err() {
                tracing::error!(room = %self.id, "on_leave panicked");
            }
        }
        self.flush_state();
        if !has_flag {
            self.broadcast(json_frame(
                &json!({"type":"user_disconnected","value":{"publicId": info.public_id}}),
            ));
        }
        self.deliver_outbox();
    }

    fn expire_session(&mut self, private_id: &str, now: Instant) {
        let Some(session) = self.sessions.get(private_id) else {
            return;
        };
        let Some(since) = session.disconnected else {
            return;
        };
        let Some(after) = self.config.session_expiry else {
            return;
        };
        if session.live > 0 {
            return;
        }
        if now < since + after {
            self.expiries.insert((since + after, private_id.to_owned()));
            return;
        }
        let public_id = session.public_id.clone();
        self.sessions.remove(private_id);
        self.persist.session_changed(private_id);
        let still_used = self.sessions.values().any(|s| s.public_id == public_id);
        if !still_used && let Some(users) = self.tracker.state_mut().users_mut() {
            users.remove(&public_id);
        }
        self.flush_state();
    }

    fn new_public_id(&mut self) -> String {
        loop {
            let id = random_id(&mut self.rng, 8);
            // All-digit ids would read as array indices to some clients (quirk Q11).
            if id.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let taken = self.sessions.values().any(|s| s.public_id == id)
                || self
                    .tracker
                    .state()
                    .users()
                    .is_some_and(|u| u.contains_key(&id));
            if !taken {
                return id;
            }
        }
    }

    // ----- actions ------------------------------------------------------------------------

    fn on_message(&mut self, conn_id: ConnId, text: &[u8]) {
        if let Err(rejection) = self.run_action(conn_id, text) {
            tracing::debug!(room = %self.id, conn = conn_id, %rejection, "message dropped");
        }
        self.flush_state();
        self.deliver_outbox();
    }

    fn run_action(&mut self, conn_id: ConnId, text: &[u8]) -> Result<(), Rejection> {
        if text.len() > self.config.max_message_bytes {
            return Err(Rejection::TooLarge(text.len()));
        }
        let Some(conn) = self.conns.get(&conn_id) else {
            return Ok(());
        };
        // Only a JSON object is an envelope (serde would also accept a JSON array).
        if text.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(Rejection::Malformed("not a JSON object".into()));
        }
        let envelope: Envelope<'_> =
            serde_json::from_slice(text).map_err(|e| Rejection::Malformed(e.to_string()))?;
        let handlers = &self.handlers;
        let mut cx = Cx {
            scope: RoomScope {
                room_id: &self.id,
                params: &self.params,
                rng: &mut self.rng,
                outbox: &mut self.outbox,
            },
            conn: Some(&conn.info),
        };
        let action = envelope.action.as_ref();
        let raw_value = envelope.value;
        let value = || match raw_value {
            Some(raw) => serde_json::from_str(raw.get()).unwrap_or(Value::Null),
            None => Value::Null,
        };
        let state = self.tracker.state_mut();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let guarded = !handlers.message_guards.is_empty()
                || handlers.action_guards.contains_key(action)
                || !handlers.fallback_guards.is_empty();
            let value_json = if guarded { value() } else { Value::Null };
            if !handlers
                .message_guards
                .iter()
                .all(|g| g(state, &cx, &value_json))
            {
                return Err(Rejection::Guard);
            }
            if let Some(handler) = handlers.actions.get(action) {
                if let Some(guards) = handlers.action_guards.get(action)
                    && !guards.iter().all(|g| g(state, &cx, &value_json))
                {
                    return Err(Rejection::Guard);
                }
                handler(state, &mut cx, raw_value)
            } else if let Some(fallback) = &handlers.fallback {
                if !handlers.fallback_guards.is_empty() {
                    let call = json!({"action": action, "value": value_json});
                    if !handlers
                        .fallback_guards
                        .iter()
                        .all(|g| g(state, &cx, &call))
                    {
                        return Err(Rejection::Guard);
                    }
                }
                fallback(state, &mut cx, action, value());
                Ok(())
            } else {
                Err(Rejection::UnknownAction(action.to_owned()))
            }
        }));
        match outcome {
            Ok(result) => result,
            Err(_) => {
                tracing::error!(room = %self.id, action, "action handler panicked");
                Ok(())
            }
        }
    }

    // ----- HTTP ---------------------------------------------------------------------------

    fn on_request(&mut self, req: &RoomRequest) -> RoomResponse {
        if req.method == Method::OPTIONS {
            return RoomResponse::json(StatusCode::OK, &json!({}));
        }
        let handlers = &self.handlers;
        let Some((route, params)) = handlers.routes.iter().find_map(|r| {
            if r.method != req.method {
                return None;
            }
            r.path.matches(&req.path).map(|p| (r, p))
        }) else {
            return RoomResponse::not_found(None);
        };
        let mut cx = HttpCx {
            scope: RoomScope {
                room_id: &self.id,
                params: &self.params,
                rng: &mut self.rng,
                outbox: &mut self.outbox,
            },
            request: req,
            route_params: params,
        };
        let state = self.tracker.state_mut();
        let response = match catch_unwind(AssertUnwindSafe(|| (route.handler)(state, &mut cx))) {
            Ok(r) => r,
            Err(_) => {
                tracing::error!(room = %self.id, path = %req.path, "request handler panicked");
                RoomResponse::server_error(None)
            }
        };
        self.flush_state();
        self.deliver_outbox();
        response
    }

    // ----- delivery -----------------------------------------------------------------------

    /// Find what handlers changed and hand the patch to the sync scheduler.
    fn flush_state(&mut self) {
        let flush = self.tracker.flush();
        self.persist
            .rows_changed(flush.persist.rows(), self.config.throttle_storage);
        if let Some(patch) = flush.sync {
            for ready in self.sync.push(patch, Instant::now()) {
                self.broadcast(sync_packet(&ready));
            }
        }
    }

    fn deliver_outbox(&mut self) {
        for out in std::mem::take(&mut self.outbox) {
            match out {
                Outbound::All(v) => self.broadcast(json_frame(&v)),
                Outbound::To(id, v) => {
                    if let Some(conn) = self.conns.get(&id)
                        && conn.push(json_frame(&v)) == Push::Full
                    {
                        self.slow.push(id);
                    }
                }
            }
        }
    }

    /// Queue one frame for every connection: the bytes are shared, not copied.
    fn broadcast(&mut self, frame: Bytes) {
        for (id, conn) in &self.conns {
            if conn.push(frame.clone()) == Push::Full {
                self.slow.push(*id);
            }
        }
    }

    /// Close connections whose queue overflowed and run their leave logic.
    fn drop_slow(&mut self) {
        while let Some(id) = self.slow.pop() {
            if let Some(conn) = self.conns.get_mut(&id) {
                tracing::warn!(room = %self.id, conn = id, "closing a client that does not read");
                conn.close(CloseFrame::too_slow());
                self.on_disconnect(id);
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

const ID_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// `len` characters from `[A-Za-z0-9]`.
pub(crate) fn random_id(rng: &mut fastrand::Rng, len: usize) -> String {
    (0..len)
        .map(|_| ID_CHARS[rng.usize(..ID_CHARS.len())] as char)
        .collect()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
