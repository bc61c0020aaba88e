//! The fleet's journal and its speed-up, in one run.
//!
//! `cargo run --release --example fleet_bench [EXPORTS] [PARTS] [NODES]`
//! (default 2,000 small exports, 5,000 parts, nodes `1,2,4,8,16`) starts a
//! private PostgreSQL (or uses `SPATIALGEN_TEST_POSTGRES`) and prints:
//! 1. the journal's time per recorded part (`part_done`, one short
//!    transaction each) on a SQLite file and on PostgreSQL over loopback;
//! 2. the wall time for each number of engines in NODES (nodes, each with
//!    its own connections and claims) to drain EXPORTS queued small exports
//!    to an in-process sandbox whose API answers after 20 ms (a WAN round
//!    trip), the speed-up over the first, and how many transactions waited
//!    for the fleet-wide history lock (`pg_locks` sampled every 20 ms).

use spatialgen_sync::journal::Fence;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use spatialgen_sync::config::{ApiKey, Config, DatabaseUrl, MediaCheck, WatchConfig};
use spatialgen_sync::group::{GroupOptions, UploadGroup, build_folder_group};
use spatialgen_sync::journal::pg::{Mounts, PgJournal, PgOptions};
use spatialgen_sync::journal::prelude::*;
use spatialgen_sync::journal::{Enqueued, GroupState, Journal, SessionFile, Store};
use spatialgen_sync::model::Strategy;
use spatialgen_sync::sandbox::postgres::{PgServer, create_database};
use spatialgen_sync::sandbox::{Faults, Sandbox, SandboxOptions};
use spatialgen_sync::upload::{Engine, EngineOptions};
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn pg(url: &str, node: &str, exports: &Path) -> Result<PgJournal, BoxError> {
    Ok(PgJournal::open(PgOptions {
        url: DatabaseUrl::new(url),
        password: None,
        node: node.into(),
        lease: Duration::from_secs(30),
        mounts: Mounts::new(vec![("exports".into(), exports.to_path_buf())]),
    })?)
}

/// Seconds per `part_done` over `parts` parts of one group.
fn per_part(j: &dyn Store, group: &UploadGroup, parts: u32) -> Result<f64, BoxError> {
    let Enqueued::Queued(id) = j.enqueue(group)? else { return Err("not queued".into()) };
    let g = j.group(id)?;
    let f = &g.files[0];
    let part_size = f.size.div_ceil(u64::from(parts)).max(1);
    let total = f.size.div_ceil(part_size) as u32;
    let files = vec![SessionFile {
        file_id: f.id,
        upload_id: "u".into(),
        part_size,
        total_parts: total,
        strategy: Strategy::Multipart,
    }];
    j.record_session(id, Fence::Unclaimed, &format!("bench-{id}"), None, &files)?;
    let t = Instant::now();
    for n in 1..=total {
        j.part_done(f.id, n, &format!("\"etag-{n}\""), Fence::Unclaimed)?;
    }
    Ok(t.elapsed().as_secs_f64() / f64::from(total))
}

