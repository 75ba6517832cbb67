//! Room leases and fenced writes on a real PostgreSQL (`PARTYROOM_TEST_POSTGRES_URL`; required
//! when `CI=true`): one live lease per room, epochs that only grow, and writes of an owner
//! that lost its lease refused with nothing applied.
#![cfg(feature = "postgres")]

use std::time::Duration;

use partyroom_storage::{Batch, Lease, Leases, PostgresStorage, RoomKey, Storage, StorageError};
use serde_json::{Value, json};

mod support;
use support::postgres::{drop_table, postgres_url, table_name};

const LONG: Duration = Duration::from_secs(60);

/// A storage table and a lease table of this test, through their own pool (as one node has).
async fn node(url: &str, data: &str, leases: &str) -> (PostgresStorage, Leases) {
    let store = PostgresStorage::connect(url, data).await.unwrap();
    let leases = Leases::open(store.pool().clone(), leases).await.unwrap();
    (store, leases)
}

fn put(key: &str, value: Value) -> Batch {
    Batch {
        puts: vec![(key.into(), value)],
        ..Batch::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_has_one_live_lease_and_epochs_only_grow() {
    let Some(url) = postgres_url() else { return };
    let (data, lease_table) = (table_name("lease_data"), table_name("leases"));
    let (_, leases) = node(&url, &data, &lease_table).await;
    let room = RoomKey::new("main", "game-1");

    let a = leases.claim(&room, "node-a", LONG).await.unwrap().unwrap();
    assert_eq!((a.owner.as_str(), a.epoch), ("node-a", 1));
    assert_eq!(leases.claim(&room, "node-b", LONG).await.unwrap(), None);
    assert_eq!(
        leases.claim(&room, "node-a", LONG).await.unwrap(),
        None,
        "even for its holder"
    );
    assert_eq!(
        leases.owner(&room).await.unwrap(),
        Some(("node-a".into(), 1))
    );
    assert!(leases.renew(&a, LONG).await.unwrap().is_some());
    // Other rooms are independent.
    let other = RoomKey::new("main", "game-2");
    assert_eq!(
        leases
            .claim(&other, "node-b", LONG)
            .await
            .unwrap()
            .unwrap()
            .epoch,
        1
    );

    assert!(leases.release(&a).await.unwrap());
    assert_eq!(leases.owner(&room).await.unwrap(), None);
    let b = leases.claim(&room, "node-b", LONG).await.unwrap().unwrap();
    assert_eq!(
        b.epoch, 2,
        "a released lease keeps its epoch: the next one is newer"
    );
    assert_eq!(
        leases.renew(&a, LONG).await.unwrap(),
        None,
        "a lost lease cannot be renewed"
    );
    assert!(!leases.release(&a).await.unwrap(), "nor released");
    assert_eq!(
        leases.owner(&room).await.unwrap(),
        Some(("node-b".into(), 2))
    );
    drop_table(&url, &lease_table).await;
    drop_table(&url, &data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_that_lost_its_lease_cannot_write() {
    let Some(url) = postgres_url() else { return };
    let (data, lease_table) = (table_name("fence_data"), table_name("fence_leases"));
    let (store_a, leases_a) = node(&url, &data, &lease_table).await;
    let (store_b, leases_b) = node(&url, &data, &lease_table).await;
    let room = RoomKey::new("main", "game-1");

    let a = leases_a
        .claim(&room, "node-a", Duration::from_millis(300))
        .await
        .unwrap()
        .unwrap();
    store_a
        .apply_fenced(&leases_a, &a, put("state/n", json!(1)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;

    // Expired, not yet claimed by anyone: refused already.
    let late = store_a
        .apply_fenced(&leases_a, &a, put("state/n", json!(2)))
        .await;
    assert_eq!(late, Err(StorageError::Fenced { epoch: 1 }));
    let b: Lease = leases_b
        .claim(&room, "node-b", LONG)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.epoch, 2);
    // After the takeover (the SIGSTOP-and-resume case): refused, nothing applied.
    let stale = store_a
        .apply_fenced(
            &leases_a,
            &a,
            Batch {
                deletes: vec!["state/n".into()],
                puts: vec![("state/m".into(), json!("stale"))],
                ..Batch::default()
            },
        )
        .await;
    assert_eq!(stale, Err(StorageError::Fenced { epoch: 1 }));
    assert_eq!(leases_a.renew(&a, LONG).await.unwrap(), None);
    store_b
        .apply_fenced(&leases_b, &b, put("state/n", json!(3)))
        .await
        .unwrap();
    assert_eq!(
        store_b.list(&room, "").await.unwrap(),
        vec![("state/n".into(), json!(3))],
        "only the new owner's writes"
    );
    drop_table(&url, &lease_table).await;
    drop_table(&url, &data).await;
}

/// Three nodes (each its own pool) claim the same room at the same moment, 1,000 times: every
/// round exactly one wins, with the next epoch, and the previous winner's writes are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_claims_never_make_two_owners() {
    let Some(url) = postgres_url() else { return };
    let (data, lease_table) = (table_name("race_data"), table_name("race_leases"));
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(node(&url, &data, &lease_table).await);
    }
    let room = RoomKey::new("main", "contested");
    let mut previous: Option<(usize, Lease)> = None;
    for round in 1..=1000i64 {
        let claims = nodes.iter().enumerate().map(|(i, (_, leases))| {
            let room = room.clone();
            let leases = leases.clone();
            tokio::spawn(async move { (i, leases.claim(&room, &format!("node-{i}"), LONG).await) })
        });
        let mut winners = Vec::new();
        for claim in claims {
            let (i, result) = claim.await.unwrap();
            if let Some(lease) = result.unwrap() {
                winners.push((i, lease));
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let (i, lease) = winners.pop().unwrap();
        assert_eq!(lease.epoch, round, "round {round}");
        let (store, leases) = &nodes[i];
        store
            .apply_fenced(leases, &lease, put("state/round", json!(round)))
            .await
            .unwrap();
        if let Some((j, old)) = previous.take() {
            let (old_store, old_leases) = &nodes[j];
            let refused = old_store
                .apply_fenced(old_leases, &old, put("state/round", json!(-round)))
                .await;
            assert_eq!(
                refused,
                Err(StorageError::Fenced {
                    epoch: (round - 1) as u64
                })
            );
        }
        assert!(leases.release(&lease).await.unwrap());
        previous = Some((i, lease));
    }
    let (store, _) = &nodes[0];
    assert_eq!(
        store.get(&room, "state/round").await.unwrap(),
        Some(json!(1000))
    );
    drop(nodes);
    drop_table(&url, &lease_table).await;
    drop_table(&url, &data).await;
}

/// The ordering the fencing rests on: while a fenced write is under way (its transaction holds
/// the lease row's share lock, here opened by hand with the same check), a claim of the
/// expired lease waits for it to commit, so the new owner finds the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_waits_for_a_write_under_way() {
    let Some(url) = postgres_url() else { return };
    let (data, lease_table) = (table_name("order_data"), table_name("order_leases"));
    let (store, leases) = node(&url, &data, &lease_table).await;
    let room = RoomKey::new("main", "game-1");
    let a = leases
        .claim(&room, "node-a", Duration::from_millis(300))
        .await
        .unwrap()
        .unwrap();

    let (mut writer, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let tx = writer.transaction().await.unwrap();
    let held = tx
        .query_opt(
            &format!(
                "SELECT 1 FROM \"{lease_table}\" WHERE party = $1 AND room = $2 \
                 AND owner = $3 AND epoch = $4 AND expires_at > now() FOR SHARE"
            ),
            &[&room.party, &room.room, &a.owner, &a.epoch],
        )
        .await
        .unwrap();
    assert!(held.is_some());
    tokio::time::sleep(Duration::from_millis(400)).await; // the lease expires meanwhile

    let claim = tokio::spawn({
        let (leases, room) = (leases.clone(), room.clone());
        async move { leases.claim(&room, "node-b", LONG).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !claim.is_finished(),
        "the claim must wait for the write under way"
    );
    tx.execute(
        &format!(
            "INSERT INTO \"{data}\" (party, room, key, value) VALUES ($1, $2, 'state/n', '1')"
        ),
        &[&room.party, &room.room],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let b = claim.await.unwrap().unwrap().unwrap();
    assert_eq!(b.epoch, 2);
    assert_eq!(store.get(&room, "state/n").await.unwrap(), Some(json!(1)));
    drop(writer);
    drop_table(&url, &lease_table).await;
    drop_table(&url, &data).await;
}

/// Bad inputs: a lease table name that is not a plain identifier is refused before any SQL
/// runs; a lease longer than PostgreSQL's intervals can hold is a clear error, not a panic,
/// and claims nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_table_names_and_absurd_ttls_are_errors() {
    let Some(url) = postgres_url() else { return };
    let data = table_name("bad_data");
    let store = PostgresStorage::connect(&url, &data).await.unwrap();
    for bad in ["", "1x", "x; DROP TABLE y", "a\"b"] {
        let err = Leases::open(store.pool().clone(), bad).await.unwrap_err();
        assert!(
            matches!(err, partyroom_storage::OpenError::InvalidTableName(_)),
            "{bad}: {err}"
        );
        let err = partyroom_storage::Members::open(store.pool().clone(), bad)
            .await
            .unwrap_err();
        assert!(
            matches!(err, partyroom_storage::OpenError::InvalidTableName(_)),
            "{bad}: {err}"
        );
    }
    let lease_table = table_name("bad_leases");
    let leases = Leases::open(store.pool().clone(), &lease_table)
        .await
        .unwrap();
    let room = RoomKey::new("main", "r");
    let err = leases
        .claim(&room, "node-a", Duration::MAX)
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Backend(_)), "{err}");
    assert_eq!(leases.owner(&room).await.unwrap(), None);
    let a = leases.claim(&room, "node-a", LONG).await.unwrap().unwrap();
    assert!(leases.renew(&a, Duration::MAX).await.is_err());
    assert_eq!(
        leases.owner(&room).await.unwrap(),
        Some(("node-a".into(), 1)),
        "unchanged"
    );
    drop(store);
    drop_table(&url, &lease_table).await;
    drop_table(&url, &data).await;
}
