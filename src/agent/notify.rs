//! The notifier: one task per notification consumer (each configured hook,
//! and the webhook), each tailing the journal's history for groups that
//! became `completed`, `failed` or `rejected` (rejections happen in the
//! watcher, not the engine, so the journal is the one place that sees all
//! three) from its own cursor.
//!
//! At least once, at most twice:
//! - A consumer's cursor (in the journal, under [`Consumer::name`]) passes
//!   an event only after [`Notifier::deliver`] delivered it or gave up on it
//!   ([`Delivery::Delivered`], [`Delivery::GaveUp`]); it is written right
//!   after, one event at a time. A crash or kill in between repeats that one
//!   event at the next start, and no other.
//! - A webhook that keeps failing ([`Delivery::Later`]) holds only its own
//!   cursor, and waits [`HOLD_OFF`] (doubling up to [`HOLD_OFF_CAP`])
//!   between rounds of retries: no hot loop, and the hooks go on.
//! - A consumer with no cursor yet starts at the newest history line: a
//!   fresh journal does not replay its history, and a hook added later
//!   starts at its creation. A consumer removed from the config loses its
//!   cursor (so one added again later starts afresh, too).
//! - At shutdown every consumer stops at its next safe point: waits end at
//!   once, a running command gets the grace ([`Notifier::with_grace`]).
//!   What is left is delivered at the next start.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Dur};
use crate::journal::{AsyncJournal, Ended, GroupState, JournalError};
use crate::ops::hooks::{Consumer, Delivery, EventKind, GroupEvent, HOLD_OFF, HOLD_OFF_CAP, Notifier};
use crate::ops::reload::diff_reload;

/// How often the newest history line is looked at (one query for all consumers).
const NOTIFY_POLL: Duration = Duration::from_millis(250);
/// Ended groups read from the journal per query.
const NOTIFY_BATCH: u32 = 100;

/// What the notifier task needs.
pub(super) struct Notifications {
    pub(super) journal: AsyncJournal,
    pub(super) notifier: Notifier,
    /// The variable holding the key this agent runs with: never passed to hooks.
    pub(super) key_env: String,
    pub(super) reloads: watch::Receiver<Arc<Config>>,
    pub(super) shutdown: CancellationToken,
}

/// Set up the cursors before anything can end a group: each configured
/// consumer without one gets one at the newest history line, and the
/// cursors of consumers no longer configured are dropped.
pub(super) async fn prepare_cursors(journal: &AsyncJournal, notifier: &Notifier) -> Result<(), JournalError> {
    let configured = notifier.consumers();
    for c in Consumer::ALL {
        if configured.contains(&c) {
            start_cursor(journal, c).await?;
        } else {
            journal.call(move |j| j.drop_cursor(c.name())).await?;
        }
    }
    Ok(())
}

/// `c`'s cursor, created at the newest history line if it has none.
async fn start_cursor(journal: &AsyncJournal, c: Consumer) -> Result<i64, JournalError> {
    journal
        .call(move |j| match j.cursor(c.name())? {
            Some(at) => Ok(at),
            None => {
                let at = j.last_event_id()?;
                j.set_cursor(c.name(), at)?;
                Ok(at)
            }
        })
        .await
}

