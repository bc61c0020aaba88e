//! Watching export folders and deciding when an export is *finished*.
//!
//! Shape: notify watchers (`backend`, native or polling, one per
//! `[[watch]]` folder) feed one bounded channel; one thread (`driver`)
//! maps event paths to exports ([`scan::WatchRules::route`]), runs the pure
//! settle state machine ([`settle::Settler`]), takes looks at exports only
//! when one is due, rescans whole folders at startup, every `rescan` and
//! whenever events were lost, and hands every [`Settle`] value to a
//! [`Handoff`] that runs on a thread of its own (`courier`), so building a
//! group, probing its containers and writing the journal never hold up the
//! loop.
//!
//! Exports: in folders mode each direct subfolder of the watch folder
//! (hidden, ignored and temporary-named ones skipped); in flat mode the files
//! directly in it that share a stem (the grouping engine's `flat_stem`).
//! The ready marker is a file named `ready_marker` at the top of an export
//! folder, or `<stem>.<ready_marker>` beside a flat-mode stem's files; it is
//! never uploaded.
//!
//! Invariants:
//! - Never hand off half an export: finished means quiet for `settle`, no
//!   temporary file, the same names/sizes/mtimes in two looks `settle` apart,
//!   and every file opens for reading; or the ready marker is present.
//! - Never miss an export: the startup scan finds what arrived while the
//!   agent was stopped; a periodic rescan and a rescan on lost or dropped
//!   events find what notify did not report.
//! - A read error is never "empty" or "gone": an export or folder that
//!   cannot be read (EMFILE, ENFILE, EIO, EACCES: anything but "not
//!   there") keeps its state and is read again with backoff (1 s doubling
//!   to 60 s) until it reads; the fault is logged when it begins and ends
//!   and recorded for `/healthz` ([`crate::journal::PauseReason::WatchUnreadable`]).
//! - A watch folder deleted or renamed away is reported missing as soon as
//!   an event on its own path arrives, and an unmounted share as soon as the
//!   mount table changes (`mounts`, Linux), not at the next rescan.
//! - The notify callback never blocks, and the watcher never follows
//!   symlinks unless the folder says so.
//! - Idle costs nothing but the periodic rescan: timers run only while an
//!   export is settling.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, Dur, WatchConfig};
use crate::journal::Store;

mod backend;
mod courier;
mod driver;
pub mod handoff;
mod mounts;
pub mod scan;
pub mod settle;

#[cfg(test)]
mod tests;

pub use backend::WatchStats;
pub use handoff::{ChannelHandoff, Handed, Handoff, JournalHandoff};
pub use scan::{Scan, WatchRules, look_export, scan};
pub use settle::{Clock, Look, ManualClock, Settle, SettlePolicy, Settler, SystemClock};

use backend::{Backend, Msg, Signals};

/// Everything that can go wrong while watching.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// A watch folder or export could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Something inside a watch folder is there but could not be read: no
    /// descriptors left (EMFILE, ENFILE), an I/O error (EIO), a permission
    /// (EACCES). Never taken for an empty export or one that is gone: the
    /// export keeps its state and is read again with backoff.
    #[error("{}: cannot read: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// notify could not watch a folder (and it was not the OS watch limit,
    /// which falls back to polling instead).
    #[error("{}: cannot watch: {source}", path.display())]
    Notify {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    /// A watch folder's settings do not work (e.g. a bad glob).
    #[error("{0}")]
    Config(String),
    /// The grouping engine could not build a group (its folder cannot be
    /// listed, the staging directory cannot be written).
    #[error(transparent)]
    Group(#[from] crate::group::GroupError),
    /// The journal refused a write.
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// The hand-off could not record a settle value.
    #[error("hand-off: {0}")]
    Handoff(String),
    /// The watcher's thread ended on its own (it panicked).
    #[error("the watcher thread stopped unexpectedly")]
    Died,
}

/// How to run the watchers, beyond the config.
#[derive(Clone)]
pub struct WatchOptions {
    /// Where "now" comes from.
    pub clock: Arc<dyn Clock>,
    /// Counters the caller may read while the watchers run.
    pub stats: Arc<WatchStats>,
    /// Watch every folder by polling, as if the OS had refused native
    /// watches (each folder polls at its `poll`, else its fallback interval).
    pub force_poll: bool,
    /// Events buffered between notify and the watcher thread before the
    /// callback starts dropping them (and a rescan makes up for them).
    pub channel_capacity: usize,
    /// Settle values queued for the hand-off thread before the watcher
    /// waits for it.
    pub handoff_capacity: usize,
    /// How long [`run`] waits for the watcher thread after shutdown
    /// before it leaves it behind (a hand-off stuck in a read the OS does
    /// not let go of must not keep the agent from stopping).
    pub stop_grace: std::time::Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            clock: Arc::new(SystemClock),
            stats: Arc::default(),
            force_poll: false,
            channel_capacity: backend::CHANNEL_CAPACITY,
            handoff_capacity: 256,
            stop_grace: std::time::Duration::from_secs(10),
        }
    }
}

/// Running watchers. [`WatchHandle::stop`] ends them; dropping the handle
/// does too.
pub struct WatchHandle {
    tx: SyncSender<Msg>,
    thread: Option<JoinHandle<Result<(), WatchError>>>,
    stats: Arc<WatchStats>,
    /// Cancelled when the thread ends, however it ends (a drop guard).
    ended: CancellationToken,
}

impl WatchHandle {
    pub fn stats(&self) -> &Arc<WatchStats> {
        &self.stats
    }

