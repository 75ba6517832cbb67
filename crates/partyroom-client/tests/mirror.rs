//! `ClientOptions::mirror(false)`: no state mirror, frames still delivered, pId still known.

mod support;

use serde_json::json;
use support::{TestServer, WAIT};

#[tokio::test]
async fn without_mirror_frames_are_delivered_but_not_applied() {
    let server = TestServer::arena().await;
    let client = partyroom_client::Client::connect(server.options("no-mirror").mirror(false))
        .await
        .expect("connects");
    let pid = client.pid().expect("the pId is kept without a mirror");
    assert_eq!(pid.len(), 8);
    assert_eq!(client.changes().borrow().syncs(), 1);
    assert_eq!(client.state(), json!({}), "the first packet is not applied");

    // A second client, with a mirror, sees the same room.
    let other = partyroom_client::Client::connect(server.options("no-mirror"))
        .await
        .expect("connects");
    let mut frames = client.subscribe("sync");
    let mut changes = client.changes();
    changes.mark_unchanged();

    client.emit("move", json!({"x": 123, "y": 234})).unwrap();
    let echo = tokio::time::timeout(WAIT, async {
        loop {
            let event = frames.recv().await.expect("open");
            if event.value()["players"][&pid]["x"] == 123.0 {
                return event;
            }
        }
    })
    .await
    .expect("the move comes back to subscribers");
    assert_eq!(echo.kind(), Some("sync"));
    other
        .wait_for(|s| s["players"][&pid]["x"] == 123.0, WAIT)
        .await
        .expect("the mirroring client applies it");

    assert_eq!(client.state(), json!({}), "sync packets are not applied");
    assert!(
        !changes.has_changed().unwrap(),
        "no change notification without a mirror"
    );
    assert_eq!(client.pid().as_deref(), Some(pid.as_str()));
    client.close();
    other.close();
}
