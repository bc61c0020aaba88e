use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;

use super::*;

/// Europe/Berlin by its POSIX rule (CET/CEST, last Sunday of March and
/// October), so the tests do not depend on the machine's tz database.
fn berlin() -> TimeZone {
    TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").expect("valid POSIX TZ")
}

fn win(days: &[&str], from: &str, to: &str, bw: Option<u64>) -> WindowConfig {
    WindowConfig {
        days: days.iter().map(|d| d.to_string()).collect(),
        from: from.into(),
        to: to.into(),
        bandwidth: bw.map(Rate),
    }
}

const MIB: u64 = 1024 * 1024;

/// An instant written as local civil time in Berlin (`2026-03-27T20:00`) or
/// as an exact instant with an offset (`2026-10-25T02:30+01:00`).
fn t(s: &str) -> Timestamp {
    if s.len() > 16 {
        s.parse::<Timestamp>().expect("timestamp with offset")
    } else {
        let dt: DateTime = s.parse().expect("civil datetime");
        dt.to_zoned(berlin()).expect("resolvable").timestamp()
    }
}

struct Case {
    what: &'static str,
    now: &'static str,
    open: bool,
    /// The instant `open` flips (with offset), or None for never.
    until: Option<&'static str>,
}

fn check(schedule: &Schedule, cases: &[Case]) {
    for c in cases {
        let st = schedule.state_at(t(c.now));
        assert_eq!(st.open, c.open, "{}: open at {}", c.what, c.now);
        let until = st.until.as_ref().map(|z| z.timestamp());
        assert_eq!(until, c.until.map(t), "{}: until, at {} (state: {st})", c.what, c.now);
    }
}

#[test]
fn evenings_across_midnight_and_the_spring_dst_switch() {
    // 2026-03-29 is the last Sunday of March: Berlin goes from +01:00 to +02:00.
    let s = Schedule::new(&[win(&["mon", "tue", "wed", "thu", "fri"], "19:00", "07:00", None)], None, berlin())
        .expect("valid");
    check(
        &s,
        &[
            Case { what: "thursday day", now: "2026-03-26T10:00", open: false, until: Some("2026-03-26T19:00+01:00") },
            Case {
                what: "thursday 19:00 sharp",
                now: "2026-03-26T19:00",
                open: true,
                until: Some("2026-03-27T07:00+01:00"),
            },
            Case { what: "friday evening", now: "2026-03-27T20:00", open: true, until: Some("2026-03-28T07:00+01:00") },
            Case { what: "saturday 06:59", now: "2026-03-28T06:59", open: true, until: Some("2026-03-28T07:00+01:00") },
            Case {
                what: "saturday 07:00",
                now: "2026-03-28T07:00",
                open: false,
                until: Some("2026-03-30T19:00+02:00"),
            },
            Case {
                what: "sunday (dst day)",
                now: "2026-03-29T12:00",
                open: false,
                until: Some("2026-03-30T19:00+02:00"),
            },
            Case {
                what: "monday early: sunday has no evening",
                now: "2026-03-30T06:00",
                open: false,
                until: Some("2026-03-30T19:00+02:00"),
            },
            Case {
                what: "monday evening in summer time",
                now: "2026-03-30T23:00",
                open: true,
                until: Some("2026-03-31T07:00+02:00"),
            },
        ],
    );
}

#[test]
fn night_window_is_one_real_hour_in_spring_and_three_in_autumn() {
    let s = Schedule::new(&[win(&[], "01:00", "03:00", None)], None, berlin()).expect("valid");
    check(
        &s,
        &[
            Case {
                what: "spring, before the gap",
                now: "2026-03-29T01:30+01:00",
                open: true,
                until: Some("2026-03-29T03:00+02:00"),
            },
            Case {
                what: "spring, after the gap",
                now: "2026-03-29T03:00+02:00",
                open: false,
                until: Some("2026-03-30T01:00+02:00"),
            },
            Case {
                what: "autumn, first 02:30",
                now: "2026-10-25T02:30+02:00",
                open: true,
                until: Some("2026-10-25T03:00+01:00"),
            },
            Case {
                what: "autumn, repeated 02:30",
                now: "2026-10-25T02:30+01:00",
                open: true,
                until: Some("2026-10-25T03:00+01:00"),
            },
            Case {
                what: "autumn, after",
                now: "2026-10-25T03:00+01:00",
                open: false,
                until: Some("2026-10-26T01:00+01:00"),
            },
        ],
    );
    // Real durations: 1 h on the short day, 3 h on the long day.
    let spring = t("2026-03-29T01:00+01:00").duration_until(t("2026-03-29T03:00+02:00"));
    let autumn = t("2026-10-25T01:00+02:00").duration_until(t("2026-10-25T03:00+01:00"));
    assert_eq!((spring.as_hours(), autumn.as_hours()), (1, 3));
}

