//! The world service's configuration, shared by every world room of the process.
//!
//! A room type gets nothing but its id from the runtime ([`partyroom_room::Room::init`]), so
//! the secrets and limits cannot be passed per room. [`WorldConfig::install`] publishes one
//! configuration for the process; each world instance takes the configuration installed when
//! it starts and keeps it (an `Arc`) for its whole life. Tests can install another one before
//! starting the next world.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Default capacity of a shard when the room does not say (`maxPlayersPerShard`).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 75;

/// Settings of the world service.
#[derive(Debug, Clone)]
pub struct WorldConfig {
    /// `AUTH_JWT_SECRET`: the HS256 key of admin tokens. Empty refuses every token.
    pub jwt_secret: String,
    /// `SHARD_SECRET`: what shards present in `x-access-shard`. Empty refuses every shard.
    pub shard_secret: String,
    /// Refuse tokens without `exp` (default `true`; the original accepted them forever).
    pub require_exp: bool,
    /// Accepted clock skew for `exp` and `nbf`, in seconds. Default 0, like the original.
    pub leeway_secs: u64,
    /// When set, tokens must carry this `aud`.
    pub audience: Option<String>,
    /// When set, tokens must carry this `iss`.
    pub issuer: Option<String>,
    /// A shard that sent no stats for this long is removed. Default 5 minutes.
    pub heartbeat_timeout: Duration,
    /// How often the periodic cleanup runs ([`crate::spawn_cleanup`]). Default 60 s.
    pub cleanup_interval: Duration,
    /// Logical rooms a world may create by itself (`/connect` with `autoCreate`, shard
    /// re-registration). Rooms registered by an admin do not count against it. Default 1,000.
    pub max_auto_rooms: usize,
    /// Shards a world may hold in total, whoever creates them. Default 10,000.
    pub max_shards: usize,
    /// `maxShards` of rooms the world creates by itself. Default none (as the original).
    pub auto_room_max_shards: Option<u32>,
    /// Capacity of shards of rooms the world creates by itself. Default 75.
    pub default_max_connections: u32,
}

impl Default for WorldConfig {
    fn default() -> Self {
        Self {
            jwt_secret: String::new(),
            shard_secret: String::new(),
            require_exp: true,
            leeway_secs: 0,
            audience: None,
            issuer: None,
            heartbeat_timeout: Duration::from_secs(300),
            cleanup_interval: Duration::from_secs(60),
            max_auto_rooms: 1000,
            max_shards: 10_000,
            auto_room_max_shards: None,
            default_max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// World ids whose instance started in this process (visited by the periodic cleanup).
static STARTED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

static INSTALLED: RwLock<Option<Arc<WorldConfig>>> = RwLock::new(None);

impl WorldConfig {
    /// A configuration with the two secrets and default limits.
    pub fn new(jwt_secret: impl Into<String>, shard_secret: impl Into<String>) -> Self {
        Self {
            jwt_secret: jwt_secret.into(),
            shard_secret: shard_secret.into(),
            ..Self::default()
        }
    }

    /// Make this the configuration of world rooms started from now on in this process, and
    /// return it.
    pub fn install(self) -> Arc<WorldConfig> {
        let config = Arc::new(self);
        *INSTALLED.write().unwrap_or_else(|e| e.into_inner()) = Some(config.clone());
        config
    }

    /// The installed configuration, if any.
    pub fn installed() -> Option<Arc<WorldConfig>> {
        INSTALLED.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The configuration a new world instance uses: the installed one, or an unusable one
    /// (empty secrets: every admin and shard request is refused) with an error in the log.
    pub(crate) fn for_new_world(world_id: &str) -> Arc<WorldConfig> {
        let config = Self::installed().unwrap_or_else(|| {
            tracing::error!(
                world = world_id,
                "no WorldConfig installed: this world refuses every admin and shard request"
            );
            Arc::new(WorldConfig::default())
        });
        STARTED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(world_id.to_owned());
        config
    }

    /// The world ids whose instance started in this process.
    pub fn started_worlds() -> Vec<String> {
        STARTED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}
