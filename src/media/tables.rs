//! A track's sample tables (`stsc`, `stsz`/`stz2`, `stco`/`co64`), read in
//! place from the moov buffer, and the check that every sample lies inside
//! the file.
//!
//! Nothing here allocates per entry: a table is a slice of the moov whose
//! length was checked against the entry count the box declares, and the
//! walk is O(chunks + samples).

use super::text::{num, size};

fn be32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at.checked_add(4)?).map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    Some(u64::from_be_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]))
}

/// The entries of a full box whose payload is `version+flags`, `prefix`
/// more bytes, a u32 entry count and `count` entries of `entry` bytes.
/// `Err`: the count claims more bytes than the box holds.
pub(super) fn entries<'a>(name: &str, body: &'a [u8], prefix: usize, entry: usize) -> Result<(u32, &'a [u8]), String> {
    let count_at = 4 + prefix;
    let count = be32(body, count_at)
        .ok_or_else(|| format!("{name} is {}, too short for its header", size(body.len() as u64)))?;
    let start = count_at + 4;
    let need = u64::from(count) * entry as u64;
    let held = body.len().saturating_sub(start) as u64;
    if need > held {
        return Err(format!(
            "{name} declares {} entries ({}), the box holds {}",
            num(u64::from(count)),
            size(need),
            size(held)
        ));
    }
    // need <= held <= body.len(), so this fits a usize.
    Ok((count, &body[start..start + need as usize]))
}

/// `stsz` or `stz2`: every sample's size.
#[derive(Debug, Clone, Copy)]
pub(super) enum Sizes<'a> {
    /// `stsz` with a non-zero `sample_size`: all `count` samples that big.
    Fixed { size: u32, count: u32 },
    /// `stsz` with a table of u32 sizes.
    Table(&'a [u8]),
    /// `stz2`: `count` sizes of `bits` (4, 8 or 16) bits each.
    Compact { bits: u8, count: u32, data: &'a [u8] },
}

impl<'a> Sizes<'a> {
    pub(super) fn empty() -> Self {
        Sizes::Fixed { size: 0, count: 0 }
    }

    /// Parse an `stsz` payload.
    pub(super) fn stsz(path: &str, body: &'a [u8]) -> Result<Self, String> {
        let fixed = be32(body, 4).ok_or_else(|| format!("{path}/stsz is {}, too short", size(body.len() as u64)))?;
        if fixed != 0 {
            let count =
                be32(body, 8).ok_or_else(|| format!("{path}/stsz is {}, too short", size(body.len() as u64)))?;
            return Ok(Sizes::Fixed { size: fixed, count });
        }
        let (_, table) = entries(&format!("{path}/stsz"), body, 4, 4)?;
        Ok(Sizes::Table(table))
    }

    /// Parse an `stz2` payload.
    pub(super) fn stz2(path: &str, body: &'a [u8]) -> Result<Self, String> {
        let short = || format!("{path}/stz2 is {}, too short", size(body.len() as u64));
        let bits = *body.get(7).ok_or_else(short)?;
        let count = be32(body, 8).ok_or_else(short)?;
        if !matches!(bits, 4 | 8 | 16) {
            return Err(format!("{path}/stz2 has a field size of {bits} bits (4, 8 or 16 expected)"));
        }
        let need = (u64::from(count) * u64::from(bits)).div_ceil(8);
        let held = body.len().saturating_sub(12) as u64;
        if need > held {
            return Err(format!(
                "{path}/stz2 declares {} entries ({}), the box holds {}",
                num(u64::from(count)),
                size(need),
                size(held)
            ));
        }
        Ok(Sizes::Compact { bits, count, data: &body[12..12 + need as usize] })
    }

    pub(super) fn count(&self) -> u64 {
        match *self {
            Sizes::Fixed { count, .. } | Sizes::Compact { count, .. } => u64::from(count),
            Sizes::Table(t) => (t.len() / 4) as u64,
        }
    }

    /// The size of sample `i` (0-based), `None` past the table.
    pub(super) fn get(&self, i: u64) -> Option<u64> {
        if i >= self.count() {
            return None;
        }
        let i = usize::try_from(i).ok()?;
        match *self {
            Sizes::Fixed { size, .. } => Some(u64::from(size)),
            Sizes::Table(t) => be32(t, i.checked_mul(4)?).map(u64::from),
            Sizes::Compact { bits: 16, data, .. } => {
                let s = data.get(i * 2..i * 2 + 2)?;
                Some(u64::from(u16::from_be_bytes([s[0], s[1]])))
            }
            Sizes::Compact { bits: 8, data, .. } => data.get(i).map(|&b| u64::from(b)),
            Sizes::Compact { data, .. } => {
                let b = *data.get(i / 2)?;
                Some(u64::from(if i % 2 == 0 { b >> 4 } else { b & 0x0f }))
            }
        }
    }
}

/// `stco` (u32 offsets) or `co64` (u64 offsets).
#[derive(Debug, Clone, Copy)]
pub(super) enum Chunks<'a> {
    C32(&'a [u8]),
    C64(&'a [u8]),
}

impl Chunks<'_> {
    pub(super) fn count(&self) -> u64 {
        match *self {
            Chunks::C32(t) => (t.len() / 4) as u64,
            Chunks::C64(t) => (t.len() / 8) as u64,
        }
    }

    /// The offset of chunk `i` (0-based).
    fn get(&self, i: u64) -> Option<u64> {
        let i = usize::try_from(i).ok()?;
        match *self {
            Chunks::C32(t) => be32(t, i.checked_mul(4)?).map(u64::from),
            Chunks::C64(t) => be64(t, i.checked_mul(8)?),
        }
    }
}

/// What one track's tables say about where its samples lie.
pub(super) struct Tables<'a> {
    /// `stsc` entries, 12 bytes each.
    pub stsc: &'a [u8],
    pub sizes: Sizes<'a>,
    pub chunks: Chunks<'a>,
}

