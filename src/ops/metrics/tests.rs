use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use super::*;

type Labels = BTreeMap<String, String>;

/// A strict reader of the text format: every line is a HELP, a TYPE (gauge or
/// counter, declared before its samples) or a sample `name{labels} value`.
fn parse(text: &str) -> BTreeMap<(String, Labels), f64> {
    let mut typed = HashSet::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            assert!(rest.split_once(' ').is_some_and(|(n, h)| !n.is_empty() && !h.is_empty()), "bad HELP: {line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(matches!(kind, "gauge" | "counter"), "bad TYPE: {line}");
            assert!(typed.insert(name.to_string()), "TYPE twice: {line}");
            continue;
        }
        assert!(!line.starts_with('#') && !line.is_empty(), "unexpected line: {line:?}");
        let name_end = line.find(['{', ' ']).expect("name ends");
        let name = &line[..name_end];
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "bad name in {line}");
        assert!(typed.contains(name), "sample before its TYPE: {line}");
        let mut labels = Labels::new();
        let mut rest = &line[name_end..];
        if let Some(mut l) = rest.strip_prefix('{') {
            loop {
                if let Some(after) = l.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let (key, after) = l.split_once("=\"").expect("label key");
                let mut value = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next().expect("label value ends") {
                        (_, '\\') => match chars.next().expect("escape") {
                            (_, 'n') => value.push('\n'),
                            (_, c) => value.push(c),
                        },
                        (i, '"') => break i,
                        (_, c) => value.push(c),
                    }
                };
                labels.insert(key.trim_start_matches(',').to_string(), value);
                l = after[end + 1..].trim_start_matches(',');
            }
        }
        let value: f64 = rest.strip_prefix(' ').expect("space before value").parse().expect("numeric value");
        assert!(samples.insert((name.to_string(), labels), value).is_none(), "duplicate series: {line}");
    }
    samples
}

fn get(samples: &BTreeMap<(String, Labels), f64>, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let labels: Labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    samples.get(&(name.to_string(), labels)).copied()
}

async fn start(
    metrics: Arc<Metrics>,
    source: Arc<dyn StateSource>,
) -> (String, CancellationToken, tokio::task::JoinHandle<Result<(), MetricsError>>) {
    let listener = bind("127.0.0.1:0".parse().expect("addr")).await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve_on(listener, metrics, source, shutdown.clone()));
    (base, shutdown, task)
}

#[tokio::test]
async fn scrape_reports_counters_journal_state_and_pause() {
    let metrics = Arc::new(Metrics::new());
    metrics.bytes_uploaded(1000);
    metrics.bytes_uploaded(500);
    metrics.part_retried("timeout");
    metrics.part_retried("timeout");
    metrics.part_retried("url_expired");
    metrics.part_retried("odd \"reason\"\\\nline");
    metrics.group_completed("2026-03-30T19:02:14.5Z".parse().expect("ts"));
    metrics.group_completed("2026-03-30T18:00:00Z".parse().expect("ts")); // older: last success stays
    metrics.set_paused(true, "window");
    metrics.set_bandwidth_limit(Some(Rate(200 * 1024 * 1024)));
    let source: Arc<dyn StateSource> = Arc::new(|| -> Result<StateSnapshot, SnapshotError> {
        Ok(StateSnapshot {
            groups_by_state: vec![("queued".into(), 3), ("uploading".into(), 1), ("completed".into(), 7)],
            queue_length: 3,
            held: Vec::new(),
        })
    });
    let (base, shutdown, task) = start(metrics.clone(), source).await;

    let resp = reqwest::get(format!("{base}/metrics")).await.expect("scrape");
    assert_eq!(resp.status(), 200);
    let ctype = resp.headers()[reqwest::header::CONTENT_TYPE].to_str().expect("ascii").to_string();
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let s = parse(&resp.text().await.expect("body"));

    assert_eq!(get(&s, "spatialgen_groups", &[("state", "queued")]), Some(3.0));
    assert_eq!(get(&s, "spatialgen_groups", &[("state", "uploading")]), Some(1.0));
    assert_eq!(get(&s, "spatialgen_groups", &[("state", "completed")]), Some(7.0));
    for state in GROUP_STATES {
        assert!(get(&s, "spatialgen_groups", &[("state", state)]).is_some(), "{state} always present");
    }
    assert_eq!(get(&s, "spatialgen_groups", &[("state", "failed")]), Some(0.0));
    assert_eq!(get(&s, "spatialgen_queue_length", &[]), Some(3.0));
    assert_eq!(get(&s, "spatialgen_journal_up", &[]), Some(1.0));
    assert_eq!(get(&s, "spatialgen_bytes_uploaded_total", &[]), Some(1500.0));
    assert_eq!(get(&s, "spatialgen_parts_retried_total", &[("reason", "timeout")]), Some(2.0));
    assert_eq!(get(&s, "spatialgen_parts_retried_total", &[("reason", "url_expired")]), Some(1.0));
    assert_eq!(get(&s, "spatialgen_parts_retried_total", &[("reason", "odd \"reason\"\\\nline")]), Some(1.0));
    assert_eq!(get(&s, "spatialgen_groups_completed_total", &[]), Some(2.0));
    assert_eq!(get(&s, "spatialgen_last_success_timestamp_seconds", &[]), Some(1_774_897_334.5));
    assert_eq!(get(&s, "spatialgen_paused", &[]), Some(1.0));
    assert_eq!(get(&s, "spatialgen_paused_info", &[("reason", "window")]), Some(1.0));
    assert_eq!(get(&s, "spatialgen_bandwidth_limit_bytes_per_second", &[]), Some(209_715_200.0));

    // A second reason; ending one leaves the other.
    metrics.set_paused(true, "auth");
    metrics.set_paused(false, "window");
    let s = parse(&reqwest::get(format!("{base}/metrics")).await.expect("scrape").text().await.expect("body"));
    assert_eq!(get(&s, "spatialgen_paused", &[]), Some(1.0));
    assert_eq!(get(&s, "spatialgen_paused_info", &[("reason", "auth")]), Some(1.0));
    assert_eq!(get(&s, "spatialgen_paused_info", &[("reason", "window")]), None);

    // Resumed: the gauge drops to 0 and the reason disappears.
    metrics.set_paused(false, "auth");
    let s = parse(&reqwest::get(format!("{base}/metrics")).await.expect("scrape").text().await.expect("body"));
    assert_eq!(get(&s, "spatialgen_paused", &[]), Some(0.0));
    assert!(!s.keys().any(|(n, _)| n == "spatialgen_paused_info"));

    let health = reqwest::get(format!("{base}/healthz")).await.expect("healthz");
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.expect("body"), "ok\n");

    shutdown.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(5), task).await.expect("stops on shutdown");
    assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");
}

