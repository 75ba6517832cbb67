//! Target side of session transfers, and the room's transfer tokens.

use partyroom_state::State;
use tokio::time::Instant;

use super::RoomActor;
use crate::room::Room;
use crate::session::table::Session;
use crate::session::transfer::{Transfer, TransferIn};

impl<R: Room> RoomActor<R> {
    /// A session moved here: prepare the session and the user, and remember the token.
    pub(super) fn transfer_in(&mut self, t: TransferIn) {
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
        self.transfers.insert(t.token, transfer);
        self.flush_state();
        self.after_handler();
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
