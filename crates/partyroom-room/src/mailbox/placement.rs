//! Where a room is served when several nodes serve the same parties (cluster mode): the
//! [`Placement`] trait a cluster implements, and what it answers ([`Placed`]).
//!
//! Without a placement (one process), every room is served here. With one, [`Rooms::locate`]
//! asks it first: this node serves the room only once the placement says it owns it (a
//! cluster claims the room's lease then), and otherwise learns which node does, to relay
//! there. The room runtime knows nothing of how ownership is decided or stored.
//!
//! [`Rooms::locate`]: crate::Rooms::locate

use std::fmt;

use crate::protocol::http::{RoomRequest, RoomResponse};
use crate::session::transfer::SessionHandoff;
use crate::storage::{BoxFuture, RoomKey};

/// The node that serves a room, as a [`Placement`] names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Its node id.
    pub node: String,
    /// Its base URL (`http://host:port`), where relayed requests go.
    pub url: String,
}

/// Where a room is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    /// Here: this node owns the room.
    Here,
    /// By another node.
    Elsewhere(Owner),
}

/// The room cannot be placed now (the cluster's database is unreachable, or the owner is gone
/// and its lease has not expired within the wait).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("room unavailable: {0}")]
pub struct PlacementError(pub String);

/// Decides which node serves each room (implemented by a cluster).
pub trait Placement: Send + Sync + fmt::Debug + 'static {
    /// Where `room` is served. Answering [`Placed::Here`] means this node now owns the room
    /// and may start it; a placement that claims rooms claims it before answering.
    fn place<'a>(&'a self, room: &'a RoomKey) -> BoxFuture<'a, Result<Placed, PlacementError>>;

    /// The owner last named for `room` did not serve it (it moved, or its node cannot be
    /// reached): forget what is known of it before asking [`Placement::place`] again.
    fn moved(&self, room: &RoomKey) {
        let _ = room;
    }

    /// Send an HTTP request to `room` on `owner` (a room-to-room request across nodes).
    fn forward<'a>(
        &'a self,
        owner: &'a Owner,
        room: &'a RoomKey,
        request: RoomRequest,
    ) -> BoxFuture<'a, RoomResponse>;

    /// Hand a session over to `room` on `owner` (a session transfer across nodes); `Ok` once
    /// the owner has queued it in the room, before the client can present its token.
    fn hand_off<'a>(
        &'a self,
        owner: &'a Owner,
        room: &'a RoomKey,
        handoff: SessionHandoff,
    ) -> BoxFuture<'a, Result<(), PlacementError>>;
}
