//! Running handlers: an action message through its guards to its handler (or the fallback),
//! and an HTTP request through its guards to its route.

use std::panic::{AssertUnwindSafe, catch_unwind};

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::RoomActor;
use crate::connection::request::ConnId;
use crate::handlers::context::{Cx, HttpCx};
use crate::metrics::ActionOutcome;
use crate::protocol::http::{RoomRequest, RoomResponse};
use crate::protocol::inbound::{Rejection, check_size, parse_envelope};
use crate::room::Room;

impl<R: Room> RoomActor<R> {
    pub(super) fn on_message(&mut self, conn_id: ConnId, text: &[u8]) {
        if !self.sync.throttle().is_zero()
            && self.config.hold_reads
            && let Some(conn) = self.conns.get_mut(&conn_id)
        {
            let window = self.sync.windows();
            self.held_reads.consider(conn, window, &*self.clock);
        }
        // `user{user, conn}` on what the message causes (a disabled level costs one check).
        let span = if tracing::enabled!(tracing::Level::DEBUG)
            && let Some(conn) = self.conns.get(&conn_id)
        {
            tracing::debug_span!("user", user = %conn.info.public_id, conn = conn_id)
        } else {
            tracing::Span::none()
        };
        let _entered = span.enter();
        let outcome = match self.run_action(conn_id, text) {
            Ok(outcome) => outcome,
            Err(rejection) => {
                tracing::debug!(room = %self.id, conn = conn_id, %rejection, "message dropped");
                match rejection {
                    Rejection::Malformed(_) => ActionOutcome::Malformed,
                    Rejection::UnknownAction(_) => ActionOutcome::Unknown,
                    Rejection::InvalidValue(_) | Rejection::Validation(_) => ActionOutcome::Invalid,
                    Rejection::Guard => ActionOutcome::Refused,
                    Rejection::TooLarge(_) => ActionOutcome::TooLarge,
                }
            }
        };
        self.metrics.local.message(text.len(), outcome);
        // Messages and sync switches must follow the changes made before them: with any,
        // this flushes now.
        self.flush_or_defer();
        self.after_handler();
    }

    fn run_action(&mut self, conn_id: ConnId, text: &[u8]) -> Result<ActionOutcome, Rejection> {
        check_size(text, self.config.max_message_bytes)?;
        let Some(conn) = self.conns.get(&conn_id) else {
            return Ok(ActionOutcome::Ok);
        };
        let info = conn.info.clone();
        let envelope = parse_envelope(text)?;
        let handlers = &self.handlers;
        let mut cx = Cx {
            scope: scope!(self),
            conn: Some(&info),
        };
        let action = envelope.action.as_ref();
        let raw_value = envelope.value;
        let value = || match raw_value {
            Some(raw) => serde_json::from_str(raw.get()).unwrap_or(Value::Null),
            None => Value::Null,
        };
        let state = self.tracker.state_mut();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let guarded = !handlers.message_guards.is_empty()
                || handlers.action_guards.contains_key(action)
                || !handlers.fallback_guards.is_empty();
            let value_json = if guarded { value() } else { Value::Null };
            if !handlers
                .message_guards
                .iter()
                .all(|g| g(state, &cx, &value_json))
            {
                return Err(Rejection::Guard);
            }
            if let Some(handler) = handlers.actions.get(action) {
                if let Some(guards) = handlers.action_guards.get(action)
                    && !guards.iter().all(|g| g(state, &cx, &value_json))
                {
                    return Err(Rejection::Guard);
                }
                handler(state, &mut cx, raw_value)
            } else if let Some(fallback) = &handlers.fallback {
                if !handlers.fallback_guards.is_empty() {
                    let call = json!({"action": action, "value": value_json});
                    if !handlers
                        .fallback_guards
                        .iter()
                        .all(|g| g(state, &cx, &call))
                    {
                        return Err(Rejection::Guard);
                    }
                }
                fallback(state, &mut cx, action, value());
                Ok(())
            } else {
                Err(Rejection::UnknownAction(action.to_owned()))
            }
        }));
        match outcome {
            Ok(result) => result.map(|()| ActionOutcome::Ok),
            Err(_) => {
                tracing::error!(room = %self.id, action, "action handler panicked");
                Ok(ActionOutcome::Panicked)
            }
        }
    }

    pub(super) fn on_request(&mut self, req: &RoomRequest) -> RoomResponse {
        self.metrics.requests.increment(1);
        if req.method == Method::OPTIONS {
            return RoomResponse::json(StatusCode::OK, &json!({}));
        }
        let handlers = &self.handlers;
        let Some((route, params)) = handlers.routes.iter().find_map(|r| {
            if r.method != req.method {
                return None;
            }
            r.path.matches(&req.path).map(|p| (r, p))
        }) else {
            return RoomResponse::not_found(None);
        };
        let mut cx = HttpCx {
            scope: scope!(self),
            request: req,
            route_params: params,
        };
        let state = self.tracker.state_mut();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            for guard in handlers.request_guards.iter().chain(&route.guards) {
                guard(state, &cx)?;
            }
            Ok((route.handler)(state, &mut cx))
        }));
        let response = match outcome {
            Ok(Ok(r) | Err(r)) => r,
            Err(_) => {
                tracing::error!(room = %self.id, path = %req.path, "request handler panicked");
                RoomResponse::server_error(None)
            }
        };
        self.flush_state();
        self.after_handler();
        response
    }
}
