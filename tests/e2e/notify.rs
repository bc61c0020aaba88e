//! Notifications survive kill -9: the real binary completes a group, is
//! killed before its hook finished and while its webhook receiver is down,
//! and on restart the hook runs again and the webhook is delivered, signed.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::Mac;
use spatialgen_sync::journal::GroupState;
use spatialgen_sync::journal::prelude::*;

use crate::support::*;

const KIB: usize = 1024;
const SECRET: &str = "e2e-webhook-secret-7f3a";

fn agent(w: &World) -> tokio::process::Child {
    tokio::process::Command::from(w.command(KEY))
        .args(["run", "--config", w.config_path.to_str().unwrap()])
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the agent starts")
}

/// What the webhook receiver saw: each body, and whether its signature checked out.
#[derive(Default)]
struct Seen {
    bodies: Vec<(serde_json::Value, bool)>,
}

/// A receiver on `port` that checks `X-SpatialGen-Sync-Signature` against
/// the HMAC-SHA256 of the raw body, computed here.
async fn receiver(port: u16) -> Arc<Mutex<Seen>> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/notify",
        axum::routing::post(move |headers: axum::http::HeaderMap, raw: axum::body::Bytes| {
            let s = s.clone();
            async move {
                let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
                mac.update(&raw);
                let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
                let got = headers.get("x-spatialgen-sync-signature").and_then(|v| v.to_str().ok());
                let body: serde_json::Value = serde_json::from_slice(&raw).unwrap_or_default();
                s.lock().unwrap().bodies.push((body, got == Some(want.as_str())));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("the receiver's port is free");
    tokio::spawn(async move { axum::serve(listener, app).await });
    seen
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p).unwrap_or_default().lines().map(str::to_string).collect()
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_before_the_hook_and_webhook_ran_then_a_restart_delivers_both() {
    use std::os::unix::fs::PermissionsExt;

    let w = World::new(32 * KIB as u64, "").await;
    let drop = w.dir.path().join("drop");
    std::fs::create_dir_all(&drop).unwrap();
    let (runs, hold) = (w.dir.path().join("hook-runs"), w.dir.path().join("hold"));
    let hook = w.dir.path().join("hook.sh");
    // Records each run, then blocks while `hold` exists (the first run is killed with the agent).
    std::fs::write(
        &hook,
        "#!/bin/sh\necho \"$SPATIALGEN_GROUP_ID $SPATIALGEN_EVENT_ID\" >> \"$1\"\nwhile [ -e \"$2\" ]; do sleep 0.05; done\n",
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(&hold, "").unwrap();
    let secret = w.dir.path().join("webhook-secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Nothing listens there yet: the webhook cannot be delivered before the kill.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let hooks = format!(
        "[[watch]]\npath = \"{}\"\nsettle = \"300ms\"\n\n[hooks]\non_complete = [\"{}\", \"{}\", \"{}\"]\n\
         timeout = \"60s\"\nwebhook = \"http://127.0.0.1:{port}/notify\"\nwebhook_secret_file = \"{}\"\n",
        drop.display(),
        hook.display(),
        runs.display(),
        hold.display(),
        secret.display()
    );
    w.write_config("", &hooks);
    let journal = w.journal();

    let mut first = agent(&w);
    let made = w.export("Shot 040", &[("v.mov", 70 * KIB)]);
    let folder = drop.join("Shot 040");
    std::fs::rename(&made, &folder).unwrap();
    let done = || journal.list().unwrap().into_iter().find(|r| r.state == GroupState::Completed);
    wait_for(Duration::from_secs(30), "the group to complete", || done().is_some()).await;
    let id = done().unwrap().id;
    wait_for(Duration::from_secs(20), "the hook to start", || lines(&runs).len() == 1).await;
    // The history line that recorded the completion: what each cursor must pass.
    let ended_at = journal.ended_after(0, 100).unwrap().into_iter().find(|e| e.group_id == id).unwrap().event_id;
    let hook_cursor = journal.cursor("hook:on_complete").unwrap().expect("the hook has a cursor");
    assert!(hook_cursor < ended_at, "the hook has not finished: its cursor is before the end");

    first.start_kill().unwrap();
    first.wait().await.unwrap();
    // The orphaned first run of the hook may end now; the agent never learnt it did.
    std::fs::remove_file(&hold).unwrap();
    assert!(journal.cursor("webhook").unwrap().expect("cursor") < ended_at, "nothing was delivered");

    let seen = receiver(port).await;
    let mut second = agent(&w);
    let delivered = || seen.lock().unwrap().bodies.iter().any(|(b, _)| b["groupId"] == id);
    wait_for(Duration::from_secs(30), "the webhook after the restart", delivered).await;
    wait_for(Duration::from_secs(20), "the hook to run again", || lines(&runs).len() == 2).await;
    wait_for(Duration::from_secs(20), "both cursors to pass the end", || {
        let c = |n| journal.cursor(n).unwrap().unwrap_or(0);
        c("hook:on_complete") >= ended_at && c("webhook") >= ended_at
    })
    .await;
    second.start_kill().unwrap();
    second.wait().await.unwrap();

    let runs = lines(&runs);
    assert_eq!(runs.len(), 2, "at most twice: {runs:?}");
    assert!(runs.iter().all(|l| l.starts_with(&format!("{id} "))), "{runs:?}");
    assert_eq!(runs[0], runs[1], "the same group and event both times: the receiver can de-duplicate");
    let bodies = &seen.lock().unwrap().bodies;
    assert_eq!(bodies.len(), 1, "delivered once: {bodies:?}", bodies = bodies.iter().map(|b| &b.0).collect::<Vec<_>>());
    let (body, signed) = &bodies[0];
    assert!(signed, "the signature checks out: {body}");
    assert_eq!((body["event"].as_str(), body["groupId"].as_i64()), (Some("group.completed"), Some(id)));
    assert_eq!(body["eventId"].as_i64(), Some(ended_at), "{body}");
    assert_eq!(runs[0], format!("{id} {ended_at}"));
}
