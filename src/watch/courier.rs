//! The courier: the hand-off runs on a thread of its own, so the watcher's
//! loop never waits on what a hand-off does with a finished export —
//! building its group, looking inside its containers (the media check reads
//! each `moov`), zipping bundles, writing the journal.
//!
//! - Settle values and folder notes go to the courier in the order the
//!   driver made them, through a bounded queue: a courier that falls far
//!   behind (a journal that does not answer) makes the driver wait, and the
//!   notify channel behind it overflows into a rescan, as before.
//! - What the driver must do about a hand-off — hold an export whose
//!   container is still being written, settle again one whose hand-off
//!   failed — comes back through [`Courier::returned`], and a wake-up
//!   message gets the driver out of its sleep to act on it.
//! - On stop, the job in hand is finished and the rest dropped: an export
//!   left unhanded is found again by the next start's scan.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, channel, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use super::WatchError;
use super::backend::Msg;
use super::handoff::{Handed, Handoff};
use super::scan::WatchRules;
use super::settle::Settle;

/// What the courier is asked to hand off.
pub(crate) enum Job {
    Settle(Settle),
    /// A rescan of watch folder `watch` found exactly these exports.
    Scanned {
        watch: usize,
        present: std::collections::HashSet<PathBuf>,
    },
    /// Watch folder `watch` went missing (with the error) or came back.
    Folder {
        watch: usize,
        missing: Option<String>,
    },
    /// Reads in watch folder `watch` began to fail (with the path and the
    /// OS error) or work again.
    Unreadable {
        watch: usize,
        error: Option<String>,
    },
}

/// What a hand-off asks of the settler.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Returned {
    /// Not finished after all: look again `recheck` from now.
    Hold { key: PathBuf, recheck: Duration },
    /// The hand-off failed: settle the export again.
    Rearm { key: PathBuf },
}

pub(crate) struct Courier {
    jobs: Option<SyncSender<Job>>,
    returned: Receiver<Returned>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Courier {
    /// Start the courier thread; `wake` is the driver's own channel.
    pub(crate) fn start(
        mut handoff: Box<dyn Handoff>,
        rules: Vec<WatchRules>,
        capacity: usize,
        wake: SyncSender<Msg>,
    ) -> Result<Courier, WatchError> {
        let (jobs, queue) = sync_channel::<Job>(capacity.max(1));
        let (back, returned) = channel::<Returned>();
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = stopping.clone();
        let thread = std::thread::Builder::new()
            .name("spatialgen-handoff".into())
            .spawn(move || {
                for job in queue {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Some(r) = run(handoff.as_mut(), &rules, job) {
                        if back.send(r).is_err() {
                            break;
                        }
                        // Full means the driver is awake and draining anyway.
                        if let Err(TrySendError::Disconnected(_)) = wake.try_send(Msg::Wake) {
                            break;
                        }
                    }
                }
            })
            .map_err(|e| WatchError::Io { path: PathBuf::from("<thread>"), source: e })?;
        Ok(Courier { jobs: Some(jobs), returned, stopping, thread: Some(thread) })
    }

    /// Queue a job; waits while the queue is full. `Err`: the courier
    /// thread is gone (it panicked).
    pub(crate) fn send(&self, job: Job) -> Result<(), WatchError> {
        match &self.jobs {
            Some(jobs) => jobs.send(job).map_err(|_| WatchError::Died),
            None => Err(WatchError::Died),
        }
    }

    /// What hand-offs returned since the last call.
    pub(crate) fn returned(&self) -> impl Iterator<Item = Returned> + '_ {
        self.returned.try_iter()
    }

