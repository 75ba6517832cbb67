//! `cargo run --release --example shards`: the arena behind a world service and a shard
//! gateway, on <http://127.0.0.1:3000> (`--port` or `PORT` to change).
//!
//! One process serves the worlds `world-default` and `world-eu` (`/parties/world/...`), the
//! arena rooms (`/parties/main/...`) and the shard gateway (`/parties/shard/...`), plus the
//! arena page, which connects through the world (`?world=world-eu` to pick the other one).
//! Secrets come from `AUTH_JWT_SECRET` and `SHARD_SECRET` (random ones, with a warning, when
//! unset). `--role world|rooms|shards` with `--main-url`/`--world-url` runs one part per
//! process; see the README's "World and shards".

use clap::Parser;
use partyroom_world::cli::{self, App, Args};

/// Makes the arena page connect through the world instead of `/parties/main/<room>`.
const WORLD_SHIM: &str = include_str!("world-shim.js");

/// The arena page with the world shim loaded before its own script.
fn world_page() -> String {
    partyroom_arena::PAGE.replacen(
        "<script>",
        &format!("<script>\n{WORLD_SHIM}</script>\n<script>"),
        1,
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cli::init_logging();
    let args = Args::parse();
    partyroom::server::FdLimit::raise_and_log(args.max_connections);
    let page: &'static str = Box::leak(world_page().into_boxed_str());
    let serve_page = move || async move { axum::response::Html(page) };
    let pages = axum::Router::new()
        .route("/", axum::routing::get(serve_page))
        .route("/rooms/{id}", axum::routing::get(serve_page));
    cli::run(
        args,
        App {
            rooms: Box::new(|rooms| {
                rooms
                    .room::<partyroom_arena::Arena>("main")
                    .expect("the arena pattern is valid")
            }),
            pages,
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_loads_the_shim_first() {
        let page = super::world_page();
        let shim = page
            .find("window.WebSocket = WorldSocket")
            .expect("shim injected");
        let game = page.find("new WebSocket(url)").expect("arena script kept");
        assert!(shim < game);
    }
}
