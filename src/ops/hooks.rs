//! Notifications when a group ends: `on_complete` / `on_failure` /
//! `on_rejected` commands and an optional signed JSON webhook.
//!
//! Each of them is a [`Consumer`] with a stable name (`hook:on_complete`,
//! ..., `webhook`) under which the agent keeps its own cursor in the journal
//! (see `agent/notify.rs`): a consumer's cursor passes an event only once
//! [`Notifier::deliver`] said [`Delivery::Delivered`] or
//! [`Delivery::GaveUp`], so a crash repeats at most the event in flight and
//! loses none, and a failing webhook never holds the hooks back.
//!
//! Invariants:
//! - Commands are exec'd directly from their argv (no shell, so no quoting
//!   or injection through file names); the group's facts travel in
//!   `SPATIALGEN_*` environment variables. The agent's own environment is
//!   inherited *minus* the variable holding the API key.
//! - A command succeeds when it exits 0. A command that outlives `timeout`
//!   is killed with its whole process group (a script's children die with
//!   it), and its output, captured up to [`OUTPUT_LIMIT`] bytes per stream,
//!   is logged. A command that fails (non-zero exit, killed) is run again
//!   by [`HOOK_RETRY`] (3 attempts); then it is given up, logged at error
//!   level: a script that keeps failing is more likely broken than waiting
//!   for something, and must not stop the notifications after it.
//! - The webhook is retried on transport errors, 408, 429 and 5xx by
//!   [`crate::retry`]: full-jitter exponential backoff, a bounded number of
//!   attempts within a time budget, the receiver's `Retry-After` honoured in
//!   both forms (seconds or HTTP date). When that round's budget runs out
//!   the event is *not* given up ([`Delivery::Later`]): the agent tries it
//!   again after [`HOLD_OFF`], so a receiver that is down for a day gets
//!   everything when it is back. A refusal (any other 4xx) is given up at
//!   once: sending the same body again cannot change the answer. The POST
//!   is repeated even when it may have arrived ([`Repeat::Always`]):
//!   delivery is at-least-once and receivers de-duplicate by `groupId` and
//!   `eventId`. Its URL is logged as scheme and host only: webhook URLs
//!   often carry a secret in their path. The body is signed (see `webhook.rs`).
//! - Shutdown ([`Notifier::with_cancel`]): no attempt starts after the token
//!   fires and every wait ends at once ([`Delivery::Stopped`]); a command
//!   already running gets [`Notifier::with_grace`] to finish, then it is
//!   killed and counts as not delivered (the next start runs it again).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ConfigError, HooksConfig};
use crate::retry::ErrorClass;
use crate::retry::{Repeat, Retry, RetryError, RetryPolicy, Retryable, with_retries};
use tree::ProcessTree;

mod tree;
mod webhook;

pub use webhook::{SIGNATURE_HEADER, sign};
use webhook::{Sent, Webhook};

/// Bytes of stdout (and of stderr) kept from one hook run for the log.
pub const OUTPUT_LIMIT: usize = 8 * 1024;

/// Variables never passed to hooks, whatever the config says: the default key variable.
const ALWAYS_SCRUBBED: &[&str] = &["SPATIALGEN_API_KEY"];

#[derive(Debug, thiserror::Error)]
pub enum HooksError {
    /// The webhook URL from the config does not parse.
    #[error("hooks.webhook: {0}")]
    BadUrl(String),
    /// `webhook_secret_file` is unreadable, too open, or empty.
    #[error(transparent)]
    Secret(#[from] ConfigError),
    /// The webhook body could not be serialized.
    #[error("webhook body: {0}")]
    Body(String),
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
    /// The command ran and did not exit 0.
    #[error("{program} failed ({status})")]
    Exit { program: String, status: String },
    /// The command outlived the timeout and was killed.
    #[error("{program} killed after the {} timeout", crate::config::Dur(*.after))]
    TimedOut { program: String, after: Duration },
    /// Shutdown came while the command ran, and its grace ran out: killed.
    #[error("{program} killed at shutdown")]
    Stopped { program: String },
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
            HooksError::Transport(_) | HooksError::Exit { .. } | HooksError::TimedOut { .. } => true,
            _ => false,
        }
    }
}

