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

// Layers, bottom first; each module uses only the ones above it in this list (checked by
// `tests/layering.rs`; see docs/ARCHITECTURE.md):
//   clock, config, pattern, storage   leaves: options, time, ids, the storage trait
//   protocol    the wire: envelopes, packets, close frames, HTTP types (pure)
//   connection  connect requests, guards' view, refusals, sinks, live connections
//   session     sessions, expiry, transfer tokens, ids
//   mailbox     room messages, RoomHandle, async guards, the Rooms directory
//   handlers    Handlers registration, action inputs, Cx / HttpCx
//   room        the Room trait
//   actor       the room task, split by concern
//   registry    RoomsBuilder: registers room types and starts their actors
//   testing     the in-process harness
mod actor;
pub mod clock;
mod config;
mod connection;
mod handlers;
mod mailbox;
pub mod metrics;
mod pattern;
mod protocol;
mod registry;
mod room;
mod session;
pub mod storage;
pub mod testing;

pub use clock::{Clock, SystemClock};
pub use config::RoomConfig;
pub use connection::refusal::{ConnectError, Refusal};
pub use connection::request::{
    ConnId, ConnInfo, ConnectInfo, ConnectRequest, ConnectionChannels, MAX_SESSION_ID_BYTES,
};
pub use connection::sink::{ConnectionSink, SinkStatus};
pub use handlers::context::{Cx, HttpCx, TransferError};
pub use handlers::input::{ActionInput, Valid};
pub use handlers::registration::{Handlers, Intercept};
pub use mailbox::admission::{AsyncConnectGuard, AsyncRequestGuard};
pub use mailbox::directory::{HandoffError, LocateError, Located, LookupError, Rooms};
pub use mailbox::inspection::{ConnectionView, RoomInspection, RoomStats, SessionView};
pub use mailbox::placement::{Owner, Placed, Placement, PlacementError};
pub use mailbox::room_handle::{RoomGone, RoomHandle};
pub use pattern::{Params, PatternError, RoomPattern};
pub use protocol::close::CloseFrame;
pub use protocol::http;
pub use protocol::http::{IntoRoomResponse, Json, RoomRequest, RoomResponse, Text};
pub use protocol::inbound::Rejection;
pub use registry::RoomsBuilder;
pub use room::Room;
pub use session::transfer::SessionHandoff;
