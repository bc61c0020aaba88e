//! A watched share that is unmounted under a group: its files are missing,
//! not changed, so the group waits instead of being canceled. Run for real
//! inside a user and mount namespace (`unshare -rm`), where a tmpfs can be
//! mounted and unmounted without touching the machine.

use std::path::Path;
use std::process::Command;

use super::finish::watch_folder_missing;
use crate::config::WatchConfig;
use crate::group::{GroupOptions, build_folder_group};
use crate::journal::prelude::*;
use crate::journal::{Enqueued, Journal};

const CHILD: &str = "SPATIALGEN_MOUNT_CHILD";
const TEST: &str = "upload::mount_tests::an_unmounted_share_counts_as_a_missing_watch_folder_not_as_changed_files";

#[test]
fn an_unmounted_share_counts_as_a_missing_watch_folder_not_as_changed_files() {
    if std::env::var_os(CHILD).is_some() {
        child();
        return;
    }
    let namespaces = Command::new("unshare")
        .args(["-rm", "true"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !namespaces {
        // A real unmount needs a private mount namespace; without one it
        // could only be tried on the machine's own mounts, which a test must not touch.
        eprintln!("skipped: unshare -rm is not available here");
        return;
    }
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new("unshare")
        .args(["-rm"])
        .arg(&exe)
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .expect("unshare runs (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("mount-child-ok"), "{stdout}\n{stderr}");
}

fn mount(args: &[&str], at: &Path) {
    let st = Command::new(args[0]).args(&args[1..]).arg(at).status().expect("mount runs");
    assert!(st.success(), "{args:?} {}", at.display());
}

fn child() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("share");
    std::fs::create_dir_all(&root).unwrap();
    mount(&["mount", "-t", "tmpfs", "none"], &root);
    let export = root.join("A");
    std::fs::create_dir_all(&export).unwrap();
    std::fs::write(export.join("v.mov"), crate::media::synth::for_name("v.mov", 4096).unwrap()).unwrap();

    let watch = WatchConfig::new(&root);
    let group = build_folder_group(&export, &GroupOptions { watch: &watch, staging_dir: None, matcher: None }).unwrap();
    let journal = Journal::open(&dir.path().join("j.sqlite3")).unwrap();
    let Enqueued::Queued(id) = journal.enqueue(&group).unwrap() else { panic!("not queued") };
    let g = journal.group(id).unwrap();
    assert_eq!(watch_folder_missing(&g), None, "mounted: present");

    // A file deleted from a share that is still mounted is a change, not a missing folder.
    std::fs::rename(export.join("v.mov"), root.join("v.aside")).unwrap();
    assert_eq!(watch_folder_missing(&g), None, "a deleted file on a mounted share");
    std::fs::rename(root.join("v.aside"), export.join("v.mov")).unwrap();

    mount(&["umount"], &root);
    assert!(root.is_dir(), "the mount point stays, empty");
    assert_eq!(watch_folder_missing(&g).as_deref(), Some(root.as_path()), "unmounted: missing");
    println!("mount-child-ok");
}
