//! What a handler asked for besides changing state ([`Effects`]), carried out after the state
//! patch it produced: sync switches, outgoing session transfers, `send` and `broadcast`.
//!
//! [`Effects`]: crate::handlers::context::Effects

use serde_json::Value;

use super::RoomActor;
use crate::handlers::context::{Outbound, TransferOut};
use crate::mailbox::message::RoomMsg;
use crate::protocol::outbound::json_frame;
use crate::room::Room;
use crate::session::transfer::TransferIn;

impl<R: Room> RoomActor<R> {
    /// Apply what the last handler asked for besides state changes: sync switches, transfers,
    /// and messages (after the state patch the handler produced).
    pub(super) fn after_handler(&mut self) {
        let effects = std::mem::take(&mut self.effects);
        for t in effects.transfers {
            self.transfer_out(t);
        }
        if let Some(on) = effects.auto_sync
            && on != self.auto_sync
        {
            self.auto_sync = on;
            if on {
                // Switching back on sends what waited (the original kept it back until the
                // next apply_sync, leaving joined clients without a first packet).
                self.apply_sync();
            }
        }
        if effects.apply_sync {
            self.apply_sync();
        }
        for out in effects.outbound {
            match out {
                Outbound::All(v) => {
                    let frame = json_frame(&v);
                    self.deliver(None, Some(&v), frame);
                }
                Outbound::To(id, v) => {
                    let frame = json_frame(&v);
                    self.deliver(Some(id), Some(&v), frame);
                }
            }
        }
    }

    /// Source side of a transfer: hand the user's session to the target room.
    fn transfer_out(&mut self, t: TransferOut) {
        let user = self
            .tracker
            .state()
            .users()
            .and_then(|u| u.get(&t.public_id))
            .map(partyroom_state::Tracked::persist_view)
            .unwrap_or(Value::Null);
        let msg = RoomMsg::TransferIn(TransferIn {
            token: t.token,
            private_id: t.private_id,
            public_id: t.public_id,
            user,
        });
        // `try_send` keeps the order: the transfer is queued in the target before the client
        // can even learn its token.
        if t.target.tx.try_send(msg).is_err() {
            tracing::warn!(room = %self.id, target = %t.target.id(), "session transfer dropped: target busy or gone");
        }
    }
}
