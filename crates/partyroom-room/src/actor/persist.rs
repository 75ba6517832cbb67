//! Saving a room to storage and restoring it: the persist half of the actor.
//!
//! What is stored (keys of [`crate::storage::Storage`], per room):
//! - `state/<field>`: a root field of the state, whole;
//! - `state/<field>/<key>`: one entry of a root collection (`StateMap`), so a flush where 10 of
//!   1,000 users changed writes 10 rows;
//! - `session/<private id>`: `{"publicId", "created", "disconnectedAt"}`.
//!
//! Writes are batched ([`crate::RoomConfig::throttle_storage`]) and applied one batch at a time
//! in a task, so the room keeps serving while storage works. A failed batch is retried with
//! backoff: its rows stay dirty and are read again from the live state.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use partyroom_state::{State, load_into};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{RoomActor, Session, now_ms};
use crate::room::Room;
use crate::storage::{Batch, RoomKey, Storage, StorageError, escape_segment, unescape_segment};

const STATE: &str = "state/";
const SESSION: &str = "session/";
const TRANSFER: &str = "transfer/";

/// The result of one batch write.
pub(crate) struct WriteDone {
    result: Result<(), StorageError>,
    rows: Vec<Vec<String>>,
    sessions: Vec<String>,
    transfers: Vec<String>,
}

/// Dirty rows and sessions, the write in flight, and when to write next.
pub(crate) struct Persistence {
    storage: Arc<dyn Storage>,
    key: RoomKey,
    dirty_rows: HashSet<Vec<String>>,
    dirty_sessions: HashSet<String>,
    dirty_transfers: HashSet<String>,
    /// Root fields stored whole (`state/<field>`): a change to one of their entries rewrites
    /// the whole row, so no stale copy can come back at load.
    whole_fields: HashSet<String>,
    due: Option<Instant>,
    writing: bool,
    failures: u32,
    done_tx: mpsc::UnboundedSender<WriteDone>,
    done_rx: mpsc::UnboundedReceiver<WriteDone>,
}

impl Persistence {
    pub(crate) fn new(storage: Arc<dyn Storage>, key: RoomKey) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Self {
            storage,
            key,
            dirty_rows: HashSet::new(),
            dirty_sessions: HashSet::new(),
            dirty_transfers: HashSet::new(),
            whole_fields: HashSet::new(),
            due: None,
            writing: false,
            failures: 0,
            done_tx,
            done_rx,
        }
    }

    pub(crate) fn rows_changed(&mut self, rows: Vec<Vec<String>>, throttle: Duration) {
        if rows.is_empty() {
            return;
        }
        self.dirty_rows.extend(rows);
        self.schedule(throttle);
    }

    pub(crate) fn session_changed(&mut self, private_id: &str) {
        self.dirty_sessions.insert(private_id.to_owned());
        // Sessions are small and decide who gets which user back: write them promptly.
        self.schedule(Duration::ZERO);
    }

    pub(crate) fn transfer_changed(&mut self, token: &str) {
        self.dirty_transfers.insert(token.to_owned());
        self.schedule(Duration::ZERO);
    }

    fn is_clean(&self) -> bool {
        self.dirty_rows.is_empty()
            && self.dirty_sessions.is_empty()
            && self.dirty_transfers.is_empty()
    }

    fn schedule(&mut self, after: Duration) {
        let at = Instant::now() + after;
        self.due = Some(self.due.map_or(at, |d| d.min(at)));
    }

    /// Write whatever is dirty as soon as possible (shutdown).
    pub(crate) fn due_now(&mut self) {
        self.due = Some(Instant::now());
    }

    /// When the next write should start (none while one is in flight).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        if self.writing || self.is_clean() {
            None
        } else {
            self.due
        }
    }

    /// Nothing dirty and nothing in flight.
    pub(crate) fn is_idle(&self) -> bool {
        !self.writing && self.is_clean()
    }

    /// Completes when a write finishes.
    pub(crate) async fn written(&mut self) -> WriteDone {
        match self.done_rx.recv().await {
            Some(done) => done,
            None => std::future::pending().await,
        }
    }
}

fn row_key(row: &[String]) -> String {
    let mut key = String::from(STATE);
    for (i, seg) in row.iter().enumerate() {
        if i > 0 {
            key.push('/');
        }
        key.push_str(&escape_segment(seg));
    }
    key
}

