//! PostgreSQL backend: a deadpool of tokio-postgres connections, no TLS.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use partyroom_room::storage::{Batch, BoxFuture, RoomKey, Storage, StorageError};
use serde_json::Value;
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

use crate::lease::{Lease, Leases};
use crate::{DEFAULT_TABLE, OpenError, prefix_upper_bound, validate_table_name};

/// How [`PostgresStorage::connect_with`] sets up the pool and the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// The table holding the rows, created if missing. Must match
    /// `^[A-Za-z_][A-Za-z0-9_]*$`; it is created in the connection's `search_path` schema.
    /// Default: [`DEFAULT_TABLE`].
    pub table: String,
    /// At most this many connections are open at once. Default: 8.
    pub max_connections: usize,
    /// How long a request waits for a free connection (or for a new one to be made) before
    /// failing with [`StorageError::Backend`]. Default: 30 seconds.
    pub timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            table: DEFAULT_TABLE.to_owned(),
            max_connections: 8,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Storage in a PostgreSQL table, through a pool of connections.
///
/// The table is `(party TEXT, room TEXT, key TEXT COLLATE "C", value JSONB,
/// PRIMARY KEY (party, room, key))`. Each [`Storage::apply`] is one transaction on one
/// pooled connection; listing uses a key range in the `"C"` collation, so keys come back in
/// byte order whatever the database's default collation is.
///
/// `JSONB` stores values by meaning, not by text: object keys come back sorted and
/// deduplicated, and strings cannot hold `\u0000` (PostgreSQL refuses it, so such a batch
/// fails and nothing of it is stored). Keys cannot hold NUL characters either.
///
/// `PostgresStorage` is a cheap [`Clone`] (the pool is shared); no TLS is used.
#[derive(Clone)]
pub struct PostgresStorage {
    pool: Pool,
    sql: Arc<Sql>,
}

