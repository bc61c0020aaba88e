//! A fleet: several real agent processes sharing one PostgreSQL journal
//! and one drop folder (each node sees it under its own path), against the
//! sandbox. Every export is uploaded once; a node killed mid-upload is
//! taken over on the same server session; a database restarted mid-upload
//! loses nothing; work spreads over the nodes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use spatialgen_sync::config::DatabaseUrl;
use spatialgen_sync::journal::pg::{Mounts, PgJournal, PgOptions};
use spatialgen_sync::journal::prelude::*;
use spatialgen_sync::journal::{GroupState, GroupSummary};
use spatialgen_sync::sandbox::Faults;
use spatialgen_sync::sandbox::postgres::{PgServer, shared};

use crate::agent::Agent;
use crate::support::*;

const KIB: usize = 1024;

/// A fleet on database `url`: node `name` watches the world's exports
/// through its own path (a symlink to the same folder, as another mount
/// of one share would be).
struct Fleet<'a> {
    w: &'a World,
    url: String,
    lease: &'a str,
    upload: &'a str,
}

impl Fleet<'_> {
    fn mount(&self, name: &str) -> PathBuf {
        let m = self.w.dir.path().join(format!("mnt-{name}"));
        if !m.exists() {
            std::os::unix::fs::symlink(&self.w.exports, &m).unwrap();
        }
        m
    }

    fn config(&self, name: &str) -> PathBuf {
        let dir = self.w.dir.path().join(format!("node-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.toml");
        let text = format!(
            "[api]\nendpoint = \"{}\"\napi_key_env = \"E2E_SPATIALGEN_KEY\"\nrequest_timeout = \"10s\"\n\n\
             [journal]\nurl = \"{}\"\nnode = \"{name}\"\nlease = \"{}\"\n\n\
             [upload]\nretry_base = \"20ms\"\nretry_cap = \"500ms\"\nretry_attempts = 1000\nshutdown_grace = \"2s\"\n{}\n\n\
             [[watch]]\npath = \"{}\"\nname = \"exports\"\nsettle = \"300ms\"\n",
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
        Agent::start_config(self.w, &self.config(name), KEY)
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
    let w = World::new(64 * 1024, "").await;
    let fleet = Fleet { w: &w, url: shared().database(), lease: "5s", upload: "" };
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
    let out = w.run(KEY, &["status", "--json", "--config", ca.to_str().unwrap()]).await;
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    let nodes: Vec<_> = v.as_array().unwrap().iter().map(|r| r["node"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(nodes.len(), 8, "{out:?}");
    let of_b = nodes.iter().filter(|n| *n == "b").count();
    let out = w.run(KEY, &["status", "--json", "--node", "b", "--config", ca.to_str().unwrap()]).await;
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), of_b, "{out:?}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_mid_upload_is_taken_over_on_the_same_server_session() {
    let w = World::new(16 * 1024, "").await;
    w.sandbox.set_faults(Faults { latency: Duration::from_millis(40), ..Faults::default() });
    let fleet = Fleet { w: &w, url: shared().database(), lease: "3s", upload: "max_parts_in_flight = 2" };
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
    let w = World::new(16 * 1024, "").await;
    w.sandbox.set_faults(Faults { latency: Duration::from_millis(25), ..Faults::default() });
    let fleet = Fleet { w: &w, url, lease: "3s", upload: "max_parts_in_flight = 2" };
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
    let w = World::new(64 * 1024, "").await;
    w.sandbox.set_faults(Faults { latency: Duration::from_millis(20), ..Faults::default() });
    let fleet = Fleet { w: &w, url: shared().database(), lease: "5s", upload: "max_groups = 2" };
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
