//! A loopback TCP relay that can cut every connection it carries at once.
//!
//! The reconnect storm needs every client's socket to drop at the same moment while the
//! clients themselves stay alive, so that their own reconnection logic (the client crate's
//! [`ReconnectPolicy`](partyroom_client::ReconnectPolicy)) brings them back. The clients
//! connect to this relay instead of the server; [`Proxy::cut_all`] closes both sides of every
//! relayed connection, as a network failure would. Connections made after the cut are
//! relayed normally.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::watch;

/// The relay. Dropping it stops accepting; relayed connections are cut.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    generation: Arc<watch::Sender<u64>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listen on `127.0.0.1:0` and relay to `upstream` (a loopback address).
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        // A deep accept queue: with tokio's default of 128, a storm of reconnections
        // overflows it and the dropped ones come back only after a SYN retransmit (1 s).
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind((std::net::Ipv4Addr::LOCALHOST, 0).into())?;
        let listener = socket.listen(4096)?;
        let addr = listener.local_addr()?;
        let generation = Arc::new(watch::Sender::new(0u64));
        let gen_tx = generation.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let mut cut = gen_tx.subscribe();
                let born = *cut.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|g| *g > born) => {}
                    }
                    // Both sockets are dropped here: each peer sees the connection end.
                });
            }
        });
        Ok(Self {
            addr,
            generation,
            accept,
        })
    }

    /// Where clients should connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cut every connection accepted so far.
    pub fn cut_all(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn relays_then_cuts() {
        let upstream = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let up_addr = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = upstream.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxy = Proxy::start(up_addr).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");

        proxy.cut_all();
        let n = tokio::time::timeout(std::time::Duration::from_secs(2), c.read(&mut buf))
            .await
            .expect("the cut is seen")
            .unwrap_or(0);
        assert_eq!(n, 0, "connection ended");

        // New connections still work.
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.write_all(b"pong").await.unwrap();
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
    }
}
