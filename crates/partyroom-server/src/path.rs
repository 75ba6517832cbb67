//! Parsing `/parties/<party>/<room>[/<rest>]` with strict limits (spec 2.1, 2.2).

use std::borrow::Cow;

/// Longest accepted party name or room id, in bytes after decoding.
pub const MAX_SEGMENT: usize = 128;

/// A parsed room URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomPath {
    /// The party (namespace), decoded.
    pub party: String,
    /// The room id, decoded.
    pub room: String,
    /// The room-relative path (`/state`), still percent-encoded; `/` for the room root.
    pub rest: String,
}

/// Why a room URL was refused (answered with 400, or 404 for paths outside `/parties/`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not under `/parties/`.
    #[error("not a room path")]
    NotRoomPath,
    /// Party or room missing or empty.
    #[error("empty party or room segment")]
    Empty,
    /// A `%` not followed by two hex digits, or an escape that is not UTF-8.
    #[error("malformed percent-encoding")]
    BadEscape,
    /// A segment longer than [`MAX_SEGMENT`].
    #[error("segment too long")]
    TooLong,
    /// A decoded segment contains `/` or a control character.
    #[error("invalid character in segment")]
    BadChar,
}

impl RoomPath {
    /// Parse a request path (without query).
    pub fn parse(path: &str) -> Result<Self, PathError> {
        let rest = path
            .strip_prefix("/parties/")
            .ok_or(PathError::NotRoomPath)?;
        let mut parts = rest.splitn(3, '/');
        let party = parts.next().unwrap_or_default();
        let room = parts.next().unwrap_or_default();
        let rest = parts.next().unwrap_or_default();
        let party = decode(party)?;
        let room = decode(room)?;
        check_escapes(rest)?;
        Ok(Self {
            party,
            room,
            rest: format!("/{rest}"),
        })
    }
}

fn check_escapes(s: &str) -> Result<(), PathError> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if i + 2 >= b.len() {
                return Err(PathError::BadEscape);
            }
            if !(b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
                return Err(PathError::BadEscape);
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

fn decode(segment: &str) -> Result<String, PathError> {
    if segment.is_empty() {
        return Err(PathError::Empty);
    }
    if segment.len() > MAX_SEGMENT * 3 {
        return Err(PathError::TooLong);
    }
    check_escapes(segment)?;
    let decoded: Cow<'_, str> = percent_encoding_decode(segment)?;
    if decoded.is_empty() {
        return Err(PathError::Empty);
    }
    if decoded.len() > MAX_SEGMENT {
        return Err(PathError::TooLong);
    }
    if decoded.chars().any(|c| c == '/' || c.is_control()) {
        return Err(PathError::BadChar);
    }
    Ok(decoded.into_owned())
}

fn percent_encoding_decode(s: &str) -> Result<Cow<'_, str>, PathError> {
    if !s.contains('%') {
        return Ok(Cow::Borrowed(s));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).map_err(|_| PathError::BadEscape)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| PathError::BadEscape)?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| PathError::BadEscape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_room_paths() {
        let p = RoomPath::parse("/parties/main/game-1/status").unwrap();
        assert_eq!(
            (p.party.as_str(), p.room.as_str(), p.rest.as_str()),
            ("main", "game-1", "/status")
        );
        assert_eq!(RoomPath::parse("/parties/main/game-1").unwrap().rest, "/");
        assert_eq!(RoomPath::parse("/parties/main/game-1/").unwrap().rest, "/");
        assert_eq!(RoomPath::parse("/parties/main/a%20b").unwrap().room, "a b");
        assert_eq!(RoomPath::parse("/parties/main/a/x/y").unwrap().rest, "/x/y");
    }

    #[test]
    fn refuses_bad_paths() {
        assert_eq!(RoomPath::parse("/party/x"), Err(PathError::NotRoomPath));
        assert_eq!(RoomPath::parse("/parties/main/"), Err(PathError::Empty));
        assert_eq!(RoomPath::parse("/parties/main"), Err(PathError::Empty));
        assert_eq!(RoomPath::parse("/parties//room"), Err(PathError::Empty));
        assert_eq!(
            RoomPath::parse("/parties/main/a%zz"),
            Err(PathError::BadEscape)
        );
        assert_eq!(
            RoomPath::parse("/parties/main/a%2"),
            Err(PathError::BadEscape)
        );
        assert_eq!(
            RoomPath::parse("/parties/main/a%"),
            Err(PathError::BadEscape)
        );
        assert_eq!(
            RoomPath::parse("/parties/main/%ff"),
            Err(PathError::BadEscape)
        );
        assert_eq!(
            RoomPath::parse("/parties/main/a%2Fb"),
            Err(PathError::BadChar)
        );
        assert_eq!(
            RoomPath::parse("/parties/main/r/x%zz"),
            Err(PathError::BadEscape)
        );
        let long = "a".repeat(MAX_SEGMENT + 1);
        assert_eq!(
            RoomPath::parse(&format!("/parties/main/{long}")),
            Err(PathError::TooLong)
        );
    }
}
