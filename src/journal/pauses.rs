//! Why the queue is held, as facts in the journal (schema v4, table
//! `pauses`): one row per reason, written by the running agent and read by
//! any process (`status`, metrics, `/healthz`).
//!
//! A row says what the agent saw when it wrote it; `since` is kept while the
//! same reason goes on holding (a re-check that is refused again only moves
//! `next_check`). The agent clears its rows when the reason ends and, for
//! the reasons it owns, when it starts (a row left by a killed agent
//! describes a process that is gone).

use std::path::{Path, PathBuf};

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::store::Pauses;
use super::{Journal, JournalError, format_ms, now_ms};

/// Prefix of a [`PauseReason::WatchMissing`] row's key.
const WATCH_PREFIX: &str = "watch:";
/// Prefix of a [`PauseReason::WatchUnreadable`] row's key.
const UNREADABLE_PREFIX: &str = "unreadable:";

/// Why uploads (or one watch folder) are held.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PauseReason {
    /// The API refused the key (401/403): nothing is sent until a re-check passes.
    Auth,
    /// The watch folder is missing (an unmounted share, a deleted folder):
    /// nothing in it is enqueued, canceled or forgotten until it is back.
    WatchMissing(PathBuf),
    /// Reads in the watch folder fail (no descriptors left, EIO, EACCES):
    /// its exports keep their state and the folder is read again with
    /// backoff. A fault, but it holds no upload: groups already queued
    /// read their files themselves.
    WatchUnreadable(PathBuf),
    /// An operator paused the queue (`pause`, or the console): nothing new
    /// starts until `resume`; parts in flight finish. Kept across restarts.
    Operator,
}

impl PauseReason {
    pub(super) fn key(&self) -> String {
        match self {
            PauseReason::Auth => "auth".to_string(),
            PauseReason::WatchMissing(p) => format!("{WATCH_PREFIX}{}", p.display()),
            PauseReason::WatchUnreadable(p) => format!("{UNREADABLE_PREFIX}{}", p.display()),
            PauseReason::Operator => "operator".to_string(),
        }
    }

    pub(super) fn parse(key: &str) -> Option<PauseReason> {
        match key {
            "auth" => Some(PauseReason::Auth),
            "operator" => Some(PauseReason::Operator),
            k => k
                .strip_prefix(WATCH_PREFIX)
                .map(|p| PauseReason::WatchMissing(PathBuf::from(p)))
                .or_else(|| k.strip_prefix(UNREADABLE_PREFIX).map(|p| PauseReason::WatchUnreadable(PathBuf::from(p)))),
        }
    }

    /// A SQL `LIKE` pattern matching every key of this kind (see
    /// [`Pauses::clear_pauses_like`]).
    pub(super) fn key_pattern(&self) -> String {
        match self {
            PauseReason::Auth => "auth".to_string(),
            PauseReason::Operator => "operator".to_string(),
            PauseReason::WatchMissing(_) => format!("{WATCH_PREFIX}%"),
            PauseReason::WatchUnreadable(_) => format!("{UNREADABLE_PREFIX}%"),
        }
    }

    /// The short word metrics use as a label (`auth`, `watch_missing`,
    /// `watch_unreadable`).
    pub fn label(&self) -> &'static str {
        match self {
            PauseReason::Auth => crate::model::PauseKind::Auth.as_str(),
            PauseReason::WatchMissing(_) => "watch_missing",
            PauseReason::WatchUnreadable(_) => "watch_unreadable",
            PauseReason::Operator => crate::model::PauseKind::Operator.as_str(),
        }
    }

    /// Does this reason mean something is wrong (`/healthz` answers 503)?
    /// An operator's pause is wanted, not a fault.
    pub fn is_fault(&self) -> bool {
        !matches!(self, PauseReason::Operator)
    }
}

/// One recorded pause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    pub reason: PauseReason,
    /// What the agent saw (the server's answer, the OS error).
    pub detail: Option<String>,
    /// Milliseconds since the epoch when this reason began to hold.
    pub since_ms: i64,
    /// When the agent looks again, if it said.
    pub next_check_ms: Option<i64>,
}

