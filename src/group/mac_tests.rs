//! What exports made on a Mac look like, on real folders on any platform:
//! names in NFD (as APFS, HFS+ and Finder hand them out), `.fcpxmld`
//! bundles as Final Cut Pro writes them, and Finder's litter.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::*;
use crate::config::{WatchConfig, WatchMode};
use crate::model::FileRole;

/// "Café" decomposed (NFD: `e` + U+0301 COMBINING ACUTE ACCENT) and composed (NFC).
const CAFE_NFD: &str = "Cafe\u{301}";
const CAFE_NFC: &str = "Caf\u{e9}";

fn write(path: &Path, mtime: SystemTime) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let name = path.file_name().expect("name").to_string_lossy().into_owned();
    let bytes = crate::media::synth::for_name(&name, 0).unwrap_or_else(|| b"bytes".to_vec());
    fs::write(path, bytes).expect("write");
    fs::File::options().write(true).open(path).expect("open").set_modified(mtime).expect("touch");
}

fn dry(watch: &WatchConfig) -> GroupOptions<'_> {
    GroupOptions { watch, staging_dir: None, matcher: None }
}

/// An export folder named `folder` holding a stereo pair and subtitles
/// named after `stem`, every file with the same mtime.
fn export(watch: &Path, folder: &str, stem: &str, mtime: SystemTime) -> std::path::PathBuf {
    let dir = watch.join(folder);
    for f in [format!("{stem}_L.mov"), format!("{stem}_R.mov"), format!("{stem} cre\u{300}me.fr.srt")] {
        write(&dir.join(f), mtime);
    }
    dir
}

#[test]
fn an_nfd_named_export_is_named_in_nfc_and_read_from_the_os_bytes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let watch_dir = tmp.path().join("exports");
    let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let dir = export(&watch_dir, CAFE_NFD, CAFE_NFD, mtime);
    let watch = WatchConfig::new(&watch_dir);
    let g = build_folder_group(&dir, &dry(&watch)).expect("group");
    assert!(g.is_valid(), "{:?}", g.violations);

    // What SpatialGen sees: NFC.
    assert_eq!(g.name, CAFE_NFC);
    let names: Vec<(&str, &str)> = g.files.iter().map(|f| (f.rel_path.as_str(), f.file_name.as_str())).collect();
    let l = format!("{CAFE_NFC}_L.mov");
    let r = format!("{CAFE_NFC}_R.mov");
    let srt = format!("{CAFE_NFC} cr\u{e8}me.fr.srt");
    assert_eq!(names, vec![(l.as_str(), l.as_str()), (r.as_str(), r.as_str()), (srt.as_str(), srt.as_str())]);
    assert_eq!(g.files[2].language.as_deref(), Some("fr"));

    // What the agent opens: the OS's own bytes, which exist.
    assert_eq!(g.key, dir, "the key is the folder as the OS listed it");
    for f in &g.files {
        assert!(f.source.starts_with(&dir), "{}", f.source.display());
        assert!(fs::metadata(&f.source).is_ok(), "{} must name a file on disk", f.source.display());
        let raw = f.source.file_name().expect("name").to_string_lossy().into_owned();
        assert!(raw.contains(CAFE_NFD), "source keeps the NFD spelling: {raw:?}");
    }

    // The same export written with NFC names has the same fingerprint: the
    // two spellings are one export to "never upload twice".
    let twin_dir = export(&tmp.path().join("other"), CAFE_NFC, CAFE_NFC, mtime);
    let twin_watch = WatchConfig::new(tmp.path().join("other"));
    let twin = build_folder_group(&twin_dir, &dry(&twin_watch)).expect("group");
    assert_eq!(twin.name, g.name);
    assert_eq!(twin.fingerprint, g.fingerprint);
}

#[test]
fn two_files_whose_names_differ_only_in_normalization_are_reported_not_merged() {
    // On Linux (and on any byte-comparing volume) these are two files. Both
    // would reach SpatialGen as one name: the export is rejected, naming the
    // second, rather than one silently standing for the other.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("Shot");
    let mtime = SystemTime::now();
    write(&dir.join("Shot.mov"), mtime);
    write(&dir.join(format!("{CAFE_NFD}.en.srt")), mtime);
    let nfc = dir.join(format!("{CAFE_NFC}.en.srt"));
    write(&nfc, mtime);
    if fs::read_dir(&dir).expect("ls").count() < 3 {
        return; // a normalization-insensitive filesystem (APFS, HFS+) made them one file
    }
    let watch = WatchConfig::new(tmp.path());
    let g = build_folder_group(&dir, &dry(&watch)).expect("group");
    let dup: Vec<&Violation> = g.violations.iter().filter(|v| v.rule == "duplicate-file-name").collect();
    assert_eq!(dup.len(), 1, "{:?}", g.violations);
    assert_eq!(dup[0].file.as_deref(), Some(format!("{CAFE_NFC}.en.srt").as_str()));
}

