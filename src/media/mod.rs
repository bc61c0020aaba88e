//! The container probe: is a render finished, and what is it?
//!
//! An ISO-BMFF / QuickTime box walk over `Read + Seek` (`.mov`, `.mp4`,
//! `.m4a`, `.aivu`): box headers are read and `mdat`/`free`/`skip`/`wide`
//! are seeked over, the top-level boxes must tile the file exactly, `moov`
//! is read into memory (at most [`MOOV_CAP`] bytes) and its sample tables
//! are walked far enough to know that every sample lies inside the file.
//! Nothing is decoded.
//!
//! The result is either [`MediaFacts`] (a well-formed file and what it says
//! about itself) or a [`MediaError`]: `Unfinished` (what an encoder has on
//! disk while it writes), `Truncated`, `Unreadable` (not a container), or
//! an I/O error while reading.
//!
//! Pure but for reading the one file it is given; memory is capped whatever
//! the file claims: the moov buffer (at most [`MOOV_CAP`]) and a few small
//! values, every table read in place after its entry count was checked
//! against the bytes its box holds.
//!
//! What the probe trusts: `len` (the caller's file size) for every box it
//! seeks over; the sample tables for where the samples are (it checks that
//! they lie inside the file, not that the bytes there decode). What it
//! cannot see: the contents of `mdat`, and, in a fragmented movie, the
//! fragments (`moof` is not read).
//!
//! # Files
//! - `walk`: the top-level box walk (headers, tiling, reading `moov`).
//! - `moov`: parsing the moov buffer (headers, sample entries, the Apple
//!   stereo and projection boxes).
//! - `tables`: the sample tables in place, and where the samples lie.
//! - `text`: how numbers are written in the messages.
//! - [`synth`] (tests and the `sandbox` feature): tiny valid files whose
//!   facts are known.
//! - Tests: `tests.rs` (every verdict, ffmpeg-made fixtures), `proptests.rs`;
//!   `tests/media_alloc.rs` measures peak memory under a counting allocator.

use serde::{Deserialize, Serialize};

use text::{fourcc, num, size};
use walk::{End, Layout};

mod moov;
#[cfg(test)]
mod proptests;
#[cfg(any(test, feature = "sandbox"))]
pub mod synth;
mod tables;
#[cfg(test)]
mod tests;
mod text;
pub(crate) use text::num as thousands;
mod walk;

/// The most bytes of `moov` the probe reads into memory.
pub const MOOV_CAP: u64 = 64 << 20;

/// Is a file with this name probed (`.mov`, `.mp4`, `.m4a`, `.aivu`,
/// any case)?
pub fn is_probed(file_name: &str) -> bool {
    let ext = file_name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    matches!(ext.as_str(), "mov" | "mp4" | "m4a" | "aivu")
}

/// Which family of the format the file declares (`ftyp` major brand `qt  `,
/// or no `ftyp` at all: QuickTime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Container {
    Mp4,
    Quicktime,
}

/// `hero` (HeroStereoEyeDescriptionBox).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Eye {
    Left,
    Right,
}

/// `prji` (ProjectionInformationBox) projection kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Projection {
    Rect,
    Equi,
    Hequ,
    Fish,
}

/// `pkin` (ViewPackingInformationBox) packing kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Packing {
    Side,
    Over,
}

/// What a well-formed file says about itself. `None`: the file does not say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaFacts {
    pub container: Container,
    /// The first video track's duration (else the movie's), in milliseconds.
    pub duration_ms: Option<u64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Frames per second of the first video track, rounded to 3 decimals.
    pub frame_rate: Option<f64>,
    /// The first video track's sample entry fourcc (`hvc1`, `avc1`, `apcn`,
    /// …); for a file without video, the first audio track's (`mp4a`, …).
    pub codec: Option<String>,
    /// 1, or 2 for MV-HEVC stereo (`hvcC` + `lhvC`); `None` without video.
    pub views: Option<u8>,
    pub hero_eye: Option<Eye>,
    /// `blin`, in millimetres.
    pub baseline_mm: Option<f64>,
    /// `hfov`, in degrees.
    pub hfov_deg: Option<f64>,
    pub projection: Option<Projection>,
    pub packing: Option<Packing>,
    pub audio_channels: Option<u32>,
    pub sample_rate: Option<u32>,
}

