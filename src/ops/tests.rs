use std::time::Duration;

use jiff::tz::TimeZone;

use super::*;
use crate::config::{Rate, WindowConfig};
use crate::ops::metrics::StateSnapshot;

const MIB: u64 = 1024 * 1024;

/// A window that certainly does not contain now (UTC): from now+2h to now+3h.
fn closed_now() -> WindowConfig {
    let now = Timestamp::now().to_zoned(TimeZone::UTC);
    let hhmm = |add: i8| format!("{:02}:{:02}", (now.hour() + add) % 24, now.minute());
    WindowConfig { days: Vec::new(), from: hhmm(2), to: hhmm(3), bandwidth: Some(Rate(MIB)) }
}

#[tokio::test]
async fn follow_schedule_sets_throttle_metrics_and_state_and_follows_reloads() {
    let open = Schedule::new(&[], Some(Rate(5 * MIB)), TimeZone::UTC).expect("valid");
    let (schedule_tx, schedule_rx) = watch::channel(Arc::new(open));
    let throttle = Throttle::unlimited();
    let metrics = Arc::new(Metrics::new());
    let (state_tx, mut state_rx) =
        watch::channel(WindowState { open: false, bandwidth: None, window: None, until: None, next_change: None });
    let shutdown = CancellationToken::new();
    let task =
        tokio::spawn(follow_schedule(schedule_rx, throttle.clone(), metrics.clone(), state_tx, shutdown.clone()));
    let within = Duration::from_secs(5);
    let scrape = || metrics.render(&Ok(StateSnapshot::default()));

    let st =
        tokio::time::timeout(within, state_rx.wait_for(|s| s.open)).await.expect("published").expect("open").clone();
    assert_eq!(st.bandwidth, Some(Rate(5 * MIB)));
    assert_eq!(throttle.rate(), Some(Rate(5 * MIB)));
    assert!(scrape().contains("\nspatialgen_paused 0\n"));
    assert!(scrape().contains(&format!("\nspatialgen_bandwidth_limit_bytes_per_second {}\n", 5 * MIB)));

    // A reload brings a window that is closed now: paused until it opens.
    let closed = Schedule::new(&[closed_now()], Some(Rate(5 * MIB)), TimeZone::UTC).expect("valid");
    schedule_tx.send_replace(Arc::new(closed));
    let st =
        tokio::time::timeout(within, state_rx.wait_for(|s| !s.open)).await.expect("follows").expect("closed").clone();
    let until = st.until.clone().expect("opens again").timestamp();
    let ahead = Timestamp::now().duration_until(until);
    assert!(ahead > jiff::SignedDuration::from_mins(110) && ahead <= jiff::SignedDuration::from_mins(120), "{ahead:?}");
    assert!(st.to_string().starts_with("paused until "), "{st}");
    let text = scrape();
    assert!(text.contains("\nspatialgen_paused 1\n"), "{text}");
    assert!(text.contains("spatialgen_paused_info{reason=\"window\"} 1"), "{text}");

    shutdown.cancel();
    tokio::time::timeout(within, task).await.expect("stops on shutdown").expect("no panic");
}
