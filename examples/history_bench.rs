//! What a year of history costs the running agent.
//!
//! `cargo run --release --example history_bench [GROUPS] [DRAIN] [ARRIVE] [IDLE_SECS]`
//! (default 100,000 synthetic ended groups, a drain of 1,000 exports, an
//! arrival of 10,000 at once, 60 s idle) builds the release binary, then on
//! SQLite and on PostgreSQL (a private server, or `SPATIALGEN_TEST_POSTGRES`;
//! `HISTORY_BENCH_BACKENDS=sqlite` skips it) runs the real agent against an
//! in-process sandbox over loopback and prints:
//! 1. the drain rate of DRAIN new small exports on an empty journal;
//! 2. with GROUPS ended groups in the journal: the agent's idle CPU and RSS
//!    over IDLE_SECS, `status` and `status --json` (wall, bytes),
//!    `/api/v1/status`, one older page of `/api/v1/groups`, and a
//!    `?since=` poll that found nothing new (wall, bytes), the latency of a
//!    Server-Sent Event after a change in the journal, the drain rate of
//!    DRAIN new exports, and the peak RSS after ARRIVE exports arrived at
//!    once and were uploaded.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use spatialgen_sync::config::DatabaseUrl;
use spatialgen_sync::journal::pg::{Mounts, PgJournal, PgOptions};
use spatialgen_sync::journal::{Journal, Store};
use spatialgen_sync::sandbox::postgres::{PgServer, create_database};
use spatialgen_sync::sandbox::{Sandbox, SandboxOptions};

mod common;

use common::fill;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where the journal lives.
#[derive(Clone)]
enum Backend {
    Sqlite,
    Postgres { admin: String },
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres { .. } => "PostgreSQL",
        }
    }
}

/// One agent's world: its folders, config, journal and console address.
struct World {
    dir: tempfile::TempDir,
    exports: PathBuf,
    config: PathBuf,
    console: String,
    journal: Box<dyn Store>,
}

fn free_port() -> Result<u16, BoxError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn world(backend: &Backend, sandbox: &Sandbox, tag: &str) -> Result<World, BoxError> {
    let dir = tempfile::tempdir()?;
    let exports = dir.path().join("exports");
    std::fs::create_dir_all(&exports)?;
    let port = free_port()?;
    let (journal_toml, journal): (String, Box<dyn Store>) = match backend {
        Backend::Sqlite => {
            let path = dir.path().join("journal.sqlite3");
            (format!("path = \"{}\"", path.display()), Box::new(Journal::open(&path)?))
        }
        Backend::Postgres { admin } => {
            let url = create_database(admin, &format!("history_{tag}_{}", std::process::id()))?;
            let j = PgJournal::open(PgOptions {
                url: DatabaseUrl::new(&url),
                password: None,
                node: "bench".into(),
                lease: Duration::from_secs(30),
                mounts: Mounts::new(vec![("exports".into(), exports.clone())]),
            })?;
            (format!("url = \"{url}\"\nnode = \"bench\""), Box::new(j))
        }
    };
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[api]\nendpoint = \"{}\"\napi_key_env = \"HISTORY_BENCH_KEY\"\n\n[journal]\n{journal_toml}\n\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\n\n[log]\nlevel = \"warn\"\n\n\
             [[watch]]\npath = \"{}\"\nname = \"exports\"\nlayout = \"2D\"\nsettle = \"500ms\"\n\
             # The exports are filler bytes, not containers: this measures history, not the media check.\n\
             media_check = \"off\"\n",
            sandbox.base_url(),
            exports.display()
        ),
    )?;
    Ok(World { dir, exports, config, console: format!("http://127.0.0.1:{port}"), journal })
}

fn binary() -> Result<PathBuf, BoxError> {
    if let Ok(cargo) = std::env::var("CARGO") {
        let ok = Command::new(cargo)
            .args(["build", "--release", "--locked", "--quiet", "--bin", "spatialgen-sync"])
            .status()?
            .success();
        if !ok {
            return Err("cargo build --release failed".into());
        }
    }
    let exe = std::env::current_exe()?;
    let bin = exe.parent().and_then(Path::parent).map(|d| d.join("spatialgen-sync")).ok_or("no target folder")?;
    if !bin.exists() {
        return Err(format!("{} is missing: run cargo build --release first", bin.display()).into());
    }
    Ok(bin)
}

/// The agent process; stopped with SIGTERM when dropped.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

