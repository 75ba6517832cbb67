//! Where a room writes a connection's frames: a sink the transport implements, or channels.
//!
//! A connection's outgoing side is either a pair of bounded channels
//! ([`ConnectionChannels`](super::request::ConnectionChannels), read by a writer task or by a
//! test) or a [`ConnectionSink`] the transport implements (the server's writes frames straight
//! to the socket when it can). Either way it is bounded: when it is full the client is too
//! slow, the room closes it with code 1013 and forgets it, so a client that stops reading
//! never grows server memory beyond its queue.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::protocol::close::CloseFrame;

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
