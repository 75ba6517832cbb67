//! A connection as its room keeps it: who it is, where its frames go, whether its reads
//! are held.

use std::sync::Arc;

use bytes::Bytes;
use indexmap::IndexMap;
use tokio::sync::mpsc;

use super::request::{ConnId, ConnInfo};
use super::sink::{Outgoing, SinkStatus};
use crate::protocol::close::CloseFrame;

/// A room's connections, in the order they joined.
pub(crate) type Conns = IndexMap<ConnId, Conn>;

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

    /// See [`ConnectionSink::hold_reads`](super::sink::ConnectionSink::hold_reads); channels cannot hold reads.
    pub(crate) fn hold_reads(&self, hold: bool) -> bool {
        match &self.out {
            Outgoing::Channels { .. } => false,
            Outgoing::Sink(sink) => sink.hold_reads(hold),
        }
    }

    /// See [`ConnectionSink::drain_held`](super::sink::ConnectionSink::drain_held).
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
