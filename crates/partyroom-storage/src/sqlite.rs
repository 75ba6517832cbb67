//! SQLite backend: one writer thread, one connection, group commit.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use partyroom_room::storage::{Batch, BoxFuture, RoomKey, Storage, StorageError};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, TransactionBehavior, params};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::{DEFAULT_TABLE, OpenError, prefix_upper_bound, validate_table_name};

/// At most this many queued requests are handled in one transaction, so one commit never
/// waits behind an unbounded queue.
const MAX_GROUP: usize = 1024;

/// SQLite's `synchronous` setting (how hard a commit waits for the disk).
///
/// With `journal_mode=WAL` (always set on files), [`Synchronous::Normal`] keeps every
/// committed transaction through a crash of the process; a power loss or an OS crash may
/// lose the last transactions committed before it (the database stays consistent).
/// [`Synchronous::Full`] also keeps them through a power loss, at the cost of one more
/// `fsync` per commit. Group commit shares that cost between every batch of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// `PRAGMA synchronous=NORMAL`: survives process crashes (the default).
    #[default]
    Normal,
    /// `PRAGMA synchronous=FULL`: also survives power loss.
    Full,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// How [`SqliteStorage::open_with`] sets up the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// How long a write waits for a lock held by another connection (another process on the
    /// same file) before failing. Default: 5 seconds.
    pub busy_timeout: Duration,
    /// Durability of each commit. Default: [`Synchronous::Normal`].
    pub synchronous: Synchronous,
    /// The table holding the rows, created if missing. Must match
    /// `^[A-Za-z_][A-Za-z0-9_]*$`. Default: [`DEFAULT_TABLE`].
    pub table: String,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_secs(5),
            synchronous: Synchronous::Normal,
            table: DEFAULT_TABLE.to_owned(),
        }
    }
}

/// Counters of the writer thread, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SqliteStats {
    /// Write transactions committed (each holds one or more batches).
    pub transactions: u64,
    /// Non-empty batches committed.
    pub batches: u64,
}

/// Storage in one SQLite database, owned by a dedicated thread.
///
/// # Threading
///
/// Opening starts one OS thread (`partyroom-sqlite`) that owns the only connection. Every
/// call ([`Storage::get`], [`Storage::list`], [`Storage::apply`]) sends a request over a
/// channel and awaits the reply, so no tokio worker ever waits on SQLite. Requests are
/// handled in the order they were sent.
///
/// # Group commit
///
/// The thread waits for a request, then takes every other request already queued (up to
/// 1,024) and runs them all in **one** transaction, each batch inside its own savepoint (a
/// batch that fails is rolled back alone and gets its error; the others still commit). It
/// replies to every request only after the commit, so an `apply` that returned `Ok` is
/// durable (see [`Synchronous`]). With many rooms saving at once, one commit (one `fsync`)
/// serves all of them.
///
/// # Sharing and shutdown
///
/// `SqliteStorage` is a cheap [`Clone`] (an `Arc` inside), or share it as
/// `Arc<dyn Storage>`. When the last clone is dropped the thread finishes every request
/// already queued, closes the connection and exits on its own (dropping does not block).
/// [`SqliteStorage::close`] does the same and waits for it; afterwards every clone gets
/// [`StorageError::Closed`]. A request whose future is dropped after it was sent still runs.
#[derive(Clone)]
pub struct SqliteStorage {
    inner: Arc<Inner>,
}

struct Inner {
    requests: mpsc::Sender<Request>,
    path: Option<PathBuf>,
    table: String,
    stats: Arc<Counters>,
}

impl fmt::Debug for SqliteStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStorage")
            .field(
                "path",
                &self.inner.path.as_deref().unwrap_or(Path::new(MEMORY_PATH)),
            )
            .field("table", &self.inner.table)
            .finish_non_exhaustive()
    }
}

const MEMORY_PATH: &str = ":memory:";

#[derive(Debug, Default)]
struct Counters {
    transactions: AtomicU64,
    batches: AtomicU64,
}

type Reply<T> = oneshot::Sender<Result<T, StorageError>>;

enum Request {
    Get {
        room: RoomKey,
        key: String,
        reply: Reply<Option<Value>>,
    },
    List {
        room: RoomKey,
        prefix: String,
        reply: Reply<Vec<(String, Value)>>,
    },
    Apply {
        room: RoomKey,
        batch: Batch,
        reply: Reply<()>,
    },
    Flush {
        reply: Reply<()>,
    },
    Close {
        reply: Reply<()>,
    },
}

