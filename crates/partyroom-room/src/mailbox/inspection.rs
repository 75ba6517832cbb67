//! What an operator may see of a room and do to it (the monitor): counts, connections,
//! sessions and state; disconnecting a user. Private session ids are never shown.

use serde::Serialize;
use serde_json::Value;

use crate::connection::request::ConnId;

/// A room's counts, cheap to ask for often.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomStats {
    /// Open WebSocket connections.
    pub connections: usize,
    /// Distinct users among them (a user with two tabs counts once).
    pub users: usize,
    /// Sessions the room keeps (connected or waiting to expire).
    pub sessions: usize,
    /// Client messages the instance has handled since it started.
    pub messages: u64,
    /// Frames it has queued for clients since it started.
    pub frames_sent: u64,
    /// Bytes of its synchronized state as JSON: an estimate of its size in memory.
    pub state_bytes: usize,
}

/// One open connection of a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionView {
    /// The connection's id in its room.
    pub conn: ConnId,
    /// The public id of its user.
    pub user: String,
}

/// One session of a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    /// The public id it maps to.
    pub user: String,
    /// Its open connections.
    pub connections: u32,
    /// Wall-clock milliseconds when its last connection closed, if it has none.
    pub disconnected_ms: Option<u64>,
}

/// Everything the monitor shows of one room.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomInspection {
    /// The counts.
    pub stats: RoomStats,
    /// The open connections.
    pub connections: Vec<ConnectionView>,
    /// The sessions.
    pub sessions: Vec<SessionView>,
    /// The synchronized state, as a client's snapshot shows it.
    pub state: Value,
}
