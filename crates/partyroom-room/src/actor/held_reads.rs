//! Held reads: with a sync throttle, a client that sends in window after window does not
//! wake the room once per message.
//!
//! With a throttle the room sends its changes only at the end of each window, so handling a
//! message the moment it arrives buys nothing: what it changes waits for the window's end
//! anyway. Yet each message still costs a wake-up of the server thread and of two tasks.
//! When a connection sends in two windows in a row, the room asks its transport to hold its
//! reads ([`ConnectionSink::hold_reads`]; the server raises the socket's receive low-water
//! mark, so the kernel no longer signals each small message). At the end of each window the
//! room asks every held connection to drain ([`ConnectionSink::drain_held`]), handles what
//! they deliver, and flushes once all have answered ([`RoomHandle::drained`]), or after
//! [`DRAIN_WAIT`] at most. Every message therefore still makes the flush of the window it
//! arrived in, and one wake-up per window replaces one per message.
//!
//! A connection whose drain finds nothing goes back to being read as its messages arrive; a
//! client that sends more than the low-water mark within a window is read at once. Closes are
//! always signalled at once.
//!
//! [`ConnectionSink::hold_reads`]: crate::ConnectionSink::hold_reads
//! [`ConnectionSink::drain_held`]: crate::ConnectionSink::drain_held
//! [`RoomHandle::drained`]: crate::RoomHandle::drained

use std::time::Duration;

use tokio::time::Instant;

use super::sync_scheduler::SyncScheduler;
use crate::clock::Clock;
use crate::connection::live::{Conn, Conns, ReadHold};

/// Longest the window-end flush waits for the held connections' answers.
pub(crate) const DRAIN_WAIT: Duration = Duration::from_millis(2);

/// The room's side of held reads.
#[derive(Debug, Default)]
pub(crate) struct HeldReads {
    /// Connections whose reads are held.
    held: usize,
    /// Drains asked for and not answered yet.
    draining: usize,
    /// When to stop waiting for the answers.
    drain_deadline: Option<Instant>,
    /// When the last drain was asked for (or the first hold began).
    last_drain: Option<Instant>,
    /// Drains asked for so far: where the next one starts in the connection list, so that the
    /// held connections take turns at being handled first.
    drains: usize,
    /// When the flush the last drain delayed was due.
    flush_due: Option<Instant>,
}

impl HeldReads {
    /// Drains are awaited: the window-end flush waits.
    pub(crate) fn draining(&self) -> bool {
        self.draining > 0
    }

    /// The time a flush at `now` counts as for the sync window: the time it was due, when a
    /// drain delayed it, so that the next window starts when it would have without one.
    pub(crate) fn flush_time(&mut self, now: Instant) -> Instant {
        self.flush_due
            .take()
            .filter(|due| now.duration_since(*due) <= 2 * DRAIN_WAIT)
            .unwrap_or(now)
    }

    /// When the room must next act: the drain deadline while waiting, otherwise the next drain
    /// (the end of a window that closes after the last drain; without one, a throttle after
    /// the last drain).
    pub(crate) fn deadline(
        &self,
        window_end: Option<Instant>,
        throttle: Duration,
    ) -> Option<Instant> {
        if self.draining > 0 {
            return self.drain_deadline;
        }
        if self.held == 0 {
            return None;
        }
        match window_end.filter(|end| Some(*end) > self.last_drain) {
            Some(end) => Some(end),
            None => self.last_drain.map(|t| t + throttle),
        }
    }
}

impl HeldReads {
    /// After a message on `conn` in sync window `window`: hold its reads if it also sent in
    /// the previous window.
    pub(crate) fn consider(&mut self, conn: &mut Conn, window: u64, clock: &dyn Clock) {
        let reads = &mut conn.reads;
        let busy = reads.last_window.is_some_and(|last| window <= last + 1);
        reads.last_window = Some(window);
        if !busy || reads.held || reads.unsupported {
            return;
        }
        if !conn.hold_reads(true) {
            conn.reads.unsupported = true;
            return;
        }
        conn.reads.held = true;
        self.held += 1;
        if self.last_drain.is_none() {
            self.last_drain = Some(clock.now());
        }
    }

