//! Notifications when a group ends: `on_complete` / `on_failure` /
//! `on_rejected` commands and an optional JSON webhook.
//!
//! Invariants:
//! - [`Notifier::notify`] never blocks and never fails: every command and
//!   webhook runs in its own spawned task; problems are logged, not returned.
//!   Uploads never wait for a notification.
//! - Commands are exec'd directly from their argv (no shell, so no quoting
//!   or injection through file names); the group's facts travel in
//!   `SPATIALGEN_*` environment variables. The agent's own environment is
//!   inherited *minus* the variable holding the API key.
//! - A command that outlives `timeout` is killed with its whole process group
//!   (a script's children die with it), and its output, captured up to
//!   [`OUTPUT_LIMIT`] bytes per stream, is logged.
//! - The webhook is retried on transport errors, 408, 429 and 5xx by
//!   [`crate::retry`]: full-jitter exponential backoff, a bounded number of
//!   attempts within a time budget, the receiver's `Retry-After` honoured in
//!   both forms (seconds or HTTP date). Every wait between attempts ends at
//!   once when the notifier's token fires (the agent passes its shutdown
//!   token, [`Notifier::with_cancel`]); an event notified after that still
//!   gets one attempt. The POST is repeated even when it may have arrived
//!   ([`Repeat::Always`]): delivery is at-least-once and receivers
//!   de-duplicate by group id. Its URL is logged as scheme and host only:
//!   webhook URLs often carry a secret in their path.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::HooksConfig;
use crate::retry::ErrorClass;
use crate::retry::{Repeat, Retry, RetryError, RetryPolicy, Retryable, parse_retry_after, with_retries};

/// Bytes of stdout (and of stderr) kept from one hook run for the log.
pub const OUTPUT_LIMIT: usize = 8 * 1024;

/// Variables never passed to hooks, whatever the config says: the default key variable.
const ALWAYS_SCRUBBED: &[&str] = &["SPATIALGEN_API_KEY"];

#[derive(Debug, thiserror::Error)]
pub enum HooksError {
    /// The webhook URL from the config does not parse.
    #[error("hooks.webhook: {0}")]
    BadUrl(String),
    /// The HTTP client could not be built (TLS setup).
    #[error("cannot set up the webhook client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("waiting for {program}: {source}")]
    Wait {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// The webhook answered with a non-2xx status; `retry` says whether it is worth another try.
    #[error("webhook answered {status}: {body}")]
    Status { status: u16, body: String, retry: bool, retry_after: Option<Duration> },
    /// The request did not complete (connect, timeout, reset); the URL is stripped from the text.
    #[error("webhook request failed: {0}")]
    Transport(#[source] reqwest::Error),
}

impl HooksError {
    /// Is another attempt worth it?
    pub fn is_retryable(&self) -> bool {
        match self {
            HooksError::Status { retry, .. } => *retry,
            HooksError::Transport(_) => true,
            _ => false,
        }
    }
}

impl Retryable for HooksError {
    fn class(&self) -> ErrorClass {
        match self {
            HooksError::Status { retry: true, retry_after, .. } => ErrorClass::Retry { after: *retry_after },
            HooksError::Transport(_) => ErrorClass::Retry { after: None },
            _ => ErrorClass::Fatal,
        }
    }

    fn may_have_arrived(&self) -> bool {
        matches!(self, HooksError::Transport(e) if !e.is_connect())
    }
}

/// Why a group ended; decides which command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// In the library (`on_complete`).
    Completed,
    /// Failed for good (`on_failure`).
    Failed,
    /// Breaks an API rule and was never sent (`on_rejected`).
    Rejected,
}

impl EventKind {
    /// The journal state name, as in `status`.
    pub fn state(self) -> &'static str {
        match self {
            EventKind::Completed => "completed",
            EventKind::Failed => "failed",
            EventKind::Rejected => "rejected",
        }
    }
    /// The webhook's `event` field.
    pub fn event(self) -> &'static str {
        match self {
            EventKind::Completed => "group.completed",
            EventKind::Failed => "group.failed",
            EventKind::Rejected => "group.rejected",
        }
    }
}

