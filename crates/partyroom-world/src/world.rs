//! The world room: the registry of logical rooms and shards of one world, and shard
//! assignment (spec section 2, bugs of 7.2 and weaknesses of 7.3 fixed).
//!
//! It is an ordinary partyroom room (party `world`, pattern `world-{worldId}`): its state is
//! synced to admin WebSockets and saved like any room's; its endpoints are HTTP routes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, StatusCode};
use partyroom_room::{
    ConnId, ConnectInfo, Handlers, HttpCx, Intercept, Refusal, Room, RoomConfig, RoomResponse,
};
use partyroom_state::{State, StateMap, Tracked};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{self, AuthError};
use crate::config::WorldConfig;
use crate::model::{RoomEntry, ShardId, ShardInfo, ShardStatus, Strategy, valid_room_name};

/// One world: its rooms, its shards, and the round-robin counters.
#[derive(State, Debug, Clone, Default)]
pub struct World {
    /// Logical rooms by name.
    pub rooms: StateMap<RoomEntry>,
    /// Shards by shard id, in creation order.
    pub shards: StateMap<ShardInfo>,
    /// Round-robin position per room (stored, never sent to clients).
    #[state(sync = false, rename = "rrCounters")]
    pub rr_counters: StateMap<u64>,
    /// The world id (the full room id, `world-default`).
    #[state(skip)]
    world_id: String,
    /// Secrets and limits, captured when the instance started.
    #[state(skip)]
    config: Arc<WorldConfig>,
    /// Admin WebSocket connections and the expiry of their token (seconds; `u64::MAX` for
    /// tokens without `exp`). Entries are pruned once expired.
    #[state(skip)]
    admins: HashMap<ConnId, u64>,
    /// When the last cleanup pass ran (ms), to run at most one per second from requests.
    #[state(skip)]
    last_cleanup: u64,
}

/// A failed world operation, as the HTTP answer it becomes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum WorldError {
    /// The request is malformed (400).
    #[error("{error}")]
    Invalid {
        /// The message.
        error: String,
        /// Extra top-level fields of the answer (`details`, ...).
        extra: Value,
    },
    /// The logical room does not exist (404).
    #[error("Room {0} does not exist")]
    RoomNotFound(String),
    /// The shard does not exist (404).
    #[error("Shard {0} not found")]
    ShardNotFound(String),
    /// The room has no shard and may not create one (503).
    #[error("No shards available for room {0}")]
    NoShards(String),
    /// Every active shard of the room is full (503).
    #[error("No shard capacity available for room {0}")]
    NoCapacity(String),
    /// No shard of the room is active (503).
    #[error("No active shards available for room {0}")]
    NoActiveShards(String),
    /// The world holds as many rooms as it may create by itself (503).
    #[error("World room limit reached")]
    RoomLimit,
    /// The world holds as many shards as it may (503).
    #[error("World shard limit reached")]
    ShardLimit,
    /// The room holds as many shards as its `maxShards` (503).
    #[error("Room {room} has reached its maximum of {max} shards")]
    RoomShardLimit {
        /// The room.
        room: String,
        /// Its `maxShards`.
        max: u32,
    },
}

impl WorldError {
    fn invalid(error: impl Into<String>) -> Self {
        WorldError::Invalid {
            error: error.into(),
            extra: json!({}),
        }
    }

    fn invalid_body(error: &str, e: &serde_json::Error) -> Self {
        WorldError::Invalid {
            error: error.to_owned(),
            extra: json!({"details": {"issues": [{"message": e.to_string()}], "name": "ValidationError"}}),
        }
    }

