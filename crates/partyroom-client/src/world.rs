//! [`connect_world`]: ask a world service for a shard, then connect to it (spec 5.2 of the
//! world document, `connectionWorld` of `@signe/sync/client`).

use std::io;
use std::time::Duration;

use percent_encoding::utf8_percent_encode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::Client;
use crate::error::WorldError;
use crate::options::{COMPONENT, ClientOptions};

/// Largest world-service response read (headers and body).
const MAX_RESPONSE: usize = 1024 * 1024;

/// Options of [`connect_world`]; the defaults are those of `connectionWorld`.
#[derive(Debug, Clone)]
pub struct WorldOptions {
    client: ClientOptions,
    world_id: String,
    retry_count: u32,
    retry_delay: Duration,
    auto_create: bool,
    request_timeout: Duration,
}

impl WorldOptions {
    /// Ask the world service at `host` for a shard of the logical room `room`.
    ///
    /// `host` must be an absolute `http://` URL, optionally with a path prefix
    /// (`http://localhost:3000`, `http://10.0.0.5:8080/api`). `https://` is not supported yet
    /// (this crate has no TLS). The same host is used for the shard's WebSocket, whose scheme
    /// is chosen by the partysocket rule of [`ClientOptions::protocol`].
    pub fn new(host: impl Into<String>, room: impl Into<String>) -> Self {
        Self {
            client: ClientOptions::new(host, room),
            world_id: "world-default".to_owned(),
            retry_count: 3,
            retry_delay: Duration::from_secs(1),
            auto_create: true,
            request_timeout: Duration::from_secs(10),
        }
    }

    /// The world id. Default `world-default`.
    #[must_use]
    pub fn world_id(mut self, id: impl Into<String>) -> Self {
        self.world_id = id.into();
        self
    }

    /// How many requests are made at most (network errors, non-2xx answers and invalid
    /// answers are all retried). Default 3; 0 fails at once with [`WorldError::NoAttempts`].
    #[must_use]
    pub fn retry_count(mut self, count: u32) -> Self {
        self.retry_count = count;
        self
    }

    /// Fixed delay between attempts. Default 1 s.
    #[must_use]
    pub fn retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }

    /// Let the world create the room if it does not exist. Default `true`.
    #[must_use]
    pub fn auto_create(mut self, auto_create: bool) -> Self {
        self.auto_create = auto_create;
        self
    }

    /// Timeout of each HTTP request. Default 10 s.
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Adjust the options of the shard connection (session id, query, reconnection policy...).
    /// Its party and room are replaced by `shard` and the assigned shard.
    #[must_use]
    pub fn client(mut self, f: impl FnOnce(ClientOptions) -> ClientOptions) -> Self {
        self.client = f(self.client);
        self
    }

    /// The URL of the request: `{host}/parties/world/{encodeURIComponent(worldId)}/connect`.
    pub fn connect_url(&self) -> String {
        let host = &self.client.host;
        let host = host.strip_suffix('/').unwrap_or(host);
        format!(
            "{host}/parties/world/{}/connect",
            utf8_percent_encode(&self.world_id, COMPONENT)
        )
    }
}

/// The shard assigned by the world service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// `shardId` of the answer.
    pub shard_id: String,
    /// `url` of the answer: used as the room id in party `shard`.
    pub url: String,
}

/// A connection to a shard, from [`connect_world`].
#[derive(Debug, Clone)]
pub struct WorldConnection {
    /// The connected client (party `shard`, room = `shard.url`).
    pub client: Client,
    /// The assigned shard.
    pub shard: ShardInfo,
}

