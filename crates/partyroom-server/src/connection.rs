//! One task per WebSocket connection: reads client frames into the room's mailbox, and writes
//! the frames its [`Outbox`] could not write at once.
//!
//! The task also keeps the connection honest, with deadlines on both directions:
//! - **Liveness**: a client silent for [`Limits::ping_interval`] is pinged (again each
//!   interval); one from which nothing at all has come for [`Limits::liveness_timeout`] is
//!   dropped.
//! - **Writes**: while frames wait in the outbox, a socket that takes no byte of them for
//!   [`Limits::write_timeout`] is dropped (a client that stopped reading).
//! - **Closing**: once a close frame is queued (the client's close, a protocol error, a
//!   slow client's 1013, shutdown's 1001), the task stops reading and has
//!   [`CLOSE_FLUSH_TIMEOUT`] to get the frames out.
//!
//! A dropped connection is reset (`SO_LINGER` 0) so that the kernel lets go of what it held
//! for the peer at once, and its descriptor is closed even while the room still holds the
//! outbox.
//!
//! What reaches the room goes through a [`Peer`]: the room itself for clients
//! ([`RoomPeer`]), an echo for the conformance suite.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use partyroom_room::{CloseFrame, ConnId, ConnectionSink, RoomGone, RoomHandle};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::frame_reader::{FrameReader, Incoming, ReadError};
use crate::outbox::Outbox;

/// How long a closing connection may take to write its last frames.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the connection task writes what waits in the outbox.
pub(crate) enum Writer {
    /// A TCP socket, also written directly by the room (see [`Outbox`]).
    Tcp(Arc<OwnedWriteHalf>),
    /// Any other upgraded transport, written only by this task.
    Io(IoWriter),
}

/// A transport written through [`AsyncWrite`]: the chunks taken from the outbox wait here
/// until written, so that a flush cancelled half-way loses nothing.
pub(crate) struct IoWriter {
    io: Box<dyn AsyncWrite + Send + Unpin>,
    pending: std::collections::VecDeque<Bytes>,
    progress: u64,
}

impl IoWriter {
    /// Write the chunks that wait, then what the outbox holds, until both are empty.
    async fn flush(&mut self, outbox: &Outbox) -> std::io::Result<()> {
        loop {
            if self.pending.is_empty() {
                self.pending.extend(outbox.take_queued());
                if self.pending.is_empty() {
                    return self.io.flush().await;
                }
            }
            while let Some(chunk) = self.pending.front_mut() {
                let n = self.io.write(chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                self.progress += n as u64;
                if n == chunk.len() {
                    self.pending.pop_front();
                } else {
                    let _ = chunk.split_to(n);
                }
            }
        }
    }
}

impl Writer {
    /// A writer for any other transport than a plain TCP socket.
    pub(crate) fn io(io: Box<dyn AsyncWrite + Send + Unpin>) -> Self {
        Writer::Io(IoWriter {
            io,
            pending: std::collections::VecDeque::new(),
            progress: 0,
        })
    }

    /// Write everything queued, waiting for the socket as needed. Cancel-safe: what is not
    /// written yet stays queued. Small: on a TCP socket the future is a bare poll of the
    /// outbox; other transports' writes live in a box made when they start.
    async fn flush(&mut self, outbox: &Outbox) -> std::io::Result<()> {
        match self {
            Writer::Tcp(socket) => {
                std::future::poll_fn(|cx| outbox.poll_flush_direct(socket, cx)).await
            }
            Writer::Io(w) => Box::pin(w.flush(outbox)).await,
        }
    }

    /// Bytes written so far (the write deadline watches it for progress).
    fn progress(&self, outbox: &Outbox) -> u64 {
        match self {
            Writer::Tcp(_) => outbox.progress(),
            Writer::Io(w) => w.progress,
        }
    }
}

/// The deadlines of one connection (from [`crate::ServerConfig`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Ping a client that has sent nothing for this long; `None`: no pings and no liveness
    /// check.
    pub(crate) ping_interval: Option<Duration>,
    /// Drop a client from which nothing has come for this long (with pings on).
    pub(crate) liveness_timeout: Duration,
    /// Drop a connection whose socket takes none of the waiting bytes for this long.
    pub(crate) write_timeout: Duration,
}

