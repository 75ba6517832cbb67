//! Closures run on a room's state from outside its handlers: [`RoomHandle::update`] packs
//! one into the mailbox, the actor opens and runs it. Both ends are here because only they
//! know the closure's type; the mailbox carries it as an opaque box ([`ErasedRun`]).

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::RoomActor;
use crate::handlers::context::Cx;
use crate::mailbox::message::{ErasedRun, RoomMsg};
use crate::mailbox::room_handle::{RoomGone, RoomHandle};
use crate::room::Room;

/// A closure sent to a room; the state arrives as `&mut dyn Any` and is downcast.
type RunFn = Box<dyn FnOnce(&mut dyn Any, &mut Cx<'_>) + Send>;

impl RoomHandle {
    /// Run a closure on the room's state, in the room's task, and return its result; the
    /// changes it makes are synced and saved like a handler's. This is how a task spawned by
    /// a handler (after a room-to-room request, say) comes back to the room. `R` must be the
    /// room's type; for another type the closure is not run and `RoomGone` is returned.
    pub async fn update<R, T, F>(&self, f: F) -> Result<T, RoomGone>
    where
        R: Room,
        T: Send + 'static,
        F: FnOnce(&mut R, &mut Cx<'_>) -> T + Send + 'static,
    {
        self.ask(|reply| {
            let run: RunFn = Box::new(move |state, cx| {
                if let Some(room) = state.downcast_mut::<R>() {
                    let _ = reply.send(f(room, cx));
                }
            });
            RoomMsg::Run(ErasedRun(Box::new(run)))
        })
        .await
    }
}

impl<R: Room> RoomActor<R> {
    /// Run a closure from [`RoomHandle::update`], then sync and save what it changed.
    pub(super) fn on_run(&mut self, run: ErasedRun) {
        let Ok(f) = run.0.downcast::<RunFn>() else {
            // Only `update` builds these; the type cannot differ.
            tracing::error!(room = %self.id, "unknown closure in the mailbox");
            return;
        };
        let mut cx = Cx {
            scope: scope!(self),
            conn: None,
        };
        let state: &mut dyn Any = self.tracker.state_mut();
        if catch_unwind(AssertUnwindSafe(|| f(state, &mut cx))).is_err() {
            tracing::error!(room = %self.id, "room update panicked");
        }
        self.flush_state();
        self.after_handler();
    }
}
