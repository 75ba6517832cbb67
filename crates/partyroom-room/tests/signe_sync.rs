//! Port of `@signe/room`'s `tests/room/sync.spec.ts` (spec section 15, checklist items 31–41):
//! automatic and manual synchronisation (spec 6.9).
//!
//! The original's internals map to observable behaviour: `$autoSync` is [`Cx::auto_sync`],
//! `$pendingSync` is "what the next `apply_sync` sends" (empty: the full state; not empty: the
//! pending changes only), `$applySync()` is [`Cx::apply_sync`].

use partyroom_room::testing::TestRoom;
use partyroom_room::testing::sync_values as syncs;
use partyroom_room::{Cx, Handlers, Json, Room, RoomConfig, Rooms};
use partyroom_state::State;
use serde_json::{Value, json};

#[derive(State, Clone, Debug)]
struct Board {
    count: i64,
    text: String,
    score: i64,
    other: i64,
}

impl Default for Board {
    fn default() -> Self {
        Self {
            count: 0,
            text: "initial".into(),
            score: 0,
            other: 0,
        }
    }
}

impl Room for Board {
    fn config() -> RoomConfig {
        RoomConfig::new("board-{n}")
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.action("count", |b: &mut Self, _cx, Json(n): Json<i64>| b.count = n)
            .action(
                "set",
                |b: &mut Self, _cx, Json((count, text, score)): Json<(i64, String, i64)>| {
                    b.count = count;
                    b.text = text;
                    b.score = score;
                },
            )
            .action("auto", |_b: &mut Self, cx, Json(on): Json<bool>| {
                cx.set_auto_sync(on)
            })
            .action("apply", |_b: &mut Self, cx, ()| cx.apply_sync());
    }
}

/// A registry with `board-{n}` (automatic sync) and `manual-{n}` (the same room type created
/// with `autoSync = false`).
fn rooms() -> Rooms {
    Rooms::builder()
        .room::<Board>("main")
        .unwrap()
        .room_with::<Board>("main", RoomConfig::new("manual-{n}").manual_sync())
        .unwrap()
        .seed(0)
        .build()
}

