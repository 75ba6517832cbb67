//! Scenario `slow`: clients that stop reading. `clients` raw WebSocket connections join one
//! room, receive their first frame and then never read again (the TCP connection stays open),
//! while `drivers` ordinary clients send moves at a fixed rate, so that the room broadcasts
//! to everyone. What the server spends on them is sampled over the hold: its RSS and open file
//! descriptors (`/proc/<pid>`), and the kernel memory of its side of the slow clients' sockets
//! (`ss -tmnH`: the send queue `w`, `t` and the send buffer size `tb`), which is not in its
//! RSS. The load generator's side of the same sockets (their receive queues, full of what the
//! server sent) is the load generator's memory and is reported apart.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use partyroom_client::{ClientOptions, Protocol};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::metrics::{ProcWindow, new_histogram, percentiles, proc_stats, record, round3};
use crate::scenarios::{Run, close_all, connect_all, open_loop, settle_quiet};
use crate::sockets::{SkMem, SocketInfo, fd_count, snapshot, tcp_mem_pages};

/// Largest handshake response read before giving up on a server.
const MAX_RESPONSE: usize = 64 * 1024;

/// Parameters of the `slow` scenario (its command-line arguments).
#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct SlowArgs {
    /// Slow clients: raw WebSocket connections that read their first frame, then nothing.
    #[arg(long, default_value_t = 200)]
    pub clients: usize,
    /// Clients that keep reading and send moves, so that the room broadcasts to everyone.
    #[arg(long, default_value_t = 4)]
    pub drivers: usize,
    /// Moves per second per driver (partyroom drops a client's messages beyond 100/s by
    /// default).
    #[arg(long, default_value_t = 60.0)]
    pub rate: f64,
    /// Seconds of moves while the slow clients are held.
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Milliseconds between samples of the server and its sockets.
    #[arg(long, default_value_t = 500)]
    pub sample_ms: u64,
    /// Seconds to watch the server after the slow clients close their sockets.
    #[arg(long, default_value_t = 2.0)]
    pub after_close: f64,
    /// SO_RCVBUF of the slow clients' sockets, bytes (Linux doubles it; 0: the system's
    /// default). Small, so that their receive windows close at once and what the server
    /// sends waits on its side: on loopback a default receive buffer grows to
    /// `net.ipv4.tcp_rmem`'s maximum and absorbs the traffic for minutes.
    #[arg(long, default_value_t = 4096)]
    pub client_rcvbuf: u32,
    /// Clients connecting at the same time.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
}

/// A slow client: its socket, never read after the first frame.
#[derive(Debug)]
struct SlowConn {
    /// Held open, never read again.
    _stream: TcpStream,
    /// Its local port (the peer port of the server's side).
    port: u16,
}

/// The request path of a client of `room` (the path of [`ClientOptions::url`]).
fn request_path(host: &str, room: &str, session: &str, name: &str) -> String {
    let url = ClientOptions::new(host, room)
        .session_id(session)
        .query("name", name)
        .protocol(Protocol::Ws)
        .url();
    match url.find("/parties/") {
        Some(at) => url[at..].to_owned(),
        None => url,
    }
}

/// The WebSocket upgrade request. The key is the RFC 6455 sample nonce: the server only
/// hashes it.
fn upgrade_request(host: &str, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// What has been read of a handshake response so far: `Ok(None)` incomplete, `Ok(Some(n))`
/// complete with `n` bytes of frames after the headers, or an error (not a `101`).
fn response_progress(buf: &[u8]) -> anyhow::Result<Option<usize>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let status = head.lines().next().unwrap_or_default();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    if code != "101" {
        bail!("the upgrade was refused: {status:?}");
    }
    Ok(Some(buf.len() - end - 4))
}

/// Connect, upgrade, and read until the server's first frame has begun (the client is in
/// the room); then stop reading for good.
async fn connect_slow(
    addr: SocketAddr,
    host: &str,
    path: &str,
    rcvbuf: u32,
    timeout: Duration,
) -> anyhow::Result<SlowConn> {
    let attempt = async {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .context("creating a socket")?;
        if rcvbuf > 0 {
            // Before connecting, so that the window it advertises is small from the start.
            socket
                .set_recv_buffer_size(rcvbuf)
                .context("setting SO_RCVBUF")?;
        }
        let mut stream = socket.connect(addr).await.context("connecting")?;
        let port = stream.local_addr()?.port();
        stream
            .write_all(upgrade_request(host, path).as_bytes())
            .await
            .context("sending the upgrade request")?;
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream
                .read(&mut chunk)
                .await
                .context("reading the response")?;
            if n == 0 {
                bail!("the server closed the connection during the handshake");
            }
            buf.extend_from_slice(&chunk[..n]);
            if response_progress(&buf)?.is_some_and(|frames| frames > 0) {
                break;
            }
            if buf.len() > MAX_RESPONSE {
                bail!("no frame after {MAX_RESPONSE} bytes of handshake response");
            }
        }
        anyhow::Ok(SlowConn {
            _stream: stream,
            port,
        })
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .context("timed out")?
}

