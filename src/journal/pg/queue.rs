//! The watcher's side and the queue (PostgreSQL): the same rules as
//! SQLite's `queue.rs`; paths stored by watch name; claims in `next_group`.

use std::path::Path;

use postgres::Transaction;

use super::history::{event, state_of, transition};
use super::{DB_NOW, PgJournal, col, db_err};
use crate::group::UploadGroup;
use crate::journal::codec::now_ms;
use crate::journal::filter::{self, Param};
use crate::journal::forget::FORGETTABLE;
use crate::journal::queue::{QUEUE_ORDER, media_json, position_in, queued_detail, set_positions, violations_text};
use crate::journal::store::Queue;
use crate::journal::{AfterUploadRetry, Claim, Enqueued, GroupFilter, GroupId, GroupState, GroupSummary, JournalError};

/// A group with the fingerprint `$1` that makes an export with it a
/// duplicate (`$2`: its violations as JSON, for a rejection).
const DUPLICATE: &str = "fingerprint = $1
    AND (state IN ('completed','queued','uploading','failed')
         OR (state = 'canceled' AND user_canceled)
         OR (state = 'rejected' AND violations IS NOT DISTINCT FROM $2))";

/// The columns of a `status` row (see [`PgJournal::summary_from_row`]).
pub(in crate::journal) const SUMMARY_SQL: &str = "
    SELECT g.id, g.name, g.key, g.state, g.session_id, g.library_id, g.error, g.priority, g.layout, g.retry_of,
           g.watch_path, g.created_at, g.updated_at, g.node,
           g.finished, g.after_failures, g.after_error, g.after_next_ms,
           (SELECT COUNT(*) FROM files f WHERE f.group_id = g.id) AS nfiles,
           (SELECT COALESCE(SUM(f.size), 0)::bigint FROM files f WHERE f.group_id = g.id) AS total,
           (SELECT COUNT(*) FROM parts p JOIN files f ON p.file_id = f.id WHERE f.group_id = g.id) AS nparts,
           (SELECT COUNT(*) FROM parts p JOIN files f ON p.file_id = f.id
              WHERE f.group_id = g.id AND p.state = 'done') AS ndone,
           (SELECT COALESCE(SUM(p.size), 0)::bigint FROM parts p JOIN files f ON p.file_id = f.id
              WHERE f.group_id = g.id AND p.state = 'done') AS done
    FROM groups g";

fn queue_order(tx: &mut impl postgres::GenericClient) -> Result<Vec<GroupId>, JournalError> {
    let rows = tx
        .query(&format!("SELECT id FROM groups WHERE state = 'queued' ORDER BY {QUEUE_ORDER}"), &[])
        .map_err(db_err)?;
    rows.iter().map(|r| col(r, "id")).collect()
}

impl PgJournal {
    pub(super) fn summary_from_row(&self, r: &postgres::Row) -> Result<GroupSummary, JournalError> {
        let count = |name: &str| -> Result<u32, JournalError> { Ok(col::<i64>(r, name)?.max(0) as u32) };
        let watch_path: Option<Vec<u8>> = col(r, "watch_path")?;
        Ok(GroupSummary {
            id: col(r, "id")?,
            name: col(r, "name")?,
            path: self.mounts().decode(&col::<Vec<u8>>(r, "key")?).display().to_string(),
            state: col::<String>(r, "state")?.parse().map_err(JournalError::Invalid)?,
            session_id: col(r, "session_id")?,
            library_id: col::<Option<i64>>(r, "library_id")?.map(|v| v as u64),
            bytes_total: col::<i64>(r, "total")?.max(0) as u64,
            bytes_uploaded: col::<i64>(r, "done")?.max(0) as u64,
            error: col(r, "error")?,
            priority: col(r, "priority")?,
            queue_position: None,
            layout: col(r, "layout")?,
            files: count("nfiles")?,
            parts_total: count("nparts")?,
            parts_done: count("ndone")?,
            retry_of: col(r, "retry_of")?,
            watch_path: watch_path.map(|b| self.mounts().decode(&b).display().to_string()),
            node: col(r, "node")?,
            after_upload: AfterUploadRetry::from_columns(
                col(r, "finished")?,
                col::<i32>(r, "after_failures")?.into(),
                col(r, "after_error")?,
                col(r, "after_next_ms")?,
            ),
            created_at: crate::journal::format_ms(col(r, "created_at")?),
            updated_at: crate::journal::format_ms(col(r, "updated_at")?),
        })
    }

