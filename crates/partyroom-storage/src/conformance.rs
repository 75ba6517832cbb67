//! The behaviour every [`Storage`] backend must show, as one async function that panics on
//! the first difference: [`run_all`].
//!
//! It needs a tokio runtime (it spawns tasks; a multi-threaded runtime makes the
//! concurrency checks meaningful). Every run writes under fresh party names, so it can run
//! against a database that already holds data (or earlier runs), and leaves its rows behind.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use partyroom_room::storage::{Batch, RoomKey, Storage};
use serde_json::{Value, json};

/// Run every check against `storage`. Panics (with the backend's `Debug` and the check's
/// name) when the backend behaves differently from [`MemoryStorage`].
///
/// [`MemoryStorage`]: partyroom_room::storage::MemoryStorage
pub async fn run_all(storage: Arc<dyn Storage>) {
    let ctx = Ctx::new(storage);
    ctx.get_missing().await;
    ctx.round_trip_json_kinds().await;
    ctx.overwrite_and_delete().await;
    ctx.batch_order().await;
    ctx.list_prefixes_byte_order().await;
    ctx.isolation().await;
    ctx.large_batch().await;
    ctx.concurrent_applies().await;
    ctx.list_after_delete_prefix().await;
}

/// One run: a unique tag so parties never collide with earlier runs or other data.
struct Ctx {
    storage: Arc<dyn Storage>,
    tag: String,
}

