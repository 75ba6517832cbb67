//! The clock rooms read: passed in ([`crate::registry::RoomsBuilder::clock`]), never reached
//! for, so tests and tools can run a room at any wall-clock time.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Where a room gets the time.
///
/// Two clocks, because a room needs both: a monotonic one for everything it schedules
/// (throttle windows, session expiry, unloading), and the wall clock for what it stores
/// (when a session was created or left, when a transfer token was made), since stored times
/// must mean the same after a restart.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Now, on the monotonic clock the room's timers sleep on (tokio's, so a paused test
    /// runtime moves it).
    fn now(&self) -> Instant;

    /// Now on the wall clock, in milliseconds since the Unix epoch.
    fn unix_ms(&self) -> u64;
}

/// The clock of the machine: tokio's [`Instant::now`] and [`SystemTime::now`]. The default.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn unix_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}
