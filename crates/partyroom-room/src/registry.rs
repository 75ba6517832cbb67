//! Room registry: parties (`main`, ...), the room types registered in each, and the live room
//! instances, spawned on first use.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::actor::{ActorIds, ConnectError, Persistence, RoomActor, RoomMsg, RunFn, Unload};
use crate::config::RoomConfig;
use crate::conn::{ConnId, ConnectRequest};
use crate::context::Cx;
use crate::handler::Handlers;
use crate::handler::{AsyncConnectGuard, AsyncRequestGuard};
use crate::http::{RoomRequest, RoomResponse};
use crate::pattern::{Params, PatternError, RoomPattern};
use crate::room::Room;
use crate::storage::{MemoryStorage, RoomKey, Storage};

/// Mailbox size of a room: messages beyond it wait in the connection tasks (backpressure on
/// the sockets), not in memory.
const MAILBOX: usize = 1024;

/// A cheap, cloneable handle to a live room instance.
#[derive(Clone)]
pub struct RoomHandle {
    id: Arc<str>,
    pub(crate) tx: mpsc::Sender<RoomMsg>,
    config: Arc<RoomConfig>,
    admission: Arc<Admission>,
}

/// The async guards of a room type; they run in the caller's task, before the room is asked.
#[derive(Default)]
struct Admission {
    connect: Vec<AsyncConnectGuard>,
    request: Vec<AsyncRequestGuard>,
}

impl fmt::Debug for RoomHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoomHandle").field("id", &self.id).finish()
    }
}

/// The room instance has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("room is gone")]
pub struct RoomGone;

impl RoomHandle {
    /// The room id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The room type's options.
    pub fn config(&self) -> &RoomConfig {
        &self.config
    }

    /// Run the connect guards (async ones here, state-aware ones in the room) without
    /// connecting; the server calls this before the WebSocket upgrade so a refused client gets
    /// an HTTP error. Marks the request as admitted.
    pub async fn admit(&self, request: &mut ConnectRequest) -> Result<(), ConnectError> {
        request.check_session_id().map_err(ConnectError::Refused)?;
        let info = Arc::new(request.info());
        for guard in &self.admission.connect {
            guard(info.clone()).await.map_err(ConnectError::Refused)?;
        }
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(RoomMsg::Admit(info, tx))
            .await
            .map_err(|_| ConnectError::RoomGone)?;
        rx.await
            .map_err(|_| ConnectError::RoomGone)?
            .map_err(ConnectError::Refused)?;
        request.admitted = true;
        Ok(())
    }

    /// Connect a client (running the guards first unless [`RoomHandle::admit`] did). On
    /// success the first packet is already queued on its channels.
    pub async fn connect(&self, request: ConnectRequest) -> Result<ConnId, ConnectError> {
        request.check_session_id().map_err(ConnectError::Refused)?;
        if !request.admitted && !self.admission.connect.is_empty() {
            let info = Arc::new(request.info());
            for guard in &self.admission.connect {
                guard(info.clone()).await.map_err(ConnectError::Refused)?;
            }
        }
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(RoomMsg::Connect(request, tx))
            .await
            .map_err(|_| ConnectError::RoomGone)?;
        rx.await.map_err(|_| ConnectError::RoomGone)?
    }

    /// Deliver a text message from a client. Waits while the room's mailbox is full.
    pub async fn message(&self, conn: ConnId, text: Bytes) -> Result<(), RoomGone> {
        let waiting = match self.try_post(RoomMsg::Message(conn, text)) {
            Posted::Done(result) => return result,
            Posted::Full(msg) => self.post_waiting(msg),
        };
        waiting.await
    }

    /// Put `msg` in the mailbox if it has room. Connection tasks send through this and
    /// [`post_waiting`](Self::post_waiting) rather than `Sender::send`: a future that waits for
    /// the mailbox holds the whole message and the semaphore's waiter (over 600 bytes), and
    /// every connection task would carry that much for its whole life, idle or not.
    fn try_post(&self, msg: RoomMsg) -> Posted {
        match self.tx.try_send(msg) {
            Ok(()) => Posted::Done(Ok(())),
            Err(mpsc::error::TrySendError::Closed(_)) => Posted::Done(Err(RoomGone)),
            Err(mpsc::error::TrySendError::Full(msg)) => Posted::Full(msg),
        }
    }