impl Ctx {
    fn new(storage: Arc<dyn Storage>) -> Self {
        static RUNS: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let tag = format!(
            "conformance-{}-{nanos}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        );
        Self { storage, tag }
    }

    /// A room of this run, in party `<tag>-<check>`.
    fn room(&self, check: &str, room: &str) -> RoomKey {
        RoomKey::new(format!("{}-{check}", self.tag), room)
    }

    fn s(&self) -> &dyn Storage {
        &*self.storage
    }

    async fn get(&self, room: &RoomKey, key: &str) -> Option<Value> {
        self.s()
            .get(room, key)
            .await
            .unwrap_or_else(|e| panic!("{:?}: get {room} {key:?} failed: {e}", self.storage))
    }

    async fn list(&self, room: &RoomKey, prefix: &str) -> Vec<(String, Value)> {
        let out =
            self.s().list(room, prefix).await.unwrap_or_else(|e| {
                panic!("{:?}: list {room} {prefix:?} failed: {e}", self.storage)
            });
        for (key, _) in &out {
            assert!(
                key.starts_with(prefix),
                "{:?}: list {room} {prefix:?} returned {key:?}",
                self.storage
            );
        }
        out
    }

    async fn keys(&self, room: &RoomKey, prefix: &str) -> Vec<String> {
        self.list(room, prefix)
            .await
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    async fn apply(&self, room: &RoomKey, batch: Batch) {
        self.s()
            .apply(room, batch)
            .await
            .unwrap_or_else(|e| panic!("{:?}: apply to {room} failed: {e}", self.storage));
    }

    async fn put(&self, room: &RoomKey, key: &str, value: Value) {
        self.s()
            .put(room, key, value)
            .await
            .unwrap_or_else(|e| panic!("{:?}: put {room} {key:?} failed: {e}", self.storage));
    }

    async fn get_missing(&self) {
        let room = self.room("missing", "r");
        assert_eq!(self.get(&room, "nope").await, None, "{:?}", self.storage);
        assert_eq!(self.get(&room, "").await, None, "{:?}", self.storage);
        assert!(self.list(&room, "").await.is_empty(), "{:?}", self.storage);
        // Deleting what is not there is not an error; neither is an empty batch.
        self.s()
            .delete(&room, "nope")
            .await
            .unwrap_or_else(|e| panic!("{:?}: delete of a missing key: {e}", self.storage));
        self.apply(&room, Batch::default()).await;
        assert_eq!(self.get(&room, "nope").await, None);
    }

    async fn round_trip_json_kinds(&self) {
        let room = self.room("kinds", "r");
        let values = vec![
            json!(null),
            json!(true),
            json!(false),
            json!(0),
            json!(-1),
            json!(42),
            json!(i64::MIN),
            json!(i64::MAX),
            json!(u64::MAX),
            json!(9_007_199_254_740_993_u64),
            json!(1.5),
            json!(-2.25e-10),
            json!(0.1),
            json!(1e300),
            json!(f64::MAX),
            json!(f64::MIN_POSITIVE),
            json!(5e-324),
            json!(""),
            json!("plain"),
            json!("quotes \" ' ` and \\ backslashes \\\" and {\"json\": [1]}"),
            json!("unicode: é ß 漢字 😀 \u{FFFD} \u{10FFFF} \u{200B}"),
            json!("control: \n \t \r \u{1} \u{1f} \u{7f}"),
            json!("percent % underscore _ star * question ?"),
            json!([]),
            json!({}),
            json!([1, "two", 3.5, null, true, [], {}, [[[]]]]),
            json!({"a": 1, "b": [1, 2, {"c": null}], "é": "ü", "quote\"key": "v", "": 0}),
            json!({"nested": {"deeper": {"deepest": [{"x": -0.5}, {"y": 1e-7}]}}}),
        ];
        for (i, value) in values.iter().enumerate() {
            self.put(&room, &format!("v/{i:03}"), value.clone()).await;
        }
        for (i, value) in values.iter().enumerate() {
            let key = format!("v/{i:03}");
            let got = self.get(&room, &key).await;
            assert_eq!(
                got.as_ref(),
                Some(value),
                "{:?}: round trip of {value}",
                self.storage
            );
            // Numbers keep their kind: an integer stays an integer, a float a float.
            if let (Some(Value::Number(got)), Value::Number(want)) = (&got, value) {
                assert_eq!(
                    (got.as_u64(), got.as_i64(), got.as_f64()),
                    (want.as_u64(), want.as_i64(), want.as_f64()),
                    "{:?}: number {want}",
                    self.storage
                );
            }
        }
        let listed = self.list(&room, "v/").await;
        assert_eq!(listed.len(), values.len(), "{:?}", self.storage);
        for ((_, got), want) in listed.iter().zip(&values) {
            assert_eq!(got, want, "{:?}: list of {want}", self.storage);
        }
        // Floats come back bit for bit: 500 finite doubles spread over the whole range
        // (a fixed xorshift sequence of bit patterns), in one value.
        let mut bits: u64 = 0x9E37_79B9_7F4A_7C15;
        let floats: Vec<f64> = std::iter::from_fn(|| {
            bits ^= bits << 13;
            bits ^= bits >> 7;
            bits ^= bits << 17;
            Some(f64::from_bits(bits))
        })
        .filter(|f| f.is_finite())
        .take(500)
        .collect();
        self.put(&room, "floats", json!(floats)).await;
        let got = self.get(&room, "floats").await;
        let got: Vec<f64> = got
            .as_ref()
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        assert_eq!(got.len(), floats.len(), "{:?}: floats", self.storage);
        for (got, want) in got.iter().zip(&floats) {
            assert!(
                got == want,
                "{:?}: float {want:e} came back as {got:e}",
                self.storage
            );
        }
        // A large value.
        let big = json!({"rows": (0..2000).map(|i| json!({"i": i, "s": "x".repeat(20)})).collect::<Vec<_>>()});
        self.put(&room, "big", big.clone()).await;
        assert_eq!(self.get(&room, "big").await, Some(big));
    }

    async fn overwrite_and_delete(&self) {
        let room = self.room("overwrite", "r");
        self.put(&room, "k", json!(1)).await;
        self.put(&room, "k", json!({"now": "an object"})).await;
        assert_eq!(
            self.get(&room, "k").await,
            Some(json!({"now": "an object"}))
        );
        self.put(&room, "k", json!(null)).await;
        // A stored null is a value, not a missing key.
        assert_eq!(self.get(&room, "k").await, Some(json!(null)));
        assert_eq!(
            self.list(&room, "").await,
            vec![("k".to_owned(), json!(null))]
        );
        self.put(&room, "other", json!(2)).await;
        self.s().delete(&room, "k").await.unwrap();
        assert_eq!(self.get(&room, "k").await, None, "{:?}", self.storage);
        assert_eq!(self.get(&room, "other").await, Some(json!(2)));
        // A deleted key can be written again.
        self.put(&room, "k", json!("again")).await;
        assert_eq!(self.get(&room, "k").await, Some(json!("again")));
    }

    async fn batch_order(&self) {
        let room = self.room("batch", "r");
        self.apply(
            &room,
            Batch {
                puts: vec![
                    ("a".into(), json!(1)),
                    ("p/x".into(), json!(1)),
                    ("p/y".into(), json!(1)),
                    ("p".into(), json!("not under p/")),
                    ("q/z".into(), json!(1)),
                ],
                ..Batch::default()
            },
        )
        .await;
        // Deletes, then prefix deletes, then puts: the puts survive the deletes of the same
        // batch, whatever order the lists are in.
        self.apply(
            &room,
            Batch {
                deletes: vec!["a".into(), "q/z".into(), "never-existed".into()],
                delete_prefixes: vec!["p/".into()],
                puts: vec![
                    ("a".into(), json!(2)),
                    ("p/x".into(), json!(2)),
                    ("dup".into(), json!("first")),
                    ("dup".into(), json!("last")),
                ],
            },
        )
        .await;
        assert_eq!(
            self.list(&room, "").await,
            vec![
                ("a".to_owned(), json!(2)),
                ("dup".to_owned(), json!("last")),
                ("p".to_owned(), json!("not under p/")),
                ("p/x".to_owned(), json!(2)),
            ],
            "{:?}: delete + delete_prefix + put in one batch",
            self.storage
        );
        // A batch of only deletes, several prefixes, overlapping.
        self.apply(
            &room,
            Batch {
                deletes: vec!["dup".into()],
                delete_prefixes: vec!["p".into(), "p/".into()],
                ..Batch::default()
            },
        )
        .await;
        assert_eq!(self.keys(&room, "").await, vec!["a".to_owned()]);
        // The default `put`/`delete` methods are one-row batches.
        self.s().put(&room, "b", json!([1])).await.unwrap();
        self.s().delete(&room, "a").await.unwrap();
        assert_eq!(
            self.list(&room, "").await,
            vec![("b".to_owned(), json!([1]))]
        );
    }

    async fn list_prefixes_byte_order(&self) {
        let room = self.room("prefix", "r");
        let keys = [
            "",
            "a",
            "A",
            "B",
            "b",
            "a/b",
            "a/b/c",
            "a%",
            "a%b",
            "a_",
            "a_b",
            "ab",
            "aB",
            "a b",
            "a\\",
            "a\\%",
            "a[",
            "a*",
            "%",
            "%%",
            "_",
            "__",
            "*",
            "state/",
            "state/a",
            "state/a/1",
            "state/b",
            "state0",
            "statea",
            "state",
            "session/x",
            "é",
            "état",
            "e",
            "ez",
            "f",
            "z",
            "~",
            "\u{7f}",
            "\u{80}",
            "\u{7ff}",
            "\u{800}",
            "\u{D7FF}",
            "\u{E000}",
            "\u{FFFD}",
            "\u{FFFF}",
            "😀",
            "😀/x",
            "\u{10FFFF}",
            "\u{10FFFF}x",
            "x\u{10FFFF}",
            "x\u{10FFFF}\u{10FFFF}",
            "y",
        ];
        self.apply(
            &room,
            Batch {
                puts: keys.iter().map(|k| (k.to_string(), json!(k))).collect(),
                ..Batch::default()
            },
        )
        .await;
        let prefixes = [
            "",
            "a",
            "A",
            "a%",
            "a_",
            "%",
            "_",
            "a\\",
            "a[",
            "*",
            "state/",
            "state",
            "state/a",
            "state/a/",
            "é",
            "e",
            "\u{7f}",
            "\u{D7FF}",
            "\u{FFFF}",
            "😀",
            "\u{10FFFF}",
            "x\u{10FFFF}",
            "x",
            "missing",
            "zzz",
        ];
        for prefix in prefixes {
            let mut want: Vec<&str> = keys
                .iter()
                .copied()
                .filter(|k| k.starts_with(prefix))
                .collect();
            want.sort_unstable(); // `str` order is byte order.
            let listed = self.list(&room, prefix).await;
            let got: Vec<&str> = listed.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(got, want, "{:?}: list prefix {prefix:?}", self.storage);
            for (k, v) in &listed {
                assert_eq!(v, &json!(k), "{:?}: value of {k:?}", self.storage);
            }
        }
        // Prefix deletes with pattern characters remove exactly their keys.
        for prefix in ["a%", "a_", "%", "_", "\u{10FFFF}", "😀"] {
            self.apply(
                &room,
                Batch {
                    delete_prefixes: vec![prefix.to_owned()],
                    ..Batch::default()
                },
            )
            .await;
        }
        let mut want: Vec<&str> = keys
            .iter()
            .copied()
            .filter(|k| {
                !["a%", "a_", "%", "_", "\u{10FFFF}", "😀"]
                    .iter()
                    .any(|p| k.starts_with(p))
            })
            .collect();
        want.sort_unstable();
        assert_eq!(
            self.keys(&room, "").await,
            want,
            "{:?}: after prefix deletes with pattern characters",
            self.storage
        );
    }

    async fn isolation(&self) {
        let party_a = format!("{}-iso-a", self.tag);
        let party_b = format!("{}-iso-b", self.tag);
        let a1 = RoomKey::new(&party_a, "room");
        let a2 = RoomKey::new(&party_a, "room2");
        let b1 = RoomKey::new(&party_b, "room");
        // Keys that a backend joining party/room/key with `/` would confuse.
        let slash1 = RoomKey::new(format!("{party_a}/x"), "y");
        let slash2 = RoomKey::new(&party_a, "x/y");
        self.put(&a1, "state/k", json!("a1")).await;
        self.put(&a2, "state/k", json!("a2")).await;
        self.put(&b1, "state/k", json!("b1")).await;
        self.put(&slash1, "k", json!("slash1")).await;
        self.put(&slash2, "k", json!("slash2")).await;
        for (room, want) in [(&a1, "a1"), (&a2, "a2"), (&b1, "b1")] {
            assert_eq!(
                self.get(room, "state/k").await,
                Some(json!(want)),
                "{:?}: {room}",
                self.storage
            );
            assert_eq!(
                self.list(room, "").await,
                vec![("state/k".to_owned(), json!(want))],
                "{:?}: {room}",
                self.storage
            );
        }
        assert_eq!(self.get(&slash1, "k").await, Some(json!("slash1")));
        assert_eq!(self.get(&slash2, "k").await, Some(json!("slash2")));
        // Deletes and prefix deletes stay in their room.
        self.apply(
            &a1,
            Batch {
                deletes: vec!["state/k".into()],
                delete_prefixes: vec!["".into()],
                ..Batch::default()
            },
        )
        .await;
        assert_eq!(self.get(&a1, "state/k").await, None);
        assert_eq!(self.get(&a2, "state/k").await, Some(json!("a2")));
        assert_eq!(self.get(&b1, "state/k").await, Some(json!("b1")));
        assert_eq!(self.get(&slash2, "k").await, Some(json!("slash2")));
    }

    async fn large_batch(&self) {
        let room = self.room("large", "r");
        let puts: Vec<(String, Value)> = (0..1000)
            .rev()
            .map(|i| {
                (
                    format!("state/items/{i}"),
                    json!({"i": i, "name": format!("item {i}")}),
                )
            })
            .collect();
        self.apply(
            &room,
            Batch {
                puts,
                ..Batch::default()
            },
        )
        .await;
        let listed = self.list(&room, "state/items/").await;
        assert_eq!(listed.len(), 1000, "{:?}", self.storage);
        let mut want: Vec<String> = (0..1000).map(|i| format!("state/items/{i}")).collect();
        want.sort_unstable();
        assert_eq!(
            listed.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
            want,
            "{:?}: 1,000 keys in byte order",
            self.storage
        );
        for (k, v) in &listed {
            let i: u64 = k.rsplit('/').next().unwrap().parse().unwrap();
            assert_eq!(v, &json!({"i": i, "name": format!("item {i}")}));
        }
        // And 1,000 deletes in one batch.
        self.apply(
            &room,
            Batch {
                deletes: (0..1000).map(|i| format!("state/items/{i}")).collect(),
                ..Batch::default()
            },
        )
        .await;
        assert!(self.list(&room, "").await.is_empty(), "{:?}", self.storage);
    }

    async fn concurrent_applies(&self) {
        const TASKS: usize = 40;
        const WRITES: usize = 25;
        let mut handles = Vec::new();
        for t in 0..TASKS {
            let storage = Arc::clone(&self.storage);
            let room = self.room("concurrent", &format!("room-{t}"));
            let shared = self.room("concurrent", "shared");
            handles.push(tokio::spawn(async move {
                for i in 0..WRITES {
                    let batch = Batch {
                        deletes: vec![format!("tmp/{}", i.wrapping_sub(1))],
                        puts: vec![
                            (format!("k/{i:03}"), json!({"task": t, "i": i})),
                            (format!("tmp/{i}"), json!(i)),
                        ],
                        ..Batch::default()
                    };
                    storage.apply(&room, batch).await.unwrap();
                    storage
                        .put(&shared, &format!("task/{t:03}/{i:03}"), json!(i))
                        .await
                        .unwrap();
                }
                // Reads interleaved with the other tasks' writes see this task's writes.
                assert_eq!(storage.list(&room, "k/").await.unwrap().len(), WRITES);
            }));
        }
        for h in handles {
            if let Err(e) = h.await {
                panic!("{:?}: concurrent task failed: {e}", self.storage);
            }
        }
        for t in 0..TASKS {
            let room = self.room("concurrent", &format!("room-{t}"));
            let listed = self.list(&room, "").await;
            let mut want: Vec<(String, Value)> = (0..WRITES)
                .map(|i| (format!("k/{i:03}"), json!({"task": t, "i": i})))
                .collect();
            want.push((format!("tmp/{}", WRITES - 1), json!(WRITES - 1)));
            assert_eq!(
                listed, want,
                "{:?}: room {t} after concurrent applies",
                self.storage
            );
        }
        let shared = self.room("concurrent", "shared");
        assert_eq!(
            self.list(&shared, "task/").await.len(),
            TASKS * WRITES,
            "{:?}: concurrent puts to one room",
            self.storage
        );
    }

    async fn list_after_delete_prefix(&self) {
        let room = self.room("after-delete-prefix", "r");
        let mut puts = Vec::new();
        for field in ["players", "items", "itemsx"] {
            for i in 0..5 {
                puts.push((format!("state/{field}/{i}"), json!(i)));
            }
            puts.push((format!("state/{field}"), json!({"field": field})));
        }
        puts.push(("session/abc".into(), json!({"publicId": "p1"})));
        self.apply(
            &room,
            Batch {
                puts,
                ..Batch::default()
            },
        )
        .await;
        self.apply(
            &room,
            Batch {
                delete_prefixes: vec!["state/items/".into()],
                ..Batch::default()
            },
        )
        .await;
        assert!(self.list(&room, "state/items/").await.is_empty());
        let state = self.keys(&room, "state/").await;
        assert_eq!(state.len(), 13, "{:?}: {state:?}", self.storage);
        assert!(state.contains(&"state/items".to_owned()));
        assert_eq!(self.keys(&room, "state/itemsx/").await.len(), 5);
        assert_eq!(
            self.keys(&room, "session/").await,
            vec!["session/abc".to_owned()]
        );
        // Re-fill the deleted prefix in the batch that clears it.
        self.apply(
            &room,
            Batch {
                delete_prefixes: vec!["state/".into()],
                puts: vec![("state/items/9".into(), json!(9))],
                ..Batch::default()
            },
        )
        .await;
        assert_eq!(
            self.list(&room, "").await,
            vec![
                ("session/abc".to_owned(), json!({"publicId": "p1"})),
                ("state/items/9".to_owned(), json!(9)),
            ],
            "{:?}",
            self.storage
        );
        // Deleting everything with the empty prefix.
        self.apply(
            &room,
            Batch {
                delete_prefixes: vec![String::new()],
                ..Batch::default()
            },
        )
        .await;
        assert!(self.list(&room, "").await.is_empty(), "{:?}", self.storage);
        self.put(&room, "after", json!(1)).await;
        assert_eq!(self.keys(&room, "").await, vec!["after".to_owned()]);
    }
}
