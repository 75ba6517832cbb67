//! Sync patches: the nested JSON objects carried by `{"type":"sync","value":...}` packets.
//!
//! A patch is an object whose leaves are new values and whose `"$delete"` strings remove keys
//! (spec section 6.2/6.3). This module computes patches between JSON values, merges patches
//! that are waiting to be sent, and applies patches the way the official client does.

use serde_json::{Map, Value};

/// The reserved string that marks a deleted key or entry in a patch.
///
/// `@signe/room` clients treat this string as "remove this key" wherever it appears as a value,
/// so a state string equal to it cannot be sent as data (quirk Q17, kept for compatibility).
pub const DELETE: &str = "$delete";

/// The `"$delete"` marker as a JSON value.
pub fn delete_marker() -> Value {
    Value::String(DELETE.to_owned())
}

/// True if the value is the `"$delete"` marker.
pub fn is_delete(v: &Value) -> bool {
    matches!(v, Value::String(s) if s == DELETE)
}

/// The patch that turns `old` into `new` for a client that deep-merges patches.
///
/// Objects are compared key by key: removed keys become `"$delete"`, changed keys recurse, new
/// keys carry their whole value. Arrays and scalars are replaced whole (clients replace arrays,
/// so sending a holey array is never correct — quirk Q3). Returns `None` when nothing differs.
pub fn json_diff(old: &Value, new: &Value) -> Option<Value> {
    if old == new {
        return None;
    }
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut out = Map::new();
            for k in o.keys() {
                if !n.contains_key(k) {
                    out.insert(k.clone(), delete_marker());
                }
            }
            for (k, nv) in n {
                match o.get(k) {
                    Some(ov) => {
                        if let Some(d) = json_diff(ov, nv) {
                            out.insert(k.clone(), d);
                        }
                    }
                    None => {
                        out.insert(k.clone(), nv.clone());
                    }
                }
            }
            Some(Value::Object(out))
        }
        _ => Some(new.clone()),
    }
}

/// Apply a patch to a JSON document exactly as the official client (`@signe/sync/client`)
/// applies a sync packet to its room object (spec 6.5): objects merge key by key, `"$delete"`
/// removes the key, any other value (arrays included) replaces.
pub fn apply_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else {
        unreachable!("target was just made an object")
    };
    apply_object(t, p);
}

fn apply_object(t: &mut Map<String, Value>, p: &Map<String, Value>) {
    for (k, v) in p {
        if is_delete(v) {
            t.remove(k);
            continue;
        }
        match (t.get_mut(k), v) {
            (Some(Value::Object(tv)), Value::Object(pv)) => apply_object(tv, pv),
            // Like the official client, walk into a new object too: its `"$delete"` leaves
            // delete nothing instead of being stored as data.
            (_, Value::Object(pv)) => {
                let mut fresh = Map::new();
                apply_object(&mut fresh, pv);
                t.insert(k.clone(), Value::Object(fresh));
            }
            (_, v) => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Whether `later` can be merged into `pending` without changing what a client ends up with.
///
/// The case that cannot: `pending` deletes or replaces a key with a non-object (`"$delete"`,
/// `null`, a scalar) and `later` sets an object there again. Merged, the client would receive
/// only the object and deep-merge it into the old value it still holds, keeping keys that were
/// removed in between. Such a pair must be sent as two packets.
pub fn can_merge(pending: &Value, later: &Value) -> bool {
    match (pending, later) {
        (Value::Object(p), Value::Object(l)) => l.iter().all(|(k, lv)| match p.get(k) {
            None => true,
            Some(pv) if !pv.is_object() => !lv.is_object(),
            Some(pv) => !lv.is_object() || can_merge(pv, lv),
        }),
        _ => true,
    }
}

/// Merge a later patch into a pending one so that sending the result once has the same effect
/// on a client as sending both in order. Call [`can_merge`] first; where it is false, send
/// `pending` before `later` instead.
pub fn merge_patch(pending: &mut Value, later: Value) {
    match (pending, later) {
        (Value::Object(p), Value::Object(l)) => {
            for (k, lv) in l {
                match p.get_mut(&k) {
                    Some(pv @ Value::Object(_)) if lv.is_object() => merge_patch(pv, lv),
                    _ => {
                        p.insert(k, lv);
                    }
                }
            }
        }
        (pending, later) => *pending = later,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diff_of_objects_deletes_removed_keys() {
        let d = json_diff(
            &json!({"a":1,"b":{"c":2,"d":3}}),
            &json!({"b":{"c":2},"e":[1]}),
        );
        assert_eq!(d, Some(json!({"a":"$delete","b":{"d":"$delete"},"e":[1]})));
        assert_eq!(json_diff(&json!([1, 2]), &json!([1])), Some(json!([1])));
        assert_eq!(json_diff(&json!({"a":1}), &json!({"a":1})), None);
    }

    #[test]
    fn apply_matches_the_official_client() {
        let mut doc = json!({"users":{"a":{"x":1,"items":[1,2,3]}},"n":1});
        apply_patch(
            &mut doc,
            &json!({"users":{"a":{"items":[9]},"b":{"x":2}},"n":"$delete","m":{}}),
        );
        assert_eq!(
            doc,
            json!({"users":{"a":{"x":1,"items":[9]},"b":{"x":2}},"m":{}})
        );
        // An object value never removes keys on the client.
        apply_patch(&mut doc, &json!({"users":{}}));
        assert!(doc["users"]["a"].is_object());
    }

    #[test]
    fn merge_keeps_the_final_values() {
        let mut p = json!({"a":1,"u":{"x":{"name":"a"}}});
        let later = json!({"a":2,"u":{"x":{"score":1},"y":"$delete"}});
        assert!(can_merge(&p, &later));
        merge_patch(&mut p, later);
        assert_eq!(
            p,
            json!({"a":2,"u":{"x":{"name":"a","score":1},"y":"$delete"}})
        );
    }

    #[test]
    fn delete_then_recreate_cannot_merge() {
        let p = json!({"u":{"x":"$delete"}});
        assert!(!can_merge(&p, &json!({"u":{"x":{"name":"b"}}})));
        assert!(can_merge(&p, &json!({"u":{"x":5}})));
        assert!(can_merge(&p, &json!({"u":{"y":{"name":"b"}}})));
        assert!(!can_merge(&json!({"o":null}), &json!({"o":{"a":1}})));
    }
}
