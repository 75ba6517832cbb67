//! Run the world service, the room server and the shard gateway, together or apart.
//!
//! `--role all` (the default) serves everything on one port: `/parties/world/...` (the
//! worlds), `/parties/main/...` (the game's rooms) and `/parties/shard/...` (the gateway,
//! which connects back to the same port). The official client's `connectionWorld` uses one
//! host for the world and the shard socket, so a public address must serve both: one
//! process, or a gateway with `--world-url` (it then relays `/parties/world/...` too).
//!
//! Split deployment (all processes share `AUTH_JWT_SECRET` and `SHARD_SECRET`):
//!
//! ```text
//! app --role world  --port 3001
//! app --role rooms  --port 3002
//! app --role shards --port 3000 --main-url http://10.0.0.2:3002 --world-url http://10.0.0.1:3001
//! ```
//!
//! Cluster mode (`--cluster <postgres url>` and the other flags of
//! [`ClusterArgs`]): the process is one node of a partyroom cluster. Its rooms, the worlds
//! included, are saved in PostgreSQL through the cluster's fenced storage; each world has one
//! owner node at a time, and the other nodes relay its requests and sockets to the owner, so
//! a world's registry is the same through every node and comes back on another node when its
//! owner dies. Every node of a cluster runs the same roles (a node relays only to rooms of a
//! party it serves itself) and the same `AUTH_JWT_SECRET` and `SHARD_SECRET`, which are then
//! required. A gateway-only process (`--role shards`) is no cluster node: point its
//! `--main-url` and `--world-url` at any node.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use clap::Parser;
use partyroom_cluster::cli::ClusterArgs;
use partyroom_room::RoomsBuilder;
use partyroom_server::{Server, ServerConfig};
use partyroom_storage::{MemoryStorage, SqliteStorage, Storage};
use tokio_util::sync::CancellationToken;

use crate::auth::{self, Claims};
use crate::gateway::{GatewayConfig, ShardGateway};
use crate::http_client::BaseUrl;
use crate::model::valid_world_id;
use crate::{World, WorldConfig};

/// A part of the system a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// World, rooms and shards on one port.
    All,
    /// The world service (`/parties/world/...`).
    World,
    /// The game's room server (`/parties/main/...`).
    Rooms,
    /// The shard gateway (`/parties/shard/...`).
    Shards,
}

/// Command line (and environment) of a world/rooms/shards process.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
pub struct Args {
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,
    /// Address to bind.
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// What this process runs (comma-separated: world, rooms, shards; or all).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    pub role: Vec<Role>,
    /// The room server the gateway forwards to (default: this process, with `rooms`).
    #[arg(long, env = "MAIN_URL")]
    pub main_url: Option<String>,
    /// The world service the gateway reports to (default: this process, with `world`).
    #[arg(long, env = "WORLD_URL")]
    pub world_url: Option<String>,
    /// World ids served (`*`: any `world-<name>`).
    #[arg(long, value_delimiter = ',', default_value = "world-default,world-eu")]
    pub worlds: Vec<String>,
    /// SQLite file for rooms and worlds (default: memory only).
    #[arg(long, env = "PARTYROOM_DB", conflicts_with = "cluster")]
    pub db: Option<String>,
    /// Keep everything in memory (the default; accepted for symmetry with the arena).
    #[arg(long, conflicts_with_all = ["db", "cluster"])]
    pub memory: bool,
    /// Cluster mode (`--cluster <postgres url>`, `--node-id`, `--advertise-url`,
    /// `--cluster-secret`, `--lease-ttl-ms`, `--cluster-table-prefix`): rooms and worlds are
    /// saved in PostgreSQL, each served by one node of the cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// HS256 key of admin tokens.
    #[arg(long, env = "AUTH_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Secret shared by shards, rooms and worlds.
    #[arg(long, env = "SHARD_SECRET", hide_env_values = true)]
    pub shard_secret: Option<String>,
    /// Accept admin tokens without `exp` (refused by default).
    #[arg(long, env = "WORLD_ALLOW_TOKENS_WITHOUT_EXP")]
    pub allow_tokens_without_exp: bool,
    /// Remove a shard that reported nothing for this long.
    #[arg(long, default_value_t = 300_000)]
    pub heartbeat_timeout_ms: u64,
    /// How often worlds look for inactive shards.
    #[arg(long, default_value_t = 60_000)]
    pub cleanup_interval_ms: u64,
    /// How often the gateway reports every shard.
    #[arg(long, default_value_t = 30_000)]
    pub stats_interval_ms: u64,
    /// Rooms a world may create by itself (`/connect` with `autoCreate`).
    #[arg(long, default_value_t = 1000)]
    pub max_auto_rooms: usize,
    /// Shards a world may hold.
    #[arg(long, default_value_t = 10_000)]
    pub max_shards: usize,
    /// Open connections the world and rooms roles hold at once. This limit counts every open
    /// TCP connection: HTTP requests, WebSocket handshakes in progress, and WebSockets. The
    /// other caps are the process's open-file limit (RLIMIT_NOFILE, raised to its hard limit
    /// at start; each connection uses one descriptor) and the kernel's accept queue.
    #[arg(long, env = "PARTYROOM_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,
    /// Serve Prometheus metrics at `GET /metrics` (rooms, connections, world assignments,
    /// cluster leases).
    #[arg(long)]
    pub metrics: bool,
    /// Serve the monitor page at `/monitor` (rooms, users, state; disconnect a user) to
    /// holders of an admin token for all worlds (`worlds: ["*"]`), as `?token=` or
    /// `Authorization: Bearer`. Needs the world role.
    #[arg(long)]
    pub monitor: bool,
    /// World of shard ids that name none (also `WORLD_ID`, `SIGNE_WORLD_ID`).
    #[arg(long)]
    pub world_id: Option<String>,
    /// Print an admin token for these worlds (comma-separated, `*` for all), signed with
    /// `AUTH_JWT_SECRET` and valid for `--token-ttl-secs`, then exit.
    #[arg(long, value_delimiter = ',')]
    pub mint_token: Option<Vec<String>>,
    /// Lifetime of `--mint-token` tokens.
    #[arg(long, default_value_t = 3600)]
    pub token_ttl_secs: u64,
}

