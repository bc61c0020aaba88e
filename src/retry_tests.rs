//! Tests of `retry`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;
use crate::api::{ApiError, TransportKind};

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
        let samples: Vec<Duration> = (0..2000).map(|_| p.delay(&mut rng, retry, None)).collect();
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
    assert_eq!(p.delay(&mut rng, 0, Some(Duration::from_secs(10))), Duration::from_secs(10));
    // Shorter than the jitter drawn: the jitter stands (never below Retry-After).
    for _ in 0..100 {
        assert!(p.delay(&mut rng, 8, Some(Duration::from_millis(1))) >= Duration::from_millis(1));
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
