//! The console's routes over real loopback HTTP against a real SQLite
//! journal in a temporary folder; the agent's side is a stand-in.

use crate::journal::Fence;
use std::path::PathBuf;
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::group::{GroupFile, UploadGroup};
use crate::journal::prelude::*;
use crate::journal::{Enqueued, GroupState, Journal, PauseReason, Store};
use crate::model::{FileRole, Layout, Perspective};
use crate::ops::metrics::{SnapshotError, StateSnapshot};

pub(super) const TOKEN: &str = "s3cret-console-token";

struct Stub {
    cfg: Arc<Config>,
    bandwidth: Mutex<Option<Rate>>,
    stopped: Mutex<Option<String>>,
}

impl Controls for Stub {
    fn agent(&self) -> AgentView {
        let limit = *self.bandwidth.lock().unwrap();
        AgentView {
            windows: WindowsView { configured: false, open: true, message: "open".into(), until: None },
            bandwidth: BandwidthView { bytes_per_second: limit.map(|r| r.0), live: limit.is_some() },
            node: Some("render-07".into()),
            engine_running: self.stopped.lock().unwrap().is_none(),
            version: "test",
        }
    }
    fn set_bandwidth(&self, limit: Option<Rate>) {
        *self.bandwidth.lock().unwrap() = limit;
    }
    fn engine_stopped(&self) -> Option<String> {
        self.stopped.lock().unwrap().clone()
    }
    fn config(&self) -> Arc<Config> {
        self.cfg.clone()
    }
}

pub(super) struct Env {
    _dir: tempfile::TempDir,
    pub(super) journal: Arc<Journal>,
    stub: Arc<Stub>,
    pub(super) base: String,
    pub(super) addr: std::net::SocketAddr,
    pub(super) http: reqwest::Client,
    pub(super) stop: CancellationToken,
    pub(super) watch: PathBuf,
    /// The listener's settings, changed by a test as a reload would.
    pub(super) settings: Arc<Mutex<listen::Settings>>,
    /// The listener's task: it ends when the stop is done.
    pub(super) served: tokio::task::JoinHandle<()>,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub(super) async fn env(token: Option<&str>) -> Env {
    env_with(token, |_| {}).await
}

/// Serve `console` on a loopback port with the real listener until `stop`.
pub(super) async fn serve(
    console: Console,
    settings: Arc<Mutex<listen::Settings>>,
    stop: CancellationToken,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let source: listen::SettingsSource = Arc::new(move || *settings.lock().unwrap());
    let task = tokio::spawn(listen::serve(listener, router(console), source, stop));
    (addr, task)
}

/// The agent's settings, but a short grace.
pub(super) fn settings() -> listen::Settings {
    listen::Settings {
        max_connections: 64,
        grace: Duration::from_secs(2),
        header_timeout: listen::HEADER_TIMEOUT,
        stall: listen::STALL,
    }
}

/// An agent whose config `edit` changed (e.g. its `[http]` section).
pub(super) async fn env_with(token: Option<&str>, edit: impl FnOnce(&mut Config)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let watch = dir.path().join("exports");
    std::fs::create_dir(&watch).unwrap();
    let mut cfg = Config::minimal("http://127.0.0.1:9", &dir.path().join("j.sqlite3"));
    cfg.watch.push(crate::config::WatchConfig::new(&watch));
    edit(&mut cfg);
    let journal = Arc::new(Journal::open(&cfg.journal.path).unwrap());
    let stub = Arc::new(Stub { cfg: Arc::new(cfg), bandwidth: Mutex::new(None), stopped: Mutex::new(None) });
    let store: Arc<dyn Store> = journal.clone();
    let j2 = store.clone();
    let source: Arc<dyn StateSource> = Arc::new(move || -> Result<StateSnapshot, SnapshotError> {
        let held = j2
            .pauses()?
            .iter()
            .filter(|p| p.reason.is_fault())
            .map(|p| (p.reason.label().to_string(), p.describe()))
            .collect();
        Ok(StateSnapshot { held, ..StateSnapshot::default() })
    });
    let console = Console {
        journal: AsyncJournal::new(store),
        controls: stub.clone(),
        token: Arc::new(RwLock::new(token.map(HttpToken::new))),
        metrics: Arc::new(Metrics::new()),
        source,
    };
    let stop = CancellationToken::new();
    let settings = Arc::new(Mutex::new(settings()));
    let (addr, served) = serve(console, settings.clone(), stop.clone()).await;
    Env {
        _dir: dir,
        journal,
        stub,
        base: format!("http://{addr}"),
        addr,
        http: reqwest::Client::new(),
        stop,
        watch,
        settings,
        served,
    }
}

impl Env {
    pub(super) fn group(&self, name: &str) -> GroupId {
        let root = self.watch.join(name);
        let g = UploadGroup {
            name: name.into(),
            key: root.clone(),
            root: root.clone(),
            watch_path: Some(self.watch.clone()),
            layout: Layout::TwoD,
            perspective: Some(Perspective::Regular),
            description: None,
            folder_name: None,
            priority: 0,
            files: vec![GroupFile {
                source: root.join("video.mov"),
                rel_path: "video.mov".into(),
                file_name: "video.mov".into(),
                role: FileRole::Video,
                language: None,
                size: 1000,
                mtime_ns: 1_700_000_000_000_000_000,
                dev: None,
                ino: None,
                staged: false,
                media: Some(crate::media::synth::Spec::stereo(2200, 2200, (30_000, 1000), 30).facts()),
            }],
            fingerprint: format!("fp-{name}"),
            violations: Vec::new(),
            media_check: crate::config::MediaCheck::Reject,
            unfinished: Vec::new(),
            warnings: Vec::new(),
        };
        match self.journal.enqueue(&g).unwrap() {
            Enqueued::Queued(id) => id,
            other => panic!("{other:?}"),
        }
    }

