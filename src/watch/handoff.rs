//! The hand-off: what happens to a settle value. The watcher only decides
//! *when*; a [`Handoff`] decides what that means for the rest of the agent
//! (build the group, write the journal).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use crate::config::{Dur, MediaCheck, WatchMode};
use crate::group::{self, GroupOptions, UploadGroup, Violation};
use crate::journal::{Enqueued, GroupState, PauseReason, Store};

use super::WatchError;
use super::scan::WatchRules;
use super::settle::Settle;

/// What the hand-off made of a settle value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handed {
    /// Dealt with.
    Done,
    /// A `Settled` export holds a container still being written: not
    /// finished after all. The watcher holds it and settles it again
    /// `recheck` later, with how long it has been held.
    Unfinished { recheck: Duration },
}

/// Receives every settle value, in order, on the watcher's thread.
pub trait Handoff: Send {
    /// An error on `Settled` or `Unreadable` makes the export settle again
    /// later, so a transient failure (a busy journal) is retried; an error on
    /// any other value is logged.
    fn hand_off(&mut self, settle: &Settle, rules: &WatchRules) -> Result<Handed, WatchError>;

    /// The watch folder itself went missing (`Some` with the OS error) or
    /// came back (`None`). Its exports are neither forgotten nor canceled
    /// meanwhile; the default does nothing.
    fn watch_folder(&mut self, _rules: &WatchRules, _missing: Option<&str>) {}

    /// Reads in the watch folder began to fail (`Some` with the path and
    /// the OS error: EMFILE, EIO, EACCES, ...) or work again (`None`). Its
    /// exports keep their state meanwhile and are read again with backoff;
    /// the default does nothing.
    fn watch_unreadable(&mut self, _rules: &WatchRules, _error: Option<&str>) {}

    /// A rescan of the watch folder found exactly the exports `present`.
    /// The default does nothing.
    fn scanned(&mut self, _rules: &WatchRules, _present: &HashSet<PathBuf>) {}
}

/// Sends every settle value, stamped with the moment it was handed off, into
/// a channel: for tests and benchmarks that assert on what the watcher decided.
#[derive(Debug, Clone)]
pub struct ChannelHandoff(pub Sender<(Instant, Settle)>);

impl Handoff for ChannelHandoff {
    fn hand_off(&mut self, settle: &Settle, _rules: &WatchRules) -> Result<Handed, WatchError> {
        self.0.send((Instant::now(), settle.clone())).map_err(|_| WatchError::Handoff("receiver is gone".into()))?;
        Ok(Handed::Done)
    }
}

/// The agent's hand-off: a settling export is `waiting` in the journal; a
/// finished one goes through the grouping engine into the journal as
/// `queued` (or `rejected` with its reasons); a change before the upload
/// starts takes it back to `waiting`; a vanished one is forgotten. The
/// journal's fingerprint dedup makes a finished export that was already
/// uploaded (a restart, a rescan) a no-op.
pub struct JournalHandoff {
    journal: Arc<dyn Store>,
    staging_dir: PathBuf,
    outcomes: Option<Sender<(Instant, PathBuf, Enqueued)>>,
}

impl JournalHandoff {
    /// Record (`Some` with the OS error) or clear a watch folder's fault.
    fn folder_fault(&self, rules: &WatchRules, reason: PauseReason, error: Option<&str>) {
        let r = match error {
            Some(error) => self.journal.set_pause(&reason, Some(error), None),
            None => self.journal.clear_pause(&reason).map(drop),
        };
        if let Err(e) = r {
            tracing::warn!(folder = %rules.root.display(), error = %e, "cannot record the watch folder's state");
        }
    }

    /// `staging_dir` receives zipped `.fcpxmld` bundles.
    pub fn new(journal: Arc<dyn Store>, staging_dir: PathBuf) -> JournalHandoff {
        JournalHandoff { journal, staging_dir, outcomes: None }
    }

    /// Also report every enqueue result (for tests and benchmarks).
    pub fn with_outcomes(mut self, tx: Sender<(Instant, PathBuf, Enqueued)>) -> JournalHandoff {
        self.outcomes = Some(tx);
        self
    }

