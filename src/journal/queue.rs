//! The watcher's side and the queue: exports noted, enqueued (with dedup by
//! fingerprint), unqueued; the rows `status` shows; the order the engine
//! takes groups in; retries and re-queued copies.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::codec::{SUMMARY_SQL, get_path, now_ms, path_bytes, summary_from_row};
use super::filter::{self, Param};
use super::forget;
use super::history::{event, state_of, transition};
use super::store::Queue;
use super::{Claim, Enqueued, GroupFilter, GroupId, GroupState, GroupSummary, Journal, JournalError};
use crate::group::{UploadGroup, Violation};

/// `id`'s 1-based place in `order`.
pub(super) fn position_in(order: &[GroupId], id: GroupId) -> Option<u32> {
    order.iter().position(|g| *g == id).map(|i| i as u32 + 1)
}

/// Give each queued row of `rows` its 1-based place in `order` (one map,
/// not a search of the queue per row).
pub(super) fn set_positions(rows: &mut [GroupSummary], order: &[GroupId]) {
    let place: std::collections::HashMap<GroupId, u32> =
        order.iter().enumerate().map(|(i, id)| (*id, i as u32 + 1)).collect();
    for r in rows.iter_mut().filter(|r| r.state == GroupState::Queued) {
        r.queue_position = place.get(&r.id).copied();
    }
}

/// The order in which the engine takes queued groups: priority (higher
/// first), then the time the export was found finished (oldest first), then
/// id. [`Journal::next_group`] and the queue positions of `status` share it.
pub(super) const QUEUE_ORDER: &str = "priority DESC, COALESCE(queued_at, created_at) ASC, id ASC";

/// Queued groups, the next one to be taken first.
fn queue_order(conn: &Connection) -> Result<Vec<GroupId>, JournalError> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT id FROM groups WHERE state = 'queued' ORDER BY {QUEUE_ORDER}"))?;
    let ids = stmt.query_map([], |r| r.get(0))?.collect::<Result<Vec<GroupId>, _>>()?;
    Ok(ids)
}

/// The rows of a [`SUMMARY_SQL`] query, states parsed.
fn summaries(
    rows: impl Iterator<Item = rusqlite::Result<(GroupSummary, String)>>,
) -> Result<Vec<GroupSummary>, JournalError> {
    rows.map(|row| {
        let (mut s, state) = row?;
        s.state = state.parse().map_err(JournalError::Invalid)?;
        Ok(s)
    })
    .collect()
}

fn insert_files(tx: &Connection, id: GroupId, group: &UploadGroup) -> Result<(), JournalError> {
    tx.execute("DELETE FROM files WHERE group_id = ?1", [id])?;
    let mut stmt = tx.prepare_cached(
        "INSERT INTO files (group_id, position, source, rel_path, file_name, role, language, size, mtime_ns, staged, dev, ino,
                            media)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?;
    for (i, f) in group.files.iter().enumerate() {
        stmt.execute(params![
            id,
            i as i64,
            path_bytes(&f.source),
            f.rel_path,
            f.file_name,
            f.role.as_str(),
            f.language,
            f.size as i64,
            f.mtime_ns,
            f.staged,
            f.dev.map(|v| v as i64),
            f.ino.map(|v| v as i64),
            media_json(f)?,
        ])?;
    }
    Ok(())
}

/// A file's media facts as stored (`files.media`).
pub(super) fn media_json(f: &crate::group::GroupFile) -> Result<Option<String>, JournalError> {
    f.media.as_ref().map(serde_json::to_string).transpose().map_err(|e| JournalError::Invalid(e.to_string()))
}

/// The history line of a group that was queued: with the media check's
/// warnings, when it had some.
pub(super) fn queued_detail(group: &UploadGroup, first: &str) -> String {
    if group.warnings.is_empty() {
        return first.to_string();
    }
    format!("{first}; media warnings: {}", Violation::join_tagged(&group.warnings))
}

