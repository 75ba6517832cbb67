//! The sync throttle (spec 6.8): when a room sends the patches its handlers produce.

use std::time::Duration;

use partyroom_state::patch::{can_merge, merge_patch};
use serde_json::Value;
use tokio::time::Instant;

/// Throttles state patches: leading edge sent at once, the rest merged and sent at the end of
/// the window.
#[derive(Debug)]
pub(crate) struct SyncScheduler {
    throttle: Duration,
    pending: Option<Value>,
    window_end: Option<Instant>,
    /// How many windows have opened so far.
    windows: u64,
}

impl SyncScheduler {
    pub(crate) fn new(throttle: Duration) -> Self {
        Self {
            throttle,
            pending: None,
            window_end: None,
            windows: 0,
        }
    }

    /// A new patch; returns the patches to send now, in order.
    pub(crate) fn push(&mut self, patch: Value, now: Instant) -> Vec<Value> {
        if self.throttle.is_zero() {
            return vec![patch];
        }
        match self.window_end {
            Some(end) if now < end => match self.pending.as_mut() {
                None => {
                    self.pending = Some(patch);
                    Vec::new()
                }
                Some(pending) if can_merge(pending, &patch) => {
                    merge_patch(pending, patch);
                    Vec::new()
                }
                Some(_) => {
                    let earlier = self.pending.replace(patch).expect("pending checked");
                    vec![earlier]
                }
            },
            _ => {
                // The window is over (or there was none): what waited goes first, then this
                // patch, and a new window starts.
                self.window_end = Some(now + self.throttle);
                self.windows += 1;
                match self.pending.take() {
                    None => vec![patch],
                    Some(mut pending) if can_merge(&pending, &patch) => {
                        merge_patch(&mut pending, patch);
                        vec![pending]
                    }
                    Some(pending) => vec![pending, patch],
                }
            }
        }
    }

    /// Whether a throttle window is open at `now` (changes made now go out at its end).
    pub(crate) fn window_open(&self, now: Instant) -> bool {
        !self.throttle.is_zero() && self.window_end.is_some_and(|end| now < end)
    }

    /// The end of the current throttle window, or of the last one (then in the past).
    pub(crate) fn window_end(&self) -> Option<Instant> {
        self.window_end
    }

    /// How many windows have opened so far: the number of the current (or last) one.
    pub(crate) fn windows(&self) -> u64 {
        self.windows
    }

    /// The throttle (zero: none).
    pub(crate) fn throttle(&self) -> Duration {
        self.throttle
    }

    /// When the trailing edge is due.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        if self.pending.is_some() {
            self.window_end
        } else {
            None
        }
    }

    /// The trailing edge: the merged patch, if any. A new window starts after it.
    pub(crate) fn fire(&mut self, now: Instant) -> Option<Value> {
        match self.window_end {
            Some(end) if now >= end => {
                let pending = self.pending.take();
                self.window_end = pending.as_ref().map(|_| now + self.throttle);
                self.windows += u64::from(pending.is_some());
                pending
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test(start_paused = true)]
    async fn throttle_leading_and_trailing() {
        let mut s = SyncScheduler::new(Duration::from_millis(50));
        let t0 = Instant::now();
        assert_eq!(s.push(json!({"a":1}), t0), vec![json!({"a":1})]);
        assert!(s.push(json!({"a":2}), t0).is_empty());
        assert!(s.push(json!({"b":3}), t0).is_empty());
        assert!(s.push(json!({"a":4}), t0).is_empty());
        assert_eq!(s.deadline(), Some(t0 + Duration::from_millis(50)));
        assert_eq!(s.fire(t0 + Duration::from_millis(10)), None);
        assert_eq!(
            s.fire(t0 + Duration::from_millis(50)),
            Some(json!({"a":4,"b":3}))
        );
        // Nothing pending at the end of the next window: the window closes.
        assert_eq!(s.deadline(), None);
        assert_eq!(s.fire(t0 + Duration::from_millis(100)), None);
        assert_eq!(
            s.push(json!({"c":1}), t0 + Duration::from_millis(200)),
            vec![json!({"c":1})]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_patch_pushed_after_a_missed_deadline_follows_what_waited() {
        // The room was busy past the end of the window: the waiting patch must not be
        // overtaken by the new one.
        let mut s = SyncScheduler::new(Duration::from_millis(50));
        let t0 = Instant::now();
        s.push(json!({"a":1}), t0);
        assert!(s.push(json!({"a":2}), t0).is_empty());
        assert!(s.window_open(t0));
        let late = t0 + Duration::from_millis(60);
        assert!(!s.window_open(late));
        assert_eq!(s.push(json!({"b":3}), late), vec![json!({"a":2,"b":3})]);
        assert_eq!(s.window_end(), Some(late + Duration::from_millis(50)));
        // A patch that cannot be merged is sent after the waiting one.
        assert!(
            s.push(json!({"o":"$delete"}), late + Duration::from_millis(1))
                .is_empty()
        );
        let later = late + Duration::from_millis(60);
        assert_eq!(
            s.push(json!({"o":{"x":1}}), later),
            vec![json!({"o":"$delete"}), json!({"o":{"x":1}})]
        );
    }

    #[test]
    fn unthrottled_sends_everything() {
        let mut s = SyncScheduler::new(Duration::ZERO);
        assert_eq!(s.push(json!({"a":1}), Instant::now()).len(), 1);
        assert_eq!(s.deadline(), None);
    }
}