impl SqliteStorage {
    /// Open (or create) the database file at `path` with the default [`SqliteOptions`].
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// Open (or create) the database file at `path`.
    ///
    /// Sets `journal_mode=WAL`, the busy timeout and `synchronous`, and creates the table
    /// if it is missing. The file is opened on the storage thread; this only awaits it.
    pub async fn open_with(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<Self, OpenError> {
        Self::start(Some(path.as_ref().to_path_buf()), options).await
    }

    /// A private in-memory database (gone when the storage is dropped): for tests.
    pub async fn in_memory() -> Result<Self, OpenError> {
        Self::start(None, SqliteOptions::default()).await
    }

    /// The database file (`None` for an in-memory database).
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// How many transactions and batches the thread has committed so far.
    pub fn stats(&self) -> SqliteStats {
        SqliteStats {
            transactions: self.inner.stats.transactions.load(Ordering::Relaxed),
            batches: self.inner.stats.batches.load(Ordering::Relaxed),
        }
    }

    /// Wait until every request sent before this call has been handled and committed
    /// (including those whose futures were dropped).
    pub async fn flush(&self) -> Result<(), StorageError> {
        self.call(|reply| Request::Flush { reply }).await
    }

    /// Finish every queued request, close the connection and stop the thread, then return.
    /// Every clone of this storage gets [`StorageError::Closed`] from then on. Returns the
    /// error of the final close, if any; `Ok` when the storage was already closed.
    pub async fn close(self) -> Result<(), StorageError> {
        match self.call(|reply| Request::Close { reply }).await {
            Err(StorageError::Closed) => Ok(()),
            other => other,
        }
    }

    async fn start(path: Option<PathBuf>, options: SqliteOptions) -> Result<Self, OpenError> {
        validate_table_name(&options.table)?;
        let (requests, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let stats = Arc::new(Counters::default());
        let worker_path = path.clone();
        let worker_stats = Arc::clone(&stats);
        let worker_options = options.clone();
        thread::Builder::new()
            .name("partyroom-sqlite".to_owned())
            .spawn(move || {
                match Worker::open(worker_path.as_deref(), &worker_options, worker_stats) {
                    Ok(worker) => {
                        if ready_tx.send(Ok(())).is_ok() {
                            worker.run(rx);
                        }
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(OpenError::Thread)?;
        ready_rx.await.map_err(|_| {
            OpenError::Thread(std::io::Error::other(
                "the storage thread exited while opening the database",
            ))
        })??;
        tracing::debug!(path = ?path, table = %options.table, "sqlite storage opened");
        Ok(Self {
            inner: Arc::new(Inner {
                requests,
                path,
                table: options.table,
                stats,
            }),
        })
    }

    async fn call<T>(&self, request: impl FnOnce(Reply<T>) -> Request) -> Result<T, StorageError> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .requests
            .send(request(reply))
            .map_err(|_| StorageError::Closed)?;
        rx.await.map_err(|_| StorageError::Closed)?
    }
}

impl Storage for SqliteStorage {
    fn get<'a>(
        &'a self,
        room: &'a RoomKey,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Value>, StorageError>> {
        Box::pin(self.call(|reply| Request::Get {
            room: room.clone(),
            key: key.to_owned(),
            reply,
        }))
    }

    fn list<'a>(
        &'a self,
        room: &'a RoomKey,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, Value)>, StorageError>> {
        Box::pin(self.call(|reply| Request::List {
            room: room.clone(),
            prefix: prefix.to_owned(),
            reply,
        }))
    }

    fn apply<'a>(
        &'a self,
        room: &'a RoomKey,
        batch: Batch,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(self.call(move |reply| Request::Apply {
            room: room.clone(),
            batch,
            reply,
        }))
    }
}

/// The SQL for one table (the name is validated, so it can be spliced in).
struct Sql {
    get: String,
    list_range: String,
    list_from: String,
    delete: String,
    delete_range: String,
    delete_from: String,
    put: String,
}

impl Sql {
    fn new(table: &str) -> Self {
        let room = "party = ?1 AND room = ?2";
        Self {
            get: format!("SELECT value FROM {table} WHERE {room} AND key = ?3"),
            list_range: format!(
                "SELECT key, value FROM {table} WHERE {room} AND key >= ?3 AND key < ?4 \
                 ORDER BY key"
            ),
            list_from: format!(
                "SELECT key, value FROM {table} WHERE {room} AND key >= ?3 ORDER BY key"
            ),
            delete: format!("DELETE FROM {table} WHERE {room} AND key = ?3"),
            delete_range: format!("DELETE FROM {table} WHERE {room} AND key >= ?3 AND key < ?4"),
            delete_from: format!("DELETE FROM {table} WHERE {room} AND key >= ?3"),
            put: format!(
                "INSERT OR REPLACE INTO {table} (party, room, key, value) VALUES (?1, ?2, ?3, ?4)"
            ),
        }
    }
}

/// A handled request waiting for the commit before its reply is sent.
enum Done {
    Get(Reply<Option<Value>>, Result<Option<Value>, StorageError>),
    List(
        Reply<Vec<(String, Value)>>,
        Result<Vec<(String, Value)>, StorageError>,
    ),
    Unit(Reply<()>, Result<(), StorageError>),
}

impl Done {
    /// Send the result, or `failed` instead when the transaction did not commit.
    fn send(self, failed: Option<&StorageError>) {
        fn pick<T>(
            r: Result<T, StorageError>,
            failed: Option<&StorageError>,
        ) -> Result<T, StorageError> {
            match failed {
                Some(e) => Err(e.clone()),
                None => r,
            }
        }
        // A receiver that is gone (its future was dropped) is fine to ignore.
        match self {
            Done::Get(reply, r) => drop(reply.send(pick(r, failed))),
            Done::List(reply, r) => drop(reply.send(pick(r, failed))),
            Done::Unit(reply, r) => drop(reply.send(pick(r, failed))),
        }
    }
}

struct Worker {
    conn: Connection,
    sql: Sql,
    stats: Arc<Counters>,
    name: String,
}

fn backend(e: rusqlite::Error) -> StorageError {
    StorageError::Backend(format!("sqlite: {e}"))
}

impl Worker {
    fn open(
        path: Option<&Path>,
        options: &SqliteOptions,
        stats: Arc<Counters>,
    ) -> Result<Self, OpenError> {
        let name = path.map_or_else(|| MEMORY_PATH.to_owned(), |p| p.display().to_string());
        let fail = |source| OpenError::Sqlite {
            path: name.clone(),
            source,
        };
        let conn = match path {
            Some(path) => Connection::open(path),
            None => Connection::open_in_memory(),
        }
        .map_err(fail)?;
        conn.busy_timeout(options.busy_timeout).map_err(fail)?;
        // An in-memory database answers `memory`: it has no journal file to put in WAL mode.
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))
            .map_err(fail)?;
        if path.is_some() && !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %name, %mode, "sqlite did not switch to WAL journal mode");
        }
        conn.pragma_update(None, "synchronous", options.synchronous.pragma())
            .map_err(fail)?;
        let table = &options.table;
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (\
                party TEXT NOT NULL, \
                room TEXT NOT NULL, \
                key TEXT NOT NULL, \
                value TEXT NOT NULL, \
                PRIMARY KEY (party, room, key)\
            ) WITHOUT ROWID"
        ))
        .map_err(fail)?;
        conn.set_prepared_statement_cache_capacity(16);
        Ok(Self {
            conn,
            sql: Sql::new(table),
            stats,
            name,
        })
    }

    /// The thread's loop: wait for a request, take every other queued one, handle them in
    /// one transaction, reply; until every sender is gone or a close is requested.
    fn run(mut self, rx: mpsc::Receiver<Request>) {
        let mut group = Vec::new();
        let mut closers = Vec::new();
        while let Ok(first) = rx.recv() {
            group.push(first);
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(request) => group.push(request),
                    Err(_) => break,
                }
            }
            self.handle_group(&mut group, &mut closers);
            if !closers.is_empty() {
                break;
            }
        }
        // Requests sent from now on (or still queued after a close) fail with `Closed`.
        drop(rx);
        let result = self.conn.close().map_err(|(_, e)| backend(e));
        match &result {
            Ok(()) => tracing::debug!(path = %self.name, "sqlite storage closed"),
            Err(e) => tracing::error!(path = %self.name, error = %e, "closing sqlite failed"),
        }
        for reply in closers {
            let _ = reply.send(result.clone());
        }
    }

    fn handle_group(&mut self, group: &mut Vec<Request>, closers: &mut Vec<Reply<()>>) {
        let writes = group
            .iter()
            .filter(|r| matches!(r, Request::Apply { batch, .. } if !batch.is_empty()))
            .count();
        let behavior = if writes > 0 {
            TransactionBehavior::Immediate
        } else {
            TransactionBehavior::Deferred
        };
        let mut done = Vec::with_capacity(group.len());
        // Set when SQLite rolled the whole transaction back (I/O error, disk full...).
        let mut aborted: Option<StorageError> = None;
        let mut tx = match self.conn.transaction_with_behavior(behavior) {
            Ok(tx) => Some(tx),
            Err(e) => {
                aborted = Some(backend(e));
                None
            }
        };
        let mut batches = 0;
        for request in group.drain(..) {
            match request {
                Request::Get { room, key, reply } => {
                    let r = match (&tx, &aborted) {
                        (Some(tx), None) => get(tx, &self.sql, &room, &key),
                        _ => Err(StorageError::Closed),
                    };
                    done.push(Done::Get(reply, r));
                }
                Request::List {
                    room,
                    prefix,
                    reply,
                } => {
                    let r = match (&tx, &aborted) {
                        (Some(tx), None) => list(tx, &self.sql, &room, &prefix),
                        _ => Err(StorageError::Closed),
                    };
                    done.push(Done::List(reply, r));
                }
                Request::Apply { room, batch, reply } => {
                    let r = match (&mut tx, &aborted) {
                        (Some(tx), None) if !batch.is_empty() => {
                            let r = apply(tx, &self.sql, &room, &batch);
                            if r.is_ok() {
                                batches += 1;
                            } else if tx.is_autocommit() {
                                aborted = r.clone().err();
                            }
                            r
                        }
                        (Some(_), None) => Ok(()),
                        _ => Err(StorageError::Closed),
                    };
                    done.push(Done::Unit(reply, r));
                }
                Request::Flush { reply } => done.push(Done::Unit(reply, Ok(()))),
                Request::Close { reply } => closers.push(reply),
            }
        }
        let failed = match (tx, aborted) {
            (Some(tx), None) => tx.commit().err().map(backend),
            (_, Some(e)) => Some(e),
            (None, None) => unreachable!("a transaction that failed to start sets `aborted`"),
        };
        match &failed {
            None if batches > 0 => {
                self.stats.transactions.fetch_add(1, Ordering::Relaxed);
                self.stats.batches.fetch_add(batches, Ordering::Relaxed);
                tracing::trace!(batches, requests = done.len(), "sqlite group committed");
            }
            None => {}
            Some(e) => tracing::error!(
                path = %self.name,
                error = %e,
                requests = done.len(),
                "sqlite transaction failed; every request in it gets the error"
            ),
        }
        for d in done {
            d.send(failed.as_ref());
        }
    }
}

