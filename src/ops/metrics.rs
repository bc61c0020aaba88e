//! Prometheus metrics (`/metrics`, text format 0.0.4) and `/healthz`.
//!
//! Two sources feed a scrape: [`Metrics`], counters the engine bumps as
//! things happen (cheap atomics, no I/O on the upload path), and a
//! [`StateSource`] read at scrape time for what the journal knows (groups by
//! state, queue length). The journal read runs on the blocking pool, so a
//! slow disk delays a scrape, never an upload.
//!
//! Label values are bounded: retry reasons are cut to 64 characters and at
//! most [`MAX_REASONS`] distinct ones are kept (later ones count as `other`),
//! so a bug that passes free text cannot grow the series without bound.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jiff::Timestamp;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Rate;
use crate::model::PauseKind;

/// Journal states, always exported (0 when empty) so dashboards see every
/// series; the same list as `journal::GroupState::ALL` (a test holds them together).
pub const GROUP_STATES: [&str; 8] =
    ["waiting", "queued", "uploading", "completed", "rejected", "failed", "canceled", "expired"];

/// Distinct `reason` label values kept for `spatialgen_parts_retried_total`.
pub const MAX_REASONS: usize = 32;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("http.listen: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("metrics server: {0}")]
    Serve(#[source] std::io::Error),
}

/// What the journal says at scrape time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateSnapshot {
    /// Group count per journal state; states left out count as 0.
    pub groups_by_state: Vec<(String, u64)>,
    /// Groups waiting for an upload slot (`queued`).
    pub queue_length: u64,
    /// What holds the agent that an operator must fix, as recorded in the
    /// journal: (label, one line for people), e.g. (`auth`, "paused: the API
    /// refused the key since …"), (`watch_missing`, "watch folder … is
    /// missing …"). Non-empty makes `/healthz` answer 503.
    pub held: Vec<(String, String)>,
}

pub type SnapshotError = Box<dyn std::error::Error + Send + Sync>;

/// Read at each scrape (on the blocking pool). The lead's journal implements it;
/// any `Fn() -> Result<StateSnapshot, SnapshotError>` closure does too.
pub trait StateSource: Send + Sync + 'static {
    fn snapshot(&self) -> Result<StateSnapshot, SnapshotError>;
}

impl<F> StateSource for F
where
    F: Fn() -> Result<StateSnapshot, SnapshotError> + Send + Sync + 'static,
{
    fn snapshot(&self) -> Result<StateSnapshot, SnapshotError> {
        self()
    }
}

