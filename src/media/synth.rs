//! Tiny, valid ISO-BMFF and QuickTime files whose facts are known, for the
//! tests, the demo and the benchmarks: a [`Spec`] says what the file holds,
//! [`build`] (or [`write_to`], streamed) writes it, and [`Spec::facts`] is
//! what [`super::probe`] must say about it.
//!
//! The sample payload is deterministic pseudo-random bytes (nothing decodes
//! it); codec configuration boxes (`hvcC`, `lhvC`, `avcC`, `esds`) are
//! placeholders. The box structure and the sample tables are real: samples
//! are split into chunks of up to 10, video and audio chunks interleaved,
//! and every sample lies inside `mdat`.
//!
//! The low-level helpers ([`boxed`], [`boxed64`], [`full_box`],
//! [`header`]) let tests build odd files by hand.

use std::io::{self, Write};

use super::{Container, Eye, MediaFacts, Packing, Projection};

/// What a synthetic file holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// The video sample entry (`hvc1`, `hev1`, `avc1`, `apcn`, `apch`,
    /// `ap4h`, …), or `mp4a` for an audio-only file.
    pub codec: [u8; 4],
    pub width: u32,
    pub height: u32,
    /// (timescale, frame duration): `(30000, 1001)` is 29.97 fps.
    pub fps: (u32, u32),
    /// Video samples, or for an audio-only file, AAC frames (1024 samples
    /// each).
    pub frames: u32,
    /// MV-HEVC stereo: `lhvC` beside `hvcC` (for `hvc1`/`hev1`), and the
    /// `vexu/eyes/stri` box saying both eyes are present.
    pub stereo: bool,
    /// `vexu/eyes/hero`.
    pub hero: Option<Eye>,
    /// `vexu/eyes/cams/blin`, in micrometres.
    pub baseline_um: Option<u32>,
    /// `hfov`, in thousandths of a degree.
    pub hfov_millideg: Option<u32>,
    /// `vexu/proj/prji`.
    pub projection: Option<Projection>,
    /// `vexu/pack/pkin`.
    pub packing: Option<Packing>,
    /// An AAC track: (channels, sample rate). An audio-only spec without it
    /// gets (2, 48000).
    pub audio: Option<(u16, u32)>,
    /// Bytes of sample data in total, split across all samples.
    pub payload: u64,
    /// `moov` before `mdat` (otherwise after it). Ignored when fragmented.
    pub moov_first: bool,
    /// `ftyp` major brand `qt  `, QuickTime data references and sound
    /// descriptions (otherwise an MP4).
    pub quicktime: bool,
    /// An empty `moov` with `mvex`, then one `moof`/`mdat` pair per video
    /// chunk, then `mfra`.
    pub fragmented: bool,
    /// The QuickTime sound description version (0, 1 or 2; 2 stores the
    /// rate as a float64). MP4 files always write 0. A QuickTime rate over
    /// 65,535 Hz forces 2.
    pub sound_version: u16,
    /// Write the mdat header with a 64-bit size even when 32 bits would do.
    pub mdat64: bool,
}

impl Spec {
    /// A plain video file: `frames` frames of `codec` at `width`×`height`,
    /// 64 payload bytes a frame, moov after mdat, MP4.
    pub fn video(codec: [u8; 4], width: u32, height: u32, fps: (u32, u32), frames: u32) -> Spec {
        Spec {
            codec,
            width,
            height,
            fps,
            frames,
            stereo: false,
            hero: None,
            baseline_um: None,
            hfov_millideg: None,
            projection: None,
            packing: None,
            audio: None,
            payload: u64::from(frames) * 64,
            moov_first: false,
            quicktime: false,
            fragmented: false,
            sound_version: 0,
            mdat64: false,
        }
    }

    /// An MV-HEVC stereo QuickTime movie the way a spatial video is written:
    /// `hvc1` with `hvcC` + `lhvC`, left hero eye, a 64 mm baseline and a
    /// 63.4° horizontal field of view.
    pub fn stereo(width: u32, height: u32, fps: (u32, u32), frames: u32) -> Spec {
        Spec {
            stereo: true,
            hero: Some(Eye::Left),
            baseline_um: Some(64_000),
            hfov_millideg: Some(63_400),
            quicktime: true,
            ..Spec::video(*b"hvc1", width, height, fps, frames)
        }
    }

