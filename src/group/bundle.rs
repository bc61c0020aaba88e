//! `.fcpxmld` bundle directories, zipped by the agent.
//!
//! SpatialGen takes an `fcpxmld` file as a `.zip`; Final Cut Pro writes a
//! bundle *directory*. The agent zips it into the staging directory.
//!
//! Invariants:
//! - **Deterministic**: the same bundle (same names, same bytes) always gives
//!   byte-identical zips: entries sorted by name, every timestamp the zip
//!   epoch (1980-01-01), fixed permissions (0644 files, 0755 folders),
//!   entries *stored* (not deflated, so the bytes and the size do not depend
//!   on a compression library's version). A re-zip after a crash therefore
//!   has exactly the size recorded for the upload session, and overwriting a
//!   staged zip with a fresh one changes nothing.
//! - **Crash-safe**: written to a hidden, random temp name beside the
//!   target (created exclusively, mode 0600),
//!   `sync_all`, then renamed into place; a staged zip is either complete or
//!   absent. Its mtime is set to the newest mtime inside the bundle, so a
//!   re-zip also keeps the mtime the engine compares.
//! - Readable by the agent's user only (0600), like every staging file.
//! - Only regular files are opened (no link followed, never blocking on a
//!   FIFO); a FIFO, socket or device inside a bundle rejects its export.
//! - Finder litter (`.DS_Store`, `._*`) is left out; symbolic links inside a
//!   bundle are left out (with a warning) rather than followed out of it.
//! - The dry run ([`zip_size`]) writes nothing: it zips into a counting sink.
//! - A bundle is finished only when its document, `Info.fcpxml`, is at its
//!   top ([`document_present`]): Final Cut Pro (10.6 and later, FCPXML 1.10+)
//!   creates the `.fcpxmld` directory first and writes the files into it
//!   after. Until then the export counts as still being written, for the
//!   watcher's looks and for the grouping step alike.
//!
//! The layout, from Apple's "FCPXML Bundle Reference"
//! (<https://developer.apple.com/documentation/professional-video-applications/fcpxml-bundle-reference>):
//! "The simplest FCPXML bundle contains an `Info.fcpxml` file at the root
//! level of the bundle", which locates any other file the bundle carries
//! (tracking or stabilization data, say; Philip Hodgetts, "Final Cut Pro
//! 10.6's XML Bundle Format Explained", 2021). Tools that write bundles
//! themselves often add an `Info.plist` beside it. Copied to an exFAT, FAT
//! or SMB volume, each file also gets an AppleDouble `._` twin, and Finder
//! drops a `.DS_Store` into any folder it shows.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

use super::GroupError;
use super::roles::is_finder_litter;

/// One entry of a bundle, in zip order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleEntry {
    /// Name inside the zip: `Edit.fcpxmld/Info.fcpxml`, or `Edit.fcpxmld/Sub/` for a folder.
    pub zip_name: String,
    /// Where the bytes are (for a file).
    pub path: PathBuf,
    pub is_dir: bool,
    pub size: u64,
    pub mtime_ns: i64,
}

pub use crate::model::mtime_ns;

fn system_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// The document every FCPXML bundle has at its top.
pub const BUNDLE_DOCUMENT: &str = "Info.fcpxml";

/// Is the bundle's document (`Info.fcpxml`) at the top of the bundle
/// directory `dir`, as a regular file? Not yet, while Final Cut Pro is
/// still writing the bundle. One `lstat`, so that the watcher's looks and
/// the grouping step ask the same question the same way (and, on a
/// case-insensitive Mac volume, the filesystem's own case rule applies).
pub fn document_present(dir: &Path) -> bool {
    std::fs::symlink_metadata(dir.join(BUNDLE_DOCUMENT)).is_ok_and(|m| m.is_file())
}

