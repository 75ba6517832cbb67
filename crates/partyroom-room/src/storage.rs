//! The storage trait rooms persist through, and the in-memory backend.
//!
//! A backend stores JSON values under string keys, scoped by room ([`RoomKey`]). Rooms write
//! through [`Storage::apply`]: one [`Batch`] per save, applied atomically, so a crash leaves
//! either the whole save or none of it. Backends: [`MemoryStorage`] here; SQLite and
//! PostgreSQL in the `partyroom-storage` crate; any type implementing [`Storage`].
//!
//! Keys written by rooms (see `docs/ARCHITECTURE.md`): `state/<field>` and
//! `state/<field>/<entry key>` for state rows, `session/<private id>` for sessions. Path segments
//! are escaped with [`escape_segment`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use serde_json::Value;

/// A boxed, sendable future (storage methods return these so the trait is object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Which room a key belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomKey {
    /// The party (`main`).
    pub party: String,
    /// The room id.
    pub room: String,
}

impl RoomKey {
    /// A room key.
    pub fn new(party: impl Into<String>, room: impl Into<String>) -> Self {
        Self {
            party: party.into(),
            room: room.into(),
        }
    }
}

impl fmt::Display for RoomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.party, self.room)
    }
}

/// Writes applied together: first every delete (keys, then prefixes), then every put.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// Keys to remove.
    pub deletes: Vec<String>,
    /// Remove every key starting with one of these.
    pub delete_prefixes: Vec<String>,
    /// Keys to write (insert or replace).
    pub puts: Vec<(String, Value)>,
}

impl Batch {
    /// True when the batch does nothing.
    pub fn is_empty(&self) -> bool {
        self.deletes.is_empty() && self.delete_prefixes.is_empty() && self.puts.is_empty()
    }

    /// Number of rows written or deleted (prefix deletes count once).
    pub fn len(&self) -> usize {
        self.deletes.len() + self.delete_prefixes.len() + self.puts.len()
    }
}

/// A storage backend failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The backend reported an error (I/O, SQL, connection...).
    #[error("storage backend error: {0}")]
    Backend(String),
    /// A stored value could not be decoded.
    #[error("stored value at `{key}` is corrupt: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// The backend was shut down.
    #[error("storage is closed")]
    Closed,
    /// The write was refused because the writer no longer holds the room: its lease expired
    /// or another node claimed the room with a newer epoch (cluster mode). Nothing of the
    /// batch was applied, and this writer must stop writing the room.
    #[error("write refused: lease epoch {epoch} no longer holds the room")]
    Fenced {
        /// The writer's (stale) epoch.
        epoch: u64,
    },
}

/// A persistent key/value store for rooms. Implementations must be cheap to share
/// (`Arc<dyn Storage>`) and must never block the async runtime.
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    /// The value at `key`.
    fn get<'a>(
        &'a self,
        room: &'a RoomKey,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Value>, StorageError>>;

    /// Every key starting with `prefix` and its value, sorted by key (byte order).
    fn list<'a>(
        &'a self,
        room: &'a RoomKey,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, Value)>, StorageError>>;

    /// Apply a batch atomically: after a crash either all of it or none of it is stored.
    fn apply<'a>(
        &'a self,
        room: &'a RoomKey,
        batch: Batch,
    ) -> BoxFuture<'a, Result<(), StorageError>>;

    /// Write one key.
    fn put<'a>(
        &'a self,
        room: &'a RoomKey,
        key: &'a str,
        value: Value,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        self.apply(
            room,
            Batch {
                puts: vec![(key.to_owned(), value)],
                ..Batch::default()
            },
        )
    }

    /// Remove one key.
    fn delete<'a>(
        &'a self,
        room: &'a RoomKey,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        self.apply(
            room,
            Batch {
                deletes: vec![key.to_owned()],
                ..Batch::default()
            },
        )
    }
}

/// Everything a [`MemoryStorage`] holds: room → key → value.
pub type MemorySnapshot = BTreeMap<RoomKey, BTreeMap<String, Value>>;

