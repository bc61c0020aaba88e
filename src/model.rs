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

/// Unicode normalization of names, for the filesystems that hand out the
/// same name in two spellings.
///
/// macOS (APFS, HFS+) and Finder give accented names in decomposed form
/// (NFD: `e` + U+0301) as often as composed (NFC: `é`); Windows, Linux
/// tools, browsers and the SpatialGen dashboard use NFC. The rule:
/// - **What the agent names** (a group's `videoName`, each file's
///   `fileName` and path relative to its export, and so the fingerprint)
///   is NFC on every platform: the server sees one spelling, and an export
///   seen once as NFD and once as NFC has one fingerprint.
/// - **The path used to open, move or delete a file** is always the bytes
///   the OS gave. On Linux NFC and NFD are two different names (two files
///   may sit side by side), so a re-encoded path could name nothing, or
///   another file.
/// - **The journal's identity of an export** (its key) folds the two
///   spellings only where the filesystem itself does
///   ([`FOLDS_NORMALIZATION`]: macOS): there `Café` typed in a terminal
///   and `Café` listed by the OS are one folder, and must be one group. On
///   Linux they are two folders and stay two groups: folding them would
///   let one's row stand for the other's and lose one of them.
pub mod names {
    use std::borrow::Cow;

    use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

    /// Does this platform's filesystem treat the NFC and NFD spellings of a
    /// name as one name? APFS and HFS+ do (both are normalization-insensitive);
    /// ext4, XFS, btrfs and NTFS compare bytes or UTF-16 units.
    pub const FOLDS_NORMALIZATION: bool = cfg!(target_os = "macos");

    /// `s` in Unicode Normalization Form C (borrowed when it already is).
    pub fn nfc(s: &str) -> Cow<'_, str> {
        match is_nfc_quick(s.chars()) {
            IsNormalized::Yes => Cow::Borrowed(s),
            _ => Cow::Owned(s.nfc().collect()),
        }
    }

    /// The bytes that identify an export path in the journal, from the
    /// path's raw bytes: NFC when `fold` (pass [`FOLDS_NORMALIZATION`]) and
    /// the bytes are UTF-8; otherwise the bytes unchanged (a name that is
    /// not UTF-8 has no normalization to fold).
    pub fn identity_bytes(raw: Vec<u8>, fold: bool) -> Vec<u8> {
        if !fold {
            return raw;
        }
        match std::str::from_utf8(&raw) {
            Ok(text) => match nfc(text) {
                Cow::Borrowed(_) => raw,
                Cow::Owned(folded) => folded.into_bytes(),
            },
            Err(_) => raw,
        }
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

    const NFD: &str = "Cafe\u{301} cre\u{300}me";
    const NFC: &str = "Caf\u{e9} cr\u{e8}me";

    #[test]
    fn names_are_composed_and_already_composed_names_are_borrowed() {
        assert_ne!(NFD, NFC);
        assert_eq!(names::nfc(NFD), NFC);
        assert!(matches!(names::nfc(NFC), std::borrow::Cow::Borrowed(_)));
        assert!(matches!(names::nfc("Shot_010_L.mov"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn identity_folds_the_two_spellings_only_when_the_platform_does() {
        let nfd = format!("/Users/ed/Movies/{NFD}").into_bytes();
        let nfc = format!("/Users/ed/Movies/{NFC}").into_bytes();
        // macOS: one folder, one identity.
        assert_eq!(names::identity_bytes(nfd.clone(), true), nfc);
        assert_eq!(names::identity_bytes(nfc.clone(), true), nfc);
        // Linux, Windows: two folders, two identities, each its own bytes.
        assert_eq!(names::identity_bytes(nfd.clone(), false), nfd);
        assert_eq!(names::identity_bytes(nfc.clone(), false), nfc);
        // Bytes that are not UTF-8 are kept as they are.
        let odd = b"/exports/caf\xe9".to_vec();
        assert_eq!(names::identity_bytes(odd.clone(), true), odd);
        assert_eq!(names::FOLDS_NORMALIZATION, cfg!(target_os = "macos"));
    }
}