fn decode(key: &str, value: ValueRef<'_>) -> Result<Value, StorageError> {
    let corrupt = |reason: String| StorageError::Corrupt {
        key: key.to_owned(),
        reason,
    };
    match value {
        ValueRef::Text(text) => serde_json::from_slice(text).map_err(|e| corrupt(e.to_string())),
        other => Err(corrupt(format!(
            "expected JSON text, found a SQLite {}",
            other.data_type()
        ))),
    }
}

fn get(
    conn: &Connection,
    sql: &Sql,
    room: &RoomKey,
    key: &str,
) -> Result<Option<Value>, StorageError> {
    let mut stmt = conn.prepare_cached(&sql.get).map_err(backend)?;
    let mut rows = stmt
        .query(params![room.party, room.room, key])
        .map_err(backend)?;
    match rows.next().map_err(backend)? {
        Some(row) => decode(key, row.get_ref(0).map_err(backend)?).map(Some),
        None => Ok(None),
    }
}

fn list(
    conn: &Connection,
    sql: &Sql,
    room: &RoomKey,
    prefix: &str,
) -> Result<Vec<(String, Value)>, StorageError> {
    let upper = prefix_upper_bound(prefix);
    let mut stmt = conn
        .prepare_cached(if upper.is_some() {
            &sql.list_range
        } else {
            &sql.list_from
        })
        .map_err(backend)?;
    let mut rows = match &upper {
        Some(upper) => stmt.query(params![room.party, room.room, prefix, upper]),
        None => stmt.query(params![room.party, room.room, prefix]),
    }
    .map_err(backend)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(backend)? {
        let key: String = row.get(0).map_err(backend)?;
        let value = decode(&key, row.get_ref(1).map_err(backend)?)?;
        out.push((key, value));
    }
    Ok(out)
}

