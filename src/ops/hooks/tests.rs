use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;

use super::*;
use crate::config::Dur;
use crate::retry::RetryPolicy;

fn event(kind: EventKind) -> GroupEvent {
    GroupEvent {
        kind,
        event_id: 7,
        group_id: 42,
        name: "Canyon Flight".into(),
        path: PathBuf::from("/renders/exports/Canyon Flight"),
        library_id: (kind == EventKind::Completed).then_some(9001),
        error: (kind != EventKind::Completed).then(|| "layout Separate needs video_right".into()),
        at: "2026-03-30T19:02:14Z".parse().expect("timestamp"),
    }
}

/// Write an executable script named `name` into `dir`: `name.sh` running
/// `sh` on Unix, `name.cmd` running `cmd` (a batch file, which Windows runs
/// through cmd.exe) on Windows. Returns its path.
pub(crate) fn script(dir: &Path, name: &str, sh: &str, cmd: &str) -> String {
    #[cfg(unix)]
    let path = {
        use std::os::unix::fs::PermissionsExt;
        let _ = cmd;
        let path = dir.join(format!("{name}.sh"));
        std::fs::write(&path, format!("#!/bin/sh\n{sh}\n")).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    };
    #[cfg(windows)]
    let path = {
        let _ = sh;
        let path = dir.join(format!("{name}.cmd"));
        std::fs::write(&path, format!("@echo off\r\n{}\r\n", cmd.replace('\n', "\r\n"))).expect("write script");
        path
    };
    path.display().to_string()
}

/// The script file name [`script`] gives `name` here.
fn script_name(name: &str) -> String {
    if cfg!(windows) { format!("{name}.cmd") } else { format!("{name}.sh") }
}

/// A batch line that sleeps about `secs` seconds (Windows has no `sleep`;
/// `ping` waits a second between its echoes).
fn cmd_sleep(secs: u32) -> String {
    format!("ping -n {} 127.0.0.1 >nul", secs + 1)
}

/// Log lines written while the guard lives (current-thread runtime: spawned tasks log here too).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let sub = tracing_subscriber::fmt()
            .with_writer(self.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        tracing::subscriber::set_default(sub)
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("not poisoned")).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

#[tokio::test]
async fn hook_runs_without_a_shell_and_receives_the_group_in_its_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("env.txt");
    // `$1` is the output file: argv from the config arrives verbatim, spaces included.
    let hook = script(dir.path(), "on complete", "/usr/bin/env > \"$1\"", "set > \"%~1\"");
    let cfg = HooksConfig {
        on_complete: Some(vec![hook, out.display().to_string()]),
        timeout: Dur::secs(10),
        ..HooksConfig::default()
    };
    let notifier = Notifier::new(&cfg).expect("notifier").without_env("PATH");
    notifier.notify(event(EventKind::Completed));
    // Not configured: no command runs for these.
    notifier.notify(event(EventKind::Failed));
    assert!(notifier.drain(Duration::from_secs(10)).await, "hook finished");

    let text = std::fs::read_to_string(&out).expect("the hook wrote its environment");
    let env: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    assert_eq!(env.get("SPATIALGEN_GROUP_ID"), Some(&"42"));
    assert_eq!(env.get("SPATIALGEN_EVENT_ID"), Some(&"7"));
    assert_eq!(env.get("SPATIALGEN_GROUP_NAME"), Some(&"Canyon Flight"));
    assert_eq!(env.get("SPATIALGEN_PATH"), Some(&"/renders/exports/Canyon Flight"));
    assert_eq!(env.get("SPATIALGEN_STATE"), Some(&"completed"));
    assert_eq!(env.get("SPATIALGEN_LIBRARY_ID"), Some(&"9001"));
    assert_eq!(env.get("SPATIALGEN_ERROR"), Some(&""));
    assert!(!env.contains_key("PATH"), "scrubbed variables are not passed on");
}

