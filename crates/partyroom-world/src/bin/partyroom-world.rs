//! `partyroom-world`: the world service and the shard gateway as a program, with a small demo
//! room (`counter`) for the `rooms` role. In production the `rooms` role is your own game
//! server (any partyroom server whose `ServerConfig::shard_secret` is `SHARD_SECRET`); the
//! `shards` example does that with the arena.
//!
//! ```text
//! partyroom-world --role all --port 3000
//! partyroom-world --role world --port 3001
//! partyroom-world --role shards --port 3000 --main-url http://127.0.0.1:3002 --world-url http://127.0.0.1:3001
//! ```

use clap::Parser;
use partyroom_room::{Handlers, Json, Room, RoomConfig};
use partyroom_state::{State, StateMap};
use partyroom_world::cli::{self, App, Args};

/// A player of the demo room.
#[derive(State, Default, Clone)]
struct Player {
    name: String,
    #[state(connected)]
    connected: bool,
    clicks: u32,
}

/// The demo room: a shared counter (the `@signe/room` Node example's room).
#[derive(State, Default, Clone)]
struct Counter {
    count: i64,
    #[state(users)]
    players: StateMap<Player>,
}

#[derive(serde::Deserialize)]
struct Increment {
    #[serde(default = "one")]
    amount: i64,
}

fn one() -> i64 {
    1
}

impl Room for Counter {
    fn config() -> RoomConfig {
        RoomConfig::new("{roomId}").session_expiry(std::time::Duration::from_secs(2))
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.on_join(|room: &mut Self, cx| {
            let name = cx.query("name").unwrap_or("Anonymous").to_owned();
            if let Some(p) = cx.user_id().and_then(|id| room.players.get_mut(id)) {
                p.name = name;
            }
        })
        .action(
            "increment",
            |room: &mut Self, cx, Json(i): Json<Increment>| {
                room.count += i.amount.clamp(-100, 100);
                if let Some(p) = cx.user_id().and_then(|id| room.players.get_mut(id)) {
                    p.clicks += 1;
                }
            },
        )
        .get("/count", |room: &Self, _cx| {
            Json(serde_json::json!({"count": room.count}))
        });
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cli::init_logging();
    let args = Args::parse();
    partyroom_server::FdLimit::raise_and_log(args.max_connections);
    cli::run(
        args,
        App {
            rooms: Box::new(|b| b.room::<Counter>("main").expect("valid pattern")),
            pages: axum::Router::new(),
        },
    )
    .await
}
