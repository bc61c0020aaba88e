//! Operator controls inside the engine, in this process against the sandbox:
//! the window gate holds and releases the queue, priorities and finish
//! order decide who goes first, retries are reported with their reason, and
//! a reloaded config changes the engine's limits while it runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spatialgen_sync::config::Config;
use spatialgen_sync::journal::{GroupId, GroupState, Journal};
use spatialgen_sync::model::{PauseKind, RetryReason};
use spatialgen_sync::sandbox::Faults;
use spatialgen_sync::upload::{EngineOptions, GroupOutcome, Observer};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::support::*;
use spatialgen_sync::journal::prelude::*;

const KIB: usize = 1024;

/// Everything the engine told its observer.
#[derive(Default)]
struct Seen {
    ended: Mutex<Vec<(GroupId, GroupOutcome)>>,
    stored: AtomicU64,
    retried: Mutex<Vec<RetryReason>>,
    paused: Mutex<Vec<(PauseKind, bool)>>,
}

impl Observer for Seen {
    fn group_ended(&self, id: GroupId, outcome: &GroupOutcome) {
        self.ended.lock().unwrap().push((id, outcome.clone()));
    }
    fn part_stored(&self, bytes: u64) {
        self.stored.fetch_add(bytes, Ordering::Relaxed);
    }
    fn part_retried(&self, reason: RetryReason) {
        self.retried.lock().unwrap().push(reason);
    }
    fn paused(&self, reason: PauseKind, paused: bool) {
        self.paused.lock().unwrap().push((reason, paused));
    }
}

impl Seen {
    fn ended_ids(&self) -> Vec<GroupId> {
        self.ended.lock().unwrap().iter().map(|(id, _)| *id).collect()
    }
    fn last_pause(&self, reason: PauseKind) -> Option<bool> {
        self.paused.lock().unwrap().iter().rev().find(|(r, _)| *r == reason).map(|(_, p)| *p)
    }
}

/// A running engine and the handles a test pokes it with.
struct Running {
    seen: Arc<Seen>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), spatialgen_sync::upload::EngineError>>,
}

impl Running {
    fn start(w: &World, journal: &Arc<Journal>, opts: EngineOptions) -> Running {
        let seen = Arc::new(Seen::default());
        let opts = EngineOptions { observer: Some(seen.clone()), ..opts };
        let engine = w.engine(journal.clone(), KEY, opts);
        let (shutdown, task) = spawn_engine(engine);
        Running { seen, shutdown, task }
    }

    async fn stop(self) -> Arc<Seen> {
        self.shutdown.cancel();
        self.task.await.unwrap().expect("engine stops cleanly");
        self.seen
    }
}

