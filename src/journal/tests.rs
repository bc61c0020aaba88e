//! Journal tests on real SQLite files in temporary folders.

use std::path::{Path, PathBuf};

use super::*;
use crate::group::{GroupFile, UploadGroup, Violation};
use crate::model::{FileRole, Layout, Perspective, Strategy};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// A fresh SQLite journal in a temporary folder (kept while the folder is).
fn sqlite_journal() -> (tempfile::TempDir, Journal) {
    let d = tmp();
    let j = Journal::open(&d.path().join("j.sqlite3")).expect("journal opens");
    (d, j)
}

/// The options of a fleet node on database `url`: no watch folders, so
/// paths are stored as they are (as on SQLite).
fn pg_node(url: &str, node: &str, lease: std::time::Duration) -> pg::PgOptions {
    pg::PgOptions {
        url: crate::config::DatabaseUrl::new(url),
        password: None,
        node: node.into(),
        lease,
        mounts: pg::Mounts::default(),
    }
}

/// A fresh PostgreSQL journal: a database of its own on the test server.
fn postgres_journal() -> pg::PgJournal {
    let url = crate::sandbox::postgres::shared().database();
    pg::PgJournal::open(pg_node(&url, "node-a", std::time::Duration::from_secs(30))).expect("journal opens")
}

