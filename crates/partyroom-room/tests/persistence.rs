//! Saving and restoring rooms: incremental rows, sessions, throttling, unloading, shutdown,
//! restore hooks and storage failures. In process, with paused time and in-memory storage.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use partyroom_room::storage::{Batch, BoxFuture, MemoryStorage, RoomKey, Storage, StorageError};
use partyroom_room::testing::TestRoom;
use partyroom_room::{Handlers, Json, Room, RoomConfig};
use partyroom_state::{State, StateMap};
use serde_json::{Value, json};

#[derive(State, Clone, Debug)]
struct Player {
    name: String,
    #[state(connected)]
    online: bool,
    score: i64,
    #[state(persist = false)]
    typing: bool,
}

impl Default for Player {
    fn default() -> Self {
        Self {
            name: "anon".into(),
            online: false,
            score: 0,
            typing: false,
        }
    }
}

#[derive(State, Default, Clone, Debug)]
struct Game {
    round: i64,
    title: String,
    #[state(users)]
    players: StateMap<Player>,
}

impl Room for Game {
    fn config() -> RoomConfig {
        RoomConfig::new("game-{id}")
            .session_expiry(Duration::from_secs(10))
            .idle_timeout(Duration::from_secs(5))
    }
    fn handlers(h: &mut Handlers<Self>) {
        h.action("score", |g: &mut Self, cx, ()| {
            let id = cx.user_id().unwrap().to_owned();
            g.players.get_mut(&id).unwrap().score += 1;
        })
        .action("round", |g: &mut Self, _cx, Json(n): Json<i64>| g.round = n)
        .action("type", |g: &mut Self, cx, ()| {
            let id = cx.user_id().unwrap().to_owned();
            g.players.get_mut(&id).unwrap().typing = true;
        })
        .on_storage_restore(|snapshot| {
            if let Some(t) = snapshot.get_mut("title")
                && let Some(s) = t.as_str()
            {
                *t = json!(format!("{s}:restored"));
            }
        })
        .on_user_storage_restore(|_id, user| {
            if user["name"] == "legacy" {
                user["name"] = json!("migrated");
            }
        });
    }
}

/// Storage that records every batch and can be told to fail.
#[derive(Debug, Default)]
struct Recording {
    inner: MemoryStorage,
    batches: Mutex<Vec<Batch>>,
    fail: AtomicBool,
    failures: AtomicUsize,
    /// Refuse every write as fenced (the room belongs to another owner now).
    fenced: AtomicBool,
}

impl Storage for Recording {
    fn get<'a>(
        &'a self,
        room: &'a RoomKey,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Value>, StorageError>> {
        self.inner.get(room, key)
    }
    fn list<'a>(
        &'a self,
        room: &'a RoomKey,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, Value)>, StorageError>> {
        self.inner.list(room, prefix)
    }
    fn apply<'a>(
        &'a self,
        room: &'a RoomKey,
        batch: Batch,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        if self.fenced.load(Ordering::SeqCst) {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Box::pin(std::future::ready(Err(StorageError::Fenced { epoch: 1 })));
        }
        if self.fail.load(Ordering::SeqCst) {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Box::pin(std::future::ready(Err(StorageError::Backend(
                "disk full".into(),
            ))));
        }
        self.batches.lock().unwrap().push(batch.clone());
        self.inner.apply(room, batch)
    }
}

impl Recording {
    fn take(&self) -> Vec<Batch> {
        std::mem::take(&mut self.batches.lock().unwrap())
    }
}

fn map(stored: Vec<(String, Value)>) -> serde_json::Map<String, Value> {
    stored.into_iter().collect()
}

async fn tick(room: &TestRoom) {
    room.settle().await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    room.settle().await;
}

