//! How anything reaches a room: the messages its actor handles ([`message`]), the cheap
//! [`room_handle::RoomHandle`] that posts them, the async guards a handle runs before posting
//! ([`admission`]), and [`directory::Rooms`], which finds the live room for an id or has one
//! started, after asking the cluster's [`placement::Placement`] (if any) whether this node
//! serves it. Nothing here knows what a room does with its messages: room types are started
//! through the [`directory::RoomFactory`] trait, implemented by the registry above.

pub(crate) mod admission;
pub(crate) mod directory;
pub(crate) mod inspection;
pub(crate) mod message;
pub(crate) mod placement;
pub(crate) mod room_handle;
