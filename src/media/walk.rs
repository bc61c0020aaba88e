//! The top-level box walk: one header read per box, every box but `moov`
//! seeked over, and where the boxes stop tiling the file.

use std::io::{self, Read, Seek, SeekFrom};

use super::text::{fourcc, num, size, type_byte};
use super::{MOOV_CAP, MediaError};

/// Types a file may plausibly begin with (ISO-BMFF and QuickTime top-level
/// boxes). Any other first box means "not a container at all".
const FIRST_TYPES: &[[u8; 4]] = &[
    *b"ftyp", *b"moov", *b"mdat", *b"free", *b"skip", *b"wide", *b"pnot", *b"uuid", *b"styp", *b"sidx", *b"ssix",
    *b"moof", *b"mfra", *b"meta", *b"pdin", *b"junk", *b"PICT", *b"prfl", *b"emsg", *b"prft",
];

/// The most top-level boxes the walk reads (a header read each): far more
/// than any movie has (a fragment per frame at 60 fps for three hours is
/// 1.3 million), so a file of tiny boxes cannot keep the probe busy for
/// long.
const MAX_TOP_BOXES: u64 = 10_000_000;

/// One top-level box as its header declares it.
#[derive(Debug, Clone, Copy)]
pub(super) struct TopBox {
    pub kind: [u8; 4],
    pub start: u64,
    /// The declared size, header included (for `size == 0`: to the end of
    /// the file).
    pub size: u64,
    /// `size == 0` in the header.
    pub to_eof: bool,
}

/// How the walk ended.
#[derive(Debug)]
pub(super) enum End {
    /// The last box ends exactly at the end of the file.
    Tiled,
    /// The last box declares more bytes than the file has left.
    Open(TopBox),
    /// The file ends `have` bytes into a box header at `at`.
    PartialHeader { at: u64, have: u64 },
    /// A header after the first box that cannot be one.
    Garbage { at: u64, why: String },
}

/// What the top level of a file holds.
pub(super) struct Layout {
    /// The file's length: the one the caller gave, or less when reads ended
    /// earlier (the file shrank under us).
    pub len: u64,
    /// The first `ftyp`'s major brand.
    pub brand: Option<[u8; 4]>,
    pub has_ftyp: bool,
    /// The `moov` (wholly inside the file) and its payload.
    pub moov: Option<(TopBox, Vec<u8>)>,
    pub moofs: u64,
    pub first_moof: Option<u64>,
    pub first_mdat: Option<TopBox>,
    /// The last box that ends inside the file.
    pub last: Option<TopBox>,
    /// How many boxes were read.
    pub boxes: u64,
    pub end: End,
}

/// A reader that knows where it is, and reads as much as it can.
struct Src<'r, R> {
    r: &'r mut R,
    pos: Option<u64>,
}

