//! `/metrics` in the Prometheus text format, from `metrics-exporter-prometheus`.
//!
//! [`Prometheus::install`] installs the process's metrics recorder (once: the recorder is
//! global), describes partyroom's metrics and keeps the exporter's histograms drained from
//! a thread of its own. Install it **before** building the rooms and the [`Server`], which take
//! their metric handles when they are built. [`Prometheus::router`] answers `GET /metrics`:
//! merge it into the server (`Server::merge`) to serve it on the main port, or serve it on an
//! admin port of its own.
//!
//! The names: [`partyroom_room::metrics`] (rooms, messages, actions, sync, storage) and
//! [`crate::metrics`] (connections, refusals, relays); the cluster and world crates add theirs.
//!
//! ```no_run
//! # async fn demo(rooms: partyroom_room::RoomsBuilder) -> Result<(), Box<dyn std::error::Error>> {
//! let prometheus = partyroom_server::prometheus::Prometheus::install()?;
//! let server = partyroom_server::Server::new(rooms.build()).merge(prometheus.router());
//! # Ok(()) }
//! ```
//!
//! [`Server`]: crate::Server

use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;
use http::{HeaderValue, header};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The path of the endpoint.
pub const PATH: &str = "/metrics";

/// Histogram buckets of the `_seconds` metrics: 10 µs to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often the exporter's histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Why the recorder could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("installing the Prometheus recorder: {0}")]
pub struct InstallError(String);

/// The installed Prometheus recorder of this process. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Prometheus {
    handle: PrometheusHandle,
}

static INSTALLED: OnceLock<Prometheus> = OnceLock::new();

impl Prometheus {
    /// Install the recorder, or return the one this function installed before. Fails if
    /// another metrics recorder was installed in this process.
    pub fn install() -> Result<Prometheus, InstallError> {
        if let Some(p) = INSTALLED.get() {
            return Ok(p.clone());
        }
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .map_err(|e| InstallError(e.to_string()))?;
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let mine = Prometheus { handle };
        // Two racing installs: one recorder wins, the other is dropped.
        if metrics::set_global_recorder(recorder).is_err() {
            return INSTALLED
                .get()
                .cloned()
                .ok_or_else(|| InstallError("another metrics recorder is installed".into()));
        }
        let installed = INSTALLED.get_or_init(|| mine).clone();
        partyroom_room::metrics::describe();
        crate::metrics::describe();
        crate::metrics::track_outboxes();
        partyroom_room::metrics::enable();
        let upkeep = installed.handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                }
            })
            .map_err(|e| InstallError(e.to_string()))?;
        Ok(installed)
    }

    /// Every metric now, in the Prometheus text format (version 0.0.4). What is measured at
    /// scrape time (outgoing queues, the rooms' own message and frame counts) is read first.
    pub fn render(&self) -> String {
        crate::metrics::collect_queues();
        partyroom_room::metrics::publish();
        self.handle.render()
    }

    /// `GET /metrics`.
    pub fn router(&self) -> Router {
        let this = self.clone();
        Router::new().route(
            PATH,
            get(move || {
                let body = this.render();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                        )],
                        body,
                    )
                        .into_response()
                }
            }),
        )
    }
}
