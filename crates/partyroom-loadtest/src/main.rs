//! `partyroom-loadtest`: drives many WebSocket clients against an arena room and measures.
//!
//! Scenarios:
//! - `joins`: N clients connect to one room at once; reports the time until every client has
//!   its first packet, and connect latency percentiles.
//! - `moves`: N clients in one room each send `move` at a fixed rate; reports the latency from
//!   sending a move to receiving the sync packet that carries it back (p50/p95/p99/p999) and the
//!   packets per second received.
//!
//! Traffic goes only to the given URL, which must be a loopback address; every run is bounded
//! in clients and time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Server base URL, e.g. ws://127.0.0.1:3000 (loopback only).
    #[arg(long, default_value = "ws://127.0.0.1:3000")]
    url: String,
    /// Room id (a random one by default).
    #[arg(long)]
    room: Option<String>,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
    /// The server's process id: its RSS and CPU time are measured around the run.
    #[arg(long)]
    server_pid: Option<u32>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// N clients join one room at the same time.
    Joins {
        /// Number of clients.
        #[arg(long, default_value_t = 1000)]
        clients: usize,
    },
    /// N clients connect (at most `concurrency` at once) and stay idle.
    Idle {
        /// Number of clients.
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
        /// Connections being opened at the same time.
        #[arg(long, default_value_t = 200)]
        concurrency: usize,
        /// Seconds to hold them once all are connected.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Spread the clients over this many rooms.
        #[arg(long, default_value_t = 1)]
        rooms: usize,
    },
    /// N clients each send `move` at a fixed rate.
    Moves {
        /// Number of clients.
        #[arg(long, default_value_t = 100)]
        clients: usize,
        /// Moves per second per client.
        #[arg(long, default_value_t = 1.5)]
        rate: f64,
        /// Seconds of measurement (after joining).
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
}

fn check_loopback(url: &str) -> anyhow::Result<()> {
    let host = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split(['/', ':']).next())
        .unwrap_or_default();
    if !(host == "localhost" || host.starts_with("127.") || host == "[") {
        bail!("refusing to load {host}: the load generator only targets loopback addresses");
    }
    Ok(())
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn join(base: &str, room: &str, session: &str) -> anyhow::Result<(Ws, String)> {
    let url = format!("{base}/parties/main/{room}?id={session}&name=bot");
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(&url, None, true)
        .await
        .with_context(|| format!("connecting {url}"))?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t)?;
                if let Some(pid) = v["value"]["pId"].as_str() {
                    return Ok((ws, pid.to_owned()));
                }
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => bail!("closed before the first packet"),
        }
    }
}

fn percentiles(h: &Histogram<u64>) -> Value {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    json!({
        "count": h.len(),
        "p50_ms": ms(0.50),
        "p95_ms": ms(0.95),
        "p99_ms": ms(0.99),
        "p999_ms": ms(0.999),
        "max_ms": h.max() as f64 / 1000.0,
    })
}

async fn joins(base: &str, room: &str, clients: usize) -> anyhow::Result<Value> {
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        let (base, room) = (base.to_owned(), room.to_owned());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let (ws, _) = join(&base, &room, &format!("join-{i}")).await?;
            anyhow::Ok((t.elapsed(), ws))
        }));
    }
    let mut hist = Histogram::<u64>::new(3)?;
    let mut sockets = Vec::with_capacity(clients);
    for t in tasks {
        let (elapsed, ws) = t.await??;
        hist.record(elapsed.as_micros() as u64)?;
        sockets.push(ws);
    }
    let total = start.elapsed();
    for mut ws in sockets {
        let _ = ws.close(None).await;
    }
    Ok(json!({
        "scenario": "joins",
        "clients": clients,
        "all_joined_ms": total.as_secs_f64() * 1000.0,
        "first_packet": percentiles(&hist),
    }))
}

