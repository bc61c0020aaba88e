//! What happens on disk around an upload: checking that a source is still
//! the file that was grouped, the after-upload action (keep, delete, move),
//! receipts, and removing staged files.
//!
//! Every step here is idempotent, because after a crash the engine runs the
//! end-of-group housekeeping again for any ended group not marked finished:
//! a move whose source is gone and whose destination exists is done; a
//! delete of something already gone is done; a receipt is rewritten whole
//! (temp name, `sync_all`, rename).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{AfterUpload, Config, WatchConfig};
use crate::journal::{FileRecord, GroupRecord, Store, format_ms, now_ms};

pub use crate::model::mtime_ns;

/// Is this file still the one that was grouped (same size and mtime; same
/// device and inode when they were recorded)?
/// `Err` says what changed, in words fit for `status`.
pub fn check_source(file: &FileRecord) -> Result<(), String> {
    match std::fs::symlink_metadata(&file.source) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("{} vanished during the upload", file.rel_path))
        }
        Err(e) => Err(format!("{} cannot be read any more: {e}", file.rel_path)),
        Ok(m) if m.file_type().is_symlink() => Err(format!(
            "{} was replaced by a symbolic link after it was grouped; nothing is read through it",
            file.rel_path
        )),
        Ok(m) if !m.is_file() => Err(format!("{} is no longer a regular file", file.rel_path)),
        Ok(m) if m.len() != file.size => {
            Err(format!("{} changed during the upload (size {} → {})", file.rel_path, file.size, m.len()))
        }
        Ok(m) if mtime_ns(&m) != file.mtime_ns => {
            Err(format!("{} changed during the upload (modified again)", file.rel_path))
        }
        Ok(m) => same_identity(&m, file).map_err(|why| format!("{}: {why}", file.rel_path)),
    }
}

/// Every file of the group unchanged? (Used before re-queuing an expired or
/// canceled group as a new one.)
pub fn check_sources(group: &GroupRecord) -> Result<(), String> {
    group.files.iter().try_for_each(check_source)
}

/// The watch folder a group belongs to: the one it was found in, else the
/// one its export lies under (for `upload FOLDER` inside a watch folder).
pub fn watch_for<'a>(cfg: &'a Config, group: &GroupRecord) -> Option<&'a WatchConfig> {
    if let Some(wp) = &group.watch_path
        && let Some(w) = cfg.watch.iter().find(|w| &w.path == wp)
    {
        return Some(w);
    }
    cfg.watch.iter().find(|w| group.root.starts_with(&w.path))
}

/// Remove the files the agent made for this group (zipped bundles), except
/// those another live group still uses (a staged zip is named after the
/// export's fingerprint, so a rejected group and its fixed successor share it).
pub fn remove_staged(journal: &dyn Store, group: &GroupRecord) {
    for f in group.files.iter().filter(|f| f.staged) {
        match journal.staged_in_use(&f.source, group.id) {
            Ok(false) => {}
            Ok(true) => continue,
            Err(e) => {
                tracing::warn!(file = %f.source.display(), error = %e, "staged file kept: cannot tell whether it is in use");
                continue;
            }
        }
        match std::fs::remove_file(&f.source) {
            Ok(()) => tracing::debug!(file = %f.source.display(), "staged file removed"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(file = %f.source.display(), error = %e, "cannot remove staged file"),
        }
    }
}

/// What the after-upload step did, for the receipt and the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "action")]
pub enum AfterOutcome {
    Kept,
    Deleted,
    Moved { to: PathBuf },
}

/// [`after_upload`]'s answer: what was done, and what was left in place and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfterReport {
    pub outcome: AfterOutcome,
    /// One line per file or folder left where it was, naming it and saying why
    /// (changed or added since grouping, a symbolic link now, not empty).
    pub kept: Vec<String>,
}

impl AfterReport {
    fn kept() -> AfterReport {
        AfterReport { outcome: AfterOutcome::Kept, kept: Vec::new() }
    }
}

/// How the export's items are acted on.
enum Act<'a> {
    Delete,
    Move { plain: PathBuf, alt: PathBuf, dest_dir: &'a Path },
}

