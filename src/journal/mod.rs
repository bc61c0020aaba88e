//! The journal: every fact about every group, in one SQLite file. It is the
//! only state shared between the watcher, the upload engine and the CLI, and
//! the only module that speaks SQL.
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
//!
//! # On disk
//! One SQLite file (`[journal] path`), created mode 0600, in WAL mode with
//! `synchronous = NORMAL`: a committed transaction survives a killed process;
//! a power cut may lose the last few, which only means repeating network
//! steps that are safe to repeat (a part re-sent, a `complete` sent again).
//! Tables: `groups`, `files` (with the device and inode each had when
//! grouped), `parts` (ETags), `requests` (cancel/retry asked by the CLI),
//! `events` (history per group), `pauses` (why the queue or a watch folder
//! is held, see `pauses.rs`). Paths are stored as the
//! raw bytes of the OS string so that any file name round-trips. Times are
//! milliseconds since the Unix epoch. The schema version is `PRAGMA
//! user_version` (see `schema.rs`: the list of migrations).
//!
//! # Recovery
//! - Opening applies pending migrations in one `IMMEDIATE` transaction and
//!   refuses a journal newer than this binary ([`JournalError::TooNew`]).
//! - A file SQLite calls corrupt (not a database, malformed, or failing
//!   `quick_check`) is renamed aside as `<path>.corrupt-<UTC time>` (with its
//!   `-wal`/`-shm`), logged at error level, and a fresh journal is created;
//!   the completed groups that can still be read from the old file are
//!   copied in (so they are never uploaded again), and the watcher's startup
//!   scan finds every other export again.
//! - Two processes (the agent and a CLI call) may have the journal open at
//!   once: transactions are short and a busy timeout waits out the other.
//!   Only one *engine* works a journal at a time: see [`EngineLock`]; and
//!   only one agent (`run`): see [`AgentLock`]. Read-only commands use
//!   [`Journal::open_read_only`], which never creates, migrates or renames.

mod lock;
mod pauses;
mod schema;
mod sessions;
mod state;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use serde::Serialize;

use crate::group::UploadGroup;
use crate::model::{FileRole, Layout, Perspective};

pub use lock::{AgentLock, EngineLock};
pub use pauses::{Pause, PauseReason, PauseView};
pub use state::{FileState, GroupState};

/// Local id of a group: the `id` column, shown by `status`.
pub type GroupId = i64;
/// Local id of a file of a group.
pub type FileId = i64;
/// Local id of a control request.
pub type RequestId = i64;

/// How long a call waits for the other process's write transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the journal can fail with.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal: {0}")]
    Sql(#[from] rusqlite::Error),
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
    #[error("no part {part} of file {file} in the journal")]
    NoSuchPart { file: FileId, part: u32 },
    /// A value in the journal this binary cannot read (a hand-edited row?).
    #[error("journal row is invalid: {0}")]
    Invalid(String),
    /// The request makes no sense for the group's state (e.g. retry a completed group).
    #[error("{0}")]
    Refused(String),
}

impl JournalError {
    fn is_corruption(&self) -> bool {
        match self {
            JournalError::Sql(rusqlite::Error::SqliteFailure(e, _)) => {
                matches!(e.code, rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
            }
            JournalError::Invalid(m) => m.starts_with("quick_check"),
            _ => false,
        }
    }
}

/// What [`Journal::enqueue`] did with a finished export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Valid: it waits for the engine.
    Queued(GroupId),
    /// Breaks a rule: recorded with its violations, never sent.
    Rejected(GroupId),
    /// The same fingerprint is already known in this state; nothing new was created.
    Duplicate { id: GroupId, state: GroupState },
}

/// One row of `status` (and one element of `status --json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupSummary {
    pub id: GroupId,
    pub name: String,
    /// The export: its folder, or `<drop folder>/<stem>` in flat mode.
    pub path: String,
    pub state: GroupState,
    pub session_id: Option<String>,
    pub library_id: Option<u64>,
    pub bytes_total: u64,
    /// Bytes of parts recorded done (parts in flight are not counted).
    pub bytes_uploaded: u64,
    pub error: Option<String>,
    /// The watch folder's `priority` (higher goes first).
    pub priority: i32,
    /// 1 for the queued group the engine takes next, 2 after it, …; `None`
    /// unless `queued`. The order is [`Journal::next_group`]'s.
    pub queue_position: Option<u32>,
    pub layout: Option<String>,
    pub files: u32,
    pub parts_total: u32,
    pub parts_done: u32,
    /// The group this one re-uploads (after `retry` or an expiry).
    pub retry_of: Option<GroupId>,
    pub watch_path: Option<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub updated_at: String,
}

/// Everything the engine needs to upload one group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRecord {
    pub id: GroupId,
    pub key: PathBuf,
    pub name: String,
    pub root: PathBuf,
    pub watch_path: Option<PathBuf>,
    pub state: GroupState,
    pub layout: Option<Layout>,
    pub perspective: Option<Perspective>,
    pub description: Option<String>,
    pub folder_name: Option<String>,
    pub priority: i32,
    pub fingerprint: Option<String>,
    pub session_id: Option<String>,
    /// The server's `expiresAt`, verbatim.
    pub expires_at: Option<String>,
    /// When the session was recorded (ms since the epoch, local clock).
    pub session_at_ms: Option<i64>,
    pub library_id: Option<u64>,
    pub error: Option<String>,
    pub retry_at_ms: Option<i64>,
    pub retry_of: Option<GroupId>,
    pub user_canceled: bool,
    /// The end-of-group housekeeping (after-upload action, staged files) is done.
    pub finished: bool,
    pub created_at_ms: i64,
    pub files: Vec<FileRecord>,
}

impl GroupRecord {
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
    pub fn uploaded_bytes(&self) -> u64 {
        self.files.iter().flat_map(|f| &f.parts).filter(|p| p.done).map(|p| p.size).sum()
    }
}

/// One file of a group as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct FileRecord {
    pub id: FileId,
    pub position: u32,
    pub source: PathBuf,
    pub rel_path: String,
    pub file_name: String,
    pub role: FileRole,
    pub language: Option<String>,
    pub size: u64,
    pub mtime_ns: i64,
    /// Device and inode of `source` when it was grouped (`None` in rows
    /// written before they were recorded).
    pub dev: Option<u64>,
    pub ino: Option<u64>,
    pub staged: bool,
    pub upload_id: Option<String>,
    pub part_size: Option<u64>,
    pub total_parts: Option<u32>,
    /// `single_put` or `multipart`, as the server said.
    pub strategy: Option<String>,
    pub state: FileState,
    /// Ascending by part number; empty until the session is recorded.
    pub parts: Vec<PartRecord>,
}

/// One part of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct PartRecord {
    pub part_number: u32,
    pub byte_start: u64,
    pub size: u64,
    pub etag: Option<String>,
    pub done: bool,
}

/// What the server said about one file when the group was created.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionFile {
    pub file_id: FileId,
    pub upload_id: String,
    pub part_size: u64,
    pub total_parts: u32,
    pub strategy: String,
}

