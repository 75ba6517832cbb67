//! The WebSocket opening handshake (RFC 6455, section 4.2) over HTTP/1.1.
//!
//! The request must be a `GET` with exactly one non-empty `Host`, a `Connection` that lists
//! `upgrade`, `Upgrade: websocket`, exactly one `Sec-WebSocket-Version: 13` and exactly one
//! `Sec-WebSocket-Key` that is the base64 of 16 bytes (sections 4.2.1 and 4.2.2). A refusal is
//! an HTTP error ([`HandshakeError::status`]) with the headers of
//! [`HandshakeError::headers`].
//!
//! This file is also compiled on its own, so it uses only `axum`, `http`, `hyper`,
//! `tokio-tungstenite` and the standard library.

use std::fmt;

use axum::body::Body;
use axum::response::Response;
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use hyper::upgrade::OnUpgrade;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Why an upgrade request is not a valid WebSocket handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeError {
    /// Not a `GET`.
    MethodNotGet,
    /// No `Host`, or an empty one (RFC 6455 4.2.1 item 2, RFC 9112 3.2).
    HostMissing,
    /// `Connection` does not list `upgrade`.
    ConnectionHeader,
    /// `Upgrade` is not `websocket`.
    UpgradeHeader,
    /// `Sec-WebSocket-Version` is missing or not 13.
    Version,
    /// No `Sec-WebSocket-Key`.
    KeyMissing,
    /// `Sec-WebSocket-Key` is not the base64 of 16 bytes (RFC 6455 4.2.1 item 5).
    KeyInvalid,
    /// A header that must appear once appears more than once (its name, as written in the
    /// RFCs): `Host`, `Sec-WebSocket-Key` or `Sec-WebSocket-Version`.
    DuplicateHeader(&'static str),
    /// The connection cannot be upgraded (not HTTP/1.1, or not served by hyper).
    NotUpgradable,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::MethodNotGet => f.write_str("WebSocket upgrade requires GET"),
            HandshakeError::HostMissing => f.write_str("`Host` header missing or empty"),
            HandshakeError::ConnectionHeader => {
                f.write_str("Connection header did not include 'upgrade'")
            }
            HandshakeError::UpgradeHeader => {
                f.write_str("`Upgrade` header did not include 'websocket'")
            }
            HandshakeError::Version => {
                f.write_str("`Sec-WebSocket-Version` header missing or not '13'")
            }
            HandshakeError::KeyMissing => f.write_str("`Sec-WebSocket-Key` header missing"),
            HandshakeError::KeyInvalid => {
                f.write_str("`Sec-WebSocket-Key` header is not 16 bytes in base64")
            }
            HandshakeError::DuplicateHeader(name) => {
                write!(f, "`{name}` header given more than once")
            }
            HandshakeError::NotUpgradable => f.write_str(
                "WebSocket request couldn't be upgraded since no upgrade state was present",
            ),
        }
    }
}

impl std::error::Error for HandshakeError {}

