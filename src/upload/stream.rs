//! Streaming one part from disk to a presigned URL.
//!
//! Invariants:
//! - Memory per part in flight is bounded by design, never by the part size:
//!   a blocking reader `pread`s the range in chunks of [`PutOptions::chunk_size`]
//!   (1 MiB by default) into a channel of [`CHANNEL_DEPTH`] chunks, so at most
//!   `CHANNEL_DEPTH + 2` chunks exist per part (queued, being read, being sent).
//! - The MD5 is computed by that reader thread as it reads (on the blocking
//!   pool, in parallel with the network send), once per attempt.
//! - The body carries an exact `Content-Length` (a streamed body has no size
//!   of its own; without it S3-style storage refuses a chunked upload).
//! - A body cannot be replayed: every attempt ([`put_file_range`] call) opens
//!   the file range again.
//! - Dropping a PUT (error, stall, cancellation) drops the channel receiver;
//!   the reader notices at its next send and stops. Nothing is left running.
//! - Only a regular file is opened, never through a symbolic link
//!   (`O_NOFOLLOW | O_NONBLOCK`); with [`PutOptions::expect`] the open
//!   descriptor's `fstat` must match what was grouped, and every byte is
//!   read through that descriptor.
//! - The file is expected to stay as it was: if it is missing or shorter than
//!   the range, that is [`TransferError::Io`], fatal for the group (the export
//!   changed under the agent), never a retry.

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use md5::{Digest, Md5};
use tokio::sync::{mpsc, oneshot};

use crate::api::{ApiError, Client, ErrorClass, redact_url};

/// Default bytes per read: large enough that per-chunk costs vanish, small
/// enough that 4 parts in flight stay far below the memory budget.
pub const DEFAULT_CHUNK: usize = 1 << 20;

/// Chunks read ahead of the network per part.
pub const CHANNEL_DEPTH: usize = 2;

/// Future a throttle returns: resolves when `n` more bytes may go out.
pub type ThrottleFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Called with each chunk's size before that chunk is handed to the network,
/// e.g. a shared bandwidth limiter's `acquire(n)`.
pub type Throttle = Arc<dyn Fn(u64) -> ThrottleFuture + Send + Sync>;

/// How a part is streamed.
#[derive(Clone)]
pub struct PutOptions {
    /// Compute the MD5 while streaming and compare it with a plain-MD5 ETag.
    pub verify_md5: bool,
    /// Bytes handed to the network are added here as they go; an attempt
    /// that fails takes its bytes back out, so the counter only ever ends at
    /// what was really stored.
    pub progress: Option<Arc<AtomicU64>>,
    /// Awaited before each chunk; `None`: no limit.
    pub throttle: Option<Throttle>,
    /// Bytes per read. Clamped to at least 4 KiB.
    pub chunk_size: usize,
    /// What the file was when grouped: the open descriptor's `fstat` must
    /// match it before a byte is read. `None`: not checked.
    pub expect: Option<FileIdentity>,
}

/// A file as it was grouped: size, mtime and (when recorded) device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    pub size: u64,
    pub mtime_ns: i64,
    pub dev: Option<u64>,
    pub ino: Option<u64>,
}

impl FileIdentity {
    /// Why `meta` is not this file, if it is not.
    fn mismatch(&self, meta: &std::fs::Metadata) -> Option<String> {
        if meta.len() != self.size {
            return Some(format!("size {} when grouped, {} now", self.size, meta.len()));
        }
        if super::finish::mtime_ns(meta) != self.mtime_ns {
            return Some("modified after it was grouped".into());
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            if let (Some(dev), Some(ino)) = (self.dev, self.ino)
                && (dev, ino) != (meta.dev(), meta.ino())
            {
                return Some("replaced by another file after it was grouped".into());
            }
        }
        None
    }
}

impl Default for PutOptions {
    fn default() -> Self {
        PutOptions { verify_md5: true, progress: None, throttle: None, chunk_size: DEFAULT_CHUNK, expect: None }
    }
}

impl fmt::Debug for PutOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PutOptions")
            .field("verify_md5", &self.verify_md5)
            .field("progress", &self.progress.as_ref().map(|p| p.load(Ordering::Relaxed)))
            .field("throttle", &self.throttle.is_some())
            .field("chunk_size", &self.chunk_size)
            .field("expect", &self.expect)
            .finish()
    }
}

