//! The journal's boundary: what the rest of the agent may ask of it, as
//! traits with no SQLite type or SQL text in them, so that a second backend
//! (PostgreSQL, for a fleet of agents sharing one queue) is another
//! implementation of [`Store`], not a fork of its callers.
//!
//! The operations are grouped by concern ([`Queue`], [`Transfers`],
//! [`Requests`], [`History`], [`Pauses`]); [`Store`] is all of them plus the
//! engine lock. Calls are synchronous and short (one transaction each).
//! Blocking code (the CLI, the watcher's hand-off thread, work already on
//! the blocking pool) calls them directly; async code crosses one explicit
//! boundary, [`AsyncJournal::call`], which runs the call on tokio's blocking
//! pool so that no SQL runs on a runtime worker thread.
//!
//! `use crate::journal::prelude::*` brings the traits into scope.

use std::path::Path;
use std::sync::Arc;

use super::{
    AgentLock, Claim, Ended, EngineLock, Enqueued, Event, Fence, FileId, GroupFilter, GroupId, GroupRecord, GroupState,
    GroupSummary, JournalError, NodeInfo, PartRecord, Pause, PauseReason, Request, RequestId, RequestKind,
    RequestResult, SessionFile,
};
use crate::group::UploadGroup;

/// The watcher's side and the queue: exports seen settling (`waiting`),
/// enqueued with fingerprint dedup, the rows of `status`, the queue order,
/// lookups, and retries.
pub trait Queue {
    /// An export seen but still settling; visible in status as `waiting`.
    /// Idempotent per key: a key that already has a `waiting` or `queued` row gets that row's id.
    fn note_waiting(&self, key: &Path, name: &str, watch_path: Option<&Path>) -> Result<GroupId, JournalError>;

    /// The export disappeared while settling: forget its waiting row.
    fn drop_waiting(&self, key: &Path) -> Result<(), JournalError>;

    /// The keys of the `waiting` rows of watch folder `watch_path`: what a
    /// rescan compares with what is there (a row whose export is gone was
    /// left by an agent that stopped while it settled).
    fn waiting_in(&self, watch_path: &Path) -> Result<Vec<std::path::PathBuf>, JournalError>;

    /// Why the key's `waiting` row still waits although the export is quiet
    /// (a container still being written), shown as its `error`; `None`
    /// clears it. A new reason is also a history line. No row: nothing.
    fn set_waiting_reason(&self, key: &Path, reason: Option<&str>) -> Result<(), JournalError>;

    /// A finished export: valid → `queued`; with violations → `rejected`
    /// (reasons stored). Reuses the `waiting` (or not yet started `queued`)
    /// row of the same key. Dedup by fingerprint: if the same fingerprint is
    /// completed, queued, uploading, failed or canceled by the user, nothing
    /// new is created (and the key's waiting row is dropped); a rejected
    /// fingerprint with the same violations is not recorded twice either.
    fn enqueue(&self, group: &UploadGroup) -> Result<Enqueued, JournalError>;

    /// A queued (not yet uploading) group whose export changed: back to
    /// `waiting`. Returns false if it already started (the engine notices
    /// the change itself) or there is nothing pending for the key.
    fn unqueue(&self, key: &Path) -> Result<bool, JournalError>;

    /// Rows for `status`, oldest first, queued ones with their queue position.
    fn list(&self) -> Result<Vec<GroupSummary>, JournalError>;

    /// One page of `status` rows: the groups `filter` keeps, newest first,
    /// queued ones with their queue position. The query walks an index, not
    /// the whole history (see [`GroupFilter`]).
    fn groups(&self, filter: &GroupFilter) -> Result<Vec<GroupSummary>, JournalError>;

    /// One row for `status`.
    fn summary(&self, id: GroupId) -> Result<GroupSummary, JournalError>;

    /// Queued groups in the order the engine takes them (see [`Queue::next_group`]).
    fn queue(&self) -> Result<Vec<GroupId>, JournalError>;

