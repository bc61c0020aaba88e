//! Control requests: written by the CLI (`cancel`, `retry`) for the running
//! engine, which handles them and records what it did.

use rusqlite::{Row, params};

use super::codec::now_ms;
use super::history::{event, state_of};
use super::store::Requests;
use super::{GroupId, Journal, JournalError, Request, RequestId, RequestKind, RequestResult};

impl Requests for Journal {
    fn request(&self, id: GroupId, kind: RequestKind) -> Result<RequestId, JournalError> {
        self.write(|tx| {
            state_of(tx, id)?;
            tx.execute(
                "INSERT INTO requests (group_id, kind, created_at) VALUES (?1, ?2, ?3)",
                params![id, kind.as_str(), now_ms()],
            )?;
            let rid = tx.last_insert_rowid();
            event(tx, id, None, None, Some(&format!("{} requested", kind.as_str())))?;
            Ok(rid)
        })
    }

    fn open_requests(&self) -> Result<Vec<Request>, JournalError> {
        self.requests_where("handled_at IS NULL", None)
    }

    fn request_status(&self, rid: RequestId) -> Result<Option<Request>, JournalError> {
        Ok(self.requests_where("id = ?1", Some(rid))?.into_iter().next())
    }

    fn finish_request(&self, rid: RequestId, result: &RequestResult) -> Result<(), JournalError> {
        self.write(|tx| {
            tx.execute(
                "UPDATE requests SET handled_at = ?2, result = ?3 WHERE id = ?1",
                params![rid, now_ms(), result.to_text()],
            )?;
            Ok(())
        })
    }
}

impl Journal {
    fn requests_where(&self, cond: &str, arg: Option<i64>) -> Result<Vec<Request>, JournalError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT id, group_id, kind, created_at, handled_at, result FROM requests WHERE {cond} ORDER BY id"
        ))?;
        let map = |r: &Row<'_>| {
            Ok((
                r.get::<_, RequestId>(0)?,
                r.get::<_, GroupId>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<i64>>(4)?,
                r.get::<_, Option<String>>(5)?,
            ))
        };
        let rows = match arg {
            Some(a) => stmt.query_map([a], map)?.collect::<Result<Vec<_>, _>>()?,
            None => stmt.query_map([], map)?.collect::<Result<Vec<_>, _>>()?,
        };
        rows.into_iter()
            .map(|(id, group_id, kind, created_at_ms, handled_at_ms, result)| {
                let kind = match kind.as_str() {
                    "cancel" => RequestKind::Cancel,
                    "retry" => RequestKind::Retry,
                    other => return Err(JournalError::Invalid(format!("unknown request kind {other:?}"))),
                };
                let result = result.as_deref().map(RequestResult::from_text);
                Ok(Request { id, group_id, kind, created_at_ms, handled_at_ms, result })
            })
            .collect()
    }
}