/// A rejected group's `error`: every violation with its rule id, as
/// `status` shows it (`Shot.mov: moov missing; … [media-truncated]`).
pub(super) fn violations_text(group: &UploadGroup) -> Option<String> {
    (!group.violations.is_empty()).then(|| Violation::join_tagged(&group.violations))
}

impl Queue for Journal {
    fn note_waiting(&self, key: &Path, name: &str, watch_path: Option<&Path>) -> Result<GroupId, JournalError> {
        let k = self.key_bytes(key);
        self.write(|tx| {
            let existing: Option<GroupId> = tx
                .query_row("SELECT id FROM groups WHERE key = ?1 AND state IN ('waiting','queued')", [&k], |r| r.get(0))
                .optional()?;
            if let Some(id) = existing {
                return Ok(id);
            }
            let now = now_ms();
            tx.execute(
                "INSERT INTO groups (key, name, root, watch_path, state, created_at, updated_at)
                 VALUES (?1, ?2, ?1, ?3, 'waiting', ?4, ?4)",
                params![k, name, watch_path.map(path_bytes), now],
            )?;
            let id = tx.last_insert_rowid();
            event(tx, id, None, Some(GroupState::Waiting), Some("seen; settling"))?;
            Ok(id)
        })
    }

    fn drop_waiting(&self, key: &Path) -> Result<(), JournalError> {
        let k = self.key_bytes(key);
        self.write(|tx| {
            tx.execute("DELETE FROM groups WHERE key = ?1 AND state = 'waiting'", [&k])?;
            Ok(())
        })
    }