    fn insert_files(&self, tx: &mut Transaction<'_>, id: GroupId, group: &UploadGroup) -> Result<(), JournalError> {
        tx.execute("DELETE FROM files WHERE group_id = $1", &[&id]).map_err(db_err)?;
        let stmt = tx
            .prepare(
                "INSERT INTO files (group_id, position, source, rel_path, file_name, role, language, size, mtime_ns,
                                    staged, dev, ino, media)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .map_err(db_err)?;
        for (i, f) in group.files.iter().enumerate() {
            tx.execute(
                &stmt,
                &[
                    &id,
                    &(i as i64),
                    &self.mounts().encode(&f.source),
                    &f.rel_path,
                    &f.file_name,
                    &f.role.as_str(),
                    &f.language,
                    &(f.size as i64),
                    &f.mtime_ns,
                    &f.staged,
                    &f.dev.map(|v| v as i64),
                    &f.ino.map(|v| v as i64),
                    &media_json(f)?,
                ],
            )
            .map_err(db_err)?;
        }
        Ok(())
    }

    fn pending_of(
        &self,
        tx: &mut impl postgres::GenericClient,
        key: &[u8],
    ) -> Result<Option<(GroupId, String)>, JournalError> {
        let row = tx
            .query_opt("SELECT id, state FROM groups WHERE key = $1 AND state IN ('waiting','queued')", &[&key])
            .map_err(db_err)?;
        row.map(|r| Ok((col(&r, "id")?, col(&r, "state")?))).transpose()
    }
}

/// The key's `waiting` row and its reason, if it has one.
fn waiting_error(
    c: &mut impl postgres::GenericClient,
    key: &[u8],
) -> Result<Option<(GroupId, Option<String>)>, JournalError> {
    let row =
        c.query_opt("SELECT id, error FROM groups WHERE key = $1 AND state = 'waiting'", &[&key]).map_err(db_err)?;
    row.map(|r| Ok((col(&r, "id")?, col(&r, "error")?))).transpose()
}

impl Queue for PgJournal {
    fn note_waiting(&self, key: &Path, name: &str, watch_path: Option<&Path>) -> Result<GroupId, JournalError> {
        let k = self.key_code(key);
        let watch = self.mounts().watch_of(watch_path.unwrap_or(key)).map(str::to_string);
        let wp = watch_path.map(|p| self.mounts().encode(p));
        // Every node notes every export it sees: the row another node made
        // is found without the fleet-wide lock.
        if let Some((id, _)) = self.with(|c| self.pending_of(c, &k))? {
            return Ok(id);
        }
        self.write(|tx| {
            if let Some((id, _)) = self.pending_of(tx, &k)? {
                return Ok(id);
            }
            let now = now_ms();
            let id: GroupId = tx
                .query_one(
                    "INSERT INTO groups (key, name, root, watch_path, watch, origin, state, created_at, updated_at)
                     VALUES ($1, $2, $1, $3, $4, $5, 'waiting', $6, $6) RETURNING id",
                    &[&k, &name, &wp, &watch, &self.node_name(), &now],
                )
                .map_err(db_err)
                .and_then(|r| col(&r, "id"))?;
            event(tx, id, None, Some(GroupState::Waiting), Some("seen; settling"))?;
            Ok(id)
        })
    }

