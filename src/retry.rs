//! One retry policy for every outgoing request: the API calls and part PUTs
//! of the upload engine, and the webhook of `ops::hooks`.
//!
//! - **Full jitter, cap, budget.** The delay before retry `n` (0-based) is
//!   uniformly random in `[0, min(cap, base * 2^n)]`, so that clients that
//!   failed together do not come back together. A request is tried at most
//!   `max_attempts` times, and no retry starts whose delay would end past
//!   `budget` after the first attempt began.
//! - **`Retry-After`.** A server that says when to come back (in seconds or
//!   as an HTTP date, [`parse_retry_after`]) is not asked sooner: the delay is
//!   the longer of the jitter and its answer (the budget still bounds it).
//! - **Only what retrying can fix.** Failures classified
//!   [`ErrorClass::Retry`] are retried here; every other class is handed back
//!   at once ([`RetryError::Stopped`]) because the caller must act first:
//!   fetch fresh URLs (refresh), start over (gone) or tell the user (fatal).
//!   Whole-group retries (a `failed` group re-queued later) are the engine's
//!   business, not this module's.
//! - **Only what is safe to repeat.** Each call says whether its request may
//!   be sent twice ([`Repeat`]). A failure after which the request may have
//!   reached the server ([`Retryable::may_have_arrived`]: a timeout, a
//!   connection broken once the request was sent) is repeated only for
//!   [`Repeat::Always`]; with [`Repeat::IfNotSent`] it is handed back
//!   ([`RetryError::Stopped`]). A connect failure (nothing was sent) and an
//!   explicit retryable answer (408, 429, 5xx) are retried in both modes.
//! - **Cancellation.** It is never retried: the token is checked before every
//!   attempt and ends any wait between attempts at once. An attempt already
//!   under way is not interrupted by this module (a part PUT may be allowed
//!   to finish during the shutdown grace); callers that want that race it
//!   against the token.

use std::fmt;
use std::time::{Duration, SystemTime};

use rand::Rng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Dur, UploadConfig};

/// When and how often one request is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Ceiling of the first retry's delay; doubles with every retry.
    pub base: Duration,
    /// The ceiling never grows past this.
    pub cap: Duration,
    /// Attempts in all, the first one included (at least 1).
    pub max_attempts: u32,
    /// No retry is started whose delay would end past this much time after the first attempt began.
    pub budget: Duration,
}

impl RetryPolicy {
    pub fn from_config(c: &UploadConfig) -> Self {
        RetryPolicy {
            base: c.retry_base.0,
            cap: c.retry_cap.0,
            max_attempts: c.retry_attempts,
            budget: c.retry_budget.0,
        }
    }

    /// Upper bound of the delay before retry number `retry` (0 = the first
    /// retry): `min(cap, base * 2^retry)`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32 << retry.min(31);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before retry number `retry`: uniformly random in
    /// `[0, ceiling(retry)]` ("full jitter", so that many clients that failed
    /// together do not come back together), or the server's `Retry-After`
    /// when that is longer. `rng` is the random source (`&mut rand::rng()`;
    /// a seeded one in tests).
    pub fn delay<R: Rng + ?Sized>(&self, rng: &mut R, retry: u32, retry_after: Option<Duration>) -> Duration {
        let ceiling = u64::try_from(self.ceiling(retry).as_nanos()).unwrap_or(u64::MAX);
        let jittered = Duration::from_nanos(rng.random_range(0..=ceiling));
        match retry_after {
            Some(after) if after > jittered => after,
            _ => jittered,
        }
    }
}

/// `Retry-After` as delay-seconds or an HTTP date (a date in the past means "now").
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Whether a request may be sent again after a failure that leaves open
/// whether the server received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// Idempotent: sending it twice does no more than sending it once
    /// (part URLs, complete, cancel, part PUTs, the webhook whose receivers
    /// de-duplicate). Every retryable failure is retried.
    Always,
    /// Not idempotent (start a group): retried only when the failure shows
    /// that the request never reached the server (cannot connect) or the
    /// server explicitly asked for a retry (408, 429, 5xx).
    IfNotSent,
}

/// What the caller should do about a failure: the one question every
/// error of an outgoing request answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient: try the same request again after a backoff. `after` is the
    /// server's `Retry-After`, when it sent one.
    Retry { after: Option<Duration> },
    /// The presigned URL is no longer accepted (expired): ask the API for
    /// fresh URLs for the same part numbers, then retry.
    RefreshUrls,
    /// The session or file no longer exists on the server (expired, canceled):
    /// nothing sent to it can succeed; start a new group or stop.
    Gone,
    /// Retrying the same request cannot help: tell the user.
    Fatal,
}

/// An error that knows whether retrying can help, and whether the failed
/// request may have reached the server anyway.
pub trait Retryable: fmt::Display {
    fn class(&self) -> ErrorClass;

