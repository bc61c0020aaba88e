//! The journal: every fact about every group, in one SQLite file (or, for a
//! fleet of agents, one PostgreSQL database: [`pg`]). It is the only state
//! shared between the watcher, the upload engine and the CLI, and the only
//! module that speaks SQL.
//!
//! # Invariants
//! - A group's state only moves along [`GroupState::can_become`]; any other
//!   move is refused with [`JournalError::IllegalTransition`] and nothing is
//!   written. Every move is one transaction that also appends an event to the
//!   group's history.
//! - A server session id and the `uploadId` of every file are recorded (with
//!   one row per part, all `pending`) in the same transaction that moves the
//!   group to `uploading`, before any part URL is asked for.
//! - A part is `done` only with the ETag the storage answered; a done part is
//!   never sent again for that session.
//! - Every claim of a group (`next_group`, `claim`)
//!   stores a larger fencing token in `groups.claim`, and every write an
//!   engine's worker makes for the group carries the token of its claim
//!   ([`Fence`]): a write under a superseded claim changes nothing and answers
//!   [`JournalError::Fenced`]. A terminal move another writer already made
//!   (completed or canceled twice) is a no-op.
//! - One export key has at most one row that is `waiting` or `queued`
//!   (a partial unique index enforces it).
//! - The queue order is one rule ([`Journal::next_group`], and the places
//!   `status` shows): `uploading` first, then `queued` by priority (higher
//!   first), then by `queued_at` — when the export was found finished, kept
//!   across a retry or a re-queue — then by id.
//! - History lines (`events`) get ids that are never reused (AUTOINCREMENT),
//!   so a reader that remembers the last id it handled
//!   ([`Journal::ended_after`]) neither misses nor repeats one, even when
//!   rows are deleted with their group.
//! - A fingerprint that is `completed`, `queued`, `uploading`, `failed`, or
//!   canceled by the user is never enqueued again ([`Enqueued::Duplicate`]);
//!   nor is a rejected one with the same violations (a config change that
//!   fixes them lets the same files through).
//! - A completed group's after-upload step is state in typed columns
//!   (`after_failures`, `after_error`, `after_next_ms`), written by
//!   [`Transfers::after_upload_failed`]; its history lines are for people
//!   and nothing reads them back.
//!
//! # On disk
//! One SQLite file (`[journal] path`), created mode 0600, in WAL mode with
//! `synchronous = NORMAL`: a committed transaction survives a killed process;
//! a power cut may lose the last few, which only means repeating network
//! steps that are safe to repeat (a part re-sent, a `complete` sent again).
//! Tables: `groups`, `files` (with the device and inode each had when
//! grouped), `parts` (ETags), `requests` (cancel/retry asked by the CLI),
//! `events` (history per group), `pauses` (why the queue or a watch folder
//! is held, see `pauses.rs`), `cursors` (how far each notification consumer
//! has read the history, see `cursors.rs`). Paths are stored as the
//! raw bytes of the OS string so that any file name round-trips. Times are
//! milliseconds since the Unix epoch. The schema version is `PRAGMA
//! user_version` (see `schema.rs`: the list of migrations).
//!
//! # Recovery
//! - Opening applies pending migrations in one `IMMEDIATE` transaction and
//!   refuses a journal newer than this binary ([`JournalError::TooNew`]).
//! - A file SQLite calls corrupt (not a database, malformed, or failing
//!   `quick_check`: [`JournalError::Corrupt`]) is renamed aside as
//!   `<path>.corrupt-<UTC time>` (with its `-wal`/`-shm`), logged at error
//!   level, and a fresh journal is created;
//!   the completed groups that can still be read from the old file are
//!   copied in (so they are never uploaded again), and the watcher's startup
//!   scan finds every other export again.
//! - Two processes (the agent and a CLI call) may have the journal open at
//!   once: transactions are short and a busy timeout waits out the other.
//!   Only one *engine* works a journal at a time: see [`EngineLock`]; and
//!   only one agent (`run`): see [`AgentLock`]. Read-only commands use
//!   [`Journal::open_read_only`], which never creates, migrates or renames.
//!
//! # The boundary
//! What the rest of the agent may ask is the traits of `store.rs`
//! ([`Queue`], [`Transfers`], [`Requests`], [`History`], [`Pauses`], all
//! together [`Store`]): no SQLite type or SQL text is in them, so a second
//! backend (PostgreSQL for a fleet of agents sharing one queue) is another
//! implementation, not a fork of the callers. [`Journal`] is the SQLite one.
//! Async code reaches a store only through [`AsyncJournal::call`], which runs
//! the call on the blocking pool: no SQL runs on a runtime worker thread.
//!
//! # Files
//! Each concern's file holds the SQLite implementation of its trait; this
//! one holds the error type, the [`Journal`] handle and its connection.
//! - `store.rs`: the traits and [`AsyncJournal`].
//! - `records.rs`: the public record types ([`GroupRecord`], [`GroupSummary`],
//!   [`Request`], [`RequestResult`], [`Ended`], ...); `state.rs`:
//!   [`GroupState`], [`FileState`] and the legal moves.
//! - `open.rs`: open (create, check, migrate), the read-only open, a corrupt
//!   file renamed aside and its completed groups salvaged.
//! - `schema.rs`: the list of migrations; `migrate.rs`: the runner.
//! - `queue.rs` ([`Queue`]): the watcher's side (waiting, enqueue with
//!   dedup, unqueue), the rows of `status`, the queue order, lookups,
//!   retries and re-queued copies.
//! - `transfer.rs` ([`Transfers`]): the engine's side: a group's record, its
//!   server session and parts, the moves that end an upload, server sessions
//!   across a group's re-queued copies, and the ended groups a crash left
//!   without housekeeping.
//! - `requests.rs` ([`Requests`]): cancel and retry requests from the CLI to
//!   the engine.
//! - `history.rs` ([`History`]): state moves with their history lines,
//!   notes, and the readers of the history.
//! - `pauses.rs` ([`Pauses`]): why the queue or a watch folder is held.
//! - `forget.rs` (part of [`Queue`]): dropping old ended groups.
//! - `cursors.rs` (part of [`History`]): each notification consumer's place
//!   in the history.
//! - `lock.rs`: the engine and agent locks.
//! - `codec.rs`: times, path bytes and row decoding.

