//! Rates are measured in real time, with short waits and wide margins:
//! each such test contrasts "seconds" with "milliseconds", so a busy machine
//! cannot turn a pass into a fail. Tests that only need time to pass between
//! two steps run on tokio's paused clock (the bucket reads tokio's clock).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::*;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

/// Push `chunk`-sized acquisitions through `tasks` concurrent tasks for `run`;
/// returns the measured rate in bytes/s.
async fn push(throttle: &Throttle, tasks: usize, chunk: u64, run: Duration) -> f64 {
    let total = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let (throttle, total) = (throttle.clone(), total.clone());
        set.spawn(async move {
            while start.elapsed() < run {
                throttle.acquire(chunk).await;
                total.fetch_add(chunk, Ordering::Relaxed);
            }
        });
    }
    while set.join_next().await.is_some() {}
    total.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_20_mib_per_second_across_four_tasks() {
    let throttle = Throttle::new(Some(Rate(20 * MIB)));
    let rate = push(&throttle, 4, 256 * KIB, Duration::from_secs(3)).await;
    let ratio = rate / (20 * MIB) as f64;
    eprintln!("measured {:.2} MiB/s for a 20 MiB/s limit ({:+.1} %)", rate / MIB as f64, (ratio - 1.0) * 100.0);
    assert!((0.75..=1.25).contains(&ratio), "measured {rate} B/s, limit {} B/s", 20 * MIB);
}

#[tokio::test]
async fn unlimited_never_waits() {
    let throttle = Throttle::unlimited();
    let start = Instant::now();
    for _ in 0..1000 {
        throttle.acquire(MIB).await;
    }
    assert!(start.elapsed() < Duration::from_millis(200), "{:?}", start.elapsed());
    assert_eq!(throttle.rate(), None);
}

#[tokio::test]
async fn a_limit_holds_from_the_first_byte() {
    // 1 MiB at 4 MiB/s from an empty bucket: ~250 ms, not 0.
    let throttle = Throttle::new(Some(Rate(4 * MIB)));
    let start = Instant::now();
    throttle.acquire(MIB).await;
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn raising_the_rate_speeds_up_callers_already_waiting() {
    // 10 MiB at 1 MiB/s would take 10 s; after 200 ms the limit goes to 1 GiB/s.
    let throttle = Throttle::new(Some(Rate(MIB)));
    let start = tokio::time::Instant::now();
    let waiter = tokio::spawn({
        let t = throttle.clone();
        async move { t.acquire(10 * MIB).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    throttle.set_rate(Some(Rate(1024 * MIB)));
    tokio::time::timeout(Duration::from_secs(3), waiter).await.expect("woken by the rate change").expect("joins");
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(throttle.rate(), Some(Rate(1024 * MIB)));
}

#[tokio::test(start_paused = true)]
async fn switching_to_unlimited_releases_waiters_and_back_starts_empty() {
    let throttle = Throttle::new(Some(Rate(KIB)));
    let waiter = tokio::spawn({
        let t = throttle.clone();
        async move { t.acquire(MIB).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished(), "1 MiB at 1 KiB/s must wait");
    throttle.set_rate(None);
    tokio::time::timeout(Duration::from_secs(2), waiter).await.expect("released").expect("joins");

    // Limited again: the bytes sent while unlimited earn no credit.
    for _ in 0..100 {
        throttle.acquire(MIB).await;
    }
    throttle.set_rate(Some(Rate(2 * MIB)));
    let start = tokio::time::Instant::now();
    throttle.acquire(MIB).await;
    assert!(start.elapsed() >= Duration::from_millis(400), "{:?}", start.elapsed());
}

#[tokio::test(start_paused = true)]
async fn callers_are_served_in_arrival_order() {
    // A big chunk first, then a small one: the small one does not overtake.
    let throttle = Throttle::new(Some(Rate(4 * MIB)));
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let big = tokio::spawn({
        let (t, o) = (throttle.clone(), order.clone());
        async move {
            t.acquire(2 * MIB).await;
            o.lock().expect("not poisoned").push("big");
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let small = tokio::spawn({
        let (t, o) = (throttle.clone(), order.clone());
        async move {
            t.acquire(KIB).await;
            o.lock().expect("not poisoned").push("small");
        }
    });
    let _ = (big.await, small.await);
    assert_eq!(*order.lock().expect("not poisoned"), ["big", "small"]);
}
