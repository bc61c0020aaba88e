//! One engine per journal: an advisory lock on `<journal>.lock`.
//!
//! The agent (`run`) and a foreground `upload` both run the engine; two
//! engines working the same journal would upload the same parts twice. The
//! lock is an OS file lock (`File::try_lock`: `flock` on Unix, `LockFileEx`
//! on Windows), so it vanishes with the process, even after kill -9: no stale
//! lock to clean up. The CLI uses [`EngineLock::is_held`] to decide between
//! writing a request for the running engine and doing the work itself.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::JournalError;

/// What keeps a lock held: an open locked file, or a database session
/// holding an advisory lock (a fleet's journal). Dropping it releases the lock.
#[derive(Debug)]
enum Holder {
    File(#[allow(dead_code)] File),
    Session(#[allow(dead_code)] Box<dyn std::fmt::Debug + Send + Sync>),
}

/// Held while an engine works the journal; released on drop (or process exit).
#[derive(Debug)]
pub struct EngineLock {
    _holder: Holder,
}

fn lock_path(journal: &Path) -> PathBuf {
    let mut p = journal.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

impl EngineLock {
    /// Take the lock, or `None` if another process holds it.
    pub fn try_acquire(journal: &Path) -> Result<Option<EngineLock>, JournalError> {
        let path = lock_path(journal);
        let io = |source| JournalError::Io { path: path.clone(), source };
        let mut file = open_private(&path).map_err(io)?;
        if !try_lock(&file).map_err(io)? {
            return Ok(None);
        }
        // The pid is for people reading the file; the lock is what counts.
        file.set_len(0).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Some(EngineLock { _holder: Holder::File(file) }))
    }

    /// A lock held by a database session (`session` keeps it until dropped).
    pub(crate) fn held(session: Box<dyn std::fmt::Debug + Send + Sync>) -> EngineLock {
        EngineLock { _holder: Holder::Session(session) }
    }

    /// Does another process (or this one) hold the lock right now?
    pub fn is_held(journal: &Path) -> Result<bool, JournalError> {
        let path = lock_path(journal);
        if !path.exists() {
            return Ok(false);
        }
        // A second open file description conflicts with our own lock too,
        // so this also answers true inside the engine's process.
        Ok(EngineLock::try_acquire(journal)?.is_none())
    }
}

/// Held by the agent (`run`) for as long as it runs, on `<journal>.agent.lock`:
/// a second agent on the same journal stops at once, before it starts
/// anything, instead of queuing behind the first for the engine lock (which
/// a foreground `upload` may hold for a while, and rightly waits for).
#[derive(Debug)]
pub struct AgentLock {
    _holder: Holder,
}

impl AgentLock {
    /// Take the lock, or `Err(Some(pid))` / `Err(None)` naming the process
    /// that holds it (the pid as that process wrote it, if readable).
    pub fn try_acquire(journal: &Path) -> Result<Result<AgentLock, Option<u32>>, JournalError> {
        let mut p = journal.as_os_str().to_owned();
        p.push(".agent.lock");
        let path = PathBuf::from(p);
        let io = |source| JournalError::Io { path: path.clone(), source };
        let mut file = open_private(&path).map_err(io)?;
        if !try_lock(&file).map_err(io)? {
            let pid = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse().ok());
            return Ok(Err(pid));
        }
        file.set_len(0).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Ok(AgentLock { _holder: Holder::File(file) }))
    }

    /// A lock held by a database session (`session` keeps it until dropped).
    pub(crate) fn held(session: Box<dyn std::fmt::Debug + Send + Sync>) -> AgentLock {
        AgentLock { _holder: Holder::Session(session) }
    }
}

fn open_private(path: &Path) -> std::io::Result<File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

/// Take an exclusive OS lock on `file` without waiting: `false` if another
/// open file description holds it.
fn try_lock(file: &File) -> std::io::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}
