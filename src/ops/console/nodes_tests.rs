//! `GET /api/v1/nodes` over real loopback HTTP: on a single machine's
//! SQLite journal (this agent, alone), and on a real PostgreSQL fleet
//! where one node's lease lapsed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::tests::{TOKEN, env, serve, settings};
use super::*;
use crate::config::DatabaseUrl;
use crate::group::UploadGroup;
use crate::journal::pg::{Mounts, PgJournal, PgOptions};
use crate::journal::prelude::*;
use crate::journal::{Enqueued, Fence, SessionFile, Store};
use crate::model::Strategy;
use crate::ops::metrics::{SnapshotError, StateSnapshot};

#[tokio::test]
async fn a_single_agent_lists_itself_as_the_one_node_with_its_uploads() {
    let e = env(Some(TOKEN)).await;
    let up = e.group("uploading");
    e.group("queued");
    e.journal.test_sql(&format!("UPDATE groups SET state = 'uploading' WHERE id = {up}")).unwrap();
    let before = crate::journal::now_ms();

    let (code, v) = e.get("/api/v1/nodes").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["fleet"], false);
    let nodes = v["nodes"].as_array().expect("a list");
    assert_eq!(nodes.len(), 1, "{v}");
    let n = &nodes[0];
    assert_eq!(
        (n["name"].clone(), n["held"].clone(), n["leaseMs"].clone(), n["silent"].clone()),
        (json!("render-07"), json!(1), json!(0), json!(false)),
        "{v}"
    );
    assert_eq!(n["version"], "test", "the agent's version");
    assert!(n["lastSeen"].as_i64().unwrap() >= before, "heard from now: {v}");
    let mut keys: Vec<&str> = n.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["held", "lastSeen", "leaseMs", "name", "silent", "version"]);
}

/// The agent's side for a fleet node's console: only the name matters here.
struct FleetStub(Arc<Config>);

impl Controls for FleetStub {
    fn agent(&self) -> AgentView {
        AgentView {
            windows: WindowsView { configured: false, open: true, message: "open".into(), until: None },
            bandwidth: BandwidthView { bytes_per_second: None, live: false },
            node: Some("a".into()),
            engine_running: true,
            version: "test",
        }
    }
    fn set_bandwidth(&self, _limit: Option<Rate>) {}
    fn engine_stopped(&self) -> Option<String> {
        None
    }
    fn config(&self) -> Arc<Config> {
        self.0.clone()
    }
}

fn fleet_node(url: &str, name: &str, lease: Duration) -> PgJournal {
    PgJournal::open(PgOptions {
        url: DatabaseUrl::new(url),
        password: None,
        node: name.into(),
        lease,
        mounts: Mounts::new(vec![("exports".into(), PathBuf::from("/mnt/exports"))]),
    })
    .expect("journal opens")
}

fn export(rel: &str) -> UploadGroup {
    UploadGroup::one_video_in(Path::new("/mnt/exports"), rel, 300)
}

/// `j` claims the next group and starts its upload.
fn claim_and_start(j: &PgJournal) -> crate::journal::GroupId {
    let claim = j.next_group(&[]).unwrap().expect("a group to claim");
    let files: Vec<SessionFile> = j
        .group(claim.id)
        .unwrap()
        .files
        .iter()
        .map(|f| SessionFile {
            file_id: f.id,
            upload_id: format!("up-{}", f.id),
            part_size: 100,
            total_parts: 3,
            strategy: Strategy::Multipart,
        })
        .collect();
    j.record_session(claim.id, Fence::Claim(claim.token), &format!("s-{}", claim.id), None, &files).unwrap();
    claim.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_lists_every_node_and_marks_the_one_silent_past_its_lease() {
    let url = crate::sandbox::postgres::shared().database();
    let (a, b) = tokio::task::spawn_blocking(move || {
        let a = fleet_node(&url, "a", Duration::from_secs(30));
        let b = fleet_node(&url, "b", Duration::from_millis(800));
        for rel in ["one", "two", "three"] {
            assert!(matches!(a.enqueue(&export(rel)).unwrap(), Enqueued::Queued(_)));
        }
        // Each engine says it is alive, and each starts one upload.
        a.renew_claims(&[]).unwrap();
        b.renew_claims(&[]).unwrap();
        claim_and_start(&b);
        claim_and_start(&a);
        (a, b)
    })
    .await
    .unwrap();
    let (a, b): (Arc<dyn Store>, Arc<dyn Store>) = (Arc::new(a), Arc::new(b));

    let cfg = Arc::new(Config::minimal("http://127.0.0.1:9", Path::new("/nonexistent/j.sqlite3")));
    let console = Console {
        journal: AsyncJournal::new(a.clone()),
        controls: Arc::new(FleetStub(cfg)),
        token: Arc::new(RwLock::new(None)),
        metrics: Arc::new(Metrics::new()),
        source: Arc::new(|| -> Result<StateSnapshot, SnapshotError> { Ok(StateSnapshot::default()) }),
    };
    let stop = CancellationToken::new();
    let (addr, served) = serve(console, Arc::new(Mutex::new(settings())), stop.clone()).await;
    let http = reqwest::Client::new();
    let get = || async {
        let r = http.get(format!("http://{addr}/api/v1/nodes")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()
    };
    let by_name = |v: &Value, name: &str| -> Value {
        v["nodes"].as_array().unwrap().iter().find(|n| n["name"] == name).cloned().unwrap_or(Value::Null)
    };

    let v = get().await;
    assert_eq!(v["fleet"], true, "{v}");
    assert_eq!(v["nodes"].as_array().map(Vec::len), Some(2), "{v}");
    let (na, nb) = (by_name(&v, "a"), by_name(&v, "b"));
    assert_eq!(
        (na["held"].clone(), na["silent"].clone(), na["leaseMs"].clone()),
        (json!(1), json!(false), json!(30000))
    );
    assert_eq!((nb["held"].clone(), nb["silent"].clone(), nb["leaseMs"].clone()), (json!(1), json!(false), json!(800)));
    assert_eq!(na["version"], env!("CARGO_PKG_VERSION"), "the version each node wrote");
    assert!(nb["lastSeen"].as_i64().unwrap() > 0);

    // Node b freezes: nothing renews its heartbeat or its claim. Past its
    // lease it is silent and holds nothing; a, renewing, is not.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    a.renew_claims(&[]).unwrap();
    let v = get().await;
    let (na, nb2) = (by_name(&v, "a"), by_name(&v, "b"));
    assert_eq!((na["silent"].clone(), na["held"].clone()), (json!(false), json!(1)), "{v}");
    assert_eq!((nb2["silent"].clone(), nb2["held"].clone()), (json!(true), json!(0)), "{v}");
    assert_eq!(nb2["lastSeen"], nb["lastSeen"], "last heard from before it froze");

    // A clean stop removes the node from the list.
    b.release_claims(&[]).unwrap();
    let v = get().await;
    assert_eq!(
        v["nodes"].as_array().map(|n| n.iter().map(|n| n["name"].clone()).collect::<Vec<_>>()),
        Some(vec![json!("a")])
    );

    stop.cancel();
    served.await.unwrap();
}