#[tokio::test]
async fn failure_hook_gets_the_error_and_its_output_is_logged_bounded() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let dir = tempfile::tempdir().expect("tempdir");
    let hook = script(
        dir.path(),
        "fail",
        "echo \"state=$SPATIALGEN_STATE error=$SPATIALGEN_ERROR\" >&2\n\
         i=0; while [ $i -lt 400 ]; do echo 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'; i=$((i+1)); done\nexit 3",
        "echo state=%SPATIALGEN_STATE% error=%SPATIALGEN_ERROR% 1>&2\n\
         for /l %%i in (1,1,400) do echo xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\nexit /b 3",
    );
    let cfg = HooksConfig { on_failure: Some(vec![hook]), timeout: Dur::secs(10), ..HooksConfig::default() };
    let notifier = Notifier::new(&cfg).expect("notifier").with_hook_retry(fast_retry(1));
    notifier.notify(event(EventKind::Failed));
    assert!(notifier.drain(Duration::from_secs(10)).await);

    let text = logs.text();
    // "exit status: 3" on Unix, "exit code: 3" on Windows.
    assert!(text.contains(&format!("{} failed (exit ", script_name("fail"))) && text.contains(": 3)"), "{text}");
    assert!(text.contains("state=failed error=layout Separate needs video_right"), "{text}");
    // 400 lines of 50 bytes (51 with Windows' CRLF); 8 KiB kept, the rest counted.
    let line = if cfg!(windows) { 51 } else { 50 };
    assert!(text.contains(&format!("({} more bytes not kept)", 400 * line - OUTPUT_LIMIT)), "{text}");
}

#[tokio::test]
async fn timeout_kills_the_hook_and_its_children() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (pid_file, done_file, late_file) = (dir.path().join("pid"), dir.path().join("done"), dir.path().join("late"));
    // A grandchild that says it started, then would say "late" three seconds on.
    let late = script(
        dir.path(),
        "late",
        "echo started > \"$1\"\n/bin/sleep 3\necho late >> \"$1\"",
        &format!("> \"%~1\" echo started\n{}\n>> \"%~1\" echo late", cmd_sleep(3)),
    );
    let hook = script(
        dir.path(),
        "slow",
        &format!("\"{late}\" \"$3\" &\n/bin/sleep 30 &\necho $! > \"$1\"\nwait\necho finished > \"$2\""),
        &format!("start /b \"\" \"{late}\" \"%~3\"\n{}\n> \"%~2\" echo finished", cmd_sleep(30)),
    );
    let args = [&pid_file, &done_file, &late_file].map(|p| p.display().to_string());
    let cfg = HooksConfig {
        on_rejected: Some([vec![hook], args.to_vec()].concat()),
        timeout: Dur(Duration::from_secs(2)),
        ..HooksConfig::default()
    };
    let notifier = Notifier::new(&cfg).expect("notifier").with_hook_retry(fast_retry(1));
    let start = Instant::now();
    notifier.notify(event(EventKind::Rejected));
    assert!(notifier.drain(Duration::from_secs(10)).await, "the hook task ends after the kill");
    assert!(start.elapsed() < Duration::from_secs(6), "killed, not waited for: {:?}", start.elapsed());
    assert!(!done_file.exists(), "the script never got past its wait");

    // The grandchild went down with it: it started, and never said "late".
    tokio::time::sleep(Duration::from_secs(4)).await;
    let said = std::fs::read_to_string(&late_file).expect("the grandchild started before the timeout");
    assert_eq!(said.split_whitespace().collect::<Vec<_>>(), ["started"], "the grandchild outlived the hook's timeout");

    // The script's other child too (gone, or a zombie awaiting its reaper).
    #[cfg(target_os = "linux")]
    {
        let pid = std::fs::read_to_string(&pid_file).expect("pid written").trim().to_string();
        let dead = || match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat.rsplit(')').next().and_then(|r| r.split_whitespace().next()) == Some("Z"),
        };
        assert!(dead(), "sleep {pid} survived the hook's timeout");
    }
}

#[tokio::test]
async fn a_missing_program_is_logged_not_raised() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let cfg = HooksConfig { on_complete: Some(vec!["/nonexistent/hook".into()]), ..HooksConfig::default() };
    let notifier = Notifier::new(&cfg).expect("notifier");
    notifier.notify(event(EventKind::Completed));
    assert!(notifier.drain(Duration::from_secs(5)).await);
    assert!(logs.text().contains("cannot start /nonexistent/hook"), "{}", logs.text());
}

