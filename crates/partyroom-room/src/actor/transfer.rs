//! Target side of session transfers, and the room's transfer tokens.

use partyroom_state::State;
use tokio::time::Instant;

use super::RoomActor;
use super::parked_connects::{ConnectReply, presented_token};
use crate::connection::request::ConnectRequest;
use crate::room::Room;
use crate::session::table::Session;
use crate::session::transfer::{SessionHandoff, Transfer};

impl<R: Room> RoomActor<R> {
    /// Connect `req`, or, in a cluster, keep it until the handoff its transfer token names
    /// arrives (at most `HANDOFF_WAIT`; then it connects as if the token were unknown).
    pub(super) fn connect_or_park(&mut self, req: ConnectRequest, reply: ConnectReply) {
        if self.rooms.placement().is_some()
            && let Some(token) = presented_token(&req)
            && self.transfers.get(token).is_none()
        {
            let token = token.to_owned();
            self.parked.park(token, self.clock.now(), req, reply);
            return;
        }
        let result = self.on_connect(req);
        let _ = reply.send(result);
    }

    /// Connect the parked requests whose wait ended at `now`.
    pub(super) fn unpark_expired(&mut self, now: Instant) {
        for (req, reply) in self.parked.take_expired(now) {
            let result = self.on_connect(req);
            let _ = reply.send(result);
        }
    }

    /// A session moved here: prepare the session and the user, and remember the token.
    pub(super) fn transfer_in(&mut self, t: SessionHandoff) {
        let now = self.clock.now();
        let wall = self.clock.unix_ms();
        if R::USERS_FIELD.is_some() {
            let mut snapshot = t.user;
            if let Some(hook) = &self.handlers.on_session_restore {
                hook(&t.public_id, &mut snapshot);
            }
            let mut user = <R::User as Default>::default();
            if !snapshot.is_null()
                && let Err(err) = partyroom_state::load_into(&mut user, &snapshot)
            {
                tracing::warn!(room = %self.id, %err, "transferred user does not fit; starting fresh");
            }
            user.set_connected(false);
            if let Some(users) = self.tracker.state_mut().users_mut() {
                users.insert(t.public_id.clone(), user);
            }
            // Not connected yet: if the client never comes, the session expires as usual.
            let session = Session::disconnected(t.public_id.clone(), wall, now, wall);
            self.sessions
                .insert_unattached(t.private_id.clone(), session);
            self.persist.session_changed(&t.private_id, now);
        }
        self.persist.transfer_changed(&t.token, now);
        let transfer = Transfer::new(t.private_id, t.public_id, now, wall);
        let token = t.token;
        self.transfers.insert(token.clone(), transfer);
        self.flush_state();
        self.after_handler();
        for (req, reply) in self.parked.take_token(&token) {
            let result = self.on_connect(req);
            let _ = reply.send(result);
        }
    }

    /// Forget the transfer tokens expired at `now` (in memory and in storage).
    pub(super) fn prune_transfers(&mut self, now: Instant) {
        for token in self.transfers.prune(now) {
            self.persist.transfer_changed(&token, now);
        }
    }

    /// Consume a token at `now`: single use, ignored once expired.
    pub(super) fn take_transfer(&mut self, token: &str, now: Instant) -> Option<Transfer> {
        let (transfer, valid) = self.transfers.take(token, now)?;
        self.persist.transfer_changed(token, now);
        valid.then_some(transfer)
    }
}
