//! The room actor: one task per live room instance, owning its state, sessions and
//! connections. Everything that touches a room goes through its mailbox
//! ([`crate::mailbox::message::RoomMsg`]).
//!
//! [`RoomActor`] is one type split by concern. Its components are plain structs that know
//! nothing of the actor and get the time passed in: [`sync_scheduler`] (the sync throttle),
//! [`held_reads`] (holding busy clients' reads to the end of a window) and [`persist`]
//! (dirty rows and the storage batch). The actor's methods live in one file per concern,
//! each calling only the ones listed before it:
//!
//! | file | what it does |
//! |---|---|
//! | `flush.rs` | turns handler changes into patches: flush, sync throttle, first packets, delivery to each connection (and the interceptor) |
//! | `effects.rs` | carries out what a handler asked besides changing state: `send`/`broadcast`, sync switches, outgoing transfers |
//! | `transfer.rs` | incoming session transfers and transfer tokens |
//! | `connections.rs` | connect guards, joins, leaves, slow clients, session expiry |
//! | `dispatch.rs` | runs actions (envelope, guards, handler or fallback) and HTTP routes |
//! | `run.rs` | closures sent with [`RoomHandle::update`](crate::RoomHandle::update) |
//! | `restore.rs` | applies what storage holds when the room starts |
//! | `message_loop.rs` | the task: mailbox batches, timers, storage results, shutdown and unloading |
//!
//! The clock, the storage and each connection's sink are passed in (see [`ActorIds`] and
//! [`Persistence`]); the actor reads the time only through its [`Clock`].

use std::sync::Arc;

use partyroom_state::Tracker;

use crate::metrics::RoomMetrics;
use serde_json::Value;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::config::RoomConfig;
use crate::connection::live::Conns;
use crate::connection::request::ConnId;
use crate::handlers::context::Effects;
use crate::handlers::registration::Handlers;
use crate::mailbox::directory::Rooms;
use crate::mailbox::room_handle::RoomHandle;
use crate::pattern::Params;
use crate::room::Room;
use crate::session::lifecycle::Sessions;
use crate::session::transfer::Transfers;
use held_reads::HeldReads;
use parked_connects::ParkedConnects;
use persist::Persistence;
use sync_scheduler::SyncScheduler;

/// Build the handler scope ([`crate::handlers::context::RoomScope`]) from the actor's fields
/// (a macro, so the borrows stay field by field).
macro_rules! scope {
    ($s:ident) => {
        $crate::handlers::context::RoomScope {
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

mod connections;
mod dispatch;
mod effects;
mod flush;
pub(crate) mod held_reads;
mod inspect;
mod message_loop;
mod parked_connects;
pub(crate) mod persist;
mod restore;
mod run;
pub(crate) mod sync_scheduler;
mod transfer;

/// One live room instance.
pub(crate) struct RoomActor<R: Room> {
    id: Arc<str>,
    params: Params,
    config: Arc<RoomConfig>,
    handlers: Arc<Handlers<R>>,
    clock: Arc<dyn Clock>,
    tracker: Tracker<R>,
    conns: Conns,
    next_conn: ConnId,
    sessions: Sessions,
    transfers: Transfers,
    sync: SyncScheduler,
    rng: fastrand::Rng,
    effects: Effects,
    /// Connections whose queue overflowed, to close after the current message.
    slow: Vec<ConnId>,
    persist: Persistence,
    party: Arc<str>,
    rooms: Rooms,
    me: RoomHandle,
    /// Automatic sync (spec 6.9); when off, patches wait in `manual_pending`.
    auto_sync: bool,
    manual_pending: Vec<Value>,
    /// Connections waiting for their first packet while automatic sync is off.
    pending_initial: Vec<ConnId>,
    /// Message handlers changed state that is not flushed yet (see `handle_batch`).
    unflushed: bool,
    /// A batch of mailbox messages is being handled (see `handle_batch`).
    in_batch: bool,
    /// Told to stop without saving (this node lost the room).
    evicted: bool,
    /// Clients that joined during the current batch and wait for their first packet.
    batch_initial: Vec<ConnId>,
    /// Connections whose reads are held until the end of each sync window.
    held_reads: HeldReads,
    /// Since when the room has had no connection (for unloading).
    idle_since: Option<Instant>,
    /// Connections waiting for the session handoff their transfer token names.
    parked: ParkedConnects,
    /// This instance's metric handles.
    metrics: RoomMetrics,
    /// Flushes since the instance started (to time one in so many).
    flushes: u64,
}

/// Identity and surroundings of a room instance.
pub(crate) struct ActorIds {
    pub(crate) party: Arc<str>,
    pub(crate) id: Arc<str>,
    pub(crate) params: Params,
    pub(crate) config: Arc<RoomConfig>,
    pub(crate) rng: fastrand::Rng,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) rooms: Rooms,
    pub(crate) me: RoomHandle,
}

impl<R: Room> RoomActor<R> {
    pub(crate) fn new(ids: ActorIds, handlers: Arc<Handlers<R>>, mut persist: Persistence) -> Self {
        let ActorIds {
            party,
            id,
            params,
            config,
            rng,
            clock,
            rooms,
            me,
        } = ids;
        let state = R::init(&id, &params);
        let metrics = RoomMetrics::new(&party);
        persist.set_metrics(metrics.storage.clone());
        Self {
            metrics,
            flushes: 0,
            persist,
            idle_since: Some(clock.now()),
            parked: ParkedConnects::default(),
            sync: SyncScheduler::new(config.throttle_sync),
            auto_sync: config.auto_sync,
            sessions: Sessions::new(config.session_expiry),
            transfers: Transfers::new(config.transfer_expiry),
            id,
            party,
            params,
            config,
            handlers,
            clock,
            tracker: Tracker::new(state),
            conns: Conns::new(),
            next_conn: 1,
            rng,
            effects: Effects::default(),
            slow: Vec::new(),
            rooms,
            me,
            manual_pending: Vec::new(),
            pending_initial: Vec::new(),
            unflushed: false,
            in_batch: false,
            evicted: false,
            batch_initial: Vec::new(),
            held_reads: HeldReads::default(),
        }
    }
}