/// A webhook receiver that answers `failures` errors with `status` (and a
/// `Retry-After` made by `retry_after`, if any), then 200, recording bodies
/// and when each request came.
struct Receiver {
    hits: AtomicUsize,
    failures: usize,
    status: StatusCode,
    retry_after: Option<fn() -> String>,
    bodies: Mutex<Vec<serde_json::Value>>,
    times: Mutex<Vec<Instant>>,
    /// Every request's signature header and raw body.
    raw: Mutex<Vec<(Option<String>, Vec<u8>)>>,
}

async fn receive(
    State(r): State<Arc<Receiver>>,
    headers: axum::http::HeaderMap,
    raw: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    r.times.lock().expect("not poisoned").push(Instant::now());
    let sig = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
    r.raw.lock().expect("not poisoned").push((sig, raw.to_vec()));
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(&raw) else {
        return StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response();
    };
    let n = r.hits.fetch_add(1, Ordering::SeqCst);
    if n < r.failures {
        return match r.retry_after {
            Some(after) => (r.status, [(axum::http::header::RETRY_AFTER, after())]).into_response(),
            None => r.status.into_response(),
        };
    }
    r.bodies.lock().expect("not poisoned").push(body);
    StatusCode::OK.into_response()
}

/// Start a receiver on 127.0.0.1:0; returns it and the webhook URL (with a secret path).
async fn receiver(failures: usize, status: StatusCode) -> (Arc<Receiver>, String) {
    receiver_with(failures, status, None).await
}

async fn receiver_with(
    failures: usize,
    status: StatusCode,
    retry_after: Option<fn() -> String>,
) -> (Arc<Receiver>, String) {
    let r = Arc::new(Receiver {
        hits: AtomicUsize::new(0),
        failures,
        status,
        retry_after,
        bodies: Mutex::new(Vec::new()),
        times: Mutex::new(Vec::new()),
        raw: Mutex::new(Vec::new()),
    });
    let app = axum::Router::new().route("/hooks/T0KEN-secret", post(receive)).with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (r, format!("http://{addr}/hooks/T0KEN-secret?sig=abc"))
}

fn fast_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(10),
        cap: Duration::from_millis(50),
        max_attempts: attempts,
        budget: Duration::from_secs(30),
    }
}

const FAST_TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn webhook_is_retried_until_delivered_and_never_logs_its_secret() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let (r, url) = receiver(2, StatusCode::SERVICE_UNAVAILABLE).await;
    let cfg = HooksConfig { webhook: Some(url), ..HooksConfig::default() };
    let notifier = Notifier::new(&cfg).expect("notifier").with_retry(fast_retry(5), FAST_TIMEOUT);
    notifier.notify(event(EventKind::Completed));
    assert!(notifier.drain(Duration::from_secs(10)).await);

    assert_eq!(r.hits.load(Ordering::SeqCst), 3, "two failures, then delivered");
    let bodies = r.bodies.lock().expect("not poisoned").clone();
    assert_eq!(
        bodies,
        vec![serde_json::json!({
            "event": "group.completed",
            "eventId": 7,
            "groupId": 42,
            "name": "Canyon Flight",
            "path": "/renders/exports/Canyon Flight",
            "state": "completed",
            "libraryId": 9001,
            "error": null,
            "at": "2026-03-30T19:02:14Z",
        })]
    );
    let text = logs.text();
    assert!(text.contains("delivered (attempt 3)"), "{text}");
    assert!(!text.contains("T0KEN") && !text.contains("sig=abc"), "{text}");
}

