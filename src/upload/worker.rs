//! One group's upload, from `queued` (or a resumed `uploading`) to its end.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::control::CancelEnd;
use super::engine::Shared;
use super::finish::{self, check_source, check_sources};
use super::lease::{Held, clock_ms};
use super::{EngineError, GroupOutcome};
use crate::api::{ApiError, CompletedPart, ErrorClass, StartFile, StartGroup, Strategy};
use crate::journal::{
    Claim, Fence, FileRecord, FileState, GroupId, GroupRecord, GroupState, JournalError, PartRecord, SessionFile,
};
use crate::retry::{Repeat, Retry, RetryError, with_retries};

/// The API forgets a group this long after it was created.
pub(crate) const SERVER_GROUP_LIFETIME: Duration = Duration::from_secs(5 * 24 * 3600);

/// At most this many server groups are created for one export (the same key,
/// or linked by `retry_of`) within [`SESSION_WINDOW`]; a group whose session
/// ends without progress past that fails instead of being re-queued.
pub(crate) const MAX_SESSIONS_PER_WINDOW: u32 = 3;

/// See [`MAX_SESSIONS_PER_WINDOW`].
pub(crate) const SESSION_WINDOW: Duration = Duration::from_secs(3600);

/// Why a group's work stopped before the library id was known.
#[derive(Debug)]
pub(crate) enum Stop {
    /// Shutdown: leave everything as recorded.
    Shutdown,
    /// The group's token fired: a cancel request, or the shutdown grace ran out.
    Canceled,
    /// A source file changed or vanished.
    SourceChanged(String),
    /// The server no longer knows the group.
    Gone(String),
    /// The server answers 409 for the group's own files: it was canceled
    /// there (e.g. from the dashboard), which can never be resumed.
    CanceledOnServer(String),
    /// 401/403 from the API.
    Auth(String),
    /// Fatal, or retries exhausted.
    Failed(String),
    /// A newer claim superseded this worker's (it was silent past its
    /// lease and another node took the group over): the journal refused
    /// its write ([`JournalError::Fenced`]), or a re-check found the claim gone.
    Fenced(JournalError),
    Journal(JournalError),
}

impl From<JournalError> for Stop {
    fn from(e: JournalError) -> Stop {
        match e {
            JournalError::Fenced { .. } => Stop::Fenced(e),
            other => Stop::Journal(other),
        }
    }
}

/// What a worker needs; cheap to clone into file and part tasks.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub sh: Arc<Shared>,
    pub id: GroupId,
    /// The claim this worker works under, and when it was last confirmed.
    pub held: Held,
    /// Shutdown phase one: start nothing new.
    pub stop: CancellationToken,
    /// Fires on a cancel request or when the shutdown grace is over: drop everything.
    pub tok: CancellationToken,
    /// Set before `tok` fires for a cancel request: the reason to record.
    pub reason: Arc<Mutex<Option<String>>>,
}

impl Ctx {
    /// The fence of this worker's journal writes.
    pub(super) fn fence(&self) -> Fence {
        self.held.fence()
    }

    /// Make sure the claim is still this worker's before anything is sent:
    /// at once while its lease is confirmed ([`Held::fresh`]); otherwise
    /// (this process was stopped, or renewals went unanswered, past the
    /// lease) by renewing it in the journal first. A claim another node
    /// took over stops the worker ([`Stop::Fenced`]).
    pub(super) async fn confirm(&self) -> Result<(), Stop> {
        if self.held.fresh() {
            return Ok(());
        }
        tracing::info!(
            group = self.id,
            "this worker's claim went unconfirmed past its lease (the process was stopped, or the journal slow); \
             re-checking it before anything more is sent"
        );
        let claim = self.held.claim();
        let sent = clock_ms();
        let lost = self.sh.journal.call(move |j| j.renew_claims(&[claim])).await?;
        if lost.contains(&claim.id) {
            return Err(Stop::Fenced(JournalError::Fenced { id: claim.id, token: claim.token, holder: None }));
        }
        self.held.confirm(sent);
        Ok(())
    }

