//! Leaves: values compared as a whole and sent as JSON.
//!
//! Scalars, strings and [`serde_json::Value`] are leaves out of the box. Any other serde type
//! becomes a leaf with `#[state(leaf)]` on the field, or with [`crate::leaf_type!`] on the type
//! so it can also sit inside `Option`, `Vec` and [`crate::StateMap`].
//!
//! A leaf's shadow is a clone. A flush compares with `PartialEq` and serializes only when the
//! value changed. When a leaf serializes to an object, the patch is the object diff (removed
//! keys are sent as `"$delete"`), so clients that deep-merge end up with exactly the new value.

use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::patch::{is_delete, json_diff};
use crate::tracked::{Diff, Dirty, Want};
use crate::{LoadError, LoadErrorKind};

/// Serialize a leaf. Values serde cannot represent as JSON become `null` (like `NaN` in JS).
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Diff a leaf against its shadow (a clone of the last flushed value).
pub fn diff<T>(value: &T, shadow: &mut T, want: Want) -> Diff
where
    T: Serialize + Clone + PartialEq,
{
    if value == shadow {
        return Diff::NONE;
    }
    let sync = if want.sync {
        let new = to_json(value);
        if new.is_object() {
            json_diff(&to_json(&*shadow), &new)
        } else {
            Some(new)
        }
    } else {
        None
    };
    shadow.clone_from(value);
    Diff {
        sync,
        persist: if want.persist {
            Dirty::Whole
        } else {
            Dirty::Clean
        },
    }
}

/// Replace a leaf with a JSON value (`"$delete"` is refused: a leaf field cannot be removed).
pub fn load<T: DeserializeOwned>(value: &mut T, json: &Value) -> Result<(), LoadError> {
    *value = create(json)?;
    Ok(())
}

/// Build a leaf from JSON.
pub fn create<T: DeserializeOwned>(json: &Value) -> Result<T, LoadError> {
    if is_delete(json) {
        return Err(LoadError::new(LoadErrorKind::CannotDelete));
    }
    T::deserialize(json).map_err(LoadError::invalid)
}

/// Implement [`crate::Tracked`] for serde types so they act as leaves anywhere in state.
///
/// ```
/// use partyroom_state::{leaf_type, StateMap};
/// #[derive(serde::Serialize, serde::Deserialize, Clone, PartialEq, Debug)]
/// enum Team { Red, Blue }
/// leaf_type!(Team);
/// let mut teams: StateMap<Team> = StateMap::new();
/// teams.insert("a", Team::Red);
/// ```
#[macro_export]
macro_rules! leaf_type {
    ($($ty:ty),+ $(,)?) => {$(
        impl $crate::Tracked for $ty {
            type Shadow = $ty;
            fn take_shadow(&mut self) -> $ty {
                ::core::clone::Clone::clone(self)
            }
            fn diff(&mut self, shadow: &mut $ty, want: $crate::Want) -> $crate::Diff {
                $crate::leaf::diff(self, shadow, want)
            }
            fn sync_view(&self) -> $crate::__private::Value {
                $crate::leaf::to_json(self)
            }
            fn persist_view(&self) -> $crate::__private::Value {
                $crate::leaf::to_json(self)
            }
            fn load(&mut self, value: &$crate::__private::Value) -> ::core::result::Result<(), $crate::LoadError> {
                $crate::leaf::load(self, value)
            }
            fn create(value: &$crate::__private::Value) -> ::core::result::Result<Self, $crate::LoadError> {
                $crate::leaf::create(value)
            }
        }
    )+};
}

leaf_type!(
    bool, i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, u128, usize, char, String, Value
);

/// Floats compare by bits so that `NaN` (sent as `null`) does not look changed on every flush.
macro_rules! float_leaf {
    ($($ty:ty),+) => {$(
        impl crate::Tracked for $ty {
            type Shadow = $ty;
            fn take_shadow(&mut self) -> $ty {
                *self
            }
            fn diff(&mut self, shadow: &mut $ty, want: Want) -> Diff {
                if self.to_bits() == shadow.to_bits() {
                    return Diff::NONE;
                }
                *shadow = *self;
                Diff {
                    sync: want.sync.then(|| to_json(self)),
                    persist: if want.persist { Dirty::Whole } else { Dirty::Clean },
                }
            }
            fn sync_view(&self) -> Value {
                to_json(self)
            }
            fn persist_view(&self) -> Value {
                to_json(self)
            }
            fn load(&mut self, value: &Value) -> Result<(), LoadError> {
                *self = <$ty as crate::Tracked>::create(value)?;
                Ok(())
            }
            fn create(value: &Value) -> Result<Self, LoadError> {
                // A NaN or infinity was sent as null; read it back as NaN rather than failing.
                if value.is_null() {
                    return Ok(<$ty>::NAN);
                }
                create(value)
            }
        }
    )+};
}

float_leaf!(f32, f64);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tracked;
    use serde_json::json;

    #[test]
    fn scalar_leaf_diffs() {
        let mut x = 1.5f64;
        let mut sh = x.take_shadow();
        assert_eq!(x.diff(&mut sh, Want::ALL), Diff::NONE);
        x = 2.0;
        let d = x.diff(&mut sh, Want::ALL);
        assert_eq!(d.sync, Some(json!(2.0)));
        assert_eq!(d.persist, Dirty::Whole);
        x = f64::NAN;
        assert_eq!(x.diff(&mut sh, Want::ALL).sync, Some(Value::Null));
        assert_eq!(x.diff(&mut sh, Want::ALL), Diff::NONE);
    }

    #[test]
    fn object_leaf_sends_removed_keys() {
        let mut v = json!({"a":1,"b":2});
        let mut sh = v.take_shadow();
        v = json!({"a":1});
        assert_eq!(
            v.diff(&mut sh, Want::ALL).sync,
            Some(json!({"b":"$delete"}))
        );
    }

    #[test]
    fn bad_leaf_json_is_an_error() {
        let mut n = 0u32;
        let err = n.load(&json!("x")).unwrap_err();
        assert!(err.to_string().contains("invalid type"));
        assert_eq!(n.load(&json!(-1)).unwrap_err().path(), "");
        assert!(matches!(
            n.load(&json!("$delete")).unwrap_err().kind(),
            LoadErrorKind::CannotDelete
        ));
    }
}
