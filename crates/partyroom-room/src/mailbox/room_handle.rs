//! [`RoomHandle`]: the address of one live room. Cloned freely; every method posts a
//! [`RoomMsg`] to the room's mailbox (after the room type's async guards, for connects and
//! requests) and, where there is an answer, waits for it.
//!
//! [`RoomHandle::update`], which runs a closure on the room's state, is in `actor/run.rs`
//! with the actor side that opens the closure.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::admission::Admission;
use super::inspection::{RoomInspection, RoomStats};
use super::message::RoomMsg;
use crate::config::RoomConfig;
use crate::connection::refusal::ConnectError;
use crate::connection::request::{ConnId, ConnectRequest};
use crate::protocol::http::{RoomRequest, RoomResponse};

/// A cheap, cloneable handle to a live room instance.
#[derive(Clone)]
pub struct RoomHandle {
    id: Arc<str>,
    pub(crate) tx: mpsc::Sender<RoomMsg>,
    config: Arc<RoomConfig>,
    admission: Arc<Admission>,
}

impl fmt::Debug for RoomHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoomHandle").field("id", &self.id).finish()
    }
}

/// The room instance has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("room is gone")]
pub struct RoomGone;

impl RoomHandle {
    /// The handle of a room whose actor reads `tx`'s mailbox.
    pub(crate) fn new(
        id: Arc<str>,
        tx: mpsc::Sender<RoomMsg>,
        config: Arc<RoomConfig>,
        admission: Arc<Admission>,
    ) -> Self {
        Self {
            id,
            tx,
            config,
            admission,
        }
    }

    /// The room id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The room type's options.
    pub fn config(&self) -> &RoomConfig {
        &self.config
    }

    /// Run the connect guards (async ones here, state-aware ones in the room) without
    /// connecting; the server calls this before the WebSocket upgrade so a refused client gets
    /// an HTTP error. Marks the request as admitted.
    pub async fn admit(&self, request: &mut ConnectRequest) -> Result<(), ConnectError> {
        request.check_session_id().map_err(ConnectError::Refused)?;
        let info = Arc::new(request.info());
        self.admission
            .check_connect(&info)
            .await
            .map_err(ConnectError::Refused)?;
        self.ask(|reply| RoomMsg::Admit(info, reply))
            .await
            .map_err(|RoomGone| ConnectError::RoomGone)?
            .map_err(ConnectError::Refused)?;
        request.admitted = true;
        Ok(())
    }

    /// Connect a client (running the guards first unless [`RoomHandle::admit`] did). On
    /// success the first packet is already queued on its channels.
    pub async fn connect(&self, request: ConnectRequest) -> Result<ConnId, ConnectError> {
        request.check_session_id().map_err(ConnectError::Refused)?;
        if !request.admitted && !self.admission.connect.is_empty() {
            let info = Arc::new(request.info());
            self.admission
                .check_connect(&info)
                .await
                .map_err(ConnectError::Refused)?;
        }
        self.ask(|reply| RoomMsg::Connect(request, reply))
            .await
            .map_err(|RoomGone| ConnectError::RoomGone)?
    }

    /// Post the message `msg` builds around a reply channel, and wait for the reply.
    pub(crate) async fn ask<T>(
        &self,
        msg: impl FnOnce(oneshot::Sender<T>) -> RoomMsg,
    ) -> Result<T, RoomGone> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(msg(tx)).await.map_err(|_| RoomGone)?;
        rx.await.map_err(|_| RoomGone)
    }

    /// Deliver a text message from a client. Waits while the room's mailbox is full.
    pub async fn message(&self, conn: ConnId, text: Bytes) -> Result<(), RoomGone> {
        let waiting = match self.try_post(RoomMsg::Message(conn, text)) {
            Posted::Done(result) => return result,
            Posted::Full(msg) => self.post_waiting(msg),
        };
        waiting.await
    }

    /// Put `msg` in the mailbox if it has room. Connection tasks send through this and
    /// [`post_waiting`](Self::post_waiting) rather than `Sender::send`: a future that waits for
    /// the mailbox holds the whole message and the semaphore's waiter (over 600 bytes), and
    /// every connection task would carry that much for its whole life, idle or not.
    fn try_post(&self, msg: RoomMsg) -> Posted {
        match self.tx.try_send(msg) {
            Ok(()) => Posted::Done(Ok(())),
            Err(mpsc::error::TrySendError::Closed(_)) => Posted::Done(Err(RoomGone)),
            Err(mpsc::error::TrySendError::Full(msg)) => Posted::Full(msg),
        }
    }

    /// Wait for room in a full mailbox (backpressure), in a box made only then.
    fn post_waiting(&self, msg: RoomMsg) -> impl Future<Output = Result<(), RoomGone>> + '_ {
        let send = Box::pin(self.tx.send(msg));
        async move { send.await.map_err(|_| RoomGone) }
    }

    /// Answer a drain of held reads ([`ConnectionSink::drain_held`]), after handing over the
    /// messages it found with [`message`](Self::message); `delivered`: there were some.
    ///
    /// [`ConnectionSink::drain_held`]: crate::ConnectionSink::drain_held
    pub async fn drained(&self, conn: ConnId, delivered: bool) -> Result<(), RoomGone> {
        let waiting = match self.try_post(RoomMsg::Drained(conn, delivered)) {
            Posted::Done(result) => return result,
            Posted::Full(msg) => self.post_waiting(msg),
        };
        waiting.await
    }

    /// Tell the room a client went away.
    pub async fn disconnect(&self, conn: ConnId) {
        let waiting = match self.try_post(RoomMsg::Disconnect(conn)) {
            Posted::Done(_) => return,
            Posted::Full(msg) => self.post_waiting(msg),
        };
        let _ = waiting.await;
    }

    /// Send an HTTP request to the room (its async request guards run first, here).
    pub async fn request(&self, request: RoomRequest) -> Result<RoomResponse, RoomGone> {
        if let Err(response) = self.admission.check_request(&request).await {
            return Ok(response);
        }
        self.ask(|reply| RoomMsg::Request(request, reply)).await
    }

    /// The room's counts (connections, users, sessions, messages handled).
    pub async fn stats(&self) -> Result<RoomStats, RoomGone> {
        self.ask(RoomMsg::Stats).await
    }

    /// The room's connections, sessions and synchronized state, for an operator.
    pub async fn inspect(&self) -> Result<RoomInspection, RoomGone> {
        self.ask(RoomMsg::Inspect).await
    }

    /// Close every connection of the user with this public id (code 4000, "disconnected by
    /// an operator"); how many were closed. The user's session stays: it may connect again.
    pub async fn disconnect_user(&self, public_id: &str) -> Result<usize, RoomGone> {
        let user = public_id.to_owned();
        self.ask(|reply| RoomMsg::DisconnectUser(user, reply)).await
    }

    /// True once the room task has stopped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Save everything, close every connection (1001) and stop the room.
    pub async fn shutdown(&self) {
        let _ = self.ask(RoomMsg::Shutdown).await;
    }
}

/// What [`RoomHandle::try_post`] did. A return value on the stack for one `match`, never kept
/// in a future: boxing the message would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Posted {
    /// Sent, or the room is gone.
    Done(Result<(), RoomGone>),
    /// The mailbox is full: the message, to wait with.
    Full(RoomMsg),
}
