//! Control requests and pauses (PostgreSQL). A request is carried out by
//! the node that holds its group, or by any node that has the group's
//! watch folder when none does: [`Requests::open_requests`] takes the
//! requests this node may carry out, for a lease, so that two nodes never
//! both do one. Pauses are this node's own (a refused key, its mount of a
//! watch folder missing).

use super::history::{event, state_of};
use super::{DB_NOW, PgJournal, col, db_err};
use crate::journal::codec::now_ms;
use crate::journal::store::{Pauses, Requests};
use crate::journal::{GroupId, JournalError, Pause, PauseReason, Request, RequestId, RequestKind, RequestResult};

fn request_from_row(r: &postgres::Row) -> Result<Request, JournalError> {
    let kind = match col::<String>(r, "kind")?.as_str() {
        "cancel" => RequestKind::Cancel,
        "retry" => RequestKind::Retry,
        other => return Err(JournalError::Invalid(format!("unknown request kind {other:?}"))),
    };
    Ok(Request {
        id: col(r, "id")?,
        group_id: col(r, "group_id")?,
        kind,
        created_at_ms: col(r, "created_at")?,
        handled_at_ms: col(r, "handled_at")?,
        result: col::<Option<String>>(r, "result")?.as_deref().map(RequestResult::from_text),
    })
}

impl Requests for PgJournal {
    fn request(&self, id: GroupId, kind: RequestKind) -> Result<RequestId, JournalError> {
        self.write(|tx| {
            state_of(tx, id)?;
            let rid: RequestId = tx
                .query_one(
                    "INSERT INTO requests (group_id, kind, created_at) VALUES ($1, $2, $3) RETURNING id",
                    &[&id, &kind.as_str(), &now_ms()],
                )
                .map_err(db_err)
                .and_then(|r| col(&r, "id"))?;
            event(tx, id, None, None, Some(&format!("{} requested", kind.as_str())))?;
            Ok(rid)
        })
    }

    fn open_requests(&self) -> Result<Vec<Request>, JournalError> {
        let names = self.mounts().names();
        let rows = self.write_rc(|tx| {
            tx.query(
                &format!(
                    "UPDATE requests r SET node = $1, taken_until = {DB_NOW} + $2
                     FROM groups g
                     WHERE g.id = r.group_id AND r.handled_at IS NULL
                       AND (r.node IS NULL OR r.node = $1 OR r.taken_until < {DB_NOW})
                       AND (g.node = $1 OR g.node IS NULL OR g.lease_until IS NULL OR g.lease_until < {DB_NOW})
                       AND (g.watch = ANY($3) OR g.origin = $1)
                     RETURNING r.id, r.group_id, r.kind, r.created_at, r.handled_at, r.result"
                ),
                &[&self.node_name(), &self.lease_ms(), &names],
            )
            .map_err(db_err)
        })?;
        let mut out = rows.iter().map(request_from_row).collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|r| r.id);
        Ok(out)
    }

    fn request_status(&self, rid: RequestId) -> Result<Option<Request>, JournalError> {
        let row = self.with(|c| {
            c.query_opt(
                "SELECT id, group_id, kind, created_at, handled_at, result FROM requests WHERE id = $1",
                &[&rid],
            )
            .map_err(db_err)
        })?;
        row.as_ref().map(request_from_row).transpose()
    }

    fn finish_request(&self, rid: RequestId, result: &RequestResult) -> Result<(), JournalError> {
        self.write_rc(|tx| {
            tx.execute(
                "UPDATE requests SET handled_at = $2, result = $3 WHERE id = $1",
                &[&rid, &now_ms(), &result.to_text()],
            )
            .map_err(db_err)?;
            Ok(())
        })
    }
}

impl Pauses for PgJournal {
    fn set_pause(
        &self,
        reason: &PauseReason,
        detail: Option<&str>,
        next_check_ms: Option<i64>,
    ) -> Result<(), JournalError> {
        self.write_rc(|tx| {
            tx.execute(
                "INSERT INTO pauses (node, reason, detail, since, next_check) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (node, reason) DO UPDATE SET detail = excluded.detail, next_check = excluded.next_check",
                &[&self.node_name(), &reason.key(), &detail, &now_ms(), &next_check_ms],
            )
            .map_err(db_err)?;
            Ok(())
        })
    }

    fn clear_pause(&self, reason: &PauseReason) -> Result<bool, JournalError> {
        self.write_rc(|tx| {
            let n = tx
                .execute("DELETE FROM pauses WHERE node = $1 AND reason = $2", &[&self.node_name(), &reason.key()])
                .map_err(db_err)?;
            Ok(n > 0)
        })
    }

    fn clear_pauses_like(&self, kind: &PauseReason) -> Result<(), JournalError> {
        let pattern = kind.key_pattern();
        self.write_rc(|tx| {
            tx.execute("DELETE FROM pauses WHERE node = $1 AND reason LIKE $2", &[&self.node_name(), &pattern])
                .map_err(db_err)?;
            Ok(())
        })
    }

    fn pauses(&self) -> Result<Vec<Pause>, JournalError> {
        let rows = self.with(|c| {
            c.query(
                "SELECT reason, detail, since, next_check FROM pauses WHERE node = $1 ORDER BY since, reason",
                &[&self.node_name()],
            )
            .map_err(db_err)
        })?;
        let mut out = Vec::new();
        for r in &rows {
            if let Some(reason) = PauseReason::parse(&col::<String>(r, "reason")?) {
                out.push(Pause {
                    reason,
                    detail: col(r, "detail")?,
                    since_ms: col(r, "since")?,
                    next_check_ms: col(r, "next_check")?,
                });
            }
        }
        Ok(out)
    }

    fn pause(&self, reason: &PauseReason) -> Result<Option<Pause>, JournalError> {
        let row = self.with(|c| {
            c.query_opt(
                "SELECT detail, since, next_check FROM pauses WHERE node = $1 AND reason = $2",
                &[&self.node_name(), &reason.key()],
            )
            .map_err(db_err)
        })?;
        row.map(|r| {
            Ok(Pause {
                reason: reason.clone(),
                detail: col(&r, "detail")?,
                since_ms: col(&r, "since")?,
                next_check_ms: col(&r, "next_check")?,
            })
        })
        .transpose()
    }
}