/// Ask the world service for a shard: `POST {host}/parties/world/{worldId}/connect` with
/// `{"roomId": room, "autoCreate": bool}`, retried up to `retry_count` times with a fixed
/// delay; the last error is returned.
pub async fn request_shard(options: &WorldOptions) -> Result<ShardInfo, WorldError> {
    let url = options.connect_url();
    let target = HttpTarget::parse(&url)?;
    let body =
        json!({"roomId": options.client.room, "autoCreate": options.auto_create}).to_string();
    let mut last = WorldError::NoAttempts;
    for attempt in 0..options.retry_count {
        if attempt > 0 {
            tokio::time::sleep(options.retry_delay).await;
        }
        let result =
            match tokio::time::timeout(options.request_timeout, target.post_json(&body)).await {
                Ok(r) => r.map_err(WorldError::Io),
                Err(_) => Err(WorldError::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "world service request timed out",
                ))),
            };
        match result.and_then(|(status, body)| shard_from_answer(status, &body)) {
            Ok(shard) => return Ok(shard),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Ask the world service for a shard ([`request_shard`]) and connect to it with party
/// `shard` and room = the answer's `url`, waiting for the first sync packet like
/// [`Client::connect`].
///
/// Only `http://` hosts are supported for now (no TLS). As with the official client, the
/// world is asked only once: the client then reconnects to the same shard forever.
pub async fn connect_world(options: WorldOptions) -> Result<WorldConnection, WorldError> {
    let shard = request_shard(&options).await?;
    let client_options = options.client.party("shard").room(shard.url.clone());
    let client = Client::connect(client_options).await?;
    Ok(WorldConnection { client, shard })
}

fn shard_from_answer(status: u16, body: &[u8]) -> Result<ShardInfo, WorldError> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if !(200..300).contains(&status) {
        let message = parsed
            .as_ref()
            .and_then(|v| v.get("error"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("Unknown error")
            .to_owned();
        return Err(WorldError::Service { status, message });
    }
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    match (field("url"), field("shardId")) {
        (Some(url), Some(shard_id)) => Ok(ShardInfo { shard_id, url }),
        _ => Err(WorldError::InvalidResponse),
    }
}

/// An `http://` URL split for a hand-written HTTP/1.1 request.
#[derive(Debug)]
struct HttpTarget {
    /// `host[:port]` as written (the `Host` header).
    authority: String,
    /// `host:port` to connect to.
    address: String,
    /// Path and query.
    path: String,
}

impl HttpTarget {
    fn parse(url: &str) -> Result<Self, WorldError> {
        if url.starts_with("https://") {
            return Err(WorldError::InvalidUrl(format!(
                "{url}: https is not supported (no TLS); use an http:// host"
            )));
        }
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(WorldError::InvalidUrl(format!(
                "{url}: the host must start with http://"
            )));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(WorldError::InvalidUrl(url.to_owned()));
        }
        // A port follows the last ':' unless that ':' is inside an IPv6 literal.
        let has_port = match authority.rfind(':') {
            Some(i) => !authority[i..].contains(']'),
            None => false,
        };
        let address = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Self {
            authority: authority.to_owned(),
            address,
            path: path.to_owned(),
        })
    }

    /// POST a JSON body; returns the status and the (de-chunked) body.
    async fn post_json(&self, body: &str) -> io::Result<(u16, Vec<u8>)> {
        let mut stream = TcpStream::connect(self.address.as_str()).await?;
        let _ = stream.set_nodelay(true);
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            self.path,
            self.authority,
            body.len(),
            body
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n > 0 {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > MAX_RESPONSE {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "world service response too large",
                    ));
                }
            }
            let eof = n == 0;
            if let Some(done) = parse_response(&buf, eof)? {
                return Ok(done);
            }
            if eof {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "world service closed the connection mid-response",
                ));
            }
        }
    }
}

/// Parse a complete response from `buf`, or `None` if more bytes are needed.
fn parse_response(buf: &[u8], eof: bool) -> io::Result<Option<(u16, Vec<u8>)>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let header_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
    };
    let status = response.code.unwrap_or(0);
    let mut content_length = None;
    let mut chunked = false;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            content_length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = String::from_utf8_lossy(h.value)
                .to_ascii_lowercase()
                .contains("chunked");
        }
    }
    let body = &buf[header_len..];
    if chunked {
        return Ok(decode_chunked(body)?.map(|b| (status, b)));
    }
    if let Some(len) = content_length {
        return Ok((body.len() >= len).then(|| (status, body[..len].to_vec())));
    }
    // Neither: the body ends with the connection.
    Ok(eof.then(|| (status, body.to_vec())))
}

/// Decode a chunked body; `None` if incomplete.
fn decode_chunked(mut body: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "bad chunked encoding");
    let mut out = Vec::new();
    loop {
        let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&body[..line_end]).map_err(|_| bad())?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad())?;
        body = &body[line_end + 2..];
        if size == 0 {
            // Trailers, if any, are ignored.
            return Ok(Some(out));
        }
        if body.len() < size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = HttpTarget::parse("http://127.0.0.1:3000/parties/world/w/connect").unwrap();
        assert_eq!(t.address, "127.0.0.1:3000");
        assert_eq!(t.authority, "127.0.0.1:3000");
        assert_eq!(t.path, "/parties/world/w/connect");
        let t = HttpTarget::parse("http://example.com/api/x").unwrap();
        assert_eq!(t.address, "example.com:80");
        let t = HttpTarget::parse("http://[::1]/x").unwrap();
        assert_eq!(t.address, "[::1]:80");
        let t = HttpTarget::parse("http://[::1]:8080/x").unwrap();
        assert_eq!(t.address, "[::1]:8080");
        assert!(matches!(
            HttpTarget::parse("https://example.com/x"),
            Err(WorldError::InvalidUrl(_))
        ));
        assert!(matches!(
            HttpTarget::parse("example.com/x"),
            Err(WorldError::InvalidUrl(_))
        ));
    }

    #[test]
    fn responses() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(
            parse_response(r, false).unwrap(),
            Some((200, b"{}".to_vec()))
        );
        assert_eq!(parse_response(&r[..r.len() - 1], false).unwrap(), None);
        let r = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(r, false).unwrap(),
            Some((404, b"abcde".to_vec()))
        );
        let r = b"HTTP/1.1 500 Oops\r\n\r\nbody";
        assert_eq!(parse_response(r, false).unwrap(), None);
        assert_eq!(
            parse_response(r, true).unwrap(),
            Some((500, b"body".to_vec()))
        );
    }

    #[test]
    fn answers() {
        let ok = shard_from_answer(200, br#"{"success":true,"shardId":"s","url":"u"}"#).unwrap();
        assert_eq!(
            ok,
            ShardInfo {
                shard_id: "s".into(),
                url: "u".into()
            }
        );
        assert!(matches!(
            shard_from_answer(200, br#"{"url":"u","shardId":""}"#),
            Err(WorldError::InvalidResponse)
        ));
        let e = shard_from_answer(404, br#"{"error":"No room"}"#).unwrap_err();
        assert_eq!(e.to_string(), "World service returned 404: No room");
        let e = shard_from_answer(502, b"<html>").unwrap_err();
        assert_eq!(e.to_string(), "World service returned 502: Unknown error");
    }
}
