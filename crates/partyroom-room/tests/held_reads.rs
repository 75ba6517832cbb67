//! Held reads ([`ConnectionSink::hold_reads`]): in a room with a sync throttle, a client that
//! sends in window after window is asked to drain at each window's end, and the window's patch
//! waits for its messages. The test plays the transport: it keeps a held client's messages
//! until the room asks for them. Time is paused, so every window is exact.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use partyroom_room::{
    CloseFrame, ConnId, ConnectRequest, ConnectionSink, Handlers, Room, RoomConfig, RoomHandle,
    Rooms, SinkStatus,
};
use partyroom_state::State;
use serde_json::{Value, json};

const WINDOW: Duration = Duration::from_millis(16);

#[derive(State, Default, Clone)]
struct Tally {
    count: i64,
}

impl Room for Tally {
    fn config() -> RoomConfig {
        RoomConfig::new("tally").throttle_sync(WINDOW)
    }
    fn handlers(h: &mut Handlers<Self>) {
        h.action("inc", |t: &mut Self, _cx, ()| t.count += 1);
    }
}

/// A transport that records what the room asks of it.
#[derive(Default)]
struct Sink {
    can_hold: bool,
    frames: Mutex<Vec<Value>>,
    holds: Mutex<Vec<bool>>,
    drains: AtomicUsize,
    /// Shared with other sinks: the order in which drains were asked for.
    order: Option<(usize, Arc<Mutex<Vec<usize>>>)>,
}

impl ConnectionSink for Sink {
    fn send(&self, frame: Bytes) -> SinkStatus {
        let v = serde_json::from_slice(&frame).expect("frames are JSON");
        self.frames.lock().unwrap().push(v);
        SinkStatus::Accepted
    }
    fn close(&self, _frame: CloseFrame) {}
    fn hold_reads(&self, hold: bool) -> bool {
        self.holds.lock().unwrap().push(hold);
        self.can_hold
    }
    fn drain_held(&self) {
        self.drains.fetch_add(1, Ordering::SeqCst);
        if let Some((id, order)) = &self.order {
            order.lock().unwrap().push(*id);
        }
    }
}

impl Sink {
    fn holding(can_hold: bool) -> Arc<Self> {
        Arc::new(Self {
            can_hold,
            ..Self::default()
        })
    }
    /// The counts of the sync packets received so far (the first packet included).
    fn counts(&self) -> Vec<i64> {
        self.frames
            .lock()
            .unwrap()
            .iter()
            .filter_map(|f| f["value"]["count"].as_i64())
            .collect()
    }
    fn holds(&self) -> Vec<bool> {
        self.holds.lock().unwrap().clone()
    }
    fn drains(&self) -> usize {
        self.drains.load(Ordering::SeqCst)
    }
}

async fn room() -> RoomHandle {
    room_with(Tally::config()).await
}

async fn room_with(config: RoomConfig) -> RoomHandle {
    let rooms = Rooms::builder()
        .room_with::<Tally>("main", config)
        .unwrap()
        .build();
    rooms.get("main", "tally").unwrap()
}

/// A room with `config`, one client sending every 5 ms: its reads are never held.
async fn never_held(config: RoomConfig) {
    let room = room_with(config).await;
    let sink = Sink::holding(true);
    let conn = join(&room, &sink).await;
    for _ in 0..10 {
        room.message(conn, inc()).await.unwrap();
        advance(Duration::from_millis(5)).await;
    }
    advance(WINDOW).await;
    assert!(sink.holds().is_empty());
    assert_eq!(sink.drains(), 0);
    assert_eq!(sink.counts().last(), Some(&10));
}

async fn join(room: &RoomHandle, sink: &Arc<Sink>) -> ConnId {
    let sink: Arc<dyn ConnectionSink> = sink.clone();
    let req = ConnectRequest::with_sink(None, vec![], Default::default(), sink);
    room.connect(req).await.unwrap()
}

fn inc() -> Bytes {
    json!({"action": "inc", "value": null}).to_string().into()
}

/// Two clients whose transports can hold reads, joined.
async fn clients(room: &RoomHandle) -> [(Arc<Sink>, ConnId); 2] {
    let a = Sink::holding(true);
    let b = Sink::holding(true);
    let (a_conn, b_conn) = (join(room, &a).await, join(room, &b).await);
    settle().await;
    [(a, a_conn), (b, b_conn)]
}

/// Let the room handle what was sent and what fell due.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// Messages from `conns` in two windows in a row (the first opens a window, the second comes
/// 5 ms later): the room holds their reads.
async fn send_in_two_windows(room: &RoomHandle, conns: &[ConnId]) {
    for &conn in conns {
        room.message(conn, inc()).await.unwrap();
    }
    settle().await;
    advance(Duration::from_millis(5)).await;
    for &conn in conns {
        room.message(conn, inc()).await.unwrap();
    }
    settle().await;
}

/// Move the clock on by `by` and let the room act on it.
async fn advance(by: Duration) {
    tokio::time::advance(by).await;
    settle().await;
}

