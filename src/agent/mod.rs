//! The running agent: every long-lived worker of `spatialgen-sync run`,
//! started in order, supervised, reloaded and stopped in order.
//!
//! [`Agent::start`] opens the journal once (one handle for the whole
//! process) and starts the workers on one [`TaskTracker`], all under one
//! [`CancellationToken`]:
//! - the watchers (watch → settle → group → journal), restarted on reload;
//! - the upload engine (journal → SpatialGen), with the shared bandwidth
//!   [`Throttle`], the window gate and every reloaded config;
//! - [`follow_schedule`](crate::ops::follow_schedule), which keeps the
//!   throttle's rate, the paused gauge and the window state in step with the
//!   clock; a small task turns that state into the engine's open/closed gate;
//! - the notifier (`notify`): one task per hook and for the webhook, each
//!   tailing the journal's history from its own cursor (at least once);
//! - the retention task ([`retention`]): with `[journal] forget_after`,
//!   ended groups older than that are forgotten once a day;
//! - the HTTP listener (`console`): `/metrics` (fed by the engine's
//!   observer and one aggregate journal query per scrape), `/healthz`, the
//!   control API and the console page ([`crate::ops::console`]).
//!
//! A worker that ends with an error ends them all (the service manager
//! restarts the agent; the journal makes that harmless). [`serve`] adds the
//! process around it: the one-agent-per-journal lock, signals, `sd_notify`
//! ([`service`]) and reloading (`reload`). SIGINT/SIGTERM cancel the
//! token: the engine stops taking work and lets parts in flight finish for
//! `shutdown_grace`, the notifier lets running hooks finish within as long
//! again (what is not delivered yet is, at the next start), then the process exits 0.
//!
//! SIGHUP, or a change of the config file, reloads it: a bad new config is
//! refused with its reason (file:line) and the old one stays. What changed
//! is applied without touching uploads in flight: watch folders restart with
//! their new settings; windows and bandwidth follow at once; the engine takes
//! every `[upload]` setting for the steps it starts afterwards (including
//! `max_groups` and `max_parts_in_flight`); hooks get a new notifier; the
//! HTTP listener moves to its new address and re-reads its token; a live
//! bandwidth limit set from the console gives way to the config's. `[api]`, `[journal]` and log
//! settings need a restart and say so.

mod console;
pub mod fds;
mod metrics;
mod notify;
mod reload;
pub mod retention;
pub mod service;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::console::{AgentControls, HttpServer};
use self::metrics::MetricsObserver;
use self::notify::{Notifications, notify_loop};
use crate::config::{ApiKey, Config, ConfigError};
use crate::journal::{AgentLock, AsyncJournal, JournalError, Store};
use crate::logging::LogError;
use crate::ops::console::Console;
use crate::ops::hooks::{HooksError, Notifier};
use crate::ops::metrics::{Metrics, MetricsError, SnapshotError};
use crate::ops::reload::diff_reload;
use crate::ops::throttle::Throttle;
use crate::ops::window::{Schedule, WindowError, WindowState};
use crate::upload::EngineOptions;

