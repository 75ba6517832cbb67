//! Connection lifecycle, actions, sync scheduling and backpressure, in process (no sockets),
//! with tokio's paused clock.

use partyroom_room::testing::sync_values;
use std::time::Duration;

use partyroom_room::testing::TestRoom;
use partyroom_room::{Handlers, Json, Room, RoomConfig, RoomRequest, Valid};
use partyroom_state::{State, StateMap};
use serde_json::{Value, json};

#[derive(State, Default, Clone, Debug)]
struct Player {
    name: String,
    #[state(connected)]
    online: bool,
    score: i64,
}

#[derive(State, Default, Clone, Debug)]
struct Lobby {
    count: i64,
    #[state(users)]
    users: StateMap<Player>,
    #[state(sync = false)]
    secret: i64,
}

#[derive(serde::Deserialize, garde::Validate)]
struct Rename {
    #[garde(length(min = 2, max = 10))]
    name: String,
}

impl Room for Lobby {
    fn config() -> RoomConfig {
        RoomConfig::new("lobby-{id}").session_expiry(Duration::from_millis(300))
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.on_join(|room: &mut Self, cx| {
            let name = cx.query("name").unwrap_or("anon").to_owned();
            if let Some(u) = cx.user_id().map(str::to_owned) {
                room.users.get_mut(&u).unwrap().name = name;
            }
        })
        .action("inc", |room: &mut Self, _cx, ()| room.count += 1)
        .action("add", |room: &mut Self, _cx, Json(n): Json<i64>| {
            room.count += n
        })
        .action("score", |room: &mut Self, cx, ()| {
            let id = cx.user_id().unwrap().to_owned();
            room.users.get_mut(&id).unwrap().score += 1;
        })
        .action("rename", |room: &mut Self, cx, Valid(r): Valid<Rename>| {
            let id = cx.user_id().unwrap().to_owned();
            room.users.get_mut(&id).unwrap().name = r.name;
        })
        .action("secret", |room: &mut Self, _cx, Json(n): Json<i64>| {
            room.secret = n
        })
        .action("echo", |_room: &mut Self, cx, v: Value| {
            cx.send(&json!({"type": "echo", "value": v}));
        })
        .action("shout", |_room: &mut Self, cx, v: Value| {
            cx.broadcast(&json!({"hello": v}));
        })
        .action("panic", |_room: &mut Self, _cx, ()| panic!("handler bug"))
        .get("/count", |room: &Self, _cx| Json(room.count));
    }
}

