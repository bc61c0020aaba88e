//! The vocabulary every stage shares: layouts, perspectives, file roles and
//! the language tags SpatialGen accepts.
//!
//! These are plain values with their wire spelling (`as_str`) and a strict
//! parser (`FromStr`) whose error lists what is accepted, so that a config
//! file, a sidecar and the CLI all reject a bad value with the same words.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $wire:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The spelling the API uses.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire,)+ }
            }

            /// `a | b | c`, for error messages.
            pub fn choices() -> String {
                Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(" | ")
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            /// Case-insensitive: `mvhevc`, `MVHEVC` and `MvHevc` are one layout.
            fn from_str(s: &str) -> Result<Self, String> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str().eq_ignore_ascii_case(s.trim()))
                    .ok_or_else(|| format!("unknown {} {:?}; expected one of {}", $what, s, Self::choices()))
            }
        }
    };
}

wire_enum! {
    /// How the eyes of a video are stored (`layout` in Start Upload Group).
    Layout, "layout" {
        TwoD = "2D",
        Mvhevc = "MVHEVC",
        Sbs = "SBS",
        Tb = "TB",
        Separate = "Separate",
        Aiv = "AIV",
    }
}

wire_enum! {
    /// Field of view of a video (`perspective` in Start Upload Group).
    Perspective, "perspective" {
        Regular = "Regular",
        D180 = "180",
        D360 = "360",
    }
}

wire_enum! {
    /// What one file is to SpatialGen (`fileRole`).
    FileRole, "file role" {
        Video = "video",
        VideoLeft = "video_left",
        VideoRight = "video_right",
        Audio = "audio",
        Subtitle = "subtitle",
        Aime = "aime",
        Fcpxmld = "fcpxmld",
    }
}

impl FileRole {
    /// Roles that must carry a `languageTag`; every other role must not.
    pub fn needs_language(self) -> bool {
        matches!(self, FileRole::Audio | FileRole::Subtitle)
    }

    /// File extensions (lower case, without the dot) the API accepts for the role.
    pub fn extensions(self) -> &'static [&'static str] {
        match self {
            FileRole::Video => &["aivu", "mp4", "mov"],
            FileRole::VideoLeft | FileRole::VideoRight => &["mp4", "mov"],
            FileRole::Audio => &["mp4", "m4a"],
            FileRole::Subtitle => &["srt"],
            FileRole::Aime => &["aime"],
            FileRole::Fcpxmld => &["zip"],
        }
    }
}

wire_enum! {
    /// How the server wants a file's bytes (`uploadStrategy`).
    Strategy, "upload strategy" {
        /// One PUT of the whole file; `complete` takes no parts.
        SinglePut = "single_put",
        /// Parts of `partSizeBytes`; `complete` lists every part's ETag.
        Multipart = "multipart",
    }
}

wire_enum! {
    /// Why the engine holds the queue (the `reason` label of
    /// `spatialgen_paused_info`, and what the upload engine's observer is told).
    PauseKind, "pause reason" {
        /// The API refused the key.
        Auth = "auth",
        /// Outside every upload window.
        Window = "window",
        /// An operator paused the queue (`pause`, or the console).
        Operator = "operator",
    }
}

wire_enum! {
    /// Why a part was sent again (the `reason` label of
    /// `spatialgen_parts_retried_total`).
    RetryReason, "retry reason" {
        RateLimited = "429",
        Timeout = "timeout",
        ServerError = "5xx",
        UrlExpired = "url_expired",
        HttpOther = "http_other",
        Connect = "connect",
        Reset = "reset",
        Stall = "stall",
        EtagMismatch = "etag_mismatch",
        Incomplete = "incomplete",
        Other = "other",
    }
}

/// Language-only tags SpatialGen supports for audio and subtitles.
pub const LANGUAGES: &[&str] = &[
    "en", "es", "fr", "de", "it", "ja", "ko", "pt", "ru", "zh", "af", "am", "ar", "az", "bg", "bn", "bs", "ca", "cs",
    "da", "el", "et", "fa", "fi", "gu", "he", "hi", "hr", "hu", "hy", "id", "is", "ka", "kn", "lt", "lv", "ml", "mr",
    "ms", "nl", "no", "pa", "pl", "ro", "sk", "sl", "sq", "sr", "sv", "sw", "ta", "te", "th", "tl", "tr", "uk", "ur",
    "vi",
];

/// "No linguistic content": accepted for audio only.
pub const NO_LANGUAGE: &str = "zxx";

/// Is `tag` (already lower-cased) acceptable for `role`?
pub fn language_allowed(role: FileRole, tag: &str) -> bool {
    LANGUAGES.contains(&tag) || (role == FileRole::Audio && tag == NO_LANGUAGE)
}

/// mtime of `meta` in nanoseconds since the Unix epoch (negative before
/// it), saturating for times centuries away; 0 if the OS gives none. The one
/// measure grouping records and every later check compares with.
pub fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    match meta.modified() {
        Ok(t) => match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_nanos()).map_or(i64::MIN, |n| -n),
        },
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_is_case_insensitive_and_lists_choices_on_error() {
        assert_eq!("mvhevc".parse::<Layout>(), Ok(Layout::Mvhevc));
        assert_eq!("2d".parse::<Layout>(), Ok(Layout::TwoD));
        assert_eq!("180".parse::<Perspective>(), Ok(Perspective::D180));
        let err = "stereo".parse::<Layout>().unwrap_err();
        assert!(err.contains("2D | MVHEVC | SBS | TB | Separate | AIV"), "{err}");
    }

    #[test]
    fn wire_spelling_round_trips_through_serde() {
        for role in FileRole::ALL {
            let json = serde_json::to_string(role).unwrap();
            assert_eq!(json, format!("\"{}\"", role.as_str()));
            assert_eq!(serde_json::from_str::<FileRole>(&json).unwrap(), *role);
        }
    }

    #[test]
    fn zxx_is_audio_only() {
        assert!(language_allowed(FileRole::Audio, "zxx"));
        assert!(!language_allowed(FileRole::Subtitle, "zxx"));
        assert!(language_allowed(FileRole::Subtitle, "sv"));
        assert!(!language_allowed(FileRole::Audio, "en-us"));
    }
}
