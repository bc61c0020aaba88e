//! The container probe's memory stays capped whatever a file claims: a
//! counting global allocator records the peak of live heap bytes while the
//! probe runs on random bytes, mutated real files and headers that claim
//! huge sizes and counts. The peak must stay below `MOOV_CAP` plus a small
//! slack, and far below it when the file's moov is small.
//!
//! One test function runs every case in turn, so no other test thread
//! allocates while a peak is measured.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{self, Cursor, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicUsize, Ordering};

use spatialgen_sync::media::{MOOV_CAP, probe};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(live, Ordering::SeqCst);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(live, Ordering::SeqCst);
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let live = LIVE.fetch_add(new_size - layout.size(), Ordering::SeqCst) + new_size - layout.size();
                PEAK.fetch_max(live, Ordering::SeqCst);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::SeqCst);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Slack over the moov buffer: the probe's own small allocations
/// (messages, paths) and the test harness.
const SLACK: usize = 1 << 20;

/// Probe `r` (a file of `len` bytes) and return the peak of live bytes
/// allocated while it ran, over what was live before.
fn peak_of<R: Read + Seek>(r: &mut R, len: u64) -> (usize, String) {
    let base = LIVE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let verdict = match probe(r, len) {
        Ok(f) => format!("ok {f:?}"),
        Err(e) => format!("{:?}: {e}", e.rule()),
    };
    (PEAK.load(Ordering::SeqCst) - base, verdict)
}

fn bytes_peak(b: &[u8]) -> (usize, String) {
    peak_of(&mut Cursor::new(b), b.len() as u64)
}

/// A file of `len` bytes: `head` at the start, zeros, `tail` at the end,
/// without the zeros in memory.
struct Sparse {
    head: Vec<u8>,
    tail: Vec<u8>,
    len: u64,
    pos: u64,
}

impl Read for Sparse {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.len.saturating_sub(self.pos).min(buf.len() as u64) as usize;
        let tail_at = self.len - self.tail.len() as u64;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            let p = self.pos + i as u64;
            *b = if p < self.head.len() as u64 {
                self.head[p as usize]
            } else if p >= tail_at {
                self.tail[(p - tail_at) as usize]
            } else {
                0
            };
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Sparse {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = match to {
            SeekFrom::Start(p) => p,
            SeekFrom::End(d) => self.len.saturating_add_signed(d),
            SeekFrom::Current(d) => self.pos.saturating_add_signed(d),
        };
        Ok(self.pos)
    }
}

fn boxed(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut b = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
    b.extend_from_slice(kind);
    b.extend_from_slice(payload);
    b
}

fn full(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    boxed(kind, &[&[0u8; 4][..], payload].concat())
}

fn header(kind: &[u8; 4], size: u64) -> Vec<u8> {
    if size > u64::from(u32::MAX) {
        [&1u32.to_be_bytes()[..], kind, &size.to_be_bytes()].concat()
    } else {
        [&(size as u32).to_be_bytes()[..], kind].concat()
    }
}

/// A moov with one video track whose stbl holds `stbl` (plus the boxes a
/// moov needs).
fn moov_with_stbl(stbl: &[u8]) -> Vec<u8> {
    let mvhd = full(b"mvhd", &[[0u8; 8].as_slice(), &1000u32.to_be_bytes(), &[0u8; 84]].concat());
    let mdhd = full(b"mdhd", &[[0u8; 8].as_slice(), &30u32.to_be_bytes(), &[0u8; 8]].concat());
    let hdlr = full(b"hdlr", &[[0u8; 4].as_slice(), b"vide", &[0u8; 13]].concat());
    let minf = boxed(b"minf", &boxed(b"stbl", stbl));
    let trak = boxed(b"trak", &boxed(b"mdia", &[mdhd, hdlr, minf].concat()));
    boxed(b"moov", &[mvhd, trak].concat())
}