    /// Has the watcher thread ended (it does so only on stop or on a panic)?
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stop watching and wait for the thread. Blocks until the driver has
    /// finished the hand-off it is in.
    pub fn stop(mut self) -> Result<(), WatchError> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<(), WatchError> {
        let Some(t) = self.thread.take() else { return Ok(()) };
        if !t.is_finished() {
            // Blocking send: the driver drains the channel, so room comes.
            let _ = self.tx.send(Msg::Stop);
        }
        t.join().map_err(|_| WatchError::Died)?
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        if let Err(e) = self.stop_inner() {
            tracing::warn!("watcher stopped with an error: {e}");
        }
    }
}

/// Start watching `watches` (indexed like `Config::watch`), handing every
/// settle value to `handoff` on the watcher's own thread. Errors that stop
/// startup (a bad glob, a folder notify cannot watch) are returned here; the
/// startup scan runs on the thread.
pub fn start(
    watches: &[WatchConfig],
    handoff: Box<dyn Handoff>,
    opts: WatchOptions,
) -> Result<WatchHandle, WatchError> {
    let rules = watches.iter().enumerate().map(|(i, w)| WatchRules::new(i, w)).collect::<Result<Vec<_>, _>>()?;
    let (tx, rx) = sync_channel(opts.channel_capacity.max(1));
    let signals: Vec<Arc<Signals>> = rules.iter().map(|_| Arc::default()).collect();
    // A folder missing now (an unmounted share) is not an error: its watch
    // starts when a rescan finds it, and until then it is reported missing.
    let backends = rules
        .iter()
        .zip(&signals)
        .map(|(r, s)| match scan::root_present(r) {
            Ok(()) => backend::start(r, &tx, s, &opts.stats, opts.force_poll),
            Err(_) => Ok(Backend::Missing),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let now = opts.clock.now();
    let courier = courier::Courier::start(handoff, rules.clone(), opts.handoff_capacity, tx.clone())?;
    let mounts_changed = Arc::new(AtomicBool::new(false));
    let mounts = mounts::MountWatch::start(tx.clone(), mounts_changed.clone());
    let driver = driver::Driver {
        root_ids: rules.iter().map(scan::root_identity).collect(),
        missing: vec![false; rules.len()],
        force_poll: opts.force_poll,
        mounted: rules.iter().map(|r| scan::root_present(r).is_ok() && scan::is_mount_point(r)).collect(),
        root_check: vec![false; rules.len()],
        faults: rules.iter().map(|_| driver::ReadFault::default()).collect(),
        mounts_changed,
        _mounts: mounts,
        settler: Settler::new(rules.iter().map(|r| r.policy).collect()),
        next_rescan: rules.iter().map(|r| now + r.rescan).collect(),
        rescan_pending: vec![false; rules.len()],
        rules,
        backends,
        signals,
        rx,
        tx: tx.clone(),
        courier,
        courier_gone: false,
        clock: opts.clock.clone(),
        stats: opts.stats.clone(),
    };
    let ended = CancellationToken::new();
    let guard = ended.clone().drop_guard();
    let thread = std::thread::Builder::new()
        .name("spatialgen-watch".into())
        .spawn(move || {
            let _guard = guard;
            driver.run()
        })
        .map_err(|e| WatchError::Io { path: PathBuf::from("<thread>"), source: e })?;
    Ok(WatchHandle { tx, thread: Some(thread), stats: opts.stats, ended })
}

/// Run the watchers until `shutdown` is cancelled (or the watcher thread
/// dies, which is an error).
pub async fn run(
    watches: &[WatchConfig],
    handoff: Box<dyn Handoff>,
    opts: WatchOptions,
    shutdown: CancellationToken,
) -> Result<(), WatchError> {
    let grace = opts.stop_grace;
    let handle = start(watches, handoff, opts)?;
    let ended = handle.ended.clone();
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = ended.cancelled() => tracing::error!("the watcher thread ended on its own"),
    }
    // A plain thread, not the blocking pool: a runtime waits for its
    // blocking tasks when it is dropped, so a stuck one would hold the
    // process after all.
    let (tx, stopped) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("spatialgen-watch-stop".into())
        .spawn(move || {
            let _ = tx.send(handle.stop());
        })
        .map_err(|e| WatchError::Io { path: PathBuf::from("<thread>"), source: e })?;
    match tokio::time::timeout(grace, stopped).await {
        Ok(joined) => joined.map_err(|_| WatchError::Died)?,
        Err(_) => {
            // The thread is inside one hand-off; it holds nothing another
            // process needs (journal writes are single transactions) and ends
            // with the process.
            tracing::error!(
                grace = %Dur(grace),
                "the watcher did not stop within its grace (a file it reads does not answer); leaving it behind"
            );
            Ok(())
        }
    }
}

/// The agent's watchers: every `[[watch]]` folder of `cfg`, settle values
/// handed through the grouping engine into the journal at `journal_path`
/// (bundle zips staged beside it), until `shutdown` is cancelled.
pub async fn run_watchers(
    cfg: Arc<Config>,
    journal: Arc<dyn Store>,
    shutdown: CancellationToken,
) -> Result<(), WatchError> {
    let handoff = JournalHandoff::new(journal, cfg.journal.staging_dir());
    let opts = WatchOptions { stop_grace: cfg.upload.shutdown_grace.0, ..WatchOptions::default() };
    run(&cfg.watch, Box::new(handoff), opts, shutdown).await
}

/// Scan one watch folder once, as the startup scan does (for `plan`,
/// benchmarks and tests).
pub fn scan_once(index: usize, watch: &WatchConfig) -> Result<Scan, WatchError> {
    scan(&WatchRules::new(index, watch)?)
}
