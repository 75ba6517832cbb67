//! The server's WebSocket reader (RFC 6455, client-to-server direction): turns the bytes a
//! client sends into whole messages, answers pings and reports closes and protocol errors.
//!
//! Written for the room's hot path: one `recv` per readiness event, several frames parsed out
//! of one read, the mask removed eight bytes at a time in place, and a message handed on as a
//! slice of the read buffer without a copy. An idle connection holds no read buffer at all:
//! on a TCP socket the reader waits for readability first and allocates only to read.
//!
//! No extension is negotiated, so every RSV bit must be zero. What the RFC calls a failure
//! (an unmasked frame, a reserved opcode, a fragmented or oversize control frame, a
//! continuation out of place) ends the connection with close code 1002; a message over the
//! configured limit with 1009, declared before any of it is buffered; a text message that is
//! not UTF-8 with 1007 (a fragmented one as soon as the fragment that makes it invalid is
//! in). A frame (or fragmented message) that is started but not finished
//! within the frame timeout ([`FrameReader::with_frame_timeout`]) ends it with 1008, so a
//! client that sends half a frame and stops does not hold its connection forever: the reader
//! says when one starts ([`Incoming::Unfinished`]) and the connection's timer, which it
//! already has, watches the deadline; the reader's own future holds no timer.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::time::Instant;

/// Bytes read per `recv` when draining held reads (see [`FrameReader::try_next`]).
const DRAIN_CHUNK: usize = 4096;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Where the reader's bytes come from.
pub(crate) enum Source {
    /// A TCP socket: readiness is awaited before a buffer is allocated.
    Tcp(OwnedReadHalf),
    /// Any other upgraded transport.
    Io(Box<dyn AsyncRead + Send + Unpin>),
}

/// What the reader hands to the connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// A whole data message: a text message (valid UTF-8), or a binary one (any bytes).
    Message { payload: Bytes, text: bool },
    /// A ping: its payload, to be echoed in a pong.
    Ping(Bytes),
    /// The client's close frame: its status code, if it gave a valid one.
    Close(Option<u16>),
    /// A frame or fragmented message has started and is not finished (said once for each,
    /// and only with a frame timeout): it must be by [`FrameReader::frame_deadline`].
    Unfinished,
}

/// Why the reader stopped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// The stream ended (or failed) without a close frame.
    #[error("connection ended")]
    Ended,
    /// The client broke the protocol: close with 1002.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// A message over the size limit: close with 1009.
    #[error("message too big")]
    TooBig,
    /// A text message that is not UTF-8: close with 1007.
    #[error("text message is not UTF-8")]
    InvalidUtf8,
    /// A frame or message was started and not finished within the frame timeout: close with
    /// 1008.
    #[error("frame not finished in time")]
    Timeout,
}

impl ReadError {
    /// The close code to send, if the connection is still able to send one.
    pub(crate) fn close_code(&self) -> Option<u16> {
        match self {
            ReadError::Ended => None,
            ReadError::Protocol(_) => Some(1002),
            ReadError::TooBig => Some(1009),
            ReadError::InvalidUtf8 => Some(1007),
            ReadError::Timeout => Some(1008),
        }
    }
}

/// A fragmented message being assembled.
struct Fragments {
    text: bool,
    parts: BytesMut,
    /// Bytes of a text message's parts known to be valid UTF-8 (up to a character boundary):
    /// each fragment is checked as it comes, so that invalid text fails at once, not when the
    /// message ends.
    valid: usize,
}

impl Fragments {
    /// Check the text received since the last check; an incomplete character at the end
    /// waits for the next fragment.
    fn check_text(&mut self) -> Result<(), ReadError> {
        if !self.text {
            return Ok(());
        }
        match std::str::from_utf8(&self.parts[self.valid..]) {
            Ok(_) => self.valid = self.parts.len(),
            Err(e) if e.error_len().is_none() => self.valid += e.valid_up_to(),
            Err(_) => return Err(ReadError::InvalidUtf8),
        }
        Ok(())
    }
}

