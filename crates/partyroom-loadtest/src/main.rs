//! `partyroom-loadtest`: drives thousands of [`partyroom_client`] clients against an arena room
//! (partyroom's, or the original `@signe/room`'s: any server of the same wire protocol) from
//! one multi-threaded process, and measures.
//!
//! Scenarios (subcommands):
//! - `joins`: N clients join one room at the same moment; time until every client has its
//!   first packet, handshake and first-packet percentiles.
//! - `moves`: N clients in one room each send `move` at a fixed rate; move-to-echo latency
//!   (p50/p95/p99/p999) — the echo is the sync frame that carries the sender's own new `x`,
//!   unique per move — and frames and bytes received per second.
//! - `throughput`: closed loop, each client sends its next move as soon as the previous one
//!   echoed; the acknowledged moves per second at saturation, and their latency.
//! - `reconnect`: N clients connected through a relay that cuts every socket at once; the
//!   clients reconnect by themselves with the same session ids: time until all have their
//!   first packet again, and whether they kept their public id.
//! - `idle`: N clients over R rooms held S seconds: the server's RSS per client.
//! - `slow`: N clients join one room and stop reading their sockets while a few drivers send
//!   moves: the server's RSS, open file descriptors and the kernel memory of its side of the
//!   slow sockets (send queues, from `ss -tmnH`) over time, per slow client, and whether and
//!   when the server drops them.
//!
//! With `--server-pid`, the server's CPU (% of one core) and RSS are read from `/proc` over
//! the run: CPU from the exact run time of its threads (`/proc/<pid>/task/*/schedstat`), with
//! the clock-tick figure of `/proc/<pid>/stat` beside it in the JSON. `--json` prints one JSON object; `--plot FILE.svg` draws latency, moves/s,
//! frames/s and CPU over time. A progress bar is shown on stderr when stdout is a terminal
//! and `CI` is not `true`.
//!
//! Only loopback servers are accepted, and every run is bounded in clients and time.

mod metrics;
mod plot;
mod proxy;
mod scenarios;
mod slow;
mod sockets;

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

use crate::metrics::{Metrics, ProcWindow, Sampler};
use crate::scenarios::{Pace, Run};

/// The load generator allocates for every frame it parses; mimalloc keeps that cheaper than
/// glibc's allocator (malloc and free were a quarter of its CPU profile in a join storm).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Most clients one run may open.
const MAX_CLIENTS: usize = 20_000;
/// Longest measured or held period of one run, seconds.
const MAX_SECONDS: f64 = 600.0;
/// Longest run, seconds (`--timeout`).
const MAX_TIMEOUT: u64 = 1800;