impl fmt::Debug for PostgresStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStorage")
            .field("table", &self.sql.table)
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl PostgresStorage {
    /// Connect with a connection string (`postgres://user:password@host:port/db` or
    /// `host=... user=...`) and use `table` (created if missing), with the other
    /// [`PostgresOptions`] at their defaults.
    pub async fn connect(url: &str, table: &str) -> Result<Self, OpenError> {
        let config: tokio_postgres::Config = url.parse().map_err(OpenError::Postgres)?;
        Self::connect_with(
            config,
            PostgresOptions {
                table: table.to_owned(),
                ..PostgresOptions::default()
            },
        )
        .await
    }

    /// Connect with a parsed configuration. Opens one connection right away (to create the
    /// table), so a wrong address or password fails here.
    pub async fn connect_with(
        config: tokio_postgres::Config,
        options: PostgresOptions,
    ) -> Result<Self, OpenError> {
        validate_table_name(&options.table)?;
        let mut config = config;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.timeout);
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.max_connections.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.timeout))
            .create_timeout(Some(options.timeout))
            .build()
            .map_err(|e| OpenError::Pool(chain(&e)))?;
        Self::from_pool(pool, &options.table).await
    }

    /// Use an existing pool (its manager decides TLS and recycling) and `table` (created if
    /// missing).
    pub async fn from_pool(pool: Pool, table: &str) -> Result<Self, OpenError> {
        let sql = Sql::new(table);
        create_table(&pool, table, &sql.create).await?;
        tracing::debug!(table, "postgres storage ready");
        Ok(Self {
            pool,
            sql: Arc::new(sql),
        })
    }

    /// The connection pool (for status and metrics).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StorageError> {
        pool_client(&self.pool).await
    }

    async fn get_impl(&self, room: &RoomKey, key: &str) -> Result<Option<Value>, StorageError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.sql.get)
            .await
            .map_err(backend)?;
        let row = client
            .query_opt(&stmt, &[&room.party, &room.room, &key])
            .await
            .map_err(backend)?;
        row.map(|row| decode(key, &row, 0)).transpose()
    }

    async fn list_impl(
        &self,
        room: &RoomKey,
        prefix: &str,
    ) -> Result<Vec<(String, Value)>, StorageError> {
        let client = self.client().await?;
        let rows = match prefix_upper_bound(prefix) {
            Some(upper) => {
                let stmt = client
                    .prepare_cached(&self.sql.list_range)
                    .await
                    .map_err(backend)?;
                client
                    .query(&stmt, &[&room.party, &room.room, &prefix, &upper])
                    .await
            }
            None => {
                let stmt = client
                    .prepare_cached(&self.sql.list_from)
                    .await
                    .map_err(backend)?;
                client
                    .query(&stmt, &[&room.party, &room.room, &prefix])
                    .await
            }
        }
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                let key: String = row.try_get(0).map_err(backend)?;
                let value = decode(&key, row, 1)?;
                Ok((key, value))
            })
            .collect()
    }

    async fn apply_impl(&self, room: &RoomKey, batch: Batch) -> Result<(), StorageError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        self.write(&tx, room, batch).await?;
        tx.commit().await.map_err(backend)
    }

    /// Apply `batch` only if `lease` still holds the room: the lease row is checked (owner,
    /// epoch, not expired by the database's clock) and share-locked in the same transaction
    /// as the writes, so a claim by another node waits for this write to commit, and a write
    /// after a claim finds the new epoch and is refused ([`StorageError::Fenced`]) with
    /// nothing of it applied. `leases` must be the [`Leases`] the lease came from.
    pub async fn apply_fenced(
        &self,
        leases: &Leases,
        lease: &Lease,
        batch: Batch,
    ) -> Result<(), StorageError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        if !leases.hold(&tx, lease).await? {
            return Err(StorageError::Fenced {
                epoch: lease.epoch as u64,
            });
        }
        if !batch.is_empty() {
            self.write(&tx, &lease.room, batch).await?;
        }
        tx.commit().await.map_err(backend)
    }

    /// The statements of a batch, in `tx`.
    async fn write(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        room: &RoomKey,
        batch: Batch,
    ) -> Result<(), StorageError> {
        let (party, room) = (&room.party, &room.room);
        if !batch.deletes.is_empty() {
            let stmt = tx.prepare_cached(&self.sql.delete).await.map_err(backend)?;
            tx.execute(&stmt, &[party, room, &batch.deletes])
                .await
                .map_err(backend)?;
        }
        for prefix in &batch.delete_prefixes {
            match prefix_upper_bound(prefix) {
                Some(upper) => {
                    let stmt = tx
                        .prepare_cached(&self.sql.delete_range)
                        .await
                        .map_err(backend)?;
                    tx.execute(&stmt, &[party, room, prefix, &upper]).await
                }
                None => {
                    let stmt = tx
                        .prepare_cached(&self.sql.delete_from)
                        .await
                        .map_err(backend)?;
                    tx.execute(&stmt, &[party, room, prefix]).await
                }
            }
            .map_err(backend)?;
        }
        if !batch.puts.is_empty() {
            // One statement for every put; a key written twice keeps its last value (one
            // INSERT .. ON CONFLICT cannot touch the same row twice).
            let mut last = std::collections::HashMap::with_capacity(batch.puts.len());
            for (i, (key, _)) in batch.puts.iter().enumerate() {
                last.insert(key.as_str(), i);
            }
            let mut keys = Vec::with_capacity(last.len());
            let mut values = Vec::with_capacity(last.len());
            for (i, (key, value)) in batch.puts.iter().enumerate() {
                if last.get(key.as_str()) == Some(&i) {
                    keys.push(key.as_str());
                    values.push(value);
                }
            }
            let stmt = tx.prepare_cached(&self.sql.put).await.map_err(backend)?;
            tx.execute(&stmt, &[party, room, &keys, &values])
                .await
                .map_err(backend)?;
        }
        Ok(())
    }
}

impl Storage for PostgresStorage {
    fn get<'a>(
        &'a self,
        room: &'a RoomKey,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Value>, StorageError>> {
        Box::pin(self.get_impl(room, key))
    }

    fn list<'a>(
        &'a self,
        room: &'a RoomKey,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, Value)>, StorageError>> {
        Box::pin(self.list_impl(room, prefix))
    }

    fn apply<'a>(
        &'a self,
        room: &'a RoomKey,
        batch: Batch,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(self.apply_impl(room, batch))
    }
}

