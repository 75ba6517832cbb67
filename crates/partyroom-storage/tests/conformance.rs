//! The conformance suite against every backend: memory, SQLite (in memory and on disk) and
//! PostgreSQL (when `PARTYROOM_TEST_POSTGRES_URL` is set; required when `CI=true`).

use std::sync::Arc;

use partyroom_storage::conformance::run_all;
use partyroom_storage::{MemoryStorage, RoomKey, Storage};
use serde_json::json;

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory() {
    run_all(Arc::new(MemoryStorage::new())).await;
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use partyroom_storage::{SqliteOptions, SqliteStorage, StorageError, Synchronous};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_in_memory() {
        run_all(Arc::new(SqliteStorage::in_memory().await.unwrap())).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_file_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rooms.db");
        let room = RoomKey::new("main", "persisted");

        let store = SqliteStorage::open(&path).await.unwrap();
        run_all(Arc::new(store.clone())).await;
        store.put(&room, "state/count", json!(1)).await.unwrap();
        store.close().await.unwrap();

        // Reopen after `close`: the data is there.
        let store = SqliteStorage::open(&path).await.unwrap();
        assert_eq!(
            store.get(&room, "state/count").await.unwrap(),
            Some(json!(1))
        );
        store.put(&room, "state/count", json!(2)).await.unwrap();
        store
            .put(&room, "state/list", json!(["a", "b"]))
            .await
            .unwrap();
        // Only dropped (as `Arc<dyn Storage>`, the way rooms hold it), not closed.
        let shared: Arc<dyn Storage> = Arc::new(store);
        drop(shared);

        let store = SqliteStorage::open_with(
            &path,
            SqliteOptions {
                synchronous: Synchronous::Full,
                ..SqliteOptions::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(
            store.list(&room, "state/").await.unwrap(),
            vec![
                ("state/count".to_owned(), json!(2)),
                ("state/list".to_owned(), json!(["a", "b"])),
            ]
        );
        // The suite runs again on the reopened file, next to the earlier run's rows.
        run_all(Arc::new(store.clone())).await;
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn sqlite_closed_errors() {
        let store = SqliteStorage::in_memory().await.unwrap();
        let other = store.clone();
        store.close().await.unwrap();
        let room = RoomKey::new("main", "r");
        assert_eq!(
            other.put(&room, "k", json!(1)).await,
            Err(StorageError::Closed)
        );
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use partyroom_storage::PostgresStorage;
    use support::postgres::{drop_table, postgres_url, table_name};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_conformance_and_reconnect() {
        let Some(url) = postgres_url() else { return };
        let table = table_name("conformance");
        let store = PostgresStorage::connect(&url, &table).await.unwrap();
        run_all(Arc::new(store.clone())).await;

        let room = RoomKey::new("main", "persisted");
        store
            .put(&room, "state/x", json!({"v": [1, 2.5, "three"]}))
            .await
            .unwrap();
        drop(store);
        // A new pool (as after a restart) sees the data; creating the table again is a no-op.
        let store = PostgresStorage::connect(&url, &table).await.unwrap();
        assert_eq!(
            store.get(&room, "state/x").await.unwrap(),
            Some(json!({"v": [1, 2.5, "three"]}))
        );
        drop(store);
        drop_table(&url, &table).await;
    }

    /// A batch that PostgreSQL refuses half-way (a `\u0000` in a JSONB string) leaves
    /// nothing behind: each `apply` is one transaction.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_failing_batch_is_all_or_nothing() {
        let Some(url) = postgres_url() else { return };
        let table = table_name("atomic");
        let store = PostgresStorage::connect(&url, &table).await.unwrap();
        let room = RoomKey::new("main", "r");
        store.put(&room, "keep", json!("old")).await.unwrap();
        let err = store
            .apply(
                &room,
                partyroom_storage::Batch {
                    deletes: vec!["keep".into()],
                    delete_prefixes: vec![String::new()],
                    puts: vec![("ok".into(), json!(1)), ("nul".into(), json!("a\u{0}b"))],
                },
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("postgres"), "{err}");
        assert_eq!(
            store.list(&room, "").await.unwrap(),
            vec![("keep".to_owned(), json!("old"))]
        );
        drop(store);
        drop_table(&url, &table).await;
    }

    #[tokio::test]
    async fn postgres_rejects_bad_table_names() {
        // Checked before connecting, so no server is needed.
        let err = PostgresStorage::connect("postgres://nobody@127.0.0.1:1/none", "bad-name")
            .await
            .unwrap_err();
        assert!(
            matches!(err, partyroom_storage::OpenError::InvalidTableName(_)),
            "{err}"
        );
    }
}
