//! `forget`: dropping old ended groups, with their files, parts, history
//! and requests (the foreign keys cascade), in one transaction.
//!
//! What may be forgotten: a group that is `completed`, `rejected`,
//! `canceled` or `expired`, whose end-of-group housekeeping is done
//! (`finished`), and that has not changed since before the cutoff. Never a
//! `waiting`, `queued` or `uploading` one, and not a `failed` one either: a
//! failed group still waits for an operator's `retry` (or an automatic
//! one); cancel it first to forget it. Groups that were re-queued as a
//! later group (`retry_of`) lose only that link.

use rusqlite::{Connection, params};

use super::{GroupId, JournalError};

/// The states `forget` may drop.
pub(super) const FORGETTABLE: &str = "'completed','rejected','canceled','expired'";

pub(super) fn forgettable(conn: &Connection, before_ms: i64) -> Result<Vec<GroupId>, JournalError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT id FROM groups WHERE state IN ({FORGETTABLE}) AND finished = 1 AND updated_at < ?1 ORDER BY id"
    ))?;
    let ids = stmt.query_map([before_ms], |r| r.get(0))?.collect::<Result<Vec<GroupId>, _>>()?;
    Ok(ids)
}

pub(super) fn forget(tx: &Connection, ids: &[GroupId], before_ms: i64) -> Result<u64, JournalError> {
    let mut n = 0;
    for &id in ids {
        // Checked again inside the transaction: a group retried or changed
        // since it was listed is kept.
        let still: bool = tx.query_row(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM groups
                   WHERE id = ?1 AND state IN ({FORGETTABLE}) AND finished = 1 AND updated_at < ?2)"
            ),
            params![id, before_ms],
            |r| r.get(0),
        )?;
        if !still {
            continue;
        }
        tx.execute("UPDATE groups SET retry_of = NULL WHERE retry_of = ?1", [id])?;
        n += tx.execute("DELETE FROM groups WHERE id = ?1", [id])? as u64;
    }
    Ok(n)
}
