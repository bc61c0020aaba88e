//! A fleet: several real agent processes sharing one PostgreSQL journal
//! and one drop folder (each node sees it under its own path), against the
//! sandbox. Every export is uploaded once; a node killed mid-upload is
//! taken over on the same server session; a database restarted mid-upload
//! loses nothing; work spreads over the nodes. A node frozen past its
//! lease (its process or its database backends stopped) wakes up harmless:
//! the node that took over completes and moves the export once, and the
//! woken node sends nothing more for it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spatialgen_sync::config::DatabaseUrl;
use spatialgen_sync::journal::pg::{Mounts, PgJournal, PgOptions};
use spatialgen_sync::journal::prelude::*;
use spatialgen_sync::journal::{GroupState, GroupSummary};
use spatialgen_sync::sandbox::postgres::{PgServer, shared};
use spatialgen_sync::sandbox::{Call, Faults, SessionStatus};

use crate::agent::Agent;
use crate::support::*;

const KIB: usize = 1024;

/// The API key of fleet node `name`: each node has its own, so that the
/// sandbox's call log tells the nodes apart.
fn node_key(name: &str) -> String {
    format!("{KEY}-{name}")
}

/// A world whose sandbox accepts the keys of fleet nodes `nodes`.
async fn fleet_world(part_size: u64, nodes: &[&str]) -> World {
    World::with_sandbox(part_size, "", |o| o.extra_keys = nodes.iter().map(|n| node_key(n)).collect()).await
}

/// A fleet on database `url`: node `name` watches the world's exports
/// through its own path (a symlink to the same folder, as another mount
/// of one share would be), with its own key ([`node_key`]).
struct Fleet<'a> {
    w: &'a World,
    url: String,
    lease: &'a str,
    upload: &'a str,
    /// Each node moves a completed export into its own folder
    /// ([`Fleet::moved`]), so where an export went tells who moved it.
    moves: bool,
}

