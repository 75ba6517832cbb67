//! The arena demo: players move around an arena and collect a star.
//!
//! The same game as the `@signe/room` Node example, so that clients written for the original
//! run against partyroom unchanged and the two servers can be compared on the same work.

use std::time::Duration;

use partyroom::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Arena width.
pub const WIDTH: i32 = 900;
/// Arena height.
pub const HEIGHT: i32 = 560;
/// Player radius.
pub const PLAYER_RADIUS: f64 = 16.0;
/// Star radius.
pub const STAR_RADIUS: f64 = 13.0;
/// Distance at which a player collects the star (16 + 13 + 8).
pub const COLLECT_DISTANCE: f64 = PLAYER_RADIUS + STAR_RADIUS + 8.0;
/// Player colors, picked from a hash of the name.
pub const COLORS: [&str; 8] = [
    "#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be123c", "#4f46e5",
];

/// A point with integer coordinates (the star).
#[derive(State, Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Point {
    /// Horizontal position.
    pub x: i32,
    /// Vertical position.
    pub y: i32,
}

/// A player: one user of the room.
#[derive(State, Clone, Debug, PartialEq)]
pub struct Player {
    /// Display name.
    pub name: String,
    /// Whether the player has a live connection (synced, never stored).
    #[state(connected)]
    pub connected: bool,
    /// Horizontal position (-1 until placed).
    pub x: f64,
    /// Vertical position (-1 until placed).
    pub y: f64,
    /// Circle color.
    pub color: String,
    /// Stars collected.
    pub score: u32,
}

impl Default for Player {
    fn default() -> Self {
        Self {
            name: "Anonymous".into(),
            connected: false,
            x: -1.0,
            y: -1.0,
            color: COLORS[0].into(),
            score: 0,
        }
    }
}

/// The room state.
#[derive(State, Clone, Debug, Default)]
pub struct Arena {
    /// The star to collect.
    pub star: Point,
    /// Players keyed by public id.
    #[state(users)]
    pub players: StateMap<Player>,
}

/// Value of the `move` action: both coordinates required, numbers only.
#[derive(Deserialize, Debug, Clone, Copy)]
pub struct MoveTo {
    /// Target x (clamped to the arena).
    pub x: f64,
    /// Target y (clamped to the arena).
    pub y: f64,
}

/// Value of the `travel` action: the arena to move to (same party).
#[derive(Deserialize, Debug, Clone)]
pub struct Travel {
    /// The target room id.
    pub room: String,
}

/// Body of `GET /state` and `POST /reset`.
#[derive(Serialize, Debug)]
pub struct ArenaView {
    arena: Value,
    star: Value,
    players: Value,
}

impl Arena {
    fn view(&self) -> ArenaView {
        ArenaView {
            arena: json!({"width": WIDTH, "height": HEIGHT}),
            star: json!({"x": self.star.x, "y": self.star.y}),
            players: Value::Object(
                self.players
                    .iter()
                    .map(|(id, p)| {
                        (
                            id.to_owned(),
                            json!({"name": p.name, "connected": p.connected, "x": p.x, "y": p.y, "color": p.color, "score": p.score}),
                        )
                    })
                    .collect(),
            ),
        }
    }
}

/// A random point inside the arena, away from the walls.
pub fn random_point(rng: &mut fastrand::Rng) -> Point {
    let margin = PLAYER_RADIUS as i32 + 20;
    Point {
        x: rng.i32(margin..=WIDTH - margin),
        y: rng.i32(margin..=HEIGHT - margin),
    }
}

/// The color of a name: `h = h * 31 + c (mod 2^32)` over its UTF-16 code units, then `h mod 8`.
pub fn color_for(name: &str) -> &'static str {
    let h = name
        .encode_utf16()
        .fold(0u32, |h, c| h.wrapping_mul(31).wrapping_add(u32::from(c)));
    COLORS[(h % 8) as usize]
}

