//! One retry policy for every outgoing request: the API calls and part PUTs
//! of the upload engine, and the webhook of [`crate::ops::hooks`].
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

use crate::api::{ApiError, ErrorClass, TransportKind};
use crate::config::{Dur, UploadConfig};
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

/// An error that knows whether retrying can help, and whether the failed
/// request may have reached the server anyway.
pub trait Retryable: fmt::Display {
    fn class(&self) -> ErrorClass;

    /// The request may have arrived and been acted on although no answer
    /// came back (a timeout, a connection broken after sending). Such a
    /// failure is repeated only with [`Repeat::Always`].
    fn may_have_arrived(&self) -> bool;
}

impl Retryable for ApiError {
    fn class(&self) -> ErrorClass {
        ApiError::class(self)
    }

    fn may_have_arrived(&self) -> bool {
        match self {
            ApiError::Transport { kind, .. } => matches!(kind, TransportKind::Timeout | TransportKind::Interrupted),
            // A PUT that stalled had started sending its body.
            ApiError::Stalled { .. } => true,
            ApiError::Endpoint { .. }
            | ApiError::Setup(_)
            | ApiError::Status { .. }
            | ApiError::InvalidResponse { .. } => false,
        }
    }
}

impl Retryable for TransferError {
    fn class(&self) -> ErrorClass {
        TransferError::class(self)
    }

    fn may_have_arrived(&self) -> bool {
        match self {
            TransferError::Api(e) => e.may_have_arrived(),
            TransferError::Io { .. } => false,
            // The storage answered: the bytes arrived (wrong or short).
            TransferError::EtagMismatch { .. } | TransferError::Incomplete { .. } => true,
        }
    }
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
}

impl<'a, E> Retry<'a, E> {
    pub fn new(what: &'a str, cancel: &'a CancellationToken, repeat: Repeat) -> Self {
        Retry { what, cancel, repeat, on_retry: None }
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
    let Retry { what, cancel, repeat, mut on_retry } = retry;
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
        if repeat == Repeat::IfNotSent && err.may_have_arrived() {
            tracing::warn!(what, attempt, error = %err, "not repeated: the request may have reached the server");
            return Err(RetryError::Stopped(err));
        }
        let elapsed = started.elapsed();
        let delay = policy.delay(attempt - 1, after);
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
        fn may_have_arrived(&self) -> bool {
            false
        }
    }

