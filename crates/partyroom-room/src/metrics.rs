//! The room runtime's metrics, through the [`metrics`] facade: nothing is recorded unless the
//! application installs a recorder (`partyroom_server::prometheus` does, for `/metrics`).
//!
//! Every room caches its handles when it starts ([`RoomMetrics::new`]); install the recorder
//! before building the rooms. The counts of the hot path (messages, their bytes and outcomes,
//! frames and their bytes) are not even recorder calls: each room keeps them in counters of
//! its own that only its task writes (a load and a store, no locked instruction), and
//! [`publish`] adds them up per party when the exporter renders (`partyroom_server`'s
//! `/metrics` calls it; [`enable`] turns the bookkeeping on). Labels are bounded: `party` (the
//! room types an app registers) and an outcome or reason from a fixed list, never a room or
//! user id.
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `partyroom_rooms_loaded` | gauge | `party` | room instances running |
//! | `partyroom_rooms_started_total` | counter | `party` | instances started (restored or new) |
//! | `partyroom_rooms_stopped_total` | counter | `party`, `reason` | instances stopped: `unloaded` (idle), `shutdown`, `evicted` (lease lost), `fenced` (write refused), `restore_failed` |
//! | `partyroom_users_joined_total` | counter | `party` | WebSocket connections that joined a room |
//! | `partyroom_users_left_total` | counter | `party` | connections that left |
//! | `partyroom_messages_received_total` | counter | `party` | client messages handled by rooms |
//! | `partyroom_message_bytes_received_total` | counter | `party` | their bytes |
//! | `partyroom_actions_total` | counter | `party`, `outcome` | messages by outcome: `ok`, `malformed`, `unknown`, `invalid`, `refused` (guard), `too_large`, `panicked` |
//! | `partyroom_frames_sent_total` | counter | `party` | frames queued for clients (one per client and packet) |
//! | `partyroom_frame_bytes_sent_total` | counter | `party` | their bytes |
//! | `partyroom_sync_flush_seconds` | histogram | `party` | finding the changes and queueing the packets, for one flush in 16 (sampled: a clock read costs as much as a small flush) |
//! | `partyroom_slow_client_closes_total` | counter | `party` | clients closed because their queue was full (1013) |
//! | `partyroom_storage_batches_total` | counter | `party`, `result` | storage writes: `ok`, `error` (retried), `fenced` |
//! | `partyroom_storage_batch_seconds` | histogram | `party` | time of a storage write |
//! | `partyroom_room_requests_total` | counter | `party` | HTTP requests handled by rooms |

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

/// `partyroom_rooms_loaded`.
pub const ROOMS_LOADED: &str = "partyroom_rooms_loaded";
/// `partyroom_rooms_started_total`.
pub const ROOMS_STARTED: &str = "partyroom_rooms_started_total";
/// `partyroom_rooms_stopped_total`.
pub const ROOMS_STOPPED: &str = "partyroom_rooms_stopped_total";
/// `partyroom_users_joined_total`.
pub const USERS_JOINED: &str = "partyroom_users_joined_total";
/// `partyroom_users_left_total`.
pub const USERS_LEFT: &str = "partyroom_users_left_total";
/// `partyroom_messages_received_total`.
pub const MESSAGES_RECEIVED: &str = "partyroom_messages_received_total";
/// `partyroom_message_bytes_received_total`.
pub const MESSAGE_BYTES_RECEIVED: &str = "partyroom_message_bytes_received_total";
/// `partyroom_actions_total`.
pub const ACTIONS: &str = "partyroom_actions_total";
/// `partyroom_frames_sent_total`.
pub const FRAMES_SENT: &str = "partyroom_frames_sent_total";
/// `partyroom_frame_bytes_sent_total`.
pub const FRAME_BYTES_SENT: &str = "partyroom_frame_bytes_sent_total";
/// `partyroom_sync_flush_seconds`.
pub const SYNC_FLUSH_SECONDS: &str = "partyroom_sync_flush_seconds";
/// `partyroom_slow_client_closes_total`.
pub const SLOW_CLIENT_CLOSES: &str = "partyroom_slow_client_closes_total";
/// `partyroom_storage_batches_total`.
pub const STORAGE_BATCHES: &str = "partyroom_storage_batches_total";
/// `partyroom_storage_batch_seconds`.
pub const STORAGE_BATCH_SECONDS: &str = "partyroom_storage_batch_seconds";
/// `partyroom_room_requests_total`.
pub const ROOM_REQUESTS: &str = "partyroom_room_requests_total";