/// Reads WebSocket messages from one client. See the module documentation.
pub(crate) struct FrameReader {
    source: Source,
    buf: BytesMut,
    fragments: Option<Fragments>,
    max_message: usize,
    /// Bytes asked of the source per read (more when a frame needs more).
    read_chunk: usize,
    /// The last read of this drain returned less than asked: the socket is empty.
    drained: bool,
    /// When the client last sent anything (any bytes: messages, pongs, parts of frames).
    last_read: Instant,
    /// How long a started frame or message may take to finish; `None`: forever.
    frame_timeout: Option<Duration>,
    /// When the frame or message now unfinished was found unfinished.
    partial_since: Option<Instant>,
}

impl FrameReader {
    /// A reader over `source`; `leftover` is what was read past the HTTP upgrade request.
    pub(crate) fn new(
        source: Source,
        leftover: &[u8],
        max_message: usize,
        read_chunk: usize,
    ) -> Self {
        Self {
            source,
            buf: BytesMut::from(leftover),
            fragments: None,
            max_message,
            read_chunk: read_chunk.max(64),
            drained: false,
            last_read: Instant::now(),
            frame_timeout: None,
            partial_since: None,
        }
    }

    /// Report frames and fragmented messages that are not finished at once
    /// ([`Incoming::Unfinished`]), with a deadline `timeout` after the moment they were
    /// found unfinished ([`frame_deadline`](Self::frame_deadline)).
    #[must_use]
    pub(crate) fn with_frame_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.frame_timeout = timeout;
        self
    }

    /// When the unfinished frame or message must be finished (with a frame timeout).
    pub(crate) fn frame_deadline(&self) -> Option<Instant> {
        // None too when the timeout is beyond what the clock can say: never.
        self.partial_since?.checked_add(self.frame_timeout?)
    }

    /// When the client last sent any bytes (or when the reader was made).
    pub(crate) fn last_read(&self) -> Instant {
        self.last_read
    }

    /// Whether part of a frame or of a fragmented message is buffered.
    fn partial(&self) -> bool {
        !self.buf.is_empty() || self.fragments.is_some()
    }

    /// The next message, ping or close. Cancel-safe: bytes already read stay buffered.
    pub(crate) async fn next(&mut self) -> Result<Incoming, ReadError> {
        loop {
            if let Some(incoming) = self.parse()? {
                if self.buf.is_empty() {
                    // An idle connection keeps no buffer.
                    self.buf = BytesMut::new();
                }
                self.partial_since = None;
                return Ok(incoming);
            }
            if self.frame_timeout.is_some() && self.partial_since.is_none() && self.partial() {
                self.partial_since = Some(Instant::now());
                return Ok(Incoming::Unfinished);
            }
            self.fill().await?;
        }
    }

    /// The next message, ping or close that can be had without waiting: parsed from what is
    /// buffered, or from what a non-blocking read of the socket returns. `Ok(None)`: nothing
    /// complete is there (the bytes of an incomplete frame stay buffered).
    ///
    /// The socket is read directly, not through tokio, whose cached readiness would report
    /// nothing: this is how held reads (see `low_water`) are drained, and the kernel does not
    /// signal data below the low-water mark.
    ///
    /// Call [`begin_drain`](Self::begin_drain) before the first call of a drain: within one,
    /// a read that returned less than it asked for means the socket is empty, and the next
    /// call does not read again.
    pub(crate) fn try_next(&mut self) -> Result<Option<Incoming>, ReadError> {
        loop {
            if let Some(incoming) = self.parse()? {
                if self.buf.is_empty() {
                    self.buf = BytesMut::new();
                }
                self.partial_since = None;
                return Ok(Some(incoming));
            }
            let Source::Tcp(socket) = &self.source else {
                return Ok(None);
            };
            if self.drained {
                return Ok(None);
            }
            // Read on the stack and keep only what came: a drain usually finds one small
            // message, and a buffer of `read_chunk` per drain would cost an allocation and
            // its zeroing each time.
            let mut chunk = [0u8; DRAIN_CHUNK];
            let read = rustix::net::recv(
                socket.as_ref(),
                &mut chunk[..],
                rustix::net::RecvFlags::DONTWAIT,
            );
            match read {
                Ok((0, _)) => return Err(ReadError::Ended),
                Ok((n, _)) => {
                    self.drained = n < chunk.len();
                    self.last_read = Instant::now();
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => {
                    if self.buf.is_empty() {
                        self.buf = BytesMut::new();
                    }
                    return Ok(None);
                }
                Err(_) => return Err(ReadError::Ended),
            }
        }
    }

    /// Start a drain: [`try_next`](Self::try_next) reads the socket again.
    pub(crate) fn begin_drain(&mut self) {
        self.drained = false;
    }

    /// Read more bytes into the buffer.
    async fn fill(&mut self) -> Result<(), ReadError> {
        let n = match &mut self.source {
            Source::Tcp(socket) => {
                if self.buf.capacity() == self.buf.len() {
                    // Nothing to read into yet: wait for data before allocating.
                    socket.readable().await.map_err(|_| ReadError::Ended)?;
                }
                self.buf.reserve(self.read_chunk);
                // `read_buf` (tokio's `poll_read`) notes a short read as draining the socket,
                // so the next wait does not start with a read that finds nothing.
                socket
                    .read_buf(&mut self.buf)
                    .await
                    .map_err(|_| ReadError::Ended)?
            }
            Source::Io(io) => {
                self.buf.reserve(self.read_chunk);
                io.read_buf(&mut self.buf)
                    .await
                    .map_err(|_| ReadError::Ended)?
            }
        };
        if n == 0 {
            return Err(ReadError::Ended);
        }
        self.last_read = Instant::now();
        Ok(())
    }

    /// Take the next complete frame out of the buffer, if there is one, and return what it
    /// completes (a fragment alone completes nothing).
    fn parse(&mut self) -> Result<Option<Incoming>, ReadError> {
        loop {
            let Some(header) = FrameHeader::parse(&self.buf, self.max_message)? else {
                return Ok(None);
            };
            let total = header.header_len + header.len;
            if self.buf.len() < total {
                // Room for the whole frame, so that one more read may complete it.
                self.buf.reserve(total - self.buf.len());
                return Ok(None);
            }
            self.buf.advance(header.header_len);
            let mut payload = self.buf.split_to(header.len);
            unmask(&mut payload, header.mask);
            if let Some(incoming) = self.frame(header.fin, header.opcode, payload)? {
                return Ok(Some(incoming));
            }
        }
    }

    fn frame(
        &mut self,
        fin: bool,
        opcode: u8,
        payload: BytesMut,
    ) -> Result<Option<Incoming>, ReadError> {
        match opcode {
            OP_TEXT | OP_BINARY => {
                if self.fragments.is_some() {
                    return Err(ReadError::Protocol("new message inside a fragmented one"));
                }
                let text = opcode == OP_TEXT;
                if fin {
                    return finish(payload, text).map(Some);
                }
                let mut fragments = Fragments {
                    text,
                    parts: payload,
                    valid: 0,
                };
                fragments.check_text()?;
                self.fragments = Some(fragments);
                Ok(None)
            }
            OP_CONTINUATION => {
                let Some(fragments) = self.fragments.as_mut() else {
                    return Err(ReadError::Protocol("continuation without a message"));
                };
                if fragments.parts.len() + payload.len() > self.max_message {
                    return Err(ReadError::TooBig);
                }
                fragments.parts.extend_from_slice(&payload);
                fragments.check_text()?;
                if !fin {
                    return Ok(None);
                }
                let Fragments { text, parts, valid } =
                    self.fragments.take().expect("checked above");
                // Only what follows the last check is left to check.
                if text && valid < parts.len() {
                    return Err(ReadError::InvalidUtf8);
                }
                Ok(Some(Incoming::Message {
                    payload: parts.freeze(),
                    text,
                }))
            }
            OP_PING => Ok(Some(Incoming::Ping(payload.freeze()))),
            OP_PONG => Ok(None),
            OP_CLOSE => match payload.len() {
                0 => Ok(Some(Incoming::Close(None))),
                1 => Err(ReadError::Protocol("close frame with a one-byte payload")),
                _ => {
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    if std::str::from_utf8(&payload[2..]).is_err() {
                        return Err(ReadError::InvalidUtf8);
                    }
                    if !close_code_valid(code) {
                        return Err(ReadError::Protocol("invalid close code"));
                    }
                    Ok(Some(Incoming::Close(Some(code))))
                }
            },
            _ => Err(ReadError::Protocol("reserved opcode")),
        }
    }
}

