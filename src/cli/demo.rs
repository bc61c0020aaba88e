//! `spatialgen-sync demo`.

use super::{Outcome, UsageError};

pub fn run(_args: super::DemoArgs) -> anyhow::Result<Outcome> {
    Err(UsageError("the demo command is not available in this build yet".into()).into())
}