/// Every entry of the bundle directory `dir`, under the top-level name
/// `top` (the bundle's own name), sorted. Errors are read errors inside the
/// export.
pub fn list_bundle(dir: &Path, top: &str) -> Result<Vec<BundleEntry>, GroupError> {
    let meta = std::fs::metadata(dir).map_err(|source| GroupError::Read { path: dir.to_owned(), source })?;
    let top = crate::model::names::nfc(top);
    let mut out = vec![BundleEntry {
        zip_name: format!("{top}/"),
        path: dir.to_owned(),
        is_dir: true,
        size: 0,
        mtime_ns: mtime_ns(&meta),
    }];
    let mut stack = vec![(dir.to_owned(), format!("{top}/"))];
    while let Some((folder, prefix)) = stack.pop() {
        let read = |source| GroupError::Read { path: folder.clone(), source };
        for entry in std::fs::read_dir(&folder).map_err(read)? {
            let entry = entry.map_err(read)?;
            // The name inside the zip is NFC, as every name the agent sends;
            // the bytes are read from `path`, the OS's own spelling.
            let name = crate::model::names::nfc(&entry.file_name().to_string_lossy()).into_owned();
            if is_finder_litter(&name) {
                continue;
            }
            let path = entry.path();
            let meta =
                std::fs::symlink_metadata(&path).map_err(|source| GroupError::Read { path: path.clone(), source })?;
            let zip_name = format!("{prefix}{name}");
            if super::open::is_special(&meta) {
                return Err(GroupError::Special { path, what: super::open::not_regular(&meta) });
            }
            if meta.file_type().is_symlink() {
                tracing::warn!(path = %path.display(), "symbolic link inside a .fcpxmld bundle left out of its zip");
            } else if meta.is_dir() {
                out.push(BundleEntry {
                    zip_name: format!("{zip_name}/"),
                    path: path.clone(),
                    is_dir: true,
                    size: 0,
                    mtime_ns: mtime_ns(&meta),
                });
                stack.push((path, format!("{zip_name}/")));
            } else {
                out.push(BundleEntry { zip_name, path, is_dir: false, size: meta.len(), mtime_ns: mtime_ns(&meta) });
            }
        }
    }
    out.sort_by(|a, b| a.zip_name.cmp(&b.zip_name));
    Ok(out)
}

/// A writer that only counts: how big the zip would be.
#[derive(Default)]
struct Counter {
    pos: u64,
    len: u64,
}

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pos += buf.len() as u64;
        self.len = self.len.max(self.pos);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Counter {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before start"))?;
        Ok(self.pos)
    }
}

/// Where a failure happened: reading the bundle (a problem of the export)
/// or writing the zip (a problem of the staging directory).
enum Fault {
    Read(PathBuf, io::Error),
    Write(io::Error),
}

fn zip_into<W: Write + Seek>(entries: &[BundleEntry], sink: W) -> Result<W, Fault> {
    let mut zip = ZipWriter::new(sink);
    let base = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        .last_modified_time(DateTime::default());
    let mut buf = vec![0u8; 256 * 1024];
    for e in entries {
        if e.is_dir {
            zip.add_directory(e.zip_name.as_str(), base.unix_permissions(0o755)).map_err(|z| Fault::Write(z.into()))?;
            continue;
        }
        let (mut file, _) = super::open::open_regular(&e.path).map_err(|err| Fault::Read(e.path.clone(), err))?;
        let large = e.size >= u64::from(u32::MAX) - 1024;
        zip.start_file(e.zip_name.as_str(), base.unix_permissions(0o644).large_file(large))
            .map_err(|z| Fault::Write(z.into()))?;
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(Fault::Read(e.path.clone(), err)),
            };
            zip.write_all(&buf[..n]).map_err(Fault::Write)?;
        }
    }
    zip.finish().map_err(|z| Fault::Write(z.into()))
}

/// The size of the zip [`write_zip`] would write, without writing anything.
pub fn zip_size(entries: &[BundleEntry]) -> Result<u64, GroupError> {
    match zip_into(entries, Counter::default()) {
        Ok(c) => Ok(c.len),
        Err(Fault::Read(path, source)) => Err(GroupError::Read { path, source }),
        Err(Fault::Write(source)) => Err(GroupError::Staging { path: PathBuf::from("(counting)"), source }),
    }
}

/// The newest mtime among the entries: the staged zip's own mtime.
pub fn newest_mtime(entries: &[BundleEntry]) -> i64 {
    entries.iter().map(|e| e.mtime_ns).max().unwrap_or(0)
}