    pub(super) fn check_stop(&self, inner: &CancellationToken) -> Result<(), Stop> {
        if inner.is_cancelled() {
            Err(Stop::Canceled)
        } else if self.stop.is_cancelled() {
            Err(Stop::Shutdown)
        } else {
            Ok(())
        }
    }

    /// Wait while the gate is closed (outside every upload window) or an
    /// operator holds the queue. Called before a group creates its server
    /// group and before each part, so either stops the queue after the
    /// parts already in flight.
    pub(super) async fn wait_gate(&self, inner: &CancellationToken) -> Result<(), Stop> {
        // Subscribed before the first look, so a resume in between is not missed.
        let mut hold = self.sh.hold.subscribe();
        if self.sh.gate_open() {
            return Ok(());
        }
        tracing::debug!(group = self.id, "waiting for an upload window or the end of an operator pause");
        let mut gate = self.sh.gate.clone();
        loop {
            tokio::select! {
                // A window gate whose sender is gone keeps its last word only
                // for the scheduler: a started group carries on.
                _ = async {
                    match gate.as_mut() {
                        Some(g) => { let _ = g.changed().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {
                    if gate.as_ref().is_some_and(|g| g.has_changed().is_err()) {
                        gate = None;
                    }
                }
                _ = hold.changed() => {}
                _ = inner.cancelled() => return Err(Stop::Canceled),
                _ = self.stop.cancelled() => return Err(Stop::Shutdown),
            }
            let window_open = gate.as_ref().is_none_or(|g| *g.borrow());
            if window_open && !*self.sh.hold.borrow() {
                return Ok(());
            }
        }
    }

    /// One JSON API call with per-request retries, raced against `inner`;
    /// `repeat` says whether the request is safe to send twice.
    pub(super) async fn api<T, F, Fut>(
        &self,
        inner: &CancellationToken,
        what: &str,
        repeat: Repeat,
        f: F,
    ) -> Result<T, Stop>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        self.check_stop(inner)?;
        let mut f = f;
        let fresh = || self.held.fresh();
        let r = loop {
            self.confirm().await?;
            let policy = self.sh.policy();
            let r = tokio::select! {
                r = with_retries(&policy, Retry::new(what, &self.stop, repeat).fresh(&fresh), &mut f) => r,
                _ = inner.cancelled() => return Err(Stop::Canceled),
            };
            if !matches!(r, Err(RetryError::Unconfirmed)) {
                break r;
            }
        };
        match r {
            Ok(v) => {
                self.sh.api_ok.store(true, std::sync::atomic::Ordering::Relaxed);
                Ok(v)
            }
            Err(RetryError::Canceled | RetryError::Unconfirmed) => Err(Stop::Shutdown),
            Err(e @ RetryError::Exhausted { .. }) => Err(Stop::Failed(format!("{what}: {e}"))),
            Err(RetryError::Stopped(e)) => Err(classify_api(what, &e)),
        }
    }
}

fn classify_api(what: &str, e: &ApiError) -> Stop {
    if e.is_auth() {
        return Stop::Auth(e.to_string());
    }
    if e.status() == Some(409) && matches!(e.op(), Some(crate::api::Op::PartUrls | crate::api::Op::CompleteFile)) {
        return Stop::CanceledOnServer(format!("{what}: {e}"));
    }
    match e.class() {
        ErrorClass::Gone => Stop::Gone(format!("{what}: {e}")),
        _ => Stop::Failed(format!("{what}: {e}")),
    }
}

/// Drive group `ctx.id` to its end and record the end in the journal. A
/// claim found superseded on the way stops the worker quietly (see
/// [`superseded`]); it is not an error of the engine.
pub(crate) async fn work(ctx: Ctx) -> Result<GroupOutcome, EngineError> {
    match drive(&ctx).await {
        Err(EngineError::Journal(e @ JournalError::Fenced { .. })) => Ok(superseded(&ctx, e).await),
        other => other,
    }
}

/// A newer claim took the group over while this worker was silent past its
/// lease: it stops without touching the group (the other node goes on).
async fn superseded(ctx: &Ctx, e: JournalError) -> GroupOutcome {
    let holder = match e {
        JournalError::Fenced { holder, .. } => holder,
        _ => None,
    };
    lost_claim(&ctx.sh, ctx.held.claim(), holder).await;
    GroupOutcome::Stopped
}

/// Say that this engine lost `claim` to a newer one (of node `holder`; when
/// not known, the group's holder as the journal has it now): a log line and
/// a history line naming both nodes.
pub(super) async fn lost_claim(sh: &Shared, claim: Claim, holder: Option<String>) {
    let id = claim.id;
    let holder = match holder {
        Some(h) => Some(h),
        None => sh.journal.call(move |j| j.summary(id)).await.ok().and_then(|s| s.node),
    };
    let me = match sh.journal.blocking().node() {
        Some(n) => format!("node {n}"),
        None => "this agent".to_string(),
    };
    let holder = match holder {
        Some(h) => format!("node {h}"),
        None => "a newer claim".to_string(),
    };
    let token = claim.token;
    tracing::warn!(
        group = id, claim = token, holder = %holder,
        "fenced: {me} lost its claim on the group while it was silent past its lease; {holder} holds it now. \
         Nothing more is recorded or sent for the group from here"
    );
    let note = format!(
        "{me} lost its claim (token {token}) while it was silent past its lease; {holder} holds the group: \
         {me}'s worker stopped and its late steps were not recorded"
    );
    if let Err(e) = sh.journal.call(move |j| j.note(id, &note)).await {
        tracing::warn!(group = id, error = %e, "cannot record the lost claim in the group's history");
    }
}

async fn drive(ctx: &Ctx) -> Result<GroupOutcome, EngineError> {
    let sh = ctx.sh.clone();
    let id = ctx.id;
    let fence = ctx.fence();
    match upload(ctx).await {
        Ok(library_id) => {
            tracing::info!(group = id, library_id, "group completed");
            finish_off_runtime(&sh, id).await;
            Ok(GroupOutcome::Completed { library_id })
        }
        Err(Stop::Shutdown) => Ok(GroupOutcome::Stopped),
        Err(Stop::Canceled) => {
            let reason = ctx.reason.lock().unwrap_or_else(|p| p.into_inner()).clone();
            match reason {
                Some(reason) => {
                    let end = super::cancel_now(Some(&sh.client), &sh.journal, &sh.policy(), id, fence, &reason, true)
                        .await?;
                    Ok(ended_by_cancel(&sh, id, end, reason).await)
                }
                None => Ok(GroupOutcome::Stopped),
            }
        }
        Err(Stop::SourceChanged(why)) => {
            // Files that "vanished" with their whole watch folder were not
            // changed: the share is unmounted (or the folder moved away). The
            // group stays as recorded and waits for the folder to come back.
            let g = sh.journal.call(move |j| j.group(id)).await?;
            if let Some(folder) = super::finish::watch_folder_missing(&g) {
                tracing::warn!(
                    group = id, folder = %folder.display(), reason = %why,
                    "the watch folder is missing; the group waits for it (nothing is canceled)"
                );
                return Ok(GroupOutcome::Stopped);
            }
            tracing::warn!(group = id, reason = %why, "source changed; canceling the server group");
            let end = super::cancel_now(Some(&sh.client), &sh.journal, &sh.policy(), id, fence, &why, false).await?;
            Ok(ended_by_cancel(&sh, id, end, why).await)
        }
        Err(Stop::Gone(why)) => {
            // A server group that ends without progress (storage answering 404
            // to every PUT while the API is healthy) would otherwise be
            // re-queued as a new one at once, forever. Past the limit the
            // group fails with the server's answer; its hourly retry resumes
            // the same (row and) session, so no new server group is made.
            let recent = sh
                .journal
                .call(move |j| j.recent_sessions(id, crate::journal::now_ms(), SESSION_WINDOW.as_millis() as i64))
                .await?;
            if recent >= MAX_SESSIONS_PER_WINDOW {
                let msg = format!(
                    "{why} ({recent} server groups created for this export within the last hour; not creating another)"
                );
                return fail(&sh, id, fence, msg).await;
            }
            let g = sh.journal.call(move |j| j.group(id)).await?;
            let unchanged = check_sources(&g);
            let (reason, requeue) = (why.clone(), unchanged.is_ok());
            let requeued = sh.journal.call(move |j| j.expire_group(id, &reason, requeue, fence)).await?;
            match (requeued, unchanged) {
                (Some(new), _) => {
                    tracing::warn!(group = id, new_group = new, reason = %why, "group expired; re-queued as a new group")
                }
                (None, Err(changed)) => {
                    tracing::warn!(group = id, reason = %why, %changed, "group expired; its files changed, not re-queued");
                    sh.journal
                        .call(move |j| {
                            finish::remove_staged(j, &g);
                            j.set_finished(id)
                        })
                        .await?;
                }
                (None, Ok(())) => tracing::warn!(group = id, reason = %why, "group expired"),
            }
            Ok(GroupOutcome::Expired { requeued })
        }
        Err(Stop::CanceledOnServer(why)) => {
            // Recorded as canceled by the user: a rescan does not upload it again; `retry` does.
            let reason = format!("canceled on the server: {why}");
            super::cancel_now(None, &sh.journal, &sh.policy(), id, fence, &reason, true).await?;
            tracing::warn!(group = id, %reason, "group canceled on the server");
            Ok(GroupOutcome::Canceled(reason))
        }
        Err(Stop::Auth(msg)) => Ok(GroupOutcome::AuthRefused(msg)),
        Err(Stop::Failed(msg)) => fail(&sh, id, fence, msg).await,
        Err(Stop::Fenced(e) | Stop::Journal(e)) => Err(e.into()),
    }
}

/// The outcome of a cancel this worker carried out: canceled, or completed
/// if the server had completed the group first (then its after-upload step
/// runs now, as after any completed upload).
async fn ended_by_cancel(sh: &Arc<Shared>, id: GroupId, end: CancelEnd, reason: String) -> GroupOutcome {
    match end {
        CancelEnd::Canceled => {
            tracing::info!(group = id, %reason, "group canceled");
            GroupOutcome::Canceled(reason)
        }
        CancelEnd::CompletedOnServer { library_id } => {
            finish_off_runtime(sh, id).await;
            GroupOutcome::Completed { library_id }
        }
    }
}

/// The after-upload step of completed group `id`: moving an export may
/// copy gigabytes, so it runs off the async workers.
async fn finish_off_runtime(sh: &Arc<Shared>, id: GroupId) {
    let sh = sh.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || sh.finish_completed(id)).await {
        tracing::error!(group = id, error = %e, "after-upload step ended abnormally");
    }
}

/// Record `failed` with `msg`; the automatic retry is due after `retry_failed_after`.
async fn fail(sh: &Shared, id: GroupId, fence: Fence, msg: String) -> Result<GroupOutcome, EngineError> {
    let after = sh.cfg().upload.retry_failed_after;
    let retry_at = crate::journal::now_ms() + after.0.as_millis() as i64;
    let error = msg.clone();
    match sh.journal.call(move |j| j.fail_group(id, &error, Some(retry_at), fence)).await {
        Ok(()) => {}
        // Canceled meanwhile by the CLI (no agent seen): nothing to fail.
        Err(JournalError::IllegalTransition { .. }) => return Ok(GroupOutcome::Stopped),
        Err(e) => return Err(e.into()),
    }
    tracing::error!(group = id, error = %msg, retry_in = %after, "group failed");
    Ok(GroupOutcome::Failed(msg))
}

fn start_request(g: &GroupRecord) -> Result<StartGroup, Stop> {
    let layout = g.layout.ok_or_else(|| Stop::Failed("the group has no layout recorded".into()))?;
    Ok(StartGroup {
        video_name: g.name.clone(),
        description: g.description.clone(),
        layout,
        perspective: g.perspective,
        folder_name: g.folder_name.clone(),
        files: g
            .files
            .iter()
            .map(|f| StartFile {
                file_name: f.file_name.clone(),
                file_role: f.role,
                size_bytes: f.size,
                language_tag: f.language.clone(),
            })
            .collect(),
    })
}

async fn upload(ctx: &Ctx) -> Result<u64, Stop> {
    let sh = &ctx.sh;
    let id = ctx.id;
    // Cancels the group's own tasks when one of them fails.
    let inner = ctx.tok.child_token();
    let _guard = inner.clone().drop_guard();
    let g = sh.journal.call(move |j| j.group(id)).await?;
    match (g.state, &g.session_id) {
        (GroupState::Queued, None) => {
            // The server's 5-day clock starts with the group: not while the window is closed.
            ctx.wait_gate(&inner).await?;
            check_sources(&g).map_err(Stop::SourceChanged)?;
            let req = start_request(&g)?;
            // Not idempotent (Repeat::IfNotSent): after an ambiguous failure
            // (timeout, connection broken once sent) the server may have
            // created a group that nobody will upload to; it expires unused
            // after 5 days. The request is not repeated at once: the group
            // fails for now with the error and its automatic retry starts it again.
            let start = |_: u32| sh.client.start_group(&req);
            let created =
                ctx.api(&inner, "start upload group", Repeat::IfNotSent, start).await.map_err(|s| match s {
                    // No session yet, so nothing can have expired: a 404 here is a wrong endpoint.
                    Stop::Gone(m) => Stop::Failed(format!("{m} (is [api] endpoint right?)")),
                    other => other,
                })?;
            let mut files = Vec::with_capacity(g.files.len());
            for f in &g.files {
                // A plan that cannot be followed: the server group it created is
                // canceled (nothing will upload to it) and the group fails naming the file.
                let session = created.session_id.as_str();
                let client = &sh.client;
                let refuse = move |why: String| async move {
                    let _ = client.cancel_group(session).await;
                    Stop::Failed(format!("{why}; server group {session} canceled"))
                };
                let Some(c) = created.file_for(&f.file_name, f.role) else {
                    return Err(refuse(format!("the server's answer does not list {} ({})", f.file_name, f.role)).await);
                };
                if c.total_bytes != f.size {
                    return Err(refuse(format!(
                        "{}: the server plans totalBytes {} but the file has {} bytes",
                        f.rel_path, c.total_bytes, f.size
                    ))
                    .await);
                }
                files.push(SessionFile {
                    file_id: f.id,
                    upload_id: c.upload_id.clone(),
                    part_size: c.part_size_bytes,
                    total_parts: c.total_parts,
                    strategy: c.upload_strategy,
                });
            }
            let (session, expires, planned) = (created.session_id.clone(), created.expires_at.clone(), files.clone());
            let fence = ctx.fence();
            let recorded =
                sh.journal.call(move |j| j.record_session(id, fence, &session, expires.as_deref(), &planned)).await;
            if let Err(e) = recorded {
                // Do not leave a live server group behind that nothing will upload.
                let _ = sh.client.cancel_group(&created.session_id).await;
                return Err(match e {
                    JournalError::Invalid(m) => Stop::Failed(format!("the server's answer does not fit: {m}")),
                    other => Stop::Journal(other),
                });
            }
            tracing::info!(group = id, session = %created.session_id, files = files.len(), "server group created");
        }
        (GroupState::Queued, Some(_)) => {
            let fence = ctx.fence();
            sh.journal.call(move |j| j.resume(id, fence)).await?
        }
        (GroupState::Uploading, _) => {}
        // Ended meanwhile (canceled from the CLI with no agent seen): nothing to do.
        _ => return Err(Stop::Shutdown),
    }

    let g = sh.journal.call(move |j| j.group(id)).await?;
    let session = g.session_id.clone().ok_or_else(|| Stop::Failed("uploading without a session id".into()))?;
    if let Some(at) = g.session_at_ms {
        let age = crate::journal::now_ms().saturating_sub(at);
        if age >= SERVER_GROUP_LIFETIME.as_millis() as i64 {
            return Err(Stop::Gone(format!("server group {session} is older than 5 days")));
        }
    }
    let session: Arc<str> = session.into();
    let mut files = JoinSet::new();
    for f in g.files.iter().filter(|f| f.state != FileState::Completed).cloned() {
        files.spawn(super::parts::upload_file(ctx.clone(), inner.clone(), session.clone(), f));
    }
    let mut first: Option<Stop> = None;
    while let Some(r) = files.join_next().await {
        let r = r.unwrap_or_else(|e| Err(Stop::Failed(format!("file task ended abnormally: {e}"))));
        if let Err(stop) = r
            && first.as_ref().is_none_or(|f| matches!(f, Stop::Shutdown))
        {
            // A real error stops the group's other files; a shutdown lets
            // their parts in flight finish.
            if !matches!(stop, Stop::Shutdown) {
                inner.cancel();
            }
            first = Some(stop);
        }
    }
    if let Some(stop) = first {
        return Err(stop);
    }

    let g = sh.journal.call(move |j| j.group(id)).await?;
    let library_id = match g.library_id {
        Some(l) => l,
        None => {
            // Every file is completed but no answer carried the id (lost in a
            // crash): `complete` is idempotent, so ask the last file again.
            let last = g.files.last().ok_or_else(|| Stop::Failed("the group has no files".into()))?;
            let done = complete(ctx, &inner, &session, last).await?;
            done.ok_or_else(|| Stop::Failed("every file is completed but the server gave no library id".to_string()))?
        }
    };
    let fence = ctx.fence();
    sh.journal.call(move |j| j.complete_group(id, library_id, fence)).await?;
    Ok(library_id)
}

/// Send `complete` for a file whose parts are all done; records the answer.
/// The `parts` of a Complete File Upload body: every part with its ETag
/// (none for a single PUT). `Err(n)`: part `n` is not recorded done.
pub(super) fn complete_list(parts: &[PartRecord], strategy: Option<Strategy>) -> Result<Vec<CompletedPart>, u32> {
    let list = parts
        .iter()
        .map(|p| match (&p.etag, p.done) {
            (Some(etag), true) => Ok(CompletedPart { part_number: p.part_number, etag: etag.clone() }),
            _ => Err(p.part_number),
        })
        .collect::<Result<Vec<_>, u32>>()?;
    Ok(if strategy == Some(Strategy::SinglePut) { Vec::new() } else { list })
}

pub(super) async fn complete(
    ctx: &Ctx,
    inner: &CancellationToken,
    session: &str,
    f: &FileRecord,
) -> Result<Option<u64>, Stop> {
    let sh = &ctx.sh;
    let upload_id = f.upload_id.as_deref().ok_or_else(|| Stop::Failed(format!("{}: no upload id", f.rel_path)))?;
    check_source(f).map_err(Stop::SourceChanged)?;
    let file_id = f.id;
    let parts = sh.journal.call(move |j| j.parts(file_id)).await?;
    let list =
        complete_list(&parts, f.strategy).map_err(|n| Stop::Failed(format!("{}: part {n} is not done", f.rel_path)))?;
    let done = ctx
        .api(inner, "complete file upload", Repeat::Always, |_| sh.client.complete_file(session, upload_id, &list))
        .await?;
    if !done.is_completed() {
        // Not counted: the file stays `uploading` with its parts done and
        // the group fails with the server's status; its automatic retry
        // sends `complete` again (idempotent) without re-sending any part.
        return Err(Stop::Failed(format!(
            "{}: complete answered status {:?}, not \"completed\"",
            f.rel_path, done.status
        )));
    }
    let library_id = done.library_id;
    let fence = ctx.fence();
    sh.journal.call(move |j| j.file_completed(file_id, library_id, fence)).await?;
    tracing::debug!(group = ctx.id, file = %f.rel_path, library_id = ?done.library_id, "file completed");
    Ok(done.library_id)
}

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;
