//! Which journal a config names: the SQLite file of `[journal] path`, or
//! the PostgreSQL database of `[journal] url` shared by a fleet.

use std::sync::Arc;

use super::pg::{Mounts, PgJournal, PgOptions};
use super::{Journal, JournalError, Store};
use crate::config::Config;

/// Open the journal `cfg` names for an agent or an engine: created and
/// migrated if needed (SQLite: a corrupt file is set aside).
pub fn open_configured(cfg: &Config) -> Result<Arc<dyn Store>, JournalError> {
    Ok(match pg_options(cfg)? {
        Some(opts) => Arc::new(PgJournal::open(opts)?),
        None => Arc::new(Journal::open(&cfg.journal.path)?),
    })
}

/// Open the journal `cfg` names for reading (`status`, `show`): nothing is
/// created, migrated or renamed.
pub fn open_configured_read_only(cfg: &Config) -> Result<Arc<dyn Store>, JournalError> {
    Ok(match pg_options(cfg)? {
        Some(opts) => Arc::new(PgJournal::open_read_only(opts)?),
        None => Arc::new(Journal::open_read_only(&cfg.journal.path)?),
    })
}

/// The PostgreSQL options of `cfg`, if it names a database.
pub fn pg_options(cfg: &Config) -> Result<Option<PgOptions>, JournalError> {
    let Some(url) = &cfg.journal.url else { return Ok(None) };
    let password = crate::config::database_password(url, cfg.journal.password_file.as_deref())
        .map_err(|e| JournalError::Invalid(e.to_string()))?;
    let mounts = cfg.watch.iter().filter_map(|w| w.name.clone().map(|n| (n, w.path.clone()))).collect();
    Ok(Some(PgOptions {
        url: url.clone(),
        password,
        node: cfg.journal.node_name(),
        lease: cfg.journal.lease.0,
        mounts: Mounts::new(mounts),
    }))
}

/// For `check`: can the database `cfg` names be reached, and at which
/// schema version is it? One line for people (no password), or the error.
/// `None` for a SQLite journal (a file, checked with the folders).
pub fn probe(cfg: &Config) -> Option<Result<String, JournalError>> {
    let opts = match pg_options(cfg) {
        Ok(Some(o)) => o,
        Ok(None) => return None,
        Err(e) => return Some(Err(e)),
    };
    let shown = format!("{} (node {})", opts.url.redacted(), opts.node);
    Some(match PgJournal::open_read_only(opts) {
        Ok(j) => j.schema_version().map(|v| format!("{shown}: reachable, schema version {v}")),
        Err(JournalError::Refused(_)) => Ok(format!(
            "{shown}: reachable, no journal there yet (the first agent to start creates it at version {})",
            super::schema::LATEST
        )),
        Err(e) => Err(e),
    })
}