    /// Options for an idempotent request.
    fn always<'a, E>(cancel: &'a CancellationToken) -> Retry<'a, E> {
        Retry::new("test", cancel, Repeat::Always)
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
        let got = with_retries(&policy(), always(&CancellationToken::new()), op).await.unwrap();
        assert_eq!((got, calls.load(Ordering::SeqCst)), (3, 3));
        assert!(t0.elapsed() <= Duration::from_secs(1 + 2), "two jittered delays, ceilings 1 s and 2 s");
    }

    #[tokio::test(start_paused = true)]
    async fn the_observer_sees_each_retried_failure_and_only_those() {
        let (_, op) = script(vec![RETRY, RETRY, ErrorClass::Fatal]);
        let mut seen = Vec::new();
        let mut record = |e: &Fail| seen.push(e.0);
        let cancel = CancellationToken::new();
        let err = with_retries(&policy(), always(&cancel).on_retry(&mut record), op).await.unwrap_err();
        assert!(matches!(err, RetryError::Stopped(Fail(ErrorClass::Fatal))), "{err:?}");
        assert_eq!(seen, vec![RETRY, RETRY], "the fatal one is handed back, not retried");
        let p = RetryPolicy { max_attempts: 2, ..policy() };
        let (_, op) = script(vec![RETRY; 10]);
        let mut n = 0;
        let mut count = |_: &Fail| n += 1;
        with_retries(&p, always(&cancel).on_retry(&mut count), op).await.unwrap_err();
        assert_eq!(n, 1, "the last attempt is not followed by a retry");
    }

    #[tokio::test(start_paused = true)]
    async fn non_retry_classes_are_handed_back_at_once() {
        for class in [ErrorClass::Fatal, ErrorClass::Gone, ErrorClass::RefreshUrls] {
            let (calls, op) = script(vec![class]);
            let t0 = Instant::now();
            let err = with_retries(&policy(), always(&CancellationToken::new()), op).await.unwrap_err();
            assert!(matches!(&err, RetryError::Stopped(Fail(c)) if *c == class), "{err:?}");
            assert_eq!(calls.load(Ordering::SeqCst), 1);
            assert_eq!(t0.elapsed(), Duration::ZERO);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn attempt_budget_is_respected() {
        let p = RetryPolicy { max_attempts: 4, ..policy() };
        let (calls, op) = script(vec![RETRY; 100]);
        let err = with_retries(&p, always(&CancellationToken::new()), op).await.unwrap_err();
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
        let err = with_retries(&p, always(&CancellationToken::new()), op).await.unwrap_err();
        // Attempts at 0 s, 4 s, 8 s; a fourth would start at 12 s > 10 s.
        assert!(matches!(err, RetryError::Exhausted { attempts: 3, .. }), "{err:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(t0.elapsed(), Duration::from_secs(8));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_delays_the_next_attempt() {
        let (calls, op) = script(vec![ErrorClass::Retry { after: Some(Duration::from_secs(30)) }]);
        let t0 = Instant::now();
        with_retries(&policy(), always(&CancellationToken::new()), op).await.unwrap();
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
        let err = with_retries(&policy(), always(&cancel), op).await.unwrap_err();
        assert!(matches!(err, RetryError::Canceled), "{err:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(t0.elapsed(), Duration::from_secs(2));

        let (calls, op) = script(vec![]);
        let err = with_retries(&policy(), always(&cancel), op).await.unwrap_err();
        assert!(matches!(err, RetryError::Canceled));
        assert_eq!(calls.load(Ordering::SeqCst), 0, "a canceled token starts no attempt");
    }
    fn transport(kind: TransportKind) -> ApiError {
        ApiError::Transport {
            op: crate::api::Op::StartGroup,
            kind,
            target: "http://127.0.0.1:1/v1/groups".into(),
            detail: "test".into(),
        }
    }

    fn status(code: u16) -> ApiError {
        ApiError::Status {
            op: crate::api::Op::StartGroup,
            status: code,
            target: "http://127.0.0.1:1/v1/groups".into(),
            message: String::new(),
            retry_after: None,
        }
    }

    /// Fails once with `first()`, then succeeds; returns (result, attempts made).
    async fn once_then_ok(first: fn() -> ApiError, repeat: Repeat) -> (Result<u32, RetryError<ApiError>>, u32) {
        let calls = AtomicU32::new(0);
        let cancel = CancellationToken::new();
        let r = with_retries(&policy(), Retry::new("start upload group", &cancel, repeat), |attempt| {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(if attempt == 1 { Err(first()) } else { Ok(attempt) })
        })
        .await;
        (r, calls.load(Ordering::SeqCst))
    }

    #[test]
    fn only_failures_after_sending_may_have_arrived() {
        assert!(transport(TransportKind::Timeout).may_have_arrived());
        assert!(transport(TransportKind::Interrupted).may_have_arrived());
        assert!(!transport(TransportKind::Connect).may_have_arrived(), "nothing was sent");
        assert!(!status(503).may_have_arrived(), "the server answered and asked for a retry");
        assert!(!status(429).may_have_arrived());
    }

    #[tokio::test(start_paused = true)]
    async fn ambiguous_failures_are_repeated_only_when_the_request_is_safe_to_repeat() {
        for kind in [TransportKind::Timeout, TransportKind::Interrupted] {
            let first: fn() -> ApiError = match kind {
                TransportKind::Timeout => || transport(TransportKind::Timeout),
                _ => || transport(TransportKind::Interrupted),
            };
            let (r, calls) = once_then_ok(first, Repeat::IfNotSent).await;
            let err = r.unwrap_err();
            assert!(
                matches!(&err, RetryError::Stopped(ApiError::Transport { kind: k, .. }) if *k == kind),
                "handed back, not repeated: {err:?}"
            );
            assert_eq!(calls, 1, "{kind:?}: one request only");
            let (r, calls) = once_then_ok(first, Repeat::Always).await;
            assert_eq!((r.unwrap(), calls), (2, 2), "{kind:?}: an idempotent request is repeated");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn connect_failures_and_retryable_answers_are_repeated_in_both_modes() {
        let firsts: [fn() -> ApiError; 3] = [|| transport(TransportKind::Connect), || status(503), || status(429)];
        for first in firsts {
            for repeat in [Repeat::Always, Repeat::IfNotSent] {
                let (r, calls) = once_then_ok(first, repeat).await;
                assert_eq!((r.unwrap(), calls), (2, 2), "{} with {repeat:?}", first());
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_at_once_when_the_token_fires() {
        // One hour of Retry-After, canceled 10 ms into the wait.
        let cancel = CancellationToken::new();
        let (calls, op) = script(vec![ErrorClass::Retry { after: Some(Duration::from_secs(3600)) }]);
        let trigger = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            trigger.cancel();
        });
        let p = RetryPolicy { budget: Duration::from_secs(7200), ..policy() };
        let t0 = Instant::now();
        let err = with_retries(&p, always(&cancel), op).await.unwrap_err();
        assert!(matches!(err, RetryError::Canceled), "{err:?}");
        assert_eq!(t0.elapsed(), Duration::from_millis(10));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now), Some(Duration::ZERO), "past = now");
        assert_eq!(parse_retry_after("in a while", now), None);
    }
}
