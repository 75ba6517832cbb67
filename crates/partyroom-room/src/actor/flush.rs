//! The flush and sync path: what handlers changed becomes one patch, serialized once, and is
//! queued for every connection (through the interceptor, if any), now or at the end of the
//! sync throttle window.

use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::Bytes;
use serde_json::Value;
use tokio::time::Instant;

use super::RoomActor;
use crate::connection::live::{Conn, Push};
use crate::connection::request::ConnId;
use crate::handlers::registration::Intercept;
use crate::protocol::outbound::{
    InitialBody, initial_envelope, initial_packet_with, json_frame, sync_envelope, sync_packet,
};
use crate::room::Room;

/// Every how many flushes one is timed for `partyroom_sync_flush_seconds`.
const FLUSH_SAMPLE_EVERY: u64 = 16;

impl<R: Room> RoomActor<R> {
    /// Flush now, or leave the changes for the end of the batch of mailbox messages being
    /// handled (see `handle_batch`) when nothing but state changes was asked for.
    pub(super) fn flush_or_defer(&mut self) {
        if self.in_batch && self.effects.is_empty() {
            self.unflushed = true;
        } else {
            self.flush_state();
        }
    }

    /// Flush the changes kept for the end of the throttle window (see `handle_batch`), if it is
    /// over: held connections are drained first, and the flush waits for their messages (see
    /// `held_reads`). Returns whether it flushed.
    pub(super) fn flush_at_window_end(&mut self, now: Instant) -> bool {
        if !self.unflushed || self.sync.window_open(now) {
            return false;
        }
        self.held_reads
            .start_drain_if_due(now, &mut self.conns, &self.sync);
        if self.held_reads.draining() {
            return false;
        }
        self.flush_state();
        true
    }

    /// Find what handlers changed; hand the patch to the sync scheduler, or keep it for
    /// `apply_sync` while automatic sync is off. The changed rows are marked for storage.
    pub(super) fn flush_state(&mut self) {
        self.unflushed = false;
        // One flush in FLUSH_SAMPLE_EVERY is timed: a clock read and a histogram sample cost
        // as much as a small flush.
        self.flushes = self.flushes.wrapping_add(1);
        let started = self
            .flushes
            .is_multiple_of(FLUSH_SAMPLE_EVERY)
            .then(std::time::Instant::now);
        let flush = self.tracker.flush();
        self.persist.rows_changed(
            flush.persist.rows(),
            self.config.throttle_storage,
            &*self.clock,
        );
        // Clients that joined in this batch get the snapshot instead of the patch.
        let joined = std::mem::take(&mut self.batch_initial);
        if let Some(patch) = flush.sync {
            if self.auto_sync {
                let at = self.held_reads.flush_time(self.clock.now());
                for ready in self.sync.push(patch, at) {
                    self.send_patch_except(&ready, &joined);
                }
                if let Some(started) = started {
                    self.metrics.flush.record(started.elapsed().as_secs_f64());
                }
            } else {
                match self.manual_pending.last_mut() {
                    Some(last) if partyroom_state::patch::can_merge(last, &patch) => {
                        partyroom_state::patch::merge_patch(last, patch);
                    }
                    _ => self.manual_pending.push(patch),
                }
            }
        }
        if !joined.is_empty() {
            self.send_initials(joined);
        }
    }

    /// Spec 6.9: send the changes made while automatic sync was off (or the full state when
    /// there are none) to everyone, and their first packet to the clients that joined
    /// meanwhile. A waiting client gets the full state with its `pId` (the original sent it
    /// only the pending delta, so it never learned the rest of the state).
    pub(super) fn apply_sync(&mut self) {
        let pending = std::mem::take(&mut self.manual_pending);
        let waiting = std::mem::take(&mut self.pending_initial);
        let skip: Vec<ConnId> = waiting.clone();
        if pending.is_empty() {
            let snapshot = self.tracker.sync_snapshot();
            self.send_patch_except(&snapshot, &skip);
        } else {
            for patch in &pending {
                self.send_patch_except(patch, &skip);
            }
        }
        self.send_initials(waiting);
    }

    pub(super) fn send_patch(&mut self, patch: &Value) {
        self.send_patch_except(patch, &[]);
    }

    fn send_patch_except(&mut self, patch: &Value, skip: &[ConnId]) {
        let frame = sync_packet(patch);
        let envelope = self
            .handlers
            .interceptor
            .as_ref()
            .map(|_| sync_envelope(patch));
        if skip.is_empty() {
            self.deliver(None, envelope.as_ref(), frame);
        } else {
            let targets: Vec<ConnId> = self
                .conns
                .keys()
                .copied()
                .filter(|c| !skip.contains(c))
                .collect();
            for id in targets {
                self.deliver(Some(id), envelope.as_ref(), frame.clone());
            }
        }
    }

    /// The first packet of a connection: its public id and the full synced state.
    pub(super) fn send_initial(&mut self, conn_id: ConnId) {
        self.send_initials(vec![conn_id]);
    }

    /// First packets for `conns`: the snapshot is taken and serialized once for all of them;
    /// only the `pId` differs.
    fn send_initials(&mut self, conns: Vec<ConnId>) {
        let conns: Vec<ConnId> = conns
            .into_iter()
            .filter(|c| self.conns.contains_key(c))
            .collect();
        if conns.is_empty() {
            return;
        }
        let snapshot = self.tracker.sync_snapshot();
        let body = InitialBody::new(&snapshot);
        for conn_id in conns {
            let Some(conn) = self.conns.get(&conn_id) else {
                continue;
            };
            let public_id = conn.info.public_id.clone();
            let frame = initial_packet_with(&public_id, &body);
            let envelope = self
                .handlers
                .interceptor
                .as_ref()
                .map(|_| initial_envelope(&public_id, &snapshot));
            self.deliver(Some(conn_id), envelope.as_ref(), frame);
        }
    }

    /// Queue a packet for one connection or all. The bytes are built once and shared; with an
    /// interceptor, each connection's decision is asked with the envelope, and only replaced
    /// packets are serialized again. Connections whose queue is full are noted in `slow`.
    pub(super) fn deliver(&mut self, to: Option<ConnId>, envelope: Option<&Value>, frame: Bytes) {
        let state = self.tracker.state();
        let interceptor = self.handlers.interceptor.as_ref();
        let (mut frames, mut bytes) = (0u64, 0u64);
        let mut push = |id: ConnId, conn: &Conn| {
            let out = match (interceptor, envelope) {
                (Some(i), Some(env)) => {
                    match catch_unwind(AssertUnwindSafe(|| i(state, &conn.info, env))) {
                        Ok(Intercept::Keep) => frame.clone(),
                        Ok(Intercept::Drop) => return,
                        Ok(Intercept::Replace(v)) => json_frame(&v),
                        Err(_) => {
                            tracing::error!("packet interceptor panicked; packet sent unchanged");
                            frame.clone()
                        }
                    }
                }
                _ => frame.clone(),
            };
            frames += 1;
            bytes += out.len() as u64;
            if conn.push(out) == Push::Full {
                self.slow.push(id);
            }
        };
        match to {
            Some(id) => {
                if let Some(conn) = self.conns.get(&id) {
                    push(id, conn);
                }
            }
            None => {
                for (id, conn) in &self.conns {
                    push(*id, conn);
                }
            }
        }
        self.metrics.local.frames(frames, bytes);
    }
}