fn ftyp() -> Vec<u8> {
    boxed(b"ftyp", b"isom\0\0\x02\0isom")
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/fixtures/media/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn probe_memory_stays_capped() {
    let cap = MOOV_CAP as usize;
    let small = 64 << 10;
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut worst_small = 0;

    // Random bytes, 1 MiB of them and many short runs.
    let mut random = vec![0u8; 1 << 20];
    for b in random.iter_mut() {
        *b = rng.next() as u8;
    }
    let (peak, v) = bytes_peak(&random);
    assert!(peak < small, "random MiB: {peak} bytes ({v})");
    for _ in 0..2000 {
        let n = (rng.next() % 4096) as usize;
        let (peak, _) = bytes_peak(&random[..n]);
        worst_small = worst_small.max(peak);
    }

    // Real files, mutated: bytes overwritten, flipped, inserted, removed.
    let fixtures: Vec<Vec<u8>> = [
        "h264_moov_last.mp4",
        "h264_faststart.mp4",
        "hevc_aac.mp4",
        "aac.m4a",
        "prores_aac.mov",
        "pcm96k.mov",
        "h264_fragmented.mp4",
    ]
    .iter()
    .map(|n| fixture(n))
    .collect();
    for f in &fixtures {
        let (peak, v) = bytes_peak(f);
        assert!(v.starts_with("ok"), "{v}");
        worst_small = worst_small.max(peak);
        for _ in 0..500 {
            let mut m = f.clone();
            for _ in 0..1 + rng.next() % 8 {
                let i = (rng.next() % m.len() as u64) as usize;
                let v = rng.next() as u8;
                match rng.next() % 5 {
                    0 => m[i] = v,
                    1 => m[i] ^= 1 << (v % 8),
                    2 => m.insert(i, v),
                    3 => {
                        m.remove(i);
                    }
                    // A size or count field blown up.
                    _ => {
                        let at = i.min(m.len().saturating_sub(4));
                        m[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
                    }
                }
            }
            let (peak, _) = bytes_peak(&m);
            worst_small = worst_small.max(peak);
        }
    }
    eprintln!("small files: peak {worst_small} bytes");
    assert!(worst_small < small, "small files peaked at {worst_small} bytes");

    // stsz claiming 2^32 - 1 entries in a 40-byte box.
    let stsz = full(b"stsz", &[0u32.to_be_bytes(), u32::MAX.to_be_bytes(), [0; 4], [0; 4]].concat());
    let stco = full(b"stco", &[1u32.to_be_bytes(), 100u32.to_be_bytes()].concat());
    let stsc =
        full(b"stsc", &[1u32.to_be_bytes(), 1u32.to_be_bytes(), u32::MAX.to_be_bytes(), 1u32.to_be_bytes()].concat());
    let file = [ftyp(), moov_with_stbl(&[stsz, stco.clone(), stsc.clone()].concat())].concat();
    let (peak, v) = bytes_peak(&file);
    assert!(v.contains("declares 4,294,967,295 entries"), "{v}");
    assert!(peak < small, "huge stsz: {peak} ({v})");

    // stsz with a fixed size and 2^32 - 1 samples, stsc putting them all in
    // one chunk: no table to allocate, and no 4-billion-step walk either.
    let fixed = full(b"stsz", &[1u32.to_be_bytes(), u32::MAX.to_be_bytes()].concat());
    let file = [ftyp(), moov_with_stbl(&[fixed, stco, stsc].concat())].concat();
    let (peak, v) = bytes_peak(&file);
    assert!(v.contains("of 4,294,967,295 lies at bytes"), "{v}");
    assert!(peak < small, "fixed-size stsz: {peak} ({v})");

    // stts, stco, co64 and stsc claiming 2^32 - 1 entries.
    for kind in [b"stts", b"stco", b"co64", b"stsc"] {
        let table = full(kind, &[&u32::MAX.to_be_bytes()[..], &[0u8; 16]].concat());
        let file = [ftyp(), moov_with_stbl(&table)].concat();
        let (peak, v) = bytes_peak(&file);
        assert!(v.contains("4,294,967,295 entries"), "{v}");
        assert!(peak < small, "{kind:?}: {peak} ({v})");
    }

    // Top-level boxes claiming huge sizes: mdat, moov over the cap, moov
    // just under the cap in a file too short for it.
    for (kind, size) in [(b"mdat", u64::MAX), (b"moov", u64::MAX), (b"moov", MOOV_CAP + 1), (b"moov", MOOV_CAP - 16)] {
        let file = [ftyp(), header(kind, size), vec![0; 4096]].concat();
        let (peak, v) = bytes_peak(&file);
        assert!(peak < small, "{kind:?} of {size}: {peak} ({v})");
    }

    // A moov just under the cap that the file really holds (served sparse,
    // so the test holds no copy): the probe reads it, and no more.
    let moov_size = MOOV_CAP - 8;
    let mut head = ftyp();
    head.extend_from_slice(&header(b"moov", moov_size));
    head.extend_from_slice(&full(b"mvhd", &[[0u8; 8].as_slice(), &1000u32.to_be_bytes(), &[0u8; 84]].concat()));
    let len = ftyp().len() as u64 + moov_size;
    let mut r = Sparse { head, tail: Vec::new(), len, pos: 0 };
    let (peak, v) = peak_of(&mut r, len);
    assert!(v.starts_with("ok"), "{v}");
    eprintln!("moov of {moov_size} bytes: peak {peak} bytes");
    assert!(peak >= cap - 64, "the moov was read: {peak}");
    assert!(peak < cap + SLACK, "moov under the cap: {peak} bytes ({v})");

    // The same, with a caller that claims a longer file than the reader
    // has: the moov buffer is still the most that is held.
    let mut head = ftyp();
    head.extend_from_slice(&header(b"moov", moov_size));
    let mut r = Sparse { head, tail: Vec::new(), len: 4096, pos: 0 };
    let (peak, v) = peak_of(&mut r, len);
    assert!(peak < cap + SLACK, "short reader: {peak} bytes ({v})");
}
