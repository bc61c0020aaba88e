//! The engine against a sandbox that misbehaves in ways a real server might:
//! storage that answers 404 `NoSuchUpload` to every PUT while the API is
//! healthy, plans that do not fit, a cancel refused because the group ended.

use spatialgen_sync::journal::Fence;
use std::time::Duration;

use spatialgen_sync::api::{Client, CompletedPart, PartUrlsRequest, StartFile, StartGroup};
use spatialgen_sync::config::ApiKey;
use spatialgen_sync::journal::{AsyncJournal, GroupId, GroupRecord, GroupState, Journal, SessionFile};
use spatialgen_sync::retry::RetryPolicy;
use spatialgen_sync::sandbox::Faults;
use spatialgen_sync::upload::{CancelEnd, Engine, GroupOutcome, cancel_now};
use tokio_util::sync::CancellationToken;

use crate::support::*;
use spatialgen_sync::journal::prelude::*;
use spatialgen_sync::model::Strategy;

const KIB: usize = 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_answering_404_to_every_put_makes_at_most_3_server_groups_then_fails_with_its_answer() {
    let w = World::new(64 * KIB as u64, "").await;
    w.sandbox.set_faults(Faults { put_404: 1.0, ..Faults::default() });
    let journal = w.journal();
    let f = w.export("nosuch", &[("v.mov", 100 * KIB)]);
    let id = w.enqueue(&journal, &w.group(&f, "2D", "Regular"));
    let engine = w.engine(journal.clone(), KEY, fast());
    let started = std::time::Instant::now();
    let (ended, outcome) = run_to_end(&engine, id, 60).await;
    // The second server group waits the backoff (200 ms), the third four times it.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1000), "new server groups back off: all three within {took:?}");
    let GroupOutcome::Failed(msg) = &outcome else { panic!("expected failed, got {outcome:?}") };
    assert!(msg.contains("NoSuchUpload"), "the storage's answer is the reason: {msg}");
    let g = journal.group(ended).unwrap();
    assert_eq!(g.state, GroupState::Failed);
    assert!(g.error.as_deref().unwrap_or("").contains("NoSuchUpload"), "{:?}", g.error);
    let stats = w.sandbox.stats();
    let starts = stats.api_total("start");
    assert!((1..=3).contains(&starts), "at most 3 server groups, made {starts}");
    assert!(stats.storage_puts <= 60, "a bounded number of PUTs, sent {}", stats.storage_puts);

    // The automatic retry of a failed group resumes its own session: it does
    // not create a fourth server group.
    let puts_before = stats.storage_puts;
    assert_eq!(journal.retry_group(ended).unwrap(), ended);
    let (again, outcome) = run_to_end(&engine, ended, 60).await;
    assert_eq!(again, ended);
    assert!(matches!(&outcome, GroupOutcome::Failed(m) if m.contains("NoSuchUpload")), "{outcome:?}");
    let stats = w.sandbox.stats();
    assert_eq!(stats.api_total("start"), starts, "no new server group on retry");
    assert!(stats.storage_puts - puts_before <= 20, "the retry sends a bounded number of PUTs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_that_does_not_fit_the_file_fails_naming_it_and_cancels_the_server_group() {
    let w = World::new(64 * KIB as u64, "").await;
    w.sandbox.set_faults(Faults { absurd_plan: true, ..Faults::default() });
    let journal = w.journal();
    let f = w.export("absurd", &[("v.mov", 100 * KIB)]);
    let id = w.enqueue(&journal, &w.group(&f, "2D", "Regular"));
    let engine = w.engine(journal.clone(), KEY, fast());
    let (_, outcome) = run_to_end(&engine, id, 30).await;
    let GroupOutcome::Failed(msg) = &outcome else { panic!("expected failed, got {outcome:?}") };
    assert!(msg.contains("v.mov") && msg.contains("totalBytes"), "{msg}");
    assert!(msg.contains("canceled"), "{msg}");
    let stats = w.sandbox.stats();
    assert_eq!(stats.api_total("cancel"), 1, "the server group it created is canceled");
    assert_eq!(stats.storage_puts, 0, "no byte is sent on an absurd plan");
}

/// Run the engine on group `id` alone until it ends, within `secs`.
async fn run_to_end(engine: &Engine, id: GroupId, secs: u64) -> (GroupId, GroupOutcome) {
    tokio::time::timeout(Duration::from_secs(secs), engine.run_one(id, CancellationToken::new()))
        .await
        .expect("the group ends within a bounded time")
        .unwrap()
}

/// Start Upload Group for the journal's record of a group, as the engine sends it.
fn start_request(g: &GroupRecord) -> StartGroup {
    StartGroup {
        video_name: g.name.clone(),
        description: None,
        layout: g.layout.unwrap(),
        perspective: g.perspective,
        folder_name: None,
        files: g
            .files
            .iter()
            .map(|f| StartFile {
                file_name: f.file_name.clone(),
                file_role: f.role,
                size_bytes: f.size,
                language_tag: None,
            })
            .collect(),
    }
}

/// Group `id` uploaded and completed on the server by hand, the way the
/// engine does it, with every part recorded in the journal but the final
/// `complete` answer not recorded: the state a crash or a cancel right
/// after the last `complete` leaves behind. Returns the server's library id.
async fn completed_on_the_server_only(w: &World, journal: &Journal, client: &Client, id: GroupId) -> u64 {
    let g = journal.group(id).unwrap();
    let created = client.start_group(&start_request(&g)).await.unwrap();
    let files: Vec<SessionFile> = g
        .files
        .iter()
        .map(|f| {
            let c = created.file_for(&f.file_name, f.role).unwrap();
            SessionFile {
                file_id: f.id,
                upload_id: c.upload_id.clone(),
                part_size: c.part_size_bytes,
                total_parts: c.total_parts,
                strategy: Strategy::Multipart,
            }
        })
        .collect();
    journal.record_session(id, Fence::Unclaimed, &created.session_id, created.expires_at.as_deref(), &files).unwrap();
    let mut library_id = None;
    for (f, sf) in g.files.iter().zip(&files) {
        let bytes = std::fs::read(&f.source).unwrap();
        let ask = PartUrlsRequest::Range { start: 1, count: sf.total_parts };
        let urls = client.part_urls(&created.session_id, &sf.upload_id, &ask).await.unwrap();
        let mut done = Vec::new();
        for u in &urls.parts {
            let chunk = bytes[u.byte_start as usize..=u.byte_end as usize].to_vec();
            let etag = client.put_part(&u.url, chunk.clone().into(), chunk.len() as u64, None).await.unwrap();
            journal.part_done(f.id, u.part_number, &etag, Fence::Unclaimed).unwrap();
            done.push(CompletedPart { part_number: u.part_number, etag });
        }
        let answer = client.complete_file(&created.session_id, &sf.upload_id, &done).await.unwrap();
        library_id = answer.library_id;
    }
    assert_eq!(w.sandbox.library().len(), 1);
    library_id.expect("the last complete carries the library id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_answered_409_for_a_group_completed_on_the_server_is_recorded_as_completed() {
    let w = World::new(64 * KIB as u64, "").await;
    let journal = w.journal();
    let f = w.export("done-there", &[("v.mov", 100 * KIB)]);
    let id = w.enqueue(&journal, &w.group(&f, "2D", "Regular"));
    let cfg = w.config();
    let client = Client::new(&cfg.api, ApiKey::new(KEY)).unwrap();
    let library_id = completed_on_the_server_only(&w, &journal, &client, id).await;
    assert_eq!(journal.group(id).unwrap().state, GroupState::Uploading);

    let end = user_cancel(&client, &journal, &cfg, id).await;
    assert_eq!(end, CancelEnd::CompletedOnServer { library_id });
    let g = journal.group(id).unwrap();
    assert_eq!(g.state, GroupState::Completed, "{:?}", g.error);
    assert_eq!(g.library_id, Some(library_id));
    let stats = w.sandbox.stats();
    assert_eq!(stats.api_count("cancel", 409), 1, "the server refused the cancel");
    assert_eq!(w.sandbox.library().len(), 1, "still one library entry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_answered_409_for_a_group_canceled_on_the_server_is_recorded_as_canceled() {
    let w = World::new(64 * KIB as u64, "").await;
    let journal = w.journal();
    let f = w.export("gone-there", &[("v.mov", 100 * KIB)]);
    let id = w.enqueue(&journal, &w.group(&f, "2D", "Regular"));
    let cfg = w.config();
    let client = Client::new(&cfg.api, ApiKey::new(KEY)).unwrap();
    let g = journal.group(id).unwrap();
    let created = client.start_group(&start_request(&g)).await.unwrap();
    let c = &created.files[0];
    let sf = SessionFile {
        file_id: g.files[0].id,
        upload_id: c.upload_id.clone(),
        part_size: c.part_size_bytes,
        total_parts: c.total_parts,
        strategy: Strategy::Multipart,
    };
    journal.record_session(id, Fence::Unclaimed, &created.session_id, None, &[sf]).unwrap();
    // Canceled elsewhere first: the agent's cancel is answered 409.
    client.cancel_group(&created.session_id).await.unwrap();

    let end = user_cancel(&client, &journal, &cfg, id).await;
    assert_eq!(end, CancelEnd::Canceled);
    assert_eq!(journal.group(id).unwrap().state, GroupState::Canceled);
    assert_eq!(w.sandbox.stats().api_count("cancel", 409), 1);
    assert!(w.sandbox.library().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_answered_2xx_with_a_status_other_than_completed_is_not_counted() {
    let w = World::new(64 * KIB as u64, "").await;
    w.sandbox.set_faults(Faults { complete_not_completed: true, ..Faults::default() });
    let journal = w.journal();
    let f = w.export("processing", &[("v.mov", 100 * KIB)]);
    let id = w.enqueue(&journal, &w.group(&f, "2D", "Regular"));
    let engine = w.engine(journal.clone(), KEY, fast());
    let (_, outcome) = run_to_end(&engine, id, 30).await;
    let GroupOutcome::Failed(msg) = &outcome else { panic!("expected failed, got {outcome:?}") };
    assert!(msg.contains("v.mov") && msg.contains("\"processing\""), "{msg}");
    assert!(w.sandbox.library().is_empty());
    let puts = w.sandbox.stats().storage_puts;

    // The server is right again: the retry sends `complete` again, no part.
    w.sandbox.set_faults(Faults::default());
    assert_eq!(journal.retry_group(id).unwrap(), id);
    let (_, outcome) = run_to_end(&engine, id, 30).await;
    assert!(matches!(outcome, GroupOutcome::Completed { .. }), "{outcome:?}");
    assert_eq!(w.sandbox.library().len(), 1);
    assert_eq!(w.sandbox.stats().storage_puts, puts, "no part is sent again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_slower_than_the_request_timeout_is_retried_with_backoff_where_repeating_is_safe() {
    let w = World::new(64 * KIB as u64, "").await;
    // `World`'s config has request_timeout = 10s; this test needs a short one.
    let text = std::fs::read_to_string(&w.config_path).unwrap();
    std::fs::write(&w.config_path, text.replace("request_timeout = \"10s\"", "request_timeout = \"300ms\"")).unwrap();
    // Start answers within the timeout; the latency is taken as a call arrives.
    w.sandbox.set_faults(Faults { latency: Duration::from_millis(100), ..Faults::default() });
    let journal = w.journal();
    let f = w.export("slow", &[("v.mov", 100 * KIB)]);
    let id = w.enqueue(&journal, &w.group(&f, "2D", "Regular"));
    let engine = w.engine(journal.clone(), KEY, fast());
    let run = tokio::spawn(async move { engine.run_one(id, CancellationToken::new()).await });
    while w.sandbox.stats().api_received("start") == 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // While start waits out its 100 ms, every later answer becomes too late.
    w.sandbox.set_faults(Faults { latency: Duration::from_millis(600), ..Faults::default() });
    // Part URLs are safe to ask again (idempotent): after each timeout they are
    // asked again with backoff (20 ms doubling to 200 ms), not in a hot loop.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stats = w.sandbox.stats();
    let tried = stats.api_received("part-urls");
    assert!((2..=12).contains(&tried), "part URLs asked {tried} times in 1.5 s");
    assert_eq!(stats.api_received("start"), 1, "start answered in time, sent once");
    w.sandbox.set_faults(Faults::default());
    let (ended, outcome) = tokio::time::timeout(Duration::from_secs(30), run).await.expect("bounded").unwrap().unwrap();
    assert!(matches!(outcome, GroupOutcome::Completed { .. }), "{outcome:?}");
    assert_eq!(journal.group(ended).unwrap().state, GroupState::Completed);
    assert_eq!(w.sandbox.library().len(), 1);
}

/// Start Upload Group is not idempotent: after a timeout the server may have
/// created a group, so the request is not repeated at once. The group fails
/// naming the timeout; its automatic retry starts it again later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_times_out_is_not_repeated_and_the_group_fails_naming_the_timeout() {
    let w = World::new(64 * KIB as u64, "").await;
    let text = std::fs::read_to_string(&w.config_path).unwrap();
    std::fs::write(&w.config_path, text.replace("request_timeout = \"10s\"", "request_timeout = \"300ms\"")).unwrap();
    w.sandbox.set_faults(Faults { latency: Duration::from_millis(600), ..Faults::default() });
    let journal = w.journal();
    let f = w.export("slow start", &[("v.mov", 100 * KIB)]);
    let id = w.enqueue(&journal, &w.group(&f, "2D", "Regular"));
    let engine = w.engine(journal.clone(), KEY, fast());
    let (ended, outcome) = run_to_end(&engine, id, 10).await;
    let GroupOutcome::Failed(why) = &outcome else { panic!("{outcome:?}") };
    assert!(why.contains("start upload group") && why.contains("timed out"), "{why}");
    let g = journal.group(ended).unwrap();
    assert_eq!(g.state, GroupState::Failed);
    assert!(g.error.as_deref().unwrap_or("").contains("timed out"), "{:?}", g.error);
    // Nothing else is sent for it meanwhile.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(w.sandbox.stats().api_received("start"), 1, "one start only");
    assert_eq!(w.sandbox.stats().api_received("part-urls"), 0);
}

/// What `spatialgen-sync cancel` does with no agent running.
async fn user_cancel(
    client: &Client,
    journal: &std::sync::Arc<Journal>,
    cfg: &spatialgen_sync::config::Config,
    id: GroupId,
) -> CancelEnd {
    let policy = RetryPolicy::from_config(&cfg.upload);
    let journal = AsyncJournal::new(journal.clone());
    cancel_now(Some(client), &journal, &policy, id, Fence::Unclaimed, "canceled by the user", true).await.unwrap()
}
