//! `spatialgen-sync run --config FILE`: the agent.
//!
//! [`Agent`] starts the long-lived workers on one [`TaskTracker`], all under
//! one [`CancellationToken`]:
//! - the watchers (watch → settle → group → journal), restarted on reload;
//! - the upload engine (journal → SpatialGen), with the shared bandwidth
//!   [`Throttle`], the window gate and every reloaded config;
//! - [`follow_schedule`](crate::ops::follow_schedule), which keeps the
//!   throttle's rate, the paused gauge and the window state in step with the
//!   clock; a small task turns that state into the engine's open/closed gate;
//! - the notifier, which tails the journal's history for groups that became
//!   `completed`, `failed` or `rejected` and runs the hooks and the webhook
//!   (rejections happen in the watcher, not the engine, so the journal is
//!   the one place that sees all three);
//! - the metrics server, fed by the engine's [`Observer`] and by one
//!   aggregate journal query per scrape.
//!
//! A worker that ends with an error ends them all (the service manager
//! restarts the agent; the journal makes that harmless). SIGINT/SIGTERM
//! cancel the token: the engine stops taking work and lets parts in flight
//! finish for `shutdown_grace`, the notifier delivers what the engine
//! recorded last and waits (as long again) for running hooks, then the
//! process exits 0.
//!
//! SIGHUP, or a change of the config file, reloads it: a bad new config is
//! refused with its reason (file:line) and the old one stays. What changed
//! is applied without touching uploads in flight: watch folders restart with
//! their new settings; windows and bandwidth follow at once; the engine takes
//! every `[upload]` setting for the steps it starts afterwards (including
//! `max_groups` and `max_parts_in_flight`); hooks get a new notifier; the
//! metrics server moves to its new address. `[api]`, `[journal]` and log
//! settings need a restart and say so.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use jiff::Timestamp;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Outcome, RunArgs, service};
use crate::config::{ApiKey, Config, HooksConfig};
use crate::journal::{AgentLock, Ended, GroupState, Journal};
use crate::ops::hooks::{EventKind, GroupEvent, Notifier};
use crate::ops::metrics::{Metrics, SnapshotError, StateSnapshot};
use crate::ops::reload::diff_reload;
use crate::ops::throttle::Throttle;
use crate::ops::window::{Schedule, WindowState};
use crate::upload::{EngineOptions, GroupOutcome, Observer, PAUSED_WINDOW};

/// How often the notifier looks for groups that ended.
const NOTIFY_POLL: Duration = Duration::from_millis(250);
/// Ended groups read from the journal per query.
const NOTIFY_BATCH: u32 = 100;

