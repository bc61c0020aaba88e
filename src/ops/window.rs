//! Upload windows: when the queue may run, and at which bandwidth.
//!
//! A window is a weekly rule in *local civil time*: `days`, `from`, `to`.
//! Each listed day starts one occurrence at `from`; it ends at `to` the same
//! day, or the next day when `to` is not later than `from` (so `19:00`–`07:00`
//! on `mon..fri` means Monday to Friday *evenings*, each running into the next
//! morning, and `from == to` means 24 hours).
//!
//! Invariants:
//! - Times are resolved to instants in the configured time zone per date,
//!   with jiff's "compatible" rule: a `from`/`to` that falls into a DST gap
//!   moves forward by the gap, one that falls into a repeated hour takes the
//!   first of the two. So `01:00`–`03:00` lasts one real hour on the spring
//!   day and three on the autumn day in Europe/Berlin, exactly as a wall clock
//!   says. An occurrence that resolves to an empty span is skipped.
//! - No windows at all means "always open" with the `[upload] bandwidth`.
//! - When several windows cover an instant, the first one in the config
//!   decides the bandwidth (its own, else `[upload] bandwidth`).
//! - Every answer is a pure function of (windows, time zone, instant); the
//!   clock is passed in, so the tests need no waiting and no global state.

use std::fmt;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan, Zoned};

use crate::config::{Rate, UploadConfig, WindowConfig, parse_hhmm, parse_weekday};

/// A window the config could not express (normally caught by `Config::validate` first).
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    #[error("upload.window[{index}].{key}: {message}")]
    Invalid { index: usize, key: &'static str, message: String },
}

/// One parsed `[[upload.window]]`.
#[derive(Debug, Clone, PartialEq)]
struct Window {
    /// Indexed by Monday-zero weekday.
    days: [bool; 7],
    /// Minutes after local midnight.
    from: u16,
    to: u16,
    bandwidth: Option<Rate>,
}

/// The weekly schedule: windows, the default limit and the time zone they are read in.
#[derive(Debug, Clone)]
pub struct Schedule {
    windows: Vec<Window>,
    default_bandwidth: Option<Rate>,
    tz: TimeZone,
}

/// What the schedule says at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowState {
    /// May uploads run now?
    pub open: bool,
    /// The limit that applies while open (None = unlimited). When closed this
    /// is `[upload] bandwidth`, which is what a foreground `upload` would use.
    pub bandwidth: Option<Rate>,
    /// Index of the window that decides now (None when closed or when there are no windows).
    pub window: Option<usize>,
    /// When `open` flips next, in the schedule's time zone (None = never).
    pub until: Option<Zoned>,
    /// When `open` or `bandwidth` changes next (None = never): wake up then.
    pub next_change: Option<Timestamp>,
}

impl fmt::Display for WindowState {
    /// `open`, `open until Mon 2026-03-30 07:00 CEST` or `paused until …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.open { "open" } else { "paused" })?;
        if let Some(until) = &self.until {
            write!(f, " until {}", until.strftime("%a %Y-%m-%d %H:%M %Z"))?;
        }
        Ok(())
    }
}

/// One occurrence of a window: `[start, end)` and which window it is.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: Timestamp,
    end: Timestamp,
    index: usize,
}

impl Schedule {
    /// The schedule of `[upload]` in the system's local time zone.
    pub fn from_config(upload: &UploadConfig) -> Result<Schedule, WindowError> {
        Schedule::new(&upload.window, upload.bandwidth, TimeZone::system())
    }