fn clamp(v: f64, min: f64, max: f64) -> f64 {
    v.max(min).min(max)
}

impl Room for Arena {
    fn config() -> RoomConfig {
        RoomConfig::new("{roomId}")
            .session_expiry(Duration::from_millis(2000))
            .throttle_storage(Duration::from_millis(2500))
    }

    fn init(_room_id: &str, _params: &partyroom::room::Params) -> Self {
        Arena {
            star: random_point(&mut fastrand::Rng::new()),
            players: StateMap::new(),
        }
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.on_join(|arena: &mut Self, cx| {
            let Some(id) = cx.user_id().map(str::to_owned) else {
                return;
            };
            let name = cx
                .query("name")
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(|n| String::from_utf16_lossy(&n.encode_utf16().take(40).collect::<Vec<_>>()));
            let spawn = random_point(cx.rng());
            let Some(player) = arena.players.get_mut(&id) else {
                return;
            };
            if let Some(name) = name {
                player.name = name;
            }
            if player.x < 0.0 || player.y < 0.0 {
                player.x = f64::from(spawn.x);
                player.y = f64::from(spawn.y);
                player.color = color_for(&player.name).to_owned();
            }
        })
        .action("move", |arena: &mut Self, cx, Json(to): Json<MoveTo>| {
            let Some(player) = cx.user_id().and_then(|id| arena.players.get_mut(id)) else {
                return;
            };
            player.x = clamp(to.x, PLAYER_RADIUS, f64::from(WIDTH) - PLAYER_RADIUS);
            player.y = clamp(to.y, PLAYER_RADIUS, f64::from(HEIGHT) - PLAYER_RADIUS);
        })
        // Move to another arena with the same player: the client gets
        // `{type: "travel", room, token}` and reconnects there with `?transferToken=<token>`
        // (or `{type: "travel", room, error}`). In a cluster the target may be on any node.
        .action("travel", |_arena: &mut Self, cx, Json(to): Json<Travel>| {
            let answer = match cx.transfer_session(&to.room) {
                Ok(token) => json!({"type": "travel", "room": to.room, "token": token}),
                Err(e) => json!({"type": "travel", "room": to.room, "error": e.to_string()}),
            };
            cx.send(&answer);
        })
        .action("collect", |arena: &mut Self, cx, ()| {
            let star = arena.star;
            let Some(player) = cx.user_id().and_then(|id| arena.players.get_mut(id)) else {
                return;
            };
            let (dx, dy) = (player.x - f64::from(star.x), player.y - f64::from(star.y));
            if (dx * dx + dy * dy).sqrt() <= COLLECT_DISTANCE {
                player.score += 1;
                arena.star = random_point(cx.rng());
            }
        })
        .get("/state", |arena: &Self, _cx| Json(arena.view()))
        .post("/reset", |arena: &mut Self, cx| {
            for player in arena.players.values_mut() {
                player.score = 0;
            }
            arena.star = random_point(cx.rng());
            Json(arena.view())
        });
    }
}

/// The game page, served at `/` and `/rooms/<id>`.
pub const PAGE: &str = include_str!("../static/index.html");

