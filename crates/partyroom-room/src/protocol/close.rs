//! Close frames: how a room ends a client's connection.

/// Why the room closed a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// WebSocket close code.
    pub code: u16,
    /// Human-readable reason (at most 123 bytes on the wire).
    pub reason: String,
}

impl CloseFrame {
    /// 1013 "try again later": the client did not read fast enough.
    pub fn too_slow() -> Self {
        Self {
            code: 1013,
            reason: "client too slow: outgoing queue full".into(),
        }
    }

    /// 1012 "service restart": the room now belongs to another server (its lease was lost);
    /// clients reconnect, and reach it there.
    pub fn room_moved() -> Self {
        Self {
            code: 1012,
            reason: "room moved: reconnect".into(),
        }
    }

    /// 4000: an operator disconnected the user (the monitor).
    pub fn disconnected_by_operator() -> Self {
        Self {
            code: 4000,
            reason: "disconnected by an operator".into(),
        }
    }

    /// 1001 "going away": the room is shutting down.
    pub fn going_away() -> Self {
        Self {
            code: 1001,
            reason: "room closed".into(),
        }
    }
}