impl HandshakeError {
    /// The HTTP status of the refusal: `405` for a method other than `GET`, `426` when the
    /// connection cannot be upgraded, `400` for every bad header (as axum's WebSocket
    /// extractor answers; RFC 6455 4.4 shows `400` for an unsupported version).
    pub(crate) fn status(self) -> StatusCode {
        match self {
            HandshakeError::MethodNotGet => StatusCode::METHOD_NOT_ALLOWED,
            HandshakeError::NotUpgradable => StatusCode::UPGRADE_REQUIRED,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The headers the refusal must carry, as lowercase names and values (valid for
    /// `HeaderName::from_static` and `HeaderValue::from_static`), none for most errors:
    ///
    /// - `Sec-WebSocket-Version: 13` when the version is missing, wrong or repeated: the
    ///   version this server speaks (RFC 6455 4.2.2 item 4, 4.4);
    /// - `Upgrade: websocket` and `Connection: upgrade` with the `426`, which must name the
    ///   protocol to upgrade to (RFC 9110 15.5.22; a sender of `Upgrade` lists it in
    ///   `Connection`, 7.8).
    // Used by server.rs for the refusal; a build of this file on its own may not need it.
    #[allow(dead_code)]
    pub(crate) fn headers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            HandshakeError::Version | HandshakeError::DuplicateHeader(VERSION) => {
                &[("sec-websocket-version", "13")]
            }
            HandshakeError::NotUpgradable => &[("upgrade", "websocket"), ("connection", "upgrade")],
            _ => &[],
        }
    }
}

/// `Host`, as [`HandshakeError::DuplicateHeader`] names it.
const HOST: &str = "Host";
/// `Sec-WebSocket-Version`, as [`HandshakeError::DuplicateHeader`] names it.
const VERSION: &str = "Sec-WebSocket-Version";
/// `Sec-WebSocket-Key`, as [`HandshakeError::DuplicateHeader`] names it.
const KEY: &str = "Sec-WebSocket-Key";

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
        let host = single(&parts.headers, header::HOST, HOST)?;
        if host.is_none_or(|h| h.is_empty()) {
            return Err(HandshakeError::HostMissing);
        }
        if !header_contains(&parts.headers, header::CONNECTION, "upgrade") {
            return Err(HandshakeError::ConnectionHeader);
        }
        if !header_eq(&parts.headers, header::UPGRADE, "websocket") {
            return Err(HandshakeError::UpgradeHeader);
        }
        let version = single(&parts.headers, header::SEC_WEBSOCKET_VERSION, VERSION)?;
        if version.is_none_or(|v| v.as_bytes() != b"13") {
            return Err(HandshakeError::Version);
        }
        let key = single(&parts.headers, header::SEC_WEBSOCKET_KEY, KEY)?
            .ok_or(HandshakeError::KeyMissing)?;
        if decode_key(key.as_bytes()).is_none() {
            return Err(HandshakeError::KeyInvalid);
        }
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

/// The one value of `name`, `None` if there is none, or [`HandshakeError::DuplicateHeader`]
/// (with `label`) if there are several.
fn single<'a>(
    headers: &'a HeaderMap,
    name: HeaderName,
    label: &'static str,
) -> Result<Option<&'a HeaderValue>, HandshakeError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(HandshakeError::DuplicateHeader(label));
    }
    Ok(first)
}

