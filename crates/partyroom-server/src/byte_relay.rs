//! The WebSocket relay from a cluster node to a room's owner, at the byte level.
//!
//! Both ends speak the same protocol to the relay as to each other: the client's frames are
//! masked, as the owner expects from a client, and the owner's are not, as the client
//! expects from a server. So once both handshakes are done, the relay copies bytes, in
//! whatever chunks the sockets give, without parsing or re-encoding a frame: one read and
//! one write per chunk, each way. The owner's pings reach the client and its pongs come back,
//! so the owner's own liveness checks, size limits and slow-client policy apply to the
//! client end to end; the relay only bounds each write by the write timeout.
//!
//! [`FrameCursor`] follows where each stream's frames begin, from their headers alone, so the
//! relay can add a frame of its own between two frames: a close 1001 to the client (and a
//! close to the owner) when this node shuts down, a close 1012 when the owner's connection
//! breaks without one.
//!
//! The shard gateway, whose upstream is not always a partyroom node, keeps the frame-level
//! relay of [`crate::relay`] with liveness checks of its own.

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use partyroom_room::CloseFrame;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_util::sync::CancellationToken;

use crate::http_client::BaseUrl;
use crate::outbox::close_payload;
use crate::relay::{HeaderPolicy, relayed};

/// Largest refusal body taken from the owner.
const MAX_REFUSAL_BODY: usize = 64 << 10;

/// Bytes read at once, each way.
const CHUNK: usize = 16 << 10;

/// How long a closing relay may take to finish the frames under way and send its close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What opening the upstream socket gave.
#[derive(Debug)]
pub(crate) enum RawUpstream {
    /// Upgraded: the socket, and what the owner already sent after its `101`.
    Open(TcpStream, Bytes),
    /// The owner answered with an HTTP refusal: answer the client the same.
    Refused(Response),
    /// The owner could not be reached or did not answer in time.
    Failed(String),
}

/// Open a WebSocket to `base` + `path_and_query` with the client's headers (trusted: the
/// caller checked them) and `extra` ones, within `timeout`.
pub(crate) async fn connect(
    base: &BaseUrl,
    path_and_query: &str,
    client_headers: &HeaderMap,
    extra: &HeaderMap,
    timeout: Duration,
) -> RawUpstream {
    match tokio::time::timeout(timeout, open(base, path_and_query, client_headers, extra)).await {
        Ok(Ok(up)) => up,
        Ok(Err(e)) => RawUpstream::Failed(e),
        Err(_) => RawUpstream::Failed("timed out".into()),
    }
}

async fn open(
    base: &BaseUrl,
    path_and_query: &str,
    client_headers: &HeaderMap,
    extra: &HeaderMap,
) -> Result<RawUpstream, String> {
    let tcp = TcpStream::connect(base.authority())
        .await
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    // Drives the connection until the upgrade hands the socket over (or the answer is read).
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let key = generate_key();
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(path_and_query)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let h = request.headers_mut();
    for (name, value) in client_headers {
        if relayed(name, HeaderPolicy::Trusted) {
            h.append(name.clone(), value.clone());
        }
    }
    for (name, value) in extra {
        h.insert(name.clone(), value.clone());
    }
    let host = HeaderValue::from_str(base.authority()).map_err(|e| e.to_string())?;
    h.insert(header::HOST, host);
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_VERSION,
        HeaderValue::from_static("13"),
    );
    h.insert(
        header::SEC_WEBSOCKET_KEY,
        HeaderValue::from_str(&key).map_err(|e| e.to_string())?,
    );
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_REFUSAL_BODY)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let mut out = Response::new(Body::from(body));
        *out.status_mut() = parts.status;
        for (name, value) in &parts.headers {
            if relayed(name, HeaderPolicy::FromClient) {
                out.headers_mut().append(name.clone(), value.clone());
            }
        }
        return Ok(RawUpstream::Refused(out));
    }
    let accepted = response
        .headers()
        .get(header::SEC_WEBSOCKET_ACCEPT)
        .is_some_and(|v| v.as_bytes() == derive_accept_key(key.as_bytes()).as_bytes());
    if !accepted {
        return Err("the owner's 101 has a wrong Sec-WebSocket-Accept".into());
    }
    let upgraded = hyper::upgrade::on(response)
        .await
        .map_err(|e| e.to_string())?;
    let parts = upgraded
        .downcast::<TokioIo<TcpStream>>()
        .map_err(|_| "the upgraded connection is not a TCP stream".to_owned())?;
    Ok(RawUpstream::Open(parts.io.into_inner(), parts.read_buf))
}

