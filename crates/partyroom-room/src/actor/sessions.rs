//! The sessions of a room: private session id → session, with an index by public id.

use std::collections::HashMap;

use super::Session;

/// Sessions by private id, and how many sessions use each public id (so "is this public id
/// taken" and "is this user still someone's" are O(1), not a scan of every session).
#[derive(Debug, Default)]
pub(super) struct SessionTable {
    by_private: HashMap<String, Session>,
    by_public: HashMap<String, u32>,
}

impl SessionTable {
    pub(super) fn get(&self, private_id: &str) -> Option<&Session> {
        self.by_private.get(private_id)
    }

    pub(super) fn get_mut(&mut self, private_id: &str) -> Option<&mut Session> {
        self.by_private.get_mut(private_id)
    }

    pub(super) fn contains_key(&self, private_id: &str) -> bool {
        self.by_private.contains_key(private_id)
    }

    pub(super) fn len(&self) -> usize {
        self.by_private.len()
    }

    /// Insert or replace a session.
    pub(super) fn insert(&mut self, private_id: String, session: Session) {
        *self.by_public.entry(session.public_id.clone()).or_default() += 1;
        if let Some(old) = self.by_private.insert(private_id, session) {
            self.release(&old.public_id);
        }
    }

    pub(super) fn remove(&mut self, private_id: &str) -> Option<Session> {
        let old = self.by_private.remove(private_id)?;
        self.release(&old.public_id);
        Some(old)
    }

    /// Whether any session maps to this public id.
    pub(super) fn public_in_use(&self, public_id: &str) -> bool {
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