/// A whole message out of its payload bytes.
fn finish(payload: BytesMut, text: bool) -> Result<Incoming, ReadError> {
    if text && std::str::from_utf8(&payload).is_err() {
        return Err(ReadError::InvalidUtf8);
    }
    Ok(Incoming::Message {
        payload: payload.freeze(),
        text,
    })
}

/// Close codes a peer may send (RFC 6455 7.4).
fn close_code_valid(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// A parsed frame header.
#[derive(Debug, PartialEq, Eq)]
struct FrameHeader {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    header_len: usize,
    len: usize,
}

impl FrameHeader {
    /// The header at the start of `buf`, or `None` if `buf` does not hold all of it yet.
    fn parse(buf: &[u8], max_message: usize) -> Result<Option<Self>, ReadError> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (buf[0], buf[1]);
        if b0 & 0x70 != 0 {
            return Err(ReadError::Protocol("reserved bits set"));
        }
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0F;
        if b1 & 0x80 == 0 {
            return Err(ReadError::Protocol("client frame not masked"));
        }
        let control = opcode & 0x8 != 0;
        let (len, len_bytes) = match b1 & 0x7F {
            126 => {
                let Some(b) = buf.get(2..4) else {
                    return Ok(None);
                };
                (u64::from(u16::from_be_bytes([b[0], b[1]])), 2)
            }
            127 => {
                let Some(b) = buf.get(2..10) else {
                    return Ok(None);
                };
                let len = u64::from_be_bytes(b.try_into().expect("eight bytes"));
                if len >> 63 != 0 {
                    return Err(ReadError::Protocol("frame length with the top bit set"));
                }
                (len, 8)
            }
            n => (u64::from(n), 0),
        };
        if control && (!fin || len > 125) {
            return Err(ReadError::Protocol("fragmented or oversize control frame"));
        }
        if len > max_message as u64 {
            return Err(ReadError::TooBig);
        }
        let header_len = 2 + len_bytes + 4;
        let Some(mask) = buf.get(2 + len_bytes..header_len) else {
            return Ok(None);
        };
        Ok(Some(Self {
            fin,
            opcode,
            mask: mask.try_into().expect("four bytes"),
            header_len,
            len: len as usize,
        }))
    }
}