#[tokio::test]
async fn an_unreadable_journal_still_scrapes_but_is_unhealthy() {
    let metrics = Arc::new(Metrics::new());
    let source: Arc<dyn StateSource> =
        Arc::new(|| -> Result<StateSnapshot, SnapshotError> { Err("database is locked".into()) });
    let (base, shutdown, _task) = start(metrics, source).await;

    let resp = reqwest::get(format!("{base}/metrics")).await.expect("scrape");
    assert_eq!(resp.status(), 200);
    let s = parse(&resp.text().await.expect("body"));
    assert_eq!(get(&s, "spatialgen_journal_up", &[]), Some(0.0));
    assert_eq!(get(&s, "spatialgen_groups", &[("state", "queued")]), Some(0.0));
    assert!(!s.keys().any(|(n, _)| n == "spatialgen_last_success_timestamp_seconds"), "absent until a success");

    let health = reqwest::get(format!("{base}/healthz")).await.expect("healthz");
    assert_eq!(health.status(), 503);
    assert!(health.text().await.expect("body").contains("database is locked"));
    shutdown.cancel();
}

#[tokio::test]
async fn a_refused_key_and_a_missing_watch_folder_make_the_agent_unhealthy() {
    let source: Arc<dyn StateSource> = Arc::new(|| -> Result<StateSnapshot, SnapshotError> {
        Ok(StateSnapshot {
            groups_by_state: vec![("queued".into(), 2)],
            queue_length: 2,
            held: vec![
                ("auth".into(), "paused: the API refused the key since 2026-12-01T10:00:00Z".into()),
                ("watch_missing".into(), "watch folder /mnt/exports is missing since 2026-12-01T10:05:00Z".into()),
                ("watch_unreadable".into(), "watch folder /mnt/b cannot be read: Too many open files".into()),
            ],
        })
    });
    let (base, shutdown, _task) = start(Arc::new(Metrics::new()), source).await;
    let health = reqwest::get(format!("{base}/healthz")).await.expect("healthz");
    assert_eq!(health.status(), 503);
    let body = health.text().await.expect("body");
    assert!(body.contains("the API refused the key") && body.contains("/mnt/exports is missing"), "{body}");
    let s = parse(&reqwest::get(format!("{base}/metrics")).await.expect("scrape").text().await.expect("body"));
    assert_eq!(get(&s, "spatialgen_key_refused", &[]), Some(1.0));
    assert_eq!(get(&s, "spatialgen_watch_folders_missing", &[]), Some(1.0));
    assert_eq!(get(&s, "spatialgen_watch_folders_unreadable", &[]), Some(1.0));
    shutdown.cancel();
}

#[tokio::test]
async fn a_taken_port_is_reported_with_the_key() {
    let first = bind("127.0.0.1:0".parse().expect("addr")).await.expect("bind");
    let addr = first.local_addr().expect("addr");
    let e = bind(addr).await.expect_err("port in use");
    assert!(e.to_string().starts_with(&format!("http.listen: cannot listen on {addr}")), "{e}");
}

#[test]
fn retry_reasons_are_bounded() {
    let m = Metrics::new();
    for i in 0..100 {
        m.part_retried(&format!("reason-{i}"));
    }
    m.part_retried("reason-0");
    m.part_retried(&"x".repeat(500));
    let s = parse(&m.render(&Ok(StateSnapshot::default())));
    let reasons: Vec<&Labels> =
        s.keys().filter(|(n, _)| n == "spatialgen_parts_retried_total").map(|(_, l)| l).collect();
    assert_eq!(reasons.len(), MAX_REASONS + 1, "{MAX_REASONS} kept + other");
    assert_eq!(get(&s, "spatialgen_parts_retried_total", &[("reason", "reason-0")]), Some(2.0));
    assert_eq!(
        get(&s, "spatialgen_parts_retried_total", &[("reason", "other")]),
        Some(100.0 - MAX_REASONS as f64 + 1.0)
    );
}

#[test]
fn the_exported_state_list_is_every_journal_state_in_order() {
    let journal: Vec<&str> = crate::journal::GroupState::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(GROUP_STATES.to_vec(), journal);
}