    /// Wait for room in a full mailbox (backpressure), in a box made only then.
    fn post_waiting(&self, msg: RoomMsg) -> impl Future<Output = Result<(), RoomGone>> + '_ {
        let send = Box::pin(self.tx.send(msg));
        async move { send.await.map_err(|_| RoomGone) }
    }

    /// Answer a drain of held reads ([`ConnectionSink::drain_held`]), after handing over the
    /// messages it found with [`message`](Self::message); `delivered`: there were some.
    ///
    /// [`ConnectionSink::drain_held`]: crate::ConnectionSink::drain_held
    pub async fn drained(&self, conn: ConnId, delivered: bool) -> Result<(), RoomGone> {
        let waiting = match self.try_post(RoomMsg::Drained(conn, delivered)) {
            Posted::Done(result) => return result,
            Posted::Full(msg) => self.post_waiting(msg),
        };
        waiting.await
    }

    /// Tell the room a client went away.
    pub async fn disconnect(&self, conn: ConnId) {
        let waiting = match self.try_post(RoomMsg::Disconnect(conn)) {
            Posted::Done(_) => return,
            Posted::Full(msg) => self.post_waiting(msg),
        };
        let _ = waiting.await;
    }

    /// Send an HTTP request to the room (its async request guards run first, here).
    pub async fn request(&self, request: RoomRequest) -> Result<RoomResponse, RoomGone> {
        if !self.admission.request.is_empty() {
            let shared = Arc::new(request.clone());
            for guard in &self.admission.request {
                if let Err(response) = guard(shared.clone()).await {
                    return Ok(response);
                }
            }
        }
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(RoomMsg::Request(request, tx))
            .await
            .map_err(|_| RoomGone)?;
        rx.await.map_err(|_| RoomGone)
    }

    /// True once the room task has stopped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Run a closure on the room's state, in the room's task, and return its result; the
    /// changes it makes are synced and saved like a handler's. This is how a task spawned by
    /// a handler (after a room-to-room request, say) comes back to the room. `R` must be the
    /// room's type; for another type the closure is not run and `RoomGone` is returned.
    pub async fn update<R, T, F>(&self, f: F) -> Result<T, RoomGone>
    where
        R: Room,
        T: Send + 'static,
        F: FnOnce(&mut R, &mut Cx<'_>) -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let run: RunFn = Box::new(move |state, cx| {
            if let Some(room) = state.downcast_mut::<R>() {
                let _ = tx.send(f(room, cx));
            }
        });
        self.tx
            .send(RoomMsg::Run(run))
            .await
            .map_err(|_| RoomGone)?;
        rx.await.map_err(|_| RoomGone)
    }

    /// Save everything, close every connection (1001) and stop the room.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(RoomMsg::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// What [`RoomHandle::try_post`] did. A return value on the stack for one `match`, never kept
/// in a future: boxing the message would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Posted {
    /// Sent, or the room is gone.
    Done(Result<(), RoomGone>),
    /// The mailbox is full: the message, to wait with.
    Full(RoomMsg),
}

type LiveRooms = Arc<Mutex<HashMap<String, RoomHandle>>>;

impl Unload {
    /// Remove the room from the registry if nothing is waiting in its mailbox. After this,
    /// new requests start a new instance (which restores what this one saved).
    pub(crate) fn try_remove(&self, id: &str, mailbox: &mpsc::Receiver<RoomMsg>) -> bool {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if !mailbox.is_empty() {
            return false;
        }
        if live.get(id).is_some_and(|h| h.tx.same_channel(&self.tx)) {
            live.remove(id);
        }
        true
    }
}

