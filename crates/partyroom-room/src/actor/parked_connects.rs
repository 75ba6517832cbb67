//! Connections that wait for a session handoff: in a cluster, the handoff of a session
//! transfer crosses nodes and may arrive after the client that presents its token. Such a
//! connection is kept (at most [`HANDOFF_WAIT`]) until the handoff arrives, then connected.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::connection::refusal::ConnectError;
use crate::connection::request::{ConnId, ConnectRequest};

/// Longest a client that presents an unknown transfer token waits for its handoff.
pub(crate) const HANDOFF_WAIT: Duration = Duration::from_secs(2);

/// Where a connect request's answer goes.
pub(crate) type ConnectReply = oneshot::Sender<Result<ConnId, ConnectError>>;

/// A connection waiting for the handoff of the session its transfer token names.
#[derive(Debug)]
struct Parked {
    token: String,
    until: Instant,
    req: ConnectRequest,
    reply: ConnectReply,
}

/// The connections of a room that wait for a handoff.
#[derive(Debug, Default)]
pub(crate) struct ParkedConnects {
    parked: Vec<Parked>,
}

/// The transfer token a connect request presents, if any.
pub(crate) fn presented_token(req: &ConnectRequest) -> Option<&str> {
    req.query
        .iter()
        .find(|(k, _)| k == "transferToken")
        .map(|(_, v)| v.as_str())
}

impl ParkedConnects {
    /// Keep `req` until the handoff of `token` arrives or [`HANDOFF_WAIT`] after `now`.
    pub(crate) fn park(
        &mut self,
        token: String,
        now: Instant,
        req: ConnectRequest,
        reply: ConnectReply,
    ) {
        self.parked.push(Parked {
            token,
            until: now + HANDOFF_WAIT,
            req,
            reply,
        });
    }

    /// Take the requests that wait for `token`.
    pub(crate) fn take_token(&mut self, token: &str) -> Vec<(ConnectRequest, ConnectReply)> {
        self.take(|p| p.token == token)
    }

    /// Take the requests whose wait ended at `now`.
    pub(crate) fn take_expired(&mut self, now: Instant) -> Vec<(ConnectRequest, ConnectReply)> {
        self.take(|p| p.until <= now)
    }

    fn take(&mut self, done: impl Fn(&Parked) -> bool) -> Vec<(ConnectRequest, ConnectReply)> {
        if !self.parked.iter().any(&done) {
            return Vec::new();
        }
        let (ready, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.parked).into_iter().partition(done);
        self.parked = waiting;
        ready.into_iter().map(|p| (p.req, p.reply)).collect()
    }

    /// When the first request stops waiting.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.parked.iter().map(|p| p.until).min()
    }

    /// No request waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.parked.is_empty()
    }
}
