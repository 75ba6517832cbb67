//! Connections coming and going: connect guards, joining (session, user, first packet),
//! leaving (`on_leave`, expiry), slow clients, and expired sessions.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use partyroom_state::State;
use tokio::time::Instant;

use super::RoomActor;
use crate::connection::live::Conn;
use crate::connection::refusal::{ConnectError, Refusal};
use crate::connection::request::{ConnId, ConnInfo, ConnectInfo, ConnectRequest};
use crate::handlers::context::Cx;
use crate::protocol::close::CloseFrame;
use crate::protocol::outbound::{json_frame, user_disconnected};
use crate::room::Room;
use crate::session::ids::{new_public_id, random_id};
use crate::session::table::Session;

impl<R: Room> RoomActor<R> {
    /// Run the connect guards that need the room state.
    pub(super) fn admit(&self, info: &ConnectInfo) -> Result<(), Refusal> {
        let state = self.tracker.state();
        for guard in &self.handlers.connect_guards {
            match catch_unwind(AssertUnwindSafe(|| guard(state, info))) {
                Ok(Ok(())) => {}
                Ok(Err(refusal)) => return Err(refusal),
                Err(_) => {
                    tracing::error!(room = %self.id, "connect guard panicked");
                    return Err(Refusal::forbidden("guard failed"));
                }
            }
        }
        Ok(())
    }

    pub(super) fn on_connect(&mut self, req: ConnectRequest) -> Result<ConnId, ConnectError> {
        if !req.admitted && !self.handlers.connect_guards.is_empty() {
            self.admit(&req.info()).map_err(ConnectError::Refused)?;
        }
        let now = self.clock.now();
        self.prune_transfers(now);
        let conn_id = self.next_conn;
        self.next_conn += 1;
        let has_users = R::USERS_FIELD.is_some();
        let mut private_id = req
            .session_id
            .clone()
            .unwrap_or_else(|| format!("{}:{conn_id}", random_id(&mut self.rng, 16)));
        // A transfer token adopts the session prepared by the source room (single use).
        if let Some(token) = req
            .query
            .iter()
            .find(|(k, _)| k == "transferToken")
            .map(|(_, v)| v.clone())
            && let Some(transfer) = self.take_transfer(&token, now)
        {
            private_id = transfer.private_id.clone();
            if has_users && !self.sessions.contains(&private_id) {
                // The session was removed meanwhile: re-create it for the transferred user.
                let session = Session::new(transfer.public_id, self.clock.unix_ms());
                self.sessions.insert(private_id.clone(), session);
            }
        }

        let max_users = self.config.max_users;
        let public_id = if has_users {
            match self.sessions.get(&private_id) {
                Some(s) => s.public_id.clone(),
                None => {
                    if max_users.is_some_and(|max| self.sessions.len() >= max) {
                        return Err(ConnectError::RoomFull);
                    }
                    let public_id = self.new_public_id();
                    let session = Session::new(public_id.clone(), self.clock.unix_ms());
                    self.sessions.insert(private_id.clone(), session);
                    public_id
                }
            }
        } else {
            if max_users.is_some_and(|max| self.conns.len() >= max) {
                return Err(ConnectError::RoomFull);
            }
            self.new_public_id()
        };

        if has_users {
            let attached = self.sessions.attach(&private_id);
            debug_assert!(attached, "session ensured above");
            self.persist.session_changed(&private_id, now);
            let users = self
                .tracker
                .state_mut()
                .users_mut()
                .expect("room has a users field");
            // A session whose user entry is missing gets a fresh user (quirk Q15 fixed).
            let user = users.get_or_insert_with(&public_id, <R::User as Default>::default);
            user.set_connected(true);
        }

        let ConnectRequest {
            query,
            headers,
            out,
            ..
        } = req;
        let info = Arc::new(ConnInfo {
            id: conn_id,
            private_id,
            public_id: public_id.clone(),
            query,
            headers,
        });
        if let Some(hook) = &self.handlers.on_join {
            let mut cx = Cx {
                scope: scope!(self),
                conn: Some(&info),
            };
            let state = self.tracker.state_mut();
            if catch_unwind(AssertUnwindSafe(|| hook(state, &mut cx))).is_err() {
                tracing::error!(room = %self.id, "on_join panicked");
            }
        }
        // Others see the join as one coalesced patch (with the other joins of the same batch);
        // the new client gets the full snapshot. When the patch is flushed now, the new client
        // is not listed yet; when it is flushed at the end of the batch, the new client gets
        // it too, which changes nothing for it.
        self.flush_or_defer();
        let conn = Conn::new(info, out);
        self.conns.insert(conn_id, conn);
        self.metrics.joined.increment(1);
        tracing::debug!(user = %public_id, conn = conn_id, "joined");
        if !self.auto_sync {
            self.pending_initial.push(conn_id);
        } else if self.in_batch && self.effects.is_empty() {
            // Sent when the batch is flushed, with the other joins of the batch: one snapshot
            // serialized once instead of one per join (see `flush_state`).
            self.batch_initial.push(conn_id);
            self.unflushed = true;
        } else {
            self.send_initial(conn_id);
        }
        self.after_handler();
        Ok(conn_id)
    }