/// A journal test, run once on a SQLite file and once on a PostgreSQL
/// database: `name::sqlite` and `name::postgres`.
macro_rules! both {
    ($(#[$m:meta])* fn $name:ident($j:ident) $body:block) => {
        $(#[$m])*
        mod $name {
            use super::*;
            fn run($j: &dyn Store) $body
            #[test]
            fn sqlite() {
                let (_d, j) = sqlite_journal();
                run(&j)
            }
            #[test]
            fn postgres() {
                run(&postgres_journal())
            }
        }
    };
}

fn group(key: &str, fingerprint: &str, sizes: &[u64]) -> UploadGroup {
    let root = PathBuf::from(key);
    UploadGroup {
        name: root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        key: root.clone(),
        root: root.clone(),
        watch_path: root.parent().map(Path::to_path_buf),
        layout: Layout::TwoD,
        perspective: Some(Perspective::Regular),
        description: None,
        folder_name: None,
        priority: 0,
        files: sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| {
                let (name, role, language) = match i {
                    0 => ("video.mov".to_string(), FileRole::Video, None),
                    1 => ("audio.m4a".to_string(), FileRole::Audio, Some("en".to_string())),
                    n => (format!("sub{n}.srt"), FileRole::Subtitle, Some("en".to_string())),
                };
                GroupFile {
                    source: root.join(&name),
                    rel_path: name.clone(),
                    file_name: name,
                    role,
                    language,
                    size,
                    mtime_ns: 1_700_000_000_000_000_000 + i as i64,
                    dev: None,
                    ino: None,
                    staged: false,
                    media: None,
                }
            })
            .collect(),
        fingerprint: fingerprint.to_string(),
        violations: Vec::new(),
        media_check: crate::config::MediaCheck::Reject,
        unfinished: Vec::new(),
        warnings: Vec::new(),
    }
}

fn queued(j: &dyn Store, key: &str, fp: &str, sizes: &[u64]) -> GroupId {
    match j.enqueue(&group(key, fp, sizes)).expect("enqueue") {
        Enqueued::Queued(id) => id,
        other => panic!("expected queued, got {other:?}"),
    }
}

/// Record a session the way the engine does: one part per `part_size` bytes.
fn start(j: &dyn Store, id: GroupId, session: &str, part_size: u64) {
    let files = session_files(j, id, part_size);
    j.record_session(id, Fence::Unclaimed, session, Some("2030-01-01T00:00:00Z"), &files).expect("record session");
}

fn state(j: &dyn Store, id: GroupId) -> GroupState {
    j.group(id).unwrap().state
}

both! {
    fn a_write_under_a_superseded_claim_is_refused_and_changes_nothing(j) {
        let id = queued(j, "/exports/fenced", "fp-fenced", &[200, 50]);
        let old = j.claim(id).unwrap().expect("a queued group can be claimed");
        j.record_session(id, old.fence(), "sess-f", None, &session_files(j, id, 100)).unwrap();
        let video = j.group(id).unwrap().files[0].id;
        j.part_done(video, 1, "e1", old.fence()).unwrap();
        // The node went silent; a newer claim (a takeover) supersedes the old one.
        let new = j.claim(id).unwrap().expect("an uploading group can be taken over");
        assert!(new.token > old.token, "{old:?} then {new:?}");
        let before = format!("{:?}", j.group(id).unwrap());
        let lines = j.events(id).unwrap().len();
        let f = old.fence();
        let refused = [
            ("part_done", j.part_done(video, 2, "late", f)),
            ("file_completed", j.file_completed(video, Some(7), f)),
            ("complete_group", j.complete_group(id, 7, f)),
            ("fail_group", j.fail_group(id, "late", Some(1), f)),
            ("cancel_group", j.cancel_group(id, "late", false, f)),
            ("expire_group", j.expire_group(id, "late", true, f).map(|_| ())),
            ("resume", j.resume(id, f)),
            ("record_session", j.record_session(id, f, "sess-late", None, &session_files(j, id, 100))),
        ];
        for (what, r) in refused {
            assert!(
                matches!(r, Err(JournalError::Fenced { id: g, token, .. }) if g == id && token == old.token),
                "{what}: {r:?}"
            );
        }
        assert_eq!(format!("{:?}", j.group(id).unwrap()), before, "nothing changed");
        assert_eq!(j.events(id).unwrap().len(), lines, "no history line either");
        assert_eq!(j.renew_claims(&[old]).unwrap(), vec![id], "the old claim is lost");
        assert!(j.renew_claims(&[new]).unwrap().is_empty(), "the new one is held");
        // The holder's writes go through.
        j.part_done(video, 2, "e2", new.fence()).unwrap();
        j.file_completed(video, None, new.fence()).unwrap();
        let audio = j.group(id).unwrap().files[1].id;
        j.part_done(audio, 1, "e3", new.fence()).unwrap();
        j.file_completed(audio, Some(7), new.fence()).unwrap();
        j.complete_group(id, 7, new.fence()).unwrap();
        assert_eq!(state(j, id), GroupState::Completed);
        // And once completed, the old claim still cannot touch it.
        assert!(matches!(j.complete_group(id, 8, f), Err(JournalError::Fenced { .. })));
        assert_eq!(j.group(id).unwrap().library_id, Some(7));
    }
}

both! {
    fn a_move_another_writer_already_made_is_a_no_op(j) {
        // completed -> completed: the second answer changes nothing and is no error.
        let id = queued(j, "/exports/twice", "fp-twice", &[100]);
        start(j, id, "sess-t", 100);
        j.complete_group(id, 5, Fence::Unclaimed).unwrap();
        let lines = j.events(id).unwrap().len();
        j.complete_group(id, 5, Fence::Unclaimed).expect("completed again: a no-op");
        assert_eq!(state(j, id), GroupState::Completed);
        assert_eq!(j.events(id).unwrap().len(), lines);
        // canceled -> canceled (by another node meanwhile): the first reason stays.
        let id = queued(j, "/exports/cancel-twice", "fp-ct", &[100]);
        j.cancel_group(id, "by the user", true, Fence::Unclaimed).unwrap();
        j.cancel_group(id, "source changed", false, Fence::Unclaimed).expect("canceled again: a no-op");
        let g = j.group(id).unwrap();
        assert_eq!((g.state, g.error.as_deref(), g.user_canceled), (GroupState::Canceled, Some("by the user"), true));
        // A move that is not legal is still refused.
        assert!(matches!(
            j.fail_group(id, "x", None, Fence::Unclaimed),
            Err(JournalError::IllegalTransition { .. })
        ));
    }
}

both! {
    fn every_claim_of_a_group_carries_a_larger_token(j) {
        let id = queued(j, "/exports/tokens", "fp-tokens", &[100]);
        let first = j.next_group(&[]).unwrap().expect("claimed");
        assert_eq!(first.id, id);
        let second = j.claim(id).unwrap().expect("claimed again");
        let third = j.next_group(&[]).unwrap().expect("and again");
        assert!(first.token < second.token && second.token < third.token, "{first:?} {second:?} {third:?}");
        assert_eq!(j.next_group(&[id]).unwrap(), None, "a busy group is not claimed");
        j.complete_group(id, 1, Fence::Unclaimed).unwrap_err();
        j.cancel_group(id, "done with it", true, third.fence()).unwrap();
        assert_eq!(j.claim(id).unwrap(), None, "an ended group cannot be claimed");
    }
}

/// The files of a session as [`start`] records them.
fn session_files(j: &dyn Store, id: GroupId, part_size: u64) -> Vec<SessionFile> {
    j.group(id)
        .unwrap()
        .files
        .iter()
        .map(|f| SessionFile {
            file_id: f.id,
            upload_id: format!("up-{}-{}", id, f.position),
            part_size,
            total_parts: f.size.div_ceil(part_size).max(1) as u32,
            strategy: if f.size <= part_size { Strategy::SinglePut } else { Strategy::Multipart },
        })
        .collect()
}

#[test]
fn states_spell_lower_case_and_parse_back() {
    for s in GroupState::ALL {
        assert_eq!(s.to_string().parse::<GroupState>().unwrap(), s);
        assert_eq!(s.to_string(), s.to_string().to_lowercase());
        assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
    }
    assert!("Queued".parse::<GroupState>().is_err());
}

#[test]
fn only_documented_transitions_are_legal() {
    use GroupState::*;
    let legal = [
        (Waiting, Queued),
        (Waiting, Rejected),
        (Queued, Waiting),
        (Queued, Uploading),
        (Queued, Failed),
        (Queued, Canceled),
        (Uploading, Completed),
        (Uploading, Failed),
        (Uploading, Canceled),
        (Uploading, Expired),
        (Failed, Queued),
        (Failed, Canceled),
        (Failed, Expired),
    ];
    for from in GroupState::ALL {
        for to in GroupState::ALL {
            assert_eq!(from.can_become(to), legal.contains(&(from, to)), "{from} -> {to}");
        }
        if from.is_terminal() {
            assert!(GroupState::ALL.iter().all(|&to| !from.can_become(to)), "{from} is terminal");
        }
    }
}

both! {
    fn illegal_transition_is_an_error_and_writes_nothing(j) {
        let id = queued(j, "/x/a", "fp", &[10]);
        let events_before = j.events(id).unwrap().len();
        let err = j.complete_group(id, 7, Fence::Unclaimed).unwrap_err();
        assert!(
            matches!(err, JournalError::IllegalTransition { from: GroupState::Queued, to: GroupState::Completed, .. }),
            "{err}"
        );
        let g = j.group(id).unwrap();
        assert_eq!(g.state, GroupState::Queued);
        assert_eq!(g.library_id, None);
        assert_eq!(j.events(id).unwrap().len(), events_before);
        // expired is only reachable from uploading/failed
        assert!(matches!(j.expire_group(id, "x", true, Fence::Unclaimed), Err(JournalError::IllegalTransition { .. })));
        assert_eq!(j.list().unwrap().len(), 1);
    }
}

both! {
    fn the_full_happy_path_records_every_fact(j) {
        let w = j.note_waiting(Path::new("/x/a"), "a", Some(Path::new("/x"))).unwrap();
        assert_eq!(j.note_waiting(Path::new("/x/a"), "a", Some(Path::new("/x"))).unwrap(), w, "idempotent per key");
        assert_eq!(j.list().unwrap()[0].state, GroupState::Waiting);

        let id = queued(j, "/x/a", "fp", &[250, 10]);
        assert_eq!(id, w, "the waiting row is reused");
        start(j, id, "sess-1", 100);
        let g = j.group(id).unwrap();
        assert_eq!(g.state, GroupState::Uploading);
        assert_eq!(g.session_id.as_deref(), Some("sess-1"));
        assert_eq!(g.files[0].parts.len(), 3);
        assert_eq!(
            g.files[0].parts.iter().map(|p| (p.byte_start, p.size)).collect::<Vec<_>>(),
            vec![(0, 100), (100, 100), (200, 50)]
        );
        assert_eq!(g.files[1].parts.len(), 1);
        assert_eq!(g.files[1].strategy, Some(Strategy::SinglePut));

        j.part_done(g.files[0].id, 2, "\"etag-2\"", Fence::Unclaimed).unwrap();
        let s = j.summary(id).unwrap();
        assert_eq!((s.bytes_total, s.bytes_uploaded, s.parts_done, s.parts_total), (260, 100, 1, 4));
        assert!(matches!(j.part_done(g.files[0].id, 9, "x", Fence::Unclaimed), Err(JournalError::NoSuchPart { part: 9, .. })));

        j.part_done(g.files[0].id, 1, "\"etag-1\"", Fence::Unclaimed).unwrap();
        j.part_done(g.files[0].id, 3, "\"etag-3\"", Fence::Unclaimed).unwrap();
        j.file_completed(g.files[0].id, None, Fence::Unclaimed).unwrap();
        j.part_done(g.files[1].id, 1, "\"etag-s\"", Fence::Unclaimed).unwrap();
        j.file_completed(g.files[1].id, Some(42), Fence::Unclaimed).unwrap();
        let g = j.group(id).unwrap();
        assert_eq!(g.library_id, Some(42));
        assert!(g.files.iter().all(|f| f.state == FileState::Completed));
        assert_eq!(g.files[0].parts[1].etag.as_deref(), Some("\"etag-2\""));
        j.complete_group(id, 42, Fence::Unclaimed).unwrap();

        let s = j.summary(id).unwrap();
        assert_eq!(s.state, GroupState::Completed);
        assert_eq!((s.bytes_uploaded, s.library_id), (260, Some(42)));
        let history: Vec<_> = j.events(id).unwrap().into_iter().filter_map(|e| e.to).collect();
        assert_eq!(history, vec![GroupState::Waiting, GroupState::Queued, GroupState::Uploading, GroupState::Completed]);
        assert_eq!(j.unfinished().unwrap(), vec![id]);
        j.set_finished(id).unwrap();
        assert!(j.unfinished().unwrap().is_empty());
    }
}

both! {
    fn status_json_has_the_fixed_field_names(j) {
        queued(j, "/x/a", "fp", &[5]);
        let v = serde_json::to_value(j.list().unwrap()).unwrap();
        let row = &v[0];
        for k in ["id", "name", "path", "state", "sessionId", "libraryId", "bytesTotal", "bytesUploaded", "error"] {
            assert!(row.get(k).is_some(), "missing {k} in {row}");
        }
        assert_eq!(row["state"], "queued");
        assert_eq!(row["path"], "/x/a");
        assert!(row["sessionId"].is_null() && row["libraryId"].is_null());
    }
}

both! {
    fn dedup_by_fingerprint(j) {
        let a = queued(j, "/x/a", "fp-a", &[5]);
        // queued: same fingerprint again (a rescan) creates nothing
        j.note_waiting(Path::new("/x/a2"), "a2", None).unwrap();
        assert_eq!(
            j.enqueue(&group("/x/a2", "fp-a", &[5])).unwrap(),
            Enqueued::Duplicate { id: a, state: GroupState::Queued }
        );
        assert_eq!(j.list().unwrap().len(), 1, "the duplicate's waiting row is dropped");
        // uploading
        start(j, a, "s-a", 100);
        assert_eq!(
            j.enqueue(&group("/x/a", "fp-a", &[5])).unwrap(),
            Enqueued::Duplicate { id: a, state: GroupState::Uploading }
        );
        // completed
        let f = j.group(a).unwrap().files[0].id;
        j.part_done(f, 1, "e", Fence::Unclaimed).unwrap();
        j.file_completed(f, Some(1), Fence::Unclaimed).unwrap();
        j.complete_group(a, 1, Fence::Unclaimed).unwrap();
        assert_eq!(
            j.enqueue(&group("/x/a", "fp-a", &[5])).unwrap(),
            Enqueued::Duplicate { id: a, state: GroupState::Completed }
        );
        // expired groups do not block a new upload of the same bytes
        let b = queued(j, "/x/b", "fp-b", &[5]);
        start(j, b, "s-b", 100);
        assert_eq!(j.expire_group(b, "404", false, Fence::Unclaimed).unwrap(), None);
        let b2 = queued(j, "/x/b", "fp-b", &[5]);
        assert_ne!(b2, b);
        // a user's cancel sticks; a cancel because the source changed does not
        let c = queued(j, "/x/c", "fp-c", &[5]);
        j.cancel_group(c, "canceled by the user", true, Fence::Unclaimed).unwrap();
        assert_eq!(
            j.enqueue(&group("/x/c", "fp-c", &[5])).unwrap(),
            Enqueued::Duplicate { id: c, state: GroupState::Canceled }
        );
        let e = queued(j, "/x/e", "fp-e", &[5]);
        j.cancel_group(e, "video.mov changed during upload", false, Fence::Unclaimed).unwrap();
        assert!(matches!(j.enqueue(&group("/x/e", "fp-e", &[5])).unwrap(), Enqueued::Queued(_)));
    }
}

both! {
    fn rejected_groups_keep_their_reasons(j) {
        j.note_waiting(Path::new("/x/r"), "r", None).unwrap();
        let mut g = group("/x/r", "fp-r", &[5]);
        g.violations.push(Violation {
            rule: "one-video",
            file: Some("b.mov".into()),
            message: "a second video file; a 2D group has exactly one".into(),
        });
        let Enqueued::Rejected(id) = j.enqueue(&g).unwrap() else { panic!("not rejected") };
        let s = j.summary(id).unwrap();
        assert_eq!(s.state, GroupState::Rejected);
        assert!(s.error.as_deref().unwrap().contains("b.mov: a second video file"), "{:?}", s.error);
        // the same rejection is not recorded twice
        assert_eq!(j.enqueue(&g).unwrap(), Enqueued::Duplicate { id, state: GroupState::Rejected });
        // fixed (e.g. a config change) with the same files: queued
        g.violations.clear();
        assert!(matches!(j.enqueue(&g).unwrap(), Enqueued::Queued(n) if n != id));
    }
}

both! {
    fn unqueue_only_before_the_upload_started(j) {
        let id = queued(j, "/x/a", "fp-1", &[5]);
        assert!(j.unqueue(Path::new("/x/a")).unwrap());
        let s = j.summary(id).unwrap();
        assert_eq!((s.state, s.files), (GroupState::Waiting, 0));
        // settles again with new content: same row, new fingerprint
        assert_eq!(j.enqueue(&group("/x/a", "fp-2", &[6])).unwrap(), Enqueued::Queued(id));
        start(j, id, "s", 100);
        assert!(!j.unqueue(Path::new("/x/a")).unwrap(), "already uploading");
        assert_eq!(state(j, id), GroupState::Uploading);
        assert!(!j.unqueue(Path::new("/nothing")).unwrap());
        // drop_waiting forgets only waiting rows
        j.note_waiting(Path::new("/x/b"), "b", None).unwrap();
        j.drop_waiting(Path::new("/x/b")).unwrap();
        j.drop_waiting(Path::new("/x/a")).unwrap();
        assert_eq!(j.list().unwrap().iter().map(|s| s.id).collect::<Vec<_>>(), vec![id]);
    }
}

both! {
    fn a_queued_export_enqueued_again_with_new_content_is_replaced_in_place(j) {
        let id = queued(j, "/x/a", "fp-1", &[5]);
        assert_eq!(j.enqueue(&group("/x/a", "fp-2", &[7, 3])).unwrap(), Enqueued::Queued(id));
        let g = j.group(id).unwrap();
        assert_eq!((g.fingerprint.as_deref(), g.total_bytes(), g.files.len()), (Some("fp-2"), 10, 2));
    }
}

both! {
    fn next_group_resumes_uploads_first_then_priority(j) {
        let a = queued(j, "/x/a", "a", &[5]);
        let mut g = group("/x/b", "b", &[5]);
        g.priority = 5;
        let Enqueued::Queued(b) = j.enqueue(&g).unwrap() else { panic!() };
        let c = queued(j, "/x/c", "c", &[5]);
        assert_eq!(j.next_group(&[]).unwrap().map(|c| c.id), Some(b));
        start(j, c, "s-c", 100);
        assert_eq!(j.next_group(&[]).unwrap().map(|c| c.id), Some(c));
        assert_eq!(j.next_group(&[c]).unwrap().map(|c| c.id), Some(b));
        assert_eq!(j.next_group(&[c, b]).unwrap().map(|c| c.id), Some(a));
        assert_eq!(j.next_group(&[c, b, a]).unwrap().map(|c| c.id), None);
    }
}

both! {
    fn session_with_inconsistent_parts_is_refused_whole(j) {
        let id = queued(j, "/x/a", "a", &[250]);
        let f = j.group(id).unwrap().files[0].id;
        let bad = SessionFile {
            file_id: f,
            upload_id: "u".into(),
            part_size: 100,
            total_parts: 2,
            strategy: Strategy::Multipart,
        };
        assert!(matches!(j.record_session(id, Fence::Unclaimed, "s", None, &[bad]), Err(JournalError::Invalid(_))));
        let g = j.group(id).unwrap();
        assert_eq!((g.state, g.session_id, g.files[0].parts.len()), (GroupState::Queued, None, 0));
    }
}

both! {
    fn failed_groups_retry_on_the_same_row_and_automatically_when_due(j) {
        let id = queued(j, "/x/a", "a", &[250]);
        start(j, id, "s", 100);
        let f = j.group(id).unwrap().files[0].id;
        j.part_done(f, 1, "e1", Fence::Unclaimed).unwrap();
        j.fail_group(id, "HTTP 500 after 10 attempts", Some(1_000), Fence::Unclaimed).unwrap();
        assert_eq!(j.next_retry_at().unwrap(), Some(1_000));
        assert!(j.requeue_due(999).unwrap().is_empty());
        assert_eq!(j.requeue_due(1_000).unwrap(), vec![id]);
        let g = j.group(id).unwrap();
        assert_eq!(g.state, GroupState::Queued);
        assert_eq!(g.session_id.as_deref(), Some("s"), "the session is kept for resuming");
        assert!(g.files[0].parts[0].done, "progress is kept");
        // explicit retry of a failed group: same row
        j.fail_group(id, "boom", None, Fence::Unclaimed).unwrap();
        assert_eq!(j.retry_group(id).unwrap(), id);
        assert_eq!(state(j, id), GroupState::Queued);
        assert!(matches!(j.retry_group(id), Err(JournalError::Refused(_))));
    }
}

both! {
    fn expired_and_canceled_groups_come_back_as_new_groups(j) {
        let id = queued(j, "/x/a", "a", &[250, 5]);
        start(j, id, "s", 100);
        j.part_done(j.group(id).unwrap().files[0].id, 1, "e", Fence::Unclaimed).unwrap();
        let new = j.expire_group(id, "the server no longer knows session s", true, Fence::Unclaimed).unwrap().expect("re-queued");
        let (old, g) = (j.group(id).unwrap(), j.group(new).unwrap());
        assert_eq!((old.state, old.finished), (GroupState::Expired, true));
        assert_eq!((g.state, g.retry_of, g.session_id.as_ref()), (GroupState::Queued, Some(id), None));
        assert_eq!(g.files.len(), 2);
        assert!(g.files.iter().all(|f| f.parts.is_empty() && f.upload_id.is_none()));
        assert_eq!(g.fingerprint.as_deref(), Some("a"));
        // retry of the expired one is refused: it is already re-uploaded
        assert!(matches!(j.retry_group(id), Err(JournalError::Refused(_))));

        j.cancel_group(new, "canceled by the user", true, Fence::Unclaimed).unwrap();
        let again = j.retry_group(new).unwrap();
        assert_ne!(again, new);
        assert_eq!(state(j, again), GroupState::Queued);
        assert!(matches!(j.retry_group(again), Err(JournalError::Refused(_))), "queued cannot be retried");
    }
}

both! {
    fn cancel_requests_round_trip(j) {
        let id = queued(j, "/x/a", "a", &[5]);
        let rid = j.request(id, RequestKind::Cancel).unwrap();
        let open = j.open_requests().unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!((open[0].id, open[0].group_id, open[0].kind), (rid, id, RequestKind::Cancel));
        j.finish_request(rid, &RequestResult::Canceled).unwrap();
        assert!(j.open_requests().unwrap().is_empty());
        assert_eq!(j.request_status(rid).unwrap().unwrap().result, Some(RequestResult::Canceled));
        assert!(matches!(j.request(999, RequestKind::Cancel), Err(JournalError::NoSuchGroup(999))));
    }
}

both! {
    fn find_by_id_session_or_path(j) {
        let a = queued(j, "/x/a", "a", &[5]);
        let b = queued(j, "/x/b", "b", &[5]);
        start(j, b, "5ea97a59-95e0", 100);
        assert_eq!(j.find(&a.to_string()).unwrap(), Some(a));
        assert_eq!(j.find("5ea97a59-95e0").unwrap(), Some(b));
        assert_eq!(j.find("/x/a").unwrap(), Some(a));
        assert_eq!(j.find("/x/a/").unwrap(), Some(a));
        assert_eq!(j.find("/nowhere").unwrap(), None);
    }
}

both! {
    // Windows' drive-letter and UNC paths (a render farm's share) come back
    // from the journal, `find` and `status --json` exactly as they went in,
    // backslashes and all; on Unix they are odd but valid names.
    fn drive_letter_and_unc_paths_round_trip_through_the_journal_and_status(j) {
        for (n, key) in [r"D:\Renders\Café 010\Shot_010_v002", r"\\renderfs\exports\spatial\Shot 020"].iter().enumerate() {
            let mut g = group(key, &format!("fp-win-{n}"), &[5]);
            g.key = PathBuf::from(key);
            g.root = g.key.clone();
            g.files[0].source = PathBuf::from(format!(r"{key}\Shot_010_v002_L.mov"));
            let Enqueued::Queued(id) = j.enqueue(&g).unwrap() else { panic!() };
            let r = j.group(id).unwrap();
            assert_eq!((r.key.to_str(), r.root.to_str()), (Some(*key), Some(*key)));
            assert_eq!(r.files[0].source, g.files[0].source);
            assert_eq!(j.find(key).unwrap(), Some(id), "found by its path");
            #[cfg(windows)]
            assert_eq!(j.find(&format!("{key}\\")).unwrap(), Some(id), "and with a trailing backslash");
            let v = serde_json::to_value(j.list().unwrap()).unwrap();
            let row = v.as_array().unwrap().iter().find(|r| r["id"] == id).cloned().unwrap();
            assert_eq!(row["path"], *key, "status --json shows the path as given");
        }
    }
}

both! {
    #[cfg(unix)]
    fn odd_file_names_round_trip(j) {
        use std::os::unix::ffi::OsStrExt;
        let weird = std::ffi::OsStr::from_bytes(b"/x/caf\xe9 shot 010");
        let mut g = group("/x/tmp", "w", &[5]);
        g.key = PathBuf::from(weird);
        g.root = g.key.clone();
        g.files[0].source = g.key.join("Shot_010_v002_L.mov");
        let Enqueued::Queued(id) = j.enqueue(&g).unwrap() else { panic!() };
        let r = j.group(id).unwrap();
        assert_eq!(r.key.as_os_str(), weird);
        assert_eq!(r.files[0].source, g.files[0].source);
    }
}

#[cfg(unix)]
#[test]
fn journal_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let d = tmp();
    let path = d.path().join("sub/j.sqlite3");
    let j = Journal::open(&path).unwrap();
    queued(&j, "/x/a", "a", &[5]);
    for p in [path.clone(), PathBuf::from(format!("{}-wal", path.display()))] {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
}

#[test]
fn migrates_a_version_1_journal() {
    let d = tmp();
    let path = d.path().join("old.sqlite3");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(include_str!("fixtures/v1.sql")).unwrap();
    }
    let j = Journal::open(&path).unwrap();
    assert_eq!(j.schema_version().unwrap(), schema::LATEST);
    let list = j.list().unwrap();
    assert_eq!(
        list.iter().map(|s| (s.id, s.state)).collect::<Vec<_>>(),
        vec![(1, GroupState::Completed), (2, GroupState::Uploading), (3, GroupState::Queued)]
    );
    assert_eq!(list[0].library_id, Some(41));
    assert_eq!((list[1].bytes_total, list[1].bytes_uploaded), (150, 100));
    // the mid-upload group resumes: part 1 done with its ETag, part 2 pending
    let b = j.group(2).unwrap();
    assert_eq!(b.key, PathBuf::from("/renders/b"));
    assert_eq!(b.files[0].source, PathBuf::from("/renders/b/b.mov"));
    assert_eq!(b.files[0].parts[0].etag.as_deref(), Some("\"e2\""));
    assert!(!b.files[0].parts[1].done);
    // old paths work with the new lookups and the completed fingerprint still dedups
    assert_eq!(j.find("/renders/c").unwrap(), Some(3));
    assert_eq!(
        j.enqueue(&group("/renders/a", "fp-a", &[10])).unwrap(),
        Enqueued::Duplicate { id: 1, state: GroupState::Completed }
    );
    assert!(j.unfinished().unwrap().is_empty(), "old completed groups need no housekeeping");
    // v3: old queued rows have a place in the queue; the history is tail-able from its newest line
    assert_eq!(j.queue().unwrap(), vec![3]);
    assert!(queued_at(&j, 3).is_some());
    let cursor = j.last_event_id().unwrap();
    j.fail_group(2, "boom", None, Fence::Unclaimed).unwrap();
    let ended = j.ended_after(cursor, 10).unwrap();
    assert_eq!(ended.iter().map(|e| (e.group_id, e.state)).collect::<Vec<_>>(), vec![(2, GroupState::Failed)]);
    // re-opening a migrated journal is a no-op
    drop(j);
    let j = Journal::open(&path).unwrap();
    assert_eq!(j.list().unwrap().len(), 3);
}

