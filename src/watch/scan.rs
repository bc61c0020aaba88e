//! Looking at the filesystem: which export an event path belongs to, what an
//! export looks like right now (a [`Look`]), and a full rescan of a watch
//! folder.
//!
//! An export's *key* is the export folder in folders mode and
//! `<drop folder>/<stem>` in flat mode (not a real path). Symlinks are
//! skipped unless the watch folder sets `follow_symlinks`; when followed, a
//! dangling link is still listed, so that the readability check rejects the
//! group with the OS error instead of silently leaving the file out.
//!
//! Which files are temporary, ignored, or belong to which flat-mode stem is
//! the grouping engine's [`RoleMatcher`]'s answer, so that the watcher and
//! the groups it hands off never disagree. Ignored files (hidden ones,
//! `Thumbs.db`, ...) do not count in a look's digest: Finder writing a
//! `.DS_Store` into a finished export does not make it "changed".

use std::collections::HashMap;
use std::fs::{self, Metadata};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use crate::config::{WatchConfig, WatchMode};
pub use crate::group::open::is_transient;
use crate::group::{DirClass, RoleMatcher};

use super::WatchError;
use super::settle::{Look, SettlePolicy};

/// Default temporary patterns (interface.md): ignored, and an export is not
/// finished while one is present.
pub const DEFAULT_TEMPORARY: &[&str] =
    &["*.tmp", "*.part", "*.partial", "*.crdownload", "*.download", "~*", "*~", ".~lock*"];

/// Symlinked folders are followed at most this deep, which also ends loops.
const MAX_DEPTH: usize = 64;

/// One watch folder's settings as the watcher uses them.
#[derive(Debug, Clone)]
pub struct WatchRules {
    /// Position in `Config::watch`.
    pub index: usize,
    pub root: PathBuf,
    pub mode: WatchMode,
    pub policy: SettlePolicy,
    pub ready_marker: Option<String>,
    pub follow_symlinks: bool,
    /// `Some`: use a polling watcher at this interval (network shares).
    pub poll: Option<Duration>,
    /// Full rescan interval.
    pub rescan: Duration,
    /// The grouping engine's patterns for this folder, as the watcher asks them.
    pub matcher: RoleMatcher,
    /// The watch folder's settings as handed to the grouping engine: in flat
    /// mode with `*.<ready_marker>` added to the ignore patterns, so the
    /// marker is never uploaded (folders mode: the engine skips it itself).
    pub group_config: WatchConfig,
    /// `group_config`'s patterns, compiled once.
    pub matcher_for_groups: RoleMatcher,
}

impl WatchRules {
    pub fn new(index: usize, w: &WatchConfig) -> Result<WatchRules, WatchError> {
        let matcher = RoleMatcher::new(w)?;
        let mut group_config = w.clone();
        if let (WatchMode::Flat, Some(marker)) = (w.mode, &w.ready_marker) {
            let mut ignore = w
                .roles
                .ignore
                .clone()
                .unwrap_or_else(|| crate::group::roles::DEFAULT_IGNORE.iter().map(|s| s.to_string()).collect());
            ignore.push(format!("*.{marker}"));
            ignore.push(marker.clone());
            group_config.roles.ignore = Some(ignore);
        }
        let matcher_for_groups = RoleMatcher::new(&group_config)?;
        Ok(WatchRules {
            index,
            root: w.path.clone(),
            mode: w.mode,
            policy: SettlePolicy { settle: w.settle.0, marker: w.ready_marker.is_some() },
            ready_marker: w.ready_marker.clone(),
            follow_symlinks: w.follow_symlinks,
            poll: w.poll.map(|d| d.0),
            rescan: w.rescan.0,
            matcher,
            group_config,
            matcher_for_groups,
        })
    }

    /// A temporary (partial, lock, download) file that blocks "finished".
    pub fn is_temporary(&self, rel_path: &str) -> bool {
        self.matcher.is_temporary(rel_path)
    }

    /// Flat mode: the stem a file in the drop folder belongs to (`None`:
    /// ignored). A marker `<stem>.<ready_marker>` belongs to its stem.
    pub fn flat_stem(&self, name: &str, is_dir: bool) -> Option<String> {
        if let Some(rest) = self.flat_marker_of(name) {
            return Some(
                self.matcher.flat_stem(rest, false).unwrap_or_else(|| crate::model::names::nfc(rest).into_owned()),
            );
        }
        self.matcher.flat_stem(name, is_dir)
    }

