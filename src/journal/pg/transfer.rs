//! The engine's side (PostgreSQL): the same rules as SQLite's `transfer.rs`.

use std::path::Path;

use postgres::types::Type;

use super::history::{already, check_fence, event, group_of_file, transition};
use super::queue::requeue_copy;
use super::{PgJournal, col, db_err};
use crate::journal::codec::{media_col, now_ms, parse_col};
use crate::journal::store::Transfers;
use crate::journal::{
    Fence, FileId, FileRecord, GroupId, GroupRecord, GroupState, JournalError, PartRecord, SessionFile,
};

fn part_from_row(r: &postgres::Row) -> Result<PartRecord, JournalError> {
    Ok(PartRecord {
        part_number: col::<i64>(r, "part_number")? as u32,
        byte_start: col::<i64>(r, "byte_start")? as u64,
        size: col::<i64>(r, "size")? as u64,
        etag: col(r, "etag")?,
        done: col::<String>(r, "state")? == "done",
    })
}

const PARTS_SQL: &str =
    "SELECT part_number, byte_start, size, etag, state FROM parts WHERE file_id = $1 ORDER BY part_number";

impl Transfers for PgJournal {
    fn group(&self, id: GroupId) -> Result<GroupRecord, JournalError> {
        let (g, files, parts) = self.with(|c| {
            let mut tx = c
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .map_err(db_err)?;
            let g = tx.query_opt("SELECT * FROM groups WHERE id = $1", &[&id]).map_err(db_err)?;
            let files =
                tx.query("SELECT * FROM files WHERE group_id = $1 ORDER BY position", &[&id]).map_err(db_err)?;
            let parts = tx
                .query(
                    "SELECT p.file_id, p.part_number, p.byte_start, p.size, p.etag, p.state
                     FROM parts p JOIN files f ON f.id = p.file_id WHERE f.group_id = $1
                     ORDER BY p.file_id, p.part_number",
                    &[&id],
                )
                .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            Ok((g, files, parts))
        })?;
        let r = g.ok_or(JournalError::NoSuchGroup(id))?;
        let m = self.mounts();
        let mut g = GroupRecord {
            id: col(&r, "id")?,
            key: m.decode(&col::<Vec<u8>>(&r, "key")?),
            name: col(&r, "name")?,
            root: m.decode(&col::<Vec<u8>>(&r, "root")?),
            watch_path: col::<Option<Vec<u8>>>(&r, "watch_path")?.map(|b| m.decode(&b)),
            state: col::<String>(&r, "state")?.parse().map_err(JournalError::Invalid)?,
            layout: parse_col(col(&r, "layout")?)?,
            perspective: parse_col(col(&r, "perspective")?)?,
            description: col(&r, "description")?,
            folder_name: col(&r, "folder_name")?,
            priority: col(&r, "priority")?,
            fingerprint: col(&r, "fingerprint")?,
            session_id: col(&r, "session_id")?,
            expires_at: col(&r, "expires_at")?,
            session_at_ms: col(&r, "session_at")?,
            library_id: col::<Option<i64>>(&r, "library_id")?.map(|v| v as u64),
            error: col(&r, "error")?,
            retry_at_ms: col(&r, "retry_at")?,
            retry_of: col(&r, "retry_of")?,
            user_canceled: col(&r, "user_canceled")?,
            finished: col(&r, "finished")?,
            after_failures: u32::try_from(col::<i32>(&r, "after_failures")?).unwrap_or(0),
            after_error: col(&r, "after_error")?,
            after_next_ms: col(&r, "after_next_ms")?,
            created_at_ms: col(&r, "created_at")?,
            files: Vec::new(),
        };
        for f in &files {
            let fid: FileId = col(f, "id")?;
            let mut rec = FileRecord {
                id: fid,
                position: col::<i64>(f, "position")? as u32,
                source: m.decode(&col::<Vec<u8>>(f, "source")?),
                rel_path: col(f, "rel_path")?,
                file_name: col(f, "file_name")?,
                role: col::<String>(f, "role")?.parse().map_err(JournalError::Invalid)?,
                language: col(f, "language")?,
                size: col::<i64>(f, "size")? as u64,
                mtime_ns: col(f, "mtime_ns")?,
                dev: col::<Option<i64>>(f, "dev")?.map(|v| v as u64),
                ino: col::<Option<i64>>(f, "ino")?.map(|v| v as u64),
                staged: col(f, "staged")?,
                upload_id: col(f, "upload_id")?,
                part_size: col::<Option<i64>>(f, "part_size")?.map(|v| v as u64),
                total_parts: col::<Option<i64>>(f, "total_parts")?.map(|v| v as u32),
                strategy: parse_col(col(f, "strategy")?)?,
                state: col::<String>(f, "state")?.parse().map_err(JournalError::Invalid)?,
                parts: Vec::new(),
                media: media_col(col(f, "media")?),
            };
            for p in parts.iter() {
                if col::<FileId>(p, "file_id")? == fid {
                    rec.parts.push(part_from_row(p)?);
                }
            }
            g.files.push(rec);
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
        // The move (and its history line, which takes the history lock) comes last.
        self.write_for(fence, |tx| {
            check_fence(tx, id, fence)?;
            tx.execute(
                "UPDATE groups SET session_id = $2, expires_at = $3, session_at = $4, error = NULL WHERE id = $1",
                &[&id, &session_id, &expires_at, &now_ms()],
            )
            .map_err(db_err)?;
            let expected: i64 = tx
                .query_one("SELECT COUNT(*) AS n FROM files WHERE group_id = $1", &[&id])
                .map_err(db_err)
                .and_then(|r| col(&r, "n"))?;
            if expected as usize != files.len() {
                return Err(JournalError::Invalid(format!(
                    "group {id} has {expected} files but the session lists {}",
                    files.len()
                )));
            }
            let ins = tx
                .prepare("INSERT INTO parts (file_id, part_number, byte_start, size) VALUES ($1, $2, $3, $4)")
                .map_err(db_err)?;
            for f in files {
                let row = tx
                    .query_opt(
                        "UPDATE files SET upload_id = $2, part_size = $3, total_parts = $4, strategy = $5,
                                          state = 'pending'
                         WHERE id = $1 AND group_id = $6 RETURNING size",
                        &[
                            &f.file_id,
                            &f.upload_id,
                            &(f.part_size as i64),
                            &i64::from(f.total_parts),
                            &f.strategy.as_str(),
                            &id,
                        ],
                    )
                    .map_err(db_err)?;
                let size = match row {
                    Some(r) => col::<i64>(&r, "size")? as u64,
                    None => return Err(JournalError::Invalid(format!("file {} is not part of group {id}", f.file_id))),
                };
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
                    tx.execute(&ins, &[&f.file_id, &i64::from(n), &(start as i64), &(len as i64)]).map_err(db_err)?;
                }
            }
            transition(self, tx, id, GroupState::Uploading, Some(&format!("server group {session_id} created")))?;
            Ok(())
        })
    }