impl Pause {
    /// One line for people: `status`, `/healthz`, logs.
    pub fn describe(&self) -> String {
        let since = format_ms(self.since_ms);
        let next = self.next_check_ms.map(|n| format!(", next check {}", format_ms(n))).unwrap_or_default();
        let detail = self.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
        match &self.reason {
            PauseReason::Auth => format!("paused: the API refused the key since {since}{next}{detail}"),
            PauseReason::WatchMissing(p) => format!(
                "watch folder {} is missing since {since} (unmounted or deleted?); its exports wait for it{detail}",
                p.display()
            ),
            PauseReason::WatchUnreadable(p) => format!(
                "watch folder {} cannot be read since {since}; its exports keep their state and it is read again \
                 with backoff{detail}",
                p.display()
            ),
            PauseReason::Operator => format!("paused by operator since {since}{detail}"),
        }
    }

    /// Does this pause hold a group found in the watch folder `watch_path`?
    pub fn holds(&self, watch_path: Option<&Path>) -> bool {
        match &self.reason {
            PauseReason::Auth | PauseReason::Operator => true,
            PauseReason::WatchMissing(p) => watch_path == Some(p.as_path()),
            PauseReason::WatchUnreadable(_) => false,
        }
    }
}

/// The JSON form of a pause (for `status --json` rows and the console).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PauseView {
    pub reason: &'static str,
    pub message: String,
    pub since: String,
    pub next_check: Option<String>,
}

impl From<&Pause> for PauseView {
    fn from(p: &Pause) -> PauseView {
        PauseView {
            reason: p.reason.label(),
            message: p.describe(),
            since: format_ms(p.since_ms),
            next_check: p.next_check_ms.map(format_ms),
        }
    }
}

