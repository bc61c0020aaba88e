//! `forget`: which ended groups go, with everything hanging off them, and
//! which never do. Real SQLite files in temporary folders.

use std::path::PathBuf;

use super::*;
use crate::group::{GroupFile, UploadGroup, Violation};
use crate::model::{FileRole, Layout, Strategy};

fn group(name: &str) -> UploadGroup {
    let root = PathBuf::from("/renders").join(name);
    UploadGroup {
        name: name.into(),
        key: root.clone(),
        root: root.clone(),
        watch_path: Some(PathBuf::from("/renders")),
        layout: Layout::TwoD,
        perspective: None,
        description: None,
        folder_name: None,
        priority: 0,
        files: vec![GroupFile {
            source: root.join("v.mov"),
            rel_path: "v.mov".into(),
            file_name: "v.mov".into(),
            role: FileRole::Video,
            language: None,
            size: 10,
            mtime_ns: 1,
            dev: None,
            ino: None,
            staged: false,
            media: None,
        }],
        fingerprint: format!("fp-{name}"),
        violations: Vec::new(),
        media_check: crate::config::MediaCheck::Reject,
        unfinished: Vec::new(),
        warnings: Vec::new(),
    }
}

fn queued(j: &Journal, name: &str) -> GroupId {
    match j.enqueue(&group(name)).unwrap() {
        Enqueued::Queued(id) => id,
        other => panic!("{other:?}"),
    }
}

fn uploading(j: &Journal, name: &str) -> GroupId {
    let id = queued(j, name);
    let f = j.group(id).unwrap().files[0].id;
    let file = SessionFile {
        file_id: f,
        upload_id: format!("up-{name}"),
        part_size: 10,
        total_parts: 1,
        strategy: Strategy::SinglePut,
    };
    j.record_session(id, Fence::Unclaimed, &format!("sess-{name}"), None, &[file]).unwrap();
    id
}

fn completed(j: &Journal, name: &str) -> GroupId {
    let id = uploading(j, name);
    let f = j.group(id).unwrap().files[0].id;
    j.part_done(f, 1, "\"e\"", Fence::Unclaimed).unwrap();
    j.file_completed(f, Some(7), Fence::Unclaimed).unwrap();
    j.complete_group(id, 7, Fence::Unclaimed).unwrap();
    j.set_finished(id).unwrap();
    id
}

#[test]
fn forget_drops_old_ended_groups_with_their_rows_and_never_live_or_failed_ones() {
    let d = tempfile::tempdir().unwrap();
    let j = Journal::open(&d.path().join("j.sqlite3")).unwrap();
    let done = completed(&j, "done");
    let mut bad = group("bad");
    bad.violations.push(Violation { rule: "r", file: None, message: "m".into() });
    let Enqueued::Rejected(rejected) = j.enqueue(&bad).unwrap() else { panic!("not rejected") };
    j.set_finished(rejected).unwrap();
    let canceled = queued(&j, "canceled");
    j.cancel_group(canceled, "by the user", true, Fence::Unclaimed).unwrap();
    j.set_finished(canceled).unwrap();
    let failed = uploading(&j, "failed");
    j.fail_group(failed, "boom", None, Fence::Unclaimed).unwrap();
    j.set_finished(failed).unwrap();
    let waiting = j.note_waiting(&PathBuf::from("/renders/waiting"), "waiting", None).unwrap();
    let queue = queued(&j, "queued");
    let up = uploading(&j, "uploading");
    let unfinished = completed(&j, "unfinished-housekeeping");
    // A completed group whose housekeeping a crash left undone is not forgotten.
    j.conn().execute("UPDATE groups SET finished = 0 WHERE id = ?1", [unfinished]).unwrap();

    // Nothing ended before the epoch.
    assert!(j.forgettable(0).unwrap().is_empty());
    let future = now_ms() + 60_000;
    let candidates = j.forgettable(future).unwrap();
    assert_eq!(candidates, vec![done, rejected, canceled]);
    assert_eq!(j.forget(&candidates, future).unwrap(), 3);
    let left: Vec<GroupId> = j.list().unwrap().iter().map(|s| s.id).collect();
    assert_eq!(left, vec![failed, waiting, queue, up, unfinished]);
    assert!(matches!(j.group(done), Err(JournalError::NoSuchGroup(_))));
    // Files, parts and history went with them (the foreign keys cascade).
    let orphans: i64 = j
        .conn()
        .query_row(
            "SELECT (SELECT COUNT(*) FROM files WHERE group_id NOT IN (SELECT id FROM groups))
                  + (SELECT COUNT(*) FROM events WHERE group_id NOT IN (SELECT id FROM groups))
                  + (SELECT COUNT(*) FROM parts WHERE file_id NOT IN (SELECT id FROM files))",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0);
    // Asked to forget live groups by id, it still refuses.
    assert_eq!(j.forget(&[waiting, queue, up, failed], future).unwrap(), 0);
    assert_eq!(j.list().unwrap().len(), 5);
}

#[test]
fn a_group_re_queued_from_a_forgotten_one_only_loses_the_link() {
    let d = tempfile::tempdir().unwrap();
    let j = Journal::open(&d.path().join("j.sqlite3")).unwrap();
    let old = uploading(&j, "expiring");
    let new = j.expire_group(old, "the server forgot it", true, Fence::Unclaimed).unwrap().expect("re-queued");
    j.set_finished(old).unwrap();
    assert_eq!(j.group(new).unwrap().retry_of, Some(old));
    let future = now_ms() + 60_000;
    assert_eq!(j.forget(&j.forgettable(future).unwrap(), future).unwrap(), 1);
    let g = j.group(new).unwrap();
    assert_eq!((g.state, g.retry_of), (GroupState::Queued, None));
}
