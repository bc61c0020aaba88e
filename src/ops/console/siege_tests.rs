//! The listener against hostile and careless clients, over real loopback
//! TCP: foreign Host names, writes without the token and with large
//! bodies, malformed paths, idle and half-sent connections, and a stop
//! while they are open.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::guard::{host_allowed, page_csp};
use super::tests::{TOKEN, env, env_with};
use super::*;
use crate::journal::prelude::*;

/// Send `head` (and nothing more) and read the answer until the server
/// closes or `limit` passes: (status code, body).
async fn raw(addr: SocketAddr, head: &str, limit: Duration) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    read_answer(&mut s, limit).await
}

async fn read_answer(s: &mut TcpStream, limit: Duration) -> (u16, String) {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            // A whole answer with a length: no need to wait for the close.
            let text = String::from_utf8_lossy(&buf);
            if let Some((head, body)) = text.split_once("\r\n\r\n")
                && let Some(len) = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                && body.len() >= len.parse::<usize>().unwrap_or(usize::MAX)
            {
                break;
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

#[test]
fn the_host_rule_takes_the_listen_address_loopback_names_this_machine_and_the_allowed_names() {
    let listen: Option<SocketAddr> = Some("127.0.0.1:9464".parse().unwrap());
    let none: &[String] = &[];
    let allowed = vec!["sync.render07.studio.lan".to_string(), ".farm.lan".to_string(), "10.9.9.9".to_string()];
    let node = Some("render07.studio.lan");
    let local = ip("127.0.0.1");
    for (host, ok) in [
        ("127.0.0.1:9464", true),
        ("127.0.0.1", true),
        ("127.4.5.6:9464", true),
        ("[::1]:9464", true),
        ("localhost:9464", true),
        ("LOCALHOST.:9464", true),
        ("app.localhost:9464", true),
        ("render07:9464", true),
        ("render07.studio.lan", true),
        ("evil.example:9464", false),
        ("evil.example", false),
        ("localhost.evil.example", false),
        ("127.0.0.1.evil.example", false),
        ("render07.evil.example", false),
        ("10.1.2.3:9464", false),
        ("", false),
        (":9464", false),
    ] {
        assert_eq!(host_allowed(host, local, listen, none, node), ok, "{host}");
    }
    for (host, ok) in [
        ("sync.render07.studio.lan:9464", true),
        ("SYNC.render07.studio.lan", true),
        ("a.farm.lan", true),
        ("farm.lan", true),
        ("x.a.farm.lan", true),
        ("evilfarm.lan", false),
        ("10.9.9.9:9464", true),
        ("studio.lan", false),
    ] {
        assert_eq!(host_allowed(host, local, listen, &allowed, node), ok, "{host} with allowed_hosts");
    }
    assert!(host_allowed("anything.example", local, listen, &["*".to_string()], node), "* allows any");
    // Bound to every address: any address literal (it cannot be rebound), still no foreign name.
    let every: Option<SocketAddr> = Some("0.0.0.0:9464".parse().unwrap());
    assert!(host_allowed("192.168.1.5:9464", ip("172.17.0.2"), every, none, node));
    assert!(!host_allowed("evil.example:9464", ip("172.17.0.2"), every, none, node));
    // Bound to one address: that one, and the one the connection came in on.
    let one: Option<SocketAddr> = Some("192.168.1.5:9464".parse().unwrap());
    assert!(host_allowed("192.168.1.5:9464", ip("192.168.1.5"), one, none, node));
    assert!(!host_allowed("192.168.1.6:9464", ip("192.168.1.5"), one, none, node));
}

#[test]
fn the_page_csp_allows_exactly_its_own_inline_script_and_style() {
    // sha256 of the empty string, base64: a known vector.
    let csp = page_csp("<style></style><script></script>");
    assert!(csp.contains("script-src 'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"), "{csp}");
    let csp = page_csp(PAGE);
    assert_eq!(csp.matches("'sha256-").count(), PAGE.matches("<script>").count() + PAGE.matches("<style>").count());
    assert!(csp.starts_with("default-src 'none'") && csp.contains("connect-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    // What a hash cannot allow, the page must not use.
    for banned in [" style=\"", " onclick=", " onload=", " onsubmit=", "javascript:"] {
        assert!(!PAGE.contains(banned), "the page uses {banned:?}, which its CSP refuses");
    }
}

#[tokio::test]
async fn a_foreign_host_is_refused_with_421_and_loopback_names_are_answered() {
    let e = env_with(None, |cfg| {
        cfg.http = Some(crate::config::HttpConfig {
            allowed_hosts: vec!["sync.render07.studio.lan".into()],
            ..Default::default()
        })
    })
    .await;
    let port = e.addr.port();
    for path in ["/api/v1/status", "/", "/healthz", "/metrics", "/api/v1/groups/1", "/nope"] {
        let (code, body) =
            raw(e.addr, &format!("GET {path} HTTP/1.1\r\nHost: evil.example:{port}\r\n\r\n"), Duration::from_secs(5))
                .await;
        assert_eq!(code, 421, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(v["error"].as_str().unwrap().contains("[http] allowed_hosts"), "{v}");
    }
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}"), "sync.render07.studio.lan".into()] {
        let (code, body) =
            raw(e.addr, &format!("GET /api/v1/status HTTP/1.1\r\nHost: {host}\r\n\r\n"), Duration::from_secs(5)).await;
        assert_eq!(code, 200, "{host}: {body}");
    }
    // A write with the right token and a foreign Host is refused all the same, and changes nothing.
    let (code, _) = raw(
        e.addr,
        &format!("POST /api/v1/pause HTTP/1.1\r\nHost: evil.example\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(code, 421);
    assert!(e.journal.pauses().unwrap().is_empty());
}

#[tokio::test]
async fn a_write_without_the_token_is_refused_before_its_body_is_sent() {
    let e = env(Some(TOKEN)).await;
    let started = Instant::now();
    // The head promises 1.9 MB that never comes: the answer must not wait for it.
    let head = "PUT /api/v1/bandwidth HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
                Content-Length: 1900000\r\n\r\n";
    let (code, body) = raw(e.addr, head, Duration::from_secs(5)).await;
    assert_eq!(code, 401, "{body}");
    assert!(started.elapsed() < Duration::from_secs(3), "answered before any body: {:?}", started.elapsed());
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["error"].as_str().unwrap().contains("Authorization: Bearer"), "{v}");
    // With the token, a body over the cap is refused from its declared length, also unread.
    let head = format!(
        "PUT /api/v1/bandwidth HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Length: 1900000\r\n\r\n"
    );
    let (code, body) = raw(e.addr, &head, Duration::from_secs(5)).await;
    assert_eq!(code, 413, "{body}");
    assert!(body.contains("16 KiB"), "{body}");
    // A chunked body that never says its length stops at the cap.
    let big = json!({ "limit": "1MiB/s", "pad": "x".repeat(64 * 1024) });
    let r = e
        .http
        .put(format!("{}/api/v1/bandwidth", e.base))
        .bearer_auth(TOKEN)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter([Ok::<_, std::io::Error>(
            big.to_string().into_bytes(),
        )])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    assert_eq!(e.get("/api/v1/status").await.1["agent"]["bandwidth"]["bytesPerSecond"], Value::Null, "unchanged");
}

#[tokio::test]
async fn every_error_is_json_and_every_answer_carries_the_security_headers() {
    let e = env(Some(TOKEN)).await;
    let cases = [
        (reqwest::Method::GET, "/nope", 404),
        (reqwest::Method::GET, "/api/v1/pause", 405),
        (reqwest::Method::GET, "/api/v1/groups/%3Cscript%3Ealert(1)%3C%2Fscript%3E", 400),
        (reqwest::Method::POST, "/api/v1/groups/99999999999999999999999/retry", 400),
        (reqwest::Method::GET, "/api/v1/groups/4242", 404),
    ];
    for (method, path, want) in cases {
        let r = e.http.request(method.clone(), format!("{}{path}", e.base)).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(r.status().as_u16(), want, "{method} {path}");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json", "{method} {path}");
        assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let text = r.text().await.unwrap();
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {path}: {text}"));
        let msg = v["error"].as_str().unwrap_or_else(|| panic!("{method} {path}: {v}"));
        assert!(!msg.is_empty() && !msg.contains("script") && !msg.contains("9999999"), "no echo: {msg}");
    }
    // A rate past its limit: 400 naming the limit, nothing changed.
    let (code, v) = e
        .write(
            reqwest::Method::PUT,
            "/api/v1/bandwidth",
            Some(TOKEN),
            Some(json!({"limit": "99999999999999999999GiB/s"})),
        )
        .await;
    assert_eq!(code, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("above the limit of 100GiB/s"), "{v}");
    assert_eq!(e.get("/api/v1/status").await.1["agent"]["bandwidth"]["bytesPerSecond"], Value::Null);

    let page = e.http.get(format!("{}/", e.base)).send().await.unwrap();
    let h = page.headers();
    assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(h[header::CONTENT_SECURITY_POLICY].to_str().unwrap(), page_csp(PAGE));
    let api = e.http.get(format!("{}/api/v1/status", e.base)).send().await.unwrap();
    assert_eq!(api.headers()[header::CONTENT_SECURITY_POLICY], "default-src 'none'; frame-ancestors 'none'");
    // /healthz keeps its lines of text: probes and people read them.
    std::fs::remove_dir_all(&e.watch).unwrap();
    let r = e.http.get(format!("{}/healthz", e.base)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.text().await.unwrap().contains("is missing"));
}

#[tokio::test]
async fn beyond_max_connections_new_ones_are_refused_and_idle_ones_time_out() {
    let e = env(None).await;
    {
        let mut s = e.settings.lock().unwrap();
        s.max_connections = 4;
        s.header_timeout = Duration::from_millis(700);
    }
    // Four connections that send half a head and stop.
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(e.addr).await.unwrap();
        s.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0").await.unwrap();
        idle.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (code, body) =
        raw(e.addr, "GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", Duration::from_secs(5)).await;
    assert_eq!(code, 503, "the fifth is refused at once: {body}");
    assert!(body.contains("max_connections"), "{body}");
    // The half-sent ones are closed by the header timeout, and the console answers again.
    let started = Instant::now();
    for s in &mut idle {
        let (code, _) = read_answer(s, Duration::from_secs(5)).await;
        assert!(code == 0 || code == 408, "closed without an answer, or with 408: {code}");
    }
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(e.get("/api/v1/status").await.0, 200);
    // A kept-alive connection idle past the timeout is closed too.
    let mut s = TcpStream::connect(e.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
    assert_eq!(read_answer(&mut s, Duration::from_secs(5)).await.0, 200);
    let mut rest = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(3), s.read(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "closed after the idle timeout: {closed:?}");
}

#[tokio::test]
async fn the_stop_does_not_wait_for_half_sent_requests() {
    let e = env(None).await;
    e.settings.lock().unwrap().grace = Duration::from_secs(30);
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(e.addr).await.unwrap();
        s.write_all(b"PUT /api/v1/bandwidth HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le").await.unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    e.stop.cancel();
    let mut e = e;
    (&mut e.served).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1), "stopped in {:?} with a 30 s grace", started.elapsed());
    assert!(TcpStream::connect(e.addr).await.is_err(), "the port is closed");
}

#[tokio::test]
async fn a_request_whose_client_stops_sending_its_body_is_dropped() {
    let e = env(Some(TOKEN)).await;
    e.settings.lock().unwrap().stall = Duration::from_millis(600);
    let mut s = TcpStream::connect(e.addr).await.unwrap();
    let head = format!(
        "PUT /api/v1/bandwidth HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Length: 40\r\n\r\n{{\"limit\":"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut rest = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "closed: {closed:?}");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(500) && took < Duration::from_secs(3), "closed after {took:?}");
    assert_eq!(e.get("/api/v1/status").await.1["agent"]["bandwidth"]["bytesPerSecond"], Value::Null);
}
