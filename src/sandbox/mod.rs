//! A local SpatialGen-compatible server: the Direct Upload API of
//! `spatialgen-api.md` (including every line marked *assumed*, exactly as
//! written there), a presigned-URL object storage, fault injection and a
//! record of the protocol violations it saw. The demo, the tests and users
//! trying a config offline talk to it over loopback like to the real service.
//!
//! # Shape
//! Two listeners, as in production where storage is another host: the API
//! (`base_url()`, plus the key-less admin endpoints under `/_sandbox/`), and
//! the storage that presigned URLs point at (`storage_url()`). Both run their
//! own accept loop over hyper so that a connection can be dropped part-way
//! through a request body (the `reset_mid_body` fault).
//!
//! # Invariants
//! - All session state lives in memory behind one mutex, never held across an
//!   `.await`; only object bytes live on disk (`DATA/objects/<uploadId>`, one
//!   sparse file per upload, each part written at its offset; moved to
//!   `DATA/library/<libraryId>-<sessionId>/<fileName>` when the group completes).
//! - A part counts as received only once its whole body was written and
//!   hashed; a PUT that starts on a part first forgets the part's earlier ETag,
//!   so a half-overwritten part can never be completed. PUTs to the same part
//!   are serialized.
//! - `complete` never reads object bytes: it compares the MD5s recorded while
//!   streaming. SHA-256 of stored files is computed lazily by `library()`.
//! - Time is `SystemTime::now()` plus an offset that only grows
//!   (`advance_clock`), so group expiry (5 days) and URL expiry are testable.
//! - URLs carry a serial number under the signature; `expire_all_urls` makes
//!   every serial issued so far expired, and nothing else.
//!
//! # Choices where the contract leaves room
//! - Start answers 201; malformed JSON answers 400, a broken rule 422 with
//!   every message (`message` joined with "; ", and `violations` as a list).
//! - Cancelling an already canceled group answers 409 (the client must treat
//!   it as canceled); cancelling a completed group answers 409 too.
//! - API calls (part URLs, complete) on a canceled group answer 409 and are
//!   recorded as violations; a storage PUT there answers 404 `NoSuchUpload`
//!   (not recorded: a PUT already on its way when the cancel happened is normal).
//! - `part-urls` with `{}` is fine for single_put; a multipart file needs one
//!   of the two styles. A range past the last part is clipped to it.
//! - `complete` on a completed file returns its state with the group's
//!   current `libraryId` (so a retried last `complete` still learns it).
//! - ETags in `complete` are compared with or without their quotes, as S3 does.

mod api;
mod faults;
mod storage;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use jiff::Timestamp;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::model::{FileRole, Layout, Perspective};

pub use faults::Faults;
pub use validate::validate_start_request;

use faults::{Fault, FaultState};

/// The header that carries the API key.
pub const KEY_HEADER: &str = "X-SPATIALGEN-APPKEY";

/// How long a group lives on the server before it expires.
pub const GROUP_LIFETIME: Duration = Duration::from_secs(5 * 24 * 3600);

/// At most this many part URLs per `part-urls` call.
pub const MAX_PARTS_PER_CALL: u64 = 10_000;

/// How the server is set up.
#[derive(Clone)]
pub struct SandboxOptions {
    /// The part size the server chooses for every file (the contract lets the
    /// server choose; 100 MiB as in the documented example).
    pub part_size: u64,
    /// The one key accepted; `None` accepts any non-empty key.
    pub api_key: Option<String>,
    /// Where objects and the library are written.
    pub data_dir: PathBuf,
    /// How long a presigned URL stays valid.
    pub url_ttl: Duration,
}

impl std::fmt::Debug for SandboxOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxOptions")
            .field("part_size", &self.part_size)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("data_dir", &self.data_dir)
            .field("url_ttl", &self.url_ttl)
            .finish()
    }
}

impl SandboxOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        SandboxOptions {
            part_size: 100 * 1024 * 1024,
            api_key: None,
            data_dir: data_dir.into(),
            url_ttl: Duration::from_secs(3600),
        }
    }
}

/// Why a request was refused. API variants answer JSON
/// `{"error", "message"}`; storage variants answer S3-style XML.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("missing or invalid {KEY_HEADER} header")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("{}", .0.join("; "))]
    Validation(Vec<String>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("too many requests; retry after {} s", retry_after_secs(*.0))]
    RateLimited(Duration),
    #[error("injected server error")]
    Injected,
    #[error("internal error: {0}")]
    Internal(String),
    #[error("Request has expired")]
    UrlExpired,
    #[error("The request signature we calculated does not match the signature you provided")]
    BadSignature,
    #[error("{0}")]
    StorageBadRequest(String),
    #[error("You must provide the Content-Length HTTP header.")]
    MissingContentLength,
    #[error(
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed."
    )]
    NoSuchUpload,
    #[error("We encountered an internal error. Please try again.")]
    StorageInternal,
}

