//! The engine's side: a group's record, its server session and parts, and
//! the moves that end an upload (completed, failed, canceled, expired).

use std::path::Path;

use rusqlite::{OptionalExtension, params};

use super::codec::{get_opt_path, get_path, media_col, now_ms, parse_col, part_from_row, path_bytes};
use super::history::{already, check_fence, event, group_of_file, transition};
use super::queue::requeue_copy;
use super::store::Transfers;
use super::{
    Fence, FileId, FileRecord, FileState, GroupId, GroupRecord, GroupState, Journal, JournalError, PartRecord,
    SessionFile,
};
use crate::model::FileRole;

impl Transfers for Journal {
    fn group(&self, id: GroupId) -> Result<GroupRecord, JournalError> {
        let conn = self.conn();
        let mut g = conn
            .query_row("SELECT * FROM groups WHERE id = ?1", [id], |r| {
                Ok((
                    GroupRecord {
                        id: r.get("id")?,
                        key: get_path(r, "key")?,
                        name: r.get("name")?,
                        root: get_path(r, "root")?,
                        watch_path: get_opt_path(r, "watch_path")?,
                        state: GroupState::Waiting,
                        layout: None,
                        perspective: None,
                        description: r.get("description")?,
                        folder_name: r.get("folder_name")?,
                        priority: r.get("priority")?,
                        fingerprint: r.get("fingerprint")?,
                        session_id: r.get("session_id")?,
                        expires_at: r.get("expires_at")?,
                        session_at_ms: r.get("session_at")?,
                        library_id: r.get::<_, Option<i64>>("library_id")?.map(|v| v as u64),
                        error: r.get("error")?,
                        retry_at_ms: r.get("retry_at")?,
                        retry_of: r.get("retry_of")?,
                        user_canceled: r.get("user_canceled")?,
                        finished: r.get("finished")?,
                        after_failures: u32::try_from(r.get::<_, i64>("after_failures")?).unwrap_or(0),
                        after_error: r.get("after_error")?,
                        after_next_ms: r.get("after_next_ms")?,
                        created_at_ms: r.get("created_at")?,
                        files: Vec::new(),
                    },
                    r.get::<_, String>("state")?,
                    r.get::<_, Option<String>>("layout")?,
                    r.get::<_, Option<String>>("perspective")?,
                ))
            })
            .optional()?
            .ok_or(JournalError::NoSuchGroup(id))
            .and_then(|(mut g, state, layout, perspective)| {
                g.state = state.parse().map_err(JournalError::Invalid)?;
                g.layout = parse_col(layout)?;
                g.perspective = parse_col(perspective)?;
                Ok(g)
            })?;

        let mut stmt = conn.prepare_cached("SELECT * FROM files WHERE group_id = ?1 ORDER BY position")?;
        let files = stmt.query_map([id], |r| {
            Ok((
                FileRecord {
                    id: r.get("id")?,
                    position: r.get::<_, i64>("position")? as u32,
                    source: get_path(r, "source")?,
                    rel_path: r.get("rel_path")?,
                    file_name: r.get("file_name")?,
                    role: FileRole::Video,
                    language: r.get("language")?,
                    size: r.get::<_, i64>("size")? as u64,
                    mtime_ns: r.get("mtime_ns")?,
                    dev: r.get::<_, Option<i64>>("dev")?.map(|v| v as u64),
                    ino: r.get::<_, Option<i64>>("ino")?.map(|v| v as u64),
                    staged: r.get("staged")?,
                    upload_id: r.get("upload_id")?,
                    part_size: r.get::<_, Option<i64>>("part_size")?.map(|v| v as u64),
                    total_parts: r.get::<_, Option<i64>>("total_parts")?.map(|v| v as u32),
                    strategy: None,
                    state: FileState::Pending,
                    parts: Vec::new(),
                    media: media_col(r.get::<_, Option<String>>("media")?),
                },
                r.get::<_, String>("role")?,
                r.get::<_, String>("state")?,
                r.get::<_, Option<String>>("strategy")?,
            ))
        })?;
        for f in files {
            let (mut f, role, state, strategy) = f?;
            f.role = role.parse().map_err(JournalError::Invalid)?;
            f.strategy = parse_col(strategy)?;
            f.state = state.parse().map_err(JournalError::Invalid)?;
            g.files.push(f);
        }
        let mut stmt = conn.prepare_cached(
            "SELECT part_number, byte_start, size, etag, state FROM parts WHERE file_id = ?1 ORDER BY part_number",
        )?;
        for f in &mut g.files {
            let parts = stmt.query_map([f.id], part_from_row)?;
            for p in parts {
                f.parts.push(p?);
            }
        }
        Ok(g)
    }