    /// Build the group of a finished export. `None`: nothing left to upload
    /// under that key (in flat mode, only files still being written).
    fn build(&self, key: &Path, rules: &WatchRules) -> Result<Option<UploadGroup>, WatchError> {
        let staged = GroupOptions {
            watch: &rules.group_config,
            staging_dir: Some(&self.staging_dir),
            matcher: Some(&rules.matcher_for_groups),
        };
        match rules.mode {
            WatchMode::Folders => Ok(Some(group::build_folder_group(key, &staged)?)),
            WatchMode::Flat => Ok(group::build_flat_group(&rules.root, &group::folder_name(key), &staged)?),
        }
    }

    /// A quiet export with a container still being written: it keeps its
    /// `waiting` row, with the reason, until `media_wait` has passed with
    /// nothing changing; then the open containers are findings
    /// (`media-truncated`: a rejection, or a warning with
    /// `media_check = "warn"`) and the group is enqueued. An export whose
    /// group with this very fingerprint the journal already has (rejected
    /// before a restart, say) is not held again.
    fn unfinished(
        &self,
        key: &Path,
        mut group: UploadGroup,
        held_for: Option<Duration>,
        rules: &WatchRules,
    ) -> Result<Handed, WatchError> {
        let wait = rules.group_config.media_wait;
        let waited = held_for.unwrap_or_default();
        // Already recorded past waiting (rejected before a restart, say): not held again.
        let first = held_for.is_none();
        if waited >= wait.0 || (first && self.already_recorded(key, &group)?) {
            let findings = crate::group::inspect::unfinished_expired(&group, &wait.to_string());
            tracing::warn!(
                export = %key.display(),
                waited = %Dur(waited),
                "a container is still unfinished after media_wait; {}",
                findings.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("; ")
            );
            group.unfinished.clear();
            match group.media_check {
                MediaCheck::Warn => group.warnings.extend(findings),
                _ => group.violations.extend(findings),
            }
            self.enqueue(key, &group)?;
            return Ok(Handed::Done);
        }
        // Its zips are made again when it settles again.
        group::remove_staged(&group);
        let reasons: Vec<String> = group.unfinished.iter().map(|v| v.to_string()).collect();
        let then = if group.media_check == MediaCheck::Warn { "uploaded with a warning" } else { "rejected" };
        let reason = format!(
            "still being written (the container is not finished): {}; {then} after {wait} of quiet",
            reasons.join("; ")
        );
        if first {
            // Re-checks of the same hold find the row and the reason as they were left.
            tracing::info!(export = %key.display(), "quiet, but {reason}");
            self.journal.note_waiting(key, &group::folder_name(key), Some(&rules.root))?;
            self.journal.set_waiting_reason(key, Some(&reason))?;
        }
        let left = wait.0.saturating_sub(waited);
        let recheck = rules.policy.settle.min(left).max(Duration::from_secs(1));
        Ok(Handed::Unfinished { recheck })
    }

    /// Is a group of this export with this fingerprint already recorded
    /// past `waiting`?
    fn already_recorded(&self, key: &Path, group: &UploadGroup) -> Result<bool, WatchError> {
        let Some(spec) = key.to_str() else { return Ok(false) };
        let Some(id) = self.journal.find(spec)? else { return Ok(false) };
        let known = self.journal.group(id)?;
        Ok(known.state != GroupState::Waiting && known.fingerprint.as_deref() == Some(&group.fingerprint))
    }

    fn enqueue(&self, key: &Path, group: &UploadGroup) -> Result<(), WatchError> {
        let outcome = self.journal.enqueue(group)?;
        match outcome {
            Enqueued::Queued(id) if !group.warnings.is_empty() => {
                let warnings = Violation::join_tagged(&group.warnings);
                tracing::warn!(export = %key.display(), id, "queued with media warnings: {warnings}")
            }
            Enqueued::Queued(id) => tracing::info!(export = %key.display(), id, "queued"),
            Enqueued::Rejected(id) => {
                let reasons: Vec<String> = group.violations.iter().map(|v| v.to_string()).collect();
                tracing::warn!(export = %key.display(), id, "rejected: {}", reasons.join("; "))
            }
            Enqueued::Duplicate { id, state } => {
                tracing::debug!(export = %key.display(), id, %state, "already known; nothing queued")
            }
        }
        if let Some(tx) = &self.outcomes {
            let _ = tx.send((Instant::now(), key.to_owned(), outcome));
        }
        Ok(())
    }
}

