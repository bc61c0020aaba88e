//! `spatialgen-sync run --config FILE`: the agent (see [`crate::agent`]).

use super::{Outcome, RunArgs, UsageError};
use crate::agent::AgentError;

pub fn run(args: RunArgs) -> anyhow::Result<Outcome> {
    let cfg = args.config.load()?;
    match crate::agent::serve(cfg) {
        Ok(()) => Ok(Outcome::Success),
        // Exit code 2: the operator asked for something that cannot be.
        Err(e @ AgentError::AlreadyRunning { .. }) => Err(UsageError(e.to_string()).into()),
        // Exit code 2, as for a config that does not parse: the key or a
        // token file it names cannot be read.
        Err(AgentError::Config(e)) => Err(e.into()),
        Err(e) => Err(e.into()),
    }
}