/// What a control request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Cancel,
    Retry,
}

impl RequestKind {
    fn as_str(self) -> &'static str {
        match self {
            RequestKind::Cancel => "cancel",
            RequestKind::Retry => "retry",
        }
    }
}

/// A request written by the CLI for the running engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: RequestId,
    pub group_id: GroupId,
    pub kind: RequestKind,
    pub created_at_ms: i64,
    pub handled_at_ms: Option<i64>,
    /// What the engine did, in words (`canceled`, or why not).
    pub result: Option<String>,
}

/// A group reaching `completed`, `failed` or `rejected`, from its history
/// ([`Journal::ended_after`]): what a notification needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    /// The history line's id: the cursor for the next [`Journal::ended_after`].
    pub event_id: i64,
    pub group_id: GroupId,
    /// `Completed`, `Failed` or `Rejected`.
    pub state: GroupState,
    pub name: String,
    /// The export (folder, or stem path in flat mode).
    pub path: PathBuf,
    /// Set when `Completed`.
    pub library_id: Option<u64>,
    /// Why it failed or was rejected.
    pub error: Option<String>,
    /// When it happened (ms since the epoch).
    pub at_ms: i64,
}

/// `id`'s 1-based place in `order`.
fn position_in(order: &[GroupId], id: GroupId) -> Option<u32> {
    order.iter().position(|g| *g == id).map(|i| i as u32 + 1)
}

/// One line of a group's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub at_ms: i64,
    pub from: Option<GroupState>,
    pub to: Option<GroupState>,
    pub detail: Option<String>,
}

/// The journal. Cheap calls, each one short transaction; share it in an `Arc`.
///
/// Calls block the calling thread for the length of one SQLite transaction
/// (tens of microseconds, or up to the busy timeout while another process
/// writes); the engine calls it from async tasks knowing that.
pub struct Journal {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// RFC 3339 for a millisecond timestamp.
pub fn format_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_else(|_| ms.to_string())
}

#[cfg(unix)]
fn path_bytes(p: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes().to_vec()
}

#[cfg(not(unix))]
fn path_bytes(p: &Path) -> Vec<u8> {
    p.to_string_lossy().into_owned().into_bytes()
}

#[cfg(unix)]
fn bytes_path(b: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(b))
}

#[cfg(not(unix))]
fn bytes_path(b: &[u8]) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(b).into_owned())
}

/// A path column: written as a blob, read back from a blob or text.
fn get_path(row: &Row<'_>, col: &str) -> rusqlite::Result<PathBuf> {
    match row.get_ref(col)? {
        ValueRef::Blob(b) | ValueRef::Text(b) => Ok(bytes_path(b)),
        other => Err(rusqlite::Error::InvalidColumnType(0, col.into(), other.data_type())),
    }
}

fn get_opt_path(row: &Row<'_>, col: &str) -> rusqlite::Result<Option<PathBuf>> {
    match row.get_ref(col)? {
        ValueRef::Null => Ok(None),
        _ => get_path(row, col).map(Some),
    }
}

fn parse_col<T: std::str::FromStr<Err = String>>(v: Option<String>) -> Result<Option<T>, JournalError> {
    v.map(|s| s.parse::<T>().map_err(JournalError::Invalid)).transpose()
}

fn state_of(tx: &Connection, id: GroupId) -> Result<GroupState, JournalError> {
    let s: Option<String> = tx.query_row("SELECT state FROM groups WHERE id = ?1", [id], |r| r.get(0)).optional()?;
    let s = s.ok_or(JournalError::NoSuchGroup(id))?;
    s.parse().map_err(JournalError::Invalid)
}

fn event(
    tx: &Connection,
    id: GroupId,
    from: Option<GroupState>,
    to: Option<GroupState>,
    detail: Option<&str>,
) -> Result<(), JournalError> {
    tx.execute(
        "INSERT INTO events (group_id, at, from_state, to_state, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, now_ms(), from.map(|s| s.as_str()), to.map(|s| s.as_str()), detail],
    )?;
    Ok(())
}

/// Move `id` to `to` if that is legal, with an event. Returns the state it left.
///
/// `queued_at` follows: a group that becomes `queued` keeps the time it was
/// first queued (a retry keeps its place in the queue); one that goes back to
/// `waiting` (its export changed) loses it, and gets a new one when it settles.
fn transition(tx: &Connection, id: GroupId, to: GroupState, detail: Option<&str>) -> Result<GroupState, JournalError> {
    let from = state_of(tx, id)?;
    if !from.can_become(to) {
        return Err(JournalError::IllegalTransition { id, from, to });
    }
    let now = now_ms();
    tx.execute(
        "UPDATE groups SET state = ?1, updated_at = ?2,
                queued_at = CASE ?1 WHEN 'queued' THEN COALESCE(queued_at, ?2) WHEN 'waiting' THEN NULL
                                    ELSE queued_at END
         WHERE id = ?3",
        params![to.as_str(), now, id],
    )?;
    event(tx, id, Some(from), Some(to), detail)?;
    Ok(from)
}

/// The order in which the engine takes queued groups: priority (higher
/// first), then the time the export was found finished (oldest first), then
/// id. [`Journal::next_group`] and the queue positions of `status` share it.
const QUEUE_ORDER: &str = "priority DESC, COALESCE(queued_at, created_at) ASC, id ASC";

/// Queued groups, the next one to be taken first.
fn queue_order(conn: &Connection) -> Result<Vec<GroupId>, JournalError> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT id FROM groups WHERE state = 'queued' ORDER BY {QUEUE_ORDER}"))?;
    let ids = stmt.query_map([], |r| r.get(0))?.collect::<Result<Vec<GroupId>, _>>()?;
    Ok(ids)
}

fn insert_files(tx: &Connection, id: GroupId, group: &UploadGroup) -> Result<(), JournalError> {
    tx.execute("DELETE FROM files WHERE group_id = ?1", [id])?;
    let mut stmt = tx.prepare_cached(
        "INSERT INTO files (group_id, position, source, rel_path, file_name, role, language, size, mtime_ns, staged, dev, ino)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    for (i, f) in group.files.iter().enumerate() {
        stmt.execute(params![
            id,
            i as i64,
            path_bytes(&f.source),
            f.rel_path,
            f.file_name,
            f.role.as_str(),
            f.language,
            f.size as i64,
            f.mtime_ns,
            f.staged,
            f.dev.map(|v| v as i64),
            f.ino.map(|v| v as i64),
        ])?;
    }
    Ok(())
}

fn violations_text(group: &UploadGroup) -> Option<String> {
    if group.violations.is_empty() {
        None
    } else {
        Some(group.violations.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("; "))
    }
}

