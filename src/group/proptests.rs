//! The agent's rules against the sandbox's: a group the engine accepts is
//! accepted by the sandbox's Start Upload Group validation, and a group the
//! engine rejects under an API rule is refused by it. The two sides were
//! written independently, so agreement here means something.
//!
//! Agent-only rules (an unmatched file, a bad sidecar, ...) concern files
//! that are never sent, so the sandbox cannot see them; the property is
//! stated for the API rules.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::config::{LayoutChoice, WatchConfig};
use crate::model::{FileRole, Layout, Perspective};
use crate::sandbox::validate_start_request;

/// The Start Upload Group body the agent would send for `g`.
fn body(g: &UploadGroup) -> Value {
    let files: Vec<Value> = g
        .files
        .iter()
        .map(|f| {
            let mut o = json!({ "fileName": f.file_name, "fileRole": f.role.as_str(), "sizeBytes": f.size });
            if let Some(tag) = &f.language {
                o["languageTag"] = json!(tag);
            }
            o
        })
        .collect();
    let mut b = json!({ "videoName": g.name, "layout": g.layout.as_str(), "files": files });
    if let Some(p) = g.perspective {
        b["perspective"] = json!(p.as_str());
    }
    if let Some(d) = &g.description {
        b["description"] = json!(d);
    }
    if let Some(f) = &g.folder_name {
        b["folderName"] = json!(f);
    }
    b
}

fn api_violations(g: &UploadGroup) -> Vec<&Violation> {
    g.violations.iter().filter(|v| rules::is_api_rule(v.rule)).collect()
}

fn assert_agree(g: &UploadGroup) -> Result<(), TestCaseError> {
    let ours = api_violations(g);
    let theirs = validate_start_request(&body(g));
    prop_assert_eq!(
        ours.is_empty(),
        theirs.is_ok(),
        "engine: {:#?}\nsandbox: {:#?}\nbody: {:#}",
        ours,
        theirs,
        body(g)
    );
    Ok(())
}

fn file(name: String, role: FileRole, language: Option<String>, size: u64) -> GroupFile {
    GroupFile {
        source: PathBuf::from("/x").join(&name),
        rel_path: name.clone(),
        file_name: name,
        role,
        language,
        size,
        mtime_ns: 0,
        dev: None,
        ino: None,
        staged: false,
        media: None,
    }
}

const EXTS: &[&str] = &["mov", "MOV", "mp4", "aivu", "AIVU", "m4a", "srt", "SRT", "aime", "zip", "mkv", "wav", ""];
const TAGS: &[&str] = &["en", "EN", "de", "sw", "en-US", "pt_BR", "xx", "zxx", "eng", ""];

fn arb_name() -> impl Strategy<Value = String> {
    (prop::sample::select(vec!["Shot", "shot left", "Ünï 東京", ""]), prop::sample::select(EXTS.to_vec()))
        .prop_map(|(stem, ext)| if ext.is_empty() { stem.to_string() } else { format!("{stem}.{ext}") })
}

fn arb_file() -> impl Strategy<Value = GroupFile> {
    (
        arb_name(),
        prop::sample::select(FileRole::ALL.to_vec()),
        prop::option::of(prop::sample::select(TAGS.to_vec())),
        prop::sample::select(vec![0u64, 1, 7, 1 << 33]),
    )
        .prop_map(|(name, role, tag, size)| file(name, role, tag.map(str::to_string), size))
}

