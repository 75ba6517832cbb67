//! Graceful shutdown: SIGTERM with changes still waiting for the storage throttle; they are on
//! disk after the process exits.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Arena, Client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_saves_throttled_changes_before_exit() {
    let dir = std::env::temp_dir().join(format!("partyroom-term-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("arena.db");
    let db_arg = db.to_str().unwrap().to_owned();
    // An hour of storage throttle: nothing is written before the shutdown.
    let args = ["--db", &db_arg, "--storage-throttle-ms", "3600000"];

    let arena = Arena::start(&args);
    let mut c = Client::connect(arena.port, "term", "s1").await;
    let pid = c.pid();
    c.send("move", json!({"x": 123, "y": 321})).await;
    while c.me()["x"] != 123.0 {
        c.next().await.expect("echo of the move");
    }
    let status = arena.terminate();
    assert!(status.success(), "clean exit: {status:?}");

    let arena = Arena::start(&args);
    let state = arena.state("term").await;
    assert_eq!(state["players"][&pid]["x"], 123.0);
    assert_eq!(state["players"][&pid]["y"], 321.0);
    assert_eq!(state["players"][&pid]["connected"], false);
    // The session survived too: the same id gets the same player.
    let again = Client::connect(arena.port, "term", "s1").await;
    assert_eq!(again.pid(), pid);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let _ = std::fs::remove_dir_all(&dir);
}