fn retry_after_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl IntoResponse for SandboxError {
    fn into_response(self) -> Response {
        use SandboxError as E;
        let message = self.to_string();
        let (status, code, xml) = match &self {
            E::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", false),
            E::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request", false),
            E::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", false),
            E::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", false),
            E::Conflict(_) => (StatusCode::CONFLICT, "conflict", false),
            E::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited", false),
            E::Injected => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error", false),
            E::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error", false),
            E::UrlExpired => (StatusCode::FORBIDDEN, "AccessDenied", true),
            E::BadSignature => (StatusCode::FORBIDDEN, "SignatureDoesNotMatch", true),
            E::StorageBadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest", true),
            E::MissingContentLength => (StatusCode::LENGTH_REQUIRED, "MissingContentLength", true),
            E::NoSuchUpload => (StatusCode::NOT_FOUND, "NoSuchUpload", true),
            E::StorageInternal => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError", true),
        };
        if xml {
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{}</Message></Error>",
                xml_escape(&message)
            );
            return (status, [("content-type", "application/xml")], body).into_response();
        }
        let mut json = serde_json::json!({ "error": code, "message": message });
        if let E::Validation(list) = &self {
            json["violations"] = serde_json::json!(list);
        }
        let mut resp = (status, axum::Json(json)).into_response();
        if let E::RateLimited(d) = self {
            resp.headers_mut().insert("retry-after", axum::http::HeaderValue::from(retry_after_secs(d)));
        }
        resp
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A protocol violation the sandbox saw a client commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub kind: ViolationKind,
    /// What happened, in plain words (never the key itself).
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ViolationKind {
    /// An API call without `X-SPATIALGEN-APPKEY`.
    MissingKey,
    /// A storage PUT carried `X-SPATIALGEN-APPKEY`: the key leaked to storage.
    KeyOnStoragePut,
    /// `complete` listed parts out of ascending order (or repeated one).
    UnsortedParts,
    /// `complete` left out parts, or named parts that were never uploaded.
    MissingParts,
    /// `complete` named an ETag that does not match the bytes stored.
    EtagMismatch,
    /// An API call on a group after it was canceled.
    CallAfterCancel,
}

/// Status of a group on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    Pending,
    Completed,
    Canceled,
    Expired,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Pending => "pending",
            SessionStatus::Completed => "completed",
            SessionStatus::Canceled => "canceled",
            SessionStatus::Expired => "expired",
        }
    }
}

/// Status of one file on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileStatus {
    /// No part received yet.
    Pending,
    /// Some part received.
    Uploading,
    Completed,
    Canceled,
    Expired,
}

impl FileStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FileStatus::Pending => "pending",
            FileStatus::Uploading => "uploading",
            FileStatus::Completed => "completed",
            FileStatus::Canceled => "canceled",
            FileStatus::Expired => "expired",
        }
    }
}

/// One upload group as the server sees it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    pub id: String,
    pub video_name: String,
    pub layout: Layout,
    pub perspective: Option<Perspective>,
    pub status: SessionStatus,
    pub created_at: String,
    pub expires_at: String,
    pub library_id: Option<u64>,
    pub files: Vec<FileInfo>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileInfo {
    pub upload_id: String,
    pub file_name: String,
    pub role: FileRole,
    pub language: Option<String>,
    pub status: FileStatus,
    pub total_bytes: u64,
    pub part_size: u64,
    pub total_parts: u64,
    /// Part numbers received in full, ascending.
    pub parts_received: Vec<u64>,
    /// Part numbers a PUT is writing right now, ascending.
    pub parts_in_flight: Vec<u64>,
}

/// One completed group: what SpatialGen would put in the library.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LibraryEntry {
    pub library_id: u64,
    pub session_id: String,
    pub video_name: String,
    pub layout: Layout,
    pub perspective: Option<Perspective>,
    pub files: Vec<LibraryFile>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LibraryFile {
    pub file_name: String,
    pub role: FileRole,
    pub language: Option<String>,
    pub size: u64,
    /// Hex SHA-256 of the stored bytes (empty if the file could not be read).
    pub sha256: String,
    /// Where the bytes are.
    pub path: PathBuf,
}

