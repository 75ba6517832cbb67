//! Property tests: random mutations of a room, flushed at random points.
//!
//! 1. A [`ClientMirror`] that starts from the initial `sync_snapshot()` and applies every
//!    flushed patch always equals `sync_snapshot()`.
//! 2. Storage: the persist snapshot loads back into a default state with the same persist
//!    snapshot, and an incremental row store (updated from `Dirty::rows` and
//!    `Tracker::persist_row` after every flush) reassembles into the persist snapshot.
//! 3. Patches merged while waiting (`can_merge` / `merge_patch`, sent separately where they
//!    cannot merge) give the same client state.
//!
//! The string `"$delete"` is never generated as data: it is the reserved deletion marker.

use std::collections::BTreeMap;

use partyroom_state::patch::{can_merge, merge_patch};
use partyroom_state::{ClientMirror, State, StateMap, Tracked, Tracker, load_into};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------------------------
// State under test
// ---------------------------------------------------------------------------------------------

#[derive(State, Default, Clone, Debug, PartialEq)]
struct Pos {
    x: i64,
    y: f64,
    label: String,
}

#[derive(State, Default, Clone, Debug)]
struct User {
    name: String,
    score: i64,
    #[state(connected)]
    online: bool,
    inventory: StateMap<i32>,
    #[state(persist = false)]
    typing: bool,
    #[state(sync = false)]
    secret: String,
}

/// What clients see of `level`: changes shape (null, number, objects with different keys).
fn level_view(level: &i64) -> Value {
    if *level < 0 {
        Value::Null
    } else if level % 3 == 0 {
        json!({"lvl": level, "max": true})
    } else if level % 3 == 1 {
        json!({"lvl": level})
    } else {
        json!(level.saturating_mul(10))
    }
}

#[derive(State, Default, Clone, Debug)]
struct Room {
    count: i64,
    ratio: f64,
    title: String,
    open: bool,
    pos: Pos,
    target: Option<Pos>,
    list: Vec<i32>,
    #[state(users)]
    users: StateMap<User>,
    #[state(transform = level_view)]
    level: i64,
    #[state(persist = false)]
    tick: u32,
    #[state(sync = false)]
    seed: u64,
}

// ---------------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------------

type Key = &'static str;

#[derive(Debug, Clone)]
enum Op {
    Count(i64),
    Ratio(f64),
    Title(String),
    Open(bool),
    Level(i64),
    Tick(u32),
    Seed(u64),
    PosX(i64),
    PosY(f64),
    PosLabel(String),
    PosReplace(Pos),
    TargetSet(Pos),
    TargetClear,
    TargetX(i64),
    ListPush(Vec<i32>),
    ListRemove(usize),
    ListTruncate(usize),
    ListClear,
    ListSet(Vec<i32>),
    ListElem(usize, i32),
    UserInsert(Key, User),
    UserReplace(Key, User),
    UserGetOrInsert(Key, i64),
    UserRemove(Key),
    UserName(Key, String),
    UserScore(Key, i64),
    UserOnline(Key, bool),
    UserTyping(Key, bool),
    UserSecret(Key, String),
    UserTouch(Key),
    UsersBumpAll,
    UsersRetainBefore(Key),
    UsersClear,
    UsersReplace(Vec<(Key, User)>),
    InvInsert(Key, Key, i32),
    InvRemove(Key, Key),
    InvReplace(Key, Vec<(Key, i32)>),
    Load(Value),
    CloneRoom,
    /// Flush the tracker and check the invariants.
    Flush,
    /// Send the merged pending patch (invariant 3).
    Send,
}

fn text() -> impl Strategy<Value = String> {
    "[a-z0-9 $]{0,7}".prop_filter("\"$delete\" is reserved", |s| s != "$delete")
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        -1.0e9..1.0e9f64,
        Just(0.0),
        Just(-0.0),
        Just(2.0),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
    ]
}

fn user_key() -> impl Strategy<Value = Key> {
    prop::sample::select(vec!["a", "b", "c", "0", "12345678"])
}

fn item_key() -> impl Strategy<Value = Key> {
    prop::sample::select(vec!["sword", "shield", "7"])
}

fn pos() -> impl Strategy<Value = Pos> {
    (any::<i64>(), float(), text()).prop_map(|(x, y, label)| Pos { x, y, label })
}

fn inventory() -> impl Strategy<Value = Vec<(Key, i32)>> {
    prop::collection::vec((item_key(), any::<i32>()), 0..3)
}

