//! The scenarios. Every client is a [`partyroom_client::Client`] (without state mirror, see
//! [`ClientOptions::mirror`]); every frame it receives is counted, and move echoes are matched
//! by their unique `x`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use partyroom_client::{Client, ClientOptions, Protocol, ReconnectPolicy, Status, Subscription};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::metrics::{Metrics, ProcWindow, new_histogram, percentiles, record, round3};
use crate::proxy::Proxy;

/// Everything a scenario needs.
#[derive(Debug)]
pub struct Run {
    /// `host:port` of the server (loopback).
    pub host: String,
    /// The server's socket address.
    pub addr: SocketAddr,
    /// Room id (or prefix, for several rooms).
    pub room: String,
    /// Prefix of this run's session ids, so that runs never share a session.
    pub run_id: String,
    /// The server's pid, for CPU and RSS.
    pub server_pid: Option<u32>,
    /// Shared counters.
    pub metrics: Arc<Metrics>,
    /// The progress bar (hidden when not on a terminal).
    pub bar: ProgressBar,
    /// Hard end of the run: nothing waits past it.
    pub deadline: Instant,
    /// Frames each client's subscription may queue before skipping (0: per scenario).
    pub event_capacity: usize,
}

impl Run {
    /// Start a new phase of the progress bar.
    pub fn phase(&self, name: &str, len: u64) {
        self.metrics.progress.store(0, Ordering::Relaxed);
        self.bar.set_prefix(name.to_owned());
        self.bar.set_length(len);
        self.bar.set_position(0);
    }

    pub(crate) fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Options of one load client: no mirror, plain `ws://`, the given policy.
    pub(crate) fn options(
        &self,
        host: &str,
        room: &str,
        i: usize,
        capacity: usize,
    ) -> ClientOptions {
        ClientOptions::new(host, room)
            .session_id(format!("{}-{i}", self.run_id))
            .query("name", format!("bot{i}"))
            .protocol(Protocol::Ws)
            .mirror(false)
            .event_capacity(if self.event_capacity > 0 {
                self.event_capacity
            } else {
                capacity
            })
            .send_buffer(4096)
            .connect_timeout(self.remaining())
            .reconnect(patient_policy())
    }
}

/// partysocket's policy, but an attempt (TCP connect + handshake) may take 30 s: a server
/// under a join storm is slow to answer, and the scenario measures how slow.
fn patient_policy() -> ReconnectPolicy {
    ReconnectPolicy {
        connection_timeout: Duration::from_secs(30),
        ..ReconnectPolicy::default()
    }
}

/// A connected load client.
pub(crate) struct Loaded {
    pub(crate) client: Client,
    pub(crate) pid: String,
    /// The client's frames, for the caller to read (`count: false`)...
    pub(crate) sub: Option<Subscription>,
    /// ...or the task counting them from the start (`count: true`).
    counter: Option<tokio::task::JoinHandle<()>>,
    index: usize,
}

/// Count every frame of `sub` until the client closes.
fn spawn_counter(mut sub: Subscription, metrics: Arc<Metrics>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut skipped = 0;
        while let Some(ev) = sub.recv().await {
            metrics.packet(ev.text().len());
            note_skipped(&sub, &mut skipped, &metrics);
        }
    })
}

fn note_skipped(sub: &Subscription, seen: &mut u64, metrics: &Metrics) {
    let s = sub.skipped();
    if s > *seen {
        metrics.skipped.fetch_add(s - *seen, Ordering::Relaxed);
        *seen = s;
    }
}

