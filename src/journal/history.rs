//! A group's history (`events`): the state moves that append to it, the
//! lines written without a move, and the readers (`history`, notifications).

use rusqlite::{Connection, OptionalExtension, params};

use super::codec::{get_path, now_ms, parse_col};
use super::cursors;
use super::store::History;
use super::{Ended, Event, Fence, FileId, GroupId, GroupState, Journal, JournalError};

pub(super) fn state_of(tx: &Connection, id: GroupId) -> Result<GroupState, JournalError> {
    let s: Option<String> = tx.query_row("SELECT state FROM groups WHERE id = ?1", [id], |r| r.get(0)).optional()?;
    let s = s.ok_or(JournalError::NoSuchGroup(id))?;
    s.parse().map_err(JournalError::Invalid)
}

pub(super) fn event(
    tx: &Connection,
    id: GroupId,
    from: Option<GroupState>,
    to: Option<GroupState>,
    detail: Option<&str>,
) -> Result<(), JournalError> {
    tx.execute(
        "INSERT INTO events (group_id, at, from_state, to_state, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, now_ms(), from.map(|s| s.as_str()), to.map(|s| s.as_str()), detail],
    )?;
    Ok(())
}

/// Refuse a write under a claim that a newer one superseded (see [`Fence`]).
pub(super) fn check_fence(tx: &Connection, id: GroupId, fence: Fence) -> Result<(), JournalError> {
    let Fence::Claim(token) = fence else { return Ok(()) };
    let current: i64 = tx
        .query_row("SELECT claim FROM groups WHERE id = ?1", [id], |r| r.get(0))
        .optional()?
        .ok_or(JournalError::NoSuchGroup(id))?;
    if current == token { Ok(()) } else { Err(JournalError::Fenced { id, token, holder: None }) }
}

/// The group of file `file_id`.
pub(super) fn group_of_file(tx: &Connection, file_id: FileId) -> Result<GroupId, JournalError> {
    tx.query_row("SELECT group_id FROM files WHERE id = ?1", [file_id], |r| r.get(0))
        .optional()?
        .ok_or_else(|| JournalError::Invalid(format!("no file {file_id}")))
}

/// Is `id` already in `state` (a terminal one another writer reached
/// first)? Then the move asked for is a no-op, logged.
pub(super) fn already(tx: &Connection, id: GroupId, state: GroupState) -> Result<bool, JournalError> {
    let now = state_of(tx, id)?;
    if now == state {
        tracing::info!(group = id, %state, "the group is already {state}; nothing to do");
    }
    Ok(now == state)
}

/// Move `id` to `to` if that is legal, with an event. Returns the state it left.
///
/// `queued_at` follows: a group that becomes `queued` keeps the time it was
/// first queued (a retry keeps its place in the queue); one that goes back to
/// `waiting` (its export changed) loses it, and gets a new one when it settles.
pub(super) fn transition(
    tx: &Connection,
    id: GroupId,
    to: GroupState,
    detail: Option<&str>,
) -> Result<GroupState, JournalError> {
    let from = state_of(tx, id)?;
    if !from.can_become(to) {
        return Err(JournalError::IllegalTransition { id, from, to });
    }
    let now = now_ms();
    tx.execute(
        "UPDATE groups SET state = ?1, updated_at = ?2,
                queued_at = CASE ?1 WHEN 'queued' THEN COALESCE(queued_at, ?2) WHEN 'waiting' THEN NULL
                                    ELSE queued_at END
         WHERE id = ?3",
        params![to.as_str(), now, id],
    )?;
    event(tx, id, Some(from), Some(to), detail)?;
    Ok(from)
}

impl History for Journal {
    fn last_event_id(&self) -> Result<i64, JournalError> {
        Ok(self.conn().query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?)
    }

    fn ended_after(&self, cursor: i64, limit: u32) -> Result<Vec<Ended>, JournalError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT e.id, e.group_id, e.at, e.to_state, e.detail, g.name, g.key, g.library_id, g.error
             FROM events e JOIN groups g ON g.id = e.group_id
             WHERE e.id > ?1 AND e.to_state IN ('completed','failed','rejected')
             ORDER BY e.id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![cursor, limit], |r| {
            Ok((
                r.get::<_, i64>("id")?,
                r.get::<_, GroupId>("group_id")?,
                r.get::<_, i64>("at")?,
                r.get::<_, String>("to_state")?,
                r.get::<_, Option<String>>("detail")?,
                r.get::<_, String>("name")?,
                get_path(r, "key")?,
                r.get::<_, Option<i64>>("library_id")?,
                r.get::<_, Option<String>>("error")?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (event_id, group_id, at_ms, state, detail, name, path, library_id, error) = row?;
            let state: GroupState = state.parse().map_err(JournalError::Invalid)?;
            // A failure's reason is the history line itself (the row's error
            // may already be cleared by a retry); a rejection's is the row's
            // list of violations, written in the same transaction.
            let error = match state {
                GroupState::Failed => detail.or(error),
                GroupState::Rejected => error.or(detail),
                _ => None,
            };
            let library_id = if state == GroupState::Completed { library_id.map(|v| v as u64) } else { None };
            out.push(Ended { event_id, group_id, state, name, path, library_id, error, at_ms });
        }
        Ok(out)
    }

    fn cursor(&self, name: &str) -> Result<Option<i64>, JournalError> {
        cursors::cursor(&self.conn(), name)
    }

    fn set_cursor(&self, name: &str, event_id: i64) -> Result<(), JournalError> {
        self.write(|tx| cursors::set_cursor(tx, name, event_id))
    }

    fn drop_cursor(&self, name: &str) -> Result<bool, JournalError> {
        self.write(|tx| cursors::drop_cursor(tx, name))
    }

    fn events(&self, id: GroupId) -> Result<Vec<Event>, JournalError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT at, from_state, to_state, detail FROM events WHERE group_id = ?1 ORDER BY id")?;
        let rows = stmt.query_map([id], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?, r.get::<_, Option<String>>(2)?, r.get(3)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (at_ms, from, to, detail) = row?;
            out.push(Event { at_ms, from: parse_col(from)?, to: parse_col(to)?, detail });
        }
        Ok(out)
    }

    fn note_error(&self, id: GroupId, detail: &str) -> Result<(), JournalError> {
        self.write(|tx| {
            state_of(tx, id)?;
            tx.execute("UPDATE groups SET error = ?2 WHERE id = ?1", params![id, detail])?;
            event(tx, id, None, None, Some(detail))
        })
    }

    fn note(&self, id: GroupId, detail: &str) -> Result<(), JournalError> {
        self.write(|tx| {
            state_of(tx, id)?;
            event(tx, id, None, None, Some(detail))
        })
    }
}
