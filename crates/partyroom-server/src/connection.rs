//! One task per WebSocket connection: reads client frames into the room's mailbox and writes
//! the room's frames to the socket.

use axum::extract::ws::{CloseFrame as WsCloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use partyroom_room::{CloseFrame, ConnId, ConnectionChannels, RoomHandle};
use tokio_util::sync::CancellationToken;

/// Drive one accepted connection until either side closes or the server shuts down.
pub(crate) async fn run(
    socket: WebSocket,
    room: RoomHandle,
    conn: ConnId,
    channels: ConnectionChannels,
    shutdown: CancellationToken,
    messages_per_second: u32,
) {
    let mut bucket = TokenBucket::new(messages_per_second);
    let (mut sink, mut stream) = socket.split();
    let ConnectionChannels {
        mut frames,
        mut close,
    } = channels;

    let writer = async {
        loop {
            tokio::select! {
                frame = frames.recv() => {
                    let Some(frame) = frame else { break };
                    if feed(&mut sink, frame).await.is_err() {
                        return;
                    }
                    // Write everything already queued, then flush once.
                    while let Ok(frame) = frames.try_recv() {
                        if feed(&mut sink, frame).await.is_err() {
                            return;
                        }
                    }
                    if sink.flush().await.is_err() {
                        return;
                    }
                }
                reason = &mut close => {
                    if let Ok(reason) = reason {
                        let _ = sink.send(close_message(reason)).await;
                    }
                    return;
                }
                () = shutdown.cancelled() => {
                    let _ = sink.send(close_message(CloseFrame {
                        code: 1001,
                        reason: "server shutting down".into(),
                    })).await;
                    return;
                }
            }
        }
    };

    let reader = async {
        while let Some(msg) = stream.next().await {
            let text: Bytes = match msg {
                Ok(Message::Text(t)) => t.into(),
                // Binary frames are read as UTF-8 text, like the Node adapter does.
                Ok(Message::Binary(b)) => match std::str::from_utf8(&b) {
                    Ok(_) => b,
                    Err(_) => continue,
                },
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            if !bucket.take() {
                tracing::debug!(room = room.id(), conn, "message dropped: rate limit");
                continue;
            }
            if room.message(conn, text).await.is_err() {
                break;
            }
        }
    };

    tokio::select! {
        () = writer => {}
        () = reader => {}
    }
    room.disconnect(conn).await;
}

async fn feed(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    frame: Bytes,
) -> Result<(), axum::Error> {
    match Utf8Bytes::try_from(frame) {
        Ok(text) => sink.feed(Message::Text(text)).await,
        // The room only produces JSON text; anything else is a bug, not worth a disconnect.
        Err(_) => Ok(()),
    }
}

pub(crate) fn close_message(frame: CloseFrame) -> Message {
    let mut reason = frame.reason;
    // A close reason is at most 123 bytes on the wire.
    while reason.len() > 123 {
        reason.pop();
    }
    Message::Close(Some(WsCloseFrame {
        code: frame.code,
        reason: Utf8Bytes::from(reason),
    }))
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
