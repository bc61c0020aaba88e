//! What a fleet adds to the journal, on a real PostgreSQL server: one group
//! per export across nodes and mounts, claims and leases, requests carried
//! out by the holder, notifications and housekeeping by the node that
//! ended a group, locks per node, migrations under the lock, and a
//! database out of reach.

use crate::journal::Fence;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::group::{GroupFile, UploadGroup};
use crate::journal::prelude::*;
use crate::journal::{Enqueued, GroupState, PauseReason, RequestKind, RequestResult, SessionFile};
use crate::model::{FileRole, Layout, Strategy};

fn node(url: &str, name: &str, mount: &str, lease: Duration) -> PgJournal {
    PgJournal::open(PgOptions {
        url: DatabaseUrl::new(url),
        password: None,
        node: name.into(),
        lease,
        mounts: Mounts::new(vec![("exports".into(), PathBuf::from(mount))]),
    })
    .expect("journal opens")
}

fn db() -> String {
    crate::sandbox::postgres::shared().database()
}

/// An export `rel` under the watch folder mounted at `mount`.
fn export(mount: &str, rel: &str, fp: &str) -> UploadGroup {
    let root = Path::new(mount).join(rel);
    UploadGroup {
        name: rel.into(),
        key: root.clone(),
        root: root.clone(),
        watch_path: Some(PathBuf::from(mount)),
        layout: Layout::TwoD,
        perspective: None,
        description: None,
        folder_name: None,
        priority: 0,
        files: vec![GroupFile {
            source: root.join("video.mov"),
            rel_path: "video.mov".into(),
            file_name: "video.mov".into(),
            role: FileRole::Video,
            language: None,
            size: 300,
            mtime_ns: 1,
            dev: None,
            ino: None,
            staged: false,
            media: None,
        }],
        fingerprint: fp.into(),
        violations: Vec::new(),
        media_check: crate::config::MediaCheck::Reject,
        unfinished: Vec::new(),
        warnings: Vec::new(),
    }
}

fn start(j: &PgJournal, id: GroupId, session: &str) {
    let g = j.group(id).unwrap();
    let files: Vec<SessionFile> = g
        .files
        .iter()
        .map(|f| SessionFile {
            file_id: f.id,
            upload_id: format!("{session}-{}", f.position),
            part_size: 100,
            total_parts: 3,
            strategy: Strategy::Multipart,
        })
        .collect();
    j.record_session(id, Fence::Unclaimed, session, None, &files).unwrap();
}

#[test]
fn two_nodes_with_their_own_mounts_enqueueing_one_export_at_once_make_one_group() {
    let url = db();
    let a = Arc::new(node(&url, "a", "/mnt/a/exports", Duration::from_secs(30)));
    let b = Arc::new(node(&url, "b", "/Volumes/exports", Duration::from_secs(30)));
    // Many exports, each enqueued by both nodes at the same moment.
    let mut handles = Vec::new();
    for (j, mount) in [(a.clone(), "/mnt/a/exports"), (b.clone(), "/Volumes/exports")] {
        handles.push(std::thread::spawn(move || {
            for i in 0..20 {
                let rel = format!("show/ep{i}");
                j.note_waiting(&Path::new(mount).join(&rel), &rel, Some(Path::new(mount))).unwrap();
                j.enqueue(&export(mount, &rel, &format!("fp{i}"))).unwrap();
            }
        }));
    }
    for h in handles {
        h.join().unwrap();
    }
    let rows = a.list().unwrap();
    assert_eq!(rows.len(), 20, "one group per export: {rows:?}");
    assert!(rows.iter().all(|r| r.state == GroupState::Queued));
    // Each node reads the files through its own mount.
    let id = rows[0].id;
    let (ga, gb) = (a.group(id).unwrap(), b.group(id).unwrap());
    assert!(ga.files[0].source.starts_with("/mnt/a/exports/show"), "{:?}", ga.files[0].source);
    assert!(gb.files[0].source.starts_with("/Volumes/exports/show"), "{:?}", gb.files[0].source);
    assert_eq!(a.find("/mnt/a/exports/show/ep3").unwrap(), b.find("/Volumes/exports/show/ep3").unwrap());
}

