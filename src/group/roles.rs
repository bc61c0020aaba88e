//! Which role a file plays, from glob patterns (globset, case-insensitive).
//!
//! Invariants:
//! - Every path handed in is relative to the export folder (or the drop
//!   folder in flat mode) and uses `/` separators.
//! - A pattern without `/` is matched against the file's *name* (like
//!   `.gitignore`), so `*.srt` finds `subs/clip.srt`; a pattern with `/` is
//!   matched against the whole relative path, and `*` then stays inside one
//!   folder (`**` crosses folders).
//! - Order of questions: the sidecar and the ready marker are always ignored;
//!   then *temporary* (ignored, and blocks "finished"); then *ignore*; then the
//!   roles in two tiers. Tier 1 holds the specific roles (eyes, audio,
//!   subtitle, aime, fcpxmld), tier 2 the catch-all `video`, so `_L.mov`
//!   becomes `video_left` and `audio/x.mp4` becomes `audio` rather than
//!   `video`. Two tier-1 roles matching one file is ambiguous and reported;
//!   no role at all is reported too: neither is ever guessed.
//! - Each role's list, `temporary` and `ignore` can be replaced per watch
//!   folder (`[watch.roles]`); a replaced list replaces the defaults entirely.

use globset::{Candidate, GlobBuilder, GlobSet, GlobSetBuilder};

use super::GroupError;
use super::language;
use crate::config::WatchConfig;
use crate::model::FileRole;

/// The name of the optional per-export metadata file; never uploaded.
pub const SIDECAR_NAME: &str = "spatialgen.toml";

/// Default patterns for the left eye: the stem ends in `_L`, `-L`, `.L`,
/// `_left` or `-left`.
pub const DEFAULT_VIDEO_LEFT: &[&str] =
    &["*_L.{mov,mp4}", "*-L.{mov,mp4}", "*.L.{mov,mp4}", "*_left.{mov,mp4}", "*-left.{mov,mp4}"];
/// Default patterns for the right eye, mirroring the left.
pub const DEFAULT_VIDEO_RIGHT: &[&str] =
    &["*_R.{mov,mp4}", "*-R.{mov,mp4}", "*.R.{mov,mp4}", "*_right.{mov,mp4}", "*-right.{mov,mp4}"];
/// Any other movie is the one `video` (tier 2: every other role wins over it).
pub const DEFAULT_VIDEO: &[&str] = &["*.mov", "*.mp4", "*.aivu"];
/// `.m4a` anywhere; `.mp4` only inside an `audio/` folder or with an `_audio`
/// stem (optionally followed by a language tag).
pub const DEFAULT_AUDIO: &[&str] = &[
    "*.m4a",
    "**/audio/*.mp4",
    "*_audio.mp4",
    "*_audio.*.mp4",
    "*_audio_??.mp4",
    "*_audio_??-*.mp4",
    "*_audio_zxx.mp4",
];
pub const DEFAULT_SUBTITLE: &[&str] = &["*.srt"];
pub const DEFAULT_AIME: &[&str] = &["*.aime"];
/// A zipped bundle, or a `.fcpxmld` bundle directory which the agent zips itself.
pub const DEFAULT_FCPXMLD: &[&str] = &["*.fcpxmld.zip", "*fcpxmld*.zip", "*.fcpxmld"];
/// Files still being written: ignored, and an export holding one is not finished.
pub const DEFAULT_TEMPORARY: &[&str] =
    &["*.tmp", "*.part", "*.partial", "*.crdownload", "*.download", "~*", "*~", ".~lock*"];
/// Files that are simply not part of any video.
pub const DEFAULT_IGNORE: &[&str] = &[".*", "Thumbs.db", "desktop.ini"];