    /// An audio-only `.m4a`: `frames` AAC frames.
    pub fn audio_only(channels: u16, rate: u32, frames: u32) -> Spec {
        Spec { audio: Some((channels, rate)), ..Spec::video(*b"mp4a", 0, 0, (rate, 1024), frames) }
    }

    fn has_video(&self) -> bool {
        self.codec != *b"mp4a"
    }

    fn audio_track(&self) -> Option<(u16, u32)> {
        if self.has_video() { self.audio } else { Some(self.audio.unwrap_or((2, 48000))) }
    }

    /// AAC frames in the audio track.
    fn audio_frames(&self) -> u32 {
        let Some((_, rate)) = self.audio_track() else { return 0 };
        if !self.has_video() {
            return self.frames;
        }
        // Enough 1024-sample frames to cover the video's duration.
        let (ts, delta) = self.fps;
        let num = u128::from(self.frames) * u128::from(delta) * u128::from(rate);
        let den = u128::from(ts.max(1)) * 1024;
        u32::try_from(num.div_ceil(den)).unwrap_or(u32::MAX)
    }

    /// The main track's duration in milliseconds (what mvhd, tkhd and mehd
    /// say).
    fn duration_ms(&self) -> u64 {
        if self.has_video() {
            millis(u64::from(self.frames) * u64::from(self.fps.1), self.fps.0)
        } else {
            let rate = self.audio_track().map_or(48000, |(_, r)| r);
            millis(u64::from(self.audio_frames()) * 1024, rate)
        }
    }

    /// What the probe says about the file [`build`] writes for this spec.
    pub fn facts(&self) -> MediaFacts {
        let video = self.has_video();
        let (ts, delta) = self.fps;
        let v = |x: u32| Some(x).filter(|&x| video && x > 0);
        let ms = self.duration_ms();
        let rate_known = ts > 0 && delta > 0 && (self.frames > 0 || self.fragmented);
        MediaFacts {
            container: if self.quicktime { Container::Quicktime } else { Container::Mp4 },
            duration_ms: Some(ms).filter(|&d| d > 0),
            width: v(self.width),
            height: v(self.height),
            frame_rate: (video && rate_known).then(|| (f64::from(ts) / f64::from(delta) * 1000.0).round() / 1000.0),
            codec: Some(String::from_utf8_lossy(&self.codec).into_owned()),
            views: video.then_some(if self.stereo && matches!(&self.codec, b"hvc1" | b"hev1") { 2 } else { 1 }),
            hero_eye: self.hero.filter(|_| video),
            baseline_mm: self.baseline_um.filter(|_| video).map(|um| f64::from(um) / 1000.0),
            hfov_deg: self.hfov_millideg.filter(|_| video).map(|md| f64::from(md) / 1000.0),
            projection: self.projection.filter(|_| video),
            packing: self.packing.filter(|_| video),
            audio_channels: self.audio_track().map(|(c, _)| u32::from(c)),
            sample_rate: self.audio_track().map(|(_, r)| r),
        }
    }
}

fn millis(value: u64, timescale: u32) -> u64 {
    let ts = u128::from(timescale.max(1));
    u64::try_from((u128::from(value) * 1000 + ts / 2) / ts).unwrap_or(u64::MAX)
}

/// The whole file for `spec`.
pub fn build(spec: &Spec) -> Vec<u8> {
    let mut out = Vec::new();
    write_to(spec, &mut out).expect("writing to a Vec does not fail");
    out
}

