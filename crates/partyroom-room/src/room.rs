//! The [`Room`] trait: a room type is its state plus its handlers.

use crate::config::RoomConfig;
use crate::handlers::registration::Handlers;
use crate::pattern::Params;
use partyroom_state::State;

/// A room type. Implement it on the struct that holds the room's synchronized state.
///
/// One instance exists per room id; it lives in its own task (an actor) that owns it, so
/// handlers get plain `&mut self` access without locks.
pub trait Room: State {
    /// The room's options (path pattern, throttles, session expiry, limits).
    fn config() -> RoomConfig;

    /// Register actions, hooks and HTTP routes. Called once per room type.
    fn handlers(handlers: &mut Handlers<Self>);

    /// Build the state of a new room instance. `params` are the values captured by the path
    /// pattern. Defaults to `Default::default()`.
    fn init(room_id: &str, params: &Params) -> Self {
        let _ = (room_id, params);
        Self::default()
    }
}
