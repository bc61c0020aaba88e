//! The object storage behind presigned URLs: S3-style answers, streamed writes.
//!
//! A URL is `STORAGE/objects/<uploadId>` (single_put) or
//! `STORAGE/objects/<uploadId>/parts/<n>` (multipart), with
//! `X-Expires` (Unix seconds), `X-Serial` and `X-Signature`, the hex
//! HMAC-SHA256 of `PUT\n<path>\n<expires>\n<serial>` under the server's secret.
//!
//! A PUT body goes to disk as it arrives: collected into 1 MiB buffers, each
//! hashed (MD5) and written at its place in the upload's object file on the
//! blocking pool (hashing and writing in parallel) while the next one fills.
//! So a PUT holds at most two buffers, whatever the part size, and neither
//! hashing nor writing waits for the other or for the network.

use std::io::{Seek, SeekFrom, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use md5::Digest;
use sha2::Sha256;
use tokio::task::JoinHandle;

use super::faults::Fault;
use super::state::{ServerState, expire_if_due, lock};
use super::{ConnAbort, ContractViolationKind, FileStatus, KEY_HEADER, SandboxError, SessionStatus};

type Sh = Arc<ServerState>;

/// Bytes per disk write (and per MD5 update).
const CHUNK: usize = 1 << 20;

pub(crate) fn router(shared: Sh) -> Router {
    Router::new()
        .route("/objects/{upload}", put(put_single))
        .route("/objects/{upload}/parts/{part}", put(put_part))
        .fallback(fallback)
        .with_state(shared)
}

/// The path of the URL for one upload (and part, for multipart).
pub(crate) fn object_path(upload_id: &str, part: Option<u64>) -> String {
    match part {
        None => format!("/objects/{upload_id}"),
        Some(n) => format!("/objects/{upload_id}/parts/{n}"),
    }
}

fn mac(sh: &ServerState, path: &str, expires: i64, serial: u64) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(&sh.secret).expect("HMAC accepts a key of any length");
    mac.update(format!("PUT\n{path}\n{expires}\n{serial}").as_bytes());
    mac
}

/// A presigned PUT URL for `path`, valid until `expires` (Unix seconds),
/// issued to the API key `caller` (remembered by its serial, for the call log).
pub(crate) fn presign(sh: &ServerState, path: &str, expires: i64, caller: &Arc<str>) -> String {
    let serial = lock(&sh.calls).issue_serial(&sh.url_serial, caller);
    let sig = hex::encode(mac(sh, path, expires, serial).finalize().into_bytes());
    format!("{}{path}?X-Expires={expires}&X-Serial={serial}&X-Signature={sig}", sh.storage_url)
}

