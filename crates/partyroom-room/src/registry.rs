//! Registering room types and starting their rooms: [`RoomsBuilder`] collects the types of
//! each party, and each registered type ([`RoomType`]) starts a [`RoomActor`] task when the
//! directory ([`Rooms`]) is asked for a room that is not live.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::actor::persist::Persistence;
use crate::actor::{ActorIds, RoomActor};
use crate::clock::{Clock, SystemClock};
use crate::config::RoomConfig;
use crate::handlers::registration::Handlers;
use crate::mailbox::admission::Admission;
use crate::mailbox::directory::{RoomFactory, Rooms, Spawn, Unload};
use crate::mailbox::message::MAILBOX;
use crate::mailbox::placement::Placement;
use crate::mailbox::room_handle::RoomHandle;
use crate::pattern::{PatternError, RoomPattern};
use crate::room::Room;
use crate::storage::{MemoryStorage, RoomKey, Storage};

/// A registered room type: its pattern, options and handlers.
struct RoomType<R: Room> {
    pattern: RoomPattern,
    config: Arc<RoomConfig>,
    handlers: Arc<Handlers<R>>,
    admission: Arc<Admission>,
}

impl<R: Room> RoomFactory for RoomType<R> {
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
        let handle = RoomHandle::new(
            id.clone(),
            tx.clone(),
            self.config.clone(),
            self.admission.clone(),
        );
        let actor = RoomActor::new(
            ActorIds {
                party: Arc::from(spawn.party),
                id,
                params: spawn.params,
                config: self.config.clone(),
                rng,
                clock: spawn.clock,
                rooms: spawn.rooms,
                me: handle.clone(),
            },
            self.handlers.clone(),
            persist,
        );
        // With debug on, every event of the room's task carries `room{party, room}`; without,
        // the task is not instrumented at all (entering a span on each poll costs).
        let run = actor.run(rx, Unload::new(spawn.live, tx));
        let span = tracing::debug_span!("room", party = %spawn.party, room = %spawn.id);
        if span.is_disabled() {
            tokio::spawn(run);
        } else {
            tokio::spawn(tracing::Instrument::instrument(run, span));
        }
        handle
    }
}

/// Builds [`Rooms`].
#[derive(Default)]
pub struct RoomsBuilder {
    parties: HashMap<String, Vec<Box<dyn RoomFactory>>>,
    seed: Option<u64>,
    storage: Option<Arc<dyn Storage>>,
    clock: Option<Arc<dyn Clock>>,
    placement: Option<Arc<dyn Placement>>,
}

impl fmt::Debug for RoomsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoomsBuilder")
            .field("parties", &self.parties.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Rooms {
    /// Start building.
    pub fn builder() -> RoomsBuilder {
        RoomsBuilder::default()
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
            .push(Box::new(RoomType::<R> {
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

    /// The clock rooms read (throttles, expiry, stored times). Default: [`SystemClock`].
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Serve rooms as one node of a cluster: `placement` decides which node serves each room
    /// (see [`Rooms::locate`]). Default: none, every room is served here.
    #[must_use]
    pub fn placement(mut self, placement: Arc<dyn Placement>) -> Self {
        self.placement = Some(placement);
        self
    }

    /// Finish.
    pub fn build(self) -> Rooms {
        Rooms::new(
            self.parties,
            self.seed,
            self.storage
                .unwrap_or_else(|| Arc::new(MemoryStorage::new())),
            self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
            self.placement,
        )
    }
}