#[test]
fn a_claim_is_one_node_s_until_its_lease_runs_out_then_another_takes_the_same_session_over() {
    let url = db();
    let lease = Duration::from_millis(600);
    let a = node(&url, "a", "/mnt/a", lease);
    let b = node(&url, "b", "/mnt/b", lease);
    let Enqueued::Queued(g) = a.enqueue(&export("/mnt/a", "one", "fp1")).unwrap() else { panic!() };
    let ca = a.next_group(&[]).unwrap().expect("a claims it");
    assert_eq!(ca.id, g);
    assert_eq!(b.next_group(&[]).unwrap(), None, "claimed by a");
    start(&a, g, "sess-1");
    let f = a.group(g).unwrap().files[0].id;
    a.part_done(f, 1, "e1", ca.fence()).unwrap();
    assert_eq!(a.summary(g).unwrap().node.as_deref(), Some("a"));
    // Renewed: still a's after longer than the lease.
    for _ in 0..4 {
        std::thread::sleep(lease / 3);
        assert!(a.renew_claims(&[ca]).unwrap().is_empty());
    }
    assert_eq!(b.next_group(&[]).unwrap().map(|c| c.id), None, "a renews its claim");
    // a goes silent: b takes the group over, on the same server session.
    std::thread::sleep(lease + Duration::from_millis(200));
    let cb = b.next_group(&[]).unwrap().expect("b takes it over");
    assert_eq!(cb.id, g);
    assert!(cb.token > ca.token, "{ca:?} then {cb:?}");
    let rec = b.group(g).unwrap();
    assert_eq!((rec.state, rec.session_id.as_deref()), (GroupState::Uploading, Some("sess-1")));
    assert!(rec.files[0].parts[0].done, "the recorded part is kept");
    assert!(b.events(g).unwrap().iter().any(|e| e.detail.as_deref().is_some_and(|d| d.contains("node a went silent"))));
    assert_eq!(a.renew_claims(&[ca]).unwrap(), vec![g], "a learns it lost the group");
    assert_eq!(a.next_group(&[]).unwrap(), None, "and cannot take it back while b holds it");
    // a wakes and writes late: refused, naming the holder; nothing changes.
    let late = a.part_done(f, 1, "late", ca.fence());
    assert!(matches!(&late, Err(JournalError::Fenced { holder: Some(h), .. }) if h == "b"), "{late:?}");
    assert!(matches!(a.complete_group(g, 9, ca.fence()), Err(JournalError::Fenced { .. })));
    assert_eq!(b.group(g).unwrap().files[0].parts[0].etag.as_deref(), Some("e1"));
    b.complete_group(g, 9, cb.fence()).unwrap();
    let s = a.summary(g).unwrap();
    assert_eq!((s.state, s.node.as_deref()), (GroupState::Completed, Some("b")));
    // The node that ended it notifies and does the housekeeping.
    assert_eq!(b.unfinished().unwrap(), vec![g]);
    assert!(a.unfinished().unwrap().is_empty());
    assert_eq!(b.ended_after(0, 10).unwrap().len(), 1);
    assert!(a.ended_after(0, 10).unwrap().is_empty());
}

#[test]
fn a_clean_stop_releases_claims_at_once() {
    let url = db();
    let a = node(&url, "a", "/mnt/a", Duration::from_secs(60));
    let b = node(&url, "b", "/mnt/b", Duration::from_secs(60));
    let Enqueued::Queued(g) = a.enqueue(&export("/mnt/a", "one", "fp1")).unwrap() else { panic!() };
    let ca = a.next_group(&[]).unwrap().expect("a claims it");
    assert_eq!(b.next_group(&[]).unwrap(), None);
    a.release_claims(&[ca]).unwrap();
    assert_eq!(b.next_group(&[]).unwrap().map(|c| c.id), Some(g), "no need to wait out a minute's lease");
}

