//! The notify side: one recursive watcher per watch folder, native or
//! polling, feeding one bounded channel.
//!
//! Invariants:
//! - The notify callback never blocks: it `try_send`s into the bounded
//!   channel; when that fails it counts the drop and raises the folder's
//!   `overflow` flag, and the driver answers with a full rescan of that folder.
//! - Read-only events (a file opened or read) are dropped in the callback:
//!   the watcher's own readability check, the grouping code and the upload
//!   engine all open files, and those opens must not look like writes.
//! - When the OS refuses more watches (inotify `ENOSPC`, or no inotify
//!   instance left), that folder is watched by polling instead, with one
//!   warning that names the sysctl to raise. Other folders are unaffected.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, PollWatcher, RecommendedWatcher, RecursiveMode, Watcher};

use super::WatchError;
use super::scan::WatchRules;
use crate::config::Dur;

/// Events the channel holds before the callback starts dropping them.
pub(crate) const CHANNEL_CAPACITY: usize = 16_384;

/// What the watcher threads tell the driver.
#[derive(Debug)]
pub(crate) enum Msg {
    Event {
        watch: usize,
        event: notify::Result<Event>,
    },
    /// The courier has something for the driver ([`super::courier::Courier::returned`]).
    Wake,
    Stop,
}

/// Flags a callback raises when it cannot say it through the channel.
#[derive(Debug, Default)]
pub(crate) struct Signals {
    /// Events were dropped (channel full): rescan this folder.
    pub overflow: AtomicBool,
    /// The OS refused a watch for a new subfolder: switch to polling.
    pub limit: AtomicBool,
}

/// Counters for tests, benchmarks and logs.
#[derive(Debug, Default)]
pub struct WatchStats {
    /// Events received from notify (read-only ones excluded).
    pub events: AtomicU64,
    /// Events dropped because the channel was full.
    pub dropped: AtomicU64,
    /// Full rescans done (startup, periodic, lost events).
    pub rescans: AtomicU64,
    /// Looks at single exports.
    pub looks: AtomicU64,
    /// Watch folders currently watched by polling.
    pub polling: AtomicU64,
    /// Watch folders that fell back to polling because of the OS limit.
    pub fallbacks: AtomicU64,
    /// Watch folders missing now (unmounted, deleted).
    pub missing: AtomicU64,
    /// Watch folders with a read error now (EMFILE, EIO, ...), retried with backoff.
    pub unreadable: AtomicU64,
    /// Times a watch was started again on a folder that came back or was replaced.
    pub rewatched: AtomicU64,
}