/// Files and folders macOS itself leaves beside a user's files: Finder's
/// `.DS_Store` (folder view settings), AppleDouble `._name` files (a file's
/// resource fork and extended attributes, written beside it on volumes
/// without native xattrs: exFAT, FAT, SMB and NFS shares), `Icon\r` (a custom
/// folder icon), and the volume-root folders of Spotlight, FSEvents and the
/// Trash. None is ever part of a video, and none may reject an export, even
/// when a watch folder's `ignore` patterns are replaced (an AppleDouble
/// `._Shot_L.mov` would otherwise match the left-eye pattern).
pub fn is_finder_litter(name: &str) -> bool {
    name.starts_with("._")
        || matches!(
            name,
            ".DS_Store"
                | "Icon\r"
                | ".Trashes"
                | ".fseventsd"
                | ".Spotlight-V100"
                | ".TemporaryItems"
                | ".DocumentRevisions-V100"
        )
}

/// Is the last component of the export-relative `rel_path` Finder litter?
fn is_litter_at(rel_path: &str) -> bool {
    is_finder_litter(rel_path.rsplit('/').next().unwrap_or(rel_path))
}

/// What a file is to the grouping engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// Uploaded with this role.
    Role(FileRole),
    /// Still being written: not uploaded, and the export is not finished.
    Temporary,
    /// Not part of the video (hidden files, the sidecar, the ready marker, ...).
    Ignored,
    /// No role pattern matches: reported, never guessed.
    Unmatched,
    /// Several roles of the same priority match: reported, never guessed.
    Ambiguous(Vec<FileRole>),
}

/// What a directory inside an export is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirClass {
    /// A `.fcpxmld` bundle: one file to upload, zipped by the agent.
    Bundle,
    /// Skipped with everything inside (hidden folders, ignore patterns).
    Ignored,
    /// Matches a temporary pattern: skipped, and blocks "finished".
    Temporary,
    /// An ordinary folder: its files belong to the export.
    Descend,
}

/// One list of patterns, split by what they are matched against.
#[derive(Debug, Clone)]
struct Patterns {
    /// Patterns without `/`, matched against the file name.
    name: GlobSet,
    /// Patterns with `/`, matched against the whole relative path.
    path: GlobSet,
}

impl Patterns {
    fn compile(key: &'static str, patterns: &[String]) -> Result<Patterns, GroupError> {
        let mut name = GlobSetBuilder::new();
        let mut path = GlobSetBuilder::new();
        for p in patterns {
            let bad = |e: globset::Error| GroupError::Pattern {
                role: key,
                pattern: p.clone(),
                message: e.kind().to_string(),
            };
            let anchored = p.contains('/');
            let glob = GlobBuilder::new(p).case_insensitive(true).literal_separator(anchored).build().map_err(bad)?;
            if anchored {
                path.add(glob);
            } else {
                name.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build().map_err(|e| GroupError::Pattern {
                role: key,
                pattern: patterns.join(", "),
                message: e.to_string(),
            })
        };
        Ok(Patterns { name: build(name)?, path: build(path)? })
    }

    fn is_match(&self, rel_path: &str) -> bool {
        let file_name = rel_path.rsplit('/').next().unwrap_or(rel_path);
        self.name.is_match_candidate(&Candidate::new(file_name))
            || self.path.is_match_candidate(&Candidate::new(rel_path))
    }
}

/// Compiled role patterns of one watch folder. Cheap to clone; build it once
/// per watch folder and ask it about every file.
#[derive(Debug, Clone)]
pub struct RoleMatcher {
    /// Tier 1 (specific roles), in `FileRole` order.
    specific: Vec<(FileRole, Patterns)>,
    /// Tier 2: the catch-all `video`.
    video: Patterns,
    temporary: Patterns,
    ignore: Patterns,
    /// The watch folder's `ready_marker`, which signals "finished" and is not uploaded.
    ready_marker: Option<String>,
}

fn owned(defaults: &[&str]) -> Vec<String> {
    defaults.iter().map(|s| s.to_string()).collect()
}

impl RoleMatcher {
    /// Compile the watch folder's patterns (its `[watch.roles]` lists, or the defaults).
    pub fn new(watch: &WatchConfig) -> Result<RoleMatcher, GroupError> {
        let r = &watch.roles;
        let pick = |key: &'static str, set: &Option<Vec<String>>, defaults: &[&str]| {
            Patterns::compile(key, set.as_deref().unwrap_or(&owned(defaults)))
        };
        let specific = vec![
            (FileRole::VideoLeft, pick("video_left", &r.video_left, DEFAULT_VIDEO_LEFT)?),
            (FileRole::VideoRight, pick("video_right", &r.video_right, DEFAULT_VIDEO_RIGHT)?),
            (FileRole::Audio, pick("audio", &r.audio, DEFAULT_AUDIO)?),
            (FileRole::Subtitle, pick("subtitle", &r.subtitle, DEFAULT_SUBTITLE)?),
            (FileRole::Aime, pick("aime", &r.aime, DEFAULT_AIME)?),
            (FileRole::Fcpxmld, pick("fcpxmld", &r.fcpxmld, DEFAULT_FCPXMLD)?),
        ];
        Ok(RoleMatcher {
            specific,
            video: pick("video", &r.video, DEFAULT_VIDEO)?,
            temporary: pick("temporary", &r.temporary, DEFAULT_TEMPORARY)?,
            ignore: pick("ignore", &r.ignore, DEFAULT_IGNORE)?,
            ready_marker: watch.ready_marker.clone(),
        })
    }

