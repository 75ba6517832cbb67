//! One task per WebSocket connection: reads client frames into the room's mailbox, and writes
//! the frames its [`Outbox`] could not write at once.

use std::sync::Arc;
use std::time::Duration;

use partyroom_room::{CloseFrame, ConnId, ConnectionSink, RoomHandle};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio_util::sync::CancellationToken;

use crate::frame_reader::{FrameReader, Incoming};
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
    // One waiter registration for the life of the connection, renewed only when it fires.
    let woken = outbox.wake.notified();
    tokio::pin!(woken);
    loop {
        tokio::select! {
            biased;
            () = &mut woken => {
                woken.set(outbox.wake.notified());
                if writer.flush(&outbox).await.is_err() || outbox.closed_and_flushed() {
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
            incoming = reader.next() => {
                let text = match incoming {
                    Ok(Incoming::Message { payload, text }) => {
                        // Binary frames are read as UTF-8 text, like the Node adapter does;
                        // those that are not UTF-8 are dropped.
                        if !text && std::str::from_utf8(&payload).is_err() {
                            continue;
                        }
                        payload
                    }
                    Ok(Incoming::Ping(payload)) => {
                        outbox.pong(payload);
                        continue;
                    }
                    Ok(Incoming::Close(code)) => {
                        // The reply echoes the client's code (ignored if we closed first).
                        outbox.close(CloseFrame {
                            code: code.unwrap_or(1000),
                            reason: String::new(),
                        });
                        break;
                    }
                    Err(e) => {
                        if let Some(code) = e.close_code() {
                            tracing::debug!(room = room.id(), conn, error = %e, "closing connection");
                            outbox.close(CloseFrame {
                                code,
                                reason: e.to_string(),
                            });
                        }
                        break;
                    }
                };
                if !bucket.take() {
                    tracing::debug!(room = room.id(), conn, "message dropped: rate limit");
                    continue;
                }
                if room.message(conn, text).await.is_err() {
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
    use std::time::Duration;

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