fn start(bin: &Path, w: &World) -> Result<Agent, BoxError> {
    let child = Command::new(bin)
        .args(["run", "--config"])
        .arg(&w.config)
        .env("HISTORY_BENCH_KEY", "history-bench-key")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let agent = Agent(child);
    let t = Instant::now();
    while http_get(&w.console, "/healthz", None).is_err() {
        if t.elapsed() > Duration::from_secs(60) {
            return Err("the agent's console did not answer within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(agent)
}

/// `(user + system ticks, resident KiB, peak resident KiB)` of a process.
fn usage(pid: u32) -> Result<(u64, u64, u64), BoxError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(") ").ok_or("odd /proc stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((ticks, kib("VmRSS:"), kib("VmHWM:")))
}

/// Write `n` small exports beside the watch folder, then move them in at
/// once; returns when the last one is in.
fn arrive(w: &World, n: usize, tag: &str) -> Result<(), BoxError> {
    let staging = w.dir.path().join(format!("staging-{tag}"));
    std::fs::create_dir_all(&staging)?;
    for i in 0..n {
        let folder = staging.join(format!("{tag}-{i:05}"));
        std::fs::create_dir_all(&folder)?;
        fill(&folder.join("clip.mov"), 16 * 1024 + i, i as u64 + 1)?;
        fill(&folder.join("clip.en.srt"), 1024, i as u64 + 7)?;
    }
    for i in 0..n {
        let name = format!("{tag}-{i:05}");
        std::fs::rename(staging.join(&name), w.exports.join(&name))?;
    }
    Ok(())
}

/// Groups the sandbox completed so far (read in this process: watching
/// the journal would cost the agent's journal a read per look).
fn completes(sandbox: &Sandbox) -> u64 {
    sandbox.stats().api.get("complete").and_then(|by| by.get(&200)).copied().unwrap_or(0)
}

/// Seconds for `n` new exports to be uploaded after they arrived at once.
fn drain(w: &World, sandbox: &Sandbox, n: usize, tag: &str) -> Result<f64, BoxError> {
    let before = completes(sandbox);
    arrive(w, n, tag)?;
    let t = Instant::now();
    while completes(sandbox) < before + n as u64 {
        if t.elapsed() > Duration::from_secs(1800) {
            return Err(format!("{tag}: not drained after 30 min").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(t.elapsed().as_secs_f64())
}

/// One `GET` over a new connection: the head and the body.
fn http_get(base: &str, path: &str, etag: Option<&str>) -> Result<(String, Vec<u8>), BoxError> {
    use std::io::{Read, Write};
    let addr = base.strip_prefix("http://").ok_or("not an http URL")?;
    let mut s = std::net::TcpStream::connect(addr)?;
    let etag = etag.map(|e| format!("If-None-Match: {e}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{etag}Connection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of head")?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    if !(head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.1 304")) {
        return Err(format!("GET {path}: {}", head.lines().next().unwrap_or_default()).into());
    }
    Ok((head, raw[end + 4..].to_vec()))
}

/// The median wall time of five GETs, the body's size, and the answer's
/// `ETag` (or, without one, its body).
fn get(base: &str, path: &str, etag: Option<&str>) -> Result<(f64, usize, String), BoxError> {
    let mut walls = Vec::new();
    let mut last = (0, String::new());
    for _ in 0..5 {
        let t = Instant::now();
        let (head, body) = http_get(base, path, etag)?;
        walls.push(t.elapsed().as_secs_f64());
        let tag = head
            .lines()
            .find_map(|l| l.strip_prefix("etag: ").or_else(|| l.strip_prefix("ETag: ")))
            .map(str::to_string);
        last = (body.len(), tag.unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned()));
    }
    walls.sort_by(f64::total_cmp);
    Ok((walls[2], last.0, last.1))
}

/// The median wall time of five runs of the binary, and its output's size.
fn cli(bin: &Path, w: &World, args: &[&str]) -> Result<(f64, usize), BoxError> {
    let mut walls = Vec::new();
    let mut bytes = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let out = Command::new(bin).args(args).arg("--config").arg(&w.config).output()?;
        walls.push(t.elapsed().as_secs_f64());
        if !out.status.success() {
            return Err(format!("status {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        bytes = out.stdout.len();
    }
    walls.sort_by(f64::total_cmp);
    Ok((walls[2], bytes))
}

/// Milliseconds from a change in the journal to the console's event
/// about it (`/api/v1/events`, already connected and past its first
/// event), and that event's size.
fn sse_latency(w: &World) -> Result<(f64, usize), BoxError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let client = reqwest::Client::new();
        let mut resp = client.get(format!("{}/api/v1/events", w.console)).send().await?;
        let mut seen = String::new();
        // The first event: the state as of now.
        while !seen.contains("\n\n") {
            let chunk = resp.chunk().await?.ok_or("the event stream ended")?;
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        let probe = w.exports.join("sse-probe");
        let t = Instant::now();
        let id = w.journal.note_waiting(&probe, "sse-probe", Some(&w.exports))?;
        let mut seen = String::new();
        loop {
            let chunk = tokio::time::timeout(Duration::from_secs(30), resp.chunk())
                .await
                .map_err(|_| "no event within 30 s")??
                .ok_or("the event stream ended")?;
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("sse-probe") && seen.contains("\n\n") {
                break;
            }
        }
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        w.journal.drop_waiting(&probe)?;
        let _ = id;
        Ok((ms, seen.len()))
    })
}

fn kib(bytes: usize) -> String {
    if bytes < 1024 { format!("{bytes} B") } else { format!("{:.1} KiB", bytes as f64 / 1024.0) }
}

struct Args {
    groups: u64,
    drain: usize,
    arrive: usize,
    idle: u64,
}

fn bench(bin: &Path, backend: &Backend, a: &Args, sandbox: &Sandbox) -> Result<(), BoxError> {
    println!("\n{}:", backend.name());
    let empty = world(backend, sandbox, "empty")?;
    let agent = start(bin, &empty)?;
    let rate_empty = a.drain as f64 / drain(&empty, sandbox, a.drain, "empty")?;
    drop(agent);
    println!("  drain, empty journal: {rate_empty:.1} exports/s ({} exports)", a.drain);

    let w = world(backend, sandbox, "full")?;
    let t = Instant::now();
    match backend {
        Backend::Sqlite => Journal::open(&w.dir.path().join("journal.sqlite3"))?.synthesize_history(a.groups)?,
        Backend::Postgres { .. } => {
            let url = std::fs::read_to_string(&w.config)?
                .lines()
                .find_map(|l| l.strip_prefix("url = \"").map(|u| u.trim_end_matches('"').to_string()))
                .ok_or("no url")?;
            PgJournal::open(PgOptions {
                url: DatabaseUrl::new(&url),
                password: None,
                node: "bench".into(),
                lease: Duration::from_secs(30),
                mounts: Mounts::default(),
            })?
            .synthesize_history(a.groups)?
        }
    };
    println!("  {} ended groups written in {:.1} s", a.groups, t.elapsed().as_secs_f64());
    let agent = start(bin, &w)?;
    let pid = agent.0.id();
    std::thread::sleep(Duration::from_secs(5));
    let (t0, _, _) = usage(pid)?;
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(a.idle));
    let (t1, rss, _) = usage(pid)?;
    let cpu = (t1 - t0) as f64 / 100.0 / started.elapsed().as_secs_f64() * 100.0;
    println!("  idle over {} s: CPU {cpu:.3} %, RSS {:.1} MiB", a.idle, rss as f64 / 1024.0);

    let (wall, bytes) = cli(bin, &w, &["status"])?;
    println!("  status:                  {:>7.1} ms {:>11}", wall * 1000.0, kib(bytes));
    let (wall, bytes) = cli(bin, &w, &["status", "--json"])?;
    println!("  status --json:           {:>7.1} ms {:>11}", wall * 1000.0, kib(bytes));
    let (wall, bytes, _) = get(&w.console, "/api/v1/status", None)?;
    println!("  GET /api/v1/status:      {:>7.1} ms {:>11}", wall * 1000.0, kib(bytes));
    let v: serde_json::Value = serde_json::from_slice(&http_get(&w.console, "/api/v1/status", None)?.1)?;
    let next = v["ended"]["next"].as_i64().ok_or("no ended.next")?;
    let cursor = v["cursor"].as_str().ok_or("no cursor")?;
    let (wall, bytes, _) = get(&w.console, &format!("/api/v1/groups?before={next}&limit=50"), None)?;
    println!("  GET /api/v1/groups page: {:>7.1} ms {:>11}", wall * 1000.0, kib(bytes));
    let since = format!("/api/v1/status?since={cursor}");
    let (_, changed, etag) = get(&w.console, &since, None)?;
    let (wall, bytes, _) = get(&w.console, &since, Some(&etag))?;
    println!("  GET ?since= (nothing new):          {:>11}", kib(changed));
    println!("  GET ?since= If-None-Match: {:>5.1} ms {:>11}", wall * 1000.0, kib(bytes));
    let (latency, bytes) = sse_latency(&w)?;
    println!("  SSE event after a change: {latency:>5.0} ms {:>11}", kib(bytes));

    let rate_full = a.drain as f64 / drain(&w, sandbox, a.drain, "full")?;
    println!(
        "  drain, {} groups: {rate_full:.1} exports/s ({:+.1} % against the empty journal)",
        a.groups,
        (rate_full / rate_empty - 1.0) * 100.0
    );
    let took = drain(&w, sandbox, a.arrive, "arrive")?;
    let (_, rss, peak) = usage(pid)?;
    println!(
        "  {} exports at once: uploaded in {took:.1} s; RSS {:.1} MiB, peak {:.1} MiB",
        a.arrive,
        rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    drop(agent);
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let arg = |i: usize, default: u64| -> Result<u64, BoxError> {
        Ok(std::env::args().nth(i).map(|s| s.parse()).transpose()?.unwrap_or(default))
    };
    let a = Args {
        groups: arg(1, 100_000)?,
        drain: arg(2, 1000)? as usize,
        arrive: arg(3, 10_000)? as usize,
        idle: arg(4, 60)?,
    };
    let bin = binary()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let dir = tempfile::tempdir()?;
    let mut opts = SandboxOptions::new(dir.path().join("sandbox"));
    opts.api_key = None;
    let sandbox = rt.block_on(Sandbox::start("127.0.0.1:0".parse()?, opts))?;
    let only = std::env::var("HISTORY_BENCH_BACKENDS").unwrap_or_default();
    bench(&bin, &Backend::Sqlite, &a, &sandbox)?;
    if only != "sqlite" {
        // A private server unless one is named; it lives until the bench ends.
        let (admin, _server) = PgServer::named_or_private()?;
        bench(&bin, &Backend::Postgres { admin }, &a, &sandbox)?;
    }
    Ok(())
}
