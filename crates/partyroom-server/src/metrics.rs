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
//!
//! [`Server`]: crate::Server

use metrics::{Counter, Gauge, counter, gauge};
use tokio::sync::OwnedSemaphorePermit;

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
}
