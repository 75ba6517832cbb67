//! [`Client`]: the handle, and the background task that owns the socket.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use partyroom_state::ClientMirror;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::error::{ConnectError, SendError, WaitError};
use crate::options::ClientOptions;

/// Where the connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// The first connection attempt is under way.
    Connecting,
    /// The socket is open (the first packet may not have arrived yet).
    Open,
    /// The connection dropped or an attempt failed: waiting for the next attempt, or making it.
    Reconnecting,
    /// Closed for good, by [`Client::close`], by dropping every handle, or because the
    /// reconnection attempts allowed by the policy were used up. Never left.
    Closed,
}

/// One frame received from the server, as delivered to [`Subscription`]s and [`Client::on`]
/// listeners. Cheap to clone (the frame is shared). The frame's text is kept as received and
/// parsed into a [`Value`] only when [`Event::value`] or [`Event::frame`] is first called.
#[derive(Debug, Clone)]
pub struct Event {
    inner: Arc<EventInner>,
}

#[derive(Debug)]
struct EventInner {
    kind: Option<String>,
    text: Utf8Bytes,
    frame: OnceLock<Value>,
}

impl Event {
    fn new(kind: Option<String>, text: Utf8Bytes, parsed: Option<Value>) -> Self {
        let frame = OnceLock::new();
        if let Some(v) = parsed {
            let _ = frame.set(v);
        }
        Self {
            inner: Arc::new(EventInner { kind, text, frame }),
        }
    }

    /// The frame's `type` (`sync`, `user_disconnected`, a custom type...), when it is a string.
    pub fn kind(&self) -> Option<&str> {
        self.inner.kind.as_deref()
    }

    /// The frame's `value` (`Null` when absent): what the official client's `on(type, cb)`
    /// passes to `cb`.
    pub fn value(&self) -> &Value {
        self.frame().get("value").unwrap_or(&Value::Null)
    }

    /// The whole frame.
    pub fn frame(&self) -> &Value {
        self.inner
            .frame
            .get_or_init(|| serde_json::from_str(&self.inner.text).unwrap_or(Value::Null))
    }

    /// The frame's JSON text, exactly as received.
    pub fn text(&self) -> &str {
        &self.inner.text
    }
}

/// The parts of a frame the client itself needs, read without building a [`Value`].
#[derive(serde::Deserialize)]
struct FrameHead<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    value: Option<&'a RawValue>,
}

/// `{"type":"<kind>","value":<value>}` as servers write it (compact, `type` first, a kind
/// without escapes): the kind and the value's text, without scanning the value.
fn packet_head(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix("{\"type\":\"")?;
    let end = rest.find('"')?;
    let kind = &rest[..end];
    if kind.contains('\\') {
        return None;
    }
    let value = rest[end + 1..]
        .strip_prefix(",\"value\":")?
        .strip_suffix('}')?;
    Some((kind, value))
}

/// The `pId` of a sync packet's value, read without building a [`Value`].
#[derive(serde::Deserialize)]
struct PidOnly<'a> {
    #[serde(rename = "pId", borrow, default)]
    pid: Option<&'a RawValue>,
}

/// What the client knows of the room: the mirrored state, its public id, and how many times
/// it received a first (`pId`) packet. Read it with [`Client::changes`] or the `wait_*`
/// methods of [`Client`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateView {
    mirror: ClientMirror,
    syncs: u64,
}

impl StateView {
    /// The mirrored state (without `pId`).
    pub fn state(&self) -> &Value {
        self.mirror.state()
    }

    /// The public id of this client in the room (from the last `pId` packet).
    pub fn pid(&self) -> Option<&str> {
        self.mirror.pid()
    }

    /// How many connections delivered their first `pId` packet: 1 after the first connection,
    /// then one more per successful reconnection.
    pub fn syncs(&self) -> u64 {
        self.syncs
    }
}

