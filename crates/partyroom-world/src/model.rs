//! What a world stores: logical rooms, shards, and the names both are made of.

use partyroom_state::{State, leaf_type};
use serde::{Deserialize, Serialize};

/// Longest logical room name.
pub const MAX_ROOM_NAME: usize = 64;

/// How `/connect` picks a shard among the available ones (spec 2.5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// In turn, with a counter per room.
    #[default]
    RoundRobin,
    /// The shard with the fewest connections (the first one on ties).
    LeastConnections,
    /// Uniformly at random.
    Random,
}
leaf_type!(Strategy);

/// Whether a shard takes new clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShardStatus {
    /// Takes new clients.
    #[default]
    Active,
    /// Takes no new clients; kept until removed by inactivity.
    Maintenance,
    /// Takes no new clients; removed as soon as it reports no connection.
    Draining,
}
leaf_type!(ShardStatus);

/// A logical room registered in a world (`rooms.<name>` in the world's state).
#[derive(State, Debug, Clone, PartialEq)]
pub struct RoomEntry {
    /// The room name; also the id of the authoritative room in party `main`.
    pub name: String,
    /// How clients are spread over its shards.
    #[state(rename = "balancingStrategy")]
    pub balancing_strategy: Strategy,
    /// Stored and synced, not used (as in the original).
    pub public: bool,
    /// Capacity given to shards created later.
    #[state(rename = "maxPlayersPerShard")]
    pub max_players_per_shard: u32,
    /// Shards created at registration (and kept at least, when registering again).
    #[state(rename = "minShards")]
    pub min_shards: u32,
    /// No more shards than this (none: no limit but the world's).
    #[state(rename = "maxShards")]
    pub max_shards: Option<u32>,
    /// Created by the world itself (`/connect`, shard re-registration) rather than by an
    /// admin: removed once it has no shard left.
    #[state(rename = "autoCreated")]
    pub auto_created: bool,
}

impl Default for RoomEntry {
    fn default() -> Self {
        Self {
            name: String::new(),
            balancing_strategy: Strategy::RoundRobin,
            public: true,
            max_players_per_shard: crate::config::DEFAULT_MAX_CONNECTIONS,
            min_shards: 1,
            max_shards: None,
            auto_created: false,
        }
    }
}

/// A shard of a logical room (`shards.<shardId>` in the world's state).
#[derive(State, Debug, Clone, PartialEq)]
pub struct ShardInfo {
    /// The logical room.
    #[state(rename = "roomId")]
    pub room_id: String,
    /// The world (full room id, `world-default`).
    #[state(rename = "worldId")]
    pub world_id: String,
    /// What clients connect to, as the shard's room id under `/parties/shard/`.
    pub url: String,
    /// Client sockets, as last reported by the shard (synced, never stored).
    #[state(rename = "currentConnections", persist = false)]
    pub current_connections: u32,
    /// Capacity.
    #[state(rename = "maxConnections")]
    pub max_connections: u32,
    /// Whether it takes new clients.
    pub status: ShardStatus,
    /// Last stats report (or creation), ms since the epoch.
    #[state(rename = "lastHeartbeat")]
    pub last_heartbeat: u64,
}

impl Default for ShardInfo {
    fn default() -> Self {
        Self {
            room_id: String::new(),
            world_id: String::new(),
            url: String::new(),
            current_connections: 0,
            max_connections: crate::config::DEFAULT_MAX_CONNECTIONS,
            status: ShardStatus::Active,
            last_heartbeat: 0,
        }
    }
}

impl ShardInfo {
    /// Active and below capacity.
    pub fn available(&self) -> bool {
        self.status == ShardStatus::Active && self.current_connections < self.max_connections
    }
}

/// Whether `name` is a valid logical room name: 1 to 64 of `[A-Za-z0-9_-]`. A `.` would be
/// read as a path separator by clients and storage, and a `:` would break shard ids
/// (spec 1.8, bug 7.2.5).
pub fn valid_room_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_ROOM_NAME && name.bytes().all(name_byte)
}

/// Whether `id` is a world id: `world-` and 1 to 64 of `[A-Za-z0-9_-]`.
pub fn valid_world_id(id: &str) -> bool {
    id.strip_prefix("world-").is_some_and(valid_room_name)
}

fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// A parsed shard id: `<room>:<worldId>:<suffix>` (the form worlds create), or the shorter
/// `<room>:<suffix>` and `<room>` that the original also accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardId {
    /// The whole id.
    pub id: String,
    /// The main room the shard serves: the part before the first `:`.
    pub room: String,
    /// The world named in the id (only with three parts).
    pub world: Option<String>,
}

/// Why a shard id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid shard id: {0}")]
pub struct ShardIdError(pub &'static str);

impl ShardId {
    /// Parse and validate a (decoded) shard id.
    pub fn parse(id: &str) -> Result<Self, ShardIdError> {
        let parts: Vec<&str> = id.split(':').collect();
        if parts.len() > 3 {
            return Err(ShardIdError("more than three `:`-separated parts"));
        }
        if !parts.iter().all(|p| valid_room_name(p)) {
            return Err(ShardIdError(
                "each part must be 1 to 64 of [A-Za-z0-9_-] (parts are separated by `:`)",
            ));
        }
        let world = (parts.len() == 3).then(|| parts[1].to_owned());
        if world.as_deref().is_some_and(|w| !valid_world_id(w)) {
            return Err(ShardIdError("the world part must be `world-<name>`"));
        }
        Ok(Self {
            id: id.to_owned(),
            room: parts[0].to_owned(),
            world,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_room_name("match-123_A"));
        for bad in ["", "a.b", "a:b", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(!valid_room_name(bad), "{bad}");
        }
        assert!(valid_world_id("world-eu"));
        assert!(
            !valid_world_id("world-") && !valid_world_id("worldx") && !valid_world_id("world-a.b")
        );
    }

    #[test]
    fn shard_ids() {
        let s = ShardId::parse("demo:world-eu:1710000000000-4821").unwrap();
        assert_eq!(
            (s.room.as_str(), s.world.as_deref()),
            ("demo", Some("world-eu"))
        );
        let s = ShardId::parse("game:shard-1").unwrap();
        assert_eq!((s.room.as_str(), s.world), ("game", None));
        assert_eq!(ShardId::parse("game").unwrap().room, "game");
        for bad in [
            "",
            "a::b",
            "a:b:c:d",
            "a.b:world-x:1",
            "a:eu:1",
            ":world-x:1",
            "a:world-x:",
        ] {
            assert!(ShardId::parse(bad).is_err(), "{bad}");
        }
    }
}