const SUMMARY_SQL: &str = "
    SELECT g.id, g.name, g.key, g.state, g.session_id, g.library_id, g.error, g.priority, g.layout, g.retry_of,
           g.watch_path, g.created_at, g.updated_at,
           (SELECT COUNT(*) FROM files f WHERE f.group_id = g.id) AS nfiles,
           (SELECT COALESCE(SUM(f.size), 0) FROM files f WHERE f.group_id = g.id) AS total,
           (SELECT COUNT(*) FROM parts p JOIN files f ON p.file_id = f.id WHERE f.group_id = g.id) AS nparts,
           (SELECT COUNT(*) FROM parts p JOIN files f ON p.file_id = f.id
              WHERE f.group_id = g.id AND p.state = 'done') AS ndone,
           (SELECT COALESCE(SUM(p.size), 0) FROM parts p JOIN files f ON p.file_id = f.id
              WHERE f.group_id = g.id AND p.state = 'done') AS done
    FROM groups g";

fn summary_from_row(r: &Row<'_>) -> rusqlite::Result<(GroupSummary, String)> {
    let state: String = r.get("state")?;
    let summary = GroupSummary {
        id: r.get("id")?,
        name: r.get("name")?,
        path: get_path(r, "key")?.display().to_string(),
        state: GroupState::Waiting,
        session_id: r.get("session_id")?,
        library_id: r.get::<_, Option<i64>>("library_id")?.map(|v| v as u64),
        bytes_total: r.get::<_, i64>("total")? as u64,
        bytes_uploaded: r.get::<_, i64>("done")? as u64,
        error: r.get("error")?,
        priority: r.get("priority")?,
        queue_position: None,
        layout: r.get("layout")?,
        files: r.get::<_, i64>("nfiles")? as u32,
        parts_total: r.get::<_, i64>("nparts")? as u32,
        parts_done: r.get::<_, i64>("ndone")? as u32,
        retry_of: r.get("retry_of")?,
        watch_path: get_opt_path(r, "watch_path")?.map(|p| p.display().to_string()),
        created_at: format_ms(r.get("created_at")?),
        updated_at: format_ms(r.get("updated_at")?),
    };
    Ok((summary, state))
}

