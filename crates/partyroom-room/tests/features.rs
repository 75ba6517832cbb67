//! Interception, manual sync, session transfer and room-to-room requests.

use partyroom_room::testing::sync_values as syncs;
use std::time::Duration;

use http::Method;
use partyroom_room::testing::TestRoom;
use partyroom_room::{Handlers, Intercept, Json, Room, RoomConfig, RoomRequest, Rooms};
use partyroom_state::{State, StateMap};
use serde_json::{Value, json};

#[derive(State, Default, Clone, Debug)]
struct Member {
    name: String,
    #[state(connected)]
    online: bool,
    items: Vec<String>,
}

#[derive(State, Default, Clone, Debug)]
struct Hall {
    count: i64,
    secret_note: String,
    from_other: i64,
    #[state(users)]
    members: StateMap<Member>,
}

impl Room for Hall {
    fn config() -> RoomConfig {
        RoomConfig::new("hall-{n}").transfer_expiry(Duration::from_secs(5))
    }
    fn handlers(h: &mut Handlers<Self>) {
        h.action("inc", |r: &mut Self, _cx, ()| r.count += 1)
            .action("name", |r: &mut Self, cx, Json(n): Json<String>| {
                let id = cx.user_id().unwrap().to_owned();
                r.members.get_mut(&id).unwrap().name = n;
            })
            .action("pick", |r: &mut Self, cx, Json(item): Json<String>| {
                let id = cx.user_id().unwrap().to_owned();
                r.members.get_mut(&id).unwrap().items.push(item);
            })
            .action("manual", |_r: &mut Self, cx, Json(on): Json<bool>| {
                cx.set_auto_sync(!on)
            })
            .action("apply", |_r: &mut Self, cx, ()| cx.apply_sync())
            .action("move_to", |_r: &mut Self, cx, Json(room): Json<String>| {
                let token = cx.transfer_session(&room).expect("target exists");
                cx.send(&json!({"type": "transfer", "value": token}));
            })
            .action(
                "ask_other",
                |_r: &mut Self, cx, Json(room): Json<String>| {
                    // Room-to-room: ask another room over HTTP in a task, then come back.
                    let rooms = cx.rooms().clone();
                    let me = cx.handle().clone();
                    tokio::spawn(async move {
                        let response = rooms
                            .request("main", &room, RoomRequest::new(Method::GET, "/count"))
                            .await
                            .unwrap();
                        let n = response.json_body().and_then(|v| v.as_i64()).unwrap_or(-1);
                        me.update(move |hall: &mut Hall, _cx| hall.from_other = n)
                            .await
                            .unwrap();
                    });
                },
            )
            .get("/count", |r: &Self, _cx| Json(r.count))
            .on_session_restore(|_id, user| {
                if let Some(items) = user.get_mut("items").and_then(Value::as_array_mut) {
                    items.push(json!("welcome-gift"));
                }
            })
            // Only the member named "admin" sees the note; others get it removed; everyone
            // else's packets pass unchanged.
            .intercept(|hall: &Self, conn, packet| {
                let is_admin = hall
                    .members
                    .get(&conn.public_id)
                    .is_some_and(|m| m.name == "admin");
                if packet["value"].get("secret_note").is_some() && !is_admin {
                    let mut p = packet.clone();
                    p["value"].as_object_mut().unwrap().remove("secret_note");
                    if p["value"].as_object().unwrap().is_empty() {
                        return Intercept::Drop;
                    }
                    return Intercept::Replace(p);
                }
                Intercept::Keep
            });
    }
}

#[tokio::test(start_paused = true)]
async fn the_interceptor_rewrites_or_drops_per_connection_including_the_first_packet() {
    let room = TestRoom::new::<Hall>("hall-1");
    let mut admin = room.connect(Some("a")).await;
    admin.send("name", json!("admin")).await;
    let mut guest = room.connect(Some("g")).await;
    room.settle().await;
    let first = guest.drain();
    assert!(first[0]["value"].get("pId").is_some());
    assert!(
        first[0]["value"].get("secret_note").is_none(),
        "first packet intercepted too"
    );
    admin.drain();

    // A state change of secret_note alone: the guest's copy is dropped.
    room.handle()
        .update(|hall: &mut Hall, _cx| hall.secret_note = "cake in the fridge".into())
        .await
        .unwrap();
    room.settle().await;
    assert_eq!(
        syncs(&admin.drain()),
        vec![json!({"secret_note": "cake in the fridge"})]
    );
    assert!(guest.drain().is_empty());

    // Mixed: the guest gets the rest of the patch.
    room.handle()
        .update(|hall: &mut Hall, _cx| {
            hall.secret_note = "moved".into();
            hall.count = 5;
        })
        .await
        .unwrap();
    room.settle().await;
    assert_eq!(syncs(&guest.drain()), vec![json!({"count": 5})]);
    assert_eq!(
        syncs(&admin.drain()),
        vec![json!({"count": 5, "secret_note": "moved"})]
    );
}

