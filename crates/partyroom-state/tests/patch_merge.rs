//! Merging pending patches (`can_merge` / `merge_patch`) and applying them like the official
//! client (`apply_patch`, spec 6.5).

use partyroom_state::patch::{apply_patch, can_merge, json_diff, merge_patch};
use partyroom_state::{ClientMirror, State, StateMap, Tracker};
use serde_json::{Value, json};

/// Apply `patches` one by one, and merged (sending separately where `can_merge` is false);
/// both clients must end up equal.
fn sequential_and_merged(start: &Value, patches: &[Value]) -> (Value, Value) {
    let mut one_by_one = start.clone();
    for p in patches {
        apply_patch(&mut one_by_one, p);
    }
    let mut merged = start.clone();
    let mut pending: Option<Value> = None;
    for p in patches {
        match pending.as_mut() {
            Some(q) if can_merge(q, p) => merge_patch(q, p.clone()),
            _ => {
                if let Some(q) = pending.take() {
                    apply_patch(&mut merged, &q);
                }
                pending = Some(p.clone());
            }
        }
    }
    if let Some(q) = pending {
        apply_patch(&mut merged, &q);
    }
    (one_by_one, merged)
}

#[test]
fn merged_scalars_keep_the_last_value() {
    let (a, b) = sequential_and_merged(
        &json!({"a": 0, "b": 0}),
        &[json!({"a": 1}), json!({"a": 2, "b": 3}), json!({"a": 4})],
    );
    assert_eq!(a, json!({"a": 4, "b": 3}));
    assert_eq!(a, b);
}

#[test]
fn delete_then_recreate_is_sent_separately() {
    let start = json!({"users": {"x": {"name": "a", "score": 1}}});
    let patches = [
        json!({"users": {"x": "$delete"}}),
        json!({"users": {"x": {"name": "b"}}}),
    ];
    assert!(!can_merge(&patches[0], &patches[1]));
    let (a, b) = sequential_and_merged(&start, &patches);
    assert_eq!(a, json!({"users": {"x": {"name": "b"}}}));
    assert_eq!(a, b);
}

#[test]
fn null_then_object_is_sent_separately() {
    let start = json!({"target": {"a": 1, "b": 2}});
    let patches = [json!({"target": null}), json!({"target": {"a": 1}})];
    assert!(!can_merge(&patches[0], &patches[1]));
    let (a, b) = sequential_and_merged(&start, &patches);
    assert_eq!(a, json!({"target": {"a": 1}}));
    assert_eq!(a, b);
}

#[test]
fn apply_creates_missing_objects_and_deletes_keys() {
    let mut doc = json!({});
    apply_patch(&mut doc, &json!({"a": {"b": {"c": 1}}, "x": "$delete"}));
    assert_eq!(doc, json!({"a": {"b": {"c": 1}}}));
}

/// The official client (`@signe/sync` `load`, used by the client on every sync packet) walks
/// the packet down to its leaves and deletes the key for every `"$delete"` leaf — a no-op when
/// the key does not exist. It never stores the marker as data, even inside an object for a
/// key it does not have yet.
///
/// FAILS until `apply_patch` applies an object patch value onto an empty object when the
/// target key is missing (or not an object) instead of inserting it verbatim.
#[test]
fn apply_never_stores_the_delete_marker() {
    let mut doc = json!({"users": {}, "level": 20});
    apply_patch(
        &mut doc,
        &json!({
            "users": {"x": {"name": "a", "inventory": {"sword": "$delete", "shield": 1}}},
            "level": {"lvl": 4, "max": "$delete"}
        }),
    );
    assert_eq!(
        doc,
        json!({"users": {"x": {"name": "a", "inventory": {"shield": 1}}}, "level": {"lvl": 4}})
    );
}

/// The sequence that produces such a patch with the engine alone: a user joins and, before
/// the pending patch is sent, an item of the new user is removed. The two patches can be
/// merged (`can_merge` is true), and the merged patch holds `"$delete"` inside the new user.
///
/// FAILS with the current `apply_patch` (see `apply_never_stores_the_delete_marker`).
#[test]
fn merged_join_and_item_removal_reach_the_client_intact() {
    #[derive(State, Default, Clone, Debug)]
    struct User {
        name: String,
        inventory: StateMap<i32>,
    }
    #[derive(State, Default, Clone, Debug)]
    struct Room {
        #[state(users)]
        users: StateMap<User>,
    }
    let mut t = Tracker::new(Room::default());
    let mut client = ClientMirror::new();
    client.apply(&t.sync_snapshot());

    let mut user = User {
        name: "a".into(),
        ..Default::default()
    };
    user.inventory.insert("sword", 1);
    user.inventory.insert("shield", 1);
    t.state_mut().users.insert("x", user);
    let first = t.flush().sync.unwrap();
    t.state_mut()
        .users
        .get_mut("x")
        .unwrap()
        .inventory
        .remove("sword");
    let second = t.flush().sync.unwrap();
    assert_eq!(
        second,
        json!({"users": {"x": {"inventory": {"sword": "$delete"}}}})
    );

    assert!(can_merge(&first, &second));
    let mut merged = first;
    merge_patch(&mut merged, second);
    client.apply(&merged);
    assert_eq!(client.state(), &t.sync_snapshot());
}

#[test]
fn json_diff_then_apply_gives_the_new_value() {
    let cases = [
        (json!({"a": 1, "b": {"c": 2}}), json!({"b": {"d": 3}})),
        (json!({"a": [1, 2]}), json!({"a": [2]})),
        (json!({"a": null}), json!({"a": {"x": 1}})),
        (json!({"a": {"x": 1}}), json!({"a": 5})),
        (json!({}), json!({"n": {"m": {}}})),
    ];
    for (old, new) in cases {
        let mut doc = old.clone();
        if let Some(d) = json_diff(&old, &new) {
            apply_patch(&mut doc, &d);
        }
        assert_eq!(doc, new, "diff of {old} → {new}");
    }
}
