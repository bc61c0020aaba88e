//! Parsing a `moov` held in memory: the movie header, each track's header,
//! media header, handler, data references, first sample entry and sample
//! tables, and the extensions in a video sample entry (`hvcC`/`lhvC`,
//! `vexu`, `hfov`).
//!
//! The structure boxes (moov, trak, mdia, minf, dinf, stbl, stsd) must nest
//! properly: a child running past its parent is `Err` (the moov is broken
//! inside). Inside a sample entry the probe is lenient: codec-specific
//! boxes it does not understand, or that are cut short, are ignored.

use super::tables::{Chunks, PastEnd, Sizes, Tables, entries, first_past_end};
use super::text::{fourcc, num, size};
use super::{Eye, Packing, Projection};

fn be16(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at.checked_add(2)?).map(|s| u16::from_be_bytes([s[0], s[1]]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at.checked_add(4)?).map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    Some(u64::from_be_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]))
}

fn tag(b: &[u8], at: usize) -> Option<[u8; 4]> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some([s[0], s[1], s[2], s[3]])
}

/// A child box: its type, payload, and where its header starts in the file.
struct Child<'a> {
    kind: [u8; 4],
    body: &'a [u8],
    at: u64,
}

/// The children of a box whose payload is `data`, starting at file offset
/// `base`. Fewer than 8 bytes left over at the end are ignored (QuickTime
/// ends some lists with a 4-byte zero); `size == 0` runs to the parent's
/// end.
struct Children<'a, 'p> {
    data: &'a [u8],
    base: u64,
    pos: usize,
    /// The parent's path, for messages (`moov/trak[1]/mdia`).
    path: &'p str,
}

fn children<'a, 'p>(data: &'a [u8], base: u64, path: &'p str) -> Children<'a, 'p> {
    Children { data, base, pos: 0, path }
}

impl<'a> Iterator for Children<'a, '_> {
    type Item = Result<Child<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        let left = self.data.len().checked_sub(self.pos)?;
        if left < 8 {
            return None;
        }
        let at = self.base + self.pos as u64;
        let declared = be32(self.data, self.pos)?;
        let kind = tag(self.data, self.pos + 4)?;
        let (box_size, header) = match declared {
            0 => (left as u64, 8usize),
            1 => match be64(self.data, self.pos + 8) {
                Some(large) => (large, 16),
                None => {
                    self.pos = self.data.len();
                    return Some(Err(format!(
                        "{}: {} at byte {} has a 64-bit size cut off by the end of {}",
                        self.path,
                        fourcc(kind),
                        num(at),
                        self.path.rsplit('/').next().unwrap_or(self.path)
                    )));
                }
            },
            n => (u64::from(n), 8),
        };
        let parent = self.path.rsplit('/').next().unwrap_or(self.path);
        if box_size < header as u64 {
            self.pos = self.data.len();
            return Some(Err(format!(
                "{}: {} at byte {} declares {} bytes, less than its {header}-byte header",
                self.path,
                fourcc(kind),
                num(at),
                box_size
            )));
        }
        if box_size > left as u64 {
            self.pos = self.data.len();
            return Some(Err(format!(
                "{}: {} at byte {} declares {}, {} past the end of {parent}",
                self.path,
                fourcc(kind),
                num(at),
                size(box_size),
                size(box_size - left as u64)
            )));
        }
        let body = &self.data[self.pos + header..self.pos + box_size as usize];
        self.pos += box_size as usize;
        Some(Ok(Child { kind, body, at }))
    }
}

/// The first sample entry of a track, as far as the facts go.
#[derive(Debug, Default, Clone)]
pub(super) struct Entry {
    pub fourcc: [u8; 4],
    pub width: u16,
    pub height: u16,
    pub hvcc: bool,
    pub lhvc: bool,
    pub hero: Option<Eye>,
    pub baseline_um: Option<u32>,
    pub hfov_millideg: Option<u32>,
    pub projection: Option<Projection>,
    pub packing: Option<Packing>,
    pub channels: Option<u32>,
    pub rate: Option<u32>,
}

