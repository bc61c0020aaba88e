//! Tests of `housekeeping`: a failing after-upload step is counted in the
//! group's columns, waits until its next attempt is due, and gives up
//! (keeping the files) after the last attempt.

use std::path::PathBuf;
use std::sync::Arc;

use super::engine::{Engine, EngineOptions, Shared};
use super::housekeeping::{AFTER_UPLOAD_ATTEMPTS, after_upload_delay};
use crate::config::{AfterUpload, ApiKey, Config, WatchConfig};
use crate::group::{GroupOptions, build_folder_group};
use crate::journal::prelude::*;
use crate::journal::{Enqueued, GroupId, Journal, Store, now_ms};

struct Setup {
    _dir: tempfile::TempDir,
    journal: Arc<Journal>,
    engine: Engine,
    export: PathBuf,
    /// A regular file: `move_to` below it cannot be created (ENOTDIR).
    blocker: PathBuf,
    id: GroupId,
}

impl Setup {
    fn sh(&self) -> &Arc<Shared> {
        self.engine.shared()
    }

    fn sql(&self, sql: &str) {
        self.journal.test_sql(sql).unwrap();
    }
}

/// A completed group whose export is to be moved into a folder that cannot be created.
fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let watch_dir = dir.path().join("watch");
    let export = watch_dir.join("shot");
    std::fs::create_dir_all(&export).unwrap();
    std::fs::write(export.join("v.mov"), crate::media::synth::for_name("v.mov", 4096).unwrap()).unwrap();
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, b"a file, not a folder").unwrap();

    let mut watch = WatchConfig::new(&watch_dir);
    watch.after_upload = AfterUpload::Move;
    watch.move_to = Some(blocker.join("done"));
    let group = build_folder_group(&export, &GroupOptions { watch: &watch, staging_dir: None, matcher: None }).unwrap();
    let journal = Arc::new(Journal::open(&dir.path().join("j.sqlite3")).unwrap());
    let Enqueued::Queued(id) = journal.enqueue(&group).unwrap() else { panic!("not queued") };
    journal.test_sql(&format!("UPDATE groups SET state = 'completed', library_id = 5 WHERE id = {id}")).unwrap();

    let mut cfg = Config::minimal("http://127.0.0.1:1", &dir.path().join("j.sqlite3"));
    cfg.watch.push(watch);
    let store: Arc<dyn Store> = journal.clone();
    let engine = Engine::new(Arc::new(cfg), store, ApiKey::new("k-test-key"), EngineOptions::default()).unwrap();
    Setup { _dir: dir, journal, engine, export, blocker, id }
}

#[test]
fn a_failed_after_upload_step_is_counted_in_columns_and_waits_until_due() {
    let s = setup();
    assert!(s.journal.summary(s.id).unwrap().after_upload.is_none(), "nothing pending before the first attempt");

    let before = now_ms();
    s.sh().housekeeping().unwrap();
    let g = s.journal.group(s.id).unwrap();
    assert!(!g.finished, "a retry is pending");
    assert_eq!(g.after_failures, 1);
    let err = g.after_error.clone().unwrap_or_default();
    assert!(err.starts_with(&format!("move to {}: ", s.blocker.join("done").display())), "{err}");
    assert!(err.contains(if cfg!(windows) { "(os error" } else { "Not a directory" }), "{err}");
    let next = g.after_next_ms.unwrap();
    let wait = i64::try_from(after_upload_delay(1).as_millis()).unwrap();
    assert!(next >= before + wait && next <= now_ms() + wait, "due one delay from now");
    assert!(s.export.join("v.mov").is_file(), "nothing was lost");

    let row = s.journal.summary(s.id).unwrap();
    let a = row.after_upload.expect("status shows the pending retry");
    assert_eq!((a.failures, a.attempts, a.next_attempt_ms), (1, AFTER_UPLOAD_ATTEMPTS, next));
    assert_eq!(a.error, err);

    // Not due yet: housekeeping leaves it alone, whatever the history says.
    s.sh().housekeeping().unwrap();
    assert_eq!(s.journal.group(s.id).unwrap().after_failures, 1);
    s.journal.note(s.id, "after-upload step failed: wording that no code reads").unwrap();
    s.sh().housekeeping().unwrap();
    assert_eq!(s.journal.group(s.id).unwrap().after_failures, 1, "history lines count for nothing");

    // Due: tried again, and the next wait is longer.
    s.sql(&format!("UPDATE groups SET after_next_ms = {} WHERE id = {}", now_ms() - 1, s.id));
    s.sh().housekeeping().unwrap();
    let g = s.journal.group(s.id).unwrap();
    assert_eq!(g.after_failures, 2);
    assert!(g.after_next_ms.unwrap() >= now_ms() + i64::try_from(after_upload_delay(1).as_millis()).unwrap());

    // The destination is fixed: the next attempt moves the export and clears the pending retry.
    std::fs::remove_file(&s.blocker).unwrap();
    s.sql(&format!("UPDATE groups SET after_next_ms = {} WHERE id = {}", now_ms() - 1, s.id));
    s.sh().housekeeping().unwrap();
    let g = s.journal.group(s.id).unwrap();
    assert!(g.finished);
    assert_eq!((g.after_failures, g.after_next_ms), (2, None), "the count stays as a fact");
    assert!(s.journal.summary(s.id).unwrap().after_upload.is_none());
    assert!(s.blocker.join("done/shot/v.mov").is_file());
    assert!(!s.export.exists());
}

#[test]
fn the_last_failed_attempt_gives_up_and_keeps_the_files() {
    let s = setup();
    let last = AFTER_UPLOAD_ATTEMPTS - 1;
    s.sql(&format!(
        "UPDATE groups SET after_failures = {last}, after_error = 'x', after_next_ms = {} WHERE id = {}",
        now_ms() - 1,
        s.id
    ));
    s.sh().housekeeping().unwrap();
    let g = s.journal.group(s.id).unwrap();
    assert!(g.finished, "no attempt after the last");
    assert_eq!((g.after_failures, g.after_next_ms), (AFTER_UPLOAD_ATTEMPTS, None));
    let row = s.journal.summary(s.id).unwrap();
    assert!(row.after_upload.is_none(), "nothing pending");
    let error = row.error.unwrap_or_default();
    assert!(error.contains(&format!("gave up after {AFTER_UPLOAD_ATTEMPTS} attempts; the files were kept")), "{error}");
    assert!(s.export.join("v.mov").is_file());
    assert!(s.journal.unfinished().unwrap().is_empty());
}
