//! Exports as a Mac makes them, through the real `run` binary and the
//! sandbox over loopback: names in NFD (as APFS, HFS+ and Finder hand them
//! out) reach SpatialGen in NFC; a Final Cut Pro `.fcpxmld` bundle whose
//! directory appears before its `Info.fcpxml` is waited for and uploaded as
//! one zip; Finder's litter is left out.

use std::path::Path;
use std::time::Duration;

use spatialgen_sync::journal::GroupState;

use crate::agent::{Agent, drop_folder, row, wait_state, watch_table};
use crate::support::*;

const KIB: usize = 1024;

/// "Café" decomposed (NFD) and composed (NFC).
const CAFE_NFD: &str = "Cafe\u{301}";
const CAFE_NFC: &str = "Caf\u{e9}";

fn litter(dir: &Path, beside: &str) {
    std::fs::write(dir.join(".DS_Store"), b"\0\0\0\x01Bud1").unwrap();
    std::fs::write(dir.join(format!("._{beside}")), b"\0\x05\x16\x07AppleDouble").unwrap();
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nfd_export_with_a_bundle_written_late_arrives_in_nfc_as_one_zip_without_finder_litter() {
    let w = World::new(64 * KIB as u64, "").await;
    let drop = drop_folder(&w, "drop");
    w.write_config("", &watch_table(&drop));
    let journal = w.journal();

    // The export as Final Cut Pro leaves it on an exFAT or SMB volume, every
    // name in NFD: the movie, its AIME, and the bundle's directory, still
    // empty but for Finder's litter.
    let name = format!("{CAFE_NFD} Nuit");
    let bundle_name = format!("{CAFE_NFD}.fcpxmld");
    let made = w.export(&name, &[(&format!("{CAFE_NFD}.mov"), 140 * KIB), (&format!("{CAFE_NFD}.aime"), 900)]);
    std::fs::create_dir(made.join(&bundle_name)).unwrap();
    litter(&made, &format!("{CAFE_NFD}.mov"));
    litter(&made.join(&bundle_name), "Info.fcpxml");
    let export = drop.join(&name);
    std::fs::rename(&made, &export).unwrap();

    let agent = Agent::start(&w);
    // Seen, and held back while the bundle has no document: many settle
    // periods (300 ms) pass without an upload.
    wait_for(Duration::from_secs(15), "the export is seen", || {
        row(&journal, &export).is_some() || {
            // On macOS the journal shows the NFC spelling of the path.
            row(&journal, &drop.join(format!("{CAFE_NFC} Nuit"))).is_some()
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(w.sandbox.library().is_empty(), "nothing is uploaded before Info.fcpxml is written");
    let path_in_journal =
        if row(&journal, &export).is_some() { export.clone() } else { drop.join(format!("{CAFE_NFC} Nuit")) };
    assert_eq!(row(&journal, &path_in_journal).unwrap().state, GroupState::Waiting);

    // Final Cut Pro writes the document: the bundle is whole.
    let fcpxml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE fcpxml>\n<fcpxml version=\"1.11\"><resources/></fcpxml>\n";
    std::fs::write(export.join(&bundle_name).join("Info.fcpxml"), fcpxml).unwrap();
    let done = wait_state(&journal, &path_in_journal, GroupState::Completed, Duration::from_secs(30)).await;
    assert_eq!(done.name, format!("{CAFE_NFC} Nuit"), "status shows the NFC name");
    agent.stop().await;

    let lib = w.sandbox.library();
    assert_eq!(lib.len(), 1, "{lib:?}");
    let entry = &lib[0];
    assert_eq!(entry.video_name, format!("{CAFE_NFC} Nuit"));
    assert_eq!(entry.layout.as_str(), "AIV");
    let mut names: Vec<&str> = entry.files.iter().map(|f| f.file_name.as_str()).collect();
    names.sort();
    let want = [format!("{CAFE_NFC}.aime"), format!("{CAFE_NFC}.fcpxmld.zip"), format!("{CAFE_NFC}.mov")];
    assert_eq!(names, want.iter().map(String::as_str).collect::<Vec<_>>());

    // The movie's bytes are the NFD-named file's on disk.
    let mov = entry.files.iter().find(|f| f.file_name.ends_with(".mov")).unwrap();
    assert_eq!(mov.sha256, sha256_file(&export.join(format!("{CAFE_NFD}.mov"))));

    // The zip: the bundle under its NFC name, its document, nothing of Finder's.
    let zip = entry.files.iter().find(|f| f.file_name.ends_with(".zip")).unwrap();
    let mut z = zip::ZipArchive::new(std::fs::File::open(&zip.path).unwrap()).unwrap();
    let inside: Vec<String> = (0..z.len()).map(|i| z.by_index(i).unwrap().name().to_string()).collect();
    assert_eq!(inside, vec![format!("{CAFE_NFC}.fcpxmld/"), format!("{CAFE_NFC}.fcpxmld/Info.fcpxml")]);
    let mut doc = String::new();
    std::io::Read::read_to_string(&mut z.by_name(&format!("{CAFE_NFC}.fcpxmld/Info.fcpxml")).unwrap(), &mut doc)
        .unwrap();
    assert_eq!(doc, fcpxml);
}
