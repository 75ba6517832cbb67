//! The [`Tracked`] trait: how one piece of state is compared, viewed and loaded.

use serde_json::Value;

use crate::LoadError;

/// Which channels a diff must produce output for.
///
/// A field that is not synced to clients still has to be diffed for storage, and the reverse;
/// a value nested under such a field inherits the restriction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    /// Build the client patch.
    pub sync: bool,
    /// Report what storage has to write.
    pub persist: bool,
}

impl Want {
    /// Both channels.
    pub const ALL: Want = Want {
        sync: true,
        persist: true,
    };

    /// Restrict by a field's flags.
    #[must_use]
    pub fn and(self, sync: bool, persist: bool) -> Want {
        Want {
            sync: self.sync && sync,
            persist: self.persist && persist,
        }
    }
}

/// What changed in storage terms, at the granularity storage writes rows.
///
/// Keyed collections ([`crate::StateMap`]) report the keys of the entries that changed so a root
/// collection can be stored one row per entry; structs report their changed fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Dirty {
    /// Nothing persisted changed.
    #[default]
    Clean,
    /// The value changed as a whole (a leaf, a vector, an option that appeared...).
    Whole,
    /// These fields of a struct changed (wire names), each with its own detail.
    Fields(Vec<(&'static str, Dirty)>),
    /// These entries of a keyed collection were inserted, changed or removed.
    Entries(Vec<String>),
}

impl Dirty {
    /// True when nothing persisted changed.
    pub fn is_clean(&self) -> bool {
        matches!(self, Dirty::Clean)
    }

    /// The storage rows to rewrite: one row per changed root field, except that a changed root
    /// collection gives one row per changed entry (`["players", "<id>"]`). A whole-root change
    /// gives the single empty row.
    pub fn rows(&self) -> Vec<Vec<String>> {
        match self {
            Dirty::Clean => Vec::new(),
            Dirty::Whole => vec![Vec::new()],
            Dirty::Entries(keys) => keys.iter().map(|k| vec![k.clone()]).collect(),
            Dirty::Fields(fields) => {
                let mut rows = Vec::new();
                for (name, detail) in fields {
                    match detail {
                        Dirty::Clean => {}
                        Dirty::Entries(keys) => {
                            rows.extend(keys.iter().map(|k| vec![(*name).to_owned(), k.clone()]))
                        }
                        Dirty::Whole | Dirty::Fields(_) => rows.push(vec![(*name).to_owned()]),
                    }
                }
                rows
            }
        }
    }
}

/// The result of comparing a value with its shadow.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Diff {
    /// The client patch for this value (already restricted to synced fields), if anything
    /// synced changed. Deleted keys appear as the string `"$delete"`.
    pub sync: Option<Value>,
    /// What storage has to rewrite.
    pub persist: Dirty,
}

impl Diff {
    /// Nothing changed.
    pub const NONE: Diff = Diff {
        sync: None,
        persist: Dirty::Clean,
    };
}

/// A piece of state whose changes can be found without scanning what did not change.
///
/// Implemented for scalars, strings, `Option`, `Vec`, `Box`, [`serde_json::Value`],
/// [`crate::StateMap`] and every struct with `#[derive(State)]`. Other serde types become leaves
/// with `#[state(leaf)]` on the field or [`crate::leaf_type!`] on the type.
///
/// The engine keeps a *shadow* next to the live value: what was last flushed. A flush compares
/// the value with its shadow and updates the shadow. Leaves compare by value; keyed collections
/// remember which entries were touched through `&mut` access, so a flush visits only those.
pub trait Tracked {
    /// What the engine keeps to know what was last flushed.
    type Shadow: Send + Sync + 'static;

    /// Build the shadow of the current value and forget pending change marks.
    fn take_shadow(&mut self) -> Self::Shadow;

    /// Compare with the shadow, report what changed, and make the shadow current.
    fn diff(&mut self, shadow: &mut Self::Shadow, want: Want) -> Diff;

    /// The full view sent to clients (synced fields only, transforms applied).
    fn sync_view(&self) -> Value;

    /// The full view written to storage (persisted fields only, raw values).
    fn persist_view(&self) -> Value;

    /// The persisted view of a nested value (`path` relative to this value), or `None` when
    /// nothing persisted is there (a removed entry, an unknown field, a transient field).
    fn persist_at(&self, path: &[&str]) -> Option<Value> {
        path.is_empty().then(|| self.persist_view())
    }

    /// Merge a JSON value into this one, the way the official client applies a sync packet:
    /// objects merge key by key, `"$delete"` removes an entry, anything else replaces.
    ///
    /// On error the value may be partly updated; use [`crate::load_into`] or
    /// [`crate::Tracker::load`] for all-or-nothing loading.
    fn load(&mut self, value: &Value) -> Result<(), LoadError>;

    /// Build a new value from JSON (used for collection entries that do not exist yet).
    fn create(value: &Value) -> Result<Self, LoadError>
    where
        Self: Sized;
}

/// Extra knowledge about a struct used as room state or as a user.
///
/// Derived by `#[derive(State)]` for every struct; the runtime uses it to find the users
/// collection and the user's connected flag.
pub trait State: Tracked + Default + Clone + Send + 'static {
    /// The user type of the `#[state(users)]` collection, or [`NoUsers`].
    type User: State;

    /// Wire name of the users collection, if the struct has one.
    const USERS_FIELD: Option<&'static str>;

    /// Whether the struct has a `#[state(connected)]` flag.
    const HAS_CONNECTED_FLAG: bool;

    /// The users collection, if the struct has one.
    fn users(&self) -> Option<&crate::StateMap<Self::User>>;

    /// The users collection, mutably (entries touched through it are tracked as usual).
    fn users_mut(&mut self) -> Option<&mut crate::StateMap<Self::User>>;

    /// Set the `#[state(connected)]` flag; returns false when the struct has none.
    fn set_connected(&mut self, connected: bool) -> bool;

    /// Read the `#[state(connected)]` flag, if the struct has one.
    fn connected(&self) -> Option<bool>;
}

/// The user type of a room without a users collection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoUsers;

impl Tracked for NoUsers {
    type Shadow = ();
    fn take_shadow(&mut self) {}
    fn diff(&mut self, _: &mut (), _: Want) -> Diff {
        Diff::NONE
    }
    fn sync_view(&self) -> Value {
        Value::Object(Default::default())
    }
    fn persist_view(&self) -> Value {
        Value::Object(Default::default())
    }
    fn load(&mut self, _: &Value) -> Result<(), LoadError> {
        Ok(())
    }
    fn create(_: &Value) -> Result<Self, LoadError> {
        Ok(NoUsers)
    }
}

impl State for NoUsers {
    type User = NoUsers;
    const USERS_FIELD: Option<&'static str> = None;
    const HAS_CONNECTED_FLAG: bool = false;
    fn users(&self) -> Option<&crate::StateMap<NoUsers>> {
        None
    }
    fn users_mut(&mut self) -> Option<&mut crate::StateMap<NoUsers>> {
        None
    }
    fn set_connected(&mut self, _: bool) -> bool {
        false
    }
    fn connected(&self) -> Option<bool> {
        None
    }
}