/// Connect clients `0..n` (options of client `i`: `options(i)`), at most `concurrency` at
/// once, and wait until each has its first packet. Fails if any does not make it before the
/// deadline. With `count`, every frame is counted from the start by a task of its own;
/// without, the caller reads [`Loaded::sub`].
pub(crate) async fn connect_all(
    run: &Run,
    n: usize,
    concurrency: usize,
    options: impl Fn(usize) -> ClientOptions,
    count: bool,
    connect_times: &mut Histogram<u64>,
) -> anyhow::Result<Vec<Loaded>> {
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    for i in 0..n {
        let opts = options(i);
        let sem = sem.clone();
        let timeout = run.remaining();
        let metrics = run.metrics.clone();
        set.spawn(async move {
            let _permit = sem.acquire_owned().await?;
            let t = Instant::now();
            let client = Client::start(opts);
            let sub = client.subscribe_all();
            let (sub, counter) = if count {
                (None, Some(spawn_counter(sub, metrics.clone())))
            } else {
                (Some(sub), None)
            };
            match client.wait_ready(timeout).await {
                Ok(pid) => {
                    metrics.progress.fetch_add(1, Ordering::Relaxed);
                    anyhow::Ok((
                        Loaded {
                            client,
                            pid,
                            sub,
                            counter,
                            index: i,
                        },
                        t.elapsed(),
                    ))
                }
                Err(e) => {
                    client.close();
                    if let Some(c) = counter {
                        c.abort();
                    }
                    Err(anyhow::anyhow!("client {i}: {e}"))
                }
            }
        });
    }
    let mut out = Vec::with_capacity(n);
    let mut first_error = None;
    while let Some(r) = set.join_next().await {
        match r? {
            Ok((loaded, took)) => {
                record(connect_times, took);
                out.push(loaded);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        let ok = out.len();
        for l in out {
            l.client.close();
            if let Some(c) = l.counter {
                c.abort();
            }
        }
        return Err(e.context(format!("only {ok} of {n} clients connected")));
    }
    out.sort_by_key(|l| l.index);
    Ok(out)
}

pub(crate) fn close_all(clients: impl IntoIterator<Item = Client>) {
    for c in clients {
        c.close();
    }
}

/// The position of move `seq`: `x` unique among the last 800 moves of a client and never
/// equal to the previous one (so the server always has a change to send), inside the
/// arena's clamp range (x 16..884, y 16..544).
pub fn move_position(seq: u64) -> (f64, f64) {
    let x = 20.25 + ((seq * 13) % 800) as f64;
    let y = 20.25 + ((seq * 7) % 500) as f64;
    (x, y)
}

/// A player's key as it appears in a packet (`"<pid>":`), built once per client.
struct PlayerKey(String);

impl PlayerKey {
    fn new(pid: &str) -> Self {
        Self(format!("\"{pid}\":"))
    }
}

/// The `x` of player `key` in a frame (`{"value":{"players":{<pid>:{"x":..}}}}`), if the
/// frame carries it. Read from the frame's text without building a `Value`, and without
/// scanning all of it: with hundreds of thousands of frames per second, the load generator
/// must stay cheaper than the server it measures. The key is searched after `"players":`
/// (public ids are random 8-character strings, found nowhere else in a packet), and only the
/// object that follows it is parsed.
fn echoed_x(frame: &str, key: &PlayerKey) -> Option<f64> {
    #[derive(serde::Deserialize)]
    struct Player {
        x: Option<f64>,
    }
    let players = frame.find("\"players\":")?;
    let rest = &frame[players..];
    let at = rest.find(&key.0)? + key.0.len();
    let mut de = serde_json::Deserializer::from_str(&rest[at..]);
    let player = <Player as serde::Deserialize>::deserialize(&mut de).ok()?;
    player.x
}

/// Scenario `joins`: `clients` clients join one room at the same moment.
pub async fn joins(run: &Run, clients: usize) -> anyhow::Result<Value> {
    run.phase("joining", clients as u64);
    let start = Instant::now();
    let mut set = JoinSet::new();
    for i in 0..clients {
        let opts = run.options(&run.host, &run.room, i, 256);
        let timeout = run.remaining();
        let metrics = run.metrics.clone();
        set.spawn(async move {
            let client = Client::start(opts);
            let counter = spawn_counter(client.subscribe_all(), metrics.clone());
            let mut handshake = None;
            let mut retried = false;
            let mut open_done = false;
            let outcome = {
                let ready = client.wait_ready(timeout);
                let open = client.wait_status(|s| s == Status::Open, timeout);
                tokio::pin!(ready, open);
                let mut statuses = client.statuses();
                loop {
                    tokio::select! {
                        r = &mut ready => break r,
                        r = &mut open, if !open_done => {
                            open_done = true;
                            if r.is_ok() { handshake = Some(start.elapsed()); }
                        }
                        changed = statuses.changed(), if !retried => {
                            retried = changed.is_err()
                                || *statuses.borrow() == Status::Reconnecting;
                        }
                    }
                }
            };
            let first = start.elapsed();
            if outcome.is_ok() {
                metrics.progress.fetch_add(1, Ordering::Relaxed);
            }
            (
                client,
                counter,
                handshake,
                outcome.ok().map(|_| first),
                retried,
            )
        });
    }
    let mut handshake_h = new_histogram();
    let mut first_h = new_histogram();
    let mut kept = Vec::with_capacity(clients);
    let (mut joined, mut retried_n) = (0usize, 0usize);
    let mut last_first = Duration::ZERO;
    while let Some(r) = set.join_next().await {
        let (client, counter, handshake, first, retried) = r?;
        if let Some(h) = handshake {
            record(&mut handshake_h, h);
        }
        if let Some(f) = first {
            record(&mut first_h, f);
            joined += 1;
            last_first = last_first.max(f);
        }
        retried_n += usize::from(retried);
        kept.push((client, counter));
    }
    let until_all = start.elapsed();
    for (c, _) in &kept {
        c.close();
    }
    for (_, counter) in kept {
        counter.abort();
    }
    let all = joined == clients;
    Ok(json!({
        "clients": clients,
        "joined": joined,
        "all_joined": all,
        "all_joined_ms": all.then(|| round3(last_first.as_secs_f64() * 1000.0)),
        "gave_up_after_ms": (!all).then(|| round3(until_all.as_secs_f64() * 1000.0)),
        "clients_that_retried": retried_n,
        "handshake": percentiles(&handshake_h),
        "first_packet": percentiles(&first_h),
        "frames_received": run.metrics.packets.load(Ordering::Relaxed),
    }))
}

/// How the moves of `moves` and `throughput` are paced.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// Open loop: each client sends `rate` moves per second on a fixed schedule.
    Rate(f64),
    /// Closed loop: each client sends its next move as soon as the previous one echoed (or
    /// after `timeout` without echo).
    Closed {
        /// How long to wait for an echo before sending the next move anyway.
        timeout: Duration,
        /// At most this many moves per second per client (0: no cap). partyroom drops the
        /// messages of a client beyond 100 per second (its default
        /// `max_messages_per_second`), and a dropped move would stall its client for the
        /// whole echo timeout.
        max_rate: f64,
    },
}

/// Scenarios `moves` and `throughput`: `clients` clients in one room send moves for
/// `seconds`; latency and rates are measured after `warmup` seconds.
pub async fn moves(
    run: &Run,
    clients: usize,
    pace: Pace,
    seconds: f64,
    warmup: f64,
    drain: f64,
    concurrency: usize,
) -> anyhow::Result<Value> {
    run.phase("connecting", clients as u64);
    let mut connect_h = new_histogram();
    let loaded = connect_all(
        run,
        clients,
        concurrency,
        |i| run.options(&run.host, &run.room, i, 4096),
        false,
        &mut connect_h,
    )
    .await?;
    // Let the join traffic settle before measuring.
    let mut loaded = loaded;
    let settled = {
        let mut subs: Vec<&mut Subscription> =
            loaded.iter_mut().filter_map(|l| l.sub.as_mut()).collect();
        settle_quiet(run, clients, Duration::from_secs(30), &mut subs).await
    };

    let total = seconds + warmup;
    run.phase("sending", total.ceil() as u64);
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(warmup);
    let end = start + Duration::from_secs_f64(total);
    let drain = Duration::from_secs_f64(drain);
    let mut set = JoinSet::new();
    let mut clients_kept = Vec::with_capacity(clients);
    for l in loaded {
        clients_kept.push(l.client.clone());
        let metrics = run.metrics.clone();
        let n = clients;
        set.spawn(async move {
            match pace {
                Pace::Rate(rate) => open_loop(l, n, rate, metrics, start, end, drain).await,
                Pace::Closed { timeout, max_rate } => {
                    closed_loop(l, metrics, end, timeout, max_rate).await
                }
            }
        });
    }
    // Seconds for the progress bar.
    let ticker = {
        let metrics = run.metrics.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(1));
            loop {
                t.tick().await;
                metrics
                    .progress
                    .store(start.elapsed().as_secs(), Ordering::Relaxed);
            }
        })
    };
    tokio::time::sleep_until(measure_from.into()).await;
    let c0 = run.metrics.counters();
    let procs = ProcWindow::start(run.server_pid);
    run.metrics.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep_until(end.into()).await;
    let c1 = run.metrics.counters();
    let procs = procs.finish();
    if matches!(pace, Pace::Rate(_)) {
        run.phase("draining", drain.as_secs().max(1));
    }
    let (mut unacked, mut lost, mut refused, mut capped, mut superseded) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let wait_for_tasks = async {
        while let Some(r) = set.join_next().await {
            if let Ok(o) = r {
                unacked += o.unacked;
                lost += o.lost;
                refused += o.refused;
                capped += o.capped;
                superseded += o.superseded;
            }
        }
    };
    let _ = tokio::time::timeout(drain + Duration::from_secs(10), wait_for_tasks).await;
    run.metrics.measuring.store(false, Ordering::Relaxed);
    ticker.abort();
    close_all(clients_kept);
    let latency = run.metrics.total_latency();
    let window = c0.rates_until(&c1);
    let mut out = json!({
        "clients": clients,
        "measured_seconds": round3(seconds),
        "warmup_seconds": round3(warmup),
        "connect": percentiles(&connect_h),
        "settled_after_joins_ms": round3(settled.as_secs_f64() * 1000.0),
        "move_to_echo": percentiles(&latency),
        "window": window,
        "moves_never_acked": unacked + lost,
        "moves_superseded": superseded,
        "moves_refused_by_client_queue": refused,
        "processes": procs,
    });
    match pace {
        Pace::Rate(rate) => {
            out["rate_per_client"] = json!(rate);
            out["offered_moves_per_second"] = json!(round3(rate * clients as f64));
        }
        Pace::Closed { timeout, max_rate } => {
            out["echo_timeout_ms"] = json!(timeout.as_millis() as u64);
            out["max_rate_per_client"] = json!(max_rate);
            out["moves_delayed_by_rate_cap"] = json!(capped);
            out["saturation_moves_per_second"] = out["window"]["moves_acked_per_second"].clone();
        }
    }
    Ok(out)
}

