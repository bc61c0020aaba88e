//! The migration runner: brings a journal to [`schema::LATEST`] by applying
//! the pending entries of [`schema::MIGRATIONS`].

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::{JournalError, schema};

/// Apply every pending migration in one IMMEDIATE transaction.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), JournalError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > schema::LATEST {
        return Err(JournalError::TooNew { path: path.to_owned(), found: version, supported: schema::LATEST });
    }
    if version < schema::LATEST {
        for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(sql)?;
            tracing::debug!(journal = %path.display(), to = i + 1, "journal schema migrated");
        }
        tx.pragma_update(None, "user_version", schema::LATEST)?;
        if version > 0 {
            tracing::info!(journal = %path.display(), from = version, to = schema::LATEST, "journal schema upgraded");
        }
    }
    tx.commit()?;
    Ok(())
}
