//! One file's parts: part URLs asked in batches (and refreshed before or
//! when they expire), a part permit taken before a part's bytes are read,
//! each PUT streamed and retried, and its ETag recorded the moment it is
//! stored.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::finish::check_source;
use super::stream::{PutOptions, TransferError, put_file_range};
use super::worker::{Ctx, Stop, complete};
use crate::api::{ApiError, ErrorClass, PartUrl, PartUrlsRequest, TransportKind, redact_url};
use crate::journal::{FileRecord, PartRecord};
use crate::model::{RetryReason, Strategy};
use crate::retry::{Repeat, Retry, RetryError, with_retries};

/// A part URL this close to its expiry is refreshed before use.
const URL_MARGIN: Duration = Duration::from_secs(30);

/// Fresh URLs for one part in a row before the group fails.
const MAX_REFRESHES: u32 = 5;

pub(super) async fn upload_file(
    ctx: Ctx,
    inner: CancellationToken,
    session: Arc<str>,
    f: FileRecord,
) -> Result<(), Stop> {
    let upload_id: Arc<str> =
        f.upload_id.clone().ok_or_else(|| Stop::Failed(format!("{}: no upload id", f.rel_path)))?.into();
    let pending: Vec<PartRecord> = f.parts.iter().filter(|p| !p.done).cloned().collect();
    let file = Arc::new(f);
    let mut puts: JoinSet<Result<(), Stop>> = JoinSet::new();
    let sent = send_parts(&ctx, &inner, &session, &upload_id, &file, &pending, &mut puts).await;
    if let Err(Stop::Shutdown) = sent {
        // Parts in flight may finish and be recorded (the shutdown grace);
        // when the grace runs out the engine's abort token ends them.
        drain(&mut puts).await.ok();
        return Err(Stop::Shutdown);
    }
    sent?;
    drain(&mut puts).await?;
    ctx.check_stop(&inner)?;
    complete(&ctx, &inner, &session, &file).await?;
    Ok(())
}

/// Ask URLs batch by batch and start one PUT task per pending part, each
/// holding a permit taken before the part's bytes are read.
async fn send_parts(
    ctx: &Ctx,
    inner: &CancellationToken,
    session: &Arc<str>,
    upload_id: &Arc<str>,
    file: &Arc<FileRecord>,
    pending: &[PartRecord],
    puts: &mut JoinSet<Result<(), Stop>>,
) -> Result<(), Stop> {
    let sh = &ctx.sh;
    let single = file.strategy == Some(Strategy::SinglePut);
    let batch = (sh.cfg().upload.part_url_batch.max(1) as usize).min(10_000);
    for chunk in pending.chunks(batch) {
        ctx.check_stop(inner)?;
        let req = if single {
            PartUrlsRequest::SinglePut
        } else {
            match (chunk.first(), chunk.last()) {
                (Some(a), Some(b)) if (b.part_number - a.part_number) as usize + 1 == chunk.len() => {
                    PartUrlsRequest::Range { start: a.part_number, count: chunk.len() as u32 }
                }
                _ => PartUrlsRequest::Numbers(chunk.iter().map(|p| p.part_number).collect()),
            }
        };
        let urls =
            ctx.api(inner, "get part URLs", Repeat::Always, |_| sh.client.part_urls(session, upload_id, &req)).await?;
        let mut by_number: HashMap<u32, PartUrl> = urls.parts.into_iter().map(|p| (p.part_number, p)).collect();
        for part in chunk {
            let url = by_number
                .remove(&part.part_number)
                .ok_or_else(|| Stop::Failed(format!("{}: no URL for part {}", file.rel_path, part.part_number)))?;
            if url.byte_start != part.byte_start || url.size_bytes != part.size {
                return Err(Stop::Failed(format!(
                    "{}: the server's part {} covers bytes {}+{} but the journal says {}+{}",
                    file.rel_path, part.part_number, url.byte_start, url.size_bytes, part.byte_start, part.size
                )));
            }
            // The permit comes first: no part's bytes are touched without one.
            // The window is looked at before and after waiting for it: a
            // permit freed just after the window closed must not start a part.
            let permit = loop {
                ctx.wait_gate(inner).await?;
                let permit = tokio::select! {
                    p = sh.parts.clone().acquire_owned() => p.expect("the part semaphore is never closed"),
                    _ = inner.cancelled() => return Err(Stop::Canceled),
                    _ = ctx.stop.cancelled() => return Err(Stop::Shutdown),
                };
                if sh.gate_open() {
                    break permit;
                }
            };
            while let Some(done) = puts.try_join_next() {
                flatten(done)?;
            }
            ctx.check_stop(inner)?;
            check_source(file).map_err(Stop::SourceChanged)?;
            puts.spawn(put_part(
                ctx.clone(),
                inner.clone(),
                session.clone(),
                upload_id.clone(),
                file.clone(),
                part.clone(),
                url,
                permit,
            ));
        }
    }
    Ok(())
}