/// What receives a connection's messages.
pub(crate) trait Peer: Send {
    /// A name for logs.
    fn label(&self) -> &str;
    /// A whole message from the client; `Ok(false)` if it was dropped (the rate limit, a
    /// binary message that is not UTF-8), `Err` when the receiver is gone.
    fn message(
        &mut self,
        payload: Bytes,
        text: bool,
    ) -> impl Future<Output = Result<bool, RoomGone>> + Send;
    /// Answer a drain of held reads.
    fn drained(&mut self, delivered: bool) -> impl Future<Output = Result<(), RoomGone>> + Send;
    /// The connection is over.
    fn disconnect(&mut self) -> impl Future<Output = ()> + Send;
}

/// The room as a connection's peer: messages pass the rate limit and go to its mailbox.
pub(crate) struct RoomPeer {
    room: RoomHandle,
    conn: ConnId,
    bucket: TokenBucket,
}

impl RoomPeer {
    pub(crate) fn new(room: RoomHandle, conn: ConnId, messages_per_second: u32) -> Self {
        Self {
            room,
            conn,
            bucket: TokenBucket::new(messages_per_second),
        }
    }
}

impl Peer for RoomPeer {
    fn label(&self) -> &str {
        self.room.id()
    }

    async fn message(&mut self, payload: Bytes, text: bool) -> Result<bool, RoomGone> {
        // Binary frames are read as UTF-8 text, like the Node adapter does; those that are not
        // UTF-8 are dropped.
        if !text && std::str::from_utf8(&payload).is_err() {
            return Ok(false);
        }
        if !self.bucket.take() {
            tracing::debug!(
                room = self.room.id(),
                conn = self.conn,
                "message dropped: rate limit"
            );
            return Ok(false);
        }
        self.room.message(self.conn, payload).await?;
        Ok(true)
    }

    async fn drained(&mut self, delivered: bool) -> Result<(), RoomGone> {
        self.room.drained(self.conn, delivered).await
    }

    async fn disconnect(&mut self) {
        self.room.disconnect(self.conn).await;
    }
}

/// What one connection task needs.
pub(crate) struct Connection<P> {
    pub(crate) reader: FrameReader,
    pub(crate) writer: Writer,
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) peer: P,
    pub(crate) shutdown: CancellationToken,
    pub(crate) limits: Limits,
}

/// Most messages one drain of held reads hands over; the rest waits for the next drain.
const DRAIN_MAX_MESSAGES: usize = 64;

/// What the connection does with what its reader returned.
enum Step {
    /// A message for the peer.
    Deliver(Bytes, bool),
    /// Nothing for the peer (a ping, answered).
    Skip,
    /// The connection is over (a close frame, answered; a protocol error, closed with its code).
    Stop,
}

fn step(read: Result<Incoming, ReadError>, outbox: &Outbox, label: &str) -> Step {
    match read {
        Ok(Incoming::Message { payload, text }) => Step::Deliver(payload, text),
        Ok(Incoming::Ping(payload)) => {
            outbox.pong(payload);
            Step::Skip
        }
        // The timer watches its deadline (see `run`).
        Ok(Incoming::Unfinished) => Step::Skip,
        Ok(Incoming::Close(code)) => {
            // The reply echoes the client's code (ignored if we closed first).
            outbox.close(CloseFrame {
                code: code.unwrap_or(1000),
                reason: String::new(),
            });
            Step::Stop
        }
        Err(e) => {
            if let Some(code) = e.close_code() {
                tracing::debug!(room = label, error = %e, "closing connection");
                outbox.close(CloseFrame {
                    code,
                    reason: e.to_string(),
                });
            }
            Step::Stop
        }
    }
}

/// How the connection's loop ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// A close frame is queued: write it (bounded), then close.
    Close,
    /// Drop the connection now (the socket failed, or a deadline passed).
    Abort,
}

/// `by` after `at`, or a year after it when that is later than a clock can say (a limit set
/// to `Duration::MAX` means "never", not a panic).
fn after(at: Instant, by: Duration) -> Instant {
    at.checked_add(by)
        .unwrap_or_else(|| at + Duration::from_secs(365 * 86_400))
}

/// The liveness and write deadlines of one connection, on one timer.
struct Deadlines {
    limits: Limits,
    /// While frames wait: when to look for progress, and the progress seen then.
    write: Option<(Instant, u64)>,
}

/// What a deadline check found.
enum Check {
    /// Look again at this instant.
    Next(Instant),
    /// Nothing has come from the client for the liveness timeout.
    Silent,
    /// The socket took no byte for the write timeout.
    Stuck,
    /// A frame or message was not finished by its deadline.
    Unfinished,
}

