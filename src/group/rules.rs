//! The Direct Upload API's validation rules, checked before anything is sent.
//!
//! SpatialGen refuses a Start Upload Group request that breaks one of these
//! rules; the agent checks the same rules itself so that a bad export is
//! reported in plain words (naming the file and the fix) instead of becoming
//! a failed upload. Every rule has a stable id (`Violation::rule`) and its own
//! message, and [`check`] reports every broken rule at once.
//!
//! Two kinds of rules exist. *API rules* ([`API_RULES`]) are the server's:
//! [`check`] derives them from the group alone, so a caller that changes the
//! layout, perspective or name can re-run them with [`validate`]. *Agent
//! rules* ([`AGENT_RULES`]) come from looking at the export on disk (a file
//! no pattern matches, a bad sidecar, ...): they are found while scanning and
//! kept by [`validate`].

use crate::model::{FileRole, LANGUAGES, Layout, NO_LANGUAGE, Perspective, language_allowed};

use super::roles::extension;
use super::{UploadGroup, Violation};

/// One rule: its id and what it asks for.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub id: &'static str,
    pub summary: &'static str,
}

/// The server's rules (spatialgen-api.md, "Start Upload Group").
pub const API_RULES: &[Rule] = &[
    Rule { id: "video-name-required", summary: "videoName must not be empty" },
    Rule { id: "files-required", summary: "a group has at least one file" },
    Rule { id: "file-name-required", summary: "every file has a name" },
    Rule { id: "empty-file", summary: "sizeBytes is a positive integer" },
    Rule {
        id: "separate-needs-left-and-right",
        summary: "layout Separate: exactly one video_left and one video_right",
    },
    Rule { id: "separate-no-plain-video", summary: "layout Separate: no video file" },
    Rule { id: "needs-exactly-one-video", summary: "every layout but Separate: exactly one video file" },
    Rule { id: "eye-files-need-separate", summary: "video_left/video_right only with layout Separate" },
    Rule { id: "aiv-needs-180", summary: "layout AIV: perspective 180" },
    Rule {
        id: "aiv-needs-aivu-or-aime-and-fcpxmld",
        summary: "layout AIV: an .aivu video, or both an aime and an fcpxmld file",
    },
    Rule { id: "extension-not-allowed", summary: "each role accepts certain extensions" },
    Rule { id: "at-most-one-aime", summary: "at most one aime file" },
    Rule { id: "at-most-one-fcpxmld", summary: "at most one fcpxmld file" },
    Rule { id: "language-required", summary: "audio and subtitle files carry a language tag" },
    Rule { id: "language-not-allowed", summary: "only audio and subtitle files carry a language tag" },
    Rule { id: "language-region", summary: "language-only tags (en, not en-US)" },
    Rule { id: "language-unsupported", summary: "the tag is one SpatialGen supports" },
    Rule { id: "zxx-audio-only", summary: "zxx (no linguistic content) is for audio only" },
];

/// The agent's own rules, found while looking at the export on disk.
pub const AGENT_RULES: &[Rule] = &[
    Rule { id: "unmatched-file", summary: "every file has a role or is ignored" },
    Rule { id: "ambiguous-role", summary: "no file matches two roles of the same priority" },
    Rule { id: "duplicate-file-name", summary: "file name and role identify one file" },
    Rule { id: "temporary-file-present", summary: "no file is still being written" },
    Rule { id: "unreadable-file", summary: "every file can be read" },
    Rule { id: "symlink-not-followed", summary: "symbolic links only with follow_symlinks" },
    Rule { id: super::layout::SIDECAR_RULE, summary: "spatialgen.toml is valid" },
    Rule { id: super::inspect::TRUNCATED, summary: "every container is whole: moov present, samples inside the file" },
    Rule { id: super::inspect::UNREADABLE, summary: "every .mov/.mp4/.m4a/.aivu is an ISO-BMFF/QuickTime file" },
    Rule {
        id: super::inspect::EYES_MISMATCH,
        summary: "Separate eyes match in duration (one frame), resolution, frame rate and codec",
    },
    Rule { id: super::inspect::LAYOUT_MISMATCH, summary: "layout MVHEVC only on a video with two views" },
];

/// Is `id` one of the server's rules (re-derived by [`validate`])?
pub fn is_api_rule(id: &str) -> bool {
    API_RULES.iter().any(|r| r.id == id)
}

fn v(rule: &'static str, file: Option<&str>, message: String) -> Violation {
    debug_assert!(is_api_rule(rule), "{rule} is not listed in API_RULES");
    Violation { rule, file: file.map(str::to_string), message }
}

