//! What a handler asked for besides changing state ([`Effects`]), carried out after the state
//! patch it produced: sync switches, outgoing session transfers, `send` and `broadcast`.
//!
//! [`Effects`]: crate::handlers::context::Effects

use serde_json::Value;

use super::RoomActor;
use crate::handlers::context::{Outbound, TransferOut, TransferTarget};
use crate::mailbox::message::RoomMsg;
use crate::protocol::outbound::json_frame;
use crate::room::Room;
use crate::session::transfer::SessionHandoff;

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
        let handoff = SessionHandoff {
            token: t.token,
            private_id: t.private_id,
            public_id: t.public_id,
            user,
        };
        match t.target {
            TransferTarget::Local(target) => {
                // `try_send` keeps the order: the transfer is queued in the target before the
                // client can even learn its token.
                if target.tx.try_send(RoomMsg::TransferIn(handoff)).is_err() {
                    tracing::warn!(room = %self.id, target = %target.id(), "session transfer dropped: target busy or gone");
                }
            }
            TransferTarget::Placed { party, room } => {
                // In a cluster: the target room waits for the handoff if its client comes
                // first (see `park_for_handoff`).
                let rooms = self.rooms.clone();
                let from = self.id.clone();
                tokio::spawn(async move {
                    if let Err(err) = rooms.hand_off(&party, &room, handoff).await {
                        tracing::warn!(room = %from, target = %room, %err, "session transfer dropped");
                    }
                });
            }
        }
    }
}
