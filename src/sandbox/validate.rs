//! The server side of "Start Upload Group" validation, on the raw JSON body.
//!
//! Deliberately written from `spatialgen-api.md` alone, not from the agent's
//! grouping code: the two are compared by a property test, which only means
//! something if they were not derived from each other. That is also why the
//! extension table is spelled out here instead of borrowed.
//!
//! Every broken rule yields its own message; all of them are collected, so a
//! client sees everything wrong with a request at once. Optional fields that
//! are JSON `null` count as absent (serializers often write `null` for "none").

use serde_json::{Map, Value};

use crate::model::{FileRole, Layout, Perspective};

/// The Start Upload Group rules on a raw JSON body; `Err` holds every
/// violation, each rule with its own plain message.
pub fn validate_start_request(body: &Value) -> Result<(), Vec<String>> {
    let mut errs = Vec::new();
    let Some(obj) = body.as_object() else {
        return Err(vec!["the request body must be a JSON object".to_string()]);
    };

    match field(obj, "videoName") {
        None => errs.push("videoName is required".to_string()),
        Some(Value::String(s)) if s.trim().is_empty() => errs.push("videoName must not be empty".to_string()),
        Some(Value::String(_)) => {}
        Some(_) => errs.push("videoName must be a string".to_string()),
    }
    for name in ["description", "folderName"] {
        if let Some(v) = field(obj, name)
            && !v.is_string()
        {
            errs.push(format!("{name} must be a string"));
        }
    }

    let layout = match field(obj, "layout") {
        None => {
            errs.push("layout is required".to_string());
            None
        }
        Some(Value::String(s)) => match wire::<Layout>(Layout::ALL, s, |l| l.as_str()) {
            Some(l) => Some(l),
            None => {
                errs.push(format!("layout {s:?} is unknown; expected one of {}", Layout::choices()));
                None
            }
        },
        Some(_) => {
            errs.push("layout must be a string".to_string());
            None
        }
    };

    // `Ok(None)`: absent; `Err(())`: present but wrong (already reported).
    let perspective: Result<Option<Perspective>, ()> = match field(obj, "perspective") {
        None => Ok(None),
        Some(Value::String(s)) => match wire::<Perspective>(Perspective::ALL, s, |p| p.as_str()) {
            Some(p) => Ok(Some(p)),
            None => {
                errs.push(format!("perspective {s:?} is unknown; expected one of {}", Perspective::choices()));
                Err(())
            }
        },
        Some(_) => {
            errs.push(format!("perspective must be a string (one of {})", Perspective::choices()));
            Err(())
        }
    };

    let files: &[Value] = match field(obj, "files") {
        None => {
            errs.push("files is required".to_string());
            &[]
        }
        Some(Value::Array(a)) if a.is_empty() => {
            errs.push("files must contain at least one file".to_string());
            &[]
        }
        Some(Value::Array(a)) => a,
        Some(_) => {
            errs.push("files must be an array".to_string());
            &[]
        }
    };

    // Per-file rules. `roles` keeps what was understood, for the group rules.
    let mut roles: Vec<(FileRole, String)> = Vec::new();
    for (i, item) in files.iter().enumerate() {
        let Some(f) = item.as_object() else {
            errs.push(format!("files[{i}] must be a JSON object"));
            continue;
        };
        let name = match field(f, "fileName") {
            None => {
                errs.push(format!("files[{i}]: fileName is required"));
                None
            }
            Some(Value::String(s)) if s.trim().is_empty() => {
                errs.push(format!("files[{i}]: fileName must not be empty"));
                None
            }
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => {
                errs.push(format!("files[{i}]: fileName must be a string"));
                None
            }
        };
        let at = match name {
            Some(n) => format!("files[{i}] ({n})"),
            None => format!("files[{i}]"),
        };

        match field(f, "sizeBytes") {
            None => errs.push(format!("{at}: sizeBytes is required")),
            Some(v) => {
                if v.as_u64().is_none_or(|n| n == 0) {
                    errs.push(format!("{at}: sizeBytes must be a positive integer (got {v})"));
                }
            }
        }

        let role = match field(f, "fileRole") {
            None => {
                errs.push(format!("{at}: fileRole is required"));
                None
            }
            Some(Value::String(s)) => match wire::<FileRole>(FileRole::ALL, s, |r| r.as_str()) {
                Some(r) => Some(r),
                None => {
                    errs.push(format!("{at}: fileRole {s:?} is unknown; expected one of {}", FileRole::choices()));
                    None
                }
            },
            Some(_) => {
                errs.push(format!("{at}: fileRole must be a string"));
                None
            }
        };
        let Some(role) = role else { continue };

        if let Some(n) = name {
            let allowed = extensions(role);
            let ext = n.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
            if !ext.as_deref().is_some_and(|e| allowed.contains(&e)) {
                let list = allowed.iter().map(|e| format!(".{e}")).collect::<Vec<_>>().join(", ");
                let article =
                    if matches!(role, FileRole::Audio | FileRole::Aime | FileRole::Fcpxmld) { "an" } else { "a" };
                errs.push(format!("{at}: {article} {role} file must have one of the extensions {list}"));
            }
        }

        let needs_language = matches!(role, FileRole::Audio | FileRole::Subtitle);
        match field(f, "languageTag") {
            None if needs_language => errs.push(format!("{at}: languageTag is required for {role} files")),
            None => {}
            Some(_) if !needs_language => errs
                .push(format!("{at}: languageTag must be omitted for {role} files (only audio and subtitle have one)")),
            Some(Value::String(tag)) => {
                let tag = tag.to_lowercase();
                if tag.contains(['-', '_']) {
                    errs.push(format!(
                        "{at}: languageTag {tag:?} must be language-only, without a region (e.g. \"en\")"
                    ));
                } else if tag == crate::model::NO_LANGUAGE {
                    if role != FileRole::Audio {
                        errs.push(format!(
                            "{at}: languageTag \"zxx\" (no linguistic content) is accepted for audio only, not for {role}"
                        ));
                    }
                } else if !crate::model::LANGUAGES.contains(&tag.as_str()) {
                    errs.push(format!("{at}: languageTag {tag:?} is not a supported language"));
                }
            }
            Some(_) => errs.push(format!("{at}: languageTag must be a string")),
        }
        roles.push((role, name.unwrap_or_default().to_string()));
    }

    // Group rules: only meaningful when the layout is known and every file
    // was understood (otherwise the counts would mislead).
    let all_understood = roles.len() == files.len() && !files.is_empty();
    if let (Some(layout), true) = (layout, all_understood) {
        let count = |r: FileRole| roles.iter().filter(|(x, _)| *x == r).count();
        let (video, left, right) = (count(FileRole::Video), count(FileRole::VideoLeft), count(FileRole::VideoRight));
        if layout == Layout::Separate {
            if left != 1 {
                errs.push(format!("layout Separate needs exactly one video_left file (found {left})"));
            }
            if right != 1 {
                errs.push(format!("layout Separate needs exactly one video_right file (found {right})"));
            }
            if video > 0 {
                errs.push(format!(
                    "layout Separate must not have a video file (found {video}); use video_left and video_right"
                ));
            }
        } else {
            if video != 1 {
                errs.push(format!("layout {layout} needs exactly one video file (found {video})"));
            }
            if left + right > 0 {
                errs.push(format!(
                    "layout {layout} must not have video_left or video_right files (found {}); only layout Separate has them",
                    left + right
                ));
            }
        }
        let (aime, fcpxmld) = (count(FileRole::Aime), count(FileRole::Fcpxmld));
        if aime > 1 {
            errs.push(format!("at most one aime file per group (found {aime})"));
        }
        if fcpxmld > 1 {
            errs.push(format!("at most one fcpxmld file per group (found {fcpxmld})"));
        }
        if layout == Layout::Aiv {
            match perspective {
                Ok(Some(Perspective::D180)) | Err(()) => {}
                Ok(Some(p)) => errs.push(format!("layout AIV needs perspective 180 (got {p})")),
                Ok(None) => errs.push("layout AIV needs perspective 180 (perspective is missing)".to_string()),
            }
            let aivu = roles.iter().any(|(r, n)| *r == FileRole::Video && n.to_ascii_lowercase().ends_with(".aivu"));
            let pair = aime >= 1 && fcpxmld >= 1;
            if !(aivu || pair) {
                errs.push(
                    "layout AIV needs either a .aivu video file, or both an aime and an fcpxmld file".to_string(),
                );
            }
        }
    }

    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

/// A field, with JSON `null` taken as absent.
fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).filter(|v| !v.is_null())
}

/// Exact wire spelling only: the API's enums are case-sensitive, unlike the
/// agent's config parser.
fn wire<T: Copy>(all: &[T], s: &str, spell: impl Fn(T) -> &'static str) -> Option<T> {
    all.iter().copied().find(|v| spell(*v) == s)
}

/// Extensions per role, as the API document lists them.
fn extensions(role: FileRole) -> &'static [&'static str] {
    match role {
        FileRole::Video => &["aivu", "mp4", "mov"],
        FileRole::VideoLeft | FileRole::VideoRight => &["mp4", "mov"],
        FileRole::Audio => &["mp4", "m4a"],
        FileRole::Subtitle => &["srt"],
        FileRole::Aime => &["aime"],
        FileRole::Fcpxmld => &["zip"],
    }
}