/// What became of a client message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionOutcome {
    /// A handler (or the fallback) ran.
    Ok,
    /// Not a JSON object with a string `action`.
    Malformed,
    /// No handler and no fallback.
    Unknown,
    /// The value did not deserialize or validate.
    Invalid,
    /// A guard refused it.
    Refused,
    /// Over the room's message size limit.
    TooLarge,
    /// The handler panicked.
    Panicked,
}

impl ActionOutcome {
    const ALL: [ActionOutcome; 7] = [
        Self::Ok,
        Self::Malformed,
        Self::Unknown,
        Self::Invalid,
        Self::Refused,
        Self::TooLarge,
        Self::Panicked,
    ];

    /// The `outcome` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Malformed => "malformed",
            Self::Unknown => "unknown",
            Self::Invalid => "invalid",
            Self::Refused => "refused",
            Self::TooLarge => "too_large",
            Self::Panicked => "panicked",
        }
    }
}

/// Why a room instance stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Idle, saved and unloaded.
    Unloaded,
    /// Server shutdown.
    Shutdown,
    /// Its cluster lease was lost.
    Evicted,
    /// A write was refused as fenced.
    Fenced,
    /// Its stored state could not be read.
    RestoreFailed,
}

impl StopReason {
    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Unloaded => "unloaded",
            Self::Shutdown => "shutdown",
            Self::Evicted => "evicted",
            Self::Fenced => "fenced",
            Self::RestoreFailed => "restore_failed",
        }
    }
}

/// One room instance's metric handles (not `Clone`: it owns the instance's entry in the
/// published counts).
pub(crate) struct RoomMetrics {
    party: String,
    loaded: Gauge,
    pub(crate) joined: Counter,
    pub(crate) left: Counter,
    /// The hot path's counts, published by [`publish`].
    pub(crate) local: Arc<LocalCounts>,
    /// This instance's entry in the published counts, if [`enable`] was called.
    entry: Option<u64>,
    pub(crate) flush: Histogram,
    pub(crate) slow_closes: Counter,
    pub(crate) storage: StorageMetrics,
    pub(crate) requests: Counter,
}

/// The handles of a room's storage writes (recorded by the task that writes).
#[derive(Clone)]
pub(crate) struct StorageMetrics {
    pub(crate) ok: Counter,
    pub(crate) error: Counter,
    pub(crate) fenced: Counter,
    pub(crate) seconds: Histogram,
}

impl Default for StorageMetrics {
    fn default() -> Self {
        Self {
            ok: Counter::noop(),
            error: Counter::noop(),
            fenced: Counter::noop(),
            seconds: Histogram::noop(),
        }
    }
}

impl RoomMetrics {
    /// The handles of a room of `party` (registered with whatever recorder is installed now).
    pub(crate) fn new(party: &str) -> Self {
        let p = party.to_owned();
        let c = |name: &'static str| counter!(name, "party" => p.clone());
        let storage = |result: &'static str| counter!(STORAGE_BATCHES, "party" => p.clone(), "result" => result);
        Self {
            loaded: gauge!(ROOMS_LOADED, "party" => p.clone()),
            joined: c(USERS_JOINED),
            left: c(USERS_LEFT),
            local: Arc::new(LocalCounts::default()),
            entry: None,
            flush: histogram!(SYNC_FLUSH_SECONDS, "party" => p.clone()),
            slow_closes: c(SLOW_CLIENT_CLOSES),
            storage: StorageMetrics {
                ok: storage("ok"),
                error: storage("error"),
                fenced: storage("fenced"),
                seconds: histogram!(STORAGE_BATCH_SECONDS, "party" => p.clone()),
            },
            requests: c(ROOM_REQUESTS),
            party: p,
        }
    }