impl Pauses for Journal {
    fn set_pause(
        &self,
        reason: &PauseReason,
        detail: Option<&str>,
        next_check_ms: Option<i64>,
    ) -> Result<(), JournalError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO pauses (reason, detail, since, next_check) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(reason) DO UPDATE SET detail = excluded.detail, next_check = excluded.next_check",
                params![reason.key(), detail, now_ms(), next_check_ms],
            )?;
            Ok(())
        })
    }

    fn clear_pause(&self, reason: &PauseReason) -> Result<bool, JournalError> {
        self.write(|tx| Ok(tx.execute("DELETE FROM pauses WHERE reason = ?1", [reason.key()])? > 0))
    }

    fn clear_pauses_like(&self, kind: &PauseReason) -> Result<(), JournalError> {
        self.write(|tx| {
            tx.execute("DELETE FROM pauses WHERE reason LIKE ?1", [kind.key_pattern()])?;
            Ok(())
        })
    }

    fn pauses(&self) -> Result<Vec<Pause>, JournalError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT reason, detail, since, next_check FROM pauses ORDER BY since, reason")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?, r.get::<_, i64>(2)?, r.get(3)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (key, detail, since_ms, next_check_ms) = row?;
            if let Some(reason) = PauseReason::parse(&key) {
                out.push(Pause { reason, detail, since_ms, next_check_ms });
            }
        }
        Ok(out)
    }

    fn pause(&self, reason: &PauseReason) -> Result<Option<Pause>, JournalError> {
        let conn = self.conn();
        let row = conn
            .query_row("SELECT detail, since, next_check FROM pauses WHERE reason = ?1", [reason.key()], |r| {
                Ok(Pause { reason: reason.clone(), detail: r.get(0)?, since_ms: r.get(1)?, next_check_ms: r.get(2)? })
            })
            .optional()?;
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_keeps_its_start_while_it_holds_and_is_gone_when_cleared() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(&d.path().join("j.sqlite3")).unwrap();
        assert!(j.pauses().unwrap().is_empty());
        j.set_pause(&PauseReason::Auth, Some("401 invalid key"), Some(now_ms() + 300_000)).unwrap();
        let first = j.pause(&PauseReason::Auth).unwrap().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        j.set_pause(&PauseReason::Auth, Some("403 role"), Some(now_ms() + 600_000)).unwrap();
        let again = j.pause(&PauseReason::Auth).unwrap().unwrap();
        assert_eq!(again.since_ms, first.since_ms, "still the same pause");
        assert_eq!(again.detail.as_deref(), Some("403 role"));
        assert!(again.next_check_ms > first.next_check_ms);
        let text = again.describe();
        assert!(text.starts_with("paused: the API refused the key since ") && text.contains("next check"), "{text}");
        assert!(j.clear_pause(&PauseReason::Auth).unwrap());
        assert!(!j.clear_pause(&PauseReason::Auth).unwrap());
        assert!(j.pauses().unwrap().is_empty());
    }

    #[test]
    fn an_operator_pause_holds_every_group_is_no_fault_and_survives_a_reopen() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("j.sqlite3");
        let j = Journal::open(&path).unwrap();
        j.set_pause(&PauseReason::Operator, Some("by the console"), None).unwrap();
        j.set_pause(&PauseReason::Auth, None, None).unwrap();
        j.clear_pauses_like(&PauseReason::Auth).unwrap();
        drop(j);
        let j = Journal::open(&path).unwrap();
        let p = j.pause(&PauseReason::Operator).unwrap().expect("kept across a reopen");
        assert!(p.holds(None) && p.holds(Some(Path::new("/renders"))));
        assert!(!p.reason.is_fault() && PauseReason::Auth.is_fault());
        assert_eq!(p.reason.label(), "operator");
        assert!(p.describe().starts_with("paused by operator since "), "{}", p.describe());
        assert_eq!(j.pauses().unwrap().len(), 1);
        assert!(j.clear_pause(&PauseReason::Operator).unwrap());
        assert!(j.pauses().unwrap().is_empty());
    }

    #[test]
    fn a_missing_watch_folder_holds_only_its_own_groups() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(&d.path().join("j.sqlite3")).unwrap();
        let gone = PauseReason::WatchMissing("/mnt/share/exports".into());
        j.set_pause(&gone, Some("No such file or directory"), None).unwrap();
        j.set_pause(&PauseReason::WatchMissing("/mnt/other".into()), None, None).unwrap();
        j.set_pause(&PauseReason::Auth, None, None).unwrap();
        let all = j.pauses().unwrap();
        assert_eq!(all.len(), 3);
        let p = all.iter().find(|p| p.reason == gone).unwrap();
        assert!(p.holds(Some(Path::new("/mnt/share/exports"))));
        assert!(!p.holds(Some(Path::new("/renders"))));
        assert!(p.describe().contains("watch folder /mnt/share/exports is missing"), "{}", p.describe());
        j.clear_pauses_like(&PauseReason::WatchMissing(PathBuf::new())).unwrap();
        let left: Vec<_> = j.pauses().unwrap().into_iter().map(|p| p.reason).collect();
        assert_eq!(left, vec![PauseReason::Auth]);
    }

    #[test]
    fn an_unreadable_watch_folder_is_a_fault_that_holds_no_group_and_keeps_its_own_kind() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(&d.path().join("j.sqlite3")).unwrap();
        let root = PathBuf::from("/mnt/share/exports");
        let unreadable = PauseReason::WatchUnreadable(root.clone());
        let detail = "/mnt/share/exports/shot1: cannot read: Too many open files (os error 24)";
        j.set_pause(&unreadable, Some(detail), None).unwrap();
        j.set_pause(&PauseReason::WatchMissing(root.clone()), None, None).unwrap();
        let p = j.pause(&unreadable).unwrap().expect("recorded");
        assert_eq!(p.reason, unreadable, "read back as the same kind, not as a missing folder");
        assert!(p.reason.is_fault());
        assert_eq!(p.reason.label(), "watch_unreadable");
        assert!(!p.holds(Some(&root)) && !p.holds(None), "uploads go on");
        let text = p.describe();
        assert!(text.contains("watch folder /mnt/share/exports cannot be read") && text.contains(detail), "{text}");
        j.clear_pauses_like(&PauseReason::WatchMissing(PathBuf::new())).unwrap();
        let left: Vec<_> = j.pauses().unwrap().into_iter().map(|p| p.reason).collect();
        assert_eq!(left, vec![unreadable.clone()]);
        assert!(j.clear_pause(&unreadable).unwrap());
        assert!(j.pauses().unwrap().is_empty());
    }
}