    /// Windows read in `tz`; `default_bandwidth` is `[upload] bandwidth`.
    pub fn new(
        windows: &[WindowConfig],
        default_bandwidth: Option<Rate>,
        tz: TimeZone,
    ) -> Result<Schedule, WindowError> {
        let mut parsed = Vec::with_capacity(windows.len());
        for (index, w) in windows.iter().enumerate() {
            let mut days = [w.days.is_empty(); 7];
            for d in &w.days {
                let Some(i) = parse_weekday(d) else {
                    return Err(WindowError::Invalid { index, key: "days", message: format!("unknown day {d:?}") });
                };
                days[usize::from(i)] = true;
            }
            let time = |key: &'static str, v: &str| {
                parse_hhmm(v).ok_or_else(|| WindowError::Invalid {
                    index,
                    key,
                    message: format!("invalid time {v:?}; write it as HH:MM"),
                })
            };
            parsed.push(Window { days, from: time("from", &w.from)?, to: time("to", &w.to)?, bandwidth: w.bandwidth });
        }
        Ok(Schedule { windows: parsed, default_bandwidth, tz })
    }

    /// No windows: uploads may always run.
    pub fn is_always_open(&self) -> bool {
        self.windows.is_empty()
    }

    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    /// The state right now, by the system clock.
    pub fn state_now(&self) -> WindowState {
        self.state_at(Timestamp::now())
    }

    /// The state at `now`.
    pub fn state_at(&self, now: Timestamp) -> WindowState {
        if self.windows.is_empty() {
            return WindowState {
                open: true,
                bandwidth: self.default_bandwidth,
                window: None,
                until: None,
                next_change: None,
            };
        }
        let spans = self.spans_around(now);
        let here = self.decide(&spans, now);
        // The pattern repeats weekly, so if nothing changes within 8 days
        // nothing ever will; `spans_around` covers that horizon completely.
        let horizon = now + SignedDuration::from_hours(8 * 24);
        let mut edges: Vec<Timestamp> =
            spans.iter().flat_map(|s| [s.start, s.end]).filter(|t| *t > now && *t <= horizon).collect();
        edges.sort();
        edges.dedup();
        let mut next_change = None;
        let mut until = None;
        for t in edges {
            let there = self.decide(&spans, t);
            if next_change.is_none() && (there.0.is_some() != here.0.is_some() || there.1 != here.1) {
                next_change = Some(t);
            }
            if there.0.is_some() != here.0.is_some() {
                until = Some(t);
                break;
            }
        }
        WindowState {
            open: here.0.is_some(),
            bandwidth: here.1,
            window: here.0,
            until: until.map(|t| t.to_zoned(self.tz.clone())),
            next_change,
        }
    }

    /// (deciding window, bandwidth) at `t`, from the given occurrences.
    fn decide(&self, spans: &[Span], t: Timestamp) -> (Option<usize>, Option<Rate>) {
        let index = spans.iter().filter(|s| s.start <= t && t < s.end).map(|s| s.index).min();
        let bandwidth = match index {
            Some(i) => self.windows[i].bandwidth.or(self.default_bandwidth),
            None => self.default_bandwidth,
        };
        (index, bandwidth)
    }

    /// Every occurrence starting on the local dates from two days before `now`
    /// to eight days after. An occurrence lasts at most 25 hours (a DST day),
    /// so this is complete for every instant from `now` to `now + 8 days`.
    fn spans_around(&self, now: Timestamp) -> Vec<Span> {
        let today = now.to_zoned(self.tz.clone()).date();
        let mut spans = Vec::new();
        for offset in -2i64..=8 {
            let Ok(date) = today.checked_add(offset.days()) else { continue };
            let weekday = usize::try_from(date.weekday().to_monday_zero_offset()).unwrap_or(0);
            for (index, w) in self.windows.iter().enumerate() {
                if !w.days[weekday] {
                    continue;
                }
                let end_date = if w.to <= w.from { date.tomorrow().ok() } else { Some(date) };
                let start = self.instant(date, w.from);
                let end = end_date.and_then(|d| self.instant(d, w.to));
                if let (Some(start), Some(end)) = (start, end)
                    && end > start
                {
                    spans.push(Span { start, end, index });
                }
            }
        }
        spans
    }

    /// `minutes` after midnight on `date`, local, by the "compatible" rule.
    fn instant(&self, date: Date, minutes: u16) -> Option<Timestamp> {
        let (h, m) = ((minutes / 60) as i8, (minutes % 60) as i8);
        date.at(h, m, 0, 0).to_zoned(self.tz.clone()).ok().map(|z| z.timestamp())
    }
}

#[cfg(test)]
mod tests;