#[tokio::test(start_paused = true)]
async fn state_and_sessions_are_stored_in_rows_and_restored_after_unload() {
    let storage = Arc::new(Recording::default());
    let room = TestRoom::with_storage::<Game>("game-1", storage.clone());
    let mut c = room.connect(Some("sess-1")).await;
    room.settle().await;
    c.drain();
    let pid = c.pid().unwrap().to_owned();
    c.send("score", Value::Null).await;
    c.send("round", json!(3)).await;
    c.send("type", Value::Null).await;
    tick(&room).await;

    let stored = map(room.stored().await);
    assert_eq!(stored["state/round"], json!(3));
    // The connected flag and persist = false fields are never stored (quirk Q13 fixed).
    assert_eq!(
        stored[&format!("state/players/{pid}")],
        json!({"name":"anon","score":1})
    );
    let session = &stored["session/sess-1"];
    assert_eq!(session["publicId"], pid.as_str());
    assert!(session["disconnectedAt"].is_null(), "connected now");

    c.close().await;
    tick(&room).await;
    let stored = map(room.stored().await);
    assert!(stored["session/sess-1"]["disconnectedAt"].is_u64());

    // Idle for longer than the idle timeout: saved and unloaded.
    tokio::time::sleep(Duration::from_secs(6)).await;
    room.settle().await;
    assert!(!room.is_loaded(), "the idle room left memory");

    // The next connection restores it: same user, same score, online again.
    let mut back = room.connect(Some("sess-1")).await;
    tick(&room).await;
    back.drain();
    assert_eq!(back.pid(), Some(pid.as_str()));
    let state = back.mirror().state();
    assert_eq!(state["round"], 3);
    assert_eq!(state["players"][&pid]["score"], 1);
    assert_eq!(state["players"][&pid]["online"], true);
    assert_eq!(
        state["players"][&pid]["typing"], false,
        "transient field reset"
    );
}

#[tokio::test(start_paused = true)]
async fn a_flush_writes_the_rows_that_changed_not_the_whole_room() {
    let storage = Arc::new(Recording::default());
    let room = TestRoom::with_storage::<Game>("game-2", storage.clone());
    let mut clients = Vec::new();
    for i in 0..50 {
        clients.push(room.connect(Some(&format!("s{i}"))).await);
    }
    tick(&room).await;
    storage.take();
    for c in clients.iter().take(3) {
        c.send("score", Value::Null).await;
    }
    tick(&room).await;
    let batches = storage.take();
    let rows: usize = batches.iter().map(Batch::len).sum();
    assert_eq!(rows, 3, "3 users changed, 3 rows written: {batches:?}");
    assert!(
        batches
            .iter()
            .all(|b| b.puts.iter().all(|(k, _)| k.starts_with("state/players/")))
    );
}

#[tokio::test(start_paused = true)]
async fn throttled_storage_batches_changes_and_shutdown_saves_them() {
    #[derive(State, Default, Clone)]
    struct Slow {
        n: i64,
    }
    impl Room for Slow {
        fn config() -> RoomConfig {
            RoomConfig::new("slow").throttle_storage(Duration::from_millis(2500))
        }
        fn handlers(h: &mut Handlers<Self>) {
            h.action("inc", |s: &mut Self, _cx, ()| s.n += 1);
        }
    }
    let storage = Arc::new(Recording::default());
    let room = TestRoom::with_storage::<Slow>("slow", storage.clone());
    let c = room.connect(None).await;
    for _ in 0..5 {
        c.send("inc", Value::Null).await;
        tick(&room).await;
    }
    assert!(
        storage.take().is_empty(),
        "nothing written inside the window"
    );
    tokio::time::sleep(Duration::from_millis(2600)).await;
    room.settle().await;
    let batches = storage.take();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].puts, vec![("state/n".to_owned(), json!(5))]);

    // Changes still waiting for the throttle are saved by a graceful shutdown.
    c.send("inc", Value::Null).await;
    tick(&room).await;
    assert!(storage.take().is_empty());
    room.shutdown().await;
    assert_eq!(map(room.stored().await)["state/n"], json!(6));
}