/// Wait for every PUT task; the first real error wins (dropping the set
/// aborts the rest), a shutdown lets the others finish.
async fn drain(puts: &mut JoinSet<Result<(), Stop>>) -> Result<(), Stop> {
    let mut shutdown = false;
    while let Some(done) = puts.join_next().await {
        match flatten(done) {
            Ok(()) => {}
            Err(Stop::Shutdown) => shutdown = true,
            Err(e) => return Err(e),
        }
    }
    if shutdown { Err(Stop::Shutdown) } else { Ok(()) }
}

fn flatten(r: Result<Result<(), Stop>, tokio::task::JoinError>) -> Result<(), Stop> {
    r.unwrap_or_else(|e| Err(Stop::Failed(format!("part task ended abnormally: {e}"))))
}

/// The `reason` label of a part PUT that is retried (see [`super::Observer::part_retried`]).
pub(crate) fn retry_reason(e: &TransferError) -> RetryReason {
    match e {
        TransferError::Api(ApiError::Status { status, .. }) => match status {
            429 => RetryReason::RateLimited,
            408 => RetryReason::Timeout,
            500..=599 => RetryReason::ServerError,
            403 => RetryReason::UrlExpired,
            _ => RetryReason::HttpOther,
        },
        TransferError::Api(ApiError::Transport { kind, .. }) => match kind {
            TransportKind::Timeout => RetryReason::Timeout,
            TransportKind::Connect => RetryReason::Connect,
            TransportKind::Interrupted => RetryReason::Reset,
        },
        TransferError::Api(ApiError::Stalled { .. }) => RetryReason::Stall,
        TransferError::EtagMismatch { .. } => RetryReason::EtagMismatch,
        TransferError::Incomplete { .. } => RetryReason::Incomplete,
        _ => RetryReason::Other,
    }
}

fn url_expiring(url: &PartUrl) -> bool {
    let Some(at) = url.expires_at.as_deref().and_then(|s| s.parse::<jiff::Timestamp>().ok()) else { return false };
    let margin = jiff::SignedDuration::try_from(URL_MARGIN).unwrap_or(jiff::SignedDuration::ZERO);
    at.checked_sub(margin).map(|t| t <= jiff::Timestamp::now()).unwrap_or(true)
}

