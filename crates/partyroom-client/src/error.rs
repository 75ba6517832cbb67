//! Errors of the client.

use std::time::Duration;

/// A boxed error from the transport (TCP, WebSocket handshake, I/O).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why [`Client::connect`](crate::Client::connect) failed. The client is closed when it
/// returns one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The server answered the WebSocket upgrade with an HTTP error (unknown room `404`, a
    /// refusing guard, too many connections `503`...).
    #[error("server refused the connection: HTTP {status}: {body}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Response body (the JSON error of partyroom, e.g. `{"error":"Not found"}`).
        body: String,
    },
    /// The TCP connection or the WebSocket handshake failed (connection refused, DNS, `wss://`
    /// without TLS support...).
    #[error("connection failed: {0}")]
    Transport(#[source] BoxError),
    /// One attempt took longer than the policy's `connection_timeout`.
    #[error("connection attempt timed out after {0:?}")]
    AttemptTimeout(Duration),
    /// The socket opened but closed before the first `pId` packet (a room that refused the
    /// client closes it this way).
    #[error("closed before the first sync packet (code {code:?}: {reason})")]
    ClosedBeforeSync {
        /// Close code sent by the server, if any.
        code: Option<u16>,
        /// Close reason.
        reason: String,
    },
    /// No `pId` packet within the options' `connect_timeout`.
    #[error("no sync packet with pId within {0:?}")]
    Timeout(Duration),
    /// The client was closed (or dropped) while connecting.
    #[error("client closed")]
    Closed,
}

/// Why [`Client::emit`](crate::Client::emit) did not queue a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The send buffer is full (the socket has been down for a while, or cannot keep up).
    /// The message was dropped; nothing else was.
    #[error("send buffer full")]
    BufferFull,
    /// The client is closed: nothing will be sent any more.
    #[error("client closed")]
    Closed,
    /// The value could not be serialised to JSON.
    #[error("value is not serialisable: {0}")]
    Json(#[from] serde_json::Error),
}

/// Why a wait ([`Client::wait_for`](crate::Client::wait_for) and friends) ended without its
/// condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The condition did not hold within the timeout.
    #[error("condition not met within {0:?}")]
    Timeout(Duration),
    /// The client closed first (by [`Client::close`](crate::Client::close) or after its
    /// reconnection attempts were used up).
    #[error("client closed")]
    Closed,
}

/// Why [`connect_world`](crate::connect_world) failed. The `Display` texts of `Service`,
/// `InvalidResponse` and `NoAttempts` are those of `@signe/sync/client`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorldError {
    /// The host is not an `http://` URL (`https://` is not supported yet: no TLS).
    #[error("Invalid URL: {0}")]
    InvalidUrl(String),
    /// The world service answered with a non-2xx status.
    #[error("World service returned {status}: {message}")]
    Service {
        /// HTTP status.
        status: u16,
        /// `error` of the JSON body, or `Unknown error`.
        message: String,
    },
    /// A 2xx answer without a non-empty string `url` and `shardId`.
    #[error("Invalid response from World service: missing url or shardId")]
    InvalidResponse,
    /// Network or HTTP framing error.
    #[error("World service request failed: {0}")]
    Io(#[from] std::io::Error),
    /// `retry_count` was 0: no request was made.
    #[error("Failed to get shard after all retry attempts")]
    NoAttempts,
    /// The shard was assigned but connecting to it failed.
    #[error("connecting to the shard failed: {0}")]
    Connect(#[from] ConnectError),
}
