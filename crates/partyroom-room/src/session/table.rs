//! The sessions of a room: private session id → session, with an index by public id, and
//! how a session is stored.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

/// One user's session in one room: which public id its private id maps to, and whether any
/// connection uses it.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) public_id: String,
    /// Open connections (tabs) of this session.
    pub(crate) live: u32,
    pub(crate) created_ms: u64,
    /// When the last connection closed (monotonic, for expiry) ...
    pub(crate) disconnected: Option<Instant>,
    /// ... and the same moment in wall-clock milliseconds (what is stored).
    pub(crate) disconnected_ms: Option<u64>,
}

impl Session {
    /// A session no connection uses yet, not marked disconnected.
    pub(crate) fn new(public_id: String, created_ms: u64) -> Self {
        Self {
            public_id,
            live: 0,
            created_ms,
            disconnected: None,
            disconnected_ms: None,
        }
    }

    /// A session no connection uses, disconnected since `at` (`at_ms` on the wall clock).
    pub(crate) fn disconnected(
        public_id: String,
        created_ms: u64,
        at: Instant,
        at_ms: u64,
    ) -> Self {
        Self {
            public_id,
            live: 0,
            created_ms,
            disconnected: Some(at),
            disconnected_ms: Some(at_ms),
        }
    }

    /// The stored form: `{"publicId", "created", "disconnectedAt"}`.
    pub(crate) fn to_stored(&self) -> Value {
        json!({
            "publicId": self.public_id,
            "created": self.created_ms,
            "disconnectedAt": self.disconnected_ms,
        })
    }

    /// Read a stored session at `now` (`now_ms` on the wall clock); `None` without a
    /// `publicId`. A session stored without `disconnectedAt` was connected when the process
    /// stopped (a crash): it counts as disconnected now, so expiry still runs.
    pub(crate) fn from_stored(stored: &Value, now: Instant, now_ms: u64) -> Option<Self> {
        let public_id = stored.get("publicId").and_then(Value::as_str)?;
        let disconnected_ms = stored
            .get("disconnectedAt")
            .and_then(Value::as_u64)
            .unwrap_or(now_ms);
        let ago = Duration::from_millis(now_ms.saturating_sub(disconnected_ms));
        let created_ms = stored
            .get("created")
            .and_then(Value::as_u64)
            .unwrap_or(now_ms);
        Some(Self::disconnected(
            public_id.to_owned(),
            created_ms,
            now.checked_sub(ago).unwrap_or(now),
            disconnected_ms,
        ))
    }
}

/// Sessions by private id, and how many sessions use each public id (so "is this public id
/// taken" and "is this user still someone's" are O(1), not a scan of every session).
#[derive(Debug, Default)]
pub(crate) struct SessionTable {
    by_private: HashMap<String, Session>,
    by_public: HashMap<String, u32>,
}

impl SessionTable {
    pub(crate) fn get(&self, private_id: &str) -> Option<&Session> {
        self.by_private.get(private_id)
    }

    pub(crate) fn get_mut(&mut self, private_id: &str) -> Option<&mut Session> {
        self.by_private.get_mut(private_id)
    }

    pub(crate) fn contains_key(&self, private_id: &str) -> bool {
        self.by_private.contains_key(private_id)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_private.len()
    }

    /// Every session (private ids are not handed out: they are the users' secrets).
    pub(crate) fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.by_private.values()
    }

    /// Insert or replace a session.
    pub(crate) fn insert(&mut self, private_id: String, session: Session) {
        *self.by_public.entry(session.public_id.clone()).or_default() += 1;
        if let Some(old) = self.by_private.insert(private_id, session) {
            self.release(&old.public_id);
        }
    }

    pub(crate) fn remove(&mut self, private_id: &str) -> Option<Session> {
        let old = self.by_private.remove(private_id)?;
        self.release(&old.public_id);
        Some(old)
    }

    /// Whether any session maps to this public id.
    pub(crate) fn public_in_use(&self, public_id: &str) -> bool {
        self.by_public.contains_key(public_id)
    }

    fn release(&mut self, public_id: &str) {
        if let Some(n) = self.by_public.get_mut(public_id) {
            *n -= 1;
            if *n == 0 {
                self.by_public.remove(public_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_ids_are_counted_across_sessions() {
        let mut table = SessionTable::default();
        table.insert("a".into(), Session::new("P".into(), 1));
        table.insert("b".into(), Session::new("P".into(), 1));
        assert!(table.public_in_use("P"));
        table.remove("a");
        assert!(table.public_in_use("P"));
        // Replacing a session releases the public id it had.
        table.insert("b".into(), Session::new("Q".into(), 1));
        assert!(!table.public_in_use("P"));
        assert_eq!(table.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn stored_sessions_come_back_disconnected() {
        let now = Instant::now() + Duration::from_secs(60);
        let s = Session::disconnected("P".into(), 5, now - Duration::from_secs(2), 8_000);
        let back = Session::from_stored(&s.to_stored(), now, 10_000).unwrap();
        assert_eq!(back.public_id, "P");
        assert_eq!(back.created_ms, 5);
        assert_eq!(back.disconnected, Some(now - Duration::from_secs(2)));
        assert_eq!(back.disconnected_ms, Some(8_000));
        // Connected when stored (a crash): disconnected as of now.
        let crashed = Session::new("P".into(), 5).to_stored();
        let back = Session::from_stored(&crashed, now, 10_000).unwrap();
        assert_eq!(back.disconnected, Some(now));
        assert_eq!(back.disconnected_ms, Some(10_000));
        assert!(Session::from_stored(&json!({"created": 1}), now, 10_000).is_none());
    }
}