/// Write the file for `spec` to `out`, the payload generated as it goes (so
/// a file of tens of MiB costs no more memory than its moov). Returns the
/// bytes written; the same bytes as [`build`].
pub fn write_to(spec: &Spec, out: &mut impl Write) -> io::Result<u64> {
    let mut written = 0u64;
    let mut block = vec![0u8; 64 << 10];
    for piece in pieces(spec) {
        match piece {
            Piece::Bytes(b) => {
                out.write_all(&b)?;
                written += b.len() as u64;
            }
            Piece::Payload { start, len } => {
                let mut at = start;
                while at < start + len {
                    let n = (start + len - at).min(block.len() as u64) as usize;
                    payload_bytes(at, &mut block[..n]);
                    out.write_all(&block[..n])?;
                    at += n as u64;
                }
                written += len;
            }
        }
    }
    Ok(written)
}

/// A non-fragmented file in three parts: `head` (ftyp, the moov when it
/// comes first, the mdat header), `payload` bytes of sample data, and
/// `tail` (the moov when it comes last). A benchmark can write the head,
/// extend the file by `payload` bytes without writing them (a sparse
/// file), then write the tail.
pub struct Parts {
    pub head: Vec<u8>,
    pub payload: u64,
    pub tail: Vec<u8>,
}

/// [`Parts`] of the file for a non-fragmented `spec`.
///
/// # Panics
/// For a fragmented spec.
pub fn parts(spec: &Spec) -> Parts {
    assert!(!spec.fragmented, "parts() is for non-fragmented files");
    let mut p = Parts { head: Vec::new(), payload: 0, tail: Vec::new() };
    let mut seen = false;
    for piece in pieces(spec) {
        match piece {
            Piece::Payload { len, .. } => {
                p.payload = len;
                seen = true;
            }
            Piece::Bytes(b) if !seen => p.head.extend_from_slice(&b),
            Piece::Bytes(b) => p.tail.extend_from_slice(&b),
        }
    }
    p
}

/// The payload byte at offset `start + i` into `buf[i]`: splitmix64 of each
/// 8-byte word's index, so any range can be made without the rest.
pub fn payload_bytes(start: u64, buf: &mut [u8]) {
    let mut i = 0;
    let mut g = start;
    while i < buf.len() {
        let word = splitmix(g / 8).to_le_bytes();
        let off = (g % 8) as usize;
        let n = (8 - off).min(buf.len() - i);
        buf[i..i + n].copy_from_slice(&word[off..off + n]);
        i += n;
        g += n as u64;
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A box: 32-bit size header, or the 64-bit form when the box is 4 GiB or
/// more.
pub fn boxed(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let total = payload.len() as u64 + 8;
    if total > u64::from(u32::MAX) {
        return boxed64(kind, payload);
    }
    let mut b = Vec::with_capacity(total as usize);
    b.extend_from_slice(&(total as u32).to_be_bytes());
    b.extend_from_slice(kind);
    b.extend_from_slice(payload);
    b
}

/// A box with the 64-bit size form (`size == 1`, then a u64 largesize).
pub fn boxed64(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(payload.len() + 16);
    b.extend_from_slice(&1u32.to_be_bytes());
    b.extend_from_slice(kind);
    b.extend_from_slice(&(payload.len() as u64 + 16).to_be_bytes());
    b.extend_from_slice(payload);
    b
}

/// A full box: version and 24-bit flags before `payload`.
pub fn full_box(kind: &[u8; 4], version: u8, flags: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(payload.len() + 4);
    p.extend_from_slice(&((u32::from(version) << 24) | (flags & 0x00ff_ffff)).to_be_bytes());
    p.extend_from_slice(payload);
    boxed(kind, &p)
}

/// A header alone declaring a box of `size` bytes (header included) whose
/// payload is not written: `0` is "to the end of the file", over 32 bits
/// takes the 64-bit form.
pub fn header(kind: &[u8; 4], size: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(16);
    if size > u64::from(u32::MAX) {
        b.extend_from_slice(&1u32.to_be_bytes());
        b.extend_from_slice(kind);
        b.extend_from_slice(&size.to_be_bytes());
    } else {
        b.extend_from_slice(&(size as u32).to_be_bytes());
        b.extend_from_slice(kind);
    }
    b
}

/// Big-endian writes on a byte vector.
trait Put {
    fn u16(&mut self, v: u16) -> &mut Self;
    fn u32(&mut self, v: u32) -> &mut Self;
    fn u64(&mut self, v: u64) -> &mut Self;
    fn raw(&mut self, b: &[u8]) -> &mut Self;
}

impl Put for Vec<u8> {
    fn u16(&mut self, v: u16) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }
    fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.extend_from_slice(b);
        self
    }
}

