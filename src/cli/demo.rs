//! `spatialgen-sync demo`: the whole flow on this machine, no account.
//!
//! An in-process sandbox on a free loopback port, a temporary drop folder, a
//! generated sample set (a Separate shot with L/R + `.aime` + a `.fcpxmld`
//! bundle directory, a 2D clip with `.en.srt` and `.en.m4a`, an MV-HEVC
//! spatial video whose container decides its layout, and a crashed render
//! the media check rejects), the real agent (watchers + engine, exactly
//! what `run` starts) with a short settle, then a check of every stored byte
//! against the sources, of what was never sent, and a summary.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::sample::{Expect, SampleExport, write_sample_set};
use super::{DemoArgs, Outcome};
use crate::config::{ApiKey, Config, Dur, WatchConfig};
use crate::journal::GroupState;
use crate::sandbox::{Sandbox, SandboxOptions};

/// Size of each eye file; the sandbox's part size is a quarter of it, so the
/// eyes go up as multipart uploads and the small files as single PUTs.
const EYE_BYTES: u64 = 48 * 1024 * 1024;
const DEMO_KEY: &str = "demo-key-not-secret";

pub fn run(args: DemoArgs) -> anyhow::Result<Outcome> {
    let work = tempfile::Builder::new().prefix("spatialgen-sync-demo-").tempdir()?;
    let root = work.path().to_owned();
    let _guard = crate::logging::init(&crate::config::LogConfig { level: "warn".into(), ..Default::default() })
        .context("cannot set up logging")?;
    let outcome = super::runtime()?.block_on(demo(&root));
    if args.keep {
        let kept = work.keep();
        println!("\nThe demo's files were kept in {}", kept.display());
    }
    outcome
}

