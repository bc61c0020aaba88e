//! Tests of `scan`.

use super::*;

fn rules(root: &Path, mode: WatchMode) -> WatchRules {
    let mut w = WatchConfig::new(root);
    w.mode = mode;
    WatchRules::new(0, &w).expect("default rules compile")
}

#[test]
fn routes_event_paths_to_export_keys() {
    let r = rules(Path::new("/drop"), WatchMode::Folders);
    assert_eq!(r.route(Path::new("/drop/shot1/a/b.mov")), Some(PathBuf::from("/drop/shot1")));
    assert_eq!(r.route(Path::new("/drop/shot1")), Some(PathBuf::from("/drop/shot1")));
    assert_eq!(r.route(Path::new("/drop/.hidden/x.mov")), None);
    assert_eq!(r.route(Path::new("/drop/shot1.part")), None, "a folder under a temporary name is not an export");
    assert_eq!(r.route(Path::new("/drop")), None);
    assert_eq!(r.route(Path::new("/elsewhere/x")), None);
    let f = rules(Path::new("/drop"), WatchMode::Flat);
    assert_eq!(f.route(Path::new("/drop/clip_L.mov")), Some(PathBuf::from("/drop/clip")));
    assert_eq!(f.route(Path::new("/drop/clip.en.srt")), Some(PathBuf::from("/drop/clip")));
    assert_eq!(f.route(Path::new("/drop/sub/clip.mov")), None);
}

#[test]
fn temporary_patterns_match_names_anywhere_and_can_be_replaced() {
    let r = rules(Path::new("/drop"), WatchMode::Folders);
    for t in ["a.mov.part", "sub/a.TMP", "~lock", "sub/~x", "x.mov~", ".~lock.a#", "b.crdownload"] {
        assert!(r.is_temporary(t), "{t}");
    }
    for n in ["a.mov", "sub/a.srt", "part.mov"] {
        assert!(!r.is_temporary(n), "{n}");
    }
    let mut w = WatchConfig::new("/drop");
    w.roles.temporary = Some(vec!["*.writing".into()]);
    let r = WatchRules::new(0, &w).expect("compiles");
    assert!(r.is_temporary("a.writing") && !r.is_temporary("a.part"));
}

#[test]
fn look_sees_sizes_temporaries_marker_and_skips_symlinks_unless_followed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exp = dir.path().join("shot");
    fs::create_dir_all(exp.join("audio")).expect("mkdir");
    fs::write(exp.join("a.mov"), b"1234").expect("write");
    fs::write(exp.join("audio/a.m4a"), b"12").expect("write");
    let mut r = rules(dir.path(), WatchMode::Folders);
    let l1 = look_export(&r, &exp).expect("look").expect("exists");
    assert_eq!(l1.look.files, 2);
    assert!(l1.look.temporary.is_none());
    fs::write(exp.join("b.mov.part"), b"x").expect("write");
    let l2 = look_export(&r, &exp).expect("look").expect("exists");
    assert_eq!(l2.look.temporary.as_deref(), Some("b.mov.part"));
    assert_ne!(l1.look.digest, l2.look.digest);
    fs::remove_file(exp.join("b.mov.part")).expect("rm");
    assert_eq!(look_export(&r, &exp).expect("look").expect("exists").look.digest, l1.look.digest);

    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("/nonexistent/target", exp.join("link.mov")).expect("symlink");
        let l = look_export(&r, &exp).expect("look").expect("exists");
        assert_eq!(l.look.files, 2, "symlinks are not followed by default");
        assert!(l.check_readable().is_ok());
        r.follow_symlinks = true;
        let l = look_export(&r, &exp).expect("look").expect("exists");
        assert_eq!(l.look.files, 3);
        let (path, err) = l.check_readable().expect_err("dangling link does not open");
        assert_eq!(path, exp.join("link.mov"));
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    r.ready_marker = Some("READY".into());
    r.policy.marker = true;
    fs::write(exp.join("READY"), b"").expect("write");
    let l = look_export(&r, &exp).expect("look").expect("exists");
    assert!(l.look.marker);
    assert!(!l.files.contains(&exp.join("READY")), "the marker is not part of the export");
    fs::remove_dir_all(&exp).expect("rm");
    assert!(look_export(&r, &exp).expect("look").is_none());
}