    fn drop_waiting(&self, key: &Path) -> Result<(), JournalError> {
        let k = self.key_code(key);
        self.write(|tx| {
            tx.execute("DELETE FROM groups WHERE key = $1 AND state = 'waiting'", &[&k]).map_err(db_err)?;
            Ok(())
        })
    }

    fn waiting_in(&self, watch_path: &Path) -> Result<Vec<std::path::PathBuf>, JournalError> {
        let wp = self.mounts().encode(watch_path);
        let rows = self.with(|c| {
            c.query("SELECT key FROM groups WHERE state = 'waiting' AND watch_path = $1 ORDER BY id", &[&wp])
                .map_err(db_err)
        })?;
        rows.iter().map(|r| Ok(self.mounts().decode(&col::<Vec<u8>>(r, "key")?))).collect()
    }

    fn set_waiting_reason(&self, key: &Path, reason: Option<&str>) -> Result<(), JournalError> {
        let k = self.key_code(key);
        // Read first: every node of a fleet looks at the same export, and
        // only a changed reason takes the fleet-wide lock.
        match self.with(|c| waiting_error(c, &k))? {
            Some((_, now)) if now.as_deref() != reason => {}
            _ => return Ok(()),
        }
        self.write(|tx| match waiting_error(tx, &k)? {
            Some((id, now)) if now.as_deref() != reason => {
                tx.execute("UPDATE groups SET error = $2, updated_at = $3 WHERE id = $1", &[&id, &reason, &now_ms()])
                    .map_err(db_err)?;
                if let Some(r) = reason {
                    event(tx, id, None, None, Some(r))?;
                }
                Ok(())
            }
            _ => Ok(()),
        })
    }

