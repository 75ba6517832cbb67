//! The server's metrics (connections, refusals, relays), through the [`metrics`] facade; see
//! [`crate::prometheus`] for `/metrics`. The handles are taken when the [`Server`] is built,
//! so install the recorder first.
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `partyroom_connections_open` | gauge | | TCP connections counted against `max_connections` (HTTP and WebSocket) |
//! | `partyroom_websockets_open` | gauge | `kind` | WebSockets open: `room` (served here), `relayed` (to another node) |
//! | `partyroom_websockets_accepted_total` | counter | `kind` | WebSockets upgraded |
//! | `partyroom_connections_refused_total` | counter | `reason` | connections, upgrades and room requests refused: `too_many` (the connection cap), `handshake` (a bad upgrade), `guard` (a room's connect guard), `not_found` (no such party or room type), `unavailable` (cannot be placed or started) |
//! | `partyroom_relayed_requests_total` | counter | | HTTP requests relayed to another node |
//! | `partyroom_outbound_queued_frames` | gauge | | frames waiting for slow sockets, all connections together (at scrape time) |
//! | `partyroom_outbound_queue_max_frames` | gauge | | the longest of those queues (at scrape time) |
//!
//! [`Server`]: crate::Server

use std::sync::Arc;

use metrics::{Counter, Gauge, counter, gauge};
use tokio::sync::OwnedSemaphorePermit;

use crate::outbox::Outbox;

/// `partyroom_connections_open`.
pub const CONNECTIONS_OPEN: &str = "partyroom_connections_open";
/// `partyroom_websockets_open`.
pub const WEBSOCKETS_OPEN: &str = "partyroom_websockets_open";
/// `partyroom_websockets_accepted_total`.
pub const WEBSOCKETS_ACCEPTED: &str = "partyroom_websockets_accepted_total";
/// `partyroom_connections_refused_total`.
pub const CONNECTIONS_REFUSED: &str = "partyroom_connections_refused_total";
/// `partyroom_relayed_requests_total`.
pub const RELAYED_REQUESTS: &str = "partyroom_relayed_requests_total";

/// `partyroom_outbound_queued_frames`.
pub const OUTBOUND_QUEUED: &str = "partyroom_outbound_queued_frames";
/// `partyroom_outbound_queue_max_frames`.
pub const OUTBOUND_QUEUE_MAX: &str = "partyroom_outbound_queue_max_frames";

/// The outboxes of open WebSockets, for the queue gauges; only kept while a Prometheus
/// recorder is installed (see [`crate::prometheus`]), so that nothing is tracked otherwise.
static OUTBOXES: std::sync::Mutex<Option<Outboxes>> = std::sync::Mutex::new(None);

#[derive(Default)]
struct Outboxes {
    next: u64,
    open: std::collections::HashMap<u64, std::sync::Weak<Outbox>>,
}

/// Start tracking outboxes (the recorder was installed).
pub(crate) fn track_outboxes() {
    let mut all = OUTBOXES.lock().unwrap_or_else(|e| e.into_inner());
    all.get_or_insert_with(Outboxes::default);
}

/// An outbox counted in the queue gauges until this is dropped.
pub(crate) struct TrackedOutbox(Option<u64>);

impl TrackedOutbox {
    pub(crate) fn new(outbox: &Arc<Outbox>) -> Self {
        let mut all = OUTBOXES.lock().unwrap_or_else(|e| e.into_inner());
        Self(all.as_mut().map(|all| {
            let id = all.next;
            all.next += 1;
            all.open.insert(id, Arc::downgrade(outbox));
            id
        }))
    }
}

impl Drop for TrackedOutbox {
    fn drop(&mut self) {
        if let Some(id) = self.0 {
            let mut all = OUTBOXES.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(all) = all.as_mut() {
                all.open.remove(&id);
            }
        }
    }
}

/// Set the queue gauges from the open outboxes (called before each scrape).
pub(crate) fn collect_queues() {
    let (total, max) = queue_depths();
    gauge!(OUTBOUND_QUEUED).set(total as f64);
    gauge!(OUTBOUND_QUEUE_MAX).set(max as f64);
}

