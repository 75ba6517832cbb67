//! Sessions over time: a connection attaches to its session, the last one to leave starts
//! the session's expiry, and expired sessions are removed.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use super::table::{Session, SessionTable};

/// The sessions of a room and their expiry queue.
#[derive(Debug)]
pub(crate) struct Sessions {
    table: SessionTable,
    /// When each session without a connection expires (a session may be listed more than
    /// once; each entry is checked against the session when it falls due).
    expiries: BTreeSet<(Instant, String)>,
    /// How long a session outlives its last connection (`None`: forever).
    expiry: Option<Duration>,
}

/// A session removed because it expired.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Expired {
    pub(crate) private_id: String,
    pub(crate) public_id: String,
    /// No other session maps to its public id: the user goes too.
    pub(crate) user_unused: bool,
}

impl Sessions {
    pub(crate) fn new(expiry: Option<Duration>) -> Self {
        Self {
            table: SessionTable::default(),
            expiries: BTreeSet::new(),
            expiry,
        }
    }

    pub(crate) fn get(&self, private_id: &str) -> Option<&Session> {
        self.table.get(private_id)
    }

    pub(crate) fn contains(&self, private_id: &str) -> bool {
        self.table.contains_key(private_id)
    }

    /// Every session.
    pub(crate) fn all(&self) -> impl Iterator<Item = &crate::session::table::Session> {
        self.table.sessions()
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether any session maps to this public id.
    pub(crate) fn public_in_use(&self, public_id: &str) -> bool {
        self.table.public_in_use(public_id)
    }

    /// When the next session may expire.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.expiries.first().map(|(t, _)| *t)
    }

    /// Add (or replace) a session that a connection is about to attach to.
    pub(crate) fn insert(&mut self, private_id: String, session: Session) {
        self.table.insert(private_id, session);
    }

    /// Add a session no connection uses (restored from storage, or transferred here): it
    /// expires as if its last connection had closed when it says.
    pub(crate) fn insert_unattached(&mut self, private_id: String, session: Session) {
        if let (Some(after), Some(since)) = (self.expiry, session.disconnected) {
            self.expiries.insert((since + after, private_id.clone()));
        }
        self.table.insert(private_id, session);
    }

    /// A connection of `private_id` opened. Returns false when there is no such session.
    pub(crate) fn attach(&mut self, private_id: &str) -> bool {
        let Some(session) = self.table.get_mut(private_id) else {
            return false;
        };
        session.live += 1;
        session.disconnected = None;
        session.disconnected_ms = None;
        true
    }

    /// A connection of `private_id` closed at `now` (`now_ms` on the wall clock). Returns
    /// true when it was the session's last one: the session is disconnected from now on, and
    /// its expiry is scheduled.
    pub(crate) fn detach(&mut self, private_id: &str, now: Instant, now_ms: u64) -> bool {
        let Some(session) = self.table.get_mut(private_id) else {
            return false;
        };
        session.live = session.live.saturating_sub(1);
        if session.live > 0 {
            // Another tab of the same session is still open.
            return false;
        }
        session.disconnected = Some(now);
        session.disconnected_ms = Some(now_ms);
        if let Some(after) = self.expiry {
            self.expiries.insert((now + after, private_id.to_owned()));
        }
        true
    }

    /// Remove the sessions that have had no connection for the expiry time, in the order
    /// they expired.
    pub(crate) fn expire_due(&mut self, now: Instant) -> Vec<Expired> {
        let mut expired = Vec::new();
        while let Some((at, _)) = self.expiries.first() {
            if *at > now {
                break;
            }
            let (_, private_id) = self.expiries.pop_first().expect("checked non-empty");
            if let Some(gone) = self.expire(private_id, now) {
                expired.push(gone);
            }
        }
        expired
    }

    fn expire(&mut self, private_id: String, now: Instant) -> Option<Expired> {
        let session = self.table.get(&private_id)?;
        let since = session.disconnected?;
        let after = self.expiry?;
        if session.live > 0 {
            return None;
        }
        if now < since + after {
            // Reconnected and left again since this entry was made: check again later.
            self.expiries.insert((since + after, private_id));
            return None;
        }
        let public_id = session.public_id.clone();
        self.table.remove(&private_id);
        let user_unused = !self.table.public_in_use(&public_id);
        Some(Expired {
            private_id,
            public_id,
            user_unused,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_session_expires_after_its_last_connection_leaves() {
        let t0 = Instant::now();
        let after = Duration::from_secs(10);
        let mut s = Sessions::new(Some(after));
        s.insert("a".into(), Session::new("P".into(), 0));
        assert!(s.attach("a") && s.attach("a"));
        assert!(!s.detach("a", t0, 0), "another tab is open");
        assert!(s.detach("a", t0, 0));
        assert_eq!(s.next_expiry(), Some(t0 + after));
        assert!(s.expire_due(t0 + after / 2).is_empty());
        // Back and gone again: the first entry finds a later departure.
        assert!(s.attach("a"));
        assert!(s.detach("a", t0 + after / 2, 5));
        assert!(s.expire_due(t0 + after).is_empty());
        assert!(s.contains("a"));
        let gone = s.expire_due(t0 + after + after / 2);
        assert_eq!(
            gone,
            vec![Expired {
                private_id: "a".into(),
                public_id: "P".into(),
                user_unused: true
            }]
        );
        assert_eq!(s.len(), 0);
        assert!(!s.attach("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_user_shared_by_two_sessions_stays_until_both_expire() {
        let t0 = Instant::now();
        let mut s = Sessions::new(Some(Duration::from_secs(1)));
        s.insert_unattached("a".into(), Session::disconnected("P".into(), 0, t0, 0));
        s.insert("b".into(), Session::new("P".into(), 0));
        s.attach("b");
        let gone = s.expire_due(t0 + Duration::from_secs(1));
        assert_eq!(gone.len(), 1);
        assert!(!gone[0].user_unused);
        let mut forever = Sessions::new(None);
        forever.insert_unattached("a".into(), Session::disconnected("P".into(), 0, t0, 0));
        assert_eq!(forever.next_expiry(), None);
    }
}