/// A stream of frames of one `type` (or of all frames), from [`Client::subscribe`].
///
/// Bounded: a subscriber that falls more than the options' `event_capacity` frames behind
/// skips the oldest ones ([`Subscription::skipped`] counts them). Ends (`None`) when the client
/// is closed.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Event>,
    skipped: u64,
}

impl Subscription {
    /// The next frame, or `None` once the client is closed and every frame was read.
    pub async fn recv(&mut self) -> Option<Event> {
        loop {
            match self.rx.recv().await {
                Ok(e) => return Some(e),
                Err(broadcast::error::RecvError::Lagged(n)) => self.skipped += n,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The next frame if one is waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        loop {
            match self.rx.try_recv() {
                Ok(e) => return Some(e),
                Err(broadcast::error::TryRecvError::Lagged(n)) => self.skipped += n,
                Err(_) => return None,
            }
        }
    }

    /// How many frames were skipped because this subscriber was too slow.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

/// A callback registered with [`Client::on`]. Dropping it (or calling [`Listener::off`])
/// removes the callback.
#[derive(Debug)]
#[must_use = "dropping the Listener removes the callback"]
pub struct Listener {
    task: JoinHandle<()>,
}

impl Listener {
    /// Remove the callback (same as dropping the listener).
    pub fn off(self) {}
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug, Default)]
struct Subs {
    by_kind: HashMap<String, broadcast::Sender<Event>>,
    all: Option<broadcast::Sender<Event>>,
}

/// State shared by the handles and the task.
#[derive(Debug)]
struct Shared {
    status: watch::Sender<Status>,
    close: watch::Sender<bool>,
    /// `None` once the task ended: subscriptions then end at once.
    subs: Mutex<Option<Subs>>,
    event_capacity: usize,
}

impl Shared {
    fn subs(&self) -> MutexGuard<'_, Option<Subs>> {
        self.subs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Set the status unless it is already `Closed` (which is final).
    fn set_status(&self, new: Status) {
        self.status.send_if_modified(|s| {
            if *s == Status::Closed || *s == new {
                false
            } else {
                *s = new;
                true
            }
        });
    }

    fn dispatch(&self, event: Event) {
        let mut guard = self.subs();
        let Some(subs) = guard.as_mut() else { return };
        if let Some(kind) = event.kind()
            && let Some(tx) = subs.by_kind.get(kind)
            && tx.send(event.clone()).is_err()
        {
            // No receiver left: forget the channel.
            subs.by_kind.remove(kind);
        }
        if let Some(tx) = &subs.all
            && tx.send(event).is_err()
        {
            subs.all = None;
        }
    }
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    outgoing: mpsc::Sender<String>,
    view: watch::Receiver<StateView>,
    url: String,
    session_id: String,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: nobody can read or send any more.
        self.shared.close.send_replace(true);
        self.shared.set_status(Status::Closed);
    }
}

/// A connection to one room, kept alive across drops and server restarts, with a local
/// mirror of the room state.
///
/// A background tokio task owns the socket: it reconnects with backoff
/// ([`ReconnectPolicy`](crate::ReconnectPolicy)), sends queued messages in order once
/// connected, applies `sync` packets to the mirror exactly like `@signe/sync/client` and
/// dispatches every frame to the subscribers of its `type`. Every connection uses the same
/// session id, so the server gives back the same player (same `pId`, same state) as long as
/// the session has not expired.
///
/// On each (re)connection the server sends a first packet with `pId` and the full state; the
/// mirror is **reset** before that packet is applied, so keys deleted while the client was
/// away disappear (the official client keeps them). A room with manual sync (`autoSync =
/// false`) may send only a delta with `pId`: the mirror then holds that delta, as a freshly
/// started official client would.
///
/// `Client` is a cheap handle (`Clone`); the connection is closed when [`Client::close`] is
/// called or the last handle is dropped. It must be created inside a tokio runtime.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Serialize)]
struct Outgoing<'a, T: Serialize> {
    action: &'a str,
    value: &'a T,
}

