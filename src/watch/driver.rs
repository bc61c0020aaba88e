//! The watcher's thread: events and timers in, settle values out.
//!
//! One thread owns the [`Settler`], the notify backends and the hand-off, so
//! nothing is shared but the channel and a few atomic flags. It sleeps in
//! `recv_timeout` until the next event, the next due look (only while an
//! export is settling) or the next periodic rescan: an idle agent wakes once
//! per `rescan` interval and not otherwise.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::Instant;

use super::WatchError;
use super::backend::{self, Backend, Msg, Signals, WatchStats};
use super::courier::{Courier, Job, Returned};
use super::scan::{self, ExportLook, WatchRules};
use super::settle::{Clock, Settle, Settler};
use crate::config::Dur;

/// Messages handled per wake-up before timers and flags get a turn.
const BATCH: usize = 4096;

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
}

impl Driver {
    pub fn run(mut self) -> Result<(), WatchError> {
        // Startup scan: exports that arrived while the agent was stopped.
        for i in 0..self.rules.len() {
            if scan::root_present(&self.rules[i]).is_ok() {
                // A missing-folder note left by an earlier run is stale.
                self.send(Job::Folder { watch: i, missing: None });
            }
            self.rescan(i);
        }
        loop {
            let now = self.clock.now();
            let deadline = self.next_rescan.iter().copied().chain(self.settler.next_deadline()).min();
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
            self.run_due_looks();
            let now = self.clock.now();
            for i in 0..self.rules.len() {
                if self.rescan_pending[i] || self.next_rescan[i] <= now {
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
        let now = self.clock.now();
        let keys: Vec<PathBuf> = ev
            .paths
            .iter()
            .filter_map(|p| rules.route(p))
            .filter(|k| self.settler.tracks(k) || rules.exists(k))
            .collect();
        for key in keys {
            if let Some(s) = self.settler.observe(&key, watch, now) {
                self.emit(s, None);
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
                    let out = self.settler.look(&key, look.as_ref().map(|l| &l.look), now);
                    if let Some(s) = out {
                        self.emit(s, look.as_ref());
                    }
                }
                Err(e) => {
                    if self.missing[watch] {
                        tracing::debug!(export = %key.display(), "watch folder missing; export left as it was: {e}");
                    } else {
                        tracing::warn!(export = %key.display(), "cannot look at export: {e}");
                    }
                    self.settler.rearm(&key, now);
                }
            }
        }
    }

    /// Is watch folder `i` there? Notices it going missing (reported once,
    /// its exports left as they are) and coming back or being replaced by
    /// another folder of the same name (its watch is started again, so
    /// events flow without a restart). `false`: skip this rescan.
    fn check_root(&mut self, i: usize) -> bool {
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
            return false;
        }
        let id = scan::root_identity(rules);
        if self.missing[i] || id != self.root_ids[i] || matches!(self.backends[i], Backend::Missing) {
            // Drop the old watch first: it watches a folder that is gone.
            self.backends[i] = Backend::Missing;
            match backend::start(rules, &self.tx, &self.signals[i], &self.stats, self.force_poll) {
                Ok(b) => self.backends[i] = b,
                Err(e) => {
                    tracing::warn!("{e}; trying again at the next rescan");
                    return true;
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
        }
        true
    }

    fn rescan(&mut self, i: usize) {
        let now = self.clock.now();
        self.rescan_pending[i] = false;
        self.next_rescan[i] = now + self.rules[i].rescan;
        self.stats.rescans.fetch_add(1, Ordering::Relaxed);
        if !self.check_root(i) {
            return;
        }
        let found = match scan::scan(&self.rules[i]) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("rescan skipped: {e}");
                return;
            }
        };
        tracing::debug!(folder = %self.rules[i].root.display(), exports = found.exports.len(), files = found.files, "rescanned");
        let (out, missing) = self.settler.rescan(i, &found.exports, now);
        self.send(Job::Scanned { watch: i, present: found.exports.keys().cloned().collect() });
        for s in out {
            self.emit(s, None);
        }
        for key in missing {
            // The walk raced with events: confirm before forgetting.
            match scan::look_export(&self.rules[i], &key) {
                Ok(None) => {
                    if let Some(s) = self.settler.look(&key, None, now) {
                        self.emit(s, None);
                    }
                }
                Ok(Some(_)) => {
                    if let Some(s) = self.settler.observe(&key, i, now) {
                        self.emit(s, None);
                    }
                }
                Err(e) => tracing::warn!(export = %key.display(), "cannot look at export: {e}"),
            }
        }
    }

    /// Hand a settle value off; a finished export is first checked for
    /// readability, which turns it into `Unreadable` with the OS error.
    fn emit(&mut self, s: Settle, look: Option<&ExportLook>) {
        let s = match (s, look) {
            (Settle::Settled { key, watch_index, by_marker, held_for }, Some(look)) => match look.check_readable() {
                Ok(()) => Settle::Settled { key, watch_index, by_marker, held_for },
                Err((path, e)) => Settle::Unreadable { key, watch_index, path, error: e.to_string() },
            },
            (s, _) => s,
        };
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
