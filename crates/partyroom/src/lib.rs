//! partyroom: real-time multiplayer rooms in Rust.
//!
//! A room type is a struct of synchronized state (`#[derive(State)]`) plus handlers
//! ([`Room`](room::Room)). Each room id gets its own actor; changes made by handlers are pushed
//! to every client as small JSON patches, wire-compatible with `@signe/room` clients.
//!
//! ```no_run
//! use partyroom::prelude::*;
//!
//! #[derive(State, Default, Clone)]
//! struct Player { name: String, #[state(connected)] connected: bool, score: u32 }
//!
//! #[derive(State, Default, Clone)]
//! struct Game { #[state(users)] players: StateMap<Player> }
//!
//! impl Room for Game {
//!     fn config() -> RoomConfig { RoomConfig::new("game-{id}") }
//!     fn handlers(h: &mut Handlers<Self>) {
//!         h.action("score", |game: &mut Self, cx, ()| {
//!             if let Some(p) = cx.user_id().and_then(|id| game.players.get_mut(id)) {
//!                 p.score += 1;
//!             }
//!         });
//!     }
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let rooms = Rooms::builder().room::<Game>("main").expect("valid pattern").build();
//! let listener = partyroom::server::bind("127.0.0.1:3000").await?;
//! Server::new(rooms).serve(listener, std::future::pending()).await
//! # }
//! ```
//!
//! The crates behind it: [`state`] (networking-free sync engine), [`room`] (room runtime),
//! [`server`] (axum server), [`storage`] (SQLite and PostgreSQL backends).

#[cfg(feature = "cluster")]
pub use partyroom_cluster as cluster;
pub use partyroom_room as room;
pub use partyroom_server as server;
pub use partyroom_state as state;
pub use partyroom_storage as storage;

/// Everything a room definition needs.
pub mod prelude {
    pub use partyroom_room::{
        Cx, Handlers, HttpCx, Json, Room, RoomConfig, RoomResponse, Rooms, Text, Valid,
    };
    pub use partyroom_server::Server;
    pub use partyroom_state::{State, StateMap, Users};
}

/// The README's examples, compiled as doctests so they stay true.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