#[tokio::test(start_paused = true)]
async fn restore_runs_the_hooks_and_treats_crashed_sessions_as_disconnected() {
    let storage = Arc::new(MemoryStorage::new());
    let key = RoomKey::new("main", "game-3");
    // What a crashed process leaves: a session still marked connected (no disconnectedAt),
    // a user stored with a connected flag from an older format, a title.
    storage
        .apply(
            &key,
            Batch {
                puts: vec![
                    ("state/title".into(), json!("saved")),
                    ("state/round".into(), json!(7)),
                    (
                        "state/players/AbCd1234".into(),
                        json!({"name":"legacy","score":4,"online":true}),
                    ),
                    (
                        "session/crashed".into(),
                        json!({"publicId":"AbCd1234","created":1}),
                    ),
                ],
                ..Batch::default()
            },
        )
        .await
        .unwrap();
    let room = TestRoom::with_storage::<Game>("game-3", storage.clone());
    let mut watcher = room.connect(Some("w")).await;
    room.settle().await;
    watcher.drain();
    let state = watcher.mirror().state().clone();
    assert_eq!(state["title"], "saved:restored");
    assert_eq!(state["round"], 7);
    assert_eq!(
        state["players"]["AbCd1234"],
        json!({"name":"migrated","score":4,"online":false,"typing":false})
    );
    // The crashed session expires like any disconnected one.
    tokio::time::sleep(Duration::from_secs(11)).await;
    room.settle().await;
    watcher.drain();
    assert!(
        watcher.mirror().state()["players"]
            .get("AbCd1234")
            .is_none()
    );
    tick(&room).await;
    let stored = map(room.stored().await);
    assert!(!stored.contains_key("session/crashed"));
    assert!(!stored.contains_key("state/players/AbCd1234"));
}

#[tokio::test(start_paused = true)]
async fn a_failed_write_is_retried_and_corrupt_state_is_never_overwritten() {
    let storage = Arc::new(Recording::default());
    let room = TestRoom::with_storage::<Game>("game-4", storage.clone());
    let c = room.connect(Some("a")).await;
    tick(&room).await;
    storage.fail.store(true, Ordering::SeqCst);
    c.send("round", json!(9)).await;
    tick(&room).await;
    assert!(storage.failures.load(Ordering::SeqCst) >= 1);
    storage.fail.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    room.settle().await;
    assert_eq!(map(room.stored().await)["state/round"], json!(9));

    // A room whose stored state does not fit its type refuses to start.
    let bad = Arc::new(MemoryStorage::new());
    bad.put(
        &RoomKey::new("main", "game-5"),
        "state/round",
        json!("not a number"),
    )
    .await
    .unwrap();
    let room = TestRoom::with_storage::<Game>("game-5", bad.clone());
    assert!(room.connect_with(Some("x"), &[]).await.is_err());
    assert_eq!(
        bad.room(&RoomKey::new("main", "game-5")).get("state/round"),
        Some(&json!("not a number"))
    );
}

/// A write refused as fenced means another owner has the room: it is not retried, the room
/// stops at once (clients closed with 1012, so they reconnect and find the room where it is
/// now), and nothing more is written; the next request starts a new instance.
#[tokio::test(start_paused = true)]
async fn a_fenced_write_stops_the_room_and_nothing_more_is_written() {
    let storage = Arc::new(Recording::default());
    let room = TestRoom::with_storage::<Game>("game-1", storage.clone());
    let mut c = room.connect(Some("sess-1")).await;
    let mut other = room.connect(Some("sess-2")).await;
    tick(&room).await;
    storage.fenced.store(true, Ordering::SeqCst);
    c.send("round", json!(7)).await;
    tick(&room).await;
    for client in [&mut c, &mut other] {
        let close = client.closed().expect("closed when the lease was lost");
        assert_eq!(close.code, 1012, "{close:?}");
    }
    assert!(!room.is_loaded(), "stopped and out of the directory");
    let refused = storage.failures.load(Ordering::SeqCst);
    assert_eq!(refused, 1, "one refused write, not retried");
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        storage.failures.load(Ordering::SeqCst),
        refused,
        "no retry later either"
    );

    // The next request starts a new instance from what is stored (here: the new owner
    // has written nothing yet, so the round that was refused is not there).
    storage.fenced.store(false, Ordering::SeqCst);
    let mut again = room.connect(Some("sess-1")).await;
    tick(&room).await;
    again.drain();
    assert_eq!(again.mirror().state()["round"], 0);
}