mod backend;
mod codec;
mod cursors;
mod filter;
mod forget;
mod history;
mod lock;
mod migrate;
mod open;
mod pauses;
pub mod pg;
mod queue;
mod records;
mod requests;
mod schema;
mod state;
mod store;
mod synthetic;
mod transfer;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};

pub use backend::{open_configured, open_configured_read_only, pg_options, probe};
pub use codec::format_ms;
pub(crate) use codec::now_ms;
pub use filter::{GroupFilter, MAX_PAGE};
pub use lock::{AgentLock, EngineLock};
pub use pauses::{Pause, PauseReason, PauseView};
pub use records::{
    AFTER_UPLOAD_ATTEMPTS, AfterUploadRetry, Claim, Ended, Enqueued, Event, Fence, FileRecord, GroupRecord,
    GroupSummary, NodeInfo, PartRecord, Request, RequestKind, RequestResult, SessionFile,
};
pub use state::{FileState, GroupState};
pub use store::{AsyncJournal, History, Pauses, Queue, Requests, Store, Transfers};

/// The journal's traits, for `use crate::journal::prelude::*`.
pub mod prelude {
    pub use super::store::{History as _, Pauses as _, Queue as _, Requests as _, Store as _, Transfers as _};
}

/// Local id of a group: the `id` column, shown by `status`.
pub type GroupId = i64;
/// Local id of a file of a group.
pub type FileId = i64;
/// Local id of a control request.
pub type RequestId = i64;

/// Everything the journal can fail with.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The database said no (I/O, busy past the timeout, a constraint): in
    /// its own words. Boxed so that no backend's error type is part of the
    /// journal's interface.
    #[error("journal: {0}")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error(
        "journal {path} has schema version {found}, but this binary knows versions up to {supported}; \
         use a newer spatialgen-sync (nothing was changed)"
    )]
    TooNew { path: PathBuf, found: i64, supported: i64 },
    /// A bug in the caller: the move is not one of [`GroupState::can_become`].
    #[error("group {id}: cannot go from {from} to {to}")]
    IllegalTransition { id: GroupId, from: GroupState, to: GroupState },
    #[error("no group {0} in the journal")]
    NoSuchGroup(GroupId),
    /// A write under a claim that a newer claim superseded (this node was
    /// silent past its lease and another took the group over): nothing was
    /// written. The worker that made it stops; the engine goes on.
    #[error(
        "group {id}: the claim with token {token} was superseded by {}; nothing was written",
        match .holder { Some(n) => format!("a newer claim of node {n}"), None => "a newer claim".to_string() }
    )]
    Fenced { id: GroupId, token: i64, holder: Option<String> },
    #[error("no part {part} of file {file} in the journal")]
    NoSuchPart { file: FileId, part: u32 },
    /// A value in the journal this binary cannot read (a hand-edited row?).
    #[error("journal row is invalid: {0}")]
    Invalid(String),
    /// SQLite reads the file but `PRAGMA quick_check` finds it damaged: the
    /// message names the file and what SQLite said. [`Journal::open`] renames
    /// such a file aside.
    #[error("journal is corrupt: {0}")]
    Corrupt(String),
    /// The request makes no sense for the group's state (e.g. retry a completed group).
    #[error("{0}")]
    Refused(String),
    /// The database cannot be reached (connection refused or lost, the
    /// server restarting): nothing was recorded; the call may be repeated
    /// once it is back. Only a database over the network (PostgreSQL) says this.
    #[error("journal database unreachable: {0}")]
    Unavailable(String),
    /// Another writer's transaction conflicted with this one and it kept
    /// doing so after being repeated: nothing was recorded.
    #[error("journal busy: {0}")]
    Busy(String),
    /// A call across [`AsyncJournal::call`] did not finish (its task panicked
    /// or the runtime is shutting down).
    #[error("journal call did not finish: {0}")]
    Task(String),
}

