//! Idle rooms leave memory and come back from storage. Memory is measured with a counting
//! allocator (bytes held by the process's allocations), not RSS, so the figure is exact.

use std::alloc::System;
use std::sync::Arc;
use std::time::Duration;

use cap::Cap;
use partyroom_room::storage::MemoryStorage;
use partyroom_room::{ConnectRequest, Handlers, Json, Room, RoomConfig, Rooms};
use partyroom_state::{State, StateMap};
use serde_json::{Value, json};

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

#[derive(State, Default, Clone)]
struct Board {
    notes: StateMap<String>,
}

impl Room for Board {
    fn config() -> RoomConfig {
        RoomConfig::new("board-{n}").idle_timeout(Duration::from_secs(30))
    }
    fn handlers(h: &mut Handlers<Self>) {
        h.action("fill", |b: &mut Self, _cx, Json(n): Json<usize>| {
            for i in 0..n {
                b.notes.insert(format!("note-{i}"), "x".repeat(64));
            }
        });
    }
}

async fn touch(rooms: &Rooms, n: usize) {
    let handle = rooms.get("main", &format!("board-{n}")).unwrap();
    let (req, mut channels) = ConnectRequest::new(None, vec![], Default::default(), 16);
    let conn = handle.connect(req).await.unwrap();
    handle
        .message(
            conn,
            json!({"action":"fill","value": 50}).to_string().into(),
        )
        .await
        .unwrap();
    handle.disconnect(conn).await;
    while channels.frames.try_recv().is_ok() {}
}

#[tokio::test(start_paused = true)]
async fn many_idle_rooms_return_memory_and_come_back_from_storage() {
    const ROOMS: usize = 500;
    let storage = Arc::new(MemoryStorage::new());
    let rooms = Rooms::builder()
        .room::<Board>("main")
        .unwrap()
        .storage(storage.clone())
        .build();
    // Warm up lazily initialized runtime structures before the baseline.
    touch(&rooms, 0).await;
    tokio::time::sleep(Duration::from_secs(31)).await;
    settle().await;
    let baseline = ALLOCATOR.allocated();
    let stored_before = stored_bytes(&storage);

    for n in 1..=ROOMS {
        touch(&rooms, n).await;
    }
    settle().await;
    let loaded = ALLOCATOR.allocated();
    assert_eq!(rooms.live_rooms(), ROOMS);

    tokio::time::sleep(Duration::from_secs(31)).await;
    settle().await;
    assert_eq!(rooms.live_rooms(), 0, "every idle room unloaded");
    let after = ALLOCATOR.allocated();
    // What stays is what the in-memory storage now holds (the saved rows), nothing more.
    let stored = stored_bytes(&storage) - stored_before;
    let held = after.saturating_sub(baseline);
    eprintln!(
        "baseline {baseline} B, {ROOMS} rooms loaded {loaded} B, after unloading {after} B \
         (storage holds ~{stored} B of JSON)"
    );
    assert!(
        loaded - baseline > 2 * held,
        "most memory was released: held {held} B"
    );
    assert!(
        held < 6 * stored + 256 * 1024,
        "memory left after unloading ({held} B) is about what storage holds ({stored} B)"
    );

    // Each room is back, with its state, when it is opened again.
    for n in [1, ROOMS / 2, ROOMS] {
        let handle = rooms.get("main", &format!("board-{n}")).unwrap();
        let (req, mut channels) = ConnectRequest::new(None, vec![], Default::default(), 16);
        handle.connect(req).await.unwrap();
        let first: Value = serde_json::from_slice(&channels.frames.recv().await.unwrap()).unwrap();
        assert_eq!(first["value"]["notes"].as_object().unwrap().len(), 50);
    }
}

/// Bytes of JSON text the in-memory storage holds (keys and values).
fn stored_bytes(storage: &MemoryStorage) -> usize {
    storage
        .snapshot()
        .values()
        .flat_map(|keys| keys.iter())
        .map(|(k, v)| k.len() + v.to_string().len())
        .sum()
}

async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