    /// How many groups are in each state, every state listed (0 when none):
    /// one aggregate query, for metrics scrapes and the service status line.
    fn count_by_state(&self) -> Result<Vec<(GroupState, u64)>, JournalError>;

    /// The group `spec` names: a local id, a server session id, or the
    /// export's path (its key or its folder). The newest match wins.
    fn find(&self, spec: &str) -> Result<Option<GroupId>, JournalError>;

    /// Claim the next group to work on that is not in `busy`: groups already
    /// `uploading` first (resume), then `queued` by priority (higher first),
    /// then by when the export was found finished (oldest first). The claim
    /// carries a new fencing token, larger than any the group had.
    fn next_group(&self, busy: &[GroupId]) -> Result<Option<Claim>, JournalError>;

    /// Claim group `id` itself (a foreground `upload`), with a new fencing
    /// token: `None` if it is not `queued` or `uploading`, or another node
    /// holds a live claim on it.
    fn claim(&self, id: GroupId) -> Result<Option<Claim>, JournalError>;

    /// `retry`: a `failed` group goes back to `queued` on the same row (its
    /// server session, if still alive, is resumed); a `canceled` or `expired`
    /// group is re-queued as a new group with the same files. Returns the id
    /// that will upload. The caller checks first that the files are unchanged.
    fn retry_group(&self, id: GroupId) -> Result<GroupId, JournalError>;

    /// Failed groups whose automatic retry is due go back to `queued`.
    fn requeue_due(&self, now_ms: i64) -> Result<Vec<GroupId>, JournalError>;

    /// `forget`'s candidates: groups that ended (`completed`, `rejected`,
    /// `canceled`, `expired`; never `failed`, which still waits for a retry),
    /// whose housekeeping is done, and whose row last changed before
    /// `before_ms`; oldest first.
    fn forgettable(&self, before_ms: i64) -> Result<Vec<GroupId>, JournalError>;

    /// Drop the groups `ids` with their files, parts, history and requests,
    /// in one transaction; each is checked again to still be a candidate of
    /// [`Queue::forgettable`] for `before_ms` (one that changed meanwhile is
    /// kept). Later groups that were re-queued from one keep only the loss
    /// of that link. Returns how many were dropped.
    fn forget(&self, ids: &[GroupId], before_ms: i64) -> Result<u64, JournalError>;

    /// The earliest automatic retry still ahead, if any.
    fn next_retry_at(&self) -> Result<Option<i64>, JournalError>;
}

/// The engine's side: a group's whole record, its server session and parts,
/// and the moves that end an upload (completed, failed, canceled, expired),
/// with the housekeeping that follows.
pub trait Transfers {
    /// Everything recorded about one group, with its files and parts.
    fn group(&self, id: GroupId) -> Result<GroupRecord, JournalError>;

    /// The server group exists: record its session id and every file's
    /// upload id, part size and parts (all pending), and move `queued →
    /// uploading` — one transaction, before any other network step.
    fn record_session(
        &self,
        id: GroupId,
        fence: Fence,
        session_id: &str,
        expires_at: Option<&str>,
        files: &[SessionFile],
    ) -> Result<(), JournalError>;

    /// A `queued` group that still has its server session (a failed group
    /// retried): back to `uploading` on that session, keeping its done parts.
    fn resume(&self, id: GroupId, fence: Fence) -> Result<(), JournalError>;

    /// The parts of one file, ascending, as recorded now.
    fn parts(&self, file_id: FileId) -> Result<Vec<PartRecord>, JournalError>;

    /// A part's bytes are stored: record its ETag. Called once per part as it
    /// succeeds, so this is the hot path (one short transaction).
    fn part_done(&self, file_id: FileId, part_number: u32, etag: &str, fence: Fence) -> Result<(), JournalError>;

    /// `complete` answered for a file; `library_id` if that answer carried it.
    fn file_completed(&self, file_id: FileId, library_id: Option<u64>, fence: Fence) -> Result<(), JournalError>;

