//! Opening a journal: creating it private, checking it, migrating it, and
//! what happens to a corrupt one (renamed aside, completed groups salvaged);
//! the read-only open; the ended groups whose housekeeping a crash left undone.

use crate::model::names::FOLDS_NORMALIZATION;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, params};

use super::codec::now_ms;
use super::migrate::migrate;
use super::{Journal, JournalError, schema};

/// How long a call waits for the other process's write transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

impl Journal {
    /// Open (creating if needed, mode 0600) and migrate the journal at `path`.
    /// A corrupt file is renamed aside and replaced by a fresh journal.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        let io = |source| JournalError::Io { path: path.to_owned(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        create_private(path).map_err(io)?;
        match Journal::open_existing(path) {
            Err(e) if e.is_corruption() => {
                let aside = set_aside(path).map_err(io)?;
                tracing::error!(
                    journal = %path.display(),
                    moved_to = %aside.display(),
                    error = %e,
                    "THE JOURNAL IS CORRUPT: it was renamed aside and a fresh one created; \
                     exports will be found again by the next scan"
                );
                create_private(path).map_err(io)?;
                let journal = Journal::open_existing(path)?;
                journal.salvage_completed(&aside);
                Ok(journal)
            }
            other => other,
        }
    }

    /// Copy what can still be read of the completed groups of a corrupt
    /// journal set aside at `aside` (name, export, fingerprint, session and
    /// library id), so the rescan that follows does not upload them again.
    /// Best effort: whatever cannot be read is left behind, and logged.
    fn salvage_completed(&self, aside: &Path) {
        // Paths are stored as bytes on unix: copy every value as it is.
        type Row = Vec<rusqlite::types::Value>;
        let read = || -> Result<Vec<Row>, rusqlite::Error> {
            use rusqlite::OpenFlags;
            let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let old = Connection::open_with_flags(aside, flags)?;
            let mut stmt = old.prepare(
                "SELECT key, name, root, watch_path, fingerprint, session_id, library_id, created_at, updated_at
                 FROM groups WHERE state = 'completed' AND fingerprint IS NOT NULL",
            )?;
            let mut out = Vec::new();
            let mut rows = stmt.query([])?;
            // Keep the rows read before a damaged page stops the scan.
            loop {
                match rows.next() {
                    Ok(Some(r)) => out.push((0..9).map(|i| r.get(i)).collect::<Result<Row, _>>()?),
                    Ok(None) => break,
                    Err(e) if out.is_empty() => return Err(e),
                    Err(e) => {
                        tracing::warn!(error = %e, "salvage stopped at a damaged page");
                        break;
                    }
                }
            }
            Ok(out)
        };
        let rows = match read() {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(journal = %aside.display(), error = %e, "nothing could be salvaged from the corrupt journal");
                return;
            }
        };
        let saved = self.write(|tx| {
            let mut n = 0;
            for row in &rows {
                tx.execute(
                    "INSERT INTO groups (key, name, root, watch_path, state, fingerprint, session_id, library_id,
                                         created_at, updated_at, finished)
                     VALUES (?1, ?2, ?3, ?4, 'completed', ?5, ?6, ?7, ?8, ?9, 1)",
                    rusqlite::params_from_iter(row.iter()),
                )?;
                tx.execute(
                    "INSERT INTO events (group_id, at, from_state, to_state, detail)
                     VALUES (?1, ?2, NULL, 'completed', 'recovered from a corrupt journal')",
                    params![tx.last_insert_rowid(), now_ms()],
                )?;
                n += 1;
            }
            Ok(n)
        });
        match saved {
            Ok(n) => tracing::warn!(
                groups = n,
                "completed groups recovered from the corrupt journal; they are not uploaded again"
            ),
            Err(e) => tracing::error!(error = %e, "recovering completed groups from the corrupt journal failed"),
        }
    }

    /// Open the journal at `path` for reading only (`status` and other
    /// commands that change nothing): nothing is created, migrated, checked
    /// for corruption or renamed aside; a journal at another schema version
    /// is refused with what to do. Reads see the agent's last commit.
    pub fn open_read_only(path: &Path) -> Result<Journal, JournalError> {
        use rusqlite::OpenFlags;
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > schema::LATEST {
            return Err(JournalError::TooNew { path: path.to_owned(), found: version, supported: schema::LATEST });
        }
        if version < schema::LATEST {
            return Err(JournalError::Refused(format!(
                "journal {} has schema version {version} and this binary reads version {}; it is upgraded when \
                 the agent (`spatialgen-sync run`) next starts",
                path.display(),
                schema::LATEST
            )));
        }
        Ok(Journal { conn: Mutex::new(conn), path: path.to_owned(), fold_names: FOLDS_NORMALIZATION })
    }

    fn open_existing(path: &Path) -> Result<Journal, JournalError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(JournalError::Invalid(format!("journal_mode is {mode}, WAL refused")));
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(JournalError::Corrupt(format!("{} fails quick_check: {check}", path.display())));
        }
        migrate(&mut conn, path)?;
        Ok(Journal { conn: Mutex::new(conn), path: path.to_owned(), fold_names: FOLDS_NORMALIZATION })
    }
}