impl<R: Read + Seek> Src<'_, R> {
    /// Fill `buf` from `at`, stopping early only at the end of the file.
    fn read_at(&mut self, at: u64, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos != Some(at) {
            self.pos = None;
            self.r.seek(SeekFrom::Start(at))?;
        }
        let mut n = 0;
        while n < buf.len() {
            match self.r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.pos = Some(at + n as u64);
        Ok(n)
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// Could these (fewer than 8) bytes be the start of a file's first box
/// header?
fn could_start_box(bytes: &[u8]) -> bool {
    if let Some(s) = bytes.get(..4) {
        let declared = be32(s);
        if declared != 0 && declared != 1 && declared < 8 {
            return false;
        }
    }
    match bytes.get(4..) {
        Some(t) if !t.is_empty() => FIRST_TYPES.iter().any(|k| k.starts_with(t)),
        _ => true,
    }
}

fn not_a_container(why: String) -> MediaError {
    MediaError::Unreadable(format!("not an ISO-BMFF/QuickTime file: {why}"))
}

/// Walk the top-level boxes of a file of `len` bytes, reading `moov` (at
/// most [`MOOV_CAP`] bytes) and nothing else but headers. `Err` only for
/// what is already a verdict (not a container, a moov over the cap, two
/// moovs) and for read errors.
pub(super) fn walk<R: Read + Seek>(reader: &mut R, len: u64) -> Result<Layout, MediaError> {
    let mut src = Src { r: reader, pos: None };
    let mut l = Layout {
        len,
        brand: None,
        has_ftyp: false,
        moov: None,
        moofs: 0,
        first_moof: None,
        first_mdat: None,
        last: None,
        boxes: 0,
        end: End::Tiled,
    };
    if len == 0 {
        return Err(MediaError::Unfinished("the file is empty".into()));
    }
    let mut pos = 0u64;
    // A header and its 64-bit size: no byte of a box's payload is read but
    // the moov's and the ftyp's major brand.
    let mut hdr = [0u8; 16];
    loop {
        if pos >= l.len {
            l.end = End::Tiled;
            return Ok(l);
        }
        let want = (l.len - pos).min(8) as usize;
        let got = src.read_at(pos, &mut hdr[..want])?;
        if got < want {
            l.len = pos + got as u64;
        }
        let have = &hdr[..got];
        if have.is_empty() {
            l.end = End::Tiled;
            return Ok(l);
        }
        if have.len() < 8 {
            if pos == 0 {
                return Err(if could_start_box(have) {
                    MediaError::Unfinished(format!(
                        "the file ends inside the first box header ({} of 8 bytes)",
                        have.len()
                    ))
                } else {
                    not_a_container(format!("its {} bytes cannot begin a box header", have.len()))
                });
            }
            l.end = End::PartialHeader { at: pos, have: have.len() as u64 };
            return Ok(l);
        }
        let declared = be32(&hdr[0..4]);
        let kind = [hdr[4], hdr[5], hdr[6], hdr[7]];
        if pos == 0 && !FIRST_TYPES.contains(&kind) {
            return Err(not_a_container(format!("the first box type is {}, not a top-level box", quoted(kind))));
        }
        if !kind.iter().all(|&b| type_byte(b)) {
            l.end = End::Garbage { at: pos, why: format!("its type is not text ({})", fourcc(kind)) };
            return Ok(l);
        }
        let left = l.len - pos;
        let (box_size, mut header, to_eof) = match declared {
            0 => (left, 8u64, true),
            1 => {
                let want = (left - 8).min(8) as usize;
                let got = src.read_at(pos + 8, &mut hdr[8..8 + want])?;
                if got < 8 {
                    l.len = l.len.min(pos + 8 + got as u64);
                    if pos == 0 {
                        return Err(MediaError::Unfinished(format!(
                            "the file ends inside the first box header ({} of 16 bytes)",
                            8 + got
                        )));
                    }
                    l.end = End::PartialHeader { at: pos, have: 8 + got as u64 };
                    return Ok(l);
                }
                (be64(&hdr[8..16]), 16, false)
            }
            n => (u64::from(n), 8, false),
        };
        if kind == *b"uuid" {
            header += 16;
        }
        if box_size < header {
            let why = format!("{} declares {} bytes, less than its {header}-byte header", fourcc(kind), box_size);
            if pos == 0 {
                return Err(not_a_container(format!("the first box ({why})")));
            }
            l.end = End::Garbage { at: pos, why };
            return Ok(l);
        }
        let b = TopBox { kind, start: pos, size: box_size, to_eof };
        l.boxes += 1;
        if l.boxes > MAX_TOP_BOXES {
            return Err(MediaError::Unreadable(format!(
                "more than {} top-level boxes (the probe stopped at byte {})",
                num(MAX_TOP_BOXES),
                num(pos)
            )));
        }
        let end = pos.checked_add(box_size).filter(|&e| e <= l.len);
        match &kind {
            b"ftyp" if !l.has_ftyp => {
                l.has_ftyp = true;
                let mut brand = [0u8; 4];
                if end.is_some() && box_size >= header + 4 && src.read_at(pos + header, &mut brand)? == 4 {
                    l.brand = Some(brand);
                }
            }
            b"moov" => {
                if box_size > MOOV_CAP {
                    return Err(MediaError::Unreadable(format!(
                        "moov is {}, more than the {} the probe reads (at byte {})",
                        size(box_size),
                        size(MOOV_CAP),
                        num(pos)
                    )));
                }
                if let Some((first, _)) = &l.moov {
                    return Err(MediaError::Unreadable(format!(
                        "two moov boxes, at byte {} and at byte {}",
                        num(first.start),
                        num(pos)
                    )));
                }
                if end.is_some() {
                    let mut body = vec![0u8; (box_size - header) as usize];
                    let n = src.read_at(pos + header, &mut body)?;
                    if n < body.len() {
                        // The file is shorter than the caller said: the moov
                        // runs past its real end.
                        l.len = pos + header + n as u64;
                        l.end = End::Open(b);
                        return Ok(l);
                    }
                    l.moov = Some((b, body));
                }
            }
            b"moof" => {
                l.moofs += 1;
                l.first_moof.get_or_insert(pos);
            }
            b"mdat" => {
                l.first_mdat.get_or_insert(b);
            }
            _ => {}
        }
        match end {
            Some(e) => {
                l.last = Some(b);
                pos = e;
            }
            None => {
                l.end = End::Open(b);
                return Ok(l);
            }
        }
    }
}

/// A type for a message: `"mdat"`, or hex when it is not text.
pub(super) fn quoted(kind: [u8; 4]) -> String {
    if kind.iter().all(|&b| (0x20..=0x7e).contains(&b)) {
        format!("\"{}\"", fourcc(kind))
    } else {
        format!("{} in hex", fourcc(kind))
    }
}