    /// The last file completed: the group is in the library. A group
    /// already `completed` (by another node, or by this worker before a
    /// crash) stays as it is: a no-op, logged.
    fn complete_group(&self, id: GroupId, library_id: u64, fence: Fence) -> Result<(), JournalError>;

    /// A fatal error, or the retry budget ran out. `retry_at_ms`: when the
    /// engine re-queues it by itself.
    fn fail_group(&self, id: GroupId, error: &str, retry_at_ms: Option<i64>, fence: Fence) -> Result<(), JournalError>;

    /// Canceled, by the user or because the source changed. A fingerprint
    /// canceled by the user is not enqueued again by the watcher. A group
    /// already `canceled` (by another node) stays as it is: a no-op, logged.
    fn cancel_group(&self, id: GroupId, reason: &str, by_user: bool, fence: Fence) -> Result<(), JournalError>;

    /// The server forgot the group. With `requeue` (its files are unchanged),
    /// a new queued group with the same files is created in the same
    /// transaction and returned; the old row is then finished.
    fn expire_group(
        &self,
        id: GroupId,
        reason: &str,
        requeue: bool,
        fence: Fence,
    ) -> Result<Option<GroupId>, JournalError>;

    /// The end-of-group housekeeping (after-upload action, receipt, staged
    /// files) is done for `id`, or given up: no after-upload attempt is
    /// pending any more (`after_next_ms` cleared); the count of failed
    /// attempts and the newest error stay as facts.
    fn set_finished(&self, id: GroupId) -> Result<(), JournalError>;

    /// An attempt of the after-upload step of `id` failed with `error`: one
    /// more failure counted, the error kept, the next attempt due at
    /// `next_ms` (`None`: none; the caller gives up and finishes the group),
    /// and a history line for people, in one transaction. Returns the
    /// number of failed attempts so far.
    fn after_upload_failed(&self, id: GroupId, error: &str, next_ms: Option<i64>) -> Result<u32, JournalError>;

    /// Does a live group other than `except` still upload the staged file `source`?
    fn staged_in_use(&self, source: &Path, except: GroupId) -> Result<bool, JournalError>;

    /// How many server groups were created within `window_ms` before `now_ms`
    /// for the same export as group `id`: rows with the same key, or linked
    /// to it through `retry_of` (either way), whose `session_at` is that
    /// recent. Group `id` itself counts when its session is that recent.
    fn recent_sessions(&self, id: GroupId, now_ms: i64, window_ms: i64) -> Result<u32, JournalError>;

    /// Ended groups whose housekeeping has not been done (a crash in between).
    fn unfinished(&self) -> Result<Vec<GroupId>, JournalError>;
}

/// Control requests (cancel, retry) written by one process (the CLI) and
/// carried out by the engine that works the journal.
pub trait Requests {
    /// Ask the running engine to do something to a group.
    fn request(&self, id: GroupId, kind: RequestKind) -> Result<RequestId, JournalError>;

    /// Requests not handled yet, oldest first.
    fn open_requests(&self) -> Result<Vec<Request>, JournalError>;

    /// One request, as it stands now.
    fn request_status(&self, rid: RequestId) -> Result<Option<Request>, JournalError>;

    /// The engine handled a request; `result` says what happened.
    fn finish_request(&self, rid: RequestId, result: &RequestResult) -> Result<(), JournalError>;
}

/// Each group's history lines: notes, errors, and the readers of the
/// history (the notifier's cursor, `status`).
pub trait History {
    /// The id of the newest history line (0 when there is none): where a
    /// reader of [`History::ended_after`] starts so as not to replay history.
    fn last_event_id(&self) -> Result<i64, JournalError>;

    /// Groups that became `completed`, `failed` or `rejected` in history lines
    /// after `cursor` (an event id), oldest first, at most `limit`. Event ids
    /// are never reused, so passing the last [`Ended::event_id`] back misses
    /// nothing and repeats nothing.
    fn ended_after(&self, cursor: i64, limit: u32) -> Result<Vec<Ended>, JournalError>;