#[tokio::test]
async fn webhook_gives_up_after_the_bounded_attempts() {
    let (r, url) = receiver(usize::MAX, StatusCode::BAD_GATEWAY).await;
    let cfg = HooksConfig { webhook: Some(url), ..HooksConfig::default() };
    let notifier = Notifier::new(&cfg).expect("notifier").with_retry(fast_retry(3), FAST_TIMEOUT);
    notifier.notify(event(EventKind::Failed));
    assert!(notifier.drain(Duration::from_secs(10)).await);
    assert_eq!(r.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn webhook_client_errors_are_not_retried() {
    let (r, url) = receiver(usize::MAX, StatusCode::BAD_REQUEST).await;
    let cfg = HooksConfig { webhook: Some(url), ..HooksConfig::default() };
    let notifier = Notifier::new(&cfg).expect("notifier").with_retry(fast_retry(5), FAST_TIMEOUT);
    notifier.notify(event(EventKind::Rejected));
    assert!(notifier.drain(Duration::from_secs(10)).await);
    assert_eq!(r.hits.load(Ordering::SeqCst), 1);
}

#[test]
fn the_default_webhook_backoff_is_full_jitter_under_a_cap_and_a_budget() {
    let p = WEBHOOK_RETRY;
    for retry in 0..40 {
        let limit = Duration::from_secs(1 << retry.min(20)).min(Duration::from_secs(60));
        assert_eq!(p.ceiling(retry), limit, "retry {retry}");
        for _ in 0..20 {
            assert!(p.delay(&mut rand::rng(), retry, None) <= limit, "retry {retry}");
        }
    }
    // Jitter: not always the maximum.
    assert!((0..50).any(|_| p.delay(&mut rand::rng(), 5, None) < Duration::from_secs(50)));
    assert_eq!((p.max_attempts, p.budget), (6, Duration::from_secs(600)));
}

/// The gap between the first two requests the receiver saw.
fn first_gap(r: &Receiver) -> Duration {
    let t = r.times.lock().expect("not poisoned");
    t[1] - t[0]
}

#[tokio::test]
async fn webhook_honours_retry_after_in_seconds() {
    let (r, url) = receiver_with(1, StatusCode::SERVICE_UNAVAILABLE, Some(|| "1".to_string())).await;
    let cfg = HooksConfig { webhook: Some(url), ..HooksConfig::default() };
    let notifier = Notifier::new(&cfg).expect("notifier").with_retry(fast_retry(5), FAST_TIMEOUT);
    notifier.notify(event(EventKind::Completed));
    assert!(notifier.drain(Duration::from_secs(10)).await);
    assert_eq!(r.hits.load(Ordering::SeqCst), 2);
    // The backoff alone would wait at most 10 ms.
    assert!(first_gap(&r) >= Duration::from_millis(950), "{:?}", first_gap(&r));
}

#[tokio::test]
async fn webhook_honours_retry_after_as_an_http_date() {
    // Two seconds from now in HTTP-date form (whole seconds, so 1 to 2 s away).
    let in_two_seconds = || httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2));
    let (r, url) = receiver_with(1, StatusCode::TOO_MANY_REQUESTS, Some(in_two_seconds)).await;
    let cfg = HooksConfig { webhook: Some(url), ..HooksConfig::default() };
    let notifier = Notifier::new(&cfg).expect("notifier").with_retry(fast_retry(5), FAST_TIMEOUT);
    notifier.notify(event(EventKind::Completed));
    assert!(notifier.drain(Duration::from_secs(10)).await);
    assert_eq!(r.hits.load(Ordering::SeqCst), 2);
    assert!(first_gap(&r) >= Duration::from_millis(950), "{:?}", first_gap(&r));
}

#[tokio::test]
async fn shutdown_ends_a_webhook_wait_at_once() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let (r, url) = receiver_with(usize::MAX, StatusCode::SERVICE_UNAVAILABLE, Some(|| "60".to_string())).await;
    let cfg = HooksConfig { webhook: Some(url), ..HooksConfig::default() };
    let shutdown = CancellationToken::new();
    let retry = RetryPolicy { budget: Duration::from_secs(600), ..fast_retry(5) };
    let notifier = Notifier::new(&cfg).expect("notifier").with_retry(retry, FAST_TIMEOUT).with_cancel(shutdown.clone());
    notifier.notify(event(EventKind::Failed));
    while r.hits.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Now waiting out the receiver's 60 s.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t0 = Instant::now();
    shutdown.cancel();
    assert!(notifier.drain(Duration::from_secs(5)).await);
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert_eq!(r.hits.load(Ordering::SeqCst), 1);
    assert!(logs.text().contains("not delivered: shutdown"), "{}", logs.text());

    // After shutdown no attempt starts: the event stays for the next start.
    assert_eq!(notifier.deliver(Consumer::Webhook, &event(EventKind::Completed)).await, Delivery::Stopped);
    assert_eq!(r.hits.load(Ordering::SeqCst), 1);
}

