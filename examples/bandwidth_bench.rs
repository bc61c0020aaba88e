//! How closely the shared bandwidth limit holds over real HTTP.
//!
//! Starts a discard sink on 127.0.0.1, then `--streams` tasks PUT parts to it
//! back to back, each part a streamed body of `--chunk`-sized chunks that
//! pass through one shared `Throttle` (as the engine's part stream does).
//! The sink counts what arrives; the figure printed is the sink's byte count
//! over the run, against the limit.
//!
//! ```text
//! cargo run --release --example bandwidth_bench -- [--rate 200MiB/s] [--secs 30] [--streams 4] [--chunk-kib 256]
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::routing::put;
use bytes::Bytes;
use futures_util::StreamExt;
use spatialgen_sync::config::Rate;
use spatialgen_sync::ops::throttle::Throttle;

struct Args {
    rate: Rate,
    secs: u64,
    streams: usize,
    chunk: usize,
    part: u64,
}

fn args() -> Result<Args, String> {
    let mut a = Args { rate: "200MiB/s".parse()?, secs: 30, streams: 4, chunk: 256 * 1024, part: 64 * 1024 * 1024 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--rate" => a.rate = value.parse()?,
            "--secs" => a.secs = num(&value)?.max(1),
            "--streams" => a.streams = usize::try_from(num(&value)?.max(1)).map_err(|e| e.to_string())?,
            "--chunk-kib" => a.chunk = usize::try_from(num(&value)?.max(1) * 1024).map_err(|e| e.to_string())?,
            "--part-mib" => a.part = num(&value)?.max(1) * 1024 * 1024,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(a)
}

/// The sink: reads every body to the end and counts its bytes.
async fn sink(State(received): State<Arc<AtomicU64>>, body: Body) -> &'static str {
    let mut stream = body.into_data_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        received.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    "ok"
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = args()?;
    let received = Arc::new(AtomicU64::new(0));
    let app = axum::Router::new().route("/part", put(sink)).with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/part", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let throttle = Throttle::new(Some(a.rate));
    let client = reqwest::Client::new();
    let stop = Arc::new(AtomicBool::new(false));
    let zeros = Bytes::from(vec![0u8; a.chunk]);
    let mut tasks = Vec::new();
    for _ in 0..a.streams {
        let (throttle, client, stop, url, zeros, part, chunk) =
            (throttle.clone(), client.clone(), stop.clone(), url.clone(), zeros.clone(), a.part, a.chunk as u64);
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // One part: `part` bytes in `chunk`-sized pieces, each admitted by the throttle.
                let (throttle, zeros) = (throttle.clone(), zeros.clone());
                let body = futures_util::stream::unfold(0u64, move |sent| {
                    let (throttle, zeros) = (throttle.clone(), zeros.clone());
                    async move {
                        if sent >= part {
                            return None;
                        }
                        let n = chunk.min(part - sent);
                        throttle.acquire(n).await;
                        Some((Ok::<Bytes, std::io::Error>(zeros.slice(..n as usize)), sent + n))
                    }
                });
                let resp = client
                    .put(&url)
                    .header(reqwest::header::CONTENT_LENGTH, part)
                    .body(reqwest::Body::wrap_stream(body))
                    .send()
                    .await;
                if let Err(e) = resp.and_then(|r| r.error_for_status()) {
                    eprintln!("PUT failed: {e}");
                    return;
                }
            }
        }));
    }

    let start = Instant::now();
    let mut per_second = Vec::new();
    let mut last = 0;
    for s in 1..=a.secs {
        tokio::time::sleep_until((start + Duration::from_secs(s)).into()).await;
        let now = received.load(Ordering::Relaxed);
        per_second.push(now - last);
        last = now;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let total = received.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }

    let mib = |b: f64| b / (1024.0 * 1024.0);
    let rate = total as f64 / elapsed;
    let limit = a.rate.0 as f64;
    let (lo, hi) =
        (per_second.iter().copied().min().unwrap_or(0) as f64, per_second.iter().copied().max().unwrap_or(0) as f64);
    println!(
        "limit {:.1} MiB/s, {} streams, {} KiB chunks, {:.1} s: measured {:.2} MiB/s ({:+.2} % of the limit); \
         per second min {:.1} / max {:.1} MiB/s",
        mib(limit),
        a.streams,
        a.chunk / 1024,
        elapsed,
        mib(rate),
        (rate / limit - 1.0) * 100.0,
        mib(lo),
        mib(hi),
    );
    Ok(())
}