    fn resume(&self, id: GroupId, fence: Fence) -> Result<(), JournalError> {
        self.write_for(fence, |tx| {
            check_fence(tx, id, fence)?;
            let session: Option<String> = tx
                .query_opt("SELECT session_id FROM groups WHERE id = $1", &[&id])
                .map_err(db_err)?
                .ok_or(JournalError::NoSuchGroup(id))
                .and_then(|r| col(&r, "session_id"))?;
            let Some(session) = session else {
                return Err(JournalError::Refused(format!("group {id} has no server session to resume")));
            };
            tx.execute("UPDATE groups SET error = NULL WHERE id = $1", &[&id]).map_err(db_err)?;
            transition(self, tx, id, GroupState::Uploading, Some(&format!("resuming server group {session}")))?;
            Ok(())
        })
    }

    fn parts(&self, file_id: FileId) -> Result<Vec<PartRecord>, JournalError> {
        let rows = self.with(|c| c.query(PARTS_SQL, &[&file_id]).map_err(db_err))?;
        rows.iter().map(part_from_row).collect()
    }

    fn part_done(&self, file_id: FileId, part_number: u32, etag: &str, fence: Fence) -> Result<(), JournalError> {
        // The hot path: one statement, no transaction around it (so a node
        // stopped between two statements holds no lock), no fleet-wide lock.
        // The group's row is share-locked while the claim is compared, as in
        // `check_fence`.
        let token = match fence {
            Fence::Claim(t) => Some(t),
            Fence::Unclaimed => None,
        };
        let row = self.with(|c| {
            // Typed parameters: parsed, bound and run in one round trip.
            c.query_typed_one(
                "WITH holder AS (
                     SELECT g.id, g.claim, g.node FROM groups g JOIN files f ON f.group_id = g.id
                     WHERE f.id = $1 FOR SHARE OF g),
                 part AS (
                     UPDATE parts SET etag = $3, state = 'done'
                     WHERE file_id = $1 AND part_number = $2
                       AND ($4::bigint IS NULL OR (SELECT claim FROM holder) = $4)
                     RETURNING 1),
                 file AS (
                     UPDATE files SET state = 'uploading'
                     WHERE id = $1 AND state = 'pending' AND EXISTS (SELECT 1 FROM part)
                     RETURNING 1)
                 SELECT (SELECT id FROM holder) AS gid, (SELECT claim FROM holder) AS claim,
                        (SELECT node FROM holder) AS node,
                        (SELECT COUNT(*) FROM part) AS n",
                &[
                    (&file_id, Type::INT8),
                    (&i64::from(part_number), Type::INT8),
                    (&etag, Type::TEXT),
                    (&token, Type::INT8),
                ],
            )
            .map_err(db_err)
        })?;
        let claim: Option<i64> = col(&row, "claim")?;
        match (claim, token) {
            (None, _) => Err(JournalError::Invalid(format!("no file {file_id}"))),
            (Some(now), Some(t)) if now != t => {
                Err(JournalError::Fenced { id: col(&row, "gid")?, token: t, holder: col(&row, "node")? })
            }
            _ if col::<i64>(&row, "n")? != 1 => Err(JournalError::NoSuchPart { file: file_id, part: part_number }),
            _ => Ok(()),
        }
    }

    fn file_completed(&self, file_id: FileId, library_id: Option<u64>, fence: Fence) -> Result<(), JournalError> {
        // No history line: the fleet-wide lock is not needed.
        self.write_rc(|tx| {
            let gid = group_of_file(tx, file_id)?;
            check_fence(tx, gid, fence)?;
            tx.execute("UPDATE files SET state = 'completed' WHERE id = $1", &[&file_id]).map_err(db_err)?;
            if let Some(lib) = library_id {
                tx.execute(
                    "UPDATE groups SET library_id = $2, updated_at = $3 WHERE id = $1",
                    &[&gid, &(lib as i64), &now_ms()],
                )
                .map_err(db_err)?;
            }
            Ok(())
        })
    }

    fn complete_group(&self, id: GroupId, library_id: u64, fence: Fence) -> Result<(), JournalError> {
        self.write_for(fence, |tx| {
            check_fence(tx, id, fence)?;
            if already(tx, id, GroupState::Completed)? {
                return Ok(());
            }
            tx.execute(
                "UPDATE groups SET library_id = $2, error = NULL, retry_at = NULL WHERE id = $1",
                &[&id, &(library_id as i64)],
            )
            .map_err(db_err)?;
            transition(self, tx, id, GroupState::Completed, Some(&format!("library id {library_id}")))?;
            Ok(())
        })
    }

    fn fail_group(&self, id: GroupId, error: &str, retry_at_ms: Option<i64>, fence: Fence) -> Result<(), JournalError> {
        self.write_for(fence, |tx| {
            check_fence(tx, id, fence)?;
            tx.execute("UPDATE groups SET error = $2, retry_at = $3 WHERE id = $1", &[&id, &error, &retry_at_ms])
                .map_err(db_err)?;
            transition(self, tx, id, GroupState::Failed, Some(error))?;
            Ok(())
        })
    }

    fn cancel_group(&self, id: GroupId, reason: &str, by_user: bool, fence: Fence) -> Result<(), JournalError> {
        self.write_for(fence, |tx| {
            check_fence(tx, id, fence)?;
            if already(tx, id, GroupState::Canceled)? {
                return Ok(());
            }
            tx.execute(
                "UPDATE groups SET error = $2, user_canceled = $3, retry_at = NULL WHERE id = $1",
                &[&id, &reason, &by_user],
            )
            .map_err(db_err)?;
            transition(self, tx, id, GroupState::Canceled, Some(reason))?;
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
        self.write_for(fence, |tx| {
            check_fence(tx, id, fence)?;
            if already(tx, id, GroupState::Expired)? {
                return Ok(None);
            }
            transition(self, tx, id, GroupState::Expired, Some(reason))?;
            tx.execute("UPDATE groups SET error = $2, retry_at = NULL WHERE id = $1", &[&id, &reason])
                .map_err(db_err)?;
            if !requeue {
                return Ok(None);
            }
            match requeue_copy(tx, id, "re-queued after expiry") {
                Ok(new) => Ok(Some(new)),
                Err(JournalError::Refused(why)) => {
                    event(tx, id, None, None, Some(&why))?;
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        })
    }

    fn set_finished(&self, id: GroupId) -> Result<(), JournalError> {
        self.write_rc(|tx| {
            tx.execute("UPDATE groups SET finished = true, after_next_ms = NULL WHERE id = $1", &[&id])
                .map_err(db_err)?;
            Ok(())
        })
    }

    fn after_upload_failed(&self, id: GroupId, error: &str, next_ms: Option<i64>) -> Result<u32, JournalError> {
        self.write_lines(|tx| {
            let row = tx
                .query_opt(
                    "UPDATE groups SET after_failures = after_failures + 1, after_error = $2, after_next_ms = $3
                     WHERE id = $1 RETURNING after_failures",
                    &[&id, &error, &next_ms],
                )
                .map_err(db_err)?;
            let failures: i32 = col(&row.ok_or(JournalError::NoSuchGroup(id))?, "after_failures")?;
            event(tx, id, None, None, Some(&format!("after-upload step failed (attempt {failures}): {error}")))?;
            Ok(u32::try_from(failures).unwrap_or(u32::MAX))
        })
    }

    fn staged_in_use(&self, source: &Path, except: GroupId) -> Result<bool, JournalError> {
        let s = self.mounts().encode(source);
        self.with(|c| {
            let hit = c
                .query_opt(
                    "SELECT 1 FROM files f JOIN groups g ON f.group_id = g.id
                     WHERE f.source = $1 AND f.staged AND g.id != $2
                       AND g.state IN ('waiting','queued','uploading','failed') LIMIT 1",
                    &[&s, &except],
                )
                .map_err(db_err)?;
            Ok(hit.is_some())
        })
    }

    fn recent_sessions(&self, id: GroupId, now_ms: i64, window_ms: i64) -> Result<u32, JournalError> {
        let n: i64 = self.with(|c| {
            c.query_one(
                "WITH RECURSIVE chain(id, retry_of) AS (
                     SELECT id, retry_of FROM groups WHERE id = $1
                     UNION
                     SELECT g.id, g.retry_of FROM groups g JOIN chain c ON g.retry_of = c.id OR g.id = c.retry_of
                 )
                 SELECT COUNT(*) AS n FROM groups
                  WHERE session_at IS NOT NULL AND session_at >= $2
                    AND (id IN (SELECT id FROM chain) OR key = (SELECT key FROM groups WHERE id = $1))",
                &[&id, &now_ms.saturating_sub(window_ms)],
            )
            .map_err(db_err)
            .and_then(|r| col(&r, "n"))
        })?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    fn unfinished(&self) -> Result<Vec<GroupId>, JournalError> {
        // The node that ended a group does its housekeeping (its mount, its staged files).
        let rows = self.with(|c| {
            c.query(
                "SELECT id FROM groups WHERE NOT finished AND state IN ('completed','rejected','canceled','expired')
                   AND COALESCE(node, origin) = $1 ORDER BY id",
                &[&self.node_name()],
            )
            .map_err(db_err)
        })?;
        rows.iter().map(|r| col(r, "id")).collect()
    }
}