async fn moves(
    base: &str,
    room: &str,
    clients: usize,
    rate: f64,
    seconds: u64,
) -> anyhow::Result<Value> {
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let received = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let mut joined = Vec::with_capacity(clients);
    for i in 0..clients {
        joined.push(join(base, room, &format!("mover-{i}-{}", fastrand::u32(..))).await?);
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut tasks = Vec::new();
    for (i, (ws, pid)) in joined.into_iter().enumerate() {
        let (hist, received, sent) = (hist.clone(), received.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let (mut tx, mut rx) = ws.split();
            // Moves in flight: x coordinate -> send time. Each x is unique per client.
            let pending: Arc<Mutex<Vec<(f64, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
            let reader = {
                let pending = pending.clone();
                let pid = pid.clone();
                async move {
                    while let Some(Ok(msg)) = rx.next().await {
                        let Message::Text(t) = msg else { continue };
                        received.fetch_add(1, Ordering::Relaxed);
                        let Ok(v) = serde_json::from_str::<Value>(&t) else {
                            continue;
                        };
                        if let Some(x) = v["value"]["players"][&pid]["x"].as_f64() {
                            let now = Instant::now();
                            let mut p = pending.lock().await;
                            if let Some(pos) = p.iter().position(|(px, _)| *px == x) {
                                let (_, at) = p.swap_remove(pos);
                                let _ = hist
                                    .lock()
                                    .await
                                    .record((now - at).as_micros().max(1) as u64);
                            }
                        }
                    }
                }
            };
            let writer = async move {
                // Spread the clients over the first period.
                tokio::time::sleep(period.mul_f64(i as f64 / clients as f64)).await;
                let mut tick = tokio::time::interval(period);
                let mut seq = 0u64;
                while Instant::now() < deadline {
                    tick.tick().await;
                    seq += 1;
                    let x = 100.0 + (seq % 700) as f64 + (i as f64) / 1000.0;
                    pending.lock().await.push((x, Instant::now()));
                    let msg = json!({"action":"move","value":{"x": x, "y": 100 + (seq % 300)}});
                    if tx.send(Message::text(msg.to_string())).await.is_err() {
                        break;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                let _ = tx.close().await;
            };
            tokio::select! {
                () = reader => {},
                () = writer => {},
            }
        }));
    }
    let started = Instant::now();
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let hist = hist.lock().await;
    Ok(json!({
        "scenario": "moves",
        "clients": clients,
        "rate_per_client": rate,
        "seconds": seconds,
        "moves_sent": sent.load(Ordering::Relaxed),
        "packets_received": received.load(Ordering::Relaxed),
        "packets_per_second": received.load(Ordering::Relaxed) as f64 / elapsed,
        "move_to_echo": percentiles(&hist),
    }))
}

async fn idle(
    base: &str,
    room: &str,
    clients: usize,
    concurrency: usize,
    seconds: u64,
    rooms: usize,
    server: Option<u32>,
) -> anyhow::Result<Value> {
    let before = server.and_then(proc_stats);
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        let (base, room, sem) = (
            base.to_owned(),
            format!("{room}-{}", i % rooms.max(1)),
            sem.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await?;
            let (ws, _) = join(&base, &room, &format!("idle-{i}")).await?;
            anyhow::Ok(ws)
        }));
    }
    let mut sockets = Vec::with_capacity(clients);
    for t in tasks {
        sockets.push(t.await??);
    }
    let connected_in = start.elapsed();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let during = server.and_then(proc_stats);
    let rss_per_client = match (&before, &during) {
        (Some(b), Some(d)) => {
            Some((d.rss_kib.saturating_sub(b.rss_kib)) as f64 * 1024.0 / clients as f64)
        }
        _ => None,
    };
    for mut ws in sockets {
        let _ = ws.close(None).await;
    }
    Ok(json!({
        "scenario": "idle",
        "clients": clients,
        "rooms": rooms,
        "connected_ms": connected_in.as_secs_f64() * 1000.0,
        "server_rss_kib_before": before.as_ref().map(|s| s.rss_kib),
        "server_rss_kib_with_clients": during.as_ref().map(|s| s.rss_kib),
        "server_rss_bytes_per_client": rss_per_client,
    }))
}

/// RSS and CPU time of a process, from /proc.
struct ProcStats {
    rss_kib: u64,
    cpu_ticks: u64,
}

fn proc_stats(pid: u32) -> Option<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(ProcStats {
        rss_kib,
        cpu_ticks: utime + stime,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    check_loopback(&args.url)?;
    let room = args
        .room
        .clone()
        .unwrap_or_else(|| format!("load-{}", fastrand::u32(..)));
    let base = args.url.trim_end_matches('/');
    let before = args.server_pid.and_then(proc_stats);
    let started = Instant::now();
    let mut result = match args.scenario {
        Scenario::Joins { clients } => joins(base, &room, clients).await?,
        Scenario::Moves {
            clients,
            rate,
            seconds,
        } => moves(base, &room, clients, rate, seconds).await?,
        Scenario::Idle {
            clients,
            concurrency,
            seconds,
            rooms,
        } => {
            idle(
                base,
                &room,
                clients,
                concurrency,
                seconds,
                rooms,
                args.server_pid,
            )
            .await?
        }
    };
    if let (Some(b), Some(a)) = (before, args.server_pid.and_then(proc_stats)) {
        // Clock ticks are 1/100 s on Linux.
        let cpu_seconds = (a.cpu_ticks.saturating_sub(b.cpu_ticks)) as f64 / 100.0;
        result["server_cpu_percent_of_one_core"] =
            json!(100.0 * cpu_seconds / started.elapsed().as_secs_f64());
        result["server_rss_kib_after"] = json!(a.rss_kib);
    }
    if args.json {
        println!("{result}");
    } else {
        println!("{}", serde_json::to_string_pretty(&result)?);
    }
    Ok(())
}
