//! The partyroom server: serves rooms over WebSocket and HTTP with axum.
//!
//! - `GET /parties/<party>/<room>` with `Upgrade: websocket` connects a client to the room.
//!   The private session id comes from the `id` query parameter, or `_pk` (what the official
//!   `@signe/sync` client sends).
//! - Any other request to `/parties/<party>/<room>[/<path>]` is an HTTP request to the room.
//! - Malformed room URLs (bad `%` escapes, empty or oversize segments) get `400`; unknown
//!   parties or room ids that match no room type get `404 {"error":"Not found"}`.
//!
//! Each connection runs in its own task, which reads the client's messages into the room.
//! The room writes its frames straight to the socket when it can take them, and into a
//! bounded queue that the connection's task drains when it cannot (see
//! [`partyroom_room::RoomConfig::outgoing_queue`]). Shutdown is passed in explicitly.
//!
//! No peer can hold a connection forever: connections are counted from `accept`, and
//! headers, bodies, frames, writes and silent clients all have deadlines (see
//! [`ServerConfig`]).

mod byte_relay;
mod connection;
#[cfg(feature = "autobahn-echo")]
pub mod echo;
mod fd_limit;
mod frame_reader;
mod handshake;
pub mod http_client;
mod listener;
mod low_water;
pub mod metrics;
pub mod monitor;
mod outbox;
mod owner_relay;
pub mod path;
pub mod prometheus;
pub mod relay;
mod server;

pub use fd_limit::{FdLimit, raise_fd_limit};
pub use listener::{LISTEN_BACKLOG, bind};
pub use owner_relay::MOVED_HEADER;
pub use server::{Server, ServerConfig, constant_time_eq, shutdown_signal};
