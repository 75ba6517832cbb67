//! `/metrics` of the arena binary: what a client does shows in the counters, bad input is
//! counted by its outcome, and the endpoint is only there when asked for.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::json;
use support::{Arena, Client};
use tokio_tungstenite::tungstenite::Message;

async fn get(port: u16, path: &str) -> (u16, String) {
    support::http_get_text(port, path).await
}

/// The samples of a Prometheus text page: `name{labels}` → value.
fn samples(page: &str) -> BTreeMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// The value of the sample whose name is `name` and whose labels include all of `labels`.
fn value(s: &BTreeMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.iter()
        .filter(|(k, _)| {
            let (n, rest) = k.split_once('{').unwrap_or((k, ""));
            n == name
                && labels
                    .iter()
                    .all(|(l, v)| rest.contains(&format!("{l}=\"{v}\"")))
        })
        .map(|(_, v)| *v)
        .sum()
}

/// Scrape until `ok` holds for the samples (counters are updated by other tasks).
async fn scrape_until(
    port: u16,
    path: &str,
    ok: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = get(port, path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        let s = samples(&body);
        if ok(&s) || Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn metrics_count_what_clients_do_and_what_they_get_wrong() {
    let arena = Arena::start(&["--memory", "--metrics"]);
    let port = arena.port;
    let (status, body) = get(port, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("# HELP partyroom_websockets_accepted_total WebSockets upgraded"),
        "described metrics: {body}"
    );

    let mut a = Client::connect(port, "metrics-room", "m-a").await;
    let mut b = Client::connect(port, "metrics-room", "m-b").await;
    // Twenty good moves (one flush in 16 is timed), then one of each kind of bad message.
    for i in 0..20 {
        assert!(a.send("move", json!({"x": 100 + i, "y": 100})).await);
        a.next().await.unwrap();
    }
    assert!(a.send("move", json!({"x": "left"})).await); // invalid value
    assert!(a.send("fly", json!({})).await); // unknown action
    a.ws.send(Message::text("{not json")).await.unwrap(); // malformed
    a.ws.send(Message::text(json!({"value": 1}).to_string()))
        .await
        .unwrap(); // no action: malformed
    b.next().await.unwrap();
    // A WebSocket for a party that does not exist, and a broken handshake.
    let (status, _) = get(port, "/parties/nope/x").await;
    assert_eq!(status, 404);

    let main = [("party", "main")];
    let s = scrape_until(port, "/metrics", |s| {
        value(s, "partyroom_actions_total", &[("outcome", "malformed")]) >= 2.0
    })
    .await;
    assert_eq!(
        value(&s, "partyroom_actions_total", &[("outcome", "ok")]),
        20.0
    );
    assert_eq!(
        value(&s, "partyroom_actions_total", &[("outcome", "invalid")]),
        1.0
    );
    assert_eq!(
        value(&s, "partyroom_actions_total", &[("outcome", "unknown")]),
        1.0
    );
    assert_eq!(
        value(&s, "partyroom_actions_total", &[("outcome", "malformed")]),
        2.0
    );
    assert_eq!(value(&s, "partyroom_messages_received_total", &main), 24.0);
    assert!(value(&s, "partyroom_message_bytes_received_total", &main) > 24.0 * 10.0);
    assert_eq!(
        value(
            &s,
            "partyroom_websockets_accepted_total",
            &[("kind", "room")]
        ),
        2.0
    );
    assert_eq!(
        value(&s, "partyroom_websockets_open", &[("kind", "room")]),
        2.0
    );
    assert_eq!(value(&s, "partyroom_users_joined_total", &main), 2.0);
    // Both clients read: nothing waits in their queues (the gauges are read at each scrape).
    assert!(s.contains_key("partyroom_outbound_queued_frames"), "{s:?}");
    assert_eq!(value(&s, "partyroom_outbound_queue_max_frames", &[]), 0.0);
    assert_eq!(value(&s, "partyroom_rooms_loaded", &main), 1.0);
    assert_eq!(
        value(
            &s,
            "partyroom_connections_refused_total",
            &[("reason", "not_found")]
        ),
        1.0
    );
    // Two initial packets and twenty moves to two clients, at least.
    assert!(value(&s, "partyroom_frames_sent_total", &main) >= 2.0 + 20.0 * 2.0);
    assert!(value(&s, "partyroom_sync_flush_seconds_count", &main) >= 1.0);
    assert!(
        s.keys()
            .any(|k| k.starts_with("partyroom_sync_flush_seconds_bucket{")
                && k.contains("le=\"0.001\"")),
        "the flush histogram has buckets"
    );

    // Leaving is counted and the gauge comes down.
    drop(a);
    drop(b);
    let s = scrape_until(port, "/metrics", |s| {
        value(s, "partyroom_users_left_total", &main) >= 2.0
    })
    .await;
    assert_eq!(value(&s, "partyroom_users_left_total", &main), 2.0);
    assert_eq!(
        value(&s, "partyroom_websockets_open", &[("kind", "room")]),
        0.0
    );
}

#[tokio::test]
async fn metrics_are_off_by_default_and_can_have_their_own_port() {
    let plain = Arena::start(&["--memory"]);
    let (status, _) = get(plain.port, "/metrics").await;
    assert_eq!(status, 404, "no /metrics without --metrics");

    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin_port = admin.local_addr().unwrap().port();
    drop(admin);
    let addr = format!("127.0.0.1:{admin_port}");
    let arena = Arena::start(&["--memory", "--metrics-addr", &addr]);
    let (status, _) = get(arena.port, "/metrics").await;
    assert_eq!(
        status, 404,
        "--metrics-addr alone keeps the main port clean"
    );
    let _c = Client::connect(arena.port, "admin-port", "p-a").await;
    let s = scrape_until(admin_port, "/metrics", |s| {
        value(s, "partyroom_users_joined_total", &[]) >= 1.0
    })
    .await;
    assert_eq!(value(&s, "partyroom_users_joined_total", &[]), 1.0);
}
