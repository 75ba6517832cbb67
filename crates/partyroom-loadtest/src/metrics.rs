//! Counters and latency histograms shared by every client task, a once-a-second timeline, and
//! the CPU and memory of the server (`/proc/<pid>`) and of the load generator itself.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Linux reports process CPU time in clock ticks of 1/100 s (`USER_HZ`, fixed at 100 for
/// userspace on every mainstream architecture).
const TICKS_PER_SECOND: f64 = 100.0;

/// Latencies are recorded in microseconds, from 1 µs to 10 minutes, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Record a duration (µs, saturating at the histogram's bound) into `h`.
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
    h.saturating_record(us);
}

/// p50/p95/p99/p999/max of a histogram of microseconds, in milliseconds.
pub fn percentiles(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({ "count": 0 });
    }
    let ms = |q: f64| round3(h.value_at_quantile(q) as f64 / 1000.0);
    json!({
        "count": h.len(),
        "min_ms": round3(h.min() as f64 / 1000.0),
        "mean_ms": round3(h.mean() / 1000.0),
        "p50_ms": ms(0.50),
        "p95_ms": ms(0.95),
        "p99_ms": ms(0.99),
        "p999_ms": ms(0.999),
        "max_ms": round3(h.max() as f64 / 1000.0),
    })
}

/// Round to 3 decimals (keeps the JSON readable).
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

struct Latency {
    /// Everything recorded while [`Metrics::measuring`] is set.
    total: Histogram<u64>,
    /// Everything recorded since the last timeline point.
    window: Histogram<u64>,
}

/// What every client task reports into. Cheap to update from many tasks at once.
pub struct Metrics {
    started: Instant,
    /// Frames received (every client counts its own).
    pub packets: AtomicU64,
    /// Bytes of JSON text received (the frames' compact serialization; WebSocket and TCP
    /// framing not included).
    pub bytes: AtomicU64,
    /// Frames a client's subscription skipped because the load generator fell behind.
    pub skipped: AtomicU64,
    /// Moves sent.
    pub sent: AtomicU64,
    /// Moves whose echo came back.
    pub acked: AtomicU64,
    /// Scenario progress (clients joined, seconds elapsed...), shown by the progress bar.
    pub progress: AtomicU64,
    /// Latencies go to the total histogram only while this is set.
    pub measuring: AtomicBool,
    latency: Mutex<Latency>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("packets", &self.packets)
            .field("sent", &self.sent)
            .field("acked", &self.acked)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// Fresh counters; the timeline's clock starts now.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            packets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            progress: AtomicU64::new(0),
            measuring: AtomicBool::new(false),
            latency: Mutex::new(Latency {
                total: new_histogram(),
                window: new_histogram(),
            }),
        })
    }

    /// When the run started.
    pub fn started(&self) -> Instant {
        self.started
    }

    fn latency(&self) -> MutexGuard<'_, Latency> {
        self.latency.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One frame of `bytes` bytes received.
    pub fn packet(&self, bytes: usize) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// A move came back after `d`.
    pub fn ack(&self, d: Duration) {
        self.acked.fetch_add(1, Ordering::Relaxed);
        let measuring = self.measuring.load(Ordering::Relaxed);
        let mut l = self.latency();
        record(&mut l.window, d);
        if measuring {
            record(&mut l.total, d);
        }
    }

    /// The latency histogram of the measured part of the run.
    pub fn total_latency(&self) -> Histogram<u64> {
        self.latency().total.clone()
    }

    /// The counters now.
    pub fn counters(&self) -> Counters {
        Counters {
            at: Instant::now(),
            packets: self.packets.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
        }
    }

    fn take_window(&self) -> Histogram<u64> {
        let mut l = self.latency();
        let fresh = new_histogram();
        std::mem::replace(&mut l.window, fresh)
    }
}

/// A snapshot of the counters, to compute rates over a window.
#[derive(Debug, Clone, Copy)]
pub struct Counters {
    at: Instant,
    packets: u64,
    bytes: u64,
    skipped: u64,
    sent: u64,
    acked: u64,
}

