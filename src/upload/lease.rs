//! A claim's lease as this process sees it: when it was last confirmed, on a
//! clock that keeps running while the process does not (SIGSTOP, a VM
//! paused for a snapshot, a swap storm; on Linux and macOS a machine asleep
//! too), so that a worker that wakes after its lease ran out knows it before
//! it sends anything.
//!
//! The database measures the lease on its own clock from when it executed
//! the claim or the renewal; the worker measures from when it *sent* it,
//! which is earlier, and gives the claim up a tenth of the lease sooner
//! still. So a worker stops sending before another node can take the group
//! over, as long as neither clock runs more than 10 % fast.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::journal::{Claim, Fence};

/// Milliseconds on a clock that never goes back and keeps counting while
/// this process is stopped: `CLOCK_BOOTTIME` on Linux (it also counts a
/// suspended machine), `CLOCK_MONOTONIC` on macOS (which does as well), the
/// standard monotonic clock elsewhere.
pub(crate) fn clock_ms() -> u64 {
    #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
    {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let id = libc::CLOCK_BOOTTIME;
        #[cfg(target_vendor = "apple")]
        let id = libc::CLOCK_MONOTONIC;
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant the OS knows.
        if unsafe { libc::clock_gettime(id, &mut ts) } == 0 {
            return (ts.tv_sec as u64).saturating_mul(1000).saturating_add(ts.tv_nsec as u64 / 1_000_000);
        }
    }
    static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(std::time::Instant::now);
    u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One worker's claim, and when it was last confirmed (shared with the
/// engine, which confirms every claim it renews).
#[derive(Debug, Clone)]
pub(crate) struct Held {
    claim: Claim,
    /// [`clock_ms`] when the claim or the last renewal that kept it was sent.
    confirmed: Arc<AtomicU64>,
    /// How long a claim lasts unrenewed; `None` on a single machine's journal
    /// (no other node can take a group over).
    lease: Option<Duration>,
}

impl Held {
    /// A claim sent at `sent` ([`clock_ms`]).
    pub(crate) fn new(claim: Claim, lease: Option<Duration>, sent: u64) -> Held {
        Held { claim, confirmed: Arc::new(AtomicU64::new(sent)), lease }
    }

    pub(crate) fn claim(&self) -> Claim {
        self.claim
    }

    /// The fence of this worker's writes.
    pub(crate) fn fence(&self) -> Fence {
        self.claim.fence()
    }

    /// A renewal sent at `sent` kept the claim.
    pub(crate) fn confirm(&self, sent: u64) {
        self.confirmed.fetch_max(sent, Ordering::Relaxed);
    }

    /// Is the claim certainly still this worker's now? True while less than
    /// nine tenths of the lease passed since it was last confirmed.
    pub(crate) fn fresh(&self) -> bool {
        self.fresh_at(clock_ms())
    }

    fn fresh_at(&self, now: u64) -> bool {
        let Some(lease) = self.lease else { return true };
        let limit = u64::try_from((lease - lease / 10).as_millis()).unwrap_or(u64::MAX);
        now.saturating_sub(self.confirmed.load(Ordering::Relaxed)) < limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_fresh_for_nine_tenths_of_its_lease_from_the_last_confirmation() {
        let h = Held::new(Claim { id: 1, token: 4 }, Some(Duration::from_secs(10)), 1_000);
        assert!(h.fresh_at(1_000));
        assert!(h.fresh_at(9_999));
        assert!(!h.fresh_at(10_000), "9 s after the claim: not confirmed any more");
        h.confirm(8_000);
        assert!(h.fresh_at(16_999));
        assert!(!h.fresh_at(17_000));
        // An older renewal answered late does not move it back.
        h.confirm(5_000);
        assert!(h.fresh_at(16_999));
        assert_eq!(h.fence(), Fence::Claim(4));
    }

    #[test]
    fn without_a_lease_a_claim_stays_fresh() {
        let h = Held::new(Claim { id: 1, token: 1 }, None, 0);
        assert!(h.fresh_at(u64::MAX));
    }

    #[test]
    fn the_clock_counts_forward_across_a_sleep() {
        let a = clock_ms();
        std::thread::sleep(Duration::from_millis(20));
        let b = clock_ms();
        assert!(b >= a + 15, "{a} then {b}");
    }
}
