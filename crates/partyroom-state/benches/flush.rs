//! Flush cost versus full snapshot cost for a room with many users.
//!
//! A room holds N users (8 fields each) in a `StateMap`; 10 users change one field between
//! flushes. We measure
//!
//! - `flush/<N>`: `Tracker::flush()` plus serializing the patch to a `String` (what one sync
//!   packet costs the server). The 10 mutations run in the `iter_batched` setup, untimed, with
//!   `BatchSize::PerIteration` so that every timed flush sees exactly 10 changed users;
//! - `snapshot/<N>`: `Tracker::sync_snapshot()` plus serializing it (what a full-state packet,
//!   or a diff-by-snapshot engine, costs per flush).
//!
//! Run: `cargo bench -p partyroom-state --bench flush -- --warm-up-time 1 --measurement-time 3`

use std::cell::{Cell, RefCell};
use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use partyroom_state::{State, StateMap, Tracker};

#[derive(State, Default, Clone, Debug)]
struct User {
    name: String,
    team: String,
    score: i64,
    x: f64,
    y: f64,
    hp: i32,
    level: u32,
    #[state(connected)]
    online: bool,
}

#[derive(State, Default, Clone, Debug)]
struct Room {
    round: u32,
    title: String,
    #[state(users)]
    users: StateMap<User>,
}

const CHANGED: usize = 10;
const SIZES: [usize; 2] = [1_000, 10_000];

fn key(i: usize) -> String {
    format!("u{i:07}")
}

fn room(n: usize) -> Tracker<Room> {
    let mut room = Room {
        title: "bench".into(),
        ..Default::default()
    };
    for i in 0..n {
        room.users.insert(
            key(i),
            User {
                name: format!("player {i}"),
                team: if i % 2 == 0 { "red" } else { "blue" }.into(),
                score: i as i64,
                x: i as f64 * 0.5,
                y: -(i as f64) * 0.25,
                hp: 100,
                level: (i % 50) as u32,
                online: true,
            },
        );
    }
    let mut tracker = Tracker::new(room);
    assert!(tracker.flush().is_empty());
    tracker
}

/// The keys of the users that change: spread over the whole collection.
fn changed_keys(n: usize) -> Vec<String> {
    (0..CHANGED).map(|j| key(j * (n / CHANGED) + 3)).collect()
}

fn bench_flush(c: &mut Criterion) {
    let mut group = c.benchmark_group("flush");
    for n in SIZES {
        let tracker = RefCell::new(room(n));
        let keys = changed_keys(n);
        let tick = Cell::new(0i64);
        // Sanity check: a flush after 10 changes holds exactly 10 users.
        {
            let mut t = tracker.borrow_mut();
            for k in &keys {
                t.state_mut().users.get_mut(k).unwrap().score = -1;
            }
            let patch = t.flush().sync.unwrap();
            assert_eq!(patch["users"].as_object().unwrap().len(), CHANGED);
        }
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_batched(
                || {
                    // Untimed: change one field of 10 users.
                    tick.set(tick.get() + 1);
                    let mut t = tracker.borrow_mut();
                    for k in &keys {
                        t.state_mut().users.get_mut(k).unwrap().score = tick.get();
                    }
                },
                |()| {
                    let mut t = tracker.borrow_mut();
                    let flush = t.flush();
                    serde_json::to_string(&flush.sync).unwrap()
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

fn bench_snapshot(c: &mut Criterion) {
    let mut group = c.benchmark_group("snapshot");
    for n in SIZES {
        let tracker = room(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| serde_json::to_string(&black_box(&tracker).sync_snapshot()).unwrap());
        });
    }
    group.finish();
}

criterion_group!(benches, bench_flush, bench_snapshot);
criterion_main!(benches);
