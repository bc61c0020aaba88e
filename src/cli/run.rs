//! `spatialgen-sync run --config FILE`: the agent.
//!
//! [`Agent`] starts the long-lived workers — the watchers (watch → settle →
//! group → journal), the upload engine (journal → SpatialGen), the metrics
//! server — on one [`TaskTracker`], all under one [`CancellationToken`]. A
//! worker that ends with an error ends them all (the service manager restarts
//! the agent; the journal makes that harmless). SIGINT/SIGTERM cancel the
//! token: the engine stops taking work and lets parts in flight finish for
//! `shutdown_grace`, then everything is recorded and the process exits 0.
//!
//! SIGHUP, or a change of the config file, reloads it: a bad new config is
//! refused with its reason (file:line) and the old one stays; watch folders
//! are restarted with the new settings without touching uploads in flight;
//! windows and the bandwidth limit follow at once; `[api]`/`[journal]`
//! changes need a restart and say so.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Outcome, RunArgs, service};
use crate::config::{ApiKey, Config};
use crate::journal::{GroupState, Journal};
use crate::ops::metrics::{Metrics, SnapshotError, StateSnapshot};
use crate::ops::throttle::Throttle;
use crate::ops::window::Schedule;

pub fn run(args: RunArgs) -> anyhow::Result<Outcome> {
    let cfg = args.config.load()?;
    cfg.check_environment()?;
    let key = cfg.api_key()?;
    let _log = crate::logging::init(&cfg.log)?;
    super::runtime()?.block_on(async move {
        let shutdown = CancellationToken::new();
        let cfg = Arc::new(cfg);
        let agent = Agent::start(cfg.clone(), key, shutdown.clone()).await?;
        let folders = cfg.watch.len();
        tracing::info!(folders, journal = %cfg.journal.path.display(), "agent started");
        service::ready(&format!("watching {folders} folder(s)"));
        service::spawn_watchdog(shutdown.clone());
        tokio::spawn(reload_loop(cfg.clone(), agent.reloads.clone(), shutdown.clone()));
        if std::env::var_os("NOTIFY_SOCKET").is_some() {
            tokio::spawn(status_loop(cfg.journal.path.clone(), shutdown.clone()));
        }
        tokio::select! {
            _ = service::shutdown_signal() => {}
            _ = shutdown.cancelled() => {}
        }
        service::stopping();
        shutdown.cancel();
        agent.join().await?;
        tracing::info!("agent stopped; the next start resumes from the journal");
        Ok(Outcome::Success)
    })
}

/// The running agent's workers.
pub struct Agent {
    tracker: TaskTracker,
    /// The first fatal error a worker ended with.
    failure: Arc<Mutex<Option<String>>>,
    /// Send a new config here to apply it (see [`reload_loop`]).
    pub reloads: watch::Sender<Arc<Config>>,
}

