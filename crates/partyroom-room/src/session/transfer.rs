//! Session transfers: a room hands a user's session to another room with a single-use token
//! the client presents there (`?transferToken=`).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

/// A session on its way from another room: what the target room receives (from a room of
/// this process, or from another node of a cluster, which sends it as JSON).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionHandoff {
    /// The single-use token the client presents to the target room (`?transferToken=`).
    pub token: String,
    /// The session's private id (the client's session id).
    pub private_id: String,
    /// The user's public id, kept in the target room.
    pub public_id: String,
    /// The user's persisted view in the source room (`null` if it had none).
    pub user: Value,
}

/// A transfer token waiting for its client.
#[derive(Debug, Clone)]
pub(crate) struct Transfer {
    pub(crate) private_id: String,
    pub(crate) public_id: String,
    created: Instant,
    created_ms: u64,
}

impl Transfer {
    pub(crate) fn new(private_id: String, public_id: String, now: Instant, now_ms: u64) -> Self {
        Self {
            private_id,
            public_id,
            created: now,
            created_ms: now_ms,
        }
    }

    /// The stored form: `{"privateId", "publicId", "created"}`.
    pub(crate) fn to_stored(&self) -> Value {
        json!({"privateId": self.private_id, "publicId": self.public_id, "created": self.created_ms})
    }
}

/// The transfer tokens of a room.
#[derive(Debug)]
pub(crate) struct Transfers {
    tokens: HashMap<String, Transfer>,
    /// How long a token stays valid.
    expiry: Duration,
}

impl Transfers {
    pub(crate) fn new(expiry: Duration) -> Self {
        Self {
            tokens: HashMap::new(),
            expiry,
        }
    }

    pub(crate) fn get(&self, token: &str) -> Option<&Transfer> {
        self.tokens.get(token)
    }

    pub(crate) fn insert(&mut self, token: String, transfer: Transfer) {
        self.tokens.insert(token, transfer);
    }

    /// Read a stored token at `now` (`now_ms` on the wall clock) and keep it; `Err(token)`
    /// when it is unreadable or has expired (the caller then deletes it).
    pub(crate) fn restore(
        &mut self,
        token: String,
        stored: &Value,
        now: Instant,
        now_ms: u64,
    ) -> Result<(), String> {
        let created_ms = stored.get("created").and_then(Value::as_u64).unwrap_or(0);
        let age = Duration::from_millis(now_ms.saturating_sub(created_ms));
        match (
            stored.get("privateId").and_then(Value::as_str),
            stored.get("publicId").and_then(Value::as_str),
        ) {
            (Some(private_id), Some(public_id)) if age < self.expiry => {
                let created = now.checked_sub(age).unwrap_or(now);
                let transfer = Transfer::new(
                    private_id.to_owned(),
                    public_id.to_owned(),
                    created,
                    created_ms,
                );
                self.tokens.insert(token, transfer);
                Ok(())
            }
            _ => Err(token),
        }
    }

    /// Remove a token (single use). Returns what it was and whether it was still valid at
    /// `now`; `None` when there was no such token.
    pub(crate) fn take(&mut self, token: &str, now: Instant) -> Option<(Transfer, bool)> {
        let t = self.tokens.remove(token)?;
        let valid = now.saturating_duration_since(t.created) < self.expiry;
        Some((t, valid))
    }

    /// Remove the tokens that have expired at `now`; returns them.
    pub(crate) fn prune(&mut self, now: Instant) -> Vec<String> {
        let expiry = self.expiry;
        let expired: Vec<String> = self
            .tokens
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(t.created) >= expiry)
            .map(|(k, _)| k.clone())
            .collect();
        for token in &expired {
            self.tokens.remove(token);
        }
        expired
    }

    /// When the next token expires.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.tokens.values().map(|t| t.created + self.expiry).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tokens_are_single_use_and_expire() {
        let t0 = Instant::now();
        let expiry = Duration::from_secs(5);
        let mut t = Transfers::new(expiry);
        t.insert(
            "tok".into(),
            Transfer::new("priv".into(), "P".into(), t0, 1_000),
        );
        assert_eq!(t.next_expiry(), Some(t0 + expiry));
        let (taken, valid) = t.take("tok", t0 + Duration::from_secs(1)).unwrap();
        assert!(valid);
        assert_eq!(taken.private_id, "priv");
        assert!(t.take("tok", t0).is_none(), "single use");
        t.insert(
            "old".into(),
            Transfer::new("p".into(), "P".into(), t0, 1_000),
        );
        assert!(t.prune(t0 + Duration::from_secs(4)).is_empty());
        assert_eq!(t.prune(t0 + expiry), vec!["old".to_owned()]);
        t.insert(
            "late".into(),
            Transfer::new("p".into(), "P".into(), t0, 1_000),
        );
        assert!(!t.take("late", t0 + expiry).unwrap().1, "expired");
    }

    #[tokio::test(start_paused = true)]
    async fn stored_tokens_keep_their_age() {
        let now = Instant::now() + Duration::from_secs(60);
        let mut t = Transfers::new(Duration::from_secs(5));
        let stored = Transfer::new("priv".into(), "P".into(), now, 10_000).to_stored();
        assert!(t.restore("a".into(), &stored, now, 12_000).is_ok());
        assert_eq!(
            t.next_expiry(),
            Some(now - Duration::from_secs(2) + Duration::from_secs(5))
        );
        assert_eq!(t.restore("b".into(), &stored, now, 15_000), Err("b".into()));
        assert_eq!(
            t.restore("c".into(), &json!({"created": 1}), now, 1),
            Err("c".into())
        );
    }
}
