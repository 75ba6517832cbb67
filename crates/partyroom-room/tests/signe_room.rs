//! Port of `@signe/room`'s `tests/room/room.spec.ts` (spec section 15, checklist items 1–30)
//! to partyroom's in-process harness.
//!
//! The original passes `(user, conn, ctx)` to hooks and `(conn, value, room)` to guards; in
//! partyroom every hook and guard gets the room state and a context (`Cx`, `ConnectInfo`) from
//! which the same things are reached: the user through `cx.user_id()`, the connection through
//! `cx.conn()`, the connect request through `cx.query()` / `ConnInfo::headers`. What a hook or
//! guard saw is recorded in a `Probe` (a shared log kept in a `#[state(skip)]` field).

use partyroom_room::testing::sync_values as syncs;
use std::sync::{Arc, Mutex};

use http::{HeaderMap, HeaderValue};
use partyroom_room::testing::TestRoom;
use partyroom_room::{ConnectError, Handlers, Refusal, Room, RoomConfig, Valid};
use partyroom_state::{State, StateMap};
use serde_json::{Value, json};

/// A log shared by the room's handlers and the test (not state: `#[state(skip)]`).
#[derive(Clone, Default, Debug)]
struct Probe(Arc<Mutex<Vec<Value>>>);

impl Probe {
    fn push(&self, v: Value) {
        self.0.lock().unwrap().push(v);
    }
    fn all(&self) -> Vec<Value> {
        self.0.lock().unwrap().clone()
    }
    fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
    /// Entries whose `key` field equals `value`.
    fn with(&self, key: &str, value: &str) -> Vec<Value> {
        self.all().into_iter().filter(|e| e[key] == value).collect()
    }
}

#[derive(State, Default, Clone, Debug)]
struct Player {
    name: String,
    #[state(connected)]
    connected: bool,
}

// ---------------------------------------------------------------------------------------------
// The basic room: hooks, actions, users
// ---------------------------------------------------------------------------------------------

#[derive(State, Default, Clone, Debug)]
struct Game {
    count: i64,
    #[state(users)]
    users: StateMap<Player>,
    #[state(skip)]
    probe: Probe,
}

impl Room for Game {
    fn config() -> RoomConfig {
        RoomConfig::new("game")
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.on_join(|room: &mut Self, cx| {
            let conn = cx.conn().expect("a connection joins");
            let user = room.users.get(&conn.public_id);
            room.probe.push(json!({
                "hook": "join",
                "conn": conn.id,
                "private": conn.private_id,
                "public": cx.user_id(),
                "user": user.is_some(),
                "connected": user.map(|u| u.connected),
                "query": cx.query("name"),
                "header": conn.headers.get("x-token").and_then(|v| v.to_str().ok()),
            }));
        })
        .on_leave(|room: &mut Self, cx| {
            let conn = cx.conn().expect("a connection leaves");
            let user = room.users.get(&conn.public_id);
            room.probe.push(json!({
                "hook": "leave",
                "conn": conn.id,
                "public": cx.user_id(),
                "user": user.is_some(),
                "connected": user.map(|u| u.connected),
            }));
        })
        .action("increment", |room: &mut Self, _cx, ()| room.count += 1)
        .action("reset_users", |room: &mut Self, _cx, ()| {
            room.users = StateMap::new();
        });
    }
}

async fn probe_of(room: &TestRoom) -> Probe {
    room.handle()
        .update(|r: &mut Game, _cx| r.probe.clone())
        .await
        .unwrap()
}

