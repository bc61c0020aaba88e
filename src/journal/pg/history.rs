//! History lines and state moves (PostgreSQL): the same rules as SQLite's
//! `history.rs`, with the history lock taken before the first line of a
//! transaction, and a group's holder kept in `node`.

use postgres::Transaction;

use super::{EVENT_LOCK, PgJournal, col, db_err};
use crate::journal::codec::now_ms;
use crate::journal::store::History;
use crate::journal::{Ended, Event, Fence, FileId, GroupId, GroupState, JournalError, codec::parse_col};

pub(super) fn state_of(tx: &mut Transaction<'_>, id: GroupId) -> Result<GroupState, JournalError> {
    let row = tx.query_opt("SELECT state FROM groups WHERE id = $1", &[&id]).map_err(db_err)?;
    let s: String = match row {
        Some(r) => col(&r, "state")?,
        None => return Err(JournalError::NoSuchGroup(id)),
    };
    s.parse().map_err(JournalError::Invalid)
}

/// Add a history line, taking the history lock first (in the same
/// statement) if the transaction does not hold it yet: the line's id is
/// drawn under the lock, which is held until the commit, so ids commit in
/// increasing order.
pub(super) fn event(
    tx: &mut Transaction<'_>,
    id: GroupId,
    from: Option<GroupState>,
    to: Option<GroupState>,
    detail: Option<&str>,
) -> Result<(), JournalError> {
    tx.execute(
        "INSERT INTO events (group_id, at, from_state, to_state, detail)
         SELECT $1, $2, $3, $4, $5 FROM (SELECT pg_advisory_xact_lock($6)) AS held",
        &[&id, &now_ms(), &from.map(|s| s.as_str()), &to.map(|s| s.as_str()), &detail, &EVENT_LOCK],
    )
    .map_err(db_err)?;
    Ok(())
}

/// Refuse a write under a claim that a newer one superseded (see [`Fence`]).
/// The group's row is locked for the rest of the transaction, so a claim
/// (which updates the row) is ordered before or after the write, never in
/// between: a write that passed the check commits before any takeover. The
/// lock is the one a move takes anyway (`FOR NO KEY UPDATE`), so a write that
/// goes on to move the group never has to upgrade it (two writers upgrading
/// a shared lock would deadlock).
pub(super) fn check_fence(tx: &mut Transaction<'_>, id: GroupId, fence: Fence) -> Result<(), JournalError> {
    let Fence::Claim(token) = fence else { return Ok(()) };
    let r = tx
        .query_opt("SELECT claim, node FROM groups WHERE id = $1 FOR NO KEY UPDATE", &[&id])
        .map_err(db_err)?
        .ok_or(JournalError::NoSuchGroup(id))?;
    let current: i64 = col(&r, "claim")?;
    if current == token {
        return Ok(());
    }
    Err(JournalError::Fenced { id, token, holder: col(&r, "node")? })
}

/// The group of file `file_id`.
pub(super) fn group_of_file(tx: &mut Transaction<'_>, file_id: FileId) -> Result<GroupId, JournalError> {
    tx.query_opt("SELECT group_id FROM files WHERE id = $1", &[&file_id])
        .map_err(db_err)?
        .ok_or_else(|| JournalError::Invalid(format!("no file {file_id}")))
        .and_then(|r| col(&r, "group_id"))
}

/// Is `id` already in `state` (a terminal one another node reached
/// first)? Then the move asked for is a no-op, logged.
pub(super) fn already(tx: &mut Transaction<'_>, id: GroupId, state: GroupState) -> Result<bool, JournalError> {
    let now = state_of(tx, id)?;
    if now == state {
        tracing::info!(group = id, %state, "the group is already {state} (by another node); nothing to do");
    }
    Ok(now == state)
}

/// Move `id` to `to` if that is legal, with a history line (see SQLite's
/// `transition` for `queued_at`). A group that ends is released (its lease
/// cleared) and keeps the node that ended it.
pub(super) fn transition(
    j: &PgJournal,
    tx: &mut Transaction<'_>,
    id: GroupId,
    to: GroupState,
    detail: Option<&str>,
) -> Result<GroupState, JournalError> {
    // The row stays locked until the commit: two moves of one group (a
    // worker's and an operator's) are one after the other, whichever lock
    // the transaction took first.
    let row = tx.query_opt("SELECT state FROM groups WHERE id = $1 FOR NO KEY UPDATE", &[&id]).map_err(db_err)?;
    let from: GroupState = match row {
        Some(r) => col::<String>(&r, "state")?.parse().map_err(JournalError::Invalid)?,
        None => return Err(JournalError::NoSuchGroup(id)),
    };
    if !from.can_become(to) {
        return Err(JournalError::IllegalTransition { id, from, to });
    }
    let now = now_ms();
    let ends = to.is_terminal() || to == GroupState::Failed;
    tx.execute(
        "UPDATE groups SET state = $1, updated_at = $2,
                queued_at = CASE $1 WHEN 'queued' THEN COALESCE(queued_at, $2) WHEN 'waiting' THEN NULL
                                    ELSE queued_at END,
                node = CASE WHEN $4 THEN $5 ELSE node END,
                lease_until = CASE WHEN $4 THEN NULL ELSE lease_until END
         WHERE id = $3",
        &[&to.as_str(), &now, &id, &ends, &j.node_name()],
    )
    .map_err(db_err)?;
    event(tx, id, Some(from), Some(to), detail)?;
    Ok(from)
}