impl Counters {
    /// Totals and per-second rates between `self` (start) and `end`.
    pub fn rates_until(&self, end: &Counters) -> Value {
        let secs = end.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let d = |a: u64, b: u64| b.saturating_sub(a);
        let rate = |a: u64, b: u64| round3(d(a, b) as f64 / secs);
        json!({
            "seconds": round3(secs),
            "packets_received": d(self.packets, end.packets),
            "packets_per_second": rate(self.packets, end.packets),
            "bytes_received": d(self.bytes, end.bytes),
            "bytes_per_second": rate(self.bytes, end.bytes),
            "frames_skipped_by_load_generator": d(self.skipped, end.skipped),
            "moves_sent": d(self.sent, end.sent),
            "moves_sent_per_second": rate(self.sent, end.sent),
            "moves_acked": d(self.acked, end.acked),
            "moves_acked_per_second": rate(self.acked, end.acked),
        })
    }
}

/// RSS and CPU time of a process, from `/proc`.
#[derive(Debug, Clone, Copy)]
pub struct ProcStats {
    /// When it was read.
    pub at: Instant,
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// User + system CPU time, clock ticks (sampled by the kernel at each tick).
    pub cpu_ticks: u64,
    /// Time on a CPU, nanoseconds, summed over the process's threads: exact (the scheduler's
    /// own count, `/proc/<pid>/task/*/schedstat`). `None` where the kernel does not offer it.
    pub run_ns: Option<u64>,
}

/// Read `/proc/<pid>/status` and `/proc/<pid>/stat` (`None`: no such process, or not Linux).
pub fn proc_stats(pid: &str) -> Option<ProcStats> {
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
        at: Instant::now(),
        rss_kib,
        cpu_ticks: utime + stime,
        run_ns: run_ns(pid),
    })
}

/// The first field of `/proc/<pid>/task/<tid>/schedstat` (nanoseconds on a CPU), summed over
/// the threads alive now. A thread that ended since an earlier reading takes its time with it,
/// so the difference between two readings can only undercount (then the tick figure is used).
fn run_ns(pid: &str) -> Option<u64> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path().join("schedstat");
        let Ok(line) = std::fs::read_to_string(path) else {
            continue; // the thread just ended
        };
        total += line.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// CPU used between two readings, in percent of one core; `None` over less than a second (the
/// tick figure, used when the exact one is missing, is too coarse there).
pub fn window_cpu_percent(a: &ProcStats, b: &ProcStats) -> Option<f64> {
    (b.at.duration_since(a.at) >= Duration::from_secs(1)).then(|| cpu_percent(a, b))
}

/// CPU used between two readings, in percent of one core: from the exact run time when both
/// readings have it and it did not go back (a thread ended), else from the clock ticks.
pub fn cpu_percent(a: &ProcStats, b: &ProcStats) -> f64 {
    match (a.run_ns, b.run_ns) {
        (Some(x), Some(y)) if y >= x => {
            let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
            round3(100.0 * (y - x) as f64 / 1e9 / secs)
        }
        _ => tick_cpu_percent(a, b),
    }
}

/// CPU used between two readings, in percent of one core, from the clock ticks only (what
/// `top` and `ps` show; the kernel samples it at each tick, so it is noisy at low loads).
pub fn tick_cpu_percent(a: &ProcStats, b: &ProcStats) -> f64 {
    let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
    let cpu = b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / TICKS_PER_SECOND;
    round3(100.0 * cpu / secs)
}

/// Busy CPU ticks of the whole machine (all cores), from `/proc/stat`.
#[derive(Debug, Clone, Copy)]
pub struct MachineStats {
    busy: u64,
}

/// Read the first line of `/proc/stat` (`None` when unavailable).
pub fn machine_stats() -> Option<MachineStats> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some(MachineStats {
        busy: total.saturating_sub(idle),
    })
}

/// Server and load-generator CPU and memory over a window of the run, and how busy the
/// machine was with anything else.
#[derive(Debug, Clone, Copy)]
pub struct ProcWindow {
    server: Option<ProcStats>,
    server_pid: Option<u32>,
    me: Option<ProcStats>,
    machine: Option<MachineStats>,
}

impl ProcWindow {
    /// Start the window now.
    pub fn start(server_pid: Option<u32>) -> Self {
        Self {
            server: server_pid.and_then(|p| proc_stats(&p.to_string())),
            server_pid,
            me: proc_stats("self"),
            machine: machine_stats(),
        }
    }

    /// RSS of the server when the window started, KiB.
    pub fn server_rss_kib(&self) -> Option<u64> {
        self.server.map(|s| s.rss_kib)
    }