/// What the application adds: its rooms and its pages.
pub struct App {
    /// Register the game's room types (party `main`) on the builder.
    pub rooms: Box<dyn FnOnce(RoomsBuilder) -> RoomsBuilder + Send>,
    /// Routes served by the public process (the one running the gateway).
    pub pages: Router,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy)]
struct Roles {
    world: bool,
    rooms: bool,
    shards: bool,
}

impl Roles {
    fn of(roles: &[Role]) -> Self {
        let all = roles.contains(&Role::All);
        Self {
            world: all || roles.contains(&Role::World),
            rooms: all || roles.contains(&Role::Rooms),
            shards: all || roles.contains(&Role::Shards),
        }
    }

    fn together(self) -> bool {
        self.world && self.rooms && self.shards
    }
}

fn random_secret() -> String {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).expect("OS random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A secret from the command line or the environment; generated for an all-in-one process,
/// required otherwise (and always in a cluster, whose nodes must share it).
fn secret(
    given: Option<String>,
    name: &str,
    together: bool,
    cluster: bool,
) -> anyhow::Result<(String, bool)> {
    match given.filter(|s| !s.is_empty()) {
        Some(s) => Ok((s, false)),
        None if cluster => bail!("{name} must be set in cluster mode: every node needs the same"),
        None if together => Ok((random_secret(), true)),
        None => bail!("{name} must be set when the parts run in separate processes"),
    }
}

/// Serve until Ctrl-C or SIGTERM.
pub async fn run(args: Args, app: App) -> anyhow::Result<()> {
    if let Some(worlds) = &args.mint_token {
        let secret = args
            .jwt_secret
            .as_deref()
            .filter(|s| !s.is_empty())
            .context("--mint-token needs AUTH_JWT_SECRET (or --jwt-secret)")?;
        let worlds: Vec<&str> = worlds.iter().map(String::as_str).collect();
        let claims = Claims::new(&worlds, Duration::from_secs(args.token_ttl_secs));
        println!("{}", auth::sign(&claims, secret));
        return Ok(());
    }
    let token = CancellationToken::new();
    let signal = token.clone();
    tokio::spawn(async move {
        partyroom_server::shutdown_signal().await;
        signal.cancel();
    });
    run_until(args, app, token).await
}

/// Serve until `shutdown` is cancelled.
pub async fn run_until(args: Args, app: App, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = partyroom_server::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("binding {}:{}", args.host, args.port))?;
    serve_on(listener, args, app, shutdown).await
}