/// `a, b and c` for messages.
fn list(names: &[&str]) -> String {
    match names {
        [] => "none".to_string(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// Every API rule `group` breaks, in a stable order.
pub fn check(group: &UploadGroup) -> Vec<Violation> {
    let mut out = Vec::new();
    let named = |role: FileRole| -> Vec<&str> {
        group.files.iter().filter(|f| f.role == role).map(|f| f.rel_path.as_str()).collect()
    };
    let (videos, lefts, rights) = (named(FileRole::Video), named(FileRole::VideoLeft), named(FileRole::VideoRight));

    if group.name.trim().is_empty() {
        out.push(v("video-name-required", None, "the video has no name; set videoName in spatialgen.toml".into()));
    }
    if group.files.is_empty() {
        out.push(v(
            "files-required",
            None,
            "no file to upload was found; an export needs at least a video (.mov, .mp4 or .aivu)".into(),
        ));
    }

    if group.files.is_empty() {
        // Nothing else to say about the layout of no files.
    } else if group.layout == Layout::Separate {
        for (eyes, role, example) in [(&lefts, "video_left", "Shot_L.mov"), (&rights, "video_right", "Shot_R.mov")] {
            if eyes.len() != 1 {
                let which = if role == "video_left" { "left" } else { "right" };
                let found = if eyes.is_empty() { "found none".to_string() } else { format!("found {}", list(eyes)) };
                out.push(v(
                    "separate-needs-left-and-right",
                    None,
                    format!(
                        "layout Separate needs exactly one {which}-eye video ({role}, named like {example}); {found}"
                    ),
                ));
            }
        }
        for f in &videos {
            out.push(v(
                "separate-no-plain-video",
                Some(f),
                "layout Separate takes a left and a right eye file, not a single video; rename it with _L/_R or remove it".into(),
            ));
        }
    } else {
        if videos.len() != 1 {
            let found = if videos.is_empty() { "found none".to_string() } else { format!("found {}", list(&videos)) };
            out.push(v(
                "needs-exactly-one-video",
                None,
                format!("layout {} needs exactly one video file (.mov, .mp4 or .aivu); {found}", group.layout),
            ));
        }
        for f in lefts.iter().chain(&rights) {
            out.push(v(
                "eye-files-need-separate",
                Some(f),
                format!(
                    "a left/right eye file needs layout Separate, but the layout is {}; set layout = \"Separate\" or rename the file",
                    group.layout
                ),
            ));
        }
    }

    if group.layout == Layout::Aiv && !group.files.is_empty() {
        if group.perspective != Some(Perspective::D180) {
            let now = group.perspective.map_or("not set".to_string(), |p| p.to_string());
            out.push(v(
                "aiv-needs-180",
                None,
                format!("layout AIV needs perspective 180 (it is {now}); set perspective = \"180\""),
            ));
        }
        let aivu = group.files.iter().any(|f| f.role == FileRole::Video && extension(&f.file_name) == "aivu");
        let aime = !named(FileRole::Aime).is_empty();
        let fcpxmld = !named(FileRole::Fcpxmld).is_empty();
        let satisfied = aivu || (aime && fcpxmld);
        if !satisfied {
            let missing = match (aime, fcpxmld) {
                (false, false) => "an .aime file and an .fcpxmld bundle",
                (true, false) => "an .fcpxmld bundle",
                _ => "an .aime file",
            };
            out.push(v(
                "aiv-needs-aivu-or-aime-and-fcpxmld",
                None,
                format!("layout AIV needs an .aivu video, or {missing} next to the video"),
            ));
        }
    }

    for (role, rule) in [(FileRole::Aime, "at-most-one-aime"), (FileRole::Fcpxmld, "at-most-one-fcpxmld")] {
        let files = named(role);
        if files.len() > 1 {
            out.push(v(rule, None, format!("a video takes at most one {role} file; found {}", list(&files))));
        }
    }

    for f in &group.files {
        let file = Some(f.rel_path.as_str());
        if f.file_name.trim().is_empty() {
            out.push(v("file-name-required", file, "the file has no name".into()));
        }
        if f.size == 0 {
            out.push(v("empty-file", file, "the file is empty (0 bytes); was the export interrupted?".into()));
        }
        let ext = extension(&f.file_name);
        if !f.file_name.trim().is_empty() && !f.role.extensions().contains(&ext.as_str()) {
            let shown = if ext.is_empty() { "no extension".to_string() } else { format!(".{ext}") };
            let allowed: Vec<String> = f.role.extensions().iter().map(|e| format!(".{e}")).collect();
            out.push(v(
                "extension-not-allowed",
                file,
                format!("a {} file must end in {}, not {shown}", f.role, allowed.join(" or ")),
            ));
        }
        match (&f.language, f.role.needs_language()) {
            (None, true) => {
                let (key, example) = if f.role == FileRole::Audio {
                    ("audio_language", "clip.en.m4a")
                } else {
                    ("subtitle_language", "clip.en.srt")
                };
                out.push(v(
                    "language-required",
                    file,
                    format!(
                        "{} files need a language; name it like {example} or set {key} for the watch folder",
                        f.role
                    ),
                ));
            }
            (Some(tag), false) => out.push(v(
                "language-not-allowed",
                file,
                format!("only audio and subtitle files carry a language, not a {} file (got {tag:?})", f.role),
            )),
            (Some(tag), true) => {
                let tag = tag.to_ascii_lowercase();
                if tag.contains(['-', '_']) {
                    out.push(v(
                        "language-region",
                        file,
                        format!(
                            "SpatialGen takes language-only tags; use {:?} instead of {tag:?}",
                            super::language::primary_subtag(&tag)
                        ),
                    ));
                } else if tag == NO_LANGUAGE && f.role != FileRole::Audio {
                    out.push(v(
                        "zxx-audio-only",
                        file,
                        "zxx (no linguistic content) is accepted for audio only; give the subtitles their language"
                            .into(),
                    ));
                } else if !language_allowed(f.role, &tag) {
                    let zxx = if f.role == FileRole::Audio { " zxx" } else { "" };
                    out.push(v(
                        "language-unsupported",
                        file,
                        format!("language {tag:?} is not supported; accepted: {}{zxx}", LANGUAGES.join(" ")),
                    ));
                }
            }
            (None, false) => {}
        }
    }
    out
}

/// Re-derive the API rules and the media content rules of `group` after its
/// layout, perspective, name or files changed, keeping the agent rules found
/// on disk. Cheap: no I/O.
pub fn validate(group: &mut UploadGroup) {
    group.violations.retain(|v| !is_api_rule(v.rule));
    let fresh = check(group);
    group.violations.extend(fresh);
    super::inspect::revalidate(group);
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
