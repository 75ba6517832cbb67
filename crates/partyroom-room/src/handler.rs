//! Handler registration: actions, the unhandled-action fallback, lifecycle hooks and HTTP
//! routes of a room type.

use std::collections::HashMap;
use std::fmt;

use http::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::conn::ConnInfo;
use crate::context::{Cx, HttpCx};
use crate::http::RoomRequest;
use crate::http::{IntoRoomResponse, RoomResponse, RoutePath};
use crate::storage::BoxFuture;
use std::sync::Arc;

/// Why an action message was not run. Rejected messages change nothing, are logged at debug
/// level and are otherwise dropped silently, as in `@signe/room` (spec 7.1); the connection
/// stays open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// Not a JSON object with a string `action`.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// No handler for the action and no fallback.
    #[error("unknown action `{0}`")]
    UnknownAction(String),
    /// The value does not deserialize into the handler's input type.
    #[error("invalid value: {0}")]
    InvalidValue(String),
    /// The value deserialized but failed validation.
    #[error("validation failed: {0}")]
    Validation(String),
    /// A guard refused the message.
    #[error("refused by a guard")]
    Guard,
    /// The message is larger than the room accepts.
    #[error("message too large ({0} bytes)")]
    TooLarge(usize),
}

/// Turns an action's raw `value` into the handler's input.
///
/// Implemented for [`Json<T>`](crate::Json) (any `DeserializeOwned`), [`Valid<T>`] (deserialized
/// then validated with `garde`), [`serde_json::Value`] and `()` (ignores the value). A missing
/// `value` reads as `null`.
pub trait ActionInput: Sized {
    /// Convert the raw value.
    fn from_value(value: Option<&RawValue>) -> Result<Self, Rejection>;
}

fn deserialize<T: DeserializeOwned>(value: Option<&RawValue>) -> Result<T, Rejection> {
    let text = value.map_or("null", RawValue::get);
    T::deserialize(TextObjectsOnly(text)).map_err(|e| Rejection::InvalidValue(e.to_string()))
}

/// A deserializer over an action's JSON text that refuses to read a struct from anything but
/// an object.
///
/// serde reads structs from sequences too (`[300, 300]` as `{x, y}`), which is not what an
/// action schema means: `{x: number, y: number}` must be an object. The text is read once,
/// without building a [`Value`] first.
struct TextObjectsOnly<'a>(&'a str);

impl<'a> TextObjectsOnly<'a> {
    fn read<T>(
        self,
        f: impl FnOnce(
            &mut serde_json::Deserializer<serde_json::de::StrRead<'a>>,
        ) -> Result<T, serde_json::Error>,
    ) -> Result<T, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(self.0);
        let out = f(&mut de)?;
        de.end()?;
        Ok(out)
    }
}

impl<'de> serde::Deserializer<'de> for TextObjectsOnly<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        self.read(|de| serde::Deserializer::deserialize_any(de, v))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Self::Error> {
        // RawValue text has no leading whitespace.
        if !self.0.starts_with('{') {
            // Parsed only to name what was found instead (or to report bad JSON).
            let value: Value = serde_json::from_str(self.0)?;
            return Err(serde::de::Error::invalid_type(
                unexpected(&value),
                &"an object",
            ));
        }
        self.read(|de| serde::Deserializer::deserialize_struct(de, name, fields, v))
    }

    fn deserialize_enum<V: serde::de::Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Self::Error> {
        self.read(|de| serde::Deserializer::deserialize_enum(de, name, variants, v))
    }

    fn deserialize_option<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        self.read(|de| serde::Deserializer::deserialize_option(de, v))
    }

    fn deserialize_newtype_struct<V: serde::de::Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, Self::Error> {
        self.read(|de| serde::Deserializer::deserialize_newtype_struct(de, name, v))
    }

    fn deserialize_unit<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        self.read(|de| serde::Deserializer::deserialize_unit(de, v))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

