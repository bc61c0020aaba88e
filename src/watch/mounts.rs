//! Changes of the mount table, so an unmounted share is noticed within
//! moments rather than at the next rescan. inotify reports an unmount only
//! as `IN_UNMOUNT`/`IN_IGNORED`, which notify does not pass on; the kernel
//! does say so on `/proc/self/mountinfo`, which polls `POLLPRI` whenever
//! the mount table of this namespace changes (what `findmnt --poll` and
//! systemd use). One thread sleeps in `poll(2)` on it, raises a flag and
//! wakes the driver; it costs nothing while nothing is mounted or
//! unmounted. Elsewhere there is no such file and the rescan notices.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::SyncSender;

use super::backend::Msg;

/// The thread that watches the mount table; stopped when dropped.
pub(crate) struct MountWatch {
    #[cfg(target_os = "linux")]
    stop: Option<std::os::fd::OwnedFd>,
    #[cfg(target_os = "linux")]
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MountWatch {
    /// Watch the mount table: on every change raise `changed` and wake the
    /// driver (never blocking on a full channel: the flag is what counts).
    /// `None` where that cannot be watched (then the rescan notices).
    #[cfg(target_os = "linux")]
    pub(crate) fn start(tx: SyncSender<Msg>, changed: Arc<AtomicBool>) -> Option<MountWatch> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let mountinfo = std::fs::File::open("/proc/self/mountinfo").ok()?;
        let mut fds = [0i32; 2];
        // SAFETY: pipe2 writes two descriptors into the array passed.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return None;
        }
        // SAFETY: both descriptors were just created by pipe2 and are owned here alone.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let thread = std::thread::Builder::new()
            .name("spatialgen-mounts".into())
            .spawn(move || {
                let mut polled = [
                    libc::pollfd { fd: mountinfo.as_raw_fd(), events: libc::POLLPRI, revents: 0 },
                    libc::pollfd { fd: read.as_raw_fd(), events: libc::POLLIN, revents: 0 },
                ];
                loop {
                    // SAFETY: poll reads and writes the two pollfd structs of the array passed.
                    let n = unsafe { libc::poll(polled.as_mut_ptr(), 2, -1) };
                    if n < 0 {
                        if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                            continue;
                        }
                        tracing::debug!("cannot poll the mount table; unmounts are noticed at the next rescan");
                        return;
                    }
                    if polled[1].revents != 0 {
                        return;
                    }
                    if polled[0].revents & (libc::POLLPRI | libc::POLLERR) != 0 {
                        changed.store(true, std::sync::atomic::Ordering::SeqCst);
                        if let Err(std::sync::mpsc::TrySendError::Disconnected(_)) = tx.try_send(Msg::Wake) {
                            return;
                        }
                    }
                }
            })
            .ok()?;
        Some(MountWatch { stop: Some(write), thread: Some(thread) })
    }

    #[cfg(not(target_os = "linux"))]
    pub(crate) fn start(_tx: SyncSender<Msg>, _changed: Arc<AtomicBool>) -> Option<MountWatch> {
        None
    }
}

impl Drop for MountWatch {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        {
            // Closing the write end wakes the thread (POLLHUP on the read end).
            drop(self.stop.take());
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}
