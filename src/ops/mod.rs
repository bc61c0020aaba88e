//! Operator controls, as self-contained parts the upload engine plugs in.
//!
//! - [`window`]: the weekly upload windows, read in local time (DST-safe):
//!   open or paused now, which bandwidth applies, when that changes.
//! - [`throttle`]: one bandwidth limiter shared by every part PUT; its rate
//!   changes at run time.
//! - [`hooks`]: `on_complete` / `on_failure` / `on_rejected` commands and the
//!   webhook, run in the background when a group ends.
//! - [`metrics`]: Prometheus text on `/metrics` and `/healthz`.
//! - [`reload`]: what changed between the running config and a new one.
//! - [`status`]: the rows `status` and the console show, built once.
//! - [`console`]: the HTTP listener's control API and web page.
//!
//! [`follow_schedule`] ties the first three together at run time: it keeps
//! the throttle's rate, the metrics' paused gauge and a `watch` channel of
//! [`window::WindowState`] in step with the clock and with reloads. The
//! agent (`cli/run.rs`) turns that channel into the engine's open/closed
//! gate, which the engine looks at before it claims a group or starts a
//! part, so outside every window the queue pauses after the parts already in
//! flight (`upload/` itself knows no `ops` type).

pub mod console;
pub mod hooks;
pub mod metrics;
pub mod reload;
pub mod status;
pub mod throttle;
pub mod window;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use self::metrics::Metrics;
use self::throttle::Throttle;
use self::window::{Schedule, WindowState};
use crate::model::PauseKind;

/// The longest sleep between two looks at the clock: the wall clock can jump
/// (NTP, suspend, a time-zone change) while a monotonic sleep does not notice.
const RECHECK: Duration = Duration::from_secs(30);

/// Apply the schedule until `shutdown`: at each change of window (and on
/// every new schedule sent through `schedule`, e.g. after a reload) set the
/// throttle's rate, the metrics' paused state and bandwidth gauge, and
/// publish the state on `state` for the engine and for `status`.
pub async fn follow_schedule(
    mut schedule: watch::Receiver<Arc<Schedule>>,
    throttle: Throttle,
    metrics: Arc<Metrics>,
    state: watch::Sender<WindowState>,
    shutdown: CancellationToken,
) {
    let mut reloads_open = true;
    let mut last_open: Option<bool> = None;
    loop {
        let now = schedule.borrow_and_update().state_now();
        throttle.set_rate(now.bandwidth);
        metrics.set_bandwidth_limit(now.bandwidth);
        metrics.set_paused(!now.open, PauseKind::Window.as_str());
        if last_open != Some(now.open) {
            if !schedule.borrow().is_always_open() || last_open.is_some() {
                tracing::info!("uploads {now}");
            }
            last_open = Some(now.open);
        }
        let wait = now
            .next_change
            .map(|t| Duration::try_from(Timestamp::now().duration_until(t)).unwrap_or(Duration::ZERO))
            .unwrap_or(RECHECK)
            .clamp(Duration::from_millis(10), RECHECK);
        state.send_replace(now);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            changed = schedule.changed(), if reloads_open => {
                // The sender is gone: keep following the last schedule, stop listening.
                reloads_open = changed.is_ok();
            }
        }
    }
}

#[cfg(test)]
mod tests;
