//! The messages a room actor handles, in its mailbox.

use std::any::Any;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::connection::refusal::{ConnectError, Refusal};
use crate::connection::request::{ConnId, ConnectInfo, ConnectRequest};
use crate::protocol::http::{RoomRequest, RoomResponse};
use crate::session::transfer::SessionHandoff;

use super::inspection::{RoomInspection, RoomStats};

/// Mailbox size of a room: messages beyond it wait in the connection tasks (backpressure on
/// the sockets), not in memory.
pub(crate) const MAILBOX: usize = 1024;

/// Messages a room actor handles.
pub(crate) enum RoomMsg {
    Connect(
        ConnectRequest,
        oneshot::Sender<Result<ConnId, ConnectError>>,
    ),
    Message(ConnId, Bytes),
    /// A held connection answered a drain (see `actor::held_reads`): whether it delivered
    /// messages.
    Drained(ConnId, bool),
    Disconnect(ConnId),
    Request(RoomRequest, oneshot::Sender<RoomResponse>),
    /// Save everything, close every connection (1001) and stop.
    Shutdown(oneshot::Sender<()>),
    /// Run the room's connect guards.
    Admit(Arc<ConnectInfo>, oneshot::Sender<Result<(), Refusal>>),
    /// Run a closure on the room state (from a task spawned by a handler).
    Run(ErasedRun),
    /// A session moved here from another room.
    TransferIn(SessionHandoff),
    /// Stop at once without saving and close every connection with 1012: this node lost the
    /// room (see [`Rooms::evict`](crate::Rooms::evict)).
    Evict,
    /// The room's counts (the monitor).
    Stats(oneshot::Sender<RoomStats>),
    /// The room's connections, sessions and state (the monitor).
    Inspect(oneshot::Sender<RoomInspection>),
    /// Close every connection of this public user id; the number closed.
    DisconnectUser(String, oneshot::Sender<usize>),
}

/// A closure for [`RoomMsg::Run`], opaque at this layer: it is built by
/// [`RoomHandle::update`](crate::RoomHandle::update) and opened by the actor, both in
/// `actor/run.rs`, which know its type (a closure over the room state and a handler
/// context, neither of which the mailbox knows about).
pub(crate) struct ErasedRun(pub(crate) Box<dyn Any + Send>);

impl std::fmt::Debug for RoomMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RoomMsg::Connect(..) => "Connect",
            RoomMsg::Message(..) => "Message",
            RoomMsg::Drained(..) => "Drained",
            RoomMsg::Disconnect(..) => "Disconnect",
            RoomMsg::Request(..) => "Request",
            RoomMsg::Shutdown(..) => "Shutdown",
            RoomMsg::Admit(..) => "Admit",
            RoomMsg::Run(..) => "Run",
            RoomMsg::TransferIn(..) => "TransferIn",
            RoomMsg::Evict => "Evict",
            RoomMsg::Stats(..) => "Stats",
            RoomMsg::Inspect(..) => "Inspect",
            RoomMsg::DisconnectUser(..) => "DisconnectUser",
        })
    }
}