    /// The instance started: its counts are published from now on.
    pub(crate) fn started(&mut self) {
        counter!(ROOMS_STARTED, "party" => self.party.clone()).increment(1);
        self.loaded.increment(1.0);
        let mut published = PUBLISHED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(parties) = published.as_mut() {
            let party = parties.entry(self.party.clone()).or_default();
            let id = party.next;
            party.next += 1;
            party.live.insert(id, self.local.clone());
            self.entry = Some(id);
        }
    }

    /// The instance stopped (after [`RoomMetrics::started`]): its counts stay in the totals.
    pub(crate) fn stopped(&mut self, why: StopReason) {
        counter!(ROOMS_STOPPED, "party" => self.party.clone(), "reason" => why.label())
            .increment(1);
        self.loaded.decrement(1.0);
        if let Some(id) = self.entry.take() {
            let mut published = PUBLISHED.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(party) = published.as_mut().and_then(|p| p.get_mut(&self.party)) {
                party.live.remove(&id);
                party.retired.add(&self.local);
            }
        }
    }
}

/// The hot path's counts of one room instance. Only the instance's task writes them, so an
/// update is a plain load and store; [`publish`] reads them from another thread.
#[derive(Debug, Default)]
pub(crate) struct LocalCounts {
    messages: AtomicU64,
    message_bytes: AtomicU64,
    actions: [AtomicU64; 7],
    frames: AtomicU64,
    frame_bytes: AtomicU64,
}

/// Add `n` to a counter that only one task writes.
#[inline]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

impl LocalCounts {
    /// A client message of `bytes` bytes, and what became of it.
    #[inline]
    pub(crate) fn message(&self, bytes: usize, outcome: ActionOutcome) {
        bump(&self.messages, 1);
        bump(&self.message_bytes, bytes as u64);
        bump(&self.actions[outcome as usize], 1);
    }

    /// Client messages handled so far.
    pub(crate) fn messages(&self) -> u64 {
        self.messages.load(Relaxed)
    }

    /// Frames queued for clients so far.
    pub(crate) fn frames_sent(&self) -> u64 {
        self.frames.load(Relaxed)
    }

    /// `frames` frames of `bytes` bytes in all queued for clients.
    #[inline]
    pub(crate) fn frames(&self, frames: u64, bytes: u64) {
        bump(&self.frames, frames);
        bump(&self.frame_bytes, bytes);
    }
}

/// Sums of [`LocalCounts`].
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    messages: u64,
    message_bytes: u64,
    actions: [u64; 7],
    frames: u64,
    frame_bytes: u64,
}

impl Totals {
    fn add(&mut self, c: &LocalCounts) {
        self.messages += c.messages.load(Relaxed);
        self.message_bytes += c.message_bytes.load(Relaxed);
        for (t, a) in self.actions.iter_mut().zip(&c.actions) {
            *t += a.load(Relaxed);
        }
        self.frames += c.frames.load(Relaxed);
        self.frame_bytes += c.frame_bytes.load(Relaxed);
    }
}

/// One party's published counts: its running instances and the totals of stopped ones.
#[derive(Default)]
struct PartyCounts {
    next: u64,
    live: HashMap<u64, Arc<LocalCounts>>,
    retired: Totals,
}

/// Every party's counts, once [`enable`] was called.
static PUBLISHED: Mutex<Option<BTreeMap<String, PartyCounts>>> = Mutex::new(None);

/// Keep the counts of the rooms started from now on for [`publish`] (the Prometheus exporter
/// calls this when it is installed, before the rooms are built).
pub fn enable() {
    let mut published = PUBLISHED.lock().unwrap_or_else(|e| e.into_inner());
    published.get_or_insert_with(BTreeMap::new);
}