    /// In flat mode, `clip.READY` marks the stem `clip` finished; the part
    /// before the marker extension.
    fn flat_marker_of<'n>(&self, name: &'n str) -> Option<&'n str> {
        let marker = self.ready_marker.as_deref()?;
        let cut = name.len().checked_sub(marker.len() + 1)?;
        if cut == 0 || !name.is_char_boundary(cut) || !name[cut..].starts_with('.') {
            return None;
        }
        name[cut + 1..].eq_ignore_ascii_case(marker).then_some(&name[..cut])
    }

    /// The polling interval used when the OS refuses more native watches.
    pub fn fallback_poll(&self) -> Duration {
        self.policy.settle.clamp(Duration::from_secs(1), Duration::from_secs(15))
    }

    /// The export an event at `path` belongs to, by name alone (no I/O).
    pub fn route(&self, path: &Path) -> Option<PathBuf> {
        let rel = path.strip_prefix(&self.root).ok()?;
        let mut comps = rel.components();
        let first = comps.next()?.as_os_str().to_str()?;
        let deeper = comps.next().is_some();
        match self.mode {
            WatchMode::Folders => {
                // Hidden and ignored folders are no exports; a folder being
                // written under a temporary name is not one yet (its rename
                // to the final name is).
                match self.matcher.classify_dir(first) {
                    DirClass::Ignored | DirClass::Temporary => None,
                    DirClass::Bundle | DirClass::Descend => Some(self.root.join(first)),
                }
            }
            WatchMode::Flat => {
                if deeper {
                    // Only a bundle directory's contents matter below the drop folder.
                    return self.flat_stem(first, true).map(|s| self.root.join(s));
                }
                // Whether a removed entry was a directory is unknown; a
                // bundle directory and its zip give the same stem anyway.
                self.flat_stem(first, false).or_else(|| self.flat_stem(first, true)).map(|s| self.root.join(s))
            }
        }
    }

    /// Does `key` (from [`WatchRules::route`]) name an export that exists?
    /// Used for keys the settler does not know yet. `Err`
    /// ([`WatchError::Unreadable`]) when the answer could not be read: then
    /// the export may well exist, and the caller must look again later.
    pub fn exists(&self, key: &Path) -> Result<bool, WatchError> {
        match self.mode {
            WatchMode::Folders => Ok(self.export_dir_meta(key)?.is_some()),
            WatchMode::Flat => {
                let Some(stem) = key.file_name().and_then(|s| s.to_str()) else { return Ok(false) };
                let rd = match fs::read_dir(&self.root) {
                    Ok(rd) => rd,
                    Err(e) if is_absent(&e) => return Ok(false),
                    Err(e) => return Err(unreadable(&self.root, e)),
                };
                for e in rd {
                    let e = e.map_err(|e| unreadable(&self.root, e))?;
                    let path = e.path();
                    let Some(name) = e.file_name().to_str().map(str::to_owned) else { continue };
                    let is_dir = e.file_type().map_err(|e| unreadable(&path, e))?.is_dir();
                    if self.flat_stem(&name, is_dir).as_deref() == Some(stem) && self.flat_candidate(&path)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
        }
    }

    /// The export folder's metadata; `None`: not there, or not an export
    /// folder (a file, a symlink not followed, a dangling one).
    fn export_dir_meta(&self, dir: &Path) -> Result<Option<Metadata>, WatchError> {
        let meta = match fs::symlink_metadata(dir) {
            Ok(m) => m,
            Err(e) if is_absent(&e) => return Ok(None),
            Err(e) => return Err(unreadable(dir, e)),
        };
        let meta = if meta.file_type().is_symlink() {
            if !self.follow_symlinks {
                return Ok(None);
            }
            match fs::metadata(dir) {
                Ok(m) => m,
                Err(e) if is_absent(&e) => return Ok(None),
                Err(e) => return Err(unreadable(dir, e)),
            }
        } else {
            meta
        };
        Ok(meta.is_dir().then_some(meta))
    }

    /// A plain file or bundle directory (or, when followed, a symlink to
    /// one) directly in a flat drop folder.
    fn flat_candidate(&self, path: &Path) -> Result<bool, WatchError> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => Ok(self.follow_symlinks),
            Ok(m) => Ok(m.is_file() || m.is_dir()),
            Err(e) if is_absent(&e) => Ok(false),
            Err(e) => Err(unreadable(path, e)),
        }
    }
}

/// Does this error say the thing is not there (rather than that it could
/// not be read)? `NotFound`, and `NotADirectory` (a component of the path
/// is a file now). Everything else (EMFILE, ENFILE, EIO, EACCES, ...) is a
/// read error: it says nothing about what is there.
pub fn is_absent(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory)
}