fn user() -> impl Strategy<Value = User> {
    (
        text(),
        any::<i64>(),
        any::<bool>(),
        inventory(),
        any::<bool>(),
        text(),
    )
        .prop_map(|(name, score, online, inv, typing, secret)| User {
            name,
            score,
            online,
            inventory: inv.into_iter().collect(),
            typing,
            secret,
        })
}

fn small_vec() -> impl Strategy<Value = Vec<i32>> {
    prop::collection::vec(-5..100i32, 0..4)
}

/// Snapshots and packets loaded with `Tracker::load`; some are malformed and must fail
/// without changing anything.
fn load_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        (user_key(), text()).prop_map(|(k, n)| json!({"users": {k: {"name": n}}})),
        user_key().prop_map(|k| json!({"users": {k: "$delete"}})),
        (user_key(), item_key(), prop::option::of(any::<i32>())).prop_map(|(k, i, v)| {
            let v = v.map_or(json!("$delete"), |v| json!(v));
            json!({"users": {k: {"inventory": {i: v}}}})
        }),
        (any::<i64>(), text()).prop_map(|(c, t)| json!({"count": c, "title": t})),
        (0..4usize, any::<i32>()).prop_map(|(i, v)| json!({"list": {i.to_string(): v}})),
        small_vec().prop_map(|v| json!({"list": v})),
        prop::option::of(any::<i64>()).prop_map(|x| json!({"target": x.map(|x| json!({"x": x}))})),
        (-3..10i64).prop_map(|l| json!({"level": l, "seed": 5})),
        // Malformed: a type error deep inside, after valid changes.
        (user_key(), any::<i64>())
            .prop_map(|(k, c)| json!({"count": c, "users": {k: {"score": "x"}}})),
        Just(json!({"pos": {"x": 1, "y": "north"}})),
        Just(json!({"list": {"9": 1}})),
        Just(json!({"title": "$delete"})),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => any::<i64>().prop_map(Op::Count),
        1 => float().prop_map(Op::Ratio),
        1 => text().prop_map(Op::Title),
        1 => any::<bool>().prop_map(Op::Open),
        1 => (-3..10i64).prop_map(Op::Level),
        1 => any::<u32>().prop_map(Op::Tick),
        1 => any::<u64>().prop_map(Op::Seed),
        1 => any::<i64>().prop_map(Op::PosX),
        1 => float().prop_map(Op::PosY),
        1 => text().prop_map(Op::PosLabel),
        1 => pos().prop_map(Op::PosReplace),
        1 => pos().prop_map(Op::TargetSet),
        1 => Just(Op::TargetClear),
        1 => any::<i64>().prop_map(Op::TargetX),
        1 => small_vec().prop_map(Op::ListPush),
        1 => (0..4usize).prop_map(Op::ListRemove),
        1 => (0..4usize).prop_map(Op::ListTruncate),
        1 => Just(Op::ListClear),
        1 => small_vec().prop_map(Op::ListSet),
        1 => (0..4usize, any::<i32>()).prop_map(|(i, v)| Op::ListElem(i, v)),
        1 => (user_key(), user()).prop_map(|(k, u)| Op::UserInsert(k, u)),
        1 => (user_key(), user()).prop_map(|(k, u)| Op::UserReplace(k, u)),
        1 => (user_key(), any::<i64>()).prop_map(|(k, s)| Op::UserGetOrInsert(k, s)),
        1 => user_key().prop_map(Op::UserRemove),
        1 => (user_key(), text()).prop_map(|(k, s)| Op::UserName(k, s)),
        1 => (user_key(), any::<i64>()).prop_map(|(k, s)| Op::UserScore(k, s)),
        1 => (user_key(), any::<bool>()).prop_map(|(k, b)| Op::UserOnline(k, b)),
        1 => (user_key(), any::<bool>()).prop_map(|(k, b)| Op::UserTyping(k, b)),
        1 => (user_key(), text()).prop_map(|(k, s)| Op::UserSecret(k, s)),
        1 => user_key().prop_map(Op::UserTouch),
        1 => Just(Op::UsersBumpAll),
        1 => user_key().prop_map(Op::UsersRetainBefore),
        1 => Just(Op::UsersClear),
        1 => prop::collection::vec((user_key(), user()), 0..3).prop_map(Op::UsersReplace),
        1 => (user_key(), item_key(), any::<i32>()).prop_map(|(k, i, v)| Op::InvInsert(k, i, v)),
        1 => (user_key(), item_key()).prop_map(|(k, i)| Op::InvRemove(k, i)),
        1 => (user_key(), inventory()).prop_map(|(k, inv)| Op::InvReplace(k, inv)),
        1 => load_value().prop_map(Op::Load),
        1 => Just(Op::CloneRoom),
        // Flushes and sends are frequent so that patches of every size are checked.
        8 => Just(Op::Flush),
        3 => Just(Op::Send),
    ]
}

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

