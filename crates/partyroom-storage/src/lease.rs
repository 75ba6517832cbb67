//! Room leases on PostgreSQL: at most one owner per room at a time, and an epoch that fences
//! the writes of an owner that lost its lease (the building block of cluster mode).
//!
//! One row per room: `(party, room, owner, epoch, expires_at)`. Every time comes from the
//! database's clock (`now()`), so the nodes' clocks never have to agree.
//!
//! - [`Leases::claim`] takes a room that has no live lease (none yet, expired, or released),
//!   and always with a new epoch, one more than any before it: a node that claims a room
//!   again after losing it is a new owner too.
//! - [`Leases::renew`] extends a lease its holder still has; `None` means it was lost.
//! - [`Leases::release`] ends a lease at once but keeps the row, so epochs only grow.
//! - [`PostgresStorage::apply_fenced`](crate::PostgresStorage::apply_fenced) writes a batch
//!   only while the lease holds, checked and share-locked in the write's own transaction.
//!
//! Why two owners cannot both write: a claim updates the lease row, which needs the row's
//! exclusive lock; a fenced write holds its share lock until it commits. So a claim made while
//! a write is under way waits for it (and the new owner, which restores after its claim, reads
//! that write), and a write that starts after a claim sees the new epoch and is refused. This
//! is PostgreSQL's row locking in READ COMMITTED, not a consensus protocol of our own.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Pool, Transaction};
use partyroom_room::storage::{RoomKey, StorageError};

use crate::OpenError;
use crate::postgres::{Statements, backend};

/// The lease table [`Leases::open`] uses unless told otherwise.
pub const DEFAULT_LEASE_TABLE: &str = "partyroom_leases";

/// A lease on one room, held by one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The room.
    pub room: RoomKey,
    /// The node holding it.
    pub owner: String,
    /// Its epoch: larger than that of every earlier lease on the room.
    pub epoch: i64,
    /// How long it was valid for when it was granted or last renewed (database clock).
    pub valid_for: Duration,
}

/// The lease table.
#[derive(Clone)]
pub struct Leases {
    db: Statements,
    sql: Arc<LeaseSql>,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("table", &self.sql.table)
            .finish_non_exhaustive()
    }
}

impl Leases {
    /// Use `table` (created if missing) through `pool`.
    pub async fn open(pool: Pool, table: &str) -> Result<Self, OpenError> {
        let sql = LeaseSql::new(table);
        Ok(Self {
            db: Statements::open(pool, table, &sql.create).await?,
            sql: Arc::new(sql),
        })
    }

    /// Claim `room` for `node` for `ttl`, if no live lease holds it. Returns the new lease,
    /// or `None` when another lease (this node's included) is still live.
    pub async fn claim(
        &self,
        room: &RoomKey,
        node: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StorageError> {
        let row = self
            .db
            .query_opt(
                &self.sql.claim,
                &[&room.party, &room.room, &node, &millis(ttl)],
            )
            .await?;
        Ok(row.map(|row| Lease {
            room: room.clone(),
            owner: node.to_owned(),
            epoch: row.get(0),
            valid_for: ttl,
        }))
    }

    /// Extend `lease` to `ttl` from now. `None`: the lease is no longer held (it expired, or
    /// the room was claimed again); its holder must stop serving the room.
    pub async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, StorageError> {
        let (room, owner) = (&lease.room, &lease.owner);
        let renewed = self
            .db
            .execute(
                &self.sql.renew,
                &[&room.party, &room.room, owner, &lease.epoch, &millis(ttl)],
            )
            .await?;
        Ok((renewed == 1).then(|| Lease {
            valid_for: ttl,
            ..lease.clone()
        }))
    }

    /// End `lease` now, so that another node may claim the room at once. Returns whether it
    /// was still held. The row stays (with its epoch), so epochs only grow.
    pub async fn release(&self, lease: &Lease) -> Result<bool, StorageError> {
        let (room, owner) = (&lease.room, &lease.owner);
        let released = self
            .db
            .execute(
                &self.sql.release,
                &[&room.party, &room.room, owner, &lease.epoch],
            )
            .await?;
        Ok(released == 1)
    }

    /// The live lease's owner and epoch, if any (where to route the room's clients).
    pub async fn owner(&self, room: &RoomKey) -> Result<Option<(String, i64)>, StorageError> {
        let row = self
            .db
            .query_opt(&self.sql.owner, &[&room.party, &room.room])
            .await?;
        Ok(row.map(|row| (row.get(0), row.get(1))))
    }

    /// In `tx`: whether `lease` still holds its room, share-locking the lease row until `tx`
    /// ends (see the module docs).
    pub(crate) async fn hold(
        &self,
        tx: &Transaction<'_>,
        lease: &Lease,
    ) -> Result<bool, StorageError> {
        let stmt = tx.prepare_cached(&self.sql.hold).await.map_err(backend)?;
        let row = tx
            .query_opt(
                &stmt,
                &[
                    &lease.room.party,
                    &lease.room.room,
                    &lease.owner,
                    &lease.epoch,
                ],
            )
            .await
            .map_err(backend)?;
        Ok(row.is_some())
    }
}

/// A duration in whole milliseconds, as SQL gets it (`$n * interval '1 millisecond'`).
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The SQL for one lease table.
struct LeaseSql {
    table: String,
    create: String,
    claim: String,
    renew: String,
    release: String,
    owner: String,
    hold: String,
}

impl LeaseSql {
    fn new(table: &str) -> Self {
        let t = format!("\"{table}\"");
        let room = "party = $1 AND room = $2";
        let ttl = "$4::bigint * interval '1 millisecond'";
        Self {
            table: table.to_owned(),
            create: format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                    party TEXT NOT NULL, \
                    room TEXT NOT NULL, \
                    owner TEXT NOT NULL, \
                    epoch BIGINT NOT NULL, \
                    expires_at TIMESTAMPTZ NOT NULL, \
                    PRIMARY KEY (party, room))"
            ),
            // A new row starts at epoch 1; an existing one is taken over only when its lease is
            // over, always with the next epoch. Concurrent claims serialize on the row (or on
            // the primary key for the first one): exactly one of them returns a row.
            claim: format!(
                "INSERT INTO {t} AS l (party, room, owner, epoch, expires_at) \
                 VALUES ($1, $2, $3, 1, now() + {ttl}) \
                 ON CONFLICT (party, room) DO UPDATE \
                 SET owner = EXCLUDED.owner, epoch = l.epoch + 1, expires_at = EXCLUDED.expires_at \
                 WHERE l.expires_at <= now() \
                 RETURNING l.epoch"
            ),
            renew: format!(
                "UPDATE {t} SET expires_at = now() + $5::bigint * interval '1 millisecond' \
                 WHERE {room} AND owner = $3 AND epoch = $4 AND expires_at > now()"
            ),
            release: format!(
                "UPDATE {t} SET expires_at = '-infinity' \
                 WHERE {room} AND owner = $3 AND epoch = $4 AND expires_at > now()"
            ),
            owner: format!("SELECT owner, epoch FROM {t} WHERE {room} AND expires_at > now()"),
            hold: format!(
                "SELECT 1 FROM {t} WHERE {room} AND owner = $3 AND epoch = $4 \
                 AND expires_at > now() FOR SHARE"
            ),
        }
    }
}