/// What a track says about itself.
#[derive(Debug, Default, Clone)]
pub(super) struct Track {
    /// 1-based position among the moov's tracks.
    pub index: u32,
    pub id: u32,
    pub handler: [u8; 4],
    /// tkhd width and height, 16.16.
    pub tkhd_size: (u32, u32),
    pub timescale: u32,
    pub duration: u64,
    pub entry: Option<Entry>,
    pub samples: u64,
    /// The stts delta covering the most samples (consecutive equal deltas
    /// merged).
    pub dominant_delta: Option<u32>,
}

/// What the moov says.
#[derive(Debug, Default)]
pub(super) struct Movie {
    pub timescale: u32,
    pub duration: u64,
    /// `mvex` present: a fragmented movie.
    pub mvex: bool,
    pub mehd_duration: Option<u64>,
    /// trex default_sample_duration for the first video track.
    pub video_trex_duration: Option<u32>,
    pub video: Option<Track>,
    pub audio: Option<Track>,
    /// Samples listed in all tracks' tables.
    pub samples: u64,
    /// The first sample found past the end of the file, as a message.
    pub past_end: Option<String>,
}

/// Parse a moov payload that starts at file offset `base`, in a file of
/// `len` bytes. `Err`: the moov is broken inside (the message says where).
pub(super) fn parse(moov: &[u8], base: u64, len: u64) -> Result<Movie, String> {
    let mut m = Movie::default();
    let mut have_mvhd = false;
    let mut mvex: Option<(&[u8], u64)> = None;
    let mut index = 0u32;
    for child in children(moov, base, "moov") {
        let c = child?;
        match &c.kind {
            b"mvhd" if !have_mvhd => {
                let (ts, d) =
                    times(c.body).ok_or_else(|| format!("moov/mvhd is {}, too short", size(c.body.len() as u64)))?;
                (m.timescale, m.duration) = (ts, d);
                have_mvhd = true;
            }
            b"trak" => {
                index = index.saturating_add(1);
                let path = format!("moov/trak[{index}]");
                let (track, tables) = trak(c.body, c.at + 8, &path, index)?;
                m.samples = m.samples.saturating_add(track.samples);
                if m.past_end.is_none()
                    && let Some(t) = tables
                    && let Some(p) = first_past_end(&t, len).map_err(|e| format!("{path}/mdia/minf/stbl: {e}"))?
                {
                    m.past_end = Some(past_end_message(&track, &p, len));
                }
                match &track.handler {
                    b"vide" if m.video.is_none() => m.video = Some(track),
                    b"soun" if m.audio.is_none() => m.audio = Some(track),
                    _ => {}
                }
            }
            b"mvex" if mvex.is_none() => {
                m.mvex = true;
                mvex = Some((c.body, c.at + 8));
            }
            _ => {}
        }
    }
    if !have_mvhd {
        return Err("moov has no mvhd (movie header)".into());
    }
    if let Some((body, at)) = mvex {
        let video_id = m.video.as_ref().map(|t| t.id);
        for child in children(body, at, "moov/mvex") {
            let c = child?;
            match &c.kind {
                b"mehd" => {
                    m.mehd_duration = match c.body.first() {
                        Some(1) => be64(c.body, 4),
                        _ => be32(c.body, 4).map(u64::from),
                    };
                }
                b"trex" if video_id.is_some() && be32(c.body, 4) == video_id => {
                    m.video_trex_duration = be32(c.body, 12);
                }
                _ => {}
            }
        }
    }
    Ok(m)
}

fn past_end_message(t: &Track, p: &PastEnd, len: u64) -> String {
    format!(
        "track {} ({}): sample {} of {} lies at bytes {}–{}, the file ends at {}",
        t.index,
        fourcc(t.handler),
        num(p.sample),
        num(p.of),
        num(p.start),
        num(p.end),
        size(len)
    )
}

/// (timescale, duration) of an mvhd or mdhd payload, versions 0 and 1.
fn times(body: &[u8]) -> Option<(u32, u64)> {
    match body.first()? {
        1 => Some((be32(body, 20)?, be64(body, 24)?)),
        _ => Some((be32(body, 12)?, u64::from(be32(body, 16)?))),
    }
}