pub fn run(args: RunArgs) -> anyhow::Result<Outcome> {
    let cfg = args.config.load()?;
    cfg.check_environment()?;
    // One agent per journal, decided before anything starts: a second one
    // would only wait for the engine lock while its watchers ran.
    let _agent_lock = match AgentLock::try_acquire(&cfg.journal.path)? {
        Ok(lock) => lock,
        Err(pid) => {
            let who = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
            return Err(super::UsageError(format!(
                "another agent{who} already runs on the journal {}; stop it first, or give this agent its own \
                 [journal] path",
                cfg.journal.path.display()
            ))
            .into());
        }
    };
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
    /// Send a new (validated) config here to apply it (see [`reload_loop`]).
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
        // Everything that can refuse to start, before any task is spawned.
        let schedule = Schedule::from_config(&cfg.upload).context("upload.window")?;
        let notifier = Notifier::new(&cfg.hooks).context("hooks")?.without_env(&cfg.api.api_key_env);
        // Notifications start from the newest line of history: what ended
        // before this start was notified by the run that saw it.
        let cursor = {
            let j = journal.clone();
            tokio::task::spawn_blocking(move || j.last_event_id()).await??
        };
        let tracker = TaskTracker::new();
        let failure = Arc::new(Mutex::new(None));
        let metrics = Arc::new(Metrics::new());
        // Bound first of the workers, so a taken port stops startup with nothing left running.
        let mut metrics_server = match cfg.metrics.listen {
            Some(addr) => {
                Some(MetricsServer::start(addr, &tracker, &failure, &shutdown, metrics.clone(), journal.clone()).await?)
            }
            None => None,
        };
        let throttle = Throttle::new(cfg.upload.bandwidth);
        let now = schedule.state_now();
        let (gate_tx, gate_rx) = watch::channel(now.open);
        let (window_tx, window_rx) = watch::channel(now);
        let (schedule_tx, schedule_rx) = watch::channel(Arc::new(schedule));
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
        tracker.spawn(notify_loop(Notifications {
            journal: journal.clone(),
            notifier,
            cursor,
            key_env: cfg.api.api_key_env.clone(),
            reloads: reloads.subscribe(),
            shutdown: shutdown.clone(),
            engine_done: engine_done.clone(),
        }));

        let opts = EngineOptions {
            throttle: Some(engine_throttle(throttle)),
            observer: Some(Arc::new(MetricsObserver(metrics.clone()))),
            gate: Some(gate_rx),
            config: Some(reloads.subscribe()),
            ..EngineOptions::default()
        };
        let engine_cfg = cfg.clone();
        let (s, path) = (shutdown.clone(), journal_path.clone());
        supervise(&tracker, &failure, &shutdown, "upload engine", async move {
            let r = crate::upload::run_engine_with(engine_cfg, &path, key, opts, s).await;
            engine_done.cancel();
            r
        });

        // Each reloaded config: watchers restart when their settings changed,
        // the schedule is resent, the metrics server moves. Uploads are not touched.
        let mut reload_rx = reloads.subscribe();
        let (t, f, s, m, j) = (tracker.clone(), failure.clone(), shutdown.clone(), metrics.clone(), journal.clone());
        let mut prev = cfg.clone();
        tracker.spawn(async move {
            let mut generation: Option<CancellationToken> = None;
            loop {
                let current = reload_rx.borrow_and_update().clone();
                let plan = diff_reload(&prev, &current);
                if generation.is_none() || plan.schedule_changed() {
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
                    let (g2, p, c) = (g.clone(), journal_path.clone(), current.clone());
                    supervise(&t, &f, &s, "watchers", async move { crate::watch::run_watchers(c, p, g2).await });
                    generation = Some(g);
                }
                if plan.metrics_changed {
                    metrics_server = MetricsServer::restart(
                        metrics_server.take(),
                        current.metrics.listen,
                        &t,
                        &f,
                        &s,
                        m.clone(),
                        j.clone(),
                    )
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

/// The engine's throttle: every chunk of every PUT waits for the shared limiter.
pub(super) fn engine_throttle(throttle: Throttle) -> crate::upload::stream::Throttle {
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

/// The engine's events as metrics. The window pause is left to
/// `follow_schedule`, which feeds the same gauge from the clock itself.
struct MetricsObserver(Arc<Metrics>);

impl Observer for MetricsObserver {
    fn group_ended(&self, _id: i64, outcome: &GroupOutcome) {
        if let GroupOutcome::Completed { .. } = outcome {
            self.0.group_completed(Timestamp::now());
        }
    }
    fn part_stored(&self, bytes: u64) {
        self.0.bytes_uploaded(bytes);
    }
    fn part_retried(&self, reason: &str) {
        self.0.part_retried(reason);
    }
    fn paused(&self, reason: &str, paused: bool) {
        if reason != PAUSED_WINDOW {
            self.0.set_paused(paused, reason);
        }
    }
}

/// The metrics server of one `[metrics] listen` address.
struct MetricsServer {
    addr: std::net::SocketAddr,
    stop: CancellationToken,
}

impl MetricsServer {
    /// Bind `addr` (an error if taken) and serve until `shutdown` or [`MetricsServer::restart`].
    async fn start(
        addr: std::net::SocketAddr,
        tracker: &TaskTracker,
        failure: &Arc<Mutex<Option<String>>>,
        shutdown: &CancellationToken,
        metrics: Arc<Metrics>,
        journal: Arc<Journal>,
    ) -> anyhow::Result<MetricsServer> {
        let listener = crate::ops::metrics::bind(addr).await?;
        let stop = shutdown.child_token();
        let source = Arc::new(move || snapshot(&journal));
        let s = stop.clone();
        supervise(tracker, failure, shutdown, "metrics server", async move {
            crate::ops::metrics::serve_on(listener, metrics, source, s).await
        });
        Ok(MetricsServer { addr, stop })
    }

    /// Move to `listen`: the new address is bound first, so if it is taken the
    /// old server keeps serving (and the error is logged).
    async fn restart(
        old: Option<MetricsServer>,
        listen: Option<std::net::SocketAddr>,
        tracker: &TaskTracker,
        failure: &Arc<Mutex<Option<String>>>,
        shutdown: &CancellationToken,
        metrics: Arc<Metrics>,
        journal: Arc<Journal>,
    ) -> Option<MetricsServer> {
        let Some(addr) = listen else {
            if let Some(o) = old {
                tracing::info!(addr = %o.addr, "metrics server stopped (no [metrics] listen any more)");
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
        match MetricsServer::start(addr, tracker, failure, shutdown, metrics, journal).await {
            Ok(new) => {
                if let Some(o) = old {
                    o.stop.cancel();
                }
                Some(new)
            }
            Err(e) => {
                tracing::error!("{e:#}; the metrics server stays where it was");
                old
            }
        }
    }
}

/// What the notifier task needs.
struct Notifications {
    journal: Arc<Journal>,
    notifier: Notifier,
    /// The last history line already handled.
    cursor: i64,
    /// The variable holding the key this agent runs with: never passed to hooks.
    key_env: String,
    reloads: watch::Receiver<Arc<Config>>,
    shutdown: CancellationToken,
    /// Fires when the engine has stopped (its last groups are recorded).
    engine_done: CancellationToken,
}

fn hooks_configured(h: &HooksConfig) -> bool {
    h.on_complete.is_some() || h.on_failure.is_some() || h.on_rejected.is_some() || h.webhook.is_some()
}

/// Tail the journal for groups that ended and notify each once. Hooks run
/// in the background (`Notifier::notify` never blocks); at shutdown, what the
/// engine recorded last is still delivered and running hooks get
/// `shutdown_grace` to finish.
async fn notify_loop(mut n: Notifications) {
    let mut current = n.reloads.borrow_and_update().clone();
    let mut active = hooks_configured(&current.hooks);
    let mut retired: Vec<Notifier> = Vec::new();
    let mut reloads_open = true;
    let mut tick = tokio::time::interval(NOTIFY_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = n.shutdown.cancelled() => break,
            _ = tick.tick(), if active => {}
            changed = n.reloads.changed(), if reloads_open => {
                if changed.is_err() {
                    reloads_open = false;
                    continue;
                }
                let new = n.reloads.borrow_and_update().clone();
                if diff_reload(&current, &new).hooks_changed {
                    match Notifier::new(&new.hooks) {
                        Ok(fresh) => {
                            // Deliver what ended under the old hooks first.
                            if active {
                                n.cursor = deliver(&n.journal, &n.notifier, n.cursor).await;
                            } else if let Ok(Ok(c)) = {
                                let j = n.journal.clone();
                                tokio::task::spawn_blocking(move || j.last_event_id()).await
                            } {
                                // Hooks were off: start from now, not from history.
                                n.cursor = c;
                            }
                            retired.retain(|r| !r.is_idle());
                            retired.push(std::mem::replace(&mut n.notifier, fresh.without_env(&n.key_env)));
                            active = hooks_configured(&new.hooks);
                            tracing::info!("hooks reloaded");
                        }
                        Err(e) => tracing::error!("hooks: {e}; the previous hooks stay"),
                    }
                }
                current = new;
                continue;
            }
        }
        n.cursor = deliver(&n.journal, &n.notifier, n.cursor).await;
    }
    let grace = current.upload.shutdown_grace.0;
    if active {
        // The engine may record its last ends during its grace.
        let _ = tokio::time::timeout(grace + Duration::from_secs(5), n.engine_done.cancelled()).await;
        n.cursor = deliver(&n.journal, &n.notifier, n.cursor).await;
    }
    let mut all = vec![n.notifier];
    all.append(&mut retired);
    let drained = futures_util::future::join_all(all.iter().map(|x| x.drain(grace))).await;
    if drained.iter().any(|done| !done) {
        tracing::warn!(grace = %humantime::format_duration(grace), "hooks still running at shutdown were left behind");
    }
}

/// Notify every group that ended after `cursor`; returns the new cursor.
/// A journal error is logged and retried at the next tick (nothing is skipped).
async fn deliver(journal: &Arc<Journal>, notifier: &Notifier, mut cursor: i64) -> i64 {
    loop {
        let j = journal.clone();
        let batch = match tokio::task::spawn_blocking(move || j.ended_after(cursor, NOTIFY_BATCH)).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                tracing::warn!("notifications: cannot read the journal: {e}");
                return cursor;
            }
            Err(e) => {
                tracing::warn!("notifications: journal read did not finish: {e}");
                return cursor;
            }
        };
        let full = batch.len() as u32 == NOTIFY_BATCH;
        for e in batch {
            cursor = e.event_id;
            if let Some(ev) = group_event(e) {
                notifier.notify(ev);
            }
        }
        if !full {
            return cursor;
        }
    }
}

fn group_event(e: Ended) -> Option<GroupEvent> {
    let kind = match e.state {
        GroupState::Completed => EventKind::Completed,
        GroupState::Failed => EventKind::Failed,
        GroupState::Rejected => EventKind::Rejected,
        _ => return None,
    };
    Some(GroupEvent {
        kind,
        group_id: e.group_id,
        name: e.name,
        path: e.path,
        library_id: e.library_id.and_then(|l| i64::try_from(l).ok()),
        error: e.error,
        at: Timestamp::from_millisecond(e.at_ms).unwrap_or_else(|_| Timestamp::now()),
    })
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

/// Groups by state and queue length for a metrics scrape: one aggregate query.
fn snapshot(journal: &Journal) -> Result<StateSnapshot, SnapshotError> {
    let counts = journal.count_by_state()?;
    let queue_length = counts.iter().find(|(s, _)| *s == GroupState::Queued).map_or(0, |(_, n)| *n);
    let held = journal.pauses()?.iter().map(|p| (p.reason.label().to_string(), p.describe())).collect();
    Ok(StateSnapshot {
        groups_by_state: counts.into_iter().map(|(s, n)| (s.to_string(), n)).collect(),
        queue_length,
        held,
    })
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
                if !plan.restart_required.is_empty() || plan.log_level_changed {
                    tracing::warn!(
                        "reload ({why}): {plan}; [api]/[journal]/[log] changes take effect after a restart, \
                         the rest now"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_observer_feeds_counters_and_the_auth_pause() {
        let metrics = Arc::new(Metrics::new());
        let o = MetricsObserver(metrics.clone());
        o.part_stored(1000);
        o.part_stored(24);
        o.part_retried("5xx");
        o.part_retried("url_expired");
        o.group_ended(1, &GroupOutcome::Completed { library_id: 9 });
        o.group_ended(2, &GroupOutcome::Failed("boom".into()));
        o.paused(crate::upload::PAUSED_AUTH, true);
        // The window pause is follow_schedule's to report.
        o.paused(PAUSED_WINDOW, true);
        let text = metrics.render(&Ok(StateSnapshot::default()));
        for line in [
            "spatialgen_bytes_uploaded_total 1024\n",
            "spatialgen_parts_retried_total{reason=\"5xx\"} 1\n",
            "spatialgen_parts_retried_total{reason=\"url_expired\"} 1\n",
            "spatialgen_groups_completed_total 1\n",
            "spatialgen_paused 1\n",
            "spatialgen_paused_info{reason=\"auth\"} 1\n",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
        assert!(!text.contains("reason=\"window\""), "{text}");
        o.paused(crate::upload::PAUSED_AUTH, false);
        assert!(metrics.render(&Ok(StateSnapshot::default())).contains("spatialgen_paused 0\n"));
    }

    #[test]
    fn ended_groups_become_hook_events() {
        let ended = |state| Ended {
            event_id: 5,
            group_id: 3,
            state,
            name: "Shot".into(),
            path: PathBuf::from("/x/Shot"),
            library_id: Some(42),
            error: Some("why".into()),
            at_ms: 1_700_000_000_000,
        };
        let c = group_event(ended(GroupState::Completed)).unwrap();
        assert_eq!((c.kind, c.group_id, c.library_id), (EventKind::Completed, 3, Some(42)));
        assert_eq!(c.at.as_millisecond(), 1_700_000_000_000);
        assert_eq!(group_event(ended(GroupState::Failed)).unwrap().kind, EventKind::Failed);
        let r = group_event(ended(GroupState::Rejected)).unwrap();
        assert_eq!((r.kind, r.error.as_deref()), (EventKind::Rejected, Some("why")));
        assert!(group_event(ended(GroupState::Canceled)).is_none());
    }

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