/// A piece of the file: bytes, or a range of the payload.
enum Piece {
    Bytes(Vec<u8>),
    Payload { start: u64, len: u64 },
}

/// Samples of one track per chunk.
const CHUNK: usize = 10;

struct TrackPlan {
    id: u32,
    video: bool,
    timescale: u32,
    delta: u32,
    sizes: Vec<u32>,
}

struct ChunkPlan {
    /// Index into the track plans.
    track: usize,
    first: usize,
    n: usize,
    /// Offset of the chunk from the start of the payload.
    offset: u64,
    bytes: u64,
}

fn plan(spec: &Spec) -> (Vec<TrackPlan>, Vec<ChunkPlan>) {
    let mut tracks = Vec::new();
    if spec.has_video() {
        let (ts, delta) = spec.fps;
        tracks.push(TrackPlan { id: 1, video: true, timescale: ts, delta, sizes: vec![0; spec.frames as usize] });
    }
    if let Some((_, rate)) = spec.audio_track() {
        let id = tracks.len() as u32 + 1;
        tracks.push(TrackPlan {
            id,
            video: false,
            timescale: rate,
            delta: 1024,
            sizes: vec![0; spec.audio_frames() as usize],
        });
    }
    // The payload split over all samples, the first `extra` one byte larger.
    let total: u64 = tracks.iter().map(|t| t.sizes.len() as u64).sum();
    if let Some(base) = spec.payload.checked_div(total) {
        let extra = spec.payload % total;
        assert!(base < u64::from(u32::MAX), "payload too large for {total} samples");
        let mut g = 0u64;
        for t in &mut tracks {
            for s in &mut t.sizes {
                *s = (base + u64::from(g < extra)) as u32;
                g += 1;
            }
        }
    }
    // Interleave chunks: one of each track in turn.
    let mut chunks = Vec::new();
    let mut next = vec![0usize; tracks.len()];
    let mut offset = 0u64;
    loop {
        let mut any = false;
        for (i, t) in tracks.iter().enumerate() {
            let first = next[i];
            let n = CHUNK.min(t.sizes.len() - first);
            if n == 0 {
                continue;
            }
            let bytes: u64 = t.sizes[first..first + n].iter().map(|&s| u64::from(s)).sum();
            chunks.push(ChunkPlan { track: i, first, n, offset, bytes });
            offset += bytes;
            next[i] += n;
            any = true;
        }
        if !any {
            break;
        }
    }
    (tracks, chunks)
}