fn unreadable(path: &Path, source: io::Error) -> WatchError {
    WatchError::Unreadable { path: path.to_owned(), source }
}

/// What looking at one export found, with what the readability check needs.
#[derive(Debug)]
pub struct ExportLook {
    pub look: Look,
    /// Every file of the export, absolute (temporary ones and the marker excluded).
    pub files: Vec<PathBuf>,
}

impl ExportLook {
    /// Does every file open for reading? The first failure, with the OS
    /// error ([`is_transient`] tells a verdict from a passing failure).
    pub fn check_readable(&self) -> Result<(), (PathBuf, io::Error)> {
        for f in &self.files {
            open_for_reading(f).map_err(|e| (f.clone(), e))?;
        }
        Ok(())
    }
}

/// Open without blocking: a FIFO among the files must not hang the watcher.
fn open_for_reading(path: &Path) -> io::Result<()> {
    let mut o = fs::OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NONBLOCK);
    }
    o.open(path).map(drop)
}

#[derive(Default)]
struct Acc {
    digest: u64,
    files: usize,
    temporary: Option<String>,
    marker: bool,
    paths: Option<Vec<PathBuf>>,
    error: Option<(PathBuf, io::Error)>,
}

impl Acc {
    fn add(&mut self, rel: &str, size: u64, mtime_ns: i128) {
        let mut h = DefaultHasher::new();
        (rel, size, mtime_ns).hash(&mut h);
        // A sum is independent of directory order, so no sorting is needed.
        self.digest = self.digest.wrapping_add(h.finish());
        self.files += 1;
    }

    /// The look, the files, or the first read error met while walking (a
    /// walk that could not read everything says nothing about the export).
    fn finish(self) -> Result<(Look, Vec<PathBuf>), WatchError> {
        if let Some((path, source)) = self.error {
            return Err(WatchError::Unreadable { path, source });
        }
        let mut h = DefaultHasher::new();
        (self.digest, self.files).hash(&mut h);
        let look = Look { digest: h.finish(), files: self.files, temporary: self.temporary, marker: self.marker };
        Ok((look, self.paths.unwrap_or_default()))
    }
}

fn mtime_ns(m: &Metadata) -> i128 {
    match m.modified() {
        Ok(t) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(e) => -(e.duration().as_nanos() as i128),
        },
        Err(_) => 0,
    }
}

/// Is the watch folder itself there (a directory)? `Err` is what the OS
/// said. A missing watch folder is an unmounted share or a deleted folder,
/// never "every export vanished".
pub fn root_present(rules: &WatchRules) -> Result<(), WatchError> {
    match fs::metadata(&rules.root) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(WatchError::Io {
            path: rules.root.clone(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "the watch folder is not a folder"),
        }),
        Err(e) => Err(WatchError::Io { path: rules.root.clone(), source: e }),
    }
}

/// The watch folder's identity (device, inode): when it changes, the folder
/// was deleted and made again, or a share was mounted over it, and a native
/// watch on the old one sees nothing any more.
#[cfg(unix)]
pub fn root_identity(rules: &WatchRules) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(&rules.root).ok().map(|m| (m.dev(), m.ino()))
}

/// Windows: the volume serial number and the file index of the folder
/// (what `GetFileInformationByHandle` tells: NTFS's inode).
#[cfg(windows)]
pub fn root_identity(rules: &WatchRules) -> Option<(u64, u64)> {
    use std::os::windows::io::AsRawHandle;
    use windows_sys::Win32::Storage::FileSystem::{BY_HANDLE_FILE_INFORMATION, GetFileInformationByHandle};
    // std opens folders with FILE_FLAG_BACKUP_SEMANTICS, as this needs.
    let folder = fs::File::open(&rules.root).ok()?;
    // SAFETY: an all-zero BY_HANDLE_FILE_INFORMATION is a valid value to be
    // overwritten; the handle is open for the call.
    let mut info: BY_HANDLE_FILE_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `info` is a local the call writes into.
    if unsafe { GetFileInformationByHandle(folder.as_raw_handle(), &mut info) } == 0 {
        return None;
    }
    let index = (u64::from(info.nFileIndexHigh) << 32) | u64::from(info.nFileIndexLow);
    Some((u64::from(info.dwVolumeSerialNumber), index))
}

#[cfg(not(any(unix, windows)))]
pub fn root_identity(rules: &WatchRules) -> Option<(u64, u64)> {
    fs::metadata(&rules.root).ok().map(|_| (0, 0))
}