/// Why a part could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The request failed; its class says what to do.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The source file is missing, unreadable or shorter than the part: the
    /// export changed under the agent. Fatal for the group.
    #[error("{}: {what}: {source}", .path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// The storage's ETag is a plain MD5 that differs from the MD5 of the
    /// bytes sent: the bytes were corrupted on the way. Retry the part.
    #[error("corrupt transfer to {target}: storage ETag {etag} but the bytes sent have MD5 \"{computed}\"")]
    EtagMismatch { target: String, etag: String, computed: String },
    /// The storage answered 2xx before taking the whole part, so what it
    /// stored cannot be known to be the part. Retry the part.
    #[error("the storage at {target} answered before receiving the whole part")]
    Incomplete { target: String },
}

impl TransferError {
    pub fn class(&self) -> ErrorClass {
        match self {
            TransferError::Api(e) => e.class(),
            TransferError::Io { .. } => ErrorClass::Fatal,
            TransferError::EtagMismatch { .. } | TransferError::Incomplete { .. } => ErrorClass::Retry { after: None },
        }
    }

    /// The source file changed or vanished: the group should be canceled
    /// (not merely failed) since what it describes no longer exists.
    pub fn is_source_changed(&self) -> bool {
        matches!(self, TransferError::Io { .. })
    }
}

/// PUT bytes `[offset, offset + len)` of `path` to `url`; returns the ETag
/// verbatim. With `verify_md5`, a plain-MD5 ETag that differs from the bytes
/// sent is [`TransferError::EtagMismatch`].
pub async fn put_file_range(
    client: &Client,
    url: &str,
    path: &Path,
    offset: u64,
    len: u64,
    verify_md5: bool,
) -> Result<String, TransferError> {
    put_file_range_with(client, url, path, offset, len, &PutOptions { verify_md5, ..PutOptions::default() }).await
}

/// [`put_file_range`] with a progress counter, a throttle and a chunk size.
pub async fn put_file_range_with(
    client: &Client,
    url: &str,
    path: &Path,
    offset: u64,
    len: u64,
    opts: &PutOptions,
) -> Result<String, TransferError> {
    let attempt = Arc::new(AtomicU64::new(0));
    let held = Arc::new(AtomicBool::new(false));
    let (body, digest) = FileRangeBody::open(path, offset, len, opts, attempt.clone(), held.clone()).await?;
    let result = client.put_part_held(url, body, len, &held).await;
    let result = match result {
        Ok(etag) => match digest.finish().await {
            Ok(Some(md5)) => check_etag(url, etag, &md5),
            Ok(None) => Ok(etag),
            Err(e) => Err(e.unwrap_or_else(|| TransferError::Incomplete { target: redact_url(url) })),
        },
        // A body that broke because the file did (shrank, unreadable) shows
        // up as a transport error; the reader's own report says which it was.
        Err(e) => Err(digest.io_error().unwrap_or(TransferError::Api(e))),
    };
    if result.is_err()
        && let Some(p) = &opts.progress
    {
        p.fetch_sub(attempt.load(Ordering::Relaxed), Ordering::Relaxed);
    }
    result
}

/// Compare a plain-MD5 ETag (`"` + 32 hex + `"`) with the computed digest;
/// any other ETag (multipart-style, encrypted, weak) cannot be compared and is accepted.
fn check_etag(url: &str, etag: String, md5: &[u8; 16]) -> Result<String, TransferError> {
    match etag_md5(&etag) {
        Some(stored) if stored != *md5 => {
            Err(TransferError::EtagMismatch { target: redact_url(url), etag, computed: hex::encode(md5) })
        }
        _ => Ok(etag),
    }
}

/// The MD5 a plain ETag stands for, or `None` if the ETag is not one.
pub fn etag_md5(etag: &str) -> Option<[u8; 16]> {
    let hex_part = etag.strip_prefix('"')?.strip_suffix('"')?;
    if hex_part.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    hex::decode_to_slice(hex_part, &mut out).ok()?;
    Some(out)
}

/// A file range as a streaming request body, read by a blocking reader.
pub struct FileRangeBody;

