//! When is an export *finished*? A pure state machine over events, looks
//! (directory snapshots) and an injected clock.
//!
//! Invariants:
//! - Nothing here touches the filesystem or reads a clock: every call takes
//!   `now`, and every look is a [`Look`] value the caller made. That is what
//!   lets the rules be tested from event sequences without sleeping.
//! - An export is [`Settle::Settled`] only when (a) no event arrived for
//!   `settle`, (b) the last look found no temporary file, (c) two looks at
//!   least `settle` apart saw the same names, sizes and mtimes (the same
//!   digest) with no event in between; or, in marker mode, as soon as a look
//!   finds the marker (and never otherwise). Whether every file opens for
//!   reading is checked by the caller on `Settled`, because it is I/O.
//! - Every event throws the baseline look away: a look taken before the last
//!   write proves nothing.
//! - A key is in exactly one phase: settling (a timer may be armed), held
//!   (finished by quiet, but the hand-off found a container still being
//!   written: looked at again at a set time, and settled again with how
//!   long it has been held if nothing changed), or done (handed off; only
//!   its digest is kept, so a later event or a rescan that sees a different
//!   digest re-arms it with [`Settle::Changed`]).
//! - Timers exist only for settling and held keys, so an idle agent has none.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where "now" comes from. The driver uses [`SystemClock`]; tests use
/// [`ManualClock`] so that settle periods pass without sleeping.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

/// The monotonic system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<Instant>);

impl ManualClock {
    pub fn new() -> ManualClock {
        ManualClock(Mutex::new(Instant::now()))
    }
    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *t += by;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What one look at an export saw. `None` in place of a `Look` means the
/// export is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Look {
    /// Order-independent hash of every file's relative path, size and mtime.
    pub digest: u64,
    /// Regular files seen (temporary ones included).
    pub files: usize,
    /// The first blocking temporary file seen, relative to the export.
    pub temporary: Option<String>,
    /// The ready marker is present.
    pub marker: bool,
}

/// What the settle logic tells the hand-off. Every value names the export
/// by its key (folders mode: the export folder; flat mode: `<drop>/<stem>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// A new export was seen and is settling (the journal shows `waiting`).
    Waiting { key: PathBuf, watch_index: usize },
    /// An export already handed off changed: take it back if it has not
    /// started uploading, and settle it again.
    Changed { key: PathBuf, watch_index: usize },
    /// The export is finished: build its group and queue it. `held_for`:
    /// how long it has been held unchanged since the hand-off first found a
    /// container in it still being written (`None` the first time).
    Settled { key: PathBuf, watch_index: usize, by_marker: bool, held_for: Option<Duration> },
    /// The export is finished but a file does not open for reading: its
    /// group is rejected with the OS error. (Made by the driver from
    /// `Settled`, since it is the result of I/O.)
    Unreadable { key: PathBuf, watch_index: usize, path: PathBuf, error: String },
    /// The export stayed empty for the settle period: nothing to upload,
    /// forget the waiting entry (a file arriving later re-arms it).
    Empty { key: PathBuf, watch_index: usize },
    /// The export disappeared: forget it.
    Vanished { key: PathBuf, watch_index: usize },
}

impl Settle {
    pub fn key(&self) -> &Path {
        match self {
            Settle::Waiting { key, .. }
            | Settle::Changed { key, .. }
            | Settle::Settled { key, .. }
            | Settle::Unreadable { key, .. }
            | Settle::Empty { key, .. }
            | Settle::Vanished { key, .. } => key,
        }
    }
    pub fn watch_index(&self) -> usize {
        match self {
            Settle::Waiting { watch_index, .. }
            | Settle::Changed { watch_index, .. }
            | Settle::Settled { watch_index, .. }
            | Settle::Unreadable { watch_index, .. }
            | Settle::Empty { watch_index, .. }
            | Settle::Vanished { watch_index, .. } => *watch_index,
        }
    }
}

/// The settle settings of one watch folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettlePolicy {
    /// Quiet time, and the distance between the two comparing looks.
    pub settle: Duration,
    /// Marker mode: finished when (and only when) the marker is present.
    pub marker: bool,
}

