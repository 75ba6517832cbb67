//! Relaying a client's WebSocket or HTTP request to another server, unchanged: what a shard
//! gateway does in front of the main room server, and what a cluster node does for a room
//! another node owns.
//!
//! - **WebSocket.** [`connect_upstream`] opens the upstream socket before the client's
//!   upgrade is accepted, so a room that refuses the client (401, 403, 404...) refuses it with
//!   the same HTTP answer ([`Upstream::Refused`]). [`accept_and_relay`] then upgrades the
//!   client and relays frames and close frames both ways until either side closes, the
//!   client stops reading or answering pings, or shutdown is signalled (then both sides get
//!   1001).
//! - **HTTP.** [`relay_http`] sends the request on with its method, headers and body, and
//!   answers with the upstream's status, headers and body.
//!
//! Hop-by-hop headers and the WebSocket handshake's own are never relayed. Headers that
//! claim an identity only servers may claim (a shard's, a cluster node's) are dropped from
//! what a client sent under [`HeaderPolicy::FromClient`], and kept under
//! [`HeaderPolicy::Trusted`] (a cluster node relaying what it already checked).

use std::time::Duration;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::extract::ws::{CloseFrame as AxClose, Message as AxMessage, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderName, StatusCode};
use partyroom_room::RoomResponse;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame as TClose, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as TMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::http_client::{self, BaseUrl};

/// The header a cluster node sets on what it relays to another node: the cluster secret.
pub const RELAY_HEADER: &str = "x-partyroom-relay";

/// The limits of a relay.
#[derive(Debug, Clone, Copy)]
pub struct RelayLimits {
    /// Largest client message and frame.
    pub max_message_bytes: usize,
    /// Largest HTTP body, both ways.
    pub max_body_bytes: usize,
    /// How long the upstream may take to accept a socket or answer a request.
    pub request_timeout: Duration,
    /// Ping a relayed client that has sent nothing for this long (and again each interval);
    /// `None`: no pings and no liveness check.
    pub ping_interval: Option<Duration>,
    /// Drop a relayed client from which nothing (a message, a pong) has come for this long.
    pub liveness_timeout: Duration,
    /// Drop a relayed client that takes no frame for this long (it stopped reading; the
    /// upstream would otherwise see the relay as its slow client).
    pub write_timeout: Duration,
}

