//! Per-request retries: full-jitter exponential backoff, the server's
//! `Retry-After` honoured, and a budget in attempts *and* in time.
//!
//! Only failures classified [`ErrorClass::Retry`] are retried here. Every
//! other class is handed back at once ([`RetryError::Stopped`]) because the
//! caller must act first: fetch fresh URLs (refresh), start over (gone) or
//! tell the user (fatal). Whole-group retries (a `failed` group re-queued
//! later) are the engine's business, not this module's.
//!
//! Cancellation is never retried: the token is checked before every attempt
//! and wakes any backoff sleep at once. An attempt already under way is not
//! interrupted by this helper (a part PUT may be allowed to finish during
//! the shutdown grace); callers that want that race it against the token.

use std::fmt;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiError, ErrorClass};
use crate::config::UploadConfig;
use crate::upload::stream::TransferError;

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
    /// when that is longer.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        self.delay_with(&mut rand::rng(), retry, retry_after)
    }

    /// [`RetryPolicy::delay`] with a given random source (for tests).
    pub fn delay_with<R: Rng + ?Sized>(&self, rng: &mut R, retry: u32, retry_after: Option<Duration>) -> Duration {
        let ceiling = u64::try_from(self.ceiling(retry).as_nanos()).unwrap_or(u64::MAX);
        let jittered = Duration::from_nanos(rng.random_range(0..=ceiling));
        match retry_after {
            Some(after) if after > jittered => after,
            _ => jittered,
        }
    }
}

/// An error that knows whether retrying can help.
pub trait Retryable: fmt::Display {
    fn class(&self) -> ErrorClass;
}

impl Retryable for ApiError {
    fn class(&self) -> ErrorClass {
        ApiError::class(self)
    }
}

impl Retryable for TransferError {
    fn class(&self) -> ErrorClass {
        TransferError::class(self)
    }
}

/// How [`with_retries`] ended without a result.
#[derive(Debug, thiserror::Error)]
pub enum RetryError<E: std::error::Error + 'static> {
    /// The token was canceled (before an attempt or during a backoff).
    #[error("canceled")]
    Canceled,
    /// Still failing with a retryable error when the budget ran out.
    #[error("{last} (gave up after {attempts} attempt(s) in {})", humantime::format_duration(*.elapsed))]
    Exhausted { last: E, attempts: u32, elapsed: Duration },
    /// A failure that retrying cannot fix (refresh URLs, gone, fatal): the caller decides.
    #[error(transparent)]
    Stopped(E),
}

impl<E: std::error::Error + 'static> RetryError<E> {
    /// The last error, unless it ended by cancellation.
    pub fn into_inner(self) -> Option<E> {
        match self {
            RetryError::Canceled => None,
            RetryError::Exhausted { last, .. } | RetryError::Stopped(last) => Some(last),
        }
    }
}

/// Run `op` (given the 1-based attempt number) until it succeeds, fails with
/// a class other than retry, the budget is spent, or `cancel` fires. Each
/// retry logs one warning with `what` and the reason.
pub async fn with_retries<T, E, F, Fut>(
    policy: &RetryPolicy,
    cancel: &CancellationToken,
    what: &str,
    op: F,
) -> Result<T, RetryError<E>>
where
    E: Retryable + std::error::Error + 'static,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    with_retries_observed(policy, cancel, what, |_: &E| {}, op).await
}