    fn record_session(
        &self,
        id: GroupId,
        fence: Fence,
        session_id: &str,
        expires_at: Option<&str>,
        files: &[SessionFile],
    ) -> Result<(), JournalError> {
        self.write(|tx| {
            check_fence(tx, id, fence)?;
            transition(tx, id, GroupState::Uploading, Some(&format!("server group {session_id} created")))?;
            tx.execute(
                "UPDATE groups SET session_id = ?2, expires_at = ?3, session_at = ?4, error = NULL WHERE id = ?1",
                params![id, session_id, expires_at, now_ms()],
            )?;
            let mut upd = tx.prepare_cached(
                "UPDATE files SET upload_id = ?2, part_size = ?3, total_parts = ?4, strategy = ?5, state = 'pending'
                 WHERE id = ?1 AND group_id = ?6 RETURNING size",
            )?;
            let mut ins = tx
                .prepare_cached("INSERT INTO parts (file_id, part_number, byte_start, size) VALUES (?1, ?2, ?3, ?4)")?;
            let expected: i64 = tx.query_row("SELECT COUNT(*) FROM files WHERE group_id = ?1", [id], |r| r.get(0))?;
            if expected as usize != files.len() {
                return Err(JournalError::Invalid(format!(
                    "group {id} has {expected} files but the session lists {}",
                    files.len()
                )));
            }
            for f in files {
                let size: i64 = upd
                    .query_row(
                        params![
                            f.file_id,
                            f.upload_id,
                            f.part_size as i64,
                            f.total_parts as i64,
                            f.strategy.as_str(),
                            id
                        ],
                        |r| r.get(0),
                    )
                    .optional()?
                    .ok_or_else(|| JournalError::Invalid(format!("file {} is not part of group {id}", f.file_id)))?;
                let size = size as u64;
                let parts = if f.part_size == 0 { 0 } else { size.div_ceil(f.part_size) };
                if f.part_size == 0 || parts.max(1) != u64::from(f.total_parts) {
                    return Err(JournalError::Invalid(format!(
                        "file {}: {} parts of {} bytes cannot cover {size} bytes",
                        f.file_id, f.total_parts, f.part_size
                    )));
                }
                for n in 1..=f.total_parts {
                    let start = u64::from(n - 1) * f.part_size;
                    let len = f.part_size.min(size - start.min(size));
                    ins.execute(params![f.file_id, n as i64, start as i64, len as i64])?;
                }
            }
            Ok(())
        })
    }

    fn resume(&self, id: GroupId, fence: Fence) -> Result<(), JournalError> {
        self.write(|tx| {
            check_fence(tx, id, fence)?;
            let session: Option<String> =
                tx.query_row("SELECT session_id FROM groups WHERE id = ?1", [id], |r| r.get(0))?;
            let Some(session) = session else {
                return Err(JournalError::Refused(format!("group {id} has no server session to resume")));
            };
            transition(tx, id, GroupState::Uploading, Some(&format!("resuming server group {session}")))?;
            tx.execute("UPDATE groups SET error = NULL WHERE id = ?1", [id])?;
            Ok(())
        })
    }

