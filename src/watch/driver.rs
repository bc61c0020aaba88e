//! The watcher's thread: events and timers in, settle values out.
//!
//! One thread owns the [`Settler`], the notify backends and the hand-off, so
//! nothing is shared but the channel and a few atomic flags. It sleeps in
//! `recv_timeout` until the next event, the next due look (only while an
//! export is settling) or the next periodic rescan: an idle agent wakes once
//! per `rescan` interval and not otherwise.
//!
//! Read errors (no descriptors left, EIO, EACCES: anything but "not
//! there") are never taken for an empty export or a vanished one. An
//! export whose look fails keeps its state and is looked at again with
//! backoff; a folder whose scan fails (or that lists an export it cannot
//! read, or an event for an export it cannot tell exists) is scanned again
//! with backoff, [`RETRY_FIRST`] doubling to [`RETRY_MAX`], until a scan
//! reads everything. The fault is logged once when it begins and once when
//! it ends, and recorded through the hand-off for `/healthz` meanwhile.
//!
//! An event or watcher error on the watch folder's own path (it was
//! deleted or renamed away) has the folder checked at once, so a missing
//! folder is reported within moments rather than at the next rescan.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use super::WatchError;
use super::backend::{self, Backend, Msg, Signals, WatchStats};
use super::courier::{Courier, Job, Returned};
use super::scan::{self, WatchRules};
use super::settle::{Clock, Settle, Settler};
use crate::config::Dur;

/// Messages handled per wake-up before timers and flags get a turn.
const BATCH: usize = 4096;

/// The first wait before a failed read is tried again.
pub(crate) const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between tries of a read that keeps failing.
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(60);

fn next_delay(prev: Option<Duration>) -> Duration {
    prev.map_or(RETRY_FIRST, |d| (d * 2).min(RETRY_MAX))
}

/// What is failing to read in one watch folder.
#[derive(Debug, Default)]
pub(crate) struct ReadFault {
    /// The first error (path and OS error) since reads began to fail; `None`
    /// while everything reads.
    pub error: Option<String>,
    /// The folder is to be scanned again at `.0`; `.1` is the wait that led
    /// there, doubled at the next failure.
    pub scan_retry: Option<(Instant, Duration)>,
    /// Exports whose last look failed, with the wait before that look's
    /// retry.
    pub exports: HashMap<PathBuf, Duration>,
}

/// What checking a watch folder's root found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Root {
    /// Missing (reported once).
    Missing,
    /// There, and the same folder as before.
    Same,
    /// Back, or replaced by another folder: its watch started again.
    Rewatched,
}

pub(crate) struct Driver {
    pub rules: Vec<WatchRules>,
    pub settler: Settler,
    pub backends: Vec<Backend>,
    pub signals: Vec<Arc<Signals>>,
    pub rx: Receiver<Msg>,
    /// Kept to start a polling backend when a native one hits the OS limit.
    pub tx: SyncSender<Msg>,
    /// Runs the hand-off on its own thread.
    pub courier: Courier,
    /// The courier refused a job: its thread is gone.
    pub courier_gone: bool,
    pub clock: Arc<dyn Clock>,
    pub stats: Arc<WatchStats>,
    pub next_rescan: Vec<Instant>,
    pub rescan_pending: Vec<bool>,
    /// Each watch folder's (device, inode) when its watch started.
    pub root_ids: Vec<Option<(u64, u64)>>,
    /// Watch folders found missing by the last rescan.
    pub missing: Vec<bool>,
    /// Passed on when a watch is started again.
    pub force_poll: bool,
    /// Watch folders that were mount points when first seen present.
    pub mounted: Vec<bool>,
    /// Watch folders whose own path an event touched: checked at once.
    pub root_check: Vec<bool>,
    /// Read errors per watch folder.
    pub faults: Vec<ReadFault>,
    /// Raised when the mount table changed ([`super::mounts`]).
    pub mounts_changed: Arc<AtomicBool>,
    /// Watches the mount table while the driver runs.
    pub _mounts: Option<super::mounts::MountWatch>,
}