/// Storage rows: `[field]` for a root field, `[field, key]` for an entry of a root `StateMap`.
type Rows = BTreeMap<Vec<String>, Value>;

struct Model {
    tracker: Tracker<Room>,
    /// Invariant 1: applies every patch as soon as it is flushed.
    mirror: ClientMirror,
    /// Invariant 3: receives merged patches when they are sent.
    merged: ClientMirror,
    /// The merged patch waiting to be sent.
    pending: Option<Value>,
    /// Invariant 2: incremental row storage.
    storage: Rows,
}

impl Model {
    /// Start from the state built by `prefix` (counted as already flushed and stored).
    fn new(prefix: &[Op]) -> Self {
        let mut tracker = Tracker::new(Room::default());
        for op in prefix {
            apply(&mut tracker, op);
        }
        tracker.rebase();
        let mut mirror = ClientMirror::new();
        mirror.apply(&tracker.sync_snapshot());
        // Seed storage with one whole row per root field: later entry rows must update it.
        let storage = match tracker.persist_snapshot() {
            Value::Object(fields) => fields.into_iter().map(|(k, v)| (vec![k], v)).collect(),
            other => panic!("persist snapshot is not an object: {other}"),
        };
        Self {
            tracker,
            merged: mirror.clone(),
            mirror,
            pending: None,
            storage,
        }
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Flush => self.flush(),
            Op::Send => {
                if let Some(p) = self.pending.take() {
                    self.merged.apply(&p);
                }
                Ok(())
            }
            Op::Load(value) => {
                let sync = self.tracker.sync_snapshot();
                let persist = self.tracker.persist_snapshot();
                if self.tracker.load(value).is_err() {
                    // All or nothing.
                    prop_assert_eq!(self.tracker.sync_snapshot(), sync);
                    prop_assert_eq!(self.tracker.persist_snapshot(), persist);
                }
                Ok(())
            }
            op => {
                apply(&mut self.tracker, op);
                Ok(())
            }
        }
    }

    fn flush(&mut self) -> Result<(), TestCaseError> {
        let flush = self.tracker.flush();
        prop_assert!(
            self.tracker.flush().is_empty(),
            "a flush right after a flush must be empty"
        );
        let snapshot = self.tracker.sync_snapshot();

        // Invariant 1.
        if let Some(patch) = &flush.sync {
            prop_assert!(patch.is_object(), "patch is not an object: {}", patch);
            self.mirror.apply(patch);
        }
        prop_assert_eq!(self.mirror.state(), &snapshot, "patch: {:?}", flush.sync);

        // Invariant 3.
        if let Some(patch) = flush.sync.clone() {
            match self.pending.as_mut() {
                Some(pending) if can_merge(pending, &patch) => merge_patch(pending, patch),
                _ => {
                    if let Some(pending) = self.pending.take() {
                        self.merged.apply(&pending);
                    }
                    self.pending = Some(patch);
                }
            }
        }
        let mut merged = self.merged.clone();
        if let Some(pending) = &self.pending {
            merged.apply(pending);
        }
        prop_assert_eq!(
            merged.state(),
            &snapshot,
            "merged client differs; pending: {:?}",
            self.pending
        );

        // Invariant 2.
        let persist = self.tracker.persist_snapshot();
        let mut loaded = Room::default();
        load_into(&mut loaded, &persist)
            .map_err(|e| TestCaseError::fail(format!("persist snapshot does not load: {e}")))?;
        prop_assert_eq!(loaded.persist_view(), persist.clone());

        for row in flush.persist.rows() {
            prop_assert!(
                row.len() == 1 || (row.len() == 2 && row[0] == "users"),
                "unexpected row {:?}",
                row
            );
            let value = self.tracker.persist_row(&row);
            if row.len() == 1 {
                prop_assert!(value.is_some(), "root row {:?} has no value", row);
            }
            write_row(&mut self.storage, row, value);
        }
        let assembled = assemble(&self.storage);
        prop_assert_eq!(&assembled, &persist, "storage rows: {:?}", self.storage);
        let mut from_rows = Room::default();
        load_into(&mut from_rows, &assembled)
            .map_err(|e| TestCaseError::fail(format!("stored rows do not load: {e}")))?;
        prop_assert_eq!(from_rows.persist_view(), persist);
        Ok(())
    }
}

