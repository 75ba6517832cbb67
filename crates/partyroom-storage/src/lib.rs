//! Durable storage backends for partyroom rooms.
//!
//! Both backends implement [`Storage`] from
//! `partyroom-room` (the trait, [`RoomKey`], [`Batch`] and the in-memory
//! [`MemoryStorage`] live there and are re-exported here):
//!
//! - [`SqliteStorage`] (feature `sqlite`, on by default): one SQLite file (or an in-memory
//!   database), owned by one dedicated OS thread. Requests reach it over a channel, so the
//!   async runtime never blocks on disk I/O, and every batch that is queued while a
//!   transaction commits is committed together in the next one (group commit).
//! - [`PostgresStorage`] (feature `postgres`, on by default): a `tokio-postgres` connection
//!   pool (`deadpool-postgres`), without TLS.
//!
//! Both keep one table `(party, room, key, value)` with the primary key
//! `(party, room, key)`; values are JSON (text in SQLite, `JSONB` in PostgreSQL). Listing by
//! prefix returns keys in byte order, like [`MemoryStorage`].
//!
//! Construct a backend once at startup and share it as `Arc<dyn Storage>`:
//!
//! ```no_run
//! # async fn demo() -> Result<(), partyroom_storage::OpenError> {
//! use std::sync::Arc;
//! use partyroom_room::storage::Storage;
//! use partyroom_storage::{PostgresStorage, SqliteStorage};
//!
//! let sqlite: Arc<dyn Storage> = Arc::new(SqliteStorage::open("rooms.db").await?);
//! let postgres: Arc<dyn Storage> = Arc::new(
//!     PostgresStorage::connect("postgres://app@127.0.0.1/app", "partyroom_storage").await?,
//! );
//! # let _ = (sqlite, postgres);
//! # Ok(())
//! # }
//! ```
//!
//! With PostgreSQL, [`Members`] keeps the nodes of a cluster (id, address, heartbeat; dead
//! after a TTL), [`Leases`] keeps one lease per room (owner node, epoch, expiry by the
//! database's clock) and [`PostgresStorage::apply_fenced`] writes a batch only while its lease
//! holds: the building blocks of cluster mode, where a room has one owner at a time and a
//! stale owner's writes are refused, never applied (see the `lease` module's docs for why).
//!
//! The [`conformance`] module (hidden from the docs) is the behaviour every backend must
//! show; `tests/conformance.rs` runs it against each backend.

#[doc(hidden)]
pub mod conformance;
#[cfg(feature = "postgres")]
mod lease;
#[cfg(feature = "postgres")]
mod membership;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use partyroom_room::storage::{Batch, MemoryStorage, RoomKey, Storage, StorageError};

#[cfg(feature = "postgres")]
pub use lease::{DEFAULT_LEASE_TABLE, Lease, Leases};
#[cfg(feature = "postgres")]
pub use membership::{DEFAULT_MEMBERS_TABLE, Member, Members};
#[cfg(feature = "postgres")]
pub use postgres::{PostgresOptions, PostgresStorage};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteOptions, SqliteStats, SqliteStorage, Synchronous};

/// The table name used when none is given.
pub const DEFAULT_TABLE: &str = "partyroom_storage";

/// A backend could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The table name is not a plain SQL identifier (`^[A-Za-z_][A-Za-z0-9_]*$`).
    #[error(
        "invalid table name `{0}`: use ASCII letters, digits and `_`, not starting with a digit"
    )]
    InvalidTableName(String),
    /// SQLite failed while opening the database or creating the table.
    #[cfg(feature = "sqlite")]
    #[error("sqlite database `{path}`: {source}")]
    Sqlite {
        /// The database path (`:memory:` for an in-memory database).
        path: String,
        /// What SQLite reported.
        #[source]
        source: rusqlite::Error,
    },
    /// The storage thread could not be started, or exited while opening.
    #[error("storage thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The PostgreSQL connection string could not be parsed, or PostgreSQL failed while
    /// creating the table.
    #[cfg(feature = "postgres")]
    #[error("postgres: {}", postgres::describe(.0))]
    Postgres(#[source] tokio_postgres::Error),
    /// The PostgreSQL connection pool could not be built or could not connect.
    #[cfg(feature = "postgres")]
    #[error("postgres connection pool: {0}")]
    Pool(String),
}

impl From<OpenError> for StorageError {
    fn from(e: OpenError) -> Self {
        StorageError::Backend(e.to_string())
    }
}

/// Check that `table` is a plain SQL identifier, safe to splice into statements.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
fn validate_table_name(table: &str) -> Result<(), OpenError> {
    let mut chars = table.chars();
    let valid = match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {
            chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        _ => false,
    };
    if valid {
        Ok(())
    } else {
        Err(OpenError::InvalidTableName(table.to_owned()))
    }
}

/// The smallest string greater than every string that starts with `prefix`, in byte order
/// (UTF-8 byte order is code point order): `prefix` with its last char replaced by the next
/// code point, dropping trailing `char::MAX`s. `None` when there is no such bound (the empty
/// prefix, or one made only of `char::MAX`): every key `>= prefix` then starts with it.
///
/// So `key >= prefix AND key < upper` selects exactly the keys starting with `prefix`, with
/// no pattern characters to escape, and lets the primary key index do the work.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last {
            '\u{D7FF}' => Some('\u{E000}'),
            c => char::from_u32(u32::from(c) + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        for ok in ["t", "_", "partyroom_storage", "T1", "_9a"] {
            assert!(validate_table_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1t", "a-b", "a b", "t;drop", "\"t\"", "é", "a.b"] {
            assert!(
                matches!(
                    validate_table_name(bad),
                    Err(OpenError::InvalidTableName(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn upper_bounds() {
        assert_eq!(prefix_upper_bound(""), None);
        assert_eq!(prefix_upper_bound("a").as_deref(), Some("b"));
        assert_eq!(prefix_upper_bound("state/").as_deref(), Some("state0"));
        assert_eq!(prefix_upper_bound("a%").as_deref(), Some("a&"));
        assert_eq!(prefix_upper_bound("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(prefix_upper_bound("x\u{10FFFF}").as_deref(), Some("y"));
        assert_eq!(prefix_upper_bound("\u{10FFFF}\u{10FFFF}"), None);
        // Every string starting with the prefix sorts below the bound, byte-wise.
        for (prefix, key) in [
            ("a", "a\u{10FFFF}"),
            ("é", "é\u{10FFFF}z"),
            ("\u{7F}", "\u{7F}\u{80}"),
        ] {
            let upper = prefix_upper_bound(prefix).unwrap();
            assert!(key.as_bytes() < upper.as_bytes(), "{prefix:?} {key:?}");
        }
    }
}
