//! The media check through the real `run` binary: a crashed render waits
//! `media_wait` and is rejected without a byte sent; a render written in two
//! phases with a quiet gap waits and then uploads whole; eyes of different
//! lengths are rejected naming both; `layout = "auto"` sends MV-HEVC stereo
//! as `MVHEVC` whatever `default_layout` says. `plan` and `show` print the
//! facts.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use spatialgen_sync::journal::GroupState;
use spatialgen_sync::media::synth::{self, Spec};
use spatialgen_sync::model::Layout;

use crate::agent::{Agent, drop_folder, row, wait_state};
use crate::support::*;

/// A watch folder that settles fast; `extra` lines go into its table.
fn watch(folder: &Path, extra: &str) -> String {
    format!("[[watch]]\npath = \"{}\"\nsettle = \"300ms\"\n{extra}\n", folder.display())
}

/// A spatial video the way a render writes it: MV-HEVC stereo, 30 fps.
fn stereo(frames: u32, payload: u64) -> Spec {
    Spec { payload, ..Spec::stereo(1920, 1080, (30_000, 1000), frames) }
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Storage PUTs so far.
fn puts(w: &World) -> u64 {
    w.sandbox.stats().storage_puts
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_render_waits_media_wait_then_is_rejected_and_never_sent() {
    let w = World::new(64 * 1024, "").await;
    let drop = drop_folder(&w, "drop");
    w.write_config("", &watch(&drop, "media_wait = \"3s\""));
    let journal = w.journal();
    let agent = Agent::start(&w);
    agent.wait_log("agent started", 1, Duration::from_secs(20)).await;

    // The first 60 % of a moov-last file: ftyp and an mdat that runs past
    // the end, no moov. What a render that crashed mid-write leaves.
    let whole = synth::build(&stereo(30, 400 * 1024));
    let crashed = drop.join("Crashed");
    let started = Instant::now();
    write(&crashed.join("Crashed.mov"), &whole[..whole.len() * 6 / 10]);

    // Quiet, but the container is open: it waits, saying why.
    let what = "the crashed render to wait with its reason";
    wait_for(Duration::from_secs(20), what, || {
        row(&journal, &crashed).is_some_and(|r| {
            r.state == GroupState::Waiting && r.error.as_deref().is_some_and(|e| e.contains("still being written"))
        })
    })
    .await;
    let waiting = row(&journal, &crashed).unwrap();
    let reason = waiting.error.unwrap();
    assert!(reason.contains("Crashed.mov") && reason.contains("moov missing"), "{reason}");

    let rejected = wait_state(&journal, &crashed, GroupState::Rejected, Duration::from_secs(30)).await;
    assert!(started.elapsed() >= Duration::from_secs(3), "rejected before media_wait: {:?}", started.elapsed());
    let error = rejected.error.unwrap();
    assert!(error.contains("Crashed.mov") && error.contains("unfinished after 3s"), "{error}");
    assert!(error.contains("the file ends at"), "the numbers are named: {error}");
    assert_eq!(puts(&w), 0, "not a byte was sent");
    assert!(w.sandbox.sessions().is_empty(), "no upload group was started");
    let out = agent.stop().await;
    assert!(out.contains("still unfinished after media_wait"), "{out}");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_render_written_in_two_phases_waits_through_the_gap_and_uploads_whole() {
    let w = World::new(64 * 1024, "").await;
    let drop = drop_folder(&w, "drop");
    w.write_config("", &watch(&drop, "media_wait = \"10m\""));
    let journal = w.journal();
    let agent = Agent::start(&w);
    agent.wait_log("agent started", 1, Duration::from_secs(20)).await;

    // Phase one: ftyp, an mdat of size 0 (open) and its samples; then a
    // gap far longer than `settle`, as an encoder finishing a pass.
    let spec = stereo(60, 300 * 1024);
    let parts = synth::parts(&spec);
    let export = drop.join("TwoPass");
    let path = export.join("TwoPass.mov");
    std::fs::create_dir_all(&export).unwrap();
    let mut f = std::fs::File::create(&path).unwrap();
    let mut head = parts.head.clone();
    let mdat_at = head.len() - 8;
    head[mdat_at..mdat_at + 4].copy_from_slice(&0u32.to_be_bytes());
    f.write_all(&head).unwrap();
    let mut payload = vec![0u8; parts.payload as usize];
    synth::payload_bytes(0, &mut payload);
    f.write_all(&payload).unwrap();
    f.sync_all().unwrap();
    let what = "the open render to wait with its reason";
    wait_for(Duration::from_secs(20), what, || {
        row(&journal, &export).is_some_and(|r| r.error.as_deref().is_some_and(|e| e.contains("still being written")))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(row(&journal, &export).unwrap().state, GroupState::Waiting, "held through the quiet gap");
    assert_eq!(puts(&w), 0);

    // Phase two: the mdat size written in place and the moov appended.
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::Start(mdat_at as u64)).unwrap();
    f.write_all(&((parts.payload + 8) as u32).to_be_bytes()).unwrap();
    f.seek(SeekFrom::End(0)).unwrap();
    f.write_all(&parts.tail).unwrap();
    f.sync_all().unwrap();

    let done = wait_state(&journal, &export, GroupState::Completed, Duration::from_secs(30)).await;
    assert_eq!(done.error, None);
    assert_eq!(std::fs::read(&path).unwrap(), synth::build(&spec), "the file on disk is the whole render");
    assert_library_matches(&w.sandbox, done.session_id.as_deref().unwrap(), &export);
    let entry = w.sandbox.library().into_iter().find(|e| e.video_name == "TwoPass").unwrap();
    assert_eq!(entry.layout, Layout::Mvhevc);
    agent.stop().await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eyes_of_different_lengths_are_rejected_naming_both_and_auto_sends_stereo_as_mvhevc() {
    let w = World::new(64 * 1024, "").await;
    let drop = drop_folder(&w, "drop");
    // A folder whose default is 2D: only the content can say MVHEVC.
    w.write_config("", &watch(&drop, "default_layout = \"2D\""));
    let journal = w.journal();

    // Written before the agent starts: found by the startup scan.
    let eyes = drop.join("Shot_030");
    let left = Spec { payload: 64 * 1024, ..Spec::video(*b"hvc1", 1920, 1080, (30_000, 1000), 300) };
    let right = Spec { frames: 285, ..left.clone() };
    write(&eyes.join("Shot_030_L.mov"), &synth::build(&left));
    write(&eyes.join("Shot_030_R.mov"), &synth::build(&right));
    let spatial = drop.join("Spatial");
    let spec = Spec { projection: Some(spatialgen_sync::media::Projection::Hequ), ..stereo(90, 200 * 1024) };
    write(&spatial.join("Spatial.mov"), &synth::build(&spec));

    // `plan` says the same before anything runs.
    let plan = w.command(KEY).args(["plan", "--json", "--config", w.config_path.to_str().unwrap()]).output().unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let by_name = |n: &str| doc["groups"].as_array().unwrap().iter().find(|g| g["name"] == n).unwrap().clone();
    let p = by_name("Spatial");
    assert_eq!((p["layout"].as_str(), p["perspective"].as_str()), (Some("MVHEVC"), Some("180")), "{p}");
    let m = &p["files"][0]["media"];
    assert_eq!(
        (m["views"].as_u64(), m["codec"].as_str(), m["heroEye"].as_str()),
        (Some(2), Some("hvc1"), Some("left"))
    );
    assert_eq!((m["width"].as_u64(), m["projection"].as_str()), (Some(1920), Some("hequ")));
    let e = by_name("Shot_030");
    assert_eq!(e["violations"][0]["rule"], "media-eyes-mismatch", "{e}");

    let agent = Agent::start(&w);
    let rejected = wait_state(&journal, &eyes, GroupState::Rejected, Duration::from_secs(30)).await;
    let error = rejected.error.unwrap();
    assert!(error.contains("media-eyes-mismatch") || error.contains("duration"), "{error}");
    assert!(error.contains("10.000 s") && error.contains("9.500 s"), "both durations are named: {error}");
    let done = wait_state(&journal, &spatial, GroupState::Completed, Duration::from_secs(30)).await;
    let entry = w.sandbox.library().into_iter().find(|e| e.video_name == "Spatial").unwrap();
    assert_eq!(entry.layout, Layout::Mvhevc, "MV-HEVC stereo is sent as MVHEVC, not the folder's 2D");
    assert_eq!(entry.perspective.map(|p| p.as_str()), Some("180"), "hequ is 180");
    assert!(w.sandbox.sessions().iter().all(|s| s.video_name != "Shot_030"), "the mismatched eyes were never sent");

    // `show` keeps what the container said.
    let show = w
        .command(KEY)
        .args(["show", "--json", "--config", w.config_path.to_str().unwrap(), &done.id.to_string()])
        .output()
        .unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(shown["files"][0]["media"]["views"], 2, "{shown}");
    assert_eq!(shown["files"][0]["media"]["durationMs"], 3000, "{shown}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_of_an_unfinished_render_sends_nothing_and_says_why() {
    let w = World::new(64 * 1024, "").await;
    let folder = w.exports.join("Rendering");
    let whole = synth::build(&stereo(30, 200 * 1024));
    write(&folder.join("Rendering.mov"), &whole[..whole.len() / 3]);
    let cfg = w.config_path.to_str().unwrap().to_string();
    let r = w.run(KEY, &["upload", "--config", &cfg, folder.to_str().unwrap()]).await;
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("is not finished") && r.stderr.contains("Rendering.mov: moov missing"), "{r:?}");
    assert_eq!(puts(&w), 0);
    assert!(w.sandbox.sessions().is_empty());
    // Finished, the same command uploads it.
    write(&folder.join("Rendering.mov"), &whole);
    let r = w.run(KEY, &["upload", "--config", &cfg, folder.to_str().unwrap()]).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(w.sandbox.library().len(), 1);
}
