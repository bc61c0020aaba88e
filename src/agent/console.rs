//! The agent's HTTP listener (the console: `/metrics`, `/healthz`,
//! `/api/v1/…`, the page) and the agent's side of its controls: the window
//! state, the bandwidth in force and a live change of it, whether the
//! engine still runs.
//!
//! A live bandwidth limit goes the way a reload's does: a new schedule (the
//! running config's windows, every limit replaced by the one asked for) is
//! sent to `follow_schedule`, which sets the throttle and the gauge. The next
//! reload sends the config's own schedule again, so a live limit lasts until then.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::supervise;
use crate::config::{Config, Rate};
use crate::ops::console::listen::{self, Settings, SettingsSource};
use crate::ops::console::{AgentView, BandwidthView, Console, Controls, WindowsView};
use crate::ops::metrics::{Metrics, MetricsError};
use crate::ops::throttle::Throttle;
use crate::ops::window::{Schedule, WindowState};

/// What the console asks of the running agent.
pub(super) struct AgentControls {
    pub throttle: Throttle,
    pub metrics: Arc<Metrics>,
    /// The window state `follow_schedule` publishes.
    pub window: watch::Receiver<WindowState>,
    /// Where a new schedule goes (shared with the reload task).
    pub schedule: Arc<watch::Sender<Arc<Schedule>>>,
    /// The config in force (every reload).
    pub config: watch::Receiver<Arc<Config>>,
    /// A live bandwidth limit is in force (until the next reload).
    pub live_bandwidth: Arc<AtomicBool>,
    /// Cancelled when the engine's task ends.
    pub engine_done: CancellationToken,
    pub shutdown: CancellationToken,
    pub failure: Arc<Mutex<Option<String>>>,
    pub node: Option<String>,
}

impl AgentControls {
    pub(super) fn new_node() -> Option<String> {
        Some(crate::config::host_name())
    }
}

impl Controls for AgentControls {
    fn agent(&self) -> AgentView {
        let w = self.window.borrow().clone();
        let configured = !self.config.borrow().upload.window.is_empty();
        AgentView {
            windows: WindowsView {
                configured,
                open: w.open,
                message: w.to_string(),
                until: w.until.as_ref().map(|u| u.timestamp().to_string()),
            },
            bandwidth: BandwidthView {
                bytes_per_second: self.throttle.rate().map(|r| r.0),
                live: self.live_bandwidth.load(Ordering::Relaxed),
            },
            node: self.node.clone(),
            engine_running: !self.engine_done.is_cancelled(),
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    fn set_bandwidth(&self, limit: Option<Rate>) {
        let cfg = self.config.borrow().clone();
        let mut upload = cfg.upload.clone();
        upload.bandwidth = limit;
        for w in &mut upload.window {
            w.bandwidth = None;
        }
        match Schedule::from_config(&upload) {
            Ok(s) => {
                self.live_bandwidth.store(true, Ordering::Relaxed);
                // At once, so the next chunk obeys; follow_schedule says the same next.
                self.throttle.set_rate(limit);
                self.metrics.set_bandwidth_limit(limit);
                self.schedule.send_replace(Arc::new(s));
            }
            Err(e) => tracing::error!("upload.window: {e}; the bandwidth stays as it was"),
        }
    }

    fn engine_stopped(&self) -> Option<String> {
        if !self.engine_done.is_cancelled() || self.shutdown.is_cancelled() {
            return None;
        }
        let why = self.failure.lock().ok().and_then(|f| f.clone());
        Some(why.unwrap_or_else(|| "the upload engine ended".into()))
    }

    fn config(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }
}

/// The listener of one `[http] listen` address.
pub(super) struct HttpServer {
    addr: std::net::SocketAddr,
    stop: CancellationToken,
}

impl HttpServer {
    /// Serve the console on `listener` (already bound to `addr`) until `shutdown` or a move.
    pub(super) fn serve(
        addr: std::net::SocketAddr,
        listener: TcpListener,
        tracker: &TaskTracker,
        failure: &Arc<Mutex<Option<String>>>,
        shutdown: &CancellationToken,
        console: Console,
    ) -> HttpServer {
        let stop = shutdown.child_token();
        let s = stop.clone();
        tracing::info!("console on http://{addr}/, metrics on http://{addr}/metrics");
        let controls = console.controls.clone();
        let settings: SettingsSource = Arc::new(move || {
            let cfg = controls.config();
            Settings {
                max_connections: cfg.http_max_connections(),
                grace: cfg.upload.shutdown_grace.0,
                header_timeout: listen::HEADER_TIMEOUT,
                stall: listen::STALL,
            }
        });
        supervise(tracker, failure, shutdown, "http server", async move {
            listen::serve(listener, crate::ops::console::router(console), settings, s).await;
            Ok::<(), MetricsError>(())
        });
        HttpServer { addr, stop }
    }

    /// Move to `listen`: the new address is bound first, so if it is taken the
    /// old server keeps serving (and the error is logged).
    pub(super) async fn restart(
        old: Option<HttpServer>,
        listen: Option<std::net::SocketAddr>,
        tracker: &TaskTracker,
        failure: &Arc<Mutex<Option<String>>>,
        shutdown: &CancellationToken,
        console: Console,
    ) -> Option<HttpServer> {
        let Some(addr) = listen else {
            if let Some(o) = old {
                tracing::info!(addr = %o.addr, "http server stopped (no [http] or [metrics] listen any more)");
                o.stop.cancel();
            }
            return None;
        };
        if let Some(o) = &old
            && o.addr == addr
        {
            return old;
        }
        // A port freed by the old server is not free until it stopped: bind the new one first.
        match crate::ops::metrics::bind(addr).await {
            Ok(listener) => {
                if let Some(o) = old {
                    o.stop.cancel();
                }
                Some(HttpServer::serve(addr, listener, tracker, failure, shutdown, console))
            }
            Err(e) => {
                tracing::error!("{e}; the http server stays where it was");
                old
            }
        }
    }
}
