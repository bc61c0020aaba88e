//! The sandbox's counters: API calls, storage PUTs and answers, injected faults.

use std::collections::BTreeMap;

use serde::Serialize;

/// Counts since start.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// API calls by endpoint (`start`, `part-urls`, `complete`, `cancel`, `other`) and status.
    pub api: BTreeMap<String, BTreeMap<u16, u64>>,
    /// API calls by endpoint as they arrive, before any latency: includes
    /// calls whose client gave up before the answer (not in `api`).
    pub api_received: BTreeMap<String, u64>,
    /// Storage PUT requests, whatever their outcome.
    pub storage_puts: u64,
    /// Storage answers by status.
    pub storage: BTreeMap<u16, u64>,
    /// Body bytes received by storage (including failed and repeated PUTs).
    pub put_bytes: u64,
    /// 401 answers (API).
    pub unauthorized: u64,
    /// 403 answers (storage: expired URL or bad signature).
    pub forbidden: u64,
    /// Faults injected, by kind (`api_5xx`, `rate_limit`, `put_5xx`, `reset_mid_body`, `corrupt_etag`).
    pub faults: BTreeMap<String, u64>,
}

impl Stats {
    /// API calls to `endpoint` answered with `status`.
    pub fn api_count(&self, endpoint: &str, status: u16) -> u64 {
        self.api.get(endpoint).and_then(|m| m.get(&status)).copied().unwrap_or(0)
    }

    /// API calls to `endpoint`, whatever the answer.
    pub fn api_total(&self, endpoint: &str) -> u64 {
        self.api.get(endpoint).map(|m| m.values().sum()).unwrap_or(0)
    }

    /// API calls to `endpoint` received, answered or not.
    pub fn api_received(&self, endpoint: &str) -> u64 {
        self.api_received.get(endpoint).copied().unwrap_or(0)
    }

    pub fn fault_count(&self, kind: &str) -> u64 {
        self.faults.get(kind).copied().unwrap_or(0)
    }
}
