//! The grouping step's entry points: from a folder on disk to upload groups,
//! in folders mode (one export folder, one group) and flat mode (one drop
//! folder, one group per stem); the exports under a watch folder; removal
//! of staged zips. Walking a folder is `walk`'s, turning what it
//! found into a group `assemble`'s.
//!
//! Invariant: a group is always returned for an export that can be listed,
//! valid or not: what is wrong with it is in `violations`, every problem at
//! once. `Err` is kept for the folder itself being unreadable and for the
//! staging directory refusing a write — conditions of the machine, not the
//! export.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{WatchConfig, WatchMode};
use crate::model::FileRole;

use super::assemble::{Frame, assemble, fingerprint};
use super::bundle;
use super::layout::{self, Sidecar};
use super::roles::{Class, DirClass, RoleMatcher, SIDECAR_NAME, strip_extension};
use super::rules;
use super::walk::{Item, Scanner};
use super::{UploadGroup, Violation};

/// What can stop the grouping engine from producing a group at all.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// The export or drop folder itself cannot be listed.
    #[error("cannot read folder {}: {source}", path.display())]
    Folder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A role pattern does not compile (the config check normally catches this first).
    #[error("bad pattern {pattern:?} for role {role}: {message}")]
    Pattern { role: &'static str, pattern: String, message: String },
    /// A file inside an export cannot be read. Reported as a violation of its
    /// group by the scanning code; surfaces as an error only from the bundle helpers.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file could not be read for a reason that passes by itself (no
    /// descriptors left, an I/O error of a share): not a verdict on the
    /// export, which is looked at again later.
    #[error("cannot read {} just now: {source}; it is looked at again", path.display())]
    Busy {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A FIFO, socket or device where a file is expected (inside a bundle).
    #[error("{}: {what}", path.display())]
    Special { path: PathBuf, what: &'static str },
    /// A bundle zip cannot be written to the staging directory (disk full,
    /// permissions): the machine's problem, not the export's; retry later.
    #[error("cannot write staged zip {}: {source}", path.display())]
    Staging {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How to build groups.
#[derive(Debug, Clone, Copy)]
pub struct GroupOptions<'a> {
    /// The watch folder's settings: mode, roles, layout, languages, names.
    pub watch: &'a WatchConfig,
    /// Where bundle zips go. `None` = dry run: nothing is written, a bundle's
    /// size is computed by zipping into a counting sink, and its `source` is
    /// the bundle directory itself — such a group is for showing, not for
    /// uploading.
    pub staging_dir: Option<&'a Path>,
    /// The watch folder's role patterns, compiled once (the watcher keeps
    /// one per folder); `None`: compiled from `watch` for this call.
    pub matcher: Option<&'a RoleMatcher>,
}

impl GroupOptions<'_> {
    /// The matcher to use: the given one, or one compiled now into `own`.
    fn matcher<'m>(&'m self, own: &'m mut Option<RoleMatcher>) -> Result<&'m RoleMatcher, GroupError> {
        match self.matcher {
            Some(m) => Ok(m),
            None => Ok(own.insert(RoleMatcher::new(self.watch)?)),
        }
    }
}
/// The watch folder `path` belongs to, if it lies strictly inside `watch`.
fn inside_watch(path: &Path, watch: &WatchConfig) -> Option<PathBuf> {
    (path != watch.path && path.starts_with(&watch.path)).then(|| watch.path.clone())
}

/// An export folder's name as the group's `videoName` (and the journal's
/// name for it before the group exists): NFC ([`crate::model::names`]).
pub fn folder_name(folder: &Path) -> String {
    let name =
        folder.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| folder.display().to_string());
    crate::model::names::nfc(&name).into_owned()
}

/// Folders mode: one export folder → one group (valid or with violations).
/// Errors only for I/O on the folder itself and for the staging directory.
pub fn build_folder_group(folder: &Path, opts: &GroupOptions<'_>) -> Result<UploadGroup, GroupError> {
    let mut own = None;
    let matcher = opts.matcher(&mut own)?;
    let items = walk(matcher, folder, true, opts)?;
    let (sidecar, sidecar_problems) = layout::read_sidecar(folder);
    let sidecar_line = std::fs::symlink_metadata(folder.join(SIDECAR_NAME))
        .ok()
        .filter(std::fs::Metadata::is_file)
        .map(|m| (SIDECAR_NAME.to_string(), m.len(), bundle::mtime_ns(&m)));
    let frame = Frame {
        root: folder,
        key: folder.to_owned(),
        name: folder_name(folder),
        sidecar,
        sidecar_problems,
        sidecar_line,
        watch_path: inside_watch(folder, opts.watch),
    };
    assemble(items, frame, opts)
}

/// Everything under `root` as the walk finds it (`recurse`: into ordinary
/// subfolders, as in an export folder; a flat drop folder is not).
fn walk(matcher: &RoleMatcher, root: &Path, recurse: bool, opts: &GroupOptions<'_>) -> Result<Vec<Item>, GroupError> {
    let scanner = Scanner {
        matcher,
        follow_symlinks: opts.watch.follow_symlinks,
        watch_root: std::fs::canonicalize(&opts.watch.path).ok(),
    };
    let mut items = Vec::new();
    scanner
        .visit(root, "", recurse, 0, &mut items)
        .map_err(|source| GroupError::Folder { path: root.to_owned(), source })?;
    Ok(items)
}

/// Flat mode: a drop folder → one group per stem (`A_L.mov`, `A_R.mov`,
/// `A.aime`, `A.en.srt` → `A`), sorted by stem. A stem with nothing but files
/// still being written is left out (it is not an export yet). Subfolders
/// other than `.fcpxmld` bundles are not looked into.
pub fn build_flat_groups(drop: &Path, opts: &GroupOptions<'_>) -> Result<Vec<UploadGroup>, GroupError> {
    flat(drop, None, opts)
}

/// Flat mode, one stem: the group `<drop>/<stem>` alone (`None` when nothing
/// but files still being written, or nothing at all, has that stem). Only
/// this group's bundles are zipped into staging; the watcher calls this
/// when one stem has settled.
pub fn build_flat_group(drop: &Path, stem: &str, opts: &GroupOptions<'_>) -> Result<Option<UploadGroup>, GroupError> {
    Ok(flat(drop, Some(stem), opts)?.pop())
}

fn flat(drop: &Path, only: Option<&str>, opts: &GroupOptions<'_>) -> Result<Vec<UploadGroup>, GroupError> {
    let mut own = None;
    let matcher = opts.matcher(&mut own)?;
    let items = walk(matcher, drop, false, opts)?;
    let mut by_stem: BTreeMap<String, Vec<Item>> = BTreeMap::new();
    for item in items {
        let stem = match &item {
            Item::Found(f) => matcher
                .flat_stem(&f.rel_path, f.bundle.is_some())
                .unwrap_or_else(|| strip_extension(&f.rel_path).to_string()),
            Item::Problem { violation, .. } => {
                let rel = violation.file.as_deref().unwrap_or("");
                matcher.flat_stem(rel, false).unwrap_or_else(|| strip_extension(rel).to_string())
            }
        };
        if only.is_none_or(|s| crate::model::names::nfc(s) == stem) {
            by_stem.entry(stem).or_default().push(item);
        }
    }
    let mut groups = Vec::with_capacity(by_stem.len());
    for (stem, items) in by_stem {
        if items.iter().all(|i| matches!(i, Item::Problem { temporary: true, .. })) {
            tracing::debug!(stem, "only files still being written; not a group yet");
            continue;
        }
        let frame = Frame {
            root: drop,
            key: drop.join(&stem),
            name: stem,
            sidecar: Sidecar::default(),
            sidecar_problems: Vec::new(),
            sidecar_line: None,
            watch_path: (drop.starts_with(&opts.watch.path)).then(|| opts.watch.path.clone()),
        };
        groups.push(assemble(items, frame, opts)?);
    }
    Ok(groups)
}

/// A group standing for an export that could not be read at all, so that a
/// plan or a scan shows it (rejected, with the OS error) instead of failing whole.
fn unreadable_group(folder: &Path, watch: &WatchConfig, err: &GroupError) -> UploadGroup {
    let mut group = UploadGroup {
        name: folder_name(folder),
        key: folder.to_owned(),
        root: folder.to_owned(),
        watch_path: inside_watch(folder, watch),
        layout: watch.default_layout,
        perspective: Some(watch.perspective.unwrap_or(crate::model::Perspective::Regular)),
        description: watch.description.clone(),
        folder_name: watch.folder_name.clone(),
        priority: watch.priority,
        files: Vec::new(),
        fingerprint: fingerprint(&mut []),
        violations: vec![Violation { rule: "unreadable-file", file: None, message: err.to_string() }],
        media_check: watch.media_check,
        unfinished: Vec::new(),
        warnings: Vec::new(),
    };
    rules::validate(&mut group);
    group
}

/// The exports under a watch folder as groups, for `plan` and the watcher:
/// folders mode, one group per direct subfolder (hidden and ignored folders
/// skipped); flat mode, one group per stem. Sorted by key.
pub fn plan_watch(watch: &WatchConfig, staging_dir: Option<&Path>) -> Result<Vec<UploadGroup>, GroupError> {
    let matcher = RoleMatcher::new(watch)?;
    let opts = GroupOptions { watch, staging_dir, matcher: Some(&matcher) };
    if watch.mode == WatchMode::Flat {
        return build_flat_groups(&watch.path, &opts);
    }
    let dirs = export_folders(&matcher, &watch.path, watch.follow_symlinks)?;
    plan_folders(&dirs, &opts)
}

/// Folders mode: the direct subfolders of `dir` that are exports (hidden,
/// ignored and temporary folders left out), sorted.
pub fn export_folders(matcher: &RoleMatcher, dir: &Path, follow_symlinks: bool) -> Result<Vec<PathBuf>, GroupError> {
    let folder_err = |source| GroupError::Folder { path: dir.to_owned(), source };
    let mut dirs: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(folder_err)? {
        let entry = entry.map_err(folder_err)?;
        let Ok(ft) = entry.file_type() else { continue };
        let is_dir = ft.is_dir() || (ft.is_symlink() && follow_symlinks && entry.path().is_dir());
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_dir && matcher.classify_dir(&name) == DirClass::Descend {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// Does `dir` itself (not its subfolders) hold a video file? `plan PATH`
/// then takes PATH as one export rather than as a folder of exports.
pub fn holds_videos(matcher: &RoleMatcher, dir: &Path) -> Result<bool, GroupError> {
    let folder_err = |source| GroupError::Folder { path: dir.to_owned(), source };
    for entry in std::fs::read_dir(dir).map_err(folder_err)? {
        let entry = entry.map_err(folder_err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let video = matches!(
            matcher.classify(&name),
            Class::Role(FileRole::Video | FileRole::VideoLeft | FileRole::VideoRight)
        );
        if video && !entry.path().is_dir() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Groups for the given export folders (folders mode). A folder that vanished
/// meanwhile is skipped; one that cannot be read becomes a rejected group.
pub fn plan_folders(folders: &[PathBuf], opts: &GroupOptions<'_>) -> Result<Vec<UploadGroup>, GroupError> {
    let mut own = None;
    let matcher = opts.matcher(&mut own)?;
    let opts = GroupOptions { matcher: Some(matcher), ..*opts };
    let mut groups = Vec::with_capacity(folders.len());
    for dir in folders {
        match build_folder_group(dir, &opts) {
            Ok(g) => groups.push(g),
            Err(GroupError::Folder { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e @ GroupError::Folder { .. }) => groups.push(unreadable_group(dir, opts.watch, &e)),
            Err(e) => return Err(e),
        }
    }
    Ok(groups)
}

/// Delete the group's staged zips (when the group ends: completed, rejected,
/// canceled). Missing files are fine; other failures are logged, not fatal.
pub fn remove_staged(group: &UploadGroup) {
    for f in group.files.iter().filter(|f| f.staged) {
        match std::fs::remove_file(&f.source) {
            Ok(()) => tracing::debug!(path = %f.source.display(), "staged zip removed"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %f.source.display(), error = %e, "cannot remove staged zip"),
        }
    }
}
