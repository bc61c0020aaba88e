//! Journal and engine overhead with many small groups.
//!
//! `cargo run --release --example journal_bench [GROUPS] [MAX_GROUPS]`
//! (default 1,000 groups of 3 files each, `max_groups` 2 as in the default
//! config) prints:
//! 1. the journal's own time per recorded part (`part_done`, one short
//!    transaction each, on a real file in WAL mode), measured alone;
//! 2. the wall time to upload all the groups through the engine to an
//!    in-process sandbox over loopback, against the wall time for one group
//!    holding the same total bytes.

use spatialgen_sync::journal::Fence;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use spatialgen_sync::config::{ApiKey, Config, MediaCheck, WatchConfig};
use spatialgen_sync::group::{GroupOptions, build_folder_group};
use spatialgen_sync::journal::prelude::*;
use spatialgen_sync::journal::{Enqueued, GroupState, Journal, SessionFile};
use spatialgen_sync::sandbox::{Sandbox, SandboxOptions};
use spatialgen_sync::upload::{Engine, EngineOptions};
use tokio_util::sync::CancellationToken;

mod common;

use common::fill;

const FILES: [(&str, usize); 3] = [("clip.mov", 24 * 1024), ("clip.en.m4a", 6 * 1024), ("clip.en.srt", 2 * 1024)];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let groups: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let max_groups: usize = std::env::args().nth(2).map(|s| s.parse()).transpose()?.unwrap_or(2);
    let dir = tempfile::tempdir()?;
    let exports = dir.path().join("exports");
    std::fs::create_dir_all(&exports)?;
    let mut watch = WatchConfig::new(&exports);
    watch.layout = "2D".parse()?;
    // The exports are filler bytes, not containers: this measures the journal, not the media check.
    watch.media_check = MediaCheck::Off;
    let mut built = Vec::with_capacity(groups);
    for i in 0..groups {
        let folder = exports.join(format!("shot-{i:05}"));
        std::fs::create_dir_all(&folder)?;
        for (j, (name, size)) in FILES.iter().enumerate() {
            // Sizes differ per group: the fingerprint (names, sizes, mtimes) must too.
            fill(&folder.join(name), *size + i, (i * 3 + j) as u64 + 1)?;
        }
        built.push(build_folder_group(&folder, &GroupOptions { watch: &watch, staging_dir: None, matcher: None })?);
    }
    let total_bytes: u64 = built.iter().map(|g| g.total_bytes()).sum();
    println!("{groups} groups x {} files, {} bytes in all", FILES.len(), total_bytes);

    // 1. The journal alone: enqueue, record sessions, then time part_done.
    let jpath = dir.path().join("alone.sqlite3");
    let journal = Journal::open(&jpath)?;
    let t = Instant::now();
    let mut ids = Vec::with_capacity(groups);
    for g in &built {
        match journal.enqueue(g)? {
            Enqueued::Queued(id) => ids.push(id),
            other => return Err(format!("not queued: {other:?}").into()),
        }
    }
    let enqueue_each = t.elapsed() / groups as u32;
    let mut file_ids = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let g = journal.group(*id)?;
        let files: Vec<SessionFile> = g
            .files
            .iter()
            .map(|f| SessionFile {
                file_id: f.id,
                upload_id: format!("u-{n}-{}", f.position),
                part_size: 100 << 20,
                total_parts: 1,
                strategy: spatialgen_sync::model::Strategy::SinglePut,
            })
            .collect();
        file_ids.extend(files.iter().map(|f| f.file_id));
        journal.record_session(*id, Fence::Unclaimed, &format!("session-{n}"), None, &files)?;
    }
    let mut worst = Duration::ZERO;
    let t = Instant::now();
    for f in &file_ids {
        let one = Instant::now();
        journal.part_done(*f, 1, "\"0123456789abcdef0123456789abcdef\"", Fence::Unclaimed)?;
        worst = worst.max(one.elapsed());
    }
    let parts_time = t.elapsed();
    println!(
        "journal: {} parts recorded in {:.1} ms: {:.1} us per part (worst {:.1} us); enqueue {:.1} us per group",
        file_ids.len(),
        parts_time.as_secs_f64() * 1e3,
        parts_time.as_secs_f64() * 1e6 / file_ids.len() as f64,
        worst.as_secs_f64() * 1e6,
        enqueue_each.as_secs_f64() * 1e6,
    );
    let t = Instant::now();
    let rows = journal.list()?;
    println!("journal: status of {} groups read in {:.1} ms", rows.len(), t.elapsed().as_secs_f64() * 1e3);
    drop(journal);

    // 2. Through the engine.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let mut opts = SandboxOptions::new(dir.path().join("sandbox"));
        opts.part_size = 8 << 20;
        let sandbox = Sandbox::start("127.0.0.1:0".parse()?, opts).await?;
        let many = upload_all(&sandbox, dir.path(), "many", &built, max_groups).await?;

        let one = exports.join("one-big");
        std::fs::create_dir_all(&one)?;
        fill(&one.join("clip.mov"), total_bytes as usize, 99)?;
        let big = build_folder_group(&one, &GroupOptions { watch: &watch, staging_dir: None, matcher: None })?;
        let single = upload_all(&sandbox, dir.path(), "one", std::slice::from_ref(&big), max_groups).await?;
        println!(
            "engine (max_groups {max_groups}, max_parts_in_flight 4): {groups} small groups in {:.2} s ({:.1} ms per group); one group of the same {} bytes in {:.2} s; ratio {:.1}x",
            many.as_secs_f64(),
            many.as_secs_f64() * 1e3 / groups as f64,
            total_bytes,
            single.as_secs_f64(),
            many.as_secs_f64() / single.as_secs_f64().max(1e-9),
        );
        sandbox.shutdown().await;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}

async fn upload_all(
    sandbox: &Sandbox,
    base: &Path,
    name: &str,
    groups: &[spatialgen_sync::group::UploadGroup],
    max_groups: usize,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let jpath = base.join(format!("{name}.sqlite3"));
    let mut cfg = Config::minimal(&sandbox.base_url(), &jpath);
    cfg.upload.max_groups = max_groups;
    let cfg = Arc::new(cfg);
    let journal = Arc::new(Journal::open(&jpath)?);
    let mut ids = Vec::new();
    for g in groups {
        if let Enqueued::Queued(id) = journal.enqueue(g)? {
            ids.push(id);
        }
    }
    // Count ends through the engine's observer rather than polling the journal.
    let ended = Arc::new(Ended(tokio::sync::Semaphore::new(0)));
    let opts = EngineOptions { observer: Some(ended.clone()), ..EngineOptions::default() };
    let engine = Engine::new(cfg, journal.clone(), ApiKey::new("bench"), opts)?;
    let shutdown = CancellationToken::new();
    let t = Instant::now();
    let task = tokio::spawn({
        let s = shutdown.clone();
        async move { engine.run(s).await }
    });
    let _all = ended.0.acquire_many(ids.len() as u32).await?;
    let took = t.elapsed();
    shutdown.cancel();
    task.await??;
    let done = journal.list()?.iter().filter(|g| g.state == GroupState::Completed).count();
    if done != ids.len() {
        return Err(format!("{done} of {} groups completed", ids.len()).into());
    }
    Ok(took)
}

struct Ended(tokio::sync::Semaphore);

impl spatialgen_sync::upload::Observer for Ended {
    fn group_ended(&self, _: i64, _: &spatialgen_sync::upload::GroupOutcome) {
        self.0.add_permits(1);
    }
}
