//! `spatialgen-sync run`.

use super::{Outcome, UsageError};

pub fn run(_args: super::RunArgs) -> anyhow::Result<Outcome> {
    Err(UsageError("the run command is not available in this build yet".into()).into())
}
