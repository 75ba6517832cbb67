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
use crate::context::{Cx, Effects, HttpCx, Outbound, RoomScope, TransferOut};
use crate::handler::{ConnectInfo, Handlers, Intercept, Refusal, Rejection};
use crate::http::{RoomRequest, RoomResponse};
use crate::pattern::Params;
use crate::registry::{RoomHandle, Rooms};
use crate::room::Room;
use crate::sync::{InitialBody, SyncScheduler, initial_packet_with, json_frame, sync_packet};

mod held_reads;
mod persist;
mod sessions;
pub(crate) use persist::Persistence;

/// Messages a room actor handles.
pub(crate) enum RoomMsg {
    Connect(
        ConnectRequest,
        oneshot::Sender<Result<ConnId, ConnectError>>,
    ),
    Message(ConnId, Bytes),
    /// A held connection answered a drain (see `held_reads`): whether it delivered messages.
    Drained(ConnId, bool),
    Disconnect(ConnId),
    Request(RoomRequest, oneshot::Sender<RoomResponse>),
    /// Save everything, close every connection (1001) and stop.
    Shutdown(oneshot::Sender<()>),
    /// Run the room's connect guards.
    Admit(Arc<ConnectInfo>, oneshot::Sender<Result<(), Refusal>>),
    /// Run a closure on the room state (from a task spawned by a handler).
    Run(RunFn),
    /// A session moved here from another room.
    TransferIn(TransferIn),
}

impl std::fmt::Debug for RoomMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RoomMsg::Connect(..) => "Connect",
            RoomMsg::Message(..) => "Message",
            RoomMsg::Drained(..) => "Drained",
            RoomMsg::Disconnect(..) => "Disconnect",
            RoomMsg::Request(..) => "Request",
            RoomMsg::Shutdown(..) => "Shutdown",
            RoomMsg::Admit(..) => "Admit",
            RoomMsg::Run(..) => "Run",
            RoomMsg::TransferIn(..) => "TransferIn",
        })
    }
}

