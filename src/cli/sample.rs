//! A generated sample asset set for `demo` (and tests): what a render
//! machine would export. Videos and audio are real (tiny-headed) containers
//! the media check reads, with deterministic pseudo-random sample data.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::media::synth::{self, Spec};
use crate::media::{Eye, Projection};
use crate::model::{Layout, Perspective};

/// What the demo expects of one export written by [`write_sample_set`].
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// Uploaded, stored with this layout and perspective.
    Uploaded(Layout, Perspective),
    /// Rejected by this rule, never sent.
    Rejected(&'static str),
}

/// One export written by [`write_sample_set`].
#[derive(Debug, Clone)]
pub struct SampleExport {
    /// The export folder.
    pub folder: PathBuf,
    /// Expected video name.
    pub name: String,
    pub expect: Expect,
}

/// A video of about `bytes` bytes at 30 fps (the frame count from the size,
/// 256 KiB a frame, at least 30).
fn video(codec: &[u8; 4], bytes: u64) -> Spec {
    let frames = u32::try_from(bytes / (256 * 1024)).unwrap_or(u32::MAX).max(30);
    Spec { payload: bytes, audio: Some((2, 48_000)), ..Spec::video(*codec, 1920, 1080, (30_000, 1000), frames) }
}

/// Write the demo's exports into `drop` (folders mode):
/// - `Shot_010_v002/`: a Separate shot, `Shot_010_v002_L.mov` + `_R.mov`
///   (HEVC, the same length), `Shot_010_v002.aime` and a
///   `Shot_010_v002.fcpxmld` bundle directory;
/// - `Teaser/`: a 2D clip, `Teaser.mp4` (H.264) + `Teaser.en.srt` +
///   `Teaser.en.m4a`, whose `spatialgen.toml` sidecar sets the layout;
/// - `Spatial_Walk/`: one MV-HEVC stereo `.mov` with a half-equirectangular
///   projection and no sidecar: the container says MVHEVC and 180°;
/// - `Crashed_Render/`: a render cut off at 60 %: rejected as
///   `media-truncated` before a byte is sent.
///
/// `eye_bytes` sizes each eye file (the big, multipart files).
pub fn write_sample_set(drop: &Path, eye_bytes: u64) -> io::Result<Vec<SampleExport>> {
    let shot = drop.join("Shot_010_v002");
    std::fs::create_dir_all(shot.join("Shot_010_v002.fcpxmld/Resources"))?;
    let eye = video(b"hvc1", eye_bytes);
    write_container(&shot.join("Shot_010_v002_L.mov"), &eye)?;
    write_container(&shot.join("Shot_010_v002_R.mov"), &eye)?;
    std::fs::write(
        shot.join("Shot_010_v002.aime"),
        "{\"format\":\"aime\",\"version\":1,\"projection\":\"halfEquirectangular\",\"baseline_mm\":64.0}\n",
    )?;
    std::fs::write(
        shot.join("Shot_010_v002.fcpxmld/Info.fcpxml"),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE fcpxml>\n<fcpxml version=\"1.11\">\n  <project name=\"Shot_010_v002\"/>\n</fcpxml>\n",
    )?;
    write_noise(&shot.join("Shot_010_v002.fcpxmld/Resources/thumbnail.heic"), 64 * 1024, 3)?;

    let teaser = drop.join("Teaser");
    std::fs::create_dir_all(&teaser)?;
    write_container(&teaser.join("Teaser.mp4"), &video(b"avc1", eye_bytes / 2))?;
    std::fs::write(
        teaser.join("Teaser.en.srt"),
        "1\n00:00:00,000 --> 00:00:02,500\nWelcome to the sample.\n\n2\n00:00:02,500 --> 00:00:05,000\nUploaded by spatialgen-sync.\n",
    )?;
    write_container(&teaser.join("Teaser.en.m4a"), &Spec { payload: 512 * 1024, ..Spec::audio_only(2, 48_000, 240) })?;
    // Render pipelines write a sidecar per shot; it is read, not uploaded.
    std::fs::write(
        teaser.join(SIDECAR),
        "layout = \"2D\"\ndescription = \"A flat teaser with English subtitles and audio\"\n",
    )?;

    let walk = drop.join("Spatial_Walk");
    std::fs::create_dir_all(&walk)?;
    let spatial = Spec {
        payload: eye_bytes / 2,
        projection: Some(Projection::Hequ),
        hero: Some(Eye::Left),
        audio: Some((2, 48_000)),
        ..Spec::stereo(2200, 2200, (30_000, 1000), 90)
    };
    write_container(&walk.join("Spatial_Walk.mov"), &spatial)?;

    let crashed = drop.join("Crashed_Render");
    std::fs::create_dir_all(&crashed)?;
    // The moov came first; the samples stop 40 % short of the end.
    let whole = Spec { moov_first: true, ..video(b"hvc1", 4 << 20) };
    let mut cut = Vec::new();
    synth::write_to(&whole, &mut cut)?;
    cut.truncate(cut.len() * 6 / 10);
    std::fs::write(crashed.join("Crashed_Render.mov"), cut)?;

    Ok(vec![
        SampleExport {
            folder: shot,
            name: "Shot_010_v002".into(),
            expect: Expect::Uploaded(Layout::Separate, Perspective::Regular),
        },
        SampleExport {
            folder: teaser,
            name: "Teaser".into(),
            expect: Expect::Uploaded(Layout::TwoD, Perspective::Regular),
        },
        SampleExport {
            folder: walk,
            name: "Spatial_Walk".into(),
            expect: Expect::Uploaded(Layout::Mvhevc, Perspective::D180),
        },
        SampleExport { folder: crashed, name: "Crashed_Render".into(), expect: Expect::Rejected("media-truncated") },
    ])
}