    pub(super) async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(format!("{}{path}", self.base)).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub(super) async fn write(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub(super) async fn post(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.write(reqwest::Method::POST, path, token, None).await
    }

    async fn health(&self) -> (u16, String) {
        let r = self.http.get(format!("{}/healthz", self.base)).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

#[tokio::test]
async fn status_lists_the_rows_status_json_prints_and_the_agent() {
    let e = env(Some(TOKEN)).await;
    let id = e.group("clip-a");
    let (code, v) = e.get("/api/v1/status").await;
    assert_eq!(code, 200, "{v}");
    let rows = crate::ops::status::json_rows(&e.journal.list().unwrap(), &e.journal.pauses().unwrap()).unwrap();
    assert_eq!(v["active"], Value::Array(rows), "the same rows as status --json");
    assert_eq!(v["active"][0]["id"], id);
    assert_eq!(v["active"][0]["state"], "queued");
    assert_eq!(v["counts"]["queued"], 1);
    assert_eq!(v["ended"], json!({"groups": [], "next": null}));
    assert_eq!(v["agent"]["node"], "render-07");
    assert_eq!(v["agent"]["pauses"], json!([]));
    assert_eq!(v["agent"]["windows"]["open"], true);
    assert_eq!(v["agent"]["bandwidth"]["bytesPerSecond"], Value::Null);

    let (code, g) = e.get(&format!("/api/v1/groups/{id}")).await;
    assert_eq!(code, 200, "{g}");
    assert_eq!(g["name"], "clip-a");
    let history = g["history"].as_array().expect("history");
    assert!(history.iter().any(|h| h["to"] == "queued" && h["at"].is_string()), "{g}");
    // `files` stays the row's count; each file, with its media facts, is in `fileDetails`.
    assert_eq!(g["files"], 1);
    let file = &g["fileDetails"][0];
    assert_eq!((file["path"].as_str(), file["role"].as_str()), (Some("video.mov"), Some("video")), "{g}");
    assert_eq!((file["media"]["views"].as_u64(), file["media"]["width"].as_u64()), (Some(2), Some(2200)), "{g}");
    let (code, err) = e.get("/api/v1/groups/999").await;
    assert_eq!(code, 404);
    assert!(err["error"].as_str().unwrap().contains("no group 999"), "{err}");
}

#[tokio::test]
async fn the_page_is_served_whole_with_nothing_from_elsewhere() {
    let e = env(None).await;
    let r = e.http.get(format!("{}/", e.base)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    let html = r.text().await.unwrap();
    assert!(html.contains("/api/v1/status") && html.contains("sessionStorage"), "the page polls the API");
    assert!(!html.contains("<script src") && !html.contains("<link"), "no outside assets");
    assert!(!html.contains("https://"), "no CDN");
    let m = e.http.get(format!("{}/metrics", e.base)).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("spatialgen_groups{state=\"queued\"}"), "/metrics on the same listener: {m}");
}

#[tokio::test]
async fn writes_without_the_right_token_get_401_and_change_nothing() {
    let e = env(Some(TOKEN)).await;
    let id = e.group("clip-b");
    e.journal.fail_group(id, "boom", None, Fence::Unclaimed).unwrap();
    for token in [None, Some("wrong"), Some("s3cret-console-toke"), Some("s3cret-console-token-")] {
        for path in [
            "/api/v1/pause".to_string(),
            "/api/v1/resume".to_string(),
            format!("/api/v1/groups/{id}/retry"),
            format!("/api/v1/groups/{id}/cancel"),
        ] {
            let (code, v) = e.post(&path, token).await;
            assert_eq!(code, 401, "{path} with {token:?}: {v}");
            assert!(!v.to_string().contains(TOKEN), "the token is never echoed: {v}");
        }
        let (code, _) =
            e.write(reqwest::Method::PUT, "/api/v1/bandwidth", token, Some(json!({"limit": "1MiB/s"}))).await;
        assert_eq!(code, 401);
    }
    // A malformed header is no token either.
    let r = e.http.post(format!("{}/api/v1/pause", e.base)).header("Authorization", TOKEN).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
    assert!(e.journal.pauses().unwrap().is_empty(), "not paused");
    assert_eq!(e.journal.group(id).unwrap().state, GroupState::Failed, "not retried, not canceled");
    assert_eq!(*e.stub.bandwidth.lock().unwrap(), None, "bandwidth untouched");
}

#[tokio::test]
async fn without_a_token_file_the_api_is_read_only() {
    let e = env(None).await;
    let (code, v) = e.post("/api/v1/pause", Some("anything")).await;
    assert_eq!(code, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("[http] token_file"), "{v}");
    assert!(e.journal.pauses().unwrap().is_empty());
    assert_eq!(e.get("/api/v1/status").await.0, 200, "reads still work");
}

#[tokio::test]
async fn pause_and_resume_are_recorded_in_the_journal_and_shown() {
    let e = env(Some(TOKEN)).await;
    let id = e.group("clip-c");
    let (code, v) = e.post("/api/v1/pause", Some(TOKEN)).await;
    assert_eq!((code, v["changed"].clone()), (200, json!(true)), "{v}");
    let p = e.journal.pause(&PauseReason::Operator).unwrap().expect("recorded");
    assert_eq!(p.detail.as_deref(), Some("from the console"));
    assert_eq!(e.post("/api/v1/pause", Some(TOKEN)).await.1["changed"], false, "already paused");
    let (_, s) = e.get("/api/v1/status").await;
    assert_eq!(s["agent"]["pauses"][0]["reason"], "operator", "{s}");
    assert!(s["agent"]["pauses"][0]["message"].as_str().unwrap().starts_with("paused by operator"), "{s}");
    assert_eq!(s["active"][0]["paused"]["reason"], "operator", "the queued group says what holds it: {s}");
    let (code, text) = e.health().await;
    assert_eq!((code, text.as_str()), (200, "ok\n"), "an operator's pause is not unhealthy");
    let (code, v) = e.post("/api/v1/resume", Some(TOKEN)).await;
    assert_eq!((code, v["paused"].clone()), (200, json!(false)));
    assert!(e.journal.pauses().unwrap().is_empty());
    assert_eq!(e.get(&format!("/api/v1/groups/{id}")).await.1["paused"], Value::Null);
}

#[tokio::test]
async fn retry_and_cancel_do_what_the_commands_do() {
    let e = env(Some(TOKEN)).await;
    let failed = e.group("clip-d");
    e.journal.fail_group(failed, "storage said 500 five times", None, Fence::Unclaimed).unwrap();
    let (code, v) = e.post(&format!("/api/v1/groups/{failed}/retry"), Some(TOKEN)).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["id"], failed, "a failed group is re-queued on its own row");
    assert_eq!(e.journal.group(failed).unwrap().state, GroupState::Queued);
    let (code, v) = e.post(&format!("/api/v1/groups/{failed}/retry"), Some(TOKEN)).await;
    assert_eq!(code, 409, "a queued group has nothing to retry: {v}");

    // No engine runs on this journal: the cancel is carried out here, as the CLI does.
    let (code, v) = e.post(&format!("/api/v1/groups/{failed}/cancel"), Some(TOKEN)).await;
    assert_eq!((code, v["result"].clone()), (200, json!("canceled")), "{v}");
    assert_eq!(e.journal.group(failed).unwrap().state, GroupState::Canceled);
    let (code, v) = e.post(&format!("/api/v1/groups/{failed}/cancel"), Some(TOKEN)).await;
    assert_eq!((code, v["result"].clone()), (200, json!("canceled")), "already canceled: {v}");
    let (code, _) = e.post("/api/v1/groups/4242/cancel", Some(TOKEN)).await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn bandwidth_is_set_and_lifted_live() {
    let e = env(Some(TOKEN)).await;
    let put = |body: Value| e.write(reqwest::Method::PUT, "/api/v1/bandwidth", Some(TOKEN), Some(body));
    let (code, v) = put(json!({"limit": "2MiB/s"})).await;
    assert_eq!((code, v["bytesPerSecond"].clone()), (200, json!(2 * 1024 * 1024)), "{v}");
    assert_eq!(*e.stub.bandwidth.lock().unwrap(), Some(Rate(2 * 1024 * 1024)));
    assert_eq!(e.get("/api/v1/status").await.1["agent"]["bandwidth"]["bytesPerSecond"], 2 * 1024 * 1024);
    for bad in [json!({"limit": "fast"}), json!({"limit": 5}), json!({}), json!("2MiB/s")] {
        let (code, v) = put(bad.clone()).await;
        assert_eq!(code, 400, "{bad}: {v}");
    }
    assert_eq!(*e.stub.bandwidth.lock().unwrap(), Some(Rate(2 * 1024 * 1024)), "a bad request changes nothing");
    let (code, v) = put(json!({"limit": null})).await;
    assert_eq!((code, v["bytesPerSecond"].clone()), (200, Value::Null));
    assert_eq!(*e.stub.bandwidth.lock().unwrap(), None);
}

#[tokio::test]
async fn healthz_names_every_fault_and_is_ok_otherwise() {
    let e = env(None).await;
    assert_eq!(e.health().await, (200, "ok\n".to_string()));

    e.journal.set_pause(&PauseReason::Auth, Some("401 invalid key"), None).unwrap();
    let (code, text) = e.health().await;
    assert_eq!(code, 503);
    assert!(text.contains("the API refused the key"), "{text}");
    e.journal.clear_pause(&PauseReason::Auth).unwrap();

    std::fs::remove_dir(&e.watch).unwrap();
    let (code, text) = e.health().await;
    assert_eq!(code, 503);
    assert!(text.contains(&format!("watch folder {} is missing", e.watch.display())), "{text}");
    std::fs::create_dir(&e.watch).unwrap();

    *e.stub.stopped.lock().unwrap() = Some("upload engine stopped: journal: disk I/O error".into());
    let (code, text) = e.health().await;
    assert_eq!(code, 503);
    assert!(text.starts_with("engine stopped: "), "{text}");
    *e.stub.stopped.lock().unwrap() = None;
    assert_eq!(e.health().await.0, 200);
}

#[tokio::test]
async fn healthz_says_when_the_journal_is_unreachable() {
    let e = env(None).await;
    // The same journal file, made unreadable under the running server: the snapshot query fails.
    let failing: Arc<dyn StateSource> =
        Arc::new(|| -> Result<StateSnapshot, SnapshotError> { Err("database disk image is malformed".into()) });
    let console = Console {
        journal: AsyncJournal::new(e.journal.clone()),
        controls: e.stub.clone(),
        token: Arc::new(RwLock::new(None)),
        metrics: Arc::new(Metrics::new()),
        source: failing,
    };
    let (addr, _) = serve(console, e.settings.clone(), e.stop.clone()).await;
    let r = e.http.get(format!("http://{addr}/healthz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let text = r.text().await.unwrap();
    assert!(text.starts_with("journal unreachable: database disk image is malformed"), "{text}");
}

#[tokio::test]
async fn a_pending_after_upload_retry_is_in_the_status_rows_and_the_group_detail() {
    let e = env(Some(TOKEN)).await;
    let id = e.group("clip-a");
    e.journal.test_sql(&format!("UPDATE groups SET state = 'completed', library_id = 9 WHERE id = {id}")).unwrap();
    let reason = "move to /mnt/done: /mnt/done/clip-a/video.mov: No space left on device (os error 28)";
    e.journal.after_upload_failed(id, reason, Some(1_900_000_000_000)).unwrap();

    let (code, v) = e.get("/api/v1/status").await;
    assert_eq!(code, 200, "{v}");
    let row = &v["attention"][0];
    assert_eq!(row["state"], "completed", "a pending retry needs attention: {v}");
    assert_eq!(v["ended"]["groups"][0], *row, "and it is in the history");
    assert_eq!(
        row["afterUpload"],
        json!({"failures": 1, "attempts": 6, "error": reason, "nextAttempt": "2030-03-17T17:46:40Z"})
    );
    assert_eq!(
        row["error"],
        format!("after-upload step failed (attempt 1 of 6): {reason}; next try 2030-03-17T17:46:40Z")
    );

    let (code, g) = e.get(&format!("/api/v1/groups/{id}")).await;
    assert_eq!(code, 200, "{g}");
    assert_eq!(g["afterUpload"], row["afterUpload"]);
    let history = g["history"].as_array().expect("history");
    assert!(history.iter().any(|h| h["detail"].as_str().is_some_and(|d| d.contains("No space left"))), "{g}");

    // The page words it and builds the line as text, not markup.
    let page = include_str!("page.html");
    assert!(page.contains("after-upload step failed (attempt ${a.failures} of ${a.attempts})"));
    assert!(page.contains("line.textContent = afterText(g)"));
}