fn pieces(spec: &Spec) -> Vec<Piece> {
    let (tracks, chunks) = plan(spec);
    let ftyp = ftyp(spec);
    let mut out = vec![];
    if spec.fragmented {
        let moov = moov(spec, &tracks, &[], 0, false);
        out.push(Piece::Bytes(ftyp));
        out.push(Piece::Bytes(moov));
        // One fragment per chunk of the first track, with the chunks of the
        // other tracks that follow it.
        let mut i = 0;
        let mut seq = 1;
        while i < chunks.len() {
            let mut j = i + 1;
            while j < chunks.len() && chunks[j].track != chunks[i].track {
                j += 1;
            }
            let frag = &chunks[i..j];
            let start = frag[0].offset;
            let len: u64 = frag.iter().map(|c| c.bytes).sum();
            let mdat_header = header(b"mdat", len + if len + 8 > u64::from(u32::MAX) { 16 } else { 8 });
            let moof_len = moof(&tracks, frag, seq, 0, 0).len() as u64;
            let moof = moof(&tracks, frag, seq, moof_len + mdat_header.len() as u64, start);
            out.push(Piece::Bytes(moof));
            out.push(Piece::Bytes(mdat_header));
            out.push(Piece::Payload { start, len });
            seq += 1;
            i = j;
        }
        let mfro = full_box(b"mfro", 0, 0, &24u32.to_be_bytes());
        out.push(Piece::Bytes(boxed(b"mfra", &mfro)));
        return out;
    }
    let mdat_header_len: u64 = if spec.mdat64 || spec.payload + 8 > u64::from(u32::MAX) { 16 } else { 8 };
    let mut mdat_header = Vec::new();
    if mdat_header_len == 16 {
        mdat_header.u32(1).raw(b"mdat").u64(spec.payload + 16);
    } else {
        mdat_header.u32(spec.payload as u32 + 8).raw(b"mdat");
    }
    // stco while every offset fits 32 bits, co64 beyond.
    let moov32 = moov(spec, &tracks, &chunks, 0, false).len() as u64;
    let co64 = ftyp.len() as u64 + moov32 + mdat_header_len + spec.payload > u64::from(u32::MAX);
    let moov_len = moov(spec, &tracks, &chunks, 0, co64).len() as u64;
    let ftyp_len = ftyp.len() as u64;
    out.push(Piece::Bytes(ftyp));
    if spec.moov_first {
        let base = ftyp_len + moov_len + mdat_header_len;
        out.push(Piece::Bytes(moov(spec, &tracks, &chunks, base, co64)));
    }
    out.push(Piece::Bytes(mdat_header));
    if spec.payload > 0 {
        out.push(Piece::Payload { start: 0, len: spec.payload });
    }
    if !spec.moov_first {
        out.push(Piece::Bytes(moov(spec, &tracks, &chunks, ftyp_len + mdat_header_len, co64)));
    }
    out
}

fn ftyp(spec: &Spec) -> Vec<u8> {
    let mut p = Vec::new();
    if spec.quicktime {
        p.raw(b"qt  ").u32(0x2005_0300).raw(b"qt  ");
    } else if spec.has_video() {
        p.raw(b"isom").u32(0x200).raw(b"isom").raw(b"iso2").raw(b"mp41");
    } else {
        p.raw(b"M4A ").u32(0x200).raw(b"M4A ").raw(b"isom").raw(b"iso2");
    }
    boxed(b"ftyp", &p)
}

const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

/// The moov: chunk offsets are `base` + the chunk's payload offset. Empty
/// sample tables and an `mvex` for a fragmented spec.
fn moov(spec: &Spec, tracks: &[TrackPlan], chunks: &[ChunkPlan], base: u64, co64: bool) -> Vec<u8> {
    let frag = spec.fragmented;
    let ms = spec.duration_ms();
    let movie_ms = if frag { 0 } else { ms };
    let mut mvhd = Vec::new();
    mvhd.u32(0).u32(0).u32(1000).u32(movie_ms as u32).u32(0x0001_0000).u16(0x0100).raw(&[0; 10]);
    for m in MATRIX {
        mvhd.u32(m);
    }
    mvhd.raw(&[0; 24]).u32(tracks.len() as u32 + 1);
    let mut p = full_box(b"mvhd", 0, 0, &mvhd);
    for (i, t) in tracks.iter().enumerate() {
        let own: Vec<&ChunkPlan> = chunks.iter().filter(|c| c.track == i).collect();
        p.extend_from_slice(&trak(spec, t, &own, base, co64, movie_ms));
    }
    if frag {
        let mut mvex = if ms > u64::from(u32::MAX) {
            full_box(b"mehd", 1, 0, &ms.to_be_bytes())
        } else {
            full_box(b"mehd", 0, 0, &(ms as u32).to_be_bytes())
        };
        for t in tracks {
            let mut trex = Vec::new();
            trex.u32(t.id).u32(1).u32(t.delta).u32(0).u32(0);
            mvex.extend_from_slice(&full_box(b"trex", 0, 0, &trex));
        }
        p.extend_from_slice(&boxed(b"mvex", &mvex));
    }
    boxed(b"moov", &p)
}