impl SettlePolicy {
    /// How long after an event the first (baseline) look is taken. Short, so
    /// that detection takes about `settle` after the last write rather than
    /// twice that; not zero, so a burst of writes costs one look, not one per
    /// event.
    pub fn first_look_delay(&self) -> Duration {
        (self.settle / 8).clamp(Duration::from_millis(10), Duration::from_millis(250))
    }
}

#[derive(Debug, Clone)]
enum Phase {
    Settling {
        last_event: Instant,
        /// Time and digest of a look taken after `last_event`.
        baseline: Option<(Instant, u64)>,
        /// Digest of the latest look, whatever it was (for rescans).
        seen: Option<u64>,
        /// When the next look is due; `None` while waiting for an event
        /// (marker mode without a marker).
        look_at: Option<Instant>,
    },
    /// Finished by quiet, but a container inside is still being written:
    /// looked at again at `look_at`; `since` is when it was first held.
    Held { digest: u64, since: Instant, look_at: Instant },
    Done {
        digest: u64,
        /// When it was first held, if the last hand-off came from a hold.
        held_since: Option<Instant>,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    watch_index: usize,
    phase: Phase,
}

/// The settle state of every export the watcher knows about.
#[derive(Debug, Default)]
pub struct Settler {
    policies: Vec<SettlePolicy>,
    entries: HashMap<PathBuf, Entry>,
}

impl Settler {
    /// One policy per watch folder, indexed like `Config::watch`.
    pub fn new(policies: Vec<SettlePolicy>) -> Settler {
        Settler { policies, entries: HashMap::new() }
    }

    fn policy(&self, watch_index: usize) -> SettlePolicy {
        self.policies
            .get(watch_index)
            .copied()
            .unwrap_or(SettlePolicy { settle: Duration::from_secs(30), marker: false })
    }

    /// Is this key known (settling or done)?
    pub fn tracks(&self, key: &Path) -> bool {
        self.entries.contains_key(key)
    }

    /// Keys currently settling (or held: finished by quiet, a container
    /// still being written).
    pub fn settling(&self) -> usize {
        self.entries.values().filter(|e| !matches!(e.phase, Phase::Done { .. })).count()
    }

    /// Keys known for one watch folder.
    pub fn keys_of(&self, watch_index: usize) -> Vec<PathBuf> {
        self.entries.iter().filter(|(_, e)| e.watch_index == watch_index).map(|(k, _)| k.clone()).collect()
    }

    /// Something happened inside the export `key`.
    pub fn observe(&mut self, key: &Path, watch_index: usize, now: Instant) -> Option<Settle> {
        let look_at = Some(now + self.policy(watch_index).first_look_delay());
        let fresh = Phase::Settling { last_event: now, baseline: None, seen: None, look_at };
        match self.entries.get_mut(key) {
            None => {
                self.entries.insert(key.to_owned(), Entry { watch_index, phase: fresh });
                Some(Settle::Waiting { key: key.to_owned(), watch_index })
            }
            Some(entry) => match &mut entry.phase {
                Phase::Done { .. } | Phase::Held { .. } => {
                    entry.phase = fresh;
                    Some(Settle::Changed { key: key.to_owned(), watch_index: entry.watch_index })
                }
                Phase::Settling { last_event, baseline, look_at: at, .. } => {
                    *last_event = now;
                    *baseline = None;
                    *at = look_at;
                    None
                }
            },
        }
    }

    /// Settle `key` again from scratch (e.g. the hand-off failed and must be
    /// retried), without telling anyone.
    pub fn rearm(&mut self, key: &Path, now: Instant) {
        if let Some(entry) = self.entries.get_mut(key) {
            let settle = self.policies.get(entry.watch_index).map_or(Duration::from_secs(30), |p| p.settle);
            entry.phase = Phase::Settling { last_event: now, baseline: None, seen: None, look_at: Some(now + settle) };
        }
    }

