//! From walked items to an [`UploadGroup`]: the fingerprint, staged bundle
//! zips, languages, layout, and every violation.
//!
//! Invariants:
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

use crate::model::FileRole;

use super::build::{GroupError, GroupOptions};
use super::bundle;
use super::inspect;
use super::language::language_for;
use super::layout::{self, Sidecar};
use super::rules;
use super::walk::{Found, Item};
use super::{GroupFile, UploadGroup, Violation};

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
pub(super) struct Frame<'a> {
    pub(super) root: &'a Path,
    pub(super) key: PathBuf,
    pub(super) name: String,
    pub(super) sidecar: Sidecar,
    /// The sidecar's own problems and its fingerprint line.
    pub(super) sidecar_problems: Vec<Violation>,
    pub(super) sidecar_line: Option<(String, u64, i64)>,
    pub(super) watch_path: Option<PathBuf>,
}

fn file_name_of(rel_path: &str) -> &str {
    rel_path.rsplit('/').next().unwrap_or(rel_path)
}

/// Turn scanned items into a group: languages, layout, fingerprint, staged
/// zips, and every violation.
pub(super) fn assemble(items: Vec<Item>, frame: Frame<'_>, opts: &GroupOptions<'_>) -> Result<UploadGroup, GroupError> {
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
            media: None,
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

    // What the containers say decides the layout before their names do.
    let probed = inspect::probe_files(&mut files, watch.media_check)?;
    let (layout, perspective) = layout::resolve(watch, &frame.sidecar, &files);
    let mut group = UploadGroup {
        name: frame.sidecar.video_name.as_deref().map_or(frame.name, |n| crate::model::names::nfc(n).into_owned()),
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
        media_check: watch.media_check,
        unfinished: probed.unfinished,
        warnings: Vec::new(),
    };
    inspect::route(&mut group, probed.findings);
    rules::validate(&mut group);
    Ok(group)
}
