//! The console page over a year of history: a journal of 10,000 ended
//! groups (`Journal::synthesize_history`), the real agent serving it,
//! headless Chromium reading it through a loopback proxy that counts the
//! bytes the agent sends. After the page has loaded, one update (an event
//! on the stream, or a poll when the stream is given up) must come in well
//! under 64 KiB; the search box finds one export among the 10,000;
//! scrolling to the end of the history loads the next older page.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fantoccini::{Client, Locator};
use serde_json::Value;
use spatialgen_sync::journal::Journal;
use spatialgen_sync::journal::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::agent::{Agent, drop_folder, free_port, watch_table};
use crate::console::{browser, driver, page_until, text_of};
use crate::support::*;

const GROUPS: u64 = 10_000;
/// The most one update may carry.
const UPDATE_LIMIT: u64 = 64 * 1024;

/// A TCP proxy on a free loopback port in front of `upstream`, counting
/// every byte the upstream sends back. Stops when dropped.
struct CountingProxy {
    port: u16,
    down: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn counting_proxy(upstream: u16) -> CountingProxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let down = Arc::new(AtomicU64::new(0));
    let counted = down.clone();
    let task = tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else { return };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let up = async {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                    let _ = server_write.shutdown().await;
                };
                let back = async {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match server_read.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        // Counted before the browser can see them.
                        counted.fetch_add(n as u64, Ordering::SeqCst);
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = client_write.shutdown().await;
                };
                tokio::join!(up, back);
            });
        }
    });
    CountingProxy { port, down, task }
}

async fn count(c: &Client, css: &str) -> usize {
    c.find_all(Locator::Css(css)).await.map(|v| v.len()).unwrap_or(0)
}

async fn displayed(c: &Client, css: &str) -> bool {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.is_displayed().await.unwrap_or(false),
        Err(_) => false,
    }
}

