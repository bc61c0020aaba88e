//! The agent's metrics: the engine's events as counters, and the journal's
//! state for each scrape (the listener itself is `console.rs`); under
//! systemd, the same state as the unit's one-line status.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio_util::sync::CancellationToken;

use super::service;
use crate::journal::{AsyncJournal, GroupState, JournalError, Store};
use crate::model::{PauseKind, RetryReason};
use crate::ops::metrics::{Metrics, StateSnapshot};
use crate::upload::{GroupOutcome, Observer};

/// The engine's events as metrics. The window pause is left to
/// `follow_schedule`, which feeds the same gauge from the clock itself.
pub(super) struct MetricsObserver(pub(super) Arc<Metrics>);

impl Observer for MetricsObserver {
    fn group_ended(&self, _id: i64, outcome: &GroupOutcome) {
        if let GroupOutcome::Completed { .. } = outcome {
            self.0.group_completed(Timestamp::now());
        }
    }
    fn part_stored(&self, bytes: u64) {
        self.0.bytes_uploaded(bytes);
    }
    fn part_retried(&self, reason: RetryReason) {
        self.0.part_retried(reason.as_str());
    }
    fn paused(&self, reason: PauseKind, paused: bool) {
        if reason != PauseKind::Window {
            self.0.set_paused(paused, reason.as_str());
        }
    }
}

/// Groups by state and queue length for a metrics scrape: one aggregate
/// query. `held` lists the faults only (an operator's pause is none).
pub(super) fn snapshot(journal: &dyn Store) -> Result<StateSnapshot, JournalError> {
    let counts = journal.count_by_state()?;
    let queue_length = counts.iter().find(|(s, _)| *s == GroupState::Queued).map_or(0, |(_, n)| *n);
    let held = journal
        .pauses()?
        .iter()
        .filter(|p| p.reason.is_fault())
        .map(|p| (p.reason.label().to_string(), p.describe()))
        .collect();
    Ok(StateSnapshot {
        groups_by_state: counts.into_iter().map(|(s, n)| (s.to_string(), n)).collect(),
        queue_length,
        held,
    })
}

/// Under systemd: a one-line queue summary in `systemctl status`, every 30 s.
pub(super) async fn status_loop(journal: AsyncJournal, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Ok(snap) = journal.call(snapshot).await {
            let line: Vec<String> =
                snap.groups_by_state.iter().filter(|(_, n)| *n > 0).map(|(s, n)| format!("{n} {s}")).collect();
            service::status(&if line.is_empty() { "idle".to_string() } else { line.join(", ") });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_observer_feeds_counters_and_the_auth_pause() {
        let metrics = Arc::new(Metrics::new());
        let o = MetricsObserver(metrics.clone());
        o.part_stored(1000);
        o.part_stored(24);
        o.part_retried(RetryReason::ServerError);
        o.part_retried(RetryReason::UrlExpired);
        o.group_ended(1, &GroupOutcome::Completed { library_id: 9 });
        o.group_ended(2, &GroupOutcome::Failed("boom".into()));
        o.paused(PauseKind::Auth, true);
        // The window pause is follow_schedule's to report.
        o.paused(PauseKind::Window, true);
        let text = metrics.render(&Ok(StateSnapshot::default()));
        for line in [
            "spatialgen_bytes_uploaded_total 1024\n",
            "spatialgen_parts_retried_total{reason=\"5xx\"} 1\n",
            "spatialgen_parts_retried_total{reason=\"url_expired\"} 1\n",
            "spatialgen_groups_completed_total 1\n",
            "spatialgen_paused 1\n",
            "spatialgen_paused_info{reason=\"auth\"} 1\n",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
        assert!(!text.contains("reason=\"window\""), "{text}");
        o.paused(PauseKind::Auth, false);
        assert!(metrics.render(&Ok(StateSnapshot::default())).contains("spatialgen_paused 0\n"));
    }
}
