//! A generated sample asset set for `demo` (and tests): what a render
//! machine would export, with deterministic pseudo-random media bytes.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// One export written by [`write_sample_set`].
#[derive(Debug, Clone)]
pub struct SampleExport {
    /// The export folder.
    pub folder: PathBuf,
    /// Expected video name.
    pub name: String,
    /// Expected layout.
    pub layout: crate::model::Layout,
}

/// Write the demo's two exports into `drop` (folders mode):
/// - `Shot_010_v002/`: a Separate shot, `Shot_010_v002_L.mov` + `_R.mov`,
///   `Shot_010_v002.aime` and a `Shot_010_v002.fcpxmld` bundle directory;
/// - `Teaser/`: a 2D clip, `Teaser.mp4` + `Teaser.en.srt` + `Teaser.en.m4a`.
///
/// `eye_bytes` sizes each eye file (the big, multipart files).
pub fn write_sample_set(drop: &Path, eye_bytes: u64) -> io::Result<Vec<SampleExport>> {
    let shot = drop.join("Shot_010_v002");
    std::fs::create_dir_all(shot.join("Shot_010_v002.fcpxmld/Resources"))?;
    write_noise(&shot.join("Shot_010_v002_L.mov"), eye_bytes, 1)?;
    write_noise(&shot.join("Shot_010_v002_R.mov"), eye_bytes, 2)?;
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
    write_noise(&teaser.join("Teaser.mp4"), eye_bytes / 2, 4)?;
    std::fs::write(
        teaser.join("Teaser.en.srt"),
        "1\n00:00:00,000 --> 00:00:02,500\nWelcome to the sample.\n\n2\n00:00:02,500 --> 00:00:05,000\nUploaded by spatialgen-sync.\n",
    )?;
    write_noise(&teaser.join("Teaser.en.m4a"), 512 * 1024, 5)?;

    Ok(vec![
        SampleExport { folder: shot, name: "Shot_010_v002".into(), layout: crate::model::Layout::Separate },
        SampleExport { folder: teaser, name: "Teaser".into(), layout: crate::model::Layout::TwoD },
    ])
}

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
    fn sample_set_has_both_exports() {
        let dir = tempfile::tempdir().unwrap();
        let set = write_sample_set(dir.path(), 1024 * 1024).unwrap();
        assert_eq!(set.len(), 2);
        assert!(set[0].folder.join("Shot_010_v002.fcpxmld").is_dir());
        assert_eq!(std::fs::metadata(set[0].folder.join("Shot_010_v002_R.mov")).unwrap().len(), 1024 * 1024);
        assert!(set[1].folder.join("Teaser.en.srt").is_file());
    }
}