/// Create `path` empty and owner-only (mode 0600; on Windows a protected
/// DACL) if it does not exist, so that SQLite never makes it readable by
/// others. On Unix SQLite copies the main file's mode to `-wal`/`-shm`; on
/// Windows those inherit the folder's ACL (`install.ps1` protects the data
/// folder).
fn create_private(path: &Path) -> std::io::Result<()> {
    match crate::owner_only::create_new(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Rename a corrupt journal (and its WAL files) to `<path>.corrupt-<time>`.
fn set_aside(path: &Path) -> std::io::Result<PathBuf> {
    let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".corrupt-{stamp}"));
    let aside = PathBuf::from(aside);
    std::fs::rename(path, &aside)?;
    for suffix in ["-wal", "-shm"] {
        let mut from = path.as_os_str().to_owned();
        from.push(suffix);
        let mut to = aside.as_os_str().to_owned();
        to.push(suffix);
        match std::fs::rename(&from, &to) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::prelude::*;

    /// A journal whose pages read fine but whose rows break the schema (a
    /// `groups.state` outside its CHECK list), as a bad disk or a hand edit leaves it.
    fn journal_failing_quick_check(dir: &Path) -> PathBuf {
        let path = dir.join("j.sqlite3");
        Journal::open(&path).unwrap().note_waiting(Path::new("/x/a"), "a", None).unwrap();
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "PRAGMA ignore_check_constraints = ON;
             UPDATE groups SET state = 'lost';
             PRAGMA wal_checkpoint(TRUNCATE);",
        )
        .unwrap();
        path
    }

    #[test]
    fn quick_check_failing_is_corruption_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        let path = journal_failing_quick_check(d.path());
        let err = Journal::open_existing(&path).unwrap_err();
        let JournalError::Corrupt(m) = &err else { panic!("expected Corrupt, got {err:?}") };
        assert!(m.contains(&path.display().to_string()), "{m}");
        assert!(m.contains("CHECK constraint failed in groups"), "{m}");
        assert!(err.is_corruption());
        assert!(!JournalError::Invalid("quick_check: ok".into()).is_corruption(), "a message is not a kind");
    }

    #[test]
    fn a_journal_failing_quick_check_is_renamed_aside() {
        let d = tempfile::tempdir().unwrap();
        let path = journal_failing_quick_check(d.path());
        let j = Journal::open(&path).unwrap();
        assert!(j.list().unwrap().is_empty(), "a fresh journal");
        let aside: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("j.sqlite3.corrupt-") && !n.ends_with("-wal") && !n.ends_with("-shm"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
    }
}