fn unexpected(v: &Value) -> serde::de::Unexpected<'_> {
    use serde::de::Unexpected;
    match v {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(_) => Unexpected::Other("a number"),
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

impl<T: DeserializeOwned> ActionInput for crate::http::Json<T> {
    fn from_value(value: Option<&RawValue>) -> Result<Self, Rejection> {
        deserialize(value).map(crate::http::Json)
    }
}

impl ActionInput for Value {
    fn from_value(value: Option<&RawValue>) -> Result<Self, Rejection> {
        deserialize(value)
    }
}

impl ActionInput for () {
    fn from_value(_: Option<&RawValue>) -> Result<Self, Rejection> {
        Ok(())
    }
}

/// A value that was deserialized and then validated with [`garde::Validate`].
///
/// ```
/// use partyroom_room::Valid;
/// #[derive(serde::Deserialize, garde::Validate)]
/// struct Rename { #[garde(length(min = 1, max = 40))] name: String }
/// // Used as a handler argument: `|room, cx, Valid(r): Valid<Rename>| { ... }`
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Valid<T>(pub T);

impl<T> ActionInput for Valid<T>
where
    T: DeserializeOwned + garde::Validate,
    T::Context: Default,
{
    fn from_value(value: Option<&RawValue>) -> Result<Self, Rejection> {
        let v: T = deserialize(value)?;
        v.validate()
            .map_err(|e| Rejection::Validation(e.to_string()))?;
        Ok(Valid(v))
    }
}

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

/// An async connect guard: runs before the room sees the connection, outside the room's task
/// (so it may call other services); it sees the request, not the room state.
pub type AsyncConnectGuard =
    Arc<dyn Fn(Arc<ConnectInfo>) -> BoxFuture<'static, Result<(), Refusal>> + Send + Sync>;

/// An async request guard: runs before the request reaches the room, outside its task.
pub type AsyncRequestGuard =
    Arc<dyn Fn(Arc<RoomRequest>) -> BoxFuture<'static, Result<(), RoomResponse>> + Send + Sync>;

pub(crate) struct Route<R> {
    pub(crate) method: Method,
    pub(crate) path: RoutePath,
    pub(crate) handler: RouteFn<R>,
    pub(crate) guards: Vec<RequestGuardFn<R>>,
}

/// What a connecting client presented: its upgrade request, as guards see it.
#[derive(Debug, Clone, Default)]
pub struct ConnectInfo {
    /// The private session id (`id` or `_pk`), if any.
    pub session_id: Option<String>,
    /// Query parameters of the connect URL.
    pub query: Vec<(String, String)>,
    /// Headers of the upgrade request.
    pub headers: http::HeaderMap,
}

impl ConnectInfo {
    /// A query parameter.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A header, if it is valid text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A connect guard's refusal. Before the WebSocket upgrade the client gets an HTTP response
/// with `status` and `{"error": reason}`; a refusal after the upgrade closes the socket with
/// code `4000 + status` (4401, 4403...) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 401, 403, 429...
    pub status: http::StatusCode,
    /// Human-readable reason.
    pub reason: String,
}

impl Refusal {
    /// 401 Unauthorized.
    pub fn unauthorized(reason: impl Into<String>) -> Self {
        Self {
            status: http::StatusCode::UNAUTHORIZED,
            reason: reason.into(),
        }
    }

    /// 403 Forbidden.
    pub fn forbidden(reason: impl Into<String>) -> Self {
        Self {
            status: http::StatusCode::FORBIDDEN,
            reason: reason.into(),
        }
    }

    /// The close frame used when the socket is already open.
    pub fn close_frame(&self) -> crate::CloseFrame {
        crate::CloseFrame {
            code: 4000 + self.status.as_u16(),
            reason: self.reason.clone(),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Move {
        x: i64,
        y: Option<i64>,
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Dir {
        Up,
        Down,
    }

    fn read<T: DeserializeOwned>(text: Option<&str>) -> Result<T, Rejection> {
        let raw = text.map(|t| RawValue::from_string(t.to_owned()).unwrap());
        deserialize(raw.as_deref())
    }

    #[test]
    fn values_are_read_from_their_text() {
        assert_eq!(
            read::<Move>(Some(r#"{"x":1,"y":2}"#)).unwrap(),
            Move { x: 1, y: Some(2) }
        );
        assert_eq!(
            read::<Option<Move>>(Some(r#"{"x":1}"#)).unwrap(),
            Some(Move { x: 1, y: None })
        );
        assert_eq!(read::<Option<Move>>(None).unwrap(), None);
        assert_eq!(read::<i64>(Some("42")).unwrap(), 42);
        assert_eq!(read::<String>(Some(r#""a\n""#)).unwrap(), "a\n");
        assert_eq!(read::<Dir>(Some(r#""up""#)).unwrap(), Dir::Up);
        assert_eq!(read::<Vec<Dir>>(Some(r#"["down"]"#)).unwrap(), [Dir::Down]);
        read::<()>(None).unwrap();
        assert_eq!(read::<Value>(Some("[1]")).unwrap(), serde_json::json!([1]));
    }

    #[test]
    fn a_struct_is_never_read_from_an_array_or_a_wrong_type() {
        for bad in ["[1,2]", "1", r#""x""#, "null", r#"{"x":"1"}"#, r#"{"y":1}"#] {
            let err = read::<Move>(Some(bad)).unwrap_err();
            assert!(matches!(err, Rejection::InvalidValue(_)), "{bad}: {err:?}");
        }
        let Rejection::InvalidValue(msg) = read::<Move>(Some("[1,2]")).unwrap_err() else {
            unreachable!()
        };
        assert!(msg.contains("expected an object"), "{msg}");
        assert!(read::<u8>(Some("300")).is_err());
    }
}
