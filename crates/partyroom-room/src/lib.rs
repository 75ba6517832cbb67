//! The partyroom room runtime: rooms, sessions, actions and HTTP handlers, with no sockets.
//!
//! Each live room is an actor task that owns its state ([`partyroom_state`]), its sessions and
//! its connections. The server (or a test) talks to it through a [`RoomHandle`]; connections
//! are channels ([`ConnectRequest`], [`ConnectionChannels`]), so the same code runs over
//! WebSockets and in memory.
//!
//! Lifecycle of a connection (spec section 5): the private session id maps to a stable public
//! id; the user entry is created in the `#[state(users)]` collection and marked connected;
//! `on_join` runs; the other clients receive one coalesced patch; the new client receives
//! `{"type":"sync","value":{"pId":...,<full synced state>}}`. When the last connection of a
//! session closes the user is marked disconnected, `on_leave` runs, and after the room's
//! session expiry the user is removed (`"$delete"`).
//!
//! Messages `{"action": name, "value": ...}` run the handler registered for `name` with its
//! typed, validated input; anything malformed, unknown or invalid changes nothing and is
//! dropped (logged at debug level); the connection stays open.

mod actor;
mod config;
mod conn;
mod context;
mod handler;
pub mod http;
mod pattern;
mod registry;
mod room;
pub mod storage;
mod sync;
pub mod testing;

pub use actor::ConnectError;
pub use config::RoomConfig;
pub use conn::{
    CloseFrame, ConnId, ConnInfo, ConnectRequest, ConnectionChannels, ConnectionSink,
    MAX_SESSION_ID_BYTES, SinkStatus,
};
pub use context::TransferError;
pub use context::{Cx, HttpCx};
pub use handler::{
    ActionInput, AsyncConnectGuard, AsyncRequestGuard, ConnectInfo, Handlers, Intercept, Refusal,
    Rejection, Valid,
};
pub use http::{IntoRoomResponse, Json, RoomRequest, RoomResponse, Text};
pub use pattern::{Params, PatternError, RoomPattern};
pub use registry::{LookupError, RoomGone, RoomHandle, Rooms, RoomsBuilder};
pub use room::Room;