#[test]
fn flat_mode_stems_are_nfc_whatever_spelling_each_file_has() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let drop = tmp.path();
    let mtime = SystemTime::now();
    write(&drop.join(format!("{CAFE_NFD}_L.mov")), mtime);
    write(&drop.join(format!("{CAFE_NFC}_R.mov")), mtime);
    let mut watch = WatchConfig::new(drop);
    watch.mode = WatchMode::Flat;
    let groups = build_flat_groups(drop, &dry(&watch)).expect("groups");
    assert_eq!(groups.len(), 1, "{groups:?}");
    let g = &groups[0];
    assert_eq!(g.name, CAFE_NFC);
    assert_eq!(g.key, drop.join(CAFE_NFC));
    assert!(g.is_valid(), "{:?}", g.violations);
    assert_eq!(g.files.iter().map(|f| f.role).collect::<Vec<_>>(), vec![FileRole::VideoLeft, FileRole::VideoRight]);
    // The left eye is read from its NFD name on disk.
    assert!(g.files[0].source.to_string_lossy().contains(CAFE_NFD));
    // Asked for by either spelling of the stem (the watcher's key may carry
    // the OS's), it is the same one group.
    for stem in [CAFE_NFD, CAFE_NFC] {
        let one = build_flat_group(drop, stem, &dry(&watch)).expect("group").expect("found");
        assert_eq!(one.fingerprint, g.fingerprint);
    }
}

/// A bundle as Final Cut Pro 10.6+ exports it ("Current" XML version,
/// FCPXML 1.10+): `Name.fcpxmld/` with `Info.fcpxml` at its top (Apple,
/// "FCPXML Bundle Reference"; see [`bundle`]), here with an `Info.plist`
/// beside it as bundle-writing tools add, and the litter a Mac adds when
/// the export sits on an exFAT or SMB volume and Finder has shown it.
fn fcp_bundle(dir: &Path, mtime: SystemTime) {
    fs::create_dir_all(dir).expect("mkdir");
    let fcpxml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE fcpxml>\n<fcpxml version=\"1.11\">\n  \
                  <resources/>\n</fcpxml>\n";
    fs::write(dir.join("Info.fcpxml"), fcpxml).expect("write");
    fs::write(dir.join("Info.plist"), "<?xml version=\"1.0\"?><plist version=\"1.0\"><dict/></plist>").expect("write");
    for f in ["Info.fcpxml", "Info.plist"] {
        fs::File::options().write(true).open(dir.join(f)).expect("open").set_modified(mtime).expect("touch");
    }
}

fn litter(dir: &Path) {
    fs::write(dir.join(".DS_Store"), b"\0\0\0\x01Bud1").expect("write");
    fs::write(dir.join("._Info.fcpxml"), b"\0\x05\x16\x07AppleDouble").expect("write");
}