impl From<tokio::task::JoinError> for JournalError {
    fn from(e: tokio::task::JoinError) -> JournalError {
        JournalError::Task(e.to_string())
    }
}

impl From<rusqlite::Error> for JournalError {
    fn from(e: rusqlite::Error) -> JournalError {
        JournalError::Database(Box::new(e))
    }
}

impl JournalError {
    /// The database is out of reach for now ([`JournalError::Unavailable`]):
    /// wait and try again; nothing is wrong with the journal itself.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, JournalError::Unavailable(_))
    }

    /// Worth trying again later as it is: the database out of reach, or
    /// busy with other writers past the repeats.
    pub fn is_transient(&self) -> bool {
        matches!(self, JournalError::Unavailable(_) | JournalError::Busy(_))
    }

    /// SQLite calls the file damaged (not a database, malformed) or it fails
    /// `quick_check` ([`JournalError::Corrupt`]): [`Journal::open`] sets it aside.
    fn is_corruption(&self) -> bool {
        match self {
            JournalError::Database(e) => matches!(
                e.downcast_ref::<rusqlite::Error>(),
                Some(rusqlite::Error::SqliteFailure(f, _))
                    if matches!(f.code, rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
            ),
            JournalError::Corrupt(_) => true,
            _ => false,
        }
    }
}

/// The SQLite journal: the embedded implementation of [`Store`]. Cheap
/// calls, each one short transaction; share it in an `Arc`.
///
/// Calls block the calling thread for the length of one SQLite transaction
/// (tens of microseconds, or up to the busy timeout while another process
/// writes): async code reaches it through [`AsyncJournal`].
pub struct Journal {
    conn: Mutex<Connection>,
    path: PathBuf,
    /// An export's key (and root) is stored and looked up with its NFC and
    /// NFD spellings folded into one ([`crate::model::names`]): on macOS,
    /// whose filesystems treat the two as one name. Elsewhere the two are
    /// different folders and the key is the OS's bytes.
    fold_names: bool,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

impl Journal {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This journal with the NFC/NFD folding of export keys on or off,
    /// whatever the platform (tests of the macOS rule on every platform).
    #[cfg(test)]
    pub(crate) fn folding_names(mut self, fold: bool) -> Journal {
        self.fold_names = fold;
        self
    }

    /// The stored form of an export's key or root: the OS's bytes, with
    /// the two normalization spellings folded where the platform folds them.
    fn key_bytes(&self, p: &Path) -> Vec<u8> {
        crate::model::names::identity_bytes(codec::path_bytes(p), self.fold_names)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a transaction half
        // applied (rusqlite rolls back on drop), so the connection is usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T, JournalError>) -> Result<T, JournalError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

impl Store for Journal {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn generation(&self) -> Result<Option<u128>, JournalError> {
        // `data_version` moves with the other connections' commits, this
        // connection's row changes count its own (a transaction that
        // changed nothing, as most idle rounds' are, moves neither).
        let conn = self.conn();
        let others: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        Ok(Some((u128::from(others as u64) << 64) | u128::from(conn.total_changes())))
    }

    fn schema_version(&self) -> Result<i64, JournalError> {
        Ok(self.conn().query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    fn try_lock_engine(&self) -> Result<Option<EngineLock>, JournalError> {
        EngineLock::try_acquire(&self.path)
    }

    fn engine_running(&self) -> Result<bool, JournalError> {
        EngineLock::is_held(&self.path)
    }

    fn try_lock_agent(&self) -> Result<Option<AgentLock>, JournalError> {
        Ok(AgentLock::try_acquire(&self.path)?.ok())
    }

    fn renew_claims(&self, claims: &[Claim]) -> Result<Vec<GroupId>, JournalError> {
        // One engine per file, so a claim is lost only to a newer one of
        // the same engine; the check is the fleet's, on the same code path.
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT claim FROM groups WHERE id = ?1")?;
        let mut lost = Vec::new();
        for c in claims {
            let now: Option<i64> = stmt.query_row([c.id], |r| r.get(0)).optional()?;
            if now != Some(c.token) {
                lost.push(c.id);
            }
        }
        Ok(lost)
    }

    fn nodes(&self) -> Result<Vec<NodeInfo>, JournalError> {
        // One machine's journal keeps no heartbeats: there is no fleet to list.
        Ok(Vec::new())
    }

    #[cfg(test)]
    fn test_sql(&self, sql: &str) -> Result<Option<i64>, JournalError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(sql)?;
        let mut rows = stmt.query([])?;
        Ok(match rows.next()? {
            Some(r) => r.get(0)?,
            None => None,
        })
    }
}

#[cfg(test)]
mod cursor_tests;
#[cfg(test)]
mod filter_plans;
#[cfg(test)]
mod forget_tests;
#[cfg(test)]
mod names_tests;
#[cfg(test)]
mod tests;
