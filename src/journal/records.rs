//! The public record types: what the journal's reads return and what its
//! writes take, besides the states (`state.rs`) and the pauses (`pauses.rs`).

use std::path::PathBuf;

use serde::Serialize;

use super::{FileId, FileState, GroupId, GroupState, RequestId};
use crate::model::{FileRole, Layout, Perspective, Strategy};

/// A claim on a group: the group, and the fencing token the claim carries.
/// Every claim or takeover of a group gets a larger token than the last
/// (`groups.claim`), so a write made under an older claim can be told apart
/// and refused ([`Fence`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Claim {
    pub id: GroupId,
    pub token: i64,
}

impl Claim {
    /// The fence of writes made under this claim.
    pub fn fence(self) -> Fence {
        Fence::Claim(self.token)
    }
}

/// Under what a write to a group is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    /// By a worker holding the claim with this token: the write happens only
    /// while that claim is the group's newest; a write under a claim that a
    /// newer one superseded changes nothing and answers [`JournalError::Fenced`](super::JournalError::Fenced).
    Claim(i64),
    /// Outside any claim: an operator's act (`cancel` or `retry` with no
    /// engine running), the watcher, the housekeeping of a group that ended.
    Unclaimed,
}

/// What [`Journal::enqueue`](super::Queue::enqueue) did with a finished export.
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
    /// unless `queued`. The order is [`Journal::next_group`](super::Queue::next_group)'s.
    pub queue_position: Option<u32>,
    pub layout: Option<String>,
    pub files: u32,
    pub parts_total: u32,
    pub parts_done: u32,
    /// The group this one re-uploads (after `retry` or an expiry).
    pub retry_of: Option<GroupId>,
    pub watch_path: Option<String>,
    /// In a fleet, the node that holds or ended the group (`None` on a
    /// single machine's journal, and for a group no node has taken yet).
    pub node: Option<String>,
    /// A completed group's after-upload step that failed and will be tried
    /// again (`None` when none is pending: never failed, done, or given up).
    pub after_upload: Option<AfterUploadRetry>,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub updated_at: String,
}

/// How many times the after-upload step of a completed group is tried
/// before its files are kept where they are.
pub const AFTER_UPLOAD_ATTEMPTS: u32 = 6;

/// A pending retry of a completed group's after-upload step (delete or move
/// the export, write the receipt), from the group's `after_*` columns: in
/// `status --json` as `afterUpload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AfterUploadRetry {
    /// Attempts that failed so far (1 after the first).
    pub failures: u32,
    /// How many attempts there are in all ([`AFTER_UPLOAD_ATTEMPTS`]).
    pub attempts: u32,
    /// Why the newest attempt failed.
    pub error: String,
    /// When the next attempt is due (ms since the epoch; RFC 3339 in JSON).
    #[serde(rename = "nextAttempt", serialize_with = "ms_as_rfc3339")]
    pub next_attempt_ms: i64,
}

impl AfterUploadRetry {
    /// The pending retry from a group's columns: `None` unless the group's
    /// housekeeping is still to do and a next attempt is recorded.
    pub(crate) fn from_columns(
        finished: bool,
        failures: i64,
        error: Option<String>,
        next_ms: Option<i64>,
    ) -> Option<AfterUploadRetry> {
        let next_attempt_ms = next_ms.filter(|_| !finished && failures > 0)?;
        Some(AfterUploadRetry {
            failures: u32::try_from(failures).unwrap_or(u32::MAX),
            attempts: AFTER_UPLOAD_ATTEMPTS,
            error: error.unwrap_or_default(),
            next_attempt_ms,
        })
    }

    /// One line for people, `when` being the next attempt's time as the
    /// reader should see it: `after-upload step failed (attempt 2 of 6):
    /// <error>; next try <when>`.
    pub fn describe(&self, when: &str) -> String {
        format!(
            "after-upload step failed (attempt {} of {}): {}; next try {when}",
            self.failures, self.attempts, self.error
        )
    }
}

