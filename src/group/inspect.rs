//! The media stage inside grouping: every video and audio container of an
//! export is probed ([`crate::media`]) before the group's layout is decided,
//! and what the containers say becomes facts on the files, findings, and
//! the content rules.
//!
//! - A file still being written (`Unfinished`) is not a finding: it goes to
//!   the group's `unfinished` list and the watcher keeps the export
//!   `waiting` (until `media_wait` of quiet turns it into `media-truncated`).
//! - A truncated or unreadable container is a finding: a violation with
//!   `media_check = "reject"`, a warning with `"warn"`.
//! - The content rules ([`content_rules`]) are derived from the files' facts
//!   and the group's layout alone, so [`super::validate`] re-derives them
//!   after a layout override, like the API's rules.

use crate::config::MediaCheck;
use crate::media::{self, MediaError, MediaFacts};
use crate::model::{FileRole, Layout};

use super::{GroupError, GroupFile, UploadGroup, Violation};

/// A container that is not a whole, readable file (`media-truncated`,
/// `media-unreadable`).
pub const TRUNCATED: &str = "media-truncated";
pub const UNREADABLE: &str = "media-unreadable";
/// `Separate` eyes that differ in duration, resolution, frame rate or codec.
pub const EYES_MISMATCH: &str = "media-eyes-mismatch";
/// Layout `MVHEVC` on a video with one view.
pub const LAYOUT_MISMATCH: &str = "media-layout-mismatch";

/// The rules [`content_rules`] derives (re-derived by `validate`).
const CONTENT_RULES: &[&str] = &[EYES_MISMATCH, LAYOUT_MISMATCH];

/// Roles whose files are containers worth looking into.
fn probed_role(role: FileRole) -> bool {
    matches!(role, FileRole::Video | FileRole::VideoLeft | FileRole::VideoRight | FileRole::Audio)
}

/// Does `media_check` look inside `f`? (Never a staged zip, an `.srt` or an `.aime`.)
pub fn is_probed(f: &GroupFile, check: MediaCheck) -> bool {
    // An empty file is the API rule `empty-file`'s, not a container's.
    check != MediaCheck::Off && !f.staged && f.size > 0 && probed_role(f.role) && media::is_probed(&f.file_name)
}

/// What probing a group's files found besides their facts.
#[derive(Debug, Default)]
pub(super) struct Probed {
    /// Files still being written.
    pub(super) unfinished: Vec<Violation>,
    /// Truncated or unreadable containers, and files that could not be read.
    pub(super) findings: Vec<Violation>,
}

/// Probe every file `check` looks into, recording facts on the file. A
/// file that cannot be opened or read for a passing reason
/// ([`super::open::is_transient`]: no descriptors left, say) is no finding:
/// the whole group is [`GroupError::Busy`] and is built again later.
pub(super) fn probe_files(files: &mut [GroupFile], check: MediaCheck) -> Result<Probed, GroupError> {
    let mut out = Probed::default();
    for f in files.iter_mut().filter(|f| is_probed(f, check)) {
        let finding = |rule: &'static str, message: String| Violation { rule, file: Some(f.rel_path.clone()), message };
        match probe_one(f) {
            Ok(facts) => f.media = Some(facts),
            Err(e @ MediaError::Unfinished(_)) => out.unfinished.push(finding(TRUNCATED, e.to_string())),
            Err(e @ MediaError::Truncated(_)) => out.findings.push(finding(TRUNCATED, e.to_string())),
            Err(e @ MediaError::Unreadable(_)) => out.findings.push(finding(UNREADABLE, e.to_string())),
            Err(MediaError::Io(e)) if super::open::is_transient(&e) => {
                return Err(GroupError::Busy { path: f.source.clone(), source: e });
            }
            Err(MediaError::Io(e)) => {
                out.findings.push(finding("unreadable-file", format!("cannot be read to look inside: {e}")))
            }
        }
    }
    Ok(out)
}

/// Probe one file through a descriptor opened without following links; the
/// length is the open file's, not the listing's. Unbuffered: the probe
/// reads each box header with one small read and the `moov` with one read,
/// so a buffer would only read ahead into sample data after every seek.
fn probe_one(f: &GroupFile) -> Result<MediaFacts, MediaError> {
    let (mut file, meta) = super::open::open_regular(&f.source)?;
    media::probe(&mut file, meta.len())
}