/// Each party's totals: its stopped instances' and its running ones'.
fn party_totals() -> Vec<(String, Totals)> {
    let published = PUBLISHED.lock().unwrap_or_else(|e| e.into_inner());
    let Some(parties) = published.as_ref() else {
        return Vec::new();
    };
    parties
        .iter()
        .map(|(name, p)| {
            let mut t = p.retired;
            for c in p.live.values() {
                t.add(c);
            }
            (name.clone(), t)
        })
        .collect()
}

/// Hand the rooms' counts of messages, outcomes and frames to the recorder, per party (the
/// exporter calls this before each render).
pub fn publish() {
    for (party, t) in party_totals() {
        let c = |name: &'static str| counter!(name, "party" => party.clone());
        c(MESSAGES_RECEIVED).absolute(t.messages);
        c(MESSAGE_BYTES_RECEIVED).absolute(t.message_bytes);
        c(FRAMES_SENT).absolute(t.frames);
        c(FRAME_BYTES_SENT).absolute(t.frame_bytes);
        for (o, n) in ActionOutcome::ALL.iter().zip(t.actions) {
            counter!(ACTIONS, "party" => party.clone(), "outcome" => o.label()).absolute(n);
        }
    }
}

/// Describe every metric of this module (help texts and units) to the installed recorder.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(ROOMS_LOADED, "Room instances running");
    describe_counter!(ROOMS_STARTED, "Room instances started");
    describe_counter!(ROOMS_STOPPED, "Room instances stopped, by reason");
    describe_counter!(USERS_JOINED, "WebSocket connections that joined a room");
    describe_counter!(USERS_LEFT, "WebSocket connections that left a room");
    describe_counter!(MESSAGES_RECEIVED, "Client messages handled by rooms");
    describe_counter!(
        MESSAGE_BYTES_RECEIVED,
        Unit::Bytes,
        "Bytes of client messages"
    );
    describe_counter!(ACTIONS, "Client messages by outcome");
    describe_counter!(FRAMES_SENT, "Frames queued for clients");
    describe_counter!(
        FRAME_BYTES_SENT,
        Unit::Bytes,
        "Bytes of frames queued for clients"
    );
    describe_histogram!(SYNC_FLUSH_SECONDS, Unit::Seconds, "Time of a sync flush");
    describe_counter!(SLOW_CLIENT_CLOSES, "Clients closed as too slow (1013)");
    describe_counter!(STORAGE_BATCHES, "Storage writes, by result");
    describe_histogram!(
        STORAGE_BATCH_SECONDS,
        Unit::Seconds,
        "Time of a storage write"
    );
    describe_counter!(ROOM_REQUESTS, "HTTP requests handled by rooms");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(party: &str) -> Totals {
        party_totals()
            .into_iter()
            .find(|(p, _)| p == party)
            .map(|(_, t)| t)
            .unwrap_or_default()
    }

    #[test]
    fn counts_add_up_across_running_and_stopped_instances() {
        enable();
        let mut a = RoomMetrics::new("metrics-unit");
        a.started();
        a.local.message(10, ActionOutcome::Ok);
        a.local.message(5, ActionOutcome::Unknown);
        a.local.frames(3, 30);
        let t = totals("metrics-unit");
        assert_eq!(
            (t.messages, t.message_bytes, t.frames, t.frame_bytes),
            (2, 15, 3, 30)
        );
        assert_eq!(t.actions[ActionOutcome::Unknown as usize], 1);
        a.stopped(StopReason::Unloaded);
        let mut b = RoomMetrics::new("metrics-unit");
        b.started();
        b.local.message(1, ActionOutcome::Ok);
        let t = totals("metrics-unit");
        assert_eq!(
            t.messages, 3,
            "a stopped instance's counts stay in the totals"
        );
        assert_eq!(t.actions[ActionOutcome::Ok as usize], 2);
        b.stopped(StopReason::Shutdown);
        assert_eq!(totals("metrics-unit").messages, 3);
    }
}
