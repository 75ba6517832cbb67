//! What the monitor asks of a room: its counts, its connections, sessions and state, and
//! disconnecting a user.

use std::collections::HashSet;

use super::RoomActor;
use crate::connection::request::ConnId;
use crate::mailbox::inspection::{ConnectionView, RoomInspection, RoomStats, SessionView};
use crate::protocol::close::CloseFrame;
use crate::room::Room;

impl<R: Room> RoomActor<R> {
    pub(super) fn stats(&self) -> RoomStats {
        let state_bytes = json_len(&self.tracker.sync_snapshot());
        let users: HashSet<&str> = self
            .conns
            .values()
            .map(|c| c.info.public_id.as_str())
            .collect();
        RoomStats {
            connections: self.conns.len(),
            users: users.len(),
            sessions: self.sessions.len(),
            messages: self.metrics.local.messages(),
            frames_sent: self.metrics.local.frames_sent(),
            state_bytes,
        }
    }

    pub(super) fn inspection(&self) -> RoomInspection {
        let state = self.tracker.sync_snapshot();
        let mut sessions: Vec<SessionView> = self
            .sessions
            .all()
            .map(|s| SessionView {
                user: s.public_id.clone(),
                connections: s.live,
                disconnected_ms: s.disconnected_ms,
            })
            .collect();
        sessions.sort_by(|a, b| a.user.cmp(&b.user));
        RoomInspection {
            stats: self.stats(),
            connections: self
                .conns
                .iter()
                .map(|(id, c)| ConnectionView {
                    conn: *id,
                    user: c.info.public_id.clone(),
                })
                .collect(),
            sessions,
            state,
        }
    }

    /// Close the connections of `user` (4000) and let them leave as after a disconnect.
    pub(super) fn disconnect_user(&mut self, user: &str) -> usize {
        let ids: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.info.public_id == user)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            if let Some(conn) = self.conns.get_mut(id) {
                tracing::info!(user, conn = id, "disconnected by an operator");
                conn.close(CloseFrame::disconnected_by_operator());
            }
            self.on_disconnect(*id);
        }
        ids.len()
    }
}

/// The length of `value` as JSON, counted without building the text.
fn json_len(value: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail, nor can serializing a `Value`.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}
