//! Special files in exports: FIFOs, devices, oversized sidecars; groups
//! record each file's device and inode.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use super::*;
use crate::config::WatchConfig;

#[cfg(unix)]
fn mkfifo(p: &Path) {
    let st = std::process::Command::new("mkfifo").arg(p).status().expect("mkfifo runs");
    assert!(st.success(), "mkfifo {}", p.display());
}

fn export(root: &Path) -> std::path::PathBuf {
    let e = root.join("watch/shot");
    fs::create_dir_all(&e).expect("mkdir");
    fs::write(e.join("shot.mov"), vec![1u8; 1000]).expect("write");
    e
}

fn group_of(e: &Path, staging: Option<&Path>) -> UploadGroup {
    let watch = WatchConfig::new(e.parent().expect("parent"));
    let started = Instant::now();
    let g = build_folder_group(e, &GroupOptions { watch: &watch, staging_dir: staging, matcher: None }).expect("group");
    assert!(started.elapsed() < Duration::from_secs(5), "grouping blocked");
    g
}

fn violation<'a>(g: &'a UploadGroup, rule: &str) -> Option<&'a Violation> {
    g.violations.iter().find(|v| v.rule == rule)
}

// Unix only: a FIFO lives in a folder there; Windows' named pipes live
// only under \\.\pipe\, never inside an export.
#[cfg(unix)]
#[test]
fn a_fifo_sidecar_rejects_the_export_and_names_the_file_without_blocking() {
    let d = tempfile::tempdir().expect("tempdir");
    let e = export(d.path());
    mkfifo(&e.join("spatialgen.toml"));
    let g = group_of(&e, None);
    let v = violation(&g, "special-file").unwrap_or_else(|| panic!("{:?}", g.violations));
    assert_eq!(v.file.as_deref(), Some("spatialgen.toml"));
    assert!(v.message.contains("FIFO"), "{v}");
    assert!(!g.is_valid());
}

// Unix only: a FIFO lives in a folder there; Windows' named pipes live
// only under \\.\pipe\, never inside an export.
#[cfg(unix)]
#[test]
fn a_fifo_anywhere_in_an_export_rejects_it_even_under_an_ignored_name() {
    let d = tempfile::tempdir().expect("tempdir");
    let e = export(d.path());
    fs::create_dir_all(e.join("audio")).expect("mkdir");
    mkfifo(&e.join("audio/.hidden"));
    let g = group_of(&e, None);
    let v = violation(&g, "special-file").unwrap_or_else(|| panic!("{:?}", g.violations));
    assert_eq!(v.file.as_deref(), Some("audio/.hidden"));
}

#[cfg(unix)]
#[test]
fn a_sidecar_linked_to_dev_zero_is_refused_not_read() {
    let d = tempfile::tempdir().expect("tempdir");
    let e = export(d.path());
    std::os::unix::fs::symlink("/dev/zero", e.join("spatialgen.toml")).expect("symlink");
    let g = group_of(&e, None);
    let v = violation(&g, layout::SIDECAR_RULE).unwrap_or_else(|| panic!("{:?}", g.violations));
    assert_eq!(v.file.as_deref(), Some("spatialgen.toml"));
    assert!(v.message.contains("symbolic link"), "{v}");
}

#[test]
fn a_sidecar_over_64_kib_is_a_violation_naming_it() {
    let d = tempfile::tempdir().expect("tempdir");
    let e = export(d.path());
    fs::write(e.join("spatialgen.toml"), format!("# {}\n", "x".repeat(70 * 1024))).expect("write");
    let g = group_of(&e, None);
    let v = violation(&g, layout::SIDECAR_RULE).unwrap_or_else(|| panic!("{:?}", g.violations));
    assert!(v.message.contains("64 KiB"), "{v}");
}