    /// The HTTP status. Capacity problems are `503 Service Unavailable` with `Retry-After`
    /// (the original answered 404, as if the room did not exist).
    pub fn status(&self) -> StatusCode {
        match self {
            WorldError::Invalid { .. } => StatusCode::BAD_REQUEST,
            WorldError::RoomNotFound(_) | WorldError::ShardNotFound(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The answer: `{"error": message, ...extra}`.
    pub fn response(&self) -> RoomResponse {
        let mut body = json!({"error": self.to_string()});
        if let (
            Value::Object(b),
            WorldError::Invalid {
                extra: Value::Object(e),
                ..
            },
        ) = (&mut body, self)
        {
            b.extend(e.clone());
        }
        let r = RoomResponse::json(self.status(), &body);
        if self.status() == StatusCode::SERVICE_UNAVAILABLE {
            r.header(http::header::RETRY_AFTER, HeaderValue::from_static("5"))
        } else {
            r
        }
    }
}

/// Body of `POST /register-room`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterRoom {
    /// Room name (`[A-Za-z0-9_-]{1,64}`).
    pub name: String,
    /// Strategy.
    pub balancing_strategy: Strategy,
    /// Public flag (stored only).
    pub public: bool,
    /// Capacity of new shards (> 0).
    pub max_players_per_shard: u32,
    /// Shards to keep at least.
    pub min_shards: u32,
    /// Shard limit (> 0), none for no limit.
    #[serde(default)]
    pub max_shards: Option<u32>,
}

/// Body of `POST /update-shard` and `POST /register-shard`.
#[derive(Debug, Clone, Deserialize)]
pub struct ShardStats {
    /// The shard.
    #[serde(rename = "shardId")]
    pub shard_id: String,
    /// Its world, checked against this world when given.
    #[serde(rename = "worldId", default)]
    pub world_id: Option<String>,
    /// Client sockets on the shard.
    pub connections: u32,
    /// New status.
    #[serde(default)]
    pub status: Option<ShardStatus>,
}

/// Template of shards created by `scale-room`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardTemplate {
    /// URL template: the first `{shardId}` and the first `{roomId}` are replaced.
    pub url_template: String,
    /// Capacity (> 0).
    pub max_connections: u32,
}

/// Body of `POST /scale-room`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleRoom {
    /// The room.
    pub room_id: String,
    /// Shards wanted (> 0).
    pub target_shard_count: u32,
    /// How to make new shards.
    #[serde(default)]
    pub shard_template: Option<ShardTemplate>,
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl World {
    /// A world with an explicit configuration (for tests and tools; rooms started by the
    /// runtime use [`WorldConfig::install`]).
    pub fn with_config(world_id: &str, config: Arc<WorldConfig>) -> Self {
        Self {
            world_id: world_id.to_owned(),
            config,
            ..Self::default()
        }
    }

    /// The room options of a world type serving room ids that match `pattern`
    /// (`world-{worldId}` for every world, or one literal id such as `world-eu`).
    pub fn room_config(pattern: &str) -> RoomConfig {
        RoomConfig::new(pattern)
            .throttle_sync(Duration::from_millis(500))
            .throttle_storage(Duration::from_secs(2))
            .sessions_never_expire()
            .never_unload()
    }

    /// The world id.
    pub fn world_id(&self) -> &str {
        &self.world_id
    }

    /// The configuration in use.
    pub fn config(&self) -> &Arc<WorldConfig> {
        &self.config
    }

    /// Remove shards that sent nothing for the heartbeat timeout (any status), then the rooms
    /// the world created by itself that have no shard left; returns the removed shard ids.
    /// Also forgets admin sockets whose token expired.
    pub fn cleanup(&mut self, now: u64) -> Vec<String> {
        self.last_cleanup = now;
        let timeout = self.config.heartbeat_timeout.as_millis() as u64;
        let stale: Vec<String> = self
            .shards
            .iter()
            .filter(|(_, s)| now.saturating_sub(s.last_heartbeat) > timeout)
            .map(|(id, _)| id.to_owned())
            .collect();
        if !stale.is_empty() {
            self.shards.retain(|id, _| !stale.iter().any(|s| s == id));
            for id in &stale {
                tracing::info!(world = %self.world_id, shard = %id, "removed inactive shard");
            }
        }
        // Rooms made by `/connect` (or re-registration) live as long as they have shards, so
        // the room limit is not used up for good by names nobody plays in.
        let empty: Vec<String> = self
            .rooms
            .iter()
            .filter(|(name, r)| r.auto_created && self.shard_count(name) == 0)
            .map(|(name, _)| name.to_owned())
            .collect();
        if !empty.is_empty() {
            self.rooms
                .retain(|name, _| !empty.iter().any(|e| e == name));
            self.rr_counters
                .retain(|name, _| !empty.iter().any(|e| e == name));
        }
        let secs = now / 1000;
        self.admins.retain(|_, exp| *exp >= secs);
        stale
    }

    /// [`World::cleanup`] at most once per second (requests call this).
    pub fn maybe_cleanup(&mut self, now: u64) {
        if now.saturating_sub(self.last_cleanup) >= 1000 || now < self.last_cleanup {
            self.cleanup(now);
        }
    }

    /// Remove a shard keeping the creation order of the others (`StateMap::remove` moves
    /// the last entry into the hole; the order decides round-robin and ties).
    fn remove_shard(&mut self, id: &str) {
        self.shards.retain(|k, _| k != id);
    }

    fn shard_count(&self, room: &str) -> usize {
        self.shards.values().filter(|s| s.room_id == room).count()
    }

    /// Register a room, or update an existing one; then top its shards up to `minShards`.
    pub fn register_room(
        &mut self,
        req: RegisterRoom,
        now: u64,
        rng: &mut fastrand::Rng,
    ) -> Result<(), WorldError> {
        if !valid_room_name(&req.name) {
            return Err(WorldError::invalid(
                "Invalid room name: use 1 to 64 of A-Z a-z 0-9 _ -",
            ));
        }
        if req.max_players_per_shard == 0 {
            return Err(WorldError::invalid(
                "Invalid room configuration: maxPlayersPerShard must be positive",
            ));
        }
        if req.max_shards == Some(0) {
            return Err(WorldError::invalid(
                "Invalid room configuration: maxShards must be positive",
            ));
        }
        if req.max_shards.is_some_and(|max| req.min_shards > max) {
            return Err(WorldError::invalid(
                "minShards cannot be greater than maxShards",
            ));
        }
        let missing = (req.min_shards as usize).saturating_sub(self.shard_count(&req.name));
        if self.shards.len() + missing > self.config.max_shards {
            return Err(WorldError::ShardLimit);
        }
        let entry = self.rooms.get_or_insert_with(&req.name, RoomEntry::default);
        entry.name = req.name.clone();
        entry.balancing_strategy = req.balancing_strategy;
        entry.public = req.public;
        entry.max_players_per_shard = req.max_players_per_shard;
        entry.min_shards = req.min_shards;
        entry.max_shards = req.max_shards;
        entry.auto_created = false;
        for _ in 0..missing {
            self.create_shard(&req.name, None, now, rng)?;
        }
        Ok(())
    }

    /// A room created by the world itself (`/connect`, re-registration), if the world may.
    fn auto_create_room(
        &mut self,
        name: &str,
        now: u64,
        rng: &mut fastrand::Rng,
        with_shard: bool,
    ) -> Result<(), WorldError> {
        if self.rooms.len() >= self.config.max_auto_rooms {
            return Err(WorldError::RoomLimit);
        }
        if with_shard && self.shards.len() >= self.config.max_shards {
            return Err(WorldError::ShardLimit);
        }
        self.rooms.insert(
            name,
            RoomEntry {
                name: name.to_owned(),
                max_players_per_shard: self.config.default_max_connections,
                max_shards: self.config.auto_room_max_shards,
                auto_created: true,
                ..RoomEntry::default()
            },
        );
        if with_shard {
            self.create_shard(name, None, now, rng)?;
        }
        Ok(())
    }

    /// Create a shard of an existing room; returns its id.
    pub fn create_shard(
        &mut self,
        room: &str,
        template: Option<&ShardTemplate>,
        now: u64,
        rng: &mut fastrand::Rng,
    ) -> Result<String, WorldError> {
        let entry = self
            .rooms
            .get(room)
            .ok_or_else(|| WorldError::RoomNotFound(room.to_owned()))?;
        if self.shards.len() >= self.config.max_shards {
            return Err(WorldError::ShardLimit);
        }
        let max_connections = template.map_or(entry.max_players_per_shard, |t| t.max_connections);
        // `<room>:<world>:<ms>-<random>`; the random part is long enough and checked, so two
        // shards made in the same millisecond never collide (bug 7.2.7).
        let id = loop {
            let id = format!("{room}:{}:{now}-{}", self.world_id, base36(rng.u64(..)));
            if !self.shards.contains_key(&id) {
                break id;
            }
        };
        let url = match template {
            Some(t) => t
                .url_template
                .replacen("{shardId}", &id, 1)
                .replacen("{roomId}", room, 1),
            None => id.clone(),
        };
        self.shards.insert(
            id.clone(),
            ShardInfo {
                room_id: room.to_owned(),
                world_id: self.world_id.clone(),
                url,
                current_connections: 0,
                max_connections,
                status: ShardStatus::Active,
                last_heartbeat: now,
            },
        );
        Ok(id)
    }

    /// Stats from a shard (or an admin): connections, status, heartbeat. A draining shard
    /// with no connection left is removed.
    pub fn update_shard(&mut self, req: &ShardStats, now: u64) -> Result<(), WorldError> {
        self.check_shard_world(req)?;
        let shard = self
            .shards
            .get_mut(&req.shard_id)
            .ok_or_else(|| WorldError::ShardNotFound(req.shard_id.clone()))?;
        shard.current_connections = req.connections;
        if let Some(status) = req.status {
            shard.status = status;
        }
        shard.last_heartbeat = now;
        if shard.status == ShardStatus::Draining && shard.current_connections == 0 {
            self.remove_shard(&req.shard_id);
        }
        Ok(())
    }

    fn check_shard_world(&self, req: &ShardStats) -> Result<(), WorldError> {
        match req.world_id.as_deref() {
            Some(w) if !w.is_empty() && w != self.world_id => Err(WorldError::invalid(format!(
                "Shard {} belongs to world {w}, not {}",
                req.shard_id, self.world_id
            ))),
            _ => Ok(()),
        }
    }

    /// A shard the world does not know (removed after missed heartbeats, or lost with the
    /// world's memory) registers again, with its live connection count. The shard id must
    /// name this world and a valid room; the room is created if the world may create rooms;
    /// the room's `maxShards` and the world's shard limit apply. Returns whether the shard
    /// was added (false: it existed and was updated).
    pub fn register_shard(
        &mut self,
        req: &ShardStats,
        now: u64,
        rng: &mut fastrand::Rng,
    ) -> Result<bool, WorldError> {
        self.check_shard_world(req)?;
        if self.shards.contains_key(&req.shard_id) {
            let update = ShardStats {
                status: None,
                ..req.clone()
            };
            self.update_shard(&update, now)?;
            return Ok(false);
        }
        let parsed = ShardId::parse(&req.shard_id)
            .map_err(|e| WorldError::invalid(format!("Shard {}: {e}", req.shard_id)))?;
        if parsed.world.as_deref() != Some(self.world_id.as_str()) {
            return Err(WorldError::invalid(format!(
                "Shard {} is not a shard id of world {}",
                req.shard_id, self.world_id
            )));
        }
        if !self.rooms.contains_key(&parsed.room) {
            self.auto_create_room(&parsed.room, now, rng, false)?;
        }
        let entry = self.rooms.get(&parsed.room).expect("room ensured above");
        if let Some(max) = entry.max_shards
            && self.shard_count(&parsed.room) >= max as usize
        {
            return Err(WorldError::RoomShardLimit {
                room: parsed.room,
                max,
            });
        }
        if self.shards.len() >= self.config.max_shards {
            return Err(WorldError::ShardLimit);
        }
        let max_connections = entry.max_players_per_shard;
        self.shards.insert(
            req.shard_id.clone(),
            ShardInfo {
                room_id: parsed.room,
                world_id: self.world_id.clone(),
                url: req.shard_id.clone(),
                current_connections: req.connections,
                max_connections,
                status: ShardStatus::Active,
                last_heartbeat: now,
            },
        );
        tracing::info!(world = %self.world_id, shard = %req.shard_id, "shard registered again");
        Ok(true)
    }

    /// Scale a room to `target` shards (spec 2.4.3): scaling down drains the emptiest shards
    /// (draining ones first) and removes the empty ones at once; scaling up creates shards.
    pub fn scale_room(
        &mut self,
        req: &ScaleRoom,
        now: u64,
        rng: &mut fastrand::Rng,
    ) -> Result<(), WorldError> {
        if req.target_shard_count == 0 {
            return Err(WorldError::invalid(
                "Invalid scale room request: targetShardCount must be positive",
            ));
        }
        if req
            .shard_template
            .as_ref()
            .is_some_and(|t| t.max_connections == 0)
        {
            return Err(WorldError::invalid(
                "Invalid scale room request: maxConnections must be positive",
            ));
        }
        let entry = self
            .rooms
            .get(&req.room_id)
            .ok_or_else(|| WorldError::RoomNotFound(req.room_id.clone()))?;
        let current = self.shard_count(&req.room_id);
        let target = req.target_shard_count as usize;
        if let Some(max) = entry.max_shards
            && req.target_shard_count > max
        {
            return Err(WorldError::Invalid {
                error: format!("Cannot scale beyond maximum allowed shards ({max})"),
                extra: json!({"roomId": req.room_id, "currentShardCount": current}),
            });
        }
        if target < current {
            let mut candidates: Vec<(String, bool, u32)> = self
                .shards
                .iter()
                .filter(|(_, s)| s.room_id == req.room_id)
                .map(|(id, s)| {
                    (
                        id.to_owned(),
                        s.status != ShardStatus::Draining,
                        s.current_connections,
                    )
                })
                .collect();
            // Draining first, then the emptiest; stable, so ties keep creation order.
            candidates.sort_by_key(|(_, not_draining, conns)| (*not_draining, *conns));
            for (id, _, conns) in candidates.into_iter().take(current - target) {
                if conns == 0 {
                    self.remove_shard(&id);
                } else if let Some(s) = self.shards.get_mut(&id) {
                    s.status = ShardStatus::Draining;
                }
            }
        } else if target > current {
            if self.shards.len() + (target - current) > self.config.max_shards {
                return Err(WorldError::ShardLimit);
            }
            for _ in current..target {
                self.create_shard(&req.room_id, req.shard_template.as_ref(), now, rng)?;
            }
        }
        Ok(())
    }

    /// Pick a shard for a client of `room` (spec 2.5, round-robin bug fixed); returns the
    /// shard id. With `auto_create`, a missing room is created (within the world's room
    /// limit) and a shard is added when every active shard is full (within `maxShards`).
    pub fn connect(
        &mut self,
        room: &str,
        auto_create: bool,
        now: u64,
        rng: &mut fastrand::Rng,
    ) -> Result<String, WorldError> {
        if !valid_room_name(room) {
            return Err(WorldError::invalid(
                "Invalid roomId: use 1 to 64 of A-Z a-z 0-9 _ -",
            ));
        }
        if !self.rooms.contains_key(room) {
            if !auto_create {
                return Err(WorldError::RoomNotFound(room.to_owned()));
            }
            self.auto_create_room(room, now, rng, true)?;
        }
        if self.shard_count(room) == 0 {
            if !auto_create {
                return Err(WorldError::NoShards(room.to_owned()));
            }
            return self.create_shard(room, None, now, rng);
        }
        let available: Vec<(&str, u32)> = self
            .shards
            .iter()
            .filter(|(_, s)| s.room_id == room && s.available())
            .map(|(id, s)| (id, s.current_connections))
            .collect();
        if available.is_empty() {
            let entry = self.rooms.get(room).expect("room ensured above");
            let under_max = entry
                .max_shards
                .is_none_or(|max| self.shard_count(room) < max as usize);
            if auto_create && under_max {
                return self.create_shard(room, None, now, rng);
            }
            let any_active = self
                .shards
                .values()
                .any(|s| s.room_id == room && s.status == ShardStatus::Active);
            return Err(if any_active {
                WorldError::NoCapacity(room.to_owned())
            } else {
                WorldError::NoActiveShards(room.to_owned())
            });
        }
        let strategy = self
            .rooms
            .get(room)
            .map_or(Strategy::RoundRobin, |r| r.balancing_strategy);
        let n = available.len();
        let index = match strategy {
            Strategy::LeastConnections => {
                let mut best = 0;
                for (i, (_, conns)) in available.iter().enumerate() {
                    if *conns < available[best].1 {
                        best = i;
                    }
                }
                best
            }
            Strategy::Random => rng.usize(..n),
            Strategy::RoundRobin => {
                // Reduced modulo the current number of available shards, so a list that
                // shrank can never be indexed out of range (bug 7.2.1).
                let counter = self.rr_counters.get(room).copied().unwrap_or(0);
                (counter % n as u64) as usize
            }
        };
        let chosen = available[index].0.to_owned();
        if strategy == Strategy::RoundRobin {
            self.rr_counters.insert(room, ((index + 1) % n) as u64);
        }
        Ok(chosen)
    }

    /// The admin decision for a request.
    fn admin(
        &self,
        headers: &http::HeaderMap,
        query: &[(String, String)],
    ) -> Result<u64, AuthError> {
        auth::authorize_admin(&self.config, &self.world_id, headers, query)
            .map(|claims| claims.exp.unwrap_or(u64::MAX))
    }

    fn json_of(&self, shards: impl Iterator<Item = (String, Value)>) -> Value {
        Value::Object(shards.collect())
    }

    fn http_connect(&mut self, cx: &mut HttpCx<'_>) -> RoomResponse {
        let body = &cx.request().body;
        if body.iter().all(u8::is_ascii_whitespace) {
            return WorldError::invalid("Request body is empty").response();
        }
        let Ok(value) = serde_json::from_slice::<Value>(body) else {
            return WorldError::invalid("Invalid JSON in request body").response();
        };
        let room = match value.get("roomId") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            // A number or other truthy non-string is not a room name.
            Some(v) if truthy(v) => {
                return WorldError::invalid("Invalid roomId: use 1 to 64 of A-Z a-z 0-9 _ -")
                    .response();
            }
            _ => return WorldError::invalid("roomId parameter is required").response(),
        };
        let auto_create = value.get("autoCreate").is_none_or(truthy);
        let now = now_ms();
        self.maybe_cleanup(now);
        let assigned = self.connect(&room, auto_create, now, cx.rng());
        metrics::counter!(
            WORLD_ASSIGNMENTS,
            "result" => if assigned.is_ok() { "assigned" } else { "refused" }
        )
        .increment(1);
        metrics::gauge!(WORLD_SHARDS, "world" => self.world_id.clone())
            .set(self.shards.len() as f64);
        match assigned {
            Ok(shard_id) => {
                let url = self
                    .shards
                    .get(&shard_id)
                    .map_or_else(|| shard_id.clone(), |s| s.url.clone());
                RoomResponse::success(&json!({"success": true, "shardId": shard_id, "url": url}))
            }
            Err(e) => e.response(),
        }
    }
}