#[test]
fn migrates_a_version_2_journal() {
    let d = tmp();
    let path = d.path().join("old.sqlite3");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(include_str!("fixtures/v2.sql")).unwrap();
    }
    let j = Journal::open(&path).unwrap();
    assert_eq!(j.schema_version().unwrap(), schema::LATEST);
    let list = j.list().unwrap();
    assert_eq!(
        list.iter().map(|s| (s.id, s.state)).collect::<Vec<_>>(),
        vec![
            (1, GroupState::Completed),
            (2, GroupState::Uploading),
            (3, GroupState::Queued),
            (4, GroupState::Failed),
            (5, GroupState::Canceled),
            (6, GroupState::Expired),
            (7, GroupState::Queued),
            (8, GroupState::Rejected),
            (9, GroupState::Waiting),
        ]
    );
    assert_eq!(list[0].library_id, Some(41));
    assert_eq!((list[1].files, list[1].parts_total, list[1].parts_done), (2, 3, 2));
    assert_eq!((list[1].bytes_total, list[1].bytes_uploaded), (190, 140));
    assert_eq!(list[1].watch_path.as_deref(), Some("/renders"));
    assert_eq!(list[7].error.as_deref(), Some("no video file; a group has exactly one"));
    let a = j.group(1).unwrap();
    assert_eq!((a.layout, a.perspective), (Some(Layout::TwoD), Some(Perspective::Regular)));
    assert!(a.finished);
    // the mid-upload group: blob paths, both files, the parts with their ETags
    let b = j.group(2).unwrap();
    assert_eq!(b.key, PathBuf::from("/renders/b"));
    assert_eq!(b.watch_path, Some(PathBuf::from("/renders")));
    assert_eq!(b.layout, Some(Layout::Mvhevc));
    assert_eq!(b.session_id.as_deref(), Some("sess-b"));
    assert_eq!(b.files[0].source, PathBuf::from("/renders/b/b.mov"));
    assert_eq!((b.files[0].state, b.files[0].upload_id.as_deref()), (FileState::Uploading, Some("up-b0")));
    assert_eq!(b.files[0].parts[0].etag.as_deref(), Some("\"e2\""));
    assert!(b.files[0].parts[0].done);
    assert_eq!((b.files[0].parts[1].byte_start, b.files[0].parts[1].size), (100, 50));
    assert!(!b.files[0].parts[1].done);
    assert_eq!((b.files[1].role, b.files[1].language.as_deref()), (FileRole::Audio, Some("en")));
    assert_eq!(b.files[1].state, FileState::Completed);
    assert_eq!(b.files[1].parts[0].etag.as_deref(), Some("\"e3\""));
    assert!(b.files.iter().all(|f| f.dev.is_none() && f.ino.is_none()), "v4: no identity for old rows");
    // the links and flags version 2 added
    assert!(j.group(5).unwrap().user_canceled);
    assert_eq!(j.group(7).unwrap().retry_of, Some(6));
    assert!(j.group(6).unwrap().finished);
    assert!(j.unfinished().unwrap().is_empty(), "old ended groups need no housekeeping");
    // the history reads back, state words parsed
    assert_eq!(
        j.events(5).unwrap().iter().map(|e| (e.from, e.to, e.detail.as_deref())).collect::<Vec<_>>(),
        vec![
            (None, Some(GroupState::Queued), Some("queued")),
            (None, None, Some("cancel requested")),
            (Some(GroupState::Queued), Some(GroupState::Canceled), Some("canceled by the user")),
        ]
    );
    assert_eq!(j.events(2).unwrap()[1].at_ms, 1700000011000);
    let ended = j.ended_after(0, 100).unwrap();
    assert_eq!(
        ended.iter().map(|e| (e.event_id, e.group_id, e.state)).collect::<Vec<_>>(),
        vec![(4, 1, GroupState::Completed), (11, 4, GroupState::Failed), (21, 8, GroupState::Rejected)]
    );
    assert_eq!(ended[0].library_id, Some(41));
    assert_eq!(ended[0].path, PathBuf::from("/renders/a"));
    assert_eq!(ended[1].error.as_deref(), Some("HTTP 500 from the server"));
    assert_eq!(ended[2].error.as_deref(), Some("no video file; a group has exactly one"));
    assert_eq!(j.last_event_id().unwrap(), 23);
    // requests: the handled one keeps its answer, the open one is still open
    let done = j.request_status(1).unwrap().unwrap();
    assert_eq!(
        (done.kind, done.group_id, done.result.clone()),
        (RequestKind::Cancel, 5, Some(RequestResult::Canceled))
    );
    assert_eq!(done.handled_at_ms, Some(1700000042000));
    let open = j.open_requests().unwrap();
    assert_eq!(open.iter().map(|r| (r.id, r.group_id, r.kind)).collect::<Vec<_>>(), vec![(2, 4, RequestKind::Retry)]);
    // v3: queued rows get their place from the history; the failed group keeps its own
    assert_eq!(queued_at(&j, 3), Some(1700000021000));
    assert_eq!(queued_at(&j, 7), Some(1700000052000));
    assert_eq!((queued_at(&j, 8), queued_at(&j, 9)), (None, None));
    assert_eq!(j.queue().unwrap(), vec![3, 7]);
    assert_eq!(j.next_group(&[]).unwrap().map(|c| c.id), Some(2), "the upload resumes first");
    assert_eq!(j.next_retry_at().unwrap(), Some(1700000900000));
    assert_eq!(j.requeue_due(1700000900000).unwrap(), vec![4]);
    assert_eq!(j.queue().unwrap(), vec![3, 4, 7], "the retried group keeps the place it was queued at");
    // lookups and dedup on old rows
    assert_eq!(j.find("sess-d").unwrap(), Some(4));
    assert_eq!(j.find("/renders/c").unwrap(), Some(3));
    assert_eq!(j.find("/renders/f").unwrap(), Some(7), "the newest row of the export");
    assert_eq!(
        j.enqueue(&group("/renders/e", "fp-e", &[7])).unwrap(),
        Enqueued::Duplicate { id: 5, state: GroupState::Canceled }
    );
    let mut g = group("/renders/g", "fp-g", &[3]);
    g.violations.push(Violation {
        rule: "one-video",
        file: None,
        message: "no video file; a group has exactly one".into(),
    });
    assert_eq!(j.enqueue(&g).unwrap(), Enqueued::Duplicate { id: 8, state: GroupState::Rejected });
    // v3: event ids are not reused after the newest lines go with their group
    j.note(9, "still settling").unwrap();
    let newest = j.last_event_id().unwrap();
    j.drop_waiting(Path::new("/renders/h")).unwrap();
    assert!(j.last_event_id().unwrap() < newest, "the newest line went with its group");
    j.note(3, "noted").unwrap();
    assert_eq!(j.last_event_id().unwrap(), newest + 1);
    // v4: the pauses table exists
    assert!(j.pauses().unwrap().is_empty());
    // the old upload finishes on its recorded session
    j.part_done(2, 2, "\"e4\"", Fence::Unclaimed).unwrap();
    j.file_completed(2, None, Fence::Unclaimed).unwrap();
    j.complete_group(2, 42, Fence::Unclaimed).unwrap();
    let s = j.summary(2).unwrap();
    assert_eq!((s.state, s.bytes_uploaded, s.library_id), (GroupState::Completed, 190, Some(42)));
    // re-opening a migrated journal is a no-op
    drop(j);
    let j = Journal::open(&path).unwrap();
    assert_eq!(j.schema_version().unwrap(), schema::LATEST);
    assert_eq!(j.list().unwrap().len(), 8);
}