/// [`with_retries`], calling `on_retry` with each failure that is about to be
/// retried (not with the last one, nor with one handed back): what metrics
/// count as "retried, and why".
pub async fn with_retries_observed<T, E, F, Fut>(
    policy: &RetryPolicy,
    cancel: &CancellationToken,
    what: &str,
    mut on_retry: impl FnMut(&E),
    mut op: F,
) -> Result<T, RetryError<E>>
where
    E: Retryable + std::error::Error + 'static,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let max_attempts = policy.max_attempts.max(1);
    let mut attempt = 0u32;
    loop {
        if cancel.is_cancelled() {
            return Err(RetryError::Canceled);
        }
        attempt += 1;
        let err = match op(attempt).await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let ErrorClass::Retry { after } = err.class() else {
            return Err(RetryError::Stopped(err));
        };
        let elapsed = started.elapsed();
        let delay = policy.delay(attempt - 1, after);
        if attempt >= max_attempts || elapsed.saturating_add(delay) > policy.budget {
            return Err(RetryError::Exhausted { last: err, attempts: attempt, elapsed });
        }
        on_retry(&err);
        tracing::warn!(
            what,
            attempt,
            delay = %humantime::format_duration(Duration::from_millis(delay.as_millis() as u64)),
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
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("test error {0:?}")]
    struct Fail(ErrorClass);

    impl Retryable for Fail {
        fn class(&self) -> ErrorClass {
            self.0
        }
    }

    const RETRY: ErrorClass = ErrorClass::Retry { after: None };

    fn policy() -> RetryPolicy {
        RetryPolicy::from_config(&UploadConfig::default())
    }

    #[test]
    fn defaults_come_from_the_config() {
        let p = policy();
        assert_eq!((p.base, p.cap), (Duration::from_secs(1), Duration::from_secs(300)));
        assert_eq!(p.max_attempts, 10);
    }

    #[test]
    fn ceiling_doubles_then_caps() {
        let p = policy();
        let secs: Vec<u64> = (0..12).map(|r| p.ceiling(r).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(300), "no overflow");
    }

    #[test]
    fn full_jitter_spreads_over_zero_to_ceiling() {
        let p = policy();
        let mut rng = StdRng::seed_from_u64(7);
        for retry in [0, 3, 9] {
            let ceiling = p.ceiling(retry);
            let samples: Vec<Duration> = (0..2000).map(|_| p.delay_with(&mut rng, retry, None)).collect();
            assert!(samples.iter().all(|d| *d <= ceiling));
            let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
            let ratio = mean.as_secs_f64() / ceiling.as_secs_f64();
            assert!((0.45..0.55).contains(&ratio), "mean {mean:?} for ceiling {ceiling:?}");
            assert!(samples.iter().any(|d| *d < ceiling / 10), "low delays occur too");
        }
    }

    #[test]
    fn retry_after_wins_when_longer() {
        let p = policy();
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(p.delay_with(&mut rng, 0, Some(Duration::from_secs(10))), Duration::from_secs(10));
        // Shorter than the jitter drawn: the jitter stands (never below Retry-After).
        for _ in 0..100 {
            assert!(p.delay_with(&mut rng, 8, Some(Duration::from_millis(1))) >= Duration::from_millis(1));
        }
    }

    /// Fails with the given classes in order, then succeeds; counts attempts.
    fn script(classes: Vec<ErrorClass>) -> (Arc<AtomicU32>, impl FnMut(u32) -> std::future::Ready<Result<u32, Fail>>) {
        let calls = Arc::new(AtomicU32::new(0));
        let seen = calls.clone();
        let op = move |attempt: u32| {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            assert_eq!(n + 1, attempt, "attempt numbers count from 1");
            std::future::ready(match classes.get(n as usize) {
                Some(c) => Err(Fail(*c)),
                None => Ok(attempt),
            })
        };
        (calls, op)
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_with_backoff() {
        let (calls, op) = script(vec![RETRY, RETRY]);
        let t0 = Instant::now();
        let got = with_retries(&policy(), &CancellationToken::new(), "test", op).await.unwrap();
        assert_eq!((got, calls.load(Ordering::SeqCst)), (3, 3));
        assert!(t0.elapsed() <= Duration::from_secs(1 + 2), "two jittered delays, ceilings 1 s and 2 s");
    }

    #[tokio::test(start_paused = true)]
    async fn the_observer_sees_each_retried_failure_and_only_those() {
        let (_, op) = script(vec![RETRY, RETRY, ErrorClass::Fatal]);
        let mut seen = Vec::new();
        let err = with_retries_observed(&policy(), &CancellationToken::new(), "test", |e: &Fail| seen.push(e.0), op)
            .await
            .unwrap_err();
        assert!(matches!(err, RetryError::Stopped(Fail(ErrorClass::Fatal))), "{err:?}");
        assert_eq!(seen, vec![RETRY, RETRY], "the fatal one is handed back, not retried");
        let p = RetryPolicy { max_attempts: 2, ..policy() };
        let (_, op) = script(vec![RETRY; 10]);
        let mut n = 0;
        with_retries_observed(&p, &CancellationToken::new(), "test", |_: &Fail| n += 1, op).await.unwrap_err();
        assert_eq!(n, 1, "the last attempt is not followed by a retry");
    }

    #[tokio::test(start_paused = true)]
    async fn non_retry_classes_are_handed_back_at_once() {
        for class in [ErrorClass::Fatal, ErrorClass::Gone, ErrorClass::RefreshUrls] {
            let (calls, op) = script(vec![class]);
            let t0 = Instant::now();
            let err = with_retries(&policy(), &CancellationToken::new(), "test", op).await.unwrap_err();
            assert!(matches!(&err, RetryError::Stopped(Fail(c)) if *c == class), "{err:?}");
            assert_eq!(calls.load(Ordering::SeqCst), 1);
            assert_eq!(t0.elapsed(), Duration::ZERO);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn attempt_budget_is_respected() {
        let p = RetryPolicy { max_attempts: 4, ..policy() };
        let (calls, op) = script(vec![RETRY; 100]);
        let err = with_retries(&p, &CancellationToken::new(), "test", op).await.unwrap_err();
        assert!(matches!(err, RetryError::Exhausted { attempts: 4, .. }), "{err:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert!(err.to_string().contains("gave up after 4 attempt(s)"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn time_budget_is_respected_and_retry_after_honoured() {
        // Retry-After 4 s dominates the jitter for the first retries (ceilings 1, 2, 4 s).
        let after = ErrorClass::Retry { after: Some(Duration::from_secs(4)) };
        let p = RetryPolicy { budget: Duration::from_secs(10), ..policy() };
        let (calls, op) = script(vec![after; 100]);
        let t0 = Instant::now();
        let err = with_retries(&p, &CancellationToken::new(), "test", op).await.unwrap_err();
        // Attempts at 0 s, 4 s, 8 s; a fourth would start at 12 s > 10 s.
        assert!(matches!(err, RetryError::Exhausted { attempts: 3, .. }), "{err:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(t0.elapsed(), Duration::from_secs(8));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_delays_the_next_attempt() {
        let (calls, op) = script(vec![ErrorClass::Retry { after: Some(Duration::from_secs(30)) }]);
        let t0 = Instant::now();
        with_retries(&policy(), &CancellationToken::new(), "test", op).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(t0.elapsed() >= Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_ends_a_backoff_at_once_and_is_never_retried() {
        let cancel = CancellationToken::new();
        let (calls, op) = script(vec![ErrorClass::Retry { after: Some(Duration::from_secs(60)) }; 10]);
        let trigger = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            trigger.cancel();
        });
        let t0 = Instant::now();
        let err = with_retries(&policy(), &cancel, "test", op).await.unwrap_err();
        assert!(matches!(err, RetryError::Canceled), "{err:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(t0.elapsed(), Duration::from_secs(2));

        let (calls, op) = script(vec![]);
        let err = with_retries(&policy(), &cancel, "test", op).await.unwrap_err();
        assert!(matches!(err, RetryError::Canceled));
        assert_eq!(calls.load(Ordering::SeqCst), 0, "a canceled token starts no attempt");
    }
}
