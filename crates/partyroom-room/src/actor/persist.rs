//! Saving a room to storage: which rows are dirty, when the next batch is due, the batch in
//! flight, and reading everything back when a room starts (applied by `restore.rs`).
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

use partyroom_state::{Tracked, Tracker};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::metrics::StorageMetrics;
use crate::session::lifecycle::Sessions;
use crate::session::transfer::Transfers;
use crate::storage::{Batch, RoomKey, Storage, StorageError, escape_segment, unescape_segment};

/// Key prefix of the state rows.
pub(crate) const STATE: &str = "state/";
const SESSION: &str = "session/";
const TRANSFER: &str = "transfer/";

/// Storage refused a write because the room belongs to another owner now.
#[derive(Debug)]
pub(crate) struct LeaseLost;

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
    metrics: StorageMetrics,
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
            metrics: StorageMetrics::default(),
        }
    }

    /// Record writes with these handles.
    pub(crate) fn set_metrics(&mut self, metrics: StorageMetrics) {
        self.metrics = metrics;
    }

    /// State rows changed: write them within `throttle`. The clock is read only when there
    /// are rows (a flush that changed nothing stored is common).
    pub(crate) fn rows_changed(
        &mut self,
        rows: Vec<Vec<String>>,
        throttle: Duration,
        clock: &dyn Clock,
    ) {
        if rows.is_empty() {
            return;
        }
        self.dirty_rows.extend(rows);
        self.schedule(clock.now() + throttle);
    }

    /// A session changed at `now`.
    pub(crate) fn session_changed(&mut self, private_id: &str, now: Instant) {
        self.dirty_sessions.insert(private_id.to_owned());
        // Sessions are small and decide who gets which user back: write them promptly.
        self.schedule(now);
    }

    /// A transfer token was made or used at `now`.
    pub(crate) fn transfer_changed(&mut self, token: &str, now: Instant) {
        self.dirty_transfers.insert(token.to_owned());
        self.schedule(now);
    }

    #[inline]
    fn is_clean(&self) -> bool {
        self.dirty_rows.is_empty()
            && self.dirty_sessions.is_empty()
            && self.dirty_transfers.is_empty()
    }

    fn schedule(&mut self, at: Instant) {
        self.due = Some(self.due.map_or(at, |d| d.min(at)));
    }

    /// Write whatever is dirty as soon as possible (shutdown).
    pub(crate) fn due_now(&mut self, now: Instant) {
        self.due = Some(now);
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

/// What is stored for a room, as read when it starts.
pub(crate) struct Stored {
    /// The state rows assembled into one snapshot of the root fields.
    pub(crate) snapshot: Value,
    /// Sessions: private id and stored record.
    pub(crate) sessions: Vec<(String, Value)>,
    /// Transfer tokens and their stored records.
    pub(crate) transfers: Vec<(String, Value)>,
}

impl Persistence {
    /// Read everything stored for the room (spec 10.6, without its quirks), and note which
    /// root fields are stored whole.
    pub(crate) async fn load(&mut self) -> Result<Stored, StorageError> {
        let rows = self.storage.list(&self.key, STATE).await?;
        let sessions = self.storage.list(&self.key, SESSION).await?;
        let transfers = self.storage.list(&self.key, TRANSFER).await?;

        let mut snapshot = Map::new();
        let mut entries = Vec::new();
        for (k, v) in rows {
            let rest = &k[STATE.len()..];
            match rest.split_once('/') {
                None => {
                    let field = unescape_segment(rest);
                    self.whole_fields.insert(field.clone());
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
        let unprefix = |list: Vec<(String, Value)>, prefix: &str| {
            list.into_iter()
                .map(|(k, v)| (unescape_segment(&k[prefix.len()..]), v))
                .collect()
        };
        Ok(Stored {
            snapshot: Value::Object(snapshot),
            sessions: unprefix(sessions, SESSION),
            transfers: unprefix(transfers, TRANSFER),
        })
    }

    /// Start a batch write if one is due and none is in flight: the dirty rows are read from
    /// the live state (`tracker`), sessions and tokens from their tables. The clock is read
    /// only when something waits to be written (this runs after every mailbox batch).
    #[inline]
    pub(crate) fn maybe_save<S: Tracked>(
        &mut self,
        clock: &dyn Clock,
        tracker: &Tracker<S>,
        sessions: &Sessions,
        transfers: &Transfers,
    ) {
        if self.writing || self.is_clean() || self.due.is_some_and(|d| d > clock.now()) {
            return;
        }
        self.start_batch(tracker, sessions, transfers);
    }

    /// Build the batch from what is dirty and write it in a task.
    fn start_batch<S: Tracked>(
        &mut self,
        tracker: &Tracker<S>,
        sessions: &Sessions,
        transfers: &Transfers,
    ) {
        self.due = None;
        let mut rows: HashSet<Vec<String>> = HashSet::with_capacity(self.dirty_rows.len());
        for row in self.dirty_rows.drain() {
            if row.len() >= 2 && self.whole_fields.contains(&row[0]) {
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
                self.whole_fields.insert(row[0].clone());
            }
            match tracker.persist_row(row) {
                Some(value) => batch.puts.push((key, value)),
                None => batch.deletes.push(key),
            }
        }
        let dirty_sessions: Vec<String> = self.dirty_sessions.drain().collect();
        for private_id in &dirty_sessions {
            let key = format!("{SESSION}{}", escape_segment(private_id));
            match sessions.get(private_id) {
                Some(s) => batch.puts.push((key, s.to_stored())),
                None => batch.deletes.push(key),
            }
        }
        let dirty_transfers: Vec<String> = self.dirty_transfers.drain().collect();
        for token in &dirty_transfers {
            let key = format!("{TRANSFER}{}", escape_segment(token));
            match transfers.get(token) {
                Some(t) => batch.puts.push((key, t.to_stored())),
                None => batch.deletes.push(key),
            }
        }
        self.writing = true;
        let storage = self.storage.clone();
        let key = self.key.clone();
        let done = self.done_tx.clone();
        let rows: Vec<Vec<String>> = rows.into_iter().collect();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let result = storage.apply(&key, batch).await;
            metrics.seconds.record(started.elapsed().as_secs_f64());
            match &result {
                Ok(()) => metrics.ok.increment(1),
                Err(StorageError::Fenced { .. }) => metrics.fenced.increment(1),
                Err(_) => metrics.error.increment(1),
            }
            let _ = done.send(WriteDone {
                result,
                rows,
                sessions: dirty_sessions,
                transfers: dirty_transfers,
            });
        });
    }

    /// A batch write finished at `now`. A failed one is retried with backoff, except when
    /// storage refused it because the room is no longer this process's
    /// ([`StorageError::Fenced`]): then nothing more may be written, and the room must stop.
    pub(crate) fn on_written(
        &mut self,
        done: WriteDone,
        now: Instant,
        room: &str,
    ) -> Result<(), LeaseLost> {
        self.writing = false;
        match done.result {
            Ok(()) => self.failures = 0,
            Err(err @ StorageError::Fenced { .. }) => {
                tracing::error!(room, %err, "room lost to another owner: stopping it");
                return Err(LeaseLost);
            }
            Err(err) => {
                self.failures += 1;
                let backoff = Duration::from_millis(100 << self.failures.min(6));
                tracing::error!(room, %err, retry_in = ?backoff, "saving room failed");
                self.dirty_rows.extend(done.rows);
                self.dirty_sessions.extend(done.sessions);
                self.dirty_transfers.extend(done.transfers);
                self.due = Some(now + backoff);
            }
        }
        Ok(())
    }
}