#[test]
fn a_newer_journal_is_refused_untouched() {
    let d = tmp();
    let path = d.path().join("new.sqlite3");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("CREATE TABLE future (x); PRAGMA user_version = 99;").unwrap();
    }
    let err = Journal::open(&path).unwrap_err();
    assert!(matches!(err, JournalError::TooNew { found: 99, .. }), "{err}");
    assert!(err.to_string().contains("newer spatialgen-sync"), "{err}");
    let c = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(v, 99);
    let n: i64 = c.query_row("SELECT COUNT(*) FROM sqlite_master WHERE name = 'groups'", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 0, "nothing was created");
}

#[test]
fn a_corrupt_journal_is_renamed_aside_and_replaced() {
    let d = tmp();
    let path = d.path().join("j.sqlite3");
    std::fs::write(&path, b"this is not an SQLite database, it is garbage left by a broken disk....").unwrap();
    let j = Journal::open(&path).unwrap();
    assert!(j.list().unwrap().is_empty());
    queued(&j, "/x/a", "a", &[5]);
    let aside: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("j.sqlite3.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    let kept = std::fs::read(d.path().join(&aside[0])).unwrap();
    assert!(kept.starts_with(b"this is not an SQLite database"), "the bad file is kept for inspection");
}

#[test]
fn a_truncated_journal_is_renamed_aside() {
    let d = tmp();
    let path = d.path().join("j.sqlite3");
    {
        let j = Journal::open(&path).unwrap();
        for i in 0..50 {
            queued(&j, &format!("/x/{i}"), &format!("fp{i}"), &[5, 6, 7]);
        }
        let c = j.conn();
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    }
    let _ = std::fs::remove_file(format!("{}-wal", path.display()));
    let _ = std::fs::remove_file(format!("{}-shm", path.display()));
    let bytes = std::fs::read(&path).unwrap();
    // keep the header, scribble over the first table page
    let mut bad = bytes.clone();
    for b in bad.iter_mut().skip(4096).take(4096) {
        *b = 0xA5;
    }
    std::fs::write(&path, &bad).unwrap();
    let j = Journal::open(&path).unwrap();
    assert!(j.list().unwrap().is_empty(), "a fresh journal");
    assert!(
        std::fs::read_dir(d.path()).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains(".corrupt-"))
    );
}

