//! A connection's outgoing WebSocket frames: written straight to the socket by whoever
//! produces them when it can take them, queued (bounded) when it cannot.
//!
//! The room calls [`Outbox::send`] from its own task once per receiver. When nothing is queued
//! for that client the frame is written at once with one non-blocking `writev` (frame header +
//! the shared payload bytes); only when the socket's buffer is full does the frame wait in the
//! queue, which the connection's task drains when the socket becomes writable. The common case
//! therefore costs one system call and no task wake-up per frame and receiver.
//!
//! Frames are never interleaved: the queue is the order of record, a direct write happens only
//! when it is empty, and every write (direct or by the connection task) runs under the same
//! short lock, which is never held across an `.await`.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use partyroom_room::{CloseFrame, ConnectionSink, SinkStatus};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

use crate::low_water;

/// Most queued frames written by one `writev` (each is two slices: header and payload).
const WRITEV_FRAMES: usize = 32;

/// Queue capacity (frames) above which an emptied queue lets its memory go.
const SHRINK_ABOVE: usize = 16;

/// WebSocket opcodes the server sends.
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// One queued frame: its header and its payload (shared with the other receivers).
#[derive(Debug)]
struct Pending {
    header: [u8; 10],
    header_len: u8,
    payload: Bytes,
}

impl Pending {
    fn frame(opcode: u8, payload: Bytes) -> Self {
        let mut header = [0u8; 10];
        header[0] = 0x80 | opcode; // FIN + opcode; server frames are not masked
        let len = payload.len();
        let header_len = if len < 126 {
            header[1] = len as u8;
            2
        } else if let Ok(len) = u16::try_from(len) {
            header[1] = 126;
            header[2..4].copy_from_slice(&len.to_be_bytes());
            4
        } else {
            header[1] = 127;
            header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        Self {
            header,
            header_len,
            payload,
        }
    }

    fn len(&self) -> usize {
        usize::from(self.header_len) + self.payload.len()
    }

    /// The bytes still to write once `written` are gone.
    fn slices(&self, written: usize) -> [IoSlice<'_>; 2] {
        let header = &self.header[..usize::from(self.header_len)];
        if written < header.len() {
            [
                IoSlice::new(&header[written..]),
                IoSlice::new(&self.payload),
            ]
        } else {
            [
                IoSlice::new(&self.payload[written - header.len()..]),
                IoSlice::new(&[]),
            ]
        }
    }
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Pending>,
    /// Bytes of `queue.front()` already written.
    written: usize,
    /// A close frame is queued or written: nothing more is accepted.
    closing: bool,
    /// The socket failed or the connection ended: nothing more is accepted or written.
    dead: bool,
    /// Bytes the connection task has written from the queue, ever (its write deadline
    /// watches this for progress).
    progress: u64,
    /// The socket, for direct writes; unset until the upgrade completes, never set for
    /// transports that are not a plain TCP stream (their frames always go through the
    /// queue), and dropped when the connection ends, so that its descriptor is freed even
    /// while the room still holds this outbox.
    socket: Option<Arc<OwnedWriteHalf>>,
}

/// The outgoing side of one WebSocket connection. See the module documentation.
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    /// Wakes the connection task when something is queued (or the connection is closing).
    pub(crate) wake: Notify,
    /// Asks the connection task to drain its held reads (see `low_water`).
    pub(crate) drain: Notify,
    /// Most frames that may wait for a slow client.
    max_queued: usize,
}

