//! What handlers receive besides the room state: [`Cx`] for connections and actions,
//! [`HttpCx`] for HTTP requests.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::conn::{ConnId, ConnInfo};
use crate::http::{RoomRequest, RoomResponse, body_error};
use crate::pattern::Params;

/// A message a handler asked to send; delivered after the state patch the handler produced.
#[derive(Debug, Clone)]
pub(crate) enum Outbound {
    /// To one connection.
    To(ConnId, Value),
    /// To every connection of the room.
    All(Value),
}

/// Room-wide things every handler can reach.
#[derive(Debug)]
pub(crate) struct RoomScope<'a> {
    pub(crate) room_id: &'a str,
    pub(crate) params: &'a Params,
    pub(crate) rng: &'a mut fastrand::Rng,
    pub(crate) outbox: &'a mut Vec<Outbound>,
}

/// The context of a connection-related handler: actions, `on_join`, `on_leave`.
///
/// Handlers find their user through [`Cx::user_id`] (the public id, the key of the users
/// collection) rather than through a second `&mut` into the state.
#[derive(Debug)]
pub struct Cx<'a> {
    pub(crate) scope: RoomScope<'a>,
    pub(crate) conn: Option<&'a ConnInfo>,
}

impl Cx<'_> {
    /// The public id of the acting user (key of the `#[state(users)]` collection).
    pub fn user_id(&self) -> Option<&str> {
        self.conn.map(|c| c.public_id.as_str())
    }

    /// The acting connection.
    pub fn conn(&self) -> Option<&ConnInfo> {
        self.conn
    }

    /// A query parameter of the acting connection's URL (`?name=Ann`).
    pub fn query(&self, name: &str) -> Option<&str> {
        self.conn.and_then(|c| c.query(name))
    }

    /// The room id (`game-1`).
    pub fn room_id(&self) -> &str {
        self.scope.room_id
    }

    /// A parameter captured by the room pattern (`{id}` in `game-{id}`).
    pub fn param(&self, name: &str) -> Option<&str> {
        param(self.scope.params, name)
    }

    /// The room's random source (seedable in tests).
    pub fn rng(&mut self) -> &mut fastrand::Rng {
        self.scope.rng
    }

    /// Send a JSON message to the acting connection only (no envelope is added).
    pub fn send(&mut self, message: &impl Serialize) {
        if let Some(conn) = self.conn {
            let id = conn.id;
            self.send_to(id, message);
        }
    }

    /// Send a JSON message to one connection.
    pub fn send_to(&mut self, conn: ConnId, message: &impl Serialize) {
        if let Ok(v) = serde_json::to_value(message) {
            self.scope.outbox.push(Outbound::To(conn, v));
        }
    }

    /// Send a JSON message to every connection of the room, the sender included.
    pub fn broadcast(&mut self, message: &impl Serialize) {
        if let Ok(v) = serde_json::to_value(message) {
            self.scope.outbox.push(Outbound::All(v));
        }
    }
}

/// The context of an HTTP request handler.
#[derive(Debug)]
pub struct HttpCx<'a> {
    pub(crate) scope: RoomScope<'a>,
    pub(crate) request: &'a RoomRequest,
    pub(crate) route_params: Vec<(String, String)>,
}

impl HttpCx<'_> {
    /// The request.
    pub fn request(&self) -> &RoomRequest {
        self.request
    }

    /// A route parameter (`:id` in `/users/:id`), percent-decoded.
    pub fn path_param(&self, name: &str) -> Option<&str> {
        self.route_params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The room id.
    pub fn room_id(&self) -> &str {
        self.scope.room_id
    }

    /// A parameter captured by the room pattern.
    pub fn param(&self, name: &str) -> Option<&str> {
        param(self.scope.params, name)
    }

    /// The room's random source.
    pub fn rng(&mut self) -> &mut fastrand::Rng {
        self.scope.rng
    }

    /// Send a JSON message to every connection of the room.
    pub fn broadcast(&mut self, message: &impl Serialize) {
        if let Ok(v) = serde_json::to_value(message) {
            self.scope.outbox.push(Outbound::All(v));
        }
    }

    /// The body as JSON of type `T`, or the response to return: `400 {"error":"Failed to parse
    /// request body"}` when it is not JSON, `400 {"error":"Invalid request body","details":...}`
    /// when it does not fit `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, RoomResponse> {
        body_error(self.request)
    }

    /// Like [`HttpCx::json`], then validated with `garde`.
    pub fn valid_json<T>(&self) -> Result<T, RoomResponse>
    where
        T: DeserializeOwned + garde::Validate,
        T::Context: Default,
    {
        let value: T = self.json()?;
        value.validate().map_err(|e| {
            RoomResponse::bad_request(
                "Invalid request body",
                serde_json::json!({"details": {"issues": e.iter().map(|(path, err)| serde_json::json!({"path": path.to_string(), "message": err.to_string()})).collect::<Vec<_>>(), "name": "ValidationError"}}),
            )
        })?;
        Ok(value)
    }
}

fn param<'p>(params: &'p Params, name: &str) -> Option<&'p str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}