/// Probe findings go to `violations` (reject) or `warnings` (warn); a file
/// that cannot be read at all is a violation either way.
pub(super) fn route(group: &mut UploadGroup, findings: Vec<Violation>) {
    for v in findings {
        match group.media_check {
            MediaCheck::Reject => group.violations.push(v),
            _ if v.rule == "unreadable-file" => group.violations.push(v),
            MediaCheck::Warn => group.warnings.push(v),
            MediaCheck::Off => {}
        }
    }
}

/// Re-derive the content rules of `group` (after its layout or files
/// changed): the old ones are dropped from violations and warnings, the new
/// ones routed by `media_check`.
pub(super) fn revalidate(group: &mut UploadGroup) {
    group.violations.retain(|v| !CONTENT_RULES.contains(&v.rule));
    group.warnings.retain(|v| !CONTENT_RULES.contains(&v.rule));
    let fresh = content_rules(group);
    route(group, fresh);
}

/// Milliseconds as seconds, `9.500 s`.
fn secs(ms: u64) -> String {
    format!("{}.{:03} s", ms / 1000, ms % 1000)
}

fn dims(m: &MediaFacts) -> String {
    match (m.width, m.height) {
        (Some(w), Some(h)) => format!("{w}×{h}"),
        _ => "no size".to_string(),
    }
}

fn fps(rate: Option<f64>) -> String {
    rate.map_or("no frame rate".to_string(), |r| format!("{r} fps"))
}

/// The content rules `group` breaks, from its files' facts.
pub fn content_rules(group: &UploadGroup) -> Vec<Violation> {
    let mut out = Vec::new();
    let probed = |role: FileRole| -> Vec<(&GroupFile, &MediaFacts)> {
        group.files.iter().filter(|f| f.role == role).filter_map(|f| f.media.as_ref().map(|m| (f, m))).collect()
    };
    if group.layout == Layout::Separate
        && let ([(lf, l)], [(rf, r)]) =
            (probed(FileRole::VideoLeft).as_slice(), probed(FileRole::VideoRight).as_slice())
    {
        let both = |what: &str, a: String, b: String| Violation {
            rule: EYES_MISMATCH,
            file: Some(rf.rel_path.clone()),
            message: format!(
                "the eyes differ in {what}: left {} is {a}, right {} is {b}; export both eyes from the same timeline",
                lf.rel_path, rf.rel_path
            ),
        };
        if let (Some(a), Some(b)) = (l.duration_ms, r.duration_ms) {
            // One frame of tolerance (a frame of the left eye; 1 ms without a rate).
            let frame_ms = l.frame_rate.filter(|r| *r > 0.0).map_or(1.0, |r| 1000.0 / r);
            if a.abs_diff(b) as f64 > frame_ms {
                let apart = format!("{}, more than one frame ({frame_ms:.0} ms) apart", secs(b));
                out.push(both("duration", secs(a), apart));
            }
        }
        if (l.width, l.height) != (r.width, r.height) {
            out.push(both("resolution", dims(l), dims(r)));
        }
        let rate_differs = match (l.frame_rate, r.frame_rate) {
            (Some(a), Some(b)) => (a - b).abs() > 0.001,
            (a, b) => a.is_some() != b.is_some(),
        };
        if rate_differs {
            out.push(both("frame rate", fps(l.frame_rate), fps(r.frame_rate)));
        }
        if l.codec != r.codec {
            let codec = |c: &Option<String>| c.clone().unwrap_or_else(|| "no codec".into());
            out.push(both("codec", codec(&l.codec), codec(&r.codec)));
        }
    }
    if group.layout == Layout::Mvhevc {
        for (f, m) in probed(FileRole::Video) {
            if m.views == Some(1) {
                out.push(Violation {
                    rule: LAYOUT_MISMATCH,
                    file: Some(f.rel_path.clone()),
                    message: format!(
                        "the layout is MVHEVC but the video has one view ({}, no second-eye layer); \
                         set the layout it has (2D, or SBS/TB for frame-packed eyes) in spatialgen.toml or the watch folder",
                        m.codec.as_deref().unwrap_or("unknown codec")
                    ),
                });
            }
        }
    }
    out
}

