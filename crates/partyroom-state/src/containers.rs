//! [`Tracked`] for standard containers: `Option`, `Vec`, `Box` and `BTreeMap<String, _>`.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::error::type_name;
use crate::patch::is_delete;
use crate::tracked::{Diff, Dirty, Tracked, Want};
use crate::{LoadError, LoadErrorKind};

/// `None` is sent and stored as `null`; `Some` as the inner value. Going from `None` to `Some`
/// sends the whole inner view; inside `Some` only what changed.
impl<T: Tracked> Tracked for Option<T> {
    type Shadow = Option<T::Shadow>;

    fn take_shadow(&mut self) -> Self::Shadow {
        self.as_mut().map(T::take_shadow)
    }

    fn diff(&mut self, shadow: &mut Self::Shadow, want: Want) -> Diff {
        match (self.as_mut(), shadow.as_mut()) {
            (Some(v), Some(s)) => v.diff(s, want),
            (None, None) => Diff::NONE,
            (Some(v), None) => {
                let sync = want.sync.then(|| v.sync_view());
                *shadow = Some(v.take_shadow());
                Diff {
                    sync,
                    persist: whole(want),
                }
            }
            (None, Some(_)) => {
                *shadow = None;
                Diff {
                    sync: want.sync.then_some(Value::Null),
                    persist: whole(want),
                }
            }
        }
    }

    fn sync_view(&self) -> Value {
        self.as_ref().map_or(Value::Null, T::sync_view)
    }

    fn persist_view(&self) -> Value {
        self.as_ref().map_or(Value::Null, T::persist_view)
    }

    fn persist_at(&self, path: &[&str]) -> Option<Value> {
        match self {
            Some(v) => v.persist_at(path),
            None => path.is_empty().then_some(Value::Null),
        }
    }

    fn load(&mut self, value: &Value) -> Result<(), LoadError> {
        if value.is_null() || is_delete(value) {
            *self = None;
            return Ok(());
        }
        match self {
            Some(v) => v.load(value),
            None => {
                *self = Some(T::create(value)?);
                Ok(())
            }
        }
    }

    fn create(value: &Value) -> Result<Self, LoadError> {
        if value.is_null() || is_delete(value) {
            Ok(None)
        } else {
            T::create(value).map(Some)
        }
    }
}

/// Vectors are compared element by element and sent whole when anything in them changed:
/// clients replace arrays, so an index-level patch would lose data (quirk Q3 fixed).
impl<T: Tracked> Tracked for Vec<T> {
    type Shadow = Vec<T::Shadow>;

    fn take_shadow(&mut self) -> Self::Shadow {
        self.iter_mut().map(T::take_shadow).collect()
    }

    fn diff(&mut self, shadow: &mut Self::Shadow, want: Want) -> Diff {
        let mut changed = self.len() != shadow.len();
        if !changed {
            for (v, s) in self.iter_mut().zip(shadow.iter_mut()) {
                let d = v.diff(s, Want::ALL);
                changed |= d.sync.is_some() || !d.persist.is_clean();
            }
        } else {
            *shadow = self.take_shadow();
        }
        if !changed {
            return Diff::NONE;
        }
        Diff {
            sync: want.sync.then(|| self.sync_view()),
            persist: whole(want),
        }
    }

    fn sync_view(&self) -> Value {
        Value::Array(self.iter().map(T::sync_view).collect())
    }

    fn persist_view(&self) -> Value {
        Value::Array(self.iter().map(T::persist_view).collect())
    }

    fn load(&mut self, value: &Value) -> Result<(), LoadError> {
        match value {
            Value::Array(_) => {
                *self = Self::create(value)?;
                Ok(())
            }
            // An index-keyed object (`{"0": .., "1": ..}`), as `@signe/room` stores arrays.
            Value::Object(entries) => {
                let mut indexed: Vec<(usize, &Value)> = Vec::with_capacity(entries.len());
                for (k, v) in entries {
                    let i: usize = k.parse().map_err(|_| {
                        LoadError::new(LoadErrorKind::ExpectedArray(
                            "an object with a non-index key",
                        ))
                        .at(k.clone())
                    })?;
                    indexed.push((i, v));
                }
                indexed.sort_by_key(|(i, _)| *i);
                for (i, v) in indexed {
                    if i < self.len() {
                        self[i].load(v).map_err(|e| e.at(i.to_string()))?;
                    } else if i == self.len() {
                        self.push(T::create(v).map_err(|e| e.at(i.to_string()))?);
                    } else {
                        return Err(LoadError::new(LoadErrorKind::IndexOutOfBounds(i)));
                    }
                }
                Ok(())
            }
            other => Err(LoadError::new(LoadErrorKind::ExpectedArray(type_name(
                other,
            )))),
        }
    }

    fn create(value: &Value) -> Result<Self, LoadError> {
        match value {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| T::create(item).map_err(|e| e.at(i.to_string())))
                .collect(),
            Value::Object(_) => {
                let mut out = Vec::new();
                out.load(value)?;
                Ok(out)
            }
            other => Err(LoadError::new(LoadErrorKind::ExpectedArray(type_name(
                other,
            )))),
        }
    }
}