impl Default for RelayLimits {
    /// 64 KiB messages, 1 MiB bodies, 10 s to answer, pings after 25 s of silence, dropped
    /// after 60 s, 10 s to take a frame: as the room server.
    fn default() -> Self {
        Self {
            max_message_bytes: 64 * 1024,
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            ping_interval: Some(Duration::from_secs(25)),
            liveness_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// Which of a request's identity headers go on (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderPolicy {
    /// A client's request: headers that claim a server's identity are dropped.
    FromClient,
    /// A request whose identity headers this server has checked: they go on.
    Trusted,
}

/// Headers that claim a shard's or a cluster node's identity.
const IDENTITY_HEADERS: [&str; 6] = [
    "x-shard-id",
    "x-shard-world-id",
    "x-access-shard",
    "x-forwarded-by-shard",
    "x-original-client-ip",
    RELAY_HEADER,
];

/// Whether a header goes on under `policy`: never hop-by-hop ones or the WebSocket
/// handshake's; identity headers only when trusted (the relay's own are set after the copy).
pub fn relayed(name: &HeaderName, policy: HeaderPolicy) -> bool {
    let n = name.as_str();
    if n == RELAY_HEADER {
        return false;
    }
    if IDENTITY_HEADERS.contains(&n) {
        return policy == HeaderPolicy::Trusted;
    }
    !matches!(
        n,
        "host"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "proxy-authenticate"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
            | "sec-websocket-key"
            | "sec-websocket-version"
            | "sec-websocket-extensions"
            | "sec-websocket-accept"
            | "sec-websocket-protocol"
    )
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap, policy: HeaderPolicy) {
    for (name, value) in from {
        if relayed(name, policy) {
            to.append(name.clone(), value.clone());
        }
    }
}

/// A JSON error answer with CORS headers, as rooms answer.
pub fn json_error(status: StatusCode, message: &str) -> Response {
    let mut r = RoomResponse::error(status, message);
    r.apply_cors();
    let mut out = Response::new(Body::from(r.body));
    *out.status_mut() = r.status;
    *out.headers_mut() = r.headers;
    out
}

/// Why an HTTP request could not be relayed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The client's body is over [`RelayLimits::max_body_bytes`].
    #[error("request body too large")]
    BodyTooLarge,
    /// The upstream did not answer.
    #[error("upstream failed: {0}")]
    Upstream(#[from] http_client::ClientError),
}

impl RelayError {
    /// The answer a client gets: `413`, or `502`.
    pub fn into_response(self) -> Response {
        match self {
            RelayError::BodyTooLarge => {
                json_error(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large")
            }
            RelayError::Upstream(e) => {
                tracing::warn!(error = %e, "error forwarding request");
                json_error(StatusCode::BAD_GATEWAY, "Error forwarding request")
            }
        }
    }
}

/// Relay an HTTP request (its body already read) to `base` at `path_and_query`, with
/// `extra` headers set over the client's.
pub async fn relay_http(
    limits: &RelayLimits,
    parts: &http::request::Parts,
    body: bytes::Bytes,
    base: &BaseUrl,
    path_and_query: &str,
    extra: &HeaderMap,
    policy: HeaderPolicy,
) -> Result<Response, RelayError> {
    let mut headers = HeaderMap::new();
    copy_headers(&parts.headers, &mut headers, policy);
    for (name, value) in extra {
        headers.insert(name.clone(), value.clone());
    }
    let r = http_client::send(
        base,
        parts.method.clone(),
        path_and_query,
        headers,
        body,
        limits.request_timeout,
        limits.max_body_bytes,
    )
    .await?;
    let mut out = Response::new(Body::from(r.body));
    *out.status_mut() = r.status;
    for (name, value) in &r.headers {
        if relayed(name, HeaderPolicy::FromClient) {
            out.headers_mut().append(name.clone(), value.clone());
        }
    }
    Ok(out)
}

/// Read a request's body within `limit`.
pub async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, RelayError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| RelayError::BodyTooLarge)
}

/// An upstream WebSocket, opened.
pub type UpstreamSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What opening the upstream socket gave.
#[derive(Debug)]
pub enum Upstream {
    /// Open: upgrade the client with [`accept_and_relay`].
    Open(Box<UpstreamSocket>),
    /// The upstream answered with an HTTP refusal: answer the client the same.
    Refused(Response),
    /// The upstream could not be reached or did not answer in time.
    Failed(String),
}

/// Open the upstream WebSocket at `url` (`ws://...`) with the client's headers (under
/// `policy`) and `extra` ones.
pub async fn connect_upstream(
    limits: &RelayLimits,
    client_headers: &HeaderMap,
    url: &str,
    extra: &HeaderMap,
    policy: HeaderPolicy,
) -> Upstream {
    let Ok(mut request) = url.into_client_request() else {
        return Upstream::Failed(format!("bad upstream URL {url}"));
    };
    copy_headers(client_headers, request.headers_mut(), policy);
    for (name, value) in extra {
        request.headers_mut().insert(name.clone(), value.clone());
    }
    // Frames from the room can be large (a full snapshot); frames from the client are
    // bounded by the relay's own limit.
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(16 << 20));
    let connect = tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true);
    match tokio::time::timeout(limits.request_timeout, connect).await {
        Ok(Ok((socket, _))) => Upstream::Open(Box::new(socket)),
        Ok(Err(WsError::Http(refusal))) => {
            let (rparts, body) = refusal.into_parts();
            let mut out = Response::new(Body::from(body.unwrap_or_default()));
            *out.status_mut() = rparts.status;
            for (name, value) in &rparts.headers {
                if relayed(name, HeaderPolicy::FromClient) {
                    out.headers_mut().append(name.clone(), value.clone());
                }
            }
            Upstream::Refused(out)
        }
        Ok(Err(e)) => Upstream::Failed(e.to_string()),
        Err(_) => Upstream::Failed("timed out".into()),
    }
}

