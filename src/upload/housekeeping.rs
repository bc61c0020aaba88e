//! Housekeeping of ended groups: the after-upload step of a completed group
//! (delete, move or keep its export; the receipt; staged files), retried
//! after a growing delay when it fails, and the staged files of groups that
//! ended otherwise. All of it blocks (a move may copy gigabytes): the
//! scheduler runs it on the blocking pool.

use std::time::Duration;

use super::EngineError;
use super::engine::Shared;
use super::finish::{self, AfterOutcome};
use crate::config::Dur;
use crate::journal::{GroupId, GroupState, JournalError, now_ms};

/// How many times a failing after-upload step is tried before the files are kept.
pub(crate) const AFTER_UPLOAD_ATTEMPTS: usize = 6;

/// The history note that marks a failed after-upload attempt.
const AFTER_UPLOAD_FAILED: &str = "after-upload step failed: ";

/// The wait after the `failures`-th failed after-upload attempt: 1 min,
/// doubling, at most 1 h.
pub(crate) fn after_upload_delay(failures: usize) -> Duration {
    let exp = u32::try_from(failures.saturating_sub(1)).unwrap_or(u32::MAX).min(6);
    Duration::from_secs(60 * (1u64 << exp)).min(Duration::from_secs(3600))
}

impl Shared {
    /// After-upload action, receipt and staged files of a completed group.
    /// A failure is logged and noted in the group's history; housekeeping
    /// tries again after a growing delay ([`after_upload_delay`]), at most
    /// [`AFTER_UPLOAD_ATTEMPTS`] times, after which the files are kept and
    /// the group's note says so and why.
    ///
    /// Blocking (it may copy gigabytes): call it on the blocking pool.
    pub(crate) fn finish_completed(&self, id: GroupId) {
        let j = self.journal.blocking();
        let Err(e) = self.try_finish_completed(id) else { return };
        let failures = self.after_upload_failures(id).map(|f| f.len()).unwrap_or(0) + 1;
        if failures >= AFTER_UPLOAD_ATTEMPTS {
            let note = format!("after-upload step gave up after {failures} attempts; the files were kept: {e}");
            tracing::warn!(group = id, error = %e, attempts = failures, "after-upload step gave up; the files were kept");
            let _ = j.note_error(id, &note);
            if let Ok(g) = j.group(id) {
                finish::remove_staged(j.as_ref(), &g);
            }
            let _ = j.set_finished(id);
        } else {
            let next = after_upload_delay(failures);
            tracing::warn!(group = id, error = %e, attempt = failures, retry_in = %Dur(next), "after-upload step failed");
            let _ = j.note(id, &format!("{AFTER_UPLOAD_FAILED}{e}"));
        }
    }

    /// When (ms) the after-upload step of `id` failed before.
    fn after_upload_failures(&self, id: GroupId) -> Result<Vec<i64>, JournalError> {
        Ok(self
            .journal
            .blocking()
            .events(id)?
            .into_iter()
            .filter(|e| e.detail.as_deref().is_some_and(|d| d.starts_with(AFTER_UPLOAD_FAILED)))
            .map(|e| e.at_ms)
            .collect())
    }

    /// Is the after-upload step of `id` due (never failed, or its delay has passed)?
    fn after_upload_due(&self, id: GroupId) -> bool {
        match self.after_upload_failures(id) {
            Ok(f) => f.last().is_none_or(|last| {
                let wait = i64::try_from(after_upload_delay(f.len()).as_millis()).unwrap_or(i64::MAX);
                now_ms() >= last.saturating_add(wait)
            }),
            Err(_) => true,
        }
    }

    fn try_finish_completed(&self, id: GroupId) -> Result<(), String> {
        let j = self.journal.blocking();
        let g = j.group(id).map_err(|e| e.to_string())?;
        let cfg = self.cfg();
        let report = finish::after_upload(&cfg, &g).map_err(|e| format!("after_upload: {e}"))?;
        let after = report.outcome;
        match &after {
            AfterOutcome::Kept => {}
            AfterOutcome::Deleted => tracing::info!(group = id, path = %g.key.display(), "export deleted after upload"),
            AfterOutcome::Moved { to } => {
                tracing::info!(group = id, path = %g.key.display(), to = %to.display(), "export moved after upload")
            }
        }
        if let Some(dir) = &cfg.upload.receipt_dir {
            let path =
                finish::write_receipt(dir, &g, &after).map_err(|e| format!("receipt in {}: {e}", dir.display()))?;
            tracing::debug!(group = id, receipt = %path.display(), "receipt written");
        }
        finish::remove_staged(j.as_ref(), &g);
        let note = match &after {
            AfterOutcome::Kept => "export kept".to_string(),
            AfterOutcome::Deleted => "export deleted".to_string(),
            AfterOutcome::Moved { to } => format!("export moved to {}", to.display()),
        };
        j.note(id, &note).map_err(|e| e.to_string())?;
        if !report.kept.is_empty() {
            let why = format!("after upload, left in place: {}", report.kept.join("; "));
            tracing::info!(group = id, path = %g.key.display(), "{why}");
            j.note_error(id, &why).map_err(|e| e.to_string())?;
        }
        j.set_finished(id).map_err(|e| e.to_string())
    }

    /// Housekeeping for every ended group that has not had it. Blocking
    /// (an after-upload move may copy gigabytes): the scheduler runs it on
    /// the blocking pool, one round at a time, without waiting for it.
    pub(crate) fn housekeeping(&self) -> Result<(), EngineError> {
        let j = self.journal.blocking();
        for id in j.unfinished()? {
            let g = j.group(id)?;
            if g.state == GroupState::Completed {
                if self.after_upload_due(id) {
                    self.finish_completed(id);
                }
            } else {
                finish::remove_staged(j.as_ref(), &g);
                j.set_finished(id)?;
            }
        }
        Ok(())
    }
}
