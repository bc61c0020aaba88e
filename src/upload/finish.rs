//! What happens on disk around an upload: checking that a source is still
//! the file that was grouped, the after-upload action (keep, delete, move),
//! receipts, and removing staged files.
//!
//! Every step here is idempotent, because after a crash the engine runs the
//! end-of-group housekeeping again for any ended group not marked finished:
//! a move whose source is gone and whose destination exists is done; a
//! delete of something already gone is done; a receipt is rewritten whole
//! (temp name, `sync_all`, rename).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::Serialize;

use crate::config::{AfterUpload, Config, WatchConfig};
use crate::journal::{FileRecord, GroupRecord, Journal, format_ms, now_ms};

/// mtime of `meta` in nanoseconds since the Unix epoch (negative before it),
/// the same measure the grouping records in `GroupFile::mtime_ns`.
pub fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    match meta.modified() {
        Ok(t) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i64,
            Err(e) => -(e.duration().as_nanos() as i64),
        },
        Err(_) => 0,
    }
}

/// Is this file still the one that was grouped (same size and mtime)?
/// `Err` says what changed, in words fit for `status`.
pub fn check_source(file: &FileRecord) -> Result<(), String> {
    match std::fs::metadata(&file.source) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("{} vanished during the upload", file.rel_path))
        }
        Err(e) => Err(format!("{} cannot be read any more: {e}", file.rel_path)),
        Ok(m) if m.len() != file.size => {
            Err(format!("{} changed during the upload (size {} → {})", file.rel_path, file.size, m.len()))
        }
        Ok(m) if mtime_ns(&m) != file.mtime_ns => {
            Err(format!("{} changed during the upload (modified again)", file.rel_path))
        }
        Ok(_) => Ok(()),
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
pub fn remove_staged(journal: &Journal, group: &GroupRecord) {
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

/// The after-upload step's result: what was done, and each thing left in
/// place with the reason (a file added or changed since the upload, the
/// folder that still holds it, a bundle uploaded as a zip).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfterReport {
    pub outcome: AfterOutcome,
    pub kept: Vec<String>,
}

impl AfterReport {
    fn nothing() -> AfterReport {
        AfterReport { outcome: AfterOutcome::Kept, kept: Vec::new() }
    }
}

/// Where an uploaded file stands just before the after-upload action.
enum Standing {
    /// Still exactly the file that was uploaded.
    Uploaded,
    /// Gone (done already, after a crash; or removed by someone else).
    Gone,
}

/// Is `f` still the uploaded file: a regular file, not a symbolic link,
/// with the size and mtime it was uploaded with? `Err` says what changed.
fn standing(f: &FileRecord) -> Result<Standing, String> {
    match std::fs::symlink_metadata(&f.source) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Standing::Gone),
        Err(e) => Err(format!("{} is kept: it cannot be looked at ({e})", f.rel_path)),
        Ok(m) if m.file_type().is_symlink() => {
            Err(format!("{} is kept: it is now a symbolic link, not the file that was uploaded", f.rel_path))
        }
        Ok(m) if !m.is_file() => Err(format!("{} is kept: it is no longer a regular file", f.rel_path)),
        Ok(m) if m.len() != f.size || mtime_ns(&m) != f.mtime_ns => {
            Err(format!("{} is kept: it changed after it was uploaded", f.rel_path))
        }
        Ok(_) => Ok(Standing::Uploaded),
    }
}

