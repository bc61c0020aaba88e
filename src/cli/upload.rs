//! `spatialgen-sync upload`.

use super::{Outcome, UsageError};

pub fn run(_args: super::UploadArgs) -> anyhow::Result<Outcome> {
    Err(UsageError("the upload command is not available in this build yet".into()).into())
}
