//! Static options of a room type.

use std::time::Duration;

/// Options of a room type, the equivalent of `@Room({...})` in `@signe/room`.
///
/// ```
/// use partyroom_room::RoomConfig;
/// use std::time::Duration;
/// let config = RoomConfig::new("game-{id}")
///     .session_expiry(Duration::from_secs(2))
///     .throttle_sync(Duration::from_millis(16))
///     .max_users(4);
/// assert_eq!(config.path(), "game-{id}");
/// ```
#[derive(Debug, Clone)]
pub struct RoomConfig {
    pub(crate) path: String,
    pub(crate) throttle_sync: Duration,
    pub(crate) throttle_storage: Duration,
    pub(crate) session_expiry: Option<Duration>,
    pub(crate) max_users: Option<usize>,
    pub(crate) outgoing_queue: usize,
    pub(crate) max_message_bytes: usize,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) auto_sync: bool,
    pub(crate) transfer_expiry: Duration,
    pub(crate) batch_messages: usize,
    pub(crate) hold_reads: bool,
}

impl RoomConfig {
    /// A room type whose room ids match `path` (`{name}` segments capture `[A-Za-z0-9_-]+`).
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            throttle_sync: Duration::ZERO,
            throttle_storage: Duration::ZERO,
            session_expiry: Some(Duration::from_secs(300)),
            max_users: None,
            outgoing_queue: 1024,
            max_message_bytes: 64 * 1024,
            idle_timeout: Some(Duration::from_secs(60)),
            auto_sync: true,
            transfer_expiry: Duration::from_secs(300),
            batch_messages: 64,
            hold_reads: true,
        }
    }

    /// The room id pattern.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Client messages already waiting in the room's mailbox are handled one after the other
    /// before their changes are flushed, at most `messages` at a time: a burst of actions
    /// becomes one patch instead of one per action. This adds no delay (only messages that
    /// are already there are taken), so a quiet room still sends one patch per action; under
    /// load it sends fewer, larger packets. Messages a handler sends with `send`/`broadcast`
    /// still follow the state changes made before them. Default 64; 1 flushes after every
    /// message.
    #[must_use]
    pub fn batch_messages(mut self, messages: usize) -> Self {
        self.batch_messages = messages.max(1);
        self
    }

    /// With a sync throttle, hold the reads of clients that send in window after window and
    /// take their messages at the end of each window, just before its patch is flushed, instead
    /// of as each one arrives (default: on; it has no effect without a throttle). The messages
    /// still make the patch of the window they arrived in, and the server wakes up once per
    /// window instead of once per message. What changes is the order in which messages of the
    /// same window are handled: those of held clients come after the others, and the held
    /// clients take turns at going first. Turn it off when handlers must see messages in the
    /// order they arrived (first come, first served within 16 ms). Needs a transport that can
    /// hold reads (the server, on Linux).
    #[must_use]
    pub fn hold_reads(mut self, hold: bool) -> Self {
        self.hold_reads = hold;
        self
    }

    /// Coalesce state patches: the first change after a quiet period is sent at once, later
    /// ones are merged and sent `every` after it (spec 6.8). Zero (the default) sends a patch
    /// after every handler.
    #[must_use]
    pub fn throttle_sync(mut self, every: Duration) -> Self {
        self.throttle_sync = every;
        self
    }

    /// Batch storage writes: a change is written at most this long after it was made (zero,
    /// the default, writes after every handler). Unlike the debounce of `@signe/room` (spec
    /// 10.5), a busy room still saves at least this often.
    #[must_use]
    pub fn throttle_storage(mut self, after: Duration) -> Self {
        self.throttle_storage = after;
        self
    }

    /// How long a disconnected session (and its user) survives. Default 5 minutes.
    #[must_use]
    pub fn session_expiry(mut self, after: Duration) -> Self {
        self.session_expiry = Some(after);
        self
    }

    /// Sessions never expire.
    #[must_use]
    pub fn sessions_never_expire(mut self) -> Self {
        self.session_expiry = None;
        self
    }

    /// Refuse new users beyond this many (users with a live session, connected or not).
    #[must_use]
    pub fn max_users(mut self, max: usize) -> Self {
        self.max_users = Some(max);
        self
    }

    /// Frames a connection may have queued before it is considered too slow and closed
    /// (close code 1013). Default 1024.
    #[must_use]
    pub fn outgoing_queue(mut self, frames: usize) -> Self {
        self.outgoing_queue = frames.max(1);
        self
    }

    /// Largest accepted client message in bytes; larger ones are dropped. Default 64 KiB.
    #[must_use]
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// Unload the room from memory after it has had no connection for this long: its state is
    /// saved, the instance stops, and the next request or connection restores it from storage.
    /// Default 60 s.
    #[must_use]
    pub fn idle_timeout(mut self, after: Duration) -> Self {
        self.idle_timeout = Some(after);
        self
    }

    /// Keep the room in memory while the process lives.
    #[must_use]
    pub fn never_unload(mut self) -> Self {
        self.idle_timeout = None;
        self
    }

    /// Start with automatic sync off (`autoSync = false`): changes wait for
    /// [`crate::Cx::apply_sync`] (spec 6.9). Handlers can switch it at runtime.
    #[must_use]
    pub fn manual_sync(mut self) -> Self {
        self.auto_sync = false;
        self
    }

    /// How long a session transfer token stays valid. Default 5 minutes.
    #[must_use]
    pub fn transfer_expiry(mut self, after: Duration) -> Self {
        self.transfer_expiry = after;
        self
    }

    /// The configured outgoing queue length.
    pub fn outgoing_queue_len(&self) -> usize {
        self.outgoing_queue
    }
}
