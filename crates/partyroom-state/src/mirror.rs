//! [`ClientMirror`]: what a client holds after applying the packets it received.

use serde_json::Value;

use crate::patch::apply_patch;

/// A client-side copy of room state, built the way the official `@signe/sync` client builds it:
/// every `{"type":"sync","value":...}` packet is deep-merged into the document (spec 6.5).
///
/// `pId` (sent in the first packet of every connection) is kept apart from the document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientMirror {
    state: Value,
    pid: Option<String>,
}

/// What [`ClientMirror::apply_packet`] found in a frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    /// A sync packet, applied to the mirror.
    Sync,
    /// Another well-formed packet (`user_disconnected`, a custom `send`/`broadcast`...), not
    /// applied; its `type` if it has one.
    Other(Option<String>),
    /// Not a JSON object.
    Invalid,
}

impl ClientMirror {
    /// An empty mirror.
    pub fn new() -> Self {
        Self {
            state: Value::Object(Default::default()),
            pid: None,
        }
    }

    /// The mirrored document (without `pId`).
    pub fn state(&self) -> &Value {
        &self.state
    }

    /// The public id received in a `pId` packet.
    pub fn pid(&self) -> Option<&str> {
        self.pid.as_deref()
    }

    /// Forget everything (a new connection's first packet brings the full state again).
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// Apply one sync patch (the `value` of a sync packet). A value that is not an object is
    /// not a patch and is ignored.
    pub fn apply(&mut self, patch: &Value) {
        if !patch.is_object() {
            return;
        }
        if let Value::Object(map) = patch
            && let Some(Value::String(pid)) = map.get("pId")
        {
            self.pid = Some(pid.clone());
            let mut rest = map.clone();
            rest.remove("pId");
            apply_patch(&mut self.state, &Value::Object(rest));
            return;
        }
        apply_patch(&mut self.state, patch);
    }

    /// Parse and apply one text frame from the server.
    pub fn apply_packet(&mut self, frame: &str) -> Packet {
        let Ok(Value::Object(mut packet)) = serde_json::from_str::<Value>(frame) else {
            return Packet::Invalid;
        };
        match packet.get("type") {
            Some(Value::String(t)) if t == "sync" => {
                let value = packet.remove("value").unwrap_or(Value::Null);
                self.apply(&value);
                Packet::Sync
            }
            Some(Value::String(t)) => Packet::Other(Some(t.clone())),
            _ => Packet::Other(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn first_packet_sets_pid() {
        let mut m = ClientMirror::new();
        assert_eq!(
            m.apply_packet(r#"{"type":"sync","value":{"pId":"AbCd1234","count":0,"users":{}}}"#),
            Packet::Sync
        );
        assert_eq!(m.pid(), Some("AbCd1234"));
        assert_eq!(m.state(), &json!({"count":0,"users":{}}));
        m.apply_packet(r#"{"type":"sync","value":{"users":{"x":{"name":"a"}}}}"#);
        assert_eq!(m.state()["users"]["x"]["name"], "a");
        assert_eq!(
            m.apply_packet(r#"{"type":"user_disconnected","value":{"publicId":"x"}}"#),
            Packet::Other(Some("user_disconnected".into()))
        );
        assert_eq!(m.apply_packet("nope"), Packet::Invalid);
        // A sync packet without an object value changes nothing.
        m.apply_packet(r#"{"type":"sync"}"#);
        m.apply_packet(r#"{"type":"sync","value":3}"#);
        assert_eq!(m.state()["users"]["x"]["name"], "a");
        m.reset();
        assert_eq!(m.pid(), None);
    }
}
