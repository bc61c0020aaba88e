//! The bandwidth limit shared by every part PUT.
//!
//! A hand-rolled token bucket rather than `governor`: governor's quotas are
//! `NonZeroU32` cells fixed when the limiter is built (a new rate means a new
//! limiter and a lost history), and `until_n_ready(n)` refuses any `n` above
//! the burst, so a 1 MiB chunk under a 512 KiB/s limit would have to be cut
//! up by every caller. Here the rate changes in place (windows, reload,
//! unlimited) and a chunk of any size is accepted.
//!
//! How it works (invariants):
//! - `tokens` (bytes) refill at `rate` up to `burst` (50 ms of traffic, at
//!   least 64 KiB) and may go *negative*: `acquire(n)` always takes its `n`
//!   at once, then waits until the refill has paid its debt. Taking first
//!   makes callers queue in arrival order (FIFO, no starvation of big chunks).
//! - `refilled` counts every byte ever added. A waiter remembers the value
//!   `refilled` must reach (its *target*); a rate change therefore only
//!   changes how long the rest of the wait is, never who goes first.
//! - The bucket starts empty and empties again when a limit is set after
//!   "unlimited", so the limit holds from the first byte.
//! - A caller that stops waiting (its future dropped) keeps its bytes taken;
//!   the link stays briefly under the limit, never over it.

use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::Rate;

/// Cheap to clone; all clones share one bucket.
#[derive(Clone, Debug)]
pub struct Throttle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    bucket: Mutex<Bucket>,
    /// Wakes every waiter when the rate changes, so they recompute their wait.
    changed: Notify,
}

#[derive(Debug)]
struct Bucket {
    /// Bytes per second; None = unlimited.
    rate: Option<u64>,
    burst: f64,
    tokens: f64,
    /// Bytes ever added to `tokens` (see the module invariants).
    refilled: f64,
    last: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        if let Some(rate) = self.rate {
            let add = now.saturating_duration_since(self.last).as_secs_f64() * rate as f64;
            let add = add.min(self.burst - self.tokens).max(0.0);
            self.tokens += add;
            self.refilled += add;
        }
        self.last = now;
    }
}

fn burst_for(rate: u64) -> f64 {
    (rate as f64 / 20.0).max(64.0 * 1024.0)
}

impl Throttle {
    /// A limiter at `rate` (None = unlimited).
    pub fn new(rate: Option<Rate>) -> Throttle {
        let rate = rate.map(|r| r.0.max(1));
        let bucket =
            Bucket { rate, burst: rate.map_or(0.0, burst_for), tokens: 0.0, refilled: 0.0, last: Instant::now() };
        Throttle { inner: Arc::new(Inner { bucket: Mutex::new(bucket), changed: Notify::new() }) }
    }

    pub fn unlimited() -> Throttle {
        Throttle::new(None)
    }

    /// The limit now (None = unlimited).
    pub fn rate(&self) -> Option<Rate> {
        self.lock().rate.map(Rate)
    }

    /// Change the limit for everyone, including callers already waiting.
    pub fn set_rate(&self, rate: Option<Rate>) {
        let rate = rate.map(|r| r.0.max(1));
        {
            let mut b = self.lock();
            if b.rate == rate {
                return;
            }
            b.refill(Instant::now());
            match rate {
                Some(r) => {
                    if b.rate.is_none() {
                        b.tokens = 0.0;
                    }
                    b.burst = burst_for(r);
                    b.tokens = b.tokens.min(b.burst);
                }
                None => b.burst = 0.0,
            }
            b.rate = rate;
        }
        self.inner.changed.notify_waiters();
    }

    /// Wait until `bytes` may be sent. Call before sending each chunk.
    pub async fn acquire(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let target = {
            let mut b = self.lock();
            if b.rate.is_none() {
                return;
            }
            b.refill(Instant::now());
            b.tokens -= bytes as f64;
            if b.tokens >= 0.0 {
                return;
            }
            b.refilled - b.tokens
        };
        loop {
            // Registered before the check, so a rate change between the two is not missed.
            let mut changed = pin!(self.inner.changed.notified());
            changed.as_mut().enable();
            let wait = {
                let mut b = self.lock();
                b.refill(Instant::now());
                match b.rate {
                    None => return,
                    Some(_) if b.refilled >= target => return,
                    Some(rate) => Duration::from_secs_f64((target - b.refilled) / rate as f64),
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait.max(Duration::from_micros(100))) => {}
                () = changed => {}
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Bucket> {
        // Nothing panics while the lock is held; a poisoned lock still holds a consistent bucket.
        self.inner.bucket.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests;