    fn parts(&self, file_id: FileId) -> Result<Vec<PartRecord>, JournalError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT part_number, byte_start, size, etag, state FROM parts WHERE file_id = ?1 ORDER BY part_number",
        )?;
        let parts = stmt.query_map([file_id], part_from_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(parts)
    }

    fn part_done(&self, file_id: FileId, part_number: u32, etag: &str, fence: Fence) -> Result<(), JournalError> {
        self.write(|tx| {
            if fence != Fence::Unclaimed {
                check_fence(tx, group_of_file(tx, file_id)?, fence)?;
            }
            let n = tx
                .prepare_cached("UPDATE parts SET etag = ?3, state = 'done' WHERE file_id = ?1 AND part_number = ?2")?
                .execute(params![file_id, part_number as i64, etag])?;
            if n != 1 {
                return Err(JournalError::NoSuchPart { file: file_id, part: part_number });
            }
            tx.prepare_cached("UPDATE files SET state = 'uploading' WHERE id = ?1 AND state = 'pending'")?
                .execute([file_id])?;
            Ok(())
        })
    }

    fn file_completed(&self, file_id: FileId, library_id: Option<u64>, fence: Fence) -> Result<(), JournalError> {
        self.write(|tx| {
            let gid = group_of_file(tx, file_id)?;
            check_fence(tx, gid, fence)?;
            tx.execute("UPDATE files SET state = 'completed' WHERE id = ?1", [file_id])?;
            if let Some(lib) = library_id {
                tx.execute(
                    "UPDATE groups SET library_id = ?2, updated_at = ?3 WHERE id = ?1",
                    params![gid, lib as i64, now_ms()],
                )?;
            }
            Ok(())
        })
    }

    fn complete_group(&self, id: GroupId, library_id: u64, fence: Fence) -> Result<(), JournalError> {
        self.write(|tx| {
            check_fence(tx, id, fence)?;
            if already(tx, id, GroupState::Completed)? {
                return Ok(());
            }
            transition(tx, id, GroupState::Completed, Some(&format!("library id {library_id}")))?;
            tx.execute(
                "UPDATE groups SET library_id = ?2, error = NULL, retry_at = NULL WHERE id = ?1",
                params![id, library_id as i64],
            )?;
            Ok(())
        })
    }

    fn fail_group(&self, id: GroupId, error: &str, retry_at_ms: Option<i64>, fence: Fence) -> Result<(), JournalError> {
        self.write(|tx| {
            check_fence(tx, id, fence)?;
            transition(tx, id, GroupState::Failed, Some(error))?;
            tx.execute("UPDATE groups SET error = ?2, retry_at = ?3 WHERE id = ?1", params![id, error, retry_at_ms])?;
            Ok(())
        })
    }

    fn cancel_group(&self, id: GroupId, reason: &str, by_user: bool, fence: Fence) -> Result<(), JournalError> {
        self.write(|tx| {
            check_fence(tx, id, fence)?;
            if already(tx, id, GroupState::Canceled)? {
                return Ok(());
            }
            transition(tx, id, GroupState::Canceled, Some(reason))?;
            tx.execute(
                "UPDATE groups SET error = ?2, user_canceled = ?3, retry_at = NULL WHERE id = ?1",
                params![id, reason, by_user],
            )?;
            Ok(())
        })
    }

    fn expire_group(
        &self,
        id: GroupId,
        reason: &str,
        requeue: bool,
        fence: Fence,
    ) -> Result<Option<GroupId>, JournalError> {
        self.write(|tx| {
            check_fence(tx, id, fence)?;
            if already(tx, id, GroupState::Expired)? {
                return Ok(None);
            }
            transition(tx, id, GroupState::Expired, Some(reason))?;
            tx.execute("UPDATE groups SET error = ?2, retry_at = NULL WHERE id = ?1", params![id, reason])?;
            if !requeue {
                return Ok(None);
            }
            match requeue_copy(tx, id, "re-queued after expiry") {
                Ok(new) => Ok(Some(new)),
                // The watcher already has the export pending again: it will upload it.
                Err(JournalError::Refused(why)) => {
                    event(tx, id, None, None, Some(&why))?;
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        })
    }

    fn set_finished(&self, id: GroupId) -> Result<(), JournalError> {
        self.write(|tx| {
            tx.execute("UPDATE groups SET finished = 1, after_next_ms = NULL WHERE id = ?1", [id])?;
            Ok(())
        })
    }

    fn after_upload_failed(&self, id: GroupId, error: &str, next_ms: Option<i64>) -> Result<u32, JournalError> {
        self.write(|tx| {
            let failures: i64 = tx
                .query_row(
                    "UPDATE groups SET after_failures = after_failures + 1, after_error = ?2, after_next_ms = ?3
                     WHERE id = ?1 RETURNING after_failures",
                    params![id, error, next_ms],
                    |r| r.get(0),
                )
                .optional()?
                .ok_or(JournalError::NoSuchGroup(id))?;
            event(tx, id, None, None, Some(&format!("after-upload step failed (attempt {failures}): {error}")))?;
            Ok(u32::try_from(failures).unwrap_or(u32::MAX))
        })
    }

    fn staged_in_use(&self, source: &Path, except: GroupId) -> Result<bool, JournalError> {
        let conn = self.conn();
        let hit: Option<i64> = conn
            .query_row(
                "SELECT 1 FROM files f JOIN groups g ON f.group_id = g.id
                 WHERE f.source = ?1 AND f.staged = 1 AND g.id != ?2
                   AND g.state IN ('waiting','queued','uploading','failed') LIMIT 1",
                params![path_bytes(source), except],
                |r| r.get(0),
            )
            .optional()?;
        Ok(hit.is_some())
    }

    fn recent_sessions(&self, id: GroupId, now_ms: i64, window_ms: i64) -> Result<u32, JournalError> {
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

    fn unfinished(&self) -> Result<Vec<GroupId>, JournalError> {
        let conn = self.conn();
        // `+state`: the few unfinished rows come from `groups_unfinished`;
        // the state index would walk every ended group of the history.
        let mut stmt = conn.prepare(
            "SELECT id FROM groups WHERE finished = 0 AND +state IN ('completed','rejected','canceled','expired') ORDER BY id",
        )?;
        let ids = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        Ok(ids)
    }
}