/// A sample that lies (partly) past the end of the file.
pub(super) struct PastEnd {
    /// 1-based.
    pub sample: u64,
    pub of: u64,
    pub start: u64,
    pub end: u64,
}

/// Walk the chunks of a track and find the first sample that ends past
/// `len`. `Err` when the tables contradict each other (an `stsc` run that
/// starts at chunk 0, past the last chunk or out of order; chunks that hold
/// more samples than `stsz` lists; an offset + size that overflows): the
/// moov is then broken inside, whatever the file's length, so the caller
/// reports it as `Unreadable`, not `Truncated`. More samples in `stsz` than
/// the chunks hold is tolerated (they are never read).
pub(super) fn first_past_end(t: &Tables, len: u64) -> Result<Option<PastEnd>, String> {
    let runs = (t.stsc.len() / 12) as u64;
    let chunks = t.chunks.count();
    let samples = t.sizes.count();
    if runs == 0 {
        if samples > 0 && chunks > 0 {
            return Err(format!(
                "stsc is empty, so none of the {} samples in {} chunks can be placed",
                num(samples),
                num(chunks)
            ));
        }
        return Ok(None);
    }
    let run = |i: u64| -> Option<(u64, u64)> {
        let at = usize::try_from(i.checked_mul(12)?).ok()?;
        Some((u64::from(be32(t.stsc, at)?), u64::from(be32(t.stsc, at + 4)?)))
    };
    let mut sample = 0u64;
    let mut prev_first = 0u64;
    for r in 0..runs {
        let Some((first, per_chunk)) = run(r) else { break };
        if first == 0 {
            return Err(format!("stsc entry {} starts at chunk 0 (chunks count from 1)", num(r + 1)));
        }
        if first <= prev_first {
            return Err(format!(
                "stsc entry {} starts at chunk {}, not after entry {}'s chunk {}",
                num(r + 1),
                num(first),
                num(r),
                num(prev_first)
            ));
        }
        if first > chunks {
            return Err(format!(
                "stsc entry {} starts at chunk {}, the track has {} chunks",
                num(r + 1),
                num(first),
                num(chunks)
            ));
        }
        prev_first = first;
        let next = if r + 1 < runs { run(r + 1).map_or(chunks + 1, |(f, _)| f.min(chunks + 1)) } else { chunks + 1 };
        for c in first..next.max(first) {
            let Some(offset) = t.chunks.get(c - 1) else { break };
            if per_chunk == 0 {
                continue;
            }
            let last = sample.checked_add(per_chunk).filter(|&l| l <= samples).ok_or_else(|| {
                format!(
                    "chunk {} would hold samples {}–{}, stsz lists {}",
                    num(c),
                    num(sample + 1),
                    num(sample.saturating_add(per_chunk)),
                    num(samples)
                )
            })?;
            let bytes = match t.sizes {
                Sizes::Fixed { size, .. } => per_chunk.checked_mul(u64::from(size)),
                _ => (sample..last).try_fold(0u64, |acc, i| acc.checked_add(t.sizes.get(i)?)),
            };
            let end = bytes.and_then(|b| offset.checked_add(b)).ok_or_else(|| {
                format!("chunk {} at byte {} holds more bytes than a 64-bit offset can reach", num(c), num(offset))
            })?;
            if end > len {
                // Find the first sample of this chunk that ends past `len`
                // (by arithmetic for fixed sizes: their count is only
                // declared, and may be billions).
                if let Sizes::Fixed { size, .. } = t.sizes {
                    let size = u64::from(size);
                    let k = len.saturating_sub(offset).checked_div(size).unwrap_or(0);
                    let start = offset.saturating_add(k.saturating_mul(size));
                    return Ok(Some(PastEnd {
                        sample: sample + k + 1,
                        of: samples,
                        start,
                        end: start.saturating_add(size),
                    }));
                }
                let mut at = offset;
                for i in sample..last {
                    let s = t.sizes.get(i).unwrap_or(0);
                    let e = at.saturating_add(s);
                    if e > len {
                        return Ok(Some(PastEnd { sample: i + 1, of: samples, start: at, end: e }));
                    }
                    at = e;
                }
            }
            sample = last;
        }
    }
    Ok(None)
}
