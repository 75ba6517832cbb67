//! Synchronized state for partyroom, with no networking.
//!
//! Room and user state are plain Rust structs with `#[derive(State)]`. Room code mutates them
//! through ordinary `&mut` access; a [`Tracker`] then finds what changed and produces:
//!
//! - the **client patch**: the nested JSON object `@signe/room` clients expect in
//!   `{"type":"sync","value":...}` packets, with `"$delete"` for removed entries;
//! - the **storage rows** to rewrite ([`Dirty::rows`]): one row per changed root field, one
//!   per changed entry of a root collection.
//!
//! A flush costs what changed, not what exists: struct fields are compared with a shadow copy,
//! and [`StateMap`] collections visit only the entries touched through `&mut` access.
//!
//! ```
//! use partyroom_state::{ClientMirror, State, StateMap, Tracker};
//! use serde_json::json;
//!
//! #[derive(State, Default, Clone, Debug)]
//! struct Point { x: i32, y: i32 }
//!
//! #[derive(State, Default, Clone, Debug)]
//! struct Player {
//!     name: String,
//!     #[state(connected)]
//!     connected: bool,
//!     x: f64,
//! }
//!
//! #[derive(State, Default, Clone, Debug)]
//! struct Arena {
//!     star: Point,
//!     #[state(users)]
//!     players: StateMap<Player>,
//!     #[state(sync = false)]
//!     seed: u64,
//! }
//!
//! let mut arena = Tracker::new(Arena::default());
//! let mut client = ClientMirror::new();
//! client.apply(&arena.sync_snapshot());
//!
//! let room = arena.state_mut();
//! room.players.insert("AbCd1234", Player { name: "Ann".into(), ..Default::default() });
//! room.star.x = 40;
//! room.seed = 7; // never sent to clients
//!
//! let flush = arena.flush();
//! let patch = flush.sync.unwrap();
//! assert_eq!(patch, json!({"star":{"x":40},"players":{"AbCd1234":{"name":"Ann","connected":false,"x":0.0}}}));
//! client.apply(&patch);
//! assert_eq!(client.state(), &arena.sync_snapshot());
//! assert_eq!(flush.persist.rows(), vec![vec!["star".to_string()], vec!["players".into(), "AbCd1234".into()], vec!["seed".into()]]);
//! ```
//!
//! Differences from `@signe/room` that clients can observe are all fixes of data loss: vectors
//! are sent whole when they change (the original sends lossy index patches), replacing a nested
//! object sends its content, and values are copied into packets, never aliased.

extern crate self as partyroom_state;

mod containers;
mod error;
pub mod leaf;
mod map;
mod mirror;
pub mod patch;
mod tracked;
mod tracker;

pub use error::{LoadError, LoadErrorKind};
pub use map::{StateMap, Users};
pub use mirror::{ClientMirror, Packet};
pub use partyroom_macros::State;
pub use tracked::{Diff, Dirty, NoUsers, State, Tracked, Want};
pub use tracker::{Flush, Tracker, load_into};

#[doc(hidden)]
pub mod __private {
    pub use serde_json::{Map, Value};

    use crate::{LoadError, LoadErrorKind};

    pub fn expected_object(value: &Value) -> LoadError {
        if crate::patch::is_delete(value) {
            LoadError::new(LoadErrorKind::CannotDelete)
        } else {
            LoadError::new(LoadErrorKind::ExpectedObject(crate::error::type_name(
                value,
            )))
        }
    }
}