impl Journal {
    /// Open (creating if needed, mode 0600) and migrate the journal at `path`.
    /// A corrupt file is renamed aside and replaced by a fresh journal.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        let io = |source| JournalError::Io { path: path.to_owned(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        create_private(path).map_err(io)?;
        match Journal::open_existing(path) {
            Err(e) if e.is_corruption() => {
                let aside = set_aside(path).map_err(io)?;
                tracing::error!(
                    journal = %path.display(),
                    moved_to = %aside.display(),
                    error = %e,
                    "THE JOURNAL IS CORRUPT: it was renamed aside and a fresh one created; \
                     exports will be found again by the next scan"
                );
                create_private(path).map_err(io)?;
                let journal = Journal::open_existing(path)?;
                journal.salvage_completed(&aside);
                Ok(journal)
            }
            other => other,
        }
    }

    /// Copy what can still be read of the completed groups of a corrupt
    /// journal set aside at `aside` (name, export, fingerprint, session and
    /// library id), so the rescan that follows does not upload them again.
    /// Best effort: whatever cannot be read is left behind, and logged.
    fn salvage_completed(&self, aside: &Path) {
        // Paths are stored as bytes on unix: copy every value as it is.
        type Row = Vec<rusqlite::types::Value>;
        let read = || -> Result<Vec<Row>, rusqlite::Error> {
            use rusqlite::OpenFlags;
            let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let old = Connection::open_with_flags(aside, flags)?;
            let mut stmt = old.prepare(
                "SELECT key, name, root, watch_path, fingerprint, session_id, library_id, created_at, updated_at
                 FROM groups WHERE state = 'completed' AND fingerprint IS NOT NULL",
            )?;
            let mut out = Vec::new();
            let mut rows = stmt.query([])?;
            // Keep the rows read before a damaged page stops the scan.
            loop {
                match rows.next() {
                    Ok(Some(r)) => out.push((0..9).map(|i| r.get(i)).collect::<Result<Row, _>>()?),
                    Ok(None) => break,
                    Err(e) if out.is_empty() => return Err(e),
                    Err(e) => {
                        tracing::warn!(error = %e, "salvage stopped at a damaged page");
                        break;
                    }
                }
            }
            Ok(out)
        };
        let rows = match read() {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(journal = %aside.display(), error = %e, "nothing could be salvaged from the corrupt journal");
                return;
            }
        };
        let saved = self.write(|tx| {
            let mut n = 0;
            for row in &rows {
                tx.execute(
                    "INSERT INTO groups (key, name, root, watch_path, state, fingerprint, session_id, library_id,
                                         created_at, updated_at, finished)
                     VALUES (?1, ?2, ?3, ?4, 'completed', ?5, ?6, ?7, ?8, ?9, 1)",
                    rusqlite::params_from_iter(row.iter()),
                )?;
                tx.execute(
                    "INSERT INTO events (group_id, at, from_state, to_state, detail)
                     VALUES (?1, ?2, NULL, 'completed', 'recovered from a corrupt journal')",
                    params![tx.last_insert_rowid(), now_ms()],
                )?;
                n += 1;
            }
            Ok(n)
        });
        match saved {
            Ok(n) => tracing::warn!(
                groups = n,
                "completed groups recovered from the corrupt journal; they are not uploaded again"
            ),
            Err(e) => tracing::error!(error = %e, "recovering completed groups from the corrupt journal failed"),
        }
    }

    /// Open the journal at `path` for reading only (`status` and other
    /// commands that change nothing): nothing is created, migrated, checked
    /// for corruption or renamed aside; a journal at another schema version
    /// is refused with what to do. Reads see the agent's last commit.
    pub fn open_read_only(path: &Path) -> Result<Journal, JournalError> {
        use rusqlite::OpenFlags;
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > schema::LATEST {
            return Err(JournalError::TooNew { path: path.to_owned(), found: version, supported: schema::LATEST });
        }
        if version < schema::LATEST {
            return Err(JournalError::Refused(format!(
                "journal {} has schema version {version} and this binary reads version {}; it is upgraded when \
                 the agent (`spatialgen-sync run`) next starts",
                path.display(),
                schema::LATEST
            )));
        }
        Ok(Journal { conn: Mutex::new(conn), path: path.to_owned() })
    }

    fn open_existing(path: &Path) -> Result<Journal, JournalError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(JournalError::Invalid(format!("journal_mode is {mode}, WAL refused")));
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(JournalError::Invalid(format!("quick_check: {check}")));
        }
        migrate(&mut conn, path)?;
        Ok(Journal { conn: Mutex::new(conn), path: path.to_owned() })
    }

    pub fn path(&self) -> &Path {
        &self.path
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

    /// The schema version of the open journal.
    pub fn schema_version(&self) -> Result<i64, JournalError> {
        Ok(self.conn().query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// Take the engine lock without waiting: `None` if another process has it.
    pub fn try_lock_engine(&self) -> Result<Option<EngineLock>, JournalError> {
        EngineLock::try_acquire(&self.path)
    }

    /// Is an engine (the agent, or an `upload` command) working this journal now?
    pub fn engine_running(&self) -> Result<bool, JournalError> {
        EngineLock::is_held(&self.path)
    }

    // ---- the watcher's side ------------------------------------------------------------

    /// An export seen but still settling; visible in status as `waiting`.
    /// Idempotent per key: a key that already has a `waiting` or `queued` row gets that row's id.
    pub fn note_waiting(&self, key: &Path, name: &str, watch_path: Option<&Path>) -> Result<GroupId, JournalError> {
        let k = path_bytes(key);
        self.write(|tx| {
            let existing: Option<GroupId> = tx
                .query_row("SELECT id FROM groups WHERE key = ?1 AND state IN ('waiting','queued')", [&k], |r| r.get(0))
                .optional()?;
            if let Some(id) = existing {
                return Ok(id);
            }
            let now = now_ms();
            tx.execute(
                "INSERT INTO groups (key, name, root, watch_path, state, created_at, updated_at)
                 VALUES (?1, ?2, ?1, ?3, 'waiting', ?4, ?4)",
                params![k, name, watch_path.map(path_bytes), now],
            )?;
            let id = tx.last_insert_rowid();
            event(tx, id, None, Some(GroupState::Waiting), Some("seen; settling"))?;
            Ok(id)
        })
    }

    /// The export disappeared while settling: forget its waiting row.
    pub fn drop_waiting(&self, key: &Path) -> Result<(), JournalError> {
        let k = path_bytes(key);
        self.write(|tx| {
            tx.execute("DELETE FROM groups WHERE key = ?1 AND state = 'waiting'", [&k])?;
            Ok(())
        })
    }

    /// A finished export: valid → `queued`; with violations → `rejected`
    /// (reasons stored). Reuses the `waiting` (or not yet started `queued`)
    /// row of the same key. Dedup by fingerprint: if the same fingerprint is
    /// completed, queued, uploading, failed or canceled by the user, nothing
    /// new is created (and the key's waiting row is dropped); a rejected
    /// fingerprint with the same violations is not recorded twice either.
    pub fn enqueue(&self, group: &UploadGroup) -> Result<Enqueued, JournalError> {
        let k = path_bytes(&group.key);
        let violations = violations_text(group);
        let violations_json = if group.violations.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&group.violations).map_err(|e| JournalError::Invalid(e.to_string()))?)
        };
        self.write(|tx| {
            let dup: Option<(GroupId, String)> = tx
                .query_row(
                    "SELECT id, state FROM groups WHERE fingerprint = ?1
                       AND (state IN ('completed','queued','uploading','failed')
                            OR (state = 'canceled' AND user_canceled = 1)
                            OR (state = 'rejected' AND violations IS ?2))
                     ORDER BY id DESC LIMIT 1",
                    params![group.fingerprint, violations_json],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((id, state)) = dup {
                let state: GroupState = state.parse().map_err(JournalError::Invalid)?;
                tx.execute("DELETE FROM groups WHERE key = ?1 AND state = 'waiting' AND id != ?2", params![k, id])?;
                return Ok(Enqueued::Duplicate { id, state });
            }
            let target = if group.is_valid() { GroupState::Queued } else { GroupState::Rejected };
            let pending: Option<(GroupId, String)> = tx
                .query_row(
                    "SELECT id, state FROM groups WHERE key = ?1 AND state IN ('waiting','queued')",
                    [&k],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let now = now_ms();
            let id = match pending {
                Some((id, state)) => {
                    if state == "queued" {
                        transition(tx, id, GroupState::Waiting, Some("export changed before its upload started"))?;
                    }
                    let detail = match &violations {
                        Some(v) => format!("rejected: {v}"),
                        None => "settled; queued".to_string(),
                    };
                    transition(tx, id, target, Some(&detail))?;
                    id
                }
                None => {
                    tx.execute(
                        "INSERT INTO groups (key, name, root, state, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                        params![k, group.name, path_bytes(&group.root), target.as_str(), now],
                    )?;
                    let id = tx.last_insert_rowid();
                    event(tx, id, None, Some(target), violations.as_deref().or(Some("queued")))?;
                    id
                }
            };
            tx.execute(
                "UPDATE groups SET name = ?2, root = ?3, watch_path = ?4, layout = ?5, perspective = ?6,
                        description = ?7, folder_name = ?8, priority = ?9, fingerprint = ?10,
                        violations = ?11, error = ?12, updated_at = ?13
                 WHERE id = ?1",
                params![
                    id,
                    group.name,
                    path_bytes(&group.root),
                    group.watch_path.as_deref().map(path_bytes),
                    group.layout.as_str(),
                    group.perspective.map(|p| p.as_str()),
                    group.description,
                    group.folder_name,
                    group.priority,
                    group.fingerprint,
                    violations_json,
                    violations,
                    now
                ],
            )?;
            insert_files(tx, id, group)?;
            if target == GroupState::Queued {
                // Found finished just now: its place in the queue starts here.
                tx.execute("UPDATE groups SET queued_at = ?2 WHERE id = ?1", params![id, now])?;
            }
            Ok(if target == GroupState::Queued { Enqueued::Queued(id) } else { Enqueued::Rejected(id) })
        })
    }

    /// A queued (not yet uploading) group whose export changed: back to
    /// `waiting`. Returns false if it already started (the engine notices
    /// the change itself) or there is nothing pending for the key.
    pub fn unqueue(&self, key: &Path) -> Result<bool, JournalError> {
        let k = path_bytes(key);
        self.write(|tx| {
            let pending: Option<(GroupId, String)> = tx
                .query_row("SELECT id, state FROM groups WHERE key = ?1 AND state IN ('waiting','queued')", [&k], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            match pending {
                Some((id, s)) if s == "queued" => {
                    transition(tx, id, GroupState::Waiting, Some("export changed before its upload started"))?;
                    tx.execute("DELETE FROM files WHERE group_id = ?1", [id])?;
                    tx.execute("UPDATE groups SET fingerprint = NULL WHERE id = ?1", [id])?;
                    Ok(true)
                }
                Some(_) => Ok(true),
                None => Ok(false),
            }
        })
    }

    /// Rows for `status`, oldest first, queued ones with their queue position.
    pub fn list(&self) -> Result<Vec<GroupSummary>, JournalError> {
        let conn = self.conn();
        let order = queue_order(&conn)?;
        let mut stmt = conn.prepare(&format!("{SUMMARY_SQL} ORDER BY g.id"))?;
        let rows = stmt.query_map([], summary_from_row)?;
        let mut out = Vec::new();
        for row in rows {
            let (mut s, state) = row?;
            s.state = state.parse().map_err(JournalError::Invalid)?;
            s.queue_position = position_in(&order, s.id);
            out.push(s);
        }
        Ok(out)
    }

    /// One row for `status`.
    pub fn summary(&self, id: GroupId) -> Result<GroupSummary, JournalError> {
        let conn = self.conn();
        let (mut s, state) = conn
            .query_row(&format!("{SUMMARY_SQL} WHERE g.id = ?1"), [id], summary_from_row)
            .optional()?
            .ok_or(JournalError::NoSuchGroup(id))?;
        s.state = state.parse().map_err(JournalError::Invalid)?;
        if s.state == GroupState::Queued {
            s.queue_position = position_in(&queue_order(&conn)?, id);
        }
        Ok(s)
    }

    /// Queued groups in the order the engine takes them (see [`Journal::next_group`]).
    pub fn queue(&self) -> Result<Vec<GroupId>, JournalError> {
        queue_order(&self.conn())
    }

    /// How many groups are in each state, every state listed (0 when none):
    /// one aggregate query, for metrics scrapes and the service status line.
    pub fn count_by_state(&self) -> Result<Vec<(GroupState, u64)>, JournalError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT state, COUNT(*) FROM groups GROUP BY state")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out: Vec<(GroupState, u64)> = GroupState::ALL.iter().map(|s| (*s, 0)).collect();
        for row in rows {
            let (state, n) = row?;
            let state: GroupState = state.parse().map_err(JournalError::Invalid)?;
            if let Some(slot) = out.iter_mut().find(|(s, _)| *s == state) {
                slot.1 = n.max(0) as u64;
            }
        }
        Ok(out)
    }

    /// The id of the newest history line (0 when there is none): where a
    /// reader of [`Journal::ended_after`] starts so as not to replay history.
    pub fn last_event_id(&self) -> Result<i64, JournalError> {
        Ok(self.conn().query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?)
    }

    /// Groups that became `completed`, `failed` or `rejected` in history lines
    /// after `cursor` (an event id), oldest first, at most `limit`. Event ids
    /// are never reused, so passing the last [`Ended::event_id`] back misses
    /// nothing and repeats nothing.
    pub fn ended_after(&self, cursor: i64, limit: u32) -> Result<Vec<Ended>, JournalError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT e.id, e.group_id, e.at, e.to_state, e.detail, g.name, g.key, g.library_id, g.error
             FROM events e JOIN groups g ON g.id = e.group_id
             WHERE e.id > ?1 AND e.to_state IN ('completed','failed','rejected')
             ORDER BY e.id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![cursor, limit], |r| {
            Ok((
                r.get::<_, i64>("id")?,
                r.get::<_, GroupId>("group_id")?,
                r.get::<_, i64>("at")?,
                r.get::<_, String>("to_state")?,
                r.get::<_, Option<String>>("detail")?,
                r.get::<_, String>("name")?,
                get_path(r, "key")?,
                r.get::<_, Option<i64>>("library_id")?,
                r.get::<_, Option<String>>("error")?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (event_id, group_id, at_ms, state, detail, name, path, library_id, error) = row?;
            let state: GroupState = state.parse().map_err(JournalError::Invalid)?;
            // A failure's reason is the history line itself (the row's error
            // may already be cleared by a retry); a rejection's is the row's
            // list of violations, written in the same transaction.
            let error = match state {
                GroupState::Failed => detail.or(error),
                GroupState::Rejected => error.or(detail),
                _ => None,
            };
            let library_id = if state == GroupState::Completed { library_id.map(|v| v as u64) } else { None };
            out.push(Ended { event_id, group_id, state, name, path, library_id, error, at_ms });
        }
        Ok(out)
    }

    /// The group `spec` names: a local id, a server session id, or the
    /// export's path (its key or its folder). The newest match wins.
    pub fn find(&self, spec: &str) -> Result<Option<GroupId>, JournalError> {
        let conn = self.conn();
        if let Ok(id) = spec.trim().parse::<GroupId>() {
            let hit: Option<GroupId> =
                conn.query_row("SELECT id FROM groups WHERE id = ?1", [id], |r| r.get(0)).optional()?;
            if hit.is_some() {
                return Ok(hit);
            }
        }
        let hit: Option<GroupId> = conn
            .query_row("SELECT id FROM groups WHERE session_id = ?1 ORDER BY id DESC LIMIT 1", [spec.trim()], |r| {
                r.get(0)
            })
            .optional()?;
        if hit.is_some() {
            return Ok(hit);
        }
        let p = Path::new(spec);
        let mut candidates = vec![path_bytes(p)];
        if let Ok(abs) = std::path::absolute(p) {
            candidates.push(path_bytes(&abs));
        }
        if let Ok(canon) = p.canonicalize() {
            candidates.push(path_bytes(&canon));
        }
        for c in candidates {
            let trimmed: Vec<u8> = if c.len() > 1 && c.ends_with(b"/") { c[..c.len() - 1].to_vec() } else { c };
            let hit: Option<GroupId> = conn
                .query_row(
                    "SELECT id FROM groups WHERE key = ?1 OR root = ?1 ORDER BY id DESC LIMIT 1",
                    [&trimmed],
                    |r| r.get(0),
                )
                .optional()?;
            if hit.is_some() {
                return Ok(hit);
            }
        }
        Ok(None)
    }

    /// A group's history, oldest first.
    pub fn events(&self, id: GroupId) -> Result<Vec<Event>, JournalError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT at, from_state, to_state, detail FROM events WHERE group_id = ?1 ORDER BY id")?;
        let rows = stmt.query_map([id], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?, r.get::<_, Option<String>>(2)?, r.get(3)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (at_ms, from, to, detail) = row?;
            out.push(Event { at_ms, from: parse_col(from)?, to: parse_col(to)?, detail });
        }
        Ok(out)
    }

    /// Add a line to a group's history and make it the group's `error` text,
    /// without changing its state (e.g. why a completed export was kept).
    pub fn note_error(&self, id: GroupId, detail: &str) -> Result<(), JournalError> {
        self.write(|tx| {
            state_of(tx, id)?;
            tx.execute("UPDATE groups SET error = ?2 WHERE id = ?1", params![id, detail])?;
            event(tx, id, None, None, Some(detail))
        })
    }

    /// Add a line to a group's history without changing its state.
    pub fn note(&self, id: GroupId, detail: &str) -> Result<(), JournalError> {
        self.write(|tx| {
            state_of(tx, id)?;
            event(tx, id, None, None, Some(detail))
        })
    }

    // ---- the engine's side -------------------------------------------------------------

    /// Everything recorded about one group, with its files and parts.
    pub fn group(&self, id: GroupId) -> Result<GroupRecord, JournalError> {
        let conn = self.conn();
        let mut g = conn
            .query_row("SELECT * FROM groups WHERE id = ?1", [id], |r| {
                Ok((
                    GroupRecord {
                        id: r.get("id")?,
                        key: get_path(r, "key")?,
                        name: r.get("name")?,
                        root: get_path(r, "root")?,
                        watch_path: get_opt_path(r, "watch_path")?,
                        state: GroupState::Waiting,
                        layout: None,
                        perspective: None,
                        description: r.get("description")?,
                        folder_name: r.get("folder_name")?,
                        priority: r.get("priority")?,
                        fingerprint: r.get("fingerprint")?,
                        session_id: r.get("session_id")?,
                        expires_at: r.get("expires_at")?,
                        session_at_ms: r.get("session_at")?,
                        library_id: r.get::<_, Option<i64>>("library_id")?.map(|v| v as u64),
                        error: r.get("error")?,
                        retry_at_ms: r.get("retry_at")?,
                        retry_of: r.get("retry_of")?,
                        user_canceled: r.get("user_canceled")?,
                        finished: r.get("finished")?,
                        created_at_ms: r.get("created_at")?,
                        files: Vec::new(),
                    },
                    r.get::<_, String>("state")?,
                    r.get::<_, Option<String>>("layout")?,
                    r.get::<_, Option<String>>("perspective")?,
                ))
            })
            .optional()?
            .ok_or(JournalError::NoSuchGroup(id))
            .and_then(|(mut g, state, layout, perspective)| {
                g.state = state.parse().map_err(JournalError::Invalid)?;
                g.layout = parse_col(layout)?;
                g.perspective = parse_col(perspective)?;
                Ok(g)
            })?;

        let mut stmt = conn.prepare_cached("SELECT * FROM files WHERE group_id = ?1 ORDER BY position")?;
        let files = stmt.query_map([id], |r| {
            Ok((
                FileRecord {
                    id: r.get("id")?,
                    position: r.get::<_, i64>("position")? as u32,
                    source: get_path(r, "source")?,
                    rel_path: r.get("rel_path")?,
                    file_name: r.get("file_name")?,
                    role: FileRole::Video,
                    language: r.get("language")?,
                    size: r.get::<_, i64>("size")? as u64,
                    mtime_ns: r.get("mtime_ns")?,
                    dev: r.get::<_, Option<i64>>("dev")?.map(|v| v as u64),
                    ino: r.get::<_, Option<i64>>("ino")?.map(|v| v as u64),
                    staged: r.get("staged")?,
                    upload_id: r.get("upload_id")?,
                    part_size: r.get::<_, Option<i64>>("part_size")?.map(|v| v as u64),
                    total_parts: r.get::<_, Option<i64>>("total_parts")?.map(|v| v as u32),
                    strategy: r.get("strategy")?,
                    state: FileState::Pending,
                    parts: Vec::new(),
                },
                r.get::<_, String>("role")?,
                r.get::<_, String>("state")?,
            ))
        })?;
        for f in files {
            let (mut f, role, state) = f?;
            f.role = role.parse().map_err(JournalError::Invalid)?;
            f.state = state.parse().map_err(JournalError::Invalid)?;
            g.files.push(f);
        }
        let mut stmt = conn.prepare_cached(
            "SELECT part_number, byte_start, size, etag, state FROM parts WHERE file_id = ?1 ORDER BY part_number",
        )?;
        for f in &mut g.files {
            let parts = stmt.query_map([f.id], |r| {
                Ok(PartRecord {
                    part_number: r.get::<_, i64>(0)? as u32,
                    byte_start: r.get::<_, i64>(1)? as u64,
                    size: r.get::<_, i64>(2)? as u64,
                    etag: r.get(3)?,
                    done: r.get::<_, String>(4)? == "done",
                })
            })?;
            for p in parts {
                f.parts.push(p?);
            }
        }
        Ok(g)
    }

    /// The next group to work on that is not in `busy`: groups already
    /// `uploading` first (resume), then `queued` by priority (higher first),
    /// then by when the export was found finished (oldest first).
    pub fn next_group(&self, busy: &[GroupId]) -> Result<Option<GroupId>, JournalError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT id FROM groups WHERE state IN ('uploading','queued')
             ORDER BY state = 'uploading' DESC, {QUEUE_ORDER}"
        ))?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let id: GroupId = r.get(0)?;
            if !busy.contains(&id) {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// The server group exists: record its session id and every file's
    /// upload id, part size and parts (all pending), and move `queued →
    /// uploading` — one transaction, before any other network step.
    pub fn record_session(
        &self,
        id: GroupId,
        session_id: &str,
        expires_at: Option<&str>,
        files: &[SessionFile],
    ) -> Result<(), JournalError> {
        self.write(|tx| {
            transition(tx, id, GroupState::Uploading, Some(&format!("server group {session_id} created")))?;
            tx.execute(
                "UPDATE groups SET session_id = ?2, expires_at = ?3, session_at = ?4, error = NULL WHERE id = ?1",
                params![id, session_id, expires_at, now_ms()],
            )?;
            let mut upd = tx.prepare_cached(
                "UPDATE files SET upload_id = ?2, part_size = ?3, total_parts = ?4, strategy = ?5, state = 'pending'
                 WHERE id = ?1 AND group_id = ?6 RETURNING size",
            )?;
            let mut ins = tx
                .prepare_cached("INSERT INTO parts (file_id, part_number, byte_start, size) VALUES (?1, ?2, ?3, ?4)")?;
            let expected: i64 = tx.query_row("SELECT COUNT(*) FROM files WHERE group_id = ?1", [id], |r| r.get(0))?;
            if expected as usize != files.len() {
                return Err(JournalError::Invalid(format!(
                    "group {id} has {expected} files but the session lists {}",
                    files.len()
                )));
            }
            for f in files {
                let size: i64 = upd
                    .query_row(
                        params![f.file_id, f.upload_id, f.part_size as i64, f.total_parts as i64, f.strategy, id],
                        |r| r.get(0),
                    )
                    .optional()?
                    .ok_or_else(|| JournalError::Invalid(format!("file {} is not part of group {id}", f.file_id)))?;
                let size = size as u64;
                let parts = if f.part_size == 0 { 0 } else { size.div_ceil(f.part_size) };
                if f.part_size == 0 || parts.max(1) != u64::from(f.total_parts) {
                    return Err(JournalError::Invalid(format!(
                        "file {}: {} parts of {} bytes cannot cover {size} bytes",
                        f.file_id, f.total_parts, f.part_size
                    )));
                }
                for n in 1..=f.total_parts {
                    let start = u64::from(n - 1) * f.part_size;
                    let len = f.part_size.min(size - start.min(size));
                    ins.execute(params![f.file_id, n as i64, start as i64, len as i64])?;
                }
            }
            Ok(())
        })
    }

    /// A `queued` group that still has its server session (a failed group
    /// retried): back to `uploading` on that session, keeping its done parts.
    pub fn resume(&self, id: GroupId) -> Result<(), JournalError> {
        self.write(|tx| {
            let session: Option<String> =
                tx.query_row("SELECT session_id FROM groups WHERE id = ?1", [id], |r| r.get(0))?;
            let Some(session) = session else {
                return Err(JournalError::Refused(format!("group {id} has no server session to resume")));
            };
            transition(tx, id, GroupState::Uploading, Some(&format!("resuming server group {session}")))?;
            tx.execute("UPDATE groups SET error = NULL WHERE id = ?1", [id])?;
            Ok(())
        })
    }

    /// The parts of one file, ascending, as recorded now.
    pub fn parts(&self, file_id: FileId) -> Result<Vec<PartRecord>, JournalError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT part_number, byte_start, size, etag, state FROM parts WHERE file_id = ?1 ORDER BY part_number",
        )?;
        let parts = stmt
            .query_map([file_id], |r| {
                Ok(PartRecord {
                    part_number: r.get::<_, i64>(0)? as u32,
                    byte_start: r.get::<_, i64>(1)? as u64,
                    size: r.get::<_, i64>(2)? as u64,
                    etag: r.get(3)?,
                    done: r.get::<_, String>(4)? == "done",
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(parts)
    }

    /// A part's bytes are stored: record its ETag. Called once per part as it
    /// succeeds, so this is the hot path (one short transaction).
    pub fn part_done(&self, file_id: FileId, part_number: u32, etag: &str) -> Result<(), JournalError> {
        self.write(|tx| {
            let n = tx
                .prepare_cached("UPDATE parts SET etag = ?3, state = 'done' WHERE file_id = ?1 AND part_number = ?2")?
                .execute(params![file_id, part_number as i64, etag])?;
            if n != 1 {
                return Err(JournalError::NoSuchPart { file: file_id, part: part_number });
            }
            tx.prepare_cached("UPDATE files SET state = 'uploading' WHERE id = ?1 AND state = 'pending'")?
                .execute([file_id])?;
            Ok(())
        })
    }

    /// `complete` answered for a file; `library_id` if that answer carried it.
    pub fn file_completed(&self, file_id: FileId, library_id: Option<u64>) -> Result<(), JournalError> {
        self.write(|tx| {
            let gid: GroupId = tx
                .query_row("UPDATE files SET state = 'completed' WHERE id = ?1 RETURNING group_id", [file_id], |r| {
                    r.get(0)
                })
                .optional()?
                .ok_or_else(|| JournalError::Invalid(format!("no file {file_id}")))?;
            if let Some(lib) = library_id {
                tx.execute(
                    "UPDATE groups SET library_id = ?2, updated_at = ?3 WHERE id = ?1",
                    params![gid, lib as i64, now_ms()],
                )?;
            }
            Ok(())
        })
    }

    /// The last file completed: the group is in the library.
    pub fn complete_group(&self, id: GroupId, library_id: u64) -> Result<(), JournalError> {
        self.write(|tx| {
            transition(tx, id, GroupState::Completed, Some(&format!("library id {library_id}")))?;
            tx.execute(
                "UPDATE groups SET library_id = ?2, error = NULL, retry_at = NULL WHERE id = ?1",
                params![id, library_id as i64],
            )?;
            Ok(())
        })
    }

    /// A fatal error, or the retry budget ran out. `retry_at_ms`: when the
    /// engine re-queues it by itself.
    pub fn fail_group(&self, id: GroupId, error: &str, retry_at_ms: Option<i64>) -> Result<(), JournalError> {
        self.write(|tx| {
            transition(tx, id, GroupState::Failed, Some(error))?;
            tx.execute("UPDATE groups SET error = ?2, retry_at = ?3 WHERE id = ?1", params![id, error, retry_at_ms])?;
            Ok(())
        })
    }

    /// Canceled, by the user or because the source changed. A fingerprint
    /// canceled by the user is not enqueued again by the watcher.
    pub fn cancel_group(&self, id: GroupId, reason: &str, by_user: bool) -> Result<(), JournalError> {
        self.write(|tx| {
            transition(tx, id, GroupState::Canceled, Some(reason))?;
            tx.execute(
                "UPDATE groups SET error = ?2, user_canceled = ?3, retry_at = NULL WHERE id = ?1",
                params![id, reason, by_user],
            )?;
            Ok(())
        })
    }

    /// The server forgot the group. With `requeue` (its files are unchanged),
    /// a new queued group with the same files is created in the same
    /// transaction and returned; the old row is then finished.
    pub fn expire_group(&self, id: GroupId, reason: &str, requeue: bool) -> Result<Option<GroupId>, JournalError> {
        self.write(|tx| {
            transition(tx, id, GroupState::Expired, Some(reason))?;
            tx.execute("UPDATE groups SET error = ?2, retry_at = NULL WHERE id = ?1", params![id, reason])?;
            if !requeue {
                return Ok(None);
            }
            match requeue_copy(tx, id, "re-queued after expiry") {
                Ok(new) => Ok(Some(new)),
                // The watcher already has the export pending again: it will upload it.
                Err(JournalError::Refused(why)) => {
                    event(tx, id, None, None, Some(&why))?;
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        })
    }

    /// `retry`: a `failed` group goes back to `queued` on the same row (its
    /// server session, if still alive, is resumed); a `canceled` or `expired`
    /// group is re-queued as a new group with the same files. Returns the id
    /// that will upload. The caller checks first that the files are unchanged.
    pub fn retry_group(&self, id: GroupId) -> Result<GroupId, JournalError> {
        self.write(|tx| match state_of(tx, id)? {
            GroupState::Failed => {
                transition(tx, id, GroupState::Queued, Some("retry requested"))?;
                tx.execute("UPDATE groups SET error = NULL, retry_at = NULL WHERE id = ?1", [id])?;
                Ok(id)
            }
            GroupState::Canceled | GroupState::Expired => {
                let fp: Option<String> =
                    tx.query_row("SELECT fingerprint FROM groups WHERE id = ?1", [id], |r| r.get(0))?;
                let live: Option<GroupId> = tx
                    .query_row(
                        "SELECT id FROM groups WHERE fingerprint = ?1 AND id != ?2
                           AND state IN ('queued','uploading','completed','failed') LIMIT 1",
                        params![fp, id],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(other) = live {
                    return Err(JournalError::Refused(format!("group {id} is already re-uploaded by group {other}")));
                }
                requeue_copy(tx, id, "retry requested")
            }
            other => Err(JournalError::Refused(format!(
                "group {id} is {other}; only failed, canceled or expired groups can be retried"
            ))),
        })
    }

    /// Failed groups whose automatic retry is due go back to `queued`.
    pub fn requeue_due(&self, now_ms: i64) -> Result<Vec<GroupId>, JournalError> {
        self.write(|tx| {
            let ids: Vec<GroupId> = tx
                .prepare_cached(
                    "SELECT id FROM groups WHERE state = 'failed' AND retry_at IS NOT NULL AND retry_at <= ?1",
                )?
                .query_map([now_ms], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for id in &ids {
                transition(tx, *id, GroupState::Queued, Some("automatic retry"))?;
                tx.execute("UPDATE groups SET retry_at = NULL WHERE id = ?1", [id])?;
            }
            Ok(ids)
        })
    }

    /// The earliest automatic retry still ahead, if any.
    pub fn next_retry_at(&self) -> Result<Option<i64>, JournalError> {
        Ok(self.conn().query_row(
            "SELECT MIN(retry_at) FROM groups WHERE state = 'failed' AND retry_at IS NOT NULL",
            [],
            |r| r.get(0),
        )?)
    }

    /// The end-of-group housekeeping (after-upload action, receipt, staged
    /// files) is done for `id`.
    pub fn set_finished(&self, id: GroupId) -> Result<(), JournalError> {
        self.write(|tx| {
            tx.execute("UPDATE groups SET finished = 1 WHERE id = ?1", [id])?;
            Ok(())
        })
    }

    /// Does a live group other than `except` still upload the staged file `source`?
    pub fn staged_in_use(&self, source: &Path, except: GroupId) -> Result<bool, JournalError> {
        let conn = self.conn();
        let hit: Option<i64> = conn
            .query_row(
                "SELECT 1 FROM files f JOIN groups g ON f.group_id = g.id
                 WHERE f.source = ?1 AND f.staged = 1 AND g.id != ?2
                   AND g.state IN ('waiting','queued','uploading','failed') LIMIT 1",
                params![path_bytes(source), except],
                |r| r.get(0),
            )
            .optional()?;
        Ok(hit.is_some())
    }

    /// Ended groups whose housekeeping has not been done (a crash in between).
    pub fn unfinished(&self) -> Result<Vec<GroupId>, JournalError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id FROM groups WHERE finished = 0 AND state IN ('completed','rejected','canceled','expired') ORDER BY id",
        )?;
        let ids = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        Ok(ids)
    }

    // ---- control requests ---------------------------------------------------------------

    /// Ask the running engine to do something to a group.
    pub fn request(&self, id: GroupId, kind: RequestKind) -> Result<RequestId, JournalError> {
        self.write(|tx| {
            state_of(tx, id)?;
            tx.execute(
                "INSERT INTO requests (group_id, kind, created_at) VALUES (?1, ?2, ?3)",
                params![id, kind.as_str(), now_ms()],
            )?;
            let rid = tx.last_insert_rowid();
            event(tx, id, None, None, Some(&format!("{} requested", kind.as_str())))?;
            Ok(rid)
        })
    }

    /// Requests not handled yet, oldest first.
    pub fn open_requests(&self) -> Result<Vec<Request>, JournalError> {
        self.requests_where("handled_at IS NULL", None)
    }

    /// One request, as it stands now.
    pub fn request_status(&self, rid: RequestId) -> Result<Option<Request>, JournalError> {
        Ok(self.requests_where("id = ?1", Some(rid))?.into_iter().next())
    }

    fn requests_where(&self, cond: &str, arg: Option<i64>) -> Result<Vec<Request>, JournalError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT id, group_id, kind, created_at, handled_at, result FROM requests WHERE {cond} ORDER BY id"
        ))?;
        let map = |r: &Row<'_>| {
            Ok((
                r.get::<_, RequestId>(0)?,
                r.get::<_, GroupId>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<i64>>(4)?,
                r.get::<_, Option<String>>(5)?,
            ))
        };
        let rows = match arg {
            Some(a) => stmt.query_map([a], map)?.collect::<Result<Vec<_>, _>>()?,
            None => stmt.query_map([], map)?.collect::<Result<Vec<_>, _>>()?,
        };
        rows.into_iter()
            .map(|(id, group_id, kind, created_at_ms, handled_at_ms, result)| {
                let kind = match kind.as_str() {
                    "cancel" => RequestKind::Cancel,
                    "retry" => RequestKind::Retry,
                    other => return Err(JournalError::Invalid(format!("unknown request kind {other:?}"))),
                };
                Ok(Request { id, group_id, kind, created_at_ms, handled_at_ms, result })
            })
            .collect()
    }

    /// The engine handled a request; `result` says what happened.
    pub fn finish_request(&self, rid: RequestId, result: &str) -> Result<(), JournalError> {
        self.write(|tx| {
            tx.execute(
                "UPDATE requests SET handled_at = ?2, result = ?3 WHERE id = ?1",
                params![rid, now_ms(), result],
            )?;
            Ok(())
        })
    }
}

