//! Crash safety over real processes: the arena on SQLite with no storage throttle is killed
//! with SIGKILL at random moments while clients score; after each restart on the same file,
//! every change the server had saved is there, sessions keep their public ids, and the
//! database passes `PRAGMA integrity_check`.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Arena, Client, integrity};

const ITERATIONS: usize = 20;
const PLAYERS: usize = 4;
/// A change echoed to its client this long before the kill must have been saved: with no
/// storage throttle the server writes within milliseconds of the change.
const SAVED_MARGIN: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing_that_was_saved() {
    let dir = tempdir();
    let db = dir.join("arena.db");
    let db_arg = db.to_str().unwrap().to_owned();
    let args = ["--db", &db_arg, "--storage-throttle-ms", "0"];
    let room = "crash-room";
    let mut rng = fastrand::Rng::with_seed(7);
    // Per session: public id, and the best score known to be saved.
    let mut pids: HashMap<String, String> = HashMap::new();
    let mut saved: HashMap<String, u64> = HashMap::new();
    let mut total_scores = 0u64;

    for iteration in 0..ITERATIONS {
        let arena = Arena::start(&args);
        // After the restart: nothing saved was lost, nothing was invented.
        let state = arena.state(room).await;
        for (session, pid) in &pids {
            let score = state["players"][pid]["score"].as_u64().unwrap_or_else(|| {
                panic!("iteration {iteration}: player {pid} ({session}) lost: {state}")
            });
            assert!(
                score >= saved[session],
                "iteration {iteration}: {session} restored score {score} < saved {}",
                saved[session]
            );
            saved.insert(session.clone(), score);
            assert_eq!(state["players"][pid]["connected"], false);
        }

        let mut clients = Vec::new();
        for p in 0..PLAYERS {
            let session = format!("player-{p}");
            let c = Client::connect(arena.port, room, &session).await;
            let pid = c.pid();
            if let Some(known) = pids.get(&session) {
                assert_eq!(
                    &pid, known,
                    "iteration {iteration}: session keeps its public id"
                );
            }
            pids.insert(session.clone(), pid);
            clients.push((session, c));
        }

        // Score until a random moment, then SIGKILL.
        let run_for = Duration::from_millis(rng.u64(150..700));
        let start = Instant::now();
        let mut observed: HashMap<String, Vec<(Instant, u64)>> = HashMap::new();
        while start.elapsed() < run_for {
            for (session, c) in clients.iter_mut() {
                let star = c.mirror.state()["star"].clone();
                c.send("move", json!({"x": star["x"], "y": star["y"]}))
                    .await;
                c.send("collect", json!({})).await;
                // Read what is already there (bounded wait).
                let _ = tokio::time::timeout(Duration::from_millis(5), c.next()).await;
                if let Some(score) = c.me()["score"].as_u64() {
                    observed
                        .entry(session.clone())
                        .or_default()
                        .push((Instant::now(), score));
                }
            }
        }
        let killed_at = Instant::now();
        arena.kill();
        for (session, points) in observed {
            let sure = points
                .iter()
                .filter(|(t, _)| *t + SAVED_MARGIN <= killed_at)
                .map(|(_, s)| *s)
                .max()
                .unwrap_or(0);
            let best = saved.entry(session).or_insert(0);
            *best = (*best).max(sure);
        }
        assert_eq!(
            integrity(&db),
            "ok",
            "iteration {iteration}: database intact"
        );
        total_scores = saved.values().sum();
    }
    eprintln!("scores known saved after {ITERATIONS} crashes: {saved:?}");
    assert!(total_scores > 0, "the clients scored during the test");

    // A last restart shows the final state once more.
    let arena = Arena::start(&args);
    let state = arena.state(room).await;
    for (session, pid) in &pids {
        assert!(state["players"][pid]["score"].as_u64().unwrap() >= saved[session]);
    }
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "partyroom-crash-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
