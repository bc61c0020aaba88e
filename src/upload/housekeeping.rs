//! Housekeeping of ended groups: the after-upload step of a completed group
//! (delete, move or keep its export; the receipt; staged files), retried
//! after a growing delay when it fails, and the staged files of groups that
//! ended otherwise. All of it blocks (a move may copy gigabytes): the
//! scheduler runs it on the blocking pool.

use std::time::Duration;

use super::EngineError;
use super::engine::Shared;
use super::finish::{self, AfterOutcome};
use crate::config::{AfterUpload, Config, Dur};
use crate::journal::{GroupId, GroupRecord, GroupState, now_ms};

/// How many times a failing after-upload step is tried before the files are kept.
pub(crate) use crate::journal::AFTER_UPLOAD_ATTEMPTS;

/// The wait after the `failures`-th failed after-upload attempt: 1 min,
/// doubling, at most 1 h.
pub(crate) fn after_upload_delay(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(6);
    Duration::from_secs(60 * (1u64 << exp)).min(Duration::from_secs(3600))
}

/// Is the after-upload step of `g` due: never failed, or the next attempt
/// recorded in its columns has come (`now_ms` ≥ `after_next_ms`)?
pub(crate) fn after_upload_due(g: &GroupRecord, now_ms: i64) -> bool {
    g.after_next_ms.is_none_or(|next| now_ms >= next)
}

/// The after-upload step of `g` in a few words, to head its error:
/// `move to <move_to>`, `delete`.
fn step_words(cfg: &Config, g: &GroupRecord) -> String {
    match finish::watch_for(cfg, g).map(|w| (w.after_upload, w.move_to.as_deref())) {
        Some((AfterUpload::Move, Some(to))) => format!("move to {}", to.display()),
        Some((AfterUpload::Delete, _)) => "delete".to_string(),
        _ => "after_upload".to_string(),
    }
}

impl Shared {
    /// After-upload action, receipt and staged files of a completed group.
    /// A failure is logged and recorded in the group's columns
    /// ([`Transfers::after_upload_failed`](crate::journal::Transfers::after_upload_failed),
    /// with a history line for people); housekeeping tries again once the
    /// recorded next attempt is due ([`after_upload_delay`]), at most
    /// [`AFTER_UPLOAD_ATTEMPTS`] times, after which the files are kept and
    /// the group's note says so and why.
    ///
    /// Blocking (it may copy gigabytes): call it on the blocking pool.
    pub(crate) fn finish_completed(&self, id: GroupId) {
        let j = self.journal.blocking();
        let g = match j.group(id) {
            Ok(g) => g,
            Err(e) => {
                // Not a failure of the step: the next housekeeping round reads it again.
                tracing::warn!(group = id, error = %e, "cannot read the group for its after-upload step");
                return;
            }
        };
        let Err(e) = self.try_finish_completed(&g) else { return };
        let failures = g.after_failures.saturating_add(1);
        if failures >= AFTER_UPLOAD_ATTEMPTS {
            let note = format!("after-upload step gave up after {failures} attempts; the files were kept: {e}");
            tracing::warn!(group = id, error = %e, attempts = failures, "after-upload step gave up; the files were kept");
            let _ = j.after_upload_failed(id, &e, None);
            let _ = j.note_error(id, &note);
            finish::remove_staged(j.as_ref(), &g);
            let _ = j.set_finished(id);
        } else {
            let next = after_upload_delay(failures);
            let next_ms = now_ms().saturating_add(i64::try_from(next.as_millis()).unwrap_or(i64::MAX));
            tracing::warn!(group = id, error = %e, attempt = failures, retry_in = %Dur(next), "after-upload step failed");
            if let Err(je) = j.after_upload_failed(id, &e, Some(next_ms)) {
                tracing::warn!(group = id, error = %je, "the failed after-upload attempt could not be recorded");
            }
        }
    }

    fn try_finish_completed(&self, g: &GroupRecord) -> Result<(), String> {
        let j = self.journal.blocking();
        let id = g.id;
        let cfg = self.cfg();
        let report = finish::after_upload(&cfg, g).map_err(|e| format!("{}: {e}", step_words(&cfg, g)))?;
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
                finish::write_receipt(dir, g, &after).map_err(|e| format!("receipt in {}: {e}", dir.display()))?;
            tracing::debug!(group = id, receipt = %path.display(), "receipt written");
        }
        finish::remove_staged(j.as_ref(), g);
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
                if after_upload_due(&g, now_ms()) {
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