    /// Is this a file still being written (`*.part`, `~*`, ...)? While one is
    /// present the export is not finished. Used by the watcher.
    /// Finder litter never is, even `._Shot.mov.part`: an AppleDouble file
    /// left behind on a share must not hold an export back for ever.
    pub fn is_temporary(&self, rel_path: &str) -> bool {
        !is_litter_at(rel_path) && self.temporary.is_match(rel_path)
    }

    /// Is this file never part of a video: the sidecar, the ready marker, or
    /// an ignore pattern (hidden files, `Thumbs.db`, ...)? Temporary files are
    /// asked about separately ([`RoleMatcher::is_temporary`]).
    pub fn is_ignored(&self, rel_path: &str) -> bool {
        self.is_reserved(rel_path) || self.ignore.is_match(rel_path)
    }

    /// The sidecar and the ready marker, at the top of the export, are the
    /// agent's own files, and Finder's litter anywhere is the Mac's
    /// ([`is_finder_litter`]): always ignored, whatever the patterns say.
    fn is_reserved(&self, rel_path: &str) -> bool {
        rel_path.eq_ignore_ascii_case(SIDECAR_NAME)
            || self.ready_marker.as_deref() == Some(rel_path)
            || is_litter_at(rel_path)
    }

    /// The role of the file at `rel_path`, or why it has none.
    pub fn classify(&self, rel_path: &str) -> Class {
        if self.is_reserved(rel_path) {
            return Class::Ignored;
        }
        if self.is_temporary(rel_path) {
            return Class::Temporary;
        }
        if self.ignore.is_match(rel_path) {
            return Class::Ignored;
        }
        let hits: Vec<FileRole> =
            self.specific.iter().filter(|(_, p)| p.is_match(rel_path)).map(|(role, _)| *role).collect();
        match hits.len() {
            0 if self.video.is_match(rel_path) => Class::Role(FileRole::Video),
            0 => Class::Unmatched,
            1 => Class::Role(hits[0]),
            _ => Class::Ambiguous(hits),
        }
    }

    /// What the directory at `rel_path` is: a bundle to zip, a folder to skip,
    /// or a folder whose files belong to the export.
    pub fn classify_dir(&self, rel_path: &str) -> DirClass {
        if is_litter_at(rel_path) {
            DirClass::Ignored
        } else if self.is_temporary(rel_path) {
            DirClass::Temporary
        } else if self.ignore.is_match(rel_path) {
            DirClass::Ignored
        } else if self.specific.iter().any(|(role, p)| *role == FileRole::Fcpxmld && p.is_match(rel_path)) {
            DirClass::Bundle
        } else {
            DirClass::Descend
        }
    }

