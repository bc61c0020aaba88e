//! `spatialgen-sync plan`.

use super::{Outcome, UsageError};

pub fn run(_args: super::PlanArgs) -> anyhow::Result<Outcome> {
    Err(UsageError("the plan command is not available in this build yet".into()).into())
}