fn states(journal: &Journal, ids: &[GroupId]) -> Vec<GroupState> {
    ids.iter().map(|id| journal.group(*id).unwrap().state).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_gate_holds_the_queue_and_opening_it_drains_it() {
    let w = World::new(16 * KIB as u64, "max_groups = 2").await;
    let journal = w.journal();
    let ids: Vec<GroupId> = (0..3)
        .map(|i| {
            let f = w.export(&format!("night-{i}"), &[("v.mov", 40 * KIB + i)]);
            w.enqueue(&journal, &w.group(&f, "2D", "Regular"))
        })
        .collect();
    let (gate_tx, gate_rx) = watch::channel(false);
    let run = Running::start(&w, &journal, EngineOptions { gate: Some(gate_rx), ..fast() });

    let seen = run.seen.clone();
    wait_for(Duration::from_secs(10), "the engine to report the window pause", || {
        seen.last_pause(PauseKind::Window) == Some(true)
    })
    .await;
    // A negative can only be watched for a while: several poll rounds (50 ms each).
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(w.sandbox.stats().api_total("start"), 0, "no group was started while closed");
    assert_eq!(states(&journal, &ids), vec![GroupState::Queued; 3]);

    gate_tx.send(true).unwrap();
    let j = journal.clone();
    let all = ids.clone();
    wait_for(Duration::from_secs(20), "the queue to drain", || {
        states(&j, &all).iter().all(|s| *s == GroupState::Completed)
    })
    .await;
    let seen = run.stop().await;
    assert_eq!(seen.last_pause(PauseKind::Window), Some(false), "the resume was reported");
    assert_eq!(w.sandbox.library().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_gate_mid_upload_lets_parts_in_flight_finish_and_starts_no_new_one() {
    let w = World::new(16 * KIB as u64, "max_parts_in_flight = 2").await;
    w.sandbox.set_faults(Faults { latency: Duration::from_millis(60), ..Faults::default() });
    let journal = w.journal();
    let f = w.export("long-night", &[("v.mov", 30 * 16 * KIB)]);
    let id = w.enqueue(&journal, &w.group(&f, "2D", "Regular"));
    let (gate_tx, gate_rx) = watch::channel(true);
    let run = Running::start(&w, &journal, EngineOptions { gate: Some(gate_rx), ..fast() });

    let j = journal.clone();
    wait_for(Duration::from_secs(20), "a few parts", || j.summary(id).unwrap().parts_done >= 4).await;
    gate_tx.send(false).unwrap();
    let puts_at_close = w.sandbox.stats().storage_puts;
    // What was in flight finishes and is recorded; then nothing moves.
    let sb = w.sandbox.clone();
    let j = journal.clone();
    wait_for(Duration::from_secs(10), "in-flight parts to be recorded", || {
        u64::from(j.summary(id).unwrap().parts_done) == sb.stats().storage.get(&200).copied().unwrap_or(0)
    })
    .await;
    // "Nothing moves" is a negative, so it is watched for several poll rounds (50 ms each).
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stats = w.sandbox.stats();
    assert!(
        stats.storage_puts <= puts_at_close + 2,
        "{} PUTs after the close; at most the 2 in flight may still arrive",
        stats.storage_puts - puts_at_close
    );
    let held = journal.summary(id).unwrap();
    assert_eq!(held.state, GroupState::Uploading);
    assert!(held.parts_done < held.parts_total, "the group is held, not finished");

    gate_tx.send(true).unwrap();
    let j = journal.clone();
    wait_for(Duration::from_secs(20), "the rest of the parts", || j.group(id).unwrap().state == GroupState::Completed)
        .await;
    run.stop().await;
    assert_library_matches(&w.sandbox, w.sandbox.library()[0].session_id.as_str(), &f);
    assert_eq!(w.sandbox.stats().put_bytes, journal.group(id).unwrap().total_bytes(), "no part sent twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_first_then_the_export_that_finished_first() {
    let w = World::new(64 * KIB as u64, "max_groups = 1").await;
    let journal = w.journal();
    // Seen in the order a, b (a has the lower id) but b finished first.
    let fa = w.export("a-low-late", &[("v.mov", 10 * KIB)]);
    let fb = w.export("b-low-early", &[("v.mov", 11 * KIB)]);
    let fc = w.export("c-high-latest", &[("v.mov", 12 * KIB)]);
    journal.note_waiting(&fa, "a-low-late", None).unwrap();
    journal.note_waiting(&fb, "b-low-early", None).unwrap();
    let b = w.enqueue(&journal, &w.group(&fb, "2D", "Regular"));
    // Separate the recorded times (milliseconds) so the order is the clock's, not a tie.
    std::thread::sleep(Duration::from_millis(5));
    let a = w.enqueue(&journal, &w.group(&fa, "2D", "Regular"));
    std::thread::sleep(Duration::from_millis(5));
    let mut gc = w.group(&fc, "2D", "Regular");
    gc.priority = 10;
    let c = w.enqueue(&journal, &gc);
    assert!(a < b, "a was seen first");
    assert_eq!(journal.queue().unwrap(), vec![c, b, a]);

    // `status --json` shows the same order before anything runs.
    let s = w.run(KEY, &["status", "--config", w.config_path.to_str().unwrap(), "--json"]).await;
    assert_eq!(s.code, Some(0), "{s:?}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&s.stdout).unwrap();
    let place = |id: GroupId| rows.iter().find(|r| r["id"] == id).unwrap()["queuePosition"].clone();
    assert_eq!((place(c), place(b), place(a)), (1.into(), 2.into(), 3.into()));
    let t = w.run(KEY, &["status", "--config", w.config_path.to_str().unwrap()]).await;
    let line = |name: &str| t.stdout.lines().find(|l| l.contains(name)).unwrap().to_string();
    assert_eq!(line("c-high-latest").split_whitespace().nth(1), Some("1"), "{}", t.stdout);
    assert_eq!(line("a-low-late").split_whitespace().nth(1), Some("3"), "{}", t.stdout);

    let run = Running::start(&w, &journal, fast());
    let seen = run.seen.clone();
    wait_for(Duration::from_secs(20), "all three", || seen.ended_ids().len() == 3).await;
    let seen = run.stop().await;
    assert_eq!(seen.ended_ids(), vec![c, b, a], "one at a time, in queue order");
    let lib: Vec<String> = w.sandbox.library().iter().map(|e| e.video_name.clone()).collect();
    assert_eq!(lib, vec!["c-high-latest", "b-low-early", "a-low-late"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_parts_are_reported_with_their_reason() {
    let w = World::new(8 * KIB as u64, "max_parts_in_flight = 3").await;
    w.sandbox.set_faults(Faults {
        put_5xx: 0.15,
        corrupt_etag: 0.15,
        reset_mid_body: 0.15,
        seed: Some(7),
        ..Faults::default()
    });
    let journal = w.journal();
    let f = w.export("stormy", &[("v.mov", 40 * 8 * KIB)]);
    let id = w.enqueue(&journal, &w.group(&f, "2D", "Regular"));
    let run = Running::start(&w, &journal, fast());
    let j = journal.clone();
    wait_for(Duration::from_secs(30), "the group", || j.group(id).unwrap().state == GroupState::Completed).await;
    let seen = run.stop().await;
    let retried = seen.retried.lock().unwrap().clone();
    for reason in [RetryReason::ServerError, RetryReason::EtagMismatch, RetryReason::Reset] {
        assert!(retried.contains(&reason), "no {reason:?} in {retried:?}");
    }
    let stats = w.sandbox.stats();
    let injected =
        stats.fault_count("put_5xx") + stats.fault_count("corrupt_etag") + stats.fault_count("reset_mid_body");
    assert_eq!(retried.len() as u64, injected, "one report per injected PUT fault: {retried:?}");
    assert_eq!(seen.stored.load(Ordering::Relaxed), journal.group(id).unwrap().total_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_url_is_reported_as_url_expired() {
    let w = World::new(16 * KIB as u64, "max_parts_in_flight = 1").await;
    w.sandbox.set_faults(Faults { latency: Duration::from_millis(30), ..Faults::default() });
    let journal = w.journal();
    let f = w.export("stale", &[("v.mov", 20 * 16 * KIB)]);
    let id = w.enqueue(&journal, &w.group(&f, "2D", "Regular"));
    let run = Running::start(&w, &journal, fast());
    let j = journal.clone();
    wait_for(Duration::from_secs(20), "some parts", || j.summary(id).unwrap().parts_done >= 2).await;
    w.sandbox.expire_all_urls();
    let j = journal.clone();
    wait_for(Duration::from_secs(20), "the group", || j.group(id).unwrap().state == GroupState::Completed).await;
    let seen = run.stop().await;
    let retried = seen.retried.lock().unwrap().clone();
    assert!(retried.contains(&RetryReason::UrlExpired), "{retried:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_config_raises_max_groups_while_the_engine_runs() {
    let w = World::new(16 * KIB as u64, "max_groups = 1").await;
    w.sandbox.set_faults(Faults { latency: Duration::from_millis(40), ..Faults::default() });
    let journal = w.journal();
    let ids: Vec<GroupId> = (0..3)
        .map(|i| {
            let f = w.export(&format!("wide-{i}"), &[("v.mov", 12 * 16 * KIB + i)]);
            w.enqueue(&journal, &w.group(&f, "2D", "Regular"))
        })
        .collect();
    let (cfg_tx, cfg_rx) = watch::channel(w.config());
    let run = Running::start(&w, &journal, EngineOptions { config: Some(cfg_rx), ..fast() });
    let j = journal.clone();
    wait_for(Duration::from_secs(10), "the first group to start", || {
        j.list().unwrap().iter().any(|g| g.state == GroupState::Uploading)
    })
    .await;
    let uploading = |j: &Journal| j.list().unwrap().iter().filter(|g| g.state == GroupState::Uploading).count();
    assert_eq!(uploading(&journal), 1, "max_groups = 1");

    w.write_config("max_groups = 3", "");
    let new: Arc<Config> = w.config();
    cfg_tx.send(new).unwrap();
    let j = journal.clone();
    wait_for(Duration::from_secs(10), "three groups at once", || uploading(&j) == 3).await;
    let all = ids.clone();
    let j = journal.clone();
    wait_for(Duration::from_secs(30), "all", || states(&j, &all).iter().all(|s| *s == GroupState::Completed)).await;
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_pause_holds_new_parts_lets_those_in_flight_finish_and_resume_drains() {
    let w = World::new(16 * KIB as u64, "max_groups = 1\nmax_parts_in_flight = 2").await;
    w.sandbox.set_faults(Faults { latency: Duration::from_millis(60), ..Faults::default() });
    let journal = w.journal();
    let f = w.export("held-by-operator", &[("v.mov", 30 * 16 * KIB)]);
    let id = w.enqueue(&journal, &w.group(&f, "2D", "Regular"));
    let waiting = w.export("queued-behind", &[("v.mov", 20 * KIB)]);
    let second = w.enqueue(&journal, &w.group(&waiting, "2D", "Regular"));
    let run = Running::start(&w, &journal, EngineOptions { ..fast() });
    let config = w.config_path.to_str().unwrap().to_string();

    let j = journal.clone();
    wait_for(Duration::from_secs(20), "a few parts", || j.summary(id).unwrap().parts_done >= 4).await;
    // The command, in another process: the engine sees it in the journal.
    let p = w.run(KEY, &["pause", "--config", &config]).await;
    assert_eq!(p.code, Some(0), "{p:?}");
    assert!(p.stdout.contains("paused by operator"), "{p:?}");
    let seen = run.seen.clone();
    wait_for(Duration::from_secs(10), "the engine to report the operator pause", || {
        seen.last_pause(PauseKind::Operator) == Some(true)
    })
    .await;
    let puts_at_pause = w.sandbox.stats().storage_puts;
    let sb = w.sandbox.clone();
    let j = journal.clone();
    wait_for(Duration::from_secs(10), "in-flight parts to be recorded", || {
        u64::from(j.summary(id).unwrap().parts_done) == sb.stats().storage.get(&200).copied().unwrap_or(0)
    })
    .await;
    // "Nothing moves" is a negative, watched for several poll rounds (50 ms each).
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stats = w.sandbox.stats();
    assert!(stats.storage_puts <= puts_at_pause + 2, "{} PUTs after the pause", stats.storage_puts - puts_at_pause);
    let held = journal.summary(id).unwrap();
    assert!(held.parts_done < held.parts_total, "held, not finished");
    assert_eq!(journal.group(second).unwrap().state, GroupState::Queued, "no new group starts");

    let s = w.run(KEY, &["status", "--config", &config]).await;
    assert!(s.stdout.lines().next().unwrap_or("").starts_with("paused by operator since "), "{s:?}");
    let s = w.run(KEY, &["status", "--config", &config, "--json"]).await;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&s.stdout).unwrap();
    assert!(rows.iter().all(|r| r["paused"]["reason"] == "operator"), "{rows:?}");

    let r = w.run(KEY, &["resume", "--config", &config]).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    let j = journal.clone();
    wait_for(Duration::from_secs(30), "the queue to drain", || {
        states(&j, &[id, second]).iter().all(|s| *s == GroupState::Completed)
    })
    .await;
    let seen = run.stop().await;
    assert_eq!(seen.last_pause(PauseKind::Operator), Some(false), "the resume was reported");
    assert_eq!(w.sandbox.stats().put_bytes, journal.group(id).unwrap().total_bytes() + 20 * KIB as u64);
}