/// Frames queued in all tracked outboxes, and in the fullest one.
fn queue_depths() -> (usize, usize) {
    let outboxes: Vec<Arc<Outbox>> = {
        let all = OUTBOXES.lock().unwrap_or_else(|e| e.into_inner());
        all.as_ref()
            .map(|all| {
                all.open
                    .values()
                    .filter_map(std::sync::Weak::upgrade)
                    .collect()
            })
            .unwrap_or_default()
    };
    let (mut total, mut max) = (0usize, 0usize);
    for o in &outboxes {
        let n = o.queued();
        total += n;
        max = max.max(n);
    }
    (total, max)
}

/// Why a connection or upgrade was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    TooMany,
    Handshake,
    Guard,
    NotFound,
    Unavailable,
}

/// The server's handles.
#[derive(Clone)]
pub(crate) struct ServerMetrics {
    pub(crate) connections_open: Gauge,
    pub(crate) room_sockets_open: Gauge,
    pub(crate) relayed_sockets_open: Gauge,
    pub(crate) room_sockets: Counter,
    pub(crate) relayed_sockets: Counter,
    refused: [Counter; 5],
    pub(crate) relayed_requests: Counter,
}

impl ServerMetrics {
    pub(crate) fn new() -> Self {
        let refused = |reason: &'static str| counter!(CONNECTIONS_REFUSED, "reason" => reason);
        Self {
            connections_open: gauge!(CONNECTIONS_OPEN),
            room_sockets_open: gauge!(WEBSOCKETS_OPEN, "kind" => "room"),
            relayed_sockets_open: gauge!(WEBSOCKETS_OPEN, "kind" => "relayed"),
            room_sockets: counter!(WEBSOCKETS_ACCEPTED, "kind" => "room"),
            relayed_sockets: counter!(WEBSOCKETS_ACCEPTED, "kind" => "relayed"),
            refused: [
                refused("too_many"),
                refused("handshake"),
                refused("guard"),
                refused("not_found"),
                refused("unavailable"),
            ],
            relayed_requests: counter!(RELAYED_REQUESTS),
        }
    }

    /// Count a refusal.
    pub(crate) fn refused(&self, why: Refusal) {
        self.refused[why as usize].increment(1);
    }
}

/// A connection permit that keeps `partyroom_connections_open` up to date.
#[derive(Debug)]
pub(crate) struct CountedPermit {
    _permit: OwnedSemaphorePermit,
    gauge: Gauge,
}

impl CountedPermit {
    pub(crate) fn new(permit: OwnedSemaphorePermit, gauge: &Gauge) -> Self {
        gauge.increment(1.0);
        Self {
            _permit: permit,
            gauge: gauge.clone(),
        }
    }
}

impl Drop for CountedPermit {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
}

/// Increments a gauge now and decrements it when dropped (an open socket).
pub(crate) struct OpenGuard(Gauge);

impl OpenGuard {
    pub(crate) fn new(gauge: &Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Describe the server's metrics to the installed recorder.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!(
        CONNECTIONS_OPEN,
        "TCP connections counted against max_connections"
    );
    describe_gauge!(WEBSOCKETS_OPEN, "WebSockets open, served here or relayed");
    describe_counter!(WEBSOCKETS_ACCEPTED, "WebSockets upgraded");
    describe_counter!(
        CONNECTIONS_REFUSED,
        "Connections and upgrades refused, by reason"
    );
    describe_counter!(RELAYED_REQUESTS, "HTTP requests relayed to another node");
    metrics::describe_gauge!(OUTBOUND_QUEUED, "Frames waiting for slow sockets, in all");
    metrics::describe_gauge!(OUTBOUND_QUEUE_MAX, "The longest outgoing queue of a socket");
}

#[cfg(test)]
mod tests {
    use partyroom_room::ConnectionSink;

    use super::*;

    #[test]
    fn queue_depths_count_tracked_outboxes_until_they_close() {
        track_outboxes();
        let (base_total, _) = queue_depths();
        let a = Arc::new(Outbox::new(16));
        let b = Arc::new(Outbox::new(16));
        let ta = TrackedOutbox::new(&a);
        let tb = TrackedOutbox::new(&b);
        // No socket attached: every frame waits in the queue.
        for _ in 0..3 {
            a.send(bytes::Bytes::from_static(b"x"));
        }
        b.send(bytes::Bytes::from_static(b"y"));
        let (total, max) = queue_depths();
        assert_eq!(total - base_total, 4);
        assert!(max >= 3);
        drop(ta);
        drop(tb);
        assert_eq!(
            queue_depths().0,
            base_total,
            "untracked when the connection ends"
        );
    }
}