#[test]
fn agent_and_cli_use_the_journal_at_once() {
    let d = tmp();
    let path = d.path().join("j.sqlite3");
    let agent = Journal::open(&path).unwrap();
    let cli = Journal::open(&path).unwrap();
    let id = queued(&agent, "/x/a", "a", &[1000]);
    start(&agent, id, "s", 10);
    let f = agent.group(id).unwrap().files[0].id;
    let writer = std::thread::spawn(move || {
        for n in 1..=100u32 {
            agent.part_done(f, n, &format!("e{n}"), Fence::Unclaimed).unwrap();
        }
        agent
    });
    // the CLI reads and writes while the agent records parts
    let mut seen = 0;
    for _ in 0..50 {
        let s = cli.summary(id).unwrap();
        assert!(s.parts_done >= seen, "progress never goes back");
        seen = s.parts_done;
        cli.request(id, RequestKind::Cancel).unwrap();
    }
    let agent = writer.join().unwrap();
    assert_eq!(cli.summary(id).unwrap().parts_done, 100);
    assert_eq!(agent.open_requests().unwrap().len(), 50);
}

#[test]
fn one_engine_per_journal() {
    let d = tmp();
    let path = d.path().join("j.sqlite3");
    let j = Journal::open(&path).unwrap();
    assert!(!j.engine_running().unwrap());
    let lock = j.try_lock_engine().unwrap().expect("free");
    assert!(j.engine_running().unwrap());
    let other = Journal::open(&path).unwrap();
    assert!(other.try_lock_engine().unwrap().is_none());
    drop(lock);
    assert!(!other.engine_running().unwrap());
    assert!(other.try_lock_engine().unwrap().is_some());
}