/// A running consumer task and the token that stops it.
struct Running {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Run one task per configured consumer until shutdown; on a reload that
/// changes `[hooks]`, the consumers pick up the new notifier at their next
/// event, new ones start and removed ones stop.
pub(super) async fn notify_loop(mut n: Notifications) {
    let mut current = n.reloads.borrow_and_update().clone();
    let configure = |notifier: Notifier, cfg: &Config| {
        notifier.without_env(&n.key_env).with_cancel(n.shutdown.clone()).with_grace(cfg.upload.shutdown_grace.0)
    };
    let (tx, rx) = watch::channel(Arc::new(configure(n.notifier.clone(), &current)));
    // One look at the history per poll for all consumers: those that are up
    // to date wait for the newest event id to move.
    let (newest_tx, newest) = watch::channel(0i64);
    tokio::spawn(watch_history(n.journal.clone(), newest_tx, n.shutdown.clone()));
    let feeds = Feeds { journal: n.journal.clone(), notifier: rx, newest };
    let mut running: BTreeMap<Consumer, Running> = BTreeMap::new();
    let first = tx.borrow().consumers();
    sync_consumers(&mut running, &first, &feeds, &n.shutdown).await;
    let mut reloads_open = true;
    loop {
        tokio::select! {
            _ = n.shutdown.cancelled() => break,
            changed = n.reloads.changed(), if reloads_open => {
                if changed.is_err() {
                    reloads_open = false;
                    continue;
                }
                let new = n.reloads.borrow_and_update().clone();
                if diff_reload(&current, &new).hooks_changed {
                    match Notifier::new(&new.hooks) {
                        Ok(fresh) => {
                            let fresh = configure(fresh, &new);
                            let consumers = fresh.consumers();
                            tx.send_replace(Arc::new(fresh));
                            sync_consumers(&mut running, &consumers, &feeds, &n.shutdown).await;
                            tracing::info!("hooks reloaded");
                        }
                        Err(e) => tracing::error!("hooks: {e}; the previous hooks stay"),
                    }
                }
                current = new;
            }
        }
    }
    // Each consumer stops at its next safe point; a running command has the grace.
    let grace = current.upload.shutdown_grace.0 + Duration::from_secs(5);
    let tasks = running.into_values().map(|r| r.task);
    if tokio::time::timeout(grace, futures_util::future::join_all(tasks)).await.is_err() {
        tracing::warn!(grace = %Dur(grace), "notifications still running at shutdown were left behind");
    }
}

/// What every consumer reads: the journal, the notifier in force, and the
/// newest history line's id (see [`watch_history`]).
#[derive(Clone)]
struct Feeds {
    journal: AsyncJournal,
    notifier: watch::Receiver<Arc<Notifier>>,
    newest: watch::Receiver<i64>,
}

/// Every [`NOTIFY_POLL`], the newest history line's id, sent when it moves;
/// not looked at while no consumer runs (no hook, no webhook: the
/// [`Feeds`] template holds the one receiver), so that an agent without
/// notifications does not wake the journal for them.
async fn watch_history(journal: AsyncJournal, newest: watch::Sender<i64>, stop: CancellationToken) {
    loop {
        if newest.receiver_count() <= 1 {
            if pause(&stop, NOTIFY_POLL * 8).await {
                return;
            }
            continue;
        }
        match journal.call(|j| j.last_event_id()).await {
            Ok(id) => {
                newest.send_if_modified(|v| std::mem::replace(v, id) != id);
            }
            Err(e) => tracing::debug!("notifications: cannot read the journal: {e}"),
        }
        if pause(&stop, NOTIFY_POLL).await {
            return;
        }
    }
}

/// Start a task for every consumer in `wanted` that has none; stop the
/// tasks of the others and drop their cursors.
async fn sync_consumers(
    running: &mut BTreeMap<Consumer, Running>,
    wanted: &[Consumer],
    feeds: &Feeds,
    shutdown: &CancellationToken,
) {
    let journal = &feeds.journal;
    let gone: Vec<Consumer> = running.keys().copied().filter(|c| !wanted.contains(c)).collect();
    for c in gone {
        if let Some(r) = running.remove(&c) {
            r.stop.cancel();
            // It stops between events (or once a running command ends).
            let _ = r.task.await;
        }
        if let Err(e) = journal.call(move |j| j.drop_cursor(c.name())).await {
            tracing::warn!(consumer = c.name(), "notifications: cannot drop the cursor: {e}");
        }
    }
    for &c in wanted {
        if running.contains_key(&c) {
            continue;
        }
        let stop = shutdown.child_token();
        let task = tokio::spawn(consume(c, feeds.clone(), stop.clone()));
        running.insert(c, Running { stop, task });
    }
}

/// Wait `d`, or less if `stop` fires; true if it fired.
async fn pause(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

/// One consumer: from its cursor, deliver every ended group it wants, in
/// order, moving the cursor after each one it is done with.
async fn consume(c: Consumer, feeds: Feeds, stop: CancellationToken) {
    let Feeds { journal, notifier, mut newest } = feeds;
    let name = c.name();
    let mut cursor = loop {
        match start_cursor(&journal, c).await {
            Ok(at) => break at,
            Err(e) => tracing::warn!(consumer = name, "notifications: cannot read the cursor: {e}"),
        }
        if pause(&stop, NOTIFY_POLL * 4).await {
            return;
        }
    };
    while !stop.is_cancelled() {
        // Marked before the query: a line written after it moves `newest` again.
        newest.borrow_and_update();
        let batch = match journal.call(move |j| j.ended_after(cursor, NOTIFY_BATCH)).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(consumer = name, "notifications: cannot read the journal: {e}");
                if pause(&stop, NOTIFY_POLL * 4).await {
                    return;
                }
                continue;
            }
        };
        if batch.is_empty() {
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = newest.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
            continue;
        }
        for e in batch {
            let event_id = e.event_id;
            if let Some(ev) = group_event(e) {
                let mut hold = HOLD_OFF;
                loop {
                    if stop.is_cancelled() {
                        return;
                    }
                    let current = notifier.borrow().clone();
                    match current.deliver(c, &ev).await {
                        Delivery::Delivered | Delivery::GaveUp => break,
                        Delivery::Stopped => return,
                        Delivery::Later => {
                            tracing::warn!(consumer = name, group = ev.group_id, next = %Dur(hold), "notification held; trying again later");
                            if pause(&stop, hold).await {
                                return;
                            }
                            hold = (hold * 2).min(HOLD_OFF_CAP);
                        }
                    }
                }
            }
            cursor = event_id;
            if let Err(e) = journal.call(move |j| j.set_cursor(name, event_id)).await {
                // Not fatal: the next success records it; a crash before that repeats this one.
                tracing::warn!(consumer = name, "notifications: cannot record the cursor: {e}");
            }
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
        event_id: e.event_id,
        group_id: e.group_id,
        name: e.name,
        path: e.path,
        library_id: e.library_id.and_then(|l| i64::try_from(l).ok()),
        error: e.error,
        at: Timestamp::from_millisecond(e.at_ms).unwrap_or_else(|_| Timestamp::now()),
    })
}

#[cfg(test)]
mod tests;
