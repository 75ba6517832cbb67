//! Starting a room from what storage holds: the state (through the restore hooks), the
//! sessions and the transfer tokens. Reading is in [`super::persist`]; this applies it.

use partyroom_state::{State, load_into};
use serde_json::Value;

use super::RoomActor;
use super::persist::STATE;
use crate::room::Room;
use crate::session::table::Session;
use crate::storage::StorageError;

impl<R: Room> RoomActor<R> {
    /// Load the stored state and sessions (spec 10.6, without its quirks).
    pub(super) async fn restore(&mut self) -> Result<(), StorageError> {
        let stored = self.persist.load().await?;
        let mut snapshot = stored.snapshot;
        if let Some(hook) = &self.handlers.on_storage_restore {
            hook(&mut snapshot);
        }
        if let (Some(hook), Some(users)) = (&self.handlers.on_user_storage_restore, R::USERS_FIELD)
            && let Some(Value::Object(map)) = snapshot.get_mut(users)
        {
            for (public_id, user) in map.iter_mut() {
                hook(public_id, user);
            }
        }
        let state = self.tracker.state_mut();
        if let Err(err) = load_into(state, &snapshot) {
            return Err(StorageError::Corrupt {
                key: format!("{STATE}{}", err.path()),
                reason: err.to_string(),
            });
        }
        // Nobody is connected to a room that is just starting, whatever was stored.
        if let Some(users) = state.users_mut() {
            for user in users.values_mut() {
                user.set_connected(false);
            }
        }
        self.tracker.rebase();

        let now = self.clock.now();
        let wall = self.clock.unix_ms();
        for (private_id, stored) in stored.sessions {
            match Session::from_stored(&stored, now, wall) {
                Some(session) => self.sessions.insert_unattached(private_id, session),
                None => {
                    tracing::warn!(room = %self.id, "dropping a stored session without publicId");
                    self.persist.session_changed(&private_id, now);
                }
            }
        }
        for (token, stored) in stored.transfers {
            // Expired or unreadable: forget it.
            if let Err(token) = self.transfers.restore(token, &stored, now, wall) {
                self.persist.transfer_changed(&token, now);
            }
        }
        Ok(())
    }
}