/// Counts since start.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// API calls by endpoint (`start`, `part-urls`, `complete`, `cancel`, `other`) and status.
    pub api: BTreeMap<String, BTreeMap<u16, u64>>,
    /// API calls by endpoint as they arrive, before any latency: includes
    /// calls whose client gave up before the answer (not in `api`).
    pub api_received: BTreeMap<String, u64>,
    /// Storage PUT requests, whatever their outcome.
    pub storage_puts: u64,
    /// Storage answers by status.
    pub storage: BTreeMap<u16, u64>,
    /// Body bytes received by storage (including failed and repeated PUTs).
    pub put_bytes: u64,
    /// 401 answers (API).
    pub unauthorized: u64,
    /// 403 answers (storage: expired URL or bad signature).
    pub forbidden: u64,
    /// Faults injected, by kind (`api_5xx`, `rate_limit`, `put_5xx`, `reset_mid_body`, `corrupt_etag`).
    pub faults: BTreeMap<String, u64>,
}

impl Stats {
    /// API calls to `endpoint` answered with `status`.
    pub fn api_count(&self, endpoint: &str, status: u16) -> u64 {
        self.api.get(endpoint).and_then(|m| m.get(&status)).copied().unwrap_or(0)
    }

    /// API calls to `endpoint`, whatever the answer.
    pub fn api_total(&self, endpoint: &str) -> u64 {
        self.api.get(endpoint).map(|m| m.values().sum()).unwrap_or(0)
    }

    /// API calls to `endpoint` received, answered or not.
    pub fn api_received(&self, endpoint: &str) -> u64 {
        self.api_received.get(endpoint).copied().unwrap_or(0)
    }

    pub fn fault_count(&self, kind: &str) -> u64 {
        self.faults.get(kind).copied().unwrap_or(0)
    }
}

/// A handle to a running server; clones share it.
#[derive(Clone)]
pub struct Sandbox {
    shared: Arc<Shared>,
}

/// Everything the handlers share.
pub(crate) struct Shared {
    opts: SandboxOptions,
    api_url: String,
    storage_url: String,
    /// Per-server HMAC key for presigned URLs.
    secret: [u8; 32],
    /// Added to the wall clock; only grows.
    clock_offset: Mutex<Duration>,
    state: Mutex<State>,
    faults: Mutex<FaultState>,
    /// Next URL serial.
    url_serial: AtomicU64,
    /// URLs with a smaller serial are expired (`expire_all_urls`).
    min_serial: AtomicU64,
    stats: Mutex<Stats>,
    violations: Mutex<Vec<Violation>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// Sessions, uploads and the library.
#[derive(Default)]
pub(crate) struct State {
    sessions: HashMap<String, Session>,
    /// Session ids in creation order, for stable listings.
    order: Vec<String>,
    /// uploadId → (session id, index into its files).
    uploads: HashMap<String, (String, usize)>,
    next_library_id: u64,
    library: Vec<LibraryRecord>,
}

pub(crate) struct Session {
    id: String,
    video_name: String,
    layout: Layout,
    perspective: Option<Perspective>,
    created: Timestamp,
    expires: Timestamp,
    status: SessionStatus,
    canceled_at: Option<Timestamp>,
    library_id: Option<u64>,
    files: Vec<FileRecord>,
}

pub(crate) struct FileRecord {
    upload_id: String,
    file_name: String,
    role: FileRole,
    language: Option<String>,
    total: u64,
    part_size: u64,
    total_parts: u64,
    status: FileStatus,
    /// MD5 of each part received in full.
    parts: BTreeMap<u64, [u8; 16]>,
    object: PathBuf,
    /// Serializes PUTs to the same part.
    part_locks: HashMap<u64, Arc<tokio::sync::Mutex<()>>>,
}

impl FileRecord {
    fn single_put(&self) -> bool {
        self.total_parts == 1
    }

    fn strategy(&self) -> &'static str {
        if self.single_put() { "single_put" } else { "multipart" }
    }

    /// Parts with a PUT under way: each PUT holds a clone of its part's lock
    /// from the moment it picked its target until its last write ended.
    fn parts_in_flight(&self) -> Vec<u64> {
        let mut v: Vec<u64> =
            self.part_locks.iter().filter(|(_, l)| Arc::strong_count(l) > 1).map(|(n, _)| *n).collect();
        v.sort_unstable();
        v
    }

    /// `(byteStart, byteEnd inclusive)` of part `n` (1-based).
    fn part_range(&self, n: u64) -> (u64, u64) {
        let start = (n - 1) * self.part_size;
        let end = (n * self.part_size).min(self.total) - 1;
        (start, end)
    }
}