impl Outbox {
    pub(crate) fn new(max_queued: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            drain: Notify::new(),
            max_queued: max_queued.max(1),
        }
    }

    /// Let producers write straight to `socket` from now on.
    pub(crate) fn attach(&self, socket: Arc<OwnedWriteHalf>) {
        let mut st = self.lock();
        if !st.dead {
            st.socket = Some(socket);
        }
    }

    /// Frames waiting in the queue (the socket did not take them at once).
    pub(crate) fn queued(&self) -> usize {
        self.lock().queue.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves a consistent state (every change is a single
        // assignment or queue operation), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enqueue(&self, entry: Pending) -> SinkStatus {
        let mut st = self.lock();
        if st.dead || st.closing {
            return SinkStatus::Gone;
        }
        if st.queue.len() >= self.max_queued {
            return SinkStatus::Full;
        }
        self.push_locked(&mut st, entry)
    }

    /// Write `entry` at once if nothing is queued before it, else queue it.
    fn push_locked(&self, st: &mut State, entry: Pending) -> SinkStatus {
        if st.queue.is_empty()
            && let Some(socket) = &st.socket
        {
            // Straight to the socket (the fd is non-blocking): tokio's readiness is not
            // consulted here, which saves a cache miss per frame and receiver. When the socket
            // is full, the connection task's own write finds it full too and waits.
            let stream: &tokio::net::TcpStream = (**socket).as_ref();
            match rustix::io::writev(stream, &entry.slices(0)) {
                Ok(n) if n == entry.len() => return SinkStatus::Accepted,
                Ok(n) => st.written = n,
                Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => st.written = 0,
                Err(_) => {
                    st.dead = true;
                    self.wake.notify_one();
                    return SinkStatus::Gone;
                }
            }
        }
        let was_empty = st.queue.is_empty();
        st.queue.push_back(entry);
        if was_empty {
            self.wake.notify_one();
        }
        SinkStatus::Accepted
    }

    /// Answer a ping. Dropped when the connection is closing or its queue is full.
    pub(crate) fn pong(&self, payload: Bytes) {
        let _ = self.enqueue(Pending::frame(OP_PONG, payload));
    }

    /// Send a ping (liveness check). Dropped when the connection is closing or its queue is
    /// full.
    pub(crate) fn ping(&self, payload: Bytes) {
        let _ = self.enqueue(Pending::frame(OP_PING, payload));
    }

    /// Send a binary message. The server itself sends text only; the conformance echo
    /// sends binary messages back as binary.
    #[cfg_attr(not(feature = "autobahn-echo"), allow(dead_code))]
    pub(crate) fn send_binary(&self, payload: Bytes) -> SinkStatus {
        self.enqueue(Pending::frame(OP_BINARY, payload))
    }

    /// Bytes written from the queue so far (see [`poll_flush_direct`](Self::poll_flush_direct)).
    pub(crate) fn progress(&self) -> u64 {
        self.lock().progress
    }

    /// Whether the connection is closing (a close frame is queued or written) or dead.
    pub(crate) fn is_closing(&self) -> bool {
        let st = self.lock();
        st.closing || st.dead
    }

    /// Write what is queued to the socket: `Ready` once the queue is empty, `Pending` (with
    /// the socket's write readiness registered) while frames wait. A future made of it holds
    /// no state of its own, which keeps every connection task small.
    pub(crate) fn poll_flush_direct(
        &self,
        socket: &OwnedWriteHalf,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        use std::task::Poll;
        loop {
            {
                let mut guard = self.lock();
                let st = &mut *guard;
                if st.dead {
                    return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
                }
                while !st.queue.is_empty() {
                    // Several queued frames in one `writev`.
                    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(WRITEV_FRAMES * 2);
                    for (i, p) in st.queue.iter().take(WRITEV_FRAMES).enumerate() {
                        let [a, b] = p.slices(if i == 0 { st.written } else { 0 });
                        slices.push(a);
                        if !b.is_empty() {
                            slices.push(b);
                        }
                    }
                    // Through tokio, so that a full socket clears its cached write readiness.
                    let result = socket.try_write_vectored(&slices);
                    drop(slices);
                    match result {
                        Ok(0) => {
                            st.dead = true;
                            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                        }
                        Ok(mut n) => {
                            st.progress += n as u64;
                            // Drop the frames written whole; remember how far into the next.
                            while n > 0 {
                                let left = st.queue[0].len() - st.written;
                                if n >= left {
                                    n -= left;
                                    st.queue.pop_front();
                                    st.written = 0;
                                } else {
                                    st.written += n;
                                    n = 0;
                                }
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            st.dead = true;
                            return Poll::Ready(Err(e));
                        }
                    }
                }
                if st.queue.is_empty() {
                    // A burst (a join storm, a big patch) grew the queue: give its memory back
                    // rather than keep the peak for the life of the connection.
                    if st.queue.capacity() > SHRINK_ABOVE {
                        st.queue = VecDeque::new();
                    }
                    return Poll::Ready(Ok(()));
                }
            }
            let stream: &tokio::net::TcpStream = socket.as_ref();
            std::task::ready!(stream.poll_write_ready(cx))?;
        }
    }

    /// Take every queued frame (for transports written through an `AsyncWrite`).
    pub(crate) fn take_queued(&self) -> Vec<Bytes> {
        let mut st = self.lock();
        let mut out = Vec::with_capacity(st.queue.len() * 2);
        for p in st.queue.drain(..) {
            out.push(Bytes::copy_from_slice(
                &p.header[..usize::from(p.header_len)],
            ));
            out.push(p.payload);
        }
        st.written = 0;
        out
    }

    /// Whether a close frame was queued and everything up to it has been written.
    #[cfg(test)]
    pub(crate) fn closed_and_flushed(&self) -> bool {
        let st = self.lock();
        st.dead || (st.closing && st.queue.is_empty())
    }

    /// The connection ended: refuse everything from now on, drop what waits and let go of
    /// the socket.
    pub(crate) fn shut(&self) {
        let mut st = self.lock();
        st.dead = true;
        st.queue.clear();
        st.socket = None;
    }

    /// End the connection at once: what the kernel still holds for the peer is discarded
    /// and the connection reset (`SO_LINGER` 0) when the socket closes, so that a peer that
    /// stopped reading costs no kernel memory after it is dropped.
    pub(crate) fn abort(&self) {
        if let Some(socket) = &self.lock().socket {
            let stream: &tokio::net::TcpStream = (**socket).as_ref();
            let _ =
                rustix::net::sockopt::set_socket_linger(stream, Some(std::time::Duration::ZERO));
        }
        self.shut();
    }
}

impl ConnectionSink for Outbox {
    fn send(&self, frame: Bytes) -> SinkStatus {
        self.enqueue(Pending::frame(OP_TEXT, frame))
    }

    fn close(&self, frame: CloseFrame) {
        let mut st = self.lock();
        if st.dead || st.closing {
            return;
        }
        st.closing = true;
        if frame.code == 1013 {
            // Too slow: what it has not read is dropped, except a frame already partly
            // written (the stream would be corrupt without its end).
            let keep = usize::from(st.written > 0);
            st.queue.truncate(keep);
        }
        let _ = self.push_locked(&mut st, Pending::frame(OP_CLOSE, close_payload(&frame)));
        // The connection task ends the connection once the close frame is out.
        self.wake.notify_one();
    }

    /// Held reads work on a plain TCP socket (on Linux): the socket's receive low-water mark
    /// is raised so that the kernel does not signal each small message.
    fn hold_reads(&self, hold: bool) -> bool {
        let st = self.lock();
        let Some(socket) = &st.socket else {
            return false;
        };
        let mark = if hold { low_water::HELD } else { 1 };
        low_water::set((**socket).as_ref(), mark)
    }

    fn drain_held(&self) {
        self.drain.notify_one();
    }
}

/// A close frame's payload: the code, then the reason cut to 123 bytes (on a character
/// boundary).
pub(crate) fn close_payload(frame: &CloseFrame) -> Bytes {
    let mut reason = frame.reason.as_str();
    while reason.len() > 123 {
        let mut cut = reason.len() - 1;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason = &reason[..cut];
    }
    let mut out = Vec::with_capacity(2 + reason.len());
    out.extend_from_slice(&frame.code.to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(p: &Pending) -> Vec<u8> {
        p.slices(0).iter().flat_map(|s| s.to_vec()).collect()
    }

    #[test]
    fn frame_headers_use_the_shortest_length_encoding() {
        let small = Pending::frame(OP_TEXT, Bytes::from_static(b"{}"));
        assert_eq!(encoded(&small), b"\x81\x02{}");
        let medium = Pending::frame(OP_TEXT, Bytes::from(vec![b'a'; 300]));
        assert_eq!(&encoded(&medium)[..4], &[0x81, 126, 0x01, 0x2c]);
        assert_eq!(medium.len(), 304);
        let large = Pending::frame(OP_TEXT, Bytes::from(vec![b'a'; 70_000]));
        assert_eq!(
            &encoded(&large)[..10],
            &[0x81, 127, 0, 0, 0, 0, 0, 0x01, 0x11, 0x70]
        );
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let p = Pending::frame(OP_TEXT, Bytes::from_static(b"hello"));
        let all = encoded(&p);
        for written in 0..all.len() {
            let rest: Vec<u8> = p.slices(written).iter().flat_map(|s| s.to_vec()).collect();
            assert_eq!(rest, all[written..]);
        }
    }

    #[test]
    fn close_reasons_are_cut_to_123_bytes_on_a_char_boundary() {
        let frame = CloseFrame {
            code: 4003,
            reason: "é".repeat(100),
        };
        let payload = close_payload(&frame);
        assert_eq!(&payload[..2], &4003u16.to_be_bytes());
        assert!(payload.len() - 2 <= 123);
        assert!(std::str::from_utf8(&payload[2..]).is_ok());
    }

    #[test]
    fn the_queue_is_bounded_and_closing_refuses_more() {
        let out = Outbox::new(2);
        let f = || Bytes::from_static(b"{}");
        assert_eq!(out.send(f()), SinkStatus::Accepted);
        assert_eq!(out.send(f()), SinkStatus::Accepted);
        assert_eq!(out.send(f()), SinkStatus::Full);
        out.close(CloseFrame::too_slow());
        assert_eq!(out.send(f()), SinkStatus::Gone);
        // Too slow: the unread frames are dropped, the close frame alone is left.
        let queued = out.take_queued();
        assert_eq!(queued.len(), 2, "header + payload of the close frame");
        assert_eq!(queued[0][0], 0x88);
    }

    #[test]
    fn a_normal_close_keeps_what_was_queued_before_it() {
        let out = Outbox::new(8);
        out.send(Bytes::from_static(b"{\"a\":1}"));
        out.close(CloseFrame::going_away());
        let queued = out.take_queued();
        assert_eq!(queued.len(), 4);
        assert_eq!(&queued[1][..], b"{\"a\":1}");
        assert_eq!(queued[2][0], 0x88);
        assert!(out.closed_and_flushed());
    }
}