#[test]
fn only_a_node_with_the_watch_folder_or_the_one_that_found_a_staged_export_claims_it() {
    let url = db();
    let a = node(&url, "a", "/mnt/a", Duration::from_secs(30));
    let other = PgJournal::open(PgOptions {
        url: DatabaseUrl::new(&url),
        password: None,
        node: "c".into(),
        lease: Duration::from_secs(30),
        mounts: Mounts::new(vec![("elsewhere".into(), "/srv/other".into())]),
    })
    .unwrap();
    let b = node(&url, "b", "/mnt/b", Duration::from_secs(30));
    let Enqueued::Queued(plain) = a.enqueue(&export("/mnt/a", "plain", "fp1")).unwrap() else { panic!() };
    let mut staged = export("/mnt/a", "bundle", "fp2");
    staged.files[0].staged = true;
    staged.files[0].source = "/var/lib/spatialgen-sync/staging/x.zip".into();
    let Enqueued::Queued(st) = a.enqueue(&staged).unwrap() else { panic!() };
    assert_eq!(other.next_group(&[]).unwrap().map(|c| c.id), None, "no mount of `exports` there");
    assert_eq!(b.next_group(&[]).unwrap().map(|c| c.id), Some(plain));
    assert_eq!(b.next_group(&[plain]).unwrap().map(|c| c.id), None, "the staged zip is on a's disk");
    assert_eq!(a.next_group(&[]).unwrap().map(|c| c.id), Some(st));
}

#[test]
fn a_request_is_carried_out_by_the_node_that_holds_the_group() {
    let url = db();
    let a = node(&url, "a", "/mnt/a", Duration::from_secs(30));
    let b = node(&url, "b", "/mnt/b", Duration::from_secs(30));
    let Enqueued::Queued(held) = a.enqueue(&export("/mnt/a", "held", "fp1")).unwrap() else { panic!() };
    let Enqueued::Queued(free) = a.enqueue(&export("/mnt/a", "free", "fp2")).unwrap() else { panic!() };
    assert_eq!(a.next_group(&[]).unwrap().map(|c| c.id), Some(held));
    let r1 = b.request(held, RequestKind::Cancel).unwrap();
    let r2 = b.request(free, RequestKind::Cancel).unwrap();
    let taken_by_b: Vec<_> = b.open_requests().unwrap().iter().map(|r| r.id).collect();
    assert_eq!(taken_by_b, vec![r2], "b may cancel the group no node holds, not a's");
    assert!(a.open_requests().unwrap().iter().all(|r| r.id != r2), "a request is taken by one node");
    assert_eq!(a.open_requests().unwrap().iter().map(|r| r.id).collect::<Vec<_>>(), vec![r1]);
    a.finish_request(r1, &RequestResult::Canceled).unwrap();
    assert_eq!(b.request_status(r1).unwrap().unwrap().result, Some(RequestResult::Canceled));
}

#[test]
fn pauses_are_each_node_s_own() {
    let url = db();
    let a = node(&url, "a", "/mnt/a", Duration::from_secs(30));
    let b = node(&url, "b", "/mnt/b", Duration::from_secs(30));
    a.set_pause(&PauseReason::WatchMissing("/mnt/a".into()), Some("unmounted"), None).unwrap();
    a.set_pause(&PauseReason::Auth, Some("401"), None).unwrap();
    assert_eq!(a.pauses().unwrap().len(), 2);
    assert!(b.pauses().unwrap().is_empty(), "b's share is mounted and its key accepted");
    let unreadable = PauseReason::WatchUnreadable("/mnt/a".into());
    a.set_pause(&unreadable, Some("/mnt/a: cannot read: Too many open files (os error 24)"), None).unwrap();
    a.clear_pauses_like(&PauseReason::WatchMissing(PathBuf::new())).unwrap();
    let left: Vec<_> = a.pauses().unwrap().iter().map(|p| p.reason.clone()).collect();
    assert_eq!(left, vec![PauseReason::Auth, unreadable.clone()], "a read error is its own kind");
    assert!(a.clear_pause(&unreadable).unwrap());
    assert_eq!(a.pauses().unwrap().iter().map(|p| p.reason.clone()).collect::<Vec<_>>(), vec![PauseReason::Auth]);
}