/// Sums over a set of sockets.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    sockets: u64,
    established: u64,
    recv_q: u64,
    send_q: u64,
    mem: SkMem,
}

impl Totals {
    fn add(&mut self, s: &SocketInfo) {
        self.sockets += 1;
        self.established += u64::from(s.established());
        self.recv_q += s.recv_q;
        self.send_q += s.send_q;
        if let Some(m) = s.mem {
            let t = &mut self.mem;
            t.rmem_alloc += m.rmem_alloc;
            t.rcvbuf += m.rcvbuf;
            t.wmem_alloc += m.wmem_alloc;
            t.sndbuf += m.sndbuf;
            t.fwd_alloc += m.fwd_alloc;
            t.wmem_queued += m.wmem_queued;
            t.optmem += m.optmem;
            t.backlog += m.backlog;
            t.drops += m.drops;
        }
    }

    /// The larger of each figure (for the peak over a run).
    fn max(&self, o: &Totals) -> Totals {
        let (a, b) = (&self.mem, &o.mem);
        Totals {
            sockets: self.sockets.max(o.sockets),
            established: self.established.max(o.established),
            recv_q: self.recv_q.max(o.recv_q),
            send_q: self.send_q.max(o.send_q),
            mem: SkMem {
                rmem_alloc: a.rmem_alloc.max(b.rmem_alloc),
                rcvbuf: a.rcvbuf.max(b.rcvbuf),
                wmem_alloc: a.wmem_alloc.max(b.wmem_alloc),
                sndbuf: a.sndbuf.max(b.sndbuf),
                fwd_alloc: a.fwd_alloc.max(b.fwd_alloc),
                wmem_queued: a.wmem_queued.max(b.wmem_queued),
                optmem: a.optmem.max(b.optmem),
                backlog: a.backlog.max(b.backlog),
                drops: a.drops.max(b.drops),
            },
        }
    }

    /// The server's side of sockets: what it sends (and has not been taken).
    fn send_json(&self) -> Value {
        json!({
            "sockets": self.sockets,
            "established": self.established,
            "send_q_bytes": self.send_q,
            "wmem_queued_bytes": self.mem.wmem_queued,
            "wmem_alloc_bytes": self.mem.wmem_alloc,
            "fwd_alloc_bytes": self.mem.fwd_alloc,
            "sndbuf_bytes": self.mem.sndbuf,
            "rmem_alloc_bytes": self.mem.rmem_alloc,
        })
    }

    /// The load generator's side: what it received and did not read.
    fn recv_json(&self) -> Value {
        json!({
            "sockets": self.sockets,
            "recv_q_bytes": self.recv_q,
            "rmem_alloc_bytes": self.mem.rmem_alloc,
            "rcvbuf_bytes": self.mem.rcvbuf,
        })
    }
}

/// One sample of the server and of the slow clients' sockets.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    /// Seconds since the moves started (negative before).
    t: f64,
    rss_kib: Option<u64>,
    fds: Option<usize>,
    /// Server side of the slow clients' sockets.
    slow_server: Totals,
    /// Load generator side of the slow clients' sockets.
    slow_client: Totals,
    /// Every other socket on the server's port, server side (listener, drivers).
    other_server: Totals,
    /// All TCP memory of the machine, pages.
    tcp_mem_pages: Option<u64>,
}

impl Sample {
    fn json(&self) -> Value {
        json!({
            "t": round3(self.t),
            "server_rss_kib": self.rss_kib,
            "server_fds": self.fds,
            "slow_server_side": self.slow_server.send_json(),
            "slow_client_side_load_generator": self.slow_client.recv_json(),
            "other_server_side": self.other_server.send_json(),
            "machine_tcp_mem_pages": self.tcp_mem_pages,
        })
    }

