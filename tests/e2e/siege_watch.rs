//! The real `run` binary when reads in a watch folder fail or the folder is
//! renamed away: no descriptor left (its file limit lowered from outside
//! with `prlimit`) is a read error shown in `/healthz`, `status` and the
//! journal, not an empty export, and the export uploads soon after
//! descriptors come back, long before the 10-minute rescan; a watch folder
//! renamed away is reported missing within seconds.

use std::path::Path;
use std::time::{Duration, Instant};

use spatialgen_sync::journal::prelude::*;
use spatialgen_sync::journal::{GroupState, PauseReason};

use crate::agent::{Agent, drop_folder, publish, wait_state};
#[cfg(target_os = "linux")]
use crate::agent::{free_port, row};
use crate::support::*;

const KIB: usize = 1024;

/// A `[[watch]]` table settling quickly whose periodic rescan is far off:
/// whatever is found in these tests is found by events and retries.
fn slow_rescan_table(folder: &Path) -> String {
    format!("[[watch]]\npath = \"{}\"\nsettle = \"300ms\"\nrescan = \"10m\"\n", folder.display())
}

/// The lowest descriptor number `pid` has free: with the soft limit there,
/// every new open in it fails with EMFILE.
#[cfg(target_os = "linux")]
fn lowest_free_fd(pid: i32) -> u64 {
    let open: std::collections::BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the agent's descriptors are listed")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|n| !open.contains(n)).expect("a free number")
}

/// `pid`'s soft limit on open files.
#[cfg(target_os = "linux")]
fn soft_nofile(pid: i32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("the agent's limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("a file limit");
    line.split_whitespace().nth(3).and_then(|v| v.parse().ok()).expect("a number")
}

#[cfg(target_os = "linux")]
fn set_soft_nofile(pid: i32, soft: u64) {
    let out = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={soft}:")])
        .output()
        .expect("prlimit runs");
    assert!(out.status.success(), "prlimit: {}", String::from_utf8_lossy(&out.stderr));
}

#[cfg(target_os = "linux")]
fn has_prlimit() -> bool {
    std::process::Command::new("prlimit").arg("--version").output().is_ok_and(|o| o.status.success())
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_published_while_the_agent_has_no_descriptor_left_uploads_once_it_has() {
    if !has_prlimit() {
        eprintln!("skipped: prlimit (util-linux) is not installed");
        return;
    }
    let w = World::new(64 * KIB as u64, "").await;
    let drop = drop_folder(&w, "drop");
    let port = free_port();
    w.write_config("", &format!("{}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n", slow_rescan_table(&drop)));
    let journal = w.journal();
    let agent = Agent::start(&w);
    agent.wait_log("agent started", 1, Duration::from_secs(20)).await;
    // The startup scan is over and the agent is idle.
    publish(&w, &drop, "before", &[("v.mov", 2 * KIB)]);
    wait_state(&journal, &drop.join("before"), GroupState::Completed, Duration::from_secs(30)).await;
    // A connection opened now is kept: the agent cannot accept a new one
    // while it has no descriptor left.
    let http = reqwest::Client::builder().pool_max_idle_per_host(1).build().unwrap();
    let healthz = format!("http://127.0.0.1:{port}/healthz");
    assert_eq!(http.get(&healthz).send().await.unwrap().status(), 200);

    let pid = agent.pid();
    let soft = soft_nofile(pid);
    set_soft_nofile(pid, lowest_free_fd(pid));
    let exp = publish(&w, &drop, "siege", &[("v.mov", 8 * KIB), ("siege.en.m4a", 2 * KIB)]);
    let unreadable = PauseReason::WatchUnreadable(drop.clone());
    wait_for_then(
        Duration::from_secs(15),
        || journal.pause(&unreadable).ok().flatten().is_some(),
        || format!("no read error recorded; output:\n{}", agent.log()),
    )
    .await;
    let note = journal.pause(&unreadable).unwrap().unwrap();
    let detail = note.detail.clone().unwrap_or_default();
    assert!(detail.contains("siege") && detail.contains("Too many open files"), "{detail}");
    // Nothing is decided about what cannot be read: waiting, not empty (no row) nor rejected.
    let held = Instant::now();
    while held.elapsed() < Duration::from_secs(3) {
        let r = row(&journal, &exp);
        assert!(r.as_ref().is_some_and(|r| r.state == GroupState::Waiting), "{r:?}\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let health = http.get(&healthz).send().await.expect("asked on the kept connection");
    assert_eq!(health.status(), 503);
    let text = health.text().await.unwrap();
    assert!(text.contains(&format!("watch folder {} cannot be read", drop.display())), "{text}");
    assert!(text.contains("Too many open files"), "{text}");
    // `status` (another process, with descriptors of its own) shows it.
    let cfg = w.config_path.to_str().unwrap().to_string();
    let status = w.run(KEY, &["status", "--config", &cfg]).await;
    assert!(status.stdout.contains(&format!("watch folder {} cannot be read", drop.display())), "{status:?}");

    set_soft_nofile(pid, soft);
    let relieved = Instant::now();
    wait_for_then(
        Duration::from_secs(30),
        || row(&journal, &exp).is_some_and(|r| r.state == GroupState::Completed),
        || format!("not uploaded: {:?}; output:\n{}", row(&journal, &exp), agent.log()),
    )
    .await;
    assert!(relieved.elapsed() < Duration::from_secs(30), "long before the 10-minute rescan");
    wait_for(Duration::from_secs(10), "the read error cleared", || journal.pause(&unreadable).ok().flatten().is_none())
        .await;
    assert_eq!(reqwest::get(&healthz).await.unwrap().status(), 200);
    let out = agent.stop().await;
    assert_eq!(out.matches("cannot read in the watch folder").count(), 1, "warned once:\n{out}");
    assert_eq!(out.matches("the watch folder reads again").count(), 1, "cleared once:\n{out}");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_folder_renamed_away_is_missing_within_seconds_and_back_when_renamed_back() {
    let w = World::new(64 * KIB as u64, "").await;
    let drop = drop_folder(&w, "drop");
    w.write_config("", &slow_rescan_table(&drop));
    let journal = w.journal();
    let agent = Agent::start(&w);
    agent.wait_log("agent started", 1, Duration::from_secs(20)).await;
    let first = publish(&w, &drop, "first", &[("v.mov", 2 * KIB)]);
    wait_state(&journal, &first, GroupState::Completed, Duration::from_secs(30)).await;

    let aside = w.dir.path().join("drop.old");
    std::fs::rename(&drop, &aside).unwrap();
    let renamed = Instant::now();
    let missing = PauseReason::WatchMissing(drop.clone());
    wait_for_then(
        Duration::from_secs(5),
        || journal.pause(&missing).ok().flatten().is_some(),
        || format!("not reported missing; output:\n{}", agent.log()),
    )
    .await;
    assert!(renamed.elapsed() < Duration::from_secs(5));
    let cfg = w.config_path.to_str().unwrap().to_string();
    let status = w.run(KEY, &["status", "--config", &cfg]).await;
    assert!(status.stdout.contains(&format!("watch folder {} is missing", drop.display())), "{status:?}");

    std::fs::rename(&aside, &drop).unwrap();
    wait_for(Duration::from_secs(5), "the folder back", || journal.pause(&missing).ok().flatten().is_none()).await;
    let second = publish(&w, &drop, "second", &[("v.mov", 2 * KIB)]);
    wait_state(&journal, &second, GroupState::Completed, Duration::from_secs(30)).await;
    agent.stop().await;
}