/// The facts about one group that ended.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupEvent {
    pub kind: EventKind,
    /// The journal's local id.
    pub group_id: i64,
    pub name: String,
    /// The export folder (or stem path in flat mode).
    pub path: PathBuf,
    /// Known once completed.
    pub library_id: Option<i64>,
    /// Why it failed or was rejected, in plain words.
    pub error: Option<String>,
    pub at: jiff::Timestamp,
}

impl GroupEvent {
    /// The environment a hook command receives.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SPATIALGEN_GROUP_ID", self.group_id.to_string()),
            ("SPATIALGEN_GROUP_NAME", self.name.clone()),
            ("SPATIALGEN_PATH", self.path.display().to_string()),
            ("SPATIALGEN_STATE", self.kind.state().to_string()),
            ("SPATIALGEN_LIBRARY_ID", self.library_id.map(|i| i.to_string()).unwrap_or_default()),
            ("SPATIALGEN_ERROR", self.error.clone().unwrap_or_default()),
        ]
    }

    /// The webhook body.
    pub fn webhook_body(&self) -> serde_json::Value {
        serde_json::json!({
            "event": self.kind.event(),
            "groupId": self.group_id,
            "name": self.name,
            "path": self.path.display().to_string(),
            "state": self.kind.state(),
            "libraryId": self.library_id,
            "error": self.error,
            "at": self.at.to_string(),
        })
    }
}

/// The webhook's retry policy unless [`Notifier::with_retry`] replaces it:
/// delays up to 1 s doubling to 60 s, 6 attempts, within 10 minutes.
pub const WEBHOOK_RETRY: RetryPolicy = RetryPolicy {
    base: Duration::from_secs(1),
    cap: Duration::from_secs(60),
    max_attempts: 6,
    budget: Duration::from_secs(600),
};

/// Timeout of one webhook POST.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
struct Webhook {
    url: reqwest::Url,
    /// `scheme://host[:port]`, the only part of the URL that is logged.
    shown: String,
    client: reqwest::Client,
}

/// Runs the configured hooks and webhook for each [`GroupEvent`].
#[derive(Debug, Clone)]
pub struct Notifier {
    on_complete: Option<Vec<String>>,
    on_failure: Option<Vec<String>>,
    on_rejected: Option<Vec<String>>,
    timeout: Duration,
    webhook: Option<Webhook>,
    retry: RetryPolicy,
    /// Per-attempt webhook timeout.
    request_timeout: Duration,
    /// Ends the webhook's waits between attempts (the agent's shutdown token).
    cancel: CancellationToken,
    /// Environment variables removed before a hook starts (the API key's).
    scrub: Vec<String>,
    /// Every spawned notification, so shutdown can wait for them ([`Notifier::drain`]).
    tasks: TaskTracker,
}