#[test]
fn a_final_cut_pro_bundle_is_one_file_zipped_without_finder_litter() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let watch_dir = tmp.path().join("exports");
    let dir = watch_dir.join("Immersive Edit");
    let mtime = SystemTime::now();
    write(&dir.join("Immersive Edit.aivu"), mtime);
    fcp_bundle(&dir.join("Immersive Edit.fcpxmld"), mtime);
    litter(&dir.join("Immersive Edit.fcpxmld"));
    // And beside the files: Finder's view settings, AppleDouble twins of the
    // movie and of the bundle itself.
    litter(&dir);
    fs::write(dir.join("._Immersive Edit.aivu"), b"\0\x05\x16\x07").expect("write");
    fs::write(dir.join("._Immersive Edit.fcpxmld"), b"\0\x05\x16\x07").expect("write");
    let staging = tmp.path().join("staging");
    let watch = WatchConfig::new(&watch_dir);
    let opts = GroupOptions { watch: &watch, staging_dir: Some(&staging), matcher: None };
    let g = build_folder_group(&dir, &opts).expect("group");
    assert!(g.is_valid(), "{:?}", g.violations);
    let files: Vec<(&str, FileRole)> = g.files.iter().map(|f| (f.file_name.as_str(), f.role)).collect();
    assert_eq!(
        files,
        vec![("Immersive Edit.aivu", FileRole::Video), ("Immersive Edit.fcpxmld.zip", FileRole::Fcpxmld)]
    );

    let zip = &g.files[1];
    let mut z = zip::ZipArchive::new(fs::File::open(&zip.source).expect("staged zip")).expect("zip");
    let names: Vec<String> = (0..z.len()).map(|i| z.by_index(i).expect("entry").name().to_string()).collect();
    assert_eq!(
        names,
        vec!["Immersive Edit.fcpxmld/", "Immersive Edit.fcpxmld/Info.fcpxml", "Immersive Edit.fcpxmld/Info.plist"]
    );

    // Litter does not change what the export is: same fingerprint without it.
    for f in [".DS_Store", "._Info.fcpxml", "._Immersive Edit.aivu", "._Immersive Edit.fcpxmld"] {
        fs::remove_file(dir.join(f)).expect("rm");
    }
    for f in [".DS_Store", "._Info.fcpxml"] {
        fs::remove_file(dir.join("Immersive Edit.fcpxmld").join(f)).expect("rm");
    }
    let clean = build_folder_group(&dir, &dry(&watch)).expect("group");
    assert_eq!(clean.fingerprint, g.fingerprint);
}

#[test]
fn a_bundle_whose_document_is_not_written_yet_holds_the_export_back() {
    // Final Cut Pro makes `Edit.fcpxmld/` first and writes into it after.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("Shot");
    let mtime = SystemTime::now();
    write(&dir.join("Shot.aivu"), mtime);
    let b = dir.join("Edit.fcpxmld");
    fs::create_dir_all(&b).expect("mkdir");
    litter(&b); // Finder's litter is no document
    let watch = WatchConfig::new(tmp.path());
    let g = build_folder_group(&dir, &dry(&watch)).expect("group");
    let v: Vec<(&str, Option<&str>)> = g.violations.iter().map(|v| (v.rule, v.file.as_deref())).collect();
    assert_eq!(v, vec![("temporary-file-present", Some("Edit.fcpxmld"))], "{:?}", g.violations);
    assert!(g.violations[0].message.contains("Info.fcpxml"), "{}", g.violations[0].message);

    // Flat mode: a stem with nothing but a bundle still being written is
    // no export yet.
    let mut flat = WatchConfig::new(&dir);
    flat.mode = WatchMode::Flat;
    let groups = build_flat_groups(&dir, &dry(&flat)).expect("groups");
    let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, vec!["Shot"]);

    // Once the document is there, the bundle is whole.
    fcp_bundle(&b, mtime);
    let g = build_folder_group(&dir, &dry(&watch)).expect("group");
    assert!(g.is_valid(), "{:?}", g.violations);
    assert_eq!(g.files.iter().filter(|f| f.role == FileRole::Fcpxmld).count(), 1);
}

#[test]
fn apple_double_and_ds_store_never_join_or_reject_an_export_even_with_custom_ignore_patterns() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("Shot_010");
    let mtime = SystemTime::now();
    for f in ["Shot_010_L.mov", "Shot_010_R.mov", "audio/Dialog.mp4"] {
        write(&dir.join(f), mtime);
    }
    for f in ["._Shot_010_L.mov", "._Shot_010_R.mov", "audio/._Dialog.mp4", "audio/.DS_Store", ".DS_Store"] {
        fs::write(dir.join(f), b"\0\x05\x16\x07").expect("write");
    }
    fs::write(dir.join("._Shot_010_R.mov.part"), b"\0\x05\x16\x07").expect("stale AppleDouble of a partial file");
    let mut watch = WatchConfig::new(tmp.path());
    watch.audio_language = Some("en".into());
    for ignore in [None, Some(vec!["*.txt".to_string()])] {
        watch.roles.ignore = ignore.clone();
        let g = build_folder_group(&dir, &dry(&watch)).expect("group");
        assert!(g.is_valid(), "ignore = {ignore:?}: {:?}", g.violations);
        let names: Vec<&str> = g.files.iter().map(|f| f.rel_path.as_str()).collect();
        assert_eq!(names, vec!["Shot_010_L.mov", "Shot_010_R.mov", "audio/Dialog.mp4"], "ignore = {ignore:?}");
    }
}