async fn count_of(room: &TestRoom) -> i64 {
    room.handle()
        .update(|r: &mut Game, _cx| r.count)
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_room_instance_exists_after_start() {
    // checklist 1
    let room = TestRoom::new::<Game>("game");
    room.settle().await;
    assert!(room.is_loaded(), "the registry holds a live instance");
    assert_eq!(room.handle().id(), "game");
    assert_eq!(count_of(&room).await, 0);
}

#[tokio::test(start_paused = true)]
async fn connect_sets_the_ids_sends_a_sync_packet_and_calls_on_join() {
    // checklist 2, 3, 9
    // 3 differs in form: `on_join(room, cx)` instead of `onJoin(user, conn, ctx)`. The user is
    // `room.users[cx.user_id()]` (already created), the connection is `cx.conn()`, and the
    // connect request (the original's `ctx`) is reached unchanged through `cx.query()` and the
    // connection's headers.
    let room = TestRoom::new::<Game>("game");
    let probe = probe_of(&room).await;
    let mut headers = HeaderMap::new();
    headers.insert("x-token", HeaderValue::from_static("abc"));
    let mut c = room
        .connect_with_headers(Some("sess-1"), &[("name", "Ann")], headers)
        .await
        .unwrap();
    room.settle().await;
    let frames = c.drain();
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["type"], "sync");
    let pid = c.pid().expect("pId in the first packet").to_owned();
    assert_eq!(pid.len(), 8);

    let joins = probe.with("hook", "join");
    assert_eq!(
        joins,
        vec![json!({
            "hook": "join",
            "conn": c.id(),
            "private": "sess-1",
            "public": pid,
            "user": true,
            "connected": true,
            "query": "Ann",
            "header": "abc",
        })]
    );
    // 9: one connection, one user.
    let users = room
        .handle()
        .update(|r: &mut Game, _cx| r.users.keys().map(str::to_owned).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(users, vec![pid]);
}

#[tokio::test(start_paused = true)]
async fn closing_calls_on_leave_with_the_user_of_the_public_id() {
    // checklist 4, 6
    // `on_leave(room, cx)`: the user is `room.users[cx.user_id()]`, the connection `cx.conn()`.
    let room = TestRoom::new::<Game>("game");
    let probe = probe_of(&room).await;
    let mut c = room.connect(Some("sess-1")).await;
    room.settle().await;
    c.drain();
    let pid = c.pid().unwrap().to_owned();
    let conn = c.id();
    assert!(probe.with("hook", "leave").is_empty());
    c.close().await;
    room.settle().await;
    assert_eq!(
        probe.with("hook", "leave"),
        vec![
            json!({"hook": "leave", "conn": conn, "public": pid, "user": true, "connected": false})
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn actions_run_for_every_connection() {
    // checklist 5, 11
    let room = TestRoom::new::<Game>("game");
    let mut a = room.connect(None).await;
    let mut b = room.connect(None).await;
    room.settle().await;
    a.drain();
    b.drain();
    a.send_raw(r#"{"action":"increment","value":null}"#).await;
    room.settle().await;
    assert_eq!(count_of(&room).await, 1);
    b.send_raw(r#"{"action":"increment","value":null}"#).await;
    room.settle().await;
    assert_eq!(count_of(&room).await, 2);
    for c in [&mut a, &mut b] {
        assert_eq!(
            syncs(&c.drain()),
            vec![json!({"count": 1}), json!({"count": 2})]
        );
    }
}

#[tokio::test(start_paused = true)]
async fn bad_and_unknown_messages_are_ignored() {
    // checklist 7, 8
    let room = TestRoom::new::<Game>("game");
    let mut c = room.connect(None).await;
    room.settle().await;
    c.drain();
    c.send_raw("not json").await;
    c.send_raw(r#"{"action":"unknown","value":1}"#).await;
    room.settle().await;
    assert!(c.drain().is_empty(), "nothing is sent back");
    assert!(c.closed().is_none(), "the connection stays open");
    assert_eq!(count_of(&room).await, 0);
    // The room still works.
    c.send("increment", Value::Null).await;
    room.settle().await;
    assert_eq!(syncs(&c.drain()), vec![json!({"count": 1})]);
}

#[tokio::test(start_paused = true)]
async fn emptying_the_users_collection_reaches_every_client() {
    // checklist 10
    // Different: the original sends `{"users":{}}`, which a deep-merging client ignores (its
    // users stay). partyroom sends `"$delete"` for every removed user, so clients really end
    // up with an empty collection.
    let room = TestRoom::new::<Game>("game");
    let mut a = room.connect(Some("a")).await;
    let mut b = room.connect(Some("b")).await;
    room.settle().await;
    a.drain();
    b.drain();
    let (pa, pb) = (a.pid().unwrap().to_owned(), b.pid().unwrap().to_owned());
    a.send("reset_users", Value::Null).await;
    room.settle().await;
    for c in [&mut a, &mut b] {
        assert_eq!(
            syncs(&c.drain()),
            vec![json!({"users": {&pa: "$delete", &pb: "$delete"}})]
        );
        assert_eq!(c.mirror().state()["users"], json!({}));
    }
    let n = room
        .handle()
        .update(|r: &mut Game, _cx| r.users.len())
        .await
        .unwrap();
    assert_eq!(n, 0);
}

// ---------------------------------------------------------------------------------------------
// Guards
// ---------------------------------------------------------------------------------------------

#[derive(State, Default, Clone, Debug)]
struct Guarded {
    count: i64,
    #[state(users)]
    users: StateMap<Player>,
    #[state(skip)]
    probe: Probe,
}

fn guard(
    name: &'static str,
    pass: bool,
) -> impl Fn(&Guarded, &partyroom_room::Cx<'_>, &Value) -> bool {
    move |room: &Guarded, _cx, _v| {
        room.probe.push(json!({"guard": name}));
        pass
    }
}

impl Room for Guarded {
    fn config() -> RoomConfig {
        RoomConfig::new("guarded-{n}")
    }

    fn handlers(h: &mut Handlers<Self>) {
        // The original's `@Room({guards})` run on connect and on every message; partyroom
        // registers the two separately: `connect_guard` and `message_guard`.
        h.connect_guard(|room: &Self, info| {
            room.probe.push(json!({
                "guard": "room",
                "on": "connect",
                "session": info.session_id,
                "query": info.query("name"),
                "header": info.header("x-token"),
                "count": room.count,
            }));
            if info.query("deny").is_some() {
                Err(Refusal::forbidden("denied"))
            } else {
                Ok(())
            }
        })
        .message_guard(|room: &Self, cx, value| {
            room.probe.push(json!({
                "guard": "room",
                "on": "message",
                "public": cx.conn().map(|c| c.public_id.clone()),
                "value": value,
                "room": cx.room_id(),
            }));
            value != &json!("deny")
        })
        .on_join(|room: &mut Self, cx| {
            room.probe
                .push(json!({"hook": "join", "public": cx.user_id()}))
        })
        .action("inc", |r: &mut Self, _cx, _v: Value| r.count += 1)
        .action_guard("inc", guard("inc", true))
        .action("all_pass", |r: &mut Self, _cx, ()| r.count += 1)
        .action_guard("all_pass", guard("a1", true))
        .action_guard("all_pass", guard("a2", true))
        .action("one_fails", |r: &mut Self, _cx, ()| r.count += 100)
        .action_guard("one_fails", guard("b1", true))
        .action_guard("one_fails", guard("b2", false))
        .action_guard("one_fails", guard("b3", true))
        .action("single", |r: &mut Self, _cx, ()| r.count += 10)
        .action_guard("single", guard("s", true))
        .action("single_fail", |r: &mut Self, _cx, ()| r.count += 1000)
        .action_guard("single_fail", guard("f", false))
        .action("inspect", |_r: &mut Self, _cx, _v: Value| {})
        .action_guard("inspect", |room: &Self, cx, value| {
            room.probe.push(json!({
                "guard": "inspect",
                "conn": cx.conn().map(|c| c.id),
                "public": cx.user_id(),
                "value": value,
                "room": cx.room_id(),
            }));
            true
        });
    }
}

async fn guarded(id: &str) -> (TestRoom, Probe) {
    let room = TestRoom::new::<Guarded>(id);
    let probe = room
        .handle()
        .update(|r: &mut Guarded, _cx| r.probe.clone())
        .await
        .unwrap();
    (room, probe)
}

async fn guarded_count(room: &TestRoom) -> i64 {
    room.handle()
        .update(|r: &mut Guarded, _cx| r.count)
        .await
        .unwrap()
}

/// Names of the action guards called (room guards and hooks left out).
fn action_guards(probe: &Probe) -> Vec<String> {
    probe
        .all()
        .into_iter()
        .filter(|e| e["guard"].is_string() && e["guard"] != "room")
        .map(|e| e["guard"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn action_guards_all_pass_then_one_fails() {
    // checklist 12, 13
    let (room, probe) = guarded("guarded-1").await;
    let c = room.connect(None).await;
    c.send("all_pass", Value::Null).await;
    room.settle().await;
    assert_eq!(action_guards(&probe), vec!["a1", "a2"]);
    assert_eq!(guarded_count(&room).await, 1);

    probe.clear();
    c.send("one_fails", Value::Null).await;
    room.settle().await;
    // The guard before the failing one and the failing one were called; the rest were not.
    assert_eq!(action_guards(&probe), vec!["b1", "b2"]);
    assert_eq!(guarded_count(&room).await, 1, "the action did not run");
}

#[tokio::test(start_paused = true)]
async fn a_single_guard_and_a_single_failing_guard() {
    // checklist 14, 15
    // `@Guard(fn)` vs `@Guard([fn])`: partyroom has one registration per guard
    // (`action_guard`), so a single guard is the ordinary case.
    let (room, probe) = guarded("guarded-1").await;
    let c = room.connect(None).await;
    c.send("single", Value::Null).await;
    room.settle().await;
    assert_eq!(
        action_guards(&probe),
        vec!["s"],
        "other actions' guards are not called"
    );
    assert_eq!(guarded_count(&room).await, 10);

    probe.clear();
    c.send("single_fail", Value::Null).await;
    room.settle().await;
    assert_eq!(action_guards(&probe), vec!["f"]);
    assert_eq!(guarded_count(&room).await, 10, "blocked");
}

#[tokio::test(start_paused = true)]
async fn action_guards_see_the_connection_the_value_and_the_room() {
    // checklist 16
    // `(conn, value, room)` becomes `(&room_state, cx, value)`: `cx.conn()` is the sender,
    // `cx.room_id()` the room id.
    let (room, probe) = guarded("guarded-7").await;
    let mut c = room.connect(None).await;
    room.settle().await;
    c.drain();
    c.send("inspect", json!({"x": 1})).await;
    room.settle().await;
    assert_eq!(
        probe.with("guard", "inspect"),
        vec![json!({
            "guard": "inspect",
            "conn": c.id(),
            "public": c.pid().unwrap(),
            "value": {"x": 1},
            "room": "guarded-7",
        })]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_connect_guard_refuses_before_anything_happens() {
    // checklist 24, 25
    // Different in form: the refused client gets an answer (`ConnectError::Refused`: an HTTP
    // 403 before the upgrade, or close code 4403), where the original just closes the socket.
    // As in the original, no hook runs and no session or user is created.
    let (room, probe) = guarded("guarded-1").await;
    let refused = room.connect_with(Some("s1"), &[("deny", "1")]).await;
    match refused {
        Err(ConnectError::Refused(r)) => assert_eq!(r.status, 403),
        other => panic!("expected a refusal, got {other:?}"),
    }
    room.settle().await;
    assert!(probe.with("hook", "join").is_empty(), "on_join not called");
    let users = room
        .handle()
        .update(|r: &mut Guarded, _cx| r.users.len())
        .await
        .unwrap();
    assert_eq!(users, 0);
    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    room.settle().await;
    assert!(room.stored().await.is_empty(), "no session stored");

    let mut ok = room.connect_with(Some("s2"), &[]).await.unwrap();
    room.settle().await;
    ok.drain();
    let pid = ok.pid().expect("connection set up").to_owned();
    assert_eq!(
        probe.with("hook", "join"),
        vec![json!({"hook": "join", "public": pid})]
    );
}

#[tokio::test(start_paused = true)]
async fn room_guards_run_again_for_every_message() {
    // checklist 26, 27
    // The same guard on connect and on messages is two registrations in partyroom; both log as
    // "room", so the call count matches the original's (2: the connect, then the message).
    let (room, probe) = guarded("guarded-1").await;
    let c = room.connect(None).await;
    c.send("inc", json!("deny")).await;
    room.settle().await;
    assert_eq!(probe.with("guard", "room").len(), 2);
    assert_eq!(guarded_count(&room).await, 0, "blocked by the room guard");

    let (room, probe) = guarded("guarded-2").await;
    let c = room.connect(None).await;
    c.send("inc", Value::Null).await;
    room.settle().await;
    assert_eq!(probe.with("guard", "room").len(), 2);
    assert_eq!(guarded_count(&room).await, 1, "passed");
}

#[tokio::test(start_paused = true)]
async fn room_guards_run_before_action_guards() {
    // checklist 28
    let (room, probe) = guarded("guarded-1").await;
    let c = room.connect(None).await;
    c.send("inc", json!("deny")).await;
    room.settle().await;
    assert!(
        probe.with("guard", "inc").is_empty(),
        "the action guard is never called"
    );
    c.send("inc", json!(1)).await;
    room.settle().await;
    let order: Vec<Value> = probe
        .all()
        .into_iter()
        .filter(|e| e["guard"].is_string())
        .map(|e| e["guard"].clone())
        .collect();
    assert_eq!(
        order,
        vec![json!("room"), json!("room"), json!("room"), json!("inc")]
    );
}

#[tokio::test(start_paused = true)]
async fn room_guard_arguments_on_connect_and_on_messages() {
    // checklist 29, 30
    // On connect the guard gets `(&room_state, &ConnectInfo)` (session id, query, headers: the
    // original's `ctx`); on a message it gets `(&room_state, cx, value)`, the message's value.
    let (room, probe) = guarded("guarded-3").await;
    let mut headers = HeaderMap::new();
    headers.insert("x-token", HeaderValue::from_static("t0k"));
    let mut c = room
        .connect_with_headers(Some("sess-9"), &[("name", "Ann")], headers)
        .await
        .unwrap();
    room.settle().await;
    c.drain();
    c.send("inc", json!({"v": 2})).await;
    room.settle().await;
    assert_eq!(
        probe.with("guard", "room"),
        vec![
            json!({"guard": "room", "on": "connect", "session": "sess-9", "query": "Ann", "header": "t0k", "count": 0}),
            json!({"guard": "room", "on": "message", "public": c.pid().unwrap(), "value": {"v": 2}, "room": "guarded-3"}),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Fallback (`@UnhandledAction`)
// ---------------------------------------------------------------------------------------------

#[derive(State, Default, Clone, Debug)]
struct Fallback {
    count: i64,
    #[state(users)]
    users: StateMap<Player>,
    #[state(skip)]
    probe: Probe,
}

impl Room for Fallback {
    fn config() -> RoomConfig {
        RoomConfig::new("fallback")
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.action("known", |r: &mut Self, _cx, ()| r.count += 1)
            .fallback(|r: &mut Self, cx, action, value| {
                r.probe.push(json!({
                    "fallback": action,
                    "value": value,
                    "user": cx.user_id(),
                    "conn": cx.conn().map(|c| c.id),
                }));
            })
            .fallback_guard(|r: &Self, cx, call| {
                r.probe.push(json!({"fallback_guard": call, "conn": cx.conn().map(|c| c.id), "room": cx.room_id()}));
                call["action"] != "blocked"
            });
    }
}

#[tokio::test(start_paused = true)]
async fn unknown_actions_go_to_the_fallback_registered_ones_win() {
    // checklist 17, 18, 19
    // The fallback gets `(room, cx, action, value)` (the original: `(user, {action, value},
    // conn)`); its guards get `{"action", "value"}` (`"value": null` when the message had none;
    // the original then passes just `{action}`).
    let room = TestRoom::new::<Fallback>("fallback");
    let probe = room
        .handle()
        .update(|r: &mut Fallback, _cx| r.probe.clone())
        .await
        .unwrap();
    let mut c = room.connect(None).await;
    room.settle().await;
    c.drain();
    let pid = c.pid().unwrap().to_owned();
    let conn = c.id();

    c.send("mystery", json!({"a": 1})).await;
    room.settle().await;
    assert_eq!(
        probe.all(),
        vec![
            json!({"fallback_guard": {"action": "mystery", "value": {"a": 1}}, "conn": conn, "room": "fallback"}),
            json!({"fallback": "mystery", "value": {"a": 1}, "user": pid, "conn": conn}),
        ]
    );

    // 18: a registered action is not sent to the fallback (nor to its guards).
    probe.clear();
    c.send("known", Value::Null).await;
    room.settle().await;
    assert!(probe.all().is_empty());
    assert_eq!(syncs(&c.drain()), vec![json!({"count": 1})]);

    // 19: a refusing fallback guard blocks the fallback.
    c.send("blocked", json!(5)).await;
    room.settle().await;
    assert_eq!(
        probe.all(),
        vec![
            json!({"fallback_guard": {"action": "blocked", "value": 5}, "conn": conn, "room": "fallback"})
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Schemas
// ---------------------------------------------------------------------------------------------

#[derive(serde::Deserialize, garde::Validate)]
struct Move {
    #[garde(skip)]
    x: i64,
    #[garde(skip)]
    y: i64,
}

#[derive(serde::Deserialize, garde::Validate)]
struct Rename {
    #[garde(length(min = 3))]
    name: String,
}

#[derive(State, Default, Clone, Debug)]
struct Schema {
    total: i64,
    name: String,
}

impl Room for Schema {
    fn config() -> RoomConfig {
        RoomConfig::new("schema")
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.action("move", |r: &mut Self, _cx, Valid(m): Valid<Move>| {
            r.total += m.x + m.y
        })
        .action("rename", |r: &mut Self, _cx, Valid(n): Valid<Rename>| {
            r.name = n.name
        });
    }
}

#[tokio::test(start_paused = true)]
async fn schema_validated_actions() {
    // checklist 20, 21, 22, 23
    // The schema is the input type (serde) plus `garde` rules (`Valid<T>`); invalid values are
    // dropped silently, as in the original.
    let room = TestRoom::new::<Schema>("schema");
    let mut c = room.connect(None).await;
    room.settle().await;
    c.drain();
    c.send("move", json!({"x": 10, "y": 20})).await;
    room.settle().await;
    assert_eq!(syncs(&c.drain()), vec![json!({"total": 30})]);

    c.send("move", json!({"x": "10", "y": 20})).await; // 21: wrong type
    c.send("move", json!({"x": 10})).await; // 22: missing field
    c.send("rename", json!({"name": "ab"})).await; // 23: shorter than the minimum
    room.settle().await;
    assert!(c.drain().is_empty(), "rejected silently");
    assert!(c.closed().is_none());

    c.send("rename", json!({"name": "abc"})).await;
    room.settle().await;
    assert_eq!(syncs(&c.drain()), vec![json!({"name": "abc"})]);
}