/// Relay between the upgraded client connection and the owner's socket until either side
/// closes, a write takes longer than `write_timeout`, or `shutdown` (then both get a close).
pub(crate) async fn run(
    client: Upgraded,
    upstream: TcpStream,
    upstream_sent: Bytes,
    shutdown: CancellationToken,
    write_timeout: Duration,
) {
    let (client, client_sent): (Box<dyn Duplex>, Bytes) =
        match client.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => (Box::new(parts.io.into_inner()), parts.read_buf),
            Err(other) => (Box::new(TokioIo::new(other)), Bytes::new()),
        };
    pump(
        client,
        client_sent,
        upstream,
        upstream_sent,
        shutdown,
        write_timeout,
    )
    .await;
}

/// A bidirectional byte stream.
trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The owner's side closed or failed.
    Upstream,
    /// The client's side closed or failed.
    Client,
    /// A write did not finish in time.
    Stuck,
    /// This node shuts down.
    Shutdown,
}

/// Write all of `bytes` to the side that a failure names (`failed`), within `timeout`.
async fn write(
    to: &mut (impl AsyncWrite + Unpin),
    bytes: &[u8],
    timeout: Duration,
    failed: End,
) -> Result<(), End> {
    match tokio::time::timeout(timeout, to.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(failed),
        Err(_) => Err(End::Stuck),
    }
}

async fn pump<
    C: AsyncRead + AsyncWrite + Unpin + Send,
    U: AsyncRead + AsyncWrite + Unpin + Send,