#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Server base URL, e.g. ws://127.0.0.1:3000 (loopback only: localhost, 127.0.0.0/8, [::1]).
    #[arg(long, default_value = "ws://127.0.0.1:3000", global = true)]
    url: String,
    /// Room id (for `idle`, the prefix of the room ids). A random one by default.
    #[arg(long, global = true)]
    room: Option<String>,
    /// Print the result as one JSON object on stdout (instead of the human summary).
    #[arg(long, global = true)]
    json: bool,
    /// Write a plot of latency, throughput and CPU over time to this SVG file.
    #[arg(long, global = true, value_name = "FILE.svg")]
    plot: Option<std::path::PathBuf>,
    /// The server's process id: its CPU and RSS are sampled from /proc during the run.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// A name for the server in the output (e.g. "partyroom").
    #[arg(long, global = true, default_value = "server")]
    label: String,
    /// Worker threads of the load generator (default: the CPUs it may run on).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Give up on anything still pending after this many seconds from the start.
    #[arg(long, global = true, default_value_t = 300)]
    timeout: u64,
    /// Frames each client may queue unread before skipping the oldest (default: 256 for
    /// joins, 1024 for reconnect, 4096 for moves and throughput, 64 for idle).
    #[arg(long, global = true, default_value_t = 0)]
    event_capacity: usize,
    /// No progress bar.
    #[arg(long, global = true)]
    no_progress: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// N clients join one room at the same moment.
    Joins {
        /// Number of clients.
        #[arg(long, default_value_t = 1000)]
        clients: usize,
    },
    /// N clients in one room each send `move` at a fixed rate.
    Moves {
        /// Number of clients.
        #[arg(long, default_value_t = 100)]
        clients: usize,
        /// Moves per second per client.
        #[arg(long, default_value_t = 1.5)]
        rate: f64,
        /// Seconds of sending.
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        /// Seconds of sending before measuring starts.
        #[arg(long, default_value_t = 0.0)]
        warmup: f64,
        /// Seconds to wait for the last echoes after sending stops.
        #[arg(long, default_value_t = 5.0)]
        drain: f64,
        /// Clients connecting at the same time during setup.
        #[arg(long, default_value_t = 50)]
        concurrency: usize,
    },
    /// Closed loop: each client sends its next move as soon as the previous one echoed.
    Throughput {
        /// Number of clients (moves in flight).
        #[arg(long, default_value_t = 100)]
        clients: usize,
        /// Seconds of measurement.
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        /// Seconds of load before measuring starts.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        /// Milliseconds to wait for an echo before sending the next move anyway.
        #[arg(long, default_value_t = 5000)]
        echo_timeout_ms: u64,
        /// At most this many moves per second per client (0: no cap). partyroom drops what a
        /// client sends beyond 100 messages per second, and a dropped move stalls its client
        /// for the echo timeout; the default stays under that limit. The result says how many
        /// moves the cap held back.
        #[arg(long, default_value_t = 90.0)]
        max_rate: f64,
        /// Clients connecting at the same time during setup.
        #[arg(long, default_value_t = 50)]
        concurrency: usize,
    },
    /// N clients lose their sockets at once and reconnect with the same session ids.
    Reconnect {
        /// Number of clients.
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Smallest delay before a client reconnects (its reconnection policy), ms.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Random extra delay per client (its policy's jitter), ms.
        #[arg(long, default_value_t = 0)]
        jitter_ms: u64,
        /// Clients connecting at the same time during setup.
        #[arg(long, default_value_t = 100)]
        concurrency: usize,
    },
    /// N clients over R rooms connect and stay idle.
    Idle {
        /// Number of clients.
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
        /// Spread the clients over this many rooms.
        #[arg(long, default_value_t = 100)]
        rooms: usize,
        /// Seconds to hold them once all are connected.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Clients connecting at the same time.
        #[arg(long, default_value_t = 200)]
        concurrency: usize,
    },
    /// N clients join one room and stop reading while drivers send moves (needs `ss`).
    Slow(slow::SlowArgs),
}