#[test]
fn one_engine_and_one_agent_per_node_name() {
    let url = db();
    let a = node(&url, "a", "/mnt/a", Duration::from_secs(30));
    let a_again = node(&url, "a", "/mnt/a", Duration::from_secs(30));
    let b = node(&url, "b", "/mnt/b", Duration::from_secs(30));
    assert!(!a.engine_running().unwrap());
    let lock = a.try_lock_engine().unwrap().expect("free");
    assert!(b.engine_running().unwrap(), "a's heartbeat is seen from b");
    assert!(a_again.try_lock_engine().unwrap().is_none(), "a second engine named a");
    assert!(b.try_lock_engine().unwrap().is_some(), "another node works beside it");
    let agent = a.try_lock_agent().unwrap().expect("free");
    assert!(a_again.try_lock_agent().unwrap().is_none());
    drop((lock, agent));
    assert!(a_again.try_lock_engine().unwrap().is_some(), "released with its session");
}

#[test]
fn nodes_starting_together_migrate_once_and_a_newer_database_is_refused_untouched() {
    let url = db();
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || node(&url, &format!("n{i}"), "/mnt", Duration::from_secs(30)).schema_version())
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap().unwrap(), schema::LATEST);
    }
    let a = node(&url, "a", "/mnt", Duration::from_secs(30));
    a.test_sql("UPDATE spatialgen_schema SET version = 99").unwrap();
    let opts = PgOptions {
        url: DatabaseUrl::new(&url),
        password: None,
        node: "z".into(),
        lease: Duration::from_secs(30),
        mounts: Mounts::default(),
    };
    let err = PgJournal::open(opts.clone()).unwrap_err();
    assert!(matches!(err, JournalError::TooNew { found: 99, .. }), "{err}");
    assert!(!err.to_string().contains(crate::sandbox::postgres::PASSWORD), "{err}");
    assert_eq!(a.test_sql("SELECT version FROM spatialgen_schema").unwrap(), Some(99), "untouched");
    assert!(matches!(PgJournal::open_read_only(opts).unwrap_err(), JournalError::TooNew { .. }));
}

#[test]
fn a_database_with_no_journal_yet_is_not_created_by_a_read_only_open() {
    let url = db();
    let opts = PgOptions {
        url: DatabaseUrl::new(&url),
        password: None,
        node: "r".into(),
        lease: Duration::from_secs(30),
        mounts: Mounts::default(),
    };
    let err = PgJournal::open_read_only(opts.clone()).unwrap_err();
    assert!(err.to_string().contains("created or upgraded when an agent"), "{err}");
    let err = PgJournal::open_read_only(opts).unwrap_err();
    assert!(matches!(err, JournalError::Refused(_)), "still nothing there: {err}");
}

#[test]
fn a_database_out_of_reach_is_unavailable_not_an_error_of_the_journal() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let opts = PgOptions {
        url: DatabaseUrl::new(format!("postgresql://x:secret@127.0.0.1:{port}/db?sslmode=disable")),
        password: None,
        node: "n".into(),
        lease: Duration::from_secs(30),
        mounts: Mounts::default(),
    };
    let err = PgJournal::open(opts).unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(!err.to_string().contains("secret"), "{err}");
}