/// Wait `d`, bounded by the run's deadline.
async fn settle(run: &Run, d: Duration) {
    tokio::time::sleep(d.min(run.remaining())).await;
}

/// Wait until the traffic that follows the joins has died down: fewer than `10 + clients/100`
/// frames received in half a second (each of `subs` is read here meanwhile; other clients
/// are read by their own tasks), at most `max`. Returns how long it took.
pub(crate) async fn settle_quiet(
    run: &Run,
    clients: usize,
    max: Duration,
    subs: &mut [&mut Subscription],
) -> Duration {
    let start = Instant::now();
    let limit = start + max.min(run.remaining());
    let threshold = 10 + clients as u64 / 100;
    let mut last = run.metrics.packets.load(Ordering::Relaxed);
    let mut check = start + Duration::from_millis(500);
    let mut skipped = vec![0u64; subs.len()];
    loop {
        for (sub, seen) in subs.iter_mut().zip(skipped.iter_mut()) {
            while let Some(ev) = sub.try_recv() {
                run.metrics.packet(ev.text().len());
            }
            note_skipped(sub, seen, &run.metrics);
        }
        let now = Instant::now();
        if now >= check {
            let packets = run.metrics.packets.load(Ordering::Relaxed);
            if packets - last < threshold || now >= limit {
                break;
            }
            last = packets;
            check = now + Duration::from_millis(500);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

#[derive(Debug, Default)]
pub(crate) struct MoverOutcome {
    /// Moves still waiting for their echo at the end.
    pub(crate) unacked: u64,
    /// Moves given up on (closed loop: no echo within the timeout).
    pub(crate) lost: u64,
    /// Moves the client's send queue refused.
    pub(crate) refused: u64,
    /// Moves never echoed because a later move of the same client was echoed first (the
    /// server merged them: a sync throttle sends only a window's last position).
    pub(crate) superseded: u64,
    /// Closed loop: moves held back by the per-client rate cap.
    capped: u64,
}

/// One open-loop client: a move every `1/rate` s (clients spread over the first period);
/// latency from the move's scheduled time (so a late load generator shows up as latency
/// instead of hiding it) to the frame that carries its `x` back.
pub(crate) async fn open_loop(
    l: Loaded,
    n: usize,
    rate: f64,
    metrics: Arc<Metrics>,
    start: Instant,
    end: Instant,
    drain: Duration,
) -> MoverOutcome {
    let Loaded {
        client,
        pid,
        sub,
        index,
        ..
    } = l;
    let Some(mut sub) = sub else {
        return MoverOutcome::default();
    };
    let key = PlayerKey::new(&pid);
    let period = Duration::from_secs_f64(1.0 / rate);
    let first = start + period.mul_f64(index as f64 / n as f64);
    let mut tick = tokio::time::interval_at(first.into(), period);
    let mut pending: Vec<(f64, Instant)> = Vec::new();
    let mut out = MoverOutcome::default();
    let mut seq = 0u64;
    let mut sending = true;
    let mut skipped = 0;
    let give_up = tokio::time::sleep_until((end + drain).into());
    tokio::pin!(give_up);
    loop {
        tokio::select! {
            biased;
            ev = sub.recv() => {
                let Some(ev) = ev else { break };
                metrics.packet(ev.text().len());
                note_skipped(&sub, &mut skipped, &metrics);
                if let Some(x) = echoed_x(ev.text(), &key)
                    && let Some(k) = pending.iter().position(|(px, _)| *px == x)
                {
                    let (_, at) = pending.remove(k);
                    metrics.ack(at.elapsed());
                    // Moves sent before it that never showed were merged into this one by
                    // the server (a sync throttle sends a window's last position only).
                    out.superseded += k as u64;
                    pending.drain(..k);
                }
            }
            at = tick.tick(), if sending => {
                let at = at.into_std();
                if at >= end {
                    sending = false;
                } else {
                    seq += 1;
                    let (x, y) = move_position(seq);
                    match client.emit("move", json!({ "x": x, "y": y })) {
                        Ok(()) => {
                            pending.push((x, at));
                            metrics.sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => out.refused += 1,
                    }
                }
            }
            () = &mut give_up => break,
        }
        if !sending && pending.is_empty() {
            break;
        }
    }
    out.unacked = pending.len() as u64;
    out
}

/// One closed-loop client: send, wait for the echo, send the next (no sooner than `1/max_rate`
/// after the previous one).
async fn closed_loop(
    l: Loaded,
    metrics: Arc<Metrics>,
    end: Instant,
    timeout: Duration,
    max_rate: f64,
) -> MoverOutcome {
    let Loaded {
        client, pid, sub, ..
    } = l;
    let Some(mut sub) = sub else {
        return MoverOutcome::default();
    };
    let key = PlayerKey::new(&pid);
    let mut out = MoverOutcome::default();
    let mut seq = 0u64;
    let mut skipped = 0;
    let min_gap = if max_rate > 0.0 {
        Duration::from_secs_f64(1.0 / max_rate)
    } else {
        Duration::ZERO
    };
    let mut last_sent: Option<Instant> = None;
    'moves: while Instant::now() < end {
        if let Some(t) = last_sent
            && t + min_gap > Instant::now()
        {
            out.capped += 1;
            tokio::time::sleep_until((t + min_gap).into()).await;
        }
        seq += 1;
        let (x, y) = move_position(seq);
        let sent_at = Instant::now();
        if client.emit("move", json!({ "x": x, "y": y })).is_err() {
            out.refused += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        metrics.sent.fetch_add(1, Ordering::Relaxed);
        last_sent = Some(sent_at);
        let give_up = tokio::time::sleep_until((sent_at + timeout).min(end + timeout).into());
        tokio::pin!(give_up);
        loop {
            tokio::select! {
                biased;
                ev = sub.recv() => {
                    let Some(ev) = ev else { break 'moves };
                    metrics.packet(ev.text().len());
                    note_skipped(&sub, &mut skipped, &metrics);
                    if echoed_x(ev.text(), &key) == Some(x) {
                        metrics.ack(sent_at.elapsed());
                        break;
                    }
                }
                () = &mut give_up => {
                    out.lost += 1;
                    break;
                }
            }
        }
    }
    out
}

/// Scenario `reconnect`: `clients` clients in one room, connected through a relay that then
/// cuts every socket at once; the clients' own reconnection brings them back with the same
/// session ids.
pub async fn reconnect(
    run: &Run,
    clients: usize,
    delay: Duration,
    jitter: Duration,
    concurrency: usize,
) -> anyhow::Result<Value> {
    let proxy = Proxy::start(run.addr).await.context("starting the relay")?;
    let host = proxy.addr().to_string();
    let policy = ReconnectPolicy {
        min_delay: delay,
        jitter,
        // Never reset: every client is on its first failure after the cut.
        min_uptime: Duration::ZERO,
        ..patient_policy()
    };
    run.phase("connecting", clients as u64);
    let mut connect_h = new_histogram();
    let loaded = connect_all(
        run,
        clients,
        concurrency,
        |i| {
            run.options(&host, &run.room, i, 1024)
                .reconnect(policy.clone())
        },
        true,
        &mut connect_h,
    )
    .await?;
    let mut counters = Vec::with_capacity(clients);
    let mut kept = Vec::with_capacity(clients);
    for l in loaded {
        counters.extend(l.counter);
        kept.push((l.client, l.pid));
    }
    let settled = settle_quiet(run, clients, Duration::from_secs(60), &mut []).await;

    run.phase("reconnecting", clients as u64);
    let c0 = run.metrics.counters();
    let procs = ProcWindow::start(run.server_pid);
    let cut = Instant::now();
    proxy.cut_all();
    let mut set = JoinSet::new();
    for (client, pid) in &kept {
        let (client, pid) = (client.clone(), pid.clone());
        let timeout = run.remaining();
        let metrics = run.metrics.clone();
        set.spawn(async move {
            let r = client.wait_view(|v| v.syncs() >= 2, timeout).await;
            let took = cut.elapsed();
            match r {
                Ok(view) => {
                    metrics.progress.fetch_add(1, Ordering::Relaxed);
                    Some((took, view.pid() == Some(pid.as_str())))
                }
                Err(_) => None,
            }
        });
    }
    let mut back_h = new_histogram();
    let (mut back, mut same_pid, mut last) = (0usize, 0usize, Duration::ZERO);
    while let Some(r) = set.join_next().await {
        if let Some((took, same)) = r? {
            record(&mut back_h, took);
            back += 1;
            same_pid += usize::from(same);
            last = last.max(took);
        }
    }
    let c1 = run.metrics.counters();
    let procs = procs.finish();
    close_all(kept.into_iter().map(|(c, _)| c));
    for c in counters {
        c.abort();
    }
    drop(proxy);
    let all = back == clients;
    Ok(json!({
        "clients": clients,
        "reconnect_delay_ms": delay.as_millis() as u64,
        "reconnect_jitter_ms": jitter.as_millis() as u64,
        "connect": percentiles(&connect_h),
        "settled_after_joins_ms": round3(settled.as_secs_f64() * 1000.0),
        "reconnected": back,
        "all_reconnected": all,
        "all_reconnected_ms": all.then(|| round3(last.as_secs_f64() * 1000.0)),
        "kept_pid": same_pid,
        "reconnect": percentiles(&back_h),
        "window": c0.rates_until(&c1),
        "processes": procs,
    }))
}

/// Scenario `idle`: `clients` clients spread over `rooms` rooms, held `seconds`.
pub async fn idle(
    run: &Run,
    clients: usize,
    rooms: usize,
    seconds: f64,
    concurrency: usize,
) -> anyhow::Result<Value> {
    let rooms = rooms.max(1);
    let before = ProcWindow::start(run.server_pid);
    let baseline = before.server_rss_kib();
    run.phase("connecting", clients as u64);
    let started = Instant::now();
    let mut connect_h = new_histogram();
    let loaded = connect_all(
        run,
        clients,
        concurrency,
        |i| run.options(&run.host, &format!("{}-{}", run.room, i % rooms), i, 64),
        true,
        &mut connect_h,
    )
    .await?;
    let connected_in = started.elapsed();
    let mut counters = Vec::with_capacity(clients);
    let mut kept = Vec::with_capacity(clients);
    for l in loaded {
        counters.extend(l.counter);
        kept.push(l.client);
    }
    run.phase("settling", 0);
    let settled = settle_quiet(run, clients, Duration::from_secs(60), &mut []).await;
    run.phase("holding", seconds.ceil() as u64);
    let c0 = run.metrics.counters();
    let hold = ProcWindow::start(run.server_pid);
    let hold_start = Instant::now();
    let ticker = {
        let metrics = run.metrics.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                metrics
                    .progress
                    .store(hold_start.elapsed().as_secs(), Ordering::Relaxed);
            }
        })
    };
    settle(run, Duration::from_secs_f64(seconds)).await;
    ticker.abort();
    let c1 = run.metrics.counters();
    let hold = hold.finish();
    let connected = kept.iter().filter(|c| c.status() == Status::Open).count();
    close_all(kept);
    for c in counters {
        c.abort();
    }
    let per_client = |side: &str, base: Option<u64>| -> Value {
        let end = hold[side]["rss_kib_end"].as_u64();
        match (base, end) {
            (Some(b), Some(e)) => {
                json!(round3(e.saturating_sub(b) as f64 * 1024.0 / clients as f64))
            }
            _ => Value::Null,
        }
    };
    let me_before = before.finish()["load_generator"]["rss_kib_start"].as_u64();
    Ok(json!({
        "clients": clients,
        "rooms": rooms,
        "held_seconds": round3(seconds),
        "connected_ms": round3(connected_in.as_secs_f64() * 1000.0),
        "settled_after_joins_ms": round3(settled.as_secs_f64() * 1000.0),
        "still_open_at_end": connected,
        "connect": percentiles(&connect_h),
        "server_rss_kib_before": baseline,
        "server_rss_bytes_per_client": per_client("server", baseline),
        "load_generator_rss_bytes_per_client": per_client("load_generator", me_before),
        "window": c0.rates_until(&c1),
        "processes": hold,
    }))
}

/// Refuse a run that would need more file descriptors than the process may open.
pub fn check_fd_limit(sockets: usize) -> anyhow::Result<()> {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return Ok(());
    };
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(soft) = soft
        && sockets + 64 > soft
    {
        bail!(
            "{sockets} sockets need more file descriptors than the limit of {soft}: raise it \
             (e.g. `ulimit -n {}`) or use fewer clients",
            sockets + 1024
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn move_positions_differ_and_stay_in_the_arena() {
        let mut seen = std::collections::HashSet::new();
        let mut prev = move_position(0);
        for seq in 1..=800 {
            let (x, y) = move_position(seq);
            assert!((16.0..=884.0).contains(&x) && (16.0..=544.0).contains(&y));
            assert_ne!(x, prev.0);
            assert_ne!(y, prev.1);
            assert!(seen.insert(x.to_bits()), "x unique over 800 moves");
            prev = (x, y);
        }
    }

    #[test]
    fn echo_is_found_among_several_players() {
        // The player asked for in the middle, other fields around it.
        let many = r#"{"type":"sync","value":{"players":{"a1":{"x":1,"y":2},"abc":{"name":"n","y":4,"x":3.5},"zz":{"x":9}},"star":{"x":7}}}"#;
        assert_eq!(echoed_x(many, &PlayerKey::new("abc")), Some(3.5));
        assert_eq!(echoed_x(many, &PlayerKey::new("zz")), Some(9.0));
        // A player entry without x (only y moved), or deleted.
        let y_only = r#"{"value":{"players":{"abc":{"y":1}}}}"#;
        assert_eq!(echoed_x(y_only, &PlayerKey::new("abc")), None);
        let deleted = r#"{"value":{"players":{"abc":"$delete"}}}"#;
        assert_eq!(echoed_x(deleted, &PlayerKey::new("abc")), None);
    }

    #[test]
    fn echo_is_found_by_pid() {
        let v = json!({"type": "sync", "value": {"players": {"abc": {"x": 20.25, "y": 1}}}});
        let text = v.to_string();
        assert_eq!(echoed_x(&text, &PlayerKey::new("abc")), Some(20.25));
        assert_eq!(echoed_x(&text, &PlayerKey::new("other")), None);
        assert_eq!(
            echoed_x(
                r#"{"type":"sync","value":{"star":{}}}"#,
                &PlayerKey::new("abc")
            ),
            None
        );
        assert_eq!(
            echoed_x(r#"{"type":"sync","value":"text"}"#, &PlayerKey::new("abc")),
            None
        );
        assert_eq!(echoed_x("not json", &PlayerKey::new("abc")), None);
    }
}
