//! Layout and perspective of a group, and the optional `spatialgen.toml`
//! sidecar that render pipelines write per shot.
//!
//! Precedence, most specific first: the sidecar, then the watch folder's
//! `layout`; `auto` infers from the files — an L/R pair means `Separate`, an
//! `.aivu` video (or an `.aime` with an `.fcpxmld`) means `AIV`; then what
//! the video's container says (the media check): MV-HEVC stereo means
//! `MVHEVC`, side/over view packing `SBS`/`TB`; else the folder's
//! `default_layout`. Perspective: the sidecar's, else `180` for `AIV`
//! (Apple Immersive Video is always 180°), else the folder's `perspective`,
//! else what the video's projection implies (`equi` 360, `hequ` 180), else
//! `Regular`.
//! A command-line override is applied by the caller on the finished group,
//! followed by [`super::validate`].

use std::path::Path;

use crate::config::{LayoutChoice, WatchConfig};
use crate::media::{MediaFacts, Packing, Projection};
use crate::model::{FileRole, Layout, Perspective};

use super::roles::{SIDECAR_NAME, extension};
use super::{GroupFile, Violation};

/// Rule id of every sidecar problem (an agent rule: SpatialGen never sees the sidecar).
pub const SIDECAR_RULE: &str = "sidecar-invalid";

/// What a sidecar may set. `None` = not set, fall back to the config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sidecar {
    pub video_name: Option<String>,
    pub description: Option<String>,
    pub layout: Option<LayoutChoice>,
    pub perspective: Option<Perspective>,
    pub folder_name: Option<String>,
}

const KEYS: &str = "videoName, description, layout, perspective, folderName";

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Parse a sidecar. Every problem (bad TOML, unknown key, wrong type, unknown
/// layout or perspective) is one violation naming the key and line; the keys
/// that are fine are still used.
pub fn parse_sidecar(text: &str) -> (Sidecar, Vec<Violation>) {
    use toml::de::DeValue;
    let mut out = Sidecar::default();
    let mut problems: Vec<(usize, Violation)> = Vec::new();
    let mut bad = |line: usize, msg: String| {
        problems.push((
            line,
            Violation {
                rule: SIDECAR_RULE,
                file: Some(SIDECAR_NAME.to_string()),
                message: format!("line {line}: {msg}"),
            },
        ))
    };
    let doc = match toml::de::DeTable::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let line = e.span().map_or(1, |s| line_of(text, s.start));
            bad(line, format!("not valid TOML: {}", e.message().trim()));
            return (out, problems.into_iter().map(|(_, v)| v).collect());
        }
    };
    for (key, value) in doc.get_ref().iter() {
        let name: &str = key.get_ref().as_ref();
        let line = line_of(text, key.span().start);
        let text_value = || match value.get_ref() {
            DeValue::String(s) => Ok(s.to_string()),
            _ => Err(format!("`{name}` must be a string, like {name} = \"...\"")),
        };
        let result: Result<(), String> = match name {
            "videoName" | "video_name" => text_value().and_then(|v| {
                if v.trim().is_empty() {
                    return Err(format!("`{name}` must not be empty"));
                }
                out.video_name = Some(v);
                Ok(())
            }),
            "description" => text_value().map(|v| out.description = Some(v)),
            "folderName" | "folder_name" => text_value().map(|v| out.folder_name = Some(v)),
            "layout" => text_value()
                .and_then(|v| v.parse::<LayoutChoice>().map_err(|e| format!("`layout`: {e}")))
                .map(|v| out.layout = Some(v)),
            "perspective" => {
                // `perspective = 180` (a TOML number) is as natural as "180".
                let raw = match value.get_ref() {
                    DeValue::String(s) => Ok(s.to_string()),
                    DeValue::Integer(i) => Ok(i.as_str().to_string()),
                    _ => Err("`perspective` must be \"Regular\", \"180\" or \"360\"".to_string()),
                };
                raw.and_then(|v| v.parse::<Perspective>().map_err(|e| format!("`perspective`: {e}")))
                    .map(|v| out.perspective = Some(v))
            }
            other => Err(format!("unknown key `{other}`; a sidecar may set {KEYS}")),
        };
        if let Err(msg) = result {
            bad(line, msg);
        }
    }
    // The table iterates by key; report in the order of the file.
    problems.sort_by_key(|(line, _)| *line);
    (out, problems.into_iter().map(|(_, v)| v).collect())
}

