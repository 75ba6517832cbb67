//! The socket's receive low-water mark (`SO_RCVLOWAT`), which holds a connection's reads.
//!
//! While it is above what a client has sent, Linux neither wakes a reader nor reports the
//! socket as readable for that data (a close still is), yet a non-blocking `recv` returns it.
//! The server raises it for the connections a room holds (see `ConnectionSink::hold_reads`)
//! and lowers it back to one byte to let them go; lowering it signals data already there.
//! Elsewhere than on Linux reads are never held.

use std::os::fd::AsFd;

/// The low-water mark of a held connection: a client that sends this much within one sync
/// window is read at once all the same.
pub(crate) const HELD: u32 = 32 * 1024;

#[cfg(target_os = "linux")]
mod imp {
    use nix::{getsockopt_impl, setsockopt_impl, sockopt_impl};

    sockopt_impl!(
        /// `SOL_SOCKET` / `SO_RCVLOWAT`.
        RcvLowat,
        Both,
        libc::SOL_SOCKET,
        libc::SO_RCVLOWAT,
        libc::c_int
    );

    pub(super) fn set(fd: std::os::fd::BorrowedFd<'_>, bytes: u32) -> bool {
        let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        nix::sys::socket::setsockopt(&fd, RcvLowat, &bytes).is_ok()
    }

    #[cfg(test)]
    pub(super) fn get(fd: std::os::fd::BorrowedFd<'_>) -> Option<u32> {
        nix::sys::socket::getsockopt(&fd, RcvLowat)
            .ok()
            .and_then(|v| u32::try_from(v).ok())
    }
}

/// Sockets whose mark was raised so far (tests check that reads were held).
#[cfg(test)]
pub(crate) static RAISED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Set the receive low-water mark of `socket` to `bytes` (1: every byte is signalled).
/// Returns whether the platform supports it and the call succeeded.
pub(crate) fn set(socket: &impl AsFd, bytes: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        let done = imp::set(socket.as_fd(), bytes.max(1));
        #[cfg(test)]
        if done && bytes > 1 {
            RAISED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        done
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (socket, bytes);
        false
    }
}

/// A connected loopback pair for tests: the client end (blocking) and the server end (tokio).
#[cfg(test)]
pub(crate) fn socket_pair() -> (std::net::TcpStream, tokio::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    (client, tokio::net::TcpStream::from_std(server).unwrap())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    #[tokio::test]
    async fn set_and_read_back() {
        let (_client, server) = socket_pair();
        assert_eq!(imp::get(server.as_fd()), Some(1), "the default");
        assert!(set(&server, HELD));
        assert_eq!(imp::get(server.as_fd()), Some(HELD));
        assert!(set(&server, 0), "0 means 1");
        assert_eq!(imp::get(server.as_fd()), Some(1));
    }

    /// What held reads rely on: below the mark the socket is not readable to a waiter, yet a
    /// non-blocking `recv` returns what is there.
    #[tokio::test]
    async fn below_the_mark_data_is_not_signalled_but_can_be_read() {
        let (mut client, server) = socket_pair();
        assert!(set(&server, HELD));
        client.write_all(b"hello").unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(200), server.readable()).await;
        assert!(
            waited.is_err(),
            "5 bytes under the mark must not wake a reader"
        );
        let mut buf = [0u8; 16];
        let (n, _) =
            rustix::net::recv(&server, &mut buf[..], rustix::net::RecvFlags::DONTWAIT).unwrap();
        assert_eq!(&buf[..n], b"hello");
        // Lowering the mark signals data already there.
        client.write_all(b"again").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert!(set(&server, 1));
        tokio::time::timeout(Duration::from_secs(5), server.readable())
            .await
            .expect("signalled once the mark is lowered")
            .unwrap();
    }
}