fn main() -> Result<(), BoxError> {
    let exports_n: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(2000);
    let parts: u32 = std::env::args().nth(2).map(|s| s.parse()).transpose()?.unwrap_or(5000);
    let counts: Vec<usize> = std::env::args()
        .nth(3)
        .unwrap_or_else(|| "1,2,4,8,16".into())
        .split(',')
        .map(|n| n.trim().parse())
        .collect::<Result<_, _>>()?;
    let dir = tempfile::tempdir()?;
    let exports = dir.path().join("exports");
    std::fs::create_dir_all(&exports)?;
    let mut watch = WatchConfig::new(&exports);
    watch.layout = "2D".parse()?;
    // The exports are filler bytes, not containers: this measures the fleet, not the media check.
    watch.media_check = MediaCheck::Off;
    let opts = GroupOptions { watch: &watch, staging_dir: None, matcher: None };
    let mut groups = Vec::with_capacity(exports_n);
    for i in 0..exports_n {
        let folder = exports.join(format!("e{i:05}"));
        std::fs::create_dir_all(&folder)?;
        std::fs::write(folder.join("clip.mov"), vec![(i % 251) as u8; 4096 + i])?;
        groups.push(build_folder_group(&folder, &opts)?);
    }
    let big = exports.join("big");
    std::fs::create_dir_all(&big)?;
    std::fs::write(big.join("clip.mov"), vec![7u8; parts as usize * 16])?;
    let big = build_folder_group(&big, &opts)?;

    // A private server unless one is named; it lives as long as `main`.
    let (admin, _server) = PgServer::named_or_private()?;
    let mut db = 0;
    let mut fresh = || -> Result<String, BoxError> {
        db += 1;
        Ok(create_database(&admin, &format!("fleet_bench_{}_{db}", std::process::id()))?)
    };

    // 1. The journal alone.
    let sqlite = Journal::open(&dir.path().join("bench.sqlite3"))?;
    let s = per_part(&sqlite, &big, parts)?;
    let p = per_part(&pg(&fresh()?, "n0", &exports)?, &big, parts)?;
    println!("journal cost per recorded part ({parts} parts, one transaction each):");
    println!("  SQLite (WAL, synchronous=NORMAL): {:>8.1} µs", s * 1e6);
    println!("  PostgreSQL over loopback:         {:>8.1} µs", p * 1e6);

    // 2. Draining the queue with each number of nodes.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    println!("{exports_n} queued small exports, sandbox API answering after 20 ms, max_groups 2 per node:");
    let mut first = None;
    for nodes in counts {
        let url = fresh()?;
        let (took, waits) = rt.block_on(drain(&url, &exports, &groups, nodes, dir.path()))?;
        let (base, base_nodes) = *first.get_or_insert((took, nodes));
        println!(
            "  {nodes:>2} node(s): {:>6.2} s  ({:>5.1} exports/s, speed-up over {base_nodes}: {:.2}x; \
             history-lock waiters seen: {waits:.2} on average)",
            took.as_secs_f64(),
            exports_n as f64 / took.as_secs_f64(),
            base.as_secs_f64() / took.as_secs_f64()
        );
    }
    Ok(())
}

async fn drain(
    url: &str,
    exports: &Path,
    groups: &[UploadGroup],
    nodes: usize,
    base: &Path,
) -> Result<(Duration, f64), BoxError> {
    let mut opts = SandboxOptions::new(base.join(format!("sandbox-{nodes}")));
    opts.api_key = None;
    let sandbox = Sandbox::start("127.0.0.1:0".parse()?, opts).await?;
    sandbox.set_faults(Faults { latency: Duration::from_millis(20), ..Faults::default() });
    let enq = pg(url, "enqueue", exports)?;
    let n = tokio::task::spawn_blocking({
        let groups = groups.to_vec();
        move || -> Result<usize, BoxError> {
            let mut n = 0;
            for g in &groups {
                if let Enqueued::Queued(_) = enq.enqueue(g)? {
                    n += 1;
                }
            }
            Ok(n)
        }
    })
    .await??;
    let mut cfg = Config::minimal(&sandbox.base_url(), &base.join("unused.sqlite3"));
    cfg.upload.max_groups = 2;
    let cfg = Arc::new(cfg);
    let shutdown = CancellationToken::new();
    let t = Instant::now();
    let mut tasks = Vec::new();
    let watcher: Arc<dyn Store> = Arc::new(pg(url, "watch", exports)?);
    // Sessions waiting for an advisory lock (the fleet-wide history lock),
    // sampled every 20 ms on a thread of its own (the client blocks).
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = std::thread::spawn({
        let (url, sampling) = (url.to_string(), sampling.clone());
        move || -> Result<f64, String> {
            let mut probe = postgres::Client::connect(&url, postgres::NoTls).map_err(|e| e.to_string())?;
            let (mut samples, mut waiting) = (0u64, 0i64);
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                let n: i64 = probe
                    .query_one("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted", &[])
                    .map_err(|e| e.to_string())?
                    .get(0);
                samples += 1;
                waiting += n;
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(waiting as f64 / samples.max(1) as f64)
        }
    });
    for i in 0..nodes {
        let j: Arc<dyn Store> = Arc::new(pg(url, &format!("node-{i}"), exports)?);
        let engine = Engine::new(cfg.clone(), j, ApiKey::new("bench"), EngineOptions::default())?;
        let s = shutdown.clone();
        tasks.push(tokio::spawn(async move { engine.run(s).await }));
    }
    loop {
        let w = watcher.clone();
        let done = tokio::task::spawn_blocking(move || w.count_by_state()).await??;
        let completed = done.iter().find(|(s, _)| *s == GroupState::Completed).map_or(0, |(_, c)| *c);
        if completed as usize >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = t.elapsed();
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let waits = sampler.join().map_err(|_| "the lock sampler panicked")??;
    shutdown.cancel();
    for t in tasks {
        t.await??;
    }
    if sandbox.library().len() != n {
        return Err(format!("{} library entries for {n} exports", sandbox.library().len()).into());
    }
    sandbox.shutdown().await;
    Ok((took, waits))
}
