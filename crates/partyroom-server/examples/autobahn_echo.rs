//! A WebSocket echo server on partyroom-server's own connection code, for the
//! Autobahn|Testsuite conformance run (`tests/autobahn`).
//!
//! ```sh
//! cargo run --release -p partyroom-server --features autobahn-echo --example autobahn_echo -- 127.0.0.1:9001
//! ```
//!
//! Prints `listening on ws://ADDR` once bound (port 0 picks a free one). The server's own
//! defaults apply, except the message limit: 16 MiB + 1 KiB instead of 64 KiB, so that the
//! suite's 9.* cases (messages up to 16 MiB) run.

use std::io::Write;

use partyroom_server::ServerConfig;
use partyroom_server::echo::serve_echo;

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_owned());
    let config = ServerConfig {
        max_message_bytes: 16 * 1024 * 1024 + 1024,
        ..ServerConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        println!("listening on ws://{}", listener.local_addr()?);
        std::io::stdout().flush()?;
        serve_echo(listener, config).await
    })
}
