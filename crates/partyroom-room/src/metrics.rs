//! The room runtime's metrics, through the [`metrics`] facade: nothing is recorded unless the
//! application installs a recorder (`partyroom_server::prometheus` does, for `/metrics`).
//!
//! Every room caches its handles when it starts ([`RoomMetrics::new`]), so the hot path pays
//! one relaxed atomic add per batch of frames or per message, never a lookup; install the
//! recorder before building the rooms. Labels are bounded: `party` (the room types an app
//! registers) and an outcome or reason from a fixed list, never a room or user id.
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

/// One room instance's metric handles.
#[derive(Clone)]
pub(crate) struct RoomMetrics {
    party: String,
    loaded: Gauge,
    pub(crate) joined: Counter,
    pub(crate) left: Counter,
    pub(crate) messages: Counter,
    pub(crate) message_bytes: Counter,
    actions: [Counter; 7],
    pub(crate) frames: Counter,
    pub(crate) frame_bytes: Counter,
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
            messages: c(MESSAGES_RECEIVED),
            message_bytes: c(MESSAGE_BYTES_RECEIVED),
            actions: ActionOutcome::ALL
                .map(|o| counter!(ACTIONS, "party" => p.clone(), "outcome" => o.label())),
            frames: c(FRAMES_SENT),
            frame_bytes: c(FRAME_BYTES_SENT),
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

    /// Count a message's outcome.
    pub(crate) fn action(&self, outcome: ActionOutcome) {
        self.actions[outcome as usize].increment(1);
    }

    /// The instance started.
    pub(crate) fn started(&self) {
        counter!(ROOMS_STARTED, "party" => self.party.clone()).increment(1);
        self.loaded.increment(1.0);
    }

    /// The instance stopped (after [`RoomMetrics::started`]).
    pub(crate) fn stopped(&self, why: StopReason) {
        counter!(ROOMS_STOPPED, "party" => self.party.clone(), "reason" => why.label())
            .increment(1);
        self.loaded.decrement(1.0);
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
