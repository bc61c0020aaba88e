//! The validation rules on hand-made groups: every API rule, extensions per
//! role, every violation at once, messages, rule ids.

use super::*;
use crate::group::GroupFile;
use std::path::PathBuf;

fn f(name: &str, role: FileRole, lang: Option<&str>) -> GroupFile {
    GroupFile {
        source: PathBuf::from("/x").join(name),
        rel_path: name.into(),
        file_name: name.rsplit('/').next().unwrap_or(name).into(),
        role,
        language: lang.map(str::to_string),
        size: 10,
        mtime_ns: 1,
        dev: None,
        ino: None,
        staged: false,
        media: None,
    }
}

fn group(layout: Layout, perspective: Option<Perspective>, files: Vec<GroupFile>) -> UploadGroup {
    UploadGroup {
        name: "Shot 010".into(),
        key: PathBuf::from("/w/Shot 010"),
        root: PathBuf::from("/w/Shot 010"),
        watch_path: None,
        layout,
        perspective,
        description: None,
        folder_name: None,
        priority: 0,
        files,
        fingerprint: String::new(),
        violations: Vec::new(),
        media_check: crate::config::MediaCheck::Reject,
        unfinished: Vec::new(),
        warnings: Vec::new(),
    }
}

use FileRole::*;
use Layout::*;

fn ids(g: &UploadGroup) -> Vec<&'static str> {
    check(g).iter().map(|v| v.rule).collect()
}

/// One row per rule: a group that breaks exactly that rule, and a group
/// just like it that does not.
#[test]
fn every_api_rule_table() {
    let reg = Some(Perspective::Regular);
    let d180 = Some(Perspective::D180);
    let lr = || vec![f("Shot_L.mov", VideoLeft, None), f("Shot_R.mov", VideoRight, None)];
    let one = || vec![f("Shot.mov", Video, None)];
    let with = |mut base: Vec<GroupFile>, extra: GroupFile| {
        base.push(extra);
        base
    };
    let mut empty_name = group(Mvhevc, reg, one());
    empty_name.name = " ".into();
    let mut zero = one();
    zero[0].size = 0;
    let mut nameless = one();
    nameless[0].file_name = String::new();

    let rows: Vec<(&str, UploadGroup, UploadGroup)> = vec![
        ("video-name-required", empty_name, group(Mvhevc, reg, one())),
        ("files-required", group(Mvhevc, reg, vec![]), group(Mvhevc, reg, one())),
        ("file-name-required", group(Mvhevc, reg, nameless), group(Mvhevc, reg, one())),
        ("empty-file", group(Mvhevc, reg, zero), group(Mvhevc, reg, one())),
        (
            "separate-needs-left-and-right",
            group(Separate, reg, vec![f("Shot_L.mov", VideoLeft, None)]),
            group(Separate, reg, lr()),
        ),
        (
            "separate-no-plain-video",
            group(Separate, reg, with(lr(), f("x.mov", Video, None))),
            group(Separate, reg, lr()),
        ),
        ("needs-exactly-one-video", group(Sbs, reg, with(one(), f("b.mp4", Video, None))), group(Sbs, reg, one())),
        (
            "eye-files-need-separate",
            group(TwoD, reg, with(one(), f("a_L.mov", VideoLeft, None))),
            group(TwoD, reg, one()),
        ),
        (
            "aiv-needs-180",
            group(Aiv, reg, vec![f("a.aivu", Video, None)]),
            group(Aiv, d180, vec![f("a.aivu", Video, None)]),
        ),
        (
            "aiv-needs-aivu-or-aime-and-fcpxmld",
            group(Aiv, d180, vec![f("a.mov", Video, None), f("a.aime", Aime, None)]),
            group(Aiv, d180, vec![f("a.mov", Video, None), f("a.aime", Aime, None), f("a.fcpxmld.zip", Fcpxmld, None)]),
        ),
        (
            "extension-not-allowed",
            group(Tb, reg, vec![f("a.mkv", Video, None)]),
            group(Tb, reg, vec![f("a.MP4", Video, None)]),
        ),
        (
            "at-most-one-aime",
            group(Mvhevc, reg, with(with(one(), f("a.aime", Aime, None)), f("b.aime", Aime, None))),
            group(Mvhevc, reg, with(one(), f("a.aime", Aime, None))),
        ),
        (
            "at-most-one-fcpxmld",
            group(Mvhevc, reg, with(with(one(), f("a.zip", Fcpxmld, None)), f("b.fcpxmld.zip", Fcpxmld, None))),
            group(Mvhevc, reg, with(one(), f("a.zip", Fcpxmld, None))),
        ),
        (
            "language-required",
            group(Mvhevc, reg, with(one(), f("a.srt", Subtitle, None))),
            group(Mvhevc, reg, with(one(), f("a.srt", Subtitle, Some("en")))),
        ),
        ("language-not-allowed", group(Mvhevc, reg, vec![f("a.mov", Video, Some("en"))]), group(Mvhevc, reg, one())),
        (
            "language-region",
            group(Mvhevc, reg, with(one(), f("a.m4a", Audio, Some("en-us")))),
            group(Mvhevc, reg, with(one(), f("a.m4a", Audio, Some("EN")))),
        ),
        (
            "language-unsupported",
            group(Mvhevc, reg, with(one(), f("a.srt", Subtitle, Some("xx")))),
            group(Mvhevc, reg, with(one(), f("a.srt", Subtitle, Some("sw")))),
        ),
        (
            "zxx-audio-only",
            group(Mvhevc, reg, with(one(), f("a.srt", Subtitle, Some("zxx")))),
            group(Mvhevc, reg, with(one(), f("a.m4a", Audio, Some("zxx")))),
        ),
    ];
    let mut covered: Vec<&str> = Vec::new();
    for (rule, bad, good) in &rows {
        assert_eq!(ids(bad), vec![*rule], "{rule}: {:#?}", check(bad));
        assert_eq!(ids(good), Vec::<&str>::new(), "{rule} (good twin): {:#?}", check(good));
        covered.push(rule);
    }
    for r in API_RULES {
        assert!(covered.contains(&r.id), "rule {} has no row", r.id);
    }
}

