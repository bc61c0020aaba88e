//! `spatialgen-sync status`, `cancel`, `retry`, `pause` and `resume`: read
//! the journal, and print what [`crate::upload::control`] did (the cancel
//! protocol and the operator's pause live there, shared with the console).

use std::time::Duration;

use anyhow::Context;
use jiff::tz::TimeZone;

use super::{GroupArgs, Outcome, PauseArgs, StatusArgs, UsageError};
use crate::config::Config;
use crate::journal::{self, AsyncJournal, GroupFilter, GroupState, GroupSummary, Pause, Store};
use crate::media::thousands;
use crate::ops::status::{ENDED, active, attention, counts_line, json_rows, pause_lines, window_line};
use crate::ops::window::Schedule;
use crate::upload::control::{self, CancelAnswer, RetryAnswer};

/// How long `cancel` waits for a running engine to carry out its request.
const CANCEL_WAIT: Duration = Duration::from_secs(30);

/// How many ended groups the table shows unless `--all`.
pub const ENDED_SHOWN: u32 = 20;

/// `--since`: a duration back from now (`24h`) or a time (RFC 3339), as
/// milliseconds since the epoch.
pub fn parse_since(s: &str) -> Result<i64, String> {
    if let Ok(t) = s.trim().parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    let back: crate::config::Dur =
        s.parse().map_err(|e: String| format!("{e}; or write a time like \"2026-12-01T00:00:00Z\""))?;
    Ok(journal::now_ms().saturating_sub(i64::try_from(back.0.as_millis()).unwrap_or(i64::MAX)))
}

/// What `status` prints, read from the journal.
struct Read {
    rows: Vec<GroupSummary>,
    /// The table's summary: counts per state and how many ended groups it
    /// leaves out (`None` when it lists every row asked for).
    summary: Option<(Vec<(GroupState, u64)>, u64)>,
    pauses: Vec<Pause>,
    agent_running: Option<bool>,
}

fn read(j: &dyn Store, args: &StatusArgs) -> Result<Read, journal::JournalError> {
    let narrowed = !args.state.is_empty() || args.limit.is_some() || args.since.is_some() || args.node.is_some();
    let (rows, summary) = if narrowed {
        let filter = GroupFilter {
            states: args.state.clone(),
            updated_since_ms: args.since,
            node: args.node.clone(),
            limit: args.limit,
            ..GroupFilter::default()
        };
        let mut rows = j.groups(&filter)?;
        rows.reverse();
        (rows, None)
    } else if args.json || args.all {
        (j.list()?, None)
    } else {
        // At work, needing attention, and the newest ended ones: what a
        // person looks for, in one screen whatever the journal's size.
        let counts = j.count_by_state()?;
        let mut rows = active(j, None)?;
        rows.extend(attention(j)?);
        rows.extend(j.groups(&GroupFilter::newest(&ENDED, ENDED_SHOWN))?);
        rows.sort_by_key(|r| r.id);
        rows.dedup_by_key(|r| r.id);
        let ended: u64 = counts.iter().filter(|(s, _)| ENDED.contains(s)).map(|(_, n)| n).sum();
        let shown = rows.iter().filter(|r| ENDED.contains(&r.state)).count() as u64;
        (rows, Some((counts, ended.saturating_sub(shown))))
    };
    Ok(Read { rows, summary, pauses: j.pauses()?, agent_running: j.engine_running().ok() })
}

