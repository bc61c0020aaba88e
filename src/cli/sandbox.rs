//! `spatialgen-sync sandbox`.

use super::{Outcome, UsageError};

pub fn run(_args: super::SandboxArgs) -> anyhow::Result<Outcome> {
    Err(UsageError("the sandbox command is not available in this build yet".into()).into())
}