async fn auto_sync(room: &TestRoom) -> bool {
    room.handle()
        .update(|_b: &mut Board, cx: &mut Cx<'_>| cx.auto_sync())
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_change_reaches_every_client_as_a_sync_packet() {
    // checklist 31
    let room = TestRoom::new::<Board>("board-1");
    let mut a = room.connect(None).await;
    let mut b = room.connect(None).await;
    room.settle().await;
    a.drain();
    b.drain();
    a.send("count", json!(10)).await;
    room.settle().await;
    for c in [&mut a, &mut b] {
        assert_eq!(
            c.drain(),
            vec![json!({"type": "sync", "value": {"count": 10}})]
        );
    }
}

#[tokio::test(start_paused = true)]
async fn auto_sync_is_on_and_nothing_is_pending_by_default() {
    // checklist 32, 33
    // 33: "`$pendingSync` is empty" shows as: after start and two connects, `apply_sync` sends
    // the full state (what it sends when nothing is pending), and nothing else was queued.
    let room = TestRoom::new::<Board>("board-1");
    assert!(auto_sync(&room).await);
    let mut a = room.connect(None).await;
    let mut b = room.connect(None).await;
    room.settle().await;
    a.drain();
    b.drain();
    a.send("apply", Value::Null).await;
    room.settle().await;
    let full = json!({"count": 0, "text": "initial", "score": 0, "other": 0});
    for c in [&mut a, &mut b] {
        assert_eq!(syncs(&c.drain()), vec![full.clone()]);
    }
}

#[tokio::test(start_paused = true)]
async fn manual_sync_holds_changes_until_apply_sync() {
    // checklist 34, 35, 36, 37
    // Different for clients that joined while sync was manual: they receive `pId` with the
    // full state at `apply_sync`; the original sent them `pId` plus the pending delta only, so
    // they never learned the rest of the state.
    let rooms = rooms();
    let room = TestRoom::from_rooms(rooms.clone(), "main", "manual-1");
    assert!(!auto_sync(&room).await);
    let mut a = room.connect(None).await;
    let mut b = room.connect(None).await;
    room.settle().await;
    assert!(a.drain().is_empty(), "no first packet while sync is manual");

    // 34/35: changes produce no packet; they wait.
    a.send("set", json!([5, "changed", 7])).await;
    room.settle().await;
    assert!(a.drain().is_empty());
    assert!(b.drain().is_empty());

    // 36: one packet per client with every pending value (here the first packet, with pId).
    a.send("apply", Value::Null).await;
    room.settle().await;
    for c in [&mut a, &mut b] {
        let got = c.drain();
        assert_eq!(got.len(), 1, "{got:?}");
        let value = &got[0]["value"];
        assert!(value["pId"].is_string());
        assert_eq!(value["count"], 5);
        assert_eq!(value["text"], "changed");
        assert_eq!(value["score"], 7);
        assert_eq!(value["other"], 0, "the full state, not just the delta");
    }

    // Clients that already have their first packet get the pending delta only.
    a.send("set", json!([6, "again", 8])).await;
    a.send("apply", Value::Null).await;
    room.settle().await;
    for c in [&mut a, &mut b] {
        assert_eq!(
            syncs(&c.drain()),
            vec![json!({"count": 6, "text": "again", "score": 8})]
        );
    }

    // 37: apply_sync emptied what was pending: the next one sends the full state.
    a.send("apply", Value::Null).await;
    room.settle().await;
    assert_eq!(
        syncs(&a.drain()),
        vec![json!({"count": 6, "text": "again", "score": 8, "other": 0})]
    );
}

#[tokio::test(start_paused = true)]
async fn several_changes_before_apply_sync_make_one_packet_with_the_final_values() {
    // checklist 38
    let room = TestRoom::new::<Board>("board-1");
    let mut a = room.connect(None).await;
    room.settle().await;
    a.drain();
    a.send("auto", json!(false)).await;
    for n in 1..=3 {
        a.send("count", json!(n)).await;
    }
    a.send("set", json!([4, "final", 9])).await;
    a.send("count", json!(5)).await;
    room.settle().await;
    assert!(a.drain().is_empty());
    a.send("apply", Value::Null).await;
    room.settle().await;
    assert_eq!(
        syncs(&a.drain()),
        vec![json!({"count": 5, "text": "final", "score": 9})]
    );
}

#[tokio::test(start_paused = true)]
async fn auto_sync_can_be_switched_at_runtime() {
    // checklist 39, 40
    // Different: switching automatic sync back on sends what waited at once (the original kept
    // it until the next `$applySync()`, and clients that joined meanwhile had no first packet).
    let room = TestRoom::new::<Board>("board-1");
    let mut a = room.connect(None).await;
    room.settle().await;
    a.drain();

    a.send("auto", json!(false)).await;
    room.settle().await;
    assert!(!auto_sync(&room).await);
    a.send("count", json!(1)).await;
    room.settle().await;
    assert!(a.drain().is_empty(), "off: no packets");

    a.send("auto", json!(true)).await;
    room.settle().await;
    assert!(auto_sync(&room).await);
    assert_eq!(
        syncs(&a.drain()),
        vec![json!({"count": 1})],
        "what waited is sent when switched on"
    );

    // 40: the next change produces a packet again.
    a.send("count", json!(2)).await;
    room.settle().await;
    assert_eq!(syncs(&a.drain()), vec![json!({"count": 2})]);
}

#[tokio::test(start_paused = true)]
async fn apply_sync_with_nothing_pending_sends_the_full_state() {
    // checklist 41
    let room = TestRoom::new::<Board>("board-1");
    let mut a = room.connect(None).await;
    let mut b = room.connect(None).await;
    a.send("count", json!(5)).await;
    room.settle().await;
    a.drain();
    b.drain();
    a.send("apply", Value::Null).await;
    room.settle().await;
    for c in [&mut a, &mut b] {
        assert_eq!(
            syncs(&c.drain()),
            vec![json!({"count": 5, "text": "initial", "score": 0, "other": 0})]
        );
    }
}