/// One trak: what it says, and its sample tables (`None` without stbl).
fn trak<'a>(body: &'a [u8], base: u64, path: &str, index: u32) -> Result<(Track, Option<Tables<'a>>), String> {
    let mut t = Track { index, ..Track::default() };
    let mut stbl: Option<(&[u8], u64)> = None;
    let mut dinf: Option<(&[u8], u64)> = None;
    for child in children(body, base, path) {
        let c = child?;
        match &c.kind {
            b"tkhd" => {
                let (id_at, w_at) = if c.body.first() == Some(&1) { (20, 88) } else { (12, 76) };
                t.id = be32(c.body, id_at).unwrap_or(0);
                t.tkhd_size = (be32(c.body, w_at).unwrap_or(0), be32(c.body, w_at + 4).unwrap_or(0));
            }
            b"mdia" => {
                let mdia_path = format!("{path}/mdia");
                for child in children(c.body, c.at + 8, &mdia_path) {
                    let c = child?;
                    match &c.kind {
                        b"mdhd" => {
                            (t.timescale, t.duration) = times(c.body).ok_or_else(|| {
                                format!("{mdia_path}/mdhd is {}, too short", size(c.body.len() as u64))
                            })?;
                        }
                        b"hdlr" => t.handler = tag(c.body, 8).unwrap_or(*b"    "),
                        b"minf" => {
                            let minf_path = format!("{mdia_path}/minf");
                            for child in children(c.body, c.at + 8, &minf_path) {
                                let c = child?;
                                match &c.kind {
                                    b"stbl" => stbl = Some((c.body, c.at + 8)),
                                    b"dinf" => dinf = Some((c.body, c.at + 8)),
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let label = || format!("track {index} ({})", fourcc(t.handler));
    if let Some((body, at)) = dinf {
        let dinf_path = format!("{path}/mdia/minf/dinf");
        for child in children(body, at, &dinf_path) {
            let c = child?;
            if c.kind == *b"dref"
                && let Some((n, kind)) = external_reference(c.body, c.at + 8, &format!("{dinf_path}/dref"))?
            {
                return Err(format!(
                    "{}: its media lives in another file (data reference {n} is {} without the \
                     self-contained flag): a reference movie",
                    label(),
                    fourcc(kind)
                ));
            }
        }
    }
    let Some((body, at)) = stbl else { return Ok((t, None)) };
    let stbl_path = format!("{path}/mdia/minf/stbl");
    let mut stsc: &[u8] = &[];
    let mut sizes = Sizes::empty();
    let mut chunks = Chunks::C32(&[]);
    for child in children(body, at, &stbl_path) {
        let c = child?;
        match &c.kind {
            b"stsd" => t.entry = sample_entry(c.body, c.at + 8, &stbl_path, t.handler)?,
            b"stts" => t.dominant_delta = dominant_delta(entries(&format!("{stbl_path}/stts"), c.body, 0, 8)?.1),
            b"stsc" => stsc = entries(&format!("{stbl_path}/stsc"), c.body, 0, 12)?.1,
            b"stsz" => sizes = Sizes::stsz(&stbl_path, c.body)?,
            b"stz2" => sizes = Sizes::stz2(&stbl_path, c.body)?,
            b"stco" => chunks = Chunks::C32(entries(&format!("{stbl_path}/stco"), c.body, 0, 4)?.1),
            b"co64" => chunks = Chunks::C64(entries(&format!("{stbl_path}/co64"), c.body, 0, 8)?.1),
            _ => {}
        }
    }
    t.samples = sizes.count();
    Ok((t, Some(Tables { stsc, sizes, chunks })))
}

/// The first data reference without the self-contained flag (1-based
/// index and type), if any.
fn external_reference(body: &[u8], base: u64, path: &str) -> Result<Option<(u32, [u8; 4])>, String> {
    let count = be32(body, 4).unwrap_or(0);
    let list = body.get(8..).unwrap_or(&[]);
    for (i, child) in children(list, base + 8, path).take(count as usize).enumerate() {
        let c = child?;
        let flags = be32(c.body, 0).unwrap_or(0) & 0x00ff_ffff;
        if flags & 1 == 0 {
            return Ok(Some((u32::try_from(i + 1).unwrap_or(u32::MAX), c.kind)));
        }
    }
    Ok(None)
}

/// The stts delta that covers the most samples.
fn dominant_delta(stts: &[u8]) -> Option<u32> {
    let mut best: Option<(u64, u32)> = None;
    let mut run: Option<(u64, u32)> = None;
    for e in stts.chunks_exact(8) {
        let count = u64::from(u32::from_be_bytes([e[0], e[1], e[2], e[3]]));
        let delta = u32::from_be_bytes([e[4], e[5], e[6], e[7]]);
        run = match run {
            Some((n, d)) if d == delta => Some((n.saturating_add(count), d)),
            _ => Some((count, delta)),
        };
        if let Some((n, d)) = run
            && best.is_none_or(|(bn, _)| n > bn)
        {
            best = Some((n, d));
        }
    }
    best.filter(|&(n, d)| n > 0 && d > 0).map(|(_, d)| d)
}

/// The first sample entry of an stsd payload.
fn sample_entry(body: &[u8], base: u64, stbl_path: &str, handler: [u8; 4]) -> Result<Option<Entry>, String> {
    let count = be32(body, 4).unwrap_or(0);
    if count == 0 {
        return Ok(None);
    }
    let list = body.get(8..).unwrap_or(&[]);
    let Some(first) = children(list, base + 8, &format!("{stbl_path}/stsd")).next() else { return Ok(None) };
    let c = first?;
    let mut e = Entry { fourcc: c.kind, ..Entry::default() };
    match &handler {
        b"vide" => visual(c.body, &mut e),
        b"soun" => audio(c.body, &mut e),
        _ => {}
    }
    Ok(Some(e))
}

/// A VisualSampleEntry (QuickTime's video sample description has the same
/// 78-byte layout): width and height, then its extension boxes.
fn visual(b: &[u8], e: &mut Entry) {
    e.width = be16(b, 24).unwrap_or(0);
    e.height = be16(b, 26).unwrap_or(0);
    let Some(ext) = b.get(78..) else { return };
    for c in children(ext, 0, "").map_while(Result::ok) {
        match &c.kind {
            b"hvcC" => e.hvcc = true,
            b"lhvC" => e.lhvc = true,
            b"hfov" => e.hfov_millideg = be32(c.body, 0),
            b"vexu" => vexu(c.body, e),
            _ => {}
        }
    }
}

/// Apple's video extended usage box: `eyes` (stri, hero, cams/blin), `proj`
/// (prji), `pack` (pkin). vexu, eyes, cams, proj and pack are plain
/// containers; stri, hero, blin, prji and pkin are full boxes (version and
/// flags before their field).
fn vexu(b: &[u8], e: &mut Entry) {
    for c in children(b, 0, "").map_while(Result::ok) {
        match &c.kind {
            b"eyes" => {
                for c in children(c.body, 0, "").map_while(Result::ok) {
                    match &c.kind {
                        b"hero" => {
                            e.hero = match c.body.get(4) {
                                Some(1) => Some(Eye::Left),
                                Some(2) => Some(Eye::Right),
                                _ => None,
                            }
                        }
                        b"cams" => cams(c.body, e),
                        _ => {}
                    }
                }
            }
            // Accepted directly under vexu too.
            b"cams" => cams(c.body, e),
            b"proj" => {
                for c in children(c.body, 0, "").map_while(Result::ok) {
                    if c.kind == *b"prji" {
                        e.projection = match &tag(c.body, 4).unwrap_or_default() {
                            b"rect" => Some(Projection::Rect),
                            b"equi" => Some(Projection::Equi),
                            b"hequ" => Some(Projection::Hequ),
                            b"fish" => Some(Projection::Fish),
                            _ => None,
                        };
                    }
                }
            }
            b"pack" => {
                for c in children(c.body, 0, "").map_while(Result::ok) {
                    if c.kind == *b"pkin" {
                        e.packing = match &tag(c.body, 4).unwrap_or_default() {
                            b"side" => Some(Packing::Side),
                            b"over" => Some(Packing::Over),
                            _ => None,
                        };
                    }
                }
            }
            _ => {}
        }
    }
}

fn cams(b: &[u8], e: &mut Entry) {
    for c in children(b, 0, "").map_while(Result::ok) {
        if c.kind == *b"blin" {
            e.baseline_um = be32(c.body, 4);
        }
    }
}

/// An AudioSampleEntry / QuickTime sound description. Versions 0 and 1
/// keep the channel count (u16) and rate (16.16) at the same place;
/// version 2 stores a float64 rate and a u32 channel count. For AAC, the
/// channel configuration in `esds` wins when it names one: an MP4 writer
/// may leave the entry's count at its template value of 2.
fn audio(b: &[u8], e: &mut Entry) {
    let version = be16(b, 8);
    if version == Some(2) {
        e.rate = be64(b, 32)
            .map(f64::from_bits)
            .filter(|r| r.is_finite() && *r >= 0.5 && *r <= f64::from(u32::MAX))
            .map(|r| r.round() as u32);
        e.channels = be32(b, 40);
    } else {
        e.channels = be16(b, 16).map(u32::from);
        e.rate = be32(b, 24).map(|r| r >> 16).filter(|&r| r > 0);
    }
    // Where the entry's boxes start: after the 28-byte version 0 layout,
    // QuickTime's 16 more bytes in version 1 (ISO's AudioSampleEntryV1
    // keeps 28), or the 64-byte version 2 layout.
    let starts: &[usize] = match version {
        Some(1) => &[44, 28],
        Some(2) => &[64],
        _ => &[28],
    };
    for &at in starts {
        let Some(ext) = b.get(at..) else { continue };
        if let Some(channels) = esds_channels(ext) {
            e.channels = Some(channels);
            return;
        }
    }
}

/// The channel count an `esds` (directly, or inside QuickTime's `wave`)
/// names in its AAC AudioSpecificConfig, if it names one.
fn esds_channels(boxes: &[u8]) -> Option<u32> {
    for c in children(boxes, 0, "").map_while(Result::ok) {
        match &c.kind {
            b"esds" => return c.body.get(4..).and_then(aac_channels),
            b"wave" => {
                if let Some(n) = esds_channels(c.body) {
                    return Some(n);
                }
            }
            _ => {}
        }
    }
    None
}

/// An MPEG-4 descriptor at `d`: (tag, payload, the rest after it).
fn descriptor(d: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, mut rest) = d.split_first()?;
    let mut len = 0usize;
    for _ in 0..4 {
        let (&b, r) = rest.split_first()?;
        rest = r;
        len = (len << 7) | usize::from(b & 0x7f);
        if b & 0x80 == 0 {
            break;
        }
    }
    let body = rest.get(..len)?;
    Some((tag, body, &rest[len..]))
}

/// ES_Descriptor → DecoderConfigDescriptor (MPEG-4 audio) →
/// DecoderSpecificInfo: the AudioSpecificConfig's channel configuration.
fn aac_channels(es: &[u8]) -> Option<u32> {
    let (tag, body, _) = descriptor(es)?;
    if tag != 0x03 {
        return None;
    }
    let flags = *body.get(2)?;
    let mut at = 3;
    if flags & 0x80 != 0 {
        at += 2;
    }
    if flags & 0x40 != 0 {
        at += 1 + usize::from(*body.get(at)?);
    }
    if flags & 0x20 != 0 {
        at += 2;
    }
    let mut rest = body.get(at..)?;
    while let Some((tag, dcd, next)) = descriptor(rest) {
        if tag == 0x04 {
            // objectTypeIndication 0x40: MPEG-4 audio.
            if dcd.first() != Some(&0x40) {
                return None;
            }
            let (tag, asc, _) = descriptor(dcd.get(13..)?)?;
            return if tag == 0x05 { asc_channels(asc) } else { None };
        }
        rest = next;
    }
    None
}

fn asc_channels(asc: &[u8]) -> Option<u32> {
    let mut bits = Bits { data: asc, at: 0 };
    if bits.take(5)? == 31 {
        bits.take(6)?;
    }
    if bits.take(4)? == 15 {
        bits.take(24)?;
    }
    match bits.take(4)? {
        c @ 1..=6 => Some(c),
        7 | 12 | 14 => Some(8),
        11 => Some(7),
        13 => Some(24),
        _ => None,
    }
}

/// Big-endian bits.
struct Bits<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn take(&mut self, n: usize) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.at / 8)?;
            v = (v << 1) | u32::from((byte >> (7 - self.at % 8)) & 1);
            self.at += 1;
        }
        Some(v)
    }
}
