//! Connections as the room sees them: channels, not sockets.
//!
//! The server (or the test harness) creates a [`ConnectionChannels`] pair per client. The room
//! pushes frames into a bounded queue; one writer task per connection drains it to the socket.
//! When the queue is full the client is too slow: the room closes it with code 1013 and forgets
//! it, so a client that stops reading never grows server memory beyond its queue.

use bytes::Bytes;
use http::HeaderMap;
use tokio::sync::{mpsc, oneshot};

/// Identifies one physical connection inside a room.
pub type ConnId = u64;

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

    /// 1001 "going away": the room is shutting down.
    pub fn going_away() -> Self {
        Self {
            code: 1001,
            reason: "room closed".into(),
        }
    }
}

/// Everything the room needs to accept a client.
#[derive(Debug)]
pub struct ConnectRequest {
    /// The private session id (`id` or `_pk` query parameter); `None` for a fresh session.
    pub session_id: Option<String>,
    /// Query parameters of the connect URL, decoded.
    pub query: Vec<(String, String)>,
    /// Headers of the upgrade request.
    pub headers: HeaderMap,
    /// Frames for the client.
    pub(crate) frames: mpsc::Sender<Bytes>,
    /// Fired when the room closes the connection.
    pub(crate) close: oneshot::Sender<CloseFrame>,
    /// The connect guards already passed ([`crate::RoomHandle::admit`]).
    pub(crate) admitted: bool,
}

impl ConnectRequest {
    /// What guards see of this request.
    pub fn info(&self) -> crate::handler::ConnectInfo {
        crate::handler::ConnectInfo {
            session_id: self.session_id.clone(),
            query: self.query.clone(),
            headers: self.headers.clone(),
        }
    }
}

/// The client side of a connection's channels: what a writer task (or a test) reads.
#[derive(Debug)]
pub struct ConnectionChannels {
    /// Text frames to deliver, in order. Each is one JSON document.
    pub frames: mpsc::Receiver<Bytes>,
    /// Resolves when the room closes the connection (slow client, refusal, shutdown).
    pub close: oneshot::Receiver<CloseFrame>,
}

impl ConnectRequest {
    /// A connect request and the channels to read what the room sends. `queue` bounds the
    /// number of frames waiting for the client (see [`crate::RoomConfig::outgoing_queue`]).
    pub fn new(
        session_id: Option<String>,
        query: Vec<(String, String)>,
        headers: HeaderMap,
        queue: usize,
    ) -> (Self, ConnectionChannels) {
        let (ftx, frx) = mpsc::channel(queue.max(1));
        let (ctx, crx) = oneshot::channel();
        (
            Self {
                session_id: session_id
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty()),
                query,
                headers,
                frames: ftx,
                close: ctx,
                admitted: false,
            },
            ConnectionChannels {
                frames: frx,
                close: crx,
            },
        )
    }
}

/// What a handler knows about the connection that triggered it.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The connection id.
    pub id: ConnId,
    /// The private session id (secret; never sent to other clients).
    pub private_id: String,
    /// The public id of the user.
    pub public_id: String,
    /// Query parameters of the connect URL.
    pub query: Vec<(String, String)>,
    /// Headers of the upgrade request.
    pub headers: HeaderMap,
}

impl ConnInfo {
    /// A query parameter of the connect URL.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The room's side of a live connection.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) info: std::sync::Arc<ConnInfo>,
    pub(crate) frames: mpsc::Sender<Bytes>,
    pub(crate) close: Option<oneshot::Sender<CloseFrame>>,
}

/// Result of queueing a frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Push {
    Queued,
    /// Queue full: the connection must be closed as too slow.
    Full,
    /// The client side is gone (its task ended); a disconnect is on its way.
    Gone,
}

impl Conn {
    pub(crate) fn push(&self, frame: Bytes) -> Push {
        match self.frames.try_send(frame) {
            Ok(()) => Push::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => Push::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => Push::Gone,
        }
    }

    pub(crate) fn close(&mut self, frame: CloseFrame) {
        if let Some(tx) = self.close.take() {
            let _ = tx.send(frame);
        }
    }
}
