//! `[[watch]]` entries: one watched folder each, how its exports are cut into
//! videos ([`WatchMode`], [`LayoutChoice`], [`RolePatterns`]) and what happens
//! to the files once uploaded ([`AfterUpload`]), with their defaults.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::units::Dur;
use crate::model::{Layout, Perspective};

/// How a watch folder is cut into videos.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WatchMode {
    /// Each direct subfolder is one video.
    #[default]
    Folders,
    /// Files directly in the folder, grouped by name stem.
    Flat,
}

/// `layout = "auto"` or a fixed layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayoutChoice {
    #[default]
    Auto,
    Fixed(Layout),
}

impl FromStr for LayoutChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().eq_ignore_ascii_case("auto") {
            return Ok(LayoutChoice::Auto);
        }
        s.parse::<Layout>()
            .map(LayoutChoice::Fixed)
            .map_err(|_| format!("unknown layout {s:?}; expected auto | {}", Layout::choices()))
    }
}

impl fmt::Display for LayoutChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutChoice::Auto => f.write_str("auto"),
            LayoutChoice::Fixed(l) => l.fmt(f),
        }
    }
}

impl<'de> Deserialize<'de> for LayoutChoice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for LayoutChoice {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `media_check`: what the container probe's findings mean for an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MediaCheck {
    /// A truncated, unreadable or mismatched render is rejected, never sent.
    #[default]
    Reject,
    /// Findings are reported (plan, the group's history, the log) and the
    /// upload goes on.
    Warn,
    /// Files are not looked inside.
    Off,
}

impl MediaCheck {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaCheck::Reject => "reject",
            MediaCheck::Warn => "warn",
            MediaCheck::Off => "off",
        }
    }
}

impl fmt::Display for MediaCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to the source files once their group is in the library.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AfterUpload {
    #[default]
    Keep,
    Delete,
    Move,
}

/// `[watch.roles]`: glob patterns (globset syntax, case-insensitive) that
/// replace the default patterns of one role. A pattern is matched against the
/// file's path relative to the export folder, with `/` separators.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RolePatterns {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_left: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_right: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtitle: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aime: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fcpxmld: Option<Vec<String>>,
    /// Temporary files: ignored, and an export is not finished while one is present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporary: Option<Vec<String>>,
    /// Files that are simply ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore: Option<Vec<String>>,
}

impl RolePatterns {
    /// `(key, patterns)` for every role that was set.
    pub fn entries(&self) -> Vec<(&'static str, &Vec<String>)> {
        [
            ("video_left", &self.video_left),
            ("video_right", &self.video_right),
            ("video", &self.video),
            ("audio", &self.audio),
            ("subtitle", &self.subtitle),
            ("aime", &self.aime),
            ("fcpxmld", &self.fcpxmld),
            ("temporary", &self.temporary),
            ("ignore", &self.ignore),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
        .collect()
    }
}

/// `[[watch]]`: one watched folder and how its exports become videos.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    pub path: PathBuf,
    /// The folder's fleet-wide name: each node may mount it at its own
    /// `path`. Required when `[journal]` has `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub mode: WatchMode,
    #[serde(default)]
    pub layout: LayoutChoice,
    /// What `auto` uses when there is no L/R pair and no `.aivu`.
    #[serde(default = "WatchConfig::default_default_layout")]
    pub default_layout: Layout,
    /// `None`: not set; a projection the video declares decides (`equi` is
    /// 360, `hequ` 180), else `Regular`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perspective: Option<Perspective>,
    /// Quiet time before an export counts as finished.
    #[serde(default = "WatchConfig::default_settle")]
    pub settle: Dur,
    /// If set, an export is finished as soon as a file of this name appears in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_marker: Option<String>,
    /// If set, poll at this interval instead of relying on OS events (network shares).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll: Option<Dur>,
    /// Full rescan interval (events can be lost).
    #[serde(default = "WatchConfig::default_rescan")]
    pub rescan: Dur,
    #[serde(default)]
    pub follow_symlinks: bool,
    #[serde(default)]
    pub after_upload: AfterUpload,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub move_to: Option<PathBuf>,
    /// Language of audio files whose names carry no tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_language: Option<String>,
    /// Language of subtitle files whose names carry no tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtitle_language: Option<String>,
    /// SpatialGen dashboard folder for these videos.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Higher goes first.
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub roles: RolePatterns,
    /// Look inside `.mov`/`.mp4`/`.m4a`/`.aivu` files before queueing.
    #[serde(default)]
    pub media_check: MediaCheck,
    /// How long a quiet export whose container still looks unfinished waits
    /// before it is rejected as truncated.
    #[serde(default = "WatchConfig::default_media_wait")]
    pub media_wait: Dur,
}

impl WatchConfig {
    fn default_default_layout() -> Layout {
        Layout::Mvhevc
    }
    fn default_media_wait() -> Dur {
        Dur::secs(600)
    }
    fn default_settle() -> Dur {
        Dur::secs(30)
    }
    fn default_rescan() -> Dur {
        Dur::secs(600)
    }

    /// A watch entry for `path` with every default (used by `upload`, `demo` and tests).
    pub fn new(path: impl Into<PathBuf>) -> WatchConfig {
        let mut w: WatchConfig = toml::from_str("path = \"\"").expect("defaults are valid");
        w.path = path.into();
        w
    }
}