/// The 16 bytes a `Sec-WebSocket-Key` encodes, or `None` if it is anything but their base64:
/// 22 characters of the standard alphabet then `==` (RFC 4648 section 4), with the last
/// character's 4 unused bits zero, so that each 16 bytes have exactly one key (section 3.5).
fn decode_key(key: &[u8]) -> Option<[u8; 16]> {
    let (data, padding) = key.split_at_checked(22)?;
    if padding != b"==" {
        return None;
    }
    let mut out = [0u8; 16];
    let mut written = 0;
    // The bits read and not yet written out: `bits` of them, at the bottom of `acc`.
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in data {
        acc = (acc << 6) | u32::from(sextet(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            *out.get_mut(written)? = ((acc >> bits) & 0xFF) as u8;
            written += 1;
            acc &= (1 << bits) - 1;
        }
    }
    // 22 characters are 132 bits: the 16 bytes and 4 bits that must be zero.
    (written == 16 && acc == 0).then_some(out)
}

/// The value of a character of the standard base64 alphabet (RFC 4648, table 1).
fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Whether the first `name` value is `value` (ASCII case-insensitive).
fn header_eq(headers: &HeaderMap, name: header::HeaderName, value: &str) -> bool {
    headers
        .get(name)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
}

/// Whether some `name` value lists `value` among its comma-separated tokens (ASCII
/// case-insensitive).
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

    const GOOD: [(&str, &str); 5] = [
        ("host", "x"),
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    /// The good headers with every `name` header replaced by one per value.
    fn with(name: &str, values: &[&str]) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = GOOD
            .iter()
            .filter(|(n, _)| *n != name)
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        out.extend(values.iter().map(|v| (name.to_owned(), (*v).to_owned())));
        out
    }

    /// The error of checking these headers (`NotUpgradable` when all are right: a request
    /// built here has no hyper connection to upgrade).
    fn check(headers: &[(String, String)]) -> HandshakeError {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        match Handshake::check(&mut parts(&headers)) {
            Ok(_) => panic!("no hyper connection, yet upgradable"),
            Err(e) => e,
        }
    }

    #[test]
    fn each_missing_header_has_its_error() {
        for (name, want) in [
            ("host", HandshakeError::HostMissing),
            ("connection", HandshakeError::ConnectionHeader),
            ("upgrade", HandshakeError::UpgradeHeader),
            ("sec-websocket-version", HandshakeError::Version),
            ("sec-websocket-key", HandshakeError::KeyMissing),
        ] {
            assert_eq!(check(&with(name, &[])), want, "without {name}");
            assert_eq!(want.status(), StatusCode::BAD_REQUEST);
        }
        // Everything right, but no hyper connection to upgrade.
        assert_eq!(check(&with("host", &["x"])), HandshakeError::NotUpgradable);
        assert_eq!(HandshakeError::NotUpgradable.status(), 426);
        let mut post = parts(&GOOD);
        post.method = Method::POST;
        assert_eq!(
            Handshake::check(&mut post).err(),
            Some(HandshakeError::MethodNotGet)
        );
        assert_eq!(HandshakeError::MethodNotGet.status(), 405);
    }

    #[test]
    fn bad_keys_are_refused() {
        for key in [
            "",
            "abc",
            // 23 and 25 characters.
            "dGhlIHNhbXBsZSBub25jZQ=",
            "dGhlIHNhbXBsZSBub25jZQ===",
            // No padding, or other characters where it goes.
            "dGhlIHNhbXBsZSBub25jZQ",
            "dGhlIHNhbXBsZSBub25jZQAA",
            "dGhlIHNhbXBsZSBub25jZQ=A",
            "dGhlIHNhbXBsZSBub25jZQ.=",
            // Characters outside the standard alphabet.
            "-_52z05ZR_xyGXQh6mhB0g==",
            "dGhlIHNhbXBsZSBub25jZ!==",
            "dGhlIHNhbXBs ZSBub25jZQ==",
            "dGhlIHNhbXBsZSBub25jZ\u{e9}==",
            " dGhlIHNhbXBsZSBub25jZQ==",
            "========================",
            "dGhlIHNhbXBs==ZSBub25jZQ",
            // The base64 of 15 bytes (also padded out to 24 characters) and of 17.
            "AAECAwQFBgcICQoLDA0O",
            "AAECAwQFBgcICQoLDA0O====",
            "AAECAwQFBgcICQoLDA0ODxA=",
            "AAECAwQFBgcICQoLDA0ODxAR==",
            // 16 bytes, but the 4 unused bits of the last character are not zero.
            "dGhlIHNhbXBsZSBub25jZR==",
            "/////////////////////w=",
            "//////////////////////==",
            // Two keys in one header line.
            "dGhlIHNhbXBsZSBub25jZQ==, AAECAwQFBgcICQoLDA0ODw==",
        ] {
            assert_eq!(decode_key(key.as_bytes()), None, "{key:?}");
            if HeaderValue::from_str(key).is_ok() {
                let err = check(&with("sec-websocket-key", &[key]));
                assert_eq!(err, HandshakeError::KeyInvalid, "{key:?}");
                assert_eq!(err.status(), StatusCode::BAD_REQUEST);
                assert!(err.headers().is_empty());
            }
        }
        // Bytes that are no text at all.
        assert_eq!(decode_key(b"\xff\xfe\0AAAAAAAAAAAAAAAAAAA=="), None);
    }

    #[test]
    fn good_keys_are_accepted() {
        let keys: [(&str, [u8; 16]); 6] = [
            // RFC 6455, section 1.3.
            ("dGhlIHNhbXBsZSBub25jZQ==", *b"the sample nonce"),
            ("AAAAAAAAAAAAAAAAAAAAAA==", [0; 16]),
            ("/////////////////////w==", [0xff; 16]),
            (
                "AAECAwQFBgcICQoLDA0ODw==",
                [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
            ),
            // Random bytes.
            (
                "hDsfFdCqUbgnHxDdxbtzmQ==",
                [
                    132, 59, 31, 21, 208, 170, 81, 184, 39, 31, 16, 221, 197, 187, 115, 153,
                ],
            ),
            (
                "y+52z05ZR/xyGXQh6mhB0g==",
                [
                    203, 238, 118, 207, 78, 89, 71, 252, 114, 25, 116, 33, 234, 104, 65, 210,
                ],
            ),
        ];
        for (key, bytes) in keys {
            assert_eq!(decode_key(key.as_bytes()), Some(bytes), "{key}");
            assert_eq!(
                check(&with("sec-websocket-key", &[key])),
                HandshakeError::NotUpgradable,
                "{key}"
            );
        }
        // The last character carries 2 bits: of the 64, exactly the 4 with the rest zero.
        let last: Vec<char> = ('A'..='Z')
            .chain('a'..='z')
            .chain('0'..='9')
            .chain(['+', '/'])
            .filter(|c| decode_key(format!("AAAAAAAAAAAAAAAAAAAAA{c}==").as_bytes()).is_some())
            .collect();
        assert_eq!(last, ['A', 'Q', 'g', 'w']);
    }

    #[test]
    fn the_key_decoder_inverts_base64() {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        // RFC 4648 section 4, for 16 bytes: 5 groups of 3 bytes, then 1 byte and `==`.
        fn encode(bytes: &[u8; 16]) -> String {
            let mut out = String::new();
            for group in bytes.chunks(3) {
                let n = group
                    .iter()
                    .enumerate()
                    .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
                for i in 0..=group.len() {
                    out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
                }
            }
            out + "=="
        }
        assert_eq!(encode(b"the sample nonce"), "dGhlIHNhbXBsZSBub25jZQ==");
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..1000 {
            let mut bytes = [0u8; 16];
            for b in &mut bytes {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                *b = (seed >> 56) as u8;
            }
            let key = encode(&bytes);
            assert_eq!(decode_key(key.as_bytes()), Some(bytes), "{key}");
        }
    }

    #[test]
    fn headers_that_must_be_single_are() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        for (name, values, label) in [
            ("sec-websocket-key", [key, key], "Sec-WebSocket-Key"),
            (
                "sec-websocket-key",
                [key, "AAECAwQFBgcICQoLDA0ODw=="],
                "Sec-WebSocket-Key",
            ),
            ("sec-websocket-key", [key, ""], "Sec-WebSocket-Key"),
            (
                "sec-websocket-version",
                ["13", "13"],
                "Sec-WebSocket-Version",
            ),
            (
                "sec-websocket-version",
                ["13", "8"],
                "Sec-WebSocket-Version",
            ),
            ("host", ["x", "x"], "Host"),
            ("host", ["x", "y"], "Host"),
        ] {
            let err = check(&with(name, &values));
            assert_eq!(err, HandshakeError::DuplicateHeader(label), "{values:?}");
            assert_eq!(err.status(), StatusCode::BAD_REQUEST);
            assert_eq!(
                err.to_string(),
                format!("`{label}` header given more than once")
            );
            let version_named = err.headers() == [("sec-websocket-version", "13")];
            assert_eq!(version_named, label == "Sec-WebSocket-Version", "{err}");
            assert_eq!(err.headers().is_empty(), !version_named, "{err}");
        }
    }

    #[test]
    fn host_is_required() {
        for host in [&[][..], &[""]] {
            let err = check(&with("host", host));
            assert_eq!(err, HandshakeError::HostMissing, "{host:?}");
            assert_eq!(err.status(), StatusCode::BAD_REQUEST);
            assert!(err.headers().is_empty());
        }
        assert_eq!(
            check(&with("host", &["example.com:8080"])),
            HandshakeError::NotUpgradable
        );
    }

    #[test]
    fn a_wrong_version_is_refused_naming_13() {
        for version in [
            &[][..],
            &[""],
            &["8"],
            &["7"],
            &["14"],
            &["13, 8"],
            &["13 "],
            &["013"],
        ] {
            let err = check(&with("sec-websocket-version", version));
            assert_eq!(err, HandshakeError::Version, "{version:?}");
            assert_eq!(err.status(), StatusCode::BAD_REQUEST);
            assert_eq!(err.headers(), [("sec-websocket-version", "13")]);
        }
    }

    #[test]
    fn refusal_headers_are_valid_static_headers() {
        let all = [
            HandshakeError::MethodNotGet,
            HandshakeError::HostMissing,
            HandshakeError::ConnectionHeader,
            HandshakeError::UpgradeHeader,
            HandshakeError::Version,
            HandshakeError::KeyMissing,
            HandshakeError::KeyInvalid,
            HandshakeError::DuplicateHeader(HOST),
            HandshakeError::DuplicateHeader(VERSION),
            HandshakeError::DuplicateHeader(KEY),
            HandshakeError::NotUpgradable,
        ];
        for err in all {
            let mut map = HeaderMap::new();
            for (name, value) in err.headers() {
                map.insert(
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                );
            }
            assert_eq!(map.len(), err.headers().len(), "{err}");
            assert!(!err.to_string().is_empty());
        }
        assert_eq!(
            HandshakeError::NotUpgradable.headers(),
            [("upgrade", "websocket"), ("connection", "upgrade")]
        );
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
