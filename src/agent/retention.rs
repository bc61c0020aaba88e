//! Retention: with `[journal] forget_after = "180d"`, the running agent
//! forgets ended groups older than that, once a day (the first time a
//! minute after it starts), by exactly `forget`'s rules:
//! [`Queue::forgettable`](crate::journal::Queue::forgettable) lists the
//! candidates (ended, housekeeping done, unchanged since the cutoff; never
//! `waiting`, `queued`, `uploading` or `failed`), [`export_may_remain`]
//! keeps a group whose export may still be in its watch folder (its row is
//! what keeps the watcher from uploading it again), and
//! [`Queue::forget`](crate::journal::Queue::forget) drops the rest, [`BATCH`]
//! groups per transaction so that no one transaction holds the journal long.
//!
//! Every journal call crosses [`AsyncJournal::call`] (the blocking pool);
//! the shutdown token is looked at between batches and while waiting for
//! the next day, so a stop is never held up by more than one batch.
//!
//! In a fleet every node runs its own sweep over the shared database: that
//! is safe, because `forget` checks each group again inside its
//! transaction (a group another node already dropped, or one that changed
//! meanwhile, is skipped), and a node that lacks a group's watch folder
//! keeps it (see [`export_may_remain`]).
//!
//! `forget_after` is read when the agent starts: `[journal]` settings need
//! a restart (a reload says so).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::journal::{AsyncJournal, GroupId, GroupRecord, JournalError, Store, now_ms};

/// Groups dropped per journal transaction.
pub const BATCH: usize = 500;

/// When the sweep runs: the first time `first` after the start, then every `every`.
#[derive(Debug, Clone, Copy)]
pub struct Every {
    pub first: Duration,
    pub every: Duration,
    /// After a sweep that failed (the database out of reach): try again this soon.
    pub after_error: Duration,
}

impl Every {
    /// A minute after the start (the startup scan has its turn first), then daily.
    pub const DAILY: Every = Every {
        first: Duration::from_secs(60),
        every: Duration::from_secs(24 * 3600),
        after_error: Duration::from_secs(3600),
    };
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Groups dropped from the journal.
    pub forgot: u64,
    /// Candidates kept because their export may still be in place.
    pub kept: u64,
}

/// Might `g`'s export still be where it was? Then its row must stay: it is
/// what tells the watcher the export was already uploaded (or rejected, or
/// canceled by the user); forgotten, the next scan would upload it (or
/// report it) again. True when any of its files (other than the agent's
/// own staged copies) is still at its path, and when its watch folder is
/// not here to look in (an unmounted share, or in a fleet a folder this
/// node does not mount): files missing from a missing folder prove nothing.
pub fn export_may_remain(g: &GroupRecord) -> bool {
    if g.watch_path.as_deref().is_some_and(|w| !w.is_dir()) {
        return true;
    }
    g.files.iter().filter(|f| !f.staged).any(|f| std::fs::symlink_metadata(&f.source).is_ok())
        || (g.files.is_empty() && std::fs::symlink_metadata(&g.key).is_ok())
}

/// Of `forget`'s candidates `ids`, those whose export is gone (see
/// [`export_may_remain`]), and how many were kept; a candidate dropped
/// meanwhile (another node's sweep, a `forget`) is neither. The `forget`
/// command and the agent's sweep both decide with it.
pub fn exports_gone(j: &dyn Store, ids: &[GroupId]) -> Result<(Vec<GroupId>, u64), JournalError> {
    let mut gone = Vec::with_capacity(ids.len());
    let mut kept = 0u64;
    for &id in ids {
        match j.group(id) {
            Ok(g) if export_may_remain(&g) => kept += 1,
            Ok(_) => gone.push(id),
            Err(JournalError::NoSuchGroup(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok((gone, kept))
}

/// Forget the ended groups that last changed before `before_ms` and whose
/// export is gone, [`BATCH`] at a time, until done or `stop` is cancelled
/// (the batch under way finishes).
pub async fn forget_before(
    journal: &AsyncJournal,
    before_ms: i64,
    stop: &CancellationToken,
) -> Result<Swept, JournalError> {
    let candidates = journal.call(move |j| j.forgettable(before_ms)).await?;
    let mut swept = Swept::default();
    for chunk in candidates.chunks(BATCH) {
        if stop.is_cancelled() {
            break;
        }
        let ids = chunk.to_vec();
        let (forgot, kept) = journal
            .call(move |j| {
                let (gone, kept) = exports_gone(j, &ids)?;
                Ok((j.forget(&gone, before_ms)?, kept))
            })
            .await?;
        swept.forgot += forgot;
        swept.kept += kept;
    }
    Ok(swept)
}

/// `age` as the config would write it: whole days as `180d`.
fn shown(age: Duration) -> String {
    let secs = age.as_secs();
    if secs > 0 && secs.is_multiple_of(86_400) && age.subsec_nanos() == 0 {
        format!("{}d", secs / 86_400)
    } else {
        crate::config::Dur(age).to_string()
    }
}

/// The retention task: with `age` set, a sweep on `when`'s schedule until
/// `shutdown`; without it, nothing (it returns at once).
pub async fn retention_loop(journal: AsyncJournal, age: Option<Duration>, when: Every, shutdown: CancellationToken) {
    let Some(age) = age else { return };
    let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
    let mut wait = when.first;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let before = now_ms().saturating_sub(age_ms);
        wait = match forget_before(&journal, before, &shutdown).await {
            Ok(s) => {
                if s.forgot > 0 {
                    tracing::info!(
                        forgot = s.forgot,
                        kept = s.kept,
                        "forgot {} ended groups older than {}",
                        s.forgot,
                        shown(age)
                    );
                } else {
                    tracing::debug!(kept = s.kept, "no ended groups older than {} to forget", shown(age));
                }
                if s.kept > 0 {
                    tracing::debug!(
                        "kept {} ended groups older than {} whose export may still be in place",
                        s.kept,
                        shown(age)
                    );
                }
                when.every
            }
            Err(e) => {
                tracing::warn!("forgetting ended groups older than {} failed: {e}; trying again later", shown(age));
                when.after_error
            }
        };
    }
}

#[cfg(test)]
mod tests;