/// The page's cursor: the newest journal line it has taken in.
async fn cursor(c: &Client) -> String {
    let v = c.execute("return document.body.dataset.cursor || ''", vec![]).await.unwrap();
    v.as_str().unwrap_or_default().to_string()
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_ten_thousand_groups_an_update_stays_small_the_search_finds_one_and_scrolling_loads_older() {
    let d = driver().await;
    let w = World::new(64 * 1024, "").await;
    let drop = drop_folder(&w, "drop");
    let port = free_port();
    w.write_config("", &format!("{}\n[http]\nlisten = \"127.0.0.1:{port}\"\n", watch_table(&drop)));
    Journal::open(&w.journal_path).unwrap().synthesize_history(GROUPS).unwrap();
    let agent = Agent::start(&w);
    agent.wait_log("console on http://", 1, Duration::from_secs(20)).await;
    let proxy = counting_proxy(port).await;

    let profile = tempfile::tempdir().unwrap();
    let c = browser(&d, profile.path()).await;
    c.set_window_size(1280, 900).await.unwrap();
    c.goto(&format!("http://127.0.0.1:{}/", proxy.port)).await.unwrap();

    // The first page of the history, the counts of all of it.
    page_until(Duration::from_secs(20), "the first page of the history", || {
        let c = c.clone();
        async move { count(&c, "#done .group").await == 50 }
    })
    .await;
    let counts = text_of(&c, "#counts").await.unwrap_or_default();
    // One in a thousand failed, one in a thousand rejected: those wait in "Needs attention".
    assert!(counts.contains("9,980 completed") && counts.contains("10 failed"), "{counts}");
    assert_eq!(count(&c, "#attention .group").await, 20);
    let newest = text_of(&c, "#done .group .name").await.unwrap_or_default();
    assert!(newest.starts_with("shot-"), "{newest}");
    assert!(!displayed(&c, "#nodes-section").await, "a single agent shows no nodes section");
    let loaded = proxy.down.load(Ordering::SeqCst);
    eprintln!("the page and its first answers: {loaded} bytes");

    // One change in the journal: one update, and a small one.
    let stream_up = page_until(Duration::from_secs(10), "a cursor", || {
        let c = c.clone();
        async move { !cursor(&c).await.is_empty() }
    });
    stream_up.await;
    // Let the stream's first event (sent at once) arrive before counting.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = cursor(&c).await;
    let start = proxy.down.load(Ordering::SeqCst);
    let id: i64 = c
        .find(Locator::Css("#done .group"))
        .await
        .unwrap()
        .attr("data-group-id")
        .await
        .unwrap()
        .and_then(|v| v.parse().ok())
        .expect("a card's group id");
    let journal = Journal::open(&w.journal_path).unwrap();
    journal.note(id, "receipt written").unwrap();
    page_until(Duration::from_secs(10), "the update after the change", || {
        let c = c.clone();
        let before = before.clone();
        async move { cursor(&c).await != before }
    })
    .await;
    let update = proxy.down.load(Ordering::SeqCst) - start;
    eprintln!("one update after the page loaded: {update} bytes");
    assert!(update > 0 && update < UPDATE_LIMIT, "one update carried {update} bytes");
    // The full status was asked for once, at load; the updates came as events.
    let fetched: Value = c
        .execute(
            "return performance.getEntriesByType('resource').map((e) => e.name).filter((n) => n.includes('/api/v1/'))",
            vec![],
        )
        .await
        .unwrap();
    let names: Vec<&str> = fetched.as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    let full = names.iter().filter(|n| n.ends_with("/api/v1/status")).count();
    assert_eq!(full, 1, "the full status once, at load: {names:?}");

    // The stream given up (three errors in a row, as when something between
    // cannot hold it open): the page asks `?since=` every 2 s instead, an
    // unchanged answer is a bodiless 304, and a changed one is small too.
    let given_up = c
        .execute("for (let i = 0; i < 3; i++) stream.dispatchEvent(new Event('error')); return stream === null", vec![])
        .await
        .unwrap();
    assert_eq!(given_up, Value::Bool(true), "the page gives the stream up");
    let polls = |c: Client| async move {
        let v = c
            .execute(
                "return performance.getEntriesByType('resource')
                   .filter((e) => e.name.includes('/api/v1/status?since='))
                   .map((e) => e.responseStatus || 0)",
                vec![],
            )
            .await
            .unwrap();
        v.as_array().unwrap().iter().filter_map(|s| s.as_u64()).collect::<Vec<u64>>()
    };
    page_until(Duration::from_secs(15), "an unchanged poll answered 304", || {
        let c = c.clone();
        async move { polls(c).await.contains(&304) }
    })
    .await;
    let before = cursor(&c).await;
    let start = proxy.down.load(Ordering::SeqCst);
    journal.note(id, "after-upload step done").unwrap();
    page_until(Duration::from_secs(10), "the poll after the change", || {
        let c = c.clone();
        let before = before.clone();
        async move { cursor(&c).await != before }
    })
    .await;
    let update = proxy.down.load(Ordering::SeqCst) - start;
    eprintln!("one poll after the change: {update} bytes");
    assert!(update > 0 && update < UPDATE_LIMIT, "the poll carried {update} bytes");

    // Scrolling to the end of the history loads the next older page.
    c.execute("document.getElementById('done-sentinel').scrollIntoView()", vec![]).await.unwrap();
    page_until(Duration::from_secs(20), "an older page on scroll", || {
        let c = c.clone();
        async move { count(&c, "#done .group").await >= 100 }
    })
    .await;
    let ids: Value = c
        .execute("return [...document.querySelectorAll('#done .group')].map((e) => Number(e.dataset.groupId))", vec![])
        .await
        .unwrap();
    let ids: Vec<i64> = ids.as_array().unwrap().iter().filter_map(|v| v.as_i64()).collect();
    assert!(ids.windows(2).all(|p| p[0] > p[1]), "newest first, no repeats: {ids:?}");
    assert!(ids.len() < GROUPS as usize / 10, "one page at a time, not the whole history: {}", ids.len());

    // The search finds one export among the 10,000, then gives the normal view back.
    let wanted = "shot-004321";
    c.find(Locator::Css("#search")).await.unwrap().send_keys(wanted).await.unwrap();
    page_until(Duration::from_secs(10), "the search's one match", || {
        let c = c.clone();
        async move {
            count(&c, "#results .group").await == 1
                && text_of(&c, "#results .group .name").await.as_deref() == Some(wanted)
        }
    })
    .await;
    assert!(!displayed(&c, "#normal").await, "the normal view gives way to the results");
    c.execute(
        "const s = document.getElementById('search'); s.value = ''; s.dispatchEvent(new Event('input'));",
        vec![],
    )
    .await
    .unwrap();
    page_until(Duration::from_secs(10), "the normal view again", || {
        let c = c.clone();
        async move { displayed(&c, "#normal").await && !displayed(&c, "#results-section").await }
    })
    .await;
    c.close().await.unwrap();
    agent.stop().await;
}