impl Retryable for HooksError {
    fn class(&self) -> ErrorClass {
        match self {
            HooksError::Status { retry: true, retry_after, .. } => ErrorClass::Retry { after: *retry_after },
            HooksError::Transport(_) | HooksError::Exit { .. } | HooksError::TimedOut { .. } => {
                ErrorClass::Retry { after: None }
            }
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

/// One receiver of notifications. Each keeps its own cursor in the journal,
/// under [`Consumer::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Consumer {
    OnComplete,
    OnFailure,
    OnRejected,
    Webhook,
}

impl Consumer {
    pub const ALL: [Consumer; 4] = [Consumer::OnComplete, Consumer::OnFailure, Consumer::OnRejected, Consumer::Webhook];

    /// The name of its cursor in the journal: stable, never renamed (a
    /// renamed cursor would start again from the newest event).
    pub fn name(self) -> &'static str {
        match self {
            Consumer::OnComplete => "hook:on_complete",
            Consumer::OnFailure => "hook:on_failure",
            Consumer::OnRejected => "hook:on_rejected",
            Consumer::Webhook => "webhook",
        }
    }

    /// Does it receive events of `kind`? (The webhook receives all three.)
    pub fn wants(self, kind: EventKind) -> bool {
        match self {
            Consumer::OnComplete => kind == EventKind::Completed,
            Consumer::OnFailure => kind == EventKind::Failed,
            Consumer::OnRejected => kind == EventKind::Rejected,
            Consumer::Webhook => true,
        }
    }
}

/// How one [`Notifier::deliver`] ended, which says whether the consumer's
/// cursor may pass the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The command exited 0, the webhook answered 2xx: move on.
    Delivered,
    /// Failed for good (logged at error level): a command that failed every
    /// attempt or cannot start, a webhook the receiver refused. Move on.
    GaveUp,
    /// The webhook is still failing in a way that may pass (the receiver is
    /// down, 5xx, 429): keep the cursor here and try again after [`HOLD_OFF`].
    Later,
    /// Shutdown came first: keep the cursor (the next start repeats it).
    Stopped,
}

/// The facts about one group that ended.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupEvent {
    pub kind: EventKind,
    /// The journal's history line that recorded the end: with the group id,
    /// what a receiver de-duplicates on (a group retried after failing can
    /// end twice).
    pub event_id: i64,
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
            ("SPATIALGEN_EVENT_ID", self.event_id.to_string()),
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
            "eventId": self.event_id,
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

/// The webhook's retry policy for one round unless [`Notifier::with_retry`]
/// replaces it: delays up to 1 s doubling to 60 s, 6 attempts, within 10 minutes.
pub const WEBHOOK_RETRY: RetryPolicy = RetryPolicy {
    base: Duration::from_secs(1),
    cap: Duration::from_secs(60),
    max_attempts: 6,
    budget: Duration::from_secs(600),
};

/// A command's retry policy unless [`Notifier::with_hook_retry`] replaces
/// it: 3 attempts, delays up to 5 s doubling to 30 s, within 10 minutes.
pub const HOOK_RETRY: RetryPolicy = RetryPolicy {
    base: Duration::from_secs(5),
    cap: Duration::from_secs(30),
    max_attempts: 3,
    budget: Duration::from_secs(600),
};

/// How long a webhook still failing after a round of retries
/// ([`Delivery::Later`]) waits before the next round; the agent doubles it
/// per round up to [`HOLD_OFF_CAP`]. Only that consumer waits.
pub const HOLD_OFF: Duration = Duration::from_secs(30);
/// The longest wait between two rounds of a failing webhook.
pub const HOLD_OFF_CAP: Duration = Duration::from_secs(600);