#[test]
fn times_in_the_gap_move_forward_and_in_the_fold_take_the_first() {
    // 02:30 does not exist on 2026-03-29: the window starts at 03:30 CEST.
    let gap = Schedule::new(&[win(&["sun"], "02:30", "04:00", None)], None, berlin()).expect("valid");
    check(
        &gap,
        &[
            Case {
                what: "gap: before the moved start",
                now: "2026-03-29T03:15+02:00",
                open: false,
                until: Some("2026-03-29T03:30+02:00"),
            },
            Case {
                what: "gap: inside",
                now: "2026-03-29T03:45+02:00",
                open: true,
                until: Some("2026-03-29T04:00+02:00"),
            },
        ],
    );
    // 02:30–02:45 on 2026-10-25 happens twice on the wall; the window runs once, the first time.
    let fold = Schedule::new(&[win(&["sun"], "02:30", "02:45", None)], None, berlin()).expect("valid");
    check(
        &fold,
        &[
            Case {
                what: "fold: first pass",
                now: "2026-10-25T02:35+02:00",
                open: true,
                until: Some("2026-10-25T02:45+02:00"),
            },
            Case {
                what: "fold: second pass",
                now: "2026-10-25T02:35+01:00",
                open: false,
                until: Some("2026-11-01T02:30+01:00"),
            },
        ],
    );
}

#[test]
fn bandwidth_follows_the_first_matching_window_and_next_change_sees_it() {
    let s = Schedule::new(
        &[
            win(&["mon", "tue", "wed", "thu", "fri"], "19:00", "07:00", Some(100 * MIB)),
            win(&["sat", "sun"], "00:00", "00:00", None),
        ],
        Some(Rate(10 * MIB)),
        berlin(),
    )
    .expect("valid");

    // Friday night: window 0 (its own limit); open without a break until Monday 00:00
    // (Sunday has no evening window), but the limit changes on Saturday 07:00.
    let fri = s.state_at(t("2026-03-27T20:00"));
    assert!(fri.open);
    assert_eq!((fri.window, fri.bandwidth), (Some(0), Some(Rate(100 * MIB))));
    assert_eq!(fri.until.map(|z| z.timestamp()), Some(t("2026-03-30T00:00+02:00")));
    assert_eq!(fri.next_change, Some(t("2026-03-28T07:00+01:00")));

    // Saturday 03:00 both windows cover; the first listed decides.
    let sat_night = s.state_at(t("2026-03-28T03:00"));
    assert_eq!((sat_night.window, sat_night.bandwidth), (Some(0), Some(Rate(100 * MIB))));

    // Saturday noon: window 1, which has no limit of its own -> [upload] bandwidth.
    let sat = s.state_at(t("2026-03-28T12:00"));
    assert_eq!((sat.open, sat.window, sat.bandwidth), (true, Some(1), Some(Rate(10 * MIB))));
    assert_eq!(sat.next_change, sat.until.as_ref().map(|z| z.timestamp()));

    // Monday noon: closed until Monday 19:00; the limit then is window 0's.
    let mon = s.state_at(t("2026-03-30T12:00"));
    assert_eq!((mon.open, mon.window), (false, None));
    assert_eq!(mon.next_change, Some(t("2026-03-30T19:00+02:00")));
}

#[test]
fn no_windows_is_always_open_and_full_cover_never_changes() {
    let none = Schedule::new(&[], Some(Rate(5 * MIB)), berlin()).expect("valid");
    assert!(none.is_always_open());
    let st = none.state_at(t("2026-03-29T02:30+01:00"));
    assert_eq!(
        st,
        WindowState { open: true, bandwidth: Some(Rate(5 * MIB)), window: None, until: None, next_change: None }
    );
    assert_eq!(st.to_string(), "open");

    let all = Schedule::new(&[win(&[], "00:00", "00:00", None)], None, berlin()).expect("valid");
    for now in ["2026-03-29T02:30+01:00", "2026-10-25T02:30+01:00", "2026-06-01T12:00"] {
        let st = all.state_at(t(now));
        assert!(st.open && st.until.is_none() && st.next_change.is_none(), "{now}: {st:?}");
    }
}

#[test]
fn display_says_paused_until_in_local_time() {
    let s = Schedule::new(&[win(&["mon"], "19:00", "07:00", None)], None, berlin()).expect("valid");
    assert_eq!(s.state_at(t("2026-03-29T12:00")).to_string(), "paused until Mon 2026-03-30 19:00 CEST");
    assert_eq!(s.state_at(t("2026-03-30T20:00")).to_string(), "open until Tue 2026-03-31 07:00 CEST");
}

#[test]
fn bad_windows_are_refused_with_their_key() {
    let e = Schedule::new(
        &[win(&["mon"], "19:00", "07:00", None), win(&["funday"], "19:00", "07:00", None)],
        None,
        berlin(),
    )
    .expect_err("bad day");
    assert_eq!(e.to_string(), "upload.window[1].days: unknown day \"funday\"");
    let e = Schedule::new(&[win(&[], "25:00", "07:00", None)], None, berlin()).expect_err("bad time");
    assert!(e.to_string().starts_with("upload.window[0].from: invalid time"), "{e}");
}
