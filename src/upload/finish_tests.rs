//! Tests of `finish`.

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
        after_failures: 0,
        after_error: None,
        after_next_ms: None,
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
                    dev: crate::group::dev_ino(&meta).map(|(d, _)| d),
                    ino: crate::group::dev_ino(&meta).map(|(_, i)| i),
                    staged: false,
                    upload_id: None,
                    part_size: None,
                    total_parts: None,
                    strategy: None,
                    state: FileState::Completed,
                    parts: Vec::new(),
                    media: None,
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
    assert_eq!(out.outcome, AfterOutcome::Moved { to: dest.join("shot") });
    assert!(out.kept.is_empty(), "{:?}", out.kept);
    assert!(!root.exists() && dest.join("shot/audio/a.m4a").exists());
    // done again after a crash: nothing left to move, same answer
    assert_eq!(after_upload(&config(&watch, "move", Some(&dest)), &g).unwrap().outcome, out.outcome);
    // a second export of the same name does not overwrite the first
    let root = export(d.path());
    let g = record(&root, &root, &["v.mov", "audio/a.m4a"]);
    let out = after_upload(&config(&watch, "move", Some(&dest)), &g).unwrap();
    assert_eq!(out.outcome, AfterOutcome::Moved { to: dest.join("shot (group 7)") });
    assert!(dest.join("shot (group 7)/audio/a.m4a").exists() && dest.join("shot/v.mov").exists());
    let root = export(d.path());
    let g = record(&root, &root, &["v.mov", "audio/a.m4a"]);
    assert_eq!(after_upload(&config(&watch, "delete", None), &g).unwrap().outcome, AfterOutcome::Deleted);
    assert!(!root.exists());
    assert!(watch.is_dir(), "the watch folder stays");
    assert_eq!(after_upload(&config(&watch, "delete", None), &g).unwrap().outcome, AfterOutcome::Deleted);
}

#[test]
fn a_file_added_after_grouping_is_not_deleted_and_the_folder_is_kept_with_the_reason() {
    let d = tempfile::tempdir().unwrap();
    let root = export(d.path());
    let g = record(&root, &root, &["v.mov", "audio/a.m4a"]);
    std::fs::write(root.join("v.en.srt"), b"1\n00:00:00,000 --> 00:00:01,000\nhi\n").unwrap();
    let out = after_upload(&config(&d.path().join("watch"), "delete", None), &g).unwrap();
    assert_eq!(out.outcome, AfterOutcome::Deleted);
    assert!(!root.join("v.mov").exists() && !root.join("audio").exists(), "uploaded files and empty folders go");
    assert!(root.join("v.en.srt").exists(), "the added subtitle stays");
    assert_eq!(out.kept.len(), 1, "{:?}", out.kept);
    assert!(out.kept[0].contains("kept") && out.kept[0].contains("v.en.srt"), "{:?}", out.kept);
}

#[cfg(unix)]
#[test]
fn a_file_changed_or_swapped_for_a_link_after_grouping_stays_and_is_named() {
    let d = tempfile::tempdir().unwrap();
    let root = export(d.path());
    std::fs::write(root.join("b.mov"), b"bbbb").unwrap();
    let g = record(&root, &root, &["v.mov", "audio/a.m4a", "b.mov"]);
    // v.mov: same size, new bytes and a new inode; b.mov: now a link to a file outside.
    let outside = d.path().join("outside.mov");
    std::fs::write(&outside, b"bbbb").unwrap();
    std::fs::remove_file(root.join("b.mov")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("b.mov")).unwrap();
    let tmp = root.join("v.new");
    std::fs::write(&tmp, vec![8u8; 300_000]).unwrap();
    std::fs::rename(&tmp, root.join("v.mov")).unwrap();
    let out = after_upload(&config(&d.path().join("watch"), "delete", None), &g).unwrap();
    let all = out.kept.join("\n");
    assert!(all.contains("b.mov kept: it is a symbolic link"), "{all}");
    assert!(all.contains("v.mov kept:"), "{all}");
    assert!(root.join("v.mov").exists() && std::fs::symlink_metadata(root.join("b.mov")).is_ok());
    assert!(outside.exists(), "a link's target is never touched");
    assert!(!root.join("audio/a.m4a").exists(), "the unchanged file is deleted");
}