impl Agent {
    /// Start every worker for `cfg`; they run until `shutdown` is cancelled.
    pub async fn start(cfg: Arc<Config>, key: ApiKey, shutdown: CancellationToken) -> anyhow::Result<Agent> {
        let journal_path = cfg.journal.path.clone();
        // Open (and migrate) once up front, so a broken journal stops startup with its reason.
        let journal = {
            let p = journal_path.clone();
            Arc::new(tokio::task::spawn_blocking(move || Journal::open(&p)).await??)
        };
        let tracker = TaskTracker::new();
        let failure = Arc::new(Mutex::new(None));
        let metrics = Arc::new(Metrics::new());
        let throttle = Throttle::new(cfg.upload.bandwidth);
        let schedule = Schedule::from_config(&cfg.upload).context("upload.window")?;
        let (window_tx, _window_rx) = watch::channel(schedule.state_now());
        let (schedule_tx, schedule_rx) = watch::channel(Arc::new(schedule));
        tracker.spawn(crate::ops::follow_schedule(
            schedule_rx,
            throttle.clone(),
            metrics.clone(),
            window_tx,
            shutdown.clone(),
        ));

        if let Some(addr) = cfg.metrics.listen {
            let listener = crate::ops::metrics::bind(addr).await?;
            let j = journal.clone();
            let source = Arc::new(move || snapshot(&j));
            let (m, s) = (metrics.clone(), shutdown.clone());
            supervise(&tracker, &failure, &shutdown, "metrics server", async move {
                crate::ops::metrics::serve_on(listener, m, source, s).await
            });
        }

        let engine_cfg = cfg.clone();
        let (s, path) = (shutdown.clone(), journal_path.clone());
        supervise(&tracker, &failure, &shutdown, "upload engine", async move {
            crate::upload::run_engine(engine_cfg, &path, key, s).await
        });

        // Watchers restart with each reloaded config; uploads are not touched.
        let (reloads, mut reload_rx) = watch::channel(cfg.clone());
        let (t, f, s) = (tracker.clone(), failure.clone(), shutdown.clone());
        tracker.spawn(async move {
            loop {
                let current = reload_rx.borrow_and_update().clone();
                let _ = schedule_tx.send(match Schedule::from_config(&current.upload) {
                    Ok(s) => Arc::new(s),
                    Err(e) => {
                        tracing::error!("upload.window: {e}; keeping the previous windows");
                        schedule_tx.borrow().clone()
                    }
                });
                let generation = s.child_token();
                let (g, p) = (generation.clone(), journal_path.clone());
                supervise(&t, &f, &s, "watchers", async move { crate::watch::run_watchers(current, p, g).await });
                tokio::select! {
                    _ = s.cancelled() => break,
                    changed = reload_rx.changed() => {
                        generation.cancel();
                        if changed.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        tracker.close();
        Ok(Agent { tracker, failure, reloads })
    }

    /// Wait until every worker has stopped; the first fatal error, if any.
    pub async fn join(self) -> anyhow::Result<()> {
        drop(self.reloads);
        self.tracker.wait().await;
        match self.failure.lock().map(|mut f| f.take()) {
            Ok(Some(e)) => anyhow::bail!(e),
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

/// Groups by state and queue length for a metrics scrape.
fn snapshot(journal: &Journal) -> Result<StateSnapshot, SnapshotError> {
    let rows = journal.list()?;
    let mut by_state: Vec<(String, u64)> = GroupState::ALL.iter().map(|s| (s.to_string(), 0)).collect();
    for r in &rows {
        if let Some(slot) = by_state.iter_mut().find(|(s, _)| *s == r.state.as_str()) {
            slot.1 += 1;
        }
    }
    let queue_length = rows.iter().filter(|r| matches!(r.state, GroupState::Queued | GroupState::Uploading)).count();
    Ok(StateSnapshot { groups_by_state: by_state, queue_length: queue_length as u64 })
}

/// Under systemd: a one-line queue summary in `systemctl status`, every 30 s.
async fn status_loop(journal_path: PathBuf, shutdown: CancellationToken) {
    let Ok(journal) = Journal::open(&journal_path) else { return };
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Ok(snap) = snapshot(&journal) {
            let line: Vec<String> =
                snap.groups_by_state.iter().filter(|(_, n)| *n > 0).map(|(s, n)| format!("{n} {s}")).collect();
            service::status(&if line.is_empty() { "idle".to_string() } else { line.join(", ") });
        }
    }
}

/// Reload the config on SIGHUP and when the file changes (looked at every 5 s).
async fn reload_loop(mut current: Arc<Config>, reloads: watch::Sender<Arc<Config>>, shutdown: CancellationToken) {
    let path: PathBuf = current.source.clone();
    let mtime = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen: Option<SystemTime> = mtime(&path);
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<Option<()>>();
        let why = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hangup => "SIGHUP",
            _ = tick.tick() => {
                let now = mtime(&path);
                if now == seen { continue; }
                seen = now;
                "the config file changed"
            }
        };
        match crate::ops::reload::load_reload(&path, &current) {
            Err(e) => tracing::error!("reload ({why}) refused, the running config stays: {e}"),
            Ok((_, plan)) if plan.is_empty() => tracing::info!("reload ({why}): nothing changed"),
            Ok((new, plan)) => {
                if let Err(e) = new.check_environment() {
                    tracing::error!("reload ({why}) refused, the running config stays: {e}");
                    continue;
                }
                if !plan.restart_required.is_empty() {
                    tracing::warn!(
                        "reload ({why}): {plan}; [api]/[journal]/log output changes take effect after a restart"
                    );
                } else {
                    tracing::info!("reload ({why}): {plan}");
                }
                current = Arc::new(new);
                let _ = reloads.send(current.clone());
            }
        }
    }
}
