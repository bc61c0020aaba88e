//! `spatialgen-sync show GROUP`: one group as the journal knows it: its
//! record, its files with their parts, and its history. Read-only: the
//! journal is opened with `journal::open_configured_read_only`.

use serde_json::{Value, json};

use super::{Outcome, ShowArgs, UsageError};
use crate::journal::{AfterUploadRetry, Event, FileRecord, GroupRecord, format_ms};

pub fn run(args: ShowArgs) -> anyhow::Result<Outcome> {
    let cfg = args.config.load()?;
    if !super::journal_exists(&cfg) {
        return Err(UsageError(format!("no journal at {} yet: nothing to show", cfg.journal.path.display())).into());
    }
    let journal = crate::journal::open_configured_read_only(&cfg)?;
    let id = super::find_group(journal.as_ref(), &args.group)?;
    let g = journal.group(id)?;
    let events = journal.events(id)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&to_json(&g, &events))?);
    } else {
        print!("{}", to_text(&g, &events));
    }
    Ok(Outcome::Success)
}

fn parts_done(f: &FileRecord) -> usize {
    f.parts.iter().filter(|p| p.done).count()
}

/// The group as one JSON object: the record, `files` (each with its parts)
/// and `history`, times as RFC 3339.
pub fn to_json(g: &GroupRecord, events: &[Event]) -> Value {
    let files: Vec<Value> = g
        .files
        .iter()
        .map(|f| {
            let mut v = crate::ops::status::file_json(f);
            if let Value::Object(m) = &mut v {
                let upload = json!({
                    "uploadId": f.upload_id,
                    "strategy": f.strategy.map(|s| s.as_str()),
                    "partSizeBytes": f.part_size,
                    "partsTotal": f.parts.len(),
                    "partsDone": parts_done(f),
                    "parts": f.parts.iter().map(|p| json!({
                        "partNumber": p.part_number,
                        "byteStart": p.byte_start,
                        "sizeBytes": p.size,
                        "done": p.done,
                        "etag": p.etag,
                    })).collect::<Vec<_>>(),
                });
                if let Value::Object(u) = upload {
                    m.extend(u);
                }
            }
            v
        })
        .collect();
    let history = crate::ops::status::history_json(events);
    let after = pending_after_upload(g);
    json!({
        "id": g.id,
        "name": g.name,
        "path": g.key.display().to_string(),
        "watchPath": g.watch_path.as_ref().map(|p| p.display().to_string()),
        "state": g.state.to_string(),
        "layout": g.layout.map(|l| l.as_str()),
        "perspective": g.perspective.map(|p| p.as_str()),
        "priority": g.priority,
        "sessionId": g.session_id,
        "expiresAt": g.expires_at,
        "libraryId": g.library_id,
        "error": g.error,
        "retryAt": g.retry_at_ms.map(format_ms),
        "retryOf": g.retry_of,
        "afterUpload": after,
        "createdAt": format_ms(g.created_at_ms),
        "bytesTotal": g.total_bytes(),
        "bytesUploaded": g.uploaded_bytes(),
        "files": files,
        "history": history,
    })
}

/// A pending retry of the group's after-upload step, as `status` shows it.
fn pending_after_upload(g: &GroupRecord) -> Option<AfterUploadRetry> {
    AfterUploadRetry::from_columns(g.finished, g.after_failures.into(), g.after_error.clone(), g.after_next_ms)
}

/// The group for a terminal: a heading, its facts, one line per file, then
/// the history, oldest first.
pub fn to_text(g: &GroupRecord, events: &[Event]) -> String {
    let mut out = format!("group {}: {} ({})\n", g.id, g.name, g.state);
    let mut fact = |k: &str, v: String| out.push_str(&format!("  {k:<10} {v}\n"));
    fact("path", g.key.display().to_string());
    if let Some(l) = g.layout {
        fact("layout", format!("{l}{}", g.perspective.map(|p| format!(", perspective {p}")).unwrap_or_default()));
    }
    fact("bytes", format!("{} of {} uploaded", g.uploaded_bytes(), g.total_bytes()));
    if let Some(s) = &g.session_id {
        fact("session", format!("{s}{}", g.expires_at.as_ref().map(|e| format!(" (expires {e})")).unwrap_or_default()));
    }
    if let Some(l) = g.library_id {
        fact("library", format!("id {l}"));
    }
    if let Some(e) = &g.error {
        fact("error", e.clone());
    }
    if let Some(at) = g.retry_at_ms {
        fact("retry at", format_ms(at));
    }
    if let Some(a) = pending_after_upload(g) {
        fact("after", a.describe(&format_ms(a.next_attempt_ms)));
    }
    if let Some(of) = g.retry_of {
        fact("retry of", format!("group {of}"));
    }
    out.push_str("  files:\n");
    for f in &g.files {
        let parts =
            if f.parts.is_empty() { String::new() } else { format!("  parts {}/{}", parts_done(f), f.parts.len()) };
        out.push_str(&format!(
            "    {:<11} {}  {} bytes  {}{parts}\n",
            f.role.as_str(),
            f.rel_path,
            f.size,
            f.state.as_str()
        ));
        if let Some(m) = &f.media {
            out.push_str(&format!("    {:<11} {}\n", "", crate::group::inspect::describe(m)));
        }
    }
    out.push_str("  history:\n");
    for e in events {
        let moved = match (e.from, e.to) {
            (Some(a), Some(b)) => format!("{a} -> {b}"),
            (None, Some(b)) => format!("-> {b}"),
            _ => "note".to_string(),
        };
        let detail = e.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
        out.push_str(&format!("    {}  {moved}{detail}\n", format_ms(e.at_ms)));
    }
    out
}