/// `partyroom_world_assignments_total{result}`: `POST connect` answers, `assigned` or
/// `refused` (no room, no capacity, bad request).
pub const WORLD_ASSIGNMENTS: &str = "partyroom_world_assignments_total";
/// `partyroom_world_shards{world}`: shards a world holds, as of its last `connect`.
pub const WORLD_SHARDS: &str = "partyroom_world_shards";

/// Describe the world's metrics to the installed recorder.
pub fn describe_metrics() {
    metrics::describe_counter!(WORLD_ASSIGNMENTS, "World connect requests, by result");
    metrics::describe_gauge!(WORLD_SHARDS, "Shards of a world");
}

/// JavaScript truthiness of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

fn query_pairs(cx: &HttpCx<'_>) -> Vec<(String, String)> {
    cx.request()
        .query
        .as_deref()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// Parse a JSON body into `T`, with the spec's error messages.
fn body<T: serde::de::DeserializeOwned>(cx: &HttpCx<'_>, invalid: &str) -> Result<T, WorldError> {
    let value: Value = serde_json::from_slice(&cx.request().body)
        .map_err(|_| WorldError::invalid("Invalid JSON in request body"))?;
    serde_json::from_value(value).map_err(|e| WorldError::invalid_body(invalid, &e))
}

fn guard_admin(world: &World, cx: &HttpCx<'_>) -> Result<(), RoomResponse> {
    world
        .admin(&cx.request().headers, &query_pairs(cx))
        .map(|_| ())
        .map_err(|e| e.response())
}

fn guard_shard_or_admin(world: &World, cx: &HttpCx<'_>) -> Result<(), RoomResponse> {
    auth::authorize_shard_or_admin(
        &world.config,
        &world.world_id,
        &cx.request().headers,
        &query_pairs(cx),
    )
    .map_err(|e| e.response())
}

fn guard_shard(world: &World, cx: &HttpCx<'_>) -> Result<(), RoomResponse> {
    auth::authorize_shard(&world.config, &cx.request().headers).map_err(|e| e.response())
}

fn done(result: Result<impl serde::Serialize, WorldError>) -> RoomResponse {
    match result {
        Ok(v) => RoomResponse::success(&v),
        Err(e) => e.response(),
    }
}

impl Room for World {
    fn config() -> RoomConfig {
        World::room_config("world-{worldId}")
    }

    fn init(room_id: &str, _params: &partyroom_room::Params) -> Self {
        World::with_config(room_id, WorldConfig::for_new_world(room_id))
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.post("/connect", |w: &mut Self, cx| w.http_connect(cx))
            .post("/register-room", |w: &mut Self, cx| {
                let now = now_ms();
                w.maybe_cleanup(now);
                done(
                    body::<RegisterRoom>(cx, "Invalid room configuration")
                        .and_then(|req| w.register_room(req, now, cx.rng()))
                        .map(|()| json!({})),
                )
            })
            .route_guard(Method::POST, "/register-room", guard_admin)
            .post("/update-shard", |w: &mut Self, cx| {
                let now = now_ms();
                w.maybe_cleanup(now);
                done(
                    body::<ShardStats>(cx, "Invalid shard stats")
                        .and_then(|req| w.update_shard(&req, now))
                        .map(|()| json!({})),
                )
            })
            .route_guard(Method::POST, "/update-shard", guard_shard_or_admin)
            .post("/register-shard", |w: &mut Self, cx| {
                let now = now_ms();
                w.maybe_cleanup(now);
                done(
                    body::<ShardStats>(cx, "Invalid shard stats")
                        .and_then(|req| w.register_shard(&req, now, cx.rng()))
                        .map(|registered| json!({"registered": registered})),
                )
            })
            .route_guard(Method::POST, "/register-shard", guard_shard)
            .post("/scale-room", |w: &mut Self, cx| {
                let now = now_ms();
                w.maybe_cleanup(now);
                done(
                    body::<ScaleRoom>(cx, "Invalid scale room request")
                        .and_then(|req| w.scale_room(&req, now, cx.rng()))
                        .map(|()| json!({})),
                )
            })
            .route_guard(Method::POST, "/scale-room", guard_admin)
            .route(Method::GET, "/shards", |w: &mut Self, cx| {
                w.maybe_cleanup(now_ms());
                let room = query_pairs(cx)
                    .into_iter()
                    .find(|(k, _)| k == "roomId")
                    .map(|(_, v)| v);
                let shards = w.json_of(
                    w.shards
                        .iter()
                        .filter(|(_, s)| room.as_deref().is_none_or(|r| s.room_id == r))
                        .map(|(id, s)| (id.to_owned(), s.sync_view())),
                );
                RoomResponse::success(&json!({"worldId": w.world_id, "shards": shards}))
            })
            .route_guard(Method::GET, "/shards", guard_admin)
            .route(Method::GET, "/rooms", |w: &mut Self, _cx| {
                w.maybe_cleanup(now_ms());
                let rooms = w.json_of(w.rooms.iter().map(|(id, r)| (id.to_owned(), r.sync_view())));
                RoomResponse::success(&json!({"worldId": w.world_id, "rooms": rooms}))
            })
            .route_guard(Method::GET, "/rooms", guard_admin)
            // Admin sockets only: others are refused before the upgrade (the original kept
            // them open and sent them nothing).
            .connect_guard(|w: &Self, info: &ConnectInfo| {
                w.admin(&info.headers, &info.query)
                    .map(|_| ())
                    .map_err(|e| Refusal {
                        status: e.status(),
                        reason: e.to_string(),
                    })
            })
            .on_join(|w: &mut Self, cx| {
                let Some(conn) = cx.conn() else { return };
                w.maybe_cleanup(now_ms());
                if let Ok(exp) = w.admin(&conn.headers, &conn.query) {
                    w.admins.insert(conn.id, exp);
                }
            })
            // Defence in depth: only connections recorded as admins, with a token that has
            // not expired, receive anything.
            .intercept(|w: &Self, conn, _packet| match w.admins.get(&conn.id) {
                Some(exp) if *exp >= auth::now_secs() => Intercept::Keep,
                _ => Intercept::Drop,
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world(config: WorldConfig) -> World {
        World::with_config("world-default", Arc::new(config))
    }

    fn rng() -> fastrand::Rng {
        fastrand::Rng::with_seed(7)
    }

    fn register(
        w: &mut World,
        name: &str,
        strategy: Strategy,
        max: u32,
        min: u32,
        max_shards: Option<u32>,
    ) {
        w.register_room(
            RegisterRoom {
                name: name.into(),
                balancing_strategy: strategy,
                public: true,
                max_players_per_shard: max,
                min_shards: min,
                max_shards,
            },
            1,
            &mut rng(),
        )
        .unwrap();
    }

    fn report(w: &mut World, id: &str, conns: u32) {
        w.update_shard(
            &ShardStats {
                shard_id: id.into(),
                world_id: None,
                connections: conns,
                status: None,
            },
            now_ms(),
        )
        .unwrap();
    }

    fn ids(w: &World, room: &str) -> Vec<String> {
        w.shards
            .iter()
            .filter(|(_, s)| s.room_id == room)
            .map(|(id, _)| id.to_owned())
            .collect()
    }

    #[test]
    fn round_robin_survives_a_shrinking_list() {
        let mut w = world(WorldConfig::default());
        let mut r = rng();
        register(&mut w, "demo", Strategy::RoundRobin, 10, 3, None);
        let s = ids(&w, "demo");
        assert!(s.iter().all(|id| id.starts_with("demo:world-default:")));
        let picks: Vec<String> = (0..4)
            .map(|_| w.connect("demo", false, 2, &mut r).unwrap())
            .collect();
        assert_eq!(
            picks,
            vec![s[0].clone(), s[1].clone(), s[2].clone(), s[0].clone()]
        );
        // Counter is now 1; two shards fill up: the list shrinks to one; no error.
        w.connect("demo", false, 2, &mut r).unwrap();
        report(&mut w, &s[0], 10);
        report(&mut w, &s[1], 10);
        assert_eq!(w.connect("demo", false, 2, &mut r).unwrap(), s[2]);
        assert_eq!(w.connect("demo", false, 2, &mut r).unwrap(), s[2]);
    }

    #[test]
    fn capacity_and_auto_create() {
        let mut w = world(WorldConfig::default());
        let mut r = rng();
        register(&mut w, "full", Strategy::LeastConnections, 2, 1, Some(2));
        let first = ids(&w, "full")[0].clone();
        report(&mut w, &first, 2);
        let second = w.connect("full", true, 2, &mut r).unwrap();
        assert_ne!(second, first);
        report(&mut w, &second, 2);
        let err = w.connect("full", true, 2, &mut r).unwrap_err();
        assert_eq!(err, WorldError::NoCapacity("full".into()));
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            w.connect("nope", false, 2, &mut r).unwrap_err(),
            WorldError::RoomNotFound("nope".into())
        );
        assert!(matches!(
            w.connect("a.b", true, 2, &mut r),
            Err(WorldError::Invalid { .. })
        ));
    }

    #[test]
    fn world_limits_bound_the_registry() {
        let mut w = world(WorldConfig {
            max_auto_rooms: 2,
            max_shards: 3,
            ..WorldConfig::default()
        });
        let mut r = rng();
        w.connect("a", true, 1, &mut r).unwrap();
        w.connect("b", true, 1, &mut r).unwrap();
        assert_eq!(w.connect("c", true, 1, &mut r), Err(WorldError::RoomLimit));
        let b = ids(&w, "b")[0].clone();
        report(&mut w, &b, 75);
        w.connect("b", true, 1, &mut r).unwrap();
        let b2 = ids(&w, "b")[1].clone();
        report(&mut w, &b2, 75);
        assert_eq!(w.connect("b", true, 1, &mut r), Err(WorldError::ShardLimit));
    }

    #[test]
    fn auto_created_rooms_go_with_their_last_shard() {
        let mut w = world(WorldConfig {
            max_auto_rooms: 2,
            heartbeat_timeout: Duration::from_secs(5),
            ..WorldConfig::default()
        });
        let mut r = rng();
        register(&mut w, "kept", Strategy::RoundRobin, 10, 1, None);
        w.connect("a", true, 1, &mut r).unwrap();
        assert_eq!(w.connect("b", true, 1, &mut r), Err(WorldError::RoomLimit));
        // Every shard times out: the admin's room stays, the auto-created one goes.
        w.cleanup(10_000);
        assert!(w.shards.is_empty());
        assert!(w.rooms.contains_key("kept") && !w.rooms.contains_key("a"));
        assert!(w.rr_counters.get("a").is_none());
        w.connect("b", true, 10_000, &mut r).unwrap();
        // Throttled from requests: a second pass within a second does nothing.
        w.shards.values_mut().for_each(|s| s.last_heartbeat = 0);
        w.maybe_cleanup(10_500);
        assert_eq!(w.shards.len(), 1);
        w.maybe_cleanup(11_000);
        assert!(w.shards.is_empty());
    }

    #[test]
    fn draining_scale_down_and_cleanup() {
        let mut w = world(WorldConfig {
            heartbeat_timeout: Duration::from_secs(5),
            ..WorldConfig::default()
        });
        let mut r = rng();
        register(&mut w, "demo", Strategy::RoundRobin, 75, 3, Some(4));
        let s = ids(&w, "demo");
        report(&mut w, &s[0], 5);
        w.update_shard(
            &ShardStats {
                shard_id: s[0].clone(),
                world_id: None,
                connections: 5,
                status: Some(ShardStatus::Draining),
            },
            now_ms(),
        )
        .unwrap();
        let scale = |target| ScaleRoom {
            room_id: "demo".into(),
            target_shard_count: target,
            shard_template: None,
        };
        w.scale_room(&scale(2), 1, &mut r).unwrap();
        // The draining shard was chosen first and stays while it has clients.
        assert_eq!(ids(&w, "demo").len(), 3);
        report(&mut w, &s[0], 0);
        assert_eq!(ids(&w, "demo"), vec![s[1].clone(), s[2].clone()]);
        assert!(matches!(
            w.scale_room(&scale(5), 1, &mut r),
            Err(WorldError::Invalid { .. })
        ));
        // Inactivity: everything older than 5 s goes.
        let now = now_ms();
        w.shards.get_mut(&s[2]).unwrap().last_heartbeat = now - 4_000;
        w.shards.get_mut(&s[1]).unwrap().last_heartbeat = now - 6_000;
        assert_eq!(w.cleanup(now), vec![s[1].clone()]);
    }

    #[test]
    fn shards_register_again_within_limits() {
        let mut w = world(WorldConfig::default());
        let mut r = rng();
        register(&mut w, "demo", Strategy::RoundRobin, 75, 1, Some(1));
        let stats = |id: &str| ShardStats {
            shard_id: id.into(),
            world_id: Some("world-default".into()),
            connections: 3,
            status: None,
        };
        assert_eq!(
            w.register_shard(&stats("demo:world-default:x1"), 1, &mut r),
            Err(WorldError::RoomShardLimit {
                room: "demo".into(),
                max: 1
            })
        );
        assert!(
            w.register_shard(&stats("other:world-default:x1"), 1, &mut r)
                .unwrap()
        );
        assert_eq!(
            w.shards
                .get("other:world-default:x1")
                .unwrap()
                .current_connections,
            3
        );
        assert!(
            !w.register_shard(&stats("other:world-default:x1"), 1, &mut r)
                .unwrap()
        );
        assert!(
            w.register_shard(&stats("other:world-eu:x1"), 1, &mut r)
                .is_err()
        );
        let mut foreign = stats("other:world-default:x2");
        foreign.world_id = Some("world-eu".into());
        assert!(w.register_shard(&foreign, 1, &mut r).is_err());
    }

    #[test]
    fn js_truthiness() {
        assert!(!truthy(&json!(null)) && !truthy(&json!(0)) && !truthy(&json!("")));
        assert!(truthy(&json!("false")) && truthy(&json!(1)) && truthy(&json!({})));
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
    }
}
