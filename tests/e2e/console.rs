//! The console page in a real browser: headless Chromium, driven over
//! WebDriver (chromedriver), loads the page a running agent (the real
//! binary) serves while it uploads to the sandbox; the page shows a group's
//! progress, and a click on Retry (with the token typed into the page)
//! re-queues a failed group. Screenshots at laptop and phone widths are
//! written to `$CARGO_TARGET_TMPDIR/console-*.png` (the README's are copies).
//!
//! Chromium and chromedriver are required (Debian's `chromium` and
//! `chromium-driver`; `.ci/run` installs them): without them this test
//! fails, it does not skip.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use spatialgen_sync::journal::{GroupState, Journal};
use spatialgen_sync::sandbox::Faults;

use crate::agent::{Agent, free_port, publish, row, wait_state, watch_table};
use crate::support::*;
use spatialgen_sync::journal::prelude::*;

const KIB: usize = 1024;
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const TOKEN: &str = "page-test-token-5c1e";

/// chromedriver on a free loopback port, killed when dropped.
pub(crate) struct Driver {
    child: std::process::Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn driver() -> Driver {
    for p in [CHROMEDRIVER, CHROMIUM] {
        assert!(
            Path::new(p).exists(),
            "{p} is missing: the console's browser test needs Debian's chromium and chromium-driver \
             (apt-get install chromium chromium-driver)"
        );
    }
    let port = free_port();
    let child = std::process::Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let d = Driver { child, url: format!("http://127.0.0.1:{port}") };
    let status = format!("{}/status", d.url);
    let http = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..200 {
        if let Ok(r) = http.get(&status).send().await
            && r.status().is_success()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "chromedriver did not answer on {status}");
    d
}

pub(crate) async fn browser(d: &Driver, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector).capabilities(caps).connect(&d.url).await.expect("a WebDriver session starts")
}

