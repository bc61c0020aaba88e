//! Control actions on one group, with one implementation each for every
//! front end (the CLI today; an HTTP console can call the same functions).
//!
//! The cancel protocol: with an engine working the journal (the agent, or a
//! foreground `upload`), the action is written as a request and that engine
//! carries it out (`handle_request`): it drops the group's PUTs, sends
//! DELETE and records the end. With no engine running, the caller takes the
//! engine lock (so none starts meanwhile) and does it itself with
//! [`cancel_now`]. Either way the group ends `canceled`, or `completed` if
//! the server had completed it first.
//!
//! Pause and resume hold and release the whole queue through the journal
//! ([`pause`], [`resume`]).
//!
//! Retry re-queues a failed, canceled or expired group as it was (the same
//! files): refused when its files changed since (the watcher then picks up
//! the export as it is now).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::finish::{self, check_sources};
use super::worker::complete_list;
use super::{EngineError, GroupOutcome};
use crate::api::{Canceled, Client};
use crate::config::Config;
use crate::journal::{
    AsyncJournal, Fence, FileState, GroupId, GroupRecord, GroupState, JournalError, PauseReason, Request, RequestKind,
    RequestResult, Store,
};
use crate::retry::{Repeat, Retry, RetryPolicy, with_retries};

/// How a cancel ended, as the one who asked for it sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelAnswer {
    Canceled,
    AlreadyCanceled,
    /// The server had completed the group: it is in the library, recorded
    /// `completed`.
    CompletedOnServer {
        library_id: u64,
    },
    /// Still settling: nothing has been sent, there is nothing to cancel yet.
    StillSettling,
    /// Ended otherwise (completed, rejected, expired): nothing to cancel.
    NothingToCancel(GroupState),
    /// The running engine refused or could not (the group ended first, ...).
    NotCanceled(String),
    /// The running engine has the request but had not finished it within
    /// the wait; it carries it out.
    Requested,
}

/// How a retry ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryAnswer {
    /// Queued again, as group `id` (the same row or a new one).
    Requeued { id: GroupId },
    /// Refused, and why (nothing to retry, or its files changed).
    Refused(String),
}