fn trak(spec: &Spec, t: &TrackPlan, chunks: &[&ChunkPlan], base: u64, co64: bool, movie_ms: u64) -> Vec<u8> {
    let frag = spec.fragmented;
    let (w, h) = if t.video { (spec.width, spec.height) } else { (0, 0) };
    let mut tkhd = Vec::new();
    tkhd.u32(0).u32(0).u32(t.id).u32(0).u32(movie_ms as u32).raw(&[0; 8]).u16(0).u16(0);
    tkhd.u16(if t.video { 0 } else { 0x0100 }).u16(0);
    for m in MATRIX {
        tkhd.u32(m);
    }
    tkhd.u32(w << 16).u32(h << 16);
    let media_duration = if frag { 0 } else { t.sizes.len() as u64 * u64::from(t.delta) };
    let mut mdhd = Vec::new();
    mdhd.u32(0).u32(0).u32(t.timescale).u32(media_duration as u32).u16(0x55c4).u16(0);
    let handler = if t.video { b"vide" } else { b"soun" };
    let mut hdlr = Vec::new();
    hdlr.raw(if spec.quicktime { b"mhlr" } else { &[0; 4] }).raw(handler).raw(&[0; 12]);
    hdlr.raw(if t.video { b"VideoHandler\0" } else { b"SoundHandler\0" });
    let header_box = if t.video { full_box(b"vmhd", 0, 1, &[0; 8]) } else { full_box(b"smhd", 0, 0, &[0; 4]) };
    let mut dref = Vec::new();
    dref.u32(1);
    dref.extend_from_slice(&full_box(if spec.quicktime { b"alis" } else { b"url " }, 0, 1, &[]));
    let dinf = boxed(b"dinf", &full_box(b"dref", 0, 0, &dref));
    let mut stbl = stsd(spec, t);
    // Sample tables: empty when fragmented.
    let mut stts = Vec::new();
    let mut stsc = Vec::new();
    let mut stsz = Vec::new();
    let mut stco = Vec::new();
    if frag || t.sizes.is_empty() {
        stts.u32(0);
        stsc.u32(0);
        stsz.u32(0).u32(0);
        stco.u32(0);
    } else {
        stts.u32(1).u32(t.sizes.len() as u32).u32(t.delta);
        let mut runs: Vec<(u32, u32)> = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            if runs.last().is_none_or(|&(_, n)| n != c.n as u32) {
                runs.push((i as u32 + 1, c.n as u32));
            }
        }
        stsc.u32(runs.len() as u32);
        for (first, n) in runs {
            stsc.u32(first).u32(n).u32(1);
        }
        stsz.u32(0).u32(t.sizes.len() as u32);
        for &s in &t.sizes {
            stsz.u32(s);
        }
        stco.u32(chunks.len() as u32);
        for c in chunks {
            if co64 {
                stco.u64(base + c.offset);
            } else {
                stco.u32((base + c.offset) as u32);
            }
        }
    }
    stbl.extend_from_slice(&full_box(b"stts", 0, 0, &stts));
    stbl.extend_from_slice(&full_box(b"stsc", 0, 0, &stsc));
    stbl.extend_from_slice(&full_box(b"stsz", 0, 0, &stsz));
    stbl.extend_from_slice(&full_box(if co64 { b"co64" } else { b"stco" }, 0, 0, &stco));
    let minf = [header_box, dinf, boxed(b"stbl", &stbl)].concat();
    let mdia = [full_box(b"mdhd", 0, 0, &mdhd), full_box(b"hdlr", 0, 0, &hdlr), boxed(b"minf", &minf)].concat();
    boxed(b"trak", &[full_box(b"tkhd", 0, 3, &tkhd), boxed(b"mdia", &mdia)].concat())
}

fn stsd(spec: &Spec, t: &TrackPlan) -> Vec<u8> {
    let entry = if t.video { visual_entry(spec) } else { audio_entry(spec) };
    let mut p = Vec::new();
    p.u32(1).raw(&entry);
    full_box(b"stsd", 0, 0, &p)
}