    pub(super) fn on_disconnect(&mut self, conn_id: ConnId) {
        let Some(conn) = self.conns.shift_remove(&conn_id) else {
            return;
        };
        self.metrics.left.increment(1);
        tracing::debug!(user = %conn.info.public_id, conn = conn_id, "left");
        self.held_reads.forget(&conn.reads);
        self.pending_initial.retain(|c| *c != conn_id);
        self.batch_initial.retain(|c| *c != conn_id);
        if R::USERS_FIELD.is_none() {
            return;
        }
        let info = conn.info;
        let now = self.clock.now();
        if !self
            .sessions
            .detach(&info.private_id, now, self.clock.unix_ms())
        {
            // No such session, or another tab of the same session is still open.
            return;
        }
        self.persist.session_changed(&info.private_id, now);
        let has_flag = {
            let users = self.tracker.state_mut().users_mut().expect("users field");
            match users.get_mut(&info.public_id) {
                Some(user) => user.set_connected(false),
                None => return,
            }
        };
        if let Some(hook) = &self.handlers.on_leave {
            let mut cx = Cx {
                scope: scope!(self),
                conn: Some(&info),
            };
            let state = self.tracker.state_mut();
            if catch_unwind(AssertUnwindSafe(|| hook(state, &mut cx))).is_err() {
                tracing::error!(room = %self.id, "on_leave panicked");
            }
        }
        if has_flag {
            self.flush_or_defer();
        } else {
            // The message follows the changes made before it.
            self.flush_state();
            let packet = user_disconnected(&info.public_id);
            self.deliver(None, Some(&packet), json_frame(&packet));
        }
        self.after_handler();
    }

    /// Close connections whose queue overflowed and run their leave logic.
    pub(super) fn drop_slow(&mut self) {
        while let Some(id) = self.slow.pop() {
            if let Some(conn) = self.conns.get_mut(&id) {
                tracing::warn!(room = %self.id, conn = id, "closing a client that does not read");
                conn.close(CloseFrame::too_slow());
                self.metrics.slow_closes.increment(1);
                self.on_disconnect(id);
            }
        }
    }

    /// Remove the sessions expired at `now`, and their users when no other session has them.
    pub(super) fn expire_sessions(&mut self, now: Instant) {
        for gone in self.sessions.expire_due(now) {
            self.persist.session_changed(&gone.private_id, now);
            if gone.user_unused
                && let Some(users) = self.tracker.state_mut().users_mut()
            {
                users.remove(&gone.public_id);
            }
            self.flush_state();
        }
    }

    fn new_public_id(&mut self) -> String {
        let sessions = &self.sessions;
        let users = self.tracker.state().users();
        new_public_id(&mut self.rng, |id| {
            sessions.public_in_use(id) || users.is_some_and(|u| u.contains_key(id))
        })
    }
}