/// The SQL for one table (the name is validated, and quoted anyway).
struct Sql {
    table: String,
    create: String,
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
        let t = format!("\"{table}\"");
        let room = "party = $1 AND room = $2";
        // The key column and every comparison use the "C" collation: byte order, and the
        // primary key index serves the range scans.
        Self {
            table: table.to_owned(),
            create: format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                    party TEXT NOT NULL, \
                    room TEXT NOT NULL, \
                    key TEXT COLLATE \"C\" NOT NULL, \
                    value JSONB NOT NULL, \
                    PRIMARY KEY (party, room, key))"
            ),
            get: format!("SELECT value FROM {t} WHERE {room} AND key = $3"),
            list_range: format!(
                "SELECT key, value FROM {t} WHERE {room} \
                 AND key COLLATE \"C\" >= $3 AND key COLLATE \"C\" < $4 \
                 ORDER BY key COLLATE \"C\""
            ),
            list_from: format!(
                "SELECT key, value FROM {t} WHERE {room} AND key COLLATE \"C\" >= $3 \
                 ORDER BY key COLLATE \"C\""
            ),
            delete: format!("DELETE FROM {t} WHERE {room} AND key = ANY($3::text[])"),
            delete_range: format!(
                "DELETE FROM {t} WHERE {room} \
                 AND key COLLATE \"C\" >= $3 AND key COLLATE \"C\" < $4"
            ),
            delete_from: format!("DELETE FROM {t} WHERE {room} AND key COLLATE \"C\" >= $3"),
            put: format!(
                "INSERT INTO {t} (party, room, key, value) \
                 SELECT $1, $2, u.key, u.value FROM unnest($3::text[], $4::jsonb[]) AS u(key, value) \
                 ON CONFLICT (party, room, key) DO UPDATE SET value = EXCLUDED.value"
            ),
        }
    }
}

/// Statements on one table through a pool, each prepared once per connection (the lease and
/// membership tables use it).
#[derive(Clone)]
pub(crate) struct Statements(pub(crate) Pool);

impl Statements {
    /// Statements on `table` (a plain identifier, created with `ddl` if missing).
    pub(crate) async fn open(pool: Pool, table: &str, ddl: &str) -> Result<Self, OpenError> {
        create_table(&pool, table, ddl).await?;
        Ok(Self(pool))
    }

    /// Run `sql`; the number of rows changed.
    pub(crate) async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StorageError> {
        let client = pool_client(&self.0).await?;
        let stmt = client.prepare_cached(sql).await.map_err(backend)?;
        client.execute(&stmt, params).await.map_err(backend)
    }

    /// Run `sql` for every row.
    pub(crate) async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StorageError> {
        let client = pool_client(&self.0).await?;
        let stmt = client.prepare_cached(sql).await.map_err(backend)?;
        client.query(&stmt, params).await.map_err(backend)
    }

    /// Run `sql` (a lookup by primary key) for its row, if any.
    pub(crate) async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<tokio_postgres::Row>, StorageError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }
}

/// A connection from `pool`.
pub(crate) async fn pool_client(pool: &Pool) -> Result<deadpool_postgres::Object, StorageError> {
    pool.get()
        .await
        .map_err(|e| StorageError::Backend(format!("postgres connection pool: {}", chain(&e))))
}

/// Run `ddl` (`CREATE TABLE IF NOT EXISTS ...` for `table`, which must be a plain identifier)
/// once even when several processes start at the same moment: the statement races with itself
/// (a unique violation in the catalog), so an advisory lock makes concurrent starts wait
/// instead.
pub(crate) async fn create_table(pool: &Pool, table: &str, ddl: &str) -> Result<(), OpenError> {
    validate_table_name(table)?;
    let mut client = pool.get().await.map_err(|e| OpenError::Pool(chain(&e)))?;
    let tx = client.transaction().await.map_err(OpenError::Postgres)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        &[&format!("partyroom-storage:{table}")],
    )
    .await
    .map_err(OpenError::Postgres)?;
    tx.batch_execute(ddl).await.map_err(OpenError::Postgres)?;
    tx.commit().await.map_err(OpenError::Postgres)
}

fn decode(key: &str, row: &tokio_postgres::Row, column: usize) -> Result<Value, StorageError> {
    row.try_get::<_, Value>(column)
        .map_err(|e| StorageError::Corrupt {
            key: key.to_owned(),
            reason: chain(&e),
        })
}

pub(crate) fn backend(e: tokio_postgres::Error) -> StorageError {
    StorageError::Backend(format!("postgres: {}", describe(&e)))
}

/// A tokio-postgres error with the server's message (its `Display` alone says `db error`).
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.to_string(),
        None => chain(e),
    }
}

/// An error and its sources, `: `-separated.
fn chain(e: &dyn StdError) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
