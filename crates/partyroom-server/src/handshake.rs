//! The WebSocket opening handshake (RFC 6455, section 4.2) over HTTP/1.1.

use axum::body::Body;
use axum::response::Response;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use hyper::upgrade::OnUpgrade;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Why an upgrade request is not a valid WebSocket handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// Not a `GET`.
    #[error("WebSocket upgrade requires GET")]
    MethodNotGet,
    /// `Connection` does not list `upgrade`.
    #[error("Connection header did not include 'upgrade'")]
    ConnectionHeader,
    /// `Upgrade` is not `websocket`.
    #[error("`Upgrade` header did not include 'websocket'")]
    UpgradeHeader,
    /// `Sec-WebSocket-Version` is not 13.
    #[error("`Sec-WebSocket-Version` header did not include '13'")]
    Version,
    /// No `Sec-WebSocket-Key`.
    #[error("`Sec-WebSocket-Key` header missing")]
    KeyMissing,
    /// The connection cannot be upgraded (not HTTP/1.1, or not served by hyper).
    #[error("WebSocket request couldn't be upgraded since no upgrade state was present")]
    NotUpgradable,
}

impl HandshakeError {
    /// The HTTP status of the refusal (as axum's WebSocket extractor answers).
    pub(crate) fn status(self) -> StatusCode {
        match self {
            HandshakeError::MethodNotGet => StatusCode::METHOD_NOT_ALLOWED,
            HandshakeError::NotUpgradable => StatusCode::UPGRADE_REQUIRED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// A checked upgrade request.
pub(crate) struct Handshake {
    accept: String,
    pub(crate) on_upgrade: OnUpgrade,
}

impl Handshake {
    /// Check the handshake headers and take hyper's upgrade handle out of the request.
    pub(crate) fn check(parts: &mut Parts) -> Result<Self, HandshakeError> {
        if parts.method != Method::GET {
            return Err(HandshakeError::MethodNotGet);
        }
        if !header_contains(&parts.headers, header::CONNECTION, "upgrade") {
            return Err(HandshakeError::ConnectionHeader);
        }
        if !header_eq(&parts.headers, header::UPGRADE, "websocket") {
            return Err(HandshakeError::UpgradeHeader);
        }
        if !header_eq(&parts.headers, header::SEC_WEBSOCKET_VERSION, "13") {
            return Err(HandshakeError::Version);
        }
        let key = parts
            .headers
            .get(header::SEC_WEBSOCKET_KEY)
            .ok_or(HandshakeError::KeyMissing)?;
        let accept = derive_accept_key(key.as_bytes());
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or(HandshakeError::NotUpgradable)?;
        Ok(Self { accept, on_upgrade })
    }

    /// The `101 Switching Protocols` answer.
    pub(crate) fn response(&self) -> Response {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = response.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(v) = HeaderValue::from_str(&self.accept) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        response
    }
}

fn header_eq(headers: &HeaderMap, name: header::HeaderName, value: &str) -> bool {
    headers
        .get(name)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
}

fn header_contains(headers: &HeaderMap, name: header::HeaderName, value: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(value))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method(Method::GET).uri("/");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    const GOOD: [(&str, &str); 4] = [
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn each_missing_header_has_its_error() {
        for (skip, want) in [
            (0, HandshakeError::ConnectionHeader),
            (1, HandshakeError::UpgradeHeader),
            (2, HandshakeError::Version),
            (3, HandshakeError::KeyMissing),
        ] {
            let headers: Vec<_> = GOOD
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, h)| *h)
                .collect();
            assert_eq!(Handshake::check(&mut parts(&headers)).err(), Some(want));
        }
        // Everything right, but no hyper connection to upgrade.
        assert_eq!(
            Handshake::check(&mut parts(&GOOD)).err(),
            Some(HandshakeError::NotUpgradable)
        );
        assert_eq!(HandshakeError::NotUpgradable.status(), 426);
    }

    #[test]
    fn accept_key_is_the_rfc_example() {
        // RFC 6455, section 1.3.
        assert_eq!(
            derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
