//! The plans of the queries a console poll and `status` run, on a journal
//! of 100,000 groups: each walks an index (or the primary key backwards,
//! stopping at its limit), none reads every group. Both backends: SQLite's
//! `EXPLAIN QUERY PLAN`, PostgreSQL's `EXPLAIN`.

use super::filter::{self, GroupFilter};
use super::{GroupState, Journal};

/// Groups in the synthetic journal.
const GROUPS: i64 = 100_000;

/// The newest ten groups wait in the queue (the synthetic history has none).
const QUEUED: &str =
    "UPDATE groups SET state = 'queued', finished = false WHERE id > (SELECT MAX(id) - 10 FROM groups);";

/// The filters one console poll (and the `status` table) asks for, named.
fn per_poll() -> Vec<(&'static str, GroupFilter)> {
    use crate::ops::status::{ATTENTION, ENDED};
    let newest = GroupFilter::newest;
    vec![
        ("uploading", GroupFilter { limit: None, ..newest(&[GroupState::Uploading], 0) }),
        ("queued, queue order", GroupFilter { queue_order: true, ..newest(&[GroupState::Queued], 200) }),
        ("waiting", newest(&[GroupState::Waiting], 200)),
        ("attention", GroupFilter { limit: None, ..newest(&ATTENTION, 0) }),
        ("after-upload pending", GroupFilter { after_pending: true, ..GroupFilter::default() }),
        ("first page", newest(&ENDED, 51)),
        ("an older page", GroupFilter { before: Some(GROUPS / 2), ..newest(&ENDED, 51) }),
        ("changed since", GroupFilter { changed_after: Some(GROUPS * 3 - 10), ..newest(&ENDED, 101) }),
    ]
}

/// Whether a plan line reads a whole table (`SCAN g` without an index);
/// `SCAN a1` reads the rows of a page's own arm, already cut to its limit.
fn sqlite_full_scan(line: &str) -> bool {
    ["SCAN g", "SCAN e", "SCAN f", "SCAN p", "SCAN r"].iter().any(|t| line.trim_start().starts_with(t))
        && !line.contains("USING INDEX")
        && !line.contains("USING COVERING INDEX")
}

