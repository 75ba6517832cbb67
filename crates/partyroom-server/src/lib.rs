//! The partyroom server: serves rooms over WebSocket and HTTP with axum.
//!
//! - `GET /parties/<party>/<room>` with `Upgrade: websocket` connects a client to the room.
//!   The private session id comes from the `id` query parameter, or `_pk` (what the official
//!   `@signe/sync` client sends).
//! - Any other request to `/parties/<party>/<room>[/<path>]` is an HTTP request to the room.
//! - Malformed room URLs (bad `%` escapes, empty or oversize segments) get `400`; unknown
//!   parties or room ids that match no room type get `404 {"error":"Not found"}`.
//!
//! Each connection runs in its own task; the room talks to it through a bounded queue
//! (see [`partyroom_room::RoomConfig::outgoing_queue`]). Shutdown is passed in explicitly.

mod connection;
pub mod path;
mod server;

pub use server::{Server, ServerConfig, constant_time_eq, shutdown_signal};