/// Counters and gauges the engine updates. Share as `Arc<Metrics>`.
#[derive(Debug)]
pub struct Metrics {
    started: Timestamp,
    bytes_uploaded: AtomicU64,
    groups_completed: AtomicU64,
    /// Milliseconds since the epoch of the last completed group; `i64::MIN` = none yet.
    last_success_ms: AtomicI64,
    parts_retried: Mutex<BTreeMap<String, u64>>,
    /// Every reason the queue is paused for now (`window`, `auth`, …);
    /// empty = running. Reasons come and go independently: the end of an
    /// auth pause does not hide a closed window, and the other way round.
    paused: Mutex<BTreeSet<String>>,
    /// Bytes/s; 0 = unlimited.
    bandwidth_limit: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            started: Timestamp::now(),
            bytes_uploaded: AtomicU64::new(0),
            groups_completed: AtomicU64::new(0),
            last_success_ms: AtomicI64::new(i64::MIN),
            parts_retried: Mutex::new(BTreeMap::new()),
            paused: Mutex::new(BTreeSet::new()),
            bandwidth_limit: AtomicU64::new(0),
        }
    }

    /// A part PUT is being retried. `reason` should come from a small fixed set;
    /// the engine's is `5xx`, `429`, `timeout`, `stall`, `connect`, `reset`,
    /// `url_expired`, `etag_mismatch`, `incomplete`, `http_other`, `other`.
    pub fn part_retried(&self, reason: &str) {
        let reason: String = reason.chars().take(64).collect();
        let mut map = self.parts_retried.lock().unwrap_or_else(|e| e.into_inner());
        let key = if map.contains_key(&reason) || map.len() < MAX_REASONS { reason } else { "other".to_string() };
        *map.entry(key).or_insert(0) += 1;
    }

    /// Bytes of parts the storage acknowledged (count a part once, when it is recorded done).
    pub fn bytes_uploaded(&self, n: u64) {
        self.bytes_uploaded.fetch_add(n, Ordering::Relaxed);
    }

    /// A group reached the library at `at`.
    pub fn group_completed(&self, at: Timestamp) {
        self.groups_completed.fetch_add(1, Ordering::Relaxed);
        self.last_success_ms.fetch_max(at.as_millisecond(), Ordering::Relaxed);
    }

    /// Paused, or no longer paused, for `reason` (a short word: `window`,
    /// `auth`). The gauge reads 1 while any reason holds.
    pub fn set_paused(&self, paused: bool, reason: &str) {
        let reason: String = reason.chars().take(64).collect();
        let mut p = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        if paused {
            // Bounded like the retry reasons: callers pass fixed words.
            if p.len() < MAX_REASONS || p.contains(&reason) {
                p.insert(reason);
            }
        } else {
            p.remove(&reason);
        }
    }

    /// The bandwidth limit in force (None = unlimited).
    pub fn set_bandwidth_limit(&self, rate: Option<Rate>) {
        self.bandwidth_limit.store(rate.map_or(0, |r| r.0), Ordering::Relaxed);
    }

    /// The text format for one scrape; `snapshot` is what the journal said (or why it could not).
    pub fn render(&self, snapshot: &Result<StateSnapshot, String>) -> String {
        let mut by_state: BTreeMap<String, u64> = GROUP_STATES.iter().map(|s| (s.to_string(), 0)).collect();
        if let Ok(snap) = snapshot {
            for (state, count) in &snap.groups_by_state {
                *by_state.entry(state.clone()).or_insert(0) += count;
            }
        }

        // Written in order: each family's HELP/TYPE directly before its samples.
        let mut text = String::with_capacity(2048);
        let mut emit = |name: &str, kind: &str, help: &str, samples: &[String]| {
            let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for s in samples {
                let _ = writeln!(text, "{s}");
            }
        };
        emit(
            "spatialgen_groups",
            "gauge",
            "Upload groups in the journal, by state.",
            &by_state
                .iter()
                .map(|(s, c)| format!("spatialgen_groups{{state=\"{}\"}} {c}", escape_label(s)))
                .collect::<Vec<_>>(),
        );
        let queue = snapshot.as_ref().map_or(0, |s| s.queue_length);
        emit(
            "spatialgen_queue_length",
            "gauge",
            "Groups queued for upload.",
            &[format!("spatialgen_queue_length {queue}")],
        );
        emit(
            "spatialgen_journal_up",
            "gauge",
            "1 if the journal could be read for this scrape.",
            &[format!("spatialgen_journal_up {}", u8::from(snapshot.is_ok()))],
        );
        emit(
            "spatialgen_bytes_uploaded_total",
            "counter",
            "Bytes of parts acknowledged by the storage since start.",
            &[format!("spatialgen_bytes_uploaded_total {}", self.bytes_uploaded.load(Ordering::Relaxed))],
        );
        let retried: Vec<String> = {
            let map = self.parts_retried.lock().unwrap_or_else(|e| e.into_inner());
            map.iter()
                .map(|(r, c)| format!("spatialgen_parts_retried_total{{reason=\"{}\"}} {c}", escape_label(r)))
                .collect()
        };
        emit("spatialgen_parts_retried_total", "counter", "Part uploads retried since start, by reason.", &retried);
        emit(
            "spatialgen_groups_completed_total",
            "counter",
            "Groups that reached the library since start.",
            &[format!("spatialgen_groups_completed_total {}", self.groups_completed.load(Ordering::Relaxed))],
        );
        let last = self.last_success_ms.load(Ordering::Relaxed);
        let last: Vec<String> = if last == i64::MIN {
            Vec::new()
        } else {
            vec![format!("spatialgen_last_success_timestamp_seconds {}", seconds(last))]
        };
        emit(
            "spatialgen_last_success_timestamp_seconds",
            "gauge",
            "When the last group reached the library (Unix time); absent until one does.",
            &last,
        );
        let paused = self.paused.lock().unwrap_or_else(|e| e.into_inner()).clone();
        emit(
            "spatialgen_paused",
            "gauge",
            "1 while uploads are paused (outside every upload window, the API refused the key, or an operator paused them).",
            &[format!("spatialgen_paused {}", u8::from(!paused.is_empty()))],
        );
        let why: Vec<String> =
            paused.iter().map(|r| format!("spatialgen_paused_info{{reason=\"{}\"}} 1", escape_label(r))).collect();
        emit(
            "spatialgen_paused_info",
            "gauge",
            "Why uploads are paused, one series per reason; absent while running.",
            &why,
        );
        let missing = snapshot.as_ref().map_or(0, |s| s.held.iter().filter(|(l, _)| l == "watch_missing").count());
        emit(
            "spatialgen_watch_folders_missing",
            "gauge",
            "Watch folders that are missing now (an unmounted share, a deleted folder).",
            &[format!("spatialgen_watch_folders_missing {missing}")],
        );
        let unreadable =
            snapshot.as_ref().map_or(0, |s| s.held.iter().filter(|(l, _)| l == "watch_unreadable").count());
        emit(
            "spatialgen_watch_folders_unreadable",
            "gauge",
            "Watch folders that cannot be read now (no descriptors left, EIO, a permission); retried with backoff.",
            &[format!("spatialgen_watch_folders_unreadable {unreadable}")],
        );
        let refused = snapshot.as_ref().is_ok_and(|s| s.held.iter().any(|(l, _)| l == PauseKind::Auth.as_str()));
        emit(
            "spatialgen_key_refused",
            "gauge",
            "1 while the API refuses the key (recorded in the journal).",
            &[format!("spatialgen_key_refused {}", u8::from(refused))],
        );
        emit(
            "spatialgen_bandwidth_limit_bytes_per_second",
            "gauge",
            "The bandwidth limit in force; 0 means unlimited.",
            &[format!("spatialgen_bandwidth_limit_bytes_per_second {}", self.bandwidth_limit.load(Ordering::Relaxed))],
        );
        emit(
            "spatialgen_start_time_seconds",
            "gauge",
            "When the agent started (Unix time).",
            &[format!("spatialgen_start_time_seconds {}", seconds(self.started.as_millisecond()))],
        );
        emit(
            "spatialgen_build_info",
            "gauge",
            "The agent's version.",
            &[format!("spatialgen_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))],
        );
        text
    }
}

/// Milliseconds since the epoch as decimal seconds.
fn seconds(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// Escape a label value: backslash, double quote and newline.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    source: Arc<dyn StateSource>,
}

async fn snapshot(source: &Arc<dyn StateSource>) -> Result<StateSnapshot, String> {
    let source = source.clone();
    match tokio::task::spawn_blocking(move || source.snapshot().map_err(|e| e.to_string())).await {
        Ok(r) => r,
        Err(e) => Err(format!("journal read did not finish: {e}")),
    }
}

async fn metrics_handler(State(app): State<AppState>) -> Response {
    let snap = snapshot(&app.source).await;
    if let Err(e) = &snap {
        tracing::warn!("metrics: cannot read the journal: {e}");
    }
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], app.metrics.render(&snap)).into_response()
}