    /// Where the history reader `name` stands (a notification consumer:
    /// `hook:on_complete`, `webhook`, ...): the id of the last history line
    /// it is done with; `None` if it has no cursor yet.
    fn cursor(&self, name: &str) -> Result<Option<i64>, JournalError>;

    /// `name` is done with every history line up to `event_id`. Creates the
    /// cursor if it is new; never moves an existing one back.
    fn set_cursor(&self, name: &str, event_id: i64) -> Result<(), JournalError>;

    /// Forget the cursor of a reader that no longer exists (a hook removed
    /// from the config), so that one added again later starts from its new
    /// beginning. Returns whether there was one.
    fn drop_cursor(&self, name: &str) -> Result<bool, JournalError>;

    /// A group's history, oldest first.
    fn events(&self, id: GroupId) -> Result<Vec<Event>, JournalError>;

    /// Add a line to a group's history and make it the group's `error` text,
    /// without changing its state (e.g. why a completed export was kept).
    fn note_error(&self, id: GroupId, detail: &str) -> Result<(), JournalError>;

    /// Add a line to a group's history without changing its state.
    fn note(&self, id: GroupId, detail: &str) -> Result<(), JournalError>;
}

/// Why the queue, or a watch folder's groups, are held: recorded so that a
/// separate `status` process, metrics and `/healthz` see it.
pub trait Pauses {
    /// Record that `reason` holds now (keeping `since` if it already did).
    fn set_pause(
        &self,
        reason: &PauseReason,
        detail: Option<&str>,
        next_check_ms: Option<i64>,
    ) -> Result<(), JournalError>;

    /// `reason` no longer holds. Returns whether it was recorded.
    fn clear_pause(&self, reason: &PauseReason) -> Result<bool, JournalError>;

    /// Drop every recorded pause of one kind (`Auth` rows, or every
    /// `WatchMissing` row), as an agent does when it starts.
    fn clear_pauses_like(&self, kind: &PauseReason) -> Result<(), JournalError>;

    /// Every pause recorded now, oldest first. Rows this binary cannot read
    /// (written by a newer one) are skipped.
    fn pauses(&self) -> Result<Vec<Pause>, JournalError>;

    /// The one pause recorded for `reason`, if any.
    fn pause(&self, reason: &PauseReason) -> Result<Option<Pause>, JournalError>;
}

/// Every operation of the journal, whichever backend holds it.
pub trait Store: Queue + Transfers + Requests + History + Pauses + Send + Sync + std::fmt::Debug {
    /// Where the journal is, for logs and errors (a file path, or a
    /// database address without its password).
    fn describe(&self) -> String;

    /// The schema version of the open journal.
    fn schema_version(&self) -> Result<i64, JournalError>;

    /// Take the engine lock without waiting: `None` if another process has it.
    fn try_lock_engine(&self) -> Result<Option<EngineLock>, JournalError>;

    /// Is an engine (the agent, or an `upload` command) working this journal now?
    fn engine_running(&self) -> Result<bool, JournalError>;

    /// Take the agent lock (one agent per journal, or per node of a fleet)
    /// without waiting: `None` if another agent has it.
    fn try_lock_agent(&self) -> Result<Option<AgentLock>, JournalError>;

    /// A number that changes whenever anything was committed to the journal
    /// (by this handle or any other process or connection), read without
    /// a transaction: an idle engine looks at it instead of asking its
    /// questions again. `None`: the backend cannot tell, the engine asks
    /// every time.
    fn generation(&self) -> Result<Option<u128>, JournalError> {
        Ok(None)
    }

    /// This agent's name in a fleet; `None` for a single machine's journal.
    fn node(&self) -> Option<&str> {
        None
    }

    /// How long a claim on a group lasts unrenewed (`None`: claims need no
    /// renewal, as on a single machine). The engine renews its claims with
    /// [`Store::renew_claims`] every third of it.
    fn lease(&self) -> Option<std::time::Duration> {
        None
    }

