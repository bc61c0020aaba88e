//! The real `run` binary's console under siege: foreign Host names, writes
//! without the token (one, and sixty 1.9 MB ones at once), hundreds of
//! half-sent requests under a lowered file limit while an export arrives,
//! and SIGTERM with a half-sent request open.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

#[cfg(target_os = "linux")]
use spatialgen_sync::journal::GroupState;
#[cfg(target_os = "linux")]
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::agent::{Agent, drop_folder, free_port, watch_table};
#[cfg(target_os = "linux")]
use crate::agent::{publish, wait_state};
use crate::support::*;

const KIB: usize = 1024;

/// A world whose agent serves the console on a free port, with a token
/// file, and watches `drop` with a 10-minute rescan (so only events and
/// retries can find an export in time).
fn siege_world_config(w: &World, drop: &Path, http_extra: &str) -> SocketAddr {
    let port = free_port();
    let token = w.dir.path().join("http-token");
    std::fs::write(&token, "siege-token-0123456789\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    w.write_config(
        "",
        &format!(
            "{}rescan = \"10m\"\n\n[http]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\n{http_extra}\n",
            watch_table(drop),
            token.display()
        ),
    );
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Send `head`, then (unless empty) `body` while reading; the status code
/// of the answer (0 when the connection ended without one).
#[cfg(target_os = "linux")]
async fn request(addr: SocketAddr, head: String, body: Vec<u8>, limit: Duration) -> u16 {
    let Ok(s) = TcpStream::connect(addr).await else { return 0 };
    let (mut rd, mut wr) = s.into_split();
    // The write half is handed back, not dropped: dropping it would send a
    // FIN, and a server may take that for a client that left.
    let writer = tokio::spawn(async move {
        if wr.write_all(head.as_bytes()).await.is_ok() {
            for chunk in body.chunks(64 * KIB) {
                if wr.write_all(chunk).await.is_err() {
                    break;
                }
            }
        }
        wr
    });
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    writer.abort();
    String::from_utf8_lossy(&buf).split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// The process's resident set, from /proc.
#[cfg(target_os = "linux")]
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[cfg(target_os = "linux")]
fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_refuses_foreign_hosts_and_unauthorized_bodies_without_growing() {
    let w = World::new(16 * KIB as u64, "").await;
    let folder = drop_folder(&w, "drop");
    let addr = siege_world_config(&w, &folder, "");
    let agent = Agent::start(&w);
    agent.wait_log("console on http://", 1, Duration::from_secs(20)).await;
    let port = addr.port();
    let get = |host: String| {
        request(
            addr,
            format!("GET /api/v1/status HTTP/1.1\r\nHost: {host}\r\n\r\n"),
            Vec::new(),
            Duration::from_secs(5),
        )
    };
    assert_eq!(get(format!("evil.example:{port}")).await, 421, "a rebinding name is refused");
    assert_eq!(get(format!("localhost:{port}")).await, 200);
    assert_eq!(get(format!("127.0.0.1:{port}")).await, 200);

    // One write without the token, its 1.9 MB body never sent: the 401 comes anyway.
    let head = |len: usize| {
        format!(
            "PUT /api/v1/bandwidth HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
             Content-Length: {len}\r\n\r\n"
        )
    };
    let started = Instant::now();
    assert_eq!(request(addr, head(1_900_000), Vec::new(), Duration::from_secs(10)).await, 401);
    assert!(started.elapsed() < Duration::from_secs(5), "the 401 did not wait for the body: {:?}", started.elapsed());

    // Sixty at once, each sending its whole body as fast as it can.
    let pid = agent.pid();
    let before = rss_kib(pid);
    let body = vec![b'x'; 1_900_000];
    let tasks: Vec<_> =
        (0..60).map(|_| tokio::spawn(request(addr, head(body.len()), body.clone(), Duration::from_secs(20)))).collect();
    let mut peak = before;
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
        peak = peak.max(rss_kib(pid));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    let refused = codes.iter().filter(|&&c| c == 401).count();
    assert!(refused >= 50, "most get their 401 (a few may see the reset first): {codes:?}");
    assert!(codes.iter().all(|&c| c == 401 || c == 0), "{codes:?}");
    eprintln!("RSS before {before} KiB, peak {peak} KiB, after {after} KiB");
    assert!(after < before + 48 * 1024, "RSS grew from {before} KiB to {after} KiB");
    assert!(peak < before + 48 * 1024, "RSS peaked at {peak} KiB from {before} KiB");
    assert_eq!(get(format!("127.0.0.1:{port}")).await, 200, "still answering");
    agent.stop().await;
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_few_descriptors_and_hundreds_of_half_sent_requests_an_export_still_uploads() {
    let w = World::new(16 * KIB as u64, "").await;
    let folder = drop_folder(&w, "drop");
    let addr = siege_world_config(&w, &folder, "");
    let journal = w.journal();
    let agent = Agent::start(&w);
    agent.wait_log("console on http://", 1, Duration::from_secs(20)).await;
    let pid = agent.pid();
    let baseline = open_fds(pid);
    assert!(baseline < 60, "the agent holds {baseline} descriptors at rest");
    let out = std::process::Command::new("prlimit").arg(format!("--pid={pid}")).arg("--nofile=160:160").output();
    let out = out.expect("prlimit (util-linux) runs");
    assert!(out.status.success(), "prlimit: {}", String::from_utf8_lossy(&out.stderr));

    // 220 connections that send half a head and then nothing.
    let mut held = Vec::new();
    for _ in 0..220 {
        if let Ok(mut s) = TcpStream::connect(addr).await {
            let _ = s.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0").await;
            held.push(s);
        }
    }
    assert!(held.len() >= 200, "connected {}", held.len());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = open_fds(pid);
    assert!(during < 160, "the connection cap keeps descriptors free: {during} open");
    let export = publish(&w, &folder, "under-siege", &[("v.mov", 40 * KIB)]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(held);
    let closed = Instant::now();
    wait_state(&journal, &export, GroupState::Completed, Duration::from_secs(30)).await;
    eprintln!("uploaded {:?} after the connections closed ({during} descriptors open during)", closed.elapsed());
    let log = agent.log();
    assert!(log.contains("refusing new ones"), "the cap was reached and said so: {log}");
    agent.stop().await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_half_sent_request_exits_within_the_grace() {
    let w = World::new(16 * KIB as u64, "").await;
    let folder = drop_folder(&w, "drop");
    let addr = siege_world_config(&w, &folder, "");
    let mut agent = Agent::start(&w);
    agent.wait_log("console on http://", 1, Duration::from_secs(20)).await;
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"PUT /api/v1/bandwidth HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le").await.unwrap();
    let mut sent = TcpStream::connect(addr).await.unwrap();
    sent.write_all(b"PUT /api/v1/bandwidth HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer siege-token-0123456789\r\nContent-Length: 40\r\n\r\n{\"limit\":").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    agent.signal(libc::SIGTERM);
    // The world's shutdown_grace is 2 s.
    while agent.running() {
        assert!(started.elapsed() < Duration::from_secs(3), "still running {:?} after SIGTERM", started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("exited {:?} after SIGTERM with two half-sent requests open", started.elapsed());
}