#[test]
fn a_bad_webhook_url_is_refused() {
    let cfg = HooksConfig { webhook: Some("ftp://example.com/x".into()), ..HooksConfig::default() };
    assert!(matches!(Notifier::new(&cfg), Err(HooksError::BadUrl(_))));
}

#[test]
fn sign_is_hmac_sha256_in_hex() {
    // RFC 4231, test case 2.
    let secret = crate::config::WebhookSecret::new(b"Jefe".to_vec());
    assert_eq!(
        sign(&secret, b"what do ya want for nothing?"),
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

/// A file holding `secret` (with the newline editors add), owner-only, or
/// readable by everyone when `open`.
fn secret_file(dir: &Path, secret: &str, open: bool) -> PathBuf {
    let path = dir.join("webhook-secret");
    std::fs::write(&path, format!("{secret}\n")).expect("write secret");
    if open {
        crate::owner_only::open_to_everyone(&path).expect("open up");
    } else {
        crate::owner_only::restrict(&path).expect("owner only");
    }
    path
}

// Unix only: the secret file must be owner-only, which Wine cannot express.
// Windows under Wine: a DACL set is not kept (Wine 8 maps it onto Unix mode
// bits and leaves Everyone's read), so owner-only is observed on Unix only.
#[cfg(unix)]
#[tokio::test]
async fn webhook_body_is_signed_over_its_exact_bytes_and_the_secret_never_shows() {
    use hmac::Mac;
    let logs = Logs::default();
    let _guard = logs.capture();
    let dir = tempfile::tempdir().expect("tempdir");
    let (r, url) = receiver(1, StatusCode::SERVICE_UNAVAILABLE).await;
    let cfg = HooksConfig {
        webhook: Some(url),
        webhook_secret_file: Some(secret_file(dir.path(), "s3cr3t-Hm4c", false)),
        ..HooksConfig::default()
    };
    let notifier = Notifier::new(&cfg).expect("notifier").with_retry(fast_retry(3), FAST_TIMEOUT);
    assert_eq!(notifier.deliver(Consumer::Webhook, &event(EventKind::Completed)).await, Delivery::Delivered);
    let raw = r.raw.lock().expect("not poisoned").clone();
    assert_eq!(raw.len(), 2, "one retry, then delivered");
    for (sig, body) in &raw {
        // The receiver's check, written independently: HMAC over the raw bytes read.
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"s3cr3t-Hm4c").expect("key");
        mac.update(body);
        let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(sig.as_deref(), Some(want.as_str()));
    }
    assert_eq!(raw[0], raw[1], "a retry sends the same bytes with the same signature");
    let text = format!("{}{notifier:?}{cfg:?}", logs.text());
    assert!(!text.contains("s3cr3t"), "{text}");
}

#[tokio::test]
async fn without_a_secret_there_is_no_signature_header() {
    let (r, url) = receiver(0, StatusCode::OK).await;
    let cfg = HooksConfig { webhook: Some(url), ..HooksConfig::default() };
    let notifier = Notifier::new(&cfg).expect("notifier").with_retry(fast_retry(1), FAST_TIMEOUT);
    assert_eq!(notifier.deliver(Consumer::Webhook, &event(EventKind::Rejected)).await, Delivery::Delivered);
    assert_eq!(r.raw.lock().expect("not poisoned")[0].0, None);
}

#[test]
fn a_secret_file_others_can_read_or_an_empty_one_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = secret_file(dir.path(), "s3cr3t", true);
    let cfg = HooksConfig {
        webhook: Some("https://hooks.example.com/x".into()),
        webhook_secret_file: Some(file.clone()),
        ..HooksConfig::default()
    };
    let err = Notifier::new(&cfg).expect_err("too open").to_string();
    assert!(err.contains("hooks.webhook_secret_file"), "{err}");
    assert!(err.contains(&crate::owner_only::fix_hint(&file)), "{err}");
    assert!(!err.contains("s3cr3t"), "{err}");
    #[cfg(unix)]
    {
        // Windows under Wine: a DACL set is not kept (Wine 8 maps it onto Unix mode
        // bits and leaves Everyone's read), so owner-only is observed on Unix only.
        secret_file(dir.path(), "  ", false);
        let err = Notifier::new(&cfg).expect_err("empty").to_string();
        assert!(err.contains("is empty"), "{err}");
    }
}

