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

/// Future a chunk gate returns: resolves when `n` more bytes may go out.
pub type ChunkGateFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Called with each chunk's size before that chunk is handed to the network,
/// e.g. a shared bandwidth limiter's (`ops::throttle::Throttle`) `acquire(n)`.
pub type ChunkGate = Arc<dyn Fn(u64) -> ChunkGateFuture + Send + Sync>;

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
    pub throttle: Option<ChunkGate>,
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

impl crate::retry::Retryable for TransferError {
    fn class(&self) -> ErrorClass {
        TransferError::class(self)
    }

    fn may_have_arrived(&self) -> bool {
        match self {
            TransferError::Api(e) => e.may_have_arrived(),
            TransferError::Io { .. } => false,
            // The storage answered: the bytes arrived (wrong or short).
            TransferError::EtagMismatch { .. } | TransferError::Incomplete { .. } => true,
        }
    }
}

/// PUT bytes `[offset, offset + len)` of `path` to `url`, streamed as
/// `opts` says (MD5 check, progress counter, chunk gate, chunk size, the
/// file's expected identity); returns the ETag verbatim. With
/// `opts.verify_md5`, a plain-MD5 ETag that differs from the bytes sent is
/// [`TransferError::EtagMismatch`].
pub async fn put_file_range(
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
    let result = client.put_part(url, body, len, Some(&held)).await;
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
                        // Waiting for the limiter is not a stall (see `Client::put_part`).
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
#[path = "stream_tests.rs"]
mod tests;
