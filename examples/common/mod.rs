//! What the benchmarks share.

use std::path::Path;

/// Write `size` bytes of xorshift noise from `seed` to `path`: files that
/// differ from each other (and so do their fingerprints), made quickly.
pub fn fill(path: &Path, size: usize, seed: u64) -> std::io::Result<()> {
    let mut x = seed | 1;
    let mut buf = Vec::with_capacity(size + 8);
    while buf.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf.extend_from_slice(&x.to_le_bytes());
    }
    buf.truncate(size);
    std::fs::write(path, buf)
}
