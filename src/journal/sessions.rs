//! Queries about a group's server sessions across its re-queued copies.

use rusqlite::params;

use super::{GroupId, Journal, JournalError};

impl Journal {
    /// How many server groups were created within `window_ms` before `now_ms`
    /// for the same export as group `id`: rows with the same key, or linked
    /// to it through `retry_of` (either way), whose `session_at` is that
    /// recent. Group `id` itself counts when its session is that recent.
    pub fn recent_sessions(&self, id: GroupId, now_ms: i64, window_ms: i64) -> Result<u32, JournalError> {
        let conn = self.conn();
        let n: i64 = conn.query_row(
            "WITH RECURSIVE chain(id) AS (
                 SELECT id FROM groups WHERE id = ?1
                 UNION
                 SELECT g.id FROM groups g JOIN chain c ON g.retry_of = c.id
                     OR g.id = (SELECT retry_of FROM groups WHERE id = c.id)
             )
             SELECT COUNT(*) FROM groups
              WHERE session_at IS NOT NULL AND session_at >= ?2
                AND (id IN (SELECT id FROM chain) OR key = (SELECT key FROM groups WHERE id = ?1))",
            params![id, now_ms.saturating_sub(window_ms)],
            |r| r.get(0),
        )?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }
}
