//! The states of a group and of a file, and which moves between them are legal.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a group is in its life. Spelled lower-case in the journal, in
/// `status` and in `status --json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupState {
    /// Seen on disk, still settling: nothing is known about its files yet.
    Waiting,
    /// Valid and finished; the engine will create a server group for it.
    Queued,
    /// The server group exists (its session id is recorded); parts are moving.
    Uploading,
    /// Every file completed and the library id is recorded.
    Completed,
    /// Breaks an API rule; never sent. Fixed on disk, it comes back as a new fingerprint.
    Rejected,
    /// A fatal error or the retry budget ran out; retried later or by `retry`.
    Failed,
    /// Canceled by the user, or because its source changed or vanished mid-upload.
    Canceled,
    /// The server's 5-day window passed; re-queued as a new group if the files are unchanged.
    Expired,
}

impl GroupState {
    pub const ALL: [GroupState; 8] = [
        GroupState::Waiting,
        GroupState::Queued,
        GroupState::Uploading,
        GroupState::Completed,
        GroupState::Rejected,
        GroupState::Failed,
        GroupState::Canceled,
        GroupState::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Waiting => "waiting",
            GroupState::Queued => "queued",
            GroupState::Uploading => "uploading",
            GroupState::Completed => "completed",
            GroupState::Rejected => "rejected",
            GroupState::Failed => "failed",
            GroupState::Canceled => "canceled",
            GroupState::Expired => "expired",
        }
    }

    /// No further move is possible on this row (a retry makes a new row).
    pub fn is_terminal(self) -> bool {
        matches!(self, GroupState::Completed | GroupState::Rejected | GroupState::Canceled | GroupState::Expired)
    }

    /// The legal moves. Everything else is a bug in the caller and the
    /// journal answers it with [`super::JournalError::IllegalTransition`].
    ///
    /// - `waiting → queued | rejected`: the export settled and was grouped.
    /// - `queued → waiting`: the export changed again before its upload started.
    /// - `queued → uploading`: the server group was created.
    /// - `queued | uploading → failed`: a fatal error, or the retry budget ran out.
    /// - `failed → queued`: `retry`, or the automatic retry after `retry_failed_after`.
    /// - `queued | uploading | failed → canceled`: the user, or a changed source.
    /// - `uploading → completed`: the library id is known.
    /// - `uploading | failed → expired`: the server forgot the group (404, or 5 days passed).
    pub fn can_become(self, to: GroupState) -> bool {
        use GroupState::*;
        matches!(
            (self, to),
            (Waiting, Queued)
                | (Waiting, Rejected)
                | (Queued, Waiting)
                | (Queued, Uploading)
                | (Queued, Failed)
                | (Queued, Canceled)
                | (Uploading, Completed)
                | (Uploading, Failed)
                | (Uploading, Canceled)
                | (Uploading, Expired)
                | (Failed, Queued)
                | (Failed, Canceled)
                | (Failed, Expired)
        )
    }
}

impl fmt::Display for GroupState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GroupState {
    type Err = String;
    fn from_str(s: &str) -> Result<GroupState, String> {
        GroupState::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| {
            format!(
                "unknown group state {s:?}; expected one of {}",
                GroupState::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
            )
        })
    }
}

/// Where one file of an uploading group is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileState {
    /// No part recorded yet.
    Pending,
    /// At least one part recorded done.
    Uploading,
    /// `complete` answered; the server has the whole file.
    Completed,
}

impl FileState {
    pub fn as_str(self) -> &'static str {
        match self {
            FileState::Pending => "pending",
            FileState::Uploading => "uploading",
            FileState::Completed => "completed",
        }
    }
}

impl FromStr for FileState {
    type Err = String;
    fn from_str(s: &str) -> Result<FileState, String> {
        match s {
            "pending" => Ok(FileState::Pending),
            "uploading" => Ok(FileState::Uploading),
            "completed" => Ok(FileState::Completed),
            other => Err(format!("unknown file state {other:?}")),
        }
    }
}