    /// On the room's timer: ask the held connections to drain when a window ends, or stop
    /// waiting for their answers once [`DRAIN_WAIT`] is over. `mail_waiting`: the mailbox is
    /// not empty, so answers may be in it; they get one more [`DRAIN_WAIT`] to be handled.
    pub(crate) fn drive(
        &mut self,
        now: Instant,
        mail_waiting: bool,
        conns: &mut Conns,
        sync: &SyncScheduler,
        room: &str,
    ) {
        if self.draining > 0 {
            let over = self
                .drain_deadline
                .is_some_and(|d| now >= d && (!mail_waiting || now >= d + DRAIN_WAIT));
            if over {
                tracing::debug!(room, late = self.draining, "drain answers late");
                // Late answers are ignored; their messages are handled when they come.
                for conn in conns.values_mut() {
                    conn.reads.drain_pending = false;
                }
                self.draining = 0;
                self.drain_deadline = None;
            }
            return;
        }
        self.start_drain_if_due(now, conns, sync);
    }

    /// Ask the held connections to drain if a drain is due (a window has ended since the
    /// last one) and none is under way. Every window-end flush comes after this.
    pub(crate) fn start_drain_if_due(
        &mut self,
        now: Instant,
        conns: &mut Conns,
        sync: &SyncScheduler,
    ) {
        let due = self.draining == 0
            && self
                .deadline(sync.window_end(), sync.throttle())
                .is_some_and(|at| now >= at);
        if !due {
            return;
        }
        self.last_drain = Some(now);
        self.flush_due = Some(now);
        // Connection tasks run in the order they are woken: start at a different connection
        // each time, so that no client's messages are always handled first.
        let start = self.drains % conns.len().max(1);
        self.drains = self.drains.wrapping_add(1);
        let (head, tail) = conns.as_mut_slice().split_at_mut(start);
        for (_, conn) in tail.iter_mut().chain(head.iter_mut()) {
            if conn.reads.held && !conn.reads.drain_pending {
                conn.reads.drain_pending = true;
                self.draining += 1;
                conn.drain_held();
            }
        }
        if self.draining > 0 {
            self.drain_deadline = Some(now + DRAIN_WAIT);
        }
    }

    /// A held connection answered its drain; `delivered`: it handed over messages first.
    pub(crate) fn on_drained(&mut self, conn: &mut Conn, delivered: bool) {
        if !std::mem::take(&mut conn.reads.drain_pending) {
            return; // answered after the room stopped waiting
        }
        self.draining -= 1;
        if self.draining == 0 {
            self.drain_deadline = None;
        }
        if !delivered && conn.reads.held {
            // A quiet client: read its messages as they arrive again.
            conn.hold_reads(false);
            conn.reads.held = false;
            self.held -= 1;
        }
    }

    /// A connection left: it no longer holds reads or owes an answer.
    pub(crate) fn forget(&mut self, reads: &ReadHold) {
        if reads.held {
            self.held -= 1;
        }
        if reads.drain_pending {
            self.draining -= 1;
            if self.draining == 0 {
                self.drain_deadline = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_drain_is_the_end_of_a_window_after_the_last_one() {
        let t0 = Instant::now();
        let throttle = Duration::from_millis(16);
        let mut h = HeldReads::default();
        assert_eq!(h.deadline(Some(t0), throttle), None, "nothing held");
        h.held = 1;
        h.last_drain = Some(t0);
        // The window that ended at the last drain does not count again.
        assert_eq!(h.deadline(Some(t0), throttle), Some(t0 + throttle));
        // Without any window, a throttle after the last drain.
        assert_eq!(h.deadline(None, throttle), Some(t0 + throttle));
        // A window that closes later: its end.
        let end = t0 + Duration::from_millis(5);
        assert_eq!(h.deadline(Some(end), throttle), Some(end));
        // While waiting for answers: the drain deadline.
        h.draining = 2;
        h.drain_deadline = Some(t0 + DRAIN_WAIT);
        assert_eq!(h.deadline(Some(end), throttle), Some(t0 + DRAIN_WAIT));
    }
}
