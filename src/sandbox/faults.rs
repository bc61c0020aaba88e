//! Fault injection: which requests fail, and how.
//!
//! Each decision draws one number from a single generator, so with a `seed`
//! a client that sends its requests one after another sees the same faults on
//! every run. Concurrent clients interleave their draws, which is still
//! reproducible in distribution but not request by request.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// What to break, as probabilities in `0.0..=1.0` per request.
///
/// The JSON form (for `POST /_sandbox/faults`) uses the field names below,
/// with `retry_after_ms`, `latency_ms` and `complete_latency_ms` in
/// milliseconds; missing fields are 0.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// An API call answers 500 before doing anything.
    pub api_5xx: f64,
    /// A storage PUT answers 500 after its body was read (nothing is stored).
    pub put_5xx: f64,
    /// An API call answers 429 with `Retry-After`.
    pub rate_limit: f64,
    /// The `Retry-After` of an injected 429 (sent in whole seconds, rounded up).
    #[serde(rename = "retry_after_ms", with = "millis")]
    pub retry_after: Duration,
    /// A storage PUT's connection is dropped after about half of its body.
    pub reset_mid_body: f64,
    /// Added before every API call and storage PUT is handled.
    #[serde(rename = "latency_ms", with = "millis")]
    pub latency: Duration,
    /// Added to `latency` before a Complete File Upload call is handled:
    /// the call has arrived (and is in [`super::Sandbox::calls`]) but is
    /// neither done nor answered for this long.
    #[serde(rename = "complete_latency_ms", with = "millis")]
    pub complete_latency: Duration,
    /// A storage PUT stores the bytes but answers with a wrong `ETag`.
    pub corrupt_etag: f64,
    /// A storage PUT answers 404 `NoSuchUpload` (S3-style XML) after its
    /// body was read, while the API keeps answering normally.
    pub put_404: f64,
    /// Start Upload Group plans every file one byte larger than its
    /// `sizeBytes` (an answer a careful client must refuse).
    pub absurd_plan: bool,
    /// Complete File Upload answers 200 with `status` `"processing"` and
    /// does not complete the file (a 2xx a careful client must not count).
    pub complete_not_completed: bool,
    /// Makes the draws reproducible.
    pub seed: Option<u64>,
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// The fault kinds, for counting what was injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    Api5xx,
    RateLimit,
    Put5xx,
    Put404,
    AbsurdPlan,
    CompleteNotCompleted,
    Reset,
    CorruptEtag,
}

impl Fault {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Fault::Api5xx => "api_5xx",
            Fault::RateLimit => "rate_limit",
            Fault::Put5xx => "put_5xx",
            Fault::Put404 => "put_404",
            Fault::AbsurdPlan => "absurd_plan",
            Fault::CompleteNotCompleted => "complete_not_completed",
            Fault::Reset => "reset_mid_body",
            Fault::CorruptEtag => "corrupt_etag",
        }
    }
}

/// The current faults and the generator their draws come from.
pub(crate) struct FaultState {
    pub(crate) faults: Faults,
    rng: StdRng,
}

impl FaultState {
    pub(crate) fn new(faults: Faults) -> FaultState {
        let rng = match faults.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        FaultState { faults, rng }
    }

    /// Draw for one fault of probability `p`. Nothing is drawn when `p` is 0,
    /// so enabling one fault does not shift the sequence of another.
    pub(crate) fn hit(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        self.rng.random::<f64>() < p
    }

    /// What an API call gets: a 429, a 500, or nothing.
    pub(crate) fn api(&mut self) -> Option<Fault> {
        if self.hit(self.faults.rate_limit) {
            return Some(Fault::RateLimit);
        }
        if self.hit(self.faults.api_5xx) {
            return Some(Fault::Api5xx);
        }
        None
    }

    /// What a storage PUT gets: at most one of 404, 500, reset or corrupt ETag.
    pub(crate) fn put(&mut self) -> Option<Fault> {
        if self.hit(self.faults.put_404) {
            return Some(Fault::Put404);
        }
        if self.hit(self.faults.put_5xx) {
            return Some(Fault::Put5xx);
        }
        if self.hit(self.faults.reset_mid_body) {
            return Some(Fault::Reset);
        }
        if self.hit(self.faults.corrupt_etag) {
            return Some(Fault::CorruptEtag);
        }
        None
    }
}
