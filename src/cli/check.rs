//! `spatialgen-sync check --config FILE`: validate everything that can be
//! validated without talking to SpatialGen, report every problem at once
//! (exit 2), else print the effective settings with the key redacted.

use super::{CheckArgs, Outcome};
use crate::config::ConfigError;

pub fn run(args: CheckArgs) -> anyhow::Result<Outcome> {
    crate::logging::init_quiet();
    let cfg = args.config.load()?;
    let mut problems = Vec::new();
    if let Err(ConfigError::Invalid(p)) = cfg.check_environment() {
        problems.extend(p.into_iter().map(|p| format!("{}: {p}", cfg.source.display())));
    }
    let key_line = match cfg.api_key() {
        Ok(_) => match &cfg.api.api_key_file {
            Some(f) => format!("# api key: read from {} (redacted)", f.display()),
            None => format!("# api key: read from ${} (redacted)", cfg.api.api_key_env),
        },
        Err(e) => {
            problems.push(format!("{}: {e}", cfg.source.display()));
            String::new()
        }
    };
    let journal_line = match crate::journal::probe(&cfg) {
        None => None,
        Some(Ok(line)) => Some(format!("# journal: {line}")),
        Some(Err(e)) => {
            problems.push(format!("{}: journal.url: {e}", cfg.source.display()));
            None
        }
    };
    let secret_line = match cfg.hooks.webhook_secret() {
        Ok(Some(_)) => cfg
            .hooks
            .webhook_secret_file
            .as_ref()
            .map(|f| format!("# webhook signing secret: read from {} (redacted)\n", f.display()))
            .unwrap_or_default(),
        Ok(None) => String::new(),
        Err(e) => {
            problems.push(format!("{}: {e}", cfg.source.display()));
            String::new()
        }
    };
    let token_line = match cfg.http_token() {
        Ok(Some(_)) => cfg
            .http
            .as_ref()
            .and_then(|h| h.token_file.as_ref())
            .map(|f| format!("# http token: read from {} (redacted)\n", f.display()))
            .unwrap_or_default(),
        Ok(None) if cfg.http_listen().is_some() => "# http: no token_file; the control API is read-only\n".into(),
        Ok(None) => String::new(),
        Err(e) => {
            problems.push(format!("{}: {e}", cfg.source.display()));
            String::new()
        }
    };
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems).into());
    }
    println!("# {}: OK", cfg.source.display());
    println!("{key_line}");
    if let Some(line) = journal_line {
        println!("{line}");
    }
    print!("{secret_line}");
    print!("{token_line}");
    println!("# effective settings (defaults filled in, paths made absolute):");
    print!("{}", cfg.to_toml());
    if let Some((soft, hard)) = crate::agent::fds::limits()
        && let Some(w) = crate::agent::fds::warning(&cfg, soft, hard)
    {
        eprintln!("warning: {w}");
    }
    Ok(Outcome::Success)
}