impl Client {
    /// Connect and wait for the first sync packet (the one with `pId` and the full state).
    ///
    /// Returns an error, and closes the client, if the first attempt fails (connection refused,
    /// HTTP error such as `404` for an unknown room, handshake timeout), if the server closes
    /// the socket before that packet, or if it has not arrived within the options'
    /// [`connect_timeout`](ClientOptions::connect_timeout). Once connected, later drops are
    /// handled by reconnecting. To ride out a server that is not up yet, use
    /// [`Client::start`] and [`Client::wait_ready`] instead.
    pub async fn connect(options: ClientOptions) -> Result<Client, ConnectError> {
        let timeout = options.connect_timeout;
        let (client, first) = Self::spawn(options);
        let outcome = match tokio::time::timeout(timeout, first).await {
            Ok(Ok(Ok(()))) => return Ok(client),
            Ok(Ok(Err(e))) => e,
            Ok(Err(_)) => ConnectError::Closed,
            Err(_) => ConnectError::Timeout(timeout),
        };
        client.close();
        Err(outcome)
    }

    /// Start connecting and return at once, like `connectionRoom` of the official client:
    /// failures are retried according to the policy, messages are queued meanwhile.
    pub fn start(options: ClientOptions) -> Client {
        Self::spawn(options).0
    }

    fn spawn(options: ClientOptions) -> (Client, oneshot::Receiver<Result<(), ConnectError>>) {
        let url = options.url();
        let (outgoing_tx, outgoing_rx) = mpsc::channel(options.send_buffer);
        let (view_tx, view_rx) = watch::channel(StateView::default());
        let (first_tx, first_rx) = oneshot::channel();
        let shared = Arc::new(Shared {
            status: watch::Sender::new(Status::Connecting),
            close: watch::Sender::new(false),
            subs: Mutex::new(Some(Subs::default())),
            event_capacity: options.event_capacity,
        });
        let task = Task {
            url: url.clone(),
            shared: shared.clone(),
            outgoing: outgoing_rx,
            view: view_tx,
            close: shared.close.subscribe(),
            first: Some(first_tx),
            pending: None,
            options: options.clone(),
        };
        tokio::spawn(task.run());
        let client = Client {
            inner: Arc::new(Inner {
                shared,
                outgoing: outgoing_tx,
                view: view_rx,
                url,
                session_id: options.session_id,
            }),
        };
        (client, first_rx)
    }

    /// Send `{"action":<action>,"value":<value>}`.
    ///
    /// The message is queued and sent in order by the background task, at once when the
    /// socket is open, else after the next (re)connection. The queue holds the options'
    /// [`send_buffer`](ClientOptions::send_buffer) messages; when it is full the message is
    /// refused with [`SendError::BufferFull`]. A message whose write failed because the
    /// connection broke is sent again first after reconnecting (at-least-once for that one).
    pub fn emit<T: Serialize>(&self, action: &str, value: T) -> Result<(), SendError> {
        let text = serde_json::to_string(&Outgoing {
            action,
            value: &value,
        })?;
        self.send_raw(text)
    }

