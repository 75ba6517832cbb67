//! A TCP link between one node and PostgreSQL that a test can cut and heal: the simulation of
//! a network partition (or of a database outage, when every node's link is cut).
//!
//! A cut link is a black hole, as a real partition is: nothing is refused or reset, bytes
//! simply stop flowing both ways and new connections are accepted but never answered. When
//! the link heals, the bytes held back are delivered, as TCP retransmission would deliver
//! them, unless an end gave up on the connection in the meantime.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// One node's link to the database.
pub struct DbLink {
    url: String,
    cut: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl DbLink {
    /// A link to the server of `pg_url` (`postgres://user@host:port/db`): listens on a free
    /// port of 127.0.0.1; [`DbLink::url`] is `pg_url` with that address.
    pub async fn start(pg_url: &str) -> DbLink {
        let (scheme, rest) = pg_url.split_once("://").expect("a postgres:// URL");
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (user, host) = match authority.rsplit_once('@') {
            Some((user, host)) => (format!("{user}@"), host.to_owned()),
            None => (String::new(), authority.to_owned()),
        };
        let upstream = if host.contains(':') {
            host
        } else {
            format!("{host}:5432")
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = format!("{scheme}://{user}127.0.0.1:{port}/{path}");
        let (cut, _) = watch::channel(false);
        let cut = Arc::new(cut);
        let accepting = cut.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let cut = accepting.subscribe();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let mut gate = cut.clone();
                    // A connection made during a cut reaches the server only once it heals.
                    if gate.wait_for(|cut| !*cut).await.is_err() {
                        return;
                    }
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::select! {
                        () = pump(cr, sw, cut.clone()) => {}
                        () = pump(sr, cw, cut) => {}
                    }
                });
            }
        });
        DbLink { url, cut, task }
    }

    /// The database URL through this link.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stop every byte, both ways, on every connection (open and new).
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Let the bytes flow again.
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for DbLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copy `from` to `to` while the link is up; hold what was read during a cut until it heals.
/// Returns when either side closes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut cut: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if cut.wait_for(|cut| !*cut).await.is_err() {
            return;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // Cut while waiting: stop reading (the sender's kernel buffers fill up).
            _ = cut.changed() => continue,
        };
        if cut.wait_for(|cut| !*cut).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
