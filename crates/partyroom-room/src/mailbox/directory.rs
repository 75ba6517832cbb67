//! [`Rooms`]: the parties (`main`, ...), the room types of each, and the live room instances,
//! started on first use. Room types reach this layer as [`RoomFactory`] trait objects (the
//! registry implements it for each registered type), so finding a room never depends on what
//! a room does.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::message::RoomMsg;
use super::placement::{Owner, Placed, Placement, PlacementError};
use super::room_handle::RoomHandle;
use crate::clock::Clock;
use crate::pattern::{Params, RoomPattern};
use crate::protocol::http::{RoomRequest, RoomResponse};
use crate::session::transfer::SessionHandoff;
use crate::storage::{RoomKey, Storage};

/// Live instances of a party, by room id. A std mutex: held only to look up or insert, never
/// across `.await`.
pub(crate) type LiveRooms = Arc<Mutex<HashMap<String, RoomHandle>>>;

/// A registered room type, with its types erased: how [`Rooms`] starts an instance.
pub(crate) trait RoomFactory: Send + Sync {
    /// The room ids this type serves.
    fn pattern(&self) -> &RoomPattern;
    /// Start an instance (its actor task) and return its handle.
    fn spawn(&self, spawn: Spawn<'_>) -> RoomHandle;
}

/// Everything needed to start a room instance.
pub(crate) struct Spawn<'a> {
    pub(crate) party: &'a str,
    pub(crate) id: &'a str,
    pub(crate) params: Params,
    pub(crate) seed: Option<u64>,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) clock: Arc<dyn Clock>,
    /// The party's live instances (see [`Unload`]).
    pub(crate) live: LiveRooms,
    pub(crate) rooms: Rooms,
}

/// What a room instance needs to remove itself from the directory when it unloads.
pub(crate) struct Unload {
    live: LiveRooms,
    tx: mpsc::Sender<RoomMsg>,
}

impl Unload {
    /// For the instance whose mailbox `tx` sends to, listed in `live`.
    pub(crate) fn new(live: LiveRooms, tx: mpsc::Sender<RoomMsg>) -> Self {
        Self { live, tx }
    }