#[test]
fn a_lost_connection_is_dropped_and_the_next_call_connects_again() {
    let url = db();
    let a = node(&url, "a", "/mnt/a", Duration::from_secs(30));
    let Enqueued::Queued(g) = a.enqueue(&export("/mnt/a", "one", "fp1")).unwrap() else { panic!() };
    // The server ends this node's session (as a restart or a network cut does).
    let admin = node(&url, "admin", "/mnt/x", Duration::from_secs(30));
    admin.test_sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'spatialgen-sync a' AND datname = current_database()").unwrap();
    let first = a.summary(g);
    assert!(first.as_ref().is_ok_and(|s| s.id == g) || first.as_ref().is_err_and(|e| e.is_unavailable()), "{first:?}");
    assert_eq!(a.summary(g).unwrap().id, g, "connected again");
}

#[test]
fn the_url_s_password_never_shows_and_sslmode_is_libpq_s() {
    let u = DatabaseUrl::new("postgresql://sync:hunter2@db.studio.lan:6432/spatialgen?sslmode=verify-full");
    assert_eq!(u.redacted(), "postgresql://sync:***@db.studio.lan:6432/spatialgen?sslmode=verify-full");
    assert!(!format!("{u:?}").contains("hunter2"));
    let t = u.vet().unwrap();
    assert_eq!(
        (t.host.as_str(), t.port, t.dbname.as_str(), t.sslmode.as_str()),
        ("db.studio.lan", 6432, "spatialgen", "verify-full")
    );
    assert_eq!(strip_ssl_params(u.expose()), "postgresql://sync:hunter2@db.studio.lan:6432/spatialgen");
    for mode in crate::config::SSL_MODES {
        assert!(tls::connector(mode, None).is_ok() || mode.starts_with("verify"), "{mode}");
    }
    assert!(tls::connector("verify-everything", None).is_err());
    let e = DatabaseUrl::new("postgresql://h/db?sslmode=required").vet().unwrap_err();
    assert!(
        e.contains("sslmode \"required\" is not one of disable, allow, prefer, require, verify-ca, verify-full"),
        "{e}"
    );
    assert!(DatabaseUrl::new("mysql://h/db").vet().is_err());
    assert!(DatabaseUrl::new("postgresql://h").vet().unwrap_err().contains("must name one database"));
}

#[test]
fn forget_drops_old_ended_groups_and_keeps_live_ones() {
    let url = db();
    let a = node(&url, "a", "/mnt/a", Duration::from_secs(30));
    let Enqueued::Queued(done) = a.enqueue(&export("/mnt/a", "done", "fp1")).unwrap() else { panic!() };
    let Enqueued::Queued(live) = a.enqueue(&export("/mnt/a", "live", "fp2")).unwrap() else { panic!() };
    start(&a, done, "s1");
    a.complete_group(done, 1, Fence::Unclaimed).unwrap();
    a.set_finished(done).unwrap();
    let later = crate::journal::now_ms() + 1000;
    assert_eq!(a.forgettable(later).unwrap(), vec![done]);
    assert_eq!(a.forget(&[done, live], later).unwrap(), 1, "the queued one is never forgotten");
    assert!(matches!(a.group(done), Err(JournalError::NoSuchGroup(_))));
    assert_eq!(a.group(live).unwrap().state, GroupState::Queued);
}

#[test]
fn cursors_are_each_node_s_own() {
    let url = db();
    let a = node(&url, "a", "/mnt/a", Duration::from_secs(30));
    let b = node(&url, "b", "/mnt/b", Duration::from_secs(30));
    a.set_cursor("webhook", 7).unwrap();
    assert_eq!(a.cursor("webhook").unwrap(), Some(7));
    assert_eq!(b.cursor("webhook").unwrap(), None, "b notifies for the groups it ends");
}