/// The URL's expiry (Unix seconds) and serial, if the server signed it.
fn signed(sh: &ServerState, path: &str, query: Option<&str>) -> Result<(i64, u64), SandboxError> {
    let (mut expires, mut serial, mut sig) = (None, None, None);
    for kv in query.unwrap_or_default().split('&') {
        match kv.split_once('=') {
            Some(("X-Expires", v)) => expires = v.parse::<i64>().ok(),
            Some(("X-Serial", v)) => serial = v.parse::<u64>().ok(),
            Some(("X-Signature", v)) => sig = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(expires), Some(serial), Some(sig)) = (expires, serial, sig) else {
        return Err(SandboxError::BadSignature);
    };
    mac(sh, path, expires, serial).verify_slice(&sig).map_err(|_| SandboxError::BadSignature)?;
    Ok((expires, serial))
}

/// Signature first (a forged URL learns nothing about expiry), then expiry.
fn verify(sh: &ServerState, signed: Result<(i64, u64), SandboxError>) -> Result<(), SandboxError> {
    let (expires, serial) = signed?;
    let expired_at = jiff::Timestamp::from_second(expires).map_err(|_| SandboxError::BadSignature)?;
    if serial < sh.min_serial.load(Ordering::SeqCst) || sh.now() >= expired_at {
        return Err(SandboxError::UrlExpired);
    }
    Ok(())
}

async fn put_single(State(sh): State<Sh>, Path(upload): Path<String>, req: Request) -> Response {
    handle(sh, upload, None, req).await
}

async fn put_part(State(sh): State<Sh>, Path((upload, part)): Path<(String, String)>, req: Request) -> Response {
    handle(sh, upload, Some(part), req).await
}

async fn fallback(State(sh): State<Sh>, req: Request) -> Response {
    let resp = SandboxError::BadSignature.into_response();
    tracing::debug!(method = %req.method(), path = %req.uri().path(), "storage: no such object");
    count(&sh, resp.status(), 0);
    resp
}

fn count(sh: &ServerState, status: StatusCode, bytes: u64) {
    let mut stats = lock(&sh.stats);
    *stats.storage.entry(status.as_u16()).or_default() += 1;
    stats.put_bytes += bytes;
    if status == StatusCode::FORBIDDEN {
        stats.forbidden += 1;
    }
}

async fn handle(sh: Sh, upload: String, part: Option<String>, req: Request) -> Response {
    lock(&sh.stats).storage_puts += 1;
    let path = req.uri().path().to_string();
    let signed = signed(&sh, &path, req.uri().query());
    record_put(&sh, &upload, signed.as_ref().ok().map(|(_, serial)| *serial));
    let mut received = 0u64;
    let r = put_object(&sh, &upload, part.as_deref(), req, signed, &mut received).await;
    let resp = r.unwrap_or_else(IntoResponse::into_response);
    // The query string holds the signature: log the path only.
    tracing::debug!(%path, status = resp.status().as_u16(), bytes = received, "storage PUT");
    count(&sh, resp.status(), received);
    resp
}

/// Log a PUT as it arrives: the key its URL (of `serial`) was issued to,
/// and the session of `upload`.
fn record_put(sh: &ServerState, upload: &str, serial: Option<u64>) {
    let session = lock(&sh.registry).uploads.get(upload).map(|(s, _)| s.clone());
    let mut log = lock(&sh.calls);
    let caller = serial.and_then(|s| log.url_caller(s)).unwrap_or_default().to_string();
    log.record(&caller, "put", session);
}

/// Read a request body to its end (or its first error), counting its bytes.
async fn drain(body: axum::body::Body, received: &mut u64) {
    drain_stream(&mut body.into_data_stream(), received).await;
}

async fn drain_stream(stream: &mut axum::body::BodyDataStream, received: &mut u64) {
    while let Some(Ok(b)) = stream.next().await {
        *received += b.len() as u64;
    }
}

/// What a PUT needs to know about its target, read under the registry lock.
struct Target {
    part: u64,
    expected: u64,
    offset: u64,
    object: std::path::PathBuf,
    part_lock: Arc<tokio::sync::Mutex<()>>,
}

fn target(sh: &ServerState, upload: &str, part: Option<&str>) -> Result<Target, SandboxError> {
    let now = sh.now();
    let mut guard = lock(&sh.registry);
    let st = &mut *guard;
    let (session_id, i) = st.uploads.get(upload).cloned().ok_or(SandboxError::NoSuchUpload)?;
    let s = st.sessions.get_mut(&session_id).ok_or(SandboxError::NoSuchUpload)?;
    expire_if_due(s, now);
    if s.status != SessionStatus::Pending {
        return Err(SandboxError::NoSuchUpload);
    }
    let f = s.files.get_mut(i).ok_or(SandboxError::NoSuchUpload)?;
    if !matches!(f.status, FileStatus::Pending | FileStatus::Uploading) {
        return Err(SandboxError::NoSuchUpload);
    }
    let n = match part {
        None => 1,
        Some(p) => p.parse::<u64>().map_err(|_| SandboxError::BadSignature)?,
    };
    if n == 0 || n > f.total_parts || (part.is_none() != f.single_put()) {
        // A signed URL always names a real part; this is a URL of another shape.
        return Err(SandboxError::BadSignature);
    }
    let (start, end) = f.part_range(n);
    Ok(Target {
        part: n,
        expected: end - start + 1,
        offset: start,
        object: f.object.clone(),
        part_lock: f.part_locks.entry(n).or_default().clone(),
    })
}

/// Forget or record a part's MD5; `Err` if the upload went away meanwhile.
fn set_part(sh: &ServerState, upload: &str, part: u64, md5: Option<[u8; 16]>) -> Result<(), SandboxError> {
    let mut guard = lock(&sh.registry);
    let st = &mut *guard;
    let (session_id, i) = st.uploads.get(upload).cloned().ok_or(SandboxError::NoSuchUpload)?;
    let s = st.sessions.get_mut(&session_id).ok_or(SandboxError::NoSuchUpload)?;
    let f = s.files.get_mut(i).ok_or(SandboxError::NoSuchUpload)?;
    if s.status != SessionStatus::Pending || !matches!(f.status, FileStatus::Pending | FileStatus::Uploading) {
        return Err(SandboxError::NoSuchUpload);
    }
    match md5 {
        None => {
            f.parts.remove(&part);
        }
        Some(md5) => {
            f.parts.insert(part, md5);
            f.status = FileStatus::Uploading;
        }
    }
    Ok(())
}

async fn put_object(
    sh: &ServerState,
    upload: &str,
    part: Option<&str>,
    req: Request,
    signed: Result<(i64, u64), SandboxError>,
    received: &mut u64,
) -> Result<Response, SandboxError> {
    let (parts, body) = req.into_parts();
    if parts.headers.contains_key(KEY_HEADER) {
        sh.violation(
            ContractViolationKind::KeyOnStoragePut,
            format!("storage PUT {} carried the {KEY_HEADER} header", parts.uri.path()),
        );
    }
    verify(sh, signed)?;
    let length = match parts.headers.get("content-length") {
        _ if parts.headers.contains_key("transfer-encoding") => return Err(SandboxError::MissingContentLength),
        None => return Err(SandboxError::MissingContentLength),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| SandboxError::StorageBadRequest("Content-Length is not a number".into()))?,
    };
    let t = match target(sh, upload, part) {
        Ok(t) if length == t.expected => t,
        refused => {
            // Read the body before answering, as S3 does: a server that
            // closes with the body unread makes the client's TCP stack send
            // a reset, and Windows then drops the answer already received.
            drain(body, received).await;
            return Err(match refused {
                Ok(t) => SandboxError::StorageBadRequest(format!(
                    "Content-Length {length} does not match the size of part {} ({} bytes)",
                    t.part, t.expected
                )),
                Err(e) => e,
            });
        }
    };
    let (latency, fault) = {
        let mut f = lock(&sh.faults);
        let fault = f.put();
        (f.faults.latency, fault)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut stream = body.into_data_stream();
    match fault {
        Some(Fault::Put5xx) => {
            sh.count_fault(Fault::Put5xx);
            drain_stream(&mut stream, received).await;
            return Err(SandboxError::StorageInternal);
        }
        Some(Fault::Put404) => {
            sh.count_fault(Fault::Put404);
            drain_stream(&mut stream, received).await;
            return Err(SandboxError::NoSuchUpload);
        }
        Some(Fault::Reset) => {
            sh.count_fault(Fault::Reset);
            while *received < t.expected.div_ceil(2) {
                match stream.next().await {
                    Some(Ok(b)) => *received += b.len() as u64,
                    _ => break,
                }
            }
            lock(&sh.stats).put_bytes += *received;
            *received = 0;
            if let Some(abort) = parts.extensions.get::<ConnAbort>() {
                abort.abort();
            }
            // The connection task drops this future together with the connection.
            std::future::pending::<()>().await;
            return Err(SandboxError::StorageInternal);
        }
        _ => {}
    }

    // Held by the sink, so a write still running on the blocking pool after
    // this request was dropped keeps the part locked until it ends.
    let guard = t.part_lock.clone().lock_owned().await;
    // From here the part's old bytes are being replaced: its old ETag is void.
    set_part(sh, upload, t.part, None)?;
    let mut file = std::fs::OpenOptions::new().write(true).open(&t.object).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => SandboxError::NoSuchUpload,
        _ => SandboxError::Internal(format!("cannot open object: {e}")),
    })?;
    file.seek(SeekFrom::Start(t.offset)).map_err(|e| SandboxError::Internal(format!("cannot seek object: {e}")))?;
    let mut pipe = Pipeline::new(file, guard);
    while let Some(frame) = stream.next().await {
        let mut bytes =
            frame.map_err(|e| SandboxError::StorageBadRequest(format!("the request body ended early: {e}")))?;
        *received += bytes.len() as u64;
        while !bytes.is_empty() {
            let take = (CHUNK - pipe.buf.len()).min(bytes.len());
            pipe.buf.extend_from_slice(&bytes.split_to(take));
            if pipe.buf.len() == CHUNK {
                pipe.flush().await?;
            }
        }
    }
    if *received != t.expected {
        return Err(SandboxError::StorageBadRequest(format!(
            "the body had {} bytes; part {} has {}",
            *received, t.part, t.expected
        )));
    }
    let md5 = pipe.finish().await?;
    set_part(sh, upload, t.part, Some(md5))?;
    let mut etag = md5;
    if fault == Some(Fault::CorruptEtag) {
        sh.count_fault(Fault::CorruptEtag);
        etag[0] ^= 0xff;
    }
    Ok((StatusCode::OK, [("etag", format!("\"{}\"", hex::encode(etag)))]).into_response())
}