/// What the reader reports once it has read the whole range (or failed).
type ReaderOutcome = Result<Option<[u8; 16]>, (&'static str, io::Error)>;

/// After the PUT: the reader's MD5 of what it read, or its I/O error.
pub struct DigestHandle {
    path: PathBuf,
    done: oneshot::Receiver<ReaderOutcome>,
}

impl DigestHandle {
    /// Wait for the reader's result: the MD5 (when verifying) of exactly the
    /// bytes that went into the body. `Err(None)`: the reader stopped before
    /// the end because the body was dropped unfinished (the request ended
    /// before taking every byte); `Err(Some(_))`: the file failed it.
    pub async fn finish(self) -> Result<Option<[u8; 16]>, Option<TransferError>> {
        match self.done.await {
            Ok(Ok(md5)) => Ok(md5),
            Ok(Err((what, source))) => Err(Some(TransferError::Io { path: self.path, what, source })),
            Err(_) => Err(None),
        }
    }

    /// The reader's I/O error, if it has reported one.
    fn io_error(mut self) -> Option<TransferError> {
        match self.done.try_recv() {
            Ok(Err((what, source))) => Some(TransferError::Io { path: self.path, what, source }),
            _ => None,
        }
    }
}

impl FileRangeBody {
    /// Open `path`, check it holds the whole range, and start the reader.
    /// `attempt` counts the bytes handed to the network by this body.
    pub async fn open(
        path: &Path,
        offset: u64,
        len: u64,
        opts: &PutOptions,
        attempt: Arc<AtomicU64>,
        held: Arc<AtomicBool>,
    ) -> Result<(reqwest::Body, DigestHandle), TransferError> {
        let io_err = |what, source| TransferError::Io { path: path.to_path_buf(), what, source };
        let owned = path.to_path_buf();
        let expect = opts.expect;
        let file = tokio::task::spawn_blocking(move || -> Result<std::fs::File, (&'static str, io::Error)> {
            // Only a regular file, never through a symbolic link, never blocking on a FIFO.
            let (mut file, meta) = crate::group::open::open_regular(&owned).map_err(|e| ("cannot open", e))?;
            if let Some(why) = expect.and_then(|x| x.mismatch(&meta)) {
                return Err(("not the file that was grouped", io::Error::other(why)));
            }
            let size = meta.len();
            let end = offset.checked_add(len).ok_or(("bad range", io::Error::other("offset + length overflows")))?;
            if size < end {
                return Err((
                    "file is shorter than the part",
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{size} bytes, part needs bytes {offset}..{end} (the file changed?)"),
                    ),
                ));
            }
            file.seek(SeekFrom::Start(offset)).map_err(|e| ("cannot seek", e))?;
            Ok(file)
        })
        .await
        .map_err(|e| io_err("opening the part", io::Error::other(e.to_string())))?
        .map_err(|(what, e)| io_err(what, e))?;

        let chunk = opts.chunk_size.max(4096);
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_DEPTH);
        let (done_tx, done_rx) = oneshot::channel();
        let verify = opts.verify_md5;
        tokio::task::spawn_blocking(move || read_range(file, len, chunk, verify, &tx, done_tx));

        let throttle = opts.throttle.clone();
        let progress = opts.progress.clone();
        let stream = futures_util::stream::unfold(rx, move |mut rx| {
            let throttle = throttle.clone();
            let progress = progress.clone();
            let attempt = attempt.clone();
            let held = held.clone();
            async move {
                let item = rx.recv().await?;
                if let Ok(bytes) = &item {
                    let n = bytes.len() as u64;
                    if let Some(t) = &throttle {
                        // Waiting for the limiter is not a stall (see `Client::put_part_held`).
                        held.store(true, Ordering::Relaxed);
                        t(n).await;
                        held.store(false, Ordering::Relaxed);
                    }
                    attempt.fetch_add(n, Ordering::Relaxed);
                    if let Some(p) = &progress {
                        p.fetch_add(n, Ordering::Relaxed);
                    }
                }
                Some((item, rx))
            }
        });
        Ok((reqwest::Body::wrap_stream(stream), DigestHandle { path: path.to_path_buf(), done: done_rx }))
    }
}