    /// A look at `key` could not be made (a read error: no descriptors
    /// left, EIO, ...), or a just-settled `key` had a file that did not open
    /// for such a passing reason: nothing is concluded, and the key is
    /// looked at again at `at`. A settling key keeps its baseline and its
    /// last event; a held one stays held; a just-settled one settles again
    /// once a look at `at` or later sees it unchanged.
    pub fn retry(&mut self, key: &Path, now: Instant, at: Instant) {
        let Some(entry) = self.entries.get_mut(key) else { return };
        match &mut entry.phase {
            Phase::Settling { look_at, .. } => *look_at = Some(at),
            Phase::Held { look_at, .. } => *look_at = at,
            Phase::Done { digest, held_since: Some(since) } => {
                entry.phase = Phase::Held { digest: *digest, since: *since, look_at: at };
            }
            Phase::Done { digest, held_since: None } => {
                entry.phase = Phase::Settling {
                    last_event: now,
                    baseline: Some((now, *digest)),
                    seen: Some(*digest),
                    look_at: Some(at),
                };
            }
        }
    }

    /// The hand-off found a container in the just-settled `key` still being
    /// written: keep it, and look at it again at `look_at`. A key held
    /// before and unchanged since keeps the moment it was first held.
    pub fn hold(&mut self, key: &Path, now: Instant, look_at: Instant) {
        if let Some(entry) = self.entries.get_mut(key)
            && let Phase::Done { digest, held_since } = entry.phase
        {
            entry.phase = Phase::Held { digest, since: held_since.unwrap_or(now), look_at };
        }
    }

    /// Forget `key` entirely.
    pub fn forget(&mut self, key: &Path) -> Option<Settle> {
        self.entries.remove(key).map(|e| Settle::Vanished { key: key.to_owned(), watch_index: e.watch_index })
    }

