//! The packets a room sends. Each is serialized once and its bytes are shared by every
//! receiver; the `*_envelope` functions build the same packets as JSON values, for the
//! packet interceptor ([`Handlers::intercept`](crate::Handlers::intercept)).

use bytes::Bytes;
use serde_json::{Map, Value, json};

/// `{"type":"sync","value":<patch>}`, serialized once.
pub(crate) fn sync_packet(patch: &Value) -> Bytes {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(br#"{"type":"sync","value":"#);
    serde_json::to_writer(&mut out, patch).expect("a JSON value always serializes");
    out.push(b'}');
    Bytes::from(out)
}

/// The first packet of a connection: `{"type":"sync","value":{"pId":"<id>", ...snapshot}}`.
#[cfg(test)]
pub(crate) fn initial_packet(public_id: &str, snapshot: &Value) -> Bytes {
    initial_packet_with(public_id, &InitialBody::new(snapshot))
}

/// The part of a first packet that does not depend on the receiver (the snapshot after
/// `pId`), serialized once for every client that joins in the same batch.
pub(crate) struct InitialBody(Vec<u8>);

impl InitialBody {
    pub(crate) fn new(snapshot: &Value) -> Self {
        let mut out = Vec::with_capacity(256);
        if let Value::Object(map) = snapshot {
            for (k, v) in map {
                if k == "pId" {
                    continue; // `pId` is reserved for the public id (quirk Q8 fixed)
                }
                out.push(b',');
                serde_json::to_writer(&mut out, k).expect("a string always serializes");
                out.push(b':');
                serde_json::to_writer(&mut out, v).expect("a JSON value always serializes");
            }
        }
        out.extend_from_slice(b"}}");
        Self(out)
    }
}

/// A first packet for `public_id` around a serialized body.
pub(crate) fn initial_packet_with(public_id: &str, body: &InitialBody) -> Bytes {
    let mut out = Vec::with_capacity(40 + public_id.len() + body.0.len());
    out.extend_from_slice(br#"{"type":"sync","value":{"pId":"#);
    serde_json::to_writer(&mut out, public_id).expect("a string always serializes");
    out.extend_from_slice(&body.0);
    Bytes::from(out)
}

/// Any JSON value as a frame.
pub(crate) fn json_frame(value: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("a JSON value always serializes"))
}

/// `{"type":"sync","value":<patch>}` as a value.
pub(crate) fn sync_envelope(patch: &Value) -> Value {
    json!({"type": "sync", "value": patch})
}

/// A first packet as a value: `pId` first, then the snapshot (whose own `pId`, if any, is
/// dropped, as in [`InitialBody`]).
pub(crate) fn initial_envelope(public_id: &str, snapshot: &Value) -> Value {
    let mut value = Map::new();
    value.insert("pId".into(), Value::String(public_id.to_owned()));
    if let Value::Object(snap) = snapshot {
        for (k, val) in snap {
            value.entry(k.clone()).or_insert_with(|| val.clone());
        }
    }
    json!({"type": "sync", "value": value})
}

/// `{"type":"user_disconnected","value":{"publicId":...}}`: sent when a user of a room whose
/// users have no `connected` flag leaves.
pub(crate) fn user_disconnected(public_id: &str) -> Value {
    json!({"type": "user_disconnected", "value": {"publicId": public_id}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets() {
        assert_eq!(
            &sync_packet(&json!({"a":1}))[..],
            br#"{"type":"sync","value":{"a":1}}"#
        );
        let p = initial_packet("AbCd1234", &json!({"count":0,"pId":"x"}));
        let v: Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(
            v,
            json!({"type":"sync","value":{"pId":"AbCd1234","count":0}})
        );
        let p = initial_packet("AbCd1234", &json!({}));
        assert_eq!(&p[..], br#"{"type":"sync","value":{"pId":"AbCd1234"}}"#);
    }

    #[test]
    fn envelopes_match_the_packets() {
        let snapshot = json!({"count": 0, "pId": "x"});
        let packet: Value = serde_json::from_slice(&initial_packet("AbCd1234", &snapshot)).unwrap();
        assert_eq!(initial_envelope("AbCd1234", &snapshot), packet);
        let patch = json!({"a": 1});
        let packet: Value = serde_json::from_slice(&sync_packet(&patch)).unwrap();
        assert_eq!(sync_envelope(&patch), packet);
    }
}
