//! Living under a service manager: shutdown signals, and systemd's
//! `sd_notify` protocol (READY, STATUS, STOPPING, WATCHDOG). Outside systemd
//! (no `NOTIFY_SOCKET`) the notifications are no-ops.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Resolves on the first SIGINT or SIGTERM (Ctrl-C / Ctrl-Break on Windows).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => tracing::info!("SIGINT received: stopping"),
                    _ = term.recv() => tracing::info!("SIGTERM received: stopping"),
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("Ctrl-C received: stopping");
    }
}

/// Tell the service manager the agent is up.
pub fn ready(status: &str) {
    #[cfg(unix)]
    {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(status)]);
    }
    #[cfg(not(unix))]
    let _ = status;
}

/// A one-line status shown by `systemctl status`.
pub fn status(status: &str) {
    #[cfg(unix)]
    {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(status)]);
    }
    #[cfg(not(unix))]
    let _ = status;
}

/// Tell the service manager the agent is stopping.
pub fn stopping() {
    #[cfg(unix)]
    {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    }
}

/// If systemd asked for watchdog pings (`WatchdogSec=`), send them at half
/// the interval until `shutdown`. The pings come from the runtime, so a
/// wedged runtime stops them and systemd restarts the agent.
pub fn spawn_watchdog(shutdown: CancellationToken) {
    #[cfg(unix)]
    if let Some(interval) = sd_notify::watchdog_enabled() {
        let every = (interval / 2).max(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => { let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]); }
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (shutdown, Duration::ZERO);
}
