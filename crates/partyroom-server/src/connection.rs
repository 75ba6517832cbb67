//! One task per WebSocket connection: reads client frames into the room's mailbox, and writes
//! the frames its [`Outbox`] could not write at once.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use partyroom_room::{CloseFrame, ConnId, ConnectionSink, RoomGone, RoomHandle};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
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
    Io(Box<dyn AsyncWrite + Send + Unpin>),
}

impl Writer {
    async fn flush(&mut self, outbox: &Outbox) -> std::io::Result<()> {
        match self {
            Writer::Tcp(socket) => outbox.flush_direct(socket).await,
            Writer::Io(io) => loop {
                let chunks = outbox.take_queued();
                if chunks.is_empty() {
                    return io.flush().await;
                }
                for chunk in chunks {
                    io.write_all(&chunk).await?;
                }
            },
        }
    }
}

/// What one connection task needs.
pub(crate) struct Connection {
    pub(crate) reader: FrameReader,
    pub(crate) writer: Writer,
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) room: RoomHandle,
    pub(crate) conn: ConnId,
    pub(crate) shutdown: CancellationToken,
    pub(crate) messages_per_second: u32,
}

/// Most messages one drain of held reads hands over; the rest waits for the next drain.
const DRAIN_MAX_MESSAGES: usize = 64;

/// What the connection does with what its reader returned.
enum Step {
    /// A message for the room.
    Deliver(Bytes),
    /// Nothing for the room (a ping, answered; a binary frame that is not UTF-8, dropped).
    Skip,
    /// The connection is over (a close frame, answered; a protocol error, closed with its code).
    Stop,
}

fn step(
    read: Result<Incoming, ReadError>,
    outbox: &Outbox,
    room: &RoomHandle,
    conn: ConnId,
) -> Step {
    match read {
        Ok(Incoming::Message { payload, text }) => {
            // Binary frames are read as UTF-8 text, like the Node adapter does; those that are
            // not UTF-8 are dropped.
            if !text && std::str::from_utf8(&payload).is_err() {
                return Step::Skip;
            }
            Step::Deliver(payload)
        }
        Ok(Incoming::Ping(payload)) => {
            outbox.pong(payload);
            Step::Skip
        }
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
                tracing::debug!(room = room.id(), conn, error = %e, "closing connection");
                outbox.close(CloseFrame {
                    code,
                    reason: e.to_string(),
                });
            }
            Step::Stop
        }
    }
}

/// Hand a client's message to the room unless the rate limit drops it: `Ok(false)` when
/// dropped, `Err` when the room is gone.
async fn deliver(
    bucket: &mut TokenBucket,
    room: &RoomHandle,
    conn: ConnId,
    text: Bytes,
) -> Result<bool, RoomGone> {
    if !bucket.take() {
        tracing::debug!(room = room.id(), conn, "message dropped: rate limit");
        return Ok(false);
    }
    room.message(conn, text).await?;
    Ok(true)
}

/// Drive one connected client until either side closes or the server shuts down.
pub(crate) async fn run(c: Connection) {
    let Connection {
        mut reader,
        mut writer,
        outbox,
        room,
        conn,
        shutdown,
        messages_per_second,
    } = c;
    let mut bucket = TokenBucket::new(messages_per_second);
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let mut shutting_down = false;
    // One waiter registration each for the life of the connection, renewed only when it fires.
    let woken = outbox.wake.notified();
    tokio::pin!(woken);
    let drain = outbox.drain.notified();
    tokio::pin!(drain);
    loop {
        tokio::select! {
            biased;
            () = &mut woken => {
                woken.set(outbox.wake.notified());
                if writer.flush(&outbox).await.is_err() || outbox.closed_and_flushed() {
                    break;
                }
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
                    let text = match step(read, &outbox, &room, conn) {
                        Step::Deliver(text) => text,
                        Step::Skip => continue,
                        Step::Stop => {
                            over = true;
                            break;
                        }
                    };
                    match deliver(&mut bucket, &room, conn, text).await {
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
                if over || room.drained(conn, delivered).await.is_err() {
                    break;
                }
            }
            () = &mut cancelled, if !shutting_down => {
                shutting_down = true;
                outbox.close(CloseFrame {
                    code: 1001,
                    reason: "server shutting down".into(),
                });
            }
            read = reader.next() => {
                let text = match step(read, &outbox, &room, conn) {
                    Step::Deliver(text) => text,
                    Step::Skip => continue,
                    Step::Stop => break,
                };
                if deliver(&mut bucket, &room, conn, text).await.is_err() {
                    break;
                }
            }
        }
    }
    // The close frame (ours or the reply to the client's) goes out before the socket closes.
    let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, writer.flush(&outbox)).await;
    outbox.shut();
    room.disconnect(conn).await;
}

/// Send `frame` as the only thing on a connection that never joined a room, then end it.
pub(crate) async fn refuse(mut writer: Writer, outbox: &Outbox, frame: CloseFrame) {
    outbox.close(frame);
    let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, writer.flush(outbox)).await;
    outbox.shut();
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
