//! Binding the listening socket.

use std::io;

use tokio::net::{TcpListener, TcpSocket, ToSocketAddrs, lookup_host};

/// Connections the kernel may hold completed for [`bind`]'s listener before they are accepted
/// (capped by the system's `net.core.somaxconn`).
pub const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr` with a [`LISTEN_BACKLOG`]-deep accept queue.
///
/// `tokio::net::TcpListener::bind` asks for a queue of 128. A join or reconnect storm of a few
/// hundred clients overflows that while the server is busy with rooms, and each connection the
/// kernel drops waits for its SYN to be sent again, a second later. Like
/// `TcpListener::bind`, each resolved address is tried in turn (with `SO_REUSEADDR` on Unix)
/// and the first that binds is used.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// let listener = partyroom_server::bind("127.0.0.1:3000").await?;
/// # Ok(())
/// # }
/// ```
pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
    let mut last = None;
    for addr in lookup_host(addr).await? {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        match socket
            .bind(addr)
            .and_then(|()| socket.listen(LISTEN_BACKLOG))
        {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any address",
        )
    }))
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn binds_like_tcp_listener_bind() {
        let l = super::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        assert!(addr.ip().is_loopback() && addr.port() != 0);
        // The port is taken: binding it again fails with the OS error.
        assert!(super::bind(addr).await.is_err());
        assert!(super::bind("no-such-host.invalid:1").await.is_err());
    }
}