/// A new queued row with the same export and files as `id` (not the server
/// ids), linked to it by `retry_of`; the old row is marked finished because
/// its files now belong to the new one.
fn requeue_copy(tx: &Connection, id: GroupId, why: &str) -> Result<GroupId, JournalError> {
    let now = now_ms();
    let busy: Option<GroupId> = tx
        .query_row(
            "SELECT n.id FROM groups n JOIN groups o ON o.key = n.key
             WHERE o.id = ?1 AND n.state IN ('waiting','queued')",
            [id],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(other) = busy {
        return Err(JournalError::Refused(format!("the export of group {id} already has a pending group ({other})")));
    }
    tx.execute(
        "INSERT INTO groups (key, name, root, watch_path, state, layout, perspective, description, folder_name,
                             priority, fingerprint, retry_of, queued_at, created_at, updated_at)
         SELECT key, name, root, watch_path, 'queued', layout, perspective, description, folder_name,
                priority, fingerprint, id, COALESCE(queued_at, created_at), ?2, ?2
         FROM groups WHERE id = ?1",
        params![id, now],
    )?;
    let new = tx.last_insert_rowid();
    tx.execute(
        "INSERT INTO files (group_id, position, source, rel_path, file_name, role, language, size, mtime_ns, staged, dev, ino)
         SELECT ?2, position, source, rel_path, file_name, role, language, size, mtime_ns, staged, dev, ino
         FROM files WHERE group_id = ?1",
        params![id, new],
    )?;
    tx.execute("UPDATE groups SET finished = 1 WHERE id = ?1", [id])?;
    event(tx, new, None, Some(GroupState::Queued), Some(&format!("{why} (re-uploads group {id})")))?;
    event(tx, id, None, None, Some(&format!("{why}: re-uploaded as group {new}")))?;
    Ok(new)
}