    /// End the window: `{"server": {...}, "load_generator": {...}}`.
    pub fn finish(&self) -> Value {
        let end_server = self.server_pid.and_then(|p| proc_stats(&p.to_string()));
        let end_me = proc_stats("self");
        let side = |a: Option<ProcStats>, b: Option<ProcStats>| match (a, b) {
            (Some(a), Some(b)) => json!({
                "cpu_percent_of_one_core": window_cpu_percent(&a, &b),
                "cpu_percent_of_one_core_from_ticks": (b.at.duration_since(a.at) >= Duration::from_secs(1))
                    .then(|| tick_cpu_percent(&a, &b)),
                "rss_kib_start": a.rss_kib,
                "rss_kib_end": b.rss_kib,
            }),
            _ => Value::Null,
        };
        // CPU used by every other process on the machine, in % of one core: a noisy
        // neighbour shows up here.
        let others = match (self.machine, machine_stats(), self.me, end_me) {
            (Some(a), Some(b), Some(m0), Some(m1))
                if m1.at.duration_since(m0.at) >= Duration::from_secs(1) =>
            {
                let secs = m1.at.duration_since(m0.at).as_secs_f64();
                let busy = b.busy.saturating_sub(a.busy) as f64 / TICKS_PER_SECOND;
                let ours = |x: Option<ProcStats>, y: Option<ProcStats>| match (x, y) {
                    (Some(x), Some(y)) => {
                        y.cpu_ticks.saturating_sub(x.cpu_ticks) as f64 / TICKS_PER_SECOND
                    }
                    _ => 0.0,
                };
                let mine = ours(self.me, end_me) + ours(self.server, end_server);
                Some(round3((100.0 * (busy - mine) / secs).max(0.0)))
            }
            _ => None,
        };
        json!({
            "server": side(self.server, end_server),
            "load_generator": side(self.me, end_me),
            "other_processes_cpu_percent_of_one_core": others,
        })
    }
}

/// One second of the run.
#[derive(Debug, Clone)]
pub struct Point {
    /// Seconds since the start of the run (end of this interval).
    pub t: f64,
    /// Frames received per second.
    pub packets_per_s: f64,
    /// Bytes received per second.
    pub bytes_per_s: f64,
    /// Moves sent per second.
    pub sent_per_s: f64,
    /// Moves acknowledged (echo received) per second.
    pub acked_per_s: f64,
    /// Median move-to-echo latency of the echoes of this interval, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile of the same, ms.
    pub p99_ms: Option<f64>,
    /// Server CPU, % of one core.
    pub server_cpu: Option<f64>,
    /// Server RSS, KiB.
    pub server_rss_kib: Option<u64>,
    /// Load generator CPU, % of one core.
    pub loadgen_cpu: Option<f64>,
}

impl Point {
    /// As JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "t": self.t,
            "packets_per_s": self.packets_per_s,
            "bytes_per_s": self.bytes_per_s,
            "moves_sent_per_s": self.sent_per_s,
            "moves_acked_per_s": self.acked_per_s,
            "latency_p50_ms": self.p50_ms,
            "latency_p99_ms": self.p99_ms,
            "server_cpu_percent": self.server_cpu,
            "server_rss_kib": self.server_rss_kib,
            "load_generator_cpu_percent": self.loadgen_cpu,
        })
    }
}