    /// Flat mode: the stem that ties a file in a drop folder to its group —
    /// the name without extension, eye suffix (`_L`, `-right`, ...), language
    /// tag (`.en`, `_fr`), `_audio` suffix or `.fcpxmld` part, so that
    /// `A_L.mov`, `A_R.mov`, `A.aime`, `A.en.srt` all give `A`.
    ///
    /// A temporary file gives the stem of the file being written
    /// (`A_L.mov.part` → `A`), so it can hold back its group. `None` for
    /// ignored files. The watcher uses this to key flat-mode exports.
    ///
    /// The stem is NFC ([`crate::model::names`]): it is the group's
    /// `videoName` and, under the drop folder, its key (not a real path), so
    /// `Café_L.mov` spelled NFD and `Café_R.mov` spelled NFC are one video.
    pub fn flat_stem(&self, file_name: &str, is_dir: bool) -> Option<String> {
        self.flat_stem_as_written(file_name, is_dir).map(|s| crate::model::names::nfc(&s).into_owned())
    }

    fn flat_stem_as_written(&self, file_name: &str, is_dir: bool) -> Option<String> {
        if is_dir {
            return match self.classify_dir(file_name) {
                DirClass::Bundle => Some(stem_for_role(file_name, FileRole::Fcpxmld)),
                _ => None,
            };
        }
        match self.classify(file_name) {
            Class::Role(role) => Some(stem_for_role(file_name, role)),
            Class::Temporary => {
                let (inner, _) = file_name.rsplit_once('.')?;
                if inner.is_empty() || self.is_temporary(inner) {
                    return None;
                }
                match self.classify(inner) {
                    Class::Role(role) => Some(stem_for_role(inner, role)),
                    _ => Some(strip_extension(inner).to_string()),
                }
            }
            Class::Ignored => None,
            Class::Unmatched | Class::Ambiguous(_) => Some(strip_extension(file_name).to_string()),
        }
    }
}

/// `name` without its last extension (`a.b.mov` → `a.b`); a name that is
/// all extension (`.mov`) is kept whole.
pub fn strip_extension(name: &str) -> &str {
    match name.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem,
        _ => name,
    }
}

/// The lower-case text after the last `.` of `name` ("" when there is no dot),
/// which is what the API's extension rules look at.
pub fn extension(name: &str) -> String {
    name.rsplit_once('.').map(|(_, ext)| ext.to_ascii_lowercase()).unwrap_or_default()
}

/// Remove a case-insensitive `suffix` from `s`, keeping a non-empty rest.
fn strip_suffix_ci<'a>(s: &'a str, suffix: &str) -> Option<&'a str> {
    let cut = s.len().checked_sub(suffix.len())?;
    if cut == 0 || !s.is_char_boundary(cut) || !s[cut..].eq_ignore_ascii_case(suffix) {
        return None;
    }
    Some(&s[..cut])
}

const EYE_SUFFIXES: &[&str] =
    &["_left", "-left", ".left", "_right", "-right", ".right", "_L", "-L", ".L", "_R", "-R", ".R"];

/// The flat-mode stem of a file whose role is known.
pub fn stem_for_role(file_name: &str, role: FileRole) -> String {
    let mut stem = strip_extension(file_name);
    match role {
        FileRole::VideoLeft | FileRole::VideoRight => {
            if let Some(s) = EYE_SUFFIXES.iter().find_map(|suffix| strip_suffix_ci(stem, suffix)) {
                stem = s;
            }
        }
        FileRole::Audio | FileRole::Subtitle => {
            if let Some(found) = language::find_tag(stem)
                && !found.rest.is_empty()
            {
                stem = found.rest;
            }
            if role == FileRole::Audio
                && let Some(s) = strip_suffix_ci(stem, "_audio")
            {
                stem = s;
            }
        }
        FileRole::Fcpxmld => {
            // `A.fcpxmld.zip` and the bundle directory `A.fcpxmld` both give `A`.
            for suffix in [".fcpxmld", "_fcpxmld", "-fcpxmld"] {
                if let Some(s) = strip_suffix_ci(stem, suffix) {
                    stem = s;
                    break;
                }
            }
            if file_name.to_ascii_lowercase().ends_with(".fcpxmld") {
                stem = strip_extension(file_name);
            }
        }
        FileRole::Video | FileRole::Aime => {}
    }
    stem.to_string()
}

#[cfg(test)]
#[path = "roles_tests.rs"]
mod tests;
