//! The consumers' cursors: each moves only past what its consumer is done
//! with, a failing webhook holds its own cursor and not the hooks', and a
//! restart delivers what was left. Real SQLite journal, real hook scripts,
//! a loopback webhook receiver.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::http::StatusCode;

use super::*;
use crate::config::HooksConfig;
use crate::group::{UploadGroup, Violation};
use crate::journal::prelude::*;
use crate::journal::{Enqueued, Journal, Store};
use crate::model::Layout;
use crate::retry::RetryPolicy;

#[test]
fn ended_groups_become_hook_events() {
    let ended = |state| Ended {
        event_id: 5,
        group_id: 3,
        state,
        name: "Shot".into(),
        path: PathBuf::from("/x/Shot"),
        library_id: Some(42),
        error: Some("why".into()),
        at_ms: 1_700_000_000_000,
    };
    let c = group_event(ended(GroupState::Completed)).unwrap();
    assert_eq!((c.kind, c.event_id, c.group_id, c.library_id), (EventKind::Completed, 5, 3, Some(42)));
    assert_eq!(c.at.as_millisecond(), 1_700_000_000_000);
    assert_eq!(group_event(ended(GroupState::Failed)).unwrap().kind, EventKind::Failed);
    let r = group_event(ended(GroupState::Rejected)).unwrap();
    assert_eq!((r.kind, r.error.as_deref()), (EventKind::Rejected, Some("why")));
    assert!(group_event(ended(GroupState::Canceled)).is_none());
}

/// A journal in `dir`, as the agent holds it.
fn journal(dir: &Path) -> (Arc<Journal>, AsyncJournal) {
    let j = Arc::new(Journal::open(&dir.join("j.sqlite3")).expect("open"));
    let store: Arc<dyn Store> = j.clone();
    (j, AsyncJournal::new(store))
}

/// A group that breaks a rule: the watcher records it `rejected` at once,
/// which is an ended group in the history.
fn reject(j: &Journal, name: &str) -> i64 {
    let root = PathBuf::from("/renders").join(name);
    let g = UploadGroup {
        name: name.into(),
        key: root.clone(),
        root: root.clone(),
        watch_path: Some(PathBuf::from("/renders")),
        layout: Layout::TwoD,
        perspective: None,
        description: None,
        folder_name: None,
        priority: 0,
        files: Vec::new(),
        fingerprint: format!("fp-{name}"),
        violations: vec![Violation { rule: "one_video", file: None, message: "no video file".into() }],
        media_check: crate::config::MediaCheck::Reject,
        unfinished: Vec::new(),
        warnings: Vec::new(),
    };
    match j.enqueue(&g).expect("enqueue") {
        Enqueued::Rejected(id) => id,
        other => panic!("expected rejected, got {other:?}"),
    }
}

/// A webhook receiver that answers 503 while `down`, else 200, counting
/// each group id it accepted.
#[derive(Default)]
struct Receiver {
    down: AtomicBool,
    hits: AtomicUsize,
    accepted: std::sync::Mutex<Vec<i64>>,
}

async fn receiver() -> (Arc<Receiver>, String) {
    let r = Arc::new(Receiver::default());
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(r): axum::extract::State<Arc<Receiver>>,
                 axum::Json(body): axum::Json<serde_json::Value>| async move {
                    r.hits.fetch_add(1, Ordering::SeqCst);
                    if r.down.load(Ordering::SeqCst) {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    r.accepted.lock().expect("not poisoned").push(body["groupId"].as_i64().unwrap_or(-1));
                    StatusCode::OK
                },
            ),
        )
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (r, format!("http://{addr}/hook"))
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(5),
        cap: Duration::from_millis(20),
        max_attempts: 2,
        budget: Duration::from_secs(10),
    }
}

/// A hook that appends its group id to `log`.
fn hook(dir: &Path, log: &Path) -> Vec<String> {
    let path = crate::ops::hooks::tests::script(
        dir,
        "hook",
        "echo \"$SPATIALGEN_GROUP_ID\" >> \"$1\"",
        ">> \"%~1\" echo %SPATIALGEN_GROUP_ID%",
    );
    vec![path, log.display().to_string()]
}

