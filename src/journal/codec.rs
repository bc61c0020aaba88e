//! How values are written to and read from columns: times, paths (the raw
//! bytes of the OS string), state text, and the rows of `status` and of `parts`.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::Row;
use rusqlite::types::ValueRef;

use super::{AfterUploadRetry, GroupState, GroupSummary, JournalError, PartRecord};

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// RFC 3339 for a millisecond timestamp.
pub fn format_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_else(|_| ms.to_string())
}

#[cfg(unix)]
pub(super) fn path_bytes(p: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes().to_vec()
}

#[cfg(not(unix))]
pub(super) fn path_bytes(p: &Path) -> Vec<u8> {
    p.to_string_lossy().into_owned().into_bytes()
}

#[cfg(unix)]
pub(super) fn bytes_path(b: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(b))
}

#[cfg(not(unix))]
pub(super) fn bytes_path(b: &[u8]) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(b).into_owned())
}

/// The spellings of `spec` a look-up by path tries: as given, absolute and
/// canonical (separators as written: a key keeps the OS's spelling).
pub(super) fn path_candidates(spec: &str) -> Vec<PathBuf> {
    let p = Path::new(spec);
    [Some(p.to_path_buf()), std::path::absolute(p).ok(), p.canonicalize().ok()].into_iter().flatten().collect()
}

/// An encoded path without its trailing separator (`/`, and `\` on
/// Windows), unless that is all it is.
pub(super) fn trim_separator(mut b: Vec<u8>) -> Vec<u8> {
    if b.len() > 1 && b.last().is_some_and(|&c| std::path::is_separator(char::from(c))) {
        b.pop();
    }
    b
}

/// A path column: written as a blob, read back from a blob or text.
pub(super) fn get_path(row: &Row<'_>, col: &str) -> rusqlite::Result<PathBuf> {
    match row.get_ref(col)? {
        ValueRef::Blob(b) | ValueRef::Text(b) => Ok(bytes_path(b)),
        other => Err(rusqlite::Error::InvalidColumnType(0, col.into(), other.data_type())),
    }
}

pub(super) fn get_opt_path(row: &Row<'_>, col: &str) -> rusqlite::Result<Option<PathBuf>> {
    match row.get_ref(col)? {
        ValueRef::Null => Ok(None),
        _ => get_path(row, col).map(Some),
    }
}

/// A file's stored media facts (`files.media`). Facts are informational: a
/// value this binary cannot read (written by a newer one) is left out, not
/// an error that would stop an upload.
pub(crate) fn media_col(v: Option<String>) -> Option<crate::media::MediaFacts> {
    let text = v?;
    serde_json::from_str(&text)
        .map_err(|e| tracing::debug!(error = %e, "stored media facts not understood; left out"))
        .ok()
}

pub(super) fn parse_col<T: std::str::FromStr<Err = String>>(v: Option<String>) -> Result<Option<T>, JournalError> {
    v.map(|s| s.parse::<T>().map_err(JournalError::Invalid)).transpose()
}

/// The columns of a `status` row; [`summary_from_row`] reads one.
pub(super) const SUMMARY_SQL: &str = "
    SELECT g.id, g.name, g.key, g.state, g.session_id, g.library_id, g.error, g.priority, g.layout, g.retry_of,
           g.watch_path, g.created_at, g.updated_at,
           g.finished, g.after_failures, g.after_error, g.after_next_ms,
           (SELECT COUNT(*) FROM files f WHERE f.group_id = g.id) AS nfiles,
           (SELECT COALESCE(SUM(f.size), 0) FROM files f WHERE f.group_id = g.id) AS total,
           (SELECT COUNT(*) FROM parts p JOIN files f ON p.file_id = f.id WHERE f.group_id = g.id) AS nparts,
           (SELECT COUNT(*) FROM parts p JOIN files f ON p.file_id = f.id
              WHERE f.group_id = g.id AND p.state = 'done') AS ndone,
           (SELECT COALESCE(SUM(p.size), 0) FROM parts p JOIN files f ON p.file_id = f.id
              WHERE f.group_id = g.id AND p.state = 'done') AS done
    FROM groups g";

/// A `status` row of [`SUMMARY_SQL`], and its state as text (parsed by the caller).
pub(super) fn summary_from_row(r: &Row<'_>) -> rusqlite::Result<(GroupSummary, String)> {
    let state: String = r.get("state")?;
    let summary = GroupSummary {
        id: r.get("id")?,
        name: r.get("name")?,
        path: get_path(r, "key")?.display().to_string(),
        state: GroupState::Waiting,
        session_id: r.get("session_id")?,
        library_id: r.get::<_, Option<i64>>("library_id")?.map(|v| v as u64),
        bytes_total: r.get::<_, i64>("total")? as u64,
        bytes_uploaded: r.get::<_, i64>("done")? as u64,
        error: r.get("error")?,
        priority: r.get("priority")?,
        queue_position: None,
        layout: r.get("layout")?,
        files: r.get::<_, i64>("nfiles")? as u32,
        parts_total: r.get::<_, i64>("nparts")? as u32,
        parts_done: r.get::<_, i64>("ndone")? as u32,
        retry_of: r.get("retry_of")?,
        watch_path: get_opt_path(r, "watch_path")?.map(|p| p.display().to_string()),
        node: None,
        after_upload: AfterUploadRetry::from_columns(
            r.get("finished")?,
            r.get("after_failures")?,
            r.get("after_error")?,
            r.get("after_next_ms")?,
        ),
        created_at: format_ms(r.get("created_at")?),
        updated_at: format_ms(r.get("updated_at")?),
    };
    Ok((summary, state))
}

/// A row of `SELECT part_number, byte_start, size, etag, state FROM parts`.
pub(super) fn part_from_row(r: &Row<'_>) -> rusqlite::Result<PartRecord> {
    Ok(PartRecord {
        part_number: r.get::<_, i64>(0)? as u32,
        byte_start: r.get::<_, i64>(1)? as u64,
        size: r.get::<_, i64>(2)? as u64,
        etag: r.get(3)?,
        done: r.get::<_, String>(4)? == "done",
    })
}