impl Deadlines {
    /// The first check of a connection that was last heard at `last_read`.
    fn first(&self, last_read: Instant) -> Instant {
        match self.limits.ping_interval {
            Some(interval) => after(last_read, interval),
            // Never, in effect; re-armed when a write deadline starts.
            None => after(last_read, Duration::MAX),
        }
    }

    /// Frames started to wait at `now`: watch the socket for progress.
    fn arm_write(&mut self, now: Instant, progress: u64) -> Instant {
        let at = after(now, self.limits.write_timeout);
        self.write = Some((at, progress));
        at
    }

    /// The timer fired at `now`. Pings a silent client (through `ping`).
    fn check(
        &mut self,
        now: Instant,
        last_read: Instant,
        frame_deadline: Option<Instant>,
        progress: Option<u64>,
        ping: impl FnOnce(),
    ) -> Check {
        if frame_deadline.is_some_and(|at| now >= at) {
            return Check::Unfinished;
        }
        let mut next = self.first(last_read);
        if let Some(interval) = self.limits.ping_interval {
            let silent = now.saturating_duration_since(last_read);
            let timeout = self.limits.liveness_timeout;
            if silent >= timeout {
                return Check::Silent;
            }
            if silent >= interval {
                ping();
            }
            // The next ping (one interval after this one), or the liveness deadline.
            let pings = silent.as_nanos() / interval.as_nanos().max(1) + 1;
            let wait = interval
                .checked_mul(u32::try_from(pings).unwrap_or(u32::MAX))
                .unwrap_or(timeout);
            next = after(last_read, wait.min(timeout));
        }
        if let Some(at) = frame_deadline {
            next = next.min(at);
        }
        match (self.write, progress) {
            (Some((at, seen)), Some(progress)) if now >= at && progress == seen => {
                return Check::Stuck;
            }
            // Progress since: a new deadline from now.
            (Some((at, _)), Some(progress)) if now >= at => {
                next = next.min(self.arm_write(now, progress));
            }
            (Some((at, _)), Some(_)) => next = next.min(at),
            // Nothing waits (any more).
            _ => self.write = None,
        }
        Check::Next(next)
    }
}