    /// The earliest time a look is due, if any export is settling.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(|e| match e.phase {
                Phase::Settling { look_at, .. } => look_at,
                Phase::Held { look_at, .. } => Some(look_at),
                Phase::Done { .. } => None,
            })
            .min()
    }

    /// Keys whose look is due at `now`, with their watch folder's index.
    pub fn due(&self, now: Instant) -> Vec<(PathBuf, usize)> {
        self.entries
            .iter()
            .filter(|(_, e)| match e.phase {
                Phase::Settling { look_at: Some(t), .. } | Phase::Held { look_at: t, .. } => t <= now,
                _ => false,
            })
            .map(|(k, e)| (k.clone(), e.watch_index))
            .collect()
    }

    /// The result of looking at `key` (`None`: it is gone).
    pub fn look(&mut self, key: &Path, look: Option<&Look>, now: Instant) -> Option<Settle> {
        let entry = self.entries.get(key)?;
        let watch_index = entry.watch_index;
        let policy = self.policy(watch_index);
        let Some(look) = look else {
            return self.forget(key);
        };
        let entry = self.entries.get_mut(key).expect("checked just above");
        if let Phase::Held { digest, since, .. } = entry.phase {
            let key = key.to_owned();
            if look.digest == digest {
                entry.phase = Phase::Done { digest, held_since: Some(since) };
                let held_for = Some(now.saturating_duration_since(since));
                return Some(Settle::Settled { key, watch_index, by_marker: policy.marker, held_for });
            }
            // Changed without an event (polling, a lost event): settle anew.
            entry.phase = Phase::Settling {
                last_event: now,
                baseline: Some((now, look.digest)),
                seen: Some(look.digest),
                look_at: Some(now + policy.settle),
            };
            return Some(Settle::Changed { key, watch_index });
        }
        let Phase::Settling { last_event, baseline, seen, look_at } = &mut entry.phase else {
            return None;
        };
        *seen = Some(look.digest);
        let key = key.to_owned();
        if policy.marker {
            if look.marker {
                entry.phase = Phase::Done { digest: look.digest, held_since: None };
                return Some(Settle::Settled { key, watch_index, by_marker: true, held_for: None });
            }
            // Only the marker finishes an export in marker mode; the next
            // event (or rescan) brings the next look.
            *baseline = None;
            *look_at = None;
            return None;
        }
        if look.temporary.is_some() {
            // Blocked until the temporary file goes; its removal is an event,
            // and a slow re-look covers a lost one.
            *baseline = None;
            *look_at = Some(now + policy.settle);
            return None;
        }
        let quiet_from = *last_event + policy.settle;
        match *baseline {
            Some((at, digest)) if digest == look.digest => {
                let ready_at = (at + policy.settle).max(quiet_from);
                if now >= ready_at {
                    entry.phase = Phase::Done { digest: look.digest, held_since: None };
                    if look.files == 0 {
                        return Some(Settle::Empty { key, watch_index });
                    }
                    return Some(Settle::Settled { key, watch_index, by_marker: false, held_for: None });
                }
                *look_at = Some(ready_at);
            }
            _ => {
                // First look after the last event, or something changed
                // without an event (polling, lost events): start comparing anew.
                *baseline = Some((now, look.digest));
                *look_at = Some((now + policy.settle).max(quiet_from));
            }
        }
        None
    }

    /// A full rescan of one watch folder found these exports with these
    /// digests. New exports and changed ones are observed; known keys that
    /// were not found are returned so the caller can confirm they are gone
    /// (the walk and the events race) and then [`Settler::look`] with `None`.
    pub fn rescan(
        &mut self,
        watch_index: usize,
        found: &HashMap<PathBuf, u64>,
        now: Instant,
    ) -> (Vec<Settle>, Vec<PathBuf>) {
        let mut out = Vec::new();
        for (key, digest) in found {
            let stale = match self.entries.get(key).map(|e| &e.phase) {
                None => true,
                Some(Phase::Done { digest: d, .. } | Phase::Held { digest: d, .. }) => d != digest,
                Some(Phase::Settling { look_at: None, seen, .. }) => *seen != Some(*digest),
                Some(Phase::Settling { look_at: Some(_), .. }) => false,
            };
            if stale && let Some(s) = self.observe(key, watch_index, now) {
                out.push(s);
            }
        }
        let missing = self
            .entries
            .iter()
            .filter(|(k, e)| e.watch_index == watch_index && !found.contains_key(*k))
            .map(|(k, _)| k.clone())
            .collect();
        (out, missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTLE: Duration = Duration::from_secs(30);

    fn settler(marker: bool) -> Settler {
        Settler::new(vec![SettlePolicy { settle: SETTLE, marker }])
    }

    fn look(digest: u64) -> Look {
        Look { digest, files: 2, temporary: None, marker: false }
    }

    fn key() -> PathBuf {
        PathBuf::from("/drop/shot1")
    }

    /// Drive the settler as the driver does: look at every due key with
    /// whatever `world` says the export looks like at that moment.
    fn run_until(
        s: &mut Settler,
        clock: &ManualClock,
        until: Instant,
        world: &dyn Fn(Instant) -> Option<Look>,
    ) -> Vec<(Instant, Settle)> {
        let mut out = Vec::new();
        while let Some(t) = s.next_deadline() {
            if t > until {
                break;
            }
            let now = clock.now();
            if t > now {
                clock.advance(t - now);
            }
            let now = clock.now();
            for (k, _) in s.due(now) {
                if let Some(v) = s.look(&k, world(now).as_ref(), now) {
                    out.push((now, v));
                }
            }
        }
        out
    }

    #[test]
    fn quiet_export_settles_settle_after_last_event_plus_first_look() {
        let clock = ManualClock::new();
        let mut s = settler(false);
        let t0 = clock.now();
        assert_eq!(s.observe(&key(), 0, t0), Some(Settle::Waiting { key: key(), watch_index: 0 }));
        let out = run_until(&mut s, &clock, t0 + Duration::from_secs(600), &|_| Some(look(7)));
        assert_eq!(out.len(), 1, "{out:?}");
        let (at, v) = &out[0];
        assert_eq!(*v, Settle::Settled { key: key(), watch_index: 0, by_marker: false, held_for: None });
        let first = SettlePolicy { settle: SETTLE, marker: false }.first_look_delay();
        assert_eq!(*at - t0, SETTLE + first, "two looks settle apart, the first shortly after the event");
        assert!(s.next_deadline().is_none(), "no timer once done");
    }

    #[test]
    fn events_keep_pushing_settle_back_like_a_slow_writer() {
        let clock = ManualClock::new();
        let mut s = settler(false);
        let t0 = clock.now();
        s.observe(&key(), 0, t0);
        // A write every 10 s for 2 minutes; the size grows with every write.
        let mut settled = Vec::new();
        for i in 1..=12u64 {
            let until = t0 + Duration::from_secs(10 * i);
            let grow = move |now: Instant| Some(look((now - t0).as_secs() / 10));
            settled.extend(run_until(&mut s, &clock, until, &grow));
            let now = clock.now();
            clock.advance(until - now);
            s.observe(&key(), 0, clock.now());
        }
        assert!(settled.is_empty(), "settled while still being written: {settled:?}");
        let last_write = clock.now();
        let out = run_until(&mut s, &clock, last_write + Duration::from_secs(600), &|_| Some(look(99)));
        assert_eq!(out.len(), 1);
        assert!(out[0].0 - last_write >= SETTLE);
    }

    #[test]
    fn a_change_without_an_event_restarts_the_comparison() {
        // Polling or lost events: the digest moves though no event came.
        let clock = ManualClock::new();
        let mut s = settler(false);
        let t0 = clock.now();
        s.observe(&key(), 0, t0);
        let changes_until = t0 + Duration::from_secs(100);
        let world = move |now: Instant| Some(look(if now < changes_until { (now - t0).as_millis() as u64 } else { 5 }));
        let out = run_until(&mut s, &clock, t0 + Duration::from_secs(600), &world);
        assert_eq!(out.len(), 1);
        assert!(out[0].0 >= changes_until + SETTLE, "settled at {:?}", out[0].0 - t0);
    }

    #[test]
    fn temporary_file_blocks_until_it_goes() {
        let clock = ManualClock::new();
        let mut s = settler(false);
        let t0 = clock.now();
        s.observe(&key(), 0, t0);
        let blocked = |_| Some(Look { temporary: Some("a.mov.part".into()), ..look(1) });
        assert!(run_until(&mut s, &clock, t0 + Duration::from_secs(3600), &blocked).is_empty());
        assert!(s.next_deadline().is_some(), "a blocked export is re-looked at slowly");
        let gone = clock.now();
        s.observe(&key(), 0, gone);
        let out = run_until(&mut s, &clock, gone + Duration::from_secs(600), &|_| Some(look(1)));
        assert!(matches!(out.as_slice(), [(_, Settle::Settled { .. })]), "{out:?}");
    }

    #[test]
    fn marker_mode_settles_on_the_marker_only() {
        let clock = ManualClock::new();
        let mut s = settler(true);
        let t0 = clock.now();
        s.observe(&key(), 0, t0);
        assert!(run_until(&mut s, &clock, t0 + Duration::from_secs(3600), &|_| Some(look(1))).is_empty());
        assert!(s.next_deadline().is_none(), "no timer while waiting for the marker");
        let t1 = clock.now() + Duration::from_secs(5);
        clock.advance(Duration::from_secs(5));
        s.observe(&key(), 0, t1);
        let out = run_until(&mut s, &clock, t1 + Duration::from_secs(600), &|_| Some(Look { marker: true, ..look(2) }));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1, Settle::Settled { key: key(), watch_index: 0, by_marker: true, held_for: None });
        assert!(out[0].0 - t1 < Duration::from_secs(1), "the marker is acted on at once");
    }

    #[test]
    fn change_after_done_rearms_and_deletion_forgets() {
        let clock = ManualClock::new();
        let mut s = settler(false);
        let t0 = clock.now();
        s.observe(&key(), 0, t0);
        run_until(&mut s, &clock, t0 + Duration::from_secs(600), &|_| Some(look(1)));
        let t1 = clock.now();
        assert_eq!(s.observe(&key(), 0, t1), Some(Settle::Changed { key: key(), watch_index: 0 }));
        // Deleted while settling again: forgotten.
        let out = run_until(&mut s, &clock, t1 + Duration::from_secs(600), &|_| None);
        assert_eq!(out, vec![(out[0].0, Settle::Vanished { key: key(), watch_index: 0 })]);
        assert!(!s.tracks(&key()));
    }

    #[test]
    fn empty_folder_is_not_settled_as_an_export() {
        let clock = ManualClock::new();
        let mut s = settler(false);
        let t0 = clock.now();
        s.observe(&key(), 0, t0);
        let out = run_until(&mut s, &clock, t0 + Duration::from_secs(600), &|_| Some(Look { files: 0, ..look(0) }));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1, Settle::Empty { key: key(), watch_index: 0 });
    }

    #[test]
    fn a_held_export_is_settled_again_with_how_long_it_was_held() {
        let clock = ManualClock::new();
        let mut s = settler(false);
        let t0 = clock.now();
        s.observe(&key(), 0, t0);
        let out = run_until(&mut s, &clock, t0 + Duration::from_secs(600), &|_| Some(look(1)));
        assert!(matches!(out.as_slice(), [(_, Settle::Settled { held_for: None, .. })]), "{out:?}");
        // The hand-off found an open container: held, looked at in 30 s.
        let held_at = clock.now();
        s.hold(&key(), held_at, held_at + SETTLE);
        assert_eq!(s.next_deadline(), Some(held_at + SETTLE), "a held export keeps a timer");
        assert_eq!(s.settling(), 1);
        let out = run_until(&mut s, &clock, held_at + SETTLE, &|_| Some(look(1)));
        assert_eq!(
            out,
            vec![(
                held_at + SETTLE,
                Settle::Settled { key: key(), watch_index: 0, by_marker: false, held_for: Some(SETTLE) }
            )]
        );
        // Held again: the clock keeps running from the first hold.
        let now = clock.now();
        s.hold(&key(), now, now + SETTLE);
        let out = run_until(&mut s, &clock, now + SETTLE, &|_| Some(look(1)));
        assert!(
            matches!(out.as_slice(), [(_, Settle::Settled { held_for: Some(d), .. })] if *d == 2 * SETTLE),
            "{out:?}"
        );
    }

    #[test]
    fn a_held_export_that_changes_settles_anew_and_one_that_goes_is_forgotten() {
        let clock = ManualClock::new();
        let mut s = settler(false);
        let t0 = clock.now();
        s.observe(&key(), 0, t0);
        run_until(&mut s, &clock, t0 + Duration::from_secs(600), &|_| Some(look(1)));
        let now = clock.now();
        s.hold(&key(), now, now + SETTLE);
        // The encoder writes again: an event takes it back to settling.
        assert_eq!(s.observe(&key(), 0, now), Some(Settle::Changed { key: key(), watch_index: 0 }));
        let out = run_until(&mut s, &clock, now + Duration::from_secs(600), &|_| Some(look(2)));
        assert!(
            matches!(out.as_slice(), [(_, Settle::Settled { held_for: None, .. })]),
            "the hold starts over: {out:?}"
        );
        // A change seen only by the look (no event) is a change too.
        let now = clock.now();
        s.hold(&key(), now, now + SETTLE);
        let out = run_until(&mut s, &clock, now + SETTLE, &|_| Some(look(3)));
        assert_eq!(out, vec![(now + SETTLE, Settle::Changed { key: key(), watch_index: 0 })]);
        let out = run_until(&mut s, &clock, now + Duration::from_secs(600), &|_| Some(look(3)));
        assert!(matches!(out.as_slice(), [(_, Settle::Settled { held_for: None, .. })]), "{out:?}");
        // Held, then deleted: forgotten.
        let now = clock.now();
        s.hold(&key(), now, now + SETTLE);
        let out = run_until(&mut s, &clock, now + SETTLE, &|_| None);
        assert_eq!(out, vec![(now + SETTLE, Settle::Vanished { key: key(), watch_index: 0 })]);
        // A rescan that sees the same digest leaves a held export alone.
        s.observe(&key(), 0, clock.now());
        run_until(&mut s, &clock, clock.now() + Duration::from_secs(600), &|_| Some(look(4)));
        let now = clock.now();
        s.hold(&key(), now, now + SETTLE);
        let (out, _) = s.rescan(0, &[(key(), 4)].into(), now);
        assert!(out.is_empty(), "{out:?}");
        let (out, _) = s.rescan(0, &[(key(), 5)].into(), now);
        assert_eq!(out, vec![Settle::Changed { key: key(), watch_index: 0 }]);
    }

    #[test]
    fn a_failed_look_concludes_nothing_and_is_made_again_when_asked() {
        let clock = ManualClock::new();
        let mut s = settler(false);
        let t0 = clock.now();
        s.observe(&key(), 0, t0);
        // The first look fails (no descriptors): no verdict, looked at again at the retry.
        let first = s.due(t0 + Duration::from_secs(1));
        assert_eq!(first, vec![(key(), 0)]);
        let retry_at = t0 + Duration::from_secs(1) + Duration::from_secs(2);
        s.retry(&key(), t0 + Duration::from_secs(1), retry_at);
        assert_eq!(s.next_deadline(), Some(retry_at));
        assert!(s.tracks(&key()) && s.settling() == 1, "still settling, not empty nor gone");
        clock.advance(Duration::from_secs(3));
        let out = run_until(&mut s, &clock, t0 + Duration::from_secs(600), &|_| Some(look(1)));
        assert!(matches!(out.as_slice(), [(_, Settle::Settled { held_for: None, .. })]), "{out:?}");
        // Settled, but a file did not open for a passing reason: settles again, unchanged.
        let now = clock.now();
        s.retry(&key(), now, now + Duration::from_secs(1));
        let out = run_until(&mut s, &clock, now + Duration::from_secs(600), &|_| Some(look(1)));
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].0 >= now + SETTLE, "quiet for the settle period first");
        assert!(matches!(out[0].1, Settle::Settled { .. }), "{out:?}");
        // A held export that is retried stays held, with its start.
        let now = clock.now();
        s.hold(&key(), now, now + SETTLE);
        let later = now + SETTLE;
        clock.advance(SETTLE);
        s.retry(&key(), later, later + Duration::from_secs(4));
        let out = run_until(&mut s, &clock, later + Duration::from_secs(4), &|_| Some(look(1)));
        assert!(
            matches!(out.as_slice(), [(_, Settle::Settled { held_for: Some(d), .. })] if *d == SETTLE + Duration::from_secs(4)),
            "{out:?}"
        );
    }

    #[test]
    fn rescan_observes_new_and_changed_and_reports_missing() {
        let clock = ManualClock::new();
        let mut s = settler(false);
        let t0 = clock.now();
        let a = PathBuf::from("/drop/a");
        let b = PathBuf::from("/drop/b");
        let found: HashMap<PathBuf, u64> = [(a.clone(), 1), (b.clone(), 2)].into();
        let (out, missing) = s.rescan(0, &found, t0);
        assert_eq!(out.len(), 2);
        assert!(missing.is_empty());
        run_until(&mut s, &clock, t0 + Duration::from_secs(600), &|_| Some(look(1)));
        // a is done with digest 1; b was looked at as 1 too (the world says 1).
        let now = clock.now();
        let (out, _) = s.rescan(0, &[(a.clone(), 1), (b.clone(), 1)].into(), now);
        assert!(out.is_empty(), "unchanged exports are left alone: {out:?}");
        let (out, missing) = s.rescan(0, &[(a.clone(), 3)].into(), now);
        assert_eq!(out, vec![Settle::Changed { key: a.clone(), watch_index: 0 }]);
        assert_eq!(missing, vec![b.clone()]);
        assert_eq!(s.look(&b, None, now), Some(Settle::Vanished { key: b, watch_index: 0 }));
    }
}
