//! The testing example of `@signe/room`'s README (`testRoom`, `createClient`), on partyroom's
//! harness (`TestRoom`, `TestClient`).
//!
//! ```js
//! @Room({ path: "game" })
//! class GameRoom {
//!   @sync() count = signal(0);
//!   @Action('increment') increment() { this.count.update(c => c + 1) }
//! }
//! const { createClient, room, server } = await testRoom(GameRoom)
//! const client1 = await createClient()
//! const client2 = await createClient()
//! client1.addEventListener('message', countFn)
//! client2.addEventListener('message', countFn)
//! await client1.send({ action: 'increment' })
//! expect(countFn).toHaveBeenCalledTimes(2)
//! expect(countFn).toHaveBeenCalledWith('{"type":"sync","value":{"count":1}}')
//! expect(room.count()).toBe(1)
//! expect(server.roomStorage.get('.')).toEqual({ count: 1 })
//! ```
//!
//! Listeners added after `createClient` never see the first (`pId`) packet, so the test drains
//! it first. The README's last line does not hold even for the original (spec 13: the value is
//! stored as `state:count = 1`); partyroom stores it as the row `state/count = 1`.

use std::time::Duration;

use partyroom_room::testing::TestRoom;
use partyroom_room::{Handlers, Room, RoomConfig};
use partyroom_state::State;
use serde_json::{Value, json};

#[derive(State, Default, Clone, Debug)]
struct GameRoom {
    count: i64,
}

impl Room for GameRoom {
    fn config() -> RoomConfig {
        RoomConfig::new("game")
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.action("increment", |room: &mut Self, _cx, ()| room.count += 1);
    }
}

#[tokio::test(start_paused = true)]
async fn readme_testing_example() {
    // README "Testing" section (spec 12/13); not a checklist item.
    let room = TestRoom::new::<GameRoom>("game");
    let mut client1 = room.connect(None).await;
    let mut client2 = room.connect(None).await;
    room.settle().await;
    // What `addEventListener` registered after `createClient` would not see.
    client1.drain();
    client2.drain();

    client1.send_raw(r#"{"action":"increment"}"#).await;
    room.settle().await;

    let mut received: Vec<Value> = client1.drain();
    received.extend(client2.drain());
    assert_eq!(received.len(), 2, "one message per client");
    assert!(
        received
            .iter()
            .all(|m| m == &json!({"type": "sync", "value": {"count": 1}}))
    );

    let count = room
        .handle()
        .update(|r: &mut GameRoom, _cx| r.count)
        .await
        .unwrap();
    assert_eq!(count, 1);

    tokio::time::sleep(Duration::from_millis(1)).await;
    room.settle().await;
    assert_eq!(
        room.stored().await,
        vec![("state/count".to_owned(), json!(1))]
    );
}
