//! Connections as the room sees them: sinks and channels, not sockets.
//!
//! A connection's outgoing side is either a pair of bounded channels ([`ConnectionChannels`],
//! read by a writer task or by a test) or a [`ConnectionSink`] the transport implements (the
//! server's writes frames straight to the socket when it can). Either way it is bounded: when
//! it is full the client is too slow, the room closes it with code 1013 and forgets it, so a
//! client that stops reading never grows server memory beyond its queue.

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;
use tokio::sync::{mpsc, oneshot};

/// What became of a frame handed to a [`ConnectionSink`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkStatus {
    /// Written or queued; it will reach the client unless the connection fails.
    Accepted,
    /// The connection's queue is full: the room closes it as too slow (1013).
    Full,
    /// The connection is gone; its disconnect is on its way to the room.
    Gone,
}

/// The outgoing side of one connection, implemented by a transport.
///
/// The room calls it from its own task, once per frame and receiver, so it must never block
/// or await: write at once if the transport can, queue (bounded) otherwise.
pub trait ConnectionSink: Send + Sync + 'static {
    /// Hand over one text frame (one complete JSON document), in order.
    fn send(&self, frame: Bytes) -> SinkStatus;
    /// Close the connection with `frame`. Frames already accepted are sent first, except when
    /// the code is 1013 (the client is too slow: what it has not read is dropped).
    fn close(&self, frame: CloseFrame);

    /// Hold this connection's small messages back (`true`) instead of delivering each one as
    /// it arrives, or stop holding them (`false`). Held messages wait in the transport until
    /// [`drain_held`](Self::drain_held). A room with a sync throttle holds the reads of clients
    /// that send in window after window, so that they do not wake it once per message (see
    /// "Held reads" in the architecture notes). Returns whether the transport can hold reads;
    /// by default it cannot, and the room then never asks again.
    fn hold_reads(&self, hold: bool) -> bool {
        let _ = hold;
        false
    }

    /// Deliver the held messages now: read what has arrived, hand each message to the room with
    /// [`RoomHandle::message`](crate::RoomHandle::message), then call
    /// [`RoomHandle::drained`](crate::RoomHandle::drained). Must not block: the reading is done
    /// by the connection's own task. Called only on a sink whose reads are held.
    fn drain_held(&self) {}
}

/// Where the room writes a connection's frames.
pub(crate) enum Outgoing {
    Channels {
        frames: mpsc::Sender<Bytes>,
        close: Option<oneshot::Sender<CloseFrame>>,
    },
    Sink(Arc<dyn ConnectionSink>),
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outgoing::Channels { .. } => "Outgoing::Channels",
            Outgoing::Sink(_) => "Outgoing::Sink",
        })
    }
}

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
    /// The connect guards already passed ([`crate::RoomHandle::admit`]).
    pub(crate) admitted: bool,
}

impl ConnectRequest {
    /// Refuse a session id over [`MAX_SESSION_ID_BYTES`].
    pub(crate) fn check_session_id(&self) -> Result<(), crate::Refusal> {
        match &self.session_id {
            Some(id) if id.len() > MAX_SESSION_ID_BYTES => Err(crate::Refusal {
                status: http::StatusCode::BAD_REQUEST,
                reason: format!("Session id too long (at most {MAX_SESSION_ID_BYTES} bytes)"),
            }),
            _ => Ok(()),
        }
    }

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
    /// responsible for bounding what it queues (see [`crate::RoomConfig::outgoing_queue`]).
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

/// The room's side of a live connection.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) info: Arc<ConnInfo>,
    pub(crate) out: Outgoing,
    /// Held reads (see `actor::held_reads`).
    pub(crate) reads: ReadHold,
}

/// A connection's held-reads state, kept by the room.
#[derive(Debug, Default)]
pub(crate) struct ReadHold {
    /// Its transport holds its messages back until asked to drain.
    pub(crate) held: bool,
    /// A drain was asked for and not answered yet.
    pub(crate) drain_pending: bool,
    /// Its transport cannot hold reads: never ask again.
    pub(crate) unsupported: bool,
    /// The sync window (`SyncScheduler::windows`) of its last message.
    pub(crate) last_window: Option<u64>,
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
        match &self.out {
            Outgoing::Channels { frames, .. } => match frames.try_send(frame) {
                Ok(()) => Push::Queued,
                Err(mpsc::error::TrySendError::Full(_)) => Push::Full,
                Err(mpsc::error::TrySendError::Closed(_)) => Push::Gone,
            },
            Outgoing::Sink(sink) => match sink.send(frame) {
                SinkStatus::Accepted => Push::Queued,
                SinkStatus::Full => Push::Full,
                SinkStatus::Gone => Push::Gone,
            },
        }
    }

    pub(crate) fn new(info: Arc<ConnInfo>, out: Outgoing) -> Self {
        Self {
            info,
            out,
            reads: ReadHold::default(),
        }
    }

    /// See [`ConnectionSink::hold_reads`]; channels cannot hold reads.
    pub(crate) fn hold_reads(&self, hold: bool) -> bool {
        match &self.out {
            Outgoing::Channels { .. } => false,
            Outgoing::Sink(sink) => sink.hold_reads(hold),
        }
    }

    /// See [`ConnectionSink::drain_held`].
    pub(crate) fn drain_held(&self) {
        if let Outgoing::Sink(sink) = &self.out {
            sink.drain_held();
        }
    }

    pub(crate) fn close(&mut self, frame: CloseFrame) {
        match &mut self.out {
            Outgoing::Channels { close, .. } => {
                if let Some(tx) = close.take() {
                    let _ = tx.send(frame);
                }
            }
            Outgoing::Sink(sink) => sink.close(frame),
        }
    }
}