#[test]
fn extensions_per_role_table() {
    let rows: &[(FileRole, &str, bool)] = &[
        (Video, "a.aivu", true),
        (Video, "a.mov", true),
        (Video, "a.mp4", true),
        (Video, "a.MOV", true),
        (Video, "a.m4v", false),
        (VideoLeft, "a.mov", true),
        (VideoLeft, "a.aivu", false),
        (VideoRight, "a.mp4", true),
        (Audio, "a.m4a", true),
        (Audio, "a.mp4", true),
        (Audio, "a.wav", false),
        (Subtitle, "a.srt", true),
        (Subtitle, "a.vtt", false),
        (Aime, "a.aime", true),
        (Fcpxmld, "a.fcpxmld.zip", true),
        (Fcpxmld, "a.fcpxmld", false),
        (Video, "noextension", false),
    ];
    for (role, name, ok) in rows {
        let lang = role.needs_language().then_some("en");
        let mut files = vec![f(name, *role, lang)];
        let layout = match role {
            VideoLeft | VideoRight => Separate,
            _ => Mvhevc,
        };
        if *role != Video && layout != Separate {
            files.push(f("v.mov", Video, None));
        }
        let g = group(layout, Some(Perspective::Regular), files);
        let has = check(&g).iter().any(|v| v.rule == "extension-not-allowed");
        assert_eq!(!has, *ok, "{role} {name}");
    }
}

#[test]
fn all_violations_are_reported_at_once() {
    let g = group(
        Aiv,
        Some(Perspective::Regular),
        vec![
            f("a_L.mov", VideoLeft, None),
            f("b.srt", Subtitle, Some("zxx")),
            f("c.aime", Aime, None),
            f("d.aime", Aime, None),
        ],
    );
    let got = ids(&g);
    for want in [
        "needs-exactly-one-video",
        "eye-files-need-separate",
        "aiv-needs-180",
        "aiv-needs-aivu-or-aime-and-fcpxmld",
        "at-most-one-aime",
        "zxx-audio-only",
    ] {
        assert!(got.contains(&want), "{want} missing from {got:?}");
    }
}

#[test]
fn messages_name_files_and_fixes() {
    let g =
        group(Mvhevc, Some(Perspective::Regular), vec![f("a.mov", Video, None), f("subs/x.srt", Subtitle, Some("xx"))]);
    let vs = check(&g);
    assert_eq!(vs.len(), 1);
    assert_eq!(vs[0].file.as_deref(), Some("subs/x.srt"));
    assert!(vs[0].message.contains("\"xx\"") && vs[0].message.contains("en es fr"), "{}", vs[0].message);
    let g =
        group(Separate, Some(Perspective::Regular), vec![f("A_L.mov", VideoLeft, None), f("B_L.mov", VideoLeft, None)]);
    let text: Vec<String> = check(&g).iter().map(|v| v.to_string()).collect();
    assert!(text.iter().any(|t| t.contains("found A_L.mov and B_L.mov")), "{text:?}");
    assert!(text.iter().any(|t| t.contains("right-eye") && t.contains("found none")), "{text:?}");
}

#[test]
fn validate_keeps_agent_rules_and_rederives_api_rules() {
    let mut g =
        group(TwoD, Some(Perspective::Regular), vec![f("a_L.mov", VideoLeft, None), f("a_R.mov", VideoRight, None)]);
    g.violations.push(Violation { rule: "unmatched-file", file: Some("notes.txt".into()), message: "x".into() });
    validate(&mut g);
    assert!(g.violations.iter().any(|v| v.rule == "eye-files-need-separate"));
    g.layout = Separate;
    validate(&mut g);
    let ids: Vec<&str> = g.violations.iter().map(|v| v.rule).collect();
    assert_eq!(ids, vec!["unmatched-file"]);
}

#[test]
fn rule_ids_are_unique() {
    let mut all: Vec<&str> = API_RULES.iter().chain(AGENT_RULES).map(|r| r.id).collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n);
}