/// A registered room type, with its types erased.
trait RoomKind: Send + Sync {
    fn pattern(&self) -> &RoomPattern;
    fn spawn(&self, spawn: Spawn<'_>) -> RoomHandle;
}

/// Everything needed to start a room instance.
struct Spawn<'a> {
    party: &'a str,
    id: &'a str,
    params: Params,
    seed: Option<u64>,
    storage: Arc<dyn Storage>,
    live: LiveRooms,
    rooms: Rooms,
}

struct Kind<R: Room> {
    pattern: RoomPattern,
    config: Arc<RoomConfig>,
    handlers: Arc<Handlers<R>>,
    admission: Arc<Admission>,
}

impl<R: Room> RoomKind for Kind<R> {
    fn pattern(&self) -> &RoomPattern {
        &self.pattern
    }

    fn spawn(&self, spawn: Spawn<'_>) -> RoomHandle {
        let (tx, rx) = mpsc::channel(MAILBOX);
        let id: Arc<str> = Arc::from(spawn.id);
        let rng = spawn
            .seed
            .map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed);
        let persist = Persistence::new(spawn.storage, RoomKey::new(spawn.party, spawn.id));
        let handle = RoomHandle {
            id: id.clone(),
            tx: tx.clone(),
            config: self.config.clone(),
            admission: self.admission.clone(),
        };
        let actor = RoomActor::new(
            ActorIds {
                party: Arc::from(spawn.party),
                id: id.clone(),
                params: spawn.params,
                config: self.config.clone(),
                rng,
                rooms: spawn.rooms,
                me: handle.clone(),
            },
            self.handlers.clone(),
            persist,
        );
        let unload = Unload {
            live: spawn.live,
            tx: tx.clone(),
        };
        tokio::spawn(actor.run(rx, unload));
        handle
    }
}

/// No room type of the party matches the id, or the party does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    /// Unknown party.
    #[error("unknown party `{0}`")]
    UnknownParty(String),
    /// No room type's pattern matches the room id.
    #[error("no room type matches `{0}`")]
    NoMatch(String),
}

struct Party {
    kinds: Vec<Box<dyn RoomKind>>,
    /// Live instances. A std mutex: held only to look up or insert, never across `.await`.
    live: LiveRooms,
}

/// All parties and their room types; the entry point of the runtime.
///
/// ```no_run
/// # use partyroom_room::{Handlers, Room, RoomConfig, Rooms};
/// # #[derive(partyroom_state::State, Default, Clone)] struct Arena { n: u32 }
/// # impl Room for Arena { fn config() -> RoomConfig { RoomConfig::new("{id}") } fn handlers(_: &mut Handlers<Self>) {} }
/// # async fn demo() {
/// let rooms = Rooms::builder().room::<Arena>("main").unwrap().build();
/// let handle = rooms.get("main", "lobby").unwrap();
/// # }
/// ```
#[derive(Clone)]
pub struct Rooms {
    parties: Arc<HashMap<String, Party>>,
    seed: Option<u64>,
    storage: Arc<dyn Storage>,
}

