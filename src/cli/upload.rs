//! `spatialgen-sync upload FOLDER`: one folder, one group, now, in the
//! foreground; through the same journal and engine as the agent, so an
//! interrupted upload resumes when the command is run again.
//!
//! If the agent (or another `upload`) already works the journal, this
//! command only enqueues the group and follows it in the journal while that
//! engine uploads it: two engines never work one journal.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::{Outcome, UploadArgs, UsageError};
use crate::config::{Config, LayoutChoice, WatchConfig};
use crate::group::{GroupOptions, UploadGroup, build_folder_group};
use crate::journal::{Enqueued, GroupId, GroupState, Store};
use crate::upload::{Engine, EngineOptions, GroupOutcome};

pub fn run(args: UploadArgs) -> anyhow::Result<Outcome> {
    let cfg = args.config.load()?;
    super::init_logging(&cfg);
    let folder = std::path::absolute(&args.folder).unwrap_or_else(|_| args.folder.clone());
    if !folder.is_dir() {
        return Err(UsageError(format!("{} is not a folder", args.folder.display())).into());
    }
    let group = build_group(&cfg, &folder, &args)?;
    if !group.unfinished.is_empty() {
        // An explicit request does not wait on a render; it says so.
        crate::group::remove_staged(&group);
        eprintln!("{} is not finished: a container is still being written; nothing was sent:", folder.display());
        for v in &group.unfinished {
            eprintln!("  - {v}");
        }
        return Ok(Outcome::WorkFailed);
    }
    for w in &group.warnings {
        eprintln!("warning: {}", w.tagged());
    }
    let journal = crate::journal::open_configured(&cfg)?;

    let id = match journal.enqueue(&group)? {
        Enqueued::Queued(id) => id,
        Enqueued::Rejected(id) => {
            crate::group::remove_staged(&group);
            journal.set_finished(id)?;
            eprintln!("{} breaks a rule; nothing was sent (group {id}):", folder.display());
            for v in &group.violations {
                eprintln!("  - {}", v.tagged());
            }
            return Ok(Outcome::WorkFailed);
        }
        Enqueued::Duplicate { id, state: GroupState::Completed } => {
            // A bundle zipped again just now is not needed.
            crate::group::remove_staged(&group);
            let s = journal.summary(id)?;
            println!(
                "{} was already uploaded (group {id}); library id {}",
                folder.display(),
                s.library_id.map(|l| l.to_string()).unwrap_or_else(|| "unknown".into())
            );
            return Ok(Outcome::Success);
        }
        Enqueued::Duplicate { id, state: GroupState::Queued | GroupState::Uploading } => {
            tracing::info!(group = id, "resuming the upload of this folder");
            id
        }
        Enqueued::Duplicate { id, state } => {
            // failed, or canceled by the user: asking again by hand means "upload it".
            let new = journal.retry_group(id)?;
            tracing::info!(group = id, was = %state, now = new, "uploading again");
            new
        }
    };

    match journal.try_lock_engine()? {
        Some(_lock) => drive(cfg, journal, id, &group),
        None => follow(journal.as_ref(), id),
    }
}

/// The group for `folder`: the settings of the watch folder it lies in (if
/// any), else the defaults; `--layout`, `--perspective` and `--name` win.
fn build_group(cfg: &Config, folder: &Path, args: &UploadArgs) -> anyhow::Result<UploadGroup> {
    let mut watch = cfg
        .watch
        .iter()
        .find(|w| folder.starts_with(&w.path) && folder != w.path)
        .cloned()
        .unwrap_or_else(|| WatchConfig::new(folder.parent().unwrap_or(folder)));
    if let Some(l) = &args.layout {
        watch.layout = l.parse::<LayoutChoice>().map_err(UsageError)?;
    }
    if let Some(p) = &args.perspective {
        watch.perspective = Some(p.parse().map_err(UsageError)?);
    }
    let staging = cfg.journal.staging_dir();
    let opts = GroupOptions { watch: &watch, staging_dir: Some(&staging), matcher: None };
    let mut group = build_folder_group(folder, &opts).with_context(|| format!("cannot read {}", folder.display()))?;
    if let Some(name) = &args.name {
        group.name = name.clone();
    }
    Ok(group)
}

