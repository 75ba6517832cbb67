//! What handlers receive besides the room state: [`Cx`] for connections and actions,
//! [`HttpCx`] for HTTP requests.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::connection::request::{ConnId, ConnInfo};
use crate::mailbox::directory::{LookupError, Rooms};
use crate::mailbox::room_handle::RoomHandle;
use crate::pattern::Params;
use crate::protocol::http::{RoomRequest, RoomResponse, body_error};
use crate::session::ids::secure_token;

/// A message a handler asked to send; delivered after the state patch the handler produced.
#[derive(Debug, Clone)]
pub(crate) enum Outbound {
    /// To one connection.
    To(ConnId, Value),
    /// To every connection of the room.
    All(Value),
}

/// A session transfer requested by a handler, carried out by the room after it.
#[derive(Debug, Clone)]
pub(crate) struct TransferOut {
    pub(crate) token: String,
    pub(crate) target: TransferTarget,
    pub(crate) private_id: String,
    pub(crate) public_id: String,
}

/// Where a transferred session goes.
#[derive(Debug, Clone)]
pub(crate) enum TransferTarget {
    /// A room of this process (no cluster).
    Local(RoomHandle),
    /// A room that may be served by any node of the cluster: located when the transfer
    /// is carried out.
    Placed {
        /// Its party.
        party: String,
        /// Its id.
        room: String,
    },
}

/// What handlers asked the room to do besides changing state.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    pub(crate) outbound: Vec<Outbound>,
    pub(crate) auto_sync: Option<bool>,
    pub(crate) apply_sync: bool,
    pub(crate) transfers: Vec<TransferOut>,
}

impl Effects {
    /// Nothing but state changes was asked for.
    pub(crate) fn is_empty(&self) -> bool {
        self.outbound.is_empty()
            && self.auto_sync.is_none()
            && !self.apply_sync
            && self.transfers.is_empty()
    }
}

/// Room-wide things every handler can reach.
#[derive(Debug)]
pub(crate) struct RoomScope<'a> {
    pub(crate) room_id: &'a str,
    pub(crate) party: &'a str,
    pub(crate) params: &'a Params,
    pub(crate) rng: &'a mut fastrand::Rng,
    pub(crate) effects: &'a mut Effects,
    pub(crate) rooms: &'a Rooms,
    pub(crate) me: &'a RoomHandle,
    pub(crate) auto_sync: bool,
}

impl RoomScope<'_> {
    fn push(&mut self, out: Outbound) {
        self.effects.outbound.push(out);
    }
}

/// Why a session transfer could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// Only a connection's handler can transfer its session.
    #[error("no acting connection")]
    NoConnection,
    /// The room has no users collection, so there is no session to move.
    #[error("this room has no users")]
    NoUsers,
    /// The target room does not exist.
    #[error(transparent)]
    Target(#[from] LookupError),
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
            self.scope.push(Outbound::To(conn, v));
        }
    }

    /// Send a JSON message to every connection of the room, the sender included.
    pub fn broadcast(&mut self, message: &impl Serialize) {
        if let Ok(v) = serde_json::to_value(message) {
            self.scope.push(Outbound::All(v));
        }
    }

    /// Whether state changes are sent automatically (true unless switched off).
    pub fn auto_sync(&self) -> bool {
        self.scope.effects.auto_sync.unwrap_or(self.scope.auto_sync)
    }

    /// Switch automatic sync off (changes wait for [`Cx::apply_sync`]; joining clients wait
    /// for their first packet) or back on (what waited is sent at once).
    pub fn set_auto_sync(&mut self, on: bool) {
        self.scope.effects.auto_sync = Some(on);
    }

    /// Send every change made while automatic sync was off, and their first packet to the
    /// clients that joined meanwhile (spec 6.9).
    pub fn apply_sync(&mut self) {
        self.scope.effects.apply_sync = true;
    }

    /// All rooms of the process (for room-to-room requests from a spawned task).
    pub fn rooms(&self) -> &Rooms {
        self.scope.rooms
    }

    /// This room's handle: a spawned task uses [`RoomHandle::update`] to come back to the
    /// room's state.
    pub fn handle(&self) -> &RoomHandle {
        self.scope.me
    }

    /// Move the acting user's session to another room of the same party. Returns a
    /// single-use token; the client connects to the target room with `?transferToken=<token>`
    /// (or with the same session id) and finds the same public id and user there. The room
    /// must deliver the token to its client itself (for example with [`Cx::send`]).
    ///
    /// In a cluster the target room may be served by another node: the session is handed
    /// over to it there, and a client that presents the token before the handoff arrived
    /// waits for it (up to a couple of seconds).
    ///
    /// Only room code can create transfers: there is no public endpoint for it (quirk Q19
    /// fixed).
    pub fn transfer_session(&mut self, target_room: &str) -> Result<String, TransferError> {
        let party = self.scope.party.to_owned();
        self.transfer_session_to(&party, target_room)
    }

    /// Like [`Cx::transfer_session`], to a room of another party.
    pub fn transfer_session_to(
        &mut self,
        party: &str,
        target_room: &str,
    ) -> Result<String, TransferError> {
        let conn = self.conn.ok_or(TransferError::NoConnection)?;
        let rooms = self.scope.rooms;
        let target = if rooms.placement().is_some() {
            // In a cluster the target may live on another node: starting it here would
            // serve it without its lease.
            rooms.check(party, target_room)?;
            TransferTarget::Placed {
                party: party.to_owned(),
                room: target_room.to_owned(),
            }
        } else {
            TransferTarget::Local(rooms.get(party, target_room)?)
        };
        let token = secure_token();
        self.scope.effects.transfers.push(TransferOut {
            token: token.clone(),
            target,
            private_id: conn.private_id.clone(),
            public_id: conn.public_id.clone(),
        });
        Ok(token)
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
            self.scope.push(Outbound::All(v));
        }
    }

    /// All rooms of the process.
    pub fn rooms(&self) -> &Rooms {
        self.scope.rooms
    }

    /// This room's handle.
    pub fn handle(&self) -> &RoomHandle {
        self.scope.me
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
