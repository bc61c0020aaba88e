//! An export's identity when its name has two Unicode spellings (NFC and
//! NFD), on real SQLite files: one group where the filesystem folds the
//! spellings (macOS), two where it does not (Linux, Windows). Both rules are
//! tested on every platform by setting the folding explicitly.

use std::path::{Path, PathBuf};

use super::*;
use crate::group::UploadGroup;
use crate::model::names::FOLDS_NORMALIZATION;

const CAFE_NFD: &str = "Cafe\u{301}";
const CAFE_NFC: &str = "Caf\u{e9}";

fn journal(dir: &Path, fold: bool) -> Journal {
    Journal::open(&dir.join("j.sqlite3")).expect("journal opens").folding_names(fold)
}

/// The export `folder` of watch folder `watch`, with a fingerprint of its own.
fn export(watch: &Path, folder: &str, fingerprint: &str) -> UploadGroup {
    UploadGroup { fingerprint: fingerprint.into(), ..UploadGroup::one_video_in(watch, folder, 1000) }
}

#[test]
fn the_platform_decides_whether_a_journal_folds_names() {
    let d = tempfile::tempdir().expect("tempdir");
    let j = Journal::open(&d.path().join("j.sqlite3")).expect("journal opens");
    assert_eq!(j.fold_names, FOLDS_NORMALIZATION);
    assert_eq!(FOLDS_NORMALIZATION, cfg!(target_os = "macos"));
}

#[test]
fn an_export_seen_as_nfd_then_as_nfc_is_one_group_where_names_fold() {
    let d = tempfile::tempdir().expect("tempdir");
    let watch = d.path().join("exports");
    let j = journal(d.path(), true);
    let nfd: PathBuf = watch.join(CAFE_NFD);
    let nfc: PathBuf = watch.join(CAFE_NFC);

    // The watcher sees it first as Finder named it (NFD)...
    let waiting = j.note_waiting(&nfd, CAFE_NFC, Some(&watch)).expect("waiting");
    // ...then the same folder by its NFC spelling (a path typed in a shell,
    // `upload FOLDER`): the same row, whichever way it is asked for.
    assert_eq!(j.note_waiting(&nfc, CAFE_NFC, Some(&watch)).expect("waiting"), waiting);
    for spelling in [&nfd, &nfc] {
        assert_eq!(j.find(&spelling.to_string_lossy()).expect("find"), Some(waiting), "{}", spelling.display());
    }
    j.set_waiting_reason(&nfc, Some("held")).expect("reason");
    assert_eq!(j.group(waiting).expect("group").error.as_deref(), Some("held"));

    // Settled and grouped under the other spelling: the waiting row is the group.
    let g = export(&watch, CAFE_NFC, "fp-cafe");
    assert_eq!(j.enqueue(&g).expect("enqueue"), Enqueued::Queued(waiting));
    assert_eq!(j.list().expect("list").len(), 1);
    assert!(j.unqueue(&nfd).expect("unqueue"), "the NFD spelling reaches the queued group");
    let again = export(&watch, CAFE_NFD, "fp-cafe-2");
    assert_eq!(j.enqueue(&again).expect("enqueue"), Enqueued::Queued(waiting));
    let rows = j.list().expect("list");
    assert_eq!(rows.len(), 1, "{rows:?}");
    // `status` shows one spelling: NFC.
    assert_eq!(rows[0].path, nfc.display().to_string());
}

#[test]
fn two_folders_whose_names_differ_only_in_normalization_stay_two_groups_where_names_do_not_fold() {
    // On Linux these are two directories side by side; folding them into
    // one key would let one group's row stand for the other export and
    // lose it.
    let d = tempfile::tempdir().expect("tempdir");
    let watch = d.path().join("exports");
    let nfd = watch.join(CAFE_NFD);
    let nfc = watch.join(CAFE_NFC);
    std::fs::create_dir_all(&nfd).expect("mkdir");
    std::fs::create_dir_all(&nfc).expect("mkdir");
    if std::fs::read_dir(&watch).expect("ls").count() < 2 {
        return; // a normalization-insensitive filesystem made them one folder
    }
    let j = journal(d.path(), false);
    let a = j.note_waiting(&nfd, CAFE_NFC, Some(&watch)).expect("waiting");
    let b = j.note_waiting(&nfc, CAFE_NFC, Some(&watch)).expect("waiting");
    assert_ne!(a, b);
    assert_eq!(j.find(&nfd.to_string_lossy()).expect("find"), Some(a));
    assert_eq!(j.find(&nfc.to_string_lossy()).expect("find"), Some(b));
    assert_eq!(j.enqueue(&export(&watch, CAFE_NFD, "fp-nfd")).expect("enqueue"), Enqueued::Queued(a));
    assert_eq!(j.enqueue(&export(&watch, CAFE_NFC, "fp-nfc")).expect("enqueue"), Enqueued::Queued(b));
    let paths: Vec<String> = j.list().expect("list").into_iter().map(|r| r.path).collect();
    assert_eq!(paths, vec![nfd.display().to_string(), nfc.display().to_string()], "each keeps the OS's bytes");
}
