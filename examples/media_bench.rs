//! What the container probe costs on a long movie: a sparse 20 GiB file
//! (ftyp, a 64-bit mdat, and a real moov whose co64/stsz tables cover the
//! 20 GiB: an hour of 60 fps MV-HEVC video, 216,000 samples, with its
//! 48 kHz AAC track, 168,750 samples), moov last and moov first.
//!
//! For each layout it probes the file N times (a fresh open each time,
//! through a reader that counts bytes and calls) and prints the median wall
//! time, the bytes read and the read calls; beside it the floor (opening
//! the file and reading the moov with one `read_exact`) and, when `openssl`
//! is installed, what reading and hashing the first GiB of the same file
//! costs (`dd bs=4M count=256 | openssl md5`; the file is sparse, so that is
//! the kernel's zeros, no disk).
//!
//! ```text
//! cargo run --release --example media_bench [-- N]
//! ```

#[cfg(not(feature = "sandbox"))]
fn main() {
    eprintln!("media_bench builds its files with media::synth, which comes with the sandbox feature (on by default)");
}

#[cfg(feature = "sandbox")]
fn main() -> anyhow::Result<()> {
    bench::run()
}

#[cfg(feature = "sandbox")]
mod bench {
    use std::fs::File;
    use std::io::{self, Read, Seek, SeekFrom, Write};
    use std::path::Path;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use anyhow::{Context, bail};
    use spatialgen_sync::media::synth::{self, Spec};
    use spatialgen_sync::media::{MediaFacts, probe};

    const GIB: u64 = 1 << 30;

    /// A reader that counts what it is asked for.
    struct Counted<R> {
        inner: R,
        bytes: u64,
        reads: u64,
        seeks: u64,
    }