/// Cancel group `id`. With an engine running, wait up to `wait` for it to
/// carry out the request (polling the journal); without one, cancel here,
/// with an API client built from `cfg` if the group has a server group.
pub async fn cancel(
    cfg: &Config,
    journal: &AsyncJournal,
    id: GroupId,
    wait: Duration,
) -> Result<CancelAnswer, EngineError> {
    let g = journal.call(move |j| j.group(id)).await?;
    match g.state {
        GroupState::Queued | GroupState::Uploading | GroupState::Failed => {}
        GroupState::Canceled => return Ok(CancelAnswer::AlreadyCanceled),
        GroupState::Waiting => return Ok(CancelAnswer::StillSettling),
        other => return Ok(CancelAnswer::NothingToCancel(other)),
    }
    if let Some(_lock) = journal.call(|j| j.try_lock_engine()).await? {
        // No engine running: do it here, holding the lock so none starts meanwhile.
        let client = match &g.session_id {
            Some(_) => Some(Client::new(&cfg.api, cfg.api_key()?)?),
            None => None,
        };
        let policy = RetryPolicy::from_config(&cfg.upload);
        return Ok(match cancel_now(client.as_ref(), journal, &policy, id, Fence::Unclaimed, BY_USER, true).await? {
            CancelEnd::Canceled => CancelAnswer::Canceled,
            CancelEnd::CompletedOnServer { library_id } => CancelAnswer::CompletedOnServer { library_id },
        });
    }
    let rid = journal.call(move |j| j.request(id, RequestKind::Cancel)).await?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let (g, r) = journal.call(move |j| Ok((j.group(id)?, j.request_status(rid)?))).await?;
        if g.state == GroupState::Canceled {
            return Ok(CancelAnswer::Canceled);
        }
        match r.and_then(|r| r.result) {
            None | Some(RequestResult::Taken) => {}
            Some(RequestResult::Canceled) => return Ok(CancelAnswer::Canceled),
            Some(other) => {
                if let (GroupState::Completed, Some(library_id)) = (g.state, g.library_id) {
                    return Ok(CancelAnswer::CompletedOnServer { library_id });
                }
                return Ok(CancelAnswer::NotCanceled(match other {
                    RequestResult::NotCanceled(why) | RequestResult::Refused(why) => why,
                    r => r.to_text(),
                }));
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(CancelAnswer::Requested);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Re-queue group `id` as it was. Blocking (it reads the group's files):
/// call it off the runtime, or through [`AsyncJournal::call`].
pub fn retry(journal: &dyn Store, id: GroupId) -> Result<RetryAnswer, JournalError> {
    let g = journal.group(id)?;
    if matches!(g.state, GroupState::Canceled | GroupState::Expired)
        && let Err(changed) = check_sources(&g)
    {
        return Ok(RetryAnswer::Refused(format!(
            "group {id} ({}) cannot be re-queued as it was: {changed}; the watcher picks up the export as it is now",
            g.name
        )));
    }
    match journal.retry_group(id) {
        Ok(new) => Ok(RetryAnswer::Requeued { id: new }),
        Err(JournalError::Refused(why)) => Ok(RetryAnswer::Refused(why)),
        Err(e) => Err(e),
    }
}

/// Hold the queue (`pause`, the console's `POST /api/v1/pause`): recorded
/// in the journal as [`PauseReason::Operator`], so it holds across
/// restarts and for every engine on this journal; the engine looks at it
/// every poll and starts no new group or part while it holds (parts in
/// flight finish). `by` says who, for `status`. Returns false if the queue
/// was already paused (its `since` is kept).
pub fn pause(journal: &dyn Store, by: &str) -> Result<bool, JournalError> {
    let was = journal.pause(&PauseReason::Operator)?.is_some();
    journal.set_pause(&PauseReason::Operator, Some(by), None)?;
    Ok(!was)
}

/// Release the queue paused by [`pause`]. Returns false if it was not paused.
pub fn resume(journal: &dyn Store) -> Result<bool, JournalError> {
    journal.clear_pause(&PauseReason::Operator)
}

/// The reason recorded for a cancel someone asked for.
pub(crate) const BY_USER: &str = "canceled by the user";

/// What the engine does with a request it finds in the journal. A cancel
/// of a running group is handed to its worker (`hand_over` sets the
/// reason and fires its token; `true` if the group is running): the
/// request is answered [`RequestResult::Taken`] now and again when the
/// worker ends ([`answer_after_worker`]).
pub(crate) async fn handle_request(
    client: &Client,
    journal: &AsyncJournal,
    policy: &RetryPolicy,
    req: Request,
    hand_over: impl FnOnce(GroupId) -> bool,
) -> Result<(), EngineError> {
    let rid = req.id;
    let result = match req.kind {
        RequestKind::Cancel if hand_over(req.group_id) => RequestResult::Taken,
        RequestKind::Cancel => {
            let gid = req.group_id;
            let g = journal.call(move |j| j.group(gid)).await?;
            match g.state {
                GroupState::Queued | GroupState::Uploading | GroupState::Failed => {
                    match cancel_now(Some(client), journal, policy, g.id, Fence::Unclaimed, BY_USER, true).await? {
                        CancelEnd::Canceled => {
                            tracing::info!(group = g.id, "group canceled");
                            RequestResult::Canceled
                        }
                        // Its after-upload step runs with the next housekeeping.
                        CancelEnd::CompletedOnServer { library_id } => RequestResult::NotCanceled(format!(
                            "the group had completed on the server (library id {library_id})"
                        )),
                    }
                }
                GroupState::Canceled => RequestResult::Canceled,
                other => RequestResult::NotCanceled(format!("the group is {other}")),
            }
        }
        RequestKind::Retry => {
            let gid = req.group_id;
            match journal.call(move |j| retry(j, gid)).await? {
                RetryAnswer::Requeued { id } => RequestResult::Requeued(id),
                RetryAnswer::Refused(why) => RequestResult::Refused(why),
            }
        }
    };
    journal.call(move |j| j.finish_request(rid, &result)).await?;
    Ok(())
}

/// Answer the cancel requests handed to a worker, now that it ended.
pub(crate) async fn answer_after_worker(
    journal: &AsyncJournal,
    requests: Vec<i64>,
    outcome: &GroupOutcome,
) -> Result<(), EngineError> {
    let result = match outcome {
        GroupOutcome::Canceled(_) => RequestResult::Canceled,
        other => RequestResult::NotCanceled(format!("the group ended first ({other:?})")),
    };
    journal
        .call(move |j| {
            for rid in requests {
                j.finish_request(rid, &result)?;
            }
            Ok(())
        })
        .await?;
    Ok(())
}

/// How [`cancel_now`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelEnd {
    /// Recorded `canceled`.
    Canceled,
    /// The server had already completed the group (its cancel answered 409
    /// and a repeated `complete` confirmed it): recorded `completed` with the
    /// library id; its after-upload step is still to run.
    CompletedOnServer { library_id: u64 },
}

/// Cancel group `id` now: DELETE its server group if it has one (a few
/// attempts; if the server cannot be reached the group is canceled locally
/// anyway and noted: nothing will upload to it again and it expires by
/// itself), record `canceled` with `reason`, remove its staged files.
///
/// A cancel the server refuses with 409 because the group already ended may
/// mean it *completed* (the last `complete` was answered, its answer not yet
/// recorded): then `complete` is asked again for the files not recorded as
/// completed (safe to repeat) and, if the server confirms, the group is
/// recorded `completed`, not canceled: the video is in the library.
pub async fn cancel_now(
    client: Option<&Client>,
    journal: &AsyncJournal,
    policy: &RetryPolicy,
    id: GroupId,
    fence: Fence,
    reason: &str,
    by_user: bool,
) -> Result<CancelEnd, EngineError> {
    let g = journal.call(move |j| j.group(id)).await?;
    if let (Some(session), true) =
        (&g.session_id, matches!(g.state, GroupState::Queued | GroupState::Uploading | GroupState::Failed))
    {
        let short =
            RetryPolicy { max_attempts: policy.max_attempts.min(3), budget: Duration::from_secs(20), ..*policy };
        let result = match client {
            Some(c) => with_retries(
                &short,
                Retry::new("cancel upload group", &CancellationToken::new(), Repeat::Always),
                |_| c.cancel_group(session),
            )
            .await
            .map_err(|e| e.to_string()),
            None => Err("no API client".to_string()),
        };
        match (result, client) {
            (Ok(Canceled::AlreadyEnded), Some(c)) => {
                if let Some(library_id) = completed_on_server(c, journal, &short, &g, fence, session).await? {
                    tracing::info!(group = id, library_id, "not canceled: the group had completed on the server");
                    return Ok(CancelEnd::CompletedOnServer { library_id });
                }
            }
            (Ok(_), _) => {}
            (Err(e), _) => {
                tracing::warn!(group = id, session = %session, error = %e, "the server group could not be canceled; it expires by itself");
                let note = format!("server group {session} could not be canceled ({e}); it expires by itself");
                journal.call(move |j| j.note(id, &note)).await?;
            }
        }
    }
    let reason = reason.to_string();
    journal
        .call(move |j| {
            j.cancel_group(id, &reason, by_user, fence)?;
            finish::remove_staged(j, &g);
            j.set_finished(id)
        })
        .await?;
    Ok(CancelEnd::Canceled)
}

/// Ask `complete` again for every file of `g` that the journal does not
/// record as completed; `Some(library id)` if the server says the group is
/// complete (then recorded `completed`). `None` when a file has parts that
/// are not recorded as done, the server does not confirm, or the group is
/// not in a state that can become completed (a failed group stays as it is
/// and is canceled by the caller).
async fn completed_on_server(
    client: &Client,
    journal: &AsyncJournal,
    policy: &RetryPolicy,
    g: &GroupRecord,
    fence: Fence,
    session: &str,
) -> Result<Option<u64>, EngineError> {
    if !matches!(g.state, GroupState::Queued | GroupState::Uploading) {
        return Ok(None);
    }
    let mut library_id = g.library_id;
    let pending: Vec<_> = g.files.iter().filter(|f| f.state != FileState::Completed).collect();
    // The last file's answer carries the library id: ask it last (again, if
    // every file is recorded as completed but the id was not).
    let ask: Vec<_> =
        if pending.is_empty() && library_id.is_none() { g.files.last().into_iter().collect() } else { pending };
    let mut answers = Vec::with_capacity(ask.len());
    for f in ask {
        let Some(upload_id) = f.upload_id.as_deref() else { return Ok(None) };
        let Ok(parts) = complete_list(&f.parts, f.strategy) else { return Ok(None) };
        let done =
            with_retries(policy, Retry::new("complete file upload", &CancellationToken::new(), Repeat::Always), |_| {
                client.complete_file(session, upload_id, &parts)
            })
            .await;
        match done {
            Ok(done) if done.is_completed() => {
                library_id = done.library_id.or(library_id);
                answers.push((f.id, done.library_id));
            }
            Ok(_) | Err(_) => return Ok(None),
        }
    }
    let Some(library_id) = library_id else { return Ok(None) };
    let (id, queued) = (g.id, g.state == GroupState::Queued);
    journal
        .call(move |j| {
            if queued {
                j.resume(id, fence)?;
            }
            for (file_id, lib) in answers {
                j.file_completed(file_id, lib, fence)?;
            }
            j.complete_group(id, library_id, fence)
        })
        .await?;
    Ok(Some(library_id))
}