pub fn status(args: StatusArgs) -> anyhow::Result<Outcome> {
    let cfg = args.config.load()?;
    // No journal yet: nothing has happened; do not create one just to say so.
    // Otherwise read-only: `status` never creates, migrates or renames a journal.
    let read = if super::journal_exists(&cfg) {
        let journal = journal::open_configured_read_only(&cfg)?;
        read(journal.as_ref(), &args)?
    } else {
        Read { rows: Vec::new(), summary: None, pauses: Vec::new(), agent_running: None }
    };
    if args.json {
        // One array, as interface.md fixes it; the window state is in the table view.
        println!("{}", serde_json::to_string_pretty(&json_rows(&read.rows, &read.pauses)?)?);
        return Ok(Outcome::Success);
    }
    for line in pause_lines(&read.pauses, read.agent_running) {
        println!("{line}");
    }
    let schedule = Schedule::from_config(&cfg.upload).context("upload.window")?;
    let queued = match &read.summary {
        Some((counts, _)) => counts.iter().find(|(s, _)| *s == GroupState::Queued).map_or(0, |(_, n)| *n),
        None => read.rows.iter().filter(|r| r.state == GroupState::Queued).count() as u64,
    };
    if let Some(line) = window_line(&schedule.state_now(), schedule.is_always_open(), queued) {
        println!("{line}");
    }
    // What holds the queue first, then the counts and the rows.
    if let Some((counts, _)) = &read.summary {
        println!("{}", counts_line(counts));
    }
    match &read.summary {
        Some(_) if read.rows.is_empty() => {}
        _ => print!("{}", table(&read.rows)),
    }
    if let Some((_, more)) = read.summary.filter(|(_, more)| *more > 0) {
        println!(
            "{} more ended group(s): --all lists every one (or narrow with --state, --limit, --since)",
            thousands(more)
        );
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
    use crate::journal::prelude::*;

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
    fn the_counts_line_names_each_state_with_groups_in_order() {
        let counts = [(GroupState::Completed, 1_204_500), (GroupState::Queued, 3), (GroupState::Failed, 0)];
        assert_eq!(crate::ops::status::counts_line(&counts), "3 queued · 1,204,500 completed");
        assert_eq!(crate::ops::status::counts_line(&[(GroupState::Failed, 0)]), "no groups in the journal");
    }

    #[test]
    fn since_takes_a_duration_back_from_now_or_a_time() {
        assert_eq!(parse_since("2026-12-01T00:00:00Z").unwrap(), 1_796_083_200_000);
        let back = journal::now_ms() - parse_since("24h").unwrap();
        assert!((86_400_000..86_500_000).contains(&back), "{back}");
        let e = parse_since("yesterday").unwrap_err();
        assert!(e.contains("invalid duration") && e.contains("2026-12-01T00:00:00Z"), "{e}");
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
        let noon = s.state_at("2026-03-30T12:00:00Z".parse().unwrap());
        assert_eq!(
            window_line(&noon, false, 1).unwrap(),
            "paused until Mon 2026-03-30 19:00 UTC (outside every upload window; 1 group(s) queued)"
        );
        let evening = s.state_at("2026-03-30T20:00:00Z".parse().unwrap());
        assert_eq!(
            window_line(&evening, false, 1).unwrap(),
            "uploads run only inside windows; open until Tue 2026-03-31 07:00 UTC"
        );
        let always = Schedule::new(&[], None, TimeZone::UTC).unwrap();
        assert_eq!(window_line(&always.state_now(), always.is_always_open(), 1), None);
    }

    /// A journal with `ended` completed groups, then one queued and one failed.
    fn journal_with(ended: usize) -> (tempfile::TempDir, crate::journal::Journal) {
        let d = tempfile::tempdir().unwrap();
        let j = crate::journal::Journal::open(&d.path().join("j.sqlite3")).unwrap();
        for i in 0..ended + 2 {
            let key = format!("/w/clip-{i}");
            j.note_waiting(std::path::Path::new(&key), &format!("clip-{i}"), None).unwrap();
        }
        let last = (ended + 2) as i64;
        j.test_sql(&format!("UPDATE groups SET state = 'completed' WHERE id <= {ended}")).unwrap();
        j.test_sql(&format!("UPDATE groups SET state = 'queued', queued_at = 1 WHERE id = {}", last - 1)).unwrap();
        j.test_sql(&format!("UPDATE groups SET state = 'failed', error = 'no' WHERE id = {last}")).unwrap();
        (d, j)
    }

    fn args(edit: impl FnOnce(&mut StatusArgs)) -> StatusArgs {
        let mut a = StatusArgs {
            config: super::super::ConfigArg { config: None },
            json: false,
            all: false,
            state: Vec::new(),
            limit: None,
            since: None,
            node: None,
        };
        edit(&mut a);
        a
    }

    #[test]
    fn the_table_shows_work_attention_and_the_newest_twenty_ended_and_counts_the_rest() {
        let (_d, j) = journal_with(25);
        let r = read(&j, &args(|_| {})).unwrap();
        let ids: Vec<i64> = r.rows.iter().map(|r| r.id).collect();
        assert_eq!(ids, (6..=27).collect::<Vec<_>>(), "the newest 20 ended, the queued and the failed one");
        let (counts, more) = r.summary.expect("a summary");
        assert_eq!(more, 5);
        assert!(counts.contains(&(GroupState::Completed, 25)));
        // --all and --json: every row; a filter: what it keeps, oldest first.
        assert_eq!(read(&j, &args(|a| a.all = true)).unwrap().rows.len(), 27);
        let json = read(&j, &args(|a| a.json = true)).unwrap();
        assert_eq!((json.rows.len(), json.summary.is_none()), (27, true));
        let newest = read(&j, &args(|a| (a.state, a.limit) = (vec![GroupState::Completed], Some(3)))).unwrap();
        assert_eq!(newest.rows.iter().map(|r| r.id).collect::<Vec<_>>(), vec![23, 24, 25]);
        let future = read(&j, &args(|a| a.since = Some(journal::now_ms() + 60_000))).unwrap();
        assert!(future.rows.is_empty());
        let recent = read(&j, &args(|a| a.since = parse_since("1h").ok())).unwrap();
        assert_eq!(recent.rows.len(), 27);
    }
}
