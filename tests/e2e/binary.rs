//! The real binary: `upload`, `status`, `cancel`, `retry`; exit codes and output.

use std::time::{Duration, Instant};

use spatialgen_sync::journal::{GroupState, Journal};
use spatialgen_sync::sandbox::{Faults, SessionStatus};

use crate::support::*;
use spatialgen_sync::journal::prelude::*;

const KIB: usize = 1024;

fn library_id_in(stdout: &str) -> u64 {
    let at = stdout.find("library id ").unwrap_or_else(|| panic!("no library id in {stdout:?}"));
    stdout[at + "library id ".len()..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_prints_the_library_id_and_status_reports_it() {
    let w = World::new(64 * KIB as u64, "").await;
    let f = w.export("Shot 010 — final", &[("Shot_010_v002_L.mov", 150 * KIB), ("Shot_010_v002_R.mov", 150 * KIB)]);
    let cfg = w.config_path.to_str().unwrap();
    let r = w.run(KEY, &["upload", "--config", cfg, f.to_str().unwrap()]).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    let lib = library_id_in(&r.stdout);
    let entries = w.sandbox.library();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].library_id, lib);
    assert_eq!(entries[0].layout.as_str(), "Separate", "L/R pair inferred");
    assert_library_matches(&w.sandbox, &entries[0].session_id, &f);
    assert!(!r.stderr.contains(KEY) && !r.stdout.contains(KEY), "the key was printed");

    let s = w.run(KEY, &["status", "--config", cfg, "--json"]).await;
    assert_eq!(s.code, Some(0), "{s:?}");
    let v: serde_json::Value = serde_json::from_str(&s.stdout).unwrap();
    let row = &v.as_array().unwrap()[0];
    assert_eq!(row["state"], "completed");
    assert_eq!(row["libraryId"], lib);
    assert_eq!(row["sessionId"], entries[0].session_id.as_str());
    assert_eq!(row["bytesTotal"], row["bytesUploaded"]);
    assert_eq!(row["name"], "Shot 010 — final");
    assert_eq!(row["path"], f.to_str().unwrap());
    assert!(row["error"].is_null());
    assert!(row["id"].is_number());

    let t = w.run(KEY, &["status", "--config", cfg]).await;
    assert!(t.stdout.contains("completed") && t.stdout.contains(&lib.to_string()), "{t:?}");

    // the same export again: nothing is sent, the known id is printed
    let again = w.run(KEY, &["upload", "--config", cfg, f.to_str().unwrap()]).await;
    assert_eq!(again.code, Some(0), "{again:?}");
    assert_eq!(library_id_in(&again.stdout), lib);
    assert_eq!(w.sandbox.sessions().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_for_rejected_groups_bad_usage_and_a_refused_key() {
    let w = World::new(64 * KIB as u64, "").await;
    let cfg = w.config_path.to_str().unwrap();
    // two videos in a 2D group: rejected, nothing sent, exit 1
    let bad = w.export("two-videos", &[("a.mov", 1000), ("b.mov", 1000)]);
    let r = w.run(KEY, &["upload", "--config", cfg, "--layout", "2D", bad.to_str().unwrap()]).await;
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("a.mov") || r.stderr.contains("b.mov"), "{r:?}");
    // not a folder: exit 2
    let r = w.run(KEY, &["upload", "--config", cfg, "/no/such/folder"]).await;
    assert_eq!(r.code, Some(2), "{r:?}");
    // a bad layout: exit 2
    let good = w.export("good", &[("v.mov", 2000)]);
    let r = w.run(KEY, &["upload", "--config", cfg, "--layout", "stereo", good.to_str().unwrap()]).await;
    assert_eq!(r.code, Some(2), "{r:?}");
    // the wrong key: exit 1 at once, a bounded number of calls, the key never printed
    let started = Instant::now();
    let r = w.run("wrong-key-XYZ", &["upload", "--config", cfg, good.to_str().unwrap()]).await;
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(r.stderr.contains("refused"), "{r:?}");
    assert!(!r.stderr.contains("wrong-key-XYZ"), "the key was printed: {}", r.stderr);
    assert_eq!(w.sandbox.stats().unauthorized, 1, "one refused call, no hammering");
    assert!(w.sandbox.sessions().is_empty());
    // the right key afterwards: the queued group uploads
    let r = w.run(KEY, &["upload", "--config", cfg, good.to_str().unwrap()]).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(w.sandbox.violations().is_empty(), "{:?}", w.sandbox.violations());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exits_2_on_every_kind_of_configuration_error() {
    let w = World::new(64 * KIB as u64, "").await;
    let cfg = w.config_path.to_str().unwrap();
    // The key variable is empty.
    let r = w.run("", &["run", "--config", cfg]).await;
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("E2E_SPATIALGEN_KEY"), "{r:?}");
    // The token file named by [http] cannot be read.
    w.write_config("", "[http]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"/no/such/token\"\n");
    let r = w.run(KEY, &["run", "--config", cfg]).await;
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("http.token_file") && r.stderr.contains("/no/such/token"), "{r:?}");
    // A value past its limit, with its line.
    w.write_config("bandwidth = \"99999999999999999999GiB/s\"", "");
    let r = w.run(KEY, &["run", "--config", cfg]).await;
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("above the limit of 100GiB/s"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_from_another_process_during_upload() {
    let w = World::new(32 * KIB as u64, "max_parts_in_flight = 2").await;
    w.sandbox.set_faults(Faults { latency: Duration::from_millis(300), ..Faults::default() });
    let f = w.export("long-one", &[("v.mov", 1024 * KIB)]);
    let cfg = w.config_path.to_str().unwrap().to_string();
    let mut up = tokio::process::Command::from(w.command(KEY))
        .args(["upload", "--config", &cfg, f.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(20), "the upload to start", || {
        w.journal_path.exists()
            && Journal::open(&w.journal_path)
                .ok()
                .and_then(|j| j.list().ok())
                .is_some_and(|l| l.iter().any(|g| g.state == GroupState::Uploading))
    })
    .await;
    let asked = Instant::now();
    let r = w.run(KEY, &["cancel", "--config", &cfg, f.to_str().unwrap()]).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.contains("canceled"), "{r:?}");
    assert!(asked.elapsed() < Duration::from_secs(4), "cancel took {:?}", asked.elapsed());
    let out = tokio::time::timeout(Duration::from_secs(10), up.wait()).await.expect("upload ends").unwrap();
    assert_eq!(out.code(), Some(1));
    let j = Journal::open(&w.journal_path).unwrap();
    let g = &j.list().unwrap()[0];
    assert_eq!(g.state, GroupState::Canceled);
    let server = w.sandbox.sessions().into_iter().find(|s| Some(&s.id) == g.session_id.as_ref()).unwrap();
    assert_eq!(server.status, SessionStatus::Canceled);
    assert!(w.sandbox.library().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_retry_with_no_agent_running() {
    let w = World::new(16 * KIB as u64, "max_parts_in_flight = 2").await;
    w.sandbox.set_faults(Faults { latency: Duration::from_millis(40), ..Faults::default() });
    let f = w.export("orphan", &[("v.mov", 400 * KIB)]);
    let cfg = w.config_path.to_str().unwrap().to_string();
    let mut up = tokio::process::Command::from(w.command(KEY))
        .args(["upload", "--config", &cfg, f.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(20), "some parts done", || {
        Journal::open(&w.journal_path)
            .ok()
            .and_then(|j| j.list().ok())
            .is_some_and(|l| l.iter().any(|g| g.parts_done >= 2))
    })
    .await;
    up.kill().await.unwrap(); // SIGKILL: no engine runs on the journal any more
    let j = Journal::open(&w.journal_path).unwrap();
    let id = j.list().unwrap()[0].id;
    assert!(!j.engine_running().unwrap());

    let r = w.run(KEY, &["cancel", "--config", &cfg, &id.to_string()]).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    let g = j.group(id).unwrap();
    assert_eq!(g.state, GroupState::Canceled);
    let server = w.sandbox.sessions().into_iter().find(|s| Some(&s.id) == g.session_id.as_ref()).unwrap();
    assert_eq!(server.status, SessionStatus::Canceled, "the command sent DELETE itself");

    let r = w.run(KEY, &["retry", "--config", &cfg, &id.to_string()]).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    let new = j.list().unwrap().into_iter().find(|s| s.retry_of == Some(id)).expect("a new group");
    assert_eq!(new.state, GroupState::Queued);
    w.sandbox.set_faults(Faults::default());
    let r = w.run(KEY, &["upload", "--config", &cfg, f.to_str().unwrap()]).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(j.group(new.id).unwrap().state, GroupState::Completed);
    assert_eq!(w.sandbox.library().len(), 1);
    // retrying a completed group is refused
    let r = w.run(KEY, &["retry", "--config", &cfg, &new.id.to_string()]).await;
    assert_eq!(r.code, Some(1), "{r:?}");
    let r = w.run(KEY, &["cancel", "--config", &cfg, "no-such-group"]).await;
    assert_eq!(r.code, Some(2), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_hands_the_group_to_a_running_agent_and_follows_it() {
    let w = World::new(32 * KIB as u64, "").await;
    let journal = w.journal();
    // This process is "the agent": it holds the engine lock and works the queue.
    let lock = journal.try_lock_engine().unwrap().expect("lock is free");
    let engine = w.engine(journal.clone(), KEY, fast());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let agent = tokio::spawn({
        let s = shutdown.clone();
        async move { engine.run(s).await }
    });
    let f = w.export("handed-over", &[("v.mov", 300 * KIB)]);
    let r = w.run(KEY, &["upload", "--config", w.config_path.to_str().unwrap(), f.to_str().unwrap()]).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stderr.contains("the agent is running"), "{r:?}");
    let lib = library_id_in(&r.stdout);
    assert_eq!(w.sandbox.library()[0].library_id, lib);
    shutdown.cancel();
    agent.await.unwrap().unwrap();
    drop(lock);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_the_next_run_resumes() {
    let w = World::new(16 * KIB as u64, "max_parts_in_flight = 2").await;
    w.sandbox.set_faults(Faults { latency: Duration::from_millis(40), ..Faults::default() });
    let f = w.export("interrupted", &[("v.mov", 800 * KIB)]);
    let cfg = w.config_path.to_str().unwrap().to_string();
    let up = tokio::process::Command::from(w.command(KEY))
        .args(["upload", "--config", &cfg, f.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(20), "some parts done", || {
        Journal::open(&w.journal_path)
            .ok()
            .and_then(|j| j.list().ok())
            .is_some_and(|l| l.iter().any(|g| g.parts_done >= 3))
    })
    .await;
    let pid = up.id().unwrap() as i32;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let stopped = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(10), up.wait_with_output()).await.expect("it stops").unwrap();
    assert!(stopped.elapsed() < Duration::from_secs(4), "shutdown_grace is 2 s; took {:?}", stopped.elapsed());
    assert_eq!(out.status.code(), Some(1), "no library id yet: exit 1");
    assert!(String::from_utf8_lossy(&out.stderr).contains("run the same command again"));
    let j = Journal::open(&w.journal_path).unwrap();
    let g = j.list().unwrap().remove(0);
    assert_eq!(g.state, GroupState::Uploading);
    let stored = w.sandbox.stats().storage.get(&200).copied().unwrap_or(0);
    assert_eq!(stored, u64::from(g.parts_done), "every part the storage took was recorded before exit");

    w.sandbox.set_faults(Faults::default());
    let before = w.sandbox.stats().put_bytes;
    let r = w.run(KEY, &["upload", "--config", &cfg, f.to_str().unwrap()]).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(w.sandbox.stats().put_bytes - before, g.bytes_total - g.bytes_uploaded, "done parts were sent again");
    assert_eq!(w.sandbox.library().len(), 1);
    assert_library_matches(&w.sandbox, &w.sandbox.library()[0].session_id, &f);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_keeps_to_the_configured_bandwidth() {
    // 3 MiB at 1 MiB/s cannot take less than ~3 s, however fast loopback is
    // (the bucket starts empty); without the limit it takes well under 1 s.
    let w = World::new(512 * KIB as u64, "bandwidth = \"1MiB/s\"").await;
    let f = w.export("limited", &[("limited.mov", 3 * 1024 * KIB)]);
    let cfg = w.config_path.to_str().unwrap();
    let started = Instant::now();
    let r = w.run(KEY, &["upload", "--config", cfg, "--layout", "2D", f.to_str().unwrap()]).await;
    let took = started.elapsed();
    assert_eq!(r.code, Some(0), "{r:?}");
    eprintln!("3 MiB under a 1 MiB/s limit took {took:?}");
    assert!(took >= Duration::from_millis(2_500), "the limit was not applied: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_the_journal_read_only_never_creating_migrating_or_renaming_it() {
    let w = World::new(64 * KIB as u64, "").await;
    let cfg = w.config_path.to_str().unwrap();
    let state_dir = w.journal_path.parent().unwrap().to_path_buf();
    let listing = || {
        let mut names: Vec<String> = std::fs::read_dir(&state_dir)
            .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.sort();
        names
    };

    // No journal yet: `status` says so and creates nothing.
    let r = w.run(KEY, &["status", "--config", cfg]).await;
    assert!(!w.journal_path.exists(), "status created the journal: {r:?}");

    // A file that is not a journal: `status` fails naming it, and leaves it
    // exactly as it was (a `run` would rename it aside; a reader must not).
    std::fs::create_dir_all(&state_dir).unwrap();
    let garbage = b"this is not an SQLite database, but somebody's data".repeat(100);
    std::fs::write(&w.journal_path, &garbage).unwrap();
    let before = listing();
    let r = w.run(KEY, &["status", "--config", cfg, "--json"]).await;
    assert_ne!(r.code, Some(0), "{r:?}");
    assert!(r.stderr.contains("journal"), "the error names the journal: {r:?}");
    assert_eq!(std::fs::read(&w.journal_path).unwrap(), garbage, "the file was changed");
    assert_eq!(listing(), before, "nothing renamed aside or created beside it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_prints_one_group_with_files_parts_and_history_and_status_filters_by_state_and_limit() {
    let w = World::new(64 * KIB as u64, "").await;
    let cfg = w.config_path.to_str().unwrap();
    let a = w.export("Shot A", &[("a.mov", 150 * KIB)]);
    let b = w.export("Shot B", &[("b.mov", 10 * KIB)]);
    for f in [&a, &b] {
        let r = w.run(KEY, &["upload", "--config", cfg, f.to_str().unwrap()]).await;
        assert_eq!(r.code, Some(0), "{r:?}");
    }
    let journal = w.journal();
    let id = journal.find(a.to_str().unwrap()).unwrap().expect("group of Shot A");

    let s = w.run(KEY, &["show", "--config", cfg, "--json", &id.to_string()]).await;
    assert_eq!(s.code, Some(0), "{s:?}");
    let v: serde_json::Value = serde_json::from_str(&s.stdout).unwrap();
    assert_eq!(v["id"], id);
    assert_eq!(v["state"], "completed");
    assert_eq!(v["files"][0]["fileName"], "a.mov");
    assert_eq!(v["files"][0]["partsTotal"], 3, "150 KiB in 64 KiB parts");
    assert_eq!(v["files"][0]["partsDone"], 3);
    assert!(v["files"][0]["parts"][0]["etag"].is_string());
    let history: Vec<&str> = v["history"].as_array().unwrap().iter().filter_map(|e| e["to"].as_str()).collect();
    assert_eq!(history.last(), Some(&"completed"), "{history:?}");
    assert!(history.contains(&"uploading"), "{history:?}");

    let t = w.run(KEY, &["show", "--config", cfg, a.to_str().unwrap()]).await;
    assert_eq!(t.code, Some(0), "{t:?}");
    assert!(t.stdout.contains("a.mov") && t.stdout.contains("parts 3/3") && t.stdout.contains("-> completed"), "{t:?}");
    let missing = w.run(KEY, &["show", "--config", cfg, "9999"]).await;
    assert_eq!(missing.code, Some(2), "{missing:?}");
    assert!(missing.stderr.contains("9999"), "{missing:?}");

    let rows = |out: &str| serde_json::from_str::<serde_json::Value>(out).unwrap().as_array().unwrap().len();
    let all = w.run(KEY, &["status", "--config", cfg, "--json"]).await;
    assert_eq!(rows(&all.stdout), 2);
    let none = w.run(KEY, &["status", "--config", cfg, "--json", "--state", "failed,queued"]).await;
    assert_eq!(rows(&none.stdout), 0, "{none:?}");
    let newest = w.run(KEY, &["status", "--config", cfg, "--json", "--state", "completed", "--limit", "1"]).await;
    let v: serde_json::Value = serde_json::from_str(&newest.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["name"], "Shot B", "the newest group");
    let bad = w.run(KEY, &["status", "--config", cfg, "--state", "finished"]).await;
    assert_eq!(bad.code, Some(2), "{bad:?}");
    assert!(bad.stderr.contains("finished"), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_config_the_xdg_config_is_found_and_a_missing_one_is_named() {
    if std::path::Path::new("/etc/spatialgen-sync/config.toml").exists() {
        // The system config comes first there; this machine cannot show the XDG rule.
        eprintln!("skipped: /etc/spatialgen-sync/config.toml exists on this machine");
        return;
    }
    let w = World::new(64 * KIB as u64, "").await;
    let xdg = w.dir.path().join("xdg");
    let run = |xdg: &std::path::Path| {
        let mut c = w.command(KEY);
        c.env("XDG_CONFIG_HOME", xdg).args(["status", "--json"]);
        c.output().expect("binary runs")
    };
    let out = run(&xdg);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--config") && err.contains("xdg/spatialgen-sync/config.toml"), "{err}");

    std::fs::create_dir_all(xdg.join("spatialgen-sync")).unwrap();
    std::fs::copy(&w.config_path, xdg.join("spatialgen-sync/config.toml")).unwrap();
    let out = run(&xdg);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}