impl WatchStats {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// A running watcher; dropping it stops it.
pub(crate) enum Backend {
    Native(#[allow(dead_code)] RecommendedWatcher),
    Poll(#[allow(dead_code)] PollWatcher),
    /// The watch folder was missing when its watch was to start; the next
    /// rescan that finds it starts the real one.
    Missing,
}

/// Access events that do not change anything.
fn is_read_only(ev: &Event) -> bool {
    matches!(
        ev.kind,
        EventKind::Access(
            AccessKind::Open(_) | AccessKind::Read | AccessKind::Close(AccessMode::Read | AccessMode::Execute)
        )
    )
}

/// Did the OS refuse a watch because a per-user limit ran out?
pub(crate) fn is_watch_limit(err: &notify::Error) -> bool {
    match &err.kind {
        notify::ErrorKind::MaxFilesWatch => true,
        notify::ErrorKind::Io(e) => is_limit_io(e),
        _ => false,
    }
}

fn is_limit_io(e: &std::io::Error) -> bool {
    #[cfg(target_os = "linux")]
    {
        // ENOSPC from inotify_add_watch; EMFILE from inotify_init.
        matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EMFILE))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = e;
        false
    }
}

/// The warning an operator needs when the limit is hit, naming the knob.
pub(crate) fn limit_warning(root: &Path, err: &notify::Error, poll: Duration) -> String {
    limit_warning_for(root, err, poll, cfg!(target_os = "linux"))
}

/// [`limit_warning`] for a platform: the inotify sysctls exist on Linux
/// only; elsewhere (FSEvents on macOS, ReadDirectoryChangesW on Windows)
/// there is no knob to name, only the fallback.
fn limit_warning_for(root: &Path, err: &notify::Error, poll: Duration, linux: bool) -> String {
    if !linux {
        return format!(
            "{}: the OS refused to watch this folder ({err}); watching it by polling every {} instead",
            root.display(),
            Dur(poll)
        );
    }
    let instances = matches!(&err.kind, notify::ErrorKind::Io(e) if e.raw_os_error() == Some(emfile()));
    let (knob, value) =
        if instances { ("fs.inotify.max_user_instances", 1024) } else { ("fs.inotify.max_user_watches", 524_288) };
    format!(
        "{}: the OS refused more file watches ({err}); watching this folder by polling every {} instead. \
         Raise the limit with: sysctl -w {knob}={value} (and add {knob}={value} to /etc/sysctl.conf)",
        root.display(),
        Dur(poll)
    )
}

fn emfile() -> i32 {
    #[cfg(unix)]
    {
        libc::EMFILE
    }
    #[cfg(not(unix))]
    {
        24
    }
}

/// Where a watch folder really is, when its path goes through a symbolic
/// link (`/renders` → `/mnt/nas/renders`): notify walks and watches the
/// real folder (it does not descend through a link at the root), and event
/// paths are spelled back under the configured path.
fn real_root(root: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(root).ok().filter(|real| real != root)
}

fn handler(
    watch: usize,
    tx: SyncSender<Msg>,
    signals: Arc<Signals>,
    stats: Arc<WatchStats>,
    respell: Option<(PathBuf, PathBuf)>,
) -> impl Fn(notify::Result<Event>) + Send + 'static {
    move |mut res: notify::Result<Event>| {
        if let (Ok(ev), Some((real, root))) = (&mut res, &respell) {
            for p in &mut ev.paths {
                if let Ok(rest) = p.strip_prefix(real) {
                    *p = root.join(rest);
                }
            }
        }
        match &res {
            Ok(ev) if is_read_only(ev) => return,
            Ok(_) => {
                stats.events.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if is_watch_limit(e) => signals.limit.store(true, Ordering::SeqCst),
            Err(_) => {}
        }
        match tx.try_send(Msg::Event { watch, event: res }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
                signals.overflow.store(true, Ordering::SeqCst);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// Start watching `rules.root`: polling if configured (or `force_poll`),
/// else native, falling back to polling when the OS limit is hit.
pub(crate) fn start(
    rules: &WatchRules,
    tx: &SyncSender<Msg>,
    signals: &Arc<Signals>,
    stats: &Arc<WatchStats>,
    force_poll: bool,
) -> Result<Backend, WatchError> {
    let real = real_root(&rules.root);
    let watched = real.clone().unwrap_or_else(|| rules.root.clone());
    let h = || {
        handler(rules.index, tx.clone(), signals.clone(), stats.clone(), real.clone().map(|r| (r, rules.root.clone())))
    };
    if let Some(every) = rules.poll {
        return start_poll(rules, &watched, every, h(), stats);
    }
    if force_poll {
        return start_poll(rules, &watched, rules.fallback_poll(), h(), stats);
    }
    let cfg = notify::Config::default().with_follow_symlinks(rules.follow_symlinks);
    let native = RecommendedWatcher::new(h(), cfg).and_then(|mut w| {
        w.watch(&watched, RecursiveMode::Recursive)?;
        Ok(w)
    });
    match native {
        Ok(w) => Ok(Backend::Native(w)),
        Err(e) if is_watch_limit(&e) => {
            // The half-built watcher was dropped above, releasing its watches.
            let every = rules.fallback_poll();
            tracing::warn!("{}", limit_warning(&rules.root, &e, every));
            stats.fallbacks.fetch_add(1, Ordering::Relaxed);
            start_poll(rules, &watched, every, h(), stats)
        }
        Err(e) => Err(WatchError::Notify { path: rules.root.clone(), source: e }),
    }
}

fn start_poll(
    rules: &WatchRules,
    watched: &Path,
    every: Duration,
    h: impl Fn(notify::Result<Event>) + Send + 'static,
    stats: &Arc<WatchStats>,
) -> Result<Backend, WatchError> {
    let cfg = notify::Config::default()
        .with_poll_interval(every)
        .with_compare_contents(false)
        .with_follow_symlinks(rules.follow_symlinks);
    let mut w = PollWatcher::new(h, cfg).map_err(|e| WatchError::Notify { path: rules.root.clone(), source: e })?;
    w.watch(watched, RecursiveMode::Recursive)
        .map_err(|e| WatchError::Notify { path: rules.root.clone(), source: e })?;
    stats.polling.fetch_add(1, Ordering::Relaxed);
    tracing::info!(folder = %rules.root.display(), every = %Dur(every), "watching by polling");
    Ok(Backend::Poll(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_limit_errors_are_recognised_and_the_warning_names_the_sysctl() {
        let e = notify::Error::new(notify::ErrorKind::MaxFilesWatch);
        assert!(is_watch_limit(&e));
        let msg = limit_warning_for(Path::new("/renders"), &e, Duration::from_secs(15), true);
        assert!(msg.contains("sysctl -w fs.inotify.max_user_watches=524288"), "{msg}");
        assert!(msg.contains("/renders") && msg.contains("15s"), "{msg}");
        // macOS and Windows have no inotify: no sysctl to raise, only the fallback.
        let other = limit_warning_for(Path::new("/renders"), &e, Duration::from_secs(15), false);
        assert!(!other.contains("sysctl") && !other.contains("inotify"), "{other}");
        assert!(other.contains("/renders") && other.contains("polling every 15s"), "{other}");
        assert_eq!(
            limit_warning(Path::new("/r"), &e, Duration::from_secs(1)).contains("sysctl"),
            cfg!(target_os = "linux")
        );
        #[cfg(target_os = "linux")]
        {
            let nospc = notify::Error::io(std::io::Error::from_raw_os_error(libc::ENOSPC));
            assert!(is_watch_limit(&nospc));
            let mfile = notify::Error::io(std::io::Error::from_raw_os_error(libc::EMFILE));
            assert!(is_watch_limit(&mfile));
            assert!(limit_warning(Path::new("/r"), &mfile, Duration::from_secs(1)).contains("max_user_instances"));
        }
        assert!(!is_watch_limit(&notify::Error::path_not_found()));
    }

    /// FSEvents (macOS) says only that a path changed, often several
    /// changes in one event of kind `Any`, with real paths (`/private/tmp`
    /// for `/tmp`), and asks for a rescan when it dropped events. Each must
    /// reach the driver as a change, under the configured spelling.
    #[test]
    fn fsevents_shaped_events_reach_the_driver_as_changes_under_the_configured_path() {
        let (tx, rx) = std::sync::mpsc::sync_channel(8);
        let signals = Arc::new(Signals::default());
        let stats = Arc::new(WatchStats::default());
        let respell = Some((PathBuf::from("/private/tmp/w"), PathBuf::from("/tmp/w")));
        let h = handler(3, tx, signals.clone(), stats.clone(), respell);
        h(Ok(Event::new(EventKind::Any).add_path(PathBuf::from("/private/tmp/w/Shot/a.mov"))));
        h(Ok(Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan)));
        h(Ok(Event::new(EventKind::Modify(notify::event::ModifyKind::Name(notify::event::RenameMode::Any)))
            .add_path(PathBuf::from("/private/tmp/w/Shot.part"))
            .add_path(PathBuf::from("/private/tmp/w/Shot"))));
        let got: Vec<Event> = rx
            .try_iter()
            .map(|m| match m {
                Msg::Event { watch: 3, event: Ok(ev) } => ev,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].paths, vec![PathBuf::from("/tmp/w/Shot/a.mov")]);
        assert!(got[1].need_rescan());
        assert_eq!(got[2].paths, vec![PathBuf::from("/tmp/w/Shot.part"), PathBuf::from("/tmp/w/Shot")]);
        assert_eq!(WatchStats::get(&stats.events), 3);
        assert!(!signals.overflow.load(Ordering::SeqCst));
    }

    #[test]
    fn read_only_events_are_not_changes() {
        let open = Event::new(EventKind::Access(AccessKind::Open(AccessMode::Any)));
        let closed_write = Event::new(EventKind::Access(AccessKind::Close(AccessMode::Write)));
        let modify = Event::new(EventKind::Modify(notify::event::ModifyKind::Any));
        assert!(is_read_only(&open));
        assert!(!is_read_only(&closed_write));
        assert!(!is_read_only(&modify));
    }
}