impl Handoff for JournalHandoff {
    fn hand_off(&mut self, settle: &Settle, rules: &WatchRules) -> Result<Handed, WatchError> {
        match settle {
            Settle::Waiting { key, .. } => {
                // First sight in this run. An export the journal already
                // knows (a restart over uploaded exports) gets no `waiting`
                // row: settling it again ends as a duplicate, or, if it
                // changed while the agent was stopped, as a new group.
                let known = match key.to_str() {
                    Some(spec) => self.journal.find(spec)?.is_some(),
                    None => false,
                };
                if !known {
                    self.journal.note_waiting(key, &group::folder_name(key), Some(&rules.root))?;
                }
            }
            Settle::Changed { key, .. } => {
                // Back to waiting if it has not started; an upload in
                // progress notices the change itself.
                self.journal.unqueue(key)?;
                self.journal.note_waiting(key, &group::folder_name(key), Some(&rules.root))?;
                self.journal.set_waiting_reason(key, None)?;
            }
            Settle::Settled { key, held_for, .. } => match self.build(key, rules)? {
                Some(group) if !group.unfinished.is_empty() => return self.unfinished(key, group, *held_for, rules),
                Some(group) => self.enqueue(key, &group)?,
                None => self.journal.drop_waiting(key)?,
            },
            Settle::Unreadable { key, path, error, .. } => {
                let Some(mut group) = self.build(key, rules)? else {
                    self.journal.drop_waiting(key)?;
                    return Ok(Handed::Done);
                };
                let file = path
                    .strip_prefix(&group.root)
                    .map(|r| r.to_string_lossy().replace('\\', "/"))
                    .unwrap_or_else(|_| path.display().to_string());
                if !group.violations.iter().any(|v| v.rule == "unreadable-file" && v.file.as_deref() == Some(&*file)) {
                    group.violations.push(Violation {
                        rule: "unreadable-file",
                        file: Some(file),
                        message: format!("cannot be opened for reading: {error}"),
                    });
                }
                // Unreadable is a verdict of its own: no waiting on a container.
                group.unfinished.clear();
                self.enqueue(key, &group)?;
            }
            Settle::Empty { key, .. } | Settle::Vanished { key, .. } => self.journal.drop_waiting(key)?,
        }
        Ok(Handed::Done)
    }

    /// A `waiting` row whose export is neither found by the rescan nor
    /// there at all was left by an agent that stopped (or died) while the
    /// export settled, and the export went away meanwhile: dropped, so that
    /// no row waits for ever for an export that does not exist.
    fn scanned(&mut self, rules: &WatchRules, present: &HashSet<PathBuf>) {
        let waiting = match self.journal.waiting_in(&rules.root) {
            Ok(w) => w,
            Err(e) => {
                tracing::debug!(folder = %rules.root.display(), error = %e, "cannot list the waiting exports");
                return;
            }
        };
        for key in waiting {
            if present.contains(&key) || std::fs::symlink_metadata(&key).is_ok() {
                continue;
            }
            tracing::info!(export = %key.display(), "no such export any more; its waiting row (left by an agent that stopped while it settled) is dropped");
            if let Err(e) = self.journal.drop_waiting(&key) {
                tracing::warn!(export = %key.display(), error = %e, "cannot drop the waiting row");
            }
        }
    }

    fn watch_folder(&mut self, rules: &WatchRules, missing: Option<&str>) {
        self.folder_fault(rules, PauseReason::WatchMissing(rules.root.clone()), missing);
    }

    /// Recorded like a missing folder: a fault row that `/healthz`,
    /// metrics and `status` show; it holds no upload.
    fn watch_unreadable(&mut self, rules: &WatchRules, error: Option<&str>) {
        self.folder_fault(rules, PauseReason::WatchUnreadable(rules.root.clone()), error);
    }
}
