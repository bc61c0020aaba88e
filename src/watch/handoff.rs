//! The hand-off: what happens to a settle value. The watcher only decides
//! *when*; a [`Handoff`] decides what that means for the rest of the agent
//! (build the group, write the journal).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Instant;

use crate::config::WatchMode;
use crate::group::{self, GroupOptions, UploadGroup, Violation};
use crate::journal::{Enqueued, PauseReason, Store};

use super::WatchError;
use super::scan::WatchRules;
use super::settle::Settle;

/// Receives every settle value, in order, on the watcher's thread.
pub trait Handoff: Send {
    /// An error on `Settled` or `Unreadable` makes the export settle again
    /// later, so a transient failure (a busy journal) is retried; an error on
    /// any other value is logged.
    fn hand_off(&mut self, settle: &Settle, rules: &WatchRules) -> Result<(), WatchError>;

    /// The watch folder itself went missing (`Some` with the OS error) or
    /// came back (`None`). Its exports are neither forgotten nor canceled
    /// meanwhile; the default does nothing.
    fn watch_folder(&mut self, _rules: &WatchRules, _missing: Option<&str>) {}
}

/// Sends every settle value, stamped with the moment it was handed off, into
/// a channel: for tests and benchmarks that assert on what the watcher decided.
#[derive(Debug, Clone)]
pub struct ChannelHandoff(pub Sender<(Instant, Settle)>);

impl Handoff for ChannelHandoff {
    fn hand_off(&mut self, settle: &Settle, _rules: &WatchRules) -> Result<(), WatchError> {
        self.0.send((Instant::now(), settle.clone())).map_err(|_| WatchError::Handoff("receiver is gone".into()))
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
            WatchMode::Flat => Ok(group::build_flat_group(&rules.root, &export_name(key), &staged)?),
        }
    }

    fn enqueue(&self, key: &Path, group: &UploadGroup) -> Result<(), WatchError> {
        let outcome = self.journal.enqueue(group)?;
        match outcome {
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

fn export_name(key: &Path) -> String {
    key.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| key.display().to_string())
}

impl Handoff for JournalHandoff {
    fn hand_off(&mut self, settle: &Settle, rules: &WatchRules) -> Result<(), WatchError> {
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
                    self.journal.note_waiting(key, &export_name(key), Some(&rules.root))?;
                }
            }
            Settle::Changed { key, .. } => {
                // Back to waiting if it has not started; an upload in
                // progress notices the change itself.
                self.journal.unqueue(key)?;
                self.journal.note_waiting(key, &export_name(key), Some(&rules.root))?;
            }
            Settle::Settled { key, .. } => match self.build(key, rules)? {
                Some(group) => self.enqueue(key, &group)?,
                None => self.journal.drop_waiting(key)?,
            },
            Settle::Unreadable { key, path, error, .. } => {
                let Some(mut group) = self.build(key, rules)? else {
                    return Ok(self.journal.drop_waiting(key)?);
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
                self.enqueue(key, &group)?;
            }
            Settle::Empty { key, .. } | Settle::Vanished { key, .. } => self.journal.drop_waiting(key)?,
        }
        Ok(())
    }

    fn watch_folder(&mut self, rules: &WatchRules, missing: Option<&str>) {
        let reason = PauseReason::WatchMissing(rules.root.clone());
        let r = match missing {
            Some(error) => self.journal.set_pause(&reason, Some(error), None),
            None => self.journal.clear_pause(&reason).map(drop),
        };
        if let Err(e) = r {
            tracing::warn!(folder = %rules.root.display(), error = %e, "cannot record the watch folder's state");
        }
    }
}
