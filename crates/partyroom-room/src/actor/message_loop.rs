//! The room task: handle the mailbox in batches, wake for timers and finished storage
//! writes, save, and stop on shutdown or when idle.

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::RoomActor;
use crate::mailbox::directory::Unload;
use crate::mailbox::message::RoomMsg;
use crate::metrics::StopReason;
use crate::protocol::close::CloseFrame;
use crate::room::Room;

/// How many times a batch of messages may yield to the runtime to collect more (see
/// `handle_batch`).
const MAX_BATCH_YIELDS: u32 = 8;

impl<R: Room> RoomActor<R> {
    pub(crate) async fn run(mut self, mut mailbox: mpsc::Receiver<RoomMsg>, unload: Unload) {
        if let Err(err) = self.restore().await {
            // Never serve (and later overwrite) a room whose stored state could not be read:
            // stop; the next request starts a new instance that tries again.
            tracing::error!(room = %self.id, %err, "cannot restore room state");
            self.metrics.started();
            self.metrics.stopped(StopReason::RestoreFailed);
            mailbox.close();
            return;
        }
        self.metrics.started();
        // Expire what is overdue right away.
        self.on_timer(false);
        let mut shutdown: Option<oneshot::Sender<()>> = None;
        let mut lost = false;
        let mut stop = StopReason::Unloaded;
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                msg = mailbox.recv(), if shutdown.is_none() => {
                    let Some(msg) = msg else { break };
                    shutdown = self.handle_batch(msg, &mut mailbox).await;
                    if self.evicted {
                        // Another node owns the room now: stop before anything is saved.
                        lost = true;
                        break;
                    }
                }
                done = self.persist.written() => {
                    let now = self.clock.now();
                    if self.persist.on_written(done, now, &self.id).is_err() {
                        // Never write (or serve) again: another owner has the room.
                        lost = true;
                        break;
                    }
                }
                () = sleep_until(deadline) => self.on_timer(!mailbox.is_empty()),
            }
            self.persist
                .maybe_save(&*self.clock, &self.tracker, &self.sessions, &self.transfers);
            if let Some(reply) = shutdown.take() {
                if self.persist.is_idle() {
                    for (_, mut conn) in self.conns.drain(..) {
                        conn.close(CloseFrame::going_away());
                    }
                    let _ = reply.send(());
                    stop = StopReason::Shutdown;
                    break;
                }
                shutdown = Some(reply);
            } else if self.should_unload() && unload.try_remove(&self.id, &mailbox) {
                tracing::debug!(room = %self.id, "unloaded idle room");
                break;
            }
        }
        if lost {
            stop = if self.evicted {
                StopReason::Evicted
            } else {
                StopReason::Fenced
            };
        }
        self.metrics.stopped(stop);
        let close = if lost {
            // Out of the directory at once, whatever waits in the mailbox.
            unload.remove(&self.id);
            CloseFrame::room_moved()
        } else {
            CloseFrame::going_away()
        };
        mailbox.close();
        // Messages that raced with the unload are dropped; their senders see `RoomGone` and
        // retry on a new instance.
        while mailbox.try_recv().is_ok() {}
        for (_, mut conn) in self.conns.drain(..) {
            conn.close(close.clone());
        }
    }

    /// Handle `first` and the messages already waiting behind it before flushing
    /// (opportunistic batching: a burst becomes one patch, a quiet room still flushes after
    /// each message). Returns the reply of a shutdown request met on the way.
    async fn handle_batch(
        &mut self,
        first: RoomMsg,
        mailbox: &mut mpsc::Receiver<RoomMsg>,
    ) -> Option<oneshot::Sender<()>> {
        let mut shutdown = None;
        let mut next = Some(first);
        let mut budget = self.config.batch_messages;
        let mut yields = 0;
        self.in_batch = true;
        while let Some(msg) = next.take() {
            if let RoomMsg::Evict = msg {
                self.evicted = true;
                break;
            }
            if let RoomMsg::Shutdown(reply) = msg {
                self.flush_state();
                self.persist.due_now(self.clock.now());
                shutdown = Some(reply);
                break;
            }
            let batchable = matches!(
                msg,
                RoomMsg::Message(..)
                    | RoomMsg::Drained(..)
                    | RoomMsg::Connect(..)
                    | RoomMsg::Admit(..)
                    | RoomMsg::Disconnect(..)
            );
            if self.unflushed && !batchable {
                // Requests and the rest see (and are ordered after) the changes of the
                // messages before them.
                self.flush_state();
            }
            self.handle(msg);
            budget -= 1;
            if budget == 0 {
                break;
            }
            next = mailbox.try_recv().ok();
            // With a sync throttle, patches are merged anyway: no yield.
            if next.is_none()
                && self.unflushed
                && yields < MAX_BATCH_YIELDS
                && self.config.throttle_sync.is_zero()
            {
                // Let the runtime poll the sockets: messages that have already arrived join
                // this batch. When idle, the first yield finds nothing and costs a few µs;
                // under load, each one that finds more allows another.
                tokio::task::yield_now().await;
                next = mailbox.try_recv().ok();
                yields = if next.is_some() {
                    yields + 1
                } else {
                    MAX_BATCH_YIELDS
                };
            }
        }
        self.in_batch = false;
        if self.evicted {
            return shutdown;
        }
        // Inside a sync throttle window the changes stay in the tracker until the window ends
        // (one flush per window instead of one per message); otherwise they are flushed now.
        // Clients that joined in the batch get their first packet now either way.
        let flushed = self.flush_at_window_end(self.clock.now());
        if !flushed && self.unflushed && !self.batch_initial.is_empty() {
            self.flush_state();
        }
        self.drop_slow();
        shutdown
    }

    fn handle(&mut self, msg: RoomMsg) {
        match msg {
            RoomMsg::Connect(req, reply) => self.connect_or_park(req, reply),
            RoomMsg::Message(conn, text) => self.on_message(conn, &text),
            RoomMsg::Drained(conn, delivered) => {
                if let Some(conn) = self.conns.get_mut(&conn) {
                    self.held_reads.on_drained(conn, delivered);
                }
            }
            RoomMsg::Disconnect(conn) => self.on_disconnect(conn),
            RoomMsg::Request(req, reply) => {
                let response = self.on_request(&req);
                let _ = reply.send(response);
            }
            RoomMsg::Shutdown(reply) => {
                let _ = reply.send(());
            }
            RoomMsg::Admit(info, reply) => {
                let _ = reply.send(self.admit(&info));
            }
            RoomMsg::Run(run) => self.on_run(run),
            RoomMsg::TransferIn(t) => self.transfer_in(t),
            RoomMsg::Evict => self.evicted = true,
            RoomMsg::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
            RoomMsg::Inspect(reply) => {
                let _ = reply.send(self.inspection());
            }
            RoomMsg::DisconnectUser(user, reply) => {
                let _ = reply.send(self.disconnect_user(&user));
            }
        }
        self.drop_slow();
        self.idle_since = if self.conns.is_empty() {
            Some(self.clock.now())
        } else {
            None
        };
    }

    fn next_deadline(&self) -> Option<Instant> {
        let unload = match (self.idle_since, self.config.idle_timeout) {
            (Some(since), Some(after)) => Some(since + after),
            _ => None,
        };
        [
            self.sync.deadline(),
            self.sync
                .window_end()
                .filter(|_| self.unflushed && !self.held_reads.draining()),
            self.held_reads
                .deadline(self.sync.window_end(), self.sync.throttle()),
            self.sessions.next_expiry(),
            self.persist.deadline(),
            unload,
            self.transfers.next_expiry(),
            self.parked.deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// What fell due. `mail_waiting`: the mailbox is not empty (drain answers may be in it).
    fn on_timer(&mut self, mail_waiting: bool) {
        let now = self.clock.now();
        self.held_reads
            .drive(now, mail_waiting, &mut self.conns, &self.sync, &self.id);
        self.flush_at_window_end(now);
        if let Some(patch) = self.sync.fire(now) {
            self.send_patch(&patch);
        }
        self.expire_sessions(now);
        self.prune_transfers(now);
        self.unpark_expired(now);
        self.drop_slow();
    }

    fn should_unload(&self) -> bool {
        match (self.idle_since, self.config.idle_timeout) {
            (Some(since), Some(after)) => {
                self.conns.is_empty()
                    && self.parked.is_empty()
                    && self.clock.now() >= since + after
                    && self.persist.is_idle()
                    && self.sync.deadline().is_none()
                    && !self.unflushed
            }
            _ => false,
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
