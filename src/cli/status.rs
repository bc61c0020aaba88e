//! `spatialgen-sync status`, `cancel` and `retry`: read and write the journal.

use super::{GroupArgs, Outcome, StatusArgs, UsageError};

pub fn status(_args: StatusArgs) -> anyhow::Result<Outcome> {
    Err(UsageError("the status command is not available in this build yet".into()).into())
}

pub fn cancel(_args: GroupArgs) -> anyhow::Result<Outcome> {
    Err(UsageError("the cancel command is not available in this build yet".into()).into())
}

pub fn retry(_args: GroupArgs) -> anyhow::Result<Outcome> {
    Err(UsageError("the retry command is not available in this build yet".into()).into())
}
