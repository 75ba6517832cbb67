//! [`ClientOptions`]: where to connect, as who, and how to behave when the connection drops.

use std::time::Duration;

use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, utf8_percent_encode};

/// Characters escaped in query keys and values: everything but what JavaScript's
/// `encodeURIComponent` leaves alone (`A-Z a-z 0-9 - _ . ! ~ * ' ( )`).
pub(crate) const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// Characters escaped in the party and room path segments: the ones that would end or break
/// a path segment (`/ ? # %`, space, controls, quotes and brackets). Everything partysocket
/// sends unencoded and that is valid in a path (`:`, `@`, `+`, `=`, ...) is kept as is, so the
/// URL of any room id that works with partysocket is byte-for-byte the same.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// The WebSocket scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Plain `ws://`.
    Ws,
    /// `wss://` (TLS). This crate is built without TLS support for now: connecting to a `wss://`
    /// URL fails with a transport error.
    Wss,
}

impl Protocol {
    /// `"ws"` or `"wss"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Ws => "ws",
            Protocol::Wss => "wss",
        }
    }
}

/// When and how often to reconnect; the defaults are partysocket's (spec 5.4).
///
/// The delay before reconnection attempt `k` (`k ≥ 1`, counting consecutive failures since
/// the last connection that stayed open for `min_uptime`) is
/// `min(max_delay, base × grow_factor^(k−1))`, where `base = min_delay + random × jitter` is
/// drawn once per client. The very first connection is attempted at once.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconnectPolicy {
    /// Smallest delay before a reconnection. Default 1 s.
    pub min_delay: Duration,
    /// Upper bound of the random part added to `min_delay` (drawn once per client).
    /// Default 4 s, as partysocket's `1000 + random × 4000` ms.
    pub jitter: Duration,
    /// Largest delay between attempts. Default 10 s.
    pub max_delay: Duration,
    /// Growth of the delay per consecutive failure. Default 1.3.
    pub grow_factor: f64,
    /// How long one attempt (TCP connect and WebSocket handshake) may take before it counts as
    /// failed. Default 4 s.
    pub connection_timeout: Duration,
    /// How long a connection must stay open for the failure count to start again from zero.
    /// Default 5 s.
    pub min_uptime: Duration,
    /// Consecutive reconnection attempts allowed after a failure; `None` (the default) retries
    /// forever. When they are used up the client becomes [`Status::Closed`](crate::Status).
    pub max_retries: Option<u32>,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(1000),
            jitter: Duration::from_millis(4000),
            max_delay: Duration::from_millis(10_000),
            grow_factor: 1.3,
            connection_timeout: Duration::from_millis(4000),
            min_uptime: Duration::from_millis(5000),
            max_retries: None,
        }
    }
}

impl ReconnectPolicy {
    /// A policy that never reconnects: the first failure or drop closes the client.
    pub fn never() -> Self {
        Self {
            max_retries: Some(0),
            ..Self::default()
        }
    }

    /// The delay before attempt `failures` (0 for the first connection), given the drawn base.
    pub(crate) fn delay(&self, base: Duration, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let exp = i32::try_from(failures - 1).unwrap_or(i32::MAX);
        let secs = base.as_secs_f64() * self.grow_factor.powi(exp);
        let max = self.max_delay.as_secs_f64();
        if secs.is_finite() && secs < max {
            Duration::from_secs_f64(secs.max(0.0))
        } else {
            self.max_delay
        }
    }

    /// `min_delay + random × jitter`.
    pub(crate) fn draw_base(&self) -> Duration {
        self.min_delay + self.jitter.mul_f64(fastrand::f64())
    }
}