both! {
    fn a_staged_zip_shared_with_a_live_group_is_in_use(j) {
        let mut rejected = group("/x/a", "fp", &[5, 6]);
        rejected.files[1].staged = true;
        rejected.files[1].source = PathBuf::from("/staging/fp-Edit.fcpxmld.zip");
        rejected.violations.push(Violation { rule: "r", file: None, message: "m".into() });
        let Enqueued::Rejected(r) = j.enqueue(&rejected).unwrap() else { panic!() };
        let zip = rejected.files[1].source.clone();
        assert!(!j.staged_in_use(&zip, r).unwrap(), "only the rejected group has it");
        rejected.violations.clear();
        let Enqueued::Queued(q) = j.enqueue(&rejected).unwrap() else { panic!() };
        assert!(j.staged_in_use(&zip, r).unwrap(), "the fixed group still needs it");
        assert!(!j.staged_in_use(&zip, q).unwrap());
    }
}

fn queued_at(j: &dyn Store, id: GroupId) -> Option<i64> {
    j.test_sql(&format!("SELECT queued_at FROM groups WHERE id = {id}")).unwrap()
}

both! {
    fn queue_runs_by_priority_then_by_when_the_export_was_finished_not_by_row_id(j) {
        // `a` was seen first (lower id) but finished last.
        let a_seen = j.note_waiting(Path::new("/x/a"), "a", None).unwrap();
        let b = queued(j, "/x/b", "b", &[5]);
        let a = queued(j, "/x/a", "a", &[5]);
        assert_eq!(a, a_seen, "the waiting row is reused");
        assert!(a < b);
        assert!(queued_at(j, a).is_some() && queued_at(j, b).is_some(), "enqueue records when");
        // Pin the times so the order does not depend on the clock's resolution.
        j.test_sql(&format!("UPDATE groups SET queued_at = 2000 WHERE id = {a}")).unwrap();
        j.test_sql(&format!("UPDATE groups SET queued_at = 1000 WHERE id = {b}")).unwrap();
        let mut hi = group("/x/hi", "hi", &[5]);
        hi.priority = 3;
        let Enqueued::Queued(hi) = j.enqueue(&hi).unwrap() else { panic!() };
        assert_eq!(j.queue().unwrap(), vec![hi, b, a]);
        assert_eq!(j.next_group(&[]).unwrap().map(|c| c.id), Some(hi));
        assert_eq!(j.next_group(&[hi]).unwrap().map(|c| c.id), Some(b), "older finish first, whatever the ids");

        // status shows the same order; other states have no position
        start(j, hi, "s-hi", 100);
        let rows = j.list().unwrap();
        let pos = |id| rows.iter().find(|r| r.id == id).unwrap().queue_position;
        assert_eq!((pos(b), pos(a), pos(hi)), (Some(1), Some(2), None));
        assert_eq!(j.summary(a).unwrap().queue_position, Some(2));
        assert_eq!(rows.iter().find(|r| r.id == hi).unwrap().priority, 3);
        let v = serde_json::to_value(&rows).unwrap();
        assert!(v.as_array().unwrap().iter().all(|r| r.get("queuePosition").is_some()), "{v}");

        // a failed group that is retried keeps its place; a changed export loses it
        j.test_sql(&format!("UPDATE groups SET state = 'uploading' WHERE id = {b}")).unwrap();
        j.fail_group(b, "boom", None, Fence::Unclaimed).unwrap();
        j.retry_group(b).unwrap();
        assert_eq!(queued_at(j, b), Some(1000));
        assert!(j.unqueue(Path::new("/x/a")).unwrap());
        assert_eq!(queued_at(j, a), None, "back to waiting: no longer in the queue");
        assert_eq!(j.queue().unwrap(), vec![b]);
    }
}

both! {
    fn a_re_queued_copy_keeps_the_original_place(j) {
        let a = queued(j, "/x/a", "a", &[5]);
        j.test_sql(&format!("UPDATE groups SET queued_at = 500 WHERE id = {a}")).unwrap();
        start(j, a, "s-a", 100);
        let new = j.expire_group(a, "gone", true, Fence::Unclaimed).unwrap().expect("re-queued");
        assert_eq!(queued_at(j, new), Some(500));
    }
}

both! {
    fn counts_by_state_cover_every_state(j) {
        queued(j, "/x/a", "a", &[5]);
        queued(j, "/x/b", "b", &[5]);
        let c = queued(j, "/x/c", "c", &[5]);
        start(j, c, "s-c", 100);
        let mut bad = group("/x/bad", "bad", &[5]);
        bad.violations.push(Violation { rule: "one_video", file: None, message: "no video file".into() });
        j.enqueue(&bad).unwrap();
        j.note_waiting(Path::new("/x/w"), "w", None).unwrap();
        let counts = j.count_by_state().unwrap();
        assert_eq!(counts.len(), GroupState::ALL.len());
        let n = |s| counts.iter().find(|(x, _)| *x == s).unwrap().1;
        assert_eq!(
            (n(GroupState::Queued), n(GroupState::Uploading), n(GroupState::Rejected), n(GroupState::Waiting)),
            (2, 1, 1, 1)
        );
        assert_eq!(n(GroupState::Completed), 0);
    }
}

both! {
    fn ended_groups_are_tailed_from_the_history_without_repeats_or_gaps(j) {
        let old = queued(j, "/x/old", "old", &[5]);
        start(j, old, "s-old", 100);
        j.complete_group(old, 1, Fence::Unclaimed).unwrap();
        let cursor = j.last_event_id().unwrap();
        assert!(j.ended_after(cursor, 100).unwrap().is_empty(), "history before the cursor is not replayed");

        let a = queued(j, "/x/a", "a", &[5]);
        start(j, a, "s-a", 100);
        j.complete_group(a, 77, Fence::Unclaimed).unwrap();
        let b = queued(j, "/x/b", "b", &[5]);
        start(j, b, "s-b", 100);
        j.fail_group(b, "upload part 1: HTTP 500", None, Fence::Unclaimed).unwrap();
        j.retry_group(b).unwrap(); // clears the row's error: the event still says why
        let mut bad = group("/x/bad", "bad", &[5]);
        bad.violations.push(Violation { rule: "one_video", file: None, message: "no video file".into() });
        let Enqueued::Rejected(r) = j.enqueue(&bad).unwrap() else { panic!() };

        let got = j.ended_after(cursor, 100).unwrap();
        let summary: Vec<_> = got.iter().map(|e| (e.group_id, e.state)).collect();
        assert_eq!(summary, vec![(a, GroupState::Completed), (b, GroupState::Failed), (r, GroupState::Rejected)]);
        assert_eq!((got[0].library_id, got[0].name.as_str(), got[0].path.as_path()), (Some(77), "a", Path::new("/x/a")));
        assert_eq!(got[1].error.as_deref(), Some("upload part 1: HTTP 500"));
        assert_eq!(got[1].library_id, None);
        assert!(got[2].error.as_deref().is_some_and(|e| !e.is_empty()), "{:?}", got[2]);
        // paging: a limit, then the rest from the last id seen
        let first = j.ended_after(cursor, 1).unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(j.ended_after(first[0].event_id, 100).unwrap().len(), 2);
        let last = got.last().unwrap().event_id;
        assert!(j.ended_after(last, 100).unwrap().is_empty());

        // The newest history lines deleted with their group (a dropped waiting
        // row) do not hand their ids out again.
        j.note_waiting(Path::new("/x/gone"), "gone", None).unwrap();
        let seen = j.last_event_id().unwrap();
        j.drop_waiting(Path::new("/x/gone")).unwrap();
        let mut bad2 = group("/x/bad2", "bad2", &[5]);
        bad2.violations.push(Violation { rule: "one_video", file: None, message: "no video file".into() });
        j.enqueue(&bad2).unwrap();
        let after = j.ended_after(seen, 100).unwrap();
        assert_eq!(after.len(), 1, "the rejection after the deleted line is seen");
    }
}

