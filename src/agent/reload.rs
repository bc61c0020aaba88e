//! Reloading the config: on SIGHUP, or when the file changes (looked at
//! every 5 s). A bad new config is refused with its reason (file:line) and
//! the old one stays; a good one is sent to every part of the agent.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Reload the config on SIGHUP and when the file changes (looked at every 5 s).
pub(super) async fn reload_loop(
    mut current: Arc<Config>,
    reloads: watch::Sender<Arc<Config>>,
    shutdown: CancellationToken,
) {
    let path: PathBuf = current.source.clone();
    let mtime = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen: Option<SystemTime> = mtime(&path);
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<Option<()>>();
        let why = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hangup => "SIGHUP",
            _ = tick.tick() => {
                let now = mtime(&path);
                if now == seen { continue; }
                seen = now;
                "the config file changed"
            }
        };
        match crate::ops::reload::load_reload(&path, &current) {
            Err(e) => tracing::error!("reload ({why}) refused, the running config stays: {e}"),
            Ok((_, plan)) if plan.is_empty() => tracing::info!("reload ({why}): nothing changed"),
            Ok((new, plan)) => {
                if let Err(e) = new.check_environment() {
                    tracing::error!("reload ({why}) refused, the running config stays: {e}");
                    continue;
                }
                if !plan.restart_required.is_empty() || plan.log_level_changed {
                    tracing::warn!(
                        "reload ({why}): {plan}; [api]/[journal]/[log] changes take effect after a restart, \
                         the rest now"
                    );
                } else {
                    tracing::info!("reload ({why}): {plan}");
                }
                current = Arc::new(new);
                let _ = reloads.send(current.clone());
            }
        }
    }
}