impl<T: Tracked> Tracked for Box<T> {
    type Shadow = T::Shadow;
    fn take_shadow(&mut self) -> Self::Shadow {
        (**self).take_shadow()
    }
    fn diff(&mut self, shadow: &mut Self::Shadow, want: Want) -> Diff {
        (**self).diff(shadow, want)
    }
    fn sync_view(&self) -> Value {
        (**self).sync_view()
    }
    fn persist_view(&self) -> Value {
        (**self).persist_view()
    }
    fn persist_at(&self, path: &[&str]) -> Option<Value> {
        (**self).persist_at(path)
    }
    fn load(&mut self, value: &Value) -> Result<(), LoadError> {
        (**self).load(value)
    }
    fn create(value: &Value) -> Result<Self, LoadError> {
        T::create(value).map(Box::new)
    }
}

/// A plain `BTreeMap` is compared entry by entry on every flush (cost grows with its size).
/// Use [`crate::StateMap`] for collections that grow, such as users.
impl<V: Tracked> Tracked for BTreeMap<String, V> {
    type Shadow = BTreeMap<String, V::Shadow>;

    fn take_shadow(&mut self) -> Self::Shadow {
        self.iter_mut()
            .map(|(k, v)| (k.clone(), v.take_shadow()))
            .collect()
    }

    fn diff(&mut self, shadow: &mut Self::Shadow, want: Want) -> Diff {
        let mut sync = Map::new();
        let mut keys = Vec::new();
        shadow.retain(|k, _| {
            if self.contains_key(k) {
                true
            } else {
                sync.insert(k.clone(), crate::patch::delete_marker());
                keys.push(k.clone());
                false
            }
        });
        for (k, v) in self.iter_mut() {
            match shadow.get_mut(k) {
                Some(s) => {
                    let d = v.diff(s, want);
                    if let Some(p) = d.sync {
                        sync.insert(k.clone(), p);
                    }
                    if !d.persist.is_clean() {
                        keys.push(k.clone());
                    }
                }
                None => {
                    if want.sync {
                        sync.insert(k.clone(), v.sync_view());
                    }
                    shadow.insert(k.clone(), v.take_shadow());
                    keys.push(k.clone());
                }
            }
        }
        keyed_diff(sync, keys, want)
    }

    fn sync_view(&self) -> Value {
        keyed_view(self, false)
    }

    fn persist_view(&self) -> Value {
        keyed_view(self, true)
    }

    fn persist_at(&self, path: &[&str]) -> Option<Value> {
        match path.split_first() {
            None => Some(self.persist_view()),
            Some((k, rest)) => self.get(*k)?.persist_at(rest),
        }
    }

    fn load(&mut self, value: &Value) -> Result<(), LoadError> {
        load_keyed(self, value)
    }

    fn create(value: &Value) -> Result<Self, LoadError> {
        let mut out = BTreeMap::new();
        out.load(value)?;
        Ok(out)
    }
}

/// What keyed collections ([`BTreeMap`] here, [`crate::StateMap`]) share: loading entries,
/// building views and wrapping up a diff.
pub(crate) trait Keyed<V: Tracked> {
    fn entry_mut(&mut self, key: &str) -> Option<&mut V>;
    fn put(&mut self, key: String, value: V);
    fn drop_entry(&mut self, key: &str);
    fn entries(&self) -> Box<dyn Iterator<Item = (&str, &V)> + '_>;
}

/// Merge an object into a keyed collection: `"$delete"` removes, existing entries load the
/// value, new ones are created from it.
pub(crate) fn load_keyed<V: Tracked, M: Keyed<V>>(
    map: &mut M,
    value: &Value,
) -> Result<(), LoadError> {
    let Value::Object(entries) = value else {
        return Err(LoadError::new(LoadErrorKind::ExpectedObject(type_name(
            value,
        ))));
    };
    for (k, v) in entries {
        if is_delete(v) {
            map.drop_entry(k);
        } else if let Some(existing) = map.entry_mut(k) {
            existing.load(v).map_err(|e| e.at(k.clone()))?;
        } else {
            let created = V::create(v).map_err(|e| e.at(k.clone()))?;
            map.put(k.clone(), created);
        }
    }
    Ok(())
}

/// The sync or persist view of a keyed collection.
pub(crate) fn keyed_view<V: Tracked, M: Keyed<V>>(map: &M, persist: bool) -> Value {
    Value::Object(
        map.entries()
            .map(|(k, v)| {
                let view = if persist {
                    v.persist_view()
                } else {
                    v.sync_view()
                };
                (k.to_owned(), view)
            })
            .collect(),
    )
}

/// The diff of a keyed collection from the patch entries and the changed keys it found.
pub(crate) fn keyed_diff(sync: Map<String, Value>, keys: Vec<String>, want: Want) -> Diff {
    Diff {
        sync: (want.sync && !sync.is_empty()).then_some(Value::Object(sync)),
        persist: if want.persist && !keys.is_empty() {
            Dirty::Entries(keys)
        } else {
            Dirty::Clean
        },
    }
}

impl<V: Tracked> Keyed<V> for BTreeMap<String, V> {
    fn entry_mut(&mut self, key: &str) -> Option<&mut V> {
        self.get_mut(key)
    }
    fn put(&mut self, key: String, value: V) {
        self.insert(key, value);
    }
    fn drop_entry(&mut self, key: &str) {
        self.remove(key);
    }
    fn entries(&self) -> Box<dyn Iterator<Item = (&str, &V)> + '_> {
        Box::new(self.iter().map(|(k, v)| (k.as_str(), v)))
    }
}

fn whole(want: Want) -> Dirty {
    if want.persist {
        Dirty::Whole
    } else {
        Dirty::Clean
    }
}
