//! `cargo run --release`: the arena demo on http://127.0.0.1:3000, saved to `partyroom.db`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use partyroom::cluster::cli::ClusterArgs;
use partyroom::storage::{MemoryStorage, SqliteStorage, Storage};

/// The partyroom arena demo server.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = 3000)]
    port: u16,
    /// Address to bind.
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    host: String,
    /// SQLite file where rooms and sessions are saved.
    #[arg(
        long,
        env = "PARTYROOM_DB",
        default_value = "partyroom.db",
        conflicts_with = "cluster"
    )]
    db: String,
    /// Keep rooms in memory only (nothing survives a restart).
    #[arg(long, conflicts_with_all = ["db", "cluster"])]
    memory: bool,
    /// Cluster mode (`--cluster <postgres url>`, `--node-id`, `--advertise-url`,
    /// `--cluster-secret`, `--lease-ttl-ms`, `--cluster-table-prefix`).
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Save changes at most this many milliseconds after they happen (default: the arena's
    /// 2,500 ms; 0 saves after every change).
    #[arg(long)]
    storage_throttle_ms: Option<u64>,
    /// Unload a room this many milliseconds after its last client left (default 60,000).
    #[arg(long)]
    idle_timeout_ms: Option<u64>,
    /// Batch state patches: send at most one every this many milliseconds (default: send every
    /// change at once).
    #[arg(long)]
    sync_throttle_ms: Option<u64>,
    /// With a sync throttle, handle every message as it arrives, in arrival order, instead of
    /// holding busy clients' messages until the end of each window.
    #[arg(long)]
    no_hold_reads: bool,
    /// Messages each client may send per second before the server drops them (bursts of
    /// twice as many pass). Default 100.
    #[arg(long)]
    max_messages_per_second: Option<u32>,
    /// Open connections the server holds at once. This limit counts every open TCP
    /// connection: HTTP requests, WebSocket handshakes in progress, and WebSockets. The other
    /// caps are the process's open-file limit (RLIMIT_NOFILE, raised to its hard limit at
    /// start; each connection uses one descriptor) and the kernel's accept queue.
    #[arg(long, env = "PARTYROOM_MAX_CONNECTIONS", default_value_t = 100_000)]
    max_connections: usize,
    /// Ping a WebSocket client that has sent nothing for this many milliseconds, and again
    /// each interval while it stays silent (0: no pings and no liveness check). Default 25,000.
    #[arg(long)]
    ping_interval_ms: Option<u64>,
    /// Drop a WebSocket client from which nothing (a message, a pong) has come for this many
    /// milliseconds. Default 60,000.
    #[arg(long)]
    liveness_timeout_ms: Option<u64>,
    /// Runtime worker threads (default: the CPUs this process may run on). With 1, the
    /// server runs on tokio's single-threaded runtime, which wakes up for less.
    #[arg(long, env = "PARTYROOM_THREADS")]
    threads: Option<usize>,
    /// Serve Prometheus metrics at `GET /metrics` on the main port.
    #[arg(long)]
    metrics: bool,
    /// Serve Prometheus metrics at `GET /metrics` on this address of their own (an admin
    /// port, e.g. `127.0.0.1:9464`), instead of or besides the main port.
    #[arg(long, env = "PARTYROOM_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Serve the monitor page at `/monitor` (rooms, users, state; disconnect a user), for
    /// requests with this token (`/monitor?token=…` or `Authorization: Bearer …`).
    #[arg(long, env = "PARTYROOM_MONITOR_TOKEN", hide_env_values = true)]
    monitor_token: Option<String>,
}

/// mimalloc: the room's hot path allocates small, short-lived buffers (a read chunk per
/// message, a patch per sync window); with glibc's allocator they cost about 7 % of the
/// server's CPU in the batched-sync benchmark, and idle memory per client is no higher.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    partyroom::server::FdLimit::raise_and_log(args.max_connections);
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    // Before anything takes its metric handles.
    let prometheus = if args.metrics || args.metrics_addr.is_some() {
        let p = partyroom::server::prometheus::Prometheus::install()?;
        partyroom::cluster::metrics::describe();
        Some(p)
    } else {
        None
    };
    if let (Some(p), Some(addr)) = (&prometheus, args.metrics_addr) {
        let admin = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics address {addr}"))?;
        tracing::info!(%addr, "metrics at http://{addr}/metrics");
        let router = p.router();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(admin, router).await {
                tracing::error!(error = %e, "metrics server failed");
            }
        });
    }
    let listener = partyroom::server::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("binding {}:{}", args.host, args.port))?;
    let addr = listener.local_addr()?;
    let cluster = args.cluster.join(addr).await?;
    let storage: Arc<dyn Storage> = if args.memory || cluster.is_some() {
        Arc::new(MemoryStorage::new())
    } else {
        Arc::new(
            SqliteStorage::open(&args.db)
                .await
                .with_context(|| format!("opening {}", args.db))?,
        )
    };
    let options = partyroom_arena::Options {
        storage,
        storage_throttle: args.storage_throttle_ms.map(Duration::from_millis),
        idle_timeout: args.idle_timeout_ms.map(Duration::from_millis),
        sync_throttle: args.sync_throttle_ms.map(Duration::from_millis),
        hold_reads: !args.no_hold_reads,
        max_messages_per_second: args.max_messages_per_second,
        max_connections: Some(args.max_connections),
        ping_interval: args.ping_interval_ms.map(Duration::from_millis),
        liveness_timeout: args.liveness_timeout_ms.map(Duration::from_millis),
        cluster: cluster.clone(),
    };
    println!("partyroom listening on http://{addr}");
    if cluster.is_none() && !args.memory {
        tracing::info!(db = %args.db, "rooms are saved to SQLite");
    }
    let mut server = partyroom_arena::server(&options);
    if let (Some(p), true) = (&prometheus, args.metrics) {
        server = server.merge(p.router());
    }
    if let Some(token) = args.monitor_token.filter(|t| !t.is_empty()) {
        let monitor =
            partyroom::server::monitor::Monitor::with_token(server.rooms().clone(), token);
        server = server.merge(monitor.router());
        tracing::info!("monitor at http://{addr}/monitor?token=…");
    }
    let served = server
        .serve(listener, partyroom::server::shutdown_signal())
        .await;
    // The rooms are saved (or the server failed): hand their leases over either way.
    if let Some(cluster) = cluster {
        cluster.drain().await;
    }
    served?;
    Ok(())
}