#[test]
fn completed_groups_are_salvaged_from_a_corrupt_journal() {
    let d = tmp();
    let path = d.path().join("j.sqlite3");
    let damaged_page: i64;
    {
        let j = Journal::open(&path).unwrap();
        for i in 0..3 {
            let id = queued(&j, &format!("/x/done{i}"), &format!("done{i}"), &[5, 6]);
            start(&j, id, &format!("s{i}"), 4);
            j.complete_group(id, 100 + i, Fence::Unclaimed).unwrap();
        }
        queued(&j, "/x/pending", "pending", &[5]);
        let c = j.conn();
        damaged_page =
            c.query_row("SELECT rootpage FROM sqlite_master WHERE name = 'parts'", [], |r| r.get(0)).unwrap();
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    }
    let _ = std::fs::remove_file(format!("{}-wal", path.display()));
    let _ = std::fs::remove_file(format!("{}-shm", path.display()));
    // Scribble over the parts table: the file is corrupt, the groups table is not.
    let mut bytes = std::fs::read(&path).unwrap();
    let page = 4096usize;
    let at = (damaged_page as usize - 1) * page;
    assert!(bytes.len() >= at + page, "the parts table has a page of its own");
    bytes[at..at + page].fill(0xA5);
    std::fs::write(&path, &bytes).unwrap();

    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let j = Journal::open(&path).unwrap();
    assert!(
        std::fs::read_dir(d.path()).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains(".corrupt-")),
        "the corrupt file is kept aside"
    );
    let rows = j.list().unwrap();
    assert_eq!(rows.len(), 3, "the completed groups, not the pending one: {rows:?}");
    assert!(rows.iter().all(|r| r.state == GroupState::Completed && r.library_id.is_some()));
    // The rescan finds the same exports: nothing is uploaded again.
    for i in 0..3 {
        let again = j.enqueue(&group(&format!("/x/done{i}"), &format!("done{i}"), &[5, 6])).unwrap();
        assert!(matches!(again, Enqueued::Duplicate { state: GroupState::Completed, .. }), "{again:?}");
    }
    assert!(matches!(j.enqueue(&group("/x/pending", "pending", &[5])).unwrap(), Enqueued::Queued(_)));
}

#[test]
fn request_results_are_stored_as_the_words_earlier_versions_wrote_and_read_back() {
    for (result, text) in [
        (RequestResult::Taken, "canceling"),
        (RequestResult::Canceled, "canceled"),
        (RequestResult::NotCanceled("the group is completed".into()), "not canceled: the group is completed"),
        (RequestResult::Requeued(42), "re-queued as group 42"),
        (
            RequestResult::Refused("group 3 is completed; there is nothing to retry".into()),
            "group 3 is completed; there is nothing to retry",
        ),
    ] {
        assert_eq!(result.to_text(), text);
        assert_eq!(RequestResult::from_text(text), result, "{text}");
    }
}

both! {
    fn a_cursor_is_absent_until_set_and_never_moves_back(j) {
        assert_eq!(j.cursor("webhook").unwrap(), None);
        j.set_cursor("webhook", 7).unwrap();
        assert_eq!(j.cursor("webhook").unwrap(), Some(7));
        j.set_cursor("webhook", 12).unwrap();
        assert_eq!(j.cursor("webhook").unwrap(), Some(12));
        j.set_cursor("webhook", 3).unwrap();
        assert_eq!(j.cursor("webhook").unwrap(), Some(12), "a cursor never moves back");
        // Each consumer has its own.
        assert_eq!(j.cursor("hook:on_complete").unwrap(), None);
        j.set_cursor("hook:on_complete", 1).unwrap();
        assert_eq!((j.cursor("hook:on_complete").unwrap(), j.cursor("webhook").unwrap()), (Some(1), Some(12)));
    }
}

both! {
    fn a_dropped_cursor_is_gone_and_others_stay(j) {
        j.set_cursor("webhook", 5).unwrap();
        j.set_cursor("hook:on_failure", 6).unwrap();
        assert!(j.drop_cursor("webhook").unwrap());
        assert!(!j.drop_cursor("webhook").unwrap(), "nothing left to drop");
        assert_eq!(j.cursor("webhook").unwrap(), None);
        assert_eq!(j.cursor("hook:on_failure").unwrap(), Some(6));
    }
}

fn facts() -> crate::media::MediaFacts {
    crate::media::MediaFacts {
        container: crate::media::Container::Quicktime,
        duration_ms: Some(12_345),
        width: Some(3840),
        height: Some(2160),
        frame_rate: Some(29.97),
        codec: Some("hvc1".into()),
        views: Some(2),
        hero_eye: Some(crate::media::Eye::Left),
        baseline_mm: Some(63.5),
        hfov_deg: Some(90.0),
        projection: Some(crate::media::Projection::Hequ),
        packing: None,
        audio_channels: None,
        sample_rate: None,
    }
}

both! {
    fn a_waiting_reason_is_shown_once_in_history_and_cleared_by_the_queue(j) {
        let key = Path::new("/x/open");
        let id = j.note_waiting(key, "open", Some(Path::new("/x"))).unwrap();
        let reason = "still being written (the container is not finished): v.mov: moov missing";
        j.set_waiting_reason(key, Some(reason)).unwrap();
        j.set_waiting_reason(key, Some(reason)).unwrap();
        let row = j.summary(id).unwrap();
        assert_eq!((row.state, row.error.as_deref()), (GroupState::Waiting, Some(reason)));
        let lines: Vec<_> = j.events(id).unwrap().into_iter().filter(|e| e.detail.as_deref() == Some(reason)).collect();
        assert_eq!(lines.len(), 1, "the same reason is one history line");
        j.set_waiting_reason(key, None).unwrap();
        assert_eq!(j.summary(id).unwrap().error, None);
        j.set_waiting_reason(key, Some(reason)).unwrap();
        // Finished after all: queued, and the reason is gone.
        let mut g = group("/x/open", "fp-open", &[10]);
        g.files[0].media = Some(facts());
        assert_eq!(j.enqueue(&g).unwrap(), Enqueued::Queued(id));
        assert_eq!(j.summary(id).unwrap().error, None);
        // No waiting row: nothing to say, nothing written.
        j.set_waiting_reason(Path::new("/x/none"), Some("x")).unwrap();
        assert_eq!(j.list().unwrap().len(), 1);
    }
}

both! {
    fn media_facts_are_stored_per_file_and_follow_a_requeue(j) {
        let mut g = group("/x/facts", "fp-facts", &[10, 20]);
        g.files[0].media = Some(facts());
        g.warnings.push(Violation { rule: "media-truncated", file: Some("video.mov".into()), message: "moov missing".into() });
        let id = match j.enqueue(&g).unwrap() {
            Enqueued::Queued(id) => id,
            other => panic!("{other:?}"),
        };
        let rec = j.group(id).unwrap();
        assert_eq!(rec.files[0].media, Some(facts()));
        assert_eq!(rec.files[1].media, None, "not looked into");
        let history: Vec<String> = j.events(id).unwrap().into_iter().filter_map(|e| e.detail).collect();
        assert!(
            history.iter().any(|d| d.contains("media warnings: video.mov: moov missing [media-truncated]")),
            "{history:?}"
        );
        start(j, id, "sess-facts", 100);
        j.cancel_group(id, "by the test", true, Fence::Unclaimed).unwrap();
        let again = j.retry_group(id).unwrap();
        assert_ne!(again, id);
        assert_eq!(j.group(again).unwrap().files[0].media, Some(facts()), "a re-queued copy keeps the facts");
    }
}