impl<R: Room> RoomActor<R> {
    /// Load the stored state and sessions (spec 10.6, without its quirks).
    pub(super) async fn restore(&mut self) -> Result<(), StorageError> {
        let storage = self.persist.storage.clone();
        let key = self.persist.key.clone();
        let rows = storage.list(&key, STATE).await?;
        let sessions = storage.list(&key, SESSION).await?;
        let transfers = storage.list(&key, TRANSFER).await?;

        let mut snapshot = Map::new();
        let mut entries = Vec::new();
        for (k, v) in rows {
            let rest = &k[STATE.len()..];
            match rest.split_once('/') {
                None => {
                    let field = unescape_segment(rest);
                    self.persist.whole_fields.insert(field.clone());
                    snapshot.insert(field, v);
                }
                Some((f, e)) => entries.push((unescape_segment(f), unescape_segment(e), v)),
            }
        }
        for (field, entry, v) in entries {
            let slot = snapshot
                .entry(field)
                .or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            if let Value::Object(m) = slot {
                m.insert(entry, v);
            }
        }
        let mut snapshot = Value::Object(snapshot);
        if let Some(hook) = &self.handlers.on_storage_restore {
            hook(&mut snapshot);
        }
        if let (Some(hook), Some(users)) = (&self.handlers.on_user_storage_restore, R::USERS_FIELD)
            && let Some(Value::Object(map)) = snapshot.get_mut(users)
        {
            for (public_id, user) in map.iter_mut() {
                hook(public_id, user);
            }
        }
        let state = self.tracker.state_mut();
        if let Err(err) = load_into(state, &snapshot) {
            return Err(StorageError::Corrupt {
                key: format!("{STATE}{}", err.path()),
                reason: err.to_string(),
            });
        }
        // Nobody is connected to a room that is just starting, whatever was stored.
        if let Some(users) = state.users_mut() {
            for user in users.values_mut() {
                user.set_connected(false);
            }
        }
        self.tracker.rebase();

        let now = Instant::now();
        let wall = now_ms();
        for (k, v) in sessions {
            let private_id = unescape_segment(&k[SESSION.len()..]);
            let Some(public_id) = v.get("publicId").and_then(Value::as_str) else {
                tracing::warn!(room = %self.id, key = %k, "dropping a session without publicId");
                self.persist.session_changed(&private_id);
                continue;
            };
            // A session stored without `disconnectedAt` was connected when the process
            // stopped (a crash): it counts as disconnected now, so expiry still runs.
            let disconnected_ms = v
                .get("disconnectedAt")
                .and_then(Value::as_u64)
                .unwrap_or(wall);
            let ago = Duration::from_millis(wall.saturating_sub(disconnected_ms));
            let disconnected = now.checked_sub(ago).unwrap_or(now);
            self.sessions.insert(
                private_id.clone(),
                Session {
                    public_id: public_id.to_owned(),
                    live: 0,
                    created_ms: v.get("created").and_then(Value::as_u64).unwrap_or(wall),
                    disconnected: Some(disconnected),
                    disconnected_ms: Some(disconnected_ms),
                },
            );
            if let Some(after) = self.config.session_expiry {
                self.expiries.insert((disconnected + after, private_id));
            }
        }
        for (k, v) in transfers {
            let token = unescape_segment(&k[TRANSFER.len()..]);
            let created_ms = v.get("created").and_then(Value::as_u64).unwrap_or(0);
            let age = Duration::from_millis(wall.saturating_sub(created_ms));
            match (
                v.get("privateId").and_then(Value::as_str),
                v.get("publicId").and_then(Value::as_str),
            ) {
                (Some(private_id), Some(public_id)) if age < self.config.transfer_expiry => {
                    self.transfers.insert(
                        token,
                        super::Transfer {
                            private_id: private_id.to_owned(),
                            public_id: public_id.to_owned(),
                            created: now.checked_sub(age).unwrap_or(now),
                            created_ms,
                        },
                    );
                }
                // Expired or unreadable: forget it.
                _ => self.persist.transfer_changed(&token),
            }
        }
        // Expire what is overdue right away.
        self.on_timer(false);
        Ok(())
    }

    /// Start a batch write if one is due and none is in flight.
    pub(super) fn maybe_save(&mut self) {
        let p = &mut self.persist;
        if p.writing || p.is_clean() || p.due.is_some_and(|d| d > Instant::now()) {
            return;
        }
        p.due = None;
        let mut rows: HashSet<Vec<String>> = HashSet::with_capacity(p.dirty_rows.len());
        for row in p.dirty_rows.drain() {
            if row.len() >= 2 && p.whole_fields.contains(&row[0]) {
                rows.insert(vec![row[0].clone()]);
            } else if !row.is_empty() {
                rows.insert(row);
            }
        }
        let mut batch = Batch::default();
        for row in &rows {
            let key = row_key(row);
            if row.len() == 1 {
                // A whole field replaces any entry rows stored under it.
                batch.delete_prefixes.push(format!("{key}/"));
                p.whole_fields.insert(row[0].clone());
            }
            match self.tracker.persist_row(row) {
                Some(value) => batch.puts.push((key, value)),
                None => batch.deletes.push(key),
            }
        }
        let sessions: Vec<String> = p.dirty_sessions.drain().collect();
        for private_id in &sessions {
            let key = format!("{SESSION}{}", escape_segment(private_id));
            match self.sessions.get(private_id) {
                Some(s) => batch.puts.push((
                    key,
                    json!({
                        "publicId": s.public_id,
                        "created": s.created_ms,
                        "disconnectedAt": s.disconnected_ms,
                    }),
                )),
                None => batch.deletes.push(key),
            }
        }
        let transfers: Vec<String> = p.dirty_transfers.drain().collect();
        for token in &transfers {
            let key = format!("{TRANSFER}{}", escape_segment(token));
            match self.transfers.get(token) {
                Some(t) => batch.puts.push((
                    key,
                    json!({"privateId": t.private_id, "publicId": t.public_id, "created": t.created_ms}),
                )),
                None => batch.deletes.push(key),
            }
        }
        p.writing = true;
        let storage = p.storage.clone();
        let key = p.key.clone();
        let done = p.done_tx.clone();
        let rows: Vec<Vec<String>> = rows.into_iter().collect();
        tokio::spawn(async move {
            let result = storage.apply(&key, batch).await;
            let _ = done.send(WriteDone {
                result,
                rows,
                sessions,
                transfers,
            });
        });
    }

    /// A batch write finished.
    pub(super) fn on_written(&mut self, done: WriteDone) {
        let p = &mut self.persist;
        p.writing = false;
        match done.result {
            Ok(()) => p.failures = 0,
            Err(err) => {
                p.failures += 1;
                let backoff = Duration::from_millis(100 << p.failures.min(6));
                tracing::error!(room = %self.id, %err, retry_in = ?backoff, "saving room failed");
                p.dirty_rows.extend(done.rows);
                p.dirty_sessions.extend(done.sessions);
                p.dirty_transfers.extend(done.transfers);
                p.due = Some(Instant::now() + backoff);
            }
        }
    }
}
