//! Handler registration: actions, the unhandled-action fallback, guards, lifecycle hooks,
//! the packet interceptor and HTTP routes of a room type, kept as boxed closures the actor
//! calls.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use http::Method;
use serde_json::Value;
use serde_json::value::RawValue;

use super::context::{Cx, HttpCx};
use super::input::ActionInput;
use crate::connection::refusal::Refusal;
use crate::connection::request::{ConnInfo, ConnectInfo};
use crate::mailbox::admission::{AsyncConnectGuard, AsyncRequestGuard};
use crate::protocol::http::{IntoRoomResponse, RoomRequest, RoomResponse, RoutePath};
use crate::protocol::inbound::Rejection;

pub(crate) type ActionFn<R> =
    Box<dyn Fn(&mut R, &mut Cx<'_>, Option<&RawValue>) -> Result<(), Rejection> + Send + Sync>;
pub(crate) type FallbackFn<R> = Box<dyn Fn(&mut R, &mut Cx<'_>, &str, Value) + Send + Sync>;
pub(crate) type HookFn<R> = Box<dyn Fn(&mut R, &mut Cx<'_>) + Send + Sync>;
pub(crate) type RestoreFn = Box<dyn Fn(&mut Value) + Send + Sync>;
pub(crate) type UserRestoreFn = Box<dyn Fn(&str, &mut Value) + Send + Sync>;
pub(crate) type GuardFn<R> = Box<dyn Fn(&R, &Cx<'_>, &Value) -> bool + Send + Sync>;
pub(crate) type RouteFn<R> = Box<dyn Fn(&mut R, &mut HttpCx<'_>) -> RoomResponse + Send + Sync>;
pub(crate) type RequestGuardFn<R> =
    Box<dyn Fn(&R, &HttpCx<'_>) -> Result<(), RoomResponse> + Send + Sync>;
pub(crate) type ConnectGuardFn<R> =
    Box<dyn Fn(&R, &ConnectInfo) -> Result<(), Refusal> + Send + Sync>;
pub(crate) type InterceptFn<R> = Box<dyn Fn(&R, &ConnInfo, &Value) -> Intercept + Send + Sync>;
pub(crate) type SessionRestoreFn = Box<dyn Fn(&str, &mut Value) + Send + Sync>;

pub(crate) struct Route<R> {
    pub(crate) method: Method,
    pub(crate) path: RoutePath,
    pub(crate) handler: RouteFn<R>,
    pub(crate) guards: Vec<RequestGuardFn<R>>,
}

/// What an interceptor decides for one packet and one connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Intercept {
    /// Send the packet as it is (its bytes are shared with every other receiver).
    Keep,
    /// Do not send it to this connection.
    Drop,
    /// Send this instead (serialized for this connection only).
    Replace(Value),
}

/// The handlers of a room type, registered once in [`crate::Room::handlers`].
///
/// ```
/// use partyroom_room::{Handlers, Json, Room, RoomConfig, http::Text};
/// use partyroom_state::State;
///
/// #[derive(State, Default, Clone)]
/// struct Counter { count: i64 }
///
/// impl Room for Counter {
///     fn config() -> RoomConfig { RoomConfig::new("counter-{id}") }
///     fn handlers(h: &mut Handlers<Self>) {
///         h.action("add", |room: &mut Self, _cx, Json(n): Json<i64>| room.count += n)
///          .get("/count", |room: &Self, _cx| Json(room.count))
///          .get("/hello", |_room: &Self, _cx| Text("hi".into()));
///     }
/// }
/// ```
pub struct Handlers<R> {
    pub(crate) actions: HashMap<String, ActionFn<R>>,
    pub(crate) fallback: Option<FallbackFn<R>>,
    pub(crate) on_join: Option<HookFn<R>>,
    pub(crate) on_leave: Option<HookFn<R>>,
    pub(crate) routes: Vec<Route<R>>,
    pub(crate) message_guards: Vec<GuardFn<R>>,
    pub(crate) action_guards: HashMap<String, Vec<GuardFn<R>>>,
    pub(crate) fallback_guards: Vec<GuardFn<R>>,
    pub(crate) on_storage_restore: Option<RestoreFn>,
    pub(crate) on_user_storage_restore: Option<UserRestoreFn>,
    pub(crate) on_session_restore: Option<SessionRestoreFn>,
    pub(crate) request_guards: Vec<RequestGuardFn<R>>,
    pub(crate) connect_guards: Vec<ConnectGuardFn<R>>,
    pub(crate) interceptor: Option<InterceptFn<R>>,
    pub(crate) async_connect_guards: Vec<AsyncConnectGuard>,
    pub(crate) async_request_guards: Vec<AsyncRequestGuard>,
}

impl<R> Default for Handlers<R> {
    fn default() -> Self {
        Self {
            actions: HashMap::new(),
            fallback: None,
            on_join: None,
            on_leave: None,
            routes: Vec::new(),
            message_guards: Vec::new(),
            action_guards: HashMap::new(),
            fallback_guards: Vec::new(),
            on_storage_restore: None,
            on_user_storage_restore: None,
            on_session_restore: None,
            request_guards: Vec::new(),
            connect_guards: Vec::new(),
            interceptor: None,
            async_connect_guards: Vec::new(),
            async_request_guards: Vec::new(),
        }
    }
}

impl<R> fmt::Debug for Handlers<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut actions: Vec<_> = self.actions.keys().collect();
        actions.sort();
        f.debug_struct("Handlers")
            .field("actions", &actions)
            .field("fallback", &self.fallback.is_some())
            .field(
                "routes",
                &self
                    .routes
                    .iter()
                    .map(|r| format!("{} {:?}", r.method, r.path))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl<R: 'static> Handlers<R> {
    /// Handle messages `{"action": name, "value": ...}`. The value is converted with
    /// [`ActionInput`]; values that do not convert are dropped without running the handler.
    /// Registering the same name again replaces the handler.
    pub fn action<I, F>(&mut self, name: &str, handler: F) -> &mut Self
    where
        I: ActionInput + 'static,
        F: Fn(&mut R, &mut Cx<'_>, I) + Send + Sync + 'static,
    {
        self.actions.insert(
            name.to_owned(),
            Box::new(move |room, cx, raw| {
                let input = I::from_value(raw)?;
                handler(room, cx, input);
                Ok(())
            }),
        );
        self
    }

    /// Add a guard to one action: it runs before the handler (after the room's message
    /// guards) with the message's `value` (`null` when absent); `false` drops the message.
    /// Several guards run in registration order; the first `false` stops the rest.
    pub fn action_guard<F>(&mut self, action: &str, guard: F) -> &mut Self
    where
        F: Fn(&R, &Cx<'_>, &Value) -> bool + Send + Sync + 'static,
    {
        self.action_guards
            .entry(action.to_owned())
            .or_default()
            .push(Box::new(guard));
        self
    }

    /// Add a guard to the fallback; it receives `{"action": name, "value": value}`.
    pub fn fallback_guard<F>(&mut self, guard: F) -> &mut Self
    where
        F: Fn(&R, &Cx<'_>, &Value) -> bool + Send + Sync + 'static,
    {
        self.fallback_guards.push(Box::new(guard));
        self
    }

    /// Add a room-level guard that runs for every message, before any action guard, with the
    /// message's `value`; `false` drops the message (the connection stays open).
    pub fn message_guard<F>(&mut self, guard: F) -> &mut Self
    where
        F: Fn(&R, &Cx<'_>, &Value) -> bool + Send + Sync + 'static,
    {
        self.message_guards.push(Box::new(guard));
        self
    }

    /// Handle actions that have no handler: receives the action name and its value
    /// (`@UnhandledAction` in `@signe/room`).
    pub fn fallback<F>(&mut self, handler: F) -> &mut Self
    where
        F: Fn(&mut R, &mut Cx<'_>, &str, Value) + Send + Sync + 'static,
    {
        self.fallback = Some(Box::new(handler));
        self
    }

    /// Called for every accepted connection after its user exists and is marked connected.
    /// Changes made here are part of the joining client's first packet.
    pub fn on_join<F>(&mut self, hook: F) -> &mut Self
    where
        F: Fn(&mut R, &mut Cx<'_>) + Send + Sync + 'static,
    {
        self.on_join = Some(Box::new(hook));
        self
    }

    /// Called when the last connection of a session closes (the user is already marked
    /// disconnected).
    pub fn on_leave<F>(&mut self, hook: F) -> &mut Self
    where
        F: Fn(&mut R, &mut Cx<'_>) + Send + Sync + 'static,
    {
        self.on_leave = Some(Box::new(hook));
        self
    }

    /// Rewrite the stored snapshot of the room before it is loaded (migrations, hydration).
    /// Called once per instance start, with `{}` for a new room.
    pub fn on_storage_restore<F>(&mut self, hook: F) -> &mut Self
    where
        F: Fn(&mut Value) + Send + Sync + 'static,
    {
        self.on_storage_restore = Some(Box::new(hook));
        self
    }

    /// Rewrite each stored user (public id, snapshot) before it is loaded; runs after
    /// [`Handlers::on_storage_restore`].
    pub fn on_user_storage_restore<F>(&mut self, hook: F) -> &mut Self
    where
        F: Fn(&str, &mut Value) + Send + Sync + 'static,
    {
        self.on_user_storage_restore = Some(Box::new(hook));
        self
    }

    /// Handle `method path` requests (`/users/:id` or `/users/{id}` capture parameters; the
    /// whole path must match). The handler may change state; changes are synced as usual.
    pub fn route<O, F>(&mut self, method: Method, path: &str, handler: F) -> &mut Self
    where
        O: IntoRoomResponse,
        F: Fn(&mut R, &mut HttpCx<'_>) -> O + Send + Sync + 'static,
    {
        self.routes.push(Route {
            method,
            path: RoutePath::parse(path),
            handler: Box::new(move |room, cx| handler(room, cx).into_room_response()),
            guards: Vec::new(),
        });
        self
    }

    /// Guard the routes registered so far for `method path` (`@Guard` on a `@Request`
    /// handler): an `Err` response is returned instead of running the handler. Use
    /// [`RoomResponse::not_permitted`] for the original's `403 {"error":"Not permitted"}`.
    pub fn route_guard<F>(&mut self, method: Method, path: &str, guard: F) -> &mut Self
    where
        F: Fn(&R, &HttpCx<'_>) -> Result<(), RoomResponse> + Send + Sync + Clone + 'static,
    {
        let path = RoutePath::parse(path);
        for route in self
            .routes
            .iter_mut()
            .filter(|r| r.method == method && r.path == path)
        {
            route.guards.push(Box::new(guard.clone()));
        }
        self
    }

    /// Guard every HTTP route of the room (runs before the route's own guards).
    pub fn request_guard<F>(&mut self, guard: F) -> &mut Self
    where
        F: Fn(&R, &HttpCx<'_>) -> Result<(), RoomResponse> + Send + Sync + 'static,
    {
        self.request_guards.push(Box::new(guard));
        self
    }

    /// Guard every HTTP request of the room with an async check that runs before the room
    /// sees the request (outside the room's task).
    pub fn request_guard_async<F, Fut>(&mut self, guard: F) -> &mut Self
    where
        F: Fn(Arc<RoomRequest>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), RoomResponse>> + Send + 'static,
    {
        self.async_request_guards
            .push(Arc::new(move |req| Box::pin(guard(req))));
        self
    }

    /// Guard connections with the room state at hand: runs before the session and user are
    /// set up; a refusal changes nothing in the room.
    pub fn connect_guard<F>(&mut self, guard: F) -> &mut Self
    where
        F: Fn(&R, &ConnectInfo) -> Result<(), Refusal> + Send + Sync + 'static,
    {
        self.connect_guards.push(Box::new(guard));
        self
    }

    /// Guard connections with an async check (a token lookup, another service) that runs
    /// before the WebSocket upgrade, outside the room's task.
    pub fn connect_guard_async<F, Fut>(&mut self, guard: F) -> &mut Self
    where
        F: Fn(Arc<ConnectInfo>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), Refusal>> + Send + 'static,
    {
        self.async_connect_guards
            .push(Arc::new(move |info| Box::pin(guard(info))));
        self
    }

    /// Look at every outgoing packet for every connection (sync patches, the first packet,
    /// `user_disconnected`, `send`/`broadcast`) and keep, drop or replace it
    /// (`interceptorPacket`). The packet is the whole envelope, e.g.
    /// `{"type":"sync","value":{...}}`. Packets kept as they are still share their bytes.
    pub fn intercept<F>(&mut self, interceptor: F) -> &mut Self
    where
        F: Fn(&R, &ConnInfo, &Value) -> Intercept + Send + Sync + 'static,
    {
        self.interceptor = Some(Box::new(interceptor));
        self
    }

    /// Rewrite a transferred user's snapshot (public id, snapshot) before the target room
    /// loads it (`onSessionRestore`).
    pub fn on_session_restore<F>(&mut self, hook: F) -> &mut Self
    where
        F: Fn(&str, &mut Value) + Send + Sync + 'static,
    {
        self.on_session_restore = Some(Box::new(hook));
        self
    }

    /// A read-only `GET` route.
    pub fn get<O, F>(&mut self, path: &str, handler: F) -> &mut Self
    where
        O: IntoRoomResponse,
        F: Fn(&R, &mut HttpCx<'_>) -> O + Send + Sync + 'static,
    {
        self.route(Method::GET, path, move |room, cx| handler(room, cx))
    }

    /// A `POST` route.
    pub fn post<O, F>(&mut self, path: &str, handler: F) -> &mut Self
    where
        O: IntoRoomResponse,
        F: Fn(&mut R, &mut HttpCx<'_>) -> O + Send + Sync + 'static,
    {
        self.route(Method::POST, path, handler)
    }
}
