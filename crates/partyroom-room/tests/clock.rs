//! The clock is passed in ([`RoomsBuilder::clock`]): what a room stores comes from its clock's
//! wall time, and a room that starts later reads the age of what it restores from that clock
//! too. In process, with paused monotonic time and in-memory storage.
//!
//! [`RoomsBuilder::clock`]: partyroom_room::RoomsBuilder::clock

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use partyroom_room::storage::{MemoryStorage, RoomKey};
use partyroom_room::testing::TestRoom;
use partyroom_room::{Clock, Handlers, Room, RoomConfig, Rooms};
use partyroom_state::{State, StateMap};
use serde_json::json;
use tokio::time::Instant;

#[derive(State, Default, Clone, Debug)]
struct Player {
    #[state(connected)]
    online: bool,
}

#[derive(State, Default, Clone, Debug)]
struct Lobby {
    #[state(users)]
    players: StateMap<Player>,
}

impl Room for Lobby {
    fn config() -> RoomConfig {
        RoomConfig::new("lobby").session_expiry(Duration::from_secs(10))
    }
    fn handlers(_: &mut Handlers<Self>) {}
}

/// Tokio's monotonic clock (paused in these tests) and a wall clock set by hand.
#[derive(Debug)]
struct SetWall(AtomicU64);

impl SetWall {
    fn set(&self, unix_ms: u64) {
        self.0.store(unix_ms, Ordering::SeqCst);
    }
}

impl Clock for SetWall {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn unix_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn lobby(storage: &Arc<MemoryStorage>, clock: &Arc<SetWall>) -> TestRoom {
    let rooms = Rooms::builder()
        .room::<Lobby>("main")
        .unwrap()
        .seed(0)
        .storage(storage.clone())
        .clock(clock.clone())
        .build();
    TestRoom::from_rooms(rooms, "main", "lobby")
}

#[tokio::test(start_paused = true)]
async fn stored_session_times_come_from_the_rooms_clock() {
    let storage = Arc::new(MemoryStorage::new());
    let clock = Arc::new(SetWall(AtomicU64::new(1_000_000)));
    let room = lobby(&storage, &clock);
    let mut client = room.connect(Some("s1")).await;
    room.settle().await;
    client.drain();
    let pid = client.pid().unwrap().to_owned();
    clock.set(1_005_000);
    client.close().await;
    room.settle().await;
    room.shutdown().await;
    let key = RoomKey::new("main", "lobby");
    assert_eq!(
        storage.room(&key)["session/s1"],
        json!({"publicId": pid, "created": 1_000_000, "disconnectedAt": 1_005_000})
    );

    // 3 s later on the wall clock, a new instance restores the session with 7 s left before
    // it expires (with the machine's clock, a session from 1970 would expire at once).
    clock.set(1_008_000);
    let room = lobby(&storage, &clock);
    room.settle().await;
    assert!(storage.room(&key).contains_key("session/s1"));
    tokio::time::sleep(Duration::from_millis(6_900)).await;
    room.settle().await;
    assert!(
        storage.room(&key).contains_key("session/s1"),
        "expired early"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    room.settle().await;
    let stored = storage.room(&key);
    assert!(
        !stored.contains_key("session/s1"),
        "not expired: {stored:?}"
    );
    assert!(!stored.contains_key(&format!("state/players/{pid}")));
}
