//! The real `run` binary with its operator controls against the sandbox:
//! the bandwidth limit, hooks for completed, failed and rejected groups,
//! metrics scraped over HTTP, and SIGHUP reloads (a good and a bad config).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spatialgen_sync::group::Violation;
use spatialgen_sync::journal::{Enqueued, GroupState, GroupSummary, Journal};
use spatialgen_sync::sandbox::Faults;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::support::*;
use spatialgen_sync::journal::prelude::*;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// A `[[watch]]` table for `folder`, settling quickly.
pub(crate) fn watch_table(folder: &Path) -> String {
    format!("[[watch]]\npath = \"{}\"\nsettle = \"300ms\"\n", folder.display())
}

/// A watched drop folder beside the world's export area.
pub(crate) fn drop_folder(w: &World, name: &str) -> PathBuf {
    let d = w.dir.path().join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Write an export outside, then move it into `drop` in one rename, as a
/// render farm's "export, then publish" step does: the watcher sees it whole.
pub(crate) fn publish(w: &World, drop: &Path, name: &str, files: &[(&str, usize)]) -> PathBuf {
    let made = w.export(name, files);
    let to = drop.join(name);
    std::fs::rename(&made, &to).unwrap();
    to
}

/// A free loopback port (bound, then released for the agent to take).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `spatialgen-sync run` as a child process, its output collected.
pub(crate) struct Agent {
    child: tokio::process::Child,
    log: Arc<Mutex<String>>,
    /// The tasks copying stdout and stderr into `log`.
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Agent {
    pub(crate) fn start(w: &World) -> Agent {
        Agent::start_with_key(w, KEY)
    }

    fn start_with_key(w: &World, key: &str) -> Agent {
        Agent::start_config(w, &w.config_path, key)
    }

    /// `run --config config` (another agent beside the world's own).
    pub(crate) fn start_config(w: &World, config: &Path, key: &str) -> Agent {
        let mut child = tokio::process::Command::from(w.command(key))
            .args(["run", "--config", config.to_str().unwrap()])
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the agent starts");
        let log = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect(child.stdout.take().unwrap(), log.clone()),
            collect(child.stderr.take().unwrap(), log.clone()),
        ];
        Agent { child, log, readers }
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Wait until the output contains `text` `times` times.
    pub(crate) async fn wait_log(&self, text: &str, times: usize, limit: Duration) {
        wait_for_then(
            limit,
            || self.log.lock().unwrap().matches(text).count() >= times,
            || format!("{times}× {text:?} in the agent's output; output:\n{}", self.log()),
        )
        .await;
    }

    /// The process id (while it has not been waited for).
    pub(crate) fn pid(&self) -> i32 {
        self.child.id().expect("running") as i32
    }

    /// Has the process not exited?
    pub(crate) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    #[cfg(unix)]
    pub(crate) fn signal(&self, sig: i32) {
        let pid = self.pid();
        // SAFETY: signalling our own child process.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }

    /// SIGKILL, and wait until the process is gone.
    #[cfg(unix)]
    pub(crate) async fn kill_9(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait().await;
    }

    /// SIGTERM, then the exit code must be 0; returns the whole output.
    #[cfg(unix)]
    pub(crate) async fn stop(mut self) -> String {
        self.signal(libc::SIGTERM);
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("the agent stops within its grace")
            .unwrap();
        // Let the readers take the last lines.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            for r in self.readers.drain(..) {
                let _ = r.await;
            }
        })
        .await;
        let out = self.log();
        assert_eq!(status.code(), Some(0), "{out}");
        out
    }
}

fn collect(stream: impl AsyncRead + Unpin + Send + 'static, log: Arc<Mutex<String>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut l = log.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    })
}

/// The group uploading `path`, as `status` would show it.
pub(crate) fn row(journal: &Journal, path: &Path) -> Option<GroupSummary> {
    journal.list().ok()?.into_iter().rev().find(|r| Path::new(&r.path) == path)
}