/// Zip `entries` into `dest` (temp name, `sync_all`, rename; mode 0600;
/// mtime = newest entry). Returns the zip's size.
pub fn write_zip(entries: &[BundleEntry], dest: &Path) -> Result<u64, GroupError> {
    let staging = |path: &Path, source| GroupError::Staging { path: path.to_owned(), source };
    let dir = dest.parent().unwrap_or(Path::new("."));
    create_private_dir(dir).map_err(|e| staging(dir, e))?;
    let file_name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // O_EXCL, mode 0600, a random hidden name beside the target.
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| staging(dir, e))?;
    let tmp_path = tmp.path().to_owned();
    let (file, tmp_path_guard) = tmp.into_parts();
    let writer = match zip_into(entries, BufWriter::with_capacity(256 * 1024, file)) {
        Ok(w) => w,
        Err(Fault::Read(path, source)) => return Err(GroupError::Read { path, source }),
        Err(Fault::Write(source)) => return Err(staging(&tmp_path, source)),
    };
    let file = writer.into_inner().map_err(|e| staging(&tmp_path, e.into_error()))?;
    file.sync_all().map_err(|e| staging(&tmp_path, e))?;
    file.set_modified(system_time(newest_mtime(entries))).map_err(|e| staging(&tmp_path, e))?;
    let size = file.metadata().map_err(|e| staging(&tmp_path, e))?.len();
    drop(file);
    tmp_path_guard.persist(dest).map_err(|e| staging(dest, e.error))?;
    // Make the rename itself durable; not fatal where directories cannot be opened.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(size)
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(root: &Path, name: &str) -> PathBuf {
        let b = root.join(name);
        std::fs::create_dir_all(b.join("Resources/Média")).expect("mkdir");
        std::fs::write(b.join("Info.fcpxml"), "<fcpxml version=\"1.11\"/>\n".repeat(50)).expect("write");
        std::fs::write(b.join("Resources/Média/thumb ü.png"), vec![7u8; 3000]).expect("write");
        std::fs::write(b.join("Resources/a.txt"), b"a").expect("write");
        std::fs::write(b.join(".DS_Store"), b"finder").expect("write");
        b
    }

    #[test]
    fn two_zips_of_one_bundle_are_byte_identical() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let b = bundle(tmp.path(), "Edit Ünïcode.fcpxmld");
        let entries = list_bundle(&b, "Edit Ünïcode.fcpxmld").expect("list");
        let one = tmp.path().join("staging/one.zip");
        let two = tmp.path().join("staging/two.zip");
        let s1 = write_zip(&entries, &one).expect("zip");
        // Touch the files and list again: timestamps inside the zip are fixed.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(b.join("Resources/a.txt"), b"a").expect("rewrite same bytes");
        let entries2 = list_bundle(&b, "Edit Ünïcode.fcpxmld").expect("list");
        let s2 = write_zip(&entries2, &two).expect("zip");
        assert_eq!(s1, s2);
        assert_eq!(std::fs::read(&one).expect("read"), std::fs::read(&two).expect("read"));
        // Overwriting in place gives the same bytes again.
        write_zip(&entries2, &one).expect("re-zip");
        assert_eq!(std::fs::read(&one).expect("read"), std::fs::read(&two).expect("read"));
        // The dry run predicts the size exactly.
        assert_eq!(zip_size(&entries).expect("count"), s1);
        assert_eq!(std::fs::metadata(&one).expect("meta").len(), s1);
    }

    #[test]
    fn zip_holds_sorted_entries_with_fixed_metadata_and_no_finder_litter() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let b = bundle(tmp.path(), "E.fcpxmld");
        let entries = list_bundle(&b, "E.fcpxmld").expect("list");
        let dest = tmp.path().join("s/E.zip");
        write_zip(&entries, &dest).expect("zip");
        let mut z = zip::ZipArchive::new(File::open(&dest).expect("open")).expect("valid zip");
        let names: Vec<String> = (0..z.len()).map(|i| z.by_index(i).expect("entry").name().to_string()).collect();
        assert_eq!(
            names,
            vec![
                "E.fcpxmld/",
                "E.fcpxmld/Info.fcpxml",
                "E.fcpxmld/Resources/",
                "E.fcpxmld/Resources/Média/",
                "E.fcpxmld/Resources/Média/thumb ü.png",
                "E.fcpxmld/Resources/a.txt",
            ]
        );
        let mut info = z.by_name("E.fcpxmld/Info.fcpxml").expect("entry");
        assert_eq!(info.compression(), CompressionMethod::Stored);
        assert_eq!(info.unix_mode().map(|m| m & 0o777), Some(0o644));
        let t = info.last_modified().expect("timestamp");
        assert_eq!((t.year(), t.month(), t.day()), (1980, 1, 1));
        let mut text = String::new();
        info.read_to_string(&mut text).expect("read");
        assert!(text.starts_with("<fcpxml"));
    }

    #[cfg(unix)]
    #[test]
    fn staged_zip_is_private_and_keeps_the_newest_mtime() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let b = bundle(tmp.path(), "E.fcpxmld");
        let entries = list_bundle(&b, "E.fcpxmld").expect("list");
        let dest = tmp.path().join("staging/deeper/E.zip");
        write_zip(&entries, &dest).expect("zip");
        let meta = std::fs::metadata(&dest).expect("meta");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(dest.parent().expect("dir")).expect("meta").permissions().mode() & 0o777, 0o700);
        assert_eq!(mtime_ns(&meta), newest_mtime(&entries));
        let leftovers: Vec<_> = std::fs::read_dir(dest.parent().expect("dir"))
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .filter(|n| n.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
