//! Saving a 1,000-user room to SQLite after 10 users changed: rows written and time, against
//! rewriting every user. Run: `cargo bench -p partyroom-storage --bench save`.

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use partyroom_state::{State, StateMap, Tracker};
use partyroom_storage::{Batch, RoomKey, SqliteStorage, Storage};

#[derive(State, Default, Clone)]
struct User {
    name: String,
    #[state(connected)]
    connected: bool,
    x: f64,
    y: f64,
    color: String,
    score: u32,
    level: i32,
    xp: i64,
}

#[derive(State, Default, Clone)]
struct Room {
    round: u32,
    #[state(users)]
    users: StateMap<User>,
}

const USERS: usize = 1_000;

fn room() -> Tracker<Room> {
    let mut room = Room::default();
    for i in 0..USERS {
        room.users.insert(
            format!("user{i:04}"),
            User {
                name: format!("player {i}"),
                color: "#2563eb".into(),
                x: i as f64,
                ..User::default()
            },
        );
    }
    Tracker::new(room)
}

/// What a room does when it saves: the rows of the flush, each read from the live state.
fn batch_of(tracker: &Tracker<Room>, rows: Vec<Vec<String>>) -> Batch {
    let mut batch = Batch::default();
    for row in rows {
        let key = format!("state/{}", row.join("/"));
        match tracker.persist_row(&row) {
            Some(v) => batch.puts.push((key, v)),
            None => batch.deletes.push(key),
        }
    }
    batch
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> = Arc::new(
        rt.block_on(SqliteStorage::open(dir.path().join("bench.db")))
            .unwrap(),
    );
    let key = RoomKey::new("main", "bench");
    let mut tracker = room();
    // Store the whole room once.
    let all: Vec<Vec<String>> = (0..USERS)
        .map(|i| vec!["users".into(), format!("user{i:04}")])
        .collect();
    rt.block_on(storage.apply(&key, batch_of(&tracker, all.clone())))
        .unwrap();

    let mut step = 0usize;
    let mut rows_written = 0usize;
    c.bench_function("save/10 of 1000 users changed (incremental)", |b| {
        // The 10 mutations are inside the measured closure: they cost nanoseconds next to
        // the flush and the SQLite commit.
        b.iter(|| {
            step += 1;
            for j in 0..10 {
                let id = format!("user{:04}", (step * 37 + j * 97) % USERS);
                tracker.state_mut().users.get_mut(&id).unwrap().score += 1;
            }
            let rows = tracker.flush().persist.rows();
            rows_written = rows.len();
            let batch = batch_of(&tracker, rows);
            rt.block_on(storage.apply(&key, batch)).unwrap();
        })
    });
    println!("incremental save wrote {rows_written} rows");
    c.bench_function("save/all 1000 users (full rewrite)", |b| {
        b.iter(|| {
            let batch = batch_of(&tracker, all.clone());
            rt.block_on(storage.apply(&key, batch)).unwrap();
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