/// A group that starts valid for its layout, then takes a few random edits.
fn arb_template_group() -> impl Strategy<Value = UploadGroup> {
    let layout = prop::sample::select(Layout::ALL.to_vec());
    let extras = prop::sample::subsequence(
        vec![
            file("a.en.m4a".into(), FileRole::Audio, Some("en".into()), 5),
            file("b.mp4".into(), FileRole::Audio, Some("zxx".into()), 5),
            file("c.srt".into(), FileRole::Subtitle, Some("ja".into()), 5),
            file("d.aime".into(), FileRole::Aime, None, 5),
            file("e.fcpxmld.zip".into(), FileRole::Fcpxmld, None, 5),
        ],
        0..=5,
    );
    let edits = prop::collection::vec((0usize..8, arb_file(), any::<prop::sample::Index>()), 0..=2);
    let perspective = prop::option::of(prop::sample::select(Perspective::ALL.to_vec()));
    (layout, extras, edits, perspective, any::<bool>()).prop_map(|(layout, extras, edits, perspective, aivu)| {
        let mut files = match layout {
            Layout::Separate => vec![
                file("s_L.mov".into(), FileRole::VideoLeft, None, 9),
                file("s_R.mp4".into(), FileRole::VideoRight, None, 9),
            ],
            _ => vec![file(if aivu { "v.aivu" } else { "v.mov" }.into(), FileRole::Video, None, 9)],
        };
        files.extend(extras);
        let mut g = UploadGroup {
            name: "Shot 010".into(),
            key: PathBuf::from("/w/Shot 010"),
            root: PathBuf::from("/w/Shot 010"),
            watch_path: None,
            layout,
            perspective: if layout == Layout::Aiv { Some(Perspective::D180) } else { perspective },
            description: None,
            folder_name: None,
            priority: 0,
            files,
            fingerprint: String::new(),
            violations: Vec::new(),
            media_check: crate::config::MediaCheck::Reject,
            unfinished: Vec::new(),
            warnings: Vec::new(),
        };
        for (kind, new, at) in edits {
            let i = at.index(g.files.len().max(1));
            match kind {
                0 => g.files.push(new),
                1 if !g.files.is_empty() => {
                    g.files.remove(i);
                }
                2 if !g.files.is_empty() => g.files[i].role = new.role,
                3 if !g.files.is_empty() => g.files[i].language = new.language,
                4 if !g.files.is_empty() => g.files[i].file_name = new.file_name,
                5 if !g.files.is_empty() => g.files[i].size = new.size,
                6 => g.perspective = perspective,
                7 => g.name = if new.file_name.is_empty() { " ".into() } else { new.file_name },
                _ => {}
            }
        }
        g
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// The rules alone, on groups built in memory (any roles, names, tags, sizes, layouts).
    #[test]
    fn rules_agree_with_the_sandbox(mut g in prop_oneof![
        arb_template_group(),
        (prop::sample::select(Layout::ALL.to_vec()),
         prop::option::of(prop::sample::select(Perspective::ALL.to_vec())),
         prop::collection::vec(arb_file(), 0..6))
            .prop_map(|(layout, perspective, files)| UploadGroup {
                name: "x".into(), key: PathBuf::from("/k"), root: PathBuf::from("/k"), watch_path: None,
                layout, perspective, description: None, folder_name: None, priority: 0, files,
                fingerprint: String::new(), violations: Vec::new(),
                media_check: crate::config::MediaCheck::Reject, unfinished: Vec::new(), warnings: Vec::new(),
            }),
    ]) {
        validate(&mut g);
        assert_agree(&g)?;
    }
}

/// The core of an export: an L/R pair, one video, an `.aivu`, or nothing.
const CORES: &[&[&str]] = &[
    &["Shot_010_v002_L.mov", "Shot_010_v002_R.mov"],
    &["shot-left.MOV", "shot-right.mp4"],
    &["My Film – Take 2.mov"],
    &["東京.MP4"],
    &["Tokyo Night.aivu"],
    &[],
];

/// What else an export folder may hold, conventions and mistakes alike
/// (a trailing `/` is a `.fcpxmld` bundle directory).
const EXTRAS: &[&str] = &[
    "Shot.L.mov",
    "Other.mov",
    "mix.m4a",
    "mix.EN.m4a",
    "room_zxx.m4a",
    "audio/Dialog.mp4",
    "Shot_audio.mp4",
    "voice.xx.m4a",
    "Shot.en.srt",
    "Shot_fr.srt",
    "Shot.en-US.srt",
    "Shot.zxx.srt",
    "Shot.eng.srt",
    "plain.srt",
    "Shot.aime",
    "Other.aime",
    "Shot.fcpxmld.zip",
    "Edit.fcpxmld/",
    "notes.txt",
    ".DS_Store",
    "Shot_R.mov.part",
];

fn arb_names() -> impl Strategy<Value = Vec<&'static str>> {
    (prop::sample::select(CORES.to_vec()), prop::sample::subsequence(EXTRAS.to_vec(), 0..4)).prop_map(
        |(core, extras)| {
            let mut names = core.to_vec();
            names.extend(extras);
            names
        },
    )
}

fn make_export(dir: &Path, names: &[&str], empty: &[bool]) {
    std::fs::create_dir_all(dir).expect("mkdir");
    for (i, name) in names.iter().enumerate() {
        let p = dir.join(name.trim_end_matches('/'));
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        if name.ends_with('/') {
            std::fs::create_dir_all(&p).expect("mkdir");
            std::fs::write(p.join("Info.fcpxml"), "<fcpxml/>").expect("write");
        } else {
            let bytes: &[u8] = if empty.get(i).copied().unwrap_or(false) { b"" } else { b"some bytes" };
            std::fs::write(&p, bytes).expect("write");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    /// The whole engine on real folders: names, config defaults, layout
    /// choices and sidecar perspectives.
    #[test]
    fn engine_agrees_with_the_sandbox(
        names in arb_names(),
        empty in prop::collection::vec(prop::bool::weighted(0.1), 7),
        audio_language in prop::option::of(prop::sample::select(vec!["en", "zxx", "de"])),
        subtitle_language in prop::option::of(prop::sample::select(vec!["fr", "sv"])),
        layout in prop::option::of(prop::sample::select(Layout::ALL.to_vec())),
        sidecar_perspective in prop::option::of(prop::sample::select(vec!["Regular", "180", "360"])),
    ) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let folder = tmp.path().join("Export");
        make_export(&folder, &names, &empty);
        if let Some(p) = sidecar_perspective {
            std::fs::write(folder.join("spatialgen.toml"), format!("perspective = \"{p}\"\n")).expect("write");
        }
        let mut watch = WatchConfig::new(tmp.path());
        watch.audio_language = audio_language.map(str::to_string);
        watch.subtitle_language = subtitle_language.map(str::to_string);
        watch.layout = layout.map_or(LayoutChoice::Auto, LayoutChoice::Fixed);
        let g = build_folder_group(&folder, &GroupOptions { watch: &watch, staging_dir: None, matcher: None }).expect("group");
        assert_agree(&g)?;
        if g.is_valid() {
            prop_assert!(validate_start_request(&body(&g)).is_ok());
        }
    }
}

/// The generators must produce both accepted and rejected groups, or the
/// properties above would hold vacuously.
#[test]
fn generators_cover_both_outcomes() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut ok, mut bad) = (0, 0);
    for _ in 0..400 {
        let mut g = arb_template_group().new_tree(&mut runner).expect("value").current();
        validate(&mut g);
        if g.is_valid() { ok += 1 } else { bad += 1 }
    }
    assert!(ok >= 40 && bad >= 40, "accepted {ok}, rejected {bad}");

    let strategy = (arb_names(), prop::option::of(prop::sample::select(Layout::ALL.to_vec())));
    let (mut ok, mut bad) = (0, 0);
    let tmp = tempfile::tempdir().expect("tempdir");
    for i in 0..150 {
        let (names, layout) = strategy.new_tree(&mut runner).expect("value").current();
        let folder = tmp.path().join(format!("e{i}"));
        make_export(&folder, &names, &[]);
        let mut watch = WatchConfig::new(tmp.path());
        watch.audio_language = Some("en".into());
        watch.subtitle_language = Some("en".into());
        watch.layout = layout.map_or(LayoutChoice::Auto, LayoutChoice::Fixed);
        let g = build_folder_group(&folder, &GroupOptions { watch: &watch, staging_dir: None, matcher: None })
            .expect("group");
        if api_violations(&g).is_empty() { ok += 1 } else { bad += 1 }
    }
    eprintln!("engine: accepted {ok}, rejected {bad}");
    assert!(ok >= 30 && bad >= 30, "engine: accepted {ok}, rejected {bad}");
}