impl Scenario {
    fn name(&self) -> &'static str {
        match self {
            Scenario::Joins { .. } => "joins",
            Scenario::Moves { .. } => "moves",
            Scenario::Throughput { .. } => "throughput",
            Scenario::Reconnect { .. } => "reconnect",
            Scenario::Idle { .. } => "idle",
            Scenario::Slow(_) => "slow",
        }
    }

    fn clients(&self) -> usize {
        match self {
            Scenario::Joins { clients }
            | Scenario::Moves { clients, .. }
            | Scenario::Throughput { clients, .. }
            | Scenario::Reconnect { clients, .. }
            | Scenario::Idle { clients, .. }
            | Scenario::Slow(slow::SlowArgs { clients, .. }) => *clients,
        }
    }

    /// Sockets the load generator holds at once.
    fn sockets(&self) -> usize {
        match self {
            // Client to relay, relay to client, relay to server.
            Scenario::Reconnect { clients, .. } => clients * 3,
            Scenario::Slow(a) => a.clients + a.drivers,
            other => other.clients(),
        }
    }

    fn params(&self) -> Value {
        match self {
            Scenario::Joins { clients } => json!({ "clients": clients }),
            Scenario::Moves {
                clients,
                rate,
                seconds,
                warmup,
                drain,
                concurrency,
            } => json!({
                "clients": clients, "rate": rate, "seconds": seconds, "warmup": warmup,
                "drain": drain, "concurrency": concurrency,
            }),
            Scenario::Throughput {
                clients,
                seconds,
                warmup,
                echo_timeout_ms,
                max_rate,
                concurrency,
            } => json!({
                "clients": clients, "seconds": seconds, "warmup": warmup,
                "echo_timeout_ms": echo_timeout_ms, "max_rate": max_rate,
                "concurrency": concurrency,
            }),
            Scenario::Reconnect {
                clients,
                delay_ms,
                jitter_ms,
                concurrency,
            } => json!({
                "clients": clients, "delay_ms": delay_ms, "jitter_ms": jitter_ms,
                "concurrency": concurrency,
            }),
            Scenario::Idle {
                clients,
                rooms,
                seconds,
                concurrency,
            } => json!({
                "clients": clients, "rooms": rooms, "seconds": seconds,
                "concurrency": concurrency,
            }),
            Scenario::Slow(a) => serde_json::to_value(a).unwrap_or_default(),
        }
    }

    /// Refuse unbounded or absurd runs.
    fn check_bounds(&self) -> anyhow::Result<()> {
        let clients = self.clients();
        if clients == 0 || clients > MAX_CLIENTS {
            bail!("--clients must be between 1 and {MAX_CLIENTS}");
        }
        let seconds = match self {
            Scenario::Moves {
                seconds,
                warmup,
                drain,
                ..
            } => {
                if !(0.0..=MAX_SECONDS).contains(warmup) || !(0.0..=60.0).contains(drain) {
                    bail!("--warmup must be within 0..={MAX_SECONDS}, --drain within 0..=60");
                }
                *seconds
            }
            Scenario::Throughput {
                seconds,
                warmup,
                max_rate,
                ..
            } => {
                if !(0.0..=MAX_SECONDS).contains(warmup) {
                    bail!("--warmup must be within 0..={MAX_SECONDS}");
                }
                if !(*max_rate >= 0.0 && *max_rate <= 10_000.0) {
                    bail!("--max-rate must be within 0..=10000");
                }
                *seconds
            }
            Scenario::Idle { seconds, .. } => *seconds,
            Scenario::Slow(slow::SlowArgs {
                drivers,
                rate,
                seconds,
                sample_ms,
                after_close,
                client_rcvbuf,
                ..
            }) => {
                if *client_rcvbuf > 64 << 20 {
                    bail!("--client-rcvbuf must be at most 64 MiB");
                }
                if !(1..=1000).contains(drivers) {
                    bail!("--drivers must be between 1 and 1000");
                }
                if !(*rate > 0.0 && *rate <= 1000.0) {
                    bail!("--rate must be within (0, 1000] moves per second per driver");
                }
                if !(100..=10_000).contains(sample_ms) {
                    bail!("--sample-ms must be within 100..=10000");
                }
                if !(0.0..=60.0).contains(after_close) {
                    bail!("--after-close must be within 0..=60 seconds");
                }
                *seconds
            }
            _ => 0.0,
        };
        if !(0.0..=MAX_SECONDS).contains(&seconds) {
            bail!("--seconds must be within 0..={MAX_SECONDS}");
        }
        if let Scenario::Moves { rate, .. } = self
            && !(*rate > 0.0 && *rate <= 1000.0)
        {
            bail!("--rate must be within (0, 1000] moves per second per client");
        }
        Ok(())
    }
}

/// The `host:port` of a loopback URL (`ws://`, `http://` or no scheme), or an error.
fn loopback_host(url: &str) -> anyhow::Result<String> {
    let rest = ["ws://", "http://"]
        .iter()
        .find_map(|p| url.strip_prefix(p))
        .unwrap_or(url);
    if url.starts_with("wss://") || url.starts_with("https://") {
        bail!("TLS is not supported; use a ws:// loopback URL");
    }
    let host_port = rest.strip_suffix('/').unwrap_or(rest);
    if host_port.contains('/') || host_port.contains('?') || host_port.contains('@') {
        bail!("--url must be a base URL like ws://127.0.0.1:3000, not {url}");
    }
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!(
            "refusing to load {host:?}: the load generator only targets loopback addresses \
             (localhost, 127.0.0.0/8, [::1])"
        );
    }
    let port_given = match host_port.strip_prefix('[') {
        Some(v6) => v6.contains("]:"),
        None => host_port.contains(':'),
    };
    Ok(if port_given {
        host_port.to_owned()
    } else {
        format!("{host_port}:80")
    })
}

/// Resolve `host:port` to a loopback socket address.
async fn resolve(host: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(host)
        .await
        .with_context(|| format!("resolving {host}"))?
        .find(|a| a.ip().is_loopback())
        .with_context(|| format!("{host} has no loopback address"))
}

fn progress_enabled(no_progress: bool) -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    !no_progress && !ci && std::io::stdout().is_terminal()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let host = loopback_host(&args.url)?;
    args.scenario.check_bounds()?;
    scenarios::check_fd_limit(args.scenario.sockets())?;
    if args.timeout == 0 || args.timeout > MAX_TIMEOUT {
        bail!("--timeout must be within 1..={MAX_TIMEOUT} seconds");
    }
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(args, host, threads));
    // Clients still closing in the background must not hold the process.
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}