#[test]
fn scan_digests_match_looks_in_both_modes() {
    let dir = tempfile::tempdir().expect("tempdir");
    for s in ["a", "b"] {
        fs::create_dir(dir.path().join(s)).expect("mkdir");
        fs::write(dir.path().join(s).join("v.mov"), s).expect("write");
    }
    fs::write(dir.path().join("loose.mov"), b"x").expect("write");
    let r = rules(dir.path(), WatchMode::Folders);
    let s = scan(&r).expect("scan");
    assert_eq!(s.exports.len(), 2, "a loose file is no export in folders mode");
    assert_eq!(s.files, 2);
    for (k, d) in &s.exports {
        assert_eq!(look_export(&r, k).expect("look").expect("exists").look.digest, *d);
    }

    let flat = tempfile::tempdir().expect("tempdir");
    for n in ["clip_L.mov", "clip_R.mov", "clip.en.srt", "other.mov"] {
        fs::write(flat.path().join(n), n).expect("write");
    }
    let r = rules(flat.path(), WatchMode::Flat);
    let s = scan(&r).expect("scan");
    assert_eq!(s.exports.len(), 2);
    let clip = flat.path().join("clip");
    let l = look_export(&r, &clip).expect("look").expect("exists");
    assert_eq!(l.look.files, 3);
    assert_eq!(s.exports[&clip], l.look.digest);
    assert!(r.exists(&clip).expect("reads") && !r.exists(&flat.path().join("nothing")).expect("reads"));
}

#[cfg(target_os = "linux")]
#[test]
fn a_folder_that_cannot_be_read_is_an_error_never_an_empty_or_missing_export() {
    use crate::starved::{Starved, siege_child};
    if !siege_child("watch::scan::tests::a_folder_that_cannot_be_read_is_an_error_never_an_empty_or_missing_export") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    for s in ["a", "b"] {
        fs::create_dir(dir.path().join(s)).expect("mkdir");
        fs::write(dir.path().join(s).join("v.mov"), s).expect("write");
    }
    let r = rules(dir.path(), WatchMode::Folders);
    let flat = rules(dir.path(), WatchMode::Flat);
    let a = dir.path().join("a");
    let emfile = |e: &WatchError, at: &Path| match e {
        WatchError::Unreadable { path, source } => path == at && source.raw_os_error() == Some(libc::EMFILE),
        _ => false,
    };
    {
        let _starved = Starved::now(0);
        let e = scan(&r).expect_err("the watch folder does not list");
        assert!(emfile(&e, dir.path()), "{e}");
        let e = look_export(&r, &a).expect_err("the export does not list");
        assert!(emfile(&e, &a), "{e}");
        assert!(r.exists(&a).expect("a stat takes no descriptor"));
        let e = flat.exists(&dir.path().join("clip")).expect_err("the drop folder does not list");
        assert!(emfile(&e, dir.path()), "{e}");
        let e = look_export(&flat, &dir.path().join("clip")).expect_err("the drop folder does not list");
        assert!(emfile(&e, dir.path()), "{e}");
    }
    {
        // One descriptor: the watch folder lists, its exports do not.
        let _starved = Starved::now(1);
        let s = scan(&r).expect("the watch folder lists");
        assert!(s.exports.is_empty(), "{:?}", s.exports);
        let mut keys: Vec<&PathBuf> = s.unreadable.keys().collect();
        keys.sort();
        assert_eq!(keys, [&a, &dir.path().join("b")]);
        for (key, (path, e)) in &s.unreadable {
            assert_eq!(path, key);
            assert_eq!(e.raw_os_error(), Some(libc::EMFILE));
        }
    }
    let s = scan(&r).expect("scan");
    assert_eq!(s.exports.len(), 2);
    assert!(s.unreadable.is_empty());
    println!("siege-child-ok");
}

/// A file the renderer holds open without sharing it (what Windows
/// applications writing a file do): opening it is a sharing violation,
/// which means "still being written", never a verdict on the export.
#[cfg(windows)]
#[test]
fn a_file_held_open_exclusively_is_still_being_written() {
    use std::os::windows::fs::OpenOptionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("Shot_010_L.mov");
    let writer = std::fs::OpenOptions::new().write(true).create(true).truncate(true).share_mode(0).open(&path);
    let writer = writer.expect("the renderer's exclusive handle");
    let e = crate::group::open::open_regular(&path).expect_err("a sharing violation");
    assert_eq!(e.raw_os_error(), Some(32), "ERROR_SHARING_VIOLATION: {e}");
    assert!(is_transient(&e) && !is_absent(&e), "{e}");
    drop(writer);
    crate::group::open::open_regular(&path).expect("opens once the renderer lets go");
}