/// Remove the client's mask, eight bytes at a time.
fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes((&*chunk).try_into().expect("eight bytes")) ^ wide;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    // The tail starts at a multiple of 8, so the mask lines up from its first byte.
    for (byte, m) in chunks.into_remainder().iter_mut().zip(mask.iter().cycle()) {
        *byte ^= m;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked with `mask`.
    fn frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if let Ok(len) = u16::try_from(len) {
            out.push(0x80 | 126);
            out.extend_from_slice(&len.to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        out
    }

    const MASK: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

    /// `try_next` reads the socket itself: with the low-water mark raised, tokio never learns
    /// that data came, yet every complete message is returned, and an incomplete frame waits.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn try_next_reads_held_data_without_readiness() {
        use std::io::Write;
        let (mut client, server) = crate::low_water::socket_pair();
        assert!(crate::low_water::set(&server, crate::low_water::HELD));
        let (read, _write) = server.into_split();
        let mut r = FrameReader::new(Source::Tcp(read), &[], 1 << 16, 4096);
        r.begin_drain();
        assert_eq!(r.try_next(), Ok(None), "nothing yet");
        let mut bytes = frame(true, OP_TEXT, b"one", MASK);
        bytes.extend(frame(true, OP_PING, b"p", MASK));
        bytes.extend(frame(true, OP_TEXT, b"two", MASK));
        let third = frame(true, OP_TEXT, b"three", MASK);
        bytes.extend(&third[..4]);
        client.write_all(&bytes).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(r.try_next(), Ok(Some(text("one"))));
        assert_eq!(
            r.try_next(),
            Ok(Some(Incoming::Ping(Bytes::from_static(b"p"))))
        );
        assert_eq!(r.try_next(), Ok(Some(text("two"))));
        assert_eq!(r.try_next(), Ok(None), "the third is incomplete");
        client.write_all(&third[4..]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(r.try_next(), Ok(None), "a short read ended this drain");
        r.begin_drain();
        assert_eq!(r.try_next(), Ok(Some(text("three"))));
        assert_eq!(r.try_next(), Ok(None));
        // More than one read's worth is read in as many reads as it takes.
        let big = "x".repeat(3 * DRAIN_CHUNK);
        client
            .write_all(&frame(true, OP_TEXT, big.as_bytes(), MASK))
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        r.begin_drain();
        assert_eq!(r.try_next(), Ok(Some(text(&big))));
        drop(client);
        std::thread::sleep(std::time::Duration::from_millis(20));
        r.begin_drain();
        assert_eq!(r.try_next(), Err(ReadError::Ended), "the end is reported");
    }

    /// Hands out its bytes in pieces of at most `piece` bytes, one piece per read.
    struct Pieces {
        bytes: Vec<u8>,
        at: usize,
        piece: usize,
    }

    impl AsyncRead for Pieces {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let n = self
                .piece
                .min(buf.remaining())
                .min(self.bytes.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.bytes[at..at + n]);
            self.at += n;
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// A reader over `bytes` delivered in pieces of `piece` bytes.
    fn reader(bytes: Vec<u8>, piece: usize, max: usize) -> FrameReader {
        let io: Box<dyn AsyncRead + Send + Unpin> = Box::new(Pieces {
            bytes,
            at: 0,
            piece: piece.max(1),
        });
        FrameReader::new(Source::Io(io), &[], max, 4096)
    }

    async fn all(mut r: FrameReader) -> (Vec<Incoming>, ReadError) {
        let mut out = Vec::new();
        loop {
            match r.next().await {
                Ok(i) => out.push(i),
                Err(e) => return (out, e),
            }
        }
    }

    fn text(s: &str) -> Incoming {
        Incoming::Message {
            payload: Bytes::copy_from_slice(s.as_bytes()),
            text: true,
        }
    }

    #[test]
    fn unmask_matches_the_byte_by_byte_definition() {
        for len in 0..40 {
            let data: Vec<u8> = (0..len as u8).collect();
            let mut fast = data.clone();
            unmask(&mut fast, MASK);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ MASK[i % 4])
                .collect();
            assert_eq!(fast, slow, "length {len}");
        }
    }

    #[tokio::test]
    async fn messages_of_every_length_encoding_in_any_pieces() {
        let big = "x".repeat(70_000);
        let mid = "y".repeat(300);
        let mut bytes = Vec::new();
        for p in ["hello", mid.as_str(), big.as_str(), ""] {
            bytes.extend(frame(true, OP_TEXT, p.as_bytes(), MASK));
        }
        for piece in [1, 3, 7, 4096, usize::MAX] {
            let (got, end) = all(reader(bytes.clone(), piece, 100_000)).await;
            assert_eq!(
                got,
                vec![text("hello"), text(&mid), text(&big), text("")],
                "piece {piece}"
            );
            assert_eq!(end, ReadError::Ended);
        }
    }

    #[tokio::test]
    async fn fragments_join_and_control_frames_may_come_between() {
        let mut bytes = frame(false, OP_TEXT, b"he", MASK);
        bytes.extend(frame(true, OP_PING, b"p", MASK));
        bytes.extend(frame(false, OP_CONTINUATION, b"ll", MASK));
        bytes.extend(frame(true, OP_PONG, b"", MASK));
        bytes.extend(frame(true, OP_CONTINUATION, b"o", MASK));
        bytes.extend(frame(true, OP_BINARY, &[0xff, 0], MASK));
        bytes.extend(frame(true, OP_CLOSE, &1000u16.to_be_bytes(), MASK));
        let (got, end) = all(reader(bytes, 5, 1000)).await;
        assert_eq!(
            got,
            vec![
                Incoming::Ping(Bytes::from_static(b"p")),
                text("hello"),
                Incoming::Message {
                    payload: Bytes::from_static(&[0xff, 0]),
                    text: false
                },
                Incoming::Close(Some(1000)),
            ]
        );
        assert_eq!(end, ReadError::Ended);
    }

    async fn error_of(bytes: Vec<u8>, max: usize) -> ReadError {
        let (got, end) = all(reader(bytes, usize::MAX, max)).await;
        assert!(got.is_empty(), "{got:?}");
        end
    }

    #[tokio::test]
    async fn protocol_errors() {
        let unmasked = vec![0x81, 0x01, b'a'];
        assert!(matches!(
            error_of(unmasked, 100).await,
            ReadError::Protocol(_)
        ));
        let mut rsv = frame(true, OP_TEXT, b"a", MASK);
        rsv[0] |= 0x40;
        assert!(matches!(error_of(rsv, 100).await, ReadError::Protocol(_)));
        let reserved = frame(true, 0x3, b"a", MASK);
        assert!(matches!(
            error_of(reserved, 100).await,
            ReadError::Protocol(_)
        ));
        let lone = frame(true, OP_CONTINUATION, b"a", MASK);
        assert!(matches!(error_of(lone, 100).await, ReadError::Protocol(_)));
        let mut nested = frame(false, OP_TEXT, b"a", MASK);
        nested.extend(frame(true, OP_TEXT, b"b", MASK));
        assert!(matches!(
            error_of(nested, 100).await,
            ReadError::Protocol(_)
        ));
        let long_ping = frame(true, OP_PING, &[0; 126], MASK);
        assert!(matches!(
            error_of(long_ping, 1000).await,
            ReadError::Protocol(_)
        ));
        let split_ping = frame(false, OP_PING, b"a", MASK);
        assert!(matches!(
            error_of(split_ping, 100).await,
            ReadError::Protocol(_)
        ));
        let one_byte_close = frame(true, OP_CLOSE, &[3], MASK);
        assert!(matches!(
            error_of(one_byte_close, 100).await,
            ReadError::Protocol(_)
        ));
        let bad_code = frame(true, OP_CLOSE, &1005u16.to_be_bytes(), MASK);
        assert!(matches!(
            error_of(bad_code, 100).await,
            ReadError::Protocol(_)
        ));
        let mut top_bit = vec![0x81, 0x80 | 127];
        top_bit.extend_from_slice(&u64::MAX.to_be_bytes());
        top_bit.extend_from_slice(&MASK);
        assert!(matches!(
            error_of(top_bit, 100).await,
            ReadError::Protocol(_)
        ));
    }

    #[tokio::test]
    async fn oversize_messages_are_refused_from_their_header() {
        // Only the header is sent: the reader refuses before waiting for the payload.
        let header = frame(true, OP_TEXT, &[0; 2000], MASK)[..8].to_vec();
        assert_eq!(error_of(header, 1000).await, ReadError::TooBig);
        let mut fragmented = frame(false, OP_TEXT, &[b'a'; 600], MASK);
        fragmented.extend(frame(true, OP_CONTINUATION, &[b'a'; 600], MASK));
        assert_eq!(error_of(fragmented, 1000).await, ReadError::TooBig);
    }

    #[tokio::test]
    async fn text_must_be_utf8_binary_need_not() {
        let bad = frame(true, OP_TEXT, &[0xff, 0xfe], MASK);
        assert_eq!(error_of(bad, 100).await, ReadError::InvalidUtf8);
        // A character split between fragments is fine.
        let mut split = frame(false, OP_TEXT, &[0xc3], MASK);
        split.extend(frame(true, OP_CONTINUATION, &[0xa9], MASK));
        let (got, _) = all(reader(split, usize::MAX, 100)).await;
        assert_eq!(got, vec![text("é")]);
        let bad_reason = frame(true, OP_CLOSE, &[0x03, 0xe8, 0xff], MASK);
        assert_eq!(error_of(bad_reason, 100).await, ReadError::InvalidUtf8);
    }

    /// Invalid text in a fragment fails at once, before the message's last fragment (what
    /// Autobahn's cases 6.4.1 and 6.4.2 check); a message ending in half a character fails
    /// at its end.
    #[tokio::test]
    async fn invalid_text_fails_at_the_fragment_that_makes_it_invalid() {
        // No final fragment ever comes: the error comes from the second one.
        let mut open = frame(false, OP_TEXT, "κόσμε".as_bytes(), MASK);
        open.extend(frame(
            false,
            OP_CONTINUATION,
            &[0xf4, 0x90, 0x80, 0x80],
            MASK,
        ));
        let (got, e) = all(reader(open, usize::MAX, 100)).await;
        assert!(got.is_empty());
        assert_eq!(e, ReadError::InvalidUtf8);
        // Half a character at the very end.
        let mut tail = frame(false, OP_TEXT, b"ab", MASK);
        tail.extend(frame(true, OP_CONTINUATION, &[0xc3], MASK));
        assert_eq!(error_of(tail, 100).await, ReadError::InvalidUtf8);
        // A character split over three fragments is fine.
        let mut three = frame(false, OP_TEXT, &[0xe2], MASK);
        three.extend(frame(false, OP_CONTINUATION, &[0x82], MASK));
        three.extend(frame(true, OP_CONTINUATION, &[0xac], MASK));
        let (got, _) = all(reader(three, 3, 100)).await;
        assert_eq!(got, vec![text("€")]);
    }

    /// Messages, split into fragments at `cuts` with pings between them, then delivered
    /// in pieces of `piece` bytes, come out whole and in order.
    fn run(rt: &tokio::runtime::Runtime, messages: &[(Vec<u8>, bool)], cuts: usize, piece: usize) {
        let mut bytes = Vec::new();
        let mut expected = Vec::new();
        for (i, (payload, text)) in messages.iter().enumerate() {
            let mask = [i as u8, 0xA5, (i >> 8) as u8, 0x3C];
            let op = if *text { OP_TEXT } else { OP_BINARY };
            let parts: Vec<&[u8]> = if payload.is_empty() || cuts == 0 {
                vec![payload]
            } else {
                payload.chunks(payload.len().div_ceil(cuts + 1)).collect()
            };
            for (j, part) in parts.iter().enumerate() {
                let fin = j + 1 == parts.len();
                let opcode = if j == 0 { op } else { OP_CONTINUATION };
                bytes.extend(frame(fin, opcode, part, mask));
                if !fin {
                    bytes.extend(frame(true, OP_PING, b"", mask));
                    expected.push(Incoming::Ping(Bytes::new()));
                }
            }
            expected.push(Incoming::Message {
                payload: Bytes::copy_from_slice(payload),
                text: *text,
            });
        }
        let (got, end) = rt.block_on(all(reader(bytes, piece, 1 << 20)));
        assert_eq!(got, expected);
        assert_eq!(end, ReadError::Ended);
    }

    proptest::proptest! {
        #[test]
        fn any_messages_in_any_pieces(
            messages in proptest::collection::vec(
                (proptest::collection::vec(proptest::num::u8::ANY, 0..300), proptest::bool::ANY),
                0..8,
            ),
            cuts in 0usize..4,
            piece in 1usize..600,
        ) {
            // Text messages must be UTF-8: use the lossy form of the random bytes.
            let messages: Vec<(Vec<u8>, bool)> = messages
                .into_iter()
                .map(|(b, text)| if text {
                    (String::from_utf8_lossy(&b).into_owned().into_bytes(), true)
                } else {
                    (b, false)
                })
                .collect();
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            run(&rt, &messages, cuts, piece);
        }

        #[test]
        fn random_bytes_never_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2000),
            piece in 1usize..300,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            // Whatever the bytes, the reader ends with an error of its own, without panicking.
            let (_, end) = rt.block_on(all(reader(bytes, piece, 1000)));
            proptest::prop_assert!(matches!(
                end,
                ReadError::Ended | ReadError::Protocol(_) | ReadError::TooBig | ReadError::InvalidUtf8
            ));
        }
    }

    #[test]
    fn close_codes() {
        assert_eq!(ReadError::Ended.close_code(), None);
        assert_eq!(ReadError::Protocol("x").close_code(), Some(1002));
        assert_eq!(ReadError::TooBig.close_code(), Some(1009));
        assert_eq!(ReadError::InvalidUtf8.close_code(), Some(1007));
        assert!(close_code_valid(1000) && close_code_valid(4000));
        assert!(!close_code_valid(1005) && !close_code_valid(1006) && !close_code_valid(999));
    }
}