/// One line of what a container says: `hvc1 1920×1080 29.97 fps 12.5 s,
/// 2 views (MV-HEVC), hero left, baseline 63.0 mm, hfov 90.0°, equi; 2 ch
/// 48000 Hz`.
pub fn describe(m: &MediaFacts) -> String {
    let mut parts: Vec<String> = Vec::new();
    let container = match m.container {
        media::Container::Mp4 => "MP4",
        media::Container::Quicktime => "QuickTime",
    };
    let mut head = vec![container.to_string()];
    head.extend(m.codec.clone());
    if let (Some(w), Some(h)) = (m.width, m.height) {
        head.push(format!("{w}×{h}"));
    }
    if let Some(r) = m.frame_rate {
        head.push(format!("{r} fps"));
    }
    if let Some(d) = m.duration_ms {
        head.push(secs(d));
    }
    parts.push(head.join(" "));
    match m.views {
        Some(2) => parts.push("2 views (MV-HEVC)".into()),
        Some(n) if n != 1 => parts.push(format!("{n} views")),
        _ => {}
    }
    if let Some(eye) = m.hero_eye {
        parts.push(format!("hero {}", if eye == media::Eye::Left { "left" } else { "right" }));
    }
    if let Some(b) = m.baseline_mm {
        parts.push(format!("baseline {b:.1} mm"));
    }
    if let Some(h) = m.hfov_deg {
        parts.push(format!("hfov {h:.1}°"));
    }
    if let Some(p) = m.projection {
        let name = match p {
            media::Projection::Rect => "rect",
            media::Projection::Equi => "equi",
            media::Projection::Hequ => "hequ",
            media::Projection::Fish => "fish",
        };
        parts.push(format!("projection {name}"));
    }
    if let Some(p) = m.packing {
        parts.push(format!("packing {}", if p == media::Packing::Side { "side by side" } else { "over/under" }));
    }
    let mut line = parts.join(", ");
    if m.audio_channels.is_some() || m.sample_rate.is_some() {
        let ch = m.audio_channels.map(|c| format!("{c} ch")).unwrap_or_default();
        let hz = m.sample_rate.map(|r| format!("{r} Hz")).unwrap_or_default();
        let audio: Vec<String> = [ch, hz].into_iter().filter(|s| !s.is_empty()).collect();
        line.push_str(&format!("; audio {}", audio.join(" ")));
    }
    line
}