/// Why a file is not (yet) a well-formed container. Each message names what
/// is wrong with numbers, e.g. "moov missing; mdat declares 1.4 GiB from
/// byte 40, the file ends at 297 MiB".
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// What an encoder has on disk while it writes: no `moov`/`moof` yet and
    /// the last box open (size 0, or running past the end of the file).
    #[error("{0}")]
    Unfinished(String),
    /// A `moov` whose samples lie past the end of the file; boxes that do
    /// not tile the file.
    #[error("{0}")]
    Truncated(String),
    /// Not an ISO-BMFF/QuickTime file at all (or one the probe cannot read
    /// within its caps).
    #[error("{0}")]
    Unreadable(String),
    /// The file could not be read (a condition of the machine, not a verdict).
    #[error("read error: {0}")]
    Io(#[from] std::io::Error),
}

impl MediaError {
    /// The rule id a rejection for this verdict carries (`None` for `Io`).
    /// `Unfinished` becomes `media-truncated` once `media_wait` has passed.
    pub fn rule(&self) -> Option<&'static str> {
        match self {
            MediaError::Unfinished(_) | MediaError::Truncated(_) => Some("media-truncated"),
            MediaError::Unreadable(_) => Some("media-unreadable"),
            MediaError::Io(_) => None,
        }
    }
}

/// Probe a file of `len` bytes.
///
/// Verdicts, in the order they are decided:
/// - `Unreadable`: the first box is not a plausible top-level box (or its
///   size is impossible); a `moov` over [`MOOV_CAP`]; two `moov`s; `moof`
///   without any `moov`; a `moov` broken inside (a child running past its
///   parent, a table whose count claims more bytes than its box holds,
///   sample tables that contradict each other, no `mvhd`); a track whose
///   media lives in another file (a reference movie).
/// - `Unfinished`: no `moov` and no `moof` (whatever the tiling: an open
///   last box, an incomplete moov, or boxes that tile without one); a
///   fragmented movie whose last box is open or cut, that has no fragment
///   yet, or whose fragments are not closed by an `mfra` index; a 0-byte
///   file, or one that ends inside its first header.
/// - `Truncated`: a non-fragmented movie whose last box runs past the end
///   or whose boxes stop tiling the file; a sample past the end of the file;
///   a fragmented movie whose boxes stop tiling it.
/// - `Io`: the reader failed (short reads are verdicts, not errors).
pub fn probe<R: std::io::Read + std::io::Seek>(reader: &mut R, len: u64) -> Result<MediaFacts, MediaError> {
    let layout = walk::walk(reader, len)?;
    let len = layout.len;
    let container = match layout.brand {
        Some(b) if b == *b"qt  " => Container::Quicktime,
        None if !layout.has_ftyp => Container::Quicktime,
        _ => Container::Mp4,
    };
    let Some((moov_box, body)) = &layout.moov else {
        if let Some(at) = layout.first_moof {
            return Err(MediaError::Unreadable(format!(
                "moof at byte {} but no moov: a media segment without its movie",
                num(at)
            )));
        }
        return Err(MediaError::Unfinished(no_moov(&layout)));
    };
    let header = moov_box.size - body.len() as u64;
    let movie = moov::parse(body, moov_box.start + header, len).map_err(MediaError::Unreadable)?;
    let fragmented = layout.moofs > 0 || (movie.mvex && movie.samples == 0);
    if fragmented {
        match &layout.end {
            End::Open(b) => {
                return Err(MediaError::Unfinished(format!(
                    "fragmented movie still being written: {}",
                    past_end(b, len)
                )));
            }
            End::PartialHeader { at, have } => {
                return Err(MediaError::Unfinished(format!(
                    "fragmented movie still being written: {}",
                    partial_header(*at, *have)
                )));
            }
            End::Garbage { at, why } => return Err(MediaError::Truncated(garbage(*at, why))),
            End::Tiled => {}
        }
        if layout.moofs == 0 {
            return Err(MediaError::Unfinished(format!(
                "fragmented movie (moov has mvex) with no fragment yet; the file ends at {}",
                size(len)
            )));
        }
        if layout.last.map(|b| b.kind) != Some(*b"mfra") {
            return Err(MediaError::Unfinished(format!(
                "fragmented movie with {} fragments and no mfra index after them, so its writer may still add \
                 fragments; the file ends at {}",
                num(layout.moofs),
                size(len)
            )));
        }
    } else {
        match &layout.end {
            End::Open(b) => return Err(MediaError::Truncated(past_end(b, len))),
            End::PartialHeader { at, have } => return Err(MediaError::Truncated(partial_header(*at, *have))),
            End::Garbage { at, why } => return Err(MediaError::Truncated(garbage(*at, why))),
            End::Tiled => {}
        }
    }
    if let Some(msg) = movie.past_end {
        return Err(MediaError::Truncated(msg));
    }
    Ok(facts(container, &movie))
}