#[tokio::test]
async fn deliver_says_whether_the_cursor_may_pass() {
    // Still failing after the round: held (Later), not given up.
    let (down, url) = receiver(usize::MAX, StatusCode::SERVICE_UNAVAILABLE).await;
    let cfg = HooksConfig { webhook: Some(url), ..HooksConfig::default() };
    let n = Notifier::new(&cfg).expect("notifier").with_retry(fast_retry(2), FAST_TIMEOUT);
    assert_eq!(n.deliver(Consumer::Webhook, &event(EventKind::Failed)).await, Delivery::Later);
    assert_eq!(down.hits.load(Ordering::SeqCst), 2);
    // Refused (4xx): given up at once.
    let (no, url) = receiver(usize::MAX, StatusCode::BAD_REQUEST).await;
    let cfg = HooksConfig { webhook: Some(url), ..HooksConfig::default() };
    let n = Notifier::new(&cfg).expect("notifier").with_retry(fast_retry(5), FAST_TIMEOUT);
    assert_eq!(n.deliver(Consumer::Webhook, &event(EventKind::Failed)).await, Delivery::GaveUp);
    assert_eq!(no.hits.load(Ordering::SeqCst), 1);

    // A command that keeps failing: its attempts, then given up; one that succeeds: delivered.
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    let failing = script(dir.path(), "fail", "echo run >> \"$1\"\nexit 1", ">> \"%~1\" echo run\nexit /b 1");
    let ok = script(dir.path(), "ok", "echo run >> \"$1\"", ">> \"%~1\" echo run");
    let cfg = HooksConfig {
        on_failure: Some(vec![failing, runs.display().to_string()]),
        on_complete: Some(vec![ok, runs.display().to_string()]),
        ..HooksConfig::default()
    };
    let n = Notifier::new(&cfg).expect("notifier").with_hook_retry(fast_retry(3));
    assert_eq!(n.consumers(), vec![Consumer::OnComplete, Consumer::OnFailure]);
    assert_eq!(n.deliver(Consumer::OnFailure, &event(EventKind::Failed)).await, Delivery::GaveUp);
    assert_eq!(std::fs::read_to_string(&runs).expect("runs").lines().count(), 3);
    assert_eq!(n.deliver(Consumer::OnComplete, &event(EventKind::Completed)).await, Delivery::Delivered);
    assert_eq!(std::fs::read_to_string(&runs).expect("runs").lines().count(), 4);
    // Not its kind: nothing runs, nothing to wait for.
    assert_eq!(n.deliver(Consumer::OnComplete, &event(EventKind::Rejected)).await, Delivery::Delivered);
    assert_eq!(std::fs::read_to_string(&runs).expect("runs").lines().count(), 4);
}

#[tokio::test]
async fn a_hook_running_at_shutdown_gets_the_grace_then_counts_as_not_delivered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let started = dir.path().join("started");
    let hook =
        script(dir.path(), "slow", "touch \"$1\"\n/bin/sleep 30", &format!("type nul > \"%~1\"\n{}", cmd_sleep(30)));
    let cfg = HooksConfig {
        on_complete: Some(vec![hook, started.display().to_string()]),
        timeout: Dur::secs(60),
        ..HooksConfig::default()
    };
    let shutdown = CancellationToken::new();
    let n = Notifier::new(&cfg).expect("notifier").with_cancel(shutdown.clone()).with_grace(Duration::from_millis(200));
    let run = tokio::spawn(async move { n.deliver(Consumer::OnComplete, &event(EventKind::Completed)).await });
    while !started.exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t0 = Instant::now();
    shutdown.cancel();
    assert_eq!(run.await.expect("task"), Delivery::Stopped);
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(200) && waited < Duration::from_secs(5), "{waited:?}");
}

#[test]
fn consumer_names_are_stable() {
    let names: Vec<&str> = Consumer::ALL.iter().map(|c| c.name()).collect();
    assert_eq!(names, ["hook:on_complete", "hook:on_failure", "hook:on_rejected", "webhook"]);
    assert!(Consumer::Webhook.wants(EventKind::Rejected) && !Consumer::OnComplete.wants(EventKind::Failed));
}