// Unix only: a FIFO lives in a folder there; Windows' named pipes live
// only under \\.\pipe\, never inside an export.
#[cfg(unix)]
#[test]
fn a_fifo_inside_a_bundle_rejects_the_export_and_names_it() {
    let d = tempfile::tempdir().expect("tempdir");
    let e = export(d.path());
    let b = e.join("Edit.fcpxmld");
    fs::create_dir_all(b.join("Resources")).expect("mkdir");
    fs::write(b.join("Info.fcpxml"), "<fcpxml/>").expect("write");
    mkfifo(&b.join("Resources/pipe"));
    let staging = d.path().join("staging");
    let g = group_of(&e, Some(&staging));
    let v = violation(&g, "special-file").unwrap_or_else(|| panic!("{:?}", g.violations));
    assert_eq!(v.file.as_deref(), Some("Edit.fcpxmld/Resources/pipe"));
}

#[cfg(unix)]
#[test]
fn grouped_files_record_their_device_and_inode() {
    use std::os::unix::fs::MetadataExt;
    let d = tempfile::tempdir().expect("tempdir");
    let e = export(d.path());
    let g = group_of(&e, None);
    let m = fs::metadata(e.join("shot.mov")).expect("meta");
    let f = &g.files[0];
    assert_eq!((f.dev, f.ino), (Some(m.dev()), Some(m.ino())));
}

#[cfg(unix)]
#[test]
fn open_regular_refuses_links_and_fifos() {
    let d = tempfile::tempdir().expect("tempdir");
    let real = d.path().join("real");
    fs::write(&real, b"x").expect("write");
    std::os::unix::fs::symlink(&real, d.path().join("link")).expect("symlink");
    mkfifo(&d.path().join("fifo"));
    assert!(open::open_regular(&real).is_ok());
    let e = open::open_regular(&d.path().join("link")).expect_err("a link");
    assert!(e.to_string().contains("symbolic link"), "{e}");
    let e = open::open_regular(&d.path().join("fifo")).expect_err("a fifo");
    assert!(e.to_string().contains("FIFO"), "{e}");
}

#[cfg(unix)]
#[test]
fn followed_links_must_stay_inside_the_watch_folder_and_loops_are_named() {
    use std::os::unix::fs::symlink;
    let d = tempfile::tempdir().expect("tempdir");
    let e = export(d.path());
    let watch_dir = e.parent().expect("watch").to_path_buf();
    let elsewhere = d.path().join("elsewhere.mov");
    fs::write(&elsewhere, b"outside").expect("write");
    fs::write(watch_dir.join("shared.m4a"), b"inside").expect("write");
    symlink(&elsewhere, e.join("out.mov")).expect("symlink");
    symlink(watch_dir.join("shared.m4a"), e.join("in.m4a")).expect("symlink");
    symlink(e.join("loop_a.mov"), e.join("loop_b.mov")).expect("symlink");
    symlink(e.join("loop_b.mov"), e.join("loop_a.mov")).expect("symlink");
    symlink(&e, e.join("again")).expect("symlink");
    let mut watch = WatchConfig::new(&watch_dir);
    watch.follow_symlinks = true;
    let g = build_folder_group(&e, &GroupOptions { watch: &watch, staging_dir: None, matcher: None }).expect("group");
    let named = |file: &str| {
        g.violations
            .iter()
            .find(|v| v.file.as_deref() == Some(file))
            .unwrap_or_else(|| panic!("{file}: {:?}", g.violations))
            .message
            .clone()
    };
    assert!(named("out.mov").contains("outside the watch folder"));
    assert!(named("loop_a.mov").contains("loop"));
    assert!(named("again").contains("loop"));
    let inside = g.files.iter().find(|f| f.rel_path == "in.m4a").expect("the inside link is followed");
    assert_eq!(inside.source, fs::canonicalize(watch_dir.join("shared.m4a")).expect("canonical"));
    assert!(open::open_regular(&inside.source).is_ok(), "the recorded source opens without following a link");
}
