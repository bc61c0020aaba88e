//! From a finished export to an [`UploadGroup`]: roles, languages, layout,
//! the API's validation rules, `.fcpxmld` bundle zipping, fingerprints.
//!
//! Pure: no network I/O; the only filesystem access is reading directory
//! listings and metadata, reading regular files (the sidecar, bundle
//! contents) opened without following links ([`open`]), and writing bundle
//! zips into the staging directory.
//!
//! # Files
//! - `build`: the entry points — one export folder (folders mode) or a drop
//!   folder's stems (flat mode) to groups, the exports under a watch folder,
//!   removal of staged zips.
//! - `walk`: walking a folder, each entry a found file or bundle with its
//!   role, or a problem with it.
//! - `assemble`: found items to a group — fingerprint, staged zips,
//!   languages, layout, violations.
//! - [`roles`] (which file plays which role), [`language`], [`layout`] (and
//!   the sidecar), [`bundle`] (`.fcpxmld` listing and zipping), [`open`]
//!   (reading without following links), [`rules`] (the API's rules).
//! - Tests: `tests.rs`, `special_tests.rs` (FIFOs, devices, oversized
//!   sidecars, device and inode), `mac_tests.rs` (NFD names, Final Cut
//!   Pro bundles, Finder litter), `proptests.rs` (the rules against the
//!   sandbox's); `roles_tests.rs` and `rules_tests.rs` beside their modules.

use std::path::PathBuf;

use serde::Serialize;

use crate::config::MediaCheck;
use crate::media::MediaFacts;
use crate::model::{FileRole, Layout, Perspective};

mod assemble;
mod build;
pub mod bundle;
pub mod inspect;
pub mod language;
pub mod layout;
#[cfg(test)]
mod mac_tests;
pub mod open;
#[cfg(all(test, feature = "sandbox"))]
mod proptests;
pub mod roles;
pub mod rules;
#[cfg(test)]
mod special_tests;
#[cfg(test)]
mod tests;
mod walk;
#[cfg(test)]
pub(crate) use walk::dev_ino;

pub use assemble::{fingerprint, staged_name};
pub use build::{
    GroupError, GroupOptions, build_flat_group, build_flat_groups, build_folder_group, export_folders, folder_name,
    holds_videos, plan_folders, plan_watch, remove_staged,
};
pub use roles::{Class, DirClass, RoleMatcher};
pub use rules::validate;

/// One video as SpatialGen will see it, plus what the agent needs to upload it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadGroup {
    /// `videoName`: the folder name (folders mode) or the shared stem (flat mode).
    pub name: String,
    /// Identity of the export on disk: the export folder (folders mode), or
    /// `<drop folder>/<stem>` (flat mode; not a real path). One export has at
    /// most one live group per key.
    pub key: PathBuf,
    /// The folder the files' `rel_path`s are relative to.
    pub root: PathBuf,
    /// The watch folder this export was found in, if any (not for `upload FOLDER`).
    pub watch_path: Option<PathBuf>,
    pub layout: Layout,
    pub perspective: Option<Perspective>,
    pub description: Option<String>,
    /// SpatialGen dashboard folder.
    pub folder_name: Option<String>,
    /// Queue priority from the watch folder; higher goes first.
    pub priority: i32,
    pub files: Vec<GroupFile>,
    /// Hash of relative paths, sizes and mtimes: the same export is never uploaded twice.
    pub fingerprint: String,
    /// Rules this group breaks; non-empty means rejected, never sent.
    pub violations: Vec<Violation>,
    /// The watch folder's `media_check`: where findings go.
    pub media_check: MediaCheck,
    /// Files whose container is still being written (rule
    /// `media-truncated`, message without the wait): the export is not
    /// finished yet. Empty unless the media check looked.
    pub unfinished: Vec<Violation>,
    /// Findings that do not stop the upload (`media_check = "warn"`).
    pub warnings: Vec<Violation>,
}

impl UploadGroup {
    pub fn is_valid(&self) -> bool {
        self.violations.is_empty()
    }