#[tokio::test(start_paused = true)]
async fn first_packet_carries_pid_and_the_full_state() {
    let room = TestRoom::new::<Lobby>("lobby-1");
    let mut a = room
        .connect_with(Some("sess-a"), &[("name", "Ann")])
        .await
        .unwrap();
    room.settle().await;
    let frames = a.drain();
    assert_eq!(frames.len(), 1, "exactly one packet: {frames:?}");
    let pid = a.pid().unwrap().to_owned();
    assert_eq!(pid.len(), 8);
    assert!(pid.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(
        frames[0],
        json!({"type":"sync","value":{"pId": pid, "count":0, "users":{ &pid: {"name":"Ann","online":true,"score":0}}}})
    );
}

#[tokio::test(start_paused = true)]
async fn a_join_reaches_others_as_one_coalesced_patch() {
    let room = TestRoom::new::<Lobby>("lobby-1");
    let mut a = room.connect(Some("a")).await;
    room.settle().await;
    a.drain();
    let mut b = room
        .connect_with(Some("b"), &[("name", "Bob")])
        .await
        .unwrap();
    room.settle().await;
    let pid_b = {
        b.drain();
        b.pid().unwrap().to_owned()
    };
    let seen = a.drain();
    assert_eq!(
        seen,
        vec![
            json!({"type":"sync","value":{"users":{ &pid_b: {"name":"Bob","online":true,"score":0}}}})
        ]
    );
    assert_eq!(a.mirror().state(), b.mirror().state());
}

#[tokio::test(start_paused = true)]
async fn actions_sync_to_every_client_and_bad_messages_change_nothing() {
    let room = TestRoom::new::<Lobby>("lobby-1");
    let mut a = room.connect(Some("a")).await;
    let mut b = room.connect(Some("b")).await;
    room.settle().await;
    a.drain();
    b.drain();
    for bad in [
        "not json",
        "[]",
        "null",
        "42",
        "{}",
        r#"{"action":1}"#,
        r#"{"action":"nope","value":1}"#,
        r#"{"action":"add","value":"x"}"#,
        r#"{"action":"add"}"#,
        r#"["add", 1]"#,
        r#"{"action":"rename","value":{"name":"x"}}"#,
        r#"{"action":"rename","value":["abc"]}"#,
        r#"{"action":"add","value":1"#,
        r#"{"action":"panic"}"#,
    ] {
        a.send_raw(bad).await;
    }
    let huge = format!(
        r#"{{"action":"add","value":1,"pad":"{}"}}"#,
        "x".repeat(70_000)
    );
    a.send_raw(huge).await;
    room.settle().await;
    assert!(a.drain().is_empty(), "rejected messages send nothing");
    assert!(a.closed().is_none(), "the connection stays open");

    // One at a time (messages that wait in the mailbox together are flushed as one patch,
    // see `batched_messages_become_one_patch`).
    a.send("add", json!(5)).await;
    room.settle().await;
    a.send("inc", Value::Null).await;
    room.settle().await;
    assert_eq!(
        sync_values(&b.drain()),
        vec![json!({"count":5}), json!({"count":6})]
    );
    assert_eq!(
        sync_values(&a.drain()),
        vec![json!({"count":5}), json!({"count":6})]
    );

    a.send("rename", json!({"name": "Alice"})).await;
    room.settle().await;
    let pid = a.pid().unwrap().to_owned();
    assert_eq!(
        sync_values(&b.drain()),
        vec![json!({"users":{ &pid: {"name":"Alice"}}})]
    );

    // Server-only fields never reach clients.
    a.send("secret", json!(42)).await;
    room.settle().await;
    assert!(b.drain().is_empty());
}

#[tokio::test(start_paused = true)]
async fn send_goes_to_the_sender_and_broadcast_to_everyone() {
    let room = TestRoom::new::<Lobby>("lobby-1");
    let mut a = room.connect(Some("a")).await;
    let mut b = room.connect(Some("b")).await;
    room.settle().await;
    a.drain();
    b.drain();
    a.send("echo", json!({"n":1})).await;
    a.send("shout", json!("hi")).await;
    room.settle().await;
    assert_eq!(
        a.drain(),
        vec![
            json!({"type":"echo","value":{"n":1}}),
            json!({"hello":"hi"})
        ]
    );
    assert_eq!(b.drain(), vec![json!({"hello":"hi"})]);
}

#[tokio::test(start_paused = true)]
async fn reconnect_restores_the_same_user_and_tabs_share_a_session() {
    let room = TestRoom::new::<Lobby>("lobby-1");
    let mut watcher = room.connect(Some("w")).await;
    let mut tab1 = room.connect(Some("s")).await;
    let mut tab2 = room.connect(Some("s")).await;
    room.settle().await;
    tab1.drain();
    tab2.drain();
    watcher.drain();
    let pid = tab1.pid().unwrap().to_owned();
    assert_eq!(
        tab2.pid(),
        Some(pid.as_str()),
        "same session, same public id"
    );
    tab1.send("score", Value::Null).await;
    room.settle().await;
    watcher.drain();

    tab1.close().await;
    room.settle().await;
    assert!(watcher.drain().is_empty(), "another tab is still open");

    tab2.close().await;
    room.settle().await;
    assert_eq!(
        sync_values(&watcher.drain()),
        vec![json!({"users":{ &pid: {"online": false}}})]
    );

    tokio::time::advance(Duration::from_millis(100)).await;
    let mut back = room.connect(Some("s")).await;
    room.settle().await;
    back.drain();
    assert_eq!(back.pid(), Some(pid.as_str()));
    assert_eq!(back.mirror().state()["users"][&pid]["score"], 1);
    assert_eq!(back.mirror().state()["users"][&pid]["online"], true);
    assert_eq!(
        sync_values(&watcher.drain()),
        vec![json!({"users":{ &pid: {"online": true}}})]
    );
}

#[tokio::test(start_paused = true)]
async fn sessions_expire_and_remove_the_user() {
    let room = TestRoom::new::<Lobby>("lobby-1");
    let mut watcher = room.connect(Some("w")).await;
    let gone = room.connect(Some("g")).await;
    room.settle().await;
    let pid = {
        let mut g = gone;
        g.drain();
        let pid = g.pid().unwrap().to_owned();
        g.close().await;
        pid
    };
    room.settle().await;
    watcher.drain();
    tokio::time::advance(Duration::from_millis(299)).await;
    room.settle().await;
    assert!(watcher.drain().is_empty(), "not expired yet");
    tokio::time::advance(Duration::from_millis(2)).await;
    room.settle().await;
    assert_eq!(
        sync_values(&watcher.drain()),
        vec![json!({"users":{ &pid: "$delete"}})]
    );
    // The session is gone: the same id now gets a new public id.
    let mut again = room.connect(Some("g")).await;
    room.settle().await;
    again.drain();
    assert_ne!(again.pid(), Some(pid.as_str()));
}

#[tokio::test(start_paused = true)]
async fn a_client_that_does_not_read_is_closed_not_buffered() {
    #[derive(State, Default, Clone)]
    struct Chatty {
        n: i64,
    }
    impl Room for Chatty {
        fn config() -> RoomConfig {
            RoomConfig::new("chatty").outgoing_queue(4)
        }
        fn handlers(h: &mut Handlers<Self>) {
            h.action("inc", |r: &mut Self, _cx, ()| r.n += 1);
        }
    }
    let room = TestRoom::new::<Chatty>("chatty");
    let mut reader = room.connect(None).await;
    let mut stalled = room.connect(None).await;
    for _ in 0..10 {
        reader.send("inc", Value::Null).await;
        room.settle().await;
        reader.drain();
    }
    let close = stalled.closed().expect("the stalled client was closed");
    assert_eq!(close.code, 1013);
    // It was dropped from the room: the others keep working.
    reader.send("inc", Value::Null).await;
    room.settle().await;
    assert_eq!(sync_values(&reader.drain()), vec![json!({"n": 11})]);
    drop(stalled);
}

#[tokio::test(start_paused = true)]
async fn throttled_sync_sends_the_leading_edge_then_one_merged_patch() {
    #[derive(State, Default, Clone)]
    struct Fast {
        a: i64,
        b: i64,
    }
    impl Room for Fast {
        fn config() -> RoomConfig {
            // One patch per message, as the original's spec 6.8 example (each change is
            // flushed on its own before the throttle merges them).
            RoomConfig::new("fast")
                .throttle_sync(Duration::from_millis(50))
                .batch_messages(1)
        }
        fn handlers(h: &mut Handlers<Self>) {
            h.action(
                "set",
                |r: &mut Self, _cx, Json((k, v)): Json<(String, i64)>| {
                    if k == "a" { r.a = v } else { r.b = v }
                },
            );
        }
    }
    let room = TestRoom::new::<Fast>("fast");
    let mut c = room.connect(None).await;
    room.settle().await;
    c.drain();
    for (k, v) in [("a", 1), ("a", 2), ("b", 3), ("a", 4)] {
        c.send("set", json!([k, v])).await;
    }
    room.settle().await;
    assert_eq!(sync_values(&c.drain()), vec![json!({"a":1})]);
    tokio::time::advance(Duration::from_millis(51)).await;
    room.settle().await;
    assert_eq!(sync_values(&c.drain()), vec![json!({"a":4,"b":3})]);
}

#[tokio::test(start_paused = true)]
async fn max_users_is_enforced_and_http_routes_answer() {
    #[derive(State, Default, Clone)]
    struct Small {
        #[state(users)]
        users: StateMap<Player>,
    }
    impl Room for Small {
        fn config() -> RoomConfig {
            RoomConfig::new("small").max_users(2)
        }
        fn handlers(_: &mut Handlers<Self>) {}
    }
    let room = TestRoom::new::<Small>("small");
    let _a = room.connect(Some("a")).await;
    let _b = room.connect(Some("b")).await;
    assert!(room.connect_with(Some("c"), &[]).await.is_err());
    // An existing session may still open another tab.
    assert!(room.connect_with(Some("a"), &[]).await.is_ok());

    let lobby = TestRoom::new::<Lobby>("lobby-9");
    let r = lobby
        .request(RoomRequest::new(http::Method::GET, "/count"))
        .await;
    assert_eq!(r.json_body(), Some(json!(0)));
    let r = lobby
        .request(RoomRequest::new(http::Method::GET, "/countXYZ"))
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json_body(), Some(json!({"error":"Not found"})));
    let r = lobby
        .request(RoomRequest::new(http::Method::POST, "/count"))
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test(start_paused = true)]
async fn guards_run_in_order_and_the_fallback_catches_unknown_actions() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    static ROOM_GUARD: AtomicUsize = AtomicUsize::new(0);
    static ACTION_GUARD: AtomicUsize = AtomicUsize::new(0);

    #[derive(State, Default, Clone)]
    struct Guarded {
        count: i64,
        locked: bool,
        unhandled: Vec<String>,
    }
    impl Room for Guarded {
        fn config() -> RoomConfig {
            RoomConfig::new("guarded")
        }
        fn handlers(h: &mut Handlers<Self>) {
            h.message_guard(|room: &Self, _cx, _v| {
                ROOM_GUARD.fetch_add(1, Ordering::SeqCst);
                !room.locked
            })
            .action("lock", |r: &mut Self, _cx, ()| r.locked = true)
            .action("add", |r: &mut Self, _cx, Json(n): Json<i64>| r.count += n)
            .action_guard("add", |_r: &Self, _cx, v| {
                ACTION_GUARD.fetch_add(1, Ordering::SeqCst);
                v.as_i64().is_some_and(|n| n > 0)
            })
            .action_guard("add", |_r: &Self, cx, _v| cx.user_id().is_some())
            .fallback(|r: &mut Self, _cx, action, value| {
                r.unhandled.push(format!("{action}:{value}"));
            })
            .fallback_guard(|_r: &Self, _cx, call| call["action"] != "forbidden");
        }
    }
    let room = TestRoom::new::<Guarded>("guarded");
    let mut c = room.connect(None).await;
    room.settle().await;
    c.drain();

    c.send("add", json!(2)).await; // both guards pass
    c.send("add", json!(-1)).await; // first action guard refuses
    c.send("mystery", json!({"a": 1})).await; // fallback
    c.send("forbidden", json!(1)).await; // fallback guard refuses
    room.settle().await;
    assert_eq!(c.mirror().state()["count"], 0, "not drained yet");
    c.drain();
    assert_eq!(c.mirror().state()["count"], 2);
    assert_eq!(
        c.mirror().state()["unhandled"],
        json!(["mystery:{\"a\":1}"])
    );
    assert_eq!(
        ROOM_GUARD.load(Ordering::SeqCst),
        4,
        "room guard runs for every message"
    );
    assert_eq!(ACTION_GUARD.load(Ordering::SeqCst), 2);

    // A failing room guard stops everything before the action guards run.
    c.send("lock", Value::Null).await;
    c.send("add", json!(5)).await;
    room.settle().await;
    c.drain();
    assert_eq!(c.mirror().state()["count"], 2);
    assert_eq!(ACTION_GUARD.load(Ordering::SeqCst), 2);
}

