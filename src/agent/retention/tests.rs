//! The retention sweep and its task against a real SQLite journal file:
//! old ended groups whose export is gone are dropped, in batches; recent,
//! failed, queued ones, those whose export is still there and those whose
//! watch folder is missing are kept; the task stops at once on shutdown.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;
use crate::group::UploadGroup;
use crate::journal::prelude::*;
use crate::journal::{Enqueued, Journal, Store};

const DAY_MS: i64 = 24 * 3600 * 1000;

struct Env {
    dir: tempfile::TempDir,
    journal: Arc<Journal>,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("exports")).unwrap();
        let journal = Arc::new(Journal::open(&dir.path().join("j.sqlite3")).unwrap());
        Env { dir, journal }
    }

    fn exports(&self) -> PathBuf {
        self.dir.path().join("exports")
    }

    /// A queued group for export `name` under watch folder `watch`; its
    /// file is created on disk when `on_disk`.
    fn group_in(&self, watch: &Path, name: &str, on_disk: bool) -> GroupId {
        let root = watch.join(name);
        if on_disk {
            std::fs::create_dir_all(&root).unwrap();
            std::fs::write(root.join("video.mov"), b"x").unwrap();
        }
        let g = UploadGroup::one_video_in(watch, name, 1);
        match self.journal.enqueue(&g).unwrap() {
            Enqueued::Queued(id) => id,
            other => panic!("{other:?}"),
        }
    }

    fn group(&self, name: &str, on_disk: bool) -> GroupId {
        self.group_in(&self.exports(), name, on_disk)
    }

    /// Put group `id` in `state`, its housekeeping done, last changed `days_ago`.
    fn set(&self, id: GroupId, state: &str, days_ago: i64) {
        let at = now_ms() - days_ago * DAY_MS;
        self.journal
            .test_sql(&format!("UPDATE groups SET state = '{state}', finished = 1, updated_at = {at} WHERE id = {id}"))
            .unwrap();
    }

    fn ids(&self) -> Vec<GroupId> {
        let mut ids: Vec<GroupId> = self.journal.list().unwrap().iter().map(|r| r.id).collect();
        ids.sort_unstable();
        ids
    }

    fn async_journal(&self) -> AsyncJournal {
        let store: Arc<dyn Store> = self.journal.clone();
        AsyncJournal::new(store)
    }
}

#[tokio::test]
async fn a_sweep_drops_old_ended_groups_whose_export_is_gone_and_keeps_the_rest() {
    let e = Env::new();
    let gone_done = e.group("old-done", false);
    let gone_canceled = e.group("old-canceled", false);
    let there = e.group("old-still-there", true);
    let recent = e.group("recent-done", false);
    let failed = e.group("old-failed", false);
    let queued = e.group("old-queued", false);
    let unmounted = e.group_in(&e.dir.path().join("unmounted"), "old-done", false);
    e.set(gone_done, "completed", 200);
    e.set(gone_canceled, "canceled", 365);
    e.set(there, "completed", 200);
    e.set(recent, "completed", 10);
    e.set(failed, "failed", 200);
    e.set(queued, "queued", 200);
    e.set(unmounted, "completed", 200);

    let before = now_ms() - 180 * DAY_MS;
    let s = forget_before(&e.async_journal(), before, &CancellationToken::new()).await.unwrap();
    assert_eq!(s, Swept { forgot: 2, kept: 2 });
    assert_eq!(e.ids(), vec![there, recent, failed, queued, unmounted]);

    // Nothing left to do: a second sweep changes nothing.
    let s = forget_before(&e.async_journal(), before, &CancellationToken::new()).await.unwrap();
    assert_eq!(s, Swept { forgot: 0, kept: 2 });
}

#[tokio::test]
async fn a_long_history_goes_in_batches_and_a_stop_ends_the_sweep_between_them() {
    let e = Env::new();
    let old: Vec<GroupId> = (0..BATCH * 2 + 10).map(|i| e.group(&format!("clip-{i:04}"), false)).collect();
    let (first, last) = (old[0], old[old.len() - 1]);
    let at = now_ms() - 400 * DAY_MS;
    e.journal
        .test_sql(&format!(
            "UPDATE groups SET state = 'completed', finished = 1, updated_at = {at} WHERE id BETWEEN {first} AND {last}"
        ))
        .unwrap();
    let keep = e.group("new", false);
    let before = now_ms() - 180 * DAY_MS;

    let stopped = CancellationToken::new();
    stopped.cancel();
    let s = forget_before(&e.async_journal(), before, &stopped).await.unwrap();
    assert_eq!(s, Swept::default(), "stopped before the first batch");

    let s = forget_before(&e.async_journal(), before, &CancellationToken::new()).await.unwrap();
    assert_eq!(s.forgot, old.len() as u64);
    assert_eq!(e.ids(), vec![keep]);
}

#[tokio::test]
async fn the_task_sweeps_soon_after_the_start_and_stops_at_once_on_shutdown() {
    let e = Env::new();
    let old = e.group("old", false);
    let recent = e.group("recent", false);
    e.set(old, "completed", 200);
    e.set(recent, "completed", 1);

    // Off: the task ends at once.
    let off = tokio::spawn(retention_loop(e.async_journal(), None, Every::DAILY, CancellationToken::new()));
    tokio::time::timeout(Duration::from_secs(5), off).await.expect("ends at once").unwrap();

    let shutdown = CancellationToken::new();
    let when =
        Every { first: Duration::from_millis(20), every: Duration::from_secs(3600), after_error: Duration::ZERO };
    let task = tokio::spawn(retention_loop(
        e.async_journal(),
        Some(Duration::from_secs(180 * 24 * 3600)),
        when,
        shutdown.clone(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while e.ids() != vec![recent] {
        assert!(tokio::time::Instant::now() < deadline, "the old group was not forgotten: {:?}", e.ids());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Now waiting for the next day: a shutdown ends it at once.
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), task).await.expect("stops promptly").unwrap();
}

#[test]
fn ages_are_shown_as_written() {
    assert_eq!(shown(Duration::from_secs(180 * 86_400)), "180d");
    assert_eq!(shown(Duration::from_secs(36 * 3600)), "36h");
}