pub(crate) async fn wait_state(journal: &Journal, path: &Path, state: GroupState, limit: Duration) -> GroupSummary {
    let what = format!("{} to be {state}", path.display());
    wait_for(limit, &what, || row(journal, path).is_some_and(|r| r.state == state)).await;
    row(journal, path).unwrap()
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_holds_the_bandwidth_limit() {
    const LIMIT: f64 = 8.0 * MIB as f64;
    // About 2 s by default; `E2E_BANDWIDTH_SECONDS=30` measures over 30 s.
    let seconds: usize = std::env::var("E2E_BANDWIDTH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let size: usize = 8 * MIB * seconds.max(1);
    let w = World::new(128 * KIB as u64, "").await;
    let drop = drop_folder(&w, "drop");
    w.write_config("bandwidth = \"8MiB/s\"\nmax_parts_in_flight = 4", &watch_table(&drop));
    let journal = w.journal();
    let agent = Agent::start(&w);
    let f = publish(&w, &drop, "limited", &[("v.mov", size)]);

    // Bytes recorded done over time; parts are 128 KiB, so the record is fine-grained.
    let mut samples: Vec<(Instant, u64)> = Vec::new();
    let started = Instant::now();
    loop {
        let limit = Duration::from_secs(60 + 3 * seconds as u64);
        assert!(started.elapsed() < limit, "no completion; output:\n{}", agent.log());
        if let Some(r) = row(&journal, &f) {
            samples.push((Instant::now(), r.bytes_uploaded));
            if r.state == GroupState::Completed {
                break;
            }
        }
        // The sampling period of the measurement, not a wait for an event.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first = samples.iter().find(|(_, b)| *b > 0).copied().expect("progress was seen");
    let last = samples.iter().find(|(_, b)| *b == size as u64).copied().expect("completion was seen");
    let secs = last.0.duration_since(first.0).as_secs_f64();
    let rate = (last.1 - first.1) as f64 / secs;
    println!(
        "bandwidth limit 8 MiB/s: measured {:.2} MiB/s ({:.0} % of the limit) over {secs:.2} s, {} MiB",
        rate / MIB as f64,
        rate * 100.0 / LIMIT,
        (last.1 - first.1) / MIB as u64
    );
    assert!(secs > 1.0, "too short to measure: {secs:.2} s");
    assert!(rate <= LIMIT * 1.15, "over the limit: {:.2} MiB/s", rate / MIB as f64);
    assert!(rate >= LIMIT * 0.5, "far under the limit: {:.2} MiB/s", rate / MIB as f64);
    let out = agent.stop().await;
    assert!(!out.contains(KEY), "the key was logged");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_get_the_groups_facts_for_completed_failed_and_rejected() {
    use std::os::unix::fs::PermissionsExt;

    let w = World::new(32 * KIB as u64, "").await;
    let drop = drop_folder(&w, "drop");
    let out_dir = w.dir.path().join("hook-out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let hook = w.dir.path().join("hook.sh");
    std::fs::write(
        &hook,
        "#!/bin/sh\n# $1: where to write, $2: which hook\nenv > \"$1/$2-$SPATIALGEN_GROUP_ID.tmp\" && \
         mv \"$1/$2-$SPATIALGEN_GROUP_ID.tmp\" \"$1/$2-$SPATIALGEN_GROUP_ID.env\"\necho \"hook $2 ran\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let argv = |which: &str| format!("[\"{}\", \"{}\", \"{which}\"]", hook.display(), out_dir.display());
    let hooks = format!(
        "[hooks]\non_complete = {}\non_failure = {}\non_rejected = {}\ntimeout = \"10s\"\n",
        argv("complete"),
        argv("failure"),
        argv("rejected")
    );
    w.write_config("retry_attempts = 2", &format!("{}\n{hooks}", watch_table(&drop)));
    let journal = w.journal();
    // Something that ended before this start is history: not notified again.
    let old = w.export("before-start", &[("v.mov", 5 * KIB)]);
    let mut old = w.group(&old, "2D", "Regular");
    old.violations.push(Violation { rule: "test", file: None, message: "rejected before the agent started".into() });
    let Enqueued::Rejected(old_id) = journal.enqueue(&old).unwrap() else { panic!("not rejected") };
    let agent = Agent::start(&w);
    agent.wait_log("agent started", 1, Duration::from_secs(20)).await;

    // 1. Every PUT fails: two attempts, then the group fails.
    w.sandbox.set_faults(Faults { put_5xx: 1.0, ..Faults::default() });
    let failing = publish(&w, &drop, "Storm — take 1", &[("v.mov", 40 * KIB)]);
    let failed = wait_state(&journal, &failing, GroupState::Failed, Duration::from_secs(30)).await;
    w.sandbox.set_faults(Faults::default());
    // 2. A good export and 3. one that breaks a rule (two videos, no L/R pair).
    let good = publish(&w, &drop, "Shot 020", &[("Shot_020.mov", 70 * KIB), ("Shot_020.en.srt", 300)]);
    let bad = publish(&w, &drop, "two videos", &[("a.mov", 2 * KIB), ("b.mov", 2 * KIB)]);
    let completed = wait_state(&journal, &good, GroupState::Completed, Duration::from_secs(30)).await;
    let rejected = wait_state(&journal, &bad, GroupState::Rejected, Duration::from_secs(30)).await;

    let env_of = |which: &str, id: i64| -> BTreeMap<String, String> {
        let p = out_dir.join(format!("{which}-{id}.env"));
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let want = [("complete", completed.id), ("failure", failed.id), ("rejected", rejected.id)];
    let dir = out_dir.clone();
    wait_for(Duration::from_secs(20), "the three hooks to write their files", || {
        want.iter().all(|(which, id)| dir.join(format!("{which}-{id}.env")).exists())
    })
    .await;

    let c = env_of("complete", completed.id);
    assert_eq!(c["SPATIALGEN_STATE"], "completed");
    assert_eq!(c["SPATIALGEN_GROUP_NAME"], "Shot 020");
    assert_eq!(c["SPATIALGEN_PATH"], good.display().to_string());
    assert_eq!(c["SPATIALGEN_LIBRARY_ID"], completed.library_id.unwrap().to_string());
    assert_eq!(c["SPATIALGEN_GROUP_ID"], completed.id.to_string());
    assert_eq!(c["SPATIALGEN_ERROR"], "");

    let f = env_of("failure", failed.id);
    assert_eq!(f["SPATIALGEN_STATE"], "failed");
    assert_eq!(f["SPATIALGEN_GROUP_NAME"], "Storm — take 1");
    assert_eq!(f["SPATIALGEN_PATH"], failing.display().to_string());
    assert_eq!(f["SPATIALGEN_LIBRARY_ID"], "");
    assert!(f["SPATIALGEN_ERROR"].contains("500"), "{:?}", f["SPATIALGEN_ERROR"]);
    assert!(!f["SPATIALGEN_ERROR"].contains("X-Signature"), "a presigned URL's query in {:?}", f["SPATIALGEN_ERROR"]);

    let r = env_of("rejected", rejected.id);
    assert_eq!(r["SPATIALGEN_STATE"], "rejected");
    assert_eq!(r["SPATIALGEN_PATH"], bad.display().to_string());
    assert_eq!(r["SPATIALGEN_ERROR"], rejected.error.clone().unwrap());
    assert!(!r["SPATIALGEN_ERROR"].is_empty());

    for env in [&c, &f, &r] {
        assert!(!env.contains_key("E2E_SPATIALGEN_KEY"), "the key's variable reached a hook");
        assert!(!env.values().any(|v| v.contains(KEY)), "the key reached a hook");
    }
    let out = agent.stop().await;
    let files: Vec<String> =
        std::fs::read_dir(&out_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(files.len(), 3, "exactly one notification per group, none for history: {files:?}");
    assert!(!files.iter().any(|f| f.ends_with(&format!("-{old_id}.env"))));
    assert!(out.contains("hook complete ran"), "the hook's output is logged:\n{out}");
}

/// Prometheus text as (name, sorted labels) → value.
fn parse_metrics(text: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n.to_string(), l.trim_end_matches('}').to_string()),
            None => (series.to_string(), String::new()),
        };
        out.insert((name, labels), value.parse().expect("numeric value"));
    }
    out
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_by_the_running_agent() {
    let w = World::new(16 * KIB as u64, "").await;
    let drop = drop_folder(&w, "drop");
    let port = free_port();
    w.write_config(
        "bandwidth = \"64MiB/s\"",
        &format!("{}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n", watch_table(&drop)),
    );
    let journal = w.journal();
    let agent = Agent::start(&w);
    agent.wait_log("metrics on http://", 1, Duration::from_secs(20)).await;
    let base = format!("http://127.0.0.1:{port}");
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);

    // Some PUTs fail and are retried; one export is rejected.
    w.sandbox.set_faults(Faults { put_5xx: 0.3, seed: Some(3), ..Faults::default() });
    let good = publish(&w, &drop, "measured", &[("v.mov", 20 * 16 * KIB)]);
    let bad = publish(&w, &drop, "not-a-video", &[("a.mov", KIB), ("b.mov", KIB)]);
    let done = wait_state(&journal, &good, GroupState::Completed, Duration::from_secs(30)).await;
    wait_state(&journal, &bad, GroupState::Rejected, Duration::from_secs(30)).await;

    let resp = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let m = parse_metrics(&resp.text().await.unwrap());
    let get = |name: &str, labels: &str| m.get(&(name.to_string(), labels.to_string())).copied();
    assert_eq!(get("spatialgen_groups", "state=\"completed\""), Some(1.0));
    assert_eq!(get("spatialgen_groups", "state=\"rejected\""), Some(1.0));
    assert_eq!(get("spatialgen_groups", "state=\"failed\""), Some(0.0));
    assert_eq!(get("spatialgen_queue_length", ""), Some(0.0));
    assert_eq!(get("spatialgen_journal_up", ""), Some(1.0));
    assert_eq!(get("spatialgen_bytes_uploaded_total", ""), Some(done.bytes_total as f64));
    assert_eq!(get("spatialgen_groups_completed_total", ""), Some(1.0));
    let injected = w.sandbox.stats().fault_count("put_5xx");
    assert!(injected > 0, "the seed injected no fault");
    assert_eq!(get("spatialgen_parts_retried_total", "reason=\"5xx\""), Some(injected as f64));
    let last = get("spatialgen_last_success_timestamp_seconds", "").expect("a last success");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((now - last).abs() < 120.0, "last success {last}, now {now}");
    assert_eq!(get("spatialgen_paused", ""), Some(0.0));
    assert_eq!(get("spatialgen_bandwidth_limit_bytes_per_second", ""), Some(64.0 * MIB as f64));
    agent.stop().await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_good_config_and_refuses_a_bad_one() {
    let w = World::new(32 * KIB as u64, "").await;
    let first = drop_folder(&w, "first");
    let second = drop_folder(&w, "second");
    w.write_config("", &watch_table(&first));
    let journal = w.journal();
    let agent = Agent::start(&w);
    agent.wait_log("agent started", 1, Duration::from_secs(20)).await;
    let a = publish(&w, &first, "in-first", &[("v.mov", 20 * KIB)]);
    wait_state(&journal, &a, GroupState::Completed, Duration::from_secs(30)).await;

    // A good config adds a folder and a hook: SIGHUP, and what is published
    // there uploads and is notified (what ended before the reload is not).
    let marks = w.dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let hooks = format!(
        "[hooks]\non_complete = [\"/bin/sh\", \"-c\", \"touch \\\"$0/$SPATIALGEN_GROUP_NAME\\\"\", \"{}\"]\n",
        marks.display()
    );
    w.write_config("", &format!("{}\n{}\n{hooks}", watch_table(&first), watch_table(&second)));
    agent.signal(libc::SIGHUP);
    agent.wait_log("watch added", 1, Duration::from_secs(10)).await;
    let b = publish(&w, &second, "in-second", &[("v.mov", 21 * KIB)]);
    wait_state(&journal, &b, GroupState::Completed, Duration::from_secs(30)).await;
    let mark = marks.join("in-second");
    wait_for(Duration::from_secs(10), "the reloaded hook", || mark.exists()).await;
    assert!(!marks.join("in-first").exists(), "a group that ended before the reload was notified");

    // A broken config is refused with where it is wrong; the running one stays.
    let good_text = std::fs::read_to_string(&w.config_path).unwrap();
    std::fs::write(&w.config_path, format!("{good_text}\n[upload]\nmax_groups = \"many\"\n")).unwrap();
    agent.signal(libc::SIGHUP);
    agent.wait_log("refused, the running config stays", 1, Duration::from_secs(10)).await;
    let log = agent.log();
    let refusal = log.lines().find(|l| l.contains("refused, the running config stays")).unwrap();
    assert!(refusal.contains("agent.toml"), "the message names the file: {refusal}");
    let c = publish(&w, &second, "after-the-bad-one", &[("v.mov", 22 * KIB)]);
    let d = publish(&w, &first, "first-still-watched", &[("v.mov", 23 * KIB)]);
    wait_state(&journal, &c, GroupState::Completed, Duration::from_secs(30)).await;
    wait_state(&journal, &d, GroupState::Completed, Duration::from_secs(30)).await;
    let out = agent.stop().await;
    assert!(!out.contains("agent stopped:"), "{out}");
    assert_eq!(w.sandbox.library().len(), 4);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_every_window_the_agent_holds_the_queue_until_a_reload_opens_it() {
    let w = World::new(32 * KIB as u64, "").await;
    let drop = drop_folder(&w, "drop");
    let port = free_port();
    // A one-minute window every day, six hours from now (local time): closed now.
    let at = jiff::Zoned::now().checked_add(jiff::SignedDuration::from_hours(6)).unwrap();
    let to = at.checked_add(jiff::SignedDuration::from_mins(1)).unwrap();
    let window = format!("[[upload.window]]\nfrom = \"{}\"\nto = \"{}\"\n", at.strftime("%H:%M"), to.strftime("%H:%M"));
    let rest = format!("{}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n", watch_table(&drop));
    w.write_config("", &format!("{window}\n{rest}"));
    let journal = w.journal();
    let agent = Agent::start(&w);
    agent.wait_log("agent started", 1, Duration::from_secs(20)).await;
    let f = publish(&w, &drop, "for-tonight", &[("v.mov", 40 * KIB)]);
    wait_state(&journal, &f, GroupState::Queued, Duration::from_secs(20)).await;

    let scrape = || async {
        let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.unwrap().text().await.unwrap();
        parse_metrics(&text)
    };
    let m = scrape().await;
    assert_eq!(m.get(&("spatialgen_paused".into(), String::new())), Some(&1.0));
    assert_eq!(m.get(&("spatialgen_paused_info".into(), "reason=\"window\"".into())), Some(&1.0));
    let cfg = w.config_path.to_str().unwrap().to_string();
    let st = w.run(KEY, &["status", "--config", &cfg]).await;
    let first_line = st.stdout.lines().next().unwrap_or_default().to_string();
    assert!(first_line.starts_with("paused until "), "{}", st.stdout);
    assert!(first_line.contains(&at.strftime("%H:%M").to_string()), "{}", st.stdout);
    let json = w.run(KEY, &["status", "--config", &cfg, "--json"]).await;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(rows[0]["queuePosition"], 1);
    // Watched for a while (a negative): two engine polls (500 ms), nothing sent.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(w.sandbox.stats().api_total("start"), 0, "a group was started outside every window");
    assert_eq!(row(&journal, &f).unwrap().state, GroupState::Queued);

    // The window goes: the queue runs at once.
    w.write_config("", &rest);
    agent.signal(libc::SIGHUP);
    wait_state(&journal, &f, GroupState::Completed, Duration::from_secs(20)).await;
    let m = scrape().await;
    assert_eq!(m.get(&("spatialgen_paused".into(), String::new())), Some(&0.0));
    let st = w.run(KEY, &["status", "--config", &cfg]).await;
    let lines: Vec<&str> = st.stdout.lines().collect();
    assert_eq!(lines[0], "1 completed", "no window line, the counts first: {}", st.stdout);
    assert!(lines[1].trim_start().starts_with("ID"), "then the table: {}", st.stdout);
    agent.stop().await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_on_the_same_journal_exits_at_once_and_names_the_first() {
    let w = World::new(64 * KIB as u64, "").await;
    let drop = drop_folder(&w, "drop");
    w.write_config("", &watch_table(&drop));
    let first = Agent::start(&w);
    first.wait_log("agent started", 1, Duration::from_secs(20)).await;
    let started = Instant::now();
    let r = w.run(KEY, &["run", "--config", w.config_path.to_str().unwrap()]).await;
    assert_eq!(r.code, Some(2), "{r:?}");
    let pid = first.child.id().unwrap();
    assert!(r.stderr.contains(&format!("another agent (pid {pid}) already runs on the journal")), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(!r.stderr.contains("agent started"), "the second agent started something: {r:?}");
    first.stop().await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_shows_in_status_metrics_and_healthz() {
    let w = World::new(64 * KIB as u64, "").await;
    let drop = drop_folder(&w, "drop");
    let port = free_port();
    w.write_config("", &format!("{}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n", watch_table(&drop)));
    let agent = Agent::start_with_key(&w, "a-wrong-key-123");
    agent.wait_log("agent started", 1, Duration::from_secs(20)).await;
    publish(&w, &drop, "held", &[("v.mov", 2 * KIB)]);
    let cfg = w.config_path.to_str().unwrap().to_string();

    // `status --json` in another process sees the pause on the queued group.
    let start = Instant::now();
    let row = loop {
        let r = w.run(KEY, &["status", "--config", &cfg, "--json"]).await;
        assert_eq!(r.code, Some(0), "{r:?}");
        let rows: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        if let Some(row) = rows.as_array().unwrap().iter().find(|r| !r["paused"].is_null()) {
            break row.clone();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no pause shown; last: {}\n{}", r.stdout, agent.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(row["state"], "queued");
    assert_eq!(row["paused"]["reason"], "auth");
    assert!(row["paused"]["nextCheck"].is_string(), "{row}");
    let text = w.run(KEY, &["status", "--config", &cfg]).await;
    assert!(text.stdout.starts_with("paused: the API refused the key since "), "{text:?}");
    assert!(text.stdout.contains("next check"), "{text:?}");
    assert!(!text.stdout.contains("a-wrong-key-123"), "the key was printed: {text:?}");

    let base = format!("http://127.0.0.1:{port}");
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(health.status(), 503);
    assert!(health.text().await.unwrap().contains("the API refused the key"));
    let m = parse_metrics(&reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap());
    assert_eq!(m.get(&("spatialgen_key_refused".to_string(), String::new())).copied(), Some(1.0));
    agent.stop().await;
}