/// Why the agent could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Another `run` holds the journal (exit code 2: a usage error).
    #[error(
        "another agent{} already runs on the journal {}; stop it first, or give this agent its own [journal] path \
         (in a fleet: its own [journal] node)",
        .pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        .journal
    )]
    AlreadyRunning { pid: Option<u32>, journal: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("upload.window: {0}")]
    Windows(#[from] WindowError),
    #[error("hooks: {0}")]
    Hooks(#[from] HooksError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Logging(#[from] LogError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// A worker ended with an error, which stopped the agent.
    #[error("{0}")]
    Stopped(String),
}

/// `run`: the agent for `cfg` until SIGINT or SIGTERM. Only one agent runs
/// per journal: a second one stops at once, before anything starts.
pub fn serve(cfg: Config) -> Result<(), AgentError> {
    cfg.check_environment()?;
    // A fleet's agent lock is taken when the database is open (in `Agent::start`).
    let _agent_lock = match cfg.journal.url {
        Some(_) => None,
        None => match AgentLock::try_acquire(&cfg.journal.path)? {
            Ok(lock) => Some(lock),
            Err(pid) => {
                return Err(AgentError::AlreadyRunning { pid, journal: cfg.journal.path.display().to_string() });
            }
        },
    };
    let key = cfg.api_key()?;
    let _log = crate::logging::init(&cfg.log)?;
    if let Some((before, after)) = fds::raise_soft_limit() {
        tracing::info!("open-file limit raised from {before} to {after} (the hard limit)");
    }
    if let Some((soft, hard)) = fds::limits()
        && let Some(w) = fds::warning(&cfg, soft, hard)
    {
        tracing::warn!("{w}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(AgentError::Runtime)?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let cfg = Arc::new(cfg);
        let agent = Agent::start(cfg.clone(), key, shutdown.clone()).await?;
        let folders = cfg.watch.len();
        tracing::info!(folders, journal = %agent.journal().blocking().describe(), "agent started");
        service::ready(&format!("watching {folders} folder(s)"));
        service::spawn_watchdog(shutdown.clone());
        tokio::spawn(reload::reload_loop(cfg.clone(), agent.reloads.clone(), shutdown.clone()));
        if std::env::var_os("NOTIFY_SOCKET").is_some() {
            tokio::spawn(metrics::status_loop(agent.journal(), shutdown.clone()));
        }
        tokio::select! {
            _ = service::shutdown_signal() => {}
            _ = shutdown.cancelled() => {}
        }
        service::stopping();
        shutdown.cancel();
        agent.join().await?;
        tracing::info!("agent stopped; the next start resumes from the journal");
        Ok(())
    })
}

/// The running agent's workers.
pub struct Agent {
    tracker: TaskTracker,
    /// The first fatal error a worker ended with.
    failure: Arc<Mutex<Option<String>>>,
    /// The process's one journal handle.
    journal: AsyncJournal,
    /// Send a new (validated) config here to apply it (see `reload`).
    pub reloads: watch::Sender<Arc<Config>>,
    /// A fleet node's agent lock, held while the agent runs.
    _agent_lock: Option<AgentLock>,
}

impl Agent {
    /// Start every worker for `cfg`; they run until `shutdown` is cancelled.
    pub async fn start(cfg: Arc<Config>, key: ApiKey, shutdown: CancellationToken) -> Result<Agent, AgentError> {
        // Open (and migrate) once, up front: a broken journal stops startup
        // with its reason, and every worker shares this one handle.
        let store: Arc<dyn Store> = {
            let c = cfg.clone();
            tokio::task::spawn_blocking(move || crate::journal::open_configured(&c))
                .await
                .map_err(JournalError::from)??
        };
        // One agent per node of a fleet (a single machine's is taken in `serve`).
        let agent_lock = match cfg.journal.url {
            Some(_) => match AsyncJournal::new(store.clone()).call(|j| j.try_lock_agent()).await? {
                Some(lock) => Some(lock),
                None => return Err(AgentError::AlreadyRunning { pid: None, journal: store.describe() }),
            },
            None => None,
        };
        let journal = AsyncJournal::new(store.clone());
        // Everything that can refuse to start, before any task is spawned.
        let schedule = Schedule::from_config(&cfg.upload)?;
        let notifier = Notifier::new(&cfg.hooks)?;
        // Every notification consumer has its cursor before anything can
        // end a group (a new one starts at the newest history line).
        notify::prepare_cursors(&journal, &notifier).await?;
        let tracker = TaskTracker::new();
        let failure = Arc::new(Mutex::new(None));
        let metrics = Arc::new(Metrics::new());
        // Bound first of the workers, so a taken port stops startup with nothing left running.
        let listener = match cfg.http_listen() {
            Some(addr) => Some((addr, crate::ops::metrics::bind(addr).await?)),
            None => None,
        };
        let token = Arc::new(RwLock::new(cfg.http_token()?));
        let throttle = Throttle::new(cfg.upload.bandwidth);
        let now = schedule.state_now();
        let (gate_tx, gate_rx) = watch::channel(now.open);
        let (window_tx, window_rx) = watch::channel(now);
        let (schedule_tx, schedule_rx) = watch::channel(Arc::new(schedule));
        let schedule_tx = Arc::new(schedule_tx);
        let window_view = window_tx.subscribe();
        tracker.spawn(crate::ops::follow_schedule(
            schedule_rx,
            throttle.clone(),
            metrics.clone(),
            window_tx,
            shutdown.clone(),
        ));
        tracker.spawn(feed_gate(window_rx, gate_tx, shutdown.clone()));
        let (reloads, _) = watch::channel(cfg.clone());

        let engine_done = CancellationToken::new();
        let live_bandwidth = Arc::new(AtomicBool::new(false));
        let console = Console {
            journal: journal.clone(),
            controls: Arc::new(AgentControls {
                throttle: throttle.clone(),
                metrics: metrics.clone(),
                window: window_view,
                schedule: schedule_tx.clone(),
                config: reloads.subscribe(),
                live_bandwidth: live_bandwidth.clone(),
                engine_done: engine_done.clone(),
                shutdown: shutdown.clone(),
                failure: failure.clone(),
                node: store.node().map(str::to_string).or_else(AgentControls::new_node),
            }),
            token: token.clone(),
            metrics: metrics.clone(),
            source: {
                // Called on the blocking pool by the server, once per scrape or health check.
                let j = journal.clone();
                Arc::new(move || metrics::snapshot(j.blocking().as_ref()).map_err(SnapshotError::from))
            },
        };
        let mut http_server =
            listener.map(|(addr, l)| HttpServer::serve(addr, l, &tracker, &failure, &shutdown, console.clone()));
        // Ended groups older than `[journal] forget_after`, once a day.
        tracker.spawn(retention::retention_loop(
            journal.clone(),
            cfg.journal.forget_after.map(|d| d.0),
            retention::Every::DAILY,
            shutdown.clone(),
        ));
        tracker.spawn(notify_loop(Notifications {
            journal: journal.clone(),
            notifier,
            key_env: cfg.api.api_key_env.clone(),
            reloads: reloads.subscribe(),
            shutdown: shutdown.clone(),
        }));

        let opts = EngineOptions {
            throttle: Some(engine_throttle(throttle.clone())),
            observer: Some(Arc::new(MetricsObserver(metrics.clone()))),
            gate: Some(gate_rx),
            config: Some(reloads.subscribe()),
            ..EngineOptions::default()
        };
        let (engine_cfg, engine_journal, s) = (cfg.clone(), store.clone(), shutdown.clone());
        let done = engine_done.clone();
        supervise(&tracker, &failure, &shutdown, "upload engine", async move {
            let r = crate::upload::run_engine(engine_cfg, engine_journal, key, opts, s).await;
            done.cancel();
            r
        });

        // Each reloaded config: watchers restart when their settings changed,
        // the schedule is resent, the HTTP listener moves. Uploads are not touched.
        let mut reload_rx = reloads.subscribe();
        let (t, f, s, j) = (tracker.clone(), failure.clone(), shutdown.clone(), journal.clone());
        let mut prev = cfg.clone();
        tracker.spawn(async move {
            let mut generation: Option<CancellationToken> = None;
            loop {
                let current = reload_rx.borrow_and_update().clone();
                let plan = diff_reload(&prev, &current);
                // A live bandwidth limit (from the console) lasts until the next reload.
                let live = generation.is_some() && live_bandwidth.swap(false, Ordering::Relaxed);
                if generation.is_none() || plan.schedule_changed() || live {
                    let _ = schedule_tx.send(match Schedule::from_config(&current.upload) {
                        Ok(s) => Arc::new(s),
                        Err(e) => {
                            tracing::error!("upload.window: {e}; keeping the previous windows");
                            schedule_tx.borrow().clone()
                        }
                    });
                }
                let watch_changed =
                    !(plan.watch_added.is_empty() && plan.watch_removed.is_empty() && plan.watch_changed.is_empty());
                if generation.is_none() || watch_changed {
                    if let Some(g) = generation.take() {
                        g.cancel();
                    }
                    let g = s.child_token();
                    let (g2, jw, c) = (g.clone(), j.blocking().clone(), current.clone());
                    supervise(&t, &f, &s, "watchers", async move { crate::watch::run_watchers(c, jw, g2).await });
                    generation = Some(g);
                }
                if plan.metrics_changed {
                    match current.http_token() {
                        Ok(new) => *token.write().unwrap_or_else(|p| p.into_inner()) = new,
                        Err(e) => tracing::error!("{e}; the console keeps the token it had"),
                    }
                    http_server =
                        HttpServer::restart(http_server.take(), current.http_listen(), &t, &f, &s, console.clone())
                            .await;
                }
                prev = current;
                tokio::select! {
                    _ = s.cancelled() => break,
                    changed = reload_rx.changed() => {
                        if changed.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        tracker.close();
        Ok(Agent { tracker, failure, journal, reloads, _agent_lock: agent_lock })
    }

    /// The journal every worker of this agent uses.
    pub fn journal(&self) -> AsyncJournal {
        self.journal.clone()
    }

    /// Wait until every worker has stopped; the first fatal error, if any.
    pub async fn join(self) -> Result<(), AgentError> {
        drop(self.reloads);
        self.tracker.wait().await;
        match self.failure.lock().map(|mut f| f.take()) {
            Ok(Some(e)) => Err(AgentError::Stopped(e)),
            _ => Ok(()),
        }
    }
}

/// Run `fut` on `tracker`; if it fails, record the error and stop everything.
fn supervise<E, F>(
    tracker: &TaskTracker,
    failure: &Arc<Mutex<Option<String>>>,
    shutdown: &CancellationToken,
    what: &'static str,
    fut: F,
) where
    E: std::fmt::Display + Send + 'static,
    F: std::future::Future<Output = Result<(), E>> + Send + 'static,
{
    let (failure, shutdown) = (failure.clone(), shutdown.clone());
    tracker.spawn(async move {
        if let Err(e) = fut.await {
            let msg = format!("{what} stopped: {e}");
            tracing::error!("{msg}; stopping the agent");
            if let Ok(mut f) = failure.lock() {
                f.get_or_insert(msg);
            }
            shutdown.cancel();
        }
    });
}

/// The engine's throttle: every chunk of every PUT waits for the shared limiter.
pub fn engine_throttle(throttle: Throttle) -> crate::upload::stream::ChunkGate {
    Arc::new(move |n| {
        let t = throttle.clone();
        Box::pin(async move { t.acquire(n).await })
    })
}

/// The window state as the engine's gate: open or not.
async fn feed_gate(mut window: watch::Receiver<WindowState>, gate: watch::Sender<bool>, shutdown: CancellationToken) {
    loop {
        let open = window.borrow_and_update().open;
        gate.send_if_modified(|g| std::mem::replace(g, open) != open);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = window.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_engine_throttle_waits_on_the_shared_limiter() {
        let limiter = Throttle::new(Some(crate::config::Rate(1024 * 1024)));
        let t = engine_throttle(limiter.clone());
        let start = tokio::time::Instant::now();
        t(512 * 1024).await;
        t(512 * 1024).await;
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(900), "1 MiB at 1 MiB/s took {took:?}");
        limiter.set_rate(None);
        let start = tokio::time::Instant::now();
        t(64 * 1024 * 1024).await;
        assert_eq!(start.elapsed(), Duration::ZERO, "unlimited after a change of rate");
    }
}
