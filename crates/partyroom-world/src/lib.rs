//! World service and shard gateway for partyroom: one logical room served through several
//! shards, spread over processes, wire-compatible with `@signe/room`'s `WorldRoom` and
//! `Shard` and with the official client's `connectionWorld`.
//!
//! - [`World`] is a room type (party `world`, ids `world-{worldId}`) that keeps the registry
//!   of logical rooms and shards of one world and answers:
//!
//!   | endpoint | who | what |
//!   |---|---|---|
//!   | `POST /parties/world/<w>/connect` | anyone | `{"roomId","autoCreate"}` → `{"success":true,"shardId","url"}` |
//!   | `POST .../register-room` | admin | create or update a room, top its shards up to `minShards` |
//!   | `POST .../scale-room` | admin | scale a room's shards up (create) or down (drain) |
//!   | `POST .../update-shard` | shard or admin | connection count, status (`draining`...), heartbeat |
//!   | `POST .../register-shard` | shard | a shard the world forgot registers again |
//!   | `GET .../shards[?roomId=]`, `GET .../rooms` | admin | listings |
//!   | WebSocket `/parties/world/<w>` | admin | the registry, live (initial sync, then patches) |
//!
//!   Admins present an HS256 JWT ([`auth`]) whose `worlds` claim lists the world or `*`;
//!   shards present `SHARD_SECRET`. Configuration: [`WorldConfig::install`].
//! - [`ShardGateway`] serves `/parties/shard/<shardId>` (WebSocket and HTTP) in front of a
//!   main room server and reports connection counts to the world.
//! - [`cli`] runs any combination of the three parts (world, rooms, shards) as one process.
//!
//! Differences from the original are fixes; see the "World and shards" section of
//! `docs/ARCHITECTURE.md`.

pub mod auth;
pub mod cli;
mod config;
pub mod gateway;
pub use partyroom_server::http_client;
pub mod model;
mod world;

/// The world's metrics (see `partyroom_server::prometheus`).
///
/// | name | type | labels | what |
/// |---|---|---|---|
/// | `partyroom_world_assignments_total` | counter | `result` | `POST connect` answers: `assigned`, `refused` |
/// | `partyroom_world_shards` | gauge | `world` | shards a world holds, as of its last `connect` |
pub mod metrics {
    pub use crate::world::{WORLD_ASSIGNMENTS, WORLD_SHARDS, describe_metrics as describe};
}

pub use config::{DEFAULT_MAX_CONNECTIONS, WorldConfig};
pub use gateway::{GatewayConfig, ShardGateway};
pub use model::{RoomEntry, ShardId, ShardInfo, ShardStatus, Strategy};
pub use world::{RegisterRoom, ScaleRoom, ShardStats, ShardTemplate, World, WorldError, now_ms};

use partyroom_room::{Located, Rooms};
use tokio_util::sync::CancellationToken;

/// Run the inactive-shard cleanup of every world started in this process (in party `party`)
/// every `interval` (normally [`WorldConfig::cleanup_interval`]), until `shutdown`. Worlds also clean up lazily on
/// every request; this pass removes dead shards of worlds nobody asks.
///
/// In a cluster (rooms built with a placement) a world is cleaned up by the node that owns
/// it: one that moved to another node is left to that node's pass (it started there too), and
/// one whose owner is gone is claimed here, as a request would claim it.
pub fn spawn_cleanup(
    rooms: Rooms,
    party: &str,
    interval: std::time::Duration,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let party = party.to_owned();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            for id in WorldConfig::started_worlds() {
                let Ok(Located::Here(handle)) = rooms.locate(&party, &id).await else {
                    continue;
                };
                let _ = handle
                    .update::<World, _, _>(|world, _cx| world.cleanup(now_ms()))
                    .await;
            }
        }
    })
}