/// Where and how a [`Client`](crate::Client) connects.
///
/// ```
/// use partyroom_client::ClientOptions;
///
/// let options = ClientOptions::new("localhost:3000", "lobby")
///     .session_id("sess-1")
///     .query("name", "Sam & Ann");
/// assert_eq!(
///     options.url(),
///     "ws://localhost:3000/parties/main/lobby?_pk=sess-1&id=sess-1&name=Sam%20%26%20Ann"
/// );
/// ```
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub(crate) host: String,
    pub(crate) party: String,
    pub(crate) room: String,
    pub(crate) session_id: String,
    pub(crate) protocol: Option<Protocol>,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) reconnect: ReconnectPolicy,
    pub(crate) send_buffer: usize,
    pub(crate) event_capacity: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) mirror: bool,
}

impl ClientOptions {
    /// Options for room `room` of party `main` on `host`.
    ///
    /// `host` is a host with an optional port (`localhost:3000`, `game.example.com`); as with
    /// partysocket, a leading `http://`, `https://`, `ws://` or `wss://` and one trailing `/`
    /// are removed and **do not** choose the scheme: see [`ClientOptions::protocol`].
    pub fn new(host: impl Into<String>, room: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            party: "main".to_owned(),
            room: room.into(),
            session_id: random_session_id(),
            protocol: None,
            query: Vec::new(),
            reconnect: ReconnectPolicy::default(),
            send_buffer: 256,
            event_capacity: 256,
            connect_timeout: Duration::from_secs(10),
            mirror: true,
        }
    }

    /// The party (namespace). Default `main`.
    #[must_use]
    pub fn party(mut self, party: impl Into<String>) -> Self {
        self.party = party.into();
        self
    }

    /// The room id.
    #[must_use]
    pub fn room(mut self, room: impl Into<String>) -> Self {
        self.room = room.into();
        self
    }

    /// The host (see [`ClientOptions::new`]).
    #[must_use]
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// The private session id, sent as both `id` and `_pk`. Default: a random UUID, fixed for
    /// the options (and so for the client's lifetime: every reconnection uses it, which is
    /// what lets the server give back the same player).
    #[must_use]
    pub fn session_id(mut self, id: impl Into<String>) -> Self {
        self.session_id = id.into();
        self
    }

    /// Force the scheme. Without it, the scheme is chosen like partysocket does: `ws` when the
    /// host (after removing any scheme) starts with `localhost:`, `127.0.0.1:`, `192.168.`,
    /// `10.`, `[::ffff:7f00:1]:`, or `172.` followed by a second octet that compares *as a
    /// string* between `"16"` and `"31"` (partysocket's rule, kept as is); `wss` otherwise.
    #[must_use]
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = Some(protocol);
        self
    }

    /// Add a query parameter (sent after `_pk` and `id`, in the order added). The keys `id`
    /// and `_pk` are reserved for the session id: parameters with these keys are not sent.
    #[must_use]
    pub fn query(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((key.into(), value.into()));
        self
    }

    /// The reconnection policy.
    #[must_use]
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
        self
    }

    /// How many messages [`Client::emit`](crate::Client::emit) may queue while the socket is
    /// not open (or cannot keep up). Default 256; when full, `emit` returns
    /// [`SendError::BufferFull`](crate::SendError::BufferFull). At least 1.
    #[must_use]
    pub fn send_buffer(mut self, messages: usize) -> Self {
        self.send_buffer = messages.max(1);
        self
    }

    /// How many frames each [`Subscription`](crate::Subscription) may hold before the oldest
    /// are skipped. Default 256. At least 1.
    #[must_use]
    pub fn event_capacity(mut self, frames: usize) -> Self {
        self.event_capacity = frames.max(1);
        self
    }

    /// How long [`Client::connect`](crate::Client::connect) waits for the first `pId` packet.
    /// Default 10 s.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Keep the local mirror of the room state (default `true`).
    ///
    /// With `false`, `sync` packets are not applied: [`Client::state`](crate::Client::state)
    /// stays an empty object and [`Client::changes`](crate::Client::changes) is marked changed
    /// only when a connection's first `pId` packet arrives, so [`Client::pid`](crate::Client::pid),
    /// [`Client::wait_ready`](crate::Client::wait_ready) and
    /// [`StateView::syncs`](crate::StateView::syncs) still work. Every frame is still parsed and
    /// delivered to subscriptions and listeners. Meant for load generators and bots that read
    /// the frames themselves: merging every packet into a mirror (and waking the watchers)
    /// costs CPU at high packet rates.
    #[must_use]
    pub fn mirror(mut self, keep: bool) -> Self {
        self.mirror = keep;
        self
    }

    /// The host without scheme and trailing slash (partysocket's normalisation).
    pub fn bare_host(&self) -> &str {
        let mut host = self.host.as_str();
        for prefix in ["http://", "https://", "ws://", "wss://"] {
            if let Some(rest) = host.strip_prefix(prefix) {
                host = rest;
                break;
            }
        }
        host.strip_suffix('/').unwrap_or(host)
    }

    /// The scheme used: the explicit [`protocol`](ClientOptions::protocol), else partysocket's
    /// local-address rule.
    pub fn scheme(&self) -> Protocol {
        if let Some(p) = self.protocol {
            return p;
        }
        if is_local(self.bare_host()) {
            Protocol::Ws
        } else {
            Protocol::Wss
        }
    }

    /// The WebSocket URL: `{scheme}://{host}/parties/{party}/{room}?_pk=<session>&id=<session>&...`.
    ///
    /// Party and room are inserted like partysocket does (unencoded), except that characters
    /// which would break the path (`/ ? # %`, spaces, controls...) are percent-encoded; query
    /// keys and values are encoded like `encodeURIComponent`.
    pub fn url(&self) -> String {
        let mut url = format!(
            "{}://{}/parties/{}/{}",
            self.scheme().as_str(),
            self.bare_host(),
            utf8_percent_encode(&self.party, SEGMENT),
            utf8_percent_encode(&self.room, SEGMENT),
        );
        let session = utf8_percent_encode(&self.session_id, COMPONENT).to_string();
        url.push_str("?_pk=");
        url.push_str(&session);
        url.push_str("&id=");
        url.push_str(&session);
        for (k, v) in &self.query {
            if k == "id" || k == "_pk" {
                continue;
            }
            url.push('&');
            url.extend(utf8_percent_encode(k, COMPONENT));
            url.push('=');
            url.extend(utf8_percent_encode(v, COMPONENT));
        }
        url
    }
}