impl Notifier {
    pub fn new(cfg: &HooksConfig) -> Result<Notifier, HooksError> {
        let webhook = match &cfg.webhook {
            None => None,
            Some(raw) => {
                let url = reqwest::Url::parse(raw).map_err(|e| HooksError::BadUrl(format!("{e}")))?;
                if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                    return Err(HooksError::BadUrl("must be an http(s) URL with a host".into()));
                }
                let shown = shown_url(&url);
                let client = reqwest::Client::builder()
                    .user_agent(concat!("spatialgen-sync/", env!("CARGO_PKG_VERSION")))
                    .connect_timeout(Duration::from_secs(10))
                    .build()
                    .map_err(HooksError::Client)?;
                Some(Webhook { url, shown, client })
            }
        };
        Ok(Notifier {
            on_complete: cfg.on_complete.clone(),
            on_failure: cfg.on_failure.clone(),
            on_rejected: cfg.on_rejected.clone(),
            timeout: cfg.timeout.0,
            webhook,
            retry: WEBHOOK_RETRY,
            request_timeout: WEBHOOK_TIMEOUT,
            cancel: CancellationToken::new(),
            scrub: ALWAYS_SCRUBBED.iter().map(|s| s.to_string()).collect(),
            tasks: TaskTracker::new(),
        })
    }

    /// Also keep `var` out of hooks' environment. Pass `[api] api_key_env`.
    pub fn without_env(mut self, var: impl Into<String>) -> Notifier {
        self.scrub.push(var.into());
        self
    }

    /// Replace the webhook's retry policy and per-attempt timeout (tests use millisecond delays).
    pub fn with_retry(mut self, retry: RetryPolicy, request_timeout: Duration) -> Notifier {
        self.retry = retry;
        self.request_timeout = request_timeout;
        self
    }

    /// End the webhook's waits between attempts when `cancel` fires (pass the
    /// agent's shutdown token).
    pub fn with_cancel(mut self, cancel: CancellationToken) -> Notifier {
        self.cancel = cancel;
        self
    }

    /// Start the command and the webhook for `ev` in the background.
    /// Must be called from within a tokio runtime; outside one the event is logged and dropped.
    pub fn notify(&self, ev: GroupEvent) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(group = ev.group_id, "notification dropped: no async runtime");
            return;
        };
        let argv = match ev.kind {
            EventKind::Completed => &self.on_complete,
            EventKind::Failed => &self.on_failure,
            EventKind::Rejected => &self.on_rejected,
        };
        if let Some(argv) = argv.clone().filter(|a| !a.is_empty()) {
            let (env, scrub, timeout, id) = (ev.env(), self.scrub.clone(), self.timeout, ev.group_id);
            let kind = ev.kind.state();
            self.tasks.spawn_on(
                async move {
                    if let Err(e) = run_hook(&argv, &env, &scrub, timeout).await {
                        tracing::warn!(group = id, hook = kind, "hook: {e}");
                    }
                },
                &handle,
            );
        }
        if let Some(hook) = self.webhook.clone() {
            let (body, retry, id) = (ev.webhook_body(), self.retry, ev.group_id);
            let (timeout, cancel) = (self.request_timeout, self.cancel.clone());
            self.tasks.spawn_on(
                async move {
                    send_webhook(&hook, &body, retry, timeout, cancel, id).await;
                },
                &handle,
            );
        }
    }

    /// No notification of this notifier is still running (a replaced
    /// notifier can be let go once it is idle).
    pub fn is_idle(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Wait up to `within` for notifications already started; true if all finished.
    /// Notifications started later still run (on the runtime) but are not waited for.
    pub async fn drain(&self, within: Duration) -> bool {
        self.tasks.close();
        let done = tokio::time::timeout(within, self.tasks.wait()).await.is_ok();
        self.tasks.reopen();
        done
    }
}