/// A counter whose `note` action also broadcasts a message.
#[derive(State, Default, Clone)]
struct Counter {
    n: i64,
    log: Vec<i64>,
}

impl Room for Counter {
    fn config() -> RoomConfig {
        RoomConfig::new("batched-{id}")
    }
    fn handlers(h: &mut Handlers<Self>) {
        h.action("add", |r: &mut Self, _cx, Json(v): Json<i64>| r.n += v)
            .action("note", |r: &mut Self, cx, Json(v): Json<i64>| {
                r.log.push(v);
                cx.broadcast(&json!({"noted": v}));
            });
    }
}

/// A client with its first packet read, then `actions` sent at once (waiting together in the
/// room's mailbox); returns the frames it got for them.
async fn frames_for_burst(room: &TestRoom, actions: &[(&str, i64)]) -> Vec<Value> {
    let mut c = room.connect(None).await;
    room.settle().await;
    c.drain();
    for (action, v) in actions {
        c.send(action, json!(v)).await;
    }
    room.settle().await;
    c.drain()
}

#[tokio::test(start_paused = true)]
async fn batched_messages_become_one_patch() {
    let room = TestRoom::new::<Counter>("batched-1");
    // Three messages waiting together: handled in order, flushed once.
    let frames = frames_for_burst(&room, &[("add", 1), ("add", 2), ("add", 3)]).await;
    assert_eq!(sync_values(&frames), vec![json!({"n": 6})]);

    // A handler that sends a message flushes the changes made before it first, so the
    // message never overtakes the state it follows.
    let frames = frames_for_burst(&room, &[("add", 10), ("note", 7), ("add", 100)]).await;
    assert_eq!(
        frames,
        vec![
            json!({"type": "sync", "value": {"n": 16, "log": [7]}}),
            json!({"noted": 7}),
            json!({"type": "sync", "value": {"n": 116}}),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn batching_can_be_turned_off() {
    let rooms = partyroom_room::Rooms::builder()
        .room_with::<Counter>("main", RoomConfig::new("one").batch_messages(1))
        .unwrap()
        .build();
    let room = TestRoom::from_rooms(rooms, "main", "one");
    let frames = frames_for_burst(&room, &[("add", 1), ("add", 2), ("add", 3)]).await;
    assert_eq!(
        sync_values(&frames),
        vec![json!({"n": 1}), json!({"n": 3}), json!({"n": 6})]
    );
}

#[tokio::test(start_paused = true)]
async fn joins_handled_together_share_one_patch_and_each_get_a_first_packet() {
    let room = TestRoom::new::<Lobby>("lobby-joins");
    let mut watcher = room.connect(Some("w")).await;
    room.settle().await;
    watcher.drain();
    let (a, b, c) = tokio::join!(
        room.connect(Some("a")),
        room.connect(Some("b")),
        room.connect(Some("c"))
    );
    room.settle().await;
    let mut joined = [a, b, c];
    for client in &mut joined {
        let frames = client.drain();
        // The first frame is the first packet (pId and the full state), whatever came after.
        assert_eq!(frames[0]["type"], "sync");
        assert_eq!(frames[0]["value"]["pId"], client.pid().unwrap());
    }
    let patches = sync_values(&watcher.drain());
    assert!(
        (1..=3).contains(&patches.len()),
        "at most one patch per join: {patches:?}"
    );
    // Every client ends with the same state: four users, all online.
    let expected = watcher.mirror().state().clone();
    assert_eq!(expected["users"].as_object().unwrap().len(), 4);
    for client in &joined {
        assert_eq!(client.mirror().state(), &expected);
    }
}
