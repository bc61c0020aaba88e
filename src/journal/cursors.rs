//! Where each reader of the history stands (`cursors`, schema v5): one row
//! per notification consumer, holding the id of the last history line it is
//! done with. The notifier moves a consumer's cursor only after that
//! consumer delivered (or gave up on) every ended group up to the line, so
//! after a crash it repeats at most the group it was working on and misses
//! none. A cursor never moves back.

use rusqlite::{Connection, OptionalExtension, params};

use super::JournalError;
use super::codec::now_ms;

pub(super) fn cursor(conn: &Connection, name: &str) -> Result<Option<i64>, JournalError> {
    Ok(conn.query_row("SELECT event_id FROM cursors WHERE name = ?1", [name], |r| r.get(0)).optional()?)
}

pub(super) fn set_cursor(conn: &Connection, name: &str, event_id: i64) -> Result<(), JournalError> {
    // Plain SQL: PostgreSQL spells MAX(a, b) as GREATEST(a, b).
    conn.execute(
        "INSERT INTO cursors (name, event_id, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET event_id = MAX(cursors.event_id, excluded.event_id),
                                          updated_at = excluded.updated_at",
        params![name, event_id, now_ms()],
    )?;
    Ok(())
}

pub(super) fn drop_cursor(conn: &Connection, name: &str) -> Result<bool, JournalError> {
    Ok(conn.execute("DELETE FROM cursors WHERE name = ?1", [name])? > 0)
}