both! {
    fn a_failed_after_upload_step_is_counted_in_typed_columns_until_finished(j) {
        let id = queued(j, "/x/a", "fp", &[5]);
        j.test_sql(&format!("UPDATE groups SET state = 'completed', library_id = 3 WHERE id = {id}")).unwrap();
        let g = j.group(id).unwrap();
        assert_eq!((g.after_failures, g.after_error.as_deref(), g.after_next_ms), (0, None, None));
        assert_eq!(j.summary(id).unwrap().after_upload, None);

        let error = "move to /done: /done/a/video.mov: No space left on device (os error 28)";
        assert_eq!(j.after_upload_failed(id, error, Some(1_700_000_060_000)).unwrap(), 1);
        let g = j.group(id).unwrap();
        assert_eq!((g.after_failures, g.after_error.as_deref(), g.after_next_ms), (1, Some(error), Some(1_700_000_060_000)));
        assert!(!g.finished);
        assert_eq!(g.state, GroupState::Completed, "the group stays completed");
        assert_eq!(
            j.summary(id).unwrap().after_upload,
            Some(AfterUploadRetry {
                failures: 1,
                attempts: AFTER_UPLOAD_ATTEMPTS,
                error: error.into(),
                next_attempt_ms: 1_700_000_060_000,
            })
        );
        assert_eq!(j.summary(id).unwrap().error, None, "the row's own error is untouched");
        let last = j.events(id).unwrap().pop().and_then(|e| e.detail).unwrap_or_default();
        assert_eq!(last, format!("after-upload step failed (attempt 1): {error}"), "a line for people");

        assert_eq!(j.after_upload_failed(id, "delete: busy", Some(1_700_000_200_000)).unwrap(), 2);
        let row = serde_json::to_value(j.summary(id).unwrap()).unwrap();
        assert_eq!(row["afterUpload"]["failures"], 2);
        assert_eq!(row["afterUpload"]["error"], "delete: busy");
        assert_eq!(row["afterUpload"]["nextAttempt"], "2023-11-14T22:16:40Z");

        // Finished (done, or given up): nothing pending; the count and the error stay as facts.
        j.set_finished(id).unwrap();
        let g = j.group(id).unwrap();
        assert!(g.finished);
        assert_eq!((g.after_failures, g.after_error.as_deref(), g.after_next_ms), (2, Some("delete: busy"), None));
        assert_eq!(j.summary(id).unwrap().after_upload, None);
        assert!(j.list().unwrap().iter().all(|r| r.after_upload.is_none()));

        assert!(matches!(j.after_upload_failed(id + 100, "x", None), Err(JournalError::NoSuchGroup(_))));
    }
}

#[test]
fn a_version_7_journal_gains_empty_after_upload_columns() {
    let d = tmp();
    let path = d.path().join("v7.sqlite3");
    let id = {
        let j = Journal::open(&path).unwrap();
        let id = queued(&j, "/x/a", "fp", &[5]);
        j.test_sql(&format!("UPDATE groups SET state = 'completed', library_id = 3 WHERE id = {id}")).unwrap();
        j.note(id, "after-upload step failed: after_upload: /done: No space left on device").unwrap();
        id
    };
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "DROP INDEX groups_unfinished; DROP INDEX groups_updated; DROP INDEX groups_key; DROP INDEX groups_root;
             ALTER TABLE groups DROP COLUMN after_failures; ALTER TABLE groups DROP COLUMN after_error;
             ALTER TABLE groups DROP COLUMN after_next_ms; PRAGMA user_version = 7;",
        )
        .unwrap();
    }
    let j = Journal::open(&path).unwrap();
    assert_eq!(j.schema_version().unwrap(), 9);
    let g = j.group(id).unwrap();
    assert_eq!((g.after_failures, g.after_error, g.after_next_ms), (0, None, None), "nothing derived from notes");
    assert_eq!(j.unfinished().unwrap(), vec![id], "its after-upload step is due at once");
    assert_eq!(j.summary(id).unwrap().after_upload, None);
    let notes: Vec<String> = j.events(id).unwrap().into_iter().filter_map(|e| e.detail).collect();
    assert!(notes.iter().any(|n| n.contains("No space left on device")), "the history lines stay: {notes:?}");
}

/// The ids of `rows`, in their order.
fn ids(rows: &[GroupSummary]) -> Vec<GroupId> {
    rows.iter().map(|r| r.id).collect()
}

both! {
    /// Pages of history: newest first, a cursor that holds while groups
    /// are added, states, a search over name and path, what changed since a
    /// history line, and queued rows with their place in the queue.
    fn a_page_of_groups_is_newest_first_filtered_and_resumable_by_its_cursor(j) {
        let mut done = Vec::new();
        for i in 0..7 {
            let id = queued(j, &format!("/w/Trailer_{i}_final"), &format!("fp{i}"), &[10, 20]);
            start(j, id, &format!("s{i}"), 100);
            j.complete_group(id, 100 + i, Fence::Unclaimed).unwrap();
            done.push(id);
        }
        let canceled = queued(j, "/w/promo 100%_cut", "fpc", &[5]);
        j.cancel_group(canceled, "by test", true, Fence::Unclaimed).unwrap();
        let failed = queued(j, "/w/Broken", "fpf", &[5]);
        start(j, failed, "sf", 100);
        j.fail_group(failed, "server said no", None, Fence::Unclaimed).unwrap();
        let waiting_for_engine = [queued(j, "/w/q1", "fq1", &[1]), queued(j, "/w/q2", "fq2", &[1])];

        let ended = [GroupState::Completed, GroupState::Canceled, GroupState::Expired];
        let first = j.groups(&GroupFilter::newest(&ended, 3)).unwrap();
        assert_eq!(ids(&first), vec![canceled, done[6], done[5]]);
        assert_eq!((first[1].files, first[1].bytes_total), (2, 30), "rows carry their sums");
        // A group added meanwhile does not shift the next page.
        queued(j, "/w/late", "fpl", &[1]);
        let next = GroupFilter { before: Some(first[2].id), ..GroupFilter::newest(&ended, 3) };
        assert_eq!(ids(&j.groups(&next).unwrap()), vec![done[4], done[3], done[2]]);
        let last = GroupFilter { before: Some(done[2]), ..GroupFilter::newest(&ended, 3) };
        assert_eq!(ids(&j.groups(&last).unwrap()), vec![done[1], done[0]]);

        // The search: any case, over the name and the path; `%` and `_` are plain.
        let search = |text: &str| {
            ids(&j.groups(&GroupFilter { text: Some(text.into()), ..GroupFilter::default() }).unwrap())
        };
        assert_eq!(search("trailer_3"), vec![done[3]]);
        assert_eq!(search("TRAILER_"), done.iter().rev().copied().collect::<Vec<_>>());
        assert_eq!(search("100%"), vec![canceled]);
        assert_eq!(search("0%_"), vec![canceled]);
        assert_eq!(search("r%l"), Vec::<GroupId>::new(), "% is no wildcard");
        assert_eq!(search("/w/brok"), vec![failed], "the path is searched");

        // Queued rows know their place.
        let q = j.groups(&GroupFilter::newest(&[GroupState::Queued], 10)).unwrap();
        let places: Vec<(GroupId, Option<u32>)> = q.iter().map(|r| (r.id, r.queue_position)).collect();
        assert!(places.contains(&(waiting_for_engine[0], Some(1))) && places.contains(&(waiting_for_engine[1], Some(2))), "{places:?}");
        let next_up = GroupFilter { queue_order: true, ..GroupFilter::newest(&[GroupState::Queued], 1) };
        assert_eq!(ids(&j.groups(&next_up).unwrap()), vec![waiting_for_engine[0]], "the queue's head, not the newest");

        // What changed after a history line: only the groups written since.
        let cursor = j.last_event_id().unwrap();
        assert!(j.groups(&GroupFilter { changed_after: Some(cursor), ..GroupFilter::default() }).unwrap().is_empty());
        j.note(done[1], "looked at again").unwrap();
        j.cancel_group(waiting_for_engine[0], "by test", true, Fence::Unclaimed).unwrap();
        let changed = j.groups(&GroupFilter { changed_after: Some(cursor), ..GroupFilter::default() }).unwrap();
        assert_eq!(ids(&changed), vec![waiting_for_engine[0], done[1]]);

        // Changed at or after a time.
        let since = GroupFilter { updated_since_ms: Some(crate::journal::codec::now_ms() + 60_000), ..GroupFilter::default() };
        assert!(j.groups(&since).unwrap().is_empty());
        let since = GroupFilter { updated_since_ms: Some(0), limit: Some(2), ..GroupFilter::default() };
        assert_eq!(j.groups(&since).unwrap().len(), 2);

        // A completed group whose after-upload step will be tried again.
        let pending = GroupFilter { after_pending: true, ..GroupFilter::default() };
        assert!(j.groups(&pending).unwrap().is_empty());
        j.after_upload_failed(done[4], "move to /full: No space left on device", Some(1)).unwrap();
        assert_eq!(ids(&j.groups(&pending).unwrap()), vec![done[4]]);
    }
}