/// `after_upload` for a completed group: delete or move exactly the files
/// that were uploaded, each re-checked just before ([`standing`]); a file
/// added or changed since then stays where it is. Folders are removed only
/// when that leaves them empty, bottom-up, and never a watch folder itself
/// (so `upload` of a whole watch folder removes the uploaded files and
/// keeps the folder). A `.fcpxmld` bundle directory was uploaded as a zip
/// the agent made from it; the directory is kept. A move keeps the export's
/// layout under `move_to` (`<move_to>/<export>/…` in folders mode,
/// `<move_to>/<file>` in flat mode).
///
/// Idempotent, for the engine runs it again after a crash: a file already
/// deleted is done; a file already moved (gone here, present there) is done.
pub fn after_upload(cfg: &Config, group: &GroupRecord) -> std::io::Result<AfterReport> {
    let Some(watch) = watch_for(cfg, group) else { return Ok(AfterReport::nothing()) };
    let dest = match (watch.after_upload, &watch.move_to) {
        (AfterUpload::Keep, _) | (AfterUpload::Move, None) => return Ok(AfterReport::nothing()),
        (AfterUpload::Delete, _) => None,
        (AfterUpload::Move, Some(d)) => Some(d),
    };
    let mut kept = Vec::new();
    let mut act_on: Vec<&FileRecord> = Vec::new();
    for f in &group.files {
        if f.staged {
            kept.push(format!("{} is kept: it was uploaded as a zip the agent made of it", f.rel_path));
            continue;
        }
        match standing(f) {
            Ok(Standing::Uploaded) => act_on.push(f),
            Ok(Standing::Gone) if dest.is_some() => act_on.push(f),
            Ok(Standing::Gone) => {}
            Err(why) => kept.push(why),
        }
    }
    let outcome = match dest {
        None => {
            for f in &act_on {
                remove_file(&f.source)?;
            }
            AfterOutcome::Deleted
        }
        Some(dest_dir) => {
            let base = move_base(group, dest_dir, &act_on);
            for f in &act_on {
                let to = base.join(&f.rel_path);
                if !move_file(f, &to)? {
                    kept.push(format!("{} was gone before it could be moved", f.rel_path));
                }
            }
            AfterOutcome::Moved { to: base }
        }
    };
    let watch_roots: Vec<&Path> = cfg.watch.iter().map(|w| w.path.as_path()).collect();
    kept.extend(prune_empty_folders(group, &watch_roots));
    Ok(AfterReport { outcome, kept })
}

/// The folder a move goes to: `<move_to>/<export>` in folders mode (or
/// `<move_to>/<export> (group N)` when the plain name holds files of
/// another export), `<move_to>` in flat mode. Chosen the same way again
/// after a crash half way through: files already moved count as this group's.
fn move_base(group: &GroupRecord, dest_dir: &Path, files: &[&FileRecord]) -> PathBuf {
    if group.key != group.root {
        return dest_dir.to_path_buf();
    }
    let name = group.root.file_name().map(|n| n.to_owned()).unwrap_or_else(|| group.name.clone().into());
    let plain = dest_dir.join(&name);
    let foreign = files.iter().any(|f| match std::fs::symlink_metadata(plain.join(&f.rel_path)) {
        Ok(m) => !(m.is_file() && m.len() == f.size && mtime_ns(&m) == f.mtime_ns),
        Err(_) => false,
    });
    if !foreign {
        return plain;
    }
    let mut alt = plain.into_os_string();
    alt.push(format!(" (group {})", group.id));
    PathBuf::from(alt)
}

/// Move one uploaded file to `to`. `Ok(false)`: it is neither here nor
/// there. A rename on the same filesystem; across filesystems a copy under
/// a private temporary name, `sync_all`, the mtime carried over, a byte
/// comparison, the rename into place, and only then the original removed.
fn move_file(f: &FileRecord, to: &Path) -> std::io::Result<bool> {
    let here = std::fs::symlink_metadata(&f.source).is_ok();
    if !here {
        return Ok(std::fs::metadata(to).is_ok_and(|m| m.len() == f.size));
    }
    let parent = to.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    if std::fs::symlink_metadata(to).is_ok() {
        // Already there (a crash between the copy and the removal): the same
        // bytes are checked before the original goes.
        if !same_bytes(&f.source, to)? {
            return Err(std::io::Error::other(format!("{} exists and differs from {}", to.display(), f.rel_path)));
        }
        remove_file(&f.source)?;
        return Ok(true);
    }
    match std::fs::rename(&f.source, to) {
        Ok(()) => return Ok(true),
        Err(e) if e.raw_os_error() != Some(libc_exdev()) => return Err(e),
        Err(_) => {}
    }
    let mut tmp = tempfile::Builder::new().prefix(".spatialgen-moving-").tempfile_in(parent)?;
    {
        let mut src = std::fs::File::open(&f.source)?;
        std::io::copy(&mut src, tmp.as_file_mut())?;
        let modified = std::fs::metadata(&f.source)?.modified()?;
        tmp.as_file().set_modified(modified)?;
        tmp.as_file().sync_all()?;
    }
    if !same_bytes(&f.source, tmp.path())? {
        return Err(std::io::Error::other(format!("the copy of {} differs from the original", f.rel_path)));
    }
    tmp.persist_noclobber(to).map_err(|e| e.error)?;
    remove_file(&f.source)?;
    Ok(true)
}