    /// The request may have arrived and been acted on although no answer
    /// came back (a timeout, a connection broken after sending). Such a
    /// failure is repeated only with [`Repeat::Always`].
    fn may_have_arrived(&self) -> bool;
}

/// How [`with_retries`] ended without a result.
#[derive(Debug, thiserror::Error)]
pub enum RetryError<E: std::error::Error + 'static> {
    /// The token was canceled (before an attempt or during a backoff).
    #[error("canceled")]
    Canceled,
    /// Still failing with a retryable error when the budget ran out.
    #[error("{last} (gave up after {attempts} attempt(s) in {})", Dur(*.elapsed))]
    Exhausted { last: E, attempts: u32, elapsed: Duration },
    /// A failure that retrying cannot fix (refresh URLs, gone, fatal), or one
    /// after which a request that is not safe to repeat
    /// ([`Repeat::IfNotSent`]) may have reached the server: the caller decides.
    #[error(transparent)]
    Stopped(E),
    /// [`Retry::fresh`] said no before an attempt: nothing more was sent.
    #[error("not sent: the claim this request is made under is not confirmed")]
    Unconfirmed,
}

impl<E: std::error::Error + 'static> RetryError<E> {
    /// The last error, unless it ended by cancellation.
    pub fn into_inner(self) -> Option<E> {
        match self {
            RetryError::Canceled | RetryError::Unconfirmed => None,
            RetryError::Exhausted { last, .. } | RetryError::Stopped(last) => Some(last),
        }
    }
}

/// What one [`with_retries`] call is about: built with [`Retry::new`], then
/// optionally [`Retry::on_retry`].
pub struct Retry<'a, E> {
    /// Named in every "retrying" log line.
    pub what: &'a str,
    /// Checked before every attempt; ends any wait between attempts at once.
    pub cancel: &'a CancellationToken,
    /// Whether the request may be sent again after an ambiguous failure.
    pub repeat: Repeat,
    /// Called with each failure that is about to be retried (not with the
    /// last one, nor with one handed back): what metrics count as
    /// "retried, and why".
    pub on_retry: Option<&'a mut (dyn FnMut(&E) + Send)>,
    /// Asked before every attempt whether the request may be sent now (the
    /// lease of the claim it is made under still confirmed); `false` ends the
    /// call with [`RetryError::Unconfirmed`] before anything is sent.
    pub fresh: Option<&'a (dyn Fn() -> bool + Sync)>,
}

impl<'a, E> Retry<'a, E> {
    pub fn new(what: &'a str, cancel: &'a CancellationToken, repeat: Repeat) -> Self {
        Retry { what, cancel, repeat, on_retry: None, fresh: None }
    }

    /// Send each attempt only while `fresh` says yes (see [`Retry::fresh`]).
    pub fn fresh(mut self, f: &'a (dyn Fn() -> bool + Sync)) -> Self {
        self.fresh = Some(f);
        self
    }

    /// Observe each failure that is about to be retried.
    pub fn on_retry(mut self, f: &'a mut (dyn FnMut(&E) + Send)) -> Self {
        self.on_retry = Some(f);
        self
    }
}

/// Run `op` (given the 1-based attempt number) until it succeeds, fails with
/// a class other than retry, fails in a way `retry.repeat` does not allow to
/// repeat, the budget is spent, or `retry.cancel` fires. Each retry logs one
/// warning with `retry.what` and the reason.
pub async fn with_retries<T, E, F, Fut>(
    policy: &RetryPolicy,
    retry: Retry<'_, E>,
    mut op: F,
) -> Result<T, RetryError<E>>
where
    E: Retryable + std::error::Error + 'static,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let Retry { what, cancel, repeat, mut on_retry, fresh } = retry;
    let started = Instant::now();
    let max_attempts = policy.max_attempts.max(1);
    let mut attempt = 0u32;
    loop {
        if cancel.is_cancelled() {
            return Err(RetryError::Canceled);
        }
        if fresh.is_some_and(|f| !f()) {
            return Err(RetryError::Unconfirmed);
        }
        attempt += 1;
        let err = match op(attempt).await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let ErrorClass::Retry { after } = err.class() else {
            return Err(RetryError::Stopped(err));
        };
        if repeat == Repeat::IfNotSent && err.may_have_arrived() {
            tracing::warn!(what, attempt, error = %err, "not repeated: the request may have reached the server");
            return Err(RetryError::Stopped(err));
        }
        let elapsed = started.elapsed();
        let delay = policy.delay(&mut rand::rng(), attempt - 1, after);
        if attempt >= max_attempts || elapsed.saturating_add(delay) > policy.budget {
            return Err(RetryError::Exhausted { last: err, attempts: attempt, elapsed });
        }
        if let Some(f) = on_retry.as_mut() {
            f(&err);
        }
        tracing::warn!(
            what,
            attempt,
            delay = %Dur(Duration::from_millis(delay.as_millis() as u64)),
            error = %err,
            "retrying"
        );
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(RetryError::Canceled),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
#[path = "retry_tests.rs"]
mod tests;