/// Is something mounted on the watch folder (its device differs from its
/// parent's)? A share that is unmounted leaves its empty mount point
/// behind: a folder that was a mount point and no longer is counts as
/// missing, not as a folder whose exports all vanished.
#[cfg(unix)]
pub fn is_mount_point(rules: &WatchRules) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(parent) = rules.root.parent() else { return false };
    match (fs::metadata(&rules.root), fs::metadata(parent)) {
        (Ok(m), Ok(p)) => m.dev() != p.dev(),
        _ => false,
    }
}

#[cfg(not(unix))]
pub fn is_mount_point(_rules: &WatchRules) -> bool {
    false
}

/// Look at one export now. `Ok(None)`: it is gone (or no longer an export).
/// `Err` when the watch folder itself is missing ([`WatchError::Io`]), or
/// when something in the way could not be read ([`WatchError::Unreadable`]:
/// EMFILE, EIO, EACCES, ...): then nothing is known about the export, and
/// it may be taken neither for empty nor for gone.
pub fn look_export(rules: &WatchRules, key: &Path) -> Result<Option<ExportLook>, WatchError> {
    root_present(rules)?;
    let acc = match rules.mode {
        WatchMode::Folders => {
            if rules.export_dir_meta(key)?.is_none() {
                return Ok(None);
            }
            let mut acc = Acc { paths: Some(Vec::new()), ..Acc::default() };
            walk(rules, key, "", 0, &mut acc);
            acc
        }
        WatchMode::Flat => {
            let Some(stem) = key.file_name().and_then(|s| s.to_str()) else { return Ok(None) };
            let mut acc = Acc { paths: Some(Vec::new()), ..Acc::default() };
            let rd = match fs::read_dir(&rules.root) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(unreadable(&rules.root, e)),
            };
            for e in rd {
                let e = e.map_err(|e| unreadable(&rules.root, e))?;
                let name = e.file_name();
                let Some(name) = name.to_str() else { continue };
                let is_dir = e.file_type().map_err(|err| unreadable(&e.path(), err))?.is_dir();
                if rules.flat_stem(name, is_dir).as_deref() == Some(stem) {
                    flat_file(rules, &e.path(), name, &mut acc);
                }
            }
            if acc.files == 0 && acc.error.is_none() {
                return Ok(None);
            }
            acc
        }
    };
    let (look, files) = acc.finish()?;
    Ok(Some(ExportLook { look, files }))
}

fn flat_file(rules: &WatchRules, path: &Path, name: &str, acc: &mut Acc) {
    let Some(meta) = file_meta(rules, path, acc) else { return };
    if meta.is_dir() {
        // Only `.fcpxmld` bundle directories belong to a flat-mode stem.
        if rules.matcher.classify_dir(name) == DirClass::Bundle {
            bundle(rules, path, name, 1, acc);
        }
        return;
    }
    note_file(rules, path, name, &meta, acc, true);
}

/// A `.fcpxmld` bundle directory: its files, and until its `Info.fcpxml`
/// is there, a blocker (Final Cut Pro makes the directory first and writes
/// into it after; see [`crate::group::bundle`]).
fn bundle(rules: &WatchRules, path: &Path, rel: &str, depth: usize, acc: &mut Acc) {
    if !crate::group::bundle::document_present(path) {
        acc.temporary.get_or_insert_with(|| format!("{rel}/{}", crate::group::bundle::BUNDLE_DOCUMENT));
    }
    walk(rules, path, rel, depth, acc);
}

/// Metadata of an entry, following a symlink only when allowed; `None` to skip.
fn file_meta(rules: &WatchRules, path: &Path, acc: &mut Acc) -> Option<Metadata> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if is_absent(&e) => return None,
        Err(e) => {
            acc.error.get_or_insert((path.to_owned(), e));
            return None;
        }
    };
    if !meta.file_type().is_symlink() {
        return Some(meta);
    }
    if !rules.follow_symlinks {
        return None;
    }
    match fs::metadata(path) {
        Ok(m) => Some(m),
        // Dangling or unreadable target: keep it as a file so the readability
        // check reports the OS error.
        Err(_) => Some(meta),
    }
}

fn note_file(rules: &WatchRules, path: &Path, rel: &str, meta: &Metadata, acc: &mut Acc, flat: bool) {
    if !(meta.is_file() || meta.file_type().is_symlink()) {
        return; // FIFOs, sockets, devices: never part of an export
    }
    let is_marker = match &rules.ready_marker {
        Some(_) if flat => rules.flat_marker_of(rel).is_some(),
        Some(marker) => rel == marker,
        None => false,
    };
    if is_marker {
        acc.add(rel, meta.len(), mtime_ns(meta));
        acc.marker = true;
        return;
    }
    if rules.is_temporary(rel) {
        acc.add(rel, meta.len(), mtime_ns(meta));
        acc.temporary.get_or_insert_with(|| rel.to_owned());
        return;
    }
    if rules.matcher.is_ignored(rel) {
        return;
    }
    acc.add(rel, meta.len(), mtime_ns(meta));
    if let Some(p) = acc.paths.as_mut() {
        p.push(path.to_owned());
    }
}