/// The most bytes a sidecar may hold.
pub const SIDECAR_MAX: u64 = 64 * 1024;

/// The sidecar's text; `None` when it is larger than [`SIDECAR_MAX`]. Only a
/// regular file is read (no link followed, never blocking on a FIFO).
fn read_capped(path: &Path) -> std::io::Result<Option<String>> {
    use std::io::Read;
    let (file, _) = super::open::open_regular(path)?;
    let mut buf = Vec::new();
    file.take(SIDECAR_MAX + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > SIDECAR_MAX {
        return Ok(None);
    }
    String::from_utf8(buf).map(Some).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Read `<folder>/spatialgen.toml` if it is there. A sidecar that cannot be
/// read is a violation too: uploading with the wrong name or layout is worse
/// than waiting for a fix.
pub fn read_sidecar(folder: &Path) -> (Sidecar, Vec<Violation>) {
    let path = folder.join(SIDECAR_NAME);
    match read_capped(&path) {
        Ok(Some(text)) => parse_sidecar(&text),
        Ok(None) => (
            Sidecar::default(),
            vec![Violation {
                rule: SIDECAR_RULE,
                file: Some(SIDECAR_NAME.to_string()),
                message: format!("the sidecar is larger than {} KiB; it cannot be a sidecar", SIDECAR_MAX / 1024),
            }],
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Sidecar::default(), Vec::new()),
        Err(e) => (
            Sidecar::default(),
            vec![Violation {
                rule: SIDECAR_RULE,
                file: Some(SIDECAR_NAME.to_string()),
                message: format!("cannot read the sidecar: {e}"),
            }],
        ),
    }
}

/// What the video says about itself: the facts of the one `video` file, or
/// of the first eye file that has them.
fn video_facts(files: &[GroupFile]) -> Option<&MediaFacts> {
    let videos: Vec<&GroupFile> = files.iter().filter(|f| f.role == FileRole::Video).collect();
    match videos.as_slice() {
        [one] => one.media.as_ref(),
        [] => files
            .iter()
            .filter(|f| matches!(f.role, FileRole::VideoLeft | FileRole::VideoRight))
            .find_map(|f| f.media.as_ref()),
        _ => None,
    }
}

/// What `layout = "auto"` means for these files.
pub fn infer_layout(files: &[GroupFile], default_layout: Layout) -> Layout {
    let has = |role: FileRole| files.iter().any(|f| f.role == role);
    if has(FileRole::VideoLeft) || has(FileRole::VideoRight) {
        return Layout::Separate;
    }
    if files.iter().any(|f| f.role == FileRole::Video && extension(&f.file_name) == "aivu")
        || (has(FileRole::Aime) && has(FileRole::Fcpxmld))
    {
        return Layout::Aiv;
    }
    match video_facts(files) {
        Some(m) if m.views == Some(2) => Layout::Mvhevc,
        Some(MediaFacts { packing: Some(Packing::Side), .. }) => Layout::Sbs,
        Some(MediaFacts { packing: Some(Packing::Over), .. }) => Layout::Tb,
        _ => default_layout,
    }
}

/// The perspective a video's declared projection implies: `equi` 360,
/// `hequ` 180.
fn perspective_of(files: &[GroupFile]) -> Option<Perspective> {
    match video_facts(files)?.projection? {
        Projection::Equi => Some(Perspective::D360),
        Projection::Hequ => Some(Perspective::D180),
        Projection::Rect | Projection::Fish => None,
    }
}

/// Layout and perspective of a group from the sidecar, the config and the files.
pub fn resolve(watch: &WatchConfig, sidecar: &Sidecar, files: &[GroupFile]) -> (Layout, Perspective) {
    let layout = match sidecar.layout.unwrap_or(watch.layout) {
        LayoutChoice::Fixed(l) => l,
        LayoutChoice::Auto => infer_layout(files, watch.default_layout),
    };
    let perspective = sidecar
        .perspective
        .or((layout == Layout::Aiv).then_some(Perspective::D180))
        .or(watch.perspective)
        .or_else(|| perspective_of(files))
        .unwrap_or(Perspective::Regular);
    (layout, perspective)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, role: FileRole) -> GroupFile {
        GroupFile::for_tests(name, role)
    }

    #[test]
    fn inference_table() {
        use FileRole::*;
        let rows: &[(&[(&str, FileRole)], Layout)] = &[
            (&[("Shot_L.mov", VideoLeft), ("Shot_R.mov", VideoRight)], Layout::Separate),
            (&[("Shot_L.mov", VideoLeft)], Layout::Separate),
            (&[("Shot.aivu", Video)], Layout::Aiv),
            (&[("SHOT.AIVU", Video), ("Shot.m4a", Audio)], Layout::Aiv),
            (&[("Shot.mov", Video), ("Shot.aime", Aime), ("Shot.fcpxmld.zip", Fcpxmld)], Layout::Aiv),
            (&[("Shot.mov", Video), ("Shot.aime", Aime)], Layout::Mvhevc),
            (&[("Shot.mov", Video)], Layout::Mvhevc),
            (&[], Layout::Mvhevc),
        ];
        for (files, want) in rows {
            let files: Vec<GroupFile> = files.iter().map(|(n, r)| file(n, *r)).collect();
            assert_eq!(infer_layout(&files, Layout::Mvhevc), *want, "{files:?}");
        }
        assert_eq!(infer_layout(&[file("a.mov", Video)], Layout::Sbs), Layout::Sbs);
    }

    fn probed(
        name: &str,
        role: FileRole,
        views: u8,
        packing: Option<Packing>,
        projection: Option<Projection>,
    ) -> GroupFile {
        let mut f = file(name, role);
        f.media = Some(MediaFacts {
            container: crate::media::Container::Quicktime,
            duration_ms: Some(1000),
            width: Some(1920),
            height: Some(1080),
            frame_rate: Some(30.0),
            codec: Some("hvc1".into()),
            views: Some(views),
            hero_eye: None,
            baseline_mm: None,
            hfov_deg: None,
            projection,
            packing,
            audio_channels: None,
            sample_rate: None,
        });
        f
    }

    #[test]
    fn auto_decides_from_content_before_the_default() {
        use FileRole::*;
        let rows: Vec<(Vec<GroupFile>, Layout, Perspective)> = vec![
            // MV-HEVC stereo in a folder whose default is 2D.
            (vec![probed("Shot.mov", Video, 2, None, None)], Layout::Mvhevc, Perspective::Regular),
            (vec![probed("Shot.mov", Video, 1, Some(Packing::Side), None)], Layout::Sbs, Perspective::Regular),
            (vec![probed("Shot.mov", Video, 1, Some(Packing::Over), None)], Layout::Tb, Perspective::Regular),
            (vec![probed("Shot.mov", Video, 1, None, None)], Layout::TwoD, Perspective::Regular),
            // A projection sets the perspective the folder does not.
            (vec![probed("Shot.mov", Video, 2, None, Some(Projection::Equi))], Layout::Mvhevc, Perspective::D360),
            (vec![probed("Shot.mov", Video, 2, None, Some(Projection::Hequ))], Layout::Mvhevc, Perspective::D180),
            (vec![probed("Shot.mov", Video, 2, None, Some(Projection::Rect))], Layout::Mvhevc, Perspective::Regular),
            // An .aivu is AIV though it is MV-HEVC inside; eye files stay Separate.
            (vec![probed("Shot.aivu", Video, 2, None, Some(Projection::Fish))], Layout::Aiv, Perspective::D180),
            (
                vec![
                    probed("S_L.mov", VideoLeft, 1, None, Some(Projection::Equi)),
                    probed("S_R.mov", VideoRight, 1, None, None),
                ],
                Layout::Separate,
                Perspective::D360,
            ),
        ];
        let mut auto = WatchConfig::new("/w");
        auto.default_layout = Layout::TwoD;
        for (files, layout, perspective) in rows {
            assert_eq!(resolve(&auto, &Sidecar::default(), &files), (layout, perspective), "{files:?}");
        }
        // A perspective the folder sets wins over the projection.
        let mut set = auto.clone();
        set.perspective = Some(Perspective::Regular);
        let equi = vec![probed("Shot.mov", FileRole::Video, 2, None, Some(Projection::Equi))];
        assert_eq!(resolve(&set, &Sidecar::default(), &equi), (Layout::Mvhevc, Perspective::Regular));
        // A fixed layout is not second-guessed here (the content rules report it).
        set.layout = LayoutChoice::Fixed(Layout::TwoD);
        assert_eq!(resolve(&set, &Sidecar::default(), &equi).0, Layout::TwoD);
    }

    #[test]
    fn precedence_table() {
        let lr = vec![file("a_L.mov", FileRole::VideoLeft), file("a_R.mov", FileRole::VideoRight)];
        let aivu = vec![file("a.aivu", FileRole::Video)];
        let mut fixed = WatchConfig::new("/w");
        fixed.layout = LayoutChoice::Fixed(Layout::Tb);
        fixed.perspective = Some(Perspective::D360);
        let auto = WatchConfig::new("/w");
        let side = |layout: Option<LayoutChoice>, perspective: Option<Perspective>| Sidecar {
            layout,
            perspective,
            ..Sidecar::default()
        };
        let none = side(None, None);
        type Row<'a> = (&'a WatchConfig, Sidecar, &'a Vec<GroupFile>, (Layout, Perspective));
        let rows: Vec<Row> = vec![
            (&auto, none.clone(), &lr, (Layout::Separate, Perspective::Regular)),
            (&auto, none.clone(), &aivu, (Layout::Aiv, Perspective::D180)),
            (&fixed, none.clone(), &lr, (Layout::Tb, Perspective::D360)),
            (&fixed, side(Some(LayoutChoice::Auto), None), &lr, (Layout::Separate, Perspective::D360)),
            (&auto, side(Some(LayoutChoice::Fixed(Layout::Sbs)), None), &lr, (Layout::Sbs, Perspective::Regular)),
            (&auto, side(None, Some(Perspective::D360)), &aivu, (Layout::Aiv, Perspective::D360)),
            (&fixed, side(Some(LayoutChoice::Fixed(Layout::Aiv)), None), &lr, (Layout::Aiv, Perspective::D180)),
        ];
        for (watch, sidecar, files, want) in rows {
            assert_eq!(resolve(watch, &sidecar, files), want, "{sidecar:?} {files:?}");
        }
    }

    #[test]
    fn sidecar_keys_are_read() {
        let text = "videoName = \"Über Tokyo – Night\"\ndescription = \"take 2\"\nlayout = \"sbs\"\nperspective = 180\nfolderName = \"Client A\"\n";
        let (s, problems) = parse_sidecar(text);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            s,
            Sidecar {
                video_name: Some("Über Tokyo – Night".into()),
                description: Some("take 2".into()),
                layout: Some(LayoutChoice::Fixed(Layout::Sbs)),
                perspective: Some(Perspective::D180),
                folder_name: Some("Client A".into()),
            }
        );
        let (s, problems) = parse_sidecar("video_name = \"x\"\nfolder_name = \"y\"\nlayout = \"auto\"\n");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(s.video_name.as_deref(), Some("x"));
        assert_eq!(s.layout, Some(LayoutChoice::Auto));
    }

    #[test]
    fn bad_sidecars_table() {
        // (text, words every message must contain)
        let rows: &[(&str, &[&str])] = &[
            ("layout = \"stereo\"", &["line 1", "layout", "stereo", "MVHEVC"]),
            ("\n\nperspective = \"90\"", &["line 3", "perspective", "90", "Regular | 180 | 360"]),
            ("perspective = true", &["perspective", "Regular"]),
            ("videoName = 42", &["videoName", "must be a string"]),
            ("videoName = \"  \"", &["videoName", "must not be empty"]),
            ("title = \"x\"", &["unknown key `title`", "videoName, description"]),
            ("videoName = \"x", &["line 1", "not valid TOML"]),
        ];
        for (text, words) in rows {
            let (_, problems) = parse_sidecar(text);
            assert_eq!(problems.len(), 1, "{text}: {problems:?}");
            let v = &problems[0];
            assert_eq!(v.rule, SIDECAR_RULE);
            assert_eq!(v.file.as_deref(), Some(SIDECAR_NAME));
            for w in *words {
                assert!(v.message.contains(w), "{text}: {:?} lacks {w:?}", v.message);
            }
        }
    }

    #[test]
    fn every_bad_key_is_reported_and_good_keys_still_apply() {
        let (s, problems) = parse_sidecar("layout = \"nope\"\ncolour = 1\nvideoName = \"ok\"\n");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(s.video_name.as_deref(), Some("ok"));
    }
}
