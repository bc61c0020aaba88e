//! `spatialgen-sync status`, `cancel`, `retry`, `pause` and `resume`: read
//! the journal, and print what [`crate::upload::control`] did (the cancel
//! protocol and the operator's pause live there, shared with the console).

use std::time::Duration;

use anyhow::Context;
use jiff::tz::TimeZone;

use super::{GroupArgs, Outcome, PauseArgs, StatusArgs, UsageError};
use crate::config::Config;
use crate::journal::{self, AsyncJournal, GroupSummary};
use crate::ops::status::{json_rows, pause_lines, select, window_line};
use crate::ops::window::Schedule;
use crate::upload::control::{self, CancelAnswer, RetryAnswer};

/// How long `cancel` waits for a running engine to carry out its request.
const CANCEL_WAIT: Duration = Duration::from_secs(30);

pub fn status(args: StatusArgs) -> anyhow::Result<Outcome> {
    let cfg = args.config.load()?;
    // No journal yet: nothing has happened; do not create one just to say so.
    // Otherwise read-only: `status` never creates, migrates or renames a journal.
    let (rows, pauses, agent_running) = if super::journal_exists(&cfg) {
        let journal = journal::open_configured_read_only(&cfg)?;
        (journal.list()?, journal.pauses()?, journal.engine_running().ok())
    } else {
        (Vec::new(), Vec::new(), None)
    };
    let rows: Vec<GroupSummary> =
        rows.into_iter().filter(|r| args.node.as_ref().is_none_or(|n| r.node.as_ref() == Some(n))).collect();
    let rows = select(rows, &args.state, args.limit);
    if args.json {
        // One array, as interface.md fixes it; the window state is in the table view.
        println!("{}", serde_json::to_string_pretty(&json_rows(&rows, &pauses)?)?);
    } else {
        for line in pause_lines(&pauses, agent_running) {
            println!("{line}");
        }
        let schedule = Schedule::from_config(&cfg.upload).context("upload.window")?;
        if let Some(line) = window_line(&schedule.state_now(), schedule.is_always_open(), &rows) {
            println!("{line}");
        }
        print!("{}", table(&rows));
    }
    Ok(Outcome::Success)
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// The `status` table: one line per group, its error on the next line. `#`
/// is a queued group's place in the queue (1 = the engine takes it next).
/// A completed group whose after-upload step failed and will be tried again
/// says so on the next line, with the next attempt's local time.
pub fn table(rows: &[GroupSummary]) -> String {
    table_in(rows, &TimeZone::system())
}

/// The time of day of `ms` in `tz`, `HH:MM`, with the date when it is not
/// on the day of `now_ms` (an overdue attempt of an agent that is not running).
fn time_of_day(ms: i64, now_ms: i64, tz: &TimeZone) -> String {
    let zoned = |ms: i64| jiff::Timestamp::from_millisecond(ms).map(|t| t.to_zoned(tz.clone()));
    match (zoned(ms), zoned(now_ms)) {
        (Ok(at), Ok(now)) if at.date() == now.date() => at.strftime("%H:%M").to_string(),
        (Ok(at), _) => at.strftime("%Y-%m-%d %H:%M").to_string(),
        (Err(_), _) => journal::format_ms(ms),
    }
}

/// [`table`] with times in `tz`.
fn table_in(rows: &[GroupSummary], tz: &TimeZone) -> String {
    let now = journal::now_ms();
    if rows.is_empty() {
        return "no groups in the journal\n".to_string();
    }
    let mut out =
        format!("{:>5} {:>3}  {:<10} {:>24}  {:>9}  {}\n", "ID", "#", "STATE", "PROGRESS", "LIBRARY", "NAME  (PATH)");
    for r in rows {
        let pct = if r.bytes_total == 0 { 0.0 } else { r.bytes_uploaded as f64 * 100.0 / r.bytes_total as f64 };
        let progress = if r.bytes_total == 0 {
            "-".to_string()
        } else {
            format!("{}/{} {:>3.0}%", human(r.bytes_uploaded), human(r.bytes_total), pct)
        };
        let lib = r.library_id.map(|l| l.to_string()).unwrap_or_else(|| "-".into());
        let place = r.queue_position.map(|p| p.to_string()).unwrap_or_default();
        let node = r.node.as_deref().map(|n| format!("  [{n}]")).unwrap_or_default();
        out.push_str(&format!(
            "{:>5} {:>3}  {:<10} {:>24}  {:>9}  {}  ({}){node}\n",
            r.id, place, r.state, progress, lib, r.name, r.path
        ));
        if let Some(a) = &r.after_upload {
            let line = a.describe(&time_of_day(a.next_attempt_ms, now, tz));
            out.push_str(&format!("{:>5} {:>3}  {} · {line}\n", "", "", r.state));
        }
        if let Some(e) = &r.error {
            out.push_str(&format!("{:>5} {:>3}  {}\n", "", "", e));
        }
    }
    out
}

pub fn cancel(args: GroupArgs) -> anyhow::Result<Outcome> {
    let cfg = args.config.load()?;
    super::init_logging(&cfg);
    let journal = journal::open_configured(&cfg)?;
    let id = super::find_group(journal.as_ref(), &args.group)?;
    let name = journal.group(id)?.name;
    let answer = super::runtime()?.block_on(control::cancel(&cfg, &AsyncJournal::new(journal), id, CANCEL_WAIT))?;
    Ok(match answer {
        CancelAnswer::Canceled => {
            println!("group {id} ({name}) canceled");
            Outcome::Success
        }
        CancelAnswer::AlreadyCanceled => {
            println!("group {id} ({name}) is already canceled");
            Outcome::Success
        }
        CancelAnswer::Requested => {
            println!("the cancel of group {id} is recorded; the running agent carries it out");
            Outcome::Success
        }
        CancelAnswer::StillSettling => {
            return Err(UsageError(format!(
                "group {id} ({name}) is still settling; nothing has been sent yet (cancel it once it is queued, or move the export away)"
            ))
            .into());
        }
        CancelAnswer::CompletedOnServer { library_id } => {
            println!(
                "group {id} ({name}) was not canceled: it had completed on the server (library id {library_id}); \
                 its after-upload step runs in the agent"
            );
            Outcome::WorkFailed
        }
        CancelAnswer::NothingToCancel(state) => {
            eprintln!("group {id} ({name}) is {state}; there is nothing to cancel");
            Outcome::WorkFailed
        }
        CancelAnswer::NotCanceled(why) => {
            eprintln!("group {id} ({name}): not canceled: {why}");
            Outcome::WorkFailed
        }
    })
}

pub fn retry(args: GroupArgs) -> anyhow::Result<Outcome> {
    let cfg: Config = args.config.load()?;
    let journal = journal::open_configured(&cfg)?;
    let id = super::find_group(journal.as_ref(), &args.group)?;
    let name = journal.group(id)?.name;
    match control::retry(journal.as_ref(), id).context("cannot re-queue")? {
        RetryAnswer::Refused(why) => {
            eprintln!("{why}");
            return Ok(Outcome::WorkFailed);
        }
        RetryAnswer::Requeued { id: new } if new == id => println!("group {id} ({name}) re-queued"),
        RetryAnswer::Requeued { id: new } => println!("group {id} ({name}) re-queued as group {new}"),
    }
    if !journal.engine_running()? {
        println!("no agent is running on this journal: start `spatialgen-sync run` to upload it");
    }
    Ok(Outcome::Success)
}

pub fn pause(args: PauseArgs) -> anyhow::Result<Outcome> {
    let cfg = args.config.load()?;
    let journal = journal::open_configured(&cfg)?;
    if control::pause(journal.as_ref(), "from the command line")? {
        println!("paused by operator: no new group or part starts; parts in flight finish (`resume` releases it)");
    } else {
        println!("the queue was already paused by operator");
    }
    Ok(Outcome::Success)
}

pub fn resume(args: PauseArgs) -> anyhow::Result<Outcome> {
    let cfg = args.config.load()?;
    let journal = journal::open_configured(&cfg)?;
    if control::resume(journal.as_ref())? {
        println!("resumed: the queue runs");
    } else {
        println!("the queue was not paused by operator");
    }
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WindowConfig;
    use crate::journal::GroupState;

    fn row(id: i64, state: GroupState, queue_position: Option<u32>) -> GroupSummary {
        GroupSummary {
            id,
            name: format!("g{id}"),
            path: format!("/x/g{id}"),
            state,
            session_id: None,
            library_id: None,
            bytes_total: 10,
            bytes_uploaded: 0,
            error: None,
            priority: 0,
            queue_position,
            layout: None,
            files: 1,
            parts_total: 0,
            parts_done: 0,
            retry_of: None,
            watch_path: None,
            node: None,
            after_upload: None,
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    #[test]
    fn state_and_limit_keep_the_newest_rows_of_the_states_asked_for() {
        let rows = || {
            vec![
                row(1, GroupState::Completed, None),
                row(2, GroupState::Failed, None),
                row(3, GroupState::Completed, None),
                row(4, GroupState::Queued, Some(1)),
            ]
        };
        let ids = |r: Vec<GroupSummary>| r.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(select(rows(), &[], None)), vec![1, 2, 3, 4]);
        assert_eq!(ids(select(rows(), &[GroupState::Completed], None)), vec![1, 3]);
        assert_eq!(ids(select(rows(), &[GroupState::Completed, GroupState::Queued], Some(2))), vec![3, 4]);
        assert_eq!(ids(select(rows(), &[], Some(1))), vec![4]);
        assert_eq!(ids(select(rows(), &[], Some(10))), vec![1, 2, 3, 4]);
        assert!(select(rows(), &[GroupState::Expired], None).is_empty());
    }

    #[test]
    fn the_table_shows_each_queued_groups_place() {
        let rows = [
            row(1, GroupState::Uploading, None),
            row(2, GroupState::Queued, Some(2)),
            row(3, GroupState::Queued, Some(1)),
        ];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].contains(" # ") && lines[0].contains("STATE"), "{t}");
        let place = |l: &str| l.split_whitespace().nth(1).map(str::to_string);
        assert_eq!(place(lines[1]).as_deref(), Some("uploading"), "no place for a running group: {t}");
        assert_eq!(place(lines[2]).as_deref(), Some("2"), "{t}");
        assert_eq!(place(lines[3]).as_deref(), Some("1"), "{t}");
    }

    #[test]
    fn a_pending_after_upload_retry_is_shown_under_its_completed_group() {
        let next: jiff::Timestamp = "2026-03-30T14:05:00Z".parse().unwrap();
        let mut r = row(7, GroupState::Completed, None);
        r.after_upload = Some(journal::AfterUploadRetry {
            failures: 2,
            attempts: 6,
            error: "move to /mnt/done: /mnt/done/g7/v.mov: No space left on device (os error 28)".into(),
            next_attempt_ms: next.as_millisecond(),
        });
        let t = table_in(std::slice::from_ref(&r), &TimeZone::UTC);
        let line = t.lines().nth(2).unwrap_or_default().trim().to_string();
        assert!(line.starts_with("completed · after-upload step failed (attempt 2 of 6): move to /mnt/done: "), "{t}");
        assert!(line.contains("No space left on device"), "{t}");
        assert!(line.ends_with("; next try 14:05") || line.ends_with("; next try 2026-03-30 14:05"), "{t}");
        assert_eq!(time_of_day(next.as_millisecond(), next.as_millisecond() - 60_000, &TimeZone::UTC), "14:05");
        assert_eq!(
            time_of_day(next.as_millisecond(), next.as_millisecond() + 86_400_000, &TimeZone::UTC),
            "2026-03-30 14:05"
        );

        // `status --json`: a field of its own, and the `error` of a row that had none.
        let v = crate::ops::status::json_row(&r, &[]).unwrap();
        assert_eq!(v["afterUpload"]["failures"], 2);
        assert_eq!(v["afterUpload"]["attempts"], 6);
        assert_eq!(v["afterUpload"]["nextAttempt"], "2026-03-30T14:05:00Z");
        assert!(v["afterUpload"]["error"].as_str().unwrap().contains("No space left on device"));
        assert_eq!(
            v["error"].as_str().unwrap(),
            format!(
                "after-upload step failed (attempt 2 of 6): {}; next try 2026-03-30T14:05:00Z",
                r.after_upload.as_ref().unwrap().error
            )
        );
        // An error of its own stays the row's error.
        r.error = Some("after upload, left in place: x".into());
        assert_eq!(crate::ops::status::json_row(&r, &[]).unwrap()["error"], "after upload, left in place: x");
        // None pending: null, and no line.
        let done = row(8, GroupState::Completed, None);
        assert!(crate::ops::status::json_row(&done, &[]).unwrap()["afterUpload"].is_null());
        assert_eq!(table_in(&[done], &TimeZone::UTC).lines().count(), 2);
    }

    #[test]
    fn the_window_line_says_paused_until_or_open_until() {
        let night = WindowConfig { days: vec![], from: "19:00".into(), to: "07:00".into(), bandwidth: None };
        let s = Schedule::new(&[night], None, TimeZone::UTC).unwrap();
        let rows = [row(1, GroupState::Queued, Some(1))];
        let noon = s.state_at("2026-03-30T12:00:00Z".parse().unwrap());
        assert_eq!(
            window_line(&noon, false, &rows).unwrap(),
            "paused until Mon 2026-03-30 19:00 UTC (outside every upload window; 1 group(s) queued)"
        );
        let evening = s.state_at("2026-03-30T20:00:00Z".parse().unwrap());
        assert_eq!(
            window_line(&evening, false, &rows).unwrap(),
            "uploads run only inside windows; open until Tue 2026-03-31 07:00 UTC"
        );
        let always = Schedule::new(&[], None, TimeZone::UTC).unwrap();
        assert_eq!(window_line(&always.state_now(), always.is_always_open(), &rows), None);
    }
}
