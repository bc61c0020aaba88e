//! From a folder on disk to upload groups: scanning, flat-mode stems,
//! fingerprints, staging of bundle zips.
//!
//! Invariants:
//! - A group is always returned for an export that can be listed, valid or
//!   not: what is wrong with it is in `violations`, every problem at once.
//!   `Err` is kept for the folder itself being unreadable and for the staging
//!   directory refusing a write — conditions of the machine, not the export.
//! - The fingerprint covers what is uploaded and what decides how: every
//!   uploaded file (for a bundle, every file inside it) and the sidecar, as
//!   sorted `(relative path, size, mtime_ns)`. It never depends on the
//!   staging directory, on the time of the scan or on the zip bytes.
//! - A staged zip's name is derived from the group's key and fingerprint, so
//!   a re-zip of the same export (after a crash) lands on the same name with
//!   the same bytes, while a changed export never overwrites a zip an
//!   earlier upload may still be reading.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::{WatchConfig, WatchMode};
use crate::model::FileRole;

use super::bundle::{self, BundleEntry};
use super::language::language_for;
use super::layout::{self, Sidecar};
use super::roles::{Class, DirClass, RoleMatcher, SIDECAR_NAME, strip_extension};
use super::rules;
use super::{GroupFile, UploadGroup, Violation};

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
}

/// A file (or bundle) that has a role, found while scanning.
#[derive(Debug, Clone)]
struct Found {
    rel_path: String,
    path: PathBuf,
    role: FileRole,
    size: u64,
    mtime_ns: i64,
    /// Device and inode of the file (`None` for a bundle).
    dev_ino: Option<(u64, u64)>,
    /// `Some` for a `.fcpxmld` bundle directory: its entries, to zip.
    bundle: Option<Vec<BundleEntry>>,
}

/// One thing seen in a folder.
#[derive(Debug, Clone)]
enum Item {
    Found(Found),
    /// Something wrong with this entry (unmatched, temporary, unreadable, ...).
    Problem {
        temporary: bool,
        violation: Violation,
    },
}

fn problem(rule: &'static str, rel_path: &str, message: String) -> Item {
    Item::Problem {
        temporary: rule == "temporary-file-present",
        violation: Violation { rule, file: Some(rel_path.to_string()), message },
    }
}

/// Walks folders and turns entries into [`Item`]s.
struct Scanner<'a> {
    matcher: &'a RoleMatcher,
    follow_symlinks: bool,
    /// The watch folder, canonical: followed links must resolve inside it.
    watch_root: Option<PathBuf>,
}

#[cfg(unix)]
const ELOOP: i32 = libc::ELOOP;
#[cfg(not(unix))]
const ELOOP: i32 = -1;

/// Folders nested deeper than this inside one export are reported, not walked
/// (a guard against symlink loops when `follow_symlinks` is on).
const MAX_DEPTH: usize = 32;