#[allow(clippy::too_many_arguments)]
async fn put_part(
    ctx: Ctx,
    inner: CancellationToken,
    session: Arc<str>,
    upload_id: Arc<str>,
    file: Arc<FileRecord>,
    part: PartRecord,
    mut url: PartUrl,
    permit: OwnedSemaphorePermit,
) -> Result<(), Stop> {
    let _permit = permit;
    let sh = &ctx.sh;
    let n = part.part_number;
    let opts = PutOptions {
        verify_md5: sh.cfg().upload.verify_etag,
        progress: Some(sh.sent.clone()),
        throttle: sh.throttle.clone(),
        expect: Some(super::stream::FileIdentity {
            size: file.size,
            mtime_ns: file.mtime_ns,
            dev: file.dev,
            ino: file.ino,
        }),
        ..Default::default()
    };
    let what = format!("upload part {n} of {}", file.rel_path);
    let mut refreshes = 0;
    loop {
        if url_expiring(&url) || refreshes > 0 {
            let single = file.strategy == Some(Strategy::SinglePut);
            let req = if single { PartUrlsRequest::SinglePut } else { PartUrlsRequest::Numbers(vec![n]) };
            let fresh = ctx
                .api(&inner, "refresh part URL", Repeat::Always, |_| sh.client.part_urls(&session, &upload_id, &req))
                .await?;
            url =
                fresh.parts.into_iter().find(|p| p.part_number == n).ok_or_else(|| {
                    Stop::Failed(format!("{}: the server sent no fresh URL for part {n}", file.rel_path))
                })?;
            tracing::debug!(group = ctx.id, part = n, url = %redact_url(&url.url), "part URL refreshed");
        }
        let mut on_retry = |e: &TransferError| {
            if let Some(o) = &sh.observer {
                o.part_retried(retry_reason(e));
            }
        };
        let policy = sh.policy();
        // Every attempt is sent only under a confirmed claim: a worker that
        // wakes after its lease ran out re-checks it first (below).
        ctx.confirm().await?;
        let fresh = || ctx.held.fresh();
        let retry = Retry::new(&what, &ctx.stop, Repeat::Always).on_retry(&mut on_retry).fresh(&fresh);
        let put = with_retries(&policy, retry, |_| {
            put_file_range(&sh.client, &url.url, &file.source, part.byte_start, part.size, &opts)
        });
        let r = tokio::select! {
            r = put => r,
            _ = inner.cancelled() => return Err(Stop::Canceled),
        };
        match r {
            Ok(etag) => {
                let (file_id, stored, fence) = (file.id, etag.clone(), ctx.fence());
                sh.journal.call(move |j| j.part_done(file_id, n, &stored, fence)).await?;
                if let Some(o) = &sh.observer {
                    o.part_stored(part.size);
                }
                return Ok(());
            }
            Err(RetryError::Canceled) => return Err(Stop::Shutdown),
            // The claim went unconfirmed past the lease: re-checked at the top.
            Err(RetryError::Unconfirmed) => continue,
            Err(e @ RetryError::Exhausted { .. }) => return Err(Stop::Failed(format!("{what}: {e}"))),
            Err(RetryError::Stopped(e)) => match e.class() {
                ErrorClass::RefreshUrls if refreshes < MAX_REFRESHES => {
                    refreshes += 1;
                    if let Some(o) = &sh.observer {
                        o.part_retried(RetryReason::UrlExpired);
                    }
                    tracing::info!(group = ctx.id, part = n, file = %file.rel_path, "part URL expired; asking a fresh one");
                    continue;
                }
                // Storage no longer knows the upload: expired (API 404), canceled on
                // the server (API 409), or a storage hiccup (fresh URL). Asking the
                // API for a fresh URL tells which.
                ErrorClass::Gone if refreshes < MAX_REFRESHES => {
                    refreshes += 1;
                    tracing::info!(group = ctx.id, part = n, file = %file.rel_path, "storage does not know the upload; asking the API");
                    continue;
                }
                ErrorClass::Gone => return Err(Stop::Gone(format!("{what}: {e}"))),
                _ if e.is_source_changed() => {
                    return Err(Stop::SourceChanged(check_source(&file).err().unwrap_or_else(|| e.to_string())));
                }
                _ => {
                    return Err(match &e {
                        TransferError::Api(a) if a.is_auth() => Stop::Auth(a.to_string()),
                        _ => Stop::Failed(format!("{what}: {e}")),
                    });
                }
            },
        }
    }
}
