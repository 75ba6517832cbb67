//! A client asking to join a room, and what handlers and guards learn about it.

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;
use tokio::sync::{mpsc, oneshot};

use super::refusal::Refusal;
use super::sink::{ConnectionSink, Outgoing};
use crate::protocol::close::CloseFrame;

/// Identifies one physical connection inside a room.
pub type ConnId = u64;

/// Longest private session id (the `id` or `_pk` query parameter) a client may connect
/// with, in bytes. A longer one is refused with `400` before any guard runs: ids are kept
/// in memory for every session and are storage keys. The official client sends 36-byte
/// UUIDs.
pub const MAX_SESSION_ID_BYTES: usize = 128;

/// Everything the room needs to accept a client.
#[derive(Debug)]
pub struct ConnectRequest {
    /// The private session id (`id` or `_pk` query parameter); `None` for a fresh session.
    pub session_id: Option<String>,
    /// Query parameters of the connect URL, decoded.
    pub query: Vec<(String, String)>,
    /// Headers of the upgrade request.
    pub headers: HeaderMap,
    /// Where frames for the client go.
    pub(crate) out: Outgoing,
    /// The connect guards already passed ([`RoomHandle::admit`](crate::RoomHandle::admit)).
    pub(crate) admitted: bool,
}

impl ConnectRequest {
    /// Refuse a session id over [`MAX_SESSION_ID_BYTES`].
    pub(crate) fn check_session_id(&self) -> Result<(), Refusal> {
        match &self.session_id {
            Some(id) if id.len() > MAX_SESSION_ID_BYTES => Err(Refusal {
                status: http::StatusCode::BAD_REQUEST,
                reason: format!("Session id too long (at most {MAX_SESSION_ID_BYTES} bytes)"),
            }),
            _ => Ok(()),
        }
    }

    /// What guards see of this request.
    pub fn info(&self) -> ConnectInfo {
        ConnectInfo {
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
    /// number of frames waiting for the client (see [`RoomConfig::outgoing_queue`](crate::RoomConfig::outgoing_queue)).
    pub fn new(
        session_id: Option<String>,
        query: Vec<(String, String)>,
        headers: HeaderMap,
        queue: usize,
    ) -> (Self, ConnectionChannels) {
        let (ftx, frx) = mpsc::channel(queue.max(1));
        let (ctx, crx) = oneshot::channel();
        (
            Self::build(
                session_id,
                query,
                headers,
                Outgoing::Channels {
                    frames: ftx,
                    close: Some(ctx),
                },
            ),
            ConnectionChannels {
                frames: frx,
                close: crx,
            },
        )
    }

    /// A connect request whose frames go to `sink` (a transport's own writer). The sink is
    /// responsible for bounding what it queues (see [`RoomConfig::outgoing_queue`](crate::RoomConfig::outgoing_queue)).
    pub fn with_sink(
        session_id: Option<String>,
        query: Vec<(String, String)>,
        headers: HeaderMap,
        sink: Arc<dyn ConnectionSink>,
    ) -> Self {
        Self::build(session_id, query, headers, Outgoing::Sink(sink))
    }

    fn build(
        session_id: Option<String>,
        query: Vec<(String, String)>,
        headers: HeaderMap,
        out: Outgoing,
    ) -> Self {
        Self {
            session_id: session_id
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty()),
            query,
            headers,
            out,
            admitted: false,
        }
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

/// What a connecting client presented: its upgrade request, as guards see it.
#[derive(Debug, Clone, Default)]
pub struct ConnectInfo {
    /// The private session id (`id` or `_pk`), if any.
    pub session_id: Option<String>,
    /// Query parameters of the connect URL.
    pub query: Vec<(String, String)>,
    /// Headers of the upgrade request.
    pub headers: http::HeaderMap,
}

impl ConnectInfo {
    /// A query parameter.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A header, if it is valid text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}