#[test]
fn the_database_timeout_is_half_the_lease_between_one_and_thirty_seconds() {
    let s = Duration::from_secs;
    assert_eq!(db_timeout(s(4)), s(2), "the e2e fleets' lease");
    assert_eq!(db_timeout(s(30)), s(15), "the default lease");
    assert_eq!(db_timeout(s(3)), Duration::from_millis(1500), "the shortest lease check accepts");
    assert_eq!(db_timeout(s(1)), s(1));
    assert_eq!(db_timeout(s(600)), s(30));
    let j = node(&db(), "t", "/mnt/t", s(4));
    assert_eq!(
        j.call_timeout(),
        Some(Duration::from_millis(2500)),
        "async callers wait a little longer than the server"
    );
}

#[test]
fn a_version_7_database_gains_empty_after_upload_columns() {
    let url = db();
    let a = node(&url, "a", "/mnt", Duration::from_secs(30));
    let Enqueued::Queued(id) = a.enqueue(&export("/mnt", "A", "fp")).unwrap() else { panic!("not queued") };
    a.test_sql(&format!("UPDATE groups SET state = 'completed', library_id = 3 WHERE id = {id}")).unwrap();
    a.test_sql("DROP INDEX groups_state, groups_updated, groups_unfinished, groups_root").unwrap();
    a.test_sql("ALTER TABLE groups DROP COLUMN after_failures, DROP COLUMN after_error, DROP COLUMN after_next_ms")
        .unwrap();
    a.test_sql("UPDATE spatialgen_schema SET version = 7").unwrap();
    drop(a);
    let a = node(&url, "a", "/mnt", Duration::from_secs(30));
    assert_eq!(a.schema_version().unwrap(), schema::LATEST);
    let g = a.group(id).unwrap();
    assert_eq!((g.after_failures, g.after_error, g.after_next_ms), (0, None, None));
    assert_eq!(a.unfinished().unwrap(), vec![id]);
    assert_eq!(a.summary(id).unwrap().after_upload, None);
}

#[test]
fn the_node_list_is_one_query_that_reads_held_groups_by_an_index_with_a_year_of_history() {
    let url = db();
    let j = node(&url, "node-a", "/mnt/a", Duration::from_secs(30));
    j.renew_claims(&[]).unwrap();
    j.with(|c| {
        c.batch_execute(&format!(
            "INSERT INTO groups (id, key, name, root, watch_path, state, created_at, updated_at, queued_at, finished,
                                 node, lease_until)
             SELECT i, convert_to('/w/clip-' || i, 'UTF8'), 'clip-' || i, convert_to('/w/clip-' || i, 'UTF8'),
                    convert_to('/w', 'UTF8'), CASE WHEN i > 99990 THEN 'uploading' ELSE 'completed' END, i, i, i,
                    i <= 99990, CASE WHEN i % 2 = 0 THEN 'node-a' ELSE 'node-b' END,
                    CASE WHEN i > 99990 THEN {DB_NOW} + 60000 END
             FROM generate_series(1, 100000) AS i;
             INSERT INTO nodes (node, seen_at, lease_ms, version) VALUES ('node-b', 1, 1000, 'old');
             ANALYZE;"
        ))
        .map_err(db_err)
    })
    .unwrap();
    let plan: Vec<String> = j
        .with(|c| c.query(&format!("EXPLAIN {}", nodes_sql()), &[]).map_err(db_err))
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    println!("{}", plan.join("\n"));
    assert!(!plan.iter().any(|l| l.contains("Seq Scan on groups")), "{}", plan.join("\n"));
    let nodes = j.nodes().unwrap();
    let seen: Vec<(&str, u64, bool)> = nodes.iter().map(|n| (n.name.as_str(), n.held, n.silent)).collect();
    // node-b went silent long ago, but its leases (set by hand here) still run.
    assert_eq!(seen, vec![("node-a", 5, false), ("node-b", 5, true)]);
    assert_eq!((nodes[1].version.as_str(), nodes[1].lease_ms, nodes[1].last_seen_ms), ("old", 1000, 1));
}
