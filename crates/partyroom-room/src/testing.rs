//! An in-process test harness: rooms with no sockets, clients that send actions and read
//! packets, and tokio's paused clock for throttles and expiry.
//!
//! ```
//! use partyroom_room::testing::TestRoom;
//! use partyroom_room::{Handlers, Json, Room, RoomConfig};
//! use partyroom_state::State;
//!
//! #[derive(State, Default, Clone)]
//! struct Counter { count: i64 }
//!
//! impl Room for Counter {
//!     fn config() -> RoomConfig { RoomConfig::new("counter") }
//!     fn handlers(h: &mut Handlers<Self>) {
//!         h.action("increment", |room: &mut Self, _cx, ()| room.count += 1);
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let room = TestRoom::new::<Counter>("counter");
//! let mut client = room.connect(None).await;
//! client.send("increment", serde_json::Value::Null).await;
//! room.settle().await;
//! client.drain();
//! assert_eq!(client.mirror().state()["count"], 1);
//! # }
//! ```

use bytes::Bytes;
use http::{HeaderMap, Method};
use partyroom_state::{ClientMirror, Packet};
use serde_json::Value;

use std::sync::Arc;

use crate::connection::refusal::ConnectError;
use crate::connection::request::{ConnId, ConnectRequest, ConnectionChannels};
use crate::mailbox::directory::Rooms;
use crate::mailbox::room_handle::RoomHandle;
use crate::protocol::close::CloseFrame;
use crate::protocol::http::{RoomRequest, RoomResponse};
use crate::room::Room;
use crate::storage::{RoomKey, Storage};

/// A live room instance driven in-process.
#[derive(Debug, Clone)]
pub struct TestRoom {
    rooms: Rooms,
    party: String,
    id: String,
    handle: RoomHandle,
}

impl TestRoom {
    /// Start room type `R` (in party `main`) with id `room_id`, random source seeded with 0.
    pub fn new<R: Room>(room_id: &str) -> Self {
        let rooms = Rooms::builder()
            .room::<R>("main")
            .expect("valid room pattern")
            .seed(0)
            .build();
        Self::from_rooms(rooms, "main", room_id)
    }

    /// Drive a room of an existing registry.
    pub fn from_rooms(rooms: Rooms, party: &str, room_id: &str) -> Self {
        let handle = rooms
            .get(party, room_id)
            .expect("room id matches a registered room type");
        Self {
            rooms,
            party: party.to_owned(),
            id: room_id.to_owned(),
            handle,
        }
    }

    /// Start room type `R` with the given storage (to inspect it, or to restore from it).
    pub fn with_storage<R: Room>(room_id: &str, storage: Arc<dyn Storage>) -> Self {
        let rooms = Rooms::builder()
            .room::<R>("main")
            .expect("valid room pattern")
            .seed(0)
            .storage(storage)
            .build();
        Self::from_rooms(rooms, "main", room_id)
    }

    /// The current instance (a new one if the previous one unloaded itself).
    fn live(&self) -> RoomHandle {
        if self.handle.is_closed() {
            self.rooms
                .get(&self.party, &self.id)
                .expect("room id matches a registered room type")
        } else {
            self.handle.clone()
        }
    }

    /// Whether the room instance is loaded (false after it unloaded itself when idle).
    pub fn is_loaded(&self) -> bool {
        self.rooms.live_rooms() > 0 && !self.handle.is_closed()
    }

    /// The keys this room has in storage.
    pub async fn stored(&self) -> Vec<(String, Value)> {
        self.rooms
            .storage()
            .list(&RoomKey::new(self.party.clone(), self.id.clone()), "")
            .await
            .expect("storage readable")
    }

    /// The registry (to reach other rooms).
    pub fn rooms(&self) -> &Rooms {
        &self.rooms
    }

    /// The room's handle (of the instance this harness started).
    pub fn handle(&self) -> &RoomHandle {
        &self.handle
    }

    /// Connect a client with a session id (`?id=`), or a fresh session with `None`.
    pub async fn connect(&self, session: Option<&str>) -> TestClient {
        self.connect_with(session, &[])
            .await
            .expect("connection accepted")
    }

