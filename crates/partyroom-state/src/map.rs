//! [`StateMap`]: a string-keyed collection that knows which entries were touched.

use std::collections::HashMap;
use std::fmt;

use indexmap::IndexMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::LoadError;
use crate::containers::{Keyed, keyed_diff, keyed_view, load_keyed};
use crate::patch::delete_marker;
use crate::tracked::{Diff, Tracked, Want};

/// A string-keyed collection of state whose flush visits only the entries that were touched.
///
/// Use it for anything that grows: the users collection, items, rooms. Reading (`get`, `iter`)
/// is free; every `&mut` access (`get_mut`, `insert`, `remove`, `iter_mut`, ...) marks the
/// entries it can reach so the next flush compares just those with their shadow. Replacing the
/// whole map (`*map = StateMap::new()`) is detected too: the next flush compares everything
/// once.
///
/// Entries keep insertion order while no entry is removed; removal swaps the last entry into
/// the hole (O(1)). Key order is not significant on the wire.
///
/// ```
/// use partyroom_state::StateMap;
/// let mut scores: StateMap<u32> = StateMap::new();
/// scores.insert("alice", 1);
/// *scores.get_mut("alice").unwrap() += 1;
/// assert_eq!(scores.get("alice"), Some(&2));
/// ```
pub struct StateMap<V> {
    entries: IndexMap<String, Slot<V>>,
    /// Keys touched since the last flush (each at most once, while its slot is marked).
    touched: Vec<String>,
    /// The map was created or replaced since the last flush: compare every entry once.
    fresh: bool,
}

struct Slot<V> {
    value: V,
    touched: bool,
}

/// Users of a room, keyed by public id. A [`StateMap`] marked `#[state(users)]`.
pub type Users<U> = StateMap<U>;

impl<V> StateMap<V> {
    /// An empty map.
    pub fn new() -> Self {
        Self {
            entries: IndexMap::new(),
            touched: Vec::new(),
            fresh: true,
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry for `key`.
    pub fn get(&self, key: &str) -> Option<&V> {
        self.entries.get(key).map(|s| &s.value)
    }

    /// True if there is an entry for `key`.
    pub fn contains_key(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// The entry for `key`, mutably; the entry is compared at the next flush.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        let (_, k, slot) = self.entries.get_full_mut(key)?;
        if !slot.touched {
            slot.touched = true;
            self.touched.push(k.clone());
        }
        Some(&mut slot.value)
    }

    /// Insert or replace an entry; returns the previous value.
    pub fn insert(&mut self, key: impl Into<String>, value: V) -> Option<V> {
        let key = key.into();
        match self.entries.get_mut(&key) {
            Some(slot) => {
                let old = std::mem::replace(&mut slot.value, value);
                if !slot.touched {
                    slot.touched = true;
                    self.touched.push(key);
                }
                Some(old)
            }
            None => {
                self.touched.push(key.clone());
                self.entries.insert(
                    key,
                    Slot {
                        value,
                        touched: true,
                    },
                );
                None
            }
        }
    }

    /// The entry for `key`, inserting `make()` first if there is none; marked as touched.
    pub fn get_or_insert_with(&mut self, key: &str, make: impl FnOnce() -> V) -> &mut V {
        if !self.entries.contains_key(key) {
            self.insert(key.to_owned(), make());
        }
        self.get_mut(key).expect("entry was just ensured")
    }

    /// Remove an entry; clients receive `"$delete"` for it.
    pub fn remove(&mut self, key: &str) -> Option<V> {
        let slot = self.entries.swap_remove(key)?;
        if !slot.touched {
            self.touched.push(key.to_owned());
        }
        Some(slot.value)
    }

    /// Keep only the entries for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &V) -> bool) {
        let touched = &mut self.touched;
        self.entries.retain(|k, slot| {
            let kept = keep(k, &slot.value);
            if !kept && !slot.touched {
                touched.push(k.clone());
            }
            kept
        });
    }

    /// Remove every entry.
    pub fn clear(&mut self) {
        self.retain(|_, _| false);
    }

    /// Iterate over entries.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &V)> + '_ {
        self.entries.iter().map(|(k, s)| (k.as_str(), &s.value))
    }

    /// Iterate mutably; every entry is compared at the next flush.
    pub fn iter_mut(&mut self) -> impl ExactSizeIterator<Item = (&str, &mut V)> + '_ {
        let touched = &mut self.touched;
        self.entries.iter_mut().map(move |(k, s)| {
            if !s.touched {
                s.touched = true;
                touched.push(k.clone());
            }
            (k.as_str(), &mut s.value)
        })
    }

    /// The keys.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.entries.keys().map(String::as_str)
    }

    /// The values.
    pub fn values(&self) -> impl ExactSizeIterator<Item = &V> + '_ {
        self.entries.values().map(|s| &s.value)
    }

    /// The values, mutably; every entry is compared at the next flush.
    pub fn values_mut(&mut self) -> impl ExactSizeIterator<Item = &mut V> + '_ {
        self.iter_mut().map(|(_, v)| v)
    }

    /// Number of entries marked for the next flush (for diagnostics and tests).
    pub fn pending_len(&self) -> usize {
        if self.fresh {
            self.entries.len()
        } else {
            self.touched.len()
        }
    }
}

impl<V> Default for StateMap<V> {
    fn default() -> Self {
        Self::new()
    }
}