fn visual_entry(spec: &Spec) -> Vec<u8> {
    // The sample entry holds 16 bits; a larger spec is written as 65,535.
    let w = u16::try_from(spec.width).unwrap_or(u16::MAX);
    let h = u16::try_from(spec.height).unwrap_or(u16::MAX);
    let mut p = Vec::new();
    p.raw(&[0; 6]).u16(1).raw(&[0; 16]).u16(w).u16(h).u32(0x0048_0000).u32(0x0048_0000).u32(0).u16(1);
    p.raw(&[0; 32]).u16(0x0018).u16(0xffff);
    match &spec.codec {
        b"hvc1" | b"hev1" => {
            // configurationVersion 1, the rest zero, no NAL arrays.
            let mut hvcc = vec![1u8];
            hvcc.extend_from_slice(&[0; 22]);
            p.raw(&boxed(b"hvcC", &hvcc));
            if spec.stereo {
                p.raw(&boxed(b"lhvC", &[1, 0xf0, 0, 0xfc, 0xcb, 0]));
            }
        }
        b"avc1" | b"avc3" => {
            p.raw(&boxed(b"avcC", &[1, 0x42, 0xc0, 0x1e, 0xff, 0xe0, 0]));
        }
        _ => {}
    }
    let mut eyes = Vec::new();
    if spec.stereo {
        // has_left_eye_view | has_right_eye_view
        eyes.raw(&full_box(b"stri", 0, 0, &[0x03]));
    }
    if let Some(hero) = spec.hero {
        eyes.raw(&full_box(b"hero", 0, 0, &[if hero == Eye::Left { 1 } else { 2 }]));
    }
    if let Some(um) = spec.baseline_um {
        eyes.raw(&boxed(b"cams", &full_box(b"blin", 0, 0, &um.to_be_bytes())));
    }
    let mut vexu = Vec::new();
    if !eyes.is_empty() {
        vexu.raw(&boxed(b"eyes", &eyes));
    }
    if let Some(proj) = spec.projection {
        let kind = match proj {
            Projection::Rect => b"rect",
            Projection::Equi => b"equi",
            Projection::Hequ => b"hequ",
            Projection::Fish => b"fish",
        };
        vexu.raw(&boxed(b"proj", &full_box(b"prji", 0, 0, kind)));
    }
    if let Some(pack) = spec.packing {
        let kind = if pack == Packing::Side { b"side" } else { b"over" };
        vexu.raw(&boxed(b"pack", &full_box(b"pkin", 0, 0, kind)));
    }
    if !vexu.is_empty() {
        p.raw(&boxed(b"vexu", &vexu));
    }
    if let Some(md) = spec.hfov_millideg {
        p.raw(&boxed(b"hfov", &md.to_be_bytes()));
    }
    boxed(&spec.codec, &p)
}

fn audio_entry(spec: &Spec) -> Vec<u8> {
    let (channels, rate) = spec.audio_track().unwrap_or((2, 48000));
    let version = if !spec.quicktime {
        assert!(rate <= 0xffff, "an MP4 sound entry holds rates up to 65,535 Hz");
        0
    } else if rate > 0xffff {
        2
    } else {
        spec.sound_version.min(2)
    };
    let mut p = Vec::new();
    p.raw(&[0; 6]).u16(1).u16(version).u16(0).u32(0);
    if version == 2 {
        p.u16(3).u16(16).u16(0xfffe).u16(0).u32(0x0001_0000).u32(72);
        p.u64(f64::from(rate).to_bits()).u32(u32::from(channels)).u32(0x7f00_0000);
        p.u32(16).u32(0).u32(0).u32(1024);
    } else {
        p.u16(channels).u16(16).u16(if version == 1 { 0xfffe } else { 0 }).u16(0).u32(rate << 16);
        if version == 1 {
            p.u32(1024).u32(0).u32(0).u32(2);
        }
    }
    p.raw(&esds(channels, rate));
    boxed(b"mp4a", &p)
}

