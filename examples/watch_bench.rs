//! Watcher benchmarks on this machine, printing figures:
//!
//! - `latency`: last write → `queued` in a real journal (target: settle + 1 s).
//! - `idle`: 10,000 files in 1,000 finished folders watched; CPU over a
//!   window and RSS of the whole process (targets: ≤ 0.5 %, ≤ 40 MiB).
//! - `rescan`: a full rescan of 100,000 files (target: ≤ 3 s).
//!
//! Usage: `cargo run --release --example watch_bench -- [latency|idle|rescan|all] [--idle-secs N] [--dir D]`

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use spatialgen_sync::config::{Dur, WatchConfig};
use spatialgen_sync::journal::{Enqueued, Journal};
use spatialgen_sync::watch::{self, JournalHandoff, WatchOptions};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let what = args.iter().find(|a| !a.starts_with("--")).map(String::as_str).unwrap_or("all");
    let opt = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let idle_secs: u64 = opt("--idle-secs").and_then(|s| s.parse().ok()).unwrap_or(60);
    let base = opt("--dir").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new().prefix("watch-bench-").tempdir_in(&base).expect("temp dir");
    println!("watch_bench in {}", dir.path().display());
    if matches!(what, "latency" | "all") {
        latency(dir.path());
    }
    if matches!(what, "idle" | "all") {
        idle(dir.path(), idle_secs);
    }
    if matches!(what, "rescan" | "all") {
        rescan(dir.path());
    }
}

fn start(root: &Path, settle: Duration, db: &Path) -> (watch::WatchHandle, Receiver<(Instant, PathBuf, Enqueued)>) {
    let mut w = WatchConfig::new(root);
    w.settle = Dur(settle);
    let journal = Arc::new(Journal::open(db).expect("journal"));
    let (tx, rx) = channel();
    let handoff = JournalHandoff::new(journal, db.with_extension("staging")).with_outcomes(tx);
    let handle = watch::start(&[w], Box::new(handoff), WatchOptions::default()).expect("start");
    (handle, rx)
}

fn write_export(dir: &Path, name: &str, files: usize, bytes: usize) {
    fs::create_dir_all(dir.join("subs")).expect("mkdir");
    fs::write(dir.join(format!("{name}.mov")), vec![1u8; bytes]).expect("write");
    fs::write(dir.join(format!("{name}.en.m4a")), vec![2u8; 64]).expect("write");
    let langs = ["fr", "de", "it", "ja", "ko", "pt", "ru", "zh", "es", "sv", "nl", "pl"];
    for i in 0..files.saturating_sub(2) {
        let lang = langs[i % langs.len()];
        fs::write(dir.join("subs").join(format!("{name}_{i}.{lang}.srt")), b"1\n00:00:00,000 --> 00:00:01,000\nhi\n")
            .expect("write");
    }
}

fn latency(dir: &Path) {
    let root = dir.join("latency");
    fs::create_dir_all(&root).expect("mkdir");
    let settle = Duration::from_secs(2);
    let (handle, rx) = start(&root, settle, &dir.join("latency.sqlite3"));
    std::thread::sleep(Duration::from_millis(300));
    let mut over = Vec::new();
    for i in 0..5 {
        let exp = root.join(format!("shot{i}"));
        fs::create_dir(&exp).expect("mkdir");
        // A writer that takes a second: 10 chunks of 1 MiB, 100 ms apart.
        let mut f = fs::File::create(exp.join(format!("shot{i}.mov"))).expect("create");
        for _ in 0..10 {
            std::io::Write::write_all(&mut f, &vec![3u8; 1 << 20]).expect("write");
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(f);
        let last_write = Instant::now();
        let (t, outcome) = loop {
            let (t, k, o) = rx.recv_timeout(settle * 5).expect("queued in time");
            if k == exp {
                break (t, o);
            }
        };
        assert!(matches!(outcome, Enqueued::Queued(_)), "{outcome:?}");
        let took = t - last_write;
        println!("latency: shot{i}: last write -> queued {:.3} s (settle {} s)", took.as_secs_f64(), settle.as_secs());
        over.push(took.saturating_sub(settle));
    }
    over.sort();
    println!(
        "latency: beyond settle: min {:.3} s, median {:.3} s, max {:.3} s (target <= 1 s)",
        over[0].as_secs_f64(),
        over[over.len() / 2].as_secs_f64(),
        over[over.len() - 1].as_secs_f64()
    );
    handle.stop().expect("stop");
}

/// utime + stime of this process, in clock ticks.
fn cpu_ticks() -> u64 {
    let stat = fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let after = &stat[stat.rfind(')').expect("comm ends") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted after the command name.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

fn status_kib(key: &str) -> u64 {
    let status = fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn idle(dir: &Path, secs: u64) {
    let root = dir.join("idle");
    for i in 0..1000 {
        write_export(&root.join(format!("shot{i:04}")), &format!("shot{i:04}"), 10, 256);
    }
    let settle = Duration::from_secs(1);
    let rss_before = status_kib("VmRSS:");
    let t0 = Instant::now();
    let (handle, rx) = start(&root, settle, &dir.join("idle.sqlite3"));
    let mut queued = 0;
    let mut handed = 0;
    while handed < 1000 {
        let (_, _, o) = rx.recv_timeout(Duration::from_secs(120)).expect("all exports handed off");
        handed += 1;
        queued += usize::from(matches!(o, Enqueued::Queued(_)));
    }
    println!(
        "idle: startup scan + settle + hand-off of 1000 exports (10,000 files): {:.2} s, {queued} queued",
        t0.elapsed().as_secs_f64()
    );
    // Let the last hand-off finish, then measure a quiet window.
    std::thread::sleep(Duration::from_secs(2));
    let ticks_per_s = 100.0; // USER_HZ on Linux
    let c0 = cpu_ticks();
    let w0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let cpu = (cpu_ticks() - c0) as f64 / ticks_per_s;
    let wall = w0.elapsed().as_secs_f64();
    let stats = handle.stats();
    println!(
        "idle: CPU {:.3} % over {:.0} s ({cpu:.2} s of CPU); RSS {:.1} MiB (peak {:.1} MiB, {:.1} MiB before starting); \
         {} events, {} looks, {} rescans (target <= 0.5 %, <= 40 MiB)",
        100.0 * cpu / wall,
        wall,
        status_kib("VmRSS:") as f64 / 1024.0,
        status_kib("VmHWM:") as f64 / 1024.0,
        rss_before as f64 / 1024.0,
        stats.events.load(std::sync::atomic::Ordering::Relaxed),
        stats.looks.load(std::sync::atomic::Ordering::Relaxed),
        stats.rescans.load(std::sync::atomic::Ordering::Relaxed),
    );
    handle.stop().expect("stop");
}

fn rescan(dir: &Path) {
    let root = dir.join("rescan");
    let t = Instant::now();
    for i in 0..2000 {
        let exp = root.join(format!("shot{i:04}"));
        fs::create_dir_all(exp.join("frames")).expect("mkdir");
        for j in 0..50 {
            fs::write(exp.join("frames").join(format!("f{j:03}.srt")), b"x").expect("write");
        }
    }
    println!("rescan: made 100,000 files in 2000 folders in {:.1} s", t.elapsed().as_secs_f64());
    let w = WatchConfig::new(&root);
    for round in 1..=3 {
        let t = Instant::now();
        let scan = watch::scan_once(0, &w).expect("scan");
        println!(
            "rescan: round {round}: {} files in {} exports in {:.3} s (target <= 3 s)",
            scan.files,
            scan.exports.len(),
            t.elapsed().as_secs_f64()
        );
    }
}