/// Write one row as a storage backend keyed by path would: a whole root field replaces the
/// entry rows under it; an entry row is its own key, and deleting it also removes the entry
/// from a whole-field row written earlier.
fn write_row(storage: &mut Rows, row: Vec<String>, value: Option<Value>) {
    match row.as_slice() {
        [field] => {
            let field = field.clone();
            storage.retain(|k, _| !(k.len() == 2 && k[0] == field));
            match value {
                Some(v) => storage.insert(row, v),
                None => storage.remove(&row),
            };
        }
        [field, key] => {
            let key = key.clone();
            match value {
                Some(v) => {
                    storage.insert(row, v);
                }
                None => {
                    if let Some(Value::Object(whole)) = storage.get_mut(&vec![field.clone()]) {
                        whole.remove(&key);
                    }
                    storage.remove(&row);
                }
            }
        }
        _ => panic!("unexpected row {row:?}"),
    }
}

/// Rebuild the persisted object: whole fields first, entry rows over them.
fn assemble(storage: &Rows) -> Value {
    let mut out = Map::new();
    for (k, v) in storage.iter().filter(|(k, _)| k.len() == 1) {
        out.insert(k[0].clone(), v.clone());
    }
    for (k, v) in storage.iter().filter(|(k, _)| k.len() == 2) {
        let field = out
            .entry(k[0].clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !field.is_object() {
            *field = Value::Object(Map::new());
        }
        field
            .as_object_mut()
            .expect("just made an object")
            .insert(k[1].clone(), v.clone());
    }
    Value::Object(out)
}

/// Apply a mutation (not Flush/Send/Load, which the model handles).
fn apply(tracker: &mut Tracker<Room>, op: &Op) {
    let room = tracker.state_mut();
    match op {
        Op::Count(v) => room.count = *v,
        Op::Ratio(v) => room.ratio = *v,
        Op::Title(v) => room.title = v.clone(),
        Op::Open(v) => room.open = *v,
        Op::Level(v) => room.level = *v,
        Op::Tick(v) => room.tick = *v,
        Op::Seed(v) => room.seed = *v,
        Op::PosX(v) => room.pos.x = *v,
        Op::PosY(v) => room.pos.y = *v,
        Op::PosLabel(v) => room.pos.label = v.clone(),
        Op::PosReplace(p) => room.pos = p.clone(),
        Op::TargetSet(p) => room.target = Some(p.clone()),
        Op::TargetClear => room.target = None,
        Op::TargetX(x) => {
            if let Some(t) = room.target.as_mut() {
                t.x = *x;
            }
        }
        Op::ListPush(items) => room.list.extend(items),
        Op::ListRemove(i) => {
            if *i < room.list.len() {
                room.list.remove(*i);
            }
        }
        Op::ListTruncate(n) => room.list.truncate(*n),
        Op::ListClear => room.list.clear(),
        Op::ListSet(v) => room.list = v.clone(),
        Op::ListElem(i, v) => {
            if let Some(e) = room.list.get_mut(*i) {
                *e = *v;
            }
        }
        Op::UserInsert(k, u) => {
            room.users.insert(*k, u.clone());
        }
        Op::UserReplace(k, u) => {
            if let Some(existing) = room.users.get_mut(k) {
                *existing = u.clone();
            }
        }
        Op::UserGetOrInsert(k, s) => {
            room.users.get_or_insert_with(k, User::default).score = *s;
        }
        Op::UserRemove(k) => {
            room.users.remove(k);
        }
        Op::UserName(k, v) => {
            if let Some(u) = room.users.get_mut(k) {
                u.name = v.clone();
            }
        }
        Op::UserScore(k, v) => {
            if let Some(u) = room.users.get_mut(k) {
                u.score = *v;
            }
        }
        Op::UserOnline(k, v) => {
            if let Some(u) = room.users.get_mut(k) {
                u.set_connected(*v);
            }
        }
        Op::UserTyping(k, v) => {
            if let Some(u) = room.users.get_mut(k) {
                u.typing = *v;
            }
        }
        Op::UserSecret(k, v) => {
            if let Some(u) = room.users.get_mut(k) {
                u.secret = v.clone();
            }
        }
        Op::UserTouch(k) => {
            let _ = room.users.get_mut(k);
        }
        Op::UsersBumpAll => {
            for (_, u) in room.users.iter_mut() {
                u.score = u.score.wrapping_add(1);
            }
        }
        Op::UsersRetainBefore(k) => room.users.retain(|key, _| key < *k),
        Op::UsersClear => room.users.clear(),
        Op::UsersReplace(users) => {
            room.users = StateMap::new();
            for (k, u) in users {
                room.users.insert(*k, u.clone());
            }
        }
        Op::InvInsert(k, item, v) => {
            if let Some(u) = room.users.get_mut(k) {
                u.inventory.insert(*item, *v);
            }
        }
        Op::InvRemove(k, item) => {
            if let Some(u) = room.users.get_mut(k) {
                u.inventory.remove(item);
            }
        }
        Op::InvReplace(k, inv) => {
            if let Some(u) = room.users.get_mut(k) {
                u.inventory = inv.iter().copied().collect();
            }
        }
        Op::Load(value) => {
            let _ = tracker.load(value);
        }
        Op::CloneRoom => {
            let copy = room.clone();
            *room = copy;
        }
        Op::Flush | Op::Send => {}
    }
}

fn run(prefix: &[Op], ops: &[Op]) -> Result<(), TestCaseError> {
    let mut model = Model::new(prefix);
    for op in ops {
        model.step(op)?;
    }
    model.flush()?;
    model.step(&Op::Send)?;
    prop_assert_eq!(model.merged.state(), &model.tracker.sync_snapshot());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mirror_storage_and_merging_follow_the_state(
        prefix in prop::collection::vec(op(), 0..12),
        ops in prop::collection::vec(op(), 1..48),
    ) {
        run(&prefix, &ops)?;
    }
}

/// A fixed sequence covering every operation once, so that a change in the engine that breaks
/// one of them fails deterministically too.
#[test]
fn every_operation_once() {
    let u = |name: &str| User {
        name: name.into(),
        score: 1,
        online: true,
        inventory: [("sword", 1)].into_iter().collect(),
        typing: true,
        secret: "s".into(),
    };
    let p = Pos {
        x: 1,
        y: 0.5,
        label: "p".into(),
    };
    let ops = vec![
        Op::Count(1),
        Op::Ratio(0.25),
        Op::Title("t".into()),
        Op::Open(true),
        Op::Level(3),
        Op::Tick(1),
        Op::Seed(2),
        Op::Flush,
        Op::PosX(2),
        Op::PosY(1.5),
        Op::PosLabel("l".into()),
        Op::Level(4),
        Op::Flush,
        Op::PosReplace(p.clone()),
        Op::TargetSet(p),
        Op::Level(-1),
        Op::Flush,
        Op::TargetX(7),
        Op::Level(5),
        Op::Flush,
        Op::TargetClear,
        Op::ListPush(vec![1, 2, 3]),
        Op::Flush,
        Op::ListRemove(0),
        Op::ListElem(0, 9),
        Op::Flush,
        Op::ListTruncate(1),
        Op::Flush,
        Op::ListSet(vec![4, 5]),
        Op::Flush,
        Op::ListClear,
        Op::UserInsert("a", u("a")),
        Op::UserInsert("b", u("b")),
        Op::Flush,
        Op::UserReplace("a", u("a2")),
        Op::UserGetOrInsert("c", 3),
        Op::UserName("b", "bb".into()),
        Op::UserScore("b", 5),
        Op::Flush,
        Op::UserOnline("b", false),
        Op::UserTyping("b", false),
        Op::UserSecret("b", "t".into()),
        Op::UserTouch("c"),
        Op::Flush,
        Op::UsersBumpAll,
        Op::InvInsert("a", "shield", 2),
        Op::InvRemove("b", "sword"),
        Op::Flush,
        Op::InvReplace("a", vec![("7", 7)]),
        Op::UsersRetainBefore("b"),
        Op::Send,
        Op::Flush,
        Op::Load(json!({"users": {"z": {"name": "loaded"}}, "count": 3})),
        Op::Load(json!({"users": {"a": {"score": "bad"}}})),
        Op::Flush,
        Op::CloneRoom,
        Op::Flush,
        Op::UsersReplace(vec![("0", u("zero")), ("12345678", u("digits"))]),
        Op::Flush,
        Op::UsersClear,
        Op::Flush,
        Op::UserRemove("0"),
    ];
    run(&[], &ops).unwrap();
}