/// Run one hook to completion or timeout and log what it said.
async fn run_hook(
    argv: &[String],
    env: &[(&'static str, String)],
    scrub: &[String],
    timeout: Duration,
) -> Result<(), HooksError> {
    let program = argv[0].clone();
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&argv[1..]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    for var in scrub {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    #[cfg(unix)]
    cmd.process_group(0);
    let mut child = spawn(&mut cmd).await.map_err(|source| HooksError::Spawn { program: program.clone(), source })?;
    let stdout = child.stdout.take().map(|s| tokio::spawn(read_bounded(s)));
    let stderr = child.stderr.take().map(|s| tokio::spawn(read_bounded(s)));

    let status = tokio::select! {
        status = child.wait() => Some(status.map_err(|source| HooksError::Wait { program: program.clone(), source })?),
        () = tokio::time::sleep(timeout) => None,
    };
    if status.is_none() {
        kill_group(&mut child).await;
    }
    // Output ends when the last writer is gone; a grandchild that left the
    // process group could hold the pipe open, so the wait is bounded.
    let grace = Duration::from_secs(2);
    let mut out = String::new();
    for (name, task) in [("stdout", stdout), ("stderr", stderr)] {
        if let Some(task) = task
            && let Ok(Ok(text)) = tokio::time::timeout(grace, task).await
            && !text.is_empty()
        {
            out.push_str(&format!("\n  {name}: {}", text.trim_end().replace('\n', "\n    ")));
        }
    }
    match status {
        Some(s) if s.success() => tracing::info!("hook {program} finished{out}"),
        Some(s) => tracing::warn!("hook {program} failed ({s}){out}"),
        None => tracing::warn!("hook {program} killed after the {timeout:?} timeout{out}"),
    }
    Ok(())
}

/// Start `cmd`, retrying briefly on ETXTBSY: a script that was just written
/// (or is being replaced) can be "busy" while another process still holds it open.
async fn spawn(cmd: &mut tokio::process::Command) -> std::io::Result<tokio::process::Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            #[cfg(unix)]
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 10 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

/// Kill the hook and everything it started, then reap it.
async fn kill_group(child: &mut tokio::process::Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) has no memory effects. The child was started with
        // process_group(0), so its pid is its group id, and it has not been
        // reaped yet (we hold it), so the id cannot have been reused.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.kill().await;
}

/// Read a stream to its end, keeping the first [`OUTPUT_LIMIT`] bytes.
/// Reading on past the limit keeps a chatty hook from blocking on a full pipe.
async fn read_bounded(mut r: impl AsyncRead + Unpin) -> String {
    let mut kept = Vec::new();
    let mut dropped = 0usize;
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = OUTPUT_LIMIT.saturating_sub(kept.len()).min(n);
        kept.extend_from_slice(&buf[..room]);
        dropped += n - room;
    }
    let mut text = String::from_utf8_lossy(&kept).into_owned();
    if dropped > 0 {
        text.push_str(&format!("… ({dropped} more bytes not kept)"));
    }
    text
}

async fn send_webhook(
    hook: &Webhook,
    body: &serde_json::Value,
    policy: RetryPolicy,
    timeout: Duration,
    cancel: CancellationToken,
    group: i64,
) {
    // An event notified once shutdown began (what the engine recorded last)
    // still gets one attempt, without waits: a fired token would start none.
    let (policy, cancel) = if cancel.is_cancelled() {
        (RetryPolicy { max_attempts: 1, ..policy }, CancellationToken::new())
    } else {
        (policy, cancel)
    };
    let what = format!("webhook {}", hook.shown);
    let last = AtomicU32::new(0);
    let op = |attempt: u32| {
        last.store(attempt, Ordering::Relaxed);
        post_once(hook, body, timeout)
    };
    match with_retries(&policy, Retry::new(&what, &cancel, Repeat::Always), op).await {
        Ok(()) => tracing::info!(group, "webhook {} delivered (attempt {})", hook.shown, last.load(Ordering::Relaxed)),
        Err(RetryError::Canceled) => {
            tracing::warn!(
                group,
                "webhook {} not delivered: shutdown after attempt {}",
                hook.shown,
                last.load(Ordering::Relaxed)
            )
        }
        Err(e) => {
            tracing::warn!(group, "webhook {} given up after attempt {}: {e}", hook.shown, last.load(Ordering::Relaxed))
        }
    }
}

async fn post_once(hook: &Webhook, body: &serde_json::Value, timeout: Duration) -> Result<(), HooksError> {
    let resp = hook
        .client
        .post(hook.url.clone())
        .timeout(timeout)
        .json(body)
        .send()
        .await
        .map_err(|e| HooksError::Transport(e.without_url()))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let text: String = resp.text().await.unwrap_or_default().chars().take(512).collect();
    let code = status.as_u16();
    let retry = status.is_server_error() || code == 408 || code == 429;
    Err(HooksError::Status { status: code, body: text, retry, retry_after })
}

/// `scheme://host[:port]` of `url`: enough to say where, never a path token or query secret.
fn shown_url(url: &reqwest::Url) -> String {
    match url.port() {
        Some(p) => format!("{}://{}:{p}", url.scheme(), url.host_str().unwrap_or("?")),
        None => format!("{}://{}", url.scheme(), url.host_str().unwrap_or("?")),
    }
}

#[cfg(test)]
mod tests;