fn remove_file(p: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Remove the folders of a folders-mode export that the action left empty,
/// deepest first, the export folder last; never a watch folder (nor one
/// that holds a watch folder), never anything outside the export. Returns
/// why the export folder was kept, if it was.
fn prune_empty_folders(group: &GroupRecord, watch_roots: &[&Path]) -> Option<String> {
    let root = &group.root;
    let protected = |d: &Path| watch_roots.iter().any(|w| w.starts_with(d));
    let mut dirs: Vec<PathBuf> = group
        .files
        .iter()
        .filter(|f| !f.staged)
        .flat_map(|f| root.join(&f.rel_path).ancestors().skip(1).map(Path::to_path_buf).collect::<Vec<_>>())
        .filter(|d| d.starts_with(root) && d != root)
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    dirs.dedup();
    let export_folder = group.key == group.root && !protected(root);
    if export_folder {
        dirs.push(root.clone());
    }
    for d in dirs.iter().filter(|d| !protected(d)) {
        // Fails, and so keeps the folder, unless it is empty.
        let _ = std::fs::remove_dir(d);
    }
    if !export_folder || !root.exists() {
        return None;
    }
    let mut left: Vec<String> = std::fs::read_dir(root)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    left.sort();
    let shown = left.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    let more = if left.len() > 5 { format!(" and {} more", left.len() - 5) } else { String::new() };
    Some(format!("the export folder {} is kept: it still holds what was not uploaded ({shown}{more})", root.display()))
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
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
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
    /// What the after-upload step left in place, and why.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    kept: &'a [String],
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
pub fn write_receipt(dir: &Path, group: &GroupRecord, after: &AfterReport) -> std::io::Result<PathBuf> {
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
        after_upload: &after.outcome,
        kept: &after.kept,
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
    // A private temporary file (O_EXCL, random name: nothing planted under
    // a guessable name is followed), written whole, then renamed over.
    let mut tmp = tempfile::Builder::new().prefix(".receipt-").suffix(".tmp").tempfile_in(dir)?;
    tmp.write_all(&json)?;
    tmp.write_all(b"\n")?;
    tmp.as_file().sync_all()?;
    tmp.persist(&path).map_err(|e| e.error)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{FileState, GroupState};
    use crate::model::FileRole;

    fn record(root: &Path, key: &Path, files: &[&str]) -> GroupRecord {
        GroupRecord {
            id: 7,
            key: key.to_owned(),
            name: "shot".into(),
            root: root.to_owned(),
            watch_path: root.parent().map(Path::to_path_buf),
            state: GroupState::Completed,
            layout: None,
            perspective: None,
            description: None,
            folder_name: None,
            priority: 0,
            fingerprint: None,
            session_id: Some("s".into()),
            expires_at: None,
            session_at_ms: None,
            library_id: Some(3),
            error: None,
            retry_at_ms: None,
            retry_of: None,
            user_canceled: false,
            finished: false,
            created_at_ms: 0,
            files: files
                .iter()
                .enumerate()
                .map(|(i, rel)| {
                    let source = root.join(rel);
                    let meta = std::fs::metadata(&source).unwrap();
                    FileRecord {
                        id: i as i64,
                        position: i as u32,
                        source,
                        rel_path: rel.to_string(),
                        file_name: rel.to_string(),
                        role: FileRole::Video,
                        language: None,
                        size: meta.len(),
                        mtime_ns: mtime_ns(&meta),
                        staged: false,
                        upload_id: None,
                        part_size: None,
                        total_parts: None,
                        strategy: None,
                        state: FileState::Completed,
                        parts: Vec::new(),
                    }
                })
                .collect(),
        }
    }

    fn config(watch: &Path, after: &str, move_to: Option<&Path>) -> Config {
        let mut cfg = Config::minimal("http://127.0.0.1:1", Path::new("/tmp/j.sqlite3"));
        let mut w = WatchConfig::new(watch);
        w.after_upload = match after {
            "delete" => AfterUpload::Delete,
            "move" => AfterUpload::Move,
            _ => AfterUpload::Keep,
        };
        w.move_to = move_to.map(Path::to_path_buf);
        cfg.watch.push(w);
        cfg
    }

    fn export(dir: &Path) -> PathBuf {
        let root = dir.join("watch/shot");
        std::fs::create_dir_all(root.join("audio")).unwrap();
        std::fs::write(root.join("v.mov"), vec![7u8; 300_000]).unwrap();
        std::fs::write(root.join("audio/a.m4a"), b"audio").unwrap();
        root
    }

    #[test]
    fn source_checks_name_what_changed() {
        let d = tempfile::tempdir().unwrap();
        let root = export(d.path());
        let g = record(&root, &root, &["v.mov"]);
        assert_eq!(check_sources(&g), Ok(()));
        std::fs::write(root.join("v.mov"), b"short").unwrap();
        assert!(check_source(&g.files[0]).unwrap_err().contains("size 300000 → 5"));
        std::fs::remove_file(root.join("v.mov")).unwrap();
        assert!(check_source(&g.files[0]).unwrap_err().contains("vanished"));
    }

    #[test]
    fn keep_delete_and_move_in_folders_mode() {
        let d = tempfile::tempdir().unwrap();
        let root = export(d.path());
        let g = record(&root, &root, &["v.mov", "audio/a.m4a"]);
        let watch = d.path().join("watch");
        assert_eq!(after_upload(&config(&watch, "keep", None), &g).unwrap().outcome, AfterOutcome::Kept);
        assert!(root.exists());
        let dest = d.path().join("done");
        let out = after_upload(&config(&watch, "move", Some(&dest)), &g).unwrap();
        assert_eq!(out, AfterReport { outcome: AfterOutcome::Moved { to: dest.join("shot") }, kept: vec![] });
        assert!(!root.exists() && dest.join("shot/audio/a.m4a").exists());
        // done again after a crash: nothing left to move, same answer
        assert_eq!(after_upload(&config(&watch, "move", Some(&dest)), &g).unwrap(), out);
        // a second export of the same name does not overwrite the first
        let root = export(d.path());
        let g2 = record(&root, &root, &["v.mov", "audio/a.m4a"]);
        std::fs::File::options()
            .write(true)
            .open(root.join("v.mov"))
            .unwrap()
            .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(60))
            .unwrap();
        let g2 = GroupRecord { files: record(&root, &root, &["v.mov", "audio/a.m4a"]).files, ..g2 };
        let out = after_upload(&config(&watch, "move", Some(&dest)), &g2).unwrap();
        assert_eq!(out.outcome, AfterOutcome::Moved { to: dest.join("shot (group 7)") });
        assert_eq!(std::fs::read(dest.join("shot/v.mov")).unwrap(), vec![7u8; 300_000], "the first stays");
        let root = export(d.path());
        let g3 = record(&root, &root, &["v.mov", "audio/a.m4a"]);
        assert_eq!(after_upload(&config(&watch, "delete", None), &g3).unwrap().outcome, AfterOutcome::Deleted);
        assert!(!root.exists(), "emptied, so removed");
        assert_eq!(after_upload(&config(&watch, "delete", None), &g3).unwrap().outcome, AfterOutcome::Deleted);
    }

    #[test]
    fn a_file_added_during_the_upload_is_not_deleted_after_it() {
        let d = tempfile::tempdir().unwrap();
        let root = export(d.path());
        let g = record(&root, &root, &["v.mov", "audio/a.m4a"]);
        // Added while the video uploaded: in no library entry.
        std::fs::write(root.join("v.en.srt"), b"1\n00:00:00,000 --> 00:00:01,000\nhi\n").unwrap();
        let report = after_upload(&config(&d.path().join("watch"), "delete", None), &g).unwrap();
        assert_eq!(report.outcome, AfterOutcome::Deleted);
        assert!(
            !root.join("v.mov").exists() && !root.join("audio").exists(),
            "the uploaded files and their emptied folder go"
        );
        assert!(root.join("v.en.srt").exists(), "the added file stays");
        assert_eq!(report.kept.len(), 1, "{:?}", report.kept);
        assert!(report.kept[0].contains("is kept") && report.kept[0].contains("v.en.srt"), "{:?}", report.kept);
    }

    #[cfg(unix)]
    #[test]
    fn a_file_changed_or_swapped_for_a_symlink_after_the_upload_stays() {
        let d = tempfile::tempdir().unwrap();
        let root = export(d.path());
        std::fs::write(root.join("outside.mov"), b"not in the export").unwrap();
        let g = record(&root, &root, &["v.mov", "audio/a.m4a"]);
        std::fs::write(root.join("v.mov"), vec![8u8; 300_001]).unwrap();
        std::fs::remove_file(root.join("audio/a.m4a")).unwrap();
        std::os::unix::fs::symlink(root.join("outside.mov"), root.join("audio/a.m4a")).unwrap();
        let dest = d.path().join("done");
        let report = after_upload(&config(&d.path().join("watch"), "move", Some(&dest)), &g).unwrap();
        let kept = report.kept.join("\n");
        assert!(kept.contains("v.mov is kept: it changed after it was uploaded"), "{kept}");
        assert!(kept.contains("audio/a.m4a is kept: it is now a symbolic link"), "{kept}");
        assert!(root.join("v.mov").exists() && root.join("outside.mov").exists());
        assert!(std::fs::symlink_metadata(root.join("audio/a.m4a")).unwrap().file_type().is_symlink());
        assert!(!dest.join("shot/outside.mov").exists(), "nothing that was not uploaded moves");
    }

    #[test]
    fn uploading_a_flat_watch_folder_never_removes_the_folder_itself() {
        let d = tempfile::tempdir().unwrap();
        let drop = d.path().join("watch");
        std::fs::create_dir_all(&drop).unwrap();
        std::fs::write(drop.join("A.mov"), b"a").unwrap();
        std::fs::write(drop.join(".keep"), b"").unwrap();
        // `upload /drop`: the whole watch folder is the export (key == root).
        let g = record(&drop, &drop, &["A.mov"]);
        let report = after_upload(&config(&drop, "delete", None), &g).unwrap();
        assert_eq!(report.outcome, AfterOutcome::Deleted);
        assert!(!drop.join("A.mov").exists(), "the uploaded file goes");
        assert!(drop.is_dir() && drop.join(".keep").exists(), "the watch folder and what it holds stay");
        // Even when it is left empty.
        std::fs::remove_file(drop.join(".keep")).unwrap();
        std::fs::write(drop.join("B.mov"), b"b").unwrap();
        let g = record(&drop, &drop, &["B.mov"]);
        after_upload(&config(&drop, "delete", None), &g).unwrap();
        assert!(drop.is_dir(), "an empty watch folder is still not removed");
    }

    #[test]
    fn flat_mode_moves_only_the_groups_files() {
        let d = tempfile::tempdir().unwrap();
        let drop = d.path().join("watch");
        std::fs::create_dir_all(&drop).unwrap();
        std::fs::write(drop.join("A.mov"), b"a").unwrap();
        std::fs::write(drop.join("B.mov"), b"b").unwrap();
        let g = record(&drop, &drop.join("A"), &["A.mov"]);
        let dest = d.path().join("done");
        let out = after_upload(&config(&drop, "move", Some(&dest)), &g).unwrap().outcome;
        assert_eq!(out, AfterOutcome::Moved { to: dest.clone() });
        assert!(dest.join("A.mov").exists() && !drop.join("A.mov").exists());
        assert!(drop.join("B.mov").exists(), "another group's file stays");
    }

    /// `/dev/shm` is usually another filesystem than the temp dir: a rename
    /// fails there with EXDEV and the copy, verify, delete path runs.
    #[cfg(target_os = "linux")]
    #[test]
    fn move_across_filesystems_copies_verifies_and_deletes() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let root = export(d.path());
        let other = match tempfile::tempdir_in("/dev/shm") {
            Ok(o) if std::fs::metadata(o.path()).unwrap().dev() != std::fs::metadata(d.path()).unwrap().dev() => o,
            // No second filesystem here: the same code runs as a plain rename.
            _ => tempfile::tempdir().unwrap(),
        };
        let g = record(&root, &root, &["v.mov", "audio/a.m4a"]);
        let dest = other.path().join("done");
        let out = after_upload(&config(&d.path().join("watch"), "move", Some(&dest)), &g).unwrap().outcome;
        assert_eq!(out, AfterOutcome::Moved { to: dest.join("shot") });
        assert!(!root.exists(), "the source is deleted after the verified copy");
        assert_eq!(std::fs::read(dest.join("shot/v.mov")).unwrap(), vec![7u8; 300_000]);
        assert_eq!(std::fs::read(dest.join("shot/audio/a.m4a")).unwrap(), b"audio");
        assert!(!dest.join("shot.spatialgen-moving").exists());
    }

    #[test]
    fn receipts_are_written_whole() {
        let d = tempfile::tempdir().unwrap();
        let root = export(d.path());
        let g = record(&root, &root, &["v.mov"]);
        let dir = d.path().join("receipts");
        let p = write_receipt(&dir, &g, &AfterReport::nothing()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!((v["groupId"].as_i64(), v["libraryId"].as_u64()), (Some(7), Some(3)));
        assert_eq!(v["files"][0]["size"], 300_000);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary file left");
    }
}