#[tokio::test(start_paused = true)]
async fn manual_sync_holds_changes_until_applied_and_releases_waiting_clients() {
    let room = TestRoom::new::<Hall>("hall-2");
    let mut a = room.connect(Some("a")).await;
    room.settle().await;
    a.drain();
    a.send("manual", json!(true)).await;
    a.send("inc", Value::Null).await;
    a.send("inc", Value::Null).await;
    let mut late = room.connect(Some("late")).await;
    room.settle().await;
    assert!(
        a.drain().is_empty(),
        "nothing is sent while auto sync is off"
    );
    assert!(
        late.drain().is_empty(),
        "a client joining meanwhile waits for its first packet"
    );

    a.send("apply", Value::Null).await;
    room.settle().await;
    let got = syncs(&a.drain());
    assert_eq!(got.len(), 1, "one packet with everything pending: {got:?}");
    assert_eq!(got[0]["count"], 2);
    let first = late.drain();
    assert_eq!(first.len(), 1);
    assert!(first[0]["value"]["pId"].is_string());
    assert_eq!(
        first[0]["value"]["count"], 2,
        "the waiting client gets the full state"
    );

    // Switching auto sync back on sends what waited.
    a.send("inc", Value::Null).await;
    room.settle().await;
    assert!(a.drain().is_empty());
    a.send("manual", json!(false)).await;
    room.settle().await;
    assert_eq!(syncs(&a.drain()), vec![json!({"count": 3})]);
}

#[tokio::test(start_paused = true)]
async fn a_session_moves_to_another_room_with_a_single_use_token() {
    let rooms = Rooms::builder()
        .room::<Hall>("main")
        .unwrap()
        .seed(1)
        .build();
    let source = TestRoom::from_rooms(rooms.clone(), "main", "hall-src");
    let target = TestRoom::from_rooms(rooms.clone(), "main", "hall-dst");
    let mut c = source.connect(Some("private-1")).await;
    c.send("name", json!("Alice")).await;
    c.send("pick", json!("sword")).await;
    source.settle().await;
    c.drain();
    let pid = c.pid().unwrap().to_owned();
    c.send("move_to", json!("hall-dst")).await;
    let token = loop {
        let f = c.recv().await.unwrap();
        if f["type"] == "transfer" {
            break f["value"].as_str().unwrap().to_owned();
        }
    };
    assert_eq!(token.len(), 32, "128-bit token");
    target.settle().await;

    // Connect with the token and a different session id: the transferred session is adopted.
    let mut moved = target
        .connect_with(Some("other-device"), &[("transferToken", &token)])
        .await
        .unwrap();
    target.settle().await;
    moved.drain();
    assert_eq!(moved.pid(), Some(pid.as_str()));
    let me = &moved.mirror().state()["members"][&pid];
    assert_eq!(me["name"], "Alice");
    assert_eq!(
        me["items"],
        json!(["sword", "welcome-gift"]),
        "on_session_restore ran"
    );
    assert_eq!(me["online"], true);

    // Single use: the same token again gives a new user.
    let mut again = target
        .connect_with(Some("third"), &[("transferToken", &token)])
        .await
        .unwrap();
    target.settle().await;
    again.drain();
    assert_ne!(again.pid(), Some(pid.as_str()));

    // Expired tokens are ignored.
    c.send("move_to", json!("hall-dst")).await;
    let late_token = loop {
        let f = c.recv().await.unwrap();
        if f["type"] == "transfer" {
            break f["value"].as_str().unwrap().to_owned();
        }
    };
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut expired = target
        .connect_with(Some("fourth"), &[("transferToken", &late_token)])
        .await
        .unwrap();
    target.settle().await;
    expired.drain();
    assert_ne!(expired.pid(), Some(pid.as_str()));
}

#[tokio::test(start_paused = true)]
async fn rooms_reach_other_rooms_from_spawned_tasks() {
    let rooms = Rooms::builder().room::<Hall>("main").unwrap().build();
    let here = TestRoom::from_rooms(rooms.clone(), "main", "hall-a");
    let there = TestRoom::from_rooms(rooms.clone(), "main", "hall-b");
    let t = there.connect(None).await;
    for _ in 0..3 {
        t.send("inc", Value::Null).await;
    }
    there.settle().await;
    let mut c = here.connect(None).await;
    c.send("ask_other", json!("hall-b")).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        here.settle().await;
        c.drain();
        if c.mirror().state()["from_other"] == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the answer came back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