    /// Valid, and no container still being written: would be queued now.
    pub fn is_ready(&self) -> bool {
        self.is_valid() && self.unfinished.is_empty()
    }

    /// A group with these files and nothing else set (for tests; see
    /// [`GroupFile::for_tests`]).
    #[cfg(test)]
    pub(crate) fn for_tests(name: &str, layout: Layout, files: Vec<GroupFile>) -> UploadGroup {
        UploadGroup {
            name: name.into(),
            key: PathBuf::from(format!("/exports/{name}")),
            root: PathBuf::from(format!("/exports/{name}")),
            watch_path: None,
            layout,
            perspective: Some(Perspective::Regular),
            description: None,
            folder_name: None,
            priority: 0,
            files,
            fingerprint: String::new(),
            violations: Vec::new(),
            media_check: MediaCheck::Reject,
            unfinished: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// The export `name` in watch folder `watch`: one `video.mov` of
    /// `size` bytes, 2D, a fingerprint of its own (for tests).
    #[cfg(test)]
    pub(crate) fn one_video_in(watch: &std::path::Path, name: &str, size: u64) -> UploadGroup {
        let root = watch.join(name);
        let video = GroupFile {
            source: root.join("video.mov"),
            size,
            mtime_ns: 1,
            ..GroupFile::for_tests("video.mov", FileRole::Video)
        };
        UploadGroup {
            key: root.clone(),
            root,
            watch_path: Some(watch.to_path_buf()),
            perspective: None,
            fingerprint: format!("fp-{}-{name}", watch.display()),
            ..UploadGroup::for_tests(name, Layout::TwoD, vec![video])
        }
    }

    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// One file of a group.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupFile {
    /// Absolute path of the bytes to upload (for a bundle directory: the staged zip).
    pub source: PathBuf,
    /// The item's path relative to the group's root, with `/` separators
    /// (for a bundle: the `.fcpxmld` directory).
    pub rel_path: String,
    /// `fileName` sent to the API.
    pub file_name: String,
    pub role: FileRole,
    /// Lower-case language-only tag; `Some` exactly for audio and subtitle.
    pub language: Option<String>,
    /// Size of `source` in bytes.
    pub size: u64,
    /// mtime of `source` in nanoseconds since the Unix epoch; with `size`,
    /// how the engine notices a file changed under it.
    pub mtime_ns: i64,
    /// Device and inode of `source` when it was grouped (`None` where the
    /// platform has none, and for a bundle's zip, which a re-zip replaces).
    pub dev: Option<u64>,
    pub ino: Option<u64>,
    /// `source` is a file the agent made (a bundle zip) and removes when the group ends.
    pub staged: bool,
    /// What the container says about itself, when the media check looked
    /// inside and found a whole file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaFacts>,
}

#[cfg(test)]
impl GroupFile {
    /// A file of one byte named `name` (also its path) in this role, nothing
    /// else known (for tests).
    pub(crate) fn for_tests(name: &str, role: FileRole) -> GroupFile {
        GroupFile {
            source: PathBuf::from(name),
            rel_path: name.into(),
            file_name: name.into(),
            role,
            language: None,
            size: 1,
            mtime_ns: 0,
            dev: None,
            ino: None,
            staged: false,
            media: None,
        }
    }
}

/// A broken rule, in plain words, naming the file when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Violation {
    /// Short stable identifier of the rule, e.g. `separate-needs-left-and-right`.
    pub rule: &'static str,
    /// The file concerned, relative to the group root.
    pub file: Option<String>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Violation {
    /// `file: message [rule-id]`: how `status`, `plan`, the log and the
    /// history name a finding.
    pub fn tagged(&self) -> String {
        format!("{self} [{}]", self.rule)
    }

    /// Every violation of `list`, tagged, joined with `; `.
    pub fn join_tagged(list: &[Violation]) -> String {
        list.iter().map(Violation::tagged).collect::<Vec<_>>().join("; ")
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{file}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}
