//! A WebSocket echo server on the server's own connection code, for conformance suites
//! (Autobahn|Testsuite's fuzzing client; see `tests/autobahn`).
//!
//! A room cannot echo: its messages are JSON envelopes and its first frame to a client is a
//! sync packet. This server runs everything a room's client goes through except the room:
//! the handshake check ([`Handshake`]), the socket set-up of an upgrade (send buffer cap,
//! frame reader with its limits and frame timeout, direct writes), and the connection task
//! itself ([`connection::run`], with its liveness and write deadlines and its closing
//! handshake), with an echo as the connection's peer. Text messages go back through
//! [`Outbox::send`], the path room frames take; binary messages go back as binary frames
//! (the server itself only sends text).
//!
//! Built with the `autobahn-echo` feature; run by the `autobahn_echo` example.

use std::convert::Infallible;
use std::sync::Arc;

use axum::response::Response;
use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use partyroom_room::{ConnectionSink, RoomGone};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::ServerConfig;
use crate::connection::{self, Connection, Limits, Peer};
use crate::handshake::Handshake;
use crate::outbox::Outbox;
use crate::server::{handshake_refusal, socket_parts};

/// Frames that may wait for one client. The suite sends up to 1,000 messages in a row
/// without reading; a room's default queue (1,024) would do, this leaves room.
const ECHO_QUEUE: usize = 1 << 16;

/// Serve WebSocket echo connections on every path of `listener` with `config`'s limits
/// (message size, read chunk, header, frame, liveness and write deadlines, send buffer),
/// until the task is dropped.
pub async fn serve_echo(listener: TcpListener, config: ServerConfig) -> std::io::Result<()> {
    let config = Arc::new(config);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    let never = CancellationToken::new();
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let (config, never) = (config.clone(), never.clone());
        let service = service_fn(move |req| upgrade(req, config.clone(), never.clone()));
        let conn = http
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

/// The upgrade, as the server's own without the room.
async fn upgrade(
    request: http::Request<hyper::body::Incoming>,
    config: Arc<ServerConfig>,
    shutdown: CancellationToken,
) -> Result<Response, Infallible> {
    let (mut parts, _) = request.into_parts();
    let handshake = match Handshake::check(&mut parts) {
        Ok(h) => h,
        Err(e) => return Ok(handshake_refusal(e)),
    };
    let response = handshake.response();
    let on_upgrade = handshake.on_upgrade;
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let outbox = Arc::new(Outbox::new(ECHO_QUEUE));
        let (reader, writer) = socket_parts(upgraded, &outbox, &config);
        connection::run(Connection {
            reader,
            writer,
            outbox: outbox.clone(),
            peer: Echo { outbox },
            shutdown,
            limits: Limits::of(&config),
        })
        .await;
    });
    Ok(response)
}

/// The echo as a connection's peer.
struct Echo {
    outbox: Arc<Outbox>,
}

impl Peer for Echo {
    fn label(&self) -> &str {
        "echo"
    }

    async fn message(&mut self, payload: Bytes, text: bool) -> Result<bool, RoomGone> {
        if text {
            let _ = self.outbox.send(payload);
        } else {
            let _ = self.outbox.send_binary(payload);
        }
        Ok(true)
    }

    async fn drained(&mut self, _delivered: bool) -> Result<(), RoomGone> {
        Ok(())
    }

    async fn disconnect(&mut self) {}
}