struct LibraryRecord {
    library_id: u64,
    session_id: String,
    video_name: String,
    layout: Layout,
    perspective: Option<Perspective>,
    files: Vec<LibraryFileRecord>,
}

struct LibraryFileRecord {
    file_name: String,
    role: FileRole,
    language: Option<String>,
    size: u64,
    path: PathBuf,
    /// Filled on first `library()` call.
    sha256: Option<String>,
}

/// Lock, ignoring poisoning: every critical section leaves the state
/// consistent before anything that could panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// ISO-8601 with milliseconds, as in the API document's examples.
pub(crate) fn iso(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Dropping this connection is how a handler resets it mid-body.
#[derive(Clone)]
pub(crate) struct ConnAbort(Arc<Notify>);

impl ConnAbort {
    pub(crate) fn abort(&self) {
        self.0.notify_one();
    }
}

impl Sandbox {
    /// Bind the API on `listen` (port 0: any free port) and the storage on
    /// another port of the same address, and serve until [`Sandbox::shutdown`].
    pub async fn start(listen: SocketAddr, opts: SandboxOptions) -> std::io::Result<Sandbox> {
        if opts.part_size == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "part size must be positive"));
        }
        std::fs::create_dir_all(opts.data_dir.join("objects"))?;
        std::fs::create_dir_all(opts.data_dir.join("library"))?;
        let api = TcpListener::bind(listen).await?;
        let storage = TcpListener::bind(SocketAddr::new(listen.ip(), 0)).await?;
        let url_of = |addr: SocketAddr| {
            let ip = if addr.ip().is_unspecified() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { addr.ip() };
            format!("http://{}", SocketAddr::new(ip, addr.port()))
        };
        let mut secret = [0u8; 32];
        rand::Rng::fill(&mut rand::rng(), &mut secret);
        let shared = Arc::new(Shared {
            api_url: url_of(api.local_addr()?),
            storage_url: url_of(storage.local_addr()?),
            opts,
            secret,
            clock_offset: Mutex::new(Duration::ZERO),
            state: Mutex::new(State { next_library_id: 1, ..State::default() }),
            faults: Mutex::new(FaultState::new(Faults::default())),
            url_serial: AtomicU64::new(1),
            min_serial: AtomicU64::new(0),
            stats: Mutex::new(Stats::default()),
            violations: Mutex::new(Vec::new()),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        shared.tasks.spawn(serve(api, api::router(shared.clone()), shared.clone()));
        shared.tasks.spawn(serve(storage, storage::router(shared.clone()), shared.clone()));
        tracing::info!(api = %shared.api_url, storage = %shared.storage_url, "sandbox listening");
        Ok(Sandbox { shared })
    }

    /// `http://IP:PORT`: the agent's `[api] endpoint`.
    pub fn base_url(&self) -> String {
        self.shared.api_url.clone()
    }

    /// `http://IP:PORT` of the storage that presigned URLs point at.
    pub fn storage_url(&self) -> String {
        self.shared.storage_url.clone()
    }

    pub fn options(&self) -> &SandboxOptions {
        &self.shared.opts
    }

    /// Replace the faults (and restart their generator from `seed`).
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.shared.faults) = FaultState::new(faults);
    }

    pub fn faults(&self) -> Faults {
        lock(&self.shared.faults).faults.clone()
    }

    /// Move the server's clock forward: groups and URLs expire by it.
    pub fn advance_clock(&self, by: Duration) {
        *lock(&self.shared.clock_offset) += by;
    }

    /// Every URL issued so far now answers 403 "Request has expired".
    pub fn expire_all_urls(&self) {
        self.shared.expire_all_urls();
    }

    pub fn violations(&self) -> Vec<Violation> {
        lock(&self.shared.violations).clone()
    }

    /// One entry per completed group, in completion order. Hashes stored
    /// files on first call (blocking; from async code prefer `spawn_blocking`).
    pub fn library(&self) -> Vec<LibraryEntry> {
        self.shared.library()
    }

    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.shared.sessions()
    }

    pub fn stats(&self) -> Stats {
        lock(&self.shared.stats).clone()
    }

    /// Stop accepting, drop open connections, and wait for every task.
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }
}

impl Shared {
    /// The server's clock.
    pub(crate) fn now(&self) -> Timestamp {
        let t = SystemTime::now() + *lock(&self.clock_offset);
        Timestamp::try_from(t).unwrap_or(Timestamp::MAX)
    }

