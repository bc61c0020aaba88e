//! The engine in this process against the sandbox: layouts, byte identity,
//! faults, URL refresh, ETag corruption, expiry, cancel, source changes,
//! a refused key, shutdown and resume, after-upload actions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use spatialgen_sync::journal::{GroupState, Journal, RequestKind};
use spatialgen_sync::sandbox::{Faults, SessionStatus};
use spatialgen_sync::upload::GroupOutcome;
use tokio_util::sync::CancellationToken;

use crate::support::*;
use spatialgen_sync::journal::RequestResult;
use spatialgen_sync::journal::prelude::*;
use spatialgen_sync::model::Strategy;

const KIB: usize = 1024;

/// Run the engine until every listed group is in a final state (or panic after `limit`).
async fn run_until_done(w: &World, journal: &Arc<Journal>, ids: &[i64], limit: Duration) {
    let (shutdown, task) = spawn_engine(w.engine(journal.clone(), KEY, fast()));
    let j = journal.clone();
    let ids = ids.to_vec();
    wait_for(limit, "every group to end", || {
        ids.iter().all(|id| {
            let s = j.group(*id).unwrap().state;
            s.is_terminal() || s == GroupState::Failed
        })
    })
    .await;
    shutdown.cancel();
    task.await.unwrap().expect("engine stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_d_separate_and_aiv_groups_arrive_byte_identical() {
    let w = World::new(64 * KIB as u64, "max_parts_in_flight = 4\nmax_groups = 3\npart_url_batch = 3").await;
    let journal = w.journal();
    // 2D: a multipart video, audio and a subtitle that fit one part (single_put)
    let a = w.export("flat-2d", &[("clip.mov", 300 * KIB + 17), ("clip.en.m4a", 40 * KIB), ("clip.en.srt", 900)]);
    // Separate: L/R + aime + fcpxmld zip
    let b = w.export(
        "stereo",
        &[("shot_L.mov", 200 * KIB), ("shot_R.mov", 200 * KIB + 1), ("shot.aime", 3000), ("shot.fcpxmld.zip", 5000)],
    );
    // AIV: .aivu, perspective 180
    let c = w.export("immersive", &[("film.aivu", 130 * KIB)]);
    let ga = w.group(&a, "2D", "Regular");
    let gb = w.group(&b, "Separate", "Regular");
    let gc = w.group(&c, "AIV", "180");
    let ids = [w.enqueue(&journal, &ga), w.enqueue(&journal, &gb), w.enqueue(&journal, &gc)];
    run_until_done(&w, &journal, &ids, Duration::from_secs(30)).await;

    let lib = w.sandbox.library();
    assert_eq!(lib.len(), 3, "one library entry per group");
    for (id, folder) in ids.iter().zip([&a, &b, &c]) {
        let g = journal.group(*id).unwrap();
        assert_eq!(g.state, GroupState::Completed, "{:?}", g.error);
        assert!(g.library_id.is_some());
        assert!(g.finished);
        assert_library_matches(&w.sandbox, g.session_id.as_deref().unwrap(), folder);
        let s = journal.summary(*id).unwrap();
        assert_eq!(s.bytes_uploaded, s.bytes_total);
    }
    let gb = journal.group(ids[1]).unwrap();
    let strategies: Vec<_> = gb.files.iter().map(|f| f.strategy.unwrap()).collect();
    assert!(strategies.contains(&Strategy::Multipart) && strategies.contains(&Strategy::SinglePut), "{strategies:?}");
    assert!(w.sandbox.violations().is_empty(), "{:?}", w.sandbox.violations());
    let stats = w.sandbox.stats();
    let total: u64 = ids.iter().map(|id| journal.group(*id).unwrap().total_bytes()).sum();
    assert_eq!(stats.put_bytes, total, "no byte sent twice without faults");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_storm_completes_every_group_exactly_once() {
    let w = World::new(16 * KIB as u64, "max_parts_in_flight = 6\nmax_groups = 3").await;
    w.sandbox.set_faults(Faults {
        api_5xx: 0.15,
        put_5xx: 0.15,
        rate_limit: 0.03,
        retry_after: Duration::from_millis(100),
        reset_mid_body: 0.1,
        corrupt_etag: 0.15,
        seed: Some(7),
        ..Faults::default()
    });
    let journal = w.journal();
    let mut ids = Vec::new();
    let mut folders = Vec::new();
    for i in 0..5 {
        let f = w.export(&format!("storm-{i}"), &[("v.mov", 150 * KIB + i * 1000), ("v.en.srt", 2000 + i)]);
        ids.push(w.enqueue(&journal, &w.group(&f, "2D", "Regular")));
        folders.push(f);
    }
    run_until_done(&w, &journal, &ids, Duration::from_secs(90)).await;
    let stats = w.sandbox.stats();
    for kind in ["api_5xx", "put_5xx", "reset_mid_body", "corrupt_etag"] {
        assert!(stats.fault_count(kind) > 0, "the storm injected no {kind}: {:?}", stats.faults);
    }
    assert_eq!(w.sandbox.library().len(), 5, "exactly one library entry per group");
    for (id, f) in ids.iter().zip(&folders) {
        let g = journal.group(*id).unwrap();
        assert_eq!(g.state, GroupState::Completed, "{:?}", g.error);
        assert_library_matches(&w.sandbox, g.session_id.as_deref().unwrap(), f);
    }
    assert_eq!(w.sandbox.sessions().len(), 5, "no group was created twice");
    let bad: Vec<_> =
        w.sandbox.violations().into_iter().filter(|v| format!("{:?}", v.kind) != "EtagMismatch").collect();
    assert!(bad.is_empty(), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_urls_are_refreshed_and_corrupt_etags_caught() {
    let w = World::new(16 * KIB as u64, "max_parts_in_flight = 2").await;
    w.sandbox.set_faults(Faults {
        latency: Duration::from_millis(15),
        corrupt_etag: 0.2,
        seed: Some(3),
        ..Faults::default()
    });
    let journal = w.journal();
    let f = w.export("refresh", &[("v.mov", 400 * KIB)]);
    let id = w.enqueue(&journal, &w.group(&f, "2D", "Regular"));
    let engine = w.engine(journal.clone(), KEY, fast());
    let (shutdown, task) = spawn_engine(engine);
    let j = journal.clone();
    wait_for(Duration::from_secs(20), "a few parts done", || j.summary(id).unwrap().parts_done >= 3).await;
    w.sandbox.expire_all_urls();
    let j = journal.clone();
    wait_for(Duration::from_secs(30), "the group to complete", || j.group(id).unwrap().state == GroupState::Completed)
        .await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let stats = w.sandbox.stats();
    assert!(stats.forbidden > 0, "some PUT met an expired URL");
    assert!(stats.fault_count("corrupt_etag") > 0);
    let g = journal.group(id).unwrap();
    assert_library_matches(&w.sandbox, g.session_id.as_deref().unwrap(), &f);
    assert!(
        w.sandbox.violations().iter().all(|v| format!("{:?}", v.kind) != "EtagMismatch"),
        "a bad ETag was completed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_the_server_forgot_expires_and_is_re_queued() {
    let w = World::new(16 * KIB as u64, "max_parts_in_flight = 2").await;
    w.sandbox.set_faults(Faults { latency: Duration::from_millis(20), ..Faults::default() });
    let journal = w.journal();
    let f = w.export("late", &[("v.mov", 300 * KIB)]);
    let id = w.enqueue(&journal, &w.group(&f, "2D", "Regular"));
    let engine = w.engine(journal.clone(), KEY, fast());
    let (shutdown, task) = spawn_engine(engine);
    let j = journal.clone();
    wait_for(Duration::from_secs(20), "some parts done", || j.summary(id).unwrap().parts_done >= 2).await;
    w.sandbox.advance_clock(Duration::from_secs(5 * 24 * 3600 + 60));
    let j = journal.clone();
    wait_for(Duration::from_secs(20), "expiry", || j.group(id).unwrap().state == GroupState::Expired).await;
    w.sandbox.set_faults(Faults::default());
    let j = journal.clone();
    let new = {
        let mut new = None;
        wait_for(Duration::from_secs(30), "the re-queued group to complete", || {
            new = j.list().unwrap().into_iter().find(|s| s.retry_of == Some(id)).map(|s| s.id);
            new.is_some_and(|n| j.group(n).unwrap().state == GroupState::Completed)
        })
        .await;
        new.unwrap()
    };
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let (old, g) = (journal.group(id).unwrap(), journal.group(new).unwrap());
    assert_ne!(old.session_id, g.session_id, "a new server group");
    assert_eq!(w.sandbox.library().len(), 1);
    assert_library_matches(&w.sandbox, g.session_id.as_deref().unwrap(), &f);
    let old_server = w.sandbox.sessions().into_iter().find(|s| Some(&s.id) == old.session_id.as_ref()).unwrap();
    assert_ne!(old_server.status, SessionStatus::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_stops_in_flight_puts_within_two_seconds() {
    let w = World::new(64 * KIB as u64, "max_parts_in_flight = 2").await;
    // Slow storage: each PUT waits 400 ms before it is handled.
    w.sandbox.set_faults(Faults { latency: Duration::from_millis(400), ..Faults::default() });
    let journal = w.journal();
    let f = w.export("cancel-me", &[("v.mov", 2048 * KIB)]);
    let id = w.enqueue(&journal, &w.group(&f, "2D", "Regular"));
    let engine = w.engine(journal.clone(), KEY, fast());
    let (shutdown, task) = spawn_engine(engine);
    let j = journal.clone();
    wait_for(Duration::from_secs(20), "uploading", || j.group(id).unwrap().state == GroupState::Uploading).await;
    let cli = Journal::open(&w.journal_path).unwrap();
    let asked = Instant::now();
    let rid = cli.request(id, RequestKind::Cancel).unwrap();
    wait_for(Duration::from_secs(2), "the cancel to be carried out", || {
        cli.group(id).unwrap().state == GroupState::Canceled
    })
    .await;
    let took = asked.elapsed();
    let g = cli.group(id).unwrap();
    assert_eq!(g.error.as_deref(), Some("canceled by the user"));
    assert!(g.user_canceled);
    let server = w.sandbox.sessions().into_iter().find(|s| Some(&s.id) == g.session_id.as_ref()).unwrap();
    assert_eq!(server.status, SessionStatus::Canceled, "DELETE was sent");
    wait_for(Duration::from_secs(2), "the request to be answered", || {
        cli.request_status(rid).unwrap().unwrap().result == Some(RequestResult::Canceled)
    })
    .await;
    let puts_then = w.sandbox.stats().storage_puts;
    // A negative: watched for longer than one PUT's 400 ms latency.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(w.sandbox.stats().storage_puts, puts_then, "no PUT after the cancel");
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert!(w.sandbox.library().is_empty());
    assert!(took < Duration::from_secs(2), "{took:?}");
    // a user's cancel sticks: the same export enqueued again is a duplicate
    assert!(matches!(
        cli.enqueue(&w.group(&f, "2D", "Regular")).unwrap(),
        spatialgen_sync::journal::Enqueued::Duplicate { state: GroupState::Canceled, .. }
    ));
    assert!(w.sandbox.violations().is_empty(), "{:?}", w.sandbox.violations());
}

async fn source_change_cancels(change: impl FnOnce(&std::path::Path), expect: &str) {
    let w = World::new(16 * KIB as u64, "max_parts_in_flight = 1").await;
    w.sandbox.set_faults(Faults { latency: Duration::from_millis(30), ..Faults::default() });
    let journal = w.journal();
    let f = w.export("changing", &[("v.mov", 400 * KIB), ("v.en.srt", 500)]);
    let id = w.enqueue(&journal, &w.group(&f, "2D", "Regular"));
    let engine = w.engine(journal.clone(), KEY, fast());
    let (shutdown, task) = spawn_engine(engine);
    let j = journal.clone();
    wait_for(Duration::from_secs(20), "some parts done", || j.summary(id).unwrap().parts_done >= 2).await;
    change(&f.join("v.mov"));
    let j = journal.clone();
    wait_for(Duration::from_secs(10), "the group to be canceled", || {
        j.group(id).unwrap().state == GroupState::Canceled
    })
    .await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let g = journal.group(id).unwrap();
    let reason = g.error.unwrap();
    assert!(reason.contains("v.mov") && reason.contains(expect), "{reason}");
    assert!(!g.user_canceled, "not the user's cancel: the export may come back");
    let server = w.sandbox.sessions().into_iter().find(|s| Some(&s.id) == g.session_id.as_ref()).unwrap();
    assert_eq!(server.status, SessionStatus::Canceled, "DELETE was sent");
    assert!(w.sandbox.library().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_changed_mid_upload_cancels_the_group() {
    source_change_cancels(
        |p| {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(p).unwrap();
            f.write_all(b"more frames").unwrap();
        },
        "changed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_deleted_mid_upload_cancels_the_group() {
    source_change_cancels(|p| std::fs::remove_file(p).unwrap(), "vanished").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_pauses_the_queue_without_hammering() {
    let w = World::new(64 * KIB as u64, "max_groups = 2").await;
    let journal = w.journal();
    let mut ids = Vec::new();
    for i in 0..4 {
        let f = w.export(&format!("k{i}"), &[("v.mov", 10 * KIB)]);
        ids.push(w.enqueue(&journal, &w.group(&f, "2D", "Regular")));
    }
    let logs = captured_logs();
    let mut opts = fast();
    opts.auth_recheck = Duration::from_millis(700);
    let engine = w.engine(journal.clone(), "wrong-key", opts);
    let (shutdown, task) = spawn_engine(engine);
    // The fixed window is the measurement: refused calls are counted over 2.5 s.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let during = w.sandbox.stats().unauthorized;
    // 2 workers at first, then one probe per re-check (every 700 ms): a handful, not hundreds.
    assert!((2..=8).contains(&during), "{during} refused calls in 2.5 s");
    for id in &ids {
        assert_eq!(journal.group(*id).unwrap().state, GroupState::Queued, "a key problem is not the group's failure");
    }
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert_eq!(text.matches("THE API REFUSED THE KEY").count(), 1, "one loud line per pause:\n{text}");
    assert!(!text.contains("wrong-key"), "the key reached the log");
    shutdown.cancel();
    task.await.unwrap().unwrap();

    // With the right key the same journal completes everything.
    run_until_done(&w, &journal, &ids, Duration::from_secs(30)).await;
    assert!(ids.iter().all(|id| journal.group(*id).unwrap().state == GroupState::Completed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_upload_resumes_without_resending_done_parts() {
    let w = World::new(16 * KIB as u64, "max_parts_in_flight = 3").await;
    w.sandbox.set_faults(Faults { latency: Duration::from_millis(25), ..Faults::default() });
    let journal = w.journal();
    let f = w.export("resume", &[("v.mov", 600 * KIB), ("v.en.srt", 700)]);
    let id = w.enqueue(&journal, &w.group(&f, "2D", "Regular"));
    let engine = w.engine(journal.clone(), KEY, fast());
    let (shutdown, task) = spawn_engine(engine);
    let j = journal.clone();
    wait_for(Duration::from_secs(20), "some parts done", || j.summary(id).unwrap().parts_done >= 8).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let done_before = journal.summary(id).unwrap();
    assert_eq!(done_before.state, GroupState::Uploading);
    assert!(done_before.parts_done < done_before.parts_total);
    let sent_before = w.sandbox.stats().put_bytes;
    // A graceful stop: every part in flight finished and was recorded.
    let stored = w.sandbox.stats().storage.get(&200).copied().unwrap_or(0);
    assert_eq!(stored, u64::from(done_before.parts_done), "a PUT the storage accepted was not recorded");
    assert_eq!(sent_before, done_before.bytes_uploaded, "a PUT was cut off during the shutdown grace");

    w.sandbox.set_faults(Faults::default());
    let journal2 = w.journal();
    run_until_done(&w, &journal2, &[id], Duration::from_secs(30)).await;
    let g = journal2.group(id).unwrap();
    assert_eq!(g.state, GroupState::Completed);
    assert_library_matches(&w.sandbox, g.session_id.as_deref().unwrap(), &f);
    // Bytes sent after the restart: only what was not recorded done.
    let resent = w.sandbox.stats().put_bytes - sent_before;
    assert_eq!(resent, done_before.bytes_total - done_before.bytes_uploaded, "done parts were sent again");
    assert_eq!(w.sandbox.sessions().len(), 1, "the same server group was resumed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_group_in_the_foreground_and_after_upload_move_with_receipt() {
    let w = World::new(64 * KIB as u64, "").await;
    let moved = w.dir.path().join("uploaded");
    let receipts = w.dir.path().join("receipts");
    std::fs::create_dir_all(&moved).unwrap();
    w.write_config(
        &format!("receipt_dir = \"{}\"", receipts.display()),
        &format!(
            "[[watch]]\npath = \"{}\"\nafter_upload = \"move\"\nmove_to = \"{}\"\n",
            w.exports.display(),
            moved.display()
        ),
    );
    let journal = w.journal();
    let f = w.export("mover", &[("v.mov", 100 * KIB)]);
    let id = w.enqueue(&journal, &w.group(&f, "2D", "Regular"));
    let engine = w.engine(journal.clone(), KEY, fast());
    let (ended, outcome) = engine.run_one(id, CancellationToken::new()).await.unwrap();
    assert_eq!(ended, id);
    let GroupOutcome::Completed { library_id } = outcome else { panic!("{outcome:?}") };
    assert_eq!(journal.group(id).unwrap().library_id, Some(library_id));
    assert!(!f.exists(), "the export was moved away");
    let source = container_for("v.mov", "mover/v.mov", 100 * KIB).unwrap();
    assert_eq!(sha256_file(&moved.join("mover/v.mov")), hex_of(&source));
    let receipt: serde_json::Value =
        serde_json::from_slice(&std::fs::read(receipts.join(format!("{id}-mover.json"))).unwrap()).unwrap();
    assert_eq!(receipt["libraryId"], library_id);
    assert_eq!(receipt["afterUpload"]["action"], "moved");
    assert!(journal.group(id).unwrap().finished);
}

fn hex_of(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_fails_after_its_retry_budget_and_retries_by_itself_later() {
    let w = World::new(64 * KIB as u64, "retry_attempts = 3\nretry_failed_after = \"1s\"").await;
    w.sandbox.set_faults(Faults { api_5xx: 1.0, ..Faults::default() });
    let journal = w.journal();
    let f = w.export("flaky", &[("v.mov", 100 * KIB)]);
    let id = w.enqueue(&journal, &w.group(&f, "2D", "Regular"));
    let engine = w.engine(journal.clone(), KEY, fast());
    let (shutdown, task) = spawn_engine(engine);
    let j = journal.clone();
    wait_for(Duration::from_secs(10), "the group to fail", || j.group(id).unwrap().state == GroupState::Failed).await;
    let g = journal.group(id).unwrap();
    assert!(g.error.as_deref().unwrap().contains("500"), "{:?}", g.error);
    assert!(g.error.as_deref().unwrap().contains("3 attempt"), "{:?}", g.error);
    assert_eq!(w.sandbox.stats().api_total("start"), 3, "the per-request budget: 3 attempts");
    w.sandbox.set_faults(Faults::default());
    let j = journal.clone();
    wait_for(Duration::from_secs(10), "the automatic retry to complete it", || {
        j.group(id).unwrap().state == GroupState::Completed
    })
    .await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let history: Vec<_> = journal.events(id).unwrap().into_iter().filter_map(|e| e.detail).collect();
    assert!(history.iter().any(|d| d == "automatic retry"), "{history:?}");
    assert_eq!(w.sandbox.library().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_directory_is_zipped_uploaded_and_its_staged_zip_removed() {
    let w = World::new(64 * KIB as u64, "").await;
    let journal = w.journal();
    let f = w.export(
        "bundle",
        &[
            ("film.mov", 140 * KIB),
            ("film.aime", 900),
            ("Edit.fcpxmld/Info.fcpxml", 5000),
            ("Edit.fcpxmld/Resources/thumb.png", 3000),
        ],
    );
    let g = w.group(&f, "AIV", "180");
    let staged: Vec<_> = g.files.iter().filter(|f| f.staged).map(|f| f.source.clone()).collect();
    assert_eq!(staged.len(), 1, "the bundle is zipped into staging");
    assert!(staged[0].exists());
    // The zip is deterministic: another build of the same bundle elsewhere has the same bytes.
    let mut watch = spatialgen_sync::config::WatchConfig::new(&w.exports);
    watch.layout = "AIV".parse().unwrap();
    watch.perspective = Some("180".parse().unwrap());
    let other = w.dir.path().join("other-staging");
    let again = spatialgen_sync::group::build_folder_group(
        &f,
        &spatialgen_sync::group::GroupOptions { watch: &watch, staging_dir: Some(&other), matcher: None },
    )
    .unwrap();
    let copy = again.files.iter().find(|f| f.staged).unwrap().source.clone();
    let expected = sha256_file(&copy);

    let id = w.enqueue(&journal, &g);
    run_until_done(&w, &journal, &[id], Duration::from_secs(30)).await;
    assert_eq!(journal.group(id).unwrap().state, GroupState::Completed);
    assert!(!staged[0].exists(), "the staged zip is removed when the group ends");
    let lib = w.sandbox.library();
    let zip = lib[0].files.iter().find(|f| f.role.as_str() == "fcpxmld").unwrap();
    assert_eq!(zip.sha256, expected);
    assert_eq!(lib[0].layout.as_str(), "AIV");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_calls_honour_retry_after() {
    let w = World::new(64 * KIB as u64, "").await;
    // Every other API call answers 429 with Retry-After: 1 (seconds).
    w.sandbox.set_faults(Faults {
        rate_limit: 0.5,
        retry_after: Duration::from_millis(1000),
        seed: Some(11),
        ..Faults::default()
    });
    let journal = w.journal();
    let f = w.export("limited", &[("v.mov", 100 * KIB)]);
    let id = w.enqueue(&journal, &w.group(&f, "2D", "Regular"));
    let started = Instant::now();
    run_until_done(&w, &journal, &[id], Duration::from_secs(60)).await;
    let took = started.elapsed();
    let limited = w.sandbox.stats().fault_count("rate_limit");
    assert!(limited > 0, "no 429 was injected");
    assert!(took >= Duration::from_secs(limited), "{limited} 429s with Retry-After 1 s, yet done in {took:?}");
    assert_eq!(journal.group(id).unwrap().state, GroupState::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_endpoint_fails_the_group_not_the_engine() {
    let w = World::new(64 * KIB as u64, "retry_attempts = 2").await;
    let text = std::fs::read_to_string(&w.config_path).unwrap();
    let base = w.sandbox.base_url();
    std::fs::write(&w.config_path, text.replace(&base, &format!("{base}/not-here"))).unwrap();
    let journal = w.journal();
    let f = w.export("nowhere", &[("v.mov", 1000)]);
    let id = w.enqueue(&journal, &w.group(&f, "2D", "Regular"));
    let engine = w.engine(journal.clone(), KEY, fast());
    let (_, outcome) = engine.run_one(id, CancellationToken::new()).await.expect("the engine itself is fine");
    let GroupOutcome::Failed(msg) = outcome else { panic!("{outcome:?}") };
    assert!(msg.contains("404") && msg.contains("endpoint"), "{msg}");
    assert_eq!(journal.group(id).unwrap().state, GroupState::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_throttle_sees_every_byte_and_the_observer_every_part_and_group() {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Default)]
    struct Seen {
        ended: Mutex<Vec<(i64, GroupOutcome)>>,
        stored: AtomicU64,
    }
    impl spatialgen_sync::upload::Observer for Seen {
        fn group_ended(&self, id: i64, outcome: &GroupOutcome) {
            self.ended.lock().unwrap().push((id, outcome.clone()));
        }
        fn part_stored(&self, bytes: u64) {
            self.stored.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    let w = World::new(16 * KIB as u64, "").await;
    let journal = w.journal();
    let mut ids = Vec::new();
    for i in 0..2 {
        let f = w.export(&format!("hooked-{i}"), &[("v.mov", 50 * KIB + i)]);
        ids.push(w.enqueue(&journal, &w.group(&f, "2D", "Regular")));
    }
    let bytes = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(Seen::default());
    let mut opts = fast();
    opts.throttle = Some({
        let bytes = bytes.clone();
        Arc::new(move |n| {
            bytes.fetch_add(n, Ordering::Relaxed);
            Box::pin(async {})
        })
    });
    opts.observer = Some(seen.clone());
    let engine = w.engine(journal.clone(), KEY, opts);
    let (shutdown, task) = spawn_engine(engine);
    let j = journal.clone();
    let wait_ids = ids.clone();
    wait_for(Duration::from_secs(20), "both groups", || {
        wait_ids.iter().all(|id| j.group(*id).unwrap().state == GroupState::Completed)
    })
    .await;
    // The observer hears of a group after its end is recorded (and after the after-upload step).
    let s = seen.clone();
    wait_for(Duration::from_secs(10), "both ends observed", || s.ended.lock().unwrap().len() >= 2).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let total: u64 = ids.iter().map(|id| journal.group(*id).unwrap().total_bytes()).sum();
    assert_eq!(bytes.load(Ordering::Relaxed), total);
    assert_eq!(seen.stored.load(Ordering::Relaxed), total);
    let ended = seen.ended.lock().unwrap().clone();
    assert_eq!(ended.len(), 2);
    assert!(ended.iter().all(|(_, o)| matches!(o, GroupOutcome::Completed { .. })), "{ended:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_canceled_on_the_server_ends_canceled_and_is_not_resent() {
    let w = World::new(16 * KIB as u64, "max_parts_in_flight = 1\npart_url_batch = 2").await;
    w.sandbox.set_faults(Faults { latency: Duration::from_millis(30), ..Faults::default() });
    let journal = w.journal();
    let f = w.export("dashboard", &[("v.mov", 400 * KIB)]);
    let id = w.enqueue(&journal, &w.group(&f, "2D", "Regular"));
    let other = w.export("untouched", &[("o.mov", 40 * KIB)]);
    let engine = w.engine(journal.clone(), KEY, fast());
    let (shutdown, task) = spawn_engine(engine);
    let j = journal.clone();
    wait_for(Duration::from_secs(20), "some parts done", || j.summary(id).unwrap().parts_done >= 2).await;
    // Someone cancels the group in SpatialGen's dashboard, behind the agent's back.
    let session = journal.group(id).unwrap().session_id.unwrap();
    let resp = reqwest::Client::new()
        .delete(format!("{}/api/videos/uploads/{session}", w.sandbox.base_url()))
        .header("X-SPATIALGEN-APPKEY", KEY)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let j = journal.clone();
    wait_for(Duration::from_secs(10), "the group to be canceled", || {
        j.group(id).unwrap().state == GroupState::Canceled
    })
    .await;
    // The engine goes on with other work.
    let other_id = w.enqueue(&journal, &w.group(&other, "2D", "Regular"));
    let j = journal.clone();
    wait_for(Duration::from_secs(20), "the next group to complete", || {
        j.group(other_id).unwrap().state == GroupState::Completed
    })
    .await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let g = journal.group(id).unwrap();
    assert!(g.error.as_deref().unwrap_or("").contains("canceled on the server"), "{:?}", g.error);
    assert!(g.user_canceled, "a dashboard cancel is the user's: a rescan must not upload it again");
    assert_eq!(w.sandbox.library().len(), 1, "only the untouched group reached the library");
    assert_eq!(w.sandbox.sessions().len(), 2, "the canceled group was not started again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_folder_that_goes_away_mid_upload_holds_the_group_and_it_resumes_when_back() {
    let w = World::new(16 * KIB as u64, "max_parts_in_flight = 2").await;
    w.sandbox.set_faults(Faults { latency: Duration::from_millis(30), ..Faults::default() });
    let journal = w.journal();
    let f = w.export("on-a-share", &[("v.mov", 400 * KIB)]);
    let id = w.enqueue(&journal, &w.group(&f, "2D", "Regular"));
    let logs = captured_logs();
    let (shutdown, task) = spawn_engine(w.engine(journal.clone(), KEY, fast()));
    let j = journal.clone();
    wait_for(Duration::from_secs(20), "some parts done", || j.summary(id).unwrap().parts_done >= 3).await;

    // The share goes away (an unmount looks the same to the reader).
    let away = w.dir.path().join("exports.unmounted");
    std::fs::rename(&w.exports, &away).unwrap();
    let folder = w.exports.display().to_string();
    wait_for(Duration::from_secs(20), "the engine to hold the group", || {
        String::from_utf8_lossy(&logs.lock().unwrap())
            .lines()
            .any(|l| l.contains("the watch folder is missing; the group waits for it") && l.contains(&folder))
    })
    .await;
    let g = journal.group(id).unwrap();
    assert_eq!(g.state, GroupState::Uploading, "not canceled as vanished: {:?}", g.error);
    let session = g.session_id.clone().unwrap();
    let server = w.sandbox.sessions().into_iter().find(|s| s.id == session).unwrap();
    assert_ne!(server.status, SessionStatus::Canceled, "the server group was not deleted");

    // Back: the same server session goes on to the end.
    std::fs::rename(&away, &w.exports).unwrap();
    let j = journal.clone();
    wait_for(Duration::from_secs(30), "completed", || j.group(id).unwrap().state == GroupState::Completed).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(journal.group(id).unwrap().session_id.as_deref(), Some(session.as_str()), "the same session");
    assert_eq!(w.sandbox.sessions().len(), 1, "no second server group");
    assert_library_matches(&w.sandbox, &session, &f);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_claim_was_superseded_stops_quietly_and_the_engine_goes_on() {
    // A single machine's journal takes the fleet's code path: a newer claim
    // (what a takeover makes) refuses the old worker's next write.
    let w = World::new(16 * KIB as u64, "max_parts_in_flight = 2").await;
    w.sandbox.set_faults(Faults { latency: Duration::from_millis(30), ..Faults::default() });
    let journal = w.journal();
    let f = w.export("superseded", &[("v.mov", 400 * KIB)]);
    let id = w.enqueue(&journal, &w.group(&f, "2D", "Regular"));
    let logs = captured_logs();
    let (shutdown, task) = spawn_engine(w.engine(journal.clone(), KEY, fast()));
    let j = journal.clone();
    wait_for(Duration::from_secs(20), "a few parts done", || j.summary(id).unwrap().parts_done >= 3).await;
    let session = journal.group(id).unwrap().session_id;
    let newer = journal.claim(id).unwrap().expect("the uploading group can be claimed anew");
    let j = journal.clone();
    wait_for(Duration::from_secs(30), "the group to complete", || j.group(id).unwrap().state == GroupState::Completed)
        .await;
    assert!(!task.is_finished(), "the engine goes on");
    shutdown.cancel();
    task.await.unwrap().expect("the engine stops cleanly");
    let g = journal.group(id).unwrap();
    assert_eq!(g.session_id, session, "the same server session, resumed by the next claim");
    assert_library_matches(&w.sandbox, g.session_id.as_deref().unwrap(), &f);
    assert_eq!(w.sandbox.library().len(), 1);
    let history = journal.events(id).unwrap();
    let lost = format!("lost its claim (token {})", newer.token - 1);
    assert!(history.iter().any(|e| e.detail.as_deref().is_some_and(|d| d.contains(&lost))), "{history:#?}");
    let log = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
    assert!(log.contains("fenced: this agent lost its claim"), "{log}");
}
