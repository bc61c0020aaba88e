//! The notifier: tails the journal's history for groups that became
//! `completed`, `failed` or `rejected` and runs the hooks and the webhook
//! for each (rejections happen in the watcher, not the engine, so the
//! journal is the one place that sees all three).

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Dur, HooksConfig};
use crate::journal::{AsyncJournal, Ended, GroupState};
use crate::ops::hooks::{EventKind, GroupEvent, Notifier};
use crate::ops::reload::diff_reload;

/// How often the notifier looks for groups that ended.
const NOTIFY_POLL: Duration = Duration::from_millis(250);
/// Ended groups read from the journal per query.
const NOTIFY_BATCH: u32 = 100;

/// What the notifier task needs.
pub(super) struct Notifications {
    pub(super) journal: AsyncJournal,
    pub(super) notifier: Notifier,
    /// The last history line already handled.
    pub(super) cursor: i64,
    /// The variable holding the key this agent runs with: never passed to hooks.
    pub(super) key_env: String,
    pub(super) reloads: watch::Receiver<Arc<Config>>,
    pub(super) shutdown: CancellationToken,
    /// Fires when the engine has stopped (its last groups are recorded).
    pub(super) engine_done: CancellationToken,
}

fn hooks_configured(h: &HooksConfig) -> bool {
    h.on_complete.is_some() || h.on_failure.is_some() || h.on_rejected.is_some() || h.webhook.is_some()
}

/// Tail the journal for groups that ended and notify each once. Hooks run
/// in the background (`Notifier::notify` never blocks); at shutdown, what the
/// engine recorded last is still delivered and running hooks get
/// `shutdown_grace` to finish.
pub(super) async fn notify_loop(mut n: Notifications) {
    let mut current = n.reloads.borrow_and_update().clone();
    let mut active = hooks_configured(&current.hooks);
    let mut retired: Vec<Notifier> = Vec::new();
    let mut reloads_open = true;
    let mut tick = tokio::time::interval(NOTIFY_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = n.shutdown.cancelled() => break,
            _ = tick.tick(), if active => {}
            changed = n.reloads.changed(), if reloads_open => {
                if changed.is_err() {
                    reloads_open = false;
                    continue;
                }
                let new = n.reloads.borrow_and_update().clone();
                if diff_reload(&current, &new).hooks_changed {
                    match Notifier::new(&new.hooks) {
                        Ok(fresh) => {
                            // Deliver what ended under the old hooks first.
                            if active {
                                n.cursor = deliver(&n.journal, &n.notifier, n.cursor).await;
                            } else if let Ok(c) = n.journal.call(|j| j.last_event_id()).await {
                                // Hooks were off: start from now, not from history.
                                n.cursor = c;
                            }
                            retired.retain(|r| !r.is_idle());
                            let fresh = fresh.without_env(&n.key_env).with_cancel(n.shutdown.clone());
                            retired.push(std::mem::replace(&mut n.notifier, fresh));
                            active = hooks_configured(&new.hooks);
                            tracing::info!("hooks reloaded");
                        }
                        Err(e) => tracing::error!("hooks: {e}; the previous hooks stay"),
                    }
                }
                current = new;
                continue;
            }
        }
        n.cursor = deliver(&n.journal, &n.notifier, n.cursor).await;
    }
    let grace = current.upload.shutdown_grace.0;
    if active {
        // The engine may record its last ends during its grace.
        let _ = tokio::time::timeout(grace + Duration::from_secs(5), n.engine_done.cancelled()).await;
        n.cursor = deliver(&n.journal, &n.notifier, n.cursor).await;
    }
    let mut all = vec![n.notifier];
    all.append(&mut retired);
    let drained = futures_util::future::join_all(all.iter().map(|x| x.drain(grace))).await;
    if drained.iter().any(|done| !done) {
        tracing::warn!(grace = %Dur(grace), "hooks still running at shutdown were left behind");
    }
}

/// Notify every group that ended after `cursor`; returns the new cursor.
/// A journal error is logged and retried at the next tick (nothing is skipped).
async fn deliver(journal: &AsyncJournal, notifier: &Notifier, mut cursor: i64) -> i64 {
    loop {
        let batch = match journal.call(move |j| j.ended_after(cursor, NOTIFY_BATCH)).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("notifications: cannot read the journal: {e}");
                return cursor;
            }
        };
        let full = batch.len() as u32 == NOTIFY_BATCH;
        for e in batch {
            cursor = e.event_id;
            if let Some(ev) = group_event(e) {
                notifier.notify(ev);
            }
        }
        if !full {
            return cursor;
        }
    }
}

fn group_event(e: Ended) -> Option<GroupEvent> {
    let kind = match e.state {
        GroupState::Completed => EventKind::Completed,
        GroupState::Failed => EventKind::Failed,
        GroupState::Rejected => EventKind::Rejected,
        _ => return None,
    };
    Some(GroupEvent {
        kind,
        group_id: e.group_id,
        name: e.name,
        path: e.path,
        library_id: e.library_id.and_then(|l| i64::try_from(l).ok()),
        error: e.error,
        at: Timestamp::from_millisecond(e.at_ms).unwrap_or_else(|_| Timestamp::now()),
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn ended_groups_become_hook_events() {
        let ended = |state| Ended {
            event_id: 5,
            group_id: 3,
            state,
            name: "Shot".into(),
            path: PathBuf::from("/x/Shot"),
            library_id: Some(42),
            error: Some("why".into()),
            at_ms: 1_700_000_000_000,
        };
        let c = group_event(ended(GroupState::Completed)).unwrap();
        assert_eq!((c.kind, c.group_id, c.library_id), (EventKind::Completed, 3, Some(42)));
        assert_eq!(c.at.as_millisecond(), 1_700_000_000_000);
        assert_eq!(group_event(ended(GroupState::Failed)).unwrap().kind, EventKind::Failed);
        let r = group_event(ended(GroupState::Rejected)).unwrap();
        assert_eq!((r.kind, r.error.as_deref()), (EventKind::Rejected, Some("why")));
        assert!(group_event(ended(GroupState::Canceled)).is_none());
    }
}
