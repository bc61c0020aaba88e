//! Language tags of audio and subtitle files, from their names.
//!
//! Recognised, case-insensitively, just before the extension:
//! - a dotted tag: `clip.en.srt`, `clip.EN.m4a`, `clip.en-US.srt`,
//!   `clip.eng.srt` (two or three letters, optional subtags);
//! - an underscore tag: `clip_en.srt`, `clip_en-GB.srt`, `clip_zxx.m4a` (two
//!   letters, or `zxx`, because three-letter words such as `_mix` or `_dub`
//!   are common in real names and are not tags);
//! - a name that is nothing but a supported tag: `en.srt`.
//!
//! A region or script (`en-US`, `zh-Hans`) is dropped, because SpatialGen
//! takes language-only tags, and the log says so. Whether the tag is
//! *supported* is not decided here: the rules check the result, so an
//! unknown tag is reported with the accepted list instead of being dropped.

use crate::config::WatchConfig;
use crate::model::{FileRole, LANGUAGES, NO_LANGUAGE};

/// A tag found in a stem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoundTag<'a> {
    /// The tag as written (`en-US`).
    pub raw: &'a str,
    /// The stem without the tag and its separator (`clip` for `clip.en-US`).
    pub rest: &'a str,
}

/// Does `s` look like a language tag: `primary` letters, then optional
/// `-`/`_` subtags of 2 to 8 letters or digits?
fn tag_shape(s: &str, primary: std::ops::RangeInclusive<usize>) -> bool {
    let mut parts = s.split(['-', '_']);
    let Some(first) = parts.next() else { return false };
    primary.contains(&first.len())
        && first.bytes().all(|b| b.is_ascii_alphabetic())
        && parts.all(|p| (2..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Find a language tag at the end of `stem` (a file name without its extension).
pub fn find_tag(stem: &str) -> Option<FoundTag<'_>> {
    if let Some((rest, seg)) = stem.rsplit_once('.')
        && tag_shape(seg, 2..=3)
    {
        return Some(FoundTag { raw: seg, rest });
    }
    if let Some((rest, seg)) = stem.rsplit_once('_')
        && (tag_shape(seg, 2..=2) || seg.eq_ignore_ascii_case(NO_LANGUAGE))
    {
        return Some(FoundTag { raw: seg, rest });
    }
    if tag_shape(stem, 2..=3) {
        let primary = primary_subtag(stem);
        if LANGUAGES.contains(&primary.as_str()) || primary == NO_LANGUAGE {
            return Some(FoundTag { raw: stem, rest: "" });
        }
    }
    None
}

/// The lower-cased language part of a tag: `en-US` → `en`, `ZH_hans` → `zh`.
pub fn primary_subtag(raw: &str) -> String {
    raw.split(['-', '_']).next().unwrap_or(raw).to_ascii_lowercase()
}

/// The language of a file with `role`, named `file_name`: the tag in its
/// name, else the watch folder's default for the role. `None` for roles that
/// carry no language, and when neither name nor config gives one (the rules
/// then report it).
pub fn language_for(role: FileRole, file_name: &str, watch: &WatchConfig) -> Option<String> {
    if !role.needs_language() {
        return None;
    }
    let stem = super::roles::strip_extension(file_name);
    if let Some(found) = find_tag(stem) {
        let tag = primary_subtag(found.raw);
        if !found.raw.eq_ignore_ascii_case(&tag) {
            tracing::info!(
                file = file_name,
                tag = found.raw,
                using = tag.as_str(),
                "SpatialGen takes language-only tags; using {tag} for {file_name}"
            );
        }
        return Some(tag);
    }
    let default = match role {
        FileRole::Audio => watch.audio_language.as_deref(),
        _ => watch.subtitle_language.as_deref(),
    };
    default.map(primary_subtag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_in_names_table() {
        // (stem, tag as written, rest of the stem)
        let rows: &[(&str, Option<(&str, &str)>)] = &[
            ("clip.en", Some(("en", "clip"))),
            ("clip_en", Some(("en", "clip"))),
            ("clip.EN", Some(("EN", "clip"))),
            ("clip.en-US", Some(("en-US", "clip"))),
            ("clip_en-GB", Some(("en-GB", "clip"))),
            ("clip.zh-Hans", Some(("zh-Hans", "clip"))),
            ("clip.pt_BR", Some(("pt_BR", "clip"))),
            ("clip.eng", Some(("eng", "clip"))),
            ("clip_zxx", Some(("zxx", "clip"))),
            ("Shot 010 – Интервью.ru", Some(("ru", "Shot 010 – Интервью"))),
            ("Shot_010_v002.de", Some(("de", "Shot_010_v002"))),
            ("Shot.010_fr", Some(("fr", "Shot.010"))),
            ("Shot_audio.ja", Some(("ja", "Shot_audio"))),
            ("en", Some(("en", ""))),
            ("FR", Some(("FR", ""))),
            ("clip", None),
            ("clip_mix", None),
            ("clip_dub", None),
            ("Shot_010", None),
            ("clip.v2", None),
            ("clip.final", None),
            ("clip_L", None),
            ("abc", None),
            ("my clip", None),
        ];
        for (stem, want) in rows {
            let got = find_tag(stem).map(|f| (f.raw, f.rest));
            assert_eq!(got, *want, "{stem}");
        }
    }

    #[test]
    fn language_for_roles_and_defaults_table() {
        let mut w = WatchConfig::new("/w");
        w.audio_language = Some("de".into());
        w.subtitle_language = Some("fr".into());
        let bare = WatchConfig::new("/w");
        let rows: &[(FileRole, &str, &WatchConfig, Option<&str>)] = &[
            (FileRole::Subtitle, "clip.en.srt", &w, Some("en")),
            (FileRole::Subtitle, "clip_en.srt", &w, Some("en")),
            (FileRole::Audio, "clip.EN.m4a", &w, Some("en")),
            (FileRole::Subtitle, "clip.en-US.srt", &w, Some("en")),
            (FileRole::Subtitle, "clip.srt", &w, Some("fr")),
            (FileRole::Audio, "clip.m4a", &w, Some("de")),
            (FileRole::Audio, "clip_zxx.m4a", &w, Some("zxx")),
            (FileRole::Subtitle, "clip.xx.srt", &w, Some("xx")),
            (FileRole::Subtitle, "clip.srt", &bare, None),
            (FileRole::Audio, "clip.m4a", &bare, None),
            (FileRole::Video, "clip.en.mov", &w, None),
            (FileRole::Aime, "clip.en.aime", &w, None),
        ];
        for (role, name, watch, want) in rows {
            assert_eq!(language_for(*role, name, watch).as_deref(), *want, "{role} {name}");
        }
    }
}