/// This process is the engine: upload the group in the foreground.
fn drive(cfg: Config, journal: Arc<dyn Store>, id: GroupId, group: &UploadGroup) -> anyhow::Result<Outcome> {
    let key = cfg.api_key()?;
    let cfg = Arc::new(cfg);
    let store: Arc<dyn crate::journal::Store> = journal.clone();
    let already = journal.summary(id)?.bytes_uploaded;
    let rt = super::runtime()?;
    let (ended, outcome, interrupted) = rt.block_on(async move {
        // "Upload now" ignores upload windows (the operator asked for it), but
        // keeps to the configured bandwidth so a foreground upload cannot
        // flood the studio's uplink.
        let throttle = cfg
            .upload
            .bandwidth
            .map(|rate| crate::agent::engine_throttle(crate::ops::throttle::Throttle::new(Some(rate))));
        let opts = EngineOptions { throttle, ..EngineOptions::default() };
        let engine = Engine::new(cfg, store, key, opts)?;
        let shutdown = CancellationToken::new();
        let signals = tokio::spawn(cancel_on_signal(shutdown.clone()));
        let reporter = Reporter::new(&group.name, group.total_bytes(), already);
        let sent = engine.bytes_sent();
        let ticker = {
            let reporter = reporter.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    reporter.update(already + sent.load(Ordering::Relaxed));
                }
            })
        };
        let result = engine.run_one(id, shutdown.clone()).await;
        ticker.abort();
        signals.abort();
        reporter.finish();
        let (ended, outcome) = result?;
        anyhow::Ok((ended, outcome, shutdown.is_cancelled()))
    })?;
    Ok(report(journal.as_ref(), ended, outcome, interrupted))
}

fn report(journal: &dyn Store, id: GroupId, outcome: GroupOutcome, interrupted: bool) -> Outcome {
    let name = journal.summary(id).map(|s| s.name).unwrap_or_default();
    match outcome {
        GroupOutcome::Completed { library_id } => {
            println!("uploaded {name} (group {id}): library id {library_id}");
            Outcome::Success
        }
        GroupOutcome::Failed(e) => {
            eprintln!("upload of {name} failed (group {id}): {e}");
            Outcome::WorkFailed
        }
        GroupOutcome::Canceled(why) => {
            eprintln!("upload of {name} was canceled (group {id}): {why}");
            Outcome::WorkFailed
        }
        GroupOutcome::Expired { .. } => {
            eprintln!("the server forgot the upload of {name} (group {id}) and its files changed; nothing to resume");
            Outcome::WorkFailed
        }
        GroupOutcome::AuthRefused(e) => {
            eprintln!("the API refused the key: {e}");
            Outcome::WorkFailed
        }
        GroupOutcome::Stopped => {
            if interrupted {
                eprintln!("interrupted; run the same command again to resume (group {id})");
            } else {
                eprintln!("the upload of group {id} stopped before it ended");
            }
            Outcome::WorkFailed
        }
    }
}

/// Another engine works the journal: follow the group there until it ends.
fn follow(journal: &dyn Store, id: GroupId) -> anyhow::Result<Outcome> {
    eprintln!("the agent is running on this journal; it uploads group {id} (following its progress)");
    let first = journal.summary(id)?;
    let reporter = Reporter::new(&first.name, first.bytes_total, first.bytes_uploaded);
    let mut id = id;
    loop {
        let s = journal.summary(id)?;
        reporter.update(s.bytes_uploaded);
        match s.state {
            GroupState::Completed => {
                reporter.finish();
                println!("uploaded {} (group {id}): library id {}", s.name, s.library_id.unwrap_or(0));
                return Ok(Outcome::Success);
            }
            GroupState::Expired => {
                // Re-queued as a new group? Follow that one.
                let next = journal.list()?.into_iter().find(|g| g.retry_of == Some(id)).map(|g| g.id);
                match next {
                    Some(n) => id = n,
                    None => {
                        reporter.finish();
                        eprintln!("group {id} expired: {}", s.error.unwrap_or_default());
                        return Ok(Outcome::WorkFailed);
                    }
                }
            }
            GroupState::Failed | GroupState::Canceled | GroupState::Rejected => {
                reporter.finish();
                eprintln!("group {id} is {}: {}", s.state, s.error.unwrap_or_default());
                return Ok(Outcome::WorkFailed);
            }
            _ => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

async fn cancel_on_signal(token: CancellationToken) {
    crate::agent::service::shutdown_signal().await;
    token.cancel();
}

/// Progress: a bar on a terminal, a log line every few seconds otherwise.
#[derive(Clone)]
struct Reporter {
    bar: Option<indicatif::ProgressBar>,
    name: Arc<str>,
    total: u64,
    last_line: Arc<std::sync::Mutex<(std::time::Instant, u64)>>,
}

impl Reporter {
    fn new(name: &str, total: u64, at: u64) -> Reporter {
        let bar = std::io::stdout().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            let style = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(name.to_string());
            bar.set_position(at);
            bar
        });
        if bar.is_none() {
            tracing::info!(group = name, bytes = total, done = at, "upload starting");
        }
        Reporter {
            bar,
            name: name.into(),
            total,
            last_line: Arc::new(std::sync::Mutex::new((std::time::Instant::now(), at))),
        }
    }

    fn update(&self, at: u64) {
        let at = at.min(self.total);
        if let Some(bar) = &self.bar {
            bar.set_position(at);
            return;
        }
        let mut last = self.last_line.lock().unwrap_or_else(|p| p.into_inner());
        if last.1 != at && last.0.elapsed() >= Duration::from_secs(5) {
            let pct = if self.total == 0 { 100.0 } else { at as f64 * 100.0 / self.total as f64 };
            tracing::info!(group = %self.name, bytes = at, total = self.total, "{pct:.0}% uploaded");
            *last = (std::time::Instant::now(), at);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