    fn enqueue(&self, group: &UploadGroup) -> Result<Enqueued, JournalError> {
        let k = self.key_code(&group.key);
        let root = self.key_code(&group.root);
        let wp = group.watch_path.as_deref().map(|p| self.mounts().encode(p));
        let watch = self.mounts().watch_of(group.watch_path.as_deref().unwrap_or(&group.key)).map(str::to_string);
        let violations = violations_text(group);
        let violations_json = if group.violations.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&group.violations).map_err(|e| JournalError::Invalid(e.to_string()))?)
        };
        // The same export enqueued by every node that sees it: a duplicate
        // with no waiting row of its own left to drop is answered without
        // the fleet-wide lock.
        let dup = self.with(|c| {
            let row = c
                .query_opt(
                    &format!(
                        "SELECT id, state FROM groups WHERE {DUPLICATE}
                           AND NOT EXISTS (SELECT 1 FROM groups w WHERE w.key = $3 AND w.state = 'waiting'
                                             AND w.id != groups.id)
                         ORDER BY id DESC LIMIT 1"
                    ),
                    &[&group.fingerprint, &violations_json, &k],
                )
                .map_err(db_err)?;
            row.map(|r| -> Result<Enqueued, JournalError> {
                let state = col::<String>(&r, "state")?.parse().map_err(JournalError::Invalid)?;
                Ok(Enqueued::Duplicate { id: col(&r, "id")?, state })
            })
            .transpose()
        })?;
        if let Some(d) = dup {
            return Ok(d);
        }
        self.write(|tx| {
            let dup = tx
                .query_opt(
                    &format!("SELECT id, state FROM groups WHERE {DUPLICATE} ORDER BY id DESC LIMIT 1"),
                    &[&group.fingerprint, &violations_json],
                )
                .map_err(db_err)?;
            if let Some(r) = dup {
                let id: GroupId = col(&r, "id")?;
                let state: GroupState = col::<String>(&r, "state")?.parse().map_err(JournalError::Invalid)?;
                tx.execute("DELETE FROM groups WHERE key = $1 AND state = 'waiting' AND id != $2", &[&k, &id])
                    .map_err(db_err)?;
                return Ok(Enqueued::Duplicate { id, state });
            }
            let target = if group.is_valid() { GroupState::Queued } else { GroupState::Rejected };
            let now = now_ms();
            let id = match self.pending_of(tx, &k)? {
                Some((id, state)) => {
                    if state == "queued" {
                        transition(
                            self,
                            tx,
                            id,
                            GroupState::Waiting,
                            Some("export changed before its upload started"),
                        )?;
                    }
                    let detail = match &violations {
                        Some(v) => format!("rejected: {v}"),
                        None => queued_detail(group, "settled; queued"),
                    };
                    transition(self, tx, id, target, Some(&detail))?;
                    id
                }
                None => {
                    let id: GroupId = tx
                        .query_one(
                            "INSERT INTO groups (key, name, root, state, origin, created_at, updated_at)
                             VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING id",
                            &[&k, &group.name, &root, &target.as_str(), &self.node_name(), &now],
                        )
                        .map_err(db_err)
                        .and_then(|r| col(&r, "id"))?;
                    let detail = violations.clone().unwrap_or_else(|| queued_detail(group, "queued"));
                    event(tx, id, None, Some(target), Some(&detail))?;
                    id
                }
            };
            tx.execute(
                "UPDATE groups SET name = $2, root = $3, watch_path = $4, layout = $5, perspective = $6,
                        description = $7, folder_name = $8, priority = $9, fingerprint = $10,
                        violations = $11, error = $12, updated_at = $13, watch = $14, origin = $15,
                        queued_at = CASE WHEN $16 THEN $13 ELSE queued_at END
                 WHERE id = $1",
                &[
                    &id,
                    &group.name,
                    &root,
                    &wp,
                    &group.layout.as_str(),
                    &group.perspective.map(|p| p.as_str()),
                    &group.description,
                    &group.folder_name,
                    &group.priority,
                    &group.fingerprint,
                    &violations_json,
                    &violations,
                    &now,
                    &watch,
                    &self.node_name(),
                    &(target == GroupState::Queued),
                ],
            )
            .map_err(db_err)?;
            self.insert_files(tx, id, group)?;
            Ok(if target == GroupState::Queued { Enqueued::Queued(id) } else { Enqueued::Rejected(id) })
        })
    }

    fn unqueue(&self, key: &Path) -> Result<bool, JournalError> {
        let k = self.key_code(key);
        self.write(|tx| match self.pending_of(tx, &k)? {
            Some((id, s)) if s == "queued" => {
                transition(self, tx, id, GroupState::Waiting, Some("export changed before its upload started"))?;
                tx.execute("DELETE FROM files WHERE group_id = $1", &[&id]).map_err(db_err)?;
                tx.execute("UPDATE groups SET fingerprint = NULL WHERE id = $1", &[&id]).map_err(db_err)?;
                Ok(true)
            }
            Some(_) => Ok(true),
            None => Ok(false),
        })
    }

    fn list(&self) -> Result<Vec<GroupSummary>, JournalError> {
        let (order, rows) = self.with(|c| {
            let order = queue_order(c)?;
            let rows = c.query(&format!("{SUMMARY_SQL} ORDER BY g.id"), &[]).map_err(db_err)?;
            Ok((order, rows))
        })?;
        let mut out = rows.iter().map(|r| self.summary_from_row(r)).collect::<Result<Vec<_>, _>>()?;
        set_positions(&mut out, &order);
        Ok(out)
    }

    fn groups(&self, filter: &GroupFilter) -> Result<Vec<GroupSummary>, JournalError> {
        let (ids, params) = filter.ids_sql(&filter::POSTGRES);
        let params: Vec<Box<dyn postgres::types::ToSql + Sync + Send>> = params
            .into_iter()
            .map(|p| -> Box<dyn postgres::types::ToSql + Sync + Send> {
                match p {
                    Param::Text(t) => Box::new(t),
                    Param::Int(i) => Box::new(i),
                }
            })
            .collect();
        let sql = format!("{SUMMARY_SQL} WHERE g.id IN ({ids}) ORDER BY g.id DESC");
        let (rows, order) = self.with(move |c| {
            let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                params.iter().map(|p| p.as_ref() as &(dyn postgres::types::ToSql + Sync)).collect();
            let rows = c.query(&sql, &refs).map_err(db_err)?;
            let queued = rows.iter().any(|r| r.try_get::<_, String>("state").is_ok_and(|s| s == "queued"));
            let order = if queued { queue_order(c)? } else { Vec::new() };
            Ok((rows, order))
        })?;
        let mut out = rows.iter().map(|r| self.summary_from_row(r)).collect::<Result<Vec<_>, _>>()?;
        set_positions(&mut out, &order);
        if filter.queue_order {
            out.sort_by_key(|r| r.queue_position.unwrap_or(u32::MAX));
        }
        Ok(out)
    }

    fn summary(&self, id: GroupId) -> Result<GroupSummary, JournalError> {
        let (order, row) = self.with(|c| {
            let row = c.query_opt(&format!("{SUMMARY_SQL} WHERE g.id = $1"), &[&id]).map_err(db_err)?;
            Ok((queue_order(c)?, row))
        })?;
        let mut s = self.summary_from_row(&row.ok_or(JournalError::NoSuchGroup(id))?)?;
        if s.state == GroupState::Queued {
            s.queue_position = position_in(&order, id);
        }
        Ok(s)
    }

    fn queue(&self) -> Result<Vec<GroupId>, JournalError> {
        self.with(queue_order)
    }

    fn count_by_state(&self) -> Result<Vec<(GroupState, u64)>, JournalError> {
        let rows =
            self.with(|c| c.query("SELECT state, COUNT(*) AS n FROM groups GROUP BY state", &[]).map_err(db_err))?;
        let mut out: Vec<(GroupState, u64)> = GroupState::ALL.iter().map(|s| (*s, 0)).collect();
        for r in &rows {
            let state: GroupState = col::<String>(r, "state")?.parse().map_err(JournalError::Invalid)?;
            if let Some(slot) = out.iter_mut().find(|(s, _)| *s == state) {
                slot.1 = col::<i64>(r, "n")?.max(0) as u64;
            }
        }
        Ok(out)
    }

    fn find(&self, spec: &str) -> Result<Option<GroupId>, JournalError> {
        let spec = spec.trim();
        self.with(|c| {
            let first = |c: &mut postgres::Client, sql: &str, arg: &(dyn postgres::types::ToSql + Sync)| {
                c.query_opt(sql, &[arg]).map_err(db_err)?.map(|r| col::<GroupId>(&r, "id")).transpose()
            };
            if let Ok(id) = spec.parse::<GroupId>()
                && let Some(hit) = first(c, "SELECT id FROM groups WHERE id = $1", &id)?
            {
                return Ok(Some(hit));
            }
            if let Some(hit) = first(c, "SELECT id FROM groups WHERE session_id = $1 ORDER BY id DESC LIMIT 1", &spec)?
            {
                return Ok(Some(hit));
            }
            for cand in super::super::codec::path_candidates(spec) {
                let b = super::super::codec::trim_separator(self.key_code(&cand));
                let sql = "SELECT id FROM groups WHERE key = $1 OR root = $1 ORDER BY id DESC LIMIT 1";
                if let Some(hit) = first(c, sql, &b)? {
                    return Ok(Some(hit));
                }
            }
            Ok(None)
        })
    }

    fn next_group(&self, busy: &[GroupId]) -> Result<Option<Claim>, JournalError> {
        let busy = busy.to_vec();
        let names = self.mounts().names();
        self.write_rc(|tx| {
            let row = tx
                .query_opt(
                    &format!(
                        "WITH pick AS (
                             SELECT id, node AS was, lease_until FROM groups
                             WHERE state IN ('uploading','queued') AND NOT (id = ANY($1))
                               AND (watch = ANY($2) OR origin = $3)
                               AND (node IS NULL OR node = $3 OR lease_until IS NULL OR lease_until < {DB_NOW})
                               AND (origin = $3 OR NOT EXISTS
                                     (SELECT 1 FROM files f WHERE f.group_id = groups.id AND f.staged))
                             ORDER BY state = 'uploading' DESC, {QUEUE_ORDER}
                             LIMIT 1 FOR UPDATE SKIP LOCKED)
                         UPDATE groups g SET node = $3, lease_until = {DB_NOW} + $4, claim = g.claim + 1
                         FROM pick WHERE g.id = pick.id
                         RETURNING g.id, g.claim, pick.was,
                                   pick.lease_until IS NOT NULL AND g.state = 'uploading' AS taken"
                    ),
                    &[&busy, &names, &self.node_name(), &self.lease_ms()],
                )
                .map_err(db_err)?;
            let Some(r) = row else { return Ok(None) };
            let claim = Claim { id: col(&r, "id")?, token: col(&r, "claim")? };
            let was: Option<String> = col(&r, "was")?;
            if let Some(was) = was.filter(|w| w != self.node_name())
                && col::<bool>(&r, "taken")?
            {
                let why = format!(
                    "node {was} went silent past its lease; node {} takes the upload over (claim {})",
                    self.node_name(),
                    claim.token
                );
                tracing::warn!(group = claim.id, from = %was, "{why}");
                event(tx, claim.id, None, None, Some(&why))?;
            }
            Ok(Some(claim))
        })
    }

    fn claim(&self, id: GroupId) -> Result<Option<Claim>, JournalError> {
        let row = self.write_rc(|tx| {
            tx.query_opt(
                &format!(
                    "UPDATE groups SET node = $2, lease_until = {DB_NOW} + $3, claim = claim + 1
                     WHERE id = $1 AND state IN ('queued','uploading')
                       AND (node IS NULL OR node = $2 OR lease_until IS NULL OR lease_until < {DB_NOW})
                     RETURNING claim"
                ),
                &[&id, &self.node_name(), &self.lease_ms()],
            )
            .map_err(db_err)
        })?;
        row.map(|r| Ok(Claim { id, token: col(&r, "claim")? })).transpose()
    }

    fn retry_group(&self, id: GroupId) -> Result<GroupId, JournalError> {
        self.write(|tx| match state_of(tx, id)? {
            GroupState::Failed => {
                transition(self, tx, id, GroupState::Queued, Some("retry requested"))?;
                tx.execute("UPDATE groups SET error = NULL, retry_at = NULL WHERE id = $1", &[&id]).map_err(db_err)?;
                Ok(id)
            }
            GroupState::Canceled | GroupState::Expired => {
                let live = tx
                    .query_opt(
                        "SELECT n.id FROM groups n JOIN groups o ON o.fingerprint = n.fingerprint
                         WHERE o.id = $1 AND n.id != $1 AND n.state IN ('queued','uploading','completed','failed')
                         LIMIT 1",
                        &[&id],
                    )
                    .map_err(db_err)?;
                if let Some(r) = live {
                    let other: GroupId = col(&r, "id")?;
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
        // Asked by every engine on every poll: the fleet-wide lock only when one is due.
        let due = self.with(|c| {
            c.query_one(
                "SELECT EXISTS (SELECT 1 FROM groups WHERE state = 'failed' AND retry_at IS NOT NULL
                                  AND retry_at <= $1) AS due",
                &[&now_ms],
            )
            .map_err(db_err)
            .and_then(|r| col::<bool>(&r, "due"))
        })?;
        if !due {
            return Ok(Vec::new());
        }
        self.write(|tx| {
            let ids: Vec<GroupId> = tx
                .query(
                    "SELECT id FROM groups WHERE state = 'failed' AND retry_at IS NOT NULL AND retry_at <= $1
                     ORDER BY id",
                    &[&now_ms],
                )
                .map_err(db_err)?
                .iter()
                .map(|r| col(r, "id"))
                .collect::<Result<_, _>>()?;
            for id in &ids {
                transition(self, tx, *id, GroupState::Queued, Some("automatic retry"))?;
                tx.execute("UPDATE groups SET retry_at = NULL WHERE id = $1", &[id]).map_err(db_err)?;
            }
            Ok(ids)
        })
    }

    fn forgettable(&self, before_ms: i64) -> Result<Vec<GroupId>, JournalError> {
        let rows = self.with(|c| {
            c.query(
                &format!(
                    "SELECT id FROM groups WHERE state IN ({FORGETTABLE}) AND finished AND updated_at < $1 ORDER BY id"
                ),
                &[&before_ms],
            )
            .map_err(db_err)
        })?;
        rows.iter().map(|r| col(r, "id")).collect()
    }

    fn forget(&self, ids: &[GroupId], before_ms: i64) -> Result<u64, JournalError> {
        let ids = ids.to_vec();
        self.write(|tx| {
            // Checked again inside the transaction (see SQLite's `forget`).
            let still: Vec<GroupId> = tx
                .query(
                    &format!(
                        "SELECT id FROM groups WHERE id = ANY($1) AND state IN ({FORGETTABLE}) AND finished
                           AND updated_at < $2"
                    ),
                    &[&ids, &before_ms],
                )
                .map_err(db_err)?
                .iter()
                .map(|r| col(r, "id"))
                .collect::<Result<_, _>>()?;
            tx.execute("UPDATE groups SET retry_of = NULL WHERE retry_of = ANY($1)", &[&still]).map_err(db_err)?;
            let n = tx.execute("DELETE FROM groups WHERE id = ANY($1)", &[&still]).map_err(db_err)?;
            Ok(n)
        })
    }

    fn next_retry_at(&self) -> Result<Option<i64>, JournalError> {
        self.with(|c| {
            c.query_one("SELECT MIN(retry_at) AS at FROM groups WHERE state = 'failed' AND retry_at IS NOT NULL", &[])
                .map_err(db_err)
                .and_then(|r| col(&r, "at"))
        })
    }
}

/// A new queued row with the same export and files as `id` (see SQLite's `requeue_copy`).
pub(super) fn requeue_copy(tx: &mut Transaction<'_>, id: GroupId, why: &str) -> Result<GroupId, JournalError> {
    let now = now_ms();
    let busy = tx
        .query_opt(
            "SELECT n.id FROM groups n JOIN groups o ON o.key = n.key
             WHERE o.id = $1 AND n.state IN ('waiting','queued')",
            &[&id],
        )
        .map_err(db_err)?;
    if let Some(r) = busy {
        let other: GroupId = col(&r, "id")?;
        return Err(JournalError::Refused(format!("the export of group {id} already has a pending group ({other})")));
    }
    let new: GroupId = tx
        .query_one(
            "INSERT INTO groups (key, watch, origin, name, root, watch_path, state, layout, perspective, description,
                                 folder_name, priority, fingerprint, retry_of, queued_at, created_at, updated_at)
             SELECT key, watch, origin, name, root, watch_path, 'queued', layout, perspective, description,
                    folder_name, priority, fingerprint, id, COALESCE(queued_at, created_at), $2, $2
             FROM groups WHERE id = $1 RETURNING id",
            &[&id, &now],
        )
        .map_err(db_err)
        .and_then(|r| col(&r, "id"))?;
    tx.execute(
        "INSERT INTO files (group_id, position, source, rel_path, file_name, role, language, size, mtime_ns, staged,
                            dev, ino, media)
         SELECT $2, position, source, rel_path, file_name, role, language, size, mtime_ns, staged, dev, ino, media
         FROM files WHERE group_id = $1",
        &[&id, &new],
    )
    .map_err(db_err)?;
    tx.execute("UPDATE groups SET finished = true WHERE id = $1", &[&id]).map_err(db_err)?;
    event(tx, new, None, Some(GroupState::Queued), Some(&format!("{why} (re-uploads group {id})")))?;
    event(tx, id, None, None, Some(&format!("{why}: re-uploaded as group {new}")))?;
    Ok(new)
}