/// Timeout of one webhook POST.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a command running at shutdown may still finish unless
/// [`Notifier::with_grace`] says otherwise.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Runs the configured hooks and webhook for each [`GroupEvent`].
#[derive(Debug, Clone)]
pub struct Notifier {
    on_complete: Option<Vec<String>>,
    on_failure: Option<Vec<String>>,
    on_rejected: Option<Vec<String>>,
    timeout: Duration,
    webhook: Option<Webhook>,
    retry: RetryPolicy,
    hook_retry: RetryPolicy,
    /// Per-attempt webhook timeout.
    request_timeout: Duration,
    /// No attempt starts once it fired (the agent's shutdown token).
    cancel: CancellationToken,
    /// How long a running command may still finish after `cancel` fired.
    grace: Duration,
    /// Environment variables removed before a hook starts (the API key's).
    scrub: Vec<String>,
    /// Every notification started by [`Notifier::notify`], so that
    /// [`Notifier::drain`] can wait for them.
    tasks: TaskTracker,
}

impl Notifier {
    /// The notifier for `cfg`; reads the webhook's signing secret (0600
    /// file) now, so a bad one stops startup or a reload with its reason.
    pub fn new(cfg: &HooksConfig) -> Result<Notifier, HooksError> {
        let webhook = match &cfg.webhook {
            None => None,
            Some(raw) => Some(Webhook::new(raw, cfg.webhook_secret()?)?),
        };
        Ok(Notifier {
            on_complete: cfg.on_complete.clone(),
            on_failure: cfg.on_failure.clone(),
            on_rejected: cfg.on_rejected.clone(),
            timeout: cfg.timeout.0,
            webhook,
            retry: WEBHOOK_RETRY,
            hook_retry: HOOK_RETRY,
            request_timeout: WEBHOOK_TIMEOUT,
            cancel: CancellationToken::new(),
            grace: SHUTDOWN_GRACE,
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

    /// Replace the commands' retry policy.
    pub fn with_hook_retry(mut self, retry: RetryPolicy) -> Notifier {
        self.hook_retry = retry;
        self
    }

    /// Start no attempt once `cancel` fires, and end every wait between
    /// attempts at once (pass the agent's shutdown token).
    pub fn with_cancel(mut self, cancel: CancellationToken) -> Notifier {
        self.cancel = cancel;
        self
    }

    /// How long a command already running at shutdown may still finish.
    pub fn with_grace(mut self, grace: Duration) -> Notifier {
        self.grace = grace;
        self
    }

    /// The consumers this notifier has: each configured command, and the webhook.
    pub fn consumers(&self) -> Vec<Consumer> {
        Consumer::ALL.into_iter().filter(|c| self.has(*c)).collect()
    }

    fn has(&self, c: Consumer) -> bool {
        match c {
            Consumer::Webhook => self.webhook.is_some(),
            _ => self.argv(c).is_some(),
        }
    }

    fn argv(&self, c: Consumer) -> Option<&Vec<String>> {
        let argv = match c {
            Consumer::OnComplete => &self.on_complete,
            Consumer::OnFailure => &self.on_failure,
            Consumer::OnRejected => &self.on_rejected,
            Consumer::Webhook => return None,
        };
        argv.as_ref().filter(|a| !a.is_empty())
    }

    /// Deliver `ev` to consumer `c`, with that consumer's retries, and say
    /// whether its cursor may pass the event. An event `c` does not want,
    /// or a consumer this notifier does not have, is [`Delivery::Delivered`]
    /// (there is nothing to wait for).
    pub async fn deliver(&self, c: Consumer, ev: &GroupEvent) -> Delivery {
        if !c.wants(ev.kind) {
            return Delivery::Delivered;
        }
        if self.cancel.is_cancelled() {
            return Delivery::Stopped;
        }
        let id = ev.group_id;
        if c == Consumer::Webhook {
            let Some(hook) = &self.webhook else { return Delivery::Delivered };
            let body = ev.webhook_body();
            return match hook.send(&body, self.retry, self.request_timeout, &self.cancel, id).await {
                Sent::Delivered => Delivery::Delivered,
                Sent::Refused => Delivery::GaveUp,
                Sent::Failing => Delivery::Later,
                Sent::Canceled => Delivery::Stopped,
            };
        }
        let Some(argv) = self.argv(c) else { return Delivery::Delivered };
        let env = ev.env();
        let what = format!("hook {}", c.name());
        let op = |_attempt: u32| run_hook(argv, &env, &self.scrub, self.timeout, &self.cancel, self.grace);
        match with_retries(&self.hook_retry, Retry::new(&what, &self.cancel, Repeat::Always), op).await {
            Ok(()) => Delivery::Delivered,
            Err(RetryError::Canceled) | Err(RetryError::Stopped(HooksError::Stopped { .. })) => {
                tracing::warn!(group = id, "{what}: not run to its end: shutdown");
                Delivery::Stopped
            }
            Err(e) => {
                tracing::error!(group = id, "{what}: given up: {e}");
                Delivery::GaveUp
            }
        }
    }

    /// Deliver `ev` to every consumer in the background, once, with no
    /// cursor (for one-off use and tests; the agent uses [`Notifier::deliver`]).
    /// Must be called from within a tokio runtime; outside one the event is logged and dropped.
    pub fn notify(&self, ev: GroupEvent) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(group = ev.group_id, "notification dropped: no async runtime");
            return;
        };
        for c in self.consumers().into_iter().filter(|c| c.wants(ev.kind)) {
            let (me, ev) = (self.clone(), ev.clone());
            self.tasks.spawn_on(
                async move {
                    me.deliver(c, &ev).await;
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
/// Fails unless it exits 0. Once `cancel` fires, it may run `grace` longer.
async fn run_hook(
    argv: &[String],
    env: &[(&'static str, String)],
    scrub: &[String],
    timeout: Duration,
    cancel: &CancellationToken,
    grace: Duration,
) -> Result<(), HooksError> {
    let program = argv[0].clone();
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&argv[1..]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    for var in scrub {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    tree::prepare(&mut cmd);
    let mut child = spawn(&mut cmd).await.map_err(|source| HooksError::Spawn { program: program.clone(), source })?;
    let tree = ProcessTree::adopt(&child);
    let stdout = child.stdout.take().map(|s| tokio::spawn(read_bounded(s)));
    let stderr = child.stderr.take().map(|s| tokio::spawn(read_bounded(s)));

    let stop = async {
        cancel.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    let status = tokio::select! {
        status = child.wait() => Ok(status.map_err(|source| HooksError::Wait { program: program.clone(), source })?),
        () = tokio::time::sleep(timeout) => Err(HooksError::TimedOut { program: program.clone(), after: timeout }),
        () = stop => Err(HooksError::Stopped { program: program.clone() }),
    };
    if status.is_err() {
        tree.kill(&mut child).await;
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
        Ok(s) if s.success() => {
            tracing::info!("hook {program} finished{out}");
            Ok(())
        }
        Ok(s) => {
            tracing::warn!("hook {program} failed ({s}){out}");
            Err(HooksError::Exit { program, status: s.to_string() })
        }
        Err(e) => {
            tracing::warn!("hook {e}{out}");
            Err(e)
        }
    }
}

/// Start `cmd`, retrying briefly on ETXTBSY: a script that was just written
/// (or is being replaced) can be "busy" while another process still holds it open.
#[cfg(unix)]
async fn spawn(cmd: &mut tokio::process::Command) -> std::io::Result<tokio::process::Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 10 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

/// Start `cmd` (ETXTBSY is a Unix condition).
#[cfg(not(unix))]
async fn spawn(cmd: &mut tokio::process::Command) -> std::io::Result<tokio::process::Child> {
    cmd.spawn()
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

#[cfg(test)]
pub(crate) mod tests;
