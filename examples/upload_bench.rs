//! Upload benchmark client: one file through the agent's own path (typed
//! client + streamed parts, N in flight), timed, with the process's peak RSS.
//! `scripts/bench-upload.sh` runs it against a sandbox started as its own
//! process and compares it with `curl --upload-file` of the same bytes.
//!
//! ```text
//! upload_bench upload   --endpoint URL --file PATH [--in-flight 4] [--no-verify] [--chunk BYTES]
//! upload_bench presign  --endpoint URL --file PATH      # prints: SESSION UPLOAD_ID URL (single_put)
//! upload_bench complete --endpoint URL --session S --upload U
//! ```
//! The key comes from `SPATIALGEN_API_KEY` (the sandbox accepts any non-empty key).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use spatialgen_sync::api::{Client, CompletedPart, PartUrlsRequest, StartFile, StartGroup, Strategy};
use spatialgen_sync::config::{ApiConfig, ApiKey, Dur};
use spatialgen_sync::model::{FileRole, Layout};
use spatialgen_sync::upload::stream::{DEFAULT_CHUNK, PutOptions, put_file_range};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a group for FILE and upload it: part URLs, PUTs, complete.
    Upload {
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        file: PathBuf,
        /// Part PUTs in flight at once.
        #[arg(long, default_value_t = 4)]
        in_flight: usize,
        /// Do not compute MD5s to compare with the ETags.
        #[arg(long)]
        no_verify: bool,
        /// Bytes per read.
        #[arg(long, default_value_t = DEFAULT_CHUNK)]
        chunk: usize,
    },
    /// Create a group for FILE and print `SESSION UPLOAD_ID URL` of its first part.
    Presign {
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        file: PathBuf,
    },
    /// Complete a single_put file.
    Complete {
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        session: String,
        #[arg(long)]
        upload: String,
    },
}

fn client(endpoint: &str) -> anyhow::Result<Client> {
    let key = std::env::var("SPATIALGEN_API_KEY").unwrap_or_else(|_| "bench-key".into());
    let cfg =
        ApiConfig { endpoint: endpoint.into(), stall_timeout: Dur(Duration::from_secs(60)), ..Default::default() };
    Ok(Client::new(&cfg, ApiKey::new(key))?)
}

fn request(file: &Path) -> anyhow::Result<StartGroup> {
    let size = std::fs::metadata(file).with_context(|| format!("{}", file.display()))?.len();
    Ok(StartGroup {
        video_name: "upload benchmark".into(),
        description: None,
        layout: Layout::TwoD,
        perspective: None,
        folder_name: None,
        files: vec![StartFile {
            file_name: "bench.mov".into(),
            file_role: FileRole::Video,
            size_bytes: size,
            language_tag: None,
        }],
    })
}

/// Peak resident set size of this process, from the kernel's own record.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

async fn upload(endpoint: &str, file: &Path, in_flight: usize, verify: bool, chunk: usize) -> anyhow::Result<()> {
    let c = client(endpoint)?;
    let req = request(file)?;
    let total = req.files[0].size_bytes;
    let t0 = Instant::now();
    let g = c.start_group(&req).await?;
    let f = g.file_for("bench.mov", FileRole::Video).context("the server did not register the file")?;
    let mut parts = Vec::new();
    match f.upload_strategy {
        Strategy::SinglePut => {
            parts.extend(c.part_urls(&g.session_id, &f.upload_id, &PartUrlsRequest::SinglePut).await?.parts)
        }
        Strategy::Multipart => {
            let mut start = 1;
            while start <= f.total_parts {
                let count = (f.total_parts - start + 1).min(100);
                let req = PartUrlsRequest::Range { start, count };
                parts.extend(c.part_urls(&g.session_id, &f.upload_id, &req).await?.parts);
                start += count;
            }
        }
    }
    let progress = Arc::new(AtomicU64::new(0));
    let opts = PutOptions {
        verify_md5: verify,
        progress: Some(progress.clone()),
        throttle: None,
        chunk_size: chunk,
        expect: None,
    };
    let t_put = Instant::now();
    let mut done: Vec<CompletedPart> = futures_util::stream::iter(parts)
        .map(|p| {
            let (c, opts) = (&c, &opts);
            async move {
                let etag = put_file_range(c, &p.url, file, p.byte_start, p.size_bytes, opts).await?;
                anyhow::Ok(CompletedPart { part_number: p.part_number, etag })
            }
        })
        .buffer_unordered(in_flight.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let put_secs = t_put.elapsed().as_secs_f64();
    done.sort_by_key(|p| p.part_number);
    if f.upload_strategy == Strategy::SinglePut {
        done.clear();
    }
    let completed = c.complete_file(&g.session_id, &f.upload_id, &done).await?;
    let total_secs = t0.elapsed().as_secs_f64();
    if completed.library_id.is_none() {
        bail!("the last complete carried no library id");
    }
    let moved = progress.load(std::sync::atomic::Ordering::Relaxed);
    if moved != total {
        bail!("progress counter says {moved} bytes, file has {total}");
    }
    let mib = total as f64 / (1024.0 * 1024.0);
    println!(
        "bytes={total} parts={} part_size={} in_flight={in_flight} verify_md5={verify} chunk={chunk}",
        f.total_parts, f.part_size_bytes
    );
    println!("put_seconds={put_secs:.3} total_seconds={total_secs:.3} mib_per_s={:.0}", mib / total_secs);
    println!("peak_rss_kib={}", peak_rss_kib().map_or_else(|| "unknown".into(), |k| k.to_string()));
    Ok(())
}

async fn presign(endpoint: &str, file: &Path) -> anyhow::Result<()> {
    let c = client(endpoint)?;
    let g = c.start_group(&request(file)?).await?;
    let f = &g.files[0];
    if f.upload_strategy != Strategy::SinglePut {
        bail!(
            "the server made this file multipart ({} parts); start it with a part size above the file size",
            f.total_parts
        );
    }
    let urls = c.part_urls(&g.session_id, &f.upload_id, &PartUrlsRequest::SinglePut).await?;
    println!("{} {} {}", g.session_id, f.upload_id, urls.parts[0].url);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().cmd {
        Cmd::Upload { endpoint, file, in_flight, no_verify, chunk } => {
            upload(&endpoint, &file, in_flight, !no_verify, chunk).await
        }
        Cmd::Presign { endpoint, file } => presign(&endpoint, &file).await,
        Cmd::Complete { endpoint, session, upload } => {
            let done = client(&endpoint)?.complete_file(&session, &upload, &[]).await?;
            println!("status={} library_id={:?}", done.status, done.library_id);
            Ok(())
        }
    }
}