/// Options of the demo server.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where rooms are saved.
    pub storage: std::sync::Arc<dyn partyroom::storage::Storage>,
    /// Override of the arena's storage throttle (2.5 s).
    pub storage_throttle: Option<std::time::Duration>,
    /// Override of how long an empty room stays in memory (60 s).
    pub idle_timeout: Option<std::time::Duration>,
    /// Sync throttle (none by default: every change is sent at once, as `@signe/room` does);
    /// 16 ms batches changes per frame like Colyseus' patch rate.
    pub sync_throttle: Option<std::time::Duration>,
    /// With a sync throttle, take busy clients' messages at the end of each window instead
    /// of as they arrive (`RoomConfig::hold_reads`, default on).
    pub hold_reads: bool,
    /// Messages each client may send per second (the server's default, 100, when `None`).
    pub max_messages_per_second: Option<u32>,
    /// Connections the server holds at once (`ServerConfig::max_connections`: the server's
    /// default, 100,000, when `None`).
    pub max_connections: Option<usize>,
    /// Ping a WebSocket client silent for this long (`Some(Duration::ZERO)`: no pings and no
    /// liveness check; `None`: the server's default, 25 s).
    pub ping_interval: Option<Duration>,
    /// Drop a WebSocket client silent for this long (the server's default, 60 s, when `None`).
    pub liveness_timeout: Option<Duration>,
    /// Cluster mode: this node of a cluster. Rooms are then saved through the cluster's
    /// fenced PostgreSQL storage (`storage` is not used), placed by its leases, and relayed
    /// to their owner when another node owns them; `GET /cluster` lists what this node owns.
    pub cluster: Option<partyroom::cluster::Cluster>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            storage: std::sync::Arc::new(partyroom::storage::MemoryStorage::new()),
            storage_throttle: None,
            idle_timeout: None,
            sync_throttle: None,
            hold_reads: true,
            max_messages_per_second: None,
            max_connections: None,
            ping_interval: None,
            liveness_timeout: None,
            cluster: None,
        }
    }
}

/// The rooms of the demo: the arena in party `main`.
pub fn rooms(options: &Options) -> Rooms {
    let mut config = Arena::config();
    if let Some(t) = options.storage_throttle {
        config = config.throttle_storage(t);
    }
    if let Some(t) = options.idle_timeout {
        config = config.idle_timeout(t);
    }
    if let Some(t) = options.sync_throttle {
        config = config.throttle_sync(t);
    }
    config = config.hold_reads(options.hold_reads);
    let builder = Rooms::builder()
        .room_with::<Arena>("main", config)
        .expect("the arena pattern is valid");
    match &options.cluster {
        Some(cluster) => builder
            .storage(cluster.storage())
            .placement(cluster.placement()),
        None => builder.storage(options.storage.clone()),
    }
    .build()
}

/// The demo server: the arena rooms plus the game page. In cluster mode it also starts the
/// cluster's upkeep (heartbeats, lease renewal) for these rooms; call
/// [`Cluster::drain`](partyroom::cluster::Cluster::drain) after the server stops.
pub fn server(options: &Options) -> Server {
    let page = || async { axum::response::Html(PAGE) };
    let mut config = partyroom::server::ServerConfig::default();
    if let Some(limit) = options.max_messages_per_second {
        config.max_messages_per_second = limit;
    }
    if let Some(limit) = options.max_connections {
        config.max_connections = limit;
    }
    if let Some(interval) = options.ping_interval {
        config.ping_interval = (!interval.is_zero()).then_some(interval);
    }
    if let Some(timeout) = options.liveness_timeout {
        config.liveness_timeout = timeout;
    }
    let pages = axum::Router::new()
        .route("/", axum::routing::get(page))
        .route("/rooms/{id}", axum::routing::get(page));
    match &options.cluster {
        Some(cluster) => {
            let server = Server::with_config(rooms(options), cluster.server_config(config));
            cluster.start(server.rooms().clone());
            server.merge(pages.merge(cluster.router()))
        }
        None => Server::with_config(rooms(options), config).merge(pages),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colors_follow_the_js_hash() {
        // h("Anonymous") computed with the JS formula.
        let h = "Anonymous"
            .encode_utf16()
            .fold(0u32, |h, c| h.wrapping_mul(31).wrapping_add(u32::from(c)));
        assert_eq!(color_for("Anonymous"), COLORS[(h % 8) as usize]);
        assert_eq!(color_for(""), COLORS[0]);
    }

    #[test]
    fn random_points_stay_inside() {
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..1000 {
            let p = random_point(&mut rng);
            assert!((36..=864).contains(&p.x) && (36..=524).contains(&p.y));
        }
    }
}