    impl<R: Read> Read for Counted<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.reads += 1;
            self.bytes += n as u64;
            Ok(n)
        }
    }

    impl<R: Seek> Seek for Counted<R> {
        fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
            self.seeks += 1;
            self.inner.seek(to)
        }
    }

    fn median(mut v: Vec<Duration>) -> Duration {
        v.sort();
        v[v.len() / 2]
    }

    fn ms(d: Duration) -> String {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }

    /// Write the file for `spec` sparsely: head, a hole the size of the
    /// payload, tail. Returns (file length, moov offset, moov length).
    fn write_sparse(spec: &Spec, path: &Path) -> anyhow::Result<(u64, u64, u64)> {
        let parts = synth::parts(spec);
        let len = parts.head.len() as u64 + parts.payload + parts.tail.len() as u64;
        let mut f = File::create(path)?;
        f.write_all(&parts.head)?;
        f.set_len(parts.head.len() as u64 + parts.payload)?;
        f.seek(SeekFrom::End(0))?;
        f.write_all(&parts.tail)?;
        f.sync_all()?;
        // Where the moov is: after ftyp when first, the tail when last.
        let (at, moov_len) = if spec.moov_first {
            let ftyp = u32::from_be_bytes(parts.head[0..4].try_into()?) as u64;
            let moov = u32::from_be_bytes(parts.head[ftyp as usize..ftyp as usize + 4].try_into()?) as u64;
            (ftyp, moov)
        } else {
            (len - parts.tail.len() as u64, parts.tail.len() as u64)
        };
        Ok((len, at, moov_len))
    }

    struct Probed {
        time: Duration,
        bytes: u64,
        reads: u64,
        seeks: u64,
        facts: MediaFacts,
    }

    fn probe_once(path: &Path, len: u64) -> anyhow::Result<Probed> {
        let start = Instant::now();
        let mut r = Counted { inner: File::open(path)?, bytes: 0, reads: 0, seeks: 0 };
        let facts = probe(&mut r, len).context("probe")?;
        Ok(Probed { time: start.elapsed(), bytes: r.bytes, reads: r.reads, seeks: r.seeks, facts })
    }

    fn read_moov_once(path: &Path, at: u64, moov_len: u64) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let mut f = File::open(path)?;
        f.seek(SeekFrom::Start(at))?;
        let mut buf = vec![0u8; moov_len as usize];
        f.read_exact(&mut buf)?;
        std::hint::black_box(&buf);
        Ok(start.elapsed())
    }

    fn md5_first_gib(path: &Path) -> Option<Duration> {
        let openssl = Command::new("openssl").arg("version").stdout(Stdio::null()).stderr(Stdio::null()).status();
        if !openssl.is_ok_and(|s| s.success()) {
            return None;
        }
        let start = Instant::now();
        let status = Command::new("sh")
            .arg("-c")
            .arg("dd if=\"$0\" bs=4M count=256 status=none | openssl md5 >/dev/null")
            .arg(path)
            .status()
            .ok()?;
        status.success().then(|| start.elapsed())
    }

    pub fn run() -> anyhow::Result<()> {
        let n: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(15).max(1);
        let dir = tempfile::tempdir()?;
        let frames = 216_000;
        let base = Spec { audio: Some((2, 48000)), payload: 20 * GIB, ..Spec::stereo(2200, 2200, (60, 1), frames) };
        println!(
            "media_bench: {n} probes per layout; an hour of 60 fps stereo hvc1 ({frames} samples) + 48 kHz AAC \
             (168,750 samples), 20 GiB of (sparse) sample data"
        );
        let mut md5: Option<Duration> = None;
        for (name, moov_first) in [("moov last", false), ("moov first", true)] {
            let spec = Spec { moov_first, ..base.clone() };
            let path = dir.path().join(if moov_first { "first.mov" } else { "last.mov" });
            let built = Instant::now();
            let (len, moov_at, moov_len) = write_sparse(&spec, &path)?;
            let built = built.elapsed();
            let mut runs = Vec::with_capacity(n);
            for _ in 0..n {
                runs.push(probe_once(&path, len)?);
            }
            let first = &runs[0];
            if first.facts != spec.facts() {
                bail!("the probe says {:?}, the spec {:?}", first.facts, spec.facts());
            }
            let (bytes, reads, seeks) = (first.bytes, first.reads, first.seeks);
            if runs.iter().any(|r| (r.bytes, r.reads, r.seeks) != (bytes, reads, seeks)) {
                bail!("the probes read differently");
            }
            let probe_time = median(runs.iter().map(|r| r.time).collect());
            let floor = median((0..n).map(|_| read_moov_once(&path, moov_at, moov_len)).collect::<Result<_, _>>()?);
            println!(
                "\n{name}: file {} bytes ({:.1} GiB), written sparse in {}",
                len,
                len as f64 / GIB as f64,
                ms(built)
            );
            println!(
                "  moov                 {moov_len} bytes ({:.2} MiB) at byte {moov_at}",
                moov_len as f64 / (1 << 20) as f64
            );
            println!("  probe (median of {n})  {}", ms(probe_time));
            println!("  bytes read           {bytes} ({:.4}% of the file)", bytes as f64 * 100.0 / len as f64);
            println!("  read calls           {reads} (and {seeks} seeks)");
            println!("  floor: open + one read_exact of the moov  {}", ms(floor));
            println!(
                "  facts: {} {}x{} {:?} fps, {:?} ms, {:?} views, audio {:?} ch {:?} Hz",
                first.facts.codec.as_deref().unwrap_or("?"),
                first.facts.width.unwrap_or(0),
                first.facts.height.unwrap_or(0),
                first.facts.frame_rate,
                first.facts.duration_ms,
                first.facts.views,
                first.facts.audio_channels,
                first.facts.sample_rate,
            );
            if !moov_first {
                md5 = md5_first_gib(&path);
            }
        }
        match md5 {
            Some(d) => println!("\nreading + MD5 of the first 1 GiB (dd bs=4M | openssl md5): {}", ms(d)),
            None => println!("\n(openssl not found: no MD5 comparison)"),
        }
        Ok(())
    }
}
