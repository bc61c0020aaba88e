//! kill -9 at random moments: the real binary, several multipart groups
//! uploading at once (one `upload` process per group, each with its own
//! journal, all against one sandbox), each killed at least five times while
//! its parts are moving and restarted. At the end: exactly one library entry
//! per group, byte-identical, and no more bytes re-sent than the parts that
//! could have been in flight at each kill.

use std::path::Path;
use std::time::Duration;

use rand::Rng;
use spatialgen_sync::journal::{GroupState, Journal};
use spatialgen_sync::sandbox::Faults;

use crate::support::*;
use spatialgen_sync::journal::prelude::*;

const KIB: usize = 1024;
const PART: u64 = 16 * 1024;
const IN_FLIGHT: u64 = 3;
const KILLS: usize = 5;

/// Parts recorded done in a journal (0 if it cannot be read yet).
fn parts_done(journal: &Path) -> u32 {
    if !journal.exists() {
        return 0;
    }
    Journal::open(journal).ok().and_then(|j| j.list().ok()).map(|l| l.iter().map(|g| g.parts_done).sum()).unwrap_or(0)
}

fn state(journal: &Path) -> Option<GroupState> {
    Journal::open(journal).ok()?.list().ok()?.first().map(|g| g.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing_and_duplicates_nothing() {
    let w = World::new(PART, "").await;
    // Slow enough that a kill lands mid-upload; fast enough for a short test.
    w.sandbox.set_faults(Faults { latency: Duration::from_millis(15), ..Faults::default() });
    let mut agents = Vec::new();
    for i in 0..3 {
        let folder = w.export(&format!("crash-{i}"), &[("v.mov", 2400 * KIB + i * 777), ("v.en.srt", 3000)]);
        let (config, journal) = w.config_with_journal(
            &format!("a{i}"),
            &format!("max_parts_in_flight = {IN_FLIGHT}\nshutdown_grace = \"1s\""),
        );
        agents.push((folder, config, journal));
    }
    let total_bytes: u64 = agents
        .iter()
        .map(|(f, ..)| std::fs::read_dir(f).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum::<u64>())
        .sum();

    let mut tasks = Vec::new();
    for (folder, config, journal) in agents.clone() {
        let cmd_base = w.command(KEY);
        let prog = cmd_base.get_program().to_owned();
        tasks.push(tokio::spawn(async move {
            let mut kills = 0usize;
            loop {
                let mut child = tokio::process::Command::new(&prog)
                    .env("E2E_SPATIALGEN_KEY", KEY)
                    .args(["upload", "--config", config.to_str().unwrap(), folder.to_str().unwrap()])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap();
                if kills < KILLS {
                    // Wait (bounded) until this run has recorded new parts, then a random moment more.
                    let before = parts_done(&journal);
                    let start = std::time::Instant::now();
                    let mut moved = false;
                    while start.elapsed() < Duration::from_secs(20) {
                        if parts_done(&journal) > before {
                            moved = true;
                            break;
                        }
                        if let Ok(Some(_)) = child.try_wait() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    assert!(moved, "no progress after a restart");
                    let extra = rand::rng().random_range(0..80);
                    tokio::time::sleep(Duration::from_millis(extra)).await;
                    if child.try_wait().unwrap().is_none() {
                        child.kill().await.unwrap(); // SIGKILL
                        kills += 1;
                        continue;
                    }
                }
                let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
                    .await
                    .expect("upload finishes")
                    .unwrap();
                assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
                return kills;
            }
        }));
    }
    let mut kills = 0;
    for t in tasks {
        let k = t.await.unwrap();
        assert!(k >= KILLS, "only {k} kills landed mid-upload");
        kills += k;
    }

    let lib = w.sandbox.library();
    assert_eq!(lib.len(), agents.len(), "exactly one library entry per group");
    for (folder, _, journal) in &agents {
        assert_eq!(state(journal), Some(GroupState::Completed));
        let j = Journal::open(journal).unwrap();
        let g = &j.list().unwrap()[0];
        assert_library_matches(&w.sandbox, g.session_id.as_deref().unwrap(), folder);
        assert_eq!(lib.iter().filter(|e| Some(&e.session_id) == g.session_id.as_ref()).count(), 1);
    }
    let sent = w.sandbox.stats().put_bytes;
    let resent = sent - total_bytes;
    let bound = kills as u64 * IN_FLIGHT * PART;
    println!("crash test: {kills} kills, {resent} bytes re-sent (bound {bound})");
    assert!(resent <= bound, "{resent} bytes re-sent after {kills} kills; at most {bound} could have been in flight");
    assert!(w.sandbox.violations().is_empty(), "{:?}", w.sandbox.violations());
}