impl Scanner<'_> {
    /// Visit `dir` (at `prefix` inside the export, `""` for the top). With
    /// `recurse` off (flat mode) ordinary subfolders are skipped.
    fn visit(&self, dir: &Path, prefix: &str, recurse: bool, depth: usize, out: &mut Vec<Item>) -> std::io::Result<()> {
        let mut entries: Vec<std::fs::DirEntry> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let os_name = entry.file_name();
            let mut path = entry.path();
            let Some(name) = os_name.to_str() else {
                let shown = os_name.to_string_lossy();
                out.push(problem(
                    "unreadable-file",
                    &format!("{prefix}{shown}"),
                    "the name is not valid UTF-8 and cannot be sent as a file name; rename it".into(),
                ));
                continue;
            };
            let rel = format!("{prefix}{name}");
            let lmeta = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    out.push(problem("unreadable-file", &rel, format!("cannot read it: {e}")));
                    continue;
                }
            };
            if super::open::is_special(&lmeta) {
                out.push(problem(
                    "special-file",
                    &rel,
                    format!(
                        "{}; a FIFO, socket or device cannot be part of an export: remove it",
                        super::open::not_regular(&lmeta)
                    ),
                ));
                continue;
            }
            let meta = if lmeta.file_type().is_symlink() {
                if self.matcher.is_ignored(&rel) {
                    continue;
                }
                if !self.follow_symlinks {
                    out.push(problem(
                        "symlink-not-followed",
                        &rel,
                        "is a symbolic link, which is not followed; set follow_symlinks = true for this watch folder or copy the file in".into(),
                    ));
                    continue;
                }
                let target = match std::fs::canonicalize(&path) {
                    Ok(t) => t,
                    Err(e) => {
                        let why = if e.raw_os_error() == Some(ELOOP) {
                            "is a symbolic link loop".to_string()
                        } else {
                            format!("symbolic link cannot be followed: {e}")
                        };
                        out.push(problem("symlink-invalid", &rel, why));
                        continue;
                    }
                };
                if let Some(root) = &self.watch_root
                    && !target.starts_with(root)
                {
                    out.push(problem(
                        "symlink-invalid",
                        &rel,
                        format!(
                            "is a symbolic link to {}, outside the watch folder; only links that stay inside it are followed",
                            target.display()
                        ),
                    ));
                    continue;
                }
                if std::fs::canonicalize(dir).is_ok_and(|here| here.starts_with(&target)) {
                    out.push(problem(
                        "symlink-invalid",
                        &rel,
                        "is a symbolic link to a folder that holds it (a loop)".into(),
                    ));
                    continue;
                }
                match std::fs::symlink_metadata(&target) {
                    Ok(m) if m.is_file() => {
                        // Files are read at their real place, without following anything.
                        path = target;
                        m
                    }
                    Ok(m) if super::open::is_special(&m) => {
                        out.push(problem("special-file", &rel, super::open::not_regular(&m).to_string()));
                        continue;
                    }
                    Ok(m) => m,
                    Err(e) => {
                        out.push(problem("unreadable-file", &rel, format!("symbolic link cannot be followed: {e}")));
                        continue;
                    }
                }
            } else {
                lmeta
            };

            if meta.is_dir() {
                match self.matcher.classify_dir(&rel) {
                    DirClass::Ignored => {}
                    DirClass::Temporary => out.push(problem(
                        "temporary-file-present",
                        &rel,
                        "looks like something still being written; the export is not finished".into(),
                    )),
                    DirClass::Bundle => match bundle::list_bundle(&path, name) {
                        Ok(entries) => out.push(Item::Found(Found {
                            rel_path: rel,
                            path,
                            role: FileRole::Fcpxmld,
                            size: 0,
                            mtime_ns: bundle::newest_mtime(&entries),
                            dev_ino: None,
                            bundle: Some(entries),
                        })),
                        Err(GroupError::Special { path: special, what }) => {
                            let inner = special
                                .strip_prefix(dir)
                                .map_or(rel.clone(), |p| format!("{prefix}{}", p.to_string_lossy()));
                            out.push(problem(
                                "special-file",
                                &inner,
                                format!("{what}; a FIFO, socket or device cannot be part of a bundle: remove it"),
                            ))
                        }
                        Err(e) => out.push(problem("unreadable-file", &rel, format!("cannot read the bundle: {e}"))),
                    },
                    DirClass::Descend if !recurse => {
                        tracing::debug!(folder = %path.display(), "subfolder skipped in flat mode");
                    }
                    DirClass::Descend if depth >= MAX_DEPTH => out.push(problem(
                        "unreadable-file",
                        &rel,
                        format!("folders nest deeper than {MAX_DEPTH} levels (a symbolic link loop?)"),
                    )),
                    DirClass::Descend => {
                        if let Err(e) = self.visit(&path, &format!("{rel}/"), recurse, depth + 1, out) {
                            out.push(problem("unreadable-file", &rel, format!("cannot read the folder: {e}")));
                        }
                    }
                }
                continue;
            }

            match self.matcher.classify(&rel) {
                Class::Ignored => {}
                Class::Temporary => out.push(problem(
                    "temporary-file-present",
                    &rel,
                    "looks like a file still being written; the export is not finished until it is gone".into(),
                )),
                Class::Unmatched => out.push(problem(
                    "unmatched-file",
                    &rel,
                    "no role pattern matches this file; remove it, or add a pattern for it to [watch.roles] (ignore = [...] to leave it out)".into(),
                )),
                Class::Ambiguous(roles) => {
                    let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
                    out.push(problem(
                        "ambiguous-role",
                        &rel,
                        format!(
                            "matches the patterns of several roles ({}); rename it or narrow the patterns in [watch.roles]",
                            names.join(", ")
                        ),
                    ))
                }
                Class::Role(_) if !meta.is_file() => out.push(problem(
                    "unreadable-file",
                    &rel,
                    "is not a regular file (a device, socket or pipe)".into(),
                )),
                Class::Role(role) => out.push(Item::Found(Found {
                    rel_path: rel,
                    path,
                    role,
                    size: meta.len(),
                    mtime_ns: bundle::mtime_ns(&meta),
                    dev_ino: dev_ino(&meta),
                    bundle: None,
                })),
            }
        }
        Ok(())
    }
}

