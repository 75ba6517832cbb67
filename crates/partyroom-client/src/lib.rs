//! Rust client for partyroom, wire-compatible with `@signe/room` servers and behaving like
//! the official `@signe/sync/client` (built on partysocket).
//!
//! A [`Client`] connects to `/parties/{party}/{room}` with a session id (sent as both `id`,
//! read by `@signe/room`'s Node adapter and partyroom, and `_pk`, read by PartyKit), keeps a
//! mirror of the room state up to date from `sync` packets, sends actions with
//! [`Client::emit`], and reconnects by itself with partysocket's backoff — keeping the same
//! session, so the server gives back the same player.
//!
//! ```no_run
//! use std::time::Duration;
//! use partyroom_client::{Client, ClientOptions};
//! use serde_json::json;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::connect(
//!     ClientOptions::new("localhost:3000", "lobby").query("name", "Bot"),
//! )
//! .await?;
//! let me = client.pid().expect("connect waits for the pId packet");
//! client.emit("move", json!({"x": 120, "y": 80}))?;
//! client
//!     .wait_for(|s| s["players"][&me]["x"] == 120.0, Duration::from_secs(5))
//!     .await?;
//! client.close();
//! # Ok(())
//! # }
//! ```
//!
//! [`connect_world`] asks a world service for a shard first (`connectionWorld`).
//!
//! Limits for now: no TLS (`wss://` URLs and `https://` world hosts fail); the world request
//! uses a minimal HTTP/1.1 client.

mod client;
mod error;
mod options;
mod world;

pub use client::{Client, Event, Listener, StateView, Status, Subscription};
pub use error::{BoxError, ConnectError, SendError, WaitError, WorldError};
pub use options::{ClientOptions, Protocol, ReconnectPolicy, random_session_id};
pub use world::{ShardInfo, WorldConnection, WorldOptions, connect_world, request_shard};