/// `after_upload` for a completed group: acts on exactly the files of the
/// group (for a zipped `.fcpxmld` bundle: the files the bundle directory
/// holds), each re-checked just before (not a symbolic link; the same size,
/// mtime and, when recorded, device and inode as when it was grouped). A file
/// that fails the check stays where it is and is named in
/// `AfterReport::kept`. Folders are then removed bottom-up, each only if it
/// is empty; the export folder (folders mode) last.
///
/// A watch folder itself is never removed or moved: `upload WATCHFOLDER`
/// uploads the folder as one group and then deletes or moves only the files
/// that were uploaded, leaving the watch folder and everything else in it.
///
/// A move into `move_to` keeps the export's relative layout
/// (`move_to/<export>/<rel_path>` in folders mode, `move_to/<rel_path>` in
/// flat mode); a name already taken there gets ` (group N)` appended to the
/// export folder (folders mode) or the file (flat mode).
pub fn after_upload(cfg: &Config, group: &GroupRecord) -> std::io::Result<AfterReport> {
    let Some(watch) = watch_for(cfg, group) else { return Ok(AfterReport::kept()) };
    let watch_root = cfg.watch.iter().any(|w| same_dir(&w.path, &group.root));
    let folder_mode = group.key == group.root && !watch_root;
    let act = match (watch.after_upload, &watch.move_to) {
        (AfterUpload::Keep, _) | (AfterUpload::Move, None) => return Ok(AfterReport::kept()),
        (AfterUpload::Delete, _) => Act::Delete,
        (AfterUpload::Move, Some(dest_dir)) => {
            if folder_mode {
                let name = group.root.file_name().map(|n| n.to_owned()).unwrap_or_else(|| group.name.clone().into());
                let plain = dest_dir.join(&name);
                let mut alt = plain.as_os_str().to_owned();
                alt.push(format!(" (group {})", group.id));
                Act::Move { plain, alt: PathBuf::from(alt), dest_dir }
            } else {
                Act::Move { plain: dest_dir.clone(), alt: dest_dir.clone(), dest_dir }
            }
        }
    };
    let mut kept: Vec<String> = Vec::new();
    // Folders (relative to the root) that held acted-on files: removed if empty afterwards.
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    let mut moved_to: Option<PathBuf> = None;
    for f in &group.files {
        let items = if f.staged {
            match recheck_bundle(&group.root, f) {
                Ok(items) => items,
                Err(why) => {
                    kept.push(why);
                    continue;
                }
            }
        } else {
            match recheck_file(&group.root.join(&f.rel_path), f) {
                Ok(_) => vec![Item { rel: f.rel_path.clone(), is_dir: false }],
                Err(why) => {
                    kept.push(why);
                    continue;
                }
            }
        };
        for item in items {
            add_parents(&item.rel, &mut dirs);
            if item.is_dir {
                dirs.insert(item.rel);
                continue;
            }
            let src = group.root.join(&item.rel);
            match &act {
                Act::Delete => match std::fs::remove_file(&src) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(with_path(e, &src)),
                },
                Act::Move { plain, alt, dest_dir } => {
                    let alt_rel =
                        if folder_mode { alt.join(&item.rel) } else { suffixed(&dest_dir.join(&item.rel), group.id) };
                    let plain_rel = plain.join(&item.rel);
                    if std::fs::symlink_metadata(&src).is_err() {
                        // Gone: moved by an earlier run of this step (or removed by someone).
                        if alt_rel.exists() {
                            moved_to = Some(if folder_mode { alt.clone() } else { dest_dir.to_path_buf() });
                        } else if plain_rel.exists() {
                            moved_to.get_or_insert_with(|| plain.clone());
                        }
                        continue;
                    }
                    let (to, base) = if !plain_rel.exists() {
                        (plain_rel, plain)
                    } else if !alt_rel.exists() {
                        (alt_rel, if folder_mode { alt } else { plain })
                    } else {
                        kept.push(format!(
                            "{} kept: {} and {} are both taken",
                            item.rel,
                            plain_rel.display(),
                            alt_rel.display()
                        ));
                        continue;
                    };
                    move_file(&src, &to)?;
                    if moved_to.as_deref() != Some(alt.as_path()) {
                        moved_to = Some(base.clone());
                    }
                }
            }
        }
    }
    // Deepest folders first; a folder that still holds anything stays.
    let mut ordered: Vec<&String> = dirs.iter().collect();
    ordered.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
    for d in ordered {
        remove_empty_dir(&group.root.join(d), d, &mut kept)?;
    }
    if folder_mode {
        let shown = group.root.display().to_string();
        remove_empty_dir(&group.root, &shown, &mut kept)?;
    }
    let outcome = match act {
        Act::Delete => AfterOutcome::Deleted,
        Act::Move { plain, .. } => AfterOutcome::Moved { to: moved_to.unwrap_or(plain) },
    };
    Ok(AfterReport { outcome, kept })
}

/// One thing to act on, relative to the group's root.
struct Item {
    rel: String,
    is_dir: bool,
}