/// The blocking reader: `len` bytes from the file's current position, in
/// chunks, hashed as read. Reports its outcome on `done` *before* pushing an
/// error into the body, so whoever sees the body fail can learn why.
fn read_range(
    mut file: std::fs::File,
    len: u64,
    chunk: usize,
    verify: bool,
    tx: &mpsc::Sender<io::Result<Bytes>>,
    done: oneshot::Sender<ReaderOutcome>,
) {
    let mut hasher = verify.then(Md5::new);
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk as u64);
        // `read_to_end` into spare capacity: no zeroing, no unsafe.
        let mut buf = Vec::with_capacity(n as usize);
        let read = (&mut file).take(n).read_to_end(&mut buf);
        let failure = match read {
            Ok(got) if got as u64 == n => None,
            Ok(got) => Some((
                "file is shorter than the part",
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("read {} of {len} bytes (the file changed?)", len - left + got as u64),
                ),
            )),
            Err(e) => Some(("cannot read", e)),
        };
        if let Some((what, e)) = failure {
            let body_error = io::Error::new(e.kind(), format!("{what}: {e}"));
            let _ = done.send(Err((what, e)));
            let _ = tx.blocking_send(Err(body_error));
            return;
        }
        if let Some(h) = hasher.as_mut() {
            h.update(&buf);
        }
        left -= n;
        if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
            // The request was dropped: nobody wants the rest.
            return;
        }
    }
    let _ = done.send(Ok(hasher.map(|h| h.finalize().into())));
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn next_data(body: &mut reqwest::Body) -> Option<Result<Bytes, reqwest::Error>> {
        use http_body::Body as _;
        std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx))
            .await
            .map(|r| r.map(|f| f.into_data().expect("a streamed body has only data frames")))
    }

    #[test]
    fn only_a_quoted_32_hex_etag_is_comparable() {
        let md5: [u8; 16] = Md5::digest(b"hello").into();
        let hexed = hex::encode(md5);
        assert_eq!(etag_md5(&format!("\"{hexed}\"")), Some(md5));
        assert_eq!(etag_md5(&format!("\"{}\"", hexed.to_uppercase())), Some(md5));
        assert_eq!(etag_md5(&hexed), None, "unquoted");
        assert_eq!(etag_md5(&format!("W/\"{hexed}\"")), None, "weak");
        assert_eq!(etag_md5(&format!("\"{hexed}-3\"")), None, "multipart-style");
        assert_eq!(etag_md5("\"zz5d41402abc4b2a76b9719d911017c5\""), None, "not hex");
    }

    #[test]
    fn mismatch_is_retryable_and_unknown_etag_accepted() {
        let md5: [u8; 16] = Md5::digest(b"hello").into();
        let other = format!("\"{}\"", hex::encode(Md5::digest(b"world")));
        let err = check_etag("http://s/b/k?X-Sig=secret", other, &md5).unwrap_err();
        assert!(matches!(err, TransferError::EtagMismatch { .. }));
        assert_eq!(err.class(), ErrorClass::Retry { after: None });
        assert!(!err.to_string().contains("secret"), "{err}");
        assert_eq!(check_etag("http://s/b/k", "\"abc-2\"".into(), &md5).unwrap(), "\"abc-2\"");
        let same = format!("\"{}\"", hex::encode(md5));
        assert_eq!(check_etag("http://s/b/k", same.clone(), &md5).unwrap(), same);
    }

    #[tokio::test]
    async fn open_refuses_a_missing_or_short_file_as_source_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.mov");
        let opts = PutOptions::default();
        let missing = FileRangeBody::open(&path, 0, 10, &opts, Arc::default(), Arc::default()).await.err().unwrap();
        assert!(missing.is_source_changed() && missing.class() == ErrorClass::Fatal, "{missing}");
        std::fs::write(&path, b"0123456789").unwrap();
        let short = FileRangeBody::open(&path, 5, 6, &opts, Arc::default(), Arc::default()).await.err().unwrap();
        assert!(short.is_source_changed(), "{short}");
        assert!(short.to_string().contains("shorter"), "{short}");
        assert!(FileRangeBody::open(&path, 5, 5, &opts, Arc::default(), Arc::default()).await.is_ok());
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn open_reads_only_the_file_that_was_grouped_never_a_link_or_a_fifo() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.mov");
        std::fs::write(&path, b"0123456789").unwrap();
        let m = std::fs::metadata(&path).unwrap();
        let id = FileIdentity {
            size: 10,
            mtime_ns: super::super::finish::mtime_ns(&m),
            dev: Some(m.dev()),
            ino: Some(m.ino()),
        };
        let opts = PutOptions { expect: Some(id), ..PutOptions::default() };
        assert!(FileRangeBody::open(&path, 0, 10, &opts, Arc::default(), Arc::default()).await.is_ok());
        // Same size and mtime, another inode: refused.
        let other = dir.path().join("b.mov");
        std::fs::write(&other, b"0123456789").unwrap();
        let f = std::fs::File::options().write(true).open(&other).unwrap();
        f.set_modified(m.modified().unwrap()).unwrap();
        std::fs::rename(&other, &path).unwrap();
        let e = FileRangeBody::open(&path, 0, 10, &opts, Arc::default(), Arc::default()).await.err().unwrap();
        assert!(e.is_source_changed() && e.to_string().contains("replaced"), "{e}");
        // A symbolic link in its place: refused, nothing read through it.
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(dir.path().join("target"), &path).unwrap();
        std::fs::write(dir.path().join("target"), b"0123456789").unwrap();
        let e = FileRangeBody::open(&path, 0, 10, &PutOptions::default(), Arc::default(), Arc::default())
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        // A FIFO: refused at once instead of blocking.
        let fifo = dir.path().join("p.mov");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let e = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            FileRangeBody::open(&fifo, 0, 10, &PutOptions::default(), Arc::default(), Arc::default()),
        )
        .await
        .expect("does not block")
        .err()
        .unwrap();
        assert!(e.to_string().contains("FIFO"), "{e}");
    }

    /// The reader yields exactly the range, in bounded chunks, and its MD5 is of that range.
    #[tokio::test]
    async fn reader_yields_the_range_in_bounded_chunks_with_its_md5() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.mov");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let progress = Arc::new(AtomicU64::new(0));
        let opts = PutOptions { chunk_size: 4096, progress: Some(progress.clone()), ..PutOptions::default() };
        let (body, digest) =
            FileRangeBody::open(&path, 1000, 150_001, &opts, Arc::default(), Arc::default()).await.unwrap();
        let mut body = body;
        let mut got = Vec::new();
        while let Some(chunk) = next_data(&mut body).await {
            let chunk = chunk.unwrap();
            assert!(chunk.len() <= 4096);
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, &data[1000..151_001]);
        let md5 = digest.finish().await.ok().flatten().unwrap();
        assert_eq!(md5, <[u8; 16]>::from(Md5::digest(&data[1000..151_001])));
        assert_eq!(progress.load(Ordering::Relaxed), 150_001);
    }

    #[tokio::test]
    async fn a_file_that_shrinks_while_read_fails_the_body_and_reports_io() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.mov");
        std::fs::write(&path, vec![1u8; 64 * 1024]).unwrap();
        let opts = PutOptions { chunk_size: 4096, verify_md5: false, ..PutOptions::default() };
        let (body, digest) =
            FileRangeBody::open(&path, 0, 64 * 1024, &opts, Arc::default(), Arc::default()).await.unwrap();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(10_000).unwrap();
        let mut body = body;
        let mut failed = false;
        while let Some(chunk) = next_data(&mut body).await {
            if chunk.is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "the body must end in an error, not short");
        let err = digest.finish().await.unwrap_err().expect("the file's error, not a dropped body");
        assert!(err.is_source_changed(), "{err}");
    }

    /// A storage that answers each PUT with the MD5 of what it received,
    /// or, when `corrupt`, with the MD5 of something else.
    async fn md5_storage(corrupt: bool) -> crate::api::test_server::TestServer {
        use crate::api::test_server::Reply;
        crate::api::test_server::TestServer::start(move |seen| {
            let mut md5: [u8; 16] = Md5::digest(&seen.body).into();
            if corrupt {
                md5[0] ^= 1;
            }
            Reply::json(200, "").with("etag", &format!("\"{}\"", hex::encode(md5)))
        })
        .await
    }

    fn client_for(server: &crate::api::test_server::TestServer) -> Client {
        let cfg = crate::config::ApiConfig { endpoint: server.url(""), ..Default::default() };
        Client::new(&cfg, crate::config::ApiKey::new("k-test-key")).unwrap()
    }

    fn sample_file(dir: &Path, len: usize) -> (PathBuf, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8 ^ (i >> 12) as u8).collect();
        let path = dir.join("v.mov");
        std::fs::write(&path, &data).unwrap();
        (path, data)
    }

    #[tokio::test]
    async fn a_range_arrives_exactly_with_its_content_length_and_md5_etag() {
        let server = md5_storage(false).await;
        let client = client_for(&server);
        let dir = tempfile::tempdir().unwrap();
        let (path, data) = sample_file(dir.path(), 3 << 20);
        let (offset, len) = (1_000_001u64, 1_500_000u64);
        let progress = Arc::new(AtomicU64::new(0));
        let opts = PutOptions { progress: Some(progress.clone()), chunk_size: 256 * 1024, ..PutOptions::default() };
        let url = server.url("/bucket/key?X-Amz-Signature=x");
        let etag = put_file_range_with(&client, &url, &path, offset, len, &opts).await.unwrap();
        let seen = server.seen();
        let range = &data[offset as usize..(offset + len) as usize];
        assert_eq!(seen[0].body.as_ref(), range);
        assert_eq!(seen[0].headers["content-length"], len.to_string());
        assert!(seen[0].headers.get("transfer-encoding").is_none(), "never chunked");
        assert_eq!(etag, format!("\"{}\"", hex::encode(Md5::digest(range))));
        assert_eq!(progress.load(Ordering::Relaxed), len);
    }

    #[tokio::test]
    async fn a_corrupted_etag_is_caught_unless_verification_is_off() {
        let server = md5_storage(true).await;
        let client = client_for(&server);
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = sample_file(dir.path(), 300_000);
        let url = server.url("/bucket/key?X-Amz-Signature=x");
        let progress = Arc::new(AtomicU64::new(0));
        let opts = PutOptions { progress: Some(progress.clone()), ..PutOptions::default() };
        let err = put_file_range_with(&client, &url, &path, 0, 300_000, &opts).await.unwrap_err();
        assert!(matches!(err, TransferError::EtagMismatch { .. }), "{err}");
        assert_eq!(err.class(), ErrorClass::Retry { after: None });
        assert_eq!(progress.load(Ordering::Relaxed), 0, "a failed attempt takes its bytes back");
        assert!(put_file_range(&client, &url, &path, 0, 300_000, false).await.is_ok());
    }

    #[tokio::test]
    async fn a_missing_file_is_fatal_before_anything_is_sent() {
        let server = md5_storage(false).await;
        let client = client_for(&server);
        let err = put_file_range(&client, &server.url("/b/k"), Path::new("/nonexistent/v.mov"), 0, 10, true)
            .await
            .unwrap_err();
        assert!(err.is_source_changed() && err.class() == ErrorClass::Fatal, "{err}");
        assert!(server.seen().is_empty());
    }

    #[tokio::test]
    async fn the_throttle_is_awaited_before_every_chunk() {
        let server = md5_storage(false).await;
        let client = client_for(&server);
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = sample_file(dir.path(), 100_000);
        let asked = Arc::new(AtomicU64::new(0));
        let counter = asked.clone();
        let throttle: Throttle = Arc::new(move |n| {
            counter.fetch_add(n, Ordering::Relaxed);
            Box::pin(tokio::time::sleep(std::time::Duration::from_millis(1)))
        });
        let opts = PutOptions { throttle: Some(throttle), chunk_size: 8192, ..PutOptions::default() };
        put_file_range_with(&client, &server.url("/b/k"), &path, 0, 100_000, &opts).await.unwrap();
        assert_eq!(asked.load(Ordering::Relaxed), 100_000);
    }

    #[tokio::test]
    async fn a_storage_that_answers_before_taking_the_part_is_retried_not_fatal() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 16 * 1024];
            let _ = sock.read(&mut buf).await.unwrap();
            let md5 = hex::encode(Md5::digest(b""));
            let answer = format!("HTTP/1.1 200 OK\r\nETag: \"{md5}\"\r\nContent-Length: 0\r\n\r\n");
            sock.write_all(answer.as_bytes()).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        });
        let cfg = crate::config::ApiConfig { endpoint: format!("http://{addr}"), ..Default::default() };
        let client = Client::new(&cfg, crate::config::ApiKey::new("k")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = sample_file(dir.path(), 32 << 20);
        let err = put_file_range(&client, &format!("http://{addr}/b/k"), &path, 0, 32 << 20, true).await.unwrap_err();
        assert!(matches!(err, TransferError::Incomplete { .. }), "{err}");
        assert_eq!(err.class(), ErrorClass::Retry { after: None }, "{err}");
    }
}