>(
    client: C,
    client_sent: Bytes,
    upstream: U,
    upstream_sent: Bytes,
    shutdown: CancellationToken,
    write_timeout: Duration,
) {
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut ur, mut uw) = tokio::io::split(upstream);
    // Where the owner's frames (to the client) and the client's (to the owner) are.
    let mut down = FrameCursor::default();
    let mut up = FrameCursor::default();
    let mut down_buf = vec![0u8; CHUNK];
    let mut up_buf = vec![0u8; CHUNK];
    let end = async {
        if !upstream_sent.is_empty() {
            write(&mut cw, &upstream_sent, write_timeout, End::Client).await?;
            down.feed(&upstream_sent);
        }
        if !client_sent.is_empty() {
            write(&mut uw, &client_sent, write_timeout, End::Upstream).await?;
            up.feed(&client_sent);
        }
        // Reads are cancel-safe; each write runs to its end (or its timeout) before the next
        // read, so the cursors always say where the streams are.
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Err::<std::convert::Infallible, End>(End::Shutdown),
                r = ur.read(&mut down_buf) => {
                    let n = match r { Ok(0) | Err(_) => return Err(End::Upstream), Ok(n) => n };
                    write(&mut cw, &down_buf[..n], write_timeout, End::Client).await?;
                    down.feed(&down_buf[..n]);
                }
                r = cr.read(&mut up_buf) => {
                    let n = match r { Ok(0) | Err(_) => return Err(End::Client), Ok(n) => n };
                    write(&mut uw, &up_buf[..n], write_timeout, End::Upstream).await?;
                    up.feed(&up_buf[..n]);
                }
            }
        }
    }
    .await;
    let end = match end {
        Ok(never) => match never {},
        Err(end) => end,
    };
    let closing = async {
        match end {
            End::Upstream => {
                // The owner went away without a close frame: tell the client to reconnect.
                if down.at_boundary() && !down.saw_close {
                    let _ = cw
                        .write_all(&server_close(1012, "upstream connection lost"))
                        .await;
                }
                let _ = cw.shutdown().await;
            }
            End::Client => {
                if up.at_boundary() && !up.saw_close {
                    let _ = uw.write_all(&CLIENT_CLOSE).await;
                }
                let _ = uw.shutdown().await;
            }
            End::Stuck => {}
            End::Shutdown => {
                // Finish the frames under way, then close both sides.
                if finish_frame(&mut ur, &mut cw, &mut down, &mut down_buf).await && !down.saw_close
                {
                    let _ = cw
                        .write_all(&server_close(1001, "server shutting down"))
                        .await;
                }
                if finish_frame(&mut cr, &mut uw, &mut up, &mut up_buf).await && !up.saw_close {
                    let _ = uw.write_all(&CLIENT_CLOSE).await;
                }
                let _ = cw.shutdown().await;
                let _ = uw.shutdown().await;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
}

/// Copy from `from` to `to` until `cursor` is at a frame boundary; false if the stream
/// ended or failed first.
async fn finish_frame(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    cursor: &mut FrameCursor,
    buf: &mut [u8],
) -> bool {
    while !cursor.at_boundary() {
        let want = usize::try_from(cursor.until_boundary())
            .unwrap_or(usize::MAX)
            .clamp(1, buf.len());
        let n = match from.read(&mut buf[..want]).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            return false;
        }
        cursor.feed(&buf[..n]);
    }
    true
}

/// A close frame from the server side (unmasked) with `code` and `reason`; the payload is
/// the server's own ([`close_payload`], at most 125 bytes, so one length byte).
fn server_close(code: u16, reason: &str) -> Vec<u8> {
    let payload = close_payload(&CloseFrame {
        code,
        reason: reason.into(),
    });
    let mut frame = Vec::with_capacity(2 + payload.len());
    frame.push(0x88);
    frame.push(payload.len() as u8);
    frame.extend_from_slice(&payload);
    frame
}

/// A close frame from the client side: masked, no payload (so the mask changes nothing).
const CLIENT_CLOSE: [u8; 6] = [0x88, 0x80, 0, 0, 0, 0];

/// Where the frames of a WebSocket byte stream begin: fed every byte in order, it knows
/// whether the stream is between two frames, from the frame headers alone (RFC 6455 5.2).
#[derive(Debug, Default, Clone)]
pub(crate) struct FrameCursor {
    /// The bytes of a header read so far (at most 14).
    header: [u8; 14],
    /// How many of them.
    have: usize,
    /// Payload bytes left in the current frame.
    remaining: u64,
    /// A close frame (opcode 8) has begun.
    pub(crate) saw_close: bool,
}

impl FrameCursor {
    /// The length of the header whose first bytes are `self.header[..self.have]`, as far as
    /// they tell (2 until the second byte is known).
    fn header_len(&self) -> usize {
        if self.have < 2 {
            return 2;
        }
        let b1 = self.header[1];
        let ext = match b1 & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
        2 + ext + mask
    }

    /// Whether the stream is between two frames.
    pub(crate) fn at_boundary(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }

    /// Bytes that can be read without passing the end of the current frame.
    pub(crate) fn until_boundary(&self) -> u64 {
        if self.have > 0 || self.remaining == 0 {
            (self.header_len() - self.have) as u64
        } else {
            self.remaining
        }
    }

    /// Account for the next bytes of the stream.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let n = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.remaining -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            // In a header.
            let need = self.header_len() - self.have;
            let n = need.min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have < self.header_len() {
                continue;
            }
            let h = &self.header[..self.have];
            let len = match h[1] & 0x7F {
                126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
                127 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
                n => u64::from(n),
            };
            if h[0] & 0x0F == 0x8 {
                self.saw_close = true;
            }
            self.have = 0;
            self.remaining = len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame of `len` payload bytes, masked or not.
    fn frame(opcode: u8, len: usize, masked: bool) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        let m = if masked { 0x80 } else { 0 };
        if len < 126 {
            f.push(m | len as u8);
        } else if len <= 0xFFFF {
            f.push(m | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            f.push(m | 127);
            f.extend_from_slice(&(len as u64).to_be_bytes());
        }
        if masked {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend(std::iter::repeat_n(b'x', len));
        f
    }

    #[test]
    fn cursor_finds_every_boundary_whatever_the_chunks() {
        let frames = [
            frame(1, 0, false),
            frame(1, 5, true),
            frame(2, 125, false),
            frame(2, 126, true),
            frame(1, 70_000, false),
            frame(9, 3, true),
            frame(8, 2, false),
        ];
        let stream: Vec<u8> = frames.concat();
        let mut ends = std::collections::BTreeSet::new();
        let mut at = 0;
        for f in &frames {
            at += f.len();
            ends.insert(at);
        }
        for chunk in [1, 2, 3, 7, 13, 100, 4096, stream.len()] {
            let mut c = FrameCursor::default();
            let mut pos = 0;
            for piece in stream.chunks(chunk) {
                c.feed(piece);
                pos += piece.len();
                assert_eq!(
                    c.at_boundary(),
                    ends.contains(&pos),
                    "chunk {chunk}, at byte {pos}"
                );
            }
            assert!(c.saw_close);
        }
    }

    #[test]
    fn until_boundary_never_passes_the_frame_end() {
        let stream = [frame(1, 300, true), frame(1, 4, false)].concat();
        let mut c = FrameCursor::default();
        let mut pos = 0;
        while pos < stream.len() {
            let n = usize::try_from(c.until_boundary()).unwrap().clamp(1, 50);
            c.feed(&stream[pos..pos + n]);
            pos += n;
            if pos == 2 + 2 + 4 + 300 {
                assert!(c.at_boundary(), "the first frame ends at {pos}");
            }
        }
        assert!(c.at_boundary());
    }

    #[test]
    fn close_frames_are_what_the_rfc_says() {
        let f = server_close(1001, "bye");
        assert_eq!(f, [0x88, 5, 0x03, 0xE9, b'b', b'y', b'e']);
        let mut c = FrameCursor::default();
        c.feed(&CLIENT_CLOSE);
        assert!(c.at_boundary() && c.saw_close);
    }

    /// The relay between a tungstenite client and a tungstenite server over real sockets:
    /// messages both ways (one much larger than a chunk), then a shutdown gives the client a
    /// 1001 close and the server a close.
    #[tokio::test]
    async fn relays_messages_and_closes_on_shutdown() {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;

        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server_addr = server.local_addr().unwrap();
        let (server_done_tx, server_done) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (tcp, _) = server.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            ws.send(Message::text("hello")).await.unwrap();
            let mut got = Vec::new();
            while let Some(Ok(m)) = ws.next().await {
                match m {
                    Message::Text(t) => {
                        ws.send(Message::text(format!("echo {}", t.len())))
                            .await
                            .unwrap();
                        got.push(t.len());
                    }
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            let _ = server_done_tx.send(got);
        });

        let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front_addr = front.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let (client_tcp, _) = front.accept().await.unwrap();
            // The client's handshake, answered by hand; then the upstream's, raw.
            let mut client_tcp = client_tcp;
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                client_tcp.read_exact(&mut byte).await.unwrap();
                head.push(byte[0]);
            }
            let head = String::from_utf8(head).unwrap();
            let key = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("Sec-WebSocket-Key: ")
                        .or(l.strip_prefix("sec-websocket-key: "))
                })
                .unwrap()
                .trim()
                .to_owned();
            let base = BaseUrl::parse(&format!("http://{server_addr}")).unwrap();
            let RawUpstream::Open(up, sent) = connect(
                &base,
                "/",
                &HeaderMap::new(),
                &HeaderMap::new(),
                Duration::from_secs(5),
            )
            .await
            else {
                panic!("upstream did not open");
            };
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                derive_accept_key(key.as_bytes())
            );
            client_tcp.write_all(answer.as_bytes()).await.unwrap();
            pump(
                client_tcp,
                Bytes::new(),
                up,
                sent,
                stop,
                Duration::from_secs(5),
            )
            .await;
        });

        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{front_addr}/"))
            .await
            .unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
        let big = "y".repeat(200_000);
        ws.send(Message::text(big)).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text("echo 200000")
        );
        ws.send(Message::text("z")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("echo 1"));

        shutdown.cancel();
        match ws.next().await {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1001),
            other => panic!("want a 1001 close, got {other:?}"),
        }
        let got = tokio::time::timeout(Duration::from_secs(5), server_done)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            got,
            [200_000, 1],
            "the server got both messages, then a close"
        );
    }

    /// The relay between two in-memory pipes of `capacity` bytes: the client's end, the
    /// owner's end, and the relay's task.
    fn pump_between_pipes(
        capacity: usize,
        write_timeout: Duration,
    ) -> (
        tokio::io::DuplexStream,
        tokio::io::DuplexStream,
        tokio::task::JoinHandle<()>,
    ) {
        let (client_side, relay_client) = tokio::io::duplex(capacity);
        let (upstream_side, relay_up) = tokio::io::duplex(capacity);
        let relay = tokio::spawn(pump(
            relay_client,
            Bytes::new(),
            relay_up,
            Bytes::new(),
            CancellationToken::new(),
            write_timeout,
        ));
        (client_side, upstream_side, relay)
    }

    /// A client that stops reading while the owner keeps sending: the relay gives up after
    /// the write timeout and closes the owner's socket, instead of buffering or hanging.
    #[tokio::test]
    async fn a_client_that_stops_reading_is_dropped_after_the_write_timeout() {
        let started = std::time::Instant::now();
        let (_client_side, mut upstream_side, relay) =
            pump_between_pipes(4096, Duration::from_millis(200));
        // The owner floods text frames; the client side is never read.
        let flood = tokio::spawn(async move {
            let f = frame(1, 1000, false);
            let mut sent = 0usize;
            while upstream_side.write_all(&f).await.is_ok() {
                sent += 1;
                if sent > 100_000 {
                    break;
                }
            }
            sent
        });
        tokio::time::timeout(Duration::from_secs(5), relay)
            .await
            .expect("the relay ends")
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(3));
        let sent = tokio::time::timeout(Duration::from_secs(5), flood)
            .await
            .expect("the owner's writes fail once the relay is gone")
            .unwrap();
        assert!(sent < 100, "only a few frames fit in the buffers: {sent}");
    }

    /// An owner that goes away without a close frame: the client gets 1012.
    #[tokio::test]
    async fn a_lost_upstream_closes_the_client_with_1012() {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;

        // The owner's end drops right away.
        let (client_side, upstream_side, relay) = pump_between_pipes(1024, Duration::from_secs(5));
        drop(upstream_side);
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            client_side,
            tokio_tungstenite::tungstenite::protocol::Role::Client,
            None,
        )
        .await;
        match ws.next().await {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1012),
            other => panic!("want a 1012 close, got {other:?}"),
        }
        relay.await.unwrap();
    }
}