fn lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log).unwrap_or_default().lines().map(str::to_string).collect()
}

/// The notifier running for `hooks` on `j`, as the agent starts it.
struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

async fn start(j: &AsyncJournal, hooks: HooksConfig) -> Running {
    let notifier =
        Notifier::new(&hooks).expect("notifier").with_retry(fast(), Duration::from_secs(5)).with_hook_retry(fast());
    prepare_cursors(j, &notifier).await.expect("cursors");
    let mut cfg = Config::minimal("http://127.0.0.1:9", Path::new("/tmp/unused.sqlite3"));
    cfg.hooks = hooks;
    let (_tx, reloads) = watch::channel(Arc::new(cfg));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(notify_loop(Notifications {
        journal: j.clone(),
        notifier,
        key_env: "SPATIALGEN_API_KEY".into(),
        reloads,
        shutdown: shutdown.clone(),
    }));
    Running { shutdown, task }
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task).await.expect("stops").expect("no panic");
    }
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_webhook_holds_its_own_cursor_not_the_hooks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (j, aj) = journal(dir.path());
    let old = reject(&j, "before-start");
    let (r, url) = receiver().await;
    r.down.store(true, Ordering::SeqCst);
    let log = dir.path().join("hook.log");
    let hooks = HooksConfig { on_rejected: Some(hook(dir.path(), &log)), webhook: Some(url), ..HooksConfig::default() };
    let running = start(&aj, hooks.clone()).await;
    let start_at = j.last_event_id().unwrap();
    assert_eq!(j.cursor("webhook").unwrap(), Some(start_at), "a new consumer starts at the newest line");
    let (a, b) = (reject(&j, "a"), reject(&j, "b"));
    let end = j.last_event_id().unwrap();
    wait_until("the hook's cursor to pass both", || j.cursor("hook:on_rejected").unwrap() == Some(end)).await;
    assert_eq!(lines(&log), vec![a.to_string(), b.to_string()], "not the group from before the start");
    wait_until("the webhook to be tried", || r.hits.load(Ordering::SeqCst) >= 2).await;
    assert_eq!(j.cursor("webhook").unwrap(), Some(start_at), "held on the first undelivered group");
    // Held with a hold-off, not retried in a loop.
    let hits = r.hits.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(r.hits.load(Ordering::SeqCst), hits, "no hot loop while held");
    running.stop().await;
    assert_eq!(j.cursor("webhook").unwrap(), Some(start_at), "shutdown does not move it");

    // The receiver is back: the next start delivers both, each once, and nothing twice to the hook.
    r.down.store(false, Ordering::SeqCst);
    let running = start(&aj, hooks).await;
    wait_until("the webhook's cursor to pass both", || j.cursor("webhook").unwrap() == Some(end)).await;
    running.stop().await;
    assert_eq!(*r.accepted.lock().unwrap(), vec![a, b]);
    assert_eq!(lines(&log).len(), 2, "the hook had delivered them already");
    assert!(!r.accepted.lock().unwrap().contains(&old));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_consumer_loses_its_cursor_and_starts_afresh_when_added_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (j, aj) = journal(dir.path());
    let log = dir.path().join("hook.log");
    let hooks = HooksConfig { on_rejected: Some(hook(dir.path(), &log)), ..HooksConfig::default() };
    let running = start(&aj, hooks.clone()).await;
    let first = reject(&j, "first");
    wait_until("the hook", || lines(&log).len() == 1).await;
    running.stop().await;
    assert_eq!(lines(&log), vec![first.to_string()]);

    // Started without the hook: its cursor goes; what ends meanwhile is not its business.
    let running = start(&aj, HooksConfig::default()).await;
    assert_eq!(j.cursor("hook:on_rejected").unwrap(), None);
    reject(&j, "while-removed");
    running.stop().await;

    // Added again: it starts at its new beginning.
    let running = start(&aj, hooks).await;
    let later = reject(&j, "later");
    wait_until("the hook again", || lines(&log).len() == 2).await;
    running.stop().await;
    assert_eq!(lines(&log), vec![first.to_string(), later.to_string()]);
}
