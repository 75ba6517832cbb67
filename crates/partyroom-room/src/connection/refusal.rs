//! Refused connections: a guard's [`Refusal`] and the [`ConnectError`] a connect returns.

use crate::protocol::close::CloseFrame;

/// A connect guard's refusal. Before the WebSocket upgrade the client gets an HTTP response
/// with `status` and `{"error": reason}`; a refusal after the upgrade closes the socket with
/// code `4000 + status` (4401, 4403...) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 401, 403, 429...
    pub status: http::StatusCode,
    /// Human-readable reason.
    pub reason: String,
}

impl Refusal {
    /// 401 Unauthorized.
    pub fn unauthorized(reason: impl Into<String>) -> Self {
        Self {
            status: http::StatusCode::UNAUTHORIZED,
            reason: reason.into(),
        }
    }

    /// 403 Forbidden.
    pub fn forbidden(reason: impl Into<String>) -> Self {
        Self {
            status: http::StatusCode::FORBIDDEN,
            reason: reason.into(),
        }
    }

    /// The close frame used when the socket is already open.
    pub fn close_frame(&self) -> CloseFrame {
        CloseFrame {
            code: 4000 + self.status.as_u16(),
            reason: self.reason.clone(),
        }
    }
}

/// Why a connection was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The room has `max_users` users already.
    #[error("room is full")]
    RoomFull,
    /// The room instance stopped.
    #[error("room is gone")]
    RoomGone,
    /// A connect guard refused the client.
    #[error("refused: {}", .0.reason)]
    Refused(Refusal),
}

impl ConnectError {
    /// The close frame to send to the refused client.
    pub fn close_frame(&self) -> CloseFrame {
        match self {
            ConnectError::RoomFull => CloseFrame {
                code: 4003,
                reason: "room is full".into(),
            },
            ConnectError::RoomGone => CloseFrame {
                code: 1011,
                reason: "room is unavailable".into(),
            },
            ConnectError::Refused(refusal) => refusal.close_frame(),
        }
    }
}