#[test]
fn errors_that_say_nothing_is_there_differ_from_read_errors() {
    assert!(is_absent(&io::Error::from(io::ErrorKind::NotFound)));
    assert!(is_absent(&io::Error::from(io::ErrorKind::NotADirectory)));
    assert!(!is_absent(&io::Error::from(io::ErrorKind::PermissionDenied)));
    #[cfg(unix)]
    {
        for code in [libc::EMFILE, libc::ENFILE, libc::EIO, libc::ENOMEM] {
            let e = io::Error::from_raw_os_error(code);
            assert!(!is_absent(&e) && is_transient(&e), "{e}");
        }
        // A file the OS refuses, or a dangling link, is a verdict on the file.
        for code in [libc::EACCES, libc::ENOENT, libc::ELOOP] {
            assert!(!is_transient(&io::Error::from_raw_os_error(code)), "{code}");
        }
    }
}

#[test]
fn a_bundle_directory_without_its_document_yet_blocks_the_look_in_both_modes() {
    // Final Cut Pro creates `Edit.fcpxmld/` and then writes `Info.fcpxml`
    // into it: a look in between must not call the export quiet.
    let dir = tempfile::tempdir().expect("tempdir");
    let exp = dir.path().join("shot");
    let bundle = exp.join("Edit.fcpxmld");
    fs::create_dir_all(&bundle).expect("mkdir");
    fs::write(exp.join("Edit.aivu"), b"1234").expect("write");
    fs::write(bundle.join(".DS_Store"), b"finder").expect("write");
    let r = rules(dir.path(), WatchMode::Folders);
    let early = look_export(&r, &exp).expect("look").expect("exists");
    assert_eq!(early.look.temporary.as_deref(), Some("Edit.fcpxmld/Info.fcpxml"));
    fs::write(bundle.join("Info.fcpxml"), b"<fcpxml version=\"1.11\"/>").expect("write");
    let done = look_export(&r, &exp).expect("look").expect("exists");
    assert!(done.look.temporary.is_none(), "{:?}", done.look.temporary);
    assert_ne!(early.look.digest, done.look.digest);

    // Flat mode: the bundle beside the movie in the drop folder.
    let drop = tempfile::tempdir().expect("tempdir");
    let bundle = drop.path().join("Edit.fcpxmld");
    fs::create_dir_all(&bundle).expect("mkdir");
    fs::write(drop.path().join("Edit.aivu"), b"1234").expect("write");
    let f = rules(drop.path(), WatchMode::Flat);
    let key = drop.path().join("Edit");
    let early = look_export(&f, &key).expect("look").expect("exists");
    assert_eq!(early.look.temporary.as_deref(), Some("Edit.fcpxmld/Info.fcpxml"));
    fs::write(bundle.join("Info.fcpxml"), b"<fcpxml/>").expect("write");
    assert!(look_export(&f, &key).expect("look").expect("exists").look.temporary.is_none());
}

#[test]
fn finder_litter_neither_counts_nor_blocks_a_look() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exp = dir.path().join("shot");
    fs::create_dir_all(&exp).expect("mkdir");
    fs::write(exp.join("a.mov"), b"1234").expect("write");
    let r = rules(dir.path(), WatchMode::Folders);
    let clean = look_export(&r, &exp).expect("look").expect("exists");
    for litter in [".DS_Store", "._a.mov", "._b.mov.part"] {
        fs::write(exp.join(litter), b"\0\x05\x16\x07").expect("write");
    }
    let littered = look_export(&r, &exp).expect("look").expect("exists");
    assert!(littered.look.temporary.is_none(), "{:?}", littered.look.temporary);
    assert_eq!(littered.look.files, clean.look.files);
}

#[test]
fn flat_mode_keys_are_nfc_whatever_spelling_the_os_reports() {
    let f = rules(Path::new("/drop"), WatchMode::Flat);
    let nfc = Some(PathBuf::from("/drop/Caf\u{e9}"));
    assert_eq!(f.route(Path::new("/drop/Cafe\u{301}_L.mov")), nfc);
    assert_eq!(f.route(Path::new("/drop/Caf\u{e9}_R.mov")), nfc);
    // Folders mode: the key is the folder itself, as the OS spells it.
    let r = rules(Path::new("/drop"), WatchMode::Folders);
    assert_eq!(r.route(Path::new("/drop/Cafe\u{301}/a.mov")), Some(PathBuf::from("/drop/Cafe\u{301}")));
}