#[tokio::test(start_paused = true)]
async fn a_held_client_is_drained_at_the_window_end_and_makes_its_patch() {
    let room = room().await;
    let sink = Sink::holding(true);
    let conn = join(&room, &sink).await;
    settle().await;
    // A first message: sent at once (the leading edge), and a window opens.
    room.message(conn, inc()).await.unwrap();
    settle().await;
    assert_eq!(sink.counts(), vec![0, 1]);
    // A second one in the next window: the client is busy, its reads are held.
    advance(Duration::from_millis(5)).await;
    room.message(conn, inc()).await.unwrap();
    settle().await;
    assert_eq!(sink.holds(), vec![true]);
    assert_eq!(sink.drains(), 0);
    // At the window's end the room asks for what is held, and waits for it.
    advance(WINDOW).await;
    assert_eq!(sink.drains(), 1);
    assert_eq!(sink.counts(), vec![0, 1], "the patch waits for the drain");
    // The transport hands over a message that arrived meanwhile, then answers.
    room.message(conn, inc()).await.unwrap();
    room.drained(conn, true).await.unwrap();
    settle().await;
    assert_eq!(
        sink.counts(),
        vec![0, 1, 3],
        "both messages of the window in one patch"
    );
    // The next window's drain finds nothing: the client is read as before.
    advance(WINDOW).await;
    assert_eq!(sink.drains(), 2);
    room.drained(conn, false).await.unwrap();
    settle().await;
    assert_eq!(sink.holds(), vec![true, false]);
    // No more drains once nothing is held.
    advance(WINDOW * 10).await;
    assert_eq!(sink.drains(), 2);
    assert_eq!(sink.counts(), vec![0, 1, 3]);
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_drain_delays_the_patch_by_two_milliseconds_at_most() {
    let room = room().await;
    let sink = Sink::holding(true);
    let conn = join(&room, &sink).await;
    settle().await;
    send_in_two_windows(&room, &[conn]).await;
    advance(WINDOW).await;
    assert_eq!(sink.drains(), 1);
    assert_eq!(sink.counts(), vec![0, 1]);
    advance(Duration::from_millis(2)).await;
    assert_eq!(sink.counts(), vec![0, 1, 2], "sent without the answer");
    // A late answer changes nothing; the next window end asks again.
    room.drained(conn, true).await.unwrap();
    advance(WINDOW).await;
    assert_eq!(sink.drains(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_leaves_while_draining_does_not_hold_up_the_others() {
    let room = room().await;
    let [(busy, busy_conn), (other, other_conn)] = clients(&room).await;
    send_in_two_windows(&room, &[busy_conn]).await;
    room.message(other_conn, inc()).await.unwrap();
    settle().await;
    advance(WINDOW).await;
    assert_eq!(busy.drains(), 1);
    assert_eq!(other.drains(), 0, "a single message does not hold");
    let before = other.counts().len();
    room.disconnect(busy_conn).await;
    settle().await;
    assert_eq!(
        other.counts().len(),
        before + 1,
        "flushed as soon as the one awaited answer can no longer come"
    );
    assert_eq!(other.counts().last(), Some(&3));
}

#[tokio::test(start_paused = true)]
async fn a_transport_that_cannot_hold_is_asked_once() {
    let room = room().await;
    let sink = Sink::holding(false);
    let conn = join(&room, &sink).await;
    settle().await;
    for _ in 0..20 {
        room.message(conn, inc()).await.unwrap();
        advance(Duration::from_millis(10)).await;
    }
    advance(WINDOW).await;
    assert_eq!(sink.holds(), vec![true]);
    assert_eq!(sink.drains(), 0);
    assert_eq!(sink.counts().last(), Some(&20));
}

#[tokio::test(start_paused = true)]
async fn without_a_throttle_reads_are_never_held() {
    never_held(RoomConfig::new("tally")).await;
}

#[tokio::test(start_paused = true)]
async fn a_flush_at_the_window_end_from_another_message_drains_first() {
    let room = room().await;
    let [(held, held_conn), (other, other_conn)] = clients(&room).await;
    // Off the millisecond grid, so that the window's end comes before its timer fires.
    advance(Duration::from_micros(500)).await;
    send_in_two_windows(&room, &[held_conn]).await;
    assert_eq!(held.holds(), vec![true]);
    // The window is over; its timer has not fired yet. A message from a client that is not
    // held would flush now: the held client is drained first, and the flush waits for it.
    advance(Duration::from_millis(11)).await;
    assert_eq!(held.drains(), 0, "the timer has not fired");
    room.message(other_conn, inc()).await.unwrap();
    settle().await;
    assert_eq!(held.drains(), 1);
    assert_eq!(
        other.counts().last(),
        Some(&1),
        "no flush before the answer"
    );
    room.message(held_conn, inc()).await.unwrap();
    room.drained(held_conn, true).await.unwrap();
    settle().await;
    assert_eq!(other.counts().last(), Some(&4), "one patch with all three");
}

#[tokio::test(start_paused = true)]
async fn held_clients_take_turns_at_being_drained_first() {
    let room = room().await;
    let order = Arc::new(Mutex::new(Vec::new()));
    let sinks: Vec<Arc<Sink>> = (0..2)
        .map(|id| {
            Arc::new(Sink {
                can_hold: true,
                order: Some((id, order.clone())),
                ..Sink::default()
            })
        })
        .collect();
    let mut conns = Vec::new();
    for sink in &sinks {
        conns.push(join(&room, sink).await);
    }
    settle().await;
    send_in_two_windows(&room, &conns).await;
    for window in 0..4 {
        advance(WINDOW).await;
        assert_eq!(order.lock().unwrap().len(), 2 * (window + 1));
        for &conn in &conns {
            room.message(conn, inc()).await.unwrap();
            room.drained(conn, true).await.unwrap();
        }
        settle().await;
    }
    let order = order.lock().unwrap().clone();
    let firsts: Vec<usize> = order.chunks(2).map(|pair| pair[0]).collect();
    assert_eq!(
        firsts,
        vec![0, 1, 0, 1],
        "each window starts with the other client"
    );
}

#[tokio::test(start_paused = true)]
async fn hold_reads_can_be_turned_off() {
    never_held(Tally::config().hold_reads(false)).await;
}