/// 200 `ok` while the journal can be read and nothing holds the agent; 503
/// with the reasons otherwise (journal unreadable, the key refused, a watch
/// folder missing).
async fn health_handler(State(app): State<AppState>) -> Response {
    match snapshot(&app.source).await {
        Ok(snap) if snap.held.is_empty() => (StatusCode::OK, "ok\n").into_response(),
        Ok(snap) => {
            let lines: String = snap.held.iter().map(|(_, line)| format!("{line}\n")).collect();
            (StatusCode::SERVICE_UNAVAILABLE, lines).into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("journal unreadable: {e}\n")).into_response(),
    }
}

/// The routes, for embedding in another server or for tests.
pub fn router(metrics: Arc<Metrics>, source: Arc<dyn StateSource>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(health_handler))
        .with_state(AppState { metrics, source })
}

/// `/metrics` alone, for a server that answers `/healthz` itself (the console).
pub fn metrics_router(metrics: Arc<Metrics>, source: Arc<dyn StateSource>) -> Router {
    Router::new().route("/metrics", get(metrics_handler)).with_state(AppState { metrics, source })
}

/// Bind `[metrics] listen` early, so a taken port is reported at start-up.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr).await.map_err(|source| MetricsError::Bind { addr, source })
}

/// Bind `addr` and serve until `shutdown` is cancelled.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    source: Arc<dyn StateSource>,
    shutdown: CancellationToken,
) -> Result<(), MetricsError> {
    let listener = bind(addr).await?;
    serve_on(listener, metrics, source, shutdown).await
}

/// Serve on a listener already bound (e.g. to `127.0.0.1:0`) until `shutdown` is cancelled.
pub async fn serve_on(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    source: Arc<dyn StateSource>,
    shutdown: CancellationToken,
) -> Result<(), MetricsError> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("metrics on http://{addr}/metrics");
    }
    axum::serve(listener, router(metrics, source))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(MetricsError::Serve)
}

#[cfg(test)]
mod tests;