fn same_dir(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn add_parents(rel: &str, dirs: &mut BTreeSet<String>) {
    let mut cur = rel;
    while let Some((parent, _)) = cur.rsplit_once('/') {
        dirs.insert(parent.to_string());
        cur = parent;
    }
}

fn suffixed(p: &Path, id: i64) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(format!(" (group {id})"));
    PathBuf::from(s)
}

fn with_path(e: std::io::Error, p: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", p.display()))
}

/// Remove `dir` if it is empty; otherwise say in `kept` what it still holds.
fn remove_empty_dir(dir: &Path, shown: &str, kept: &mut Vec<String>) -> std::io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(with_path(e, dir)),
        Ok(m) if !m.is_dir() => return Ok(()),
        Ok(_) => {}
    }
    let mut left: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
        Err(e) => return Err(with_path(e, dir)),
    };
    if left.is_empty() {
        return match std::fs::remove_dir(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(with_path(e, dir)),
        };
    }
    left.sort();
    let more = left.len().saturating_sub(5);
    left.truncate(5);
    let tail = if more > 0 { format!(" and {more} more") } else { String::new() };
    kept.push(format!("folder {shown} kept: it holds what was not uploaded ({}{tail})", left.join(", ")));
    Ok(())
}

/// Is `path` still the file that was grouped and uploaded? `Err` names it and says why not.
fn recheck_file(path: &Path, f: &FileRecord) -> Result<(), String> {
    let m = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(());
        }
        Err(e) => return Err(format!("{} kept: it cannot be checked: {e}", f.rel_path)),
    };
    if m.file_type().is_symlink() {
        return Err(format!("{} kept: it is a symbolic link, not the file that was uploaded", f.rel_path));
    }
    if !m.is_file() {
        return Err(format!("{} kept: it is not a regular file", f.rel_path));
    }
    if m.len() != f.size {
        return Err(format!("{} kept: it changed after it was grouped (size {} → {})", f.rel_path, f.size, m.len()));
    }
    if mtime_ns(&m) != f.mtime_ns {
        return Err(format!("{} kept: it was modified after it was grouped", f.rel_path));
    }
    if let Err(why) = same_identity(&m, f) {
        return Err(format!("{} kept: {why}", f.rel_path));
    }
    Ok(())
}

/// Device and inode, when both were recorded, match `m`.
#[cfg(unix)]
fn same_identity(m: &std::fs::Metadata, f: &FileRecord) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    match (f.dev, f.ino) {
        (Some(dev), Some(ino)) if (dev, ino) != (m.dev(), m.ino()) => {
            Err("it was replaced by another file after it was grouped".into())
        }
        _ => Ok(()),
    }
}

#[cfg(not(unix))]
fn same_identity(_m: &std::fs::Metadata, _f: &FileRecord) -> Result<(), String> {
    Ok(())
}

/// The files and folders of a zipped bundle directory, if it still holds
/// what was zipped (the newest mtime inside it unchanged, no link or special
/// file added).
fn recheck_bundle(root: &Path, f: &FileRecord) -> Result<Vec<Item>, String> {
    let dir = root.join(&f.rel_path);
    match std::fs::symlink_metadata(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{} kept: it cannot be checked: {e}", f.rel_path)),
        Ok(m) if !m.is_dir() => return Err(format!("{} kept: it is no longer a bundle folder", f.rel_path)),
        Ok(_) => {}
    }
    let top = f.rel_path.rsplit('/').next().unwrap_or(&f.rel_path);
    let entries = crate::group::bundle::list_bundle(&dir, top)
        .map_err(|e| format!("{} kept: it cannot be checked: {e}", f.rel_path))?;
    if crate::group::bundle::newest_mtime(&entries) != f.mtime_ns {
        return Err(format!("{} kept: the bundle changed after it was zipped", f.rel_path));
    }
    let parent = f.rel_path.rsplit_once('/').map_or(String::new(), |(p, _)| format!("{p}/"));
    Ok(entries
        .into_iter()
        .map(|e| Item { rel: format!("{parent}{}", e.zip_name.trim_end_matches('/')), is_dir: e.is_dir })
        .collect())
}