/// A closure sent to a room; the state arrives as `&mut dyn Any` and is downcast.
pub(crate) type RunFn = Box<dyn FnOnce(&mut dyn std::any::Any, &mut Cx<'_>) + Send>;

/// A session transferred from another room.
#[derive(Debug)]
pub(crate) struct TransferIn {
    pub(crate) token: String,
    pub(crate) private_id: String,
    pub(crate) public_id: String,
    /// The user's persisted view in the source room.
    pub(crate) user: Value,
}

/// A transfer token waiting for its client.
#[derive(Debug, Clone)]
pub(crate) struct Transfer {
    private_id: String,
    created: Instant,
    created_ms: u64,
    public_id: String,
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
    /// A connect guard refused the client.
    #[error("refused: {}", .0.reason)]
    Refused(Refusal),
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
            ConnectError::Refused(refusal) => refusal.close_frame(),
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
    sessions: sessions::SessionTable,
    expiries: BTreeSet<(Instant, String)>,
    sync: SyncScheduler,
    rng: fastrand::Rng,
    effects: Effects,
    slow: Vec<ConnId>,
    persist: persist::Persistence,
    party: Arc<str>,
    rooms: Rooms,
    me: RoomHandle,
    /// Automatic sync (spec 6.9); when off, patches wait in `manual_pending`.
    auto_sync: bool,
    manual_pending: Vec<Value>,
    /// Connections waiting for their first packet while automatic sync is off.
    pending_initial: Vec<ConnId>,
    transfers: HashMap<String, Transfer>,
    /// Message handlers changed state that is not flushed yet (see `handle_batch`).
    unflushed: bool,
    /// A batch of mailbox messages is being handled (see `handle_batch`).
    in_batch: bool,
    /// Clients that joined during the current batch and wait for their first packet.
    batch_initial: Vec<ConnId>,
    /// Connections whose reads are held until the end of each sync window.
    held_reads: held_reads::HeldReads,
    /// Since when the room has had no connection (for unloading).
    idle_since: Option<Instant>,
}

/// Identity and surroundings of a room instance.
pub(crate) struct ActorIds {
    pub(crate) party: Arc<str>,
    pub(crate) id: Arc<str>,
    pub(crate) params: Params,
    pub(crate) config: Arc<RoomConfig>,
    pub(crate) rng: fastrand::Rng,
    pub(crate) rooms: Rooms,
    pub(crate) me: RoomHandle,
}

/// Build the [`RoomScope`] of a handler from the actor's fields (a macro, so the borrows stay
/// field by field).
macro_rules! scope {
    ($s:ident) => {
        RoomScope {
            room_id: &$s.id,
            party: &$s.party,
            params: &$s.params,
            rng: &mut $s.rng,
            effects: &mut $s.effects,
            rooms: &$s.rooms,
            me: &$s.me,
            auto_sync: $s.auto_sync,
        }
    };
}

/// What the actor needs from the registry to unload itself.
pub(crate) struct Unload {
    pub(crate) live: Arc<std::sync::Mutex<HashMap<String, crate::registry::RoomHandle>>>,
    pub(crate) tx: mpsc::Sender<RoomMsg>,
}

impl<R: Room> RoomActor<R> {
    pub(crate) fn new(
        ids: ActorIds,
        handlers: Arc<Handlers<R>>,
        persist: persist::Persistence,
    ) -> Self {
        let ActorIds {
            party,
            id,
            params,
            config,
            rng,
            rooms,
            me,
        } = ids;
        let state = R::init(&id, &params);
        Self {
            persist,
            idle_since: Some(Instant::now()),
            sync: SyncScheduler::new(config.throttle_sync),
            auto_sync: config.auto_sync,
            id,
            party,
            params,
            config,
            handlers,
            tracker: Tracker::new(state),
            conns: indexmap::IndexMap::new(),
            next_conn: 1,
            sessions: sessions::SessionTable::default(),
            expiries: BTreeSet::new(),
            rng,
            effects: Effects::default(),
            slow: Vec::new(),
            rooms,
            me,
            manual_pending: Vec::new(),
            pending_initial: Vec::new(),
            transfers: HashMap::new(),
            unflushed: false,
            in_batch: false,
            batch_initial: Vec::new(),
            held_reads: held_reads::HeldReads::default(),
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
                msg = mailbox.recv(), if shutdown.is_none() => {
                    let Some(msg) = msg else { break };
                    shutdown = self.handle_batch(msg, &mut mailbox).await;
                }
                done = self.persist.written() => self.on_written(done),
                () = sleep_until(deadline) => self.on_timer(!mailbox.is_empty()),
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

    /// Handle `first` and the messages already waiting behind it before flushing
    /// (opportunistic batching: a burst becomes one patch, a quiet room still flushes after
    /// each message). Returns the reply of a shutdown request met on the way.
    async fn handle_batch(
        &mut self,
        first: RoomMsg,
        mailbox: &mut mpsc::Receiver<RoomMsg>,
    ) -> Option<oneshot::Sender<()>> {
        let mut shutdown = None;
        let mut next = Some(first);
        let mut budget = self.config.batch_messages;
        let mut yields = 0;
        self.in_batch = true;
        while let Some(msg) = next.take() {
            if let RoomMsg::Shutdown(reply) = msg {
                self.flush_state();
                self.persist.due_now();
                shutdown = Some(reply);
                break;
            }
            let batchable = matches!(
                msg,
                RoomMsg::Message(..)
                    | RoomMsg::Drained(..)
                    | RoomMsg::Connect(..)
                    | RoomMsg::Admit(..)
                    | RoomMsg::Disconnect(..)
            );
            if self.unflushed && !batchable {
                // Requests and the rest see (and are ordered after) the changes of the
                // messages before them.
                self.flush_state();
            }
            self.handle(msg);
            budget -= 1;
            if budget == 0 {
                break;
            }
            next = mailbox.try_recv().ok();
            // With a sync throttle, patches are merged anyway: no yield.
            if next.is_none()
                && self.unflushed
                && yields < MAX_BATCH_YIELDS
                && self.config.throttle_sync.is_zero()
            {
                // Let the runtime poll the sockets: messages that have already arrived join
                // this batch. When idle, the first yield finds nothing and costs a few µs;
                // under load, each one that finds more allows another.
                tokio::task::yield_now().await;
                next = mailbox.try_recv().ok();
                yields = if next.is_some() {
                    yields + 1
                } else {
                    MAX_BATCH_YIELDS
                };
            }
        }
        self.in_batch = false;
        // Inside a sync throttle window the changes stay in the tracker until the window ends
        // (one flush per window instead of one per message); otherwise they are flushed now.
        // Clients that joined in the batch get their first packet now either way.
        let flushed = self.flush_at_window_end(Instant::now());
        if !flushed && self.unflushed && !self.batch_initial.is_empty() {
            self.flush_state();
        }
        self.drop_slow();
        shutdown
    }

    fn handle(&mut self, msg: RoomMsg) {
        match msg {
            RoomMsg::Connect(req, reply) => {
                let result = self.on_connect(req);
                let _ = reply.send(result);
            }
            RoomMsg::Message(conn, text) => self.on_message(conn, &text),
            RoomMsg::Drained(conn, delivered) => self.on_drained(conn, delivered),
            RoomMsg::Disconnect(conn) => self.on_disconnect(conn),
            RoomMsg::Request(req, reply) => {
                let response = self.on_request(&req);
                let _ = reply.send(response);
            }
            RoomMsg::Shutdown(reply) => {
                let _ = reply.send(());
            }
            RoomMsg::Admit(info, reply) => {
                let _ = reply.send(self.admit(&info));
            }
            RoomMsg::Run(f) => {
                let mut cx = Cx {
                    scope: scope!(self),
                    conn: None,
                };
                let state: &mut dyn std::any::Any = self.tracker.state_mut();
                if catch_unwind(AssertUnwindSafe(|| f(state, &mut cx))).is_err() {
                    tracing::error!(room = %self.id, "room update panicked");
                }
                self.flush_state();
                self.after_handler();
            }
            RoomMsg::TransferIn(t) => self.transfer_in(t),
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
            self.sync
                .window_end()
                .filter(|_| self.unflushed && !self.held_reads.draining()),
            self.held_reads
                .deadline(self.sync.window_end(), self.sync.throttle()),
            self.expiries.first().map(|(t, _)| *t),
            self.persist.deadline(),
            unload,
            self.transfers
                .values()
                .map(|t| t.created + self.config.transfer_expiry)
                .min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Flush the changes kept for the end of the throttle window (see `handle_batch`), if it is
    /// over: held connections are drained first, and the flush waits for their messages (see
    /// `held_reads`). Returns whether it flushed.
    fn flush_at_window_end(&mut self, now: Instant) -> bool {
        if !self.unflushed || self.sync.window_open(now) {
            return false;
        }
        self.start_drain_if_due(now);
        if self.held_reads.draining() {
            return false;
        }
        self.flush_state();
        true
    }

    /// What fell due. `mail_waiting`: the mailbox is not empty (drain answers may be in it).
    fn on_timer(&mut self, mail_waiting: bool) {
        let now = Instant::now();
        self.drive_held_reads(now, mail_waiting);
        self.flush_at_window_end(now);
        if let Some(patch) = self.sync.fire(now) {
            self.send_patch(&patch);
        }
        while let Some((at, _)) = self.expiries.first() {
            if *at > now {
                break;
            }
            let (_, private_id) = self.expiries.pop_first().expect("checked non-empty");
            self.expire_session(&private_id, now);
        }
        self.prune_transfers();
        self.drop_slow();
    }

    fn should_unload(&self) -> bool {
        match (self.idle_since, self.config.idle_timeout) {
            (Some(since), Some(after)) => {
                self.conns.is_empty()
                    && Instant::now() >= since + after
                    && self.persist.is_idle()
                    && self.sync.deadline().is_none()
                    && !self.unflushed
            }
            _ => false,
        }
    }

    // ----- connections -------------------------------------------------------------------

    /// Run the connect guards that need the room state.
    fn admit(&self, info: &ConnectInfo) -> Result<(), Refusal> {
        let state = self.tracker.state();
        for guard in &self.handlers.connect_guards {
            match catch_unwind(AssertUnwindSafe(|| guard(state, info))) {
                Ok(Ok(())) => {}
                Ok(Err(refusal)) => return Err(refusal),
                Err(_) => {
                    tracing::error!(room = %self.id, "connect guard panicked");
                    return Err(Refusal::forbidden("guard failed"));
                }
            }
        }
        Ok(())
    }

    fn on_connect(&mut self, req: ConnectRequest) -> Result<ConnId, ConnectError> {
        if !req.admitted && !self.handlers.connect_guards.is_empty() {
            self.admit(&req.info()).map_err(ConnectError::Refused)?;
        }
        self.prune_transfers();
        let conn_id = self.next_conn;
        self.next_conn += 1;
        let has_users = R::USERS_FIELD.is_some();
        let mut private_id = req
            .session_id
            .clone()
            .unwrap_or_else(|| format!("{}:{conn_id}", random_id(&mut self.rng, 16)));
        // A transfer token adopts the session prepared by the source room (single use).
        if let Some(token) = req
            .query
            .iter()
            .find(|(k, _)| k == "transferToken")
            .map(|(_, v)| v.clone())
            && let Some(transfer) = self.take_transfer(&token)
        {
            private_id = transfer.private_id.clone();
            if has_users && !self.sessions.contains_key(&private_id) {
                // The session was removed meanwhile: re-create it for the transferred user.
                self.sessions.insert(
                    private_id.clone(),
                    Session {
                        public_id: transfer.public_id,
                        live: 0,
                        created_ms: now_ms(),
                        disconnected: None,
                        disconnected_ms: None,
                    },
                );
            }
        }

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

        let ConnectRequest {
            query,
            headers,
            out,
            ..
        } = req;
        let info = Arc::new(ConnInfo {
            id: conn_id,
            private_id,
            public_id: public_id.clone(),
            query,
            headers,
        });
        if let Some(hook) = &self.handlers.on_join {
            let mut cx = Cx {
                scope: scope!(self),
                conn: Some(&info),
            };
            let state = self.tracker.state_mut();
            if catch_unwind(AssertUnwindSafe(|| hook(state, &mut cx))).is_err() {
                tracing::error!(room = %self.id, "on_join panicked");
            }
        }
        // Others see the join as one coalesced patch (with the other joins of the same batch);
        // the new client gets the full snapshot. When the patch is flushed now, the new client
        // is not listed yet; when it is flushed at the end of the batch, the new client gets
        // it too, which changes nothing for it.
        self.flush_or_defer();
        let conn = Conn::new(info, out);
        self.conns.insert(conn_id, conn);
        if !self.auto_sync {
            self.pending_initial.push(conn_id);
        } else if self.in_batch && self.effects.is_empty() {
            // Sent when the batch is flushed, with the other joins of the batch: one snapshot
            // serialized once instead of one per join (see `flush_state`).
            self.batch_initial.push(conn_id);
            self.unflushed = true;
        } else {
            self.send_initial(conn_id);
        }
        self.after_handler();
        Ok(conn_id)
    }

    /// The first packet of a connection: its public id and the full synced state.
    fn send_initial(&mut self, conn_id: ConnId) {
        self.send_initials(vec![conn_id]);
    }

    /// First packets for `conns`: the snapshot is taken and serialized once for all of them;
    /// only the `pId` differs.
    fn send_initials(&mut self, conns: Vec<ConnId>) {
        let conns: Vec<ConnId> = conns
            .into_iter()
            .filter(|c| self.conns.contains_key(c))
            .collect();
        if conns.is_empty() {
            return;
        }
        let snapshot = self.tracker.sync_snapshot();
        let body = InitialBody::new(&snapshot);
        for conn_id in conns {
            let Some(conn) = self.conns.get(&conn_id) else {
                continue;
            };
            let public_id = conn.info.public_id.clone();
            let frame = initial_packet_with(&public_id, &body);
            let envelope = self.handlers.interceptor.as_ref().map(|_| {
                let mut value = serde_json::Map::new();
                value.insert("pId".into(), Value::String(public_id));
                if let Value::Object(snap) = &snapshot {
                    for (k, val) in snap {
                        value.entry(k.clone()).or_insert_with(|| val.clone());
                    }
                }
                json!({"type": "sync", "value": value})
            });
            self.deliver(Some(conn_id), envelope.as_ref(), frame);
        }
    }

    fn on_disconnect(&mut self, conn_id: ConnId) {
        let Some(conn) = self.conns.shift_remove(&conn_id) else {
            return;
        };
        self.forget_held(&conn.reads);
        self.pending_initial.retain(|c| *c != conn_id);
        self.batch_initial.retain(|c| *c != conn_id);
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
                scope: scope!(self),
                conn: Some(&info),
            };
            let state = self.tracker.state_mut();
            if catch_unwind(AssertUnwindSafe(|| hook(state, &mut cx))).is_err() {
                tracing::error!(room = %self.id, "on_leave panicked");
            }
        }
        if has_flag {
            self.flush_or_defer();
        } else {
            // The message follows the changes made before it.
            self.flush_state();
            let packet = json!({"type":"user_disconnected","value":{"publicId": info.public_id}});
            self.deliver(None, Some(&packet), json_frame(&packet));
        }
        self.after_handler();
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
        let still_used = self.sessions.public_in_use(&public_id);
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
            let taken = self.sessions.public_in_use(&id)
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

    // ----- session transfer ---------------------------------------------------------------

    /// Source side: hand the user's session to the target room (after the handler that asked).
    fn transfer_out(&mut self, t: TransferOut) {
        let user = self
            .tracker
            .state()
            .users()
            .and_then(|u| u.get(&t.public_id))
            .map(partyroom_state::Tracked::persist_view)
            .unwrap_or(Value::Null);
        let msg = RoomMsg::TransferIn(TransferIn {
            token: t.token,
            private_id: t.private_id,
            public_id: t.public_id,
            user,
        });
        // `try_send` keeps the order: the transfer is queued in the target before the client
        // can even learn its token.
        if t.target.tx.try_send(msg).is_err() {
            tracing::warn!(room = %self.id, target = %t.target.id(), "session transfer dropped: target busy or gone");
        }
    }

    /// Target side: prepare the session and the user, and remember the token.
    fn transfer_in(&mut self, t: TransferIn) {
        let now = Instant::now();
        if R::USERS_FIELD.is_some() {
            let mut snapshot = t.user;
            if let Some(hook) = &self.handlers.on_session_restore {
                hook(&t.public_id, &mut snapshot);
            }
            let mut user = <R::User as Default>::default();
            if !snapshot.is_null()
                && let Err(err) = partyroom_state::load_into(&mut user, &snapshot)
            {
                tracing::warn!(room = %self.id, %err, "transferred user does not fit; starting fresh");
            }
            user.set_connected(false);
            if let Some(users) = self.tracker.state_mut().users_mut() {
                users.insert(t.public_id.clone(), user);
            }
            let wall = now_ms();
            // Not connected yet: if the client never comes, the session expires as usual.
            self.sessions.insert(
                t.private_id.clone(),
                Session {
                    public_id: t.public_id.clone(),
                    live: 0,
                    created_ms: wall,
                    disconnected: Some(now),
                    disconnected_ms: Some(wall),
                },
            );
            if let Some(after) = self.config.session_expiry {
                self.expiries.insert((now + after, t.private_id.clone()));
            }
            self.persist.session_changed(&t.private_id);
        }
        self.persist.transfer_changed(&t.token);
        self.transfers.insert(
            t.token,
            Transfer {
                private_id: t.private_id,
                public_id: t.public_id,
                created: now,
                created_ms: now_ms(),
            },
        );
        self.flush_state();
        self.after_handler();
    }

    /// Forget expired transfer tokens (in memory and in storage).
    fn prune_transfers(&mut self) {
        let expiry = self.config.transfer_expiry;
        let expired: Vec<String> = self
            .transfers
            .iter()
            .filter(|(_, t)| t.created.elapsed() >= expiry)
            .map(|(k, _)| k.clone())
            .collect();
        for token in expired {
            self.transfers.remove(&token);
            self.persist.transfer_changed(&token);
        }
    }

    /// Consume a token: single use, ignored once expired.
    fn take_transfer(&mut self, token: &str) -> Option<Transfer> {
        let t = self.transfers.remove(token)?;
        self.persist.transfer_changed(token);
        (t.created.elapsed() < self.config.transfer_expiry).then_some(t)
    }

    // ----- actions ------------------------------------------------------------------------

    /// Flush now, or leave the changes for the end of the batch of mailbox messages being
    /// handled (see `handle_batch`) when nothing but state changes was asked for.
    fn flush_or_defer(&mut self) {
        if self.in_batch && self.effects.is_empty() {
            self.unflushed = true;
        } else {
            self.flush_state();
        }
    }

    fn on_message(&mut self, conn_id: ConnId, text: &[u8]) {
        self.consider_holding(conn_id);
        if let Err(rejection) = self.run_action(conn_id, text) {
            tracing::debug!(room = %self.id, conn = conn_id, %rejection, "message dropped");
        }
        // Messages and sync switches must follow the changes made before them: with any,
        // this flushes now.
        self.flush_or_defer();
        self.after_handler();
    }

    fn run_action(&mut self, conn_id: ConnId, text: &[u8]) -> Result<(), Rejection> {
        if text.len() > self.config.max_message_bytes {
            return Err(Rejection::TooLarge(text.len()));
        }
        let Some(conn) = self.conns.get(&conn_id) else {
            return Ok(());
        };
        let info = conn.info.clone();
        // Only a JSON object is an envelope (serde would also accept a JSON array).
        if text.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(Rejection::Malformed("not a JSON object".into()));
        }
        let envelope: Envelope<'_> =
            serde_json::from_slice(text).map_err(|e| Rejection::Malformed(e.to_string()))?;
        let handlers = &self.handlers;
        let mut cx = Cx {
            scope: scope!(self),
            conn: Some(&info),
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
            scope: scope!(self),
            request: req,
            route_params: params,
        };
        let state = self.tracker.state_mut();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            for guard in handlers.request_guards.iter().chain(&route.guards) {
                guard(state, &cx)?;
            }
            Ok((route.handler)(state, &mut cx))
        }));
        let response = match outcome {
            Ok(Ok(r) | Err(r)) => r,
            Err(_) => {
                tracing::error!(room = %self.id, path = %req.path, "request handler panicked");
                RoomResponse::server_error(None)
            }
        };
        self.flush_state();
        self.after_handler();
        response
    }

    // ----- delivery -----------------------------------------------------------------------

    /// Find what handlers changed; hand the patch to the sync scheduler, or keep it for
    /// `apply_sync` while automatic sync is off.
    fn flush_state(&mut self) {
        self.unflushed = false;
        let flush = self.tracker.flush();
        self.persist
            .rows_changed(flush.persist.rows(), self.config.throttle_storage);
        // Clients that joined in this batch get the snapshot instead of the patch.
        let joined = std::mem::take(&mut self.batch_initial);
        if let Some(patch) = flush.sync {
            if self.auto_sync {
                let at = self.held_reads.flush_time(Instant::now());
                for ready in self.sync.push(patch, at) {
                    self.send_patch_except(&ready, &joined);
                }
            } else {
                match self.manual_pending.last_mut() {
                    Some(last) if partyroom_state::patch::can_merge(last, &patch) => {
                        partyroom_state::patch::merge_patch(last, patch);
                    }
                    _ => self.manual_pending.push(patch),
                }
            }
        }
        if !joined.is_empty() {
            self.send_initials(joined);
        }
    }

    /// Apply what a handler asked for besides state changes: sync switches, transfers, and
    /// messages (after the state patch the handler produced).
    fn after_handler(&mut self) {
        let effects = std::mem::take(&mut self.effects);
        for t in effects.transfers {
            self.transfer_out(t);
        }
        if let Some(on) = effects.auto_sync
            && on != self.auto_sync
        {
            self.auto_sync = on;
            if on {
                // Switching back on sends what waited (the original kept it back until the
                // next apply_sync, leaving joined clients without a first packet).
                self.apply_sync();
            }
        }
        if effects.apply_sync {
            self.apply_sync();
        }
        for out in effects.outbound {
            match out {
                Outbound::All(v) => {
                    let frame = json_frame(&v);
                    self.deliver(None, Some(&v), frame);
                }
                Outbound::To(id, v) => {
                    let frame = json_frame(&v);
                    self.deliver(Some(id), Some(&v), frame);
                }
            }
        }
    }

    /// Spec 6.9: send the changes made while automatic sync was off (or the full state when
    /// there are none) to everyone, and their first packet to the clients that joined
    /// meanwhile. A waiting client gets the full state with its `pId` (the original sent it
    /// only the pending delta, so it never learned the rest of the state).
    fn apply_sync(&mut self) {
        let pending = std::mem::take(&mut self.manual_pending);
        let waiting = std::mem::take(&mut self.pending_initial);
        let skip: Vec<ConnId> = waiting.clone();
        if pending.is_empty() {
            let snapshot = self.tracker.sync_snapshot();
            self.send_patch_except(&snapshot, &skip);
        } else {
            for patch in &pending {
                self.send_patch_except(patch, &skip);
            }
        }
        self.send_initials(waiting);
    }

    fn send_patch(&mut self, patch: &Value) {
        self.send_patch_except(patch, &[]);
    }

    fn send_patch_except(&mut self, patch: &Value, skip: &[ConnId]) {
        let frame = sync_packet(patch);
        let envelope = self
            .handlers
            .interceptor
            .as_ref()
            .map(|_| json!({"type": "sync", "value": patch}));
        if skip.is_empty() {
            self.deliver(None, envelope.as_ref(), frame);
        } else {
            let targets: Vec<ConnId> = self
                .conns
                .keys()
                .copied()
                .filter(|c| !skip.contains(c))
                .collect();
            for id in targets {
                self.deliver(Some(id), envelope.as_ref(), frame.clone());
            }
        }
    }

    /// Queue a packet for one connection or all. The bytes are built once and shared; with an
    /// interceptor, each connection's decision is asked with the envelope, and only replaced
    /// packets are serialized again.
    fn deliver(&mut self, to: Option<ConnId>, envelope: Option<&Value>, frame: Bytes) {
        let state = self.tracker.state();
        let interceptor = self.handlers.interceptor.as_ref();
        let mut push = |id: ConnId, conn: &Conn| {
            let out = match (interceptor, envelope) {
                (Some(i), Some(env)) => {
                    match catch_unwind(AssertUnwindSafe(|| i(state, &conn.info, env))) {
                        Ok(Intercept::Keep) => frame.clone(),
                        Ok(Intercept::Drop) => return,
                        Ok(Intercept::Replace(v)) => json_frame(&v),
                        Err(_) => {
                            tracing::error!("packet interceptor panicked; packet sent unchanged");
                            frame.clone()
                        }
                    }
                }
                _ => frame.clone(),
            };
            if conn.push(out) == Push::Full {
                self.slow.push(id);
            }
        };
        match to {
            Some(id) => {
                if let Some(conn) = self.conns.get(&id) {
                    push(id, conn);
                }
            }
            None => {
                for (id, conn) in &self.conns {
                    push(*id, conn);
                }
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

/// How many times a batch of messages may yield to the runtime to collect more (see `handle_batch`).
const MAX_BATCH_YIELDS: u32 = 8;

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

/// An unguessable token (128 bits from the OS), for session transfers.
pub(crate) fn secure_token() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: fall back to a seeded generator rather than failing the handler.
        let mut rng = fastrand::Rng::new();
        rng.fill(&mut bytes);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