async fn demo(root: &Path) -> anyhow::Result<Outcome> {
    let (drop, data, state) = (root.join("drop"), root.join("sandbox"), root.join("state"));
    for d in [&drop, &data, &state] {
        std::fs::create_dir_all(d)?;
    }

    let mut opts = SandboxOptions::new(&data);
    opts.part_size = EYE_BYTES / 4;
    opts.api_key = Some(DEMO_KEY.into());
    let sandbox = Sandbox::start("127.0.0.1:0".parse()?, opts).await.context("cannot start the sandbox")?;
    println!("1. Sandbox (SpatialGen-compatible server) listening at {}", sandbox.base_url());

    let mut cfg = Config::minimal(&sandbox.base_url(), &state.join("journal.sqlite3"));
    let mut watch = WatchConfig::new(&drop);
    watch.settle = Dur(Duration::from_secs(1));
    cfg.watch.push(watch);
    cfg.source = root.join("demo-config.toml");
    cfg.validate(None)?;
    std::fs::write(&cfg.source, cfg.to_toml())?;

    let started = Instant::now();
    let shutdown = CancellationToken::new();
    let agent = crate::agent::Agent::start(Arc::new(cfg.clone()), ApiKey::new(DEMO_KEY), shutdown.clone())
        .await
        .context("cannot start the agent")?;
    println!("2. Agent watching {}", drop.display());

    let exports = write_sample_set(&drop, EYE_BYTES)?;
    let total_bytes: u64 =
        exports.iter().filter(|e| matches!(e.expect, Expect::Uploaded(..))).map(|e| dir_bytes(&e.folder)).sum();
    println!("3. Wrote {} exports ({:.1} MB) into the drop folder:", exports.len(), total_bytes as f64 / 1e6);
    for e in &exports {
        println!("     {}/", e.folder.file_name().map(|n| n.to_string_lossy()).unwrap_or_default());
    }

    println!("4. Waiting for the exports to settle and upload…");
    let journal = agent.journal();
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut seen: BTreeMap<i64, GroupState> = BTreeMap::new();
    let rows = loop {
        let rows = journal.call(|j| j.list()).await?;
        for r in &rows {
            if seen.insert(r.id, r.state) != Some(r.state) {
                println!(
                    "     {:<14} {:<10} {:>6.1} / {:.1} MB",
                    r.name,
                    r.state.as_str(),
                    r.bytes_uploaded as f64 / 1e6,
                    r.bytes_total as f64 / 1e6
                );
            }
        }
        let expected = |name: &str| exports.iter().find(|e| e.name == name).map(|e| &e.expect);
        let wrong = rows.iter().find(|r| match (r.state, expected(&r.name)) {
            (GroupState::Failed, _) => true,
            (GroupState::Rejected, Some(Expect::Rejected(_))) => false,
            (GroupState::Rejected, _) => true,
            _ => false,
        });
        if let Some(bad) = wrong {
            shutdown.cancel();
            let _ = agent.join().await;
            bail!("group {:?} ended {}: {}", bad.name, bad.state, bad.error.clone().unwrap_or_default());
        }
        let ended = exports
            .iter()
            .filter(|e| {
                let want = match e.expect {
                    Expect::Uploaded(..) => GroupState::Completed,
                    Expect::Rejected(_) => GroupState::Rejected,
                };
                rows.iter().any(|r| r.name == e.name && r.state == want)
            })
            .count();
        if ended == exports.len() {
            break rows;
        }
        if Instant::now() > deadline {
            shutdown.cancel();
            let _ = agent.join().await;
            bail!("the demo did not finish within 5 minutes; journal: {rows:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let elapsed = started.elapsed();
    let mut facts = Vec::new();
    for r in &rows {
        let id = r.id;
        let record = journal.call(move |j| j.group(id)).await?;
        for f in record.files {
            if let Some(m) = &f.media {
                facts.push(format!("  {:<16} {:<28} {}", r.name, f.rel_path, crate::group::inspect::describe(m)));
            }
        }
    }
    shutdown.cancel();
    agent.join().await?;

    println!("5. Verifying what the sandbox stored against the sources…");
    let library = sandbox.library();
    let mut checked = 0;
    for e in &exports {
        match &e.expect {
            Expect::Uploaded(..) => checked += verify_export(e, &library)?,
            Expect::Rejected(rule) => {
                let row = rows.iter().find(|r| r.name == e.name).context("no group for the rejected export")?;
                let error = row.error.clone().unwrap_or_default();
                if !error.contains(&format!("[{rule}]")) || sandbox.sessions().iter().any(|s| s.video_name == e.name) {
                    bail!("{}: expected a {rule} rejection and nothing sent; got {error:?}", e.name);
                }
            }
        }
    }
    let violations = sandbox.violations();
    if !violations.is_empty() {
        bail!("the sandbox saw protocol violations: {violations:?}");
    }
    sandbox.shutdown().await;

    println!("\nSummary");
    for r in &rows {
        match r.library_id {
            Some(id) => {
                let layout = r.layout.as_deref().unwrap_or("-");
                println!("  {:<16} {:<10} library id {id} ({layout})", r.name, r.state.as_str())
            }
            None => println!("  {:<16} {:<10} {}", r.name, r.state.as_str(), r.error.as_deref().unwrap_or("")),
        }
    }
    println!("\nWhat the containers said (the media check):");
    for line in &facts {
        println!("{line}");
    }
    println!(
        "  {} files verified byte for byte; {:.1} MB in {:.1} s ({:.1} MB/s including the settle time)",
        checked,
        total_bytes as f64 / 1e6,
        elapsed.as_secs_f64(),
        total_bytes as f64 / 1e6 / elapsed.as_secs_f64()
    );
    println!("\nThe config the demo used ({}):\n", cfg.source.display());
    print!("{}", cfg.to_toml());
    Ok(Outcome::Success)
}

/// Compare one export with its library entry; returns the files checked.
fn verify_export(export: &SampleExport, library: &[crate::sandbox::LibraryEntry]) -> anyhow::Result<usize> {
    let entry = library
        .iter()
        .find(|l| l.video_name == export.name)
        .with_context(|| format!("no library entry named {:?}", export.name))?;
    if let Expect::Uploaded(layout, perspective) = export.expect
        && (entry.layout, entry.perspective) != (layout, Some(perspective))
    {
        bail!(
            "{}: stored as layout {} perspective {:?}, expected {layout} {perspective}",
            export.name,
            entry.layout,
            entry.perspective
        );
    }
    let mut checked = 0;
    for item in std::fs::read_dir(&export.folder)? {
        let path = item?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        if name == super::sample::SIDECAR {
            continue;
        }
        if path.is_dir() {
            let stored = entry
                .files
                .iter()
                .find(|f| f.role == crate::model::FileRole::Fcpxmld)
                .with_context(|| format!("{}: the bundle {name} was not stored", export.name))?;
            verify_bundle(&path, &stored.path)?;
        } else {
            let stored = entry
                .files
                .iter()
                .find(|f| f.file_name == name)
                .with_context(|| format!("{}: {name} was not stored", export.name))?;
            if stored.sha256 != sha256_file(&path)? {
                bail!("{}: stored bytes of {name} differ from the source", export.name);
            }
        }
        checked += 1;
    }
    Ok(checked)
}

/// The stored zip holds exactly the bundle's files with their bytes.
fn verify_bundle(bundle: &Path, zip_path: &Path) -> anyhow::Result<()> {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(zip_path)?)?;
    let mut stored = BTreeMap::new();
    for i in 0..zip.len() {
        let mut f = zip.by_index(i)?;
        if f.is_dir() {
            continue;
        }
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)?;
        stored.insert(f.name().trim_start_matches('/').to_string(), hex::encode(Sha256::digest(&bytes)));
    }
    let mut source = BTreeMap::new();
    collect_files(bundle, bundle.parent().unwrap_or(bundle), &mut source)?;
    let matches = source.iter().all(|(k, v)| stored.iter().any(|(sk, sv)| sk.ends_with(k.as_str()) && sv == v));
    if source.len() != stored.len() || !matches {
        bail!("the stored bundle zip does not match {}: {stored:?} vs {source:?}", bundle.display());
    }
    Ok(())
}

fn collect_files(dir: &Path, base: &Path, out: &mut BTreeMap<String, String>) -> anyhow::Result<()> {
    for item in std::fs::read_dir(dir)? {
        let path = item?.path();
        if path.is_dir() {
            collect_files(&path, base, out)?;
        } else {
            let rel = path.strip_prefix(base)?.to_string_lossy().replace('\\', "/");
            out.insert(rel, sha256_file(&path)?);
        }
    }
    Ok(())
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(items) = std::fs::read_dir(dir) else { return 0 };
    items
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() { dir_bytes(&p) } else { e.metadata().map_or(0, |m| m.len()) }
        })
        .sum()
}