    /// Queue a text frame as is (see [`Client::emit`] for the queueing rules).
    pub fn send_raw(&self, text: impl Into<String>) -> Result<(), SendError> {
        if *self.inner.shared.close.borrow() || self.status() == Status::Closed {
            return Err(SendError::Closed);
        }
        self.inner
            .outgoing
            .try_send(text.into())
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => SendError::BufferFull,
                mpsc::error::TrySendError::Closed(_) => SendError::Closed,
            })
    }

    /// A copy of the mirrored room state.
    pub fn state(&self) -> Value {
        self.inner.view.borrow().state().clone()
    }

    /// The mirrored state deserialised into `T`.
    pub fn state_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(self.inner.view.borrow().state())
    }

    /// Read the mirrored state without copying it. Do not block inside `f`: the task waits
    /// for it to apply the next packet.
    pub fn with_state<R>(&self, f: impl FnOnce(&Value) -> R) -> R {
        f(self.inner.view.borrow().state())
    }

    /// The public id received in the last `pId` packet.
    pub fn pid(&self) -> Option<String> {
        self.inner.view.borrow().pid().map(str::to_owned)
    }

    /// The private session id (sent as `id` and `_pk`).
    pub fn session_id(&self) -> &str {
        &self.inner.session_id
    }

    /// The WebSocket URL used for every connection.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The connection status.
    pub fn status(&self) -> Status {
        *self.inner.shared.status.borrow()
    }

    /// A watch of the status, to await transitions.
    pub fn statuses(&self) -> watch::Receiver<Status> {
        self.inner.shared.status.subscribe()
    }

    /// A watch of the mirror, marked changed after every applied sync packet. Its
    /// `changed()` returns an error once the client is closed.
    pub fn changes(&self) -> watch::Receiver<StateView> {
        self.inner.view.clone()
    }

    /// Wait until `predicate(state)` holds (checked now, then after every sync packet), and
    /// return a copy of that state.
    pub async fn wait_for<F>(&self, mut predicate: F, timeout: Duration) -> Result<Value, WaitError>
    where
        F: FnMut(&Value) -> bool,
    {
        self.wait_view(|v| predicate(v.state()), timeout)
            .await
            .map(|v| v.state().clone())
    }

    /// Wait until `predicate(view)` holds and return a copy of that view (state, `pId`,
    /// connection count).
    pub async fn wait_view<F>(
        &self,
        mut predicate: F,
        timeout: Duration,
    ) -> Result<StateView, WaitError>
    where
        F: FnMut(&StateView) -> bool,
    {
        let mut rx = self.inner.view.clone();
        let wait = async move {
            match rx.wait_for(|v| predicate(v)).await {
                Ok(v) => Ok(v.clone()),
                Err(_) => Err(WaitError::Closed),
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => r,
            Err(_) => Err(WaitError::Timeout(timeout)),
        }
    }

    /// Wait until a first `pId` packet has been received (by any connection so far) and
    /// return the public id.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<String, WaitError> {
        let view = self.wait_view(|v| v.pid().is_some(), timeout).await?;
        Ok(view.pid().unwrap_or_default().to_owned())
    }

    /// Wait until the status satisfies `predicate`.
    pub async fn wait_status<F>(
        &self,
        mut predicate: F,
        timeout: Duration,
    ) -> Result<Status, WaitError>
    where
        F: FnMut(Status) -> bool,
    {
        let mut rx = self.statuses();
        let wait = async move {
            match rx.wait_for(|s| predicate(*s)).await {
                Ok(s) => Ok(*s),
                Err(_) => Err(WaitError::Closed),
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => r,
            Err(_) => Err(WaitError::Timeout(timeout)),
        }
    }

    /// Frames whose `type` is `kind` (`"sync"` included: sync frames are delivered after
    /// they were applied to the mirror).
    pub fn subscribe(&self, kind: &str) -> Subscription {
        self.subscribe_with(|subs, cap| {
            subs.by_kind
                .entry(kind.to_owned())
                .or_insert_with(|| broadcast::channel(cap).0)
                .subscribe()
        })
    }

    /// Every JSON frame, typed or not (`$broadcast` of room code may send frames without
    /// `type`).
    pub fn subscribe_all(&self) -> Subscription {
        self.subscribe_with(|subs, cap| {
            subs.all
                .get_or_insert_with(|| broadcast::channel(cap).0)
                .subscribe()
        })
    }

    fn subscribe_with(
        &self,
        f: impl FnOnce(&mut Subs, usize) -> broadcast::Receiver<Event>,
    ) -> Subscription {
        let cap = self.inner.shared.event_capacity;
        let mut guard = self.inner.shared.subs();
        let rx = match guard.as_mut() {
            Some(subs) => f(subs, cap),
            // Closed: a subscription that ends at once.
            None => broadcast::channel(1).1,
        };
        Subscription { rx, skipped: 0 }
    }

    /// Call `callback` with every frame of type `kind`, like the official client's
    /// `on(type, cb)` (`cb` gets [`Event::value`]). The callback runs on a tokio task of its
    /// own; it stops when the returned [`Listener`] is dropped (unlike the official `off`,
    /// which has no effect) or when the client closes.
    pub fn on<F>(&self, kind: &str, mut callback: F) -> Listener
    where
        F: FnMut(Event) + Send + 'static,
    {
        let mut sub = self.subscribe(kind);
        let task = tokio::spawn(async move {
            while let Some(event) = sub.recv().await {
                callback(event);
            }
        });
        Listener { task }
    }

    /// Close the socket with code 1000 and stop for good: no reconnection, queued messages
    /// are dropped, further [`Client::emit`] calls fail with [`SendError::Closed`]. The
    /// status is [`Status::Closed`] on return; the close handshake finishes in the
    /// background ([`Client::closed`] waits for it). Idempotent.
    pub fn close(&self) {
        self.inner.shared.close.send_replace(true);
        self.inner.shared.set_status(Status::Closed);
    }

    /// Wait until the background task has finished (after [`Client::close`], or after the
    /// reconnection attempts were used up).
    pub async fn closed(&self) {
        let mut rx = self.inner.view.clone();
        while rx.changed().await.is_ok() {}
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How a connected session ended.
enum End {
    /// Closed by us: stop.
    CloseRequested,
    /// Dropped by the server or the network: reconnect.
    Dropped { code: Option<u16>, reason: String },
}

/// The background task: owns the socket, the mirror and the send queue's receiver.
struct Task {
    options: ClientOptions,
    url: String,
    shared: Arc<Shared>,
    outgoing: mpsc::Receiver<String>,
    view: watch::Sender<StateView>,
    close: watch::Receiver<bool>,
    first: Option<oneshot::Sender<Result<(), ConnectError>>>,
    /// A message whose write failed: sent first after reconnecting.
    pending: Option<Utf8Bytes>,
}

/// Completes when `close()` was called (or every handle was dropped).
async fn closing(close: &mut watch::Receiver<bool>) {
    let _ = close.wait_for(|c| *c).await;
}

impl Task {
    async fn run(mut self) {
        let policy = self.options.reconnect.clone();
        let base = policy.draw_base();
        let mut failures: u32 = 0;
        loop {
            if failures > 0 {
                if policy.max_retries.is_some_and(|max| failures > max) {
                    break;
                }
                self.shared.set_status(Status::Reconnecting);
                let delay = policy.delay(base, failures);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = closing(&mut self.close) => break,
                }
            }
            let attempt = tokio::time::timeout(
                policy.connection_timeout,
                tokio_tungstenite::connect_async_with_config(
                    self.url.as_str(),
                    Some(socket_config()),
                    true,
                ),
            );
            let result = tokio::select! {
                r = attempt => r,
                _ = closing(&mut self.close) => break,
            };
            let ws = match result {
                Ok(Ok((ws, _response))) => ws,
                Ok(Err(e)) => {
                    self.report_first(Err(transport_error(e)));
                    failures = failures.saturating_add(1);
                    continue;
                }
                Err(_) => {
                    self.report_first(Err(ConnectError::AttemptTimeout(policy.connection_timeout)));
                    failures = failures.saturating_add(1);
                    continue;
                }
            };
            self.shared.set_status(Status::Open);
            let opened = Instant::now();
            match self.session(ws).await {
                End::CloseRequested => break,
                End::Dropped { code, reason } => {
                    self.report_first(Err(ConnectError::ClosedBeforeSync { code, reason }));
                    if opened.elapsed() >= policy.min_uptime {
                        failures = 0;
                    }
                    failures = failures.saturating_add(1);
                }
            }
        }
        self.shared.set_status(Status::Closed);
        self.report_first(Err(ConnectError::Closed));
        // End every subscription; later ones end at once.
        *self.shared.subs() = None;
        // Dropping `self.view` ends `changes()` and `closed()`.
    }

    fn report_first(&mut self, outcome: Result<(), ConnectError>) {
        if let Some(tx) = self.first.take() {
            let _ = tx.send(outcome);
        }
    }

    /// Run one open socket until it drops or the client closes.
    async fn session(&mut self, ws: Ws) -> End {
        let (mut sink, mut stream) = ws.split();
        let mut synced = false;
        let mut close_info: (Option<u16>, String) = (None, String::new());
        // Set when the server sent a close frame: it should then end the TCP connection;
        // one that does not is given up on after a grace period.
        let mut close_deadline: Option<Instant> = None;
        if let Some(text) = self.pending.take()
            && sink.send(Message::Text(text.clone())).await.is_err()
        {
            self.pending = Some(text);
            return End::Dropped {
                code: None,
                reason: String::new(),
            };
        }
        loop {
            tokio::select! {
                biased;
                _ = closing(&mut self.close) => {
                    graceful_close(sink, stream).await;
                    return End::CloseRequested;
                }
                frame = stream.next() => match frame {
                    Some(Ok(Message::Text(text))) => self.on_text(text, &mut synced),
                    Some(Ok(Message::Close(frame))) => {
                        // tungstenite answers the close; the server then ends the stream.
                        if let Some(f) = frame {
                            close_info = (Some(u16::from(f.code)), f.reason.as_str().to_owned());
                        }
                        close_deadline = Some(Instant::now() + CLOSE_GRACE);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        return End::Dropped { code: close_info.0, reason: close_info.1 };
                    }
                },
                _ = sleep_until_some(close_deadline) => {
                    return End::Dropped { code: close_info.0, reason: close_info.1 };
                }
                message = self.outgoing.recv(), if close_deadline.is_none() => match message {
                    Some(text) => {
                        // `Utf8Bytes` shares the buffer: keeping a copy costs no allocation.
                        let text = Utf8Bytes::from(text);
                        if sink.send(Message::Text(text.clone())).await.is_err() {
                            self.pending = Some(text);
                            return End::Dropped { code: close_info.0, reason: close_info.1 };
                        }
                    }
                    None => {
                        // Every handle was dropped.
                        graceful_close(sink, stream).await;
                        return End::CloseRequested;
                    }
                },
            }
        }
    }

    /// One text frame: apply `sync` packets to the mirror, then dispatch to subscribers
    /// (non-JSON text is ignored). With a mirror the frame is parsed once into a [`Value`];
    /// without one it is only scanned for its type and `pId`, and subscribers parse it if
    /// they ask for its value.
    fn on_text(&mut self, text: Utf8Bytes, synced: &mut bool) {
        if self.options.mirror {
            self.on_text_mirrored(text, synced);
        } else {
            self.on_text_unmirrored(text, synced);
        }
    }

    fn on_text_mirrored(&mut self, text: Utf8Bytes, synced: &mut bool) {
        let Ok(frame) = serde_json::from_str::<Value>(&text) else {
            return;
        };
        let kind = frame.get("type").and_then(Value::as_str).map(str::to_owned);
        if kind.as_deref() == Some("sync")
            && let Some(patch @ Value::Object(map)) = frame.get("value")
        {
            let has_pid = map.get("pId").is_some_and(Value::is_string);
            let reset = has_pid && !*synced;
            self.view.send_modify(|v| {
                if reset {
                    v.mirror = ClientMirror::new();
                    v.syncs += 1;
                }
                v.mirror.apply(patch);
            });
            self.synced_if(has_pid, synced);
        }
        self.shared.dispatch(Event::new(kind, text, Some(frame)));
    }

    fn on_text_unmirrored(&mut self, text: Utf8Bytes, synced: &mut bool) {
        // A frame shaped as servers write it is not scanned at all (it is parsed, and so
        // validated, when a subscriber reads its value).
        let (kind, raw_value): (Option<String>, Option<&str>) = match packet_head(&text) {
            Some((kind, value)) => (Some(kind.to_owned()), Some(value)),
            None => match serde_json::from_str::<FrameHead<'_>>(&text) {
                Ok(head) if text.trim_start().starts_with('{') => (
                    head.kind
                        .and_then(|k| serde_json::from_str::<String>(k.get()).ok()),
                    head.value.map(RawValue::get),
                ),
                // Valid JSON that is not an object (a room may broadcast any value):
                // delivered with no type. Non-JSON is ignored.
                _ => {
                    if let Ok(v) = serde_json::from_str::<Value>(&text) {
                        self.shared.dispatch(Event::new(None, text, Some(v)));
                    }
                    return;
                }
            },
        };
        if kind.as_deref() == Some("sync")
            && let Some(raw) = raw_value
            && raw.starts_with('{')
        {
            // Most packets have no `pId`: look for the key before parsing for it.
            let pid: Option<String> = raw
                .contains("\"pId\"")
                .then(|| serde_json::from_str::<PidOnly<'_>>(raw).ok())
                .flatten()
                .and_then(|p| p.pid)
                .and_then(|p| serde_json::from_str::<String>(p.get()).ok());
            let has_pid = pid.is_some();
            if let Some(pid) = pid {
                // No mirror: keep only the public id (and the connection count).
                let reset = !*synced;
                let mut only_pid = serde_json::Map::new();
                only_pid.insert("pId".to_owned(), Value::String(pid));
                let only_pid = Value::Object(only_pid);
                self.view.send_modify(|v| {
                    if reset {
                        v.mirror = ClientMirror::new();
                        v.syncs += 1;
                    }
                    v.mirror.apply(&only_pid);
                });
            }
            self.synced_if(has_pid, synced);
        }
        self.shared.dispatch(Event::new(kind, text, None));
    }

    /// A sync packet with a `pId` is the first of a connection: the client is synced.
    fn synced_if(&mut self, has_pid: bool, synced: &mut bool) {
        if has_pid {
            *synced = true;
            self.report_first(Ok(()));
        }
    }
}

/// How long a server that sent a close frame has to end the connection.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Sleep until the deadline, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Send a 1000 close frame and wait (at most 1 s) for the server's answer.
async fn graceful_close(
    mut sink: futures_util::stream::SplitSink<Ws, Message>,
    mut stream: futures_util::stream::SplitStream<Ws>,
) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    if sink.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
}