#[test]
fn uploading_a_watch_folder_itself_removes_only_the_uploaded_files() {
    let d = tempfile::tempdir().unwrap();
    let drop = d.path().join("watch");
    std::fs::create_dir_all(&drop).unwrap();
    std::fs::write(drop.join("A.mov"), b"a").unwrap();
    std::fs::write(drop.join(".keep"), b"").unwrap();
    std::fs::write(drop.join("B.mov"), b"b").unwrap();
    // `upload WATCHFOLDER`: the key and the root are the watch folder itself.
    let mut g = record(&drop, &drop, &["A.mov"]);
    g.watch_path = None;
    let out = after_upload(&config(&drop, "delete", None), &g).unwrap();
    assert_eq!(out.outcome, AfterOutcome::Deleted);
    assert!(drop.is_dir() && drop.join(".keep").exists() && drop.join("B.mov").exists());
    assert!(!drop.join("A.mov").exists());
    std::fs::write(drop.join("A.mov"), b"a").unwrap();
    let g = record(&drop, &drop, &["A.mov", "B.mov", ".keep"]);
    let dest = d.path().join("done");
    after_upload(&config(&drop, "move", Some(&dest)), &g).unwrap();
    assert!(drop.is_dir(), "even with every file moved out, the watch folder stays");
    assert!(dest.join("A.mov").exists() && dest.join(".keep").exists());
}

#[test]
fn a_failing_after_upload_step_waits_longer_each_time_up_to_an_hour() {
    use super::super::housekeeping::{AFTER_UPLOAD_ATTEMPTS, after_upload_delay};
    let delays: Vec<u64> = (1..=8).map(|n| after_upload_delay(n).as_secs()).collect();
    assert_eq!(delays, vec![60, 120, 240, 480, 960, 1920, 3600, 3600]);
    assert!((2..=10).contains(&AFTER_UPLOAD_ATTEMPTS), "a cap on attempts");
}

#[test]
fn mtimes_centuries_away_saturate_instead_of_wrapping() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("f");
    let f = std::fs::File::create(&p).unwrap();
    let far = std::time::UNIX_EPOCH + std::time::Duration::from_secs(400 * 365 * 24 * 3600);
    if f.set_modified(far).is_ok() && std::fs::metadata(&p).unwrap().modified().unwrap() == far {
        assert_eq!(mtime_ns(&std::fs::metadata(&p).unwrap()), i64::MAX);
    }
    // Windows' clock starts in 1601: 400 years before 1970 is no SystemTime there.
    let past = std::time::UNIX_EPOCH.checked_sub(std::time::Duration::from_secs(400 * 365 * 24 * 3600));
    if let Some(past) = past
        && f.set_modified(past).is_ok()
        && std::fs::metadata(&p).unwrap().modified().unwrap() == past
    {
        assert_eq!(mtime_ns(&std::fs::metadata(&p).unwrap()), i64::MIN);
    }
    let now = std::time::SystemTime::now();
    f.set_modified(now).unwrap();
    assert!(mtime_ns(&std::fs::metadata(&p).unwrap()) > 1_700_000_000_000_000_000);
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
    assert_eq!(out.outcome, AfterOutcome::Moved { to: dest.join("shot") });
    assert!(!root.exists(), "the source is deleted after the verified copy");
    assert_eq!(std::fs::read(dest.join("shot/v.mov")).unwrap(), vec![7u8; 300_000]);
    assert_eq!(std::fs::read(dest.join("shot/audio/a.m4a")).unwrap(), b"audio");
    let names: Vec<_> = std::fs::read_dir(dest.join("shot")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
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
