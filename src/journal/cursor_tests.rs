//! The history readers' cursors (schema v5) and the upgrade from a version 4
//! journal. On real SQLite files in temporary folders.

use super::*;

fn open(dir: &tempfile::TempDir) -> Journal {
    Journal::open(&dir.path().join("j.sqlite3")).expect("open")
}

#[test]
fn cursors_survive_reopening() {
    let d = tempfile::tempdir().expect("temp dir");
    open(&d).set_cursor("webhook", 9).unwrap();
    assert_eq!(open(&d).cursor("webhook").unwrap(), Some(9));
}

#[test]
fn migrates_a_version_4_journal() {
    let d = tempfile::tempdir().expect("temp dir");
    let path = d.path().join("old.sqlite3");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(include_str!("fixtures/v4.sql")).unwrap();
        let v: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, 4);
    }
    let j = Journal::open(&path).unwrap();
    assert_eq!(j.schema_version().unwrap(), schema::LATEST);
    assert_eq!(schema::LATEST, 9);
    // What version 4 held reads back; files looked into by no media check have no facts.
    let list = j.list().unwrap();
    assert_eq!(list.len(), 9);
    assert_eq!((list[0].state, list[0].library_id), (GroupState::Completed, Some(41)));
    let c = j.group(3).unwrap();
    assert_eq!((c.files[0].dev, c.files[0].ino), (Some(2049), Some(131)));
    assert!(c.files.iter().all(|f| f.media.is_none()));
    // Groups from before fencing have had no claim: the first one gets token 1.
    assert_eq!(j.test_sql("SELECT claim FROM groups WHERE id = 2").unwrap(), Some(0));
    // v8: no after-upload step has failed yet, and none is pending.
    assert_eq!(j.test_sql("SELECT SUM(after_failures) FROM groups").unwrap(), Some(0));
    assert!(list.iter().all(|r| r.after_upload.is_none()));
    let auth = j.pause(&PauseReason::Auth).unwrap().expect("the auth pause is kept");
    assert_eq!(auth.since_ms, 1_700_000_090_000);
    // No reader has a cursor yet; the history is where it was and still tail-able.
    assert_eq!(j.cursor("webhook").unwrap(), None);
    assert_eq!(j.last_event_id().unwrap(), 23);
    j.set_cursor("webhook", 23).unwrap();
    j.fail_group(2, "boom", None, Fence::Unclaimed).unwrap();
    let ended = j.ended_after(j.cursor("webhook").unwrap().unwrap(), 10).unwrap();
    assert_eq!(ended.iter().map(|e| (e.event_id, e.group_id)).collect::<Vec<_>>(), vec![(24, 2)]);
    // Re-opening a migrated journal is a no-op and keeps the cursor.
    drop(j);
    let j = Journal::open(&path).unwrap();
    assert_eq!(j.cursor("webhook").unwrap(), Some(23));
}