#[test]
fn every_per_poll_query_walks_an_index_on_sqlite_with_100k_groups() {
    let d = tempfile::tempdir().unwrap();
    let j = Journal::open(&d.path().join("j.sqlite3")).unwrap();
    j.synthesize_history(GROUPS as u64).unwrap();
    j.conn().execute_batch(QUEUED).unwrap();
    let conn = j.conn();
    let mut report = String::new();
    for (name, f) in per_poll() {
        let (ids, params) = f.ids_sql(&filter::SQLITE);
        let sql = format!("{} WHERE g.id IN ({ids}) ORDER BY g.id DESC", super::codec::SUMMARY_SQL);
        let values: Vec<rusqlite::types::Value> = params.into_iter().map(sqlite_value).collect();
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let plan: Vec<String> = stmt
            .query_map(rusqlite::params_from_iter(values), |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        report.push_str(&format!("{name}:\n  {}\n", plan.join("\n  ")));
        if let Some(line) = plan.iter().find(|l| sqlite_full_scan(l)) {
            panic!("{name} reads a whole table: {line}\n{report}");
        }
    }
    println!("{report}");
}

thread_local! {
    /// The statements this thread ran while tracing, parameters written in.
    static TRACED: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn traced(sql: &str) {
    TRACED.with(|t| t.borrow_mut().push(sql.to_string()));
}

/// What the engine asks the journal on every poll of an idle agent (control
/// requests, due retries, the operator's pause, the next group) and on each
/// housekeeping round (unfinished groups, the next retry), what the watcher
/// asks of each export it sees (known by its path?), plus the counts
/// a console poll and a metrics scrape read: the real calls, their SQL as
/// SQLite ran it (traced, parameters written in), each statement's plan.
/// The counts read the state index from end to end (one entry per group,
/// no table row); every other statement seeks.
#[test]
fn every_query_of_an_idle_poll_and_an_arrival_seeks_an_index_on_sqlite_with_100k_groups() {
    use super::PauseReason;
    use super::prelude::*;
    let d = tempfile::tempdir().unwrap();
    let j = Journal::open(&d.path().join("j.sqlite3")).unwrap();
    j.synthesize_history(GROUPS as u64).unwrap();
    #[allow(deprecated)] // trace_v2 does not write the parameters in
    j.conn().trace(Some(traced));
    j.open_requests().unwrap();
    j.requeue_due(super::codec::now_ms()).unwrap();
    j.pause(&PauseReason::Operator).unwrap();
    assert!(j.next_group(&[]).unwrap().is_none(), "the synthetic history has nothing to upload");
    assert!(j.unfinished().unwrap().is_empty(), "the synthetic history is finished");
    j.next_retry_at().unwrap();
    // What the watcher asks of each export it sees: is it known already?
    assert!(j.find("/synthetic/shot-000123").unwrap().is_some());
    assert!(j.find("/exports/new-render").unwrap().is_none());
    let started = std::time::Instant::now();
    let counts = j.count_by_state().unwrap();
    let took = started.elapsed();
    #[allow(deprecated)]
    j.conn().trace(None);
    assert_eq!(counts.iter().map(|(_, n)| n).sum::<u64>(), GROUPS as u64);
    let statements = TRACED.with(|t| t.take());
    let conn = j.conn();
    let mut report = String::new();
    let mut planned = 0;
    for sql in statements.iter().filter(|s| {
        let s = s.trim_start().to_ascii_uppercase();
        !["BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "PRAGMA"].iter().any(|k| s.starts_with(k))
    }) {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let plan: Vec<String> =
            stmt.query_map([], |r| r.get::<_, String>(3)).unwrap().collect::<Result<_, _>>().unwrap();
        // The cost in SQLite's own unit: virtual machine steps, one or more
        // per index entry or row visited; a walk over the history is
        // hundreds of thousands.
        let mut stmt = conn.prepare(sql).unwrap();
        let mut rows = stmt.raw_query();
        while rows.next().unwrap().is_some() {}
        drop(rows);
        let steps = stmt.get_status(rusqlite::StatementStatus::VmStep);
        let one_line = sql.split_whitespace().collect::<Vec<_>>().join(" ");
        report.push_str(&format!("{one_line}\n  {steps} steps: {}\n", plan.join("; ")));
        planned += 1;
        if steps > 5_000 && !sql.contains("COUNT(*)") {
            panic!("a per-poll statement visits the history ({steps} steps): {one_line}\n{report}");
        }
        if let Some(line) = plan.iter().find(|l| sqlite_full_scan(l)) {
            panic!("a per-poll statement reads a whole table: {line}\n{report}");
        }
    }
    assert!(planned >= 6, "the calls ran {planned} statements:\n{report}");
    println!("{report}counts over {GROUPS} groups: {took:?}");
}

fn sqlite_value(p: filter::Param) -> rusqlite::types::Value {
    match p {
        filter::Param::Text(t) => rusqlite::types::Value::Text(t),
        filter::Param::Int(i) => rusqlite::types::Value::Integer(i),
    }
}

#[test]
fn every_per_poll_query_walks_an_index_on_postgresql_with_100k_groups() {
    let url = crate::sandbox::postgres::shared().database();
    let j = super::pg::PgJournal::open(super::pg::PgOptions {
        url: crate::config::DatabaseUrl::new(&url),
        password: None,
        node: "node-a".into(),
        lease: std::time::Duration::from_secs(30),
        mounts: super::pg::Mounts::default(),
    })
    .unwrap();
    j.synthesize_history(GROUPS as u64).unwrap();
    let report = j
        .with(|c| {
            c.batch_execute(&format!("{QUEUED} ANALYZE groups;")).map_err(super::pg::db_err)?;
            let mut report = String::new();
            for (name, f) in per_poll() {
                let (ids, params) = f.ids_sql(&filter::POSTGRES);
                // Literal values: EXPLAIN of a prepared statement plans for them.
                let mut sql = format!("{} WHERE g.id IN ({ids}) ORDER BY g.id DESC", super::pg::SUMMARY_SQL);
                for (i, p) in params.iter().enumerate().rev() {
                    let value = match p {
                        filter::Param::Text(t) => format!("'{}'", t.replace('\'', "''")),
                        filter::Param::Int(n) => n.to_string(),
                    };
                    sql = sql.replace(&format!("${}", i + 1), &value);
                }
                let plan: Vec<String> = c
                    .query(&format!("EXPLAIN {sql}"), &[])
                    .map_err(super::pg::db_err)?
                    .iter()
                    .map(|r| r.get::<_, String>(0))
                    .collect();
                report.push_str(&format!("{name}:\n  {}\n", plan.join("\n  ")));
                if let Some(line) = plan.iter().find(|l| l.contains("Seq Scan")) {
                    panic!("{name} reads a whole table: {line}\n{report}");
                }
            }
            Ok(report)
        })
        .unwrap();
    println!("{report}");
}