/// Drive one connection until either side closes, a deadline passes or the server shuts
/// down.
pub(crate) async fn run<P: Peer>(c: Connection<P>) {
    let Connection {
        mut reader,
        mut writer,
        outbox,
        mut peer,
        shutdown,
        limits,
    } = c;
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let mut shutting_down = false;
    // One waiter registration each for the life of the connection, renewed only when it fires.
    let woken = outbox.wake.notified();
    tokio::pin!(woken);
    let drain = outbox.drain.notified();
    tokio::pin!(drain);
    let mut deadlines = Deadlines {
        limits,
        write: None,
    };
    let timer = tokio::time::sleep_until(deadlines.first(reader.last_read()));
    tokio::pin!(timer);
    // Frames wait in the outbox: the flush branch runs until they are written.
    let mut flushing = false;
    let end = loop {
        tokio::select! {
            biased;
            () = &mut woken => {
                woken.set(outbox.wake.notified());
                if outbox.is_closing() {
                    break End::Close;
                }
                if !flushing {
                    flushing = true;
                    let at = deadlines.arm_write(Instant::now(), writer.progress(&outbox));
                    if at < timer.deadline() {
                        timer.as_mut().reset(at);
                    }
                }
            }
            flushed = writer.flush(&outbox), if flushing => {
                if flushed.is_err() {
                    break End::Abort;
                }
                // Everything is written; what a producer queues from now on wakes the task.
                flushing = false;
                deadlines.write = None;
            }
            () = &mut drain => {
                // Held reads (see `low_water`): hand over what arrived, then answer.
                drain.set(outbox.drain.notified());
                let mut delivered = false;
                let mut over = false;
                reader.begin_drain();
                for _ in 0..DRAIN_MAX_MESSAGES {
                    let Some(read) = reader.try_next().transpose() else {
                        break;
                    };
                    let (payload, text) = match step(read, &outbox, peer.label()) {
                        Step::Deliver(payload, text) => (payload, text),
                        Step::Skip => continue,
                        Step::Stop => {
                            over = true;
                            break;
                        }
                    };
                    match peer.message(payload, text).await {
                        Ok(true) => delivered = true,
                        Ok(false) => continue,
                        Err(RoomGone) => {
                            over = true;
                            break;
                        }
                    }
                    #[cfg(test)]
                    tests::DRAINED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                // When the connection is over, its disconnect answers for it.
                if over || peer.drained(delivered).await.is_err() {
                    break End::Close;
                }
            }
            () = &mut cancelled, if !shutting_down => {
                shutting_down = true;
                outbox.close(CloseFrame::going_away());
            }
            () = &mut timer => {
                let progress = flushing.then(|| writer.progress(&outbox));
                let frame = reader.frame_deadline();
                match deadlines.check(Instant::now(), reader.last_read(), frame, progress, || {
                    outbox.ping(Bytes::new());
                }) {
                    Check::Next(at) => timer.as_mut().reset(at),
                    Check::Unfinished => {
                        // Closed with the timeout's code, as any read error.
                        step(Err(ReadError::Timeout), &outbox, peer.label());
                        break End::Close;
                    }
                    Check::Silent => {
                        tracing::debug!(room = peer.label(), "closing connection: no answer to pings");
                        // Goes out only if the socket takes it at once.
                        outbox.close(CloseFrame {
                            code: 1001,
                            reason: "no answer to pings".into(),
                        });
                        break End::Abort;
                    }
                    Check::Stuck => {
                        tracing::debug!(room = peer.label(), "dropping connection: the client stopped reading");
                        break End::Abort;
                    }
                }
            }
            read = reader.next() => {
                if matches!(read, Ok(Incoming::Unfinished))
                    && let Some(at) = reader.frame_deadline()
                    && at < timer.deadline()
                {
                    timer.as_mut().reset(at);
                }
                let (payload, text) = match step(read, &outbox, peer.label()) {
                    Step::Deliver(payload, text) => (payload, text),
                    Step::Skip => continue,
                    Step::Stop => break End::Close,
                };
                if peer.message(payload, text).await.is_err() {
                    break End::Close;
                }
            }
        }
    };
    finish(end, &mut writer, &outbox).await;
    // The descriptor closes now, even if the peer takes its time to let the connection go.
    drop((reader, writer));
    peer.disconnect().await;
}

/// End a connection: a closing one has [`CLOSE_FLUSH_TIMEOUT`] to write its last frames
/// (the close frame last), and is reset if they do not get out; an aborted one is reset at
/// once.
async fn finish(end: End, writer: &mut Writer, outbox: &Outbox) {
    if end == End::Close {
        let flushed = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, writer.flush(outbox)).await;
        if matches!(flushed, Ok(Ok(()))) {
            outbox.shut();
            return;
        }
    }
    outbox.abort();
}

/// Send `frame` as the only thing on a connection that never joined a room, then end it.
pub(crate) async fn refuse(mut writer: Writer, outbox: &Outbox, frame: CloseFrame) {
    outbox.close(frame);
    finish(End::Close, &mut writer, outbox).await;
}

/// A token bucket: `rate` tokens per second, holding at most `2 * rate`.
struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: tokio::time::Instant,
}

impl TokenBucket {
    fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        Self {
            rate,
            tokens: rate * 2.0,
            last: tokio::time::Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate * 2.0);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TokenBucket;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use futures_util::{FutureExt, SinkExt, StreamExt};
    use partyroom_room::{Handlers, Room, RoomConfig, Rooms};
    use partyroom_state::State;
    use serde_json::Value;
    use tokio_tungstenite::tungstenite::Message;

    /// Messages handed to a room by drains of held reads, so far.
    pub(super) static DRAINED: AtomicUsize = AtomicUsize::new(0);

    #[derive(State, Default, Clone)]
    struct Tally {
        count: i64,
    }

    impl Room for Tally {
        fn config() -> RoomConfig {
            RoomConfig::new("tally").throttle_sync(Duration::from_millis(16))
        }
        fn handlers(h: &mut Handlers<Self>) {
            h.action("inc", |t: &mut Self, _cx, ()| t.count += 1);
        }
    }