/// Serve on a bound listener (`--port` and `--host` are ignored) until `shutdown` is
/// cancelled.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    args: Args,
    app: App,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let roles = Roles::of(&args.role);
    let together = roles.together();
    let clustered = args.cluster.enabled();
    // Before anything takes its metric handles.
    let prometheus = if args.metrics {
        let p = partyroom_server::prometheus::Prometheus::install()?;
        crate::metrics::describe();
        partyroom_cluster::metrics::describe();
        Some(p)
    } else {
        None
    };
    if clustered && !(roles.world || roles.rooms) {
        bail!("--cluster needs the world or rooms role: a gateway alone is no cluster node");
    }
    let (shard_secret, generated_shard) = secret(
        args.shard_secret.clone(),
        "SHARD_SECRET",
        together,
        clustered,
    )?;
    if generated_shard {
        tracing::warn!("SHARD_SECRET is not set: using a random one for this run");
    }
    let addr = listener.local_addr()?;
    let cluster = args.cluster.join(addr).await?;
    let mut builder = partyroom_room::Rooms::builder();
    builder = match &cluster {
        Some(cluster) => builder
            .storage(cluster.storage())
            .placement(cluster.placement()),
        None => {
            let storage: Arc<dyn Storage> = match &args.db {
                Some(path) => Arc::new(
                    SqliteStorage::open(path)
                        .await
                        .with_context(|| format!("opening {path}"))?,
                ),
                None => Arc::new(MemoryStorage::new()),
            };
            builder.storage(storage)
        }
    };
    if roles.rooms {
        builder = (app.rooms)(builder);
    }
    let mut world_config = None;
    if roles.world {
        let (jwt_secret, generated) = secret(
            args.jwt_secret.clone(),
            "AUTH_JWT_SECRET",
            together,
            clustered,
        )?;
        if generated {
            let token = auth::sign(&Claims::new(&["*"], Duration::from_secs(3600)), &jwt_secret);
            tracing::warn!(
                "AUTH_JWT_SECRET is not set: using a random one for this run; an admin token \
                 valid for one hour: {token}"
            );
        }
        let config = WorldConfig {
            require_exp: !args.allow_tokens_without_exp,
            heartbeat_timeout: Duration::from_millis(args.heartbeat_timeout_ms),
            cleanup_interval: Duration::from_millis(args.cleanup_interval_ms.max(1)),
            max_auto_rooms: args.max_auto_rooms,
            max_shards: args.max_shards,
            ..WorldConfig::new(jwt_secret, shard_secret.clone())
        }
        .install();
        world_config = Some(config);
        if args.worlds.iter().any(|w| w == "*") {
            builder = builder.room::<World>("world")?;
        } else {
            for id in &args.worlds {
                if !valid_world_id(id) {
                    bail!("invalid world id `{id}`: expected world-<name> ([A-Za-z0-9_-])");
                }
                builder = builder.room_with::<World>("world", World::room_config(id))?;
            }
        }
    }
    let rooms = builder.build();

    let own = if addr.ip().is_unspecified() || addr.ip().is_loopback() {
        format!("http://127.0.0.1:{}", addr.port())
    } else {
        format!("http://{addr}")
    };

    let gateway = if roles.shards {
        let pick = |given: &Option<String>, local: bool, flag: &str| -> anyhow::Result<BaseUrl> {
            let url = match (given, local) {
                (Some(u), _) => u.clone(),
                (None, true) => own.clone(),
                (None, false) => {
                    bail!("{flag} is required when this process does not run that part")
                }
            };
            Ok(BaseUrl::parse(&url)?)
        };
        let mut config = GatewayConfig::new(
            pick(&args.main_url, roles.rooms, "--main-url")?,
            pick(&args.world_url, roles.world, "--world-url")?,
            shard_secret.clone(),
        );
        config.stats_interval = Duration::from_millis(args.stats_interval_ms.max(1));
        config.forward_world = !roles.world;
        if let Some(w) = &args.world_id {
            config.world_id = w.clone();
        }
        let gateway = ShardGateway::new(config);
        gateway.start();
        Some(gateway)
    } else {
        None
    };

    if let Some(config) = &world_config {
        crate::spawn_cleanup(
            rooms.clone(),
            "world",
            config.cleanup_interval,
            shutdown.clone(),
        );
    }
    let health = Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
    let mut extra = health;
    if let Some(p) = &prometheus {
        extra = extra.merge(p.router());
    }
    if args.monitor {
        let Some(config) = world_config.clone() else {
            bail!("--monitor needs the world role: its admin tokens open the monitor");
        };
        let auth: partyroom_server::monitor::MonitorAuth = Arc::new(move |headers, query| {
            partyroom_server::monitor::bearer_token(headers, query)
                .and_then(|token| auth::verify(&token, &config).ok())
                .is_some_and(|claims| claims.grants("*"))
        });
        let monitor = partyroom_server::monitor::Monitor::with_auth(rooms.clone(), auth);
        extra = extra.merge(monitor.router());
    }
    if let Some(gw) = &gateway {
        extra = extra.merge(gw.router()).merge(app.pages);
    }
    let names: Vec<&str> = [
        (roles.world, "world"),
        (roles.rooms, "rooms"),
        (roles.shards, "shards"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, n)| *n)
    .collect();
    tracing::info!(roles = %names.join(","), "starting");
    println!("partyroom listening on http://{addr}");
    let stop = shutdown.clone();
    let signal = async move { stop.cancelled().await };
    let served = if roles.world || roles.rooms {
        let config = ServerConfig {
            shard_secret: Some(shard_secret),
            max_connections: args.max_connections,
            ..ServerConfig::default()
        };
        let server = match &cluster {
            Some(cluster) => {
                let server = Server::with_config(rooms, cluster.server_config(config));
                cluster.start(server.rooms().clone());
                server.merge(extra.merge(cluster.router()))
            }
            None => Server::with_config(rooms, config).merge(extra),
        };
        server.serve(listener, signal).await.map_err(Into::into)
    } else {
        axum::serve(listener, extra)
            .with_graceful_shutdown(signal)
            .await
            .map_err(anyhow::Error::from)
    };
    shutdown.cancel();
    if let Some(gw) = gateway {
        gw.shutdown().await;
    }
    // The rooms are saved (or the server failed): hand their leases over either way.
    if let Some(cluster) = cluster {
        cluster.drain().await;
    }
    served
}

/// Log to stderr (`RUST_LOG`, default `info`).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .try_init();
}