    /// The compact form kept in the timeline.
    fn point(&self) -> Value {
        json!({
            "t": round3(self.t),
            "server_rss_kib": self.rss_kib,
            "server_fds": self.fds,
            "slow_established": self.slow_server.established,
            "slow_server_sockets": self.slow_server.sockets,
            "slow_wmem_queued_bytes": self.slow_server.mem.wmem_queued,
            "slow_wmem_alloc_bytes": self.slow_server.mem.wmem_alloc,
            "slow_send_q_bytes": self.slow_server.send_q,
            "slow_sndbuf_bytes": self.slow_server.mem.sndbuf,
            "load_generator_rmem_alloc_bytes": self.slow_client.mem.rmem_alloc,
        })
    }
}

/// Samples the server and the sockets on its port.
struct Probe {
    port: u16,
    pid: Option<u32>,
    slow: HashSet<u16>,
    origin: Instant,
}

impl Probe {
    async fn sample(&self) -> anyhow::Result<(Sample, Vec<SocketInfo>)> {
        let sockets = snapshot(self.port).await?;
        let mut s = Sample {
            t: signed_secs(self.origin, Instant::now()),
            rss_kib: self
                .pid
                .and_then(|p| proc_stats(&p.to_string()))
                .map(|p| p.rss_kib),
            fds: self.pid.and_then(fd_count),
            tcp_mem_pages: tcp_mem_pages(),
            ..Sample::default()
        };
        for so in &sockets {
            let peer = so.peer_port.unwrap_or(0);
            if so.local_port == self.port {
                if self.slow.contains(&peer) {
                    s.slow_server.add(so);
                } else {
                    s.other_server.add(so);
                }
            } else if peer == self.port && self.slow.contains(&so.local_port) {
                s.slow_client.add(so);
            }
        }
        Ok((s, sockets))
    }
}

/// `b - a` in seconds, negative when `b` is earlier.
fn signed_secs(a: Instant, b: Instant) -> f64 {
    match b.checked_duration_since(a) {
        Some(d) => d.as_secs_f64(),
        None => -a.duration_since(b).as_secs_f64(),
    }
}

/// Per slow client: the server's RSS growth since before they joined, and its kernel memory
/// for their sockets.
fn per_client(s: &Sample, baseline_rss_kib: Option<u64>, n: usize) -> Value {
    let n = n.max(1) as f64;
    let rss = match (baseline_rss_kib, s.rss_kib) {
        (Some(b), Some(e)) => Some((e as f64 - b as f64) * 1024.0 / n),
        _ => None,
    };
    let queued = s.slow_server.mem.wmem_queued as f64 / n;
    json!({
        "server_rss_delta_bytes": rss.map(round3),
        "kernel_send_queue_bytes_wmem_queued": round3(queued),
        "kernel_wmem_alloc_bytes": round3(s.slow_server.mem.wmem_alloc as f64 / n),
        "kernel_send_q_payload_bytes": round3(s.slow_server.send_q as f64 / n),
        "kernel_sndbuf_bytes": round3(s.slow_server.mem.sndbuf as f64 / n),
        "total_bytes_rss_plus_send_queue": rss.map(|r| round3(r + queued)),
        "load_generator_receive_queue_bytes": round3(s.slow_client.mem.rmem_alloc as f64 / n),
    })
}