/// The findings of a group that is still unfinished after `media_wait` of
/// quiet: each file becomes a `media-truncated` violation.
pub fn unfinished_expired(group: &UploadGroup, waited: &str) -> Vec<Violation> {
    group
        .unfinished
        .iter()
        .map(|v| Violation {
            rule: TRUNCATED,
            file: v.file.clone(),
            message: format!("the container was still unfinished after {waited} of quiet: {}", v.message),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::Container;

    fn facts(duration_ms: u64, w: u32, h: u32, rate: f64, codec: &str, views: u8) -> MediaFacts {
        MediaFacts {
            container: Container::Quicktime,
            duration_ms: Some(duration_ms),
            width: Some(w),
            height: Some(h),
            frame_rate: Some(rate),
            codec: Some(codec.into()),
            views: Some(views),
            hero_eye: None,
            baseline_mm: None,
            hfov_deg: None,
            projection: None,
            packing: None,
            audio_channels: None,
            sample_rate: None,
        }
    }

    /// No descriptor left while a container is probed: the group is
    /// `Busy` (built again later), never rejected as unreadable; with
    /// descriptors back the same file is probed.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_that_cannot_be_opened_for_want_of_descriptors_is_busy_not_a_finding() {
        use crate::starved::{Starved, siege_child};
        if !siege_child(
            "group::inspect::tests::a_file_that_cannot_be_opened_for_want_of_descriptors_is_busy_not_a_finding",
        ) {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("v.mov");
        let bytes = crate::media::synth::for_name("v.mov", 1).expect("a container for .mov");
        std::fs::write(&path, &bytes).expect("write");
        let mut f = GroupFile {
            source: path.clone(),
            size: bytes.len() as u64,
            ..GroupFile::for_tests("v.mov", FileRole::Video)
        };
        {
            let _starved = Starved::now(0);
            match probe_files(std::slice::from_mut(&mut f), MediaCheck::Reject) {
                Err(GroupError::Busy { path: p, source }) => {
                    assert_eq!(p, path);
                    assert_eq!(source.raw_os_error(), Some(libc::EMFILE));
                }
                other => panic!("expected Busy, got {other:?}"),
            }
        }
        let probed = probe_files(std::slice::from_mut(&mut f), MediaCheck::Reject).expect("probed");
        assert!(probed.findings.is_empty() && probed.unfinished.is_empty(), "{probed:?}");
        assert!(f.media.is_some());
        println!("siege-child-ok");
    }

    fn file(name: &str, role: FileRole, media: Option<MediaFacts>) -> GroupFile {
        GroupFile { media, ..GroupFile::for_tests(name, role) }
    }

    fn group(layout: Layout, files: Vec<GroupFile>) -> UploadGroup {
        let mut g = UploadGroup::for_tests("g", layout, files);
        g.media_check = MediaCheck::Reject;
        g
    }

    fn eyes(left: MediaFacts, right: MediaFacts) -> UploadGroup {
        group(
            Layout::Separate,
            vec![file("S_L.mov", FileRole::VideoLeft, Some(left)), file("S_R.mov", FileRole::VideoRight, Some(right))],
        )
    }

    #[test]
    fn matching_eyes_pass_within_one_frame() {
        let l = facts(10_000, 1920, 1080, 30.0, "hvc1", 1);
        let r = facts(10_033, 1920, 1080, 30.0, "hvc1", 1);
        assert!(content_rules(&eyes(l, r)).is_empty());
    }

    #[test]
    fn every_eye_difference_is_named_with_both_values() {
        // (right eye, the words the message must contain)
        let base = facts(10_000, 1920, 1080, 30.0, "hvc1", 1);
        let rows: Vec<(MediaFacts, &[&str])> = vec![
            (facts(9_500, 1920, 1080, 30.0, "hvc1", 1), &["duration", "10.000 s", "9.500 s", "S_L.mov", "S_R.mov"]),
            (facts(10_000, 1280, 720, 30.0, "hvc1", 1), &["resolution", "1920×1080", "1280×720"]),
            (facts(10_000, 1920, 1080, 25.0, "hvc1", 1), &["frame rate", "30 fps", "25 fps"]),
            (facts(10_000, 1920, 1080, 30.0, "avc1", 1), &["codec", "hvc1", "avc1"]),
        ];
        for (right, words) in rows {
            let found = content_rules(&eyes(base.clone(), right));
            assert_eq!(found.len(), 1, "{found:?}");
            assert_eq!(found[0].rule, EYES_MISMATCH);
            for w in words {
                assert!(found[0].message.contains(w), "{:?} lacks {w:?}", found[0].message);
            }
        }
    }

    #[test]
    fn unprobed_eyes_and_other_layouts_are_not_compared() {
        let l = facts(10_000, 1920, 1080, 30.0, "hvc1", 1);
        let mut g = eyes(l.clone(), facts(1, 1, 1, 1.0, "avc1", 1));
        g.files[1].media = None;
        assert!(content_rules(&g).is_empty(), "a file not looked into is not compared");
        let two_d = group(Layout::TwoD, vec![file("v.mov", FileRole::Video, Some(l))]);
        assert!(content_rules(&two_d).is_empty());
    }

    #[test]
    fn mvhevc_needs_two_views() {
        let one = group(Layout::Mvhevc, vec![file("v.mov", FileRole::Video, Some(facts(1, 1, 1, 1.0, "hvc1", 1)))]);
        let found = content_rules(&one);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].rule, found[0].file.as_deref()), (LAYOUT_MISMATCH, Some("v.mov")));
        assert!(found[0].message.contains("one view"), "{}", found[0].message);
        let two = group(Layout::Mvhevc, vec![file("v.mov", FileRole::Video, Some(facts(1, 1, 1, 1.0, "hvc1", 2)))]);
        assert!(content_rules(&two).is_empty());
        let unknown = group(Layout::Mvhevc, vec![file("v.mov", FileRole::Video, None)]);
        assert!(content_rules(&unknown).is_empty(), "no facts, no finding");
    }

    #[test]
    fn revalidate_routes_by_media_check_and_replaces_old_findings() {
        let mut g = group(Layout::Mvhevc, vec![file("v.mov", FileRole::Video, Some(facts(1, 1, 1, 1.0, "hvc1", 1)))]);
        revalidate(&mut g);
        assert_eq!(g.violations.iter().filter(|v| v.rule == LAYOUT_MISMATCH).count(), 1);
        revalidate(&mut g);
        assert_eq!(g.violations.iter().filter(|v| v.rule == LAYOUT_MISMATCH).count(), 1, "not doubled");
        g.layout = Layout::TwoD;
        revalidate(&mut g);
        assert!(g.violations.is_empty(), "an override away from MVHEVC clears it: {:?}", g.violations);
        g.layout = Layout::Mvhevc;
        g.media_check = MediaCheck::Warn;
        revalidate(&mut g);
        assert!(g.violations.is_empty());
        assert_eq!(g.warnings.len(), 1, "warn mode: a warning, not a rejection");
    }
}