/// The object file, open at the part's offset, holding the part's lock: a
/// write still running after its request was dropped keeps the part locked.
struct Writer {
    file: std::fs::File,
    _part: tokio::sync::OwnedMutexGuard<()>,
}

type Jobs = (JoinHandle<(md5::Md5, Bytes)>, JoinHandle<std::io::Result<Writer>>);

/// Double buffering with two workers: while `buf` fills, the previous buffer
/// is hashed on one blocking thread and written on another, so a single PUT
/// runs at the speed of the slower of MD5 and the disk, not of both in turn.
struct Pipeline {
    buf: BytesMut,
    idle: Option<(md5::Md5, Writer)>,
    jobs: Option<Jobs>,
}

impl Pipeline {
    fn new(file: std::fs::File, part: tokio::sync::OwnedMutexGuard<()>) -> Pipeline {
        let writer = Writer { file, _part: part };
        Pipeline { buf: BytesMut::with_capacity(CHUNK), idle: Some((md5::Md5::new(), writer)), jobs: None }
    }

    /// Wait for the running jobs, if any; returns the hasher, the writer and a
    /// buffer to fill next (the last one, reclaimed, when nothing else holds it).
    async fn settle(&mut self) -> Result<(md5::Md5, Writer, BytesMut), SandboxError> {
        let failed = |e: tokio::task::JoinError| SandboxError::Internal(format!("write task failed: {e}"));
        match self.jobs.take() {
            Some((hash, write)) => {
                let writer = write
                    .await
                    .map_err(failed)?
                    .map_err(|e| SandboxError::Internal(format!("cannot write object: {e}")))?;
                let (md5, done) = hash.await.map_err(failed)?;
                let mut spare = done.try_into_mut().unwrap_or_else(|_| BytesMut::with_capacity(CHUNK));
                spare.clear();
                Ok((md5, writer, spare))
            }
            None => {
                let (md5, writer) = self.idle.take().ok_or_else(|| SandboxError::Internal("writer lost".into()))?;
                Ok((md5, writer, BytesMut::with_capacity(CHUNK)))
            }
        }
    }

    async fn flush(&mut self) -> Result<(), SandboxError> {
        let (mut md5, mut writer, spare) = self.settle().await?;
        let full = std::mem::replace(&mut self.buf, spare).freeze();
        let for_disk = full.clone();
        let hash = tokio::task::spawn_blocking(move || {
            md5.update(&full);
            (md5, full)
        });
        let write = tokio::task::spawn_blocking(move || {
            writer.file.write_all(&for_disk)?;
            Ok(writer)
        });
        self.jobs = Some((hash, write));
        Ok(())
    }

    async fn finish(mut self) -> Result<[u8; 16], SandboxError> {
        if !self.buf.is_empty() {
            self.flush().await?;
        }
        let (md5, _, _) = self.settle().await?;
        Ok(md5.finalize().into())
    }
}