fn transport_error(e: tungstenite::Error) -> ConnectError {
    match e {
        tungstenite::Error::Http(response) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            ConnectError::Refused { status, body }
        }
        other => ConnectError::Transport(Box::new(other)),
    }
}

/// WebSocket settings: a small read buffer. tungstenite's default (128 KiB, zeroed before each
/// read) cost a load generator 40% of its CPU and 300 KiB per client; room frames are small.
fn socket_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn handles_are_send_and_sync() {
        assert_send_sync::<Client>();
        assert_send_sync::<Subscription>();
        assert_send_sync::<Listener>();
        assert_send_sync::<Event>();
        assert_send_sync::<StateView>();
    }

    #[test]
    fn packet_heads_are_read_without_scanning_the_value() {
        assert_eq!(
            packet_head(r#"{"type":"sync","value":{"a":{"b":1}}}"#),
            Some(("sync", r#"{"a":{"b":1}}"#))
        );
        assert_eq!(
            packet_head(r#"{"type":"custom","value":5}"#),
            Some(("custom", "5"))
        );
        // Anything else takes the parsing path.
        for other in [
            r#"{"value":5,"type":"custom"}"#,
            r#"{ "type":"sync","value":{}}"#,
            r#"{"type":"a\"b","value":1}"#,
            r#"{"type":"sync"}"#,
            "[1,2]",
            "not json",
        ] {
            assert_eq!(packet_head(other), None, "{other}");
        }
    }
}