/// Apply every pending migration in one IMMEDIATE transaction.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), JournalError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > schema::LATEST {
        return Err(JournalError::TooNew { path: path.to_owned(), found: version, supported: schema::LATEST });
    }
    if version < schema::LATEST {
        for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(sql)?;
            tracing::debug!(journal = %path.display(), to = i + 1, "journal schema migrated");
        }
        tx.pragma_update(None, "user_version", schema::LATEST)?;
        if version > 0 {
            tracing::info!(journal = %path.display(), from = version, to = schema::LATEST, "journal schema upgraded");
        }
    }
    tx.commit()?;
    Ok(())
}

/// Create `path` empty with mode 0600 if it does not exist, so that SQLite
/// (which copies the main file's mode to `-wal`/`-shm`) never makes it
/// readable by others.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Rename a corrupt journal (and its WAL files) to `<path>.corrupt-<time>`.
fn set_aside(path: &Path) -> std::io::Result<PathBuf> {
    let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".corrupt-{stamp}"));
    let aside = PathBuf::from(aside);
    std::fs::rename(path, &aside)?;
    for suffix in ["-wal", "-shm"] {
        let mut from = path.as_os_str().to_owned();
        from.push(suffix);
        let mut to = aside.as_os_str().to_owned();
        to.push(suffix);
        match std::fs::rename(&from, &to) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(aside)
}

#[cfg(test)]
mod tests;