    pub(crate) fn expire_all_urls(&self) {
        let next = self.url_serial.load(Ordering::SeqCst);
        self.min_serial.fetch_max(next, Ordering::SeqCst);
    }

    pub(crate) fn violation(&self, kind: ViolationKind, detail: String) {
        tracing::warn!(?kind, %detail, "protocol violation");
        lock(&self.violations).push(Violation { kind, detail });
    }

    pub(crate) fn count_fault(&self, fault: Fault) {
        *lock(&self.stats).faults.entry(fault.name().to_string()).or_default() += 1;
    }

    fn data_dir(&self) -> &Path {
        &self.opts.data_dir
    }

    /// Expire pending sessions whose 5 days are up (deleting their partial
    /// objects), so that every listing and lookup sees the clock's truth.
    fn expire_sessions(&self, st: &mut State) {
        let now = self.now();
        for s in st.sessions.values_mut() {
            expire_if_due(s, now);
        }
    }

    fn sessions(&self) -> Vec<SessionInfo> {
        let mut st = lock(&self.state);
        self.expire_sessions(&mut st);
        st.order
            .iter()
            .filter_map(|id| st.sessions.get(id))
            .map(|s| SessionInfo {
                id: s.id.clone(),
                video_name: s.video_name.clone(),
                layout: s.layout,
                perspective: s.perspective,
                status: s.status,
                created_at: iso(s.created),
                expires_at: iso(s.expires),
                library_id: s.library_id,
                files: s
                    .files
                    .iter()
                    .map(|f| FileInfo {
                        upload_id: f.upload_id.clone(),
                        file_name: f.file_name.clone(),
                        role: f.role,
                        language: f.language.clone(),
                        status: f.status,
                        total_bytes: f.total,
                        part_size: f.part_size,
                        total_parts: f.total_parts,
                        parts_received: f.parts.keys().copied().collect(),
                        parts_in_flight: f.parts_in_flight(),
                    })
                    .collect(),
            })
            .collect()
    }

    fn library(&self) -> Vec<LibraryEntry> {
        // Hash outside the lock: a large file takes seconds.
        let todo: Vec<PathBuf> = lock(&self.state)
            .library
            .iter()
            .flat_map(|e| e.files.iter())
            .filter(|f| f.sha256.is_none())
            .map(|f| f.path.clone())
            .collect();
        let hashed: HashMap<PathBuf, String> =
            todo.into_iter().filter_map(|p| sha256_file(&p).ok().map(|h| (p, h))).collect();
        let mut st = lock(&self.state);
        st.library
            .iter_mut()
            .map(|e| LibraryEntry {
                library_id: e.library_id,
                session_id: e.session_id.clone(),
                video_name: e.video_name.clone(),
                layout: e.layout,
                perspective: e.perspective,
                files: e
                    .files
                    .iter_mut()
                    .map(|f| {
                        if f.sha256.is_none() {
                            f.sha256 = hashed.get(&f.path).cloned();
                        }
                        LibraryFile {
                            file_name: f.file_name.clone(),
                            role: f.role,
                            language: f.language.clone(),
                            size: f.size,
                            sha256: f.sha256.clone().unwrap_or_default(),
                            path: f.path.clone(),
                        }
                    })
                    .collect(),
            })
            .collect()
    }
}

/// Flip a pending session to expired once its time is up, deleting its objects.
fn expire_if_due(s: &mut Session, now: Timestamp) {
    if s.status == SessionStatus::Pending && now >= s.expires {
        s.status = SessionStatus::Expired;
        for f in &mut s.files {
            f.status = FileStatus::Expired;
            f.parts.clear();
            let _ = std::fs::remove_file(&f.object);
        }
    }
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Accept loop for one listener: each connection is served by hyper (HTTP/1.1,
/// keep-alive) until it ends, its handler asks for a reset, or shutdown.
async fn serve(listener: TcpListener, router: Router, shared: Arc<Shared>) {
    loop {
        let stream = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let token = shared.shutdown.clone();
        shared.tasks.spawn(async move {
            let abort = ConnAbort(Arc::new(Notify::new()));
            let handle = abort.clone();
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let mut req = req.map(Body::new);
                req.extensions_mut().insert(handle.clone());
                let mut router = router.clone();
                async move { Ok::<_, Infallible>(router.call(req).await.into_response()) }
            });
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                // Dropping the connection closes the socket with unread data in
                // it, which the kernel answers with a reset.
                _ = abort.0.notified() => {}
                _ = token.cancelled() => {}
            }
        });
    }
}
