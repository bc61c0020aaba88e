//! The role patterns on file names: the default naming conventions, folders,
//! the ready marker, replaced patterns, bad patterns, flat-mode stems.

use super::*;
use crate::config::RolePatterns;

fn matcher() -> RoleMatcher {
    RoleMatcher::new(&WatchConfig::new("/w")).expect("default patterns compile")
}

/// One row per naming convention, with real-world names.
#[test]
fn default_roles_table() {
    use Class::*;
    use FileRole::*;
    let rows: &[(&str, Class)] = &[
        ("Shot_010_v002_L.mov", Role(VideoLeft)),
        ("Shot_010_v002_R.mov", Role(VideoRight)),
        ("shot-left.MOV", Role(VideoLeft)),
        ("shot-right.MOV", Role(VideoRight)),
        ("shot_left.mp4", Role(VideoLeft)),
        ("shot_RIGHT.Mp4", Role(VideoRight)),
        ("clip-L.mov", Role(VideoLeft)),
        ("clip-r.mov", Role(VideoRight)),
        ("clip.L.mov", Role(VideoLeft)),
        ("clip.R.mp4", Role(VideoRight)),
        ("My Shot 1_L.mov", Role(VideoLeft)),
        ("Szene Über – Nacht_R.mov", Role(VideoRight)),
        ("東京_L.mov", Role(VideoLeft)),
        ("eyes/Shot_L.mov", Role(VideoLeft)),
        ("clip_L.aivu", Role(Video)),
        ("Shot_010_v002.mov", Role(Video)),
        ("Shot_010_v002.MOV", Role(Video)),
        ("final render.mp4", Role(Video)),
        ("immersive.aivu", Role(Video)),
        ("IMMERSIVE.AIVU", Role(Video)),
        ("Lake_Left_Final.mov", Role(Video)),
        ("shot.right.mp4", Role(Video)),
        ("mix.m4a", Role(Audio)),
        ("audio/mix.M4A", Role(Audio)),
        ("audio/stems.mp4", Role(Audio)),
        ("Audio/Stems.MP4", Role(Audio)),
        ("sub/audio/stems.mp4", Role(Audio)),
        ("Shot_audio.mp4", Role(Audio)),
        ("Shot_AUDIO.mp4", Role(Audio)),
        ("Shot_audio.en.mp4", Role(Audio)),
        ("Shot_audio_fr.mp4", Role(Audio)),
        ("Shot_audio_zxx.mp4", Role(Audio)),
        ("Shot.en.srt", Role(Subtitle)),
        ("subs/Shot.SRT", Role(Subtitle)),
        ("Shot.aime", Role(Aime)),
        ("Shot.AIME", Role(Aime)),
        ("Shot.fcpxmld.zip", Role(Fcpxmld)),
        ("Shot_fcpxmld_export.ZIP", Role(Fcpxmld)),
        ("Shot.FCPXMLD.zip", Role(Fcpxmld)),
        ("render.mov.part", Temporary),
        ("render.tmp", Temporary),
        ("Shot_L.mov.partial", Temporary),
        ("Shot.mov.crdownload", Temporary),
        ("Shot.mov.download", Temporary),
        ("~Shot.mov", Temporary),
        ("Shot.mov~", Temporary),
        (".~lock.notes.odt#", Temporary),
        ("sub/render.TMP", Temporary),
        (".DS_Store", Ignored),
        ("._Shot_L.mov", Ignored),
        ("audio/._Dialog.mp4", Ignored),
        ("._Shot.mov.part", Ignored),
        ("Thumbs.db", Ignored),
        ("desktop.ini", Ignored),
        ("spatialgen.toml", Ignored),
        ("notes.txt", Unmatched),
        ("Shot.wav", Unmatched),
        ("archive.zip", Unmatched),
        ("Shot.fcpxml", Unmatched),
        ("audio/Shot_L.mp4", Ambiguous(vec![VideoLeft, Audio])),
    ];
    let m = matcher();
    for (name, want) in rows {
        assert_eq!(&m.classify(name), want, "{name}");
    }
}

#[test]
fn directories_table() {
    let m = matcher();
    let rows = [
        ("Shot.fcpxmld", DirClass::Bundle),
        ("Shot.FCPXMLD", DirClass::Bundle),
        ("sub/Edit Ünïcode.fcpxmld", DirClass::Bundle),
        ("audio", DirClass::Descend),
        (".git", DirClass::Ignored),
        ("render.tmp", DirClass::Temporary),
    ];
    for (name, want) in rows {
        assert_eq!(m.classify_dir(name), want, "{name}");
    }
}