/// A clone is a new map: the first flush after it replaces another compares every entry.
impl<V: Clone> Clone for StateMap<V> {
    fn clone(&self) -> Self {
        Self {
            entries: self
                .entries
                .iter()
                .map(|(k, s)| {
                    (
                        k.clone(),
                        Slot {
                            value: s.value.clone(),
                            touched: false,
                        },
                    )
                })
                .collect(),
            touched: Vec::new(),
            fresh: true,
        }
    }
}

impl<V: fmt::Debug> fmt::Debug for StateMap<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<V: PartialEq> PartialEq for StateMap<V> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl<K: Into<String>, V> FromIterator<(K, V)> for StateMap<V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut map = StateMap::new();
        map.extend(iter);
        map
    }
}

impl<K: Into<String>, V> Extend<(K, V)> for StateMap<V> {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl<V: Serialize> Serialize for StateMap<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for StateMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries = IndexMap::<String, V>::deserialize(deserializer)?;
        Ok(entries.into_iter().collect())
    }
}

impl<V: Tracked> StateMap<V> {
    fn diff_entry(
        &mut self,
        key: String,
        shadow: &mut HashMap<String, V::Shadow>,
        want: Want,
        sync: &mut Map<String, Value>,
        keys: &mut Vec<String>,
    ) {
        match (self.entries.get_mut(&key), shadow.get_mut(&key)) {
            (Some(slot), Some(sh)) => {
                slot.touched = false;
                let d = slot.value.diff(sh, want);
                if !d.persist.is_clean() {
                    keys.push(key.clone());
                }
                if let Some(p) = d.sync {
                    sync.insert(key, p);
                }
            }
            (Some(slot), None) => {
                slot.touched = false;
                if want.sync {
                    sync.insert(key.clone(), slot.value.sync_view());
                }
                shadow.insert(key.clone(), slot.value.take_shadow());
                keys.push(key);
            }
            (None, Some(_)) => {
                shadow.remove(&key);
                if want.sync {
                    sync.insert(key.clone(), delete_marker());
                }
                keys.push(key);
            }
            (None, None) => {}
        }
    }
}

impl<V: Tracked> Keyed<V> for StateMap<V> {
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
        Box::new(self.iter())
    }
}

impl<V: Tracked> Tracked for StateMap<V> {
    type Shadow = HashMap<String, V::Shadow>;

    fn take_shadow(&mut self) -> Self::Shadow {
        self.touched.clear();
        self.fresh = false;
        self.entries
            .iter_mut()
            .map(|(k, s)| {
                s.touched = false;
                (k.clone(), s.value.take_shadow())
            })
            .collect()
    }

    fn diff(&mut self, shadow: &mut Self::Shadow, want: Want) -> Diff {
        let mut sync = Map::new();
        let mut keys = Vec::new();
        if self.fresh {
            self.fresh = false;
            self.touched.clear();
            let gone: Vec<String> = shadow
                .keys()
                .filter(|k| !self.entries.contains_key(*k))
                .cloned()
                .collect();
            let all: Vec<String> = self.entries.keys().cloned().collect();
            for key in gone.into_iter().chain(all) {
                self.diff_entry(key, shadow, want, &mut sync, &mut keys);
            }
        } else {
            for key in std::mem::take(&mut self.touched) {
                self.diff_entry(key, shadow, want, &mut sync, &mut keys);
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
            Some((k, rest)) => self.get(k)?.persist_at(rest),
        }
    }

    fn load(&mut self, value: &Value) -> Result<(), LoadError> {
        load_keyed(self, value)
    }

    fn create(value: &Value) -> Result<Self, LoadError> {
        let mut map = StateMap::new();
        map.load(value)?;
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Dirty;
    use serde_json::json;

    fn flush(m: &mut StateMap<i64>, sh: &mut HashMap<String, i64>) -> Diff {
        m.diff(sh, Want::ALL)
    }

    #[test]
    fn only_touched_entries_are_visited() {
        let mut m: StateMap<i64> = (0..100).map(|i| (i.to_string(), i)).collect();
        let mut sh = m.take_shadow();
        assert_eq!(m.pending_len(), 0);
        *m.get_mut("5").unwrap() = 50;
        let _ = m.get_mut("6"); // touched, unchanged
        assert_eq!(m.pending_len(), 2);
        let d = flush(&mut m, &mut sh);
        assert_eq!(d.sync, Some(json!({"5": 50})));
        assert_eq!(d.persist, Dirty::Entries(vec!["5".into()]));
        assert_eq!(m.pending_len(), 0);
    }

    #[test]
    fn insert_remove_and_replace() {
        let mut m: StateMap<i64> = StateMap::new();
        m.insert("a", 1);
        let mut sh = m.take_shadow();
        m.insert("b", 2);
        m.remove("a");
        m.insert("c", 3);
        m.remove("c");
        let d = flush(&mut m, &mut sh);
        assert_eq!(d.sync, Some(json!({"a":"$delete","b":2})));
        m = [("z", 9)].into_iter().collect();
        let d = flush(&mut m, &mut sh);
        assert_eq!(d.sync, Some(json!({"b":"$delete","z":9})));
        assert_eq!(sh.len(), 1);
    }

    #[test]
    fn load_merges_and_deletes() {
        let mut m: StateMap<i64> = [("a", 1), ("b", 2)].into_iter().collect();
        m.load(&json!({"a":"$delete","c":3})).unwrap();
        assert_eq!(m.sync_view(), json!({"b":2,"c":3}));
        let err = m.load(&json!({"d":"x"})).unwrap_err();
        assert_eq!(err.path(), "d");
        assert!(m.load(&json!([1])).is_err());
    }
}