    /// Finish the job in hand, drop the rest, and wait for the thread.
    pub(crate) fn stop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Courier {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One job on the courier's thread.
fn run(handoff: &mut dyn Handoff, rules: &[WatchRules], job: Job) -> Option<Returned> {
    match job {
        Job::Scanned { watch, present } => {
            if let Some(r) = rules.get(watch) {
                handoff.scanned(r, &present);
            }
            None
        }
        Job::Folder { watch, missing } => {
            if let Some(r) = rules.get(watch) {
                handoff.watch_folder(r, missing.as_deref());
            }
            None
        }
        Job::Unreadable { watch, error } => {
            if let Some(r) = rules.get(watch) {
                handoff.watch_unreadable(r, error.as_deref());
            }
            None
        }
        Job::Settle(s) => {
            let rules = rules.get(s.watch_index())?;
            match handoff.hand_off(&s, rules) {
                Ok(Handed::Done) => None,
                Ok(Handed::Unfinished { recheck }) => Some(Returned::Hold { key: s.key().to_owned(), recheck }),
                Err(e) => {
                    tracing::warn!(export = %s.key().display(), "hand-off failed, will retry: {e}");
                    matches!(s, Settle::Settled { .. } | Settle::Unreadable { .. })
                        .then(|| Returned::Rearm { key: s.key().to_owned() })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::Sender;

    use super::*;
    use crate::config::WatchConfig;

    /// Answers `Unfinished` to every `Settled`, fails every `Unreadable`,
    /// and records what it saw.
    struct Scripted(Sender<String>);

    impl Handoff for Scripted {
        fn hand_off(&mut self, s: &Settle, _rules: &WatchRules) -> Result<Handed, WatchError> {
            let _ = self.0.send(format!("{}", s.key().display()));
            match s {
                Settle::Settled { .. } => Ok(Handed::Unfinished { recheck: Duration::from_secs(3) }),
                Settle::Unreadable { .. } => Err(WatchError::Handoff("the journal is busy".into())),
                _ => Ok(Handed::Done),
            }
        }
        fn watch_folder(&mut self, _rules: &WatchRules, missing: Option<&str>) {
            let _ = self.0.send(format!("folder missing: {missing:?}"));
        }
    }

    #[test]
    fn jobs_run_in_order_and_what_the_settler_must_do_comes_back_with_a_wake_up() {
        let rules = vec![WatchRules::new(0, &WatchConfig::new("/drop")).expect("rules")];
        let (seen_tx, seen) = channel();
        let (wake_tx, wake) = sync_channel(4);
        let mut c = Courier::start(Box::new(Scripted(seen_tx)), rules, 8, wake_tx).expect("starts");
        let key = |n: &str| PathBuf::from(format!("/drop/{n}"));
        c.send(Job::Settle(Settle::Waiting { key: key("a"), watch_index: 0 })).unwrap();
        c.send(Job::Folder { watch: 0, missing: Some("gone".into()) }).unwrap();
        c.send(Job::Settle(Settle::Settled { key: key("a"), watch_index: 0, by_marker: false, held_for: None }))
            .unwrap();
        c.send(Job::Settle(Settle::Unreadable {
            key: key("b"),
            watch_index: 0,
            path: key("b/v.mov"),
            error: "x".into(),
        }))
        .unwrap();
        c.send(Job::Settle(Settle::Vanished { key: key("c"), watch_index: 99 })).unwrap();
        let order: Vec<String> = (0..4).map(|_| seen.recv_timeout(Duration::from_secs(5)).expect("handed")).collect();
        assert_eq!(order, ["/drop/a", "folder missing: Some(\"gone\")", "/drop/a", "/drop/b"]);
        assert!(matches!(wake.recv_timeout(Duration::from_secs(5)), Ok(Msg::Wake)));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut back = Vec::new();
        while back.len() < 2 && std::time::Instant::now() < deadline {
            back.extend(c.returned());
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            back,
            vec![Returned::Hold { key: key("a"), recheck: Duration::from_secs(3) }, Returned::Rearm { key: key("b") }]
        );
        c.stop();
        assert!(c.send(Job::Folder { watch: 0, missing: None }).is_err(), "a stopped courier takes no job");
    }
}