impl Driver {
    pub fn run(mut self) -> Result<(), WatchError> {
        // Startup scan: exports that arrived while the agent was stopped.
        for i in 0..self.rules.len() {
            if scan::root_present(&self.rules[i]).is_ok() {
                // A missing-folder note left by an earlier run is stale.
                self.send(Job::Folder { watch: i, missing: None });
            }
            // So is a read error: the startup scan records it again if it lasts.
            self.send(Job::Unreadable { watch: i, error: None });
            self.rescan(i);
        }
        loop {
            let now = self.clock.now();
            // A folder waiting for a scan retry waits for that, not for its rescan.
            let scans =
                self.faults.iter().zip(&self.next_rescan).map(|(f, next)| f.scan_retry.map_or(*next, |(at, _)| at));
            let deadline = scans.chain(self.settler.next_deadline()).min();
            let first = match deadline {
                Some(d) => self.rx.recv_timeout(d.saturating_duration_since(now)),
                None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match first {
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return self.stop(),
                Ok(Msg::Wake) => {}
                Ok(Msg::Event { watch, event }) => {
                    self.on_event(watch, event);
                    for _ in 0..BATCH {
                        match self.rx.try_recv() {
                            Ok(Msg::Stop) => return self.stop(),
                            Ok(Msg::Event { watch, event }) => self.on_event(watch, event),
                            Ok(Msg::Wake) => {}
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.take_returned();
            if self.courier_gone {
                tracing::error!("the hand-off thread stopped unexpectedly");
                return Err(WatchError::Died);
            }
            self.check_signals();
            if self.mounts_changed.swap(false, Ordering::SeqCst) {
                // A share mounted or unmounted somewhere: is every watch folder still what it was?
                self.root_check.iter_mut().for_each(|c| *c = true);
            }
            self.check_touched_roots();
            self.run_due_looks();
            let now = self.clock.now();
            for i in 0..self.rules.len() {
                // While a failed scan waits for its retry, further requests
                // wait with it: a read that fails is never tried in a hot loop.
                let due = match self.faults[i].scan_retry {
                    Some((at, _)) => at <= now,
                    None => self.rescan_pending[i] || self.next_rescan[i] <= now,
                };
                if due {
                    self.rescan(i);
                }
            }
        }
    }

    fn stop(&mut self) -> Result<(), WatchError> {
        self.courier.stop();
        Ok(())
    }

    /// Act on what the hand-offs returned: hold an export whose container
    /// is still being written (unless it changed meanwhile), settle again
    /// one whose hand-off failed.
    fn take_returned(&mut self) {
        let now = self.clock.now();
        let returned: Vec<Returned> = self.courier.returned().collect();
        for r in returned {
            match r {
                Returned::Hold { key, recheck } => self.settler.hold(&key, now, now + recheck),
                Returned::Rearm { key } => self.settler.rearm(&key, now),
            }
        }
    }

    /// Queue a job for the courier; a courier that is gone ends the loop.
    fn send(&mut self, job: Job) {
        if self.courier.send(job).is_err() {
            self.courier_gone = true;
        }
    }

    fn on_event(&mut self, watch: usize, event: notify::Result<notify::Event>) {
        let Some(rules) = self.rules.get(watch) else { return };
        let ev = match event {
            Ok(ev) => ev,
            Err(e) => {
                if e.paths.contains(&rules.root) {
                    // The watch folder itself: deleted, renamed away, unmounted.
                    self.root_check[watch] = true;
                }
                if !backend::is_watch_limit(&e) && !matches!(e.kind, notify::ErrorKind::PathNotFound) {
                    tracing::warn!(folder = %rules.root.display(), "watch error, rescanning: {e}");
                    self.rescan_pending[watch] = true;
                }
                return;
            }
        };
        if ev.need_rescan() {
            tracing::info!(folder = %rules.root.display(), "the OS reported lost events; rescanning");
            self.rescan_pending[watch] = true;
        }
        if ev.paths.contains(&rules.root) {
            // inotify's DELETE_SELF and MOVE_SELF arrive on the folder's own path.
            self.root_check[watch] = true;
        }
        let now = self.clock.now();
        let mut keys = Vec::new();
        let mut unknown = None;
        for key in ev.paths.iter().filter_map(|p| rules.route(p)) {
            if self.settler.tracks(&key) {
                keys.push(key);
                continue;
            }
            match rules.exists(&key) {
                Ok(true) => keys.push(key),
                Ok(false) => {}
                // Whether it is there cannot be read now: the folder's
                // scan, tried again until it reads, will find it.
                Err(e) => unknown = Some(e),
            }
        }
        if let Some(e) = unknown {
            self.read_failed(watch, &e);
            self.scan_later(watch, now);
        }
        for key in keys {
            if let Some(s) = self.settler.observe(&key, watch, now) {
                self.emit(s);
            }
        }
    }

    /// Reads in watch folder `i` failed: reported once, when they begin.
    fn read_failed(&mut self, i: usize, e: &WatchError) {
        let fault = &mut self.faults[i];
        if fault.error.is_some() {
            tracing::debug!(folder = %self.rules[i].root.display(), "still cannot read: {e}");
            return;
        }
        let error = e.to_string();
        let path = match e {
            WatchError::Unreadable { path, .. } | WatchError::Io { path, .. } => path.clone(),
            _ => self.rules[i].root.clone(),
        };
        tracing::warn!(
            folder = %self.rules[i].root.display(),
            file = %path.display(),
            "cannot read in the watch folder; its exports keep their state and are read again with backoff \
             (up to every {}): {error}",
            Dur(RETRY_MAX)
        );
        fault.error = Some(error.clone());
        self.stats.unreadable.fetch_add(1, Ordering::Relaxed);
        self.send(Job::Unreadable { watch: i, error: Some(error) });
    }

    /// Reads in watch folder `i` work again if no scan and no look is
    /// failing there: reported once.
    fn read_maybe_cleared(&mut self, i: usize) {
        let fault = &mut self.faults[i];
        if fault.error.is_none() || fault.scan_retry.is_some() || !fault.exports.is_empty() {
            return;
        }
        let was = fault.error.take().unwrap_or_default();
        self.stats.unreadable.fetch_sub(1, Ordering::Relaxed);
        tracing::info!(folder = %self.rules[i].root.display(), "the watch folder reads again (it failed with: {was})");
        self.send(Job::Unreadable { watch: i, error: None });
    }

    /// Scan watch folder `i` again after the next wait of its backoff.
    fn scan_failed(&mut self, i: usize, now: Instant) {
        let delay = next_delay(self.faults[i].scan_retry.map(|(_, d)| d));
        self.faults[i].scan_retry = Some((now + delay, delay));
    }

    /// Scan watch folder `i` again soon, unless a retry is already set.
    fn scan_later(&mut self, i: usize, now: Instant) {
        if self.faults[i].scan_retry.is_none() {
            self.scan_failed(i, now);
        }
    }

    /// A look at `key` failed: it keeps its state and is looked at again
    /// after the next wait of its own backoff.
    fn look_failed(&mut self, watch: usize, key: &Path, e: &WatchError, now: Instant) {
        self.read_failed(watch, e);
        let delay = next_delay(self.faults[watch].exports.get(key).copied());
        self.faults[watch].exports.insert(key.to_owned(), delay);
        self.settler.retry(key, now, now + delay);
    }

    /// A look at `key` read everything (or found it gone).
    fn look_worked(&mut self, watch: usize, key: &Path) {
        if self.faults[watch].exports.remove(key).is_some() {
            self.read_maybe_cleared(watch);
        }
    }

    /// Check the roots that events touched (deleted, renamed away).
    fn check_touched_roots(&mut self) {
        for i in 0..self.rules.len() {
            if std::mem::take(&mut self.root_check[i]) && self.check_root(i) == Root::Rewatched {
                self.rescan_pending[i] = true;
            }
        }
    }

    fn check_signals(&mut self) {
        for i in 0..self.rules.len() {
            if self.signals[i].overflow.swap(false, Ordering::SeqCst) {
                tracing::warn!(
                    folder = %self.rules[i].root.display(),
                    dropped = WatchStats::get(&self.stats.dropped),
                    "too many events at once; some were dropped, rescanning"
                );
                self.rescan_pending[i] = true;
            }
            if self.signals[i].limit.swap(false, Ordering::SeqCst) && matches!(self.backends[i], Backend::Native(_)) {
                let rules = &self.rules[i];
                let e = notify::Error::new(notify::ErrorKind::MaxFilesWatch);
                tracing::warn!("{}", backend::limit_warning(&rules.root, &e, rules.fallback_poll()));
                self.stats.fallbacks.fetch_add(1, Ordering::Relaxed);
                match backend::start(rules, &self.tx, &self.signals[i], &self.stats, true) {
                    // Replacing the native watcher drops it and its watches.
                    Ok(b) => self.backends[i] = b,
                    Err(e) => tracing::error!("{e}"),
                }
                self.rescan_pending[i] = true;
            }
        }
    }

    fn run_due_looks(&mut self) {
        let now = self.clock.now();
        for (key, watch) in self.settler.due(now) {
            self.stats.looks.fetch_add(1, Ordering::Relaxed);
            match scan::look_export(&self.rules[watch], &key) {
                Ok(look) => {
                    self.look_worked(watch, &key);
                    let out = self.settler.look(&key, look.as_ref().map(|l| &l.look), now);
                    let Some(s) = out else { continue };
                    // A finished export is first checked for readability,
                    // which turns it into `Unreadable` with the OS error.
                    let s = match (s, &look) {
                        (Settle::Settled { key, watch_index, by_marker, held_for }, Some(l)) => {
                            match l.check_readable() {
                                Ok(()) => Settle::Settled { key, watch_index, by_marker, held_for },
                                Err((path, e)) if scan::is_transient(&e) => {
                                    // No descriptors left (say): not a verdict on the file.
                                    let e = WatchError::Unreadable { path, source: e };
                                    self.look_failed(watch, &key, &e, now);
                                    continue;
                                }
                                Err((path, e)) => Settle::Unreadable { key, watch_index, path, error: e.to_string() },
                            }
                        }
                        (s, _) => s,
                    };
                    self.emit(s);
                }
                Err(e @ WatchError::Unreadable { .. }) => self.look_failed(watch, &key, &e, now),
                Err(e) => {
                    if self.missing[watch] {
                        tracing::debug!(export = %key.display(), "watch folder missing; export left as it was: {e}");
                    } else {
                        tracing::warn!(export = %key.display(), "cannot look at export: {e}");
                        // The folder itself may be gone: see at once.
                        self.root_check[watch] = true;
                    }
                    self.settler.rearm(&key, now);
                }
            }
        }
    }

    /// Is watch folder `i` there? Notices it going missing (reported once,
    /// its exports left as they are) and coming back or being replaced by
    /// another folder of the same name (its watch is started again, so
    /// events flow without a restart).
    fn check_root(&mut self, i: usize) -> Root {
        let rules = &self.rules[i];
        let present = scan::root_present(rules).map_err(|e| e.to_string()).and_then(|()| {
            if self.mounted[i] && !scan::is_mount_point(rules) {
                Err(format!("{}: nothing is mounted here any more (the share was unmounted)", rules.root.display()))
            } else {
                Ok(())
            }
        });
        if let Err(e) = present {
            if !self.missing[i] {
                self.missing[i] = true;
                self.stats.missing.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    folder = %rules.root.display(),
                    every = %Dur(rules.rescan),
                    "the watch folder is missing (unmounted share? deleted?); its exports are kept as they are \
                     and the folder is looked for again at every rescan: {e}"
                );
                self.send(Job::Folder { watch: i, missing: Some(e) });
            }
            return Root::Missing;
        }
        let id = scan::root_identity(rules);
        if self.missing[i] || id != self.root_ids[i] || matches!(self.backends[i], Backend::Missing) {
            // Drop the old watch first: it watches a folder that is gone.
            self.backends[i] = Backend::Missing;
            match backend::start(rules, &self.tx, &self.signals[i], &self.stats, self.force_poll) {
                Ok(b) => self.backends[i] = b,
                Err(e) => {
                    tracing::warn!("{e}; trying again at the next rescan");
                    return Root::Same;
                }
            }
            self.root_ids[i] = id;
            self.mounted[i] = self.mounted[i] || scan::is_mount_point(&self.rules[i]);
            self.stats.rewatched.fetch_add(1, Ordering::Relaxed);
            if self.missing[i] {
                self.missing[i] = false;
                self.stats.missing.fetch_sub(1, Ordering::Relaxed);
                tracing::info!(folder = %self.rules[i].root.display(), "the watch folder is back; watching it again");
            } else {
                tracing::info!(folder = %self.rules[i].root.display(), "the watch folder was replaced; watching the new one");
            }
            self.send(Job::Folder { watch: i, missing: None });
            return Root::Rewatched;
        }
        Root::Same
    }

    fn rescan(&mut self, i: usize) {
        let now = self.clock.now();
        self.rescan_pending[i] = false;
        self.next_rescan[i] = now + self.rules[i].rescan;
        self.stats.rescans.fetch_add(1, Ordering::Relaxed);
        if self.check_root(i) == Root::Missing {
            if self.faults[i].scan_retry.is_some() {
                // Keep backing off: the folder may come back readable.
                self.scan_failed(i, now);
            }
            return;
        }
        let found = match scan::scan(&self.rules[i]) {
            Ok(s) => s,
            Err(e @ WatchError::Unreadable { .. }) => {
                // Nothing is known about the folder's exports: all keep their state.
                self.read_failed(i, &e);
                self.scan_failed(i, now);
                return;
            }
            Err(e) => {
                tracing::warn!("rescan skipped: {e}");
                return;
            }
        };
        tracing::debug!(folder = %self.rules[i].root.display(), exports = found.exports.len(), files = found.files, "rescanned");
        let (out, missing) = self.settler.rescan(i, &found.exports, now);
        let mut present: std::collections::HashSet<PathBuf> = found.exports.keys().cloned().collect();
        present.extend(found.unreadable.keys().cloned());
        self.send(Job::Scanned { watch: i, present });
        for s in out {
            self.emit(s);
        }
        for key in missing {
            if found.unreadable.contains_key(&key) {
                // There, but not readable now: left as it was.
                continue;
            }
            // The walk raced with events: confirm before forgetting.
            match scan::look_export(&self.rules[i], &key) {
                Ok(None) => {
                    self.look_worked(i, &key);
                    if let Some(s) = self.settler.look(&key, None, now) {
                        self.emit(s);
                    }
                }
                Ok(Some(_)) => {
                    self.look_worked(i, &key);
                    if let Some(s) = self.settler.observe(&key, i, now) {
                        self.emit(s);
                    }
                }
                Err(e @ WatchError::Unreadable { .. }) => self.look_failed(i, &key, &e, now),
                Err(e) => tracing::warn!(export = %key.display(), "cannot look at export: {e}"),
            }
        }
        // Exports that are there but could not be read: new ones settle
        // (their looks retry with backoff); known ones keep their state.
        let mut first = None;
        for (key, (path, source)) in found.unreadable {
            if !self.settler.tracks(&key)
                && let Some(s) = self.settler.observe(&key, i, now)
            {
                self.emit(s);
            }
            first.get_or_insert(WatchError::Unreadable { path, source });
        }
        match first {
            Some(e) => {
                self.read_failed(i, &e);
                self.scan_failed(i, now);
            }
            None => {
                self.faults[i].scan_retry = None;
                self.read_maybe_cleared(i);
            }
        }
    }

    /// Hand a settle value off.
    fn emit(&mut self, s: Settle) {
        match &s {
            Settle::Waiting { key, .. } => tracing::info!(export = %key.display(), "new export, settling"),
            Settle::Changed { key, .. } => tracing::info!(export = %key.display(), "export changed, settling again"),
            Settle::Settled { key, by_marker, held_for: None, .. } => {
                tracing::info!(export = %key.display(), by_marker, "export finished")
            }
            Settle::Settled { key, held_for: Some(held), .. } => {
                tracing::debug!(export = %key.display(), held = %Dur(*held), "held export still quiet; looking inside again")
            }
            Settle::Unreadable { key, path, error, .. } => {
                tracing::warn!(export = %key.display(), file = %path.display(), "export has an unreadable file: {error}")
            }
            Settle::Empty { key, .. } => tracing::info!(export = %key.display(), "export folder is empty"),
            Settle::Vanished { key, .. } => tracing::info!(export = %key.display(), "export gone"),
        }
        self.send(Job::Settle(s));
    }
}