impl fmt::Debug for Rooms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rooms")
            .field("parties", &self.parties.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Builds [`Rooms`].
#[derive(Default)]
pub struct RoomsBuilder {
    parties: HashMap<String, Vec<Box<dyn RoomKind>>>,
    seed: Option<u64>,
    storage: Option<Arc<dyn Storage>>,
}

impl fmt::Debug for RoomsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoomsBuilder")
            .field("parties", &self.parties.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl RoomsBuilder {
    /// Register room type `R` in `party`. Types are tried in registration order; the first
    /// whose pattern matches a room id serves it.
    pub fn room<R: Room>(self, party: &str) -> Result<Self, PatternError> {
        self.room_with::<R>(party, R::config())
    }

    /// Register room type `R` with options that replace [`Room::config`] (for example limits
    /// or throttles read from the command line).
    pub fn room_with<R: Room>(
        mut self,
        party: &str,
        config: RoomConfig,
    ) -> Result<Self, PatternError> {
        let pattern = RoomPattern::parse(config.path())?;
        let mut handlers = Handlers::default();
        R::handlers(&mut handlers);
        let admission = Arc::new(Admission {
            connect: std::mem::take(&mut handlers.async_connect_guards),
            request: std::mem::take(&mut handlers.async_request_guards),
        });
        self.parties
            .entry(party.to_owned())
            .or_default()
            .push(Box::new(Kind::<R> {
                pattern,
                config: Arc::new(config),
                handlers: Arc::new(handlers),
                admission,
            }));
        Ok(self)
    }

    /// Seed every room's random source (public ids, handler randomness) for reproducible
    /// tests. Room `n` (in creation order) gets `seed + n`.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Where rooms save their state and sessions. Default: in memory ([`MemoryStorage`]).
    #[must_use]
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// Finish.
    pub fn build(self) -> Rooms {
        Rooms {
            parties: Arc::new(
                self.parties
                    .into_iter()
                    .map(|(name, kinds)| {
                        (
                            name,
                            Party {
                                kinds,
                                live: Arc::new(Mutex::new(HashMap::new())),
                            },
                        )
                    })
                    .collect(),
            ),
            seed: self.seed,
            storage: self
                .storage
                .unwrap_or_else(|| Arc::new(MemoryStorage::new())),
        }
    }
}

impl Rooms {
    /// Start building.
    pub fn builder() -> RoomsBuilder {
        RoomsBuilder::default()
    }

    /// The live instance of a room, spawned if needed. Must be called inside a tokio runtime.
    pub fn get(&self, party: &str, room_id: &str) -> Result<RoomHandle, LookupError> {
        let p = self
            .parties
            .get(party)
            .ok_or_else(|| LookupError::UnknownParty(party.to_owned()))?;
        let mut live = p.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(handle) = live.get(room_id)
            && !handle.is_closed()
        {
            return Ok(handle.clone());
        }
        let (kind, params) = p
            .kinds
            .iter()
            .find_map(|k| k.pattern().matches(room_id).map(|params| (k, params)))
            .ok_or_else(|| LookupError::NoMatch(room_id.to_owned()))?;
        let seed = self.seed.map(|s| s.wrapping_add(live.len() as u64));
        let handle = kind.spawn(Spawn {
            party,
            id: room_id,
            params,
            seed,
            storage: self.storage.clone(),
            live: p.live.clone(),
            rooms: self.clone(),
        });
        live.insert(room_id.to_owned(), handle.clone());
        Ok(handle)
    }

    /// Whether a party exists.
    pub fn has_party(&self, party: &str) -> bool {
        self.parties.contains_key(party)
    }

    /// The storage rooms save to.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Save every live room, close its connections and stop it. Rooms requested afterwards
    /// start again (and restore what was saved).
    pub async fn shutdown(&self) {
        let handles: Vec<RoomHandle> = self
            .parties
            .values()
            .flat_map(|p| {
                let live = p.live.lock().unwrap_or_else(|e| e.into_inner());
                live.values().cloned().collect::<Vec<_>>()
            })
            .collect();
        // Ask every room first so they all save at once, then wait for each.
        let mut waits = Vec::with_capacity(handles.len());
        for h in &handles {
            let (tx, rx) = oneshot::channel();
            if h.tx.send(RoomMsg::Shutdown(tx)).await.is_ok() {
                waits.push(rx);
            }
        }
        for rx in waits {
            let _ = rx.await;
        }
    }

    /// Send an HTTP request to a room (a room-to-room call from a spawned task, a tool...).
    pub async fn request(
        &self,
        party: &str,
        room_id: &str,
        request: RoomRequest,
    ) -> Result<RoomResponse, LookupError> {
        for _ in 0..3 {
            let handle = self.get(party, room_id)?;
            if let Ok(response) = handle.request(request.clone()).await {
                return Ok(response);
            }
        }
        Ok(RoomResponse::error(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "Room unavailable",
        ))
    }

    /// Number of live room instances.
    pub fn live_rooms(&self) -> usize {
        self.parties
            .values()
            .map(|p| p.live.lock().map(|l| l.len()).unwrap_or(0))
            .sum()
    }
}