impl History for PgJournal {
    fn last_event_id(&self) -> Result<i64, JournalError> {
        self.with(|c| {
            c.query_one("SELECT COALESCE(MAX(id), 0) AS id FROM events", &[])
                .map_err(db_err)
                .and_then(|r| col(&r, "id"))
        })
    }

    fn ended_after(&self, cursor: i64, limit: u32) -> Result<Vec<Ended>, JournalError> {
        // Each node notifies for the groups it ended (or found, for a
        // rejection no node claimed): once across the fleet.
        let rows = self.with(|c| {
            c.query(
                "SELECT e.id, e.group_id, e.at, e.to_state, e.detail, g.name, g.key, g.library_id, g.error
                 FROM events e JOIN groups g ON g.id = e.group_id
                 WHERE e.id > $1 AND e.to_state IN ('completed','failed','rejected')
                   AND COALESCE(g.node, g.origin) = $3
                 ORDER BY e.id LIMIT $2",
                &[&cursor, &i64::from(limit), &self.node_name()],
            )
            .map_err(db_err)
        })?;
        let mut out = Vec::new();
        for r in &rows {
            let state: GroupState = col::<String>(r, "to_state")?.parse().map_err(JournalError::Invalid)?;
            let detail: Option<String> = col(r, "detail")?;
            let error: Option<String> = col(r, "error")?;
            let error = match state {
                GroupState::Failed => detail.or(error),
                GroupState::Rejected => error.or(detail),
                _ => None,
            };
            let library_id: Option<i64> = col(r, "library_id")?;
            out.push(Ended {
                event_id: col(r, "id")?,
                group_id: col(r, "group_id")?,
                state,
                name: col(r, "name")?,
                path: self.mounts().decode(&col::<Vec<u8>>(r, "key")?),
                library_id: if state == GroupState::Completed { library_id.map(|v| v as u64) } else { None },
                error,
                at_ms: col(r, "at")?,
            });
        }
        Ok(out)
    }

    fn events(&self, id: GroupId) -> Result<Vec<Event>, JournalError> {
        let rows = self.with(|c| {
            c.query("SELECT at, from_state, to_state, detail FROM events WHERE group_id = $1 ORDER BY id", &[&id])
                .map_err(db_err)
        })?;
        rows.iter()
            .map(|r| {
                Ok(Event {
                    at_ms: col(r, "at")?,
                    from: parse_col(col(r, "from_state")?)?,
                    to: parse_col(col(r, "to_state")?)?,
                    detail: col(r, "detail")?,
                })
            })
            .collect()
    }

    fn note_error(&self, id: GroupId, detail: &str) -> Result<(), JournalError> {
        self.write_lines(|tx| {
            state_of(tx, id)?;
            tx.execute("UPDATE groups SET error = $2 WHERE id = $1", &[&id, &detail]).map_err(db_err)?;
            event(tx, id, None, None, Some(detail))
        })
    }

    fn cursor(&self, name: &str) -> Result<Option<i64>, JournalError> {
        let row = self.with(|c| {
            c.query_opt("SELECT event_id FROM cursors WHERE node = $1 AND name = $2", &[&self.node_name(), &name])
                .map_err(db_err)
        })?;
        row.map(|r| col(&r, "event_id")).transpose()
    }

    fn set_cursor(&self, name: &str, event_id: i64) -> Result<(), JournalError> {
        self.write_rc(|tx| {
            tx.execute(
                "INSERT INTO cursors (node, name, event_id, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (node, name) DO UPDATE SET event_id = GREATEST(cursors.event_id, excluded.event_id),
                                                        updated_at = excluded.updated_at",
                &[&self.node_name(), &name, &event_id, &now_ms()],
            )
            .map_err(db_err)?;
            Ok(())
        })
    }

    fn drop_cursor(&self, name: &str) -> Result<bool, JournalError> {
        self.write_rc(|tx| {
            let n = tx
                .execute("DELETE FROM cursors WHERE node = $1 AND name = $2", &[&self.node_name(), &name])
                .map_err(db_err)?;
            Ok(n > 0)
        })
    }

    fn note(&self, id: GroupId, detail: &str) -> Result<(), JournalError> {
        self.write_lines(|tx| {
            state_of(tx, id)?;
            event(tx, id, None, None, Some(detail))
        })
    }
}
