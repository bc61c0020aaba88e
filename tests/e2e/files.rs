//! Files on disk around an upload: `after_upload` acts only on what was
//! uploaded, never on a watch folder itself.

use std::time::Duration;

use spatialgen_sync::journal::{GroupState, Journal};
use spatialgen_sync::sandbox::Faults;

use crate::support::*;
use spatialgen_sync::journal::prelude::*;

const KIB: usize = 1024;

fn watch_table(w: &World, mode: &str, after: &str) -> String {
    format!("[[watch]]\npath = \"{}\"\nmode = \"{mode}\"\nafter_upload = \"{after}\"\n", w.exports.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_added_during_the_upload_is_not_deleted_after_it() {
    let w = World::new(32 * KIB as u64, "max_parts_in_flight = 1").await;
    w.write_config("max_parts_in_flight = 1", &watch_table(&w, "folders", "delete"));
    w.sandbox.set_faults(Faults { latency: Duration::from_millis(150), ..Faults::default() });
    let f = w.export("Shot 020", &[("Shot_020.mov", 512 * KIB)]);
    let cfg = w.config_path.to_str().unwrap().to_string();
    let up = tokio::process::Command::from(w.command(KEY))
        .args(["upload", "--config", &cfg, "--layout", "MVHEVC", f.to_str().unwrap()])
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
    let subtitle = f.join("Shot_020.en.srt");
    std::fs::write(&subtitle, "1\n00:00:00,000 --> 00:00:01,000\nhello\n").unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), up.wait_with_output()).await.expect("upload ends").unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    assert!(!f.join("Shot_020.mov").exists(), "the uploaded video is deleted");
    assert!(subtitle.exists(), "the subtitle added during the upload stays");
    assert!(f.is_dir(), "the folder holding it stays");
    assert!(w.exports.is_dir());

    let s = w.run(KEY, &["status", "--config", &cfg, "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&s.stdout).unwrap();
    let row = &v.as_array().unwrap()[0];
    assert_eq!(row["state"], "completed");
    let error = row["error"].as_str().unwrap_or_default();
    assert!(error.contains("Shot_020.en.srt") && error.contains("kept"), "{row}");
    let t = w.run(KEY, &["status", "--config", &cfg]).await;
    assert!(t.stdout.contains("Shot_020.en.srt"), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploading_a_flat_watch_folder_never_removes_the_folder_itself() {
    let w = World::new(64 * KIB as u64, "").await;
    w.write_config("", &watch_table(&w, "flat", "delete"));
    std::fs::write(w.exports.join("A.mov"), container_for("A.mov", "A", 100 * KIB).unwrap()).unwrap();
    std::fs::write(w.exports.join(".keep"), b"").unwrap();
    let cfg = w.config_path.to_str().unwrap().to_string();
    let r = w.run(KEY, &["upload", "--config", &cfg, "--layout", "MVHEVC", w.exports.to_str().unwrap()]).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(w.sandbox.library().len(), 1, "A.mov was uploaded");
    assert!(w.exports.is_dir(), "the watch folder itself stays");
    assert!(w.exports.join(".keep").exists(), "a file that was not uploaded stays");
    assert!(!w.exports.join("A.mov").exists(), "the uploaded file is deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_with_a_fifo_sidecar_is_rejected_while_the_one_beside_it_uploads_and_sigterm_stops_the_agent() {
    let w = World::new(64 * KIB as u64, "").await;
    let drop = w.dir.path().join("drop");
    std::fs::create_dir_all(&drop).unwrap();
    w.write_config("", &format!("[[watch]]\npath = \"{}\"\nsettle = \"300ms\"\n", drop.display()));
    let bad = w.export("Bad", &[("Bad.mov", 50 * KIB)]);
    let st = std::process::Command::new("mkfifo").arg(bad.join("spatialgen.toml")).status().unwrap();
    assert!(st.success());
    let good = w.export("Good", &[("Good.mov", 80 * KIB)]);
    std::fs::rename(&bad, drop.join("Bad")).unwrap();
    std::fs::rename(&good, drop.join("Good")).unwrap();

    let mut agent = tokio::process::Command::from(w.command(KEY))
        .args(["run", "--config", w.config_path.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the agent starts");
    let ended = |name: &str, state: GroupState| {
        Journal::open(&w.journal_path)
            .ok()
            .and_then(|j| j.list().ok())
            .is_some_and(|l| l.iter().any(|g| g.name == name && g.state == state))
    };
    wait_for(Duration::from_secs(30), "Good to be uploaded and Bad rejected", || {
        w.journal_path.exists() && ended("Good", GroupState::Completed) && ended("Bad", GroupState::Rejected)
    })
    .await;
    let j = Journal::open(&w.journal_path).unwrap();
    let rejected = j.list().unwrap().into_iter().find(|g| g.name == "Bad").unwrap();
    let error = rejected.error.unwrap_or_default();
    assert!(error.contains("spatialgen.toml") && error.contains("FIFO"), "{error}");
    assert_eq!(w.sandbox.library().len(), 1, "only Good reached the library");

    let pid = i32::try_from(agent.id().expect("running")).unwrap();
    let asked = std::time::Instant::now();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(10), agent.wait()).await.expect("the agent stops").unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(asked.elapsed() < Duration::from_secs(8), "stopping took {:?}", asked.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_swapped_in_after_grouping_fails_the_group_and_uploads_nothing_of_its_target() {
    use spatialgen_sync::upload::GroupOutcome;
    let w = World::new(64 * KIB as u64, "").await;
    let journal = w.journal();
    let f = w.export("swapped", &[("v.mov", 100 * KIB)]);
    let id = w.enqueue(&journal, &w.group(&f, "2D", "Regular"));
    // The same bytes elsewhere, then a link to them where the grouped file was.
    let secret = w.dir.path().join("secret.mov");
    std::fs::copy(f.join("v.mov"), &secret).unwrap();
    std::fs::remove_file(f.join("v.mov")).unwrap();
    std::os::unix::fs::symlink(&secret, f.join("v.mov")).unwrap();
    let engine = w.engine(journal.clone(), KEY, fast());
    let (_, outcome) = engine.run_one(id, tokio_util::sync::CancellationToken::new()).await.unwrap();
    let why = match &outcome {
        GroupOutcome::Canceled(why) | GroupOutcome::Failed(why) => why.clone(),
        other => panic!("{other:?}"),
    };
    assert!(why.contains("v.mov") && why.contains("symbolic link"), "{why}");
    assert!(w.sandbox.library().is_empty(), "nothing reached the library");
    let g = journal.group(id).unwrap();
    assert_eq!(g.uploaded_bytes(), 0, "no part of the link's target was stored");
    assert!(secret.exists());
}
