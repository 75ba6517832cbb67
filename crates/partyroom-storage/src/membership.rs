//! Cluster membership on PostgreSQL: each node registers its id and the address other nodes
//! reach it at, and keeps a heartbeat; a node whose heartbeat is older than the TTL counts as
//! dead. Times come from the database's clock, so the nodes' clocks never have to agree.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use partyroom_room::storage::StorageError;

use crate::OpenError;
use crate::lease::millis;
use crate::postgres::Statements;

/// The membership table [`Members::open`] uses unless told otherwise.
pub const DEFAULT_MEMBERS_TABLE: &str = "partyroom_members";

/// A live node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its id (`--node-id`).
    pub node: String,
    /// Where other nodes reach it (`--advertise-url`), for relaying.
    pub url: String,
    /// Since its last heartbeat (database clock).
    pub silent_for: Duration,
}

/// The membership table.
#[derive(Clone)]
pub struct Members {
    db: Statements,
    sql: Arc<MembersSql>,
}

impl std::fmt::Debug for Members {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Members")
            .field("table", &self.sql.table)
            .finish_non_exhaustive()
    }
}

impl Members {
    /// Use `table` (created if missing) through `pool`.
    pub async fn open(pool: Pool, table: &str) -> Result<Self, OpenError> {
        let sql = MembersSql::new(table);
        Ok(Self {
            db: Statements::open(pool, table, &sql.create).await?,
            sql: Arc::new(sql),
        })
    }

    /// Register `node` at `url`, or refresh its heartbeat (and address).
    pub async fn heartbeat(&self, node: &str, url: &str) -> Result<(), StorageError> {
        self.db.execute(&self.sql.heartbeat, &[&node, &url]).await?;
        Ok(())
    }

    /// Take `node` out at once (a graceful stop). Returns whether it was registered.
    pub async fn leave(&self, node: &str) -> Result<bool, StorageError> {
        Ok(self.db.execute(&self.sql.leave, &[&node]).await? == 1)
    }

    /// The nodes heard from within `ttl`, by id.
    pub async fn alive(&self, ttl: Duration) -> Result<Vec<Member>, StorageError> {
        let rows = self.db.query(&self.sql.alive, &[&millis(ttl)]).await?;
        Ok(rows.iter().map(member).collect())
    }

    /// `node`, if it was heard from within `ttl`.
    pub async fn get(&self, node: &str, ttl: Duration) -> Result<Option<Member>, StorageError> {
        let row = self
            .db
            .query_opt(&self.sql.get, &[&millis(ttl), &node])
            .await?;
        Ok(row.as_ref().map(member))
    }
}

fn member(row: &tokio_postgres::Row) -> Member {
    let silent_ms: i64 = row.get(2);
    Member {
        node: row.get(0),
        url: row.get(1),
        silent_for: Duration::from_millis(u64::try_from(silent_ms).unwrap_or(0)),
    }
}

/// The SQL for one membership table.
struct MembersSql {
    table: String,
    create: String,
    heartbeat: String,
    leave: String,
    alive: String,
    get: String,
}

impl MembersSql {
    fn new(table: &str) -> Self {
        let t = format!("\"{table}\"");
        let columns = "node, url, \
            (EXTRACT(EPOCH FROM (now() - heartbeat_at)) * 1000)::bigint";
        let live = "heartbeat_at > now() - $1::bigint * interval '1 millisecond'";
        Self {
            table: table.to_owned(),
            create: format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                    node TEXT PRIMARY KEY, \
                    url TEXT NOT NULL, \
                    joined_at TIMESTAMPTZ NOT NULL, \
                    heartbeat_at TIMESTAMPTZ NOT NULL)"
            ),
            heartbeat: format!(
                "INSERT INTO {t} (node, url, joined_at, heartbeat_at) VALUES ($1, $2, now(), now()) \
                 ON CONFLICT (node) DO UPDATE SET url = EXCLUDED.url, heartbeat_at = now()"
            ),
            leave: format!("DELETE FROM {t} WHERE node = $1"),
            alive: format!("SELECT {columns} FROM {t} WHERE {live} ORDER BY node"),
            get: format!("SELECT {columns} FROM {t} WHERE {live} AND node = $2"),
        }
    }
}
