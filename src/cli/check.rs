//! `spatialgen-sync check`.

use super::{Outcome, UsageError};

pub fn run(_args: super::CheckArgs) -> anyhow::Result<Outcome> {
    Err(UsageError("the check command is not available in this build yet".into()).into())
}