/// Poll the page (through `f`) until it says yes, within `limit`.
pub(crate) async fn page_until<F, Fut>(limit: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for the page to show {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn text_of(c: &Client, css: &str) -> Option<String> {
    c.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, png).unwrap();
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_progress_and_retry_requeues_a_failed_group() {
    use std::os::unix::fs::PermissionsExt;
    let d = driver().await;
    let w = World::new(16 * KIB as u64, "max_groups = 1\nbandwidth = \"384KiB/s\"").await;
    let drop = w.dir.path().join("drop");
    std::fs::create_dir_all(&drop).unwrap();
    let token_file = w.dir.path().join("http-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = free_port();
    w.write_config(
        "max_groups = 1\nbandwidth = \"384KiB/s\"",
        &format!(
            "{}\n[http]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\n",
            watch_table(&drop),
            token_file.display()
        ),
    );
    let agent = Agent::start(&w);
    agent.wait_log("console on http://", 1, Duration::from_secs(20)).await;
    let journal = Journal::open(&w.journal_path).unwrap();

    // One group completes; one fails (the sandbox plans sizes that do not fit).
    let done = publish(&w, &drop, "Opening-Titles", &[("titles.mov", 48 * KIB)]);
    wait_state(&journal, &done, GroupState::Completed, Duration::from_secs(30)).await;
    w.sandbox.set_faults(Faults { absurd_plan: true, ..Faults::default() });
    let failed = publish(&w, &drop, "Harbour-Flyover", &[("flyover.mov", 64 * KIB)]);
    let failed_id = wait_state(&journal, &failed, GroupState::Failed, Duration::from_secs(30)).await.id;
    w.sandbox.set_faults(Faults::default());
    // One uploads for a while (about 8 s at the limit).
    let big = publish(&w, &drop, "Canyon-Sunrise_180", &[("canyon.mov", 3 * 1024 * KIB)]);
    let big_id = wait_state(&journal, &big, GroupState::Uploading, Duration::from_secs(30)).await.id;

    let profile = tempfile::tempdir().unwrap();
    let c = browser(&d, profile.path()).await;
    c.set_window_size(1280, 900).await.unwrap();
    let page = format!("http://127.0.0.1:{port}/");
    c.goto(&page).await.unwrap();

    // The uploading group's progress, moving, with a rate.
    let card = format!("#queue .group[data-group-id=\"{big_id}\"]");
    let pct = |c: Client, card: String| async move {
        text_of(&c, &format!("{card} .pct")).await.and_then(|t| t.trim_end_matches('%').parse::<u32>().ok())
    };
    let start = std::time::Instant::now();
    let mut first = None;
    loop {
        match (first, pct(c.clone(), card.clone()).await) {
            (None, Some(p)) => first = Some(p),
            (Some(a), Some(b)) if b > a => break,
            _ => {}
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the page did not show the upload moving ({first:?})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let nums = text_of(&c, &format!("{card} .nums")).await.unwrap_or_default();
    assert!(nums.contains("/s") && nums.contains("MiB"), "rate and sizes shown: {nums:?}");
    let bar = c.find(Locator::Css(&format!("{card} .bar > span"))).await.unwrap();
    assert!(bar.attr("style").await.unwrap().unwrap_or_default().contains("width"), "a progress bar");
    // Under the page's CSP (script and style by hash, nothing inline in
    // markup): the style block applies and the bar's width is set.
    let csp = reqwest::get(&page).await.unwrap().headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'sha256-") && !csp.contains("unsafe-inline"), "{csp}");
    let styled = c
        .execute(
            "const b = document.querySelector(arguments[0]); const s = getComputedStyle(b); \
             return [getComputedStyle(b.parentElement).height, s.width];",
            vec![serde_json::json!(format!("{card} .bar > span"))],
        )
        .await
        .unwrap();
    assert_eq!(styled[0], "8px", "the page's style block applies: {styled}");
    assert_ne!(styled[1], "0px", "the bar has a width: {styled}");
    // The failed group, its error and a Retry button; the completed one.
    let failed_card = format!("#attention .group[data-group-id=\"{failed_id}\"]");
    let err = text_of(&c, &format!("{failed_card} .error")).await.expect("the failed group's error");
    assert!(err.contains("flyover.mov"), "{err}");
    assert!(text_of(&c, "#done").await.unwrap_or_default().contains("Opening-Titles"));
    shot(&c, "console-laptop.png").await;

    // A group's history, on click.
    c.find(Locator::Css(&format!("{failed_card} .name"))).await.unwrap().click().await.unwrap();
    c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css("#history li")).await.unwrap();
    let history = text_of(&c, "#history").await.unwrap_or_default();
    assert!(history.contains("queued") && history.contains("failed"), "{history}");
    // Its file, with what the container said (the media check).
    let files = text_of(&c, "#files").await.unwrap_or_default();
    assert!(files.contains("flyover.mov") && files.contains("2 views (MV-HEVC)"), "{files}");
    c.find(Locator::Css("#detail-close")).await.unwrap().click().await.unwrap();

    c.set_window_size(390, 844).await.unwrap();
    page_until(Duration::from_secs(10), "the phone layout", || {
        let c = c.clone();
        async move { c.execute("return window.innerWidth", vec![]).await.ok() == Some(Value::from(390)) }
    })
    .await;
    shot(&c, "console-phone.png").await;

    // Retry: the page asks for the token once, then sends it.
    c.find(Locator::Css(&format!("{failed_card} button.retry"))).await.unwrap().click().await.unwrap();
    let input = c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css("#token-form.open #token")).await;
    input.unwrap().send_keys(TOKEN).await.unwrap();
    c.find(Locator::Css("#token-save")).await.unwrap().click().await.unwrap();
    wait_for(Duration::from_secs(10), "the failed group to be re-queued", || {
        journal.group(failed_id).is_ok_and(|g| g.state != GroupState::Failed)
    })
    .await;
    let after = journal.group(failed_id).unwrap().state;
    assert!(matches!(after, GroupState::Queued | GroupState::Uploading | GroupState::Completed), "{after}");
    let msg = text_of(&c, "#message").await.unwrap_or_default();
    assert!(msg.contains("re-queued"), "the page says what happened: {msg:?}");
    let token_kept: Value = c.execute("return sessionStorage.getItem('sgs-token')", vec![]).await.unwrap();
    assert_eq!(token_kept, Value::from(TOKEN), "kept for the tab");

    // Both end in the library; the page shows them completed.
    wait_state(&journal, &big, GroupState::Completed, Duration::from_secs(60)).await;
    wait_for(Duration::from_secs(60), "the retried group to complete", || {
        row(&journal, &failed).is_some_and(|r| r.state == GroupState::Completed)
    })
    .await;
    page_until(Duration::from_secs(10), "both completed", || {
        let c = c.clone();
        async move {
            let t = text_of(&c, "#done").await.unwrap_or_default();
            t.contains("Harbour-Flyover") && t.contains("Canyon-Sunrise_180")
        }
    })
    .await;
    c.close().await.unwrap();
    agent.stop().await;
}

/// The real agent's API: the token check, a live bandwidth that the
/// uploads obey and that a reload replaces, and a pause from the API that
/// holds the queue without making the agent unhealthy.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_api_pauses_and_sets_the_bandwidth_live_until_a_reload() {
    use std::os::unix::fs::PermissionsExt;
    const MIB: u64 = 1024 * 1024;
    let w = World::new(64 * KIB as u64, "max_groups = 1").await;
    let drop = w.dir.path().join("drop");
    std::fs::create_dir_all(&drop).unwrap();
    let token_file = w.dir.path().join("http-token");
    std::fs::write(&token_file, TOKEN).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = free_port();
    let tables = format!(
        "{}\n[http]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\n",
        watch_table(&drop),
        token_file.display()
    );
    w.write_config("max_groups = 1", &tables);
    let agent = Agent::start(&w);
    agent.wait_log("console on http://", 1, Duration::from_secs(20)).await;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let status = || async {
        let v: Value = http.get(format!("{base}/api/v1/status")).send().await.unwrap().json().await.unwrap();
        v
    };
    let health = || async {
        let r = http.get(format!("{base}/healthz")).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    let put_limit = |token: Option<&'static str>, limit: Value| {
        let mut req = http.put(format!("{base}/api/v1/bandwidth")).json(&json!({ "limit": limit }));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(health().await, (200, "ok\n".to_string()));

    // Refused without the token, and nothing changed.
    assert_eq!(put_limit(None, json!("1MiB/s")).await, 401);
    assert_eq!(put_limit(Some("guess"), json!("1MiB/s")).await, 401);
    assert_eq!(status().await["agent"]["bandwidth"]["bytesPerSecond"], Value::Null);

    // Live: the next upload goes at 1 MiB/s.
    assert_eq!(put_limit(Some(TOKEN), json!("1MiB/s")).await, 200);
    let s = status().await;
    assert_eq!(s["agent"]["bandwidth"], json!({"bytesPerSecond": MIB, "live": true}), "{s}");
    let m = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(m.contains(&format!("spatialgen_bandwidth_limit_bytes_per_second {MIB}\n")), "{m}");
    let slow = publish(&w, &drop, "slow", &[("v.mov", 1536 * KIB)]);
    let journal = Journal::open(&w.journal_path).unwrap();
    wait_for(Duration::from_secs(30), "the slow group to start", || {
        row(&journal, &slow).is_some_and(|r| r.state != GroupState::Waiting)
    })
    .await;
    let started = std::time::Instant::now();
    wait_state(&journal, &slow, GroupState::Completed, Duration::from_secs(30)).await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1000), "1.5 MiB at 1 MiB/s took only {took:?}");

    // Paused from the API: healthy, shown, and the next export waits.
    let r = http.post(format!("{base}/api/v1/pause")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(health().await, (200, "ok\n".to_string()), "an operator's pause is not unhealthy");
    let s = status().await;
    assert_eq!(s["agent"]["pauses"][0]["reason"], "operator", "{s}");
    let held = publish(&w, &drop, "held", &[("v.mov", 32 * KIB)]);
    wait_state(&journal, &held, GroupState::Queued, Duration::from_secs(30)).await;
    // A negative, watched over several engine polls (500 ms each).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(row(&journal, &held).unwrap().state, GroupState::Queued, "nothing starts while paused");
    let r = http.post(format!("{base}/api/v1/resume")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    wait_state(&journal, &held, GroupState::Completed, Duration::from_secs(30)).await;

    // A reload that changes the config's bandwidth replaces the live one.
    w.write_config("max_groups = 1\nbandwidth = \"4MiB/s\"", &tables);
    agent.signal(libc::SIGHUP);
    let start = std::time::Instant::now();
    loop {
        let s = status().await;
        if s["agent"]["bandwidth"] == json!({"bytesPerSecond": 4 * MIB, "live": false}) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the reload did not replace the live limit: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent.stop().await;
}