/// Device and inode of a file, where the platform has them.
fn dev_ino(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// Sorted `(relative path, size, mtime_ns)` lines hashed with SHA-256.
pub fn fingerprint(items: &mut [(String, u64, i64)]) -> String {
    items.sort();
    let mut h = Sha256::new();
    for (path, size, mtime) in items.iter() {
        h.update(path.as_bytes());
        h.update([0]);
        h.update(size.to_string().as_bytes());
        h.update([0]);
        h.update(mtime.to_string().as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// The file name a staged zip gets: `<16 hex of hash(key, fingerprint, bundle)>-<bundle>.zip`.
pub fn staged_name(key: &Path, fingerprint: &str, bundle_rel: &str, bundle_name: &str) -> String {
    let mut h = Sha256::new();
    h.update(key.to_string_lossy().as_bytes());
    h.update([0]);
    h.update(fingerprint.as_bytes());
    h.update([0]);
    h.update(bundle_rel.as_bytes());
    let id = hex::encode(h.finalize());
    format!("{}-{bundle_name}.zip", &id[..16])
}

/// Everything [`assemble`] needs besides the items.
struct Frame<'a> {
    root: &'a Path,
    key: PathBuf,
    name: String,
    sidecar: Sidecar,
    /// The sidecar's own problems and its fingerprint line.
    sidecar_problems: Vec<Violation>,
    sidecar_line: Option<(String, u64, i64)>,
    watch_path: Option<PathBuf>,
}

fn file_name_of(rel_path: &str) -> &str {
    rel_path.rsplit('/').next().unwrap_or(rel_path)
}

/// Turn scanned items into a group: languages, layout, fingerprint, staged
/// zips, and every violation.
fn assemble(items: Vec<Item>, frame: Frame<'_>, opts: &GroupOptions<'_>) -> Result<UploadGroup, GroupError> {
    let watch = opts.watch;
    let mut violations: Vec<Violation> = Vec::new();
    let mut found: Vec<Found> = Vec::new();
    for item in items {
        match item {
            Item::Found(f) => found.push(f),
            Item::Problem { violation, .. } => violations.push(violation),
        }
    }
    violations.extend(frame.sidecar_problems);

    let mut lines: Vec<(String, u64, i64)> = Vec::new();
    for f in &found {
        match &f.bundle {
            None => lines.push((f.rel_path.clone(), f.size, f.mtime_ns)),
            Some(entries) => {
                let parent = f.rel_path.rsplit_once('/').map_or(String::new(), |(p, _)| format!("{p}/"));
                for e in entries.iter().filter(|e| !e.is_dir) {
                    lines.push((format!("{parent}{}", e.zip_name), e.size, e.mtime_ns));
                }
            }
        }
    }
    lines.extend(frame.sidecar_line);
    let fingerprint = fingerprint(&mut lines);

    let mut files: Vec<GroupFile> = Vec::with_capacity(found.len());
    for f in found {
        let bundle_name = file_name_of(&f.rel_path).to_string();
        let ids = f.dev_ino;
        let (source, size, staged, file_name) = match &f.bundle {
            None => (f.path.clone(), f.size, false, bundle_name),
            Some(entries) => {
                let file_name = format!("{bundle_name}.zip");
                let sized = match opts.staging_dir {
                    Some(dir) => {
                        let dest = dir.join(staged_name(&frame.key, &fingerprint, &f.rel_path, &bundle_name));
                        bundle::write_zip(entries, &dest).map(|size| (dest, size, true))
                    }
                    None => bundle::zip_size(entries).map(|size| (f.path.clone(), size, false)),
                };
                match sized {
                    // A staged zip's inode is not recorded: a re-zip of the
                    // same bundle (after a crash, a rescan) replaces it with
                    // identical bytes under a new inode.
                    Ok((source, size, staged)) => (source, size, staged, file_name),
                    Err(GroupError::Read { path, source }) => {
                        violations.push(Violation {
                            rule: "unreadable-file",
                            file: Some(f.rel_path.clone()),
                            message: format!("cannot read {} while zipping the bundle: {source}", path.display()),
                        });
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let language = language_for(f.role, &file_name, watch);
        files.push(GroupFile {
            source,
            rel_path: f.rel_path,
            file_name,
            role: f.role,
            language,
            size,
            mtime_ns: f.mtime_ns,
            dev: ids.map(|(d, _)| d),
            ino: ids.map(|(_, i)| i),
            staged,
        });
    }
    files.sort_by(|a, b| (a.role, &a.rel_path).cmp(&(b.role, &b.rel_path)));

    // The server's answer is matched to our files by fileName + fileRole.
    let mut seen: BTreeMap<(&str, FileRole), &str> = BTreeMap::new();
    for f in &files {
        if let Some(first) = seen.insert((f.file_name.as_str(), f.role), f.rel_path.as_str()) {
            violations.push(Violation {
                rule: "duplicate-file-name",
                file: Some(f.rel_path.clone()),
                message: format!(
                    "has the same file name and role ({}) as {first}; SpatialGen tells files apart by name, so rename one",
                    f.role
                ),
            });
        }
    }

    let (layout, perspective) = layout::resolve(watch, &frame.sidecar, &files);
    let mut group = UploadGroup {
        name: frame.sidecar.video_name.clone().unwrap_or(frame.name),
        key: frame.key,
        root: frame.root.to_owned(),
        watch_path: frame.watch_path,
        layout,
        perspective: Some(perspective),
        description: frame.sidecar.description.clone().or_else(|| watch.description.clone()),
        folder_name: frame.sidecar.folder_name.clone().or_else(|| watch.folder_name.clone()),
        priority: watch.priority,
        files,
        fingerprint,
        violations,
    };
    rules::validate(&mut group);
    Ok(group)
}

/// The watch folder `path` belongs to, if it lies strictly inside `watch`.
fn inside_watch(path: &Path, watch: &WatchConfig) -> Option<PathBuf> {
    (path != watch.path && path.starts_with(&watch.path)).then(|| watch.path.clone())
}

fn folder_name(folder: &Path) -> String {
    folder.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| folder.display().to_string())
}

/// Folders mode: one export folder → one group (valid or with violations).
/// Errors only for I/O on the folder itself and for the staging directory.
pub fn build_folder_group(folder: &Path, opts: &GroupOptions<'_>) -> Result<UploadGroup, GroupError> {
    let matcher = RoleMatcher::new(opts.watch)?;
    build_folder_group_with(&matcher, folder, opts)
}

/// [`build_folder_group`] with an already compiled matcher (one per watch folder).
pub fn build_folder_group_with(
    matcher: &RoleMatcher,
    folder: &Path,
    opts: &GroupOptions<'_>,
) -> Result<UploadGroup, GroupError> {
    let scanner = Scanner {
        matcher,
        follow_symlinks: opts.watch.follow_symlinks,
        watch_root: std::fs::canonicalize(&opts.watch.path).ok(),
    };
    let mut items = Vec::new();
    scanner
        .visit(folder, "", true, 0, &mut items)
        .map_err(|source| GroupError::Folder { path: folder.to_owned(), source })?;
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

/// Flat mode: a drop folder → one group per stem (`A_L.mov`, `A_R.mov`,
/// `A.aime`, `A.en.srt` → `A`), sorted by stem. A stem with nothing but files
/// still being written is left out (it is not an export yet). Subfolders
/// other than `.fcpxmld` bundles are not looked into.
pub fn build_flat_groups(drop: &Path, opts: &GroupOptions<'_>) -> Result<Vec<UploadGroup>, GroupError> {
    let matcher = RoleMatcher::new(opts.watch)?;
    build_flat_groups_with(&matcher, drop, opts)
}

/// [`build_flat_groups`] with an already compiled matcher.
pub fn build_flat_groups_with(
    matcher: &RoleMatcher,
    drop: &Path,
    opts: &GroupOptions<'_>,
) -> Result<Vec<UploadGroup>, GroupError> {
    flat(matcher, drop, None, opts)
}

/// Flat mode, one stem: the group `<drop>/<stem>` alone (`None` when nothing
/// but files still being written, or nothing at all, has that stem). Only
/// this group's bundles are zipped into staging; the watcher calls this
/// when one stem has settled.
pub fn build_flat_group_with(
    matcher: &RoleMatcher,
    drop: &Path,
    stem: &str,
    opts: &GroupOptions<'_>,
) -> Result<Option<UploadGroup>, GroupError> {
    Ok(flat(matcher, drop, Some(stem), opts)?.pop())
}

fn flat(
    matcher: &RoleMatcher,
    drop: &Path,
    only: Option<&str>,
    opts: &GroupOptions<'_>,
) -> Result<Vec<UploadGroup>, GroupError> {
    let scanner = Scanner {
        matcher,
        follow_symlinks: opts.watch.follow_symlinks,
        watch_root: std::fs::canonicalize(&opts.watch.path).ok(),
    };
    let mut items = Vec::new();
    scanner
        .visit(drop, "", false, 0, &mut items)
        .map_err(|source| GroupError::Folder { path: drop.to_owned(), source })?;
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
        if only.is_none_or(|s| s == stem) {
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
        perspective: Some(watch.perspective),
        description: watch.description.clone(),
        folder_name: watch.folder_name.clone(),
        priority: watch.priority,
        files: Vec::new(),
        fingerprint: fingerprint(&mut []),
        violations: vec![Violation { rule: "unreadable-file", file: None, message: err.to_string() }],
    };
    rules::validate(&mut group);
    group
}

/// The exports under a watch folder as groups, for `plan` and the watcher:
/// folders mode, one group per direct subfolder (hidden and ignored folders
/// skipped); flat mode, one group per stem. Sorted by key.
pub fn plan_watch(watch: &WatchConfig, staging_dir: Option<&Path>) -> Result<Vec<UploadGroup>, GroupError> {
    let opts = GroupOptions { watch, staging_dir };
    let matcher = RoleMatcher::new(watch)?;
    if watch.mode == WatchMode::Flat {
        return build_flat_groups_with(&matcher, &watch.path, &opts);
    }
    let dirs = export_folders(&matcher, &watch.path, watch.follow_symlinks)?;
    plan_folders(&matcher, &dirs, &opts)
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
pub fn plan_folders(
    matcher: &RoleMatcher,
    folders: &[PathBuf],
    opts: &GroupOptions<'_>,
) -> Result<Vec<UploadGroup>, GroupError> {
    let mut groups = Vec::with_capacity(folders.len());
    for dir in folders {
        match build_folder_group_with(matcher, dir, opts) {
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
