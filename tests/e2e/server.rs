//! The engine against a sandbox that misbehaves in ways a real server might:
//! storage that answers 404 `NoSuchUpload` to every PUT while the API is healthy.

use std::time::Duration;

use spatialgen_sync::journal::GroupState;
use spatialgen_sync::sandbox::Faults;
use spatialgen_sync::upload::GroupOutcome;
use tokio_util::sync::CancellationToken;

use crate::support::*;

const KIB: usize = 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_answering_404_to_every_put_makes_at_most_3_server_groups_then_fails_with_its_answer() {
    let w = World::new(64 * KIB as u64, "").await;
    w.sandbox.set_faults(Faults { put_404: 1.0, ..Faults::default() });
    let journal = w.journal();
    let f = w.export("nosuch", &[("v.mov", 100 * KIB)]);
    let id = w.enqueue(&journal, &w.group(&f, "2D", "Regular"));
    let engine = w.engine(journal.clone(), KEY, fast());
    let (ended, outcome) = tokio::time::timeout(Duration::from_secs(60), engine.run_one(id, CancellationToken::new()))
        .await
        .expect("the export ends within a bounded time")
        .unwrap();
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
    let (again, outcome) =
        tokio::time::timeout(Duration::from_secs(60), engine.run_one(ended, CancellationToken::new()))
            .await
            .expect("the retry ends within a bounded time")
            .unwrap();
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
    let (_, outcome) = tokio::time::timeout(Duration::from_secs(30), engine.run_one(id, CancellationToken::new()))
        .await
        .expect("bounded")
        .unwrap();
    let GroupOutcome::Failed(msg) = &outcome else { panic!("expected failed, got {outcome:?}") };
    assert!(msg.contains("v.mov") && msg.contains("totalBytes"), "{msg}");
    assert!(msg.contains("canceled"), "{msg}");
    let stats = w.sandbox.stats();
    assert_eq!(stats.api_total("cancel"), 1, "the server group it created is canceled");
    assert_eq!(stats.storage_puts, 0, "no byte is sent on an absurd plan");
}
