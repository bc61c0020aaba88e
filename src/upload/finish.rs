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

/// `after_upload` for a completed group. Folders mode (the key is the export
/// folder): the whole folder is deleted or moved into `move_to`. Flat mode
/// (the key is `<drop folder>/<stem>`): the group's own files are.
pub fn after_upload(cfg: &Config, group: &GroupRecord) -> std::io::Result<AfterOutcome> {
    let Some(watch) = watch_for(cfg, group) else { return Ok(AfterOutcome::Kept) };
    let folder_mode = group.key == group.root;
    match (watch.after_upload, &watch.move_to) {
        (AfterUpload::Keep, _) => Ok(AfterOutcome::Kept),
        (AfterUpload::Delete, _) => {
            if folder_mode {
                remove_path(&group.root)?;
            } else {
                for f in &group.files {
                    remove_path(&group.root.join(&f.rel_path))?;
                }
            }
            Ok(AfterOutcome::Deleted)
        }
        (AfterUpload::Move, None) => Ok(AfterOutcome::Kept),
        (AfterUpload::Move, Some(dest_dir)) => {
            std::fs::create_dir_all(dest_dir)?;
            if folder_mode {
                let name = group.root.file_name().map(|n| n.to_owned()).unwrap_or_else(|| group.name.clone().into());
                let to = move_into(&group.root, dest_dir, Path::new(&name), group.id)?;
                Ok(AfterOutcome::Moved { to })
            } else {
                for f in &group.files {
                    move_into(&group.root.join(&f.rel_path), dest_dir, Path::new(&f.rel_path), group.id)?;
                }
                Ok(AfterOutcome::Moved { to: dest_dir.clone() })
            }
        }
    }
}

fn remove_path(p: &Path) -> std::io::Result<()> {
    let r = match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) => Err(e),
    };
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Move `src` to `dest_dir/rel`, or, if something else is already there,
/// to `dest_dir/rel (group N)`. A rename when on the same filesystem; else a
/// copy, verified byte for byte, then the source removed. Already moved
/// (source gone, a destination present) counts as done.
fn move_into(src: &Path, dest_dir: &Path, rel: &Path, id: i64) -> std::io::Result<PathBuf> {
    let plain = dest_dir.join(rel);
    let mut alt = plain.as_os_str().to_owned();
    alt.push(format!(" (group {id})"));
    let alt = PathBuf::from(alt);
    if !src.exists() {
        if let Some(done) = [&plain, &alt].into_iter().find(|p| p.exists()) {
            return Ok(done.clone());
        }
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("{} is gone", src.display())));
    }
    let to = if plain.exists() { alt } else { plain };
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::rename(src, &to) {
        Ok(()) => return Ok(to),
        Err(e) if e.raw_os_error() != Some(libc_exdev()) => return Err(e),
        Err(_) => {}
    }
    // Another filesystem: copy into a temporary name, verify, then swap in.
    let mut tmp = to.as_os_str().to_owned();
    tmp.push(".spatialgen-moving");
    let tmp = PathBuf::from(tmp);
    remove_path(&tmp)?;
    copy_tree(src, &tmp)?;
    verify_tree(src, &tmp)?;
    std::fs::rename(&tmp, &to)?;
    remove_path(src)?;
    Ok(to)
}

#[cfg(unix)]
fn libc_exdev() -> i32 {
    libc::EXDEV
}

#[cfg(not(unix))]
fn libc_exdev() -> i32 {
    17 // ERROR_NOT_SAME_DEVICE
}

fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(src)?;
    if meta.is_dir() {
        std::fs::create_dir_all(dst)?;
        for entry in std::fs::read_dir(src)? {
            let entry = entry?;
            copy_tree(&entry.path(), &dst.join(entry.file_name()))?;
        }
    } else {
        std::fs::copy(src, dst)?;
        std::fs::File::open(dst)?.sync_all()?;
    }
    Ok(())
}

fn verify_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(src)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(src)? {
            let entry = entry?;
            verify_tree(&entry.path(), &dst.join(entry.file_name()))?;
        }
        return Ok(());
    }
    if same_bytes(src, dst)? {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("copy of {} differs from the original", src.display())))
    }
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
    let tmp = dir.join(format!(".{}-{safe}.json.tmp", group.id));
    let json = serde_json::to_vec_pretty(&receipt).map_err(std::io::Error::other)?;
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&json)?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
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
        assert_eq!(after_upload(&config(&watch, "keep", None), &g).unwrap(), AfterOutcome::Kept);
        assert!(root.exists());
        let dest = d.path().join("done");
        let out = after_upload(&config(&watch, "move", Some(&dest)), &g).unwrap();
        assert_eq!(out, AfterOutcome::Moved { to: dest.join("shot") });
        assert!(!root.exists() && dest.join("shot/audio/a.m4a").exists());
        // done again after a crash: nothing left to move, same answer
        assert_eq!(after_upload(&config(&watch, "move", Some(&dest)), &g).unwrap(), out);
        // a second export of the same name does not overwrite the first
        let root = export(d.path());
        let out = after_upload(&config(&watch, "move", Some(&dest)), &g).unwrap();
        assert_eq!(out, AfterOutcome::Moved { to: dest.join("shot (group 7)") });
        let root2 = export(d.path());
        assert_eq!(root, root2);
        assert_eq!(after_upload(&config(&watch, "delete", None), &g).unwrap(), AfterOutcome::Deleted);
        assert!(!root.exists());
        assert_eq!(after_upload(&config(&watch, "delete", None), &g).unwrap(), AfterOutcome::Deleted);
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
        let out = after_upload(&config(&drop, "move", Some(&dest)), &g).unwrap();
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
        let out = after_upload(&config(&d.path().join("watch"), "move", Some(&dest)), &g).unwrap();
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
        let p = write_receipt(&dir, &g, &AfterOutcome::Kept).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!((v["groupId"].as_i64(), v["libraryId"].as_u64()), (Some(7), Some(3)));
        assert_eq!(v["files"][0]["size"], 300_000);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary file left");
    }
}