#[test]
fn ready_marker_is_ignored_only_at_the_top() {
    let mut w = WatchConfig::new("/w");
    w.ready_marker = Some("DONE".into());
    let m = RoleMatcher::new(&w).expect("compiles");
    assert_eq!(m.classify("DONE"), Class::Ignored);
    assert_eq!(m.classify("sub/DONE"), Class::Unmatched);
    assert!(m.is_ignored("DONE"));
}

#[test]
fn replaced_patterns_replace_the_defaults() {
    let mut w = WatchConfig::new("/w");
    w.roles = RolePatterns {
        video_left: Some(vec!["*_LE.mov".into()]),
        video_right: Some(vec!["*_RE.mov".into()]),
        ignore: Some(vec!["*.txt".into(), "renders/**".into()]),
        temporary: Some(vec!["*.writing".into()]),
        ..RolePatterns::default()
    };
    let m = RoleMatcher::new(&w).expect("compiles");
    assert_eq!(m.classify("Shot_LE.mov"), Class::Role(FileRole::VideoLeft));
    assert_eq!(m.classify("Shot_RE.MOV"), Class::Role(FileRole::VideoRight));
    // The old eye patterns are gone: `_L.mov` is now a plain video.
    assert_eq!(m.classify("Shot_L.mov"), Class::Role(FileRole::Video));
    assert_eq!(m.classify("notes.txt"), Class::Ignored);
    assert_eq!(m.classify("renders/deep/x.mov"), Class::Ignored);
    assert_eq!(m.classify("x.writing"), Class::Temporary);
    assert!(!m.is_temporary("x.part"), "default temporary list replaced");
    // Hidden files are no longer ignored once `ignore` is replaced...
    assert_eq!(m.classify(".hidden"), Class::Unmatched);
    // ...but Finder's litter always is: an AppleDouble `._Shot_LE.mov` is
    // no second left eye, a `._x.writing` holds nothing back.
    for litter in [".DS_Store", "._Shot_LE.mov", "sub/._x.mov", "._x.writing", "Icon\r"] {
        assert_eq!(m.classify(litter), Class::Ignored, "{litter}");
        assert!(!m.is_temporary(litter), "{litter}");
    }
    for dir in [".Trashes", ".fseventsd", ".Spotlight-V100", "._Shot_010"] {
        assert_eq!(m.classify_dir(dir), DirClass::Ignored, "{dir}");
    }
}

#[test]
fn path_patterns_do_not_cross_folders_with_a_single_star() {
    let mut w = WatchConfig::new("/w");
    w.roles.audio = Some(vec!["audio/*.mp4".into()]);
    let m = RoleMatcher::new(&w).expect("compiles");
    assert_eq!(m.classify("audio/a.mp4"), Class::Role(FileRole::Audio));
    assert_eq!(m.classify("audio/deep/a.mp4"), Class::Role(FileRole::Video));
}

#[test]
fn bad_pattern_is_an_error_naming_role_and_pattern() {
    let mut w = WatchConfig::new("/w");
    w.roles.aime = Some(vec!["[".into()]);
    let err = RoleMatcher::new(&w).unwrap_err().to_string();
    assert!(err.contains("aime") && err.contains('['), "{err}");
}

#[test]
fn flat_stems_table() {
    let m = matcher();
    let rows: &[(&str, bool, Option<&str>)] = &[
        ("A_L.mov", false, Some("A")),
        ("A_R.mov", false, Some("A")),
        ("A.aime", false, Some("A")),
        ("A.en.srt", false, Some("A")),
        ("A_fr.srt", false, Some("A")),
        ("A.EN.m4a", false, Some("A")),
        ("A.en-US.srt", false, Some("A")),
        ("A_audio.mp4", false, Some("A")),
        ("A_audio.de.mp4", false, Some("A")),
        ("A.m4a", false, Some("A")),
        ("A.mov", false, Some("A")),
        ("A.aivu", false, Some("A")),
        ("A.fcpxmld.zip", false, Some("A")),
        ("A.fcpxmld", true, Some("A")),
        ("Shot_010_v002_L.mov", false, Some("Shot_010_v002")),
        ("shot-left.MOV", false, Some("shot")),
        ("shot.R.mp4", false, Some("shot")),
        ("shot.right.mp4", false, Some("shot.right")),
        ("My Film – Take 2-L.mov", false, Some("My Film – Take 2")),
        ("A_L.mov.part", false, Some("A")),
        ("A.en.srt.tmp", false, Some("A")),
        ("notes.txt", false, Some("notes")),
        (".DS_Store", false, None),
        ("folder", true, None),
    ];
    for (name, is_dir, want) in rows {
        assert_eq!(m.flat_stem(name, *is_dir).as_deref(), *want, "{name}");
    }
}