async fn run(args: Args, host: String, threads: usize) -> anyhow::Result<()> {
    let addr = resolve(&host).await?;
    let room = args
        .room
        .clone()
        .unwrap_or_else(|| format!("load-{:08x}", fastrand::u32(..)));
    let metrics = Metrics::new();
    let bar = if progress_enabled(args.no_progress) {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>12.bold} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
            )
            .expect("valid template"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let run = Run {
        host,
        addr,
        room,
        run_id: format!("lt{:08x}", fastrand::u32(..)),
        server_pid: args.server_pid,
        metrics: metrics.clone(),
        bar: bar.clone(),
        deadline: Instant::now() + Duration::from_secs(args.timeout),
        event_capacity: args.event_capacity,
    };
    let whole = ProcWindow::start(args.server_pid);
    let sampler = Sampler::start(metrics.clone(), args.server_pid, Duration::from_secs(1));
    let status = spawn_status_line(metrics.clone(), bar.clone(), sampler.points());

    let outcome = match &args.scenario {
        Scenario::Joins { clients } => scenarios::joins(&run, *clients).await,
        Scenario::Moves {
            clients,
            rate,
            seconds,
            warmup,
            drain,
            concurrency,
        } => {
            scenarios::moves(
                &run,
                *clients,
                Pace::Rate(*rate),
                *seconds,
                *warmup,
                *drain,
                *concurrency,
            )
            .await
        }
        Scenario::Throughput {
            clients,
            seconds,
            warmup,
            echo_timeout_ms,
            max_rate,
            concurrency,
        } => {
            scenarios::moves(
                &run,
                *clients,
                Pace::Closed {
                    timeout: Duration::from_millis(*echo_timeout_ms),
                    max_rate: *max_rate,
                },
                *seconds,
                *warmup,
                0.0,
                *concurrency,
            )
            .await
        }
        Scenario::Reconnect {
            clients,
            delay_ms,
            jitter_ms,
            concurrency,
        } => {
            scenarios::reconnect(
                &run,
                *clients,
                Duration::from_millis(*delay_ms),
                Duration::from_millis(*jitter_ms),
                *concurrency,
            )
            .await
        }
        Scenario::Idle {
            clients,
            rooms,
            seconds,
            concurrency,
        } => scenarios::idle(&run, *clients, *rooms, *seconds, *concurrency).await,
        Scenario::Slow(a) => slow::slow(&run, a.clone()).await,
    };
    status.abort();
    bar.finish_and_clear();
    let timeline = sampler.finish();
    let results = outcome?;
    let report = json!({
        "tool": "partyroom-loadtest",
        "version": env!("CARGO_PKG_VERSION"),
        "label": args.label,
        "url": args.url,
        "room": run.room,
        "scenario": args.scenario.name(),
        "params": args.scenario.params(),
        "load_generator_threads": threads,
        "elapsed_ms": metrics::round3(metrics.started().elapsed().as_secs_f64() * 1000.0),
        "results": results,
        "whole_run": whole.finish(),
        "timeline": timeline.iter().map(metrics::Point::to_json).collect::<Vec<_>>(),
    });
    if let Some(path) = &args.plot {
        let title = format!("{} — {}", args.label, args.scenario.name());
        let subtitle = compact_params(&args.scenario.params());
        std::fs::write(path, plot::render(&title, &subtitle, &timeline))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{report}");
    } else {
        print!("{}", summary(&report));
    }
    Ok(())
}

/// Every 200 ms: the progress bar's position and a one-line status from the last second.
fn spawn_status_line(
    metrics: Arc<Metrics>,
    bar: ProgressBar,
    points: Arc<std::sync::Mutex<Vec<metrics::Point>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if bar.is_hidden() {
            return;
        }
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            bar.set_position(metrics.progress.load(std::sync::atomic::Ordering::Relaxed));
            let last = points
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .last()
                .cloned();
            if let Some(p) = last {
                let mut msg = format!("{:.0} frames/s", p.packets_per_s);
                if p.sent_per_s > 0.0 || p.acked_per_s > 0.0 {
                    msg.push_str(&format!(", {:.0} moves/s acked", p.acked_per_s));
                }
                if let Some(p99) = p.p99_ms {
                    msg.push_str(&format!(", p99 {p99:.1} ms"));
                }
                if let Some(cpu) = p.server_cpu {
                    msg.push_str(&format!(", server {cpu:.0}% CPU"));
                }
                bar.set_message(msg);
            }
        }
    })
}