    fn waiting_in(&self, watch_path: &Path) -> Result<Vec<std::path::PathBuf>, JournalError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT key FROM groups WHERE state = 'waiting' AND watch_path = ?1 ORDER BY id")?;
        let keys = stmt.query_map([path_bytes(watch_path)], |r| get_path(r, "key"))?.collect::<Result<_, _>>()?;
        Ok(keys)
    }

    fn set_waiting_reason(&self, key: &Path, reason: Option<&str>) -> Result<(), JournalError> {
        let k = self.key_bytes(key);
        self.write(|tx| {
            let row: Option<(GroupId, Option<String>)> = tx
                .query_row("SELECT id, error FROM groups WHERE key = ?1 AND state = 'waiting'", [&k], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            match row {
                Some((id, now)) if now.as_deref() != reason => {
                    tx.execute(
                        "UPDATE groups SET error = ?2, updated_at = ?3 WHERE id = ?1",
                        params![id, reason, now_ms()],
                    )?;
                    if let Some(r) = reason {
                        event(tx, id, None, None, Some(r))?;
                    }
                    Ok(())
                }
                _ => Ok(()),
            }
        })
    }

    fn enqueue(&self, group: &UploadGroup) -> Result<Enqueued, JournalError> {
        let k = self.key_bytes(&group.key);
        let root = self.key_bytes(&group.root);
        let violations = violations_text(group);
        let violations_json = if group.violations.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&group.violations).map_err(|e| JournalError::Invalid(e.to_string()))?)
        };
        self.write(|tx| {
            let dup: Option<(GroupId, String)> = tx
                .query_row(
                    "SELECT id, state FROM groups WHERE fingerprint = ?1
                       AND (state IN ('completed','queued','uploading','failed')
                            OR (state = 'canceled' AND user_canceled = 1)
                            OR (state = 'rejected' AND violations IS ?2))
                     ORDER BY id DESC LIMIT 1",
                    params![group.fingerprint, violations_json],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((id, state)) = dup {
                let state: GroupState = state.parse().map_err(JournalError::Invalid)?;
                tx.execute("DELETE FROM groups WHERE key = ?1 AND state = 'waiting' AND id != ?2", params![k, id])?;
                return Ok(Enqueued::Duplicate { id, state });
            }
            let target = if group.is_valid() { GroupState::Queued } else { GroupState::Rejected };
            let pending: Option<(GroupId, String)> = tx
                .query_row(
                    "SELECT id, state FROM groups WHERE key = ?1 AND state IN ('waiting','queued')",
                    [&k],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let now = now_ms();
            let id = match pending {
                Some((id, state)) => {
                    if state == "queued" {
                        transition(tx, id, GroupState::Waiting, Some("export changed before its upload started"))?;
                    }
                    let detail = match &violations {
                        Some(v) => format!("rejected: {v}"),
                        None => queued_detail(group, "settled; queued"),
                    };
                    transition(tx, id, target, Some(&detail))?;
                    id
                }
                None => {
                    tx.execute(
                        "INSERT INTO groups (key, name, root, state, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                        params![k, group.name, root, target.as_str(), now],
                    )?;
                    let id = tx.last_insert_rowid();
                    let detail = violations.clone().unwrap_or_else(|| queued_detail(group, "queued"));
                    event(tx, id, None, Some(target), Some(&detail))?;
                    id
                }
            };
            tx.execute(
                "UPDATE groups SET name = ?2, root = ?3, watch_path = ?4, layout = ?5, perspective = ?6,
                        description = ?7, folder_name = ?8, priority = ?9, fingerprint = ?10,
                        violations = ?11, error = ?12, updated_at = ?13
                 WHERE id = ?1",
                params![
                    id,
                    group.name,
                    root,
                    group.watch_path.as_deref().map(path_bytes),
                    group.layout.as_str(),
                    group.perspective.map(|p| p.as_str()),
                    group.description,
                    group.folder_name,
                    group.priority,
                    group.fingerprint,
                    violations_json,
                    violations,
                    now
                ],
            )?;
            insert_files(tx, id, group)?;
            if target == GroupState::Queued {
                // Found finished just now: its place in the queue starts here.
                tx.execute("UPDATE groups SET queued_at = ?2 WHERE id = ?1", params![id, now])?;
            }
            Ok(if target == GroupState::Queued { Enqueued::Queued(id) } else { Enqueued::Rejected(id) })
        })
    }

    fn unqueue(&self, key: &Path) -> Result<bool, JournalError> {
        let k = self.key_bytes(key);
        self.write(|tx| {
            let pending: Option<(GroupId, String)> = tx
                .query_row("SELECT id, state FROM groups WHERE key = ?1 AND state IN ('waiting','queued')", [&k], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            match pending {
                Some((id, s)) if s == "queued" => {
                    transition(tx, id, GroupState::Waiting, Some("export changed before its upload started"))?;
                    tx.execute("DELETE FROM files WHERE group_id = ?1", [id])?;
                    tx.execute("UPDATE groups SET fingerprint = NULL WHERE id = ?1", [id])?;
                    Ok(true)
                }
                Some(_) => Ok(true),
                None => Ok(false),
            }
        })
    }

    fn list(&self) -> Result<Vec<GroupSummary>, JournalError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("{SUMMARY_SQL} ORDER BY g.id"))?;
        let mut out = summaries(stmt.query_map([], summary_from_row)?)?;
        set_positions(&mut out, &queue_order(&conn)?);
        Ok(out)
    }

    fn groups(&self, filter: &GroupFilter) -> Result<Vec<GroupSummary>, JournalError> {
        let conn = self.conn();
        let (ids, params) = filter.ids_sql(&filter::SQLITE);
        let params: Vec<rusqlite::types::Value> = params
            .into_iter()
            .map(|p| match p {
                Param::Text(t) => rusqlite::types::Value::Text(t),
                Param::Int(i) => rusqlite::types::Value::Integer(i),
            })
            .collect();
        // The page's ids first (an index walk), then its rows' sums.
        let mut stmt = conn.prepare(&format!("{SUMMARY_SQL} WHERE g.id IN ({ids}) ORDER BY g.id DESC"))?;
        let mut out = summaries(stmt.query_map(rusqlite::params_from_iter(params), summary_from_row)?)?;
        if out.iter().any(|r| r.state == GroupState::Queued) {
            set_positions(&mut out, &queue_order(&conn)?);
        }
        if filter.queue_order {
            out.sort_by_key(|r| r.queue_position.unwrap_or(u32::MAX));
        }
        Ok(out)
    }

    fn summary(&self, id: GroupId) -> Result<GroupSummary, JournalError> {
        let conn = self.conn();
        let (mut s, state) = conn
            .query_row(&format!("{SUMMARY_SQL} WHERE g.id = ?1"), [id], summary_from_row)
            .optional()?
            .ok_or(JournalError::NoSuchGroup(id))?;
        s.state = state.parse().map_err(JournalError::Invalid)?;
        if s.state == GroupState::Queued {
            s.queue_position = position_in(&queue_order(&conn)?, id);
        }
        Ok(s)
    }

    fn queue(&self) -> Result<Vec<GroupId>, JournalError> {
        queue_order(&self.conn())
    }

    fn count_by_state(&self) -> Result<Vec<(GroupState, u64)>, JournalError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT state, COUNT(*) FROM groups GROUP BY state")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out: Vec<(GroupState, u64)> = GroupState::ALL.iter().map(|s| (*s, 0)).collect();
        for row in rows {
            let (state, n) = row?;
            let state: GroupState = state.parse().map_err(JournalError::Invalid)?;
            if let Some(slot) = out.iter_mut().find(|(s, _)| *s == state) {
                slot.1 = n.max(0) as u64;
            }
        }
        Ok(out)
    }

    fn find(&self, spec: &str) -> Result<Option<GroupId>, JournalError> {
        let conn = self.conn();
        if let Ok(id) = spec.trim().parse::<GroupId>() {
            let hit: Option<GroupId> =
                conn.query_row("SELECT id FROM groups WHERE id = ?1", [id], |r| r.get(0)).optional()?;
            if hit.is_some() {
                return Ok(hit);
            }
        }
        let hit: Option<GroupId> = conn
            .query_row("SELECT id FROM groups WHERE session_id = ?1 ORDER BY id DESC LIMIT 1", [spec.trim()], |r| {
                r.get(0)
            })
            .optional()?;
        if hit.is_some() {
            return Ok(hit);
        }
        for cand in super::codec::path_candidates(spec) {
            let trimmed = super::codec::trim_separator(self.key_bytes(&cand));
            let hit: Option<GroupId> = conn
                .query_row(
                    "SELECT id FROM groups WHERE key = ?1 OR root = ?1 ORDER BY id DESC LIMIT 1",
                    [&trimmed],
                    |r| r.get(0),
                )
                .optional()?;
            if hit.is_some() {
                return Ok(hit);
            }
        }
        Ok(None)
    }

    fn next_group(&self, busy: &[GroupId]) -> Result<Option<Claim>, JournalError> {
        self.write(|tx| {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT id FROM groups WHERE state IN ('uploading','queued')
                 ORDER BY state = 'uploading' DESC, {QUEUE_ORDER}"
            ))?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let id: GroupId = r.get(0)?;
                if !busy.contains(&id) {
                    return Ok(Some(new_claim(tx, id)?));
                }
            }
            Ok(None)
        })
    }

    fn claim(&self, id: GroupId) -> Result<Option<Claim>, JournalError> {
        self.write(|tx| match state_of(tx, id)? {
            GroupState::Queued | GroupState::Uploading => Ok(Some(new_claim(tx, id)?)),
            _ => Ok(None),
        })
    }

    fn retry_group(&self, id: GroupId) -> Result<GroupId, JournalError> {
        self.write(|tx| match state_of(tx, id)? {
            GroupState::Failed => {
                transition(tx, id, GroupState::Queued, Some("retry requested"))?;
                tx.execute("UPDATE groups SET error = NULL, retry_at = NULL WHERE id = ?1", [id])?;
                Ok(id)
            }
            GroupState::Canceled | GroupState::Expired => {
                let fp: Option<String> =
                    tx.query_row("SELECT fingerprint FROM groups WHERE id = ?1", [id], |r| r.get(0))?;
                let live: Option<GroupId> = tx
                    .query_row(
                        "SELECT id FROM groups WHERE fingerprint = ?1 AND id != ?2
                           AND state IN ('queued','uploading','completed','failed') LIMIT 1",
                        params![fp, id],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(other) = live {
                    return Err(JournalError::Refused(format!("group {id} is already re-uploaded by group {other}")));
                }
                requeue_copy(tx, id, "retry requested")
            }
            other => Err(JournalError::Refused(format!(
                "group {id} is {other}; only failed, canceled or expired groups can be retried"
            ))),
        })
    }

    fn requeue_due(&self, now_ms: i64) -> Result<Vec<GroupId>, JournalError> {
        self.write(|tx| {
            let ids: Vec<GroupId> = tx
                .prepare_cached(
                    "SELECT id FROM groups WHERE state = 'failed' AND retry_at IS NOT NULL AND retry_at <= ?1",
                )?
                .query_map([now_ms], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for id in &ids {
                transition(tx, *id, GroupState::Queued, Some("automatic retry"))?;
                tx.execute("UPDATE groups SET retry_at = NULL WHERE id = ?1", [id])?;
            }
            Ok(ids)
        })
    }

    fn forgettable(&self, before_ms: i64) -> Result<Vec<GroupId>, JournalError> {
        forget::forgettable(&self.conn(), before_ms)
    }

    fn forget(&self, ids: &[GroupId], before_ms: i64) -> Result<u64, JournalError> {
        self.write(|tx| forget::forget(tx, ids, before_ms))
    }

    fn next_retry_at(&self) -> Result<Option<i64>, JournalError> {
        Ok(self.conn().query_row(
            "SELECT MIN(retry_at) FROM groups WHERE state = 'failed' AND retry_at IS NOT NULL",
            [],
            |r| r.get(0),
        )?)
    }
}

/// A new claim on `id`: its token is one more than the group's last.
fn new_claim(tx: &Connection, id: GroupId) -> Result<Claim, JournalError> {
    let token: i64 =
        tx.query_row("UPDATE groups SET claim = claim + 1 WHERE id = ?1 RETURNING claim", [id], |r| r.get(0))?;
    Ok(Claim { id, token })
}

/// A new queued row with the same export and files as `id` (not the server
/// ids), linked to it by `retry_of`; the old row is marked finished because
/// its files now belong to the new one.
pub(super) fn requeue_copy(tx: &Connection, id: GroupId, why: &str) -> Result<GroupId, JournalError> {
    let now = now_ms();
    let busy: Option<GroupId> = tx
        .query_row(
            "SELECT n.id FROM groups n JOIN groups o ON o.key = n.key
             WHERE o.id = ?1 AND n.state IN ('waiting','queued')",
            [id],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(other) = busy {
        return Err(JournalError::Refused(format!("the export of group {id} already has a pending group ({other})")));
    }
    tx.execute(
        "INSERT INTO groups (key, name, root, watch_path, state, layout, perspective, description, folder_name,
                             priority, fingerprint, retry_of, queued_at, created_at, updated_at)
         SELECT key, name, root, watch_path, 'queued', layout, perspective, description, folder_name,
                priority, fingerprint, id, COALESCE(queued_at, created_at), ?2, ?2
         FROM groups WHERE id = ?1",
        params![id, now],
    )?;
    let new = tx.last_insert_rowid();
    tx.execute(
        "INSERT INTO files (group_id, position, source, rel_path, file_name, role, language, size, mtime_ns, staged, dev, ino,
                            media)
         SELECT ?2, position, source, rel_path, file_name, role, language, size, mtime_ns, staged, dev, ino, media
         FROM files WHERE group_id = ?1",
        params![id, new],
    )?;
    tx.execute("UPDATE groups SET finished = 1 WHERE id = ?1", [id])?;
    event(tx, new, None, Some(GroupState::Queued), Some(&format!("{why} (re-uploads group {id})")))?;
    event(tx, id, None, None, Some(&format!("{why}: re-uploaded as group {new}")))?;
    Ok(new)
}