    /// Keep `claims` alive (and say this engine is alive); returns the ids
    /// among them this engine no longer holds (a newer claim took the group
    /// over after this node was silent past its lease): their workers must
    /// stop without touching them.
    fn renew_claims(&self, claims: &[Claim]) -> Result<Vec<GroupId>, JournalError>;

    /// The nodes of a fleet, by name: each engine that renewed its
    /// heartbeat and has not stopped cleanly (a clean stop removes its
    /// row), with the groups it uploads under a live lease, and whether it
    /// has been silent past its lease (measured by the database's clock, so
    /// a frozen node is marked whatever its own clock says). One query; the
    /// rows are few. A single machine's journal (SQLite) records no nodes
    /// and answers an empty list: the agent itself knows it is the only one
    /// (the console lists it with `fleet: false`).
    fn nodes(&self) -> Result<Vec<NodeInfo>, JournalError>;

    /// Tests only: run one SQL statement as it is written (both backends
    /// read the same plain SQL) and return the first column of its first
    /// row, if it has one, as an integer.
    #[cfg(test)]
    fn test_sql(&self, sql: &str) -> Result<Option<i64>, JournalError>;

    /// How long an async caller waits for one call before it counts the
    /// database as out of reach ([`AsyncJournal::call`]): shorter than the
    /// lease, so that a stalled database server (a backend that stopped
    /// answering although its connection stays up) is noticed before
    /// another node may take this one's claims over. `None`: no limit (a
    /// local file).
    fn call_timeout(&self) -> Option<std::time::Duration> {
        None
    }

    /// A clean stop: give up the claims on `ids` at once (another node may
    /// take them over without waiting out the lease).
    fn release_claims(&self, _claims: &[Claim]) -> Result<(), JournalError> {
        Ok(())
    }
}

/// The journal as async code reaches it: a cheap, clonable handle whose
/// every call crosses [`AsyncJournal::call`], the one boundary between the
/// runtime and the (blocking) backend.
#[derive(Clone)]
pub struct AsyncJournal {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for AsyncJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AsyncJournal").field(&self.store.describe()).finish()
    }
}

impl AsyncJournal {
    pub fn new(store: Arc<dyn Store>) -> AsyncJournal {
        AsyncJournal { store }
    }

    /// Run `f` against the journal on the blocking pool and await its result.
    ///
    /// A call that takes longer than [`Store::call_timeout`] answers
    /// [`JournalError::Unavailable`]; the call itself runs on to its end on
    /// the blocking pool (a blocked database call cannot be interrupted),
    /// where a write it makes late is still fenced by its claim.
    pub async fn call<T, F>(&self, f: F) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, JournalError> + Send + 'static,
    {
        let store = self.store.clone();
        let limit = store.call_timeout();
        let call = tokio::task::spawn_blocking(move || {
            BLOCKING_CALL.set(true);
            let out = f(store.as_ref());
            BLOCKING_CALL.set(false);
            out
        });
        match limit {
            None => call.await?,
            Some(limit) => match tokio::time::timeout(limit, call).await {
                Ok(done) => done?,
                Err(_) => Err(JournalError::Unavailable(format!(
                    "the journal database did not answer within {}",
                    crate::config::Dur(limit)
                ))),
            },
        }
    }

    /// The journal itself, for code that is already off the runtime (on the
    /// blocking pool, or a thread of its own).
    pub fn blocking(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

thread_local! {
    /// Set while a call that crossed [`AsyncJournal::call`] runs: this thread
    /// is on the blocking pool, not driving the runtime.
    static BLOCKING_CALL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// May this thread block on a runtime of its own? True off any tokio
/// runtime, and inside a call that crossed [`AsyncJournal::call`]; false on
/// a thread that drives a runtime (a backend that blocks on its own runtime
/// must move the call to another thread there).
pub(crate) fn may_block_here() -> bool {
    BLOCKING_CALL.get() || tokio::runtime::Handle::try_current().is_err()
}