/// Accept the client's upgrade and relay between it and `upstream` in a task started with
/// `spawn` (so the caller can track it for shutdown); `on_end` runs when the relay ends.
pub async fn accept_and_relay<S, E>(
    parts: &mut http::request::Parts,
    upstream: UpstreamSocket,
    limits: RelayLimits,
    shutdown: CancellationToken,
    spawn: S,
    on_end: E,
) -> Response
where
    S: FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) + Send + 'static,
    E: FnOnce() + Send + 'static,
{
    let ws = match WebSocketUpgrade::from_request_parts(parts, &()).await {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    ws.max_message_size(limits.max_message_bytes)
        .max_frame_size(limits.max_message_bytes)
        .on_upgrade(move |socket| async move {
            spawn(Box::pin(async move {
                relay(socket, upstream, shutdown, limits).await;
                on_end();
            }));
        })
}

fn to_tungstenite_close(frame: Option<AxClose>) -> Option<TClose> {
    frame.map(|f| TClose {
        code: f.code.into(),
        reason: f.reason.as_str().into(),
    })
}

fn to_axum_close(frame: Option<TClose>) -> Option<AxClose> {
    frame.map(|f| AxClose {
        code: f.code.into(),
        reason: f.reason.as_str().into(),
    })
}

/// How long a closing relay may take to send its close frames.
const RELAY_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Relay frames both ways until either side closes, the client stops reading or answering,
/// or shutdown. No send waits longer than the write timeout, so a client that stops reading
/// cannot hold the relay (nor, through it, the upstream's connection).
pub async fn relay(
    client: WebSocket,
    upstream: UpstreamSocket,
    shutdown: CancellationToken,
    limits: RelayLimits,
) {
    let (mut client_tx, mut client_rx) = client.split();
    let (mut up_tx, mut up_rx) = upstream.split();
    let started = tokio::time::Instant::now();
    // When the client was last heard, in milliseconds since `started`.
    let heard = std::sync::atomic::AtomicU64::new(0);
    let heard_now = || {
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        heard.store(ms, std::sync::atomic::Ordering::Relaxed);
    };
    let shutting_down = {
        let client_to_room = async {
            while let Some(msg) = client_rx.next().await {
                heard_now();
                let out = match msg {
                    Ok(AxMessage::Text(t)) => TMessage::Text(t.as_str().into()),
                    Ok(AxMessage::Binary(b)) => TMessage::Binary(b),
                    Ok(AxMessage::Close(frame)) => {
                        let close = up_tx.send(TMessage::Close(to_tungstenite_close(frame)));
                        let _ = tokio::time::timeout(RELAY_CLOSE_TIMEOUT, close).await;
                        return;
                    }
                    Ok(_) => continue,
                    Err(_) => break,
                };
                if up_tx.send(out).await.is_err() {
                    return;
                }
            }
            // The client went away without a close frame.
            let close = up_tx.send(TMessage::Close(None));
            let _ = tokio::time::timeout(RELAY_CLOSE_TIMEOUT, close).await;
        };
        let room_to_client = async {
            // No ticks when the interval is beyond what the clock can say: never.
            let mut ticks = limits.ping_interval.and_then(|every| {
                let mut t = tokio::time::interval_at(started.checked_add(every)?, every);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                Some(t)
            });
            loop {
                let tick = async {
                    match ticks.as_mut() {
                        Some(t) => t.tick().await,
                        None => std::future::pending().await,
                    }
                };
                let out = tokio::select! {
                    msg = up_rx.next() => match msg {
                        Some(Ok(TMessage::Text(t))) => AxMessage::Text(t.as_str().into()),
                        Some(Ok(TMessage::Binary(b))) => AxMessage::Binary(b),
                        Some(Ok(TMessage::Close(frame))) => {
                            let close = client_tx.send(AxMessage::Close(to_axum_close(frame)));
                            let _ = tokio::time::timeout(RELAY_CLOSE_TIMEOUT, close).await;
                            return;
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(_)) | None => break,
                    },
                    now = tick => {
                        let last = started
                            + Duration::from_millis(heard.load(std::sync::atomic::Ordering::Relaxed));
                        let silent = now.saturating_duration_since(last);
                        if silent >= limits.liveness_timeout {
                            tracing::debug!("dropping relayed client: no answer to pings");
                            return;
                        }
                        if silent < limits.ping_interval.unwrap_or(Duration::MAX) {
                            continue;
                        }
                        AxMessage::Ping(Default::default())
                    }
                };
                match tokio::time::timeout(limits.write_timeout, client_tx.send(out)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(_) => {
                        tracing::debug!("dropping relayed client: it stopped reading");
                        return;
                    }
                }
            }
            // The upstream went away without a close frame: the client should reconnect.
            let close = client_tx.send(AxMessage::Close(Some(AxClose {
                code: 1012,
                reason: "upstream connection lost".into(),
            })));
            let _ = tokio::time::timeout(RELAY_CLOSE_TIMEOUT, close).await;
        };
        tokio::select! {
            () = client_to_room => false,
            () = room_to_client => false,
            () = shutdown.cancelled() => true,
        }
    };
    if shutting_down {
        let close = client_tx.send(AxMessage::Close(Some(AxClose {
            code: 1001,
            reason: "server shutting down".into(),
        })));
        let _ = tokio::time::timeout(RELAY_CLOSE_TIMEOUT, close).await;
        let _ = tokio::time::timeout(RELAY_CLOSE_TIMEOUT, up_tx.send(TMessage::Close(None))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_headers_go_on_only_when_trusted() {
        for h in [
            "x-access-shard",
            "x-shard-id",
            "x-forwarded-by-shard",
            "x-original-client-ip",
        ] {
            let name = HeaderName::from_static(h);
            assert!(!relayed(&name, HeaderPolicy::FromClient), "{h}");
            assert!(relayed(&name, HeaderPolicy::Trusted), "{h}");
        }
        for h in [RELAY_HEADER, "host", "upgrade", "sec-websocket-key"] {
            let name = HeaderName::from_static(h);
            assert!(!relayed(&name, HeaderPolicy::FromClient), "{h}");
            assert!(!relayed(&name, HeaderPolicy::Trusted), "{h}");
        }
        assert!(relayed(
            &http::header::AUTHORIZATION,
            HeaderPolicy::FromClient
        ));
    }

    /// A raw client through the relay at `addr`: it sends `first` as its one message and then
    /// neither reads nor answers pings (its receive buffer is small, so that the gateway's
    /// sends to it stall soon).
    async fn raw_client(addr: std::net::SocketAddr, first: &str) -> TcpStream {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut s = socket.connect(addr).await.unwrap();
        s.write_all(
            b"GET /r HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut b = [0u8; 1];
            assert_eq!(s.read(&mut b).await.unwrap(), 1);
            head.push(b[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101"));
        let mask = [1u8, 2, 3, 4];
        let mut frame = vec![0x81, 0x80 | first.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(first.bytes().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        s.write_all(&frame).await.unwrap();
        s
    }

    /// The relay's deadlines over real sockets: a relayed client that stops reading while the
    /// room floods it is dropped after the write timeout, and one that stays silent (no pongs)
    /// after the liveness timeout; either way the relay ends instead of waiting forever.
    #[tokio::test]
    async fn relayed_clients_that_stop_reading_or_answering_are_dropped() {
        // The room side: floods after "flood", stays quiet after anything else.
        let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up_addr = up.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = up.accept().await {
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                        return;
                    };
                    if let Some(Ok(TMessage::Text(t))) = ws.next().await
                        && t.as_str() == "flood"
                    {
                        let big = "x".repeat(60_000);
                        while ws.send(TMessage::text(big.clone())).await.is_ok() {}
                    } else {
                        while let Some(Ok(_)) = ws.next().await {}
                    }
                });
            }
        });
        let limits = RelayLimits {
            ping_interval: Some(Duration::from_millis(150)),
            liveness_timeout: Duration::from_millis(500),
            write_timeout: Duration::from_millis(300),
            ..RelayLimits::default()
        };
        let (done_tx, mut done) = tokio::sync::mpsc::channel::<()>(4);
        let app = axum::Router::new().route(
            "/r",
            axum::routing::get(move |ws: WebSocketUpgrade| async move {
                let (upstream, _) = tokio_tungstenite::connect_async(format!("ws://{up_addr}/"))
                    .await
                    .unwrap();
                ws.on_upgrade(move |socket| async move {
                    relay(socket, upstream, CancellationToken::new(), limits).await;
                    let _ = done_tx.send(()).await;
                })
            }),
        );
        let gw = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gw_addr = gw.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(gw, app).await });
        for (first, within) in [
            ("flood", Duration::from_secs(5)),
            ("quiet", Duration::from_secs(3)),
        ] {
            let started = tokio::time::Instant::now();
            let _client = raw_client(gw_addr, first).await;
            let ended = tokio::time::timeout(within, done.recv()).await;
            assert!(ended.is_ok(), "{first}: the relay let go of the client");
            if first == "quiet" {
                assert!(
                    started.elapsed() >= Duration::from_millis(450),
                    "{first}: not before the liveness timeout"
                );
            }
        }
    }
}