fn compact_params(params: &Value) -> String {
    params
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// The human summary: the results, one line per figure.
fn summary(report: &Value) -> String {
    let mut out = format!(
        "{} — {} ({})\n",
        report["label"].as_str().unwrap_or("server"),
        report["scenario"].as_str().unwrap_or("?"),
        compact_params(&report["params"]),
    );
    write_section(&mut out, &report["results"], 1);
    out
}

fn write_section(out: &mut String, v: &Value, depth: usize) {
    let Some(map) = v.as_object() else { return };
    let indent = "  ".repeat(depth);
    for (k, v) in map {
        if v.is_null() {
            continue;
        }
        if let Some(p50) = v.get("p50_ms") {
            out.push_str(&format!(
                "{indent}{k}: p50 {} ms, p95 {} ms, p99 {} ms, p999 {} ms, max {} ms ({} samples)\n",
                p50, v["p95_ms"], v["p99_ms"], v["p999_ms"], v["max_ms"], v["count"]
            ));
        } else if v.get("count") == Some(&json!(0)) {
            out.push_str(&format!("{indent}{k}: no samples\n"));
        } else if let Some(items) = v.as_array() {
            out.push_str(&format!(
                "{indent}{k}: {} entries (see --json)\n",
                items.len()
            ));
        } else if v.is_object() {
            out.push_str(&format!("{indent}{k}:\n"));
            write_section(out, v, depth + 1);
        } else {
            out.push_str(&format!("{indent}{k}: {v}\n"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls() {
        assert_eq!(
            loopback_host("ws://127.0.0.1:3000").unwrap(),
            "127.0.0.1:3000"
        );
        assert_eq!(
            loopback_host("http://localhost:8080/").unwrap(),
            "localhost:8080"
        );
        assert_eq!(loopback_host("127.1.2.3:9").unwrap(), "127.1.2.3:9");
        assert_eq!(loopback_host("ws://[::1]:3000").unwrap(), "[::1]:3000");
        assert_eq!(loopback_host("ws://localhost").unwrap(), "localhost:80");
        for bad in [
            "ws://10.0.0.1:3000",
            "ws://192.168.1.2:3000",
            "ws://example.com:3000",
            "ws://127.0.0.1.example.com:3000",
            "wss://127.0.0.1:3000",
            "ws://[::2]:3000",
            "ws://127.0.0.1:3000/parties/main/x",
            "ws://user@127.0.0.1:3000",
        ] {
            assert!(loopback_host(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn bounds_are_enforced() {
        let too_many = Scenario::Joins { clients: 100_000 };
        assert!(too_many.check_bounds().is_err());
        let too_long = Scenario::Idle {
            clients: 10,
            rooms: 1,
            seconds: 10_000.0,
            concurrency: 1,
        };
        assert!(too_long.check_bounds().is_err());
        let ok = Scenario::Moves {
            clients: 10,
            rate: 1.5,
            seconds: 5.0,
            warmup: 0.0,
            drain: 1.0,
            concurrency: 10,
        };
        assert!(ok.check_bounds().is_ok());
        let slow = |drivers: usize, sample_ms: u64| {
            Scenario::Slow(slow::SlowArgs {
                clients: 200,
                drivers,
                rate: 60.0,
                seconds: 20.0,
                sample_ms,
                after_close: 2.0,
                client_rcvbuf: 4096,
                concurrency: 50,
            })
        };
        assert!(slow(4, 500).check_bounds().is_ok());
        assert_eq!(slow(4, 500).sockets(), 204);
        assert!(slow(0, 500).check_bounds().is_err());
        assert!(slow(4, 10).check_bounds().is_err());
        assert!(
            Scenario::Reconnect {
                clients: 10,
                delay_ms: 0,
                jitter_ms: 0,
                concurrency: 1
            }
            .sockets()
                == 30
        );
    }

    #[test]
    fn summary_lists_percentiles() {
        let report = json!({
            "label": "partyroom", "scenario": "moves", "params": {"clients": 2},
            "results": {"move_to_echo": {"count": 3, "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0,
            "p999_ms": 3.0, "max_ms": 3.0}, "window": {"packets_per_second": 10.0},
            "samples": [{"t": 1}, {"t": 2}]},
        });
        let s = summary(&report);
        assert!(s.contains("move_to_echo: p50 1.0 ms"));
        assert!(s.contains("packets_per_second: 10.0"));
        assert!(s.contains("samples: 2 entries (see --json)"));
    }
}