/// The message for a file without moov or moof.
fn no_moov(l: &Layout) -> String {
    let ends = size(l.len);
    match &l.end {
        End::Open(b) if b.kind == *b"moov" => {
            format!("moov incomplete: it declares {} from byte {}, the file ends at {ends}", size(b.size), num(b.start))
        }
        End::Open(b) => {
            format!(
                "moov missing; {} declares {} from byte {}, the file ends at {ends}",
                fourcc(b.kind),
                size(b.size),
                num(b.start)
            )
        }
        End::PartialHeader { at, have } => format!("moov missing; {}", partial_header(*at, *have)),
        End::Garbage { at, why } => format!("moov missing; {}", garbage(*at, why)),
        End::Tiled => match l.last {
            Some(b) if b.to_eof => format!(
                "moov missing; {} is open (size 0) from byte {} to the end of the file at {ends}",
                fourcc(b.kind),
                num(b.start)
            ),
            last => format!(
                "moov missing; {} top-level {} exactly at the end of the file ({ends}){}",
                num(l.boxes),
                if l.boxes == 1 { "box ends" } else { "boxes end" },
                last.map(|b| format!(", the last: {} of {} from byte {}", fourcc(b.kind), size(b.size), num(b.start)))
                    .unwrap_or_default()
            ),
        },
    }
}

fn past_end(b: &walk::TopBox, len: u64) -> String {
    format!(
        "{} of {} at byte {} runs past the end of the file ({})",
        fourcc(b.kind),
        size(b.size),
        num(b.start),
        size(len)
    )
}

fn partial_header(at: u64, have: u64) -> String {
    format!("the file ends {have} bytes into a box header at byte {}", num(at))
}

fn garbage(at: u64, why: &str) -> String {
    format!("the boxes stop tiling the file at byte {}: the header there is not a box header ({why})", num(at))
}

/// `value / timescale` seconds in milliseconds, rounded.
fn millis(value: u64, timescale: u32) -> Option<u64> {
    if timescale == 0 {
        return None;
    }
    let ts = u128::from(timescale);
    u64::try_from((u128::from(value) * 1000 + ts / 2) / ts).ok()
}

fn round3(x: f64) -> Option<f64> {
    let r = (x * 1000.0).round() / 1000.0;
    (r.is_finite() && r > 0.0).then_some(r)
}

fn facts(container: Container, m: &moov::Movie) -> MediaFacts {
    let video = m.video.as_ref();
    let audio = m.audio.as_ref();
    let duration_ms = video
        .filter(|t| t.duration > 0)
        .and_then(|t| millis(t.duration, t.timescale))
        .or_else(|| m.mehd_duration.filter(|&d| d > 0).and_then(|d| millis(d, m.timescale)))
        .or_else(|| Some(m.duration).filter(|&d| d > 0).and_then(|d| millis(d, m.timescale)));
    let ventry = video.and_then(|t| t.entry.as_ref());
    let aentry = audio.and_then(|t| t.entry.as_ref());
    let dim =
        |entry: Option<u16>, tkhd: u32| entry.filter(|&v| v > 0).map(u32::from).or(Some(tkhd >> 16).filter(|&v| v > 0));
    let frame_rate = video.and_then(|t| {
        let ts = f64::from(t.timescale);
        t.dominant_delta
            .map(|d| ts / f64::from(d))
            .or_else(|| (t.samples > 0 && t.duration > 0).then(|| t.samples as f64 * ts / t.duration as f64))
            .or_else(|| m.video_trex_duration.filter(|&d| d > 0).map(|d| ts / f64::from(d)))
            .and_then(round3)
    });
    let fourcc_string = |e: &moov::Entry| fourcc(e.fourcc);
    MediaFacts {
        container,
        duration_ms,
        width: video.and_then(|t| dim(ventry.map(|e| e.width), t.tkhd_size.0)),
        height: video.and_then(|t| dim(ventry.map(|e| e.height), t.tkhd_size.1)),
        frame_rate,
        codec: ventry.or(if video.is_none() { aentry } else { None }).map(fourcc_string),
        views: video.map(|_| match ventry {
            Some(e) if matches!(&e.fourcc, b"hvc1" | b"hev1") && e.hvcc && e.lhvc => 2,
            _ => 1,
        }),
        hero_eye: ventry.and_then(|e| e.hero),
        baseline_mm: ventry.and_then(|e| e.baseline_um).map(|um| f64::from(um) / 1000.0),
        hfov_deg: ventry.and_then(|e| e.hfov_millideg).map(|md| f64::from(md) / 1000.0),
        projection: ventry.and_then(|e| e.projection),
        packing: ventry.and_then(|e| e.packing),
        audio_channels: aentry.and_then(|e| e.channels),
        sample_rate: aentry.and_then(|e| e.rate),
    }
}