fn walk(rules: &WatchRules, dir: &Path, rel: &str, depth: usize, acc: &mut Acc) {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        // Gone (or replaced by a file) since its entry was read: nothing to see.
        Err(e) if is_absent(&e) => return,
        Err(e) => {
            acc.error.get_or_insert((dir.to_owned(), e));
            return;
        }
    };
    for entry in rd {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                acc.error.get_or_insert((dir.to_owned(), e));
                continue;
            }
        };
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let child_rel = if rel.is_empty() { name.to_string() } else { format!("{rel}/{name}") };
        let path = entry.path();
        let Some(meta) = file_meta(rules, &path, acc) else { continue };
        if meta.is_dir() {
            match rules.matcher.classify_dir(&child_rel) {
                DirClass::Ignored => {}
                DirClass::Temporary => {
                    acc.temporary.get_or_insert_with(|| child_rel.clone());
                }
                DirClass::Bundle if depth < MAX_DEPTH => bundle(rules, &path, &child_rel, depth + 1, acc),
                DirClass::Descend if depth < MAX_DEPTH => walk(rules, &path, &child_rel, depth + 1, acc),
                DirClass::Bundle | DirClass::Descend => {}
            }
        } else {
            note_file(rules, &path, &child_rel, &meta, acc, false);
        }
    }
}

/// What a full rescan of one watch folder found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Every export with the digest a [`look_export`] would give it.
    pub exports: HashMap<PathBuf, u64>,
    /// Files seen in all exports.
    pub files: usize,
    /// Exports that are there but could not be read in full (by key), with
    /// the first file or folder that failed and the OS error. They are in
    /// neither `exports` nor "gone": nothing is known about them.
    pub unreadable: HashMap<PathBuf, (PathBuf, io::Error)>,
}

impl Scan {
    /// The export `key` as its walk found it: read in full, or unreadable.
    fn add(&mut self, key: PathBuf, acc: Acc) -> Result<(), WatchError> {
        let files = acc.files;
        match acc.finish() {
            Ok((look, _)) => {
                self.files += files;
                self.exports.insert(key, look.digest);
            }
            Err(WatchError::Unreadable { path, source }) => {
                self.unreadable.insert(key, (path, source));
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

/// Walk a whole watch folder. A missing watch folder is an error (not "every
/// export vanished"): an unmounted share must not make the agent forget.
/// A watch folder whose listing cannot be read (EMFILE, EIO, ...) is an
/// error too ([`WatchError::Unreadable`]), never an empty folder.
pub fn scan(rules: &WatchRules) -> Result<Scan, WatchError> {
    let rd = fs::read_dir(&rules.root).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            WatchError::Io { path: rules.root.clone(), source: e }
        } else {
            unreadable(&rules.root, e)
        }
    })?;
    let mut out = Scan::default();
    match rules.mode {
        WatchMode::Folders => {
            for e in rd {
                let path = e.map_err(|e| unreadable(&rules.root, e))?.path();
                let Some(key) = rules.route(&path) else { continue };
                match rules.export_dir_meta(&key) {
                    Ok(Some(_)) => {}
                    Ok(None) => continue,
                    Err(WatchError::Unreadable { path, source }) => {
                        out.unreadable.insert(key, (path, source));
                        continue;
                    }
                    Err(e) => return Err(e),
                }
                let mut acc = Acc::default();
                walk(rules, &key, "", 0, &mut acc);
                out.add(key, acc)?;
            }
        }
        WatchMode::Flat => {
            let mut by_stem: HashMap<PathBuf, Acc> = HashMap::new();
            for e in rd {
                let e = e.map_err(|e| unreadable(&rules.root, e))?;
                let name = e.file_name();
                let Some(name) = name.to_str() else { continue };
                let is_dir = e.file_type().map_err(|err| unreadable(&e.path(), err))?.is_dir();
                let Some(stem) = rules.flat_stem(name, is_dir) else { continue };
                let acc = by_stem.entry(rules.root.join(stem)).or_default();
                flat_file(rules, &e.path(), name, acc);
            }
            for (key, acc) in by_stem {
                if acc.files == 0 && acc.error.is_none() {
                    continue;
                }
                out.add(key, acc)?;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