/// Storage in process memory: for tests, the harness, and servers that need no durability.
/// Its contents can be copied out ([`MemoryStorage::snapshot`]) and back in
/// ([`MemoryStorage::restore`]).
#[derive(Debug, Default)]
pub struct MemoryStorage {
    /// A std mutex: every operation is a short, synchronous map update.
    rooms: Mutex<HashMap<RoomKey, BTreeMap<String, Value>>>,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A deep copy of every room's keys (rooms with no keys are left out).
    pub fn snapshot(&self) -> MemorySnapshot {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        rooms
            .iter()
            .filter(|(_, keys)| !keys.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Replace everything with a snapshot.
    pub fn restore(&self, snapshot: MemorySnapshot) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        *rooms = snapshot.into_iter().collect();
    }

    /// The keys of one room (for tests and tools).
    pub fn room(&self, room: &RoomKey) -> BTreeMap<String, Value> {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        rooms.get(room).cloned().unwrap_or_default()
    }
}

impl Storage for MemoryStorage {
    fn get<'a>(
        &'a self,
        room: &'a RoomKey,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Value>, StorageError>> {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let value = rooms.get(room).and_then(|r| r.get(key)).cloned();
        Box::pin(std::future::ready(Ok(value)))
    }

    fn list<'a>(
        &'a self,
        room: &'a RoomKey,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, Value)>, StorageError>> {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let out = rooms
            .get(room)
            .map(|r| {
                r.range(prefix.to_owned()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Box::pin(std::future::ready(Ok(out)))
    }

    fn apply<'a>(
        &'a self,
        room: &'a RoomKey,
        batch: Batch,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let keys = rooms.entry(room.clone()).or_default();
        for k in &batch.deletes {
            keys.remove(k);
        }
        for p in &batch.delete_prefixes {
            keys.retain(|k, _| !k.starts_with(p.as_str()));
        }
        for (k, v) in batch.puts {
            keys.insert(k, v);
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Escape a path segment for use in a key: `%` and `/` are percent-encoded.
pub fn escape_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for c in segment.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
    out
}

/// Undo [`escape_segment`].
pub fn unescape_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    let mut rest = segment;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("%25") {
            out.push('%');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("%2F") {
            out.push('/');
            rest = after;
        } else {
            out.push('%');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn segments_round_trip() {
        for s in ["plain", "a/b", "%", "%2F", "%25/%", "x%y/z/", ""] {
            let e = escape_segment(s);
            assert!(!e.contains('/'));
            assert_eq!(unescape_segment(&e), s);
        }
    }

    #[tokio::test]
    async fn memory_storage_batches_and_snapshots() {
        let store = MemoryStorage::new();
        let room = RoomKey::new("main", "r1");
        let other = RoomKey::new("main", "r2");
        store
            .apply(
                &room,
                Batch {
                    puts: vec![
                        ("state/a".into(), json!(1)),
                        ("state/m/x".into(), json!({"k": 1})),
                        ("state/m/y".into(), json!(2)),
                        ("session/s".into(), json!({"publicId": "p"})),
                    ],
                    ..Batch::default()
                },
            )
            .await
            .unwrap();
        store.put(&other, "state/a", json!(9)).await.unwrap();
        assert_eq!(store.get(&room, "state/a").await.unwrap(), Some(json!(1)));
        let listed = store.list(&room, "state/m/").await.unwrap();
        assert_eq!(listed.len(), 2);
        store
            .apply(
                &room,
                Batch {
                    delete_prefixes: vec!["state/m/".into()],
                    puts: vec![("state/m/z".into(), json!(3))],
                    ..Batch::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(store.list(&room, "state/").await.unwrap().len(), 2);
        let snap = store.snapshot();
        let copy = MemoryStorage::new();
        copy.restore(snap.clone());
        assert_eq!(copy.snapshot(), snap);
        store.delete(&other, "state/a").await.unwrap();
        assert!(!store.snapshot().contains_key(&other));
    }
}