    /// Remove the room from the directory now (it stops whatever its mailbox holds).
    pub(crate) fn remove(&self, id: &str) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        self.remove_from(&mut live, id);
    }

    /// Remove the room from the directory if nothing is waiting in its mailbox. After this,
    /// new requests start a new instance (which restores what this one saved).
    pub(crate) fn try_remove(&self, id: &str, mailbox: &mpsc::Receiver<RoomMsg>) -> bool {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if !mailbox.is_empty() {
            return false;
        }
        self.remove_from(&mut live, id);
        true
    }

    /// Take this instance (not a newer one with the same id) out of `live`.
    fn remove_from(&self, live: &mut HashMap<String, RoomHandle>, id: &str) {
        if live.get(id).is_some_and(|h| h.tx.same_channel(&self.tx)) {
            live.remove(id);
        }
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

/// Where [`Rooms::locate`] found a room.
#[derive(Debug, Clone)]
pub enum Located {
    /// Served here: its live instance.
    Here(RoomHandle),
    /// Served by another node of the cluster.
    Elsewhere(Owner),
}

/// Why [`Rooms::locate`] found no room.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LocateError {
    /// No such party or room type.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The cluster cannot place the room now.
    #[error(transparent)]
    Unavailable(#[from] PlacementError),
}

struct Party {
    kinds: Vec<Box<dyn RoomFactory>>,
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
    clock: Arc<dyn Clock>,
    placement: Option<Arc<dyn Placement>>,
}

impl fmt::Debug for Rooms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rooms")
            .field("parties", &self.parties.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Rooms {
    /// The directory of `parties` (name → room types, tried in order).
    pub(crate) fn new(
        parties: HashMap<String, Vec<Box<dyn RoomFactory>>>,
        seed: Option<u64>,
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
        placement: Option<Arc<dyn Placement>>,
    ) -> Self {
        let parties = parties
            .into_iter()
            .map(|(name, kinds)| {
                let live = Arc::new(Mutex::new(HashMap::new()));
                (name, Party { kinds, live })
            })
            .collect();
        Self {
            parties: Arc::new(parties),
            seed,
            storage,
            clock,
            placement,
        }
    }

    /// Whether `party` has a room type whose pattern matches `room_id`.
    pub(crate) fn check(&self, party: &str, room_id: &str) -> Result<(), LookupError> {
        let p = self
            .parties
            .get(party)
            .ok_or_else(|| LookupError::UnknownParty(party.to_owned()))?;
        if p.kinds
            .iter()
            .any(|k| k.pattern().matches(room_id).is_some())
        {
            Ok(())
        } else {
            Err(LookupError::NoMatch(room_id.to_owned()))
        }
    }

    /// Where a room is served: here (its live instance, started if needed) or, in a
    /// cluster, by another node. Without a [`Placement`] this is [`Rooms::get`]; with one,
    /// the placement is asked first, and a room is started here only once this node owns it.
    pub async fn locate(&self, party: &str, room_id: &str) -> Result<Located, LocateError> {
        let Some(placement) = &self.placement else {
            return Ok(Located::Here(self.get(party, room_id)?));
        };
        self.check(party, room_id)?;
        match placement.place(&RoomKey::new(party, room_id)).await? {
            Placed::Here => Ok(Located::Here(self.get(party, room_id)?)),
            Placed::Elsewhere(owner) => Ok(Located::Elsewhere(owner)),
        }
    }

    /// The cluster's placement, if this node is part of one.
    pub fn placement(&self) -> Option<&Arc<dyn Placement>> {
        self.placement.as_ref()
    }

    /// The room instances running here, as `(party, room id, handle)`, sorted (for the
    /// monitor: it asks them for their [`RoomStats`](crate::RoomStats)).
    pub fn running(&self) -> Vec<(String, String, RoomHandle)> {
        let mut out = Vec::new();
        for (party, p) in self.parties.iter() {
            let live = p.live.lock().unwrap_or_else(|e| e.into_inner());
            for (id, handle) in live.iter() {
                if !handle.is_closed() {
                    out.push((party.clone(), id.clone(), handle.clone()));
                }
            }
        }
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }

    /// The live instance of a room here, without starting one.
    pub fn live_room(&self, party: &str, room_id: &str) -> Option<RoomHandle> {
        let p = self.parties.get(party)?;
        let live = p.live.lock().unwrap_or_else(|e| e.into_inner());
        live.get(room_id).filter(|h| !h.is_closed()).cloned()
    }

    /// Whether a live instance of the room runs here.
    pub fn is_live(&self, party: &str, room_id: &str) -> bool {
        self.live_room(party, room_id).is_some()
    }

    /// Stop serving a room at once, without saving: its clients are closed with 1012
    /// ([`CloseFrame::room_moved`](crate::CloseFrame::room_moved)), so that they reconnect
    /// (to its new owner), and it never writes again. For a node that lost the room's lease.
    /// Returns whether a live instance was told to stop.
    pub async fn evict(&self, party: &str, room_id: &str) -> bool {
        match self.live_room(party, room_id) {
            Some(h) => h.tx.send(RoomMsg::Evict).await.is_ok(),
            None => false,
        }
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
            clock: self.clock.clone(),
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

    /// The clock rooms read.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
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

    /// Send an HTTP request to a room (a room-to-room call from a spawned task, a tool...),
    /// wherever in the cluster it is served.
    pub async fn request(
        &self,
        party: &str,
        room_id: &str,
        request: RoomRequest,
    ) -> Result<RoomResponse, LookupError> {
        for _ in 0..3 {
            let handle = match self.locate(party, room_id).await {
                Ok(Located::Here(handle)) => handle,
                Ok(Located::Elsewhere(owner)) => {
                    let key = RoomKey::new(party, room_id);
                    if let Some(placement) = &self.placement {
                        return Ok(placement.forward(&owner, &key, request).await);
                    }
                    break;
                }
                Err(LocateError::Lookup(e)) => return Err(e),
                Err(LocateError::Unavailable(_)) => break,
            };
            if let Ok(response) = handle.request(request.clone()).await {
                return Ok(response);
            }
        }
        Ok(RoomResponse::error(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "Room unavailable",
        ))
    }

    /// Deliver a session handed over by another room to `room_id`, wherever in the cluster
    /// it is served (session transfers to a room of another node go through here).
    pub async fn hand_off(
        &self,
        party: &str,
        room_id: &str,
        handoff: SessionHandoff,
    ) -> Result<(), HandoffError> {
        let key = RoomKey::new(party, room_id);
        let mut last = HandoffError::Unavailable(PlacementError("no attempt".into()));
        for _ in 0..3 {
            match self.locate(party, room_id).await {
                Ok(Located::Here(handle)) => {
                    if handle
                        .tx
                        .send(RoomMsg::TransferIn(handoff.clone()))
                        .await
                        .is_ok()
                    {
                        return Ok(());
                    }
                    // The instance stopped meanwhile: locate it again.
                }
                Ok(Located::Elsewhere(owner)) => {
                    let Some(placement) = &self.placement else {
                        break;
                    };
                    match placement.hand_off(&owner, &key, handoff.clone()).await {
                        Ok(()) => return Ok(()),
                        Err(e) => {
                            placement.moved(&key);
                            last = HandoffError::Unavailable(e);
                        }
                    }
                }
                Err(LocateError::Lookup(e)) => return Err(HandoffError::Lookup(e)),
                Err(LocateError::Unavailable(e)) => last = HandoffError::Unavailable(e),
            }
        }
        Err(last)
    }

    /// Deliver a session handed over from another node to `room_id`, only if this node
    /// serves it (claiming it if nobody does): a handoff is never relayed twice.
    pub async fn accept_hand_off(
        &self,
        party: &str,
        room_id: &str,
        handoff: SessionHandoff,
    ) -> Result<(), HandoffError> {
        match self.locate(party, room_id).await {
            Ok(Located::Here(handle)) => handle
                .tx
                .send(RoomMsg::TransferIn(handoff))
                .await
                .map_err(|_| HandoffError::Unavailable(PlacementError("room stopped".into()))),
            Ok(Located::Elsewhere(owner)) => Err(HandoffError::NotHere(owner)),
            Err(LocateError::Lookup(e)) => Err(HandoffError::Lookup(e)),
            Err(LocateError::Unavailable(e)) => Err(HandoffError::Unavailable(e)),
        }
    }

    /// Number of live room instances.
    pub fn live_rooms(&self) -> usize {
        self.parties
            .values()
            .map(|p| p.live.lock().map(|l| l.len()).unwrap_or(0))
            .sum()
    }
}

/// Why a session handoff was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandoffError {
    /// No such party or room.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The room could not be placed or reached now.
    #[error(transparent)]
    Unavailable(#[from] PlacementError),
    /// Another node serves the room.
    #[error("room is served by node {}", .0.node)]
    NotHere(Owner),
}