/// Scenario `slow`. See the module documentation.
pub async fn slow(run: &Run, p: SlowArgs) -> anyhow::Result<Value> {
    let port = run.addr.port();
    // Fail early without `ss`.
    snapshot(port).await?;
    if run.server_pid.is_none() {
        eprintln!("note: without --server-pid, the server's RSS and file descriptors are not read");
    }
    run.phase("drivers", p.drivers as u64);
    let mut driver_h = new_histogram();
    let mut drivers = connect_all(
        run,
        p.drivers,
        p.concurrency,
        |i| run.options(&run.host, &run.room, i, 4096),
        false,
        &mut driver_h,
    )
    .await?;
    let drain_driver_subs = |drivers: &mut Vec<crate::scenarios::Loaded>| {
        for l in drivers.iter_mut() {
            if let Some(sub) = l.sub.as_mut() {
                while let Some(ev) = sub.try_recv() {
                    run.metrics.packet(ev.text().len());
                }
            }
        }
    };
    {
        let mut subs: Vec<_> = drivers.iter_mut().filter_map(|l| l.sub.as_mut()).collect();
        settle_quiet(run, p.drivers, Duration::from_secs(10), &mut subs).await;
    }
    let mut probe = Probe {
        port,
        pid: run.server_pid,
        slow: HashSet::new(),
        origin: Instant::now(),
    };
    let (before, _) = probe.sample().await?;

    run.phase("slow clients", p.clients as u64);
    let connect_start = Instant::now();
    let mut slow_h = new_histogram();
    let sem = Arc::new(Semaphore::new(p.concurrency.max(1)));
    let mut set = JoinSet::new();
    for i in 0..p.clients {
        let sem = sem.clone();
        let host = run.host.clone();
        let path = request_path(
            &run.host,
            &run.room,
            &format!("{}-slow-{i}", run.run_id),
            &format!("slow{i}"),
        );
        let timeout = run.remaining().min(Duration::from_secs(30));
        let addr = run.addr;
        let rcvbuf = p.client_rcvbuf;
        let metrics = run.metrics.clone();
        set.spawn(async move {
            let _permit = sem.acquire_owned().await?;
            let t = Instant::now();
            let conn = connect_slow(addr, &host, &path, rcvbuf, timeout)
                .await
                .with_context(|| format!("slow client {i}"))?;
            metrics.progress.fetch_add(1, Ordering::Relaxed);
            anyhow::Ok((conn, t.elapsed()))
        });
    }
    let mut slow = Vec::with_capacity(p.clients);
    let mut first_error = None;
    while let Some(r) = set.join_next().await {
        match r? {
            Ok((conn, took)) => {
                record(&mut slow_h, took);
                slow.push(conn);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
        drain_driver_subs(&mut drivers);
    }
    if let Some(e) = first_error {
        close_all(drivers.into_iter().map(|l| l.client));
        return Err(e.context(format!(
            "only {} of {} slow clients joined",
            slow.len(),
            p.clients
        )));
    }
    let connected_in = connect_start.elapsed();
    probe.slow = slow.iter().map(|c| c.port).collect();
    run.phase("settling", 0);
    let settled = {
        let mut subs: Vec<_> = drivers.iter_mut().filter_map(|l| l.sub.as_mut()).collect();
        settle_quiet(run, p.drivers, Duration::from_secs(10), &mut subs).await
    };

    // The hold: drivers send moves, the slow clients read nothing.
    run.phase("holding", p.seconds.ceil() as u64);
    let start = Instant::now();
    probe.origin = start;
    let (joined, _) = probe.sample().await?;
    let end = start + Duration::from_secs_f64(p.seconds);
    let c0 = run.metrics.counters();
    let procs = ProcWindow::start(run.server_pid);
    run.metrics.measuring.store(true, Ordering::Relaxed);
    let mut movers = JoinSet::new();
    for l in drivers {
        let metrics = run.metrics.clone();
        let (n, rate) = (p.drivers, p.rate);
        let client = l.client.clone();
        movers.spawn(async move {
            let outcome = open_loop(l, n, rate, metrics, start, end, Duration::from_secs(2)).await;
            (client, outcome)
        });
    }
    let mut samples = vec![joined];
    let mut dropped_at: HashMap<u16, f64> = HashMap::new();
    let mut full_at: HashMap<u16, f64> = HashMap::new();
    let mut next = start;
    let mut last = joined;
    loop {
        next += Duration::from_millis(p.sample_ms);
        if next > end {
            break;
        }
        tokio::time::sleep_until(next.into()).await;
        let (s, sockets) = probe.sample().await?;
        let mut established = HashSet::new();
        for so in sockets.iter().filter(|so| so.local_port == port) {
            let Some(peer) = so.peer_port.filter(|p| probe.slow.contains(p)) else {
                continue;
            };
            if so.established() {
                established.insert(peer);
            }
            // The kernel takes no more from the server once the queue reaches the buffer.
            if so
                .mem
                .is_some_and(|m| m.sndbuf > 0 && m.wmem_queued >= m.sndbuf)
            {
                full_at.entry(peer).or_insert(s.t);
            }
        }
        for c in &slow {
            if !established.contains(&c.port) {
                dropped_at.entry(c.port).or_insert(s.t);
            }
        }
        run.metrics
            .progress
            .store(start.elapsed().as_secs(), Ordering::Relaxed);
        samples.push(s);
        last = s;
    }
    tokio::time::sleep_until(end.into()).await;
    let c1 = run.metrics.counters();
    let procs = procs.finish();
    let (mut unacked, mut refused, mut superseded) = (0u64, 0u64, 0u64);
    let mut driver_clients = Vec::new();
    let wait = async {
        while let Some(r) = movers.join_next().await {
            if let Ok((client, o)) = r {
                unacked += o.unacked + o.lost;
                refused += o.refused;
                superseded += o.superseded;
                driver_clients.push(client);
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), wait).await;
    run.metrics.measuring.store(false, Ordering::Relaxed);
    let latency = run.metrics.total_latency();

    // The slow clients close their sockets (with unread data: the kernel resets them).
    run.phase("closing", 0);
    drop(slow);
    tokio::time::sleep(Duration::from_secs_f64(p.after_close).min(run.remaining())).await;
    let (after, _) = probe.sample().await?;
    close_all(driver_clients);

    // Each figure's largest value over the hold (not all from the same sample).
    let peak = samples.iter().fold(Sample::default(), |m, s| Sample {
        t: m.t.max(s.t),
        rss_kib: m.rss_kib.max(s.rss_kib),
        fds: m.fds.max(s.fds),
        slow_server: m.slow_server.max(&s.slow_server),
        slow_client: m.slow_client.max(&s.slow_client),
        other_server: m.other_server.max(&s.other_server),
        tcp_mem_pages: m.tcp_mem_pages.max(s.tcp_mem_pages),
    });
    let mut peak_json = peak.json();
    if let Some(m) = peak_json.as_object_mut() {
        m.remove("t");
    }
    let times = |at: &HashMap<u16, f64>| {
        let mut h = new_histogram();
        for t in at.values() {
            record(&mut h, Duration::from_secs_f64(t.max(0.0)));
        }
        h
    };
    let after_json = {
        let mut a = after.json();
        a["seconds_after_close"] = json!(round3(p.after_close));
        a
    };
    Ok(json!({
        "slow_clients": p.clients,
        "drivers": p.drivers,
        "rate_per_driver": p.rate,
        "offered_moves_per_second": round3(p.rate * p.drivers as f64),
        "held_seconds": round3(p.seconds),
        "client_rcvbuf_requested": p.client_rcvbuf,
        "server_port": port,
        "slow_clients_connected_ms": round3(connected_in.as_secs_f64() * 1000.0),
        "settled_after_joins_ms": round3(settled.as_secs_f64() * 1000.0),
        "connect_slow": percentiles(&slow_h),
        "connect_drivers": percentiles(&driver_h),
        "slow_still_established_at_end": last.slow_server.established,
        "slow_server_sockets_at_end": last.slow_server.sockets,
        "slow_dropped_by_server": dropped_at.len(),
        // Time from the first move to the first sample where the server's side of a slow
        // client's socket was no longer established (to within the sample interval).
        "dropped_after_moves_started": percentiles(&times(&dropped_at)),
        "slow_send_buffer_full": full_at.len(),
        // ...and where its send queue had reached its send buffer size (`w >= tb`).
        "send_buffer_full_after_moves_started": percentiles(&times(&full_at)),
        "sample_interval_ms": p.sample_ms,
        "per_slow_client_at_end": per_client(&last, before.rss_kib, p.clients),
        "per_slow_client_at_peak": per_client(&peak, before.rss_kib, p.clients),
        "before_slow_clients": before.json(),
        "slow_clients_joined": joined.json(),
        "end_of_hold": last.json(),
        "peak": peak_json,
        "after_slow_clients_closed": after_json,
        "drivers_move_to_echo": percentiles(&latency),
        "drivers_moves_never_acked": unacked,
        "drivers_moves_superseded": superseded,
        "drivers_moves_refused_by_client_queue": refused,
        "window": c0.rates_until(&c1),
        "processes": procs,
        "samples": samples.iter().map(Sample::point).collect::<Vec<_>>(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_response() {
        let path = request_path("127.0.0.1:3000", "r 1", "s-1", "slow1");
        assert_eq!(path, "/parties/main/r%201?_pk=s-1&id=s-1&name=slow1");
        let req = upgrade_request("127.0.0.1:3000", &path);
        assert!(req.starts_with("GET /parties/main/r%201?"));
        assert!(req.ends_with("\r\n\r\n"));
        assert!(
            response_progress(b"HTTP/1.1 101 Switching")
                .unwrap()
                .is_none()
        );
        let ok = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(response_progress(ok).unwrap(), Some(0));
        let mut with_frame = ok.to_vec();
        with_frame.extend_from_slice(b"\x81\x05hello");
        assert_eq!(response_progress(&with_frame).unwrap(), Some(7));
        assert!(response_progress(b"HTTP/1.1 404 Not Found\r\n\r\n").is_err());
        assert!(response_progress(b"\r\n\r\n").is_err());
    }

    #[test]
    fn signed_seconds() {
        let a = Instant::now();
        let b = a + Duration::from_millis(1500);
        assert!((signed_secs(a, b) - 1.5).abs() < 1e-9);
        assert!((signed_secs(b, a) + 1.5).abs() < 1e-9);
    }
}