fn ms_as_rfc3339<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&super::format_ms(*ms))
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
    /// Failed attempts of the after-upload step so far.
    pub after_failures: u32,
    /// Why the newest attempt of the after-upload step failed.
    pub after_error: Option<String>,
    /// When the after-upload step is tried next (ms since the epoch);
    /// `None`: at once (it never failed), or not again.
    pub after_next_ms: Option<i64>,
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
    pub strategy: Option<Strategy>,
    pub state: FileState,
    /// What the container said when it was grouped (`None`: not looked into).
    pub media: Option<crate::media::MediaFacts>,
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
    pub strategy: Strategy,
}

/// What a control request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Cancel,
    Retry,
}

impl RequestKind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            RequestKind::Cancel => "cancel",
            RequestKind::Retry => "retry",
        }
    }
}

/// What the engine did with a control request.
///
/// Stored as words in the `requests.result` column (the same words earlier
/// versions wrote, so old rows read back): `canceling`, `canceled`,
/// `re-queued as group N`, `not canceled: …`, or the reason it was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestResult {
    /// A cancel was handed to the group's running worker; the request is
    /// answered again when the worker has ended.
    Taken,
    Canceled,
    /// Not canceled, and why (the group ended first, completed on the server, ...).
    NotCanceled(String),
    /// A retry re-queued the group, as this group (the same id, or a new one).
    Requeued(GroupId),
    /// Refused, and why (a retry of a completed group, ...).
    Refused(String),
}

impl RequestResult {
    const TAKEN: &'static str = "canceling";
    const CANCELED: &'static str = "canceled";
    const NOT_CANCELED: &'static str = "not canceled: ";
    const REQUEUED: &'static str = "re-queued as group ";

    /// The words stored for it.
    pub fn to_text(&self) -> String {
        match self {
            RequestResult::Taken => Self::TAKEN.to_string(),
            RequestResult::Canceled => Self::CANCELED.to_string(),
            RequestResult::NotCanceled(why) => format!("{}{why}", Self::NOT_CANCELED),
            RequestResult::Requeued(id) => format!("{}{id}", Self::REQUEUED),
            RequestResult::Refused(why) => why.clone(),
        }
    }

    /// Read stored words back (any text that is not one of the forms is a refusal's reason).
    pub fn from_text(text: &str) -> RequestResult {
        if text == Self::TAKEN {
            RequestResult::Taken
        } else if text == Self::CANCELED {
            RequestResult::Canceled
        } else if let Some(why) = text.strip_prefix(Self::NOT_CANCELED) {
            RequestResult::NotCanceled(why.to_string())
        } else if let Some(id) = text.strip_prefix(Self::REQUEUED).and_then(|n| n.parse().ok()) {
            RequestResult::Requeued(id)
        } else {
            RequestResult::Refused(text.to_string())
        }
    }
}

impl std::fmt::Display for RequestResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_text())
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
    /// What the engine did; `None` until it handled the request.
    pub result: Option<RequestResult>,
}

/// A group reaching `completed`, `failed` or `rejected`, from its history
/// ([`Journal::ended_after`](super::History::ended_after)): what a notification needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    /// The history line's id: the cursor for the next [`Journal::ended_after`](super::History::ended_after).
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

/// One line of a group's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub at_ms: i64,
    pub from: Option<GroupState>,
    pub to: Option<GroupState>,
    pub detail: Option<String>,
}

/// One node of a fleet as the journal last heard from it
/// ([`Store::nodes`](super::Store::nodes)): what the console's node list shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node's name (`[journal] node`, or its host name).
    pub name: String,
    /// When its engine last said it is alive (ms since the epoch, by the
    /// database's clock).
    pub last_seen_ms: i64,
    /// Groups it is uploading under a claim whose lease still runs.
    pub held: u64,
    /// The version of `spatialgen-sync` it runs.
    pub version: String,
    /// Its lease: silent for longer than this, its claims may be taken over.
    pub lease_ms: i64,
    /// Not heard from within its lease (stopped, frozen, cut off): another
    /// node may take its groups over.
    pub silent: bool,
}