/// Apply one batch inside a savepoint of the group's transaction: all of it or none of it.
fn apply(
    tx: &mut rusqlite::Transaction<'_>,
    sql: &Sql,
    room: &RoomKey,
    batch: &Batch,
) -> Result<(), StorageError> {
    let sp = tx.savepoint().map_err(backend)?;
    let (party, room) = (&room.party, &room.room);
    if !batch.deletes.is_empty() {
        let mut stmt = sp.prepare_cached(&sql.delete).map_err(backend)?;
        for key in &batch.deletes {
            stmt.execute(params![party, room, key]).map_err(backend)?;
        }
    }
    for prefix in &batch.delete_prefixes {
        match prefix_upper_bound(prefix) {
            Some(upper) => sp
                .prepare_cached(&sql.delete_range)
                .and_then(|mut s| s.execute(params![party, room, prefix, upper])),
            None => sp
                .prepare_cached(&sql.delete_from)
                .and_then(|mut s| s.execute(params![party, room, prefix])),
        }
        .map_err(backend)?;
    }
    if !batch.puts.is_empty() {
        let mut stmt = sp.prepare_cached(&sql.put).map_err(backend)?;
        for (key, value) in &batch.puts {
            let text = serde_json::to_string(value).map_err(|e| {
                StorageError::Backend(format!("could not encode the value at `{key}`: {e}"))
            })?;
            stmt.execute(params![party, room, key, text])
                .map_err(backend)?;
        }
    }
    // Dropping the savepoint on an early return above rolls it back.
    sp.commit().map_err(backend)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn room() -> RoomKey {
        RoomKey::new("main", "r1")
    }

    /// A second connection on the same file, to poke at the table behind the storage's back.
    fn side_connection(path: &Path) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn
    }

    #[tokio::test]
    async fn corrupt_values_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let store = SqliteStorage::open(&path).await.unwrap();
        store.put(&room(), "good", json!(1)).await.unwrap();
        let side = side_connection(&path);
        side.execute(
            "INSERT INTO partyroom_storage VALUES ('main', 'r1', 'bad', '{not json')",
            [],
        )
        .unwrap();
        side.execute(
            "INSERT INTO partyroom_storage VALUES ('main', 'r1', 'blob', x'00ff')",
            [],
        )
        .unwrap();
        for key in ["bad", "blob"] {
            match store.get(&room(), key).await {
                Err(StorageError::Corrupt { key: k, reason }) => {
                    assert_eq!(k, key);
                    assert!(!reason.is_empty());
                }
                other => panic!("{key}: expected Corrupt, got {other:?}"),
            }
        }
        assert!(matches!(
            store.list(&room(), "").await,
            Err(StorageError::Corrupt { key, .. }) if key == "bad"
        ));
        // The good row and the storage itself are unaffected.
        assert_eq!(store.get(&room(), "good").await.unwrap(), Some(json!(1)));
        assert_eq!(store.list(&room(), "g").await.unwrap().len(), 1);
    }

    /// A trigger makes one put fail half-way through a batch: nothing of that batch is
    /// stored, and other batches committed in the same transaction are unaffected.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failing_batch_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let store = SqliteStorage::open(&path).await.unwrap();
        store.put(&room(), "keep", json!("old")).await.unwrap();
        store.put(&room(), "gone/1", json!(1)).await.unwrap();
        side_connection(&path)
            .execute_batch(
                "CREATE TRIGGER boom BEFORE INSERT ON partyroom_storage \
                 WHEN NEW.key = 'boom' BEGIN SELECT RAISE(ABORT, 'boom refused'); END",
            )
            .unwrap();
        let failing = Batch {
            deletes: vec!["keep".into()],
            delete_prefixes: vec!["gone/".into()],
            puts: vec![
                ("new/1".into(), json!(1)),
                ("boom".into(), json!(2)),
                ("new/2".into(), json!(3)),
            ],
        };
        let err = store.apply(&room(), failing.clone()).await.unwrap_err();
        assert!(
            matches!(&err, StorageError::Backend(m) if m.contains("boom refused")),
            "{err}"
        );
        assert_eq!(
            store.get(&room(), "keep").await.unwrap(),
            Some(json!("old"))
        );
        assert_eq!(store.get(&room(), "gone/1").await.unwrap(), Some(json!(1)));
        assert_eq!(store.list(&room(), "new/").await.unwrap(), vec![]);

        // Same again, queued together with good batches so they share one transaction.
        let others: Vec<RoomKey> = (0..20)
            .map(|i| RoomKey::new("main", format!("o{i}")))
            .collect();
        let mut tasks = Vec::new();
        for (i, other) in others.iter().enumerate() {
            let store = store.clone();
            let other = other.clone();
            tasks.push(tokio::spawn(async move {
                store.put(&other, "k", json!(i)).await
            }));
        }
        let bad = {
            let store = store.clone();
            tokio::spawn(async move { store.apply(&room(), failing).await })
        };
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert!(bad.await.unwrap().is_err());
        for (i, other) in others.iter().enumerate() {
            assert_eq!(store.get(other, "k").await.unwrap(), Some(json!(i)));
        }
        assert_eq!(
            store.get(&room(), "keep").await.unwrap(),
            Some(json!("old"))
        );
        assert_eq!(store.list(&room(), "new/").await.unwrap(), vec![]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_batches_share_transactions() {
        let store = SqliteStorage::in_memory().await.unwrap();
        let mut tasks = Vec::new();
        for t in 0..64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let room = RoomKey::new("main", format!("r{t}"));
                for i in 0..20 {
                    store.put(&room, &format!("k{i}"), json!(i)).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let stats = store.stats();
        assert_eq!(stats.batches, 64 * 20);
        assert!(
            stats.transactions < stats.batches,
            "expected group commit to merge batches: {stats:?}"
        );
    }

    #[tokio::test]
    async fn close_and_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let store = SqliteStorage::open(&path).await.unwrap();
        let clone = store.clone();
        // A write whose future is dropped after it was sent still lands; flush waits for it.
        {
            let r = room();
            let fut = store.put(&r, "dropped", json!(true));
            let mut fut = std::pin::pin!(fut);
            let waker = std::task::Waker::noop();
            let _ = fut
                .as_mut()
                .poll(&mut std::task::Context::from_waker(waker));
        }
        store.flush().await.unwrap();
        assert_eq!(
            side_connection(&path)
                .query_row(
                    "SELECT value FROM partyroom_storage WHERE key = 'dropped'",
                    [],
                    |r| { r.get::<_, String>(0) }
                )
                .unwrap(),
            "true"
        );
        store.close().await.unwrap();
        assert_eq!(
            clone.get(&room(), "dropped").await,
            Err(StorageError::Closed)
        );
        assert_eq!(clone.flush().await, Err(StorageError::Closed));
        clone.close().await.unwrap();
    }

    #[tokio::test]
    async fn options_are_applied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let store = SqliteStorage::open_with(
            &path,
            SqliteOptions {
                busy_timeout: Duration::from_millis(250),
                synchronous: Synchronous::Full,
                table: "custom_rows".into(),
            },
        )
        .await
        .unwrap();
        store.put(&room(), "k", json!({"a": [1, 2]})).await.unwrap();
        let side = side_connection(&path);
        let mode: String = side
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let text: String = side
            .query_row("SELECT value FROM custom_rows", [], |r| r.get(0))
            .unwrap();
        assert_eq!(text, r#"{"a":[1,2]}"#);
        assert!(matches!(
            SqliteStorage::open_with(
                &path,
                SqliteOptions {
                    table: "x; DROP".into(),
                    ..SqliteOptions::default()
                }
            )
            .await,
            Err(OpenError::InvalidTableName(_))
        ));
        assert!(matches!(
            SqliteStorage::open(dir.path().join("missing/dir/db")).await,
            Err(OpenError::Sqlite { .. })
        ));
        assert!(format!("{store:?}").contains("custom_rows"));
    }
}