/// Move one regular file to `to` (a path not taken). A rename on the same
/// filesystem; across filesystems a copy into a private temporary file
/// beside `to`, `sync_all`, a byte-for-byte comparison with the source, a
/// no-clobber rename into place, then the source is removed.
fn move_file(src: &Path, to: &Path) -> std::io::Result<()> {
    let parent = to.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| with_path(e, parent))?;
    match std::fs::rename(src, to) {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() != Some(libc_exdev()) => return Err(with_path(e, src)),
        Err(_) => {}
    }
    let mut input = open_nofollow(src).map_err(|e| with_path(e, src))?;
    let src_meta = input.metadata().map_err(|e| with_path(e, src))?;
    let mut tmp = tempfile::NamedTempFile::new_in(parent).map_err(|e| with_path(e, parent))?;
    std::io::copy(&mut input, tmp.as_file_mut()).map_err(|e| with_path(e, to))?;
    tmp.as_file().sync_all().map_err(|e| with_path(e, to))?;
    if let Ok(t) = src_meta.modified() {
        let _ = tmp.as_file().set_modified(t);
    }
    if !same_bytes(src, tmp.path())? {
        return Err(std::io::Error::other(format!("the copy of {} differs from the original", src.display())));
    }
    tmp.persist_noclobber(to).map_err(|e| with_path(e.error, to))?;
    if let Ok(d) = std::fs::File::open(parent) {
        let _ = d.sync_all();
    }
    std::fs::remove_file(src).map_err(|e| with_path(e, src))
}

/// Open a file for reading without following a symbolic link at its last component.
fn open_nofollow(p: &Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut o, libc::O_NOFOLLOW | libc::O_NONBLOCK);
    o.open(p)
}

#[cfg(unix)]
fn libc_exdev() -> i32 {
    libc::EXDEV
}

#[cfg(not(unix))]
fn libc_exdev() -> i32 {
    17 // ERROR_NOT_SAME_DEVICE
}

fn same_bytes(a: &Path, b: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let (mut fa, mut fb) = (open_nofollow(a)?, open_nofollow(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 256 * 1024], vec![0u8; 256 * 1024]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// The JSON receipt of a completed group.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Receipt<'a> {
    group_id: i64,
    name: &'a str,
    path: String,
    session_id: Option<&'a str>,
    library_id: Option<u64>,
    layout: Option<&'static str>,
    perspective: Option<&'static str>,
    fingerprint: Option<&'a str>,
    completed_at: String,
    after_upload: &'a AfterOutcome,
    files: Vec<ReceiptFile<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReceiptFile<'a> {
    rel_path: &'a str,
    file_name: &'a str,
    role: &'static str,
    language: Option<&'a str>,
    size: u64,
}

/// Write `<receipt_dir>/<id>-<name>.json` crash-safely; returns its path.
pub fn write_receipt(dir: &Path, group: &GroupRecord, after: &AfterOutcome) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let receipt = Receipt {
        group_id: group.id,
        name: &group.name,
        path: group.key.display().to_string(),
        session_id: group.session_id.as_deref(),
        library_id: group.library_id,
        layout: group.layout.map(|l| l.as_str()),
        perspective: group.perspective.map(|p| p.as_str()),
        fingerprint: group.fingerprint.as_deref(),
        completed_at: format_ms(now_ms()),
        after_upload: after,
        files: group
            .files
            .iter()
            .map(|f| ReceiptFile {
                rel_path: &f.rel_path,
                file_name: &f.file_name,
                role: f.role.as_str(),
                language: f.language.as_deref(),
                size: f.size,
            })
            .collect(),
    };
    let safe: String =
        group.name.chars().map(|c| if c.is_alphanumeric() || "-_.".contains(c) { c } else { '_' }).take(80).collect();
    let path = dir.join(format!("{}-{safe}.json", group.id));
    let json = serde_json::to_vec_pretty(&receipt).map_err(std::io::Error::other)?;
    // A private (0600), freshly created (O_EXCL) temporary file with a random name.
    let mut f = tempfile::NamedTempFile::new_in(dir)?;
    f.write_all(&json)?;
    f.write_all(b"\n")?;
    f.as_file().sync_all()?;
    f.persist(&path).map_err(|e| e.error)?;
    Ok(path)
}

/// The watch folder of group `g`, if it is missing now: its files cannot
/// be read, and were not changed either. Missing means the folder is gone
/// (unmounted, moved away, deleted), or a file of the group is gone and was
/// on another filesystem than the one now at the folder (a share unmounted
/// from its mount point leaves the empty directory beneath).
pub(crate) fn watch_folder_missing(g: &GroupRecord) -> Option<std::path::PathBuf> {
    let root = g.watch_path.as_ref()?;
    let meta = match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => m,
        _ => return Some(root.clone()),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let unmounted = g.files.iter().any(|f| {
            !f.staged && f.dev.is_some_and(|d| d != meta.dev()) && std::fs::symlink_metadata(&f.source).is_err()
        });
        if unmounted {
            return Some(root.clone());
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    None
}

#[cfg(test)]
#[path = "finish_tests.rs"]
mod tests;