    /// Connect with query parameters; `Err` when the room refuses.
    pub async fn connect_with(
        &self,
        session: Option<&str>,
        query: &[(&str, &str)],
    ) -> Result<TestClient, ConnectError> {
        let query = query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.connect_full(session, query, HeaderMap::new()).await
    }

    /// Connect with query parameters and upgrade-request headers, running the connect guards
    /// first as the server does before the upgrade.
    pub async fn connect_with_headers(
        &self,
        session: Option<&str>,
        query: &[(&str, &str)],
        headers: HeaderMap,
    ) -> Result<TestClient, ConnectError> {
        let query = query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.connect_full(session, query, headers).await
    }

    async fn connect_full(
        &self,
        session: Option<&str>,
        query: Vec<(String, String)>,
        headers: HeaderMap,
    ) -> Result<TestClient, ConnectError> {
        let handle = self.live();
        let (mut req, channels) = ConnectRequest::new(
            session.map(str::to_owned),
            query,
            headers,
            handle.config().outgoing_queue_len(),
        );
        handle.admit(&mut req).await?;
        let conn = handle.connect(req).await?;
        Ok(TestClient {
            conn,
            handle,
            channels,
            mirror: ClientMirror::new(),
            received: Vec::new(),
        })
    }

    /// Send an HTTP request to the room.
    pub async fn request(&self, request: RoomRequest) -> RoomResponse {
        self.live().request(request).await.expect("room alive")
    }

    /// Wait until the room has processed everything sent to it so far.
    pub async fn settle(&self) {
        if self.handle.is_closed() {
            return;
        }
        let _ = self
            .handle
            .request(RoomRequest::new(Method::OPTIONS, "/"))
            .await;
    }

    /// Save every room and stop it (as a graceful server shutdown does).
    pub async fn shutdown(&self) {
        self.rooms.shutdown().await;
    }
}

/// One in-process client.
#[derive(Debug)]
pub struct TestClient {
    conn: ConnId,
    handle: RoomHandle,
    channels: ConnectionChannels,
    mirror: ClientMirror,
    received: Vec<Value>,
}

impl TestClient {
    /// The connection id.
    pub fn id(&self) -> ConnId {
        self.conn
    }

    /// Send `{"action": action, "value": value}`.
    pub async fn send(&self, action: &str, value: Value) {
        let text = serde_json::json!({"action": action, "value": value}).to_string();
        self.send_raw(text).await;
    }

    /// Send any text frame.
    pub async fn send_raw(&self, text: impl Into<String>) {
        let _ = self
            .handle
            .message(self.conn, Bytes::from(text.into()))
            .await;
    }

    /// Take every frame received so far (parsed), applying sync packets to the mirror.
    pub fn drain(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        while let Ok(frame) = self.channels.frames.try_recv() {
            out.push(self.record(&frame));
        }
        out
    }

    /// Wait for the next frame.
    pub async fn recv(&mut self) -> Option<Value> {
        let frame = self.channels.frames.recv().await?;
        Some(self.record(&frame))
    }

    fn record(&mut self, frame: &Bytes) -> Value {
        let text = std::str::from_utf8(frame).expect("frames are UTF-8");
        if self.mirror.apply_packet(text) == Packet::Invalid {
            panic!("server sent a frame that is not a JSON object: {text}");
        }
        let value: Value = serde_json::from_str(text).expect("frames are JSON");
        self.received.push(value.clone());
        value
    }

    /// Everything received so far, in order.
    pub fn received(&self) -> &[Value] {
        &self.received
    }

    /// The client-side state built from the sync packets received (as the official client
    /// builds it).
    pub fn mirror(&self) -> &ClientMirror {
        &self.mirror
    }

    /// The public id from the first packet.
    pub fn pid(&self) -> Option<&str> {
        self.mirror.pid()
    }

    /// Whether the room closed this connection, and why.
    pub fn closed(&mut self) -> Option<CloseFrame> {
        self.channels.close.try_recv().ok()
    }

    /// Close the connection (as a socket close would).
    pub async fn close(self) {
        self.handle.disconnect(self.conn).await;
    }
}

/// The `value` of every sync packet among received frames, in order (other packets left out).
pub fn sync_values(frames: &[Value]) -> Vec<Value> {
    frames
        .iter()
        .filter(|f| f["type"] == "sync")
        .map(|f| f["value"].clone())
        .collect()
}