/// An `esds` for AAC LC whose AudioSpecificConfig names the rate and the
/// channel configuration (0, "see the entry", for counts it has no code
/// for).
fn esds(channels: u16, rate: u32) -> Vec<u8> {
    const RATES: [u32; 13] = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];
    let mut bits: Vec<(u32, u32)> = vec![(2, 5)];
    match RATES.iter().position(|&r| r == rate) {
        Some(i) => bits.push((i as u32, 4)),
        None => bits.extend([(15, 4), (rate & 0x00ff_ffff, 24)]),
    }
    let config = match channels {
        1..=6 => u32::from(channels),
        8 => 7,
        _ => 0,
    };
    bits.extend([(config, 4), (0, 3)]);
    let mut asc = Vec::new();
    let (mut acc, mut n) = (0u64, 0u32);
    for (v, width) in bits {
        acc = (acc << width) | u64::from(v);
        n += width;
        while n >= 8 {
            asc.push((acc >> (n - 8)) as u8);
            n -= 8;
        }
    }
    if n > 0 {
        asc.push((acc << (8 - n)) as u8);
    }
    let desc = |tag: u8, body: &[u8]| [&[tag, body.len() as u8][..], body].concat();
    let dsi = desc(0x05, &asc);
    let dcd = desc(0x04, &[&[0x40, 0x15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..], &dsi].concat());
    let es = desc(0x03, &[&[0, 1, 0][..], &dcd, &desc(0x06, &[0x02])].concat());
    full_box(b"esds", 0, 0, &es)
}

/// One fragment's moof: a traf per chunk; `data_start` is the offset of the
/// fragment's first payload byte from the start of the moof, `payload_start`
/// that byte's offset into the payload.
fn moof(tracks: &[TrackPlan], chunks: &[ChunkPlan], seq: u32, data_start: u64, payload_start: u64) -> Vec<u8> {
    let mut p = full_box(b"mfhd", 0, 0, &seq.to_be_bytes());
    for c in chunks {
        let t = &tracks[c.track];
        let tfhd = full_box(b"tfhd", 0, 0x02_0000, &t.id.to_be_bytes());
        let tfdt = full_box(b"tfdt", 1, 0, &(c.first as u64 * u64::from(t.delta)).to_be_bytes());
        let mut trun = Vec::new();
        trun.u32(c.n as u32).u32((data_start + c.offset - payload_start) as u32);
        for &s in &t.sizes[c.first..c.first + c.n] {
            trun.u32(t.delta).u32(s);
        }
        let traf = [tfhd, tfdt, full_box(b"trun", 0, 0x0301, &trun)].concat();
        p.extend_from_slice(&boxed(b"traf", &traf));
    }
    boxed(b"moof", &p)
}

/// What tests write for a file name the media check looks into, the way a
/// render would: `.m4a` is AAC audio (8 frames); a `_L`/`_R`-style eye is
/// plain HEVC (both eyes alike); any other `.mov`/`.mp4`/`.aivu` is MV-HEVC
/// stereo (8 frames at 30 fps, 1920×1080). `None` for a name the check does
/// not look into. The payload is the caller's to set.
pub fn spec_for_name(name: &str) -> Option<Spec> {
    let lower = name.to_ascii_lowercase();
    let (stem, ext) = lower.rsplit_once('.')?;
    let eye = ["_l", "-l", ".l", "_r", "-r", ".r", "_left", "-left", ".left", "_right", "-right", ".right"]
        .iter()
        .any(|s| stem.ends_with(s));
    match ext {
        "m4a" => Some(Spec::audio_only(2, 48_000, 8)),
        "mov" | "mp4" | "aivu" if eye => Some(Spec::video(*b"hvc1", 1920, 1080, (30_000, 1000), 8)),
        "mov" | "mp4" | "aivu" => Some(Spec::stereo(1920, 1080, (30_000, 1000), 8)),
        _ => None,
    }
}

/// The file [`spec_for_name`] describes; `seed` adds payload bytes, so two
/// seeds give two sizes.
#[cfg(test)]
pub(crate) fn for_name(name: &str, seed: u64) -> Option<Vec<u8>> {
    spec_for_name(name).map(|spec| build(&Spec { payload: 512 + seed, ..spec }))
}