    /// A server with the `Tally` room on 127.0.0.1:0, until the sender is used or dropped.
    async fn serve_tally() -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let rooms = Rooms::builder().room::<Tally>("main").unwrap().build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(crate::Server::new(rooms).serve(listener, async move {
            let _ = stopped.await;
        }));
        (addr, stop)
    }

    /// Clients that send in every window have their reads held and drained at each window's
    /// end (over real sockets); no message is lost, pings are still answered, and the last
    /// messages arrive although nothing signals them.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn held_reads_over_real_sockets_lose_nothing() {
        const CLIENTS: usize = 4;
        const EACH: usize = 120;
        let (addr, stop) = serve_tally().await;
        let raised = crate::low_water::RAISED.load(Ordering::Relaxed);
        let drained = DRAINED.load(Ordering::Relaxed);
        let mut senders = Vec::new();
        for _ in 0..CLIENTS {
            let url = format!("ws://{addr}/parties/main/tally");
            // Nagle off, as in browsers and `ws` (see the test below).
            let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
                .await
                .unwrap();
            senders.push(tokio::spawn(async move {
                let (mut tx, mut rx) = ws.split();
                let inc = r#"{"action":"inc","value":null}"#;
                let total = (CLIENTS * EACH) as i64;
                // Pongs, and whether a patch showed the final count (it can come while this
                // client still reads between its sends).
                let (mut pongs, mut complete) = (0, false);
                let on_frame = |m: Message, pongs: &mut usize, complete: &mut bool| match m {
                    Message::Pong(_) => *pongs += 1,
                    Message::Text(t) => {
                        let v: Value = serde_json::from_str(&t).unwrap();
                        *complete |= v["value"]["count"].as_i64() == Some(total);
                    }
                    _ => {}
                };
                for i in 0..EACH {
                    tx.send(Message::text(inc)).await.unwrap();
                    if i % 40 == 0 {
                        tx.send(Message::Ping(vec![1, 2, 3].into())).await.unwrap();
                    }
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    while let Some(Some(Ok(m))) = rx.next().now_or_never() {
                        on_frame(m, &mut pongs, &mut complete);
                    }
                }
                // Read until the room has counted every client's messages.
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    while !complete {
                        match rx.next().await {
                            Some(Ok(m)) => on_frame(m, &mut pongs, &mut complete),
                            _ => break,
                        }
                    }
                })
                .await;
                (complete, pongs)
            }));
        }
        for s in senders {
            let (complete, pongs) = s.await.unwrap();
            assert!(complete, "every message counted");
            assert_eq!(pongs, EACH.div_ceil(40), "every ping answered");
        }
        assert!(
            crate::low_water::RAISED.load(Ordering::Relaxed) > raised,
            "steady senders have their reads held"
        );
        assert!(
            DRAINED.load(Ordering::Relaxed) > drained,
            "held messages are delivered by drains"
        );
        let _ = stop.send(());
    }

    /// A client whose reads are held breaks the protocol (an unmasked frame): the drain reads
    /// it like any other read, and the connection is closed with 1002.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_protocol_error_in_held_data_closes_with_its_code() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (addr, stop) = serve_tally().await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        // As browsers and `ws` do: with Nagle, the frames would wait in the client for an ACK
        // that a held connection sends only with the window's patch.
        s.set_nodelay(true).unwrap();
        s.write_all(
            b"GET /parties/main/tally HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\
              Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
        let inc = br#"{"action":"inc","value":null}"#;
        let mask = [1u8, 2, 3, 4];
        let mut masked = vec![0x81, 0x80 | inc.len() as u8];
        masked.extend_from_slice(&mask);
        masked.extend(inc.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        // Steady sends: the reads are held after the second window.
        for _ in 0..60 {
            s.write_all(&masked).await.unwrap();
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        let mut unmasked = vec![0x81, inc.len() as u8];
        unmasked.extend_from_slice(inc);
        s.write_all(&unmasked).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        // Walk the server's frames after the HTTP response to its close frame.
        let mut at = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let mut code = None;
        while at + 2 <= out.len() {
            let (op, len) = (out[at] & 0x0F, usize::from(out[at + 1] & 0x7F));
            let (len, header) = match len {
                126 => (
                    usize::from(u16::from_be_bytes([out[at + 2], out[at + 3]])),
                    4,
                ),
                127 => (
                    usize::try_from(u64::from_be_bytes(out[at + 2..at + 10].try_into().unwrap()))
                        .unwrap(),
                    10,
                ),
                n => (n, 2),
            };
            if op == 0x8 {
                code = Some(u16::from_be_bytes([out[at + header], out[at + header + 1]]));
                break;
            }
            at += header + len;
        }
        assert_eq!(code, Some(1002), "closed with the protocol error's code");
        let _ = stop.send(());
    }

    fn deadlines(ping: Option<u64>) -> super::Deadlines {
        super::Deadlines {
            limits: super::Limits {
                ping_interval: ping.map(Duration::from_secs),
                liveness_timeout: Duration::from_secs(60),
                write_timeout: Duration::from_secs(10),
            },
            write: None,
        }
    }

    fn next(check: super::Check) -> tokio::time::Instant {
        match check {
            super::Check::Next(at) => at,
            super::Check::Silent => panic!("silent"),
            super::Check::Stuck => panic!("stuck"),
            super::Check::Unfinished => panic!("unfinished"),
        }
    }

    /// A silent client is pinged at 25 s and 50 s after it was last heard, and found silent at
    /// 60 s; one heard meanwhile is not pinged and its next check moves with it.
    #[tokio::test(start_paused = true)]
    async fn silent_clients_are_pinged_each_interval_until_the_timeout() {
        let t0 = tokio::time::Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut d = deadlines(Some(25));
        assert_eq!(d.first(t0), s(25));
        let mut pings = 0;
        assert_eq!(next(d.check(s(25), t0, None, None, || pings += 1)), s(50));
        assert_eq!(next(d.check(s(50), t0, None, None, || pings += 1)), s(60));
        assert_eq!(pings, 2);
        assert!(matches!(
            d.check(s(60), t0, None, None, || pings += 1),
            super::Check::Silent
        ));
        // Heard at 20 s: nothing to do at 25 s, the next check is at 45 s.
        let mut pinged = false;
        assert_eq!(
            next(d.check(s(25), s(20), None, None, || pinged = true)),
            s(45)
        );
        assert!(!pinged);
        // No pings: no liveness check either, however long the silence.
        let mut off = deadlines(None);
        assert!(matches!(
            off.check(s(86_400), t0, None, None, || pinged = true),
            super::Check::Next(_)
        ));
        assert!(!pinged);
    }

    /// An unfinished frame's deadline is watched too: looked at by then, and past it the
    /// frame is late.
    #[tokio::test(start_paused = true)]
    async fn an_unfinished_frame_is_late_after_its_deadline() {
        let t0 = tokio::time::Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut d = deadlines(Some(25));
        assert_eq!(next(d.check(s(1), s(1), Some(s(15)), None, || {})), s(15));
        assert!(matches!(
            d.check(s(15), s(14), Some(s(15)), None, || {}),
            super::Check::Unfinished
        ));
    }

    /// Limits of `Duration::MAX` mean never: no deadline overflows the clock.
    #[tokio::test(start_paused = true)]
    async fn limits_of_duration_max_never_fire() {
        let t0 = tokio::time::Instant::now();
        let mut d = super::Deadlines {
            limits: super::Limits {
                ping_interval: Some(Duration::MAX),
                liveness_timeout: Duration::MAX,
                write_timeout: Duration::MAX,
            },
            write: None,
        };
        assert!(d.first(t0) > t0);
        assert!(d.arm_write(t0, 0) > t0);
        let later = t0 + Duration::from_secs(3600);
        assert!(next(d.check(later, t0, None, Some(0), || panic!("no ping"))) > later);
    }

    /// The write deadline: no byte written in the write timeout is stuck; progress re-arms it.
    #[tokio::test(start_paused = true)]
    async fn a_write_without_progress_for_the_timeout_is_stuck() {
        let t0 = tokio::time::Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut d = deadlines(Some(25));
        assert_eq!(d.arm_write(t0, 5), s(10));
        // Before the deadline: look again at it.
        assert_eq!(next(d.check(s(5), s(5), None, Some(5), || {})), s(10));
        // Progress by then: a new deadline from now.
        assert_eq!(next(d.check(s(10), s(10), None, Some(9), || {})), s(20));
        assert!(matches!(
            d.check(s(20), s(20), None, Some(9), || {}),
            super::Check::Stuck
        ));
        // Flushed meanwhile (no progress to watch): the write deadline is gone.
        d.arm_write(s(20), 9);
        assert_eq!(next(d.check(s(30), s(30), None, None, || {})), s(55));
        assert!(d.write.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_bursts_then_the_rate() {
        let mut b = TokenBucket::new(10);
        assert_eq!(
            (0..30).filter(|_| b.take()).count(),
            20,
            "burst of 2x the rate"
        );
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(
            (0..30).filter(|_| b.take()).count(),
            5,
            "then 10 per second"
        );
    }
}
