//! What clients send: `{"action": "...", "value": ...}` envelopes, and why one is not run.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// Why an action message was not run. Rejected messages change nothing, are logged at debug
/// level and are otherwise dropped silently, as in `@signe/room` (spec 7.1); the connection
/// stays open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// Not a JSON object with a string `action`.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// No handler for the action and no fallback.
    #[error("unknown action `{0}`")]
    UnknownAction(String),
    /// The value does not deserialize into the handler's input type.
    #[error("invalid value: {0}")]
    InvalidValue(String),
    /// The value deserialized but failed validation.
    #[error("validation failed: {0}")]
    Validation(String),
    /// A guard refused the message.
    #[error("refused by a guard")]
    Guard,
    /// The message is larger than the room accepts.
    #[error("message too large ({0} bytes)")]
    TooLarge(usize),
}

/// The envelope of a client message, borrowed from its text: the value stays raw JSON until
/// a handler's input type reads it.
#[derive(Debug, Deserialize)]
pub(crate) struct Envelope<'a> {
    #[serde(borrow)]
    pub(crate) action: Cow<'a, str>,
    #[serde(borrow, default)]
    pub(crate) value: Option<&'a RawValue>,
}

/// Refuse a message over `max` bytes.
#[inline]
pub(crate) fn check_size(text: &[u8], max: usize) -> Result<(), Rejection> {
    if text.len() > max {
        return Err(Rejection::TooLarge(text.len()));
    }
    Ok(())
}

/// Read the envelope of a message. Only a JSON object is an envelope (serde would also read
/// one from an array).
#[inline]
pub(crate) fn parse_envelope(text: &[u8]) -> Result<Envelope<'_>, Rejection> {
    if text.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Rejection::Malformed("not a JSON object".into()));
    }
    serde_json::from_slice(text).map_err(|e| Rejection::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_are_objects_with_a_string_action() {
        let e = parse_envelope(br#" {"action":"move","value":{"x":1}}"#).unwrap();
        assert_eq!(e.action, "move");
        assert_eq!(e.value.map(RawValue::get), Some(r#"{"x":1}"#));
        let e = parse_envelope(br#"{"action":"ping"}"#).unwrap();
        assert!(e.value.is_none());
        for bad in [
            &br#"["move",1]"#[..],
            b"{",
            br#"{"action":1}"#,
            b"",
            b"null",
        ] {
            assert!(
                matches!(parse_envelope(bad), Err(Rejection::Malformed(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(check_size(b"abc", 2), Err(Rejection::TooLarge(3)));
        assert_eq!(check_size(b"ab", 2), Ok(()));
    }
}
