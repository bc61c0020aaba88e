//! What `status` shows, built once for every front end: the CLI's `status`
//! (text and `--json`) and the console's `/api/v1/status` and
//! `/api/v1/groups/{id}` print the same rows from the same functions.

use std::path::Path;

use serde_json::{Value, json};

use crate::journal::{Event, FileRecord, GroupState, GroupSummary, Pause, PauseView, format_ms};
use crate::ops::window::WindowState;

/// The rows `--state` and `--limit` keep: those in one of `states` (all
/// when empty), then the newest `limit` of them, still oldest first.
pub fn select(rows: Vec<GroupSummary>, states: &[GroupState], limit: Option<usize>) -> Vec<GroupSummary> {
    let mut rows: Vec<GroupSummary> =
        rows.into_iter().filter(|r| states.is_empty() || states.contains(&r.state)).collect();
    if let Some(n) = limit {
        rows.drain(..rows.len().saturating_sub(n));
    }
    rows
}

/// One row of `status --json`: the group as the journal summarises it,
/// plus `paused` (a [`PauseView`], or null) when it is `queued` or
/// `uploading` and a recorded pause holds it (the refused key and an
/// operator's pause hold them all; a missing watch folder holds the groups
/// found in it). A pending retry of the after-upload step is `afterUpload`
/// (`failures`, `attempts`, `error`, `nextAttempt`; null when none), and
/// also the row's `error` when that is empty ([`AfterUploadRetry::describe`](crate::journal::AfterUploadRetry::describe)), for
/// scripts that read only `error`.
pub fn json_row(r: &GroupSummary, pauses: &[Pause]) -> serde_json::Result<Value> {
    let mut v = serde_json::to_value(r)?;
    let held = matches!(r.state, GroupState::Queued | GroupState::Uploading)
        .then(|| pauses.iter().find(|p| p.holds(r.watch_path.as_deref().map(Path::new))))
        .flatten();
    if let Value::Object(m) = &mut v {
        m.insert("paused".into(), serde_json::to_value(held.map(PauseView::from))?);
        if let (None, Some(a)) = (&r.error, &r.after_upload) {
            m.insert("error".into(), Value::String(a.describe(&format_ms(a.next_attempt_ms))));
        }
    }
    Ok(v)
}

/// Every row of `status --json`, see [`json_row`].
pub fn json_rows(rows: &[GroupSummary], pauses: &[Pause]) -> serde_json::Result<Vec<Value>> {
    rows.iter().map(|r| json_row(r, pauses)).collect()
}

/// One file of a group as `show --json` and the console's group detail print
/// it: what it is, and `media` (what its container says) when the media
/// check looked inside.
pub fn file_json(f: &FileRecord) -> Value {
    let mut v = json!({
        "id": f.id,
        "path": f.rel_path,
        "fileName": f.file_name,
        "role": f.role.as_str(),
        "language": f.language,
        "sizeBytes": f.size,
        "state": f.state.as_str(),
    });
    if let (Value::Object(m), Some(media)) = (&mut v, &f.media) {
        m.insert("media".into(), serde_json::to_value(media).unwrap_or(Value::Null));
    }
    v
}

/// A group's history as `show --json` and the console print it.
pub fn history_json(events: &[Event]) -> Vec<Value> {
    events
        .iter()
        .map(|e| {
            json!({
                "at": format_ms(e.at_ms),
                "from": e.from.map(|s| s.to_string()),
                "to": e.to.map(|s| s.to_string()),
                "detail": e.detail,
            })
        })
        .collect()
}

/// The lines above the table for each recorded pause. A pause recorded by
/// an agent that is no longer running says so (an operator's pause is the
/// operator's, not the agent's: it holds whether or not one runs).
pub fn pause_lines(pauses: &[Pause], agent_running: Option<bool>) -> Vec<String> {
    pauses
        .iter()
        .map(|p| match agent_running {
            Some(false) if p.reason.is_fault() => {
                format!("{} (recorded by an agent that is not running now)", p.describe())
            }
            _ => p.describe(),
        })
        .collect()
}

/// The line above the table when upload windows are configured: paused (and
/// until when) or open (and until when). `None` without windows.
pub fn window_line(state: &WindowState, always_open: bool, rows: &[GroupSummary]) -> Option<String> {
    if always_open {
        return None;
    }
    let when = |label: &str| {
        state.until.as_ref().map(|u| format!(" {label} {}", u.strftime("%a %Y-%m-%d %H:%M %Z"))).unwrap_or_default()
    };
    let queued = rows.iter().filter(|r| r.state == GroupState::Queued).count();
    Some(if state.open {
        format!("uploads run only inside windows; open{}", when("until"))
    } else {
        format!("paused{} (outside every upload window; {queued} group(s) queued)", when("until"))
    })
}
