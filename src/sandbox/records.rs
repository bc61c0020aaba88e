//! What the sandbox shows of itself: the contract violations it recorded,
//! its groups and their files, and the library of completed groups.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::model::{FileRole, Layout, Perspective};

/// A protocol violation the sandbox saw a client commit: a breach of the
/// API contract (not a rule an upload group breaks, which is
/// `group::Violation`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContractViolation {
    pub kind: ContractViolationKind,
    /// What happened, in plain words (never the key itself).
    pub detail: String,
}

/// One API call or storage PUT, as it arrived ([`super::Sandbox::calls`]):
/// which key made it, for which group, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// When it arrived, before any latency, fault or check.
    pub at: Instant,
    /// The API key that made it (as sent, trimmed; empty when missing). For
    /// a storage PUT, the key of the `part-urls` call that issued its URL
    /// (empty for a URL the server did not sign, or one issued so long ago
    /// that the log no longer remembers it).
    pub caller: String,
    /// `start`, `part-urls`, `complete`, `cancel`, or `put` (a storage PUT).
    pub endpoint: &'static str,
    /// The group it was for: the session in the path; for `start`, the
    /// session it created (`None` until then, or when it was refused); for a
    /// PUT, the session its upload belongs to (`None` for an unknown upload).
    pub session: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
/// Which part of the contract a [`ContractViolation`] breaks.
pub enum ContractViolationKind {
    /// An API call without `X-SPATIALGEN-APPKEY`.
    MissingKey,
    /// A storage PUT carried `X-SPATIALGEN-APPKEY`: the key leaked to storage.
    KeyOnStoragePut,
    /// `complete` listed parts out of ascending order (or repeated one).
    UnsortedParts,
    /// `complete` left out parts, or named parts that were never uploaded.
    MissingParts,
    /// `complete` named an ETag that does not match the bytes stored.
    EtagMismatch,
    /// An API call on a group after it was canceled.
    CallAfterCancel,
}

/// Status of a group on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    Pending,
    Completed,
    Canceled,
    Expired,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Pending => "pending",
            SessionStatus::Completed => "completed",
            SessionStatus::Canceled => "canceled",
            SessionStatus::Expired => "expired",
        }
    }
}

/// Status of one file on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileStatus {
    /// No part received yet.
    Pending,
    /// Some part received.
    Uploading,
    Completed,
    Canceled,
    Expired,
}

impl FileStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FileStatus::Pending => "pending",
            FileStatus::Uploading => "uploading",
            FileStatus::Completed => "completed",
            FileStatus::Canceled => "canceled",
            FileStatus::Expired => "expired",
        }
    }
}

/// One upload group as the server sees it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    pub id: String,
    pub video_name: String,
    pub layout: Layout,
    pub perspective: Option<Perspective>,
    pub status: SessionStatus,
    pub created_at: String,
    pub expires_at: String,
    pub library_id: Option<u64>,
    pub files: Vec<FileInfo>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileInfo {
    pub upload_id: String,
    pub file_name: String,
    pub role: FileRole,
    pub language: Option<String>,
    pub status: FileStatus,
    pub total_bytes: u64,
    pub part_size: u64,
    pub total_parts: u64,
    /// Part numbers received in full, ascending.
    pub parts_received: Vec<u64>,
    /// Part numbers a PUT is writing right now, ascending.
    pub parts_in_flight: Vec<u64>,
}

/// One completed group: what SpatialGen would put in the library.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LibraryEntry {
    pub library_id: u64,
    pub session_id: String,
    pub video_name: String,
    pub layout: Layout,
    pub perspective: Option<Perspective>,
    pub files: Vec<LibraryFile>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LibraryFile {
    pub file_name: String,
    pub role: FileRole,
    pub language: Option<String>,
    pub size: u64,
    /// Hex SHA-256 of the stored bytes (empty if the file could not be read).
    pub sha256: String,
    /// Where the bytes are.
    pub path: PathBuf,
}