/// Samples the counters and processes every `interval` into a timeline.
#[derive(Debug)]
pub struct Sampler {
    points: Arc<Mutex<Vec<Point>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    /// Start sampling.
    pub fn start(metrics: Arc<Metrics>, server_pid: Option<u32>, interval: Duration) -> Self {
        let points = Arc::new(Mutex::new(Vec::new()));
        let out = points.clone();
        let task = tokio::spawn(async move {
            let server = server_pid.map(|p| p.to_string());
            let mut last = metrics.counters();
            let mut last_server = server.as_deref().and_then(proc_stats);
            let mut last_me = proc_stats("self");
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let now = metrics.counters();
                let window = metrics.take_window();
                let secs = now.at.duration_since(last.at).as_secs_f64().max(1e-9);
                let rate = |a: u64, b: u64| round3(b.saturating_sub(a) as f64 / secs);
                let srv = server.as_deref().and_then(proc_stats);
                let me = proc_stats("self");
                let q = |p: f64| {
                    (!window.is_empty())
                        .then(|| round3(window.value_at_quantile(p) as f64 / 1000.0))
                };
                let point = Point {
                    t: round3(now.at.duration_since(metrics.started()).as_secs_f64()),
                    packets_per_s: rate(last.packets, now.packets),
                    bytes_per_s: rate(last.bytes, now.bytes),
                    sent_per_s: rate(last.sent, now.sent),
                    acked_per_s: rate(last.acked, now.acked),
                    p50_ms: q(0.5),
                    p99_ms: q(0.99),
                    server_cpu: match (&last_server, &srv) {
                        (Some(a), Some(b)) => Some(cpu_percent(a, b)),
                        _ => None,
                    },
                    server_rss_kib: srv.map(|s| s.rss_kib),
                    loadgen_cpu: match (&last_me, &me) {
                        (Some(a), Some(b)) => Some(cpu_percent(a, b)),
                        _ => None,
                    },
                };
                out.lock().unwrap_or_else(|e| e.into_inner()).push(point);
                last = now;
                last_server = srv;
                last_me = me;
            }
        });
        Self { points, task }
    }

    /// The timeline so far (shared with the sampling task).
    pub fn points(&self) -> Arc<Mutex<Vec<Point>>> {
        self.points.clone()
    }

    /// Stop and return the timeline.
    pub fn finish(self) -> Vec<Point> {
        self.task.abort();
        std::mem::take(&mut *self.points.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_in_ms() {
        let mut h = new_histogram();
        for us in 1..=1000u64 {
            record(&mut h, Duration::from_micros(us));
        }
        let p = percentiles(&h);
        assert_eq!(p["count"], 1000);
        assert!((p["p50_ms"].as_f64().unwrap() - 0.5).abs() < 0.01);
        assert!((p["max_ms"].as_f64().unwrap() - 1.0).abs() < 0.01);
        assert_eq!(percentiles(&new_histogram())["count"], 0);
    }

    #[test]
    fn exact_cpu_time_counts_a_busy_second() {
        let a = proc_stats("self").expect("/proc/self");
        assert!(a.run_ns.is_some(), "schedstat is readable");
        // Spin until the process has run for a second (however busy the machine is, within
        // 30 s), then check the figures against that run time, not against the wall clock.
        let start = Instant::now();
        let mut x = 0u64;
        let b = loop {
            let spin = Instant::now();
            while spin.elapsed() < Duration::from_millis(50) {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            let b = proc_stats("self").expect("/proc/self");
            let ran = b.run_ns.unwrap() - a.run_ns.unwrap();
            if (ran >= 1_000_000_000 && b.at.duration_since(a.at) >= Duration::from_secs(1))
                || start.elapsed() > Duration::from_secs(30)
            {
                break b;
            }
        };
        let busy = b.run_ns.unwrap() - a.run_ns.unwrap();
        assert!(
            busy >= 1_000_000_000,
            "{busy} ns of CPU in {:?}",
            start.elapsed()
        );
        let secs = b.at.duration_since(a.at).as_secs_f64();
        let expected = 100.0 * busy as f64 / 1e9 / secs;
        let window = window_cpu_percent(&a, &b).expect("a window of a second or more");
        assert!(
            (window - expected).abs() < 0.5,
            "{window} % vs {expected} %"
        );
        // Clock ticks are coarse (10 ms) but count the same time.
        let ticks = tick_cpu_percent(&a, &b);
        assert!(
            ticks >= expected * 0.5,
            "{ticks} % from ticks vs {expected} %"
        );
    }

    #[test]
    fn own_process_is_readable() {
        let s = proc_stats("self").expect("/proc/self");
        assert!(s.rss_kib > 0);
        assert!(machine_stats().is_some());
        let w = ProcWindow::start(Some(std::process::id())).finish();
        assert!(w["server"]["rss_kib_end"].as_u64().is_some());
        // Too short a window for a CPU figure.
        assert!(w["other_processes_cpu_percent_of_one_core"].is_null());
        assert!(w["server"]["cpu_percent_of_one_core"].is_null());
    }

    #[test]
    fn rates_over_a_window() {
        let m = Metrics::new();
        let a = m.counters();
        m.packet(10);
        m.packet(30);
        m.sent.fetch_add(3, Ordering::Relaxed);
        m.ack(Duration::from_millis(2));
        let b = m.counters();
        let r = a.rates_until(&b);
        assert_eq!(r["packets_received"], 2);
        assert_eq!(r["bytes_received"], 40);
        assert_eq!(r["moves_sent"], 3);
        assert_eq!(r["moves_acked"], 1);
        // Not measuring: the total histogram stays empty.
        assert!(m.total_latency().is_empty());
        m.measuring.store(true, Ordering::Relaxed);
        m.ack(Duration::from_millis(2));
        assert_eq!(m.total_latency().len(), 1);
    }
}