impl Fleet<'_> {
    fn mount(&self, name: &str) -> PathBuf {
        let m = self.w.dir.path().join(format!("mnt-{name}"));
        if !m.exists() {
            std::os::unix::fs::symlink(&self.w.exports, &m).unwrap();
        }
        m
    }

    /// Where node `name` moves completed exports (with `moves`).
    fn moved(&self, name: &str) -> PathBuf {
        let m = self.w.dir.path().join(format!("moved-{name}"));
        std::fs::create_dir_all(&m).unwrap();
        m
    }

    fn config(&self, name: &str) -> PathBuf {
        let dir = self.w.dir.path().join(format!("node-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.toml");
        let after = if self.moves {
            format!("after_upload = \"move\"\nmove_to = \"{}\"\n", self.moved(name).display())
        } else {
            String::new()
        };
        let text = format!(
            "[api]\nendpoint = \"{}\"\napi_key_env = \"E2E_SPATIALGEN_KEY\"\nrequest_timeout = \"10s\"\n\n\
             [journal]\nurl = \"{}\"\nnode = \"{name}\"\nlease = \"{}\"\n\n\
             [upload]\nretry_base = \"20ms\"\nretry_cap = \"500ms\"\nretry_attempts = 1000\nshutdown_grace = \"2s\"\n{}\n\n\
             [[watch]]\npath = \"{}\"\nname = \"exports\"\nsettle = \"300ms\"\n{after}",
            self.w.sandbox.base_url(),
            self.url,
            self.lease,
            self.upload,
            self.mount(name).display(),
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    fn start(&self, name: &str) -> Agent {
        Agent::start_config(self.w, &self.config(name), &node_key(name))
    }

    /// The journal as a node with no watch folders reads it (paths as stored).
    fn journal(&self) -> PgJournal {
        PgJournal::open(PgOptions {
            url: DatabaseUrl::new(&self.url),
            password: None,
            node: "observer".into(),
            lease: Duration::from_secs(30),
            mounts: Mounts::default(),
        })
        .expect("the fleet's journal opens")
    }
}

/// The rows, or none while the database is out of reach.
fn rows(j: &PgJournal) -> Vec<GroupSummary> {
    j.list().unwrap_or_default()
}

fn completed(j: &PgJournal) -> usize {
    rows(j).iter().filter(|r| r.state == GroupState::Completed).count()
}

/// Every export once: one server group and one library entry per export.
fn assert_once(w: &World, exports: usize) {
    let sessions = w.sandbox.sessions();
    let mut names: Vec<_> = sessions.iter().map(|s| s.video_name.clone()).collect();
    names.sort();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "a server group made twice for one export: {names:?}");
    assert_eq!(sessions.len(), exports, "{names:?}");
    assert_eq!(w.sandbox.library().len(), exports);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_seeing_one_folder_under_two_paths_upload_every_export_once() {
    let w = fleet_world(64 * 1024, &["a", "b"]).await;
    let fleet = Fleet { w: &w, url: shared().database(), lease: "5s", upload: "", moves: false };
    let (a, b) = (fleet.start("a"), fleet.start("b"));
    for i in 0..8 {
        w.export(&format!("shot-{i}"), &[("v.mov", 150 * KIB + i * 1000), ("v.en.srt", 500)]);
    }
    let j = fleet.journal();
    wait_for_then(Duration::from_secs(90), || completed(&j) == 8, || format!("8 completed: {:#?}", rows(&j))).await;
    assert_once(&w, 8);
    let all = rows(&j);
    assert_eq!(all.len(), 8, "one group per export: {all:#?}");
    assert!(all.iter().all(|r| matches!(r.node.as_deref(), Some("a" | "b"))), "{all:#?}");
    // Every group's path reads the same from either node's mount: the
    // identity is the watch name and the path inside it.
    assert!(all.iter().all(|r| r.path.starts_with("@exports/shot-")), "{all:#?}");
    // `status` from one node, as JSON with `node`, and filtered by node.
    let ca = fleet.config("a");
    let out = w.run(&node_key("a"), &["status", "--json", "--config", ca.to_str().unwrap()]).await;
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    let nodes: Vec<_> = v.as_array().unwrap().iter().map(|r| r["node"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(nodes.len(), 8, "{out:?}");
    let of_b = nodes.iter().filter(|n| *n == "b").count();
    let out = w.run(&node_key("a"), &["status", "--json", "--node", "b", "--config", ca.to_str().unwrap()]).await;
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), of_b, "{out:?}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_mid_upload_is_taken_over_on_the_same_server_session() {
    let w = fleet_world(16 * 1024, &["a", "b"]).await;
    w.sandbox.set_faults(Faults { latency: Duration::from_millis(40), ..Faults::default() });
    let fleet = Fleet { w: &w, url: shared().database(), lease: "3s", upload: "max_parts_in_flight = 2", moves: false };
    let mut a = fleet.start("a");
    let folder = w.export("long", &[("v.mov", 1200 * KIB), ("v.en.srt", 700)]);
    let j = fleet.journal();
    wait_for_then(
        Duration::from_secs(60),
        || rows(&j).first().is_some_and(|r| r.parts_done >= 5),
        || format!("a's progress: {:#?}\n{}", rows(&j), a.log()),
    )
    .await;
    let b = fleet.start("b");
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.kill_9().await;
    let at_kill = rows(&j)[0].clone();
    assert_eq!((at_kill.state, at_kill.node.as_deref()), (GroupState::Uploading, Some("a")), "{at_kill:#?}");
    wait_for_then(
        Duration::from_secs(90),
        || completed(&j) == 1,
        || format!("b finishes: {:#?}\n{}", rows(&j), b.log()),
    )
    .await;
    let done = rows(&j)[0].clone();
    assert_eq!(done.node.as_deref(), Some("b"));
    assert_eq!(done.session_id, at_kill.session_id, "the same server session, resumed");
    assert_once(&w, 1);
    assert_library_matches(&w.sandbox, done.session_id.as_deref().unwrap(), &folder);
    let history = j.events(done.id).unwrap();
    assert!(
        history.iter().any(|e| e.detail.as_deref().is_some_and(|d| d.contains("node a went silent past its lease"))),
        "{history:#?}"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarted_mid_upload_every_group_completes_once() {
    let server = PgServer::start().expect("a private PostgreSQL");
    let url = server.create_database("fleet").unwrap();
    let w = fleet_world(16 * 1024, &["a", "b"]).await;
    w.sandbox.set_faults(Faults { latency: Duration::from_millis(25), ..Faults::default() });
    let fleet = Fleet { w: &w, url, lease: "3s", upload: "max_parts_in_flight = 2", moves: false };
    let (a, b) = (fleet.start("a"), fleet.start("b"));
    for i in 0..4 {
        w.export(&format!("take-{i}"), &[("v.mov", 500 * KIB + i * 333), ("v.en.srt", 400)]);
    }
    let j = fleet.journal();
    wait_for_then(
        Duration::from_secs(60),
        || rows(&j).iter().map(|r| r.parts_done).sum::<u32>() >= 8,
        || format!("progress before the restart: {:#?}", rows(&j)),
    )
    .await;
    server.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.run().expect("PostgreSQL starts again");
    wait_for_then(
        Duration::from_secs(120),
        || completed(&j) == 4,
        || format!("all complete after the restart: {:#?}\n--- a:\n{}\n--- b:\n{}", rows(&j), a.log(), b.log()),
    )
    .await;
    assert_once(&w, 4);
    let (la, lb) = (a.stop().await, b.stop().await);
    assert!(
        la.contains("JOURNAL DATABASE IS UNREACHABLE") || lb.contains("JOURNAL DATABASE IS UNREACHABLE"),
        "the loss was seen and said:\n{la}\n{lb}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_nodes_and_two_hundred_small_exports_no_duplicate_and_the_work_spreads() {
    let w = fleet_world(64 * 1024, &["a", "b", "c", "d"]).await;
    w.sandbox.set_faults(Faults { latency: Duration::from_millis(20), ..Faults::default() });
    let fleet = Fleet { w: &w, url: shared().database(), lease: "5s", upload: "max_groups = 2", moves: false };
    let nodes: Vec<(&str, Agent)> = ["a", "b", "c", "d"].iter().map(|n| (*n, fleet.start(n))).collect();
    for i in 0..200 {
        w.export(&format!("e{i:03}"), &[("v.mov", 2 * KIB + i)]);
    }
    let j = fleet.journal();
    wait_for_then(
        Duration::from_secs(240),
        || completed(&j) == 200,
        || format!("200 completed; {} are: {:?}", completed(&j), rows(&j).iter().map(|r| r.state).collect::<Vec<_>>()),
    )
    .await;
    assert_once(&w, 200);
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for r in rows(&j) {
        *per_node.entry(r.node.unwrap_or_default()).or_default() += 1;
    }
    eprintln!("groups completed per node: {per_node:?}");
    assert_eq!(per_node.len(), 4, "every node took part: {per_node:?}");
    assert!(per_node.values().all(|n| *n >= 10), "the work spreads: {per_node:?}");
    for (_, n) in nodes {
        n.stop().await;
    }
}

// ------------------------------------------------------------------ fencing
//
// A node frozen past its lease (SIGSTOP: a VM paused for a snapshot, a GC
// or swap storm, a laptop lid) or whose database stalls, then woken up: the
// node that took over completes the export once and moves it once; the
// woken node stays alive and sends nothing more for that group.

/// The lease of the fencing scenarios.
const LEASE: Duration = Duration::from_secs(4);

/// Processes stopped with SIGSTOP (a node, or a node's PostgreSQL backends
/// with a thread that keeps stopping its new ones). Everything stopped is
/// continued by [`Frozen::thaw`], or when the guard is dropped: a failing
/// test leaves nothing stopped behind.
#[derive(Default)]
struct Frozen {
    pids: Arc<Mutex<BTreeSet<i32>>>,
    /// The thread stopping new backends, and its "go on" flag.
    watcher: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
    /// How many backends the watcher stopped in all.
    backends: Arc<AtomicUsize>,
}

/// SIGSTOP `pid` unless it is in `pids` already; true if it was stopped now.
fn sigstop(pids: &Mutex<BTreeSet<i32>>, pid: i32) -> bool {
    let mut pids = pids.lock().unwrap();
    if pids.contains(&pid) {
        return false;
    }
    // SAFETY: a signal to a process this test started (or to one of its
    // own database's backends); a pid that is gone answers ESRCH.
    if unsafe { libc::kill(pid, libc::SIGSTOP) } != 0 {
        return false;
    }
    pids.insert(pid);
    true
}

impl Frozen {
    /// SIGSTOP `pid` (until thawed).
    fn stop(&self, pid: i32) {
        assert!(sigstop(&self.pids, pid), "SIGSTOP {pid}: {}", std::io::Error::last_os_error());
    }

    /// SIGSTOP every PostgreSQL backend of node `node` on the database at
    /// `url` (found by its `application_name`), and go on stopping each new
    /// one within about 100 ms until thawed. Returns once the first round
    /// is done; panics if no backend of the node was found then.
    fn backends_of(&mut self, url: &str, node: &str) {
        assert!(self.watcher.is_none(), "one watcher at a time");
        let (tx, rx) = std::sync::mpsc::channel::<Result<usize, String>>();
        let go_on = Arc::new(AtomicBool::new(true));
        let (pids, count, flag) = (self.pids.clone(), self.backends.clone(), go_on.clone());
        let (url, app) = (url.to_string(), format!("spatialgen-sync {node}"));
        // The synchronous client runs a runtime of its own: not on a tokio worker.
        let handle = std::thread::spawn(move || {
            let mut db = match postgres::Client::connect(&url, postgres::NoTls) {
                Ok(db) => db,
                Err(e) => {
                    let _ = tx.send(Err(format!("connect: {e}")));
                    return;
                }
            };
            let mut first = true;
            while flag.load(Ordering::SeqCst) {
                let sql =
                    "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()";
                match db.query(sql, &[&app]) {
                    Ok(found) => {
                        for row in found {
                            if sigstop(&pids, row.get::<_, i32>(0)) {
                                count.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                    Err(e) if first => {
                        let _ = tx.send(Err(format!("pg_stat_activity: {e}")));
                        return;
                    }
                    Err(e) => eprintln!("pg_stat_activity: {e}"),
                }
                if first {
                    let _ = tx.send(Ok(count.load(Ordering::SeqCst)));
                    first = false;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        self.watcher = Some((go_on, handle));
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(n)) => assert!(n > 0, "no PostgreSQL backend of node {node} to stop"),
            Ok(Err(e)) => panic!("stopping node {node}'s backends: {e}"),
            Err(e) => panic!("stopping node {node}'s backends: no first round: {e}"),
        }
    }

    /// Stop the watcher, SIGCONT everything stopped; returns when.
    fn thaw(&mut self) -> Instant {
        if let Some((go_on, handle)) = self.watcher.take() {
            go_on.store(false, Ordering::SeqCst);
            let _ = handle.join();
        }
        for pid in std::mem::take(&mut *self.pids.lock().unwrap()) {
            // SAFETY: as in `sigstop`.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
        Instant::now()
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.thaw();
    }
}

/// The journal's rows and both nodes' output, for a failure message.
fn report(j: &PgJournal, a: &Agent, b: &Agent) -> String {
    format!("rows: {:#?}\n--- a:\n{}\n--- b:\n{}", rows(j), a.log(), b.log())
}

/// The one group's row, if there is one.
fn the_row(j: &PgJournal) -> Option<GroupSummary> {
    rows(j).into_iter().next()
}

/// API calls and PUTs for `session` made with node `name`'s key that the
/// sandbox received after `after`.
fn calls_after(w: &World, name: &str, session: &str, after: Instant) -> Vec<Call> {
    let key = node_key(name);
    w.sandbox
        .calls()
        .into_iter()
        .filter(|c| c.caller == key && c.session.as_deref() == Some(session) && c.at > after)
        .collect()
}

/// Does `text` name both nodes (as words)?
fn names_both(text: &str, a: &str, b: &str) -> bool {
    let words: Vec<&str> = text.split(|c: char| !c.is_alphanumeric()).collect();
    words.contains(&a) && words.contains(&b)
}

/// Two nodes on one PostgreSQL with a 4 s lease, each moving completed
/// exports into its own folder: node a is started, the export `name`
/// appears and a claims it, then b is started (and not waited for).
async fn a_holding<'w>(w: &'w World, name: &str, files: &[(&str, usize)]) -> (Fleet<'w>, PgJournal, Agent, Agent) {
    let fleet = Fleet { w, url: shared().database(), lease: "4s", upload: "max_parts_in_flight = 2", moves: true };
    let a = fleet.start("a");
    a.wait_log("agent started", 1, Duration::from_secs(20)).await;
    w.export(name, files);
    let j = fleet.journal();
    wait_for_then(
        Duration::from_secs(30),
        || the_row(&j).is_some_and(|r| r.node.as_deref() == Some("a") && r.state == GroupState::Uploading),
        || format!("a claims {name}: {:#?}\n--- a:\n{}", rows(&j), a.log()),
    )
    .await;
    let b = fleet.start("b");
    (fleet, j, a, b)
}

/// What every scenario ends with, once a was thawed at `thawed`: b completes
/// the export `name` once, on the server session a started, and moves it
/// once (into b's folder); a is alive, received nothing for the group after
/// it woke, said it lost its claim (and the group's history names both
/// nodes), and `status` reads the same with either node's config. Then both
/// agents stop cleanly. `a_says`: more lines a's output must hold.
async fn assert_fenced(
    fleet: &Fleet<'_>,
    j: &PgJournal,
    mut a: Agent,
    b: Agent,
    name: &str,
    thawed: Instant,
    a_says: &[&str],
) {
    let w = fleet.w;
    wait_for_then(
        Duration::from_secs(40),
        || the_row(j).is_some_and(|r| r.state == GroupState::Completed),
        || format!("the group completes: {}", report(j, &a, &b)),
    )
    .await;
    let done = the_row(j).unwrap();
    let moved = fleet.moved("b").join(name);
    wait_for_then(
        Duration::from_secs(20),
        || moved.exists() && !w.exports.join(name).exists(),
        || {
            let a_moved: Vec<_> = std::fs::read_dir(fleet.moved("a")).unwrap().map(|e| e.unwrap().path()).collect();
            format!("b moves {name} into {} (a's folder holds {a_moved:?}): {}", moved.display(), report(j, &a, &b))
        },
    )
    .await;
    // Give a woken node time to do what it would do (its renewals run every
    // third of the lease), then look.
    let quiet = thawed + LEASE + Duration::from_secs(1);
    tokio::time::sleep(quiet.saturating_duration_since(Instant::now()).max(Duration::from_secs(1))).await;
    let session = done.session_id.clone().expect("a server session");

    assert_eq!((done.state, done.node.as_deref()), (GroupState::Completed, Some("b")), "{}", report(j, &a, &b));
    assert!(a.running(), "node a is alive after it woke: {}", report(j, &a, &b));
    let late = calls_after(w, "a", &session, thawed + Duration::from_millis(200));
    assert!(late.is_empty(), "node a sent calls for the group after it woke: {late:#?}\n{}", report(j, &a, &b));
    assert_once(w, 1);
    assert_eq!(w.sandbox.sessions()[0].id, session, "the session a started, resumed by b");
    assert_library_matches(&w.sandbox, &session, &moved);

    // The after-upload step ran once, by b.
    let stray: Vec<_> = std::fs::read_dir(fleet.moved("a")).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(stray.is_empty(), "node a moved something: {stray:?}");
    let history = j.events(done.id).unwrap();
    let moves: Vec<_> =
        history.iter().filter_map(|e| e.detail.as_deref()).filter(|d| d.starts_with("export moved to")).collect();
    assert_eq!(moves.len(), 1, "one move, in the history: {history:#?}");
    assert!(moves[0].contains(&*fleet.moved("b").to_string_lossy()), "moved by b: {history:#?}");

    // a said it lost the claim; the history names both nodes (besides the takeover).
    let a_log = a.log();
    let lower = a_log.to_lowercase();
    assert!(lower.contains("fenced") || lower.contains("lost its claim"), "a says it lost its claim:\n{a_log}");
    for text in a_says {
        assert!(a_log.contains(text), "{text:?} in a's output:\n{a_log}");
    }
    assert!(
        history
            .iter()
            .filter_map(|e| e.detail.as_deref())
            .any(|d| { !d.contains("went silent past its lease") && names_both(d, "a", "b") }),
        "a history line about the refused claim names both nodes: {history:#?}"
    );

    // `status` reads the same from either node.
    let mut seen = Vec::new();
    for node in ["a", "b"] {
        let config = fleet.config(node);
        let out = w.run(&node_key(node), &["status", "--json", "--config", config.to_str().unwrap()]).await;
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
        let list = v.as_array().unwrap_or_else(|| panic!("a list: {out:?}"));
        assert_eq!(list.len(), 1, "one group, from node {node}: {out:?}");
        seen.push((list[0]["state"].clone(), list[0]["node"].clone()));
    }
    assert_eq!(seen[0], seen[1], "status from a and from b");
    assert_eq!(seen[0], (serde_json::json!("completed"), serde_json::json!("b")));
    let (la, lb) = (a.stop().await, b.stop().await);
    for (node, log) in [("a", &la), ("b", &lb)] {
        assert!(!log.contains("upload engine stopped"), "node {node}'s engine ended:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_frozen_with_parts_in_flight_wakes_up_harmless() {
    let w = fleet_world(16 * 1024, &["a", "b"]).await;
    w.sandbox.set_faults(Faults { latency: Duration::from_millis(100), ..Faults::default() });
    let (fleet, j, a, b) = a_holding(&w, "long", &[("v.mov", 2000 * KIB)]).await;
    let in_flight = || w.sandbox.sessions().iter().any(|s| s.files.iter().any(|f| !f.parts_in_flight.is_empty()));
    wait_for_then(
        Duration::from_secs(30),
        || the_row(&j).is_some_and(|r| r.parts_done >= 5) && in_flight(),
        || format!("a uploads: {}", report(&j, &a, &b)),
    )
    .await;
    let mut frozen = Frozen::default();
    frozen.stop(a.pid());
    // b takes the group over past a's lease and gets on with it; a wakes
    // up while b uploads.
    wait_for_then(
        Duration::from_secs(30),
        || the_row(&j).is_some_and(|r| r.node.as_deref() == Some("b")),
        || format!("b takes over: {}", report(&j, &a, &b)),
    )
    .await;
    let taken = the_row(&j).unwrap().parts_done;
    wait_for_then(
        Duration::from_secs(30),
        || the_row(&j).is_some_and(|r| r.parts_done >= taken + 4),
        || format!("b uploads: {}", report(&j, &a, &b)),
    )
    .await;
    let thawed = frozen.thaw();
    assert_eq!(the_row(&j).unwrap().state, GroupState::Uploading, "a woke while b was uploading");
    assert_fenced(&fleet, &j, a, b, "long", thawed, &[]).await;
}

/// a is frozen once the sandbox received its `complete`, which the sandbox
/// then does and answers while a is stopped; b takes over and completes
/// the same file; a wakes before b has its answer, or after b completed.
async fn a_node_frozen_with_its_complete_in_flight(thaw_after_b_completes: bool) {
    let w = fleet_world(16 * 1024, &["a", "b"]).await;
    let slow_complete = Duration::from_millis(1500);
    w.sandbox.set_faults(Faults {
        latency: Duration::from_millis(30),
        complete_latency: slow_complete,
        ..Faults::default()
    });
    let (fleet, j, a, b) = a_holding(&w, "answered", &[("v.mov", 1000 * KIB)]).await;
    let complete_from = |node: &str| {
        let key = node_key(node);
        w.sandbox.calls().iter().any(|c| c.caller == key && c.endpoint == "complete")
    };
    wait_for_then(Duration::from_secs(30), || complete_from("a"), || format!("a's complete: {}", report(&j, &a, &b)))
        .await;
    let mut frozen = Frozen::default();
    frozen.stop(a.pid());
    let server_state = || w.sandbox.sessions()[0].status;
    assert_eq!(server_state(), SessionStatus::Pending, "a was stopped before its complete was done");
    // The sandbox does it and answers while a is stopped.
    wait_for(slow_complete * 3, "the server completes a's complete", || server_state() == SessionStatus::Completed)
        .await;
    wait_for_then(
        Duration::from_secs(30),
        || the_row(&j).is_some_and(|r| r.node.as_deref() == Some("b")),
        || format!("b takes over: {}", report(&j, &a, &b)),
    )
    .await;
    if thaw_after_b_completes {
        wait_for_then(
            Duration::from_secs(30),
            || the_row(&j).is_some_and(|r| r.state == GroupState::Completed),
            || format!("b completes: {}", report(&j, &a, &b)),
        )
        .await;
    } else {
        wait_for_then(
            Duration::from_secs(30),
            || complete_from("b"),
            || format!("b's complete: {}", report(&j, &a, &b)),
        )
        .await;
    }
    let thawed = frozen.thaw();
    if !thaw_after_b_completes {
        assert_ne!(the_row(&j).unwrap().state, GroupState::Completed, "a woke before b had its answer");
    }
    assert_fenced(&fleet, &j, a, b, "answered", thawed, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_frozen_with_its_complete_answered_wakes_up_before_the_new_holder_completes() {
    a_node_frozen_with_its_complete_in_flight(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_frozen_with_its_complete_answered_wakes_up_after_the_new_holder_completed() {
    a_node_frozen_with_its_complete_in_flight(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_whose_database_backends_freeze_stops_and_wakes_up_harmless() {
    let w = fleet_world(16 * 1024, &["a", "b"]).await;
    w.sandbox.set_faults(Faults { latency: Duration::from_millis(100), ..Faults::default() });
    let (fleet, j, a, b) = a_holding(&w, "stalled", &[("v.mov", 2000 * KIB)]).await;
    wait_for_then(
        Duration::from_secs(30),
        || the_row(&j).is_some_and(|r| r.parts_done >= 5),
        || format!("a uploads: {}", report(&j, &a, &b)),
    )
    .await;
    let mut frozen = Frozen::default();
    frozen.backends_of(&fleet.url, "a");
    let since = Instant::now();
    // Longer than the lease, and until b holds the group.
    wait_for_then(
        Duration::from_secs(30),
        || {
            since.elapsed() >= LEASE + Duration::from_secs(2)
                && the_row(&j).is_some_and(|r| r.node.as_deref() == Some("b"))
        },
        || format!("b takes over while a's database is stalled: {}", report(&j, &a, &b)),
    )
    .await;
    let stopped = frozen.backends.load(Ordering::SeqCst);
    let thawed = frozen.thaw();
    eprintln!("{stopped} backends of node a were stopped");
    assert_fenced(&fleet, &j, a, b, "stalled", thawed, &["THE JOURNAL DATABASE IS UNREACHABLE"]).await;
}