/// partysocket's test for a local address (spec 5.3), string comparison of `172.x` included.
fn is_local(host: &str) -> bool {
    if [
        "localhost:",
        "127.0.0.1:",
        "192.168.",
        "10.",
        "[::ffff:7f00:1]:",
    ]
    .iter()
    .any(|p| host.starts_with(p))
    {
        return true;
    }
    if host.starts_with("172.") {
        // JS: host.split(".")[1] >= "16" && host.split(".")[1] <= "31" (string comparison).
        let second = host.split('.').nth(1).unwrap_or("");
        return ("16"..="31").contains(&second);
    }
    false
}

/// A random version-4 UUID string (`xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`), like
/// `crypto.randomUUID()` which partysocket uses for its default id.
pub fn random_session_id() -> String {
    let mut b: [u8; 16] = fastrand::u128(..).to_le_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_cap() {
        let p = ReconnectPolicy::default();
        let base = Duration::from_secs(1);
        assert_eq!(p.delay(base, 0), Duration::ZERO);
        assert_eq!(p.delay(base, 1), Duration::from_secs(1));
        assert!((p.delay(base, 2).as_secs_f64() - 1.3).abs() < 1e-9);
        assert_eq!(p.delay(base, 100), Duration::from_secs(10));
        assert_eq!(p.delay(base, u32::MAX), Duration::from_secs(10));
        for _ in 0..100 {
            let b = p.draw_base();
            assert!(b >= Duration::from_secs(1) && b <= Duration::from_secs(5));
        }
    }

    #[test]
    fn uuid_shape() {
        let id = random_session_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(id, random_session_id());
    }
}
