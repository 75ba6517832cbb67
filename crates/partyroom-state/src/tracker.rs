//! [`Tracker`]: a state value together with its shadow.

use serde_json::Value;

use crate::LoadError;
use crate::tracked::{Dirty, Tracked, Want};

/// What one flush found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Flush {
    /// The patch for clients (`{"type":"sync","value": <this>}`), if anything synced changed.
    pub sync: Option<Value>,
    /// What storage has to rewrite; [`Dirty::rows`] turns it into row paths.
    pub persist: Dirty,
}

impl Flush {
    /// True if nothing changed on either channel.
    pub fn is_empty(&self) -> bool {
        self.sync.is_none() && self.persist.is_clean()
    }
}

/// Owns a piece of state and the shadow of what was last flushed.
///
/// Mutate through [`Tracker::state_mut`] with ordinary Rust, then call [`Tracker::flush`]. The
/// flush costs what changed: scalar fields of structs are compared, keyed collections visit only
/// touched entries.
///
/// ```
/// use partyroom_state::{State, StateMap, Tracker};
/// use serde_json::json;
///
/// #[derive(State, Default, Clone, Debug)]
/// struct Player { name: String, score: u32, #[state(connected)] online: bool }
///
/// #[derive(State, Default, Clone, Debug)]
/// struct Game { round: u32, #[state(users)] players: StateMap<Player> }
///
/// let mut game = Tracker::new(Game::default());
/// game.state_mut().players.insert("AbCd1234", Player { name: "Ann".into(), ..Default::default() });
/// let flush = game.flush();
/// assert_eq!(flush.sync, Some(json!({"players":{"AbCd1234":{"name":"Ann","score":0,"online":false}}})));
///
/// game.state_mut().players.get_mut("AbCd1234").unwrap().score += 1;
/// assert_eq!(game.flush().sync, Some(json!({"players":{"AbCd1234":{"score":1}}})));
/// // The connected flag is synced but never persisted.
/// assert_eq!(game.persist_snapshot(), json!({"round":0,"players":{"AbCd1234":{"name":"Ann","score":1}}}));
/// ```
#[derive(Debug)]
pub struct Tracker<S: Tracked> {
    state: S,
    shadow: S::Shadow,
}

impl<S: Tracked> Tracker<S> {
    /// Start tracking; the current value counts as flushed.
    pub fn new(mut state: S) -> Self {
        let shadow = state.take_shadow();
        Self { state, shadow }
    }

    /// The live state.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// The live state, for mutation. Changes are found at the next [`Tracker::flush`].
    pub fn state_mut(&mut self) -> &mut S {
        &mut self.state
    }

    /// Compare the state with what was last flushed, and make it the new baseline.
    pub fn flush(&mut self) -> Flush {
        let diff = self.state.diff(&mut self.shadow, Want::ALL);
        Flush {
            sync: diff.sync,
            persist: diff.persist,
        }
    }

    /// Forget pending changes: the current value becomes the baseline without producing a
    /// patch (used after restoring from storage).
    pub fn rebase(&mut self) {
        self.shadow = self.state.take_shadow();
    }

    /// The full synced view: what a joining client receives.
    pub fn sync_snapshot(&self) -> Value {
        self.state.sync_view()
    }

    /// The full persisted view.
    pub fn persist_snapshot(&self) -> Value {
        self.state.persist_view()
    }

    /// The persisted view at a row path (see [`Dirty::rows`]); `None` when the row no longer
    /// exists (a removed entry).
    pub fn persist_row(&self, row: &[String]) -> Option<Value> {
        let path: Vec<&str> = row.iter().map(String::as_str).collect();
        self.state.persist_at(&path)
    }

    /// Stop tracking and return the state.
    pub fn into_inner(self) -> S {
        self.state
    }
}

impl<S: Tracked + Clone> Tracker<S> {
    /// Merge a snapshot or a packet into the state, all or nothing. The changes it makes are
    /// reported by the next flush like any other change (call [`Tracker::rebase`] to skip that).
    pub fn load(&mut self, value: &Value) -> Result<(), LoadError> {
        load_into(&mut self.state, value)
    }
}

/// Merge JSON into a state value, all or nothing: on error the value is unchanged.
pub fn load_into<S: Tracked + Clone>(state: &mut S, value: &Value) -> Result<(), LoadError> {
    let mut next = state.clone();
    next.load(value)?;
    *state = next;
    Ok(())
}
