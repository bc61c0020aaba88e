//! What `status` shows, built once for every front end: the CLI's `status`
//! (text and `--json`) and the console's `/api/v1/status` and
//! `/api/v1/groups/{id}` print the same rows from the same functions.

use std::path::Path;

use serde_json::{Value, json};

use crate::journal::{
    Event, FileRecord, GroupFilter, GroupState, GroupSummary, JournalError, Pause, PauseView, Store, format_ms,
};
use crate::ops::window::WindowState;

/// The states whose groups are work in flight.
pub const ACTIVE: [GroupState; 3] = [GroupState::Waiting, GroupState::Queued, GroupState::Uploading];

/// The states whose groups wait for a person.
pub const ATTENTION: [GroupState; 2] = [GroupState::Failed, GroupState::Rejected];

/// The states of the history: groups that ended and need nothing more.
pub const ENDED: [GroupState; 3] = [GroupState::Completed, GroupState::Canceled, GroupState::Expired];

/// Work in flight: every uploading group, then the queued ones in the
/// order the engine takes them, then the waiting ones, newest first; at
/// most `shown` queued and `shown` waiting (none: all).
pub fn active(j: &dyn Store, shown: Option<u32>) -> Result<Vec<GroupSummary>, JournalError> {
    let of = |state| GroupFilter { limit: shown, ..GroupFilter::newest(&[state], 0) };
    let mut rows = j.groups(&GroupFilter { limit: None, ..of(GroupState::Uploading) })?;
    rows.extend(j.groups(&GroupFilter { queue_order: true, ..of(GroupState::Queued) })?);
    rows.extend(j.groups(&of(GroupState::Waiting))?);
    Ok(rows)
}

/// What waits for a person, newest first: failed and rejected groups, and
/// completed ones whose after-upload step failed and will be tried again.
pub fn attention(j: &dyn Store) -> Result<Vec<GroupSummary>, JournalError> {
    let mut rows = j.groups(&GroupFilter { limit: None, ..GroupFilter::newest(&ATTENTION, 0) })?;
    // Only completed groups have an after-upload step: no state needed,
    // and the partial index `groups_unfinished` serves it.
    let after = GroupFilter { after_pending: true, ..GroupFilter::default() };
    rows.extend(j.groups(&after)?);
    rows.sort_by_key(|r| std::cmp::Reverse(r.id));
    Ok(rows)
}

/// One line of counts per state, in the order of [`GroupState::ALL`],
/// states with no group left out: `3 queued · 1 uploading · 1,204 completed`.
pub fn counts_line(counts: &[(GroupState, u64)]) -> String {
    let shown: Vec<String> = GroupState::ALL
        .iter()
        .filter_map(|s| {
            counts
                .iter()
                .find(|(c, _)| c == s)
                .filter(|(_, n)| *n > 0)
                .map(|(_, n)| format!("{} {s}", crate::media::thousands(*n)))
        })
        .collect();
    if shown.is_empty() { "no groups in the journal".to_string() } else { shown.join(" · ") }
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
pub fn window_line(state: &WindowState, always_open: bool, queued: u64) -> Option<String> {
    if always_open {
        return None;
    }
    let when = |label: &str| {
        state.until.as_ref().map(|u| format!(" {label} {}", u.strftime("%a %Y-%m-%d %H:%M %Z"))).unwrap_or_default()
    };
    Some(if state.open {
        format!("uploads run only inside windows; open{}", when("until"))
    } else {
        format!("paused{} (outside every upload window; {queued} group(s) queued)", when("until"))
    })
}