/// Write the container `spec` describes to `path`, streamed.
pub fn write_container(path: &Path, spec: &Spec) -> io::Result<()> {
    let mut out = io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    synth::write_to(spec, &mut out)?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// The per-export sidecar file name.
pub const SIDECAR: &str = "spatialgen.toml";

/// `len` deterministic pseudo-random bytes (xorshift64*), written in 1 MiB chunks.
pub fn write_noise(path: &Path, len: u64, seed: u64) -> io::Result<()> {
    let mut out = io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for chunk in buf.chunks_exact_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            chunk.copy_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_deterministic_and_sized() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("c"));
        write_noise(&a, 3 * 1024 * 1024 + 5, 7).unwrap();
        write_noise(&b, 3 * 1024 * 1024 + 5, 7).unwrap();
        write_noise(&c, 3 * 1024 * 1024 + 5, 8).unwrap();
        let (a, b, c) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap(), std::fs::read(c).unwrap());
        assert_eq!(a.len(), 3 * 1024 * 1024 + 5);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn the_sample_set_plans_as_the_demo_expects() {
        let dir = tempfile::tempdir().unwrap();
        let set = write_sample_set(dir.path(), 1024 * 1024).unwrap();
        assert_eq!(set.len(), 4);
        assert!(set[0].folder.join("Shot_010_v002.fcpxmld").is_dir());
        let watch = crate::config::WatchConfig::new(dir.path());
        let groups = crate::group::plan_watch(&watch, None).unwrap();
        for e in &set {
            let g = groups.iter().find(|g| g.name == e.name).expect("planned");
            match &e.expect {
                Expect::Uploaded(layout, perspective) => {
                    assert!(g.is_ready(), "{}: {:?} {:?}", e.name, g.violations, g.unfinished);
                    assert_eq!((g.layout, g.perspective), (*layout, Some(*perspective)), "{}", e.name);
                    assert!(
                        g.files.iter().filter(|f| crate::media::is_probed(&f.file_name)).all(|f| f.media.is_some())
                    );
                }
                Expect::Rejected(rule) => {
                    assert!(g.violations.iter().any(|v| v.rule == *rule), "{}: {:?}", e.name, g.violations);
                }
            }
        }
    }
}
