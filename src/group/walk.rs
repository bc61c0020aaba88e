//! Walking an export or drop folder: every entry becomes a found file (or
//! `.fcpxmld` bundle) with its role, or a problem with it (unmatched,
//! temporary, unreadable, a special file, a symbolic link not followed).
//! Nothing is opened here but directory listings and metadata.

use std::path::{Path, PathBuf};

use crate::model::FileRole;

use super::Violation;
use super::build::GroupError;
use super::bundle::{self, BundleEntry};
use super::roles::{Class, DirClass, RoleMatcher};

/// A file (or bundle) that has a role, found while scanning.
#[derive(Debug, Clone)]
pub(super) struct Found {
    pub(super) rel_path: String,
    pub(super) path: PathBuf,
    pub(super) role: FileRole,
    pub(super) size: u64,
    pub(super) mtime_ns: i64,
    /// Device and inode of the file (`None` for a bundle).
    pub(super) dev_ino: Option<(u64, u64)>,
    /// `Some` for a `.fcpxmld` bundle directory: its entries, to zip.
    pub(super) bundle: Option<Vec<BundleEntry>>,
}

/// One thing seen in a folder.
#[derive(Debug, Clone)]
pub(super) enum Item {
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
pub(super) struct Scanner<'a> {
    pub(super) matcher: &'a RoleMatcher,
    pub(super) follow_symlinks: bool,
    /// The watch folder, canonical: followed links must resolve inside it.
    pub(super) watch_root: Option<PathBuf>,
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
    pub(super) fn visit(
        &self,
        dir: &Path,
        prefix: &str,
        recurse: bool,
        depth: usize,
        out: &mut Vec<Item>,
    ) -> std::io::Result<()> {
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
            // What the export *names* is NFC (APFS and Finder hand out NFD
            // as often); `path`, which is opened, stays the OS's bytes.
            let name = &*crate::model::names::nfc(name);
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
                    DirClass::Bundle if !bundle::document_present(&path) => out.push(problem(
                        "temporary-file-present",
                        &rel,
                        format!(
                            "has no {} yet: the bundle is still being written; the export is not finished until it is there",
                            bundle::BUNDLE_DOCUMENT
                        ),
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
pub(crate) fn dev_ino(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
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
