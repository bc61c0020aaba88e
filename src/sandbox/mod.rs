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
//! # Files
//! - `mod.rs`: options, the [`Sandbox`] handle (start, admin calls,
//!   shutdown) and the accept loop.
//! - `state`: what the handlers share (`ServerState`) and, behind its one
//!   mutex, the `Registry` of sessions, their stored files and the library;
//!   expiry; the views the handle returns.
//! - `api`, `storage`: the two routers; `admin`: the `/_sandbox/`
//!   endpoints; `validate`: Start Upload Group's rules; `faults`: fault
//!   injection.
//! - `records`: the public views (statuses, sessions, library entries,
//!   [`ContractViolation`]); `stats`: [`Stats`]; `error`: [`SandboxError`].
//! - `tests.rs`: the server under test over loopback.
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
//!   every serial issued so far expired, and nothing else. The server
//!   remembers which key each serial was issued to: the call log
//!   ([`Sandbox::calls`]) names the node behind every PUT.
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

mod admin;
mod api;
mod error;
mod faults;
pub mod postgres;
mod records;
mod state;
mod stats;
mod storage;
mod validate;

#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

pub use error::SandboxError;
pub use faults::Faults;
pub use records::{
    Call, ContractViolation, ContractViolationKind, FileInfo, FileStatus, LibraryEntry, LibraryFile, SessionInfo,
    SessionStatus,
};
pub use stats::Stats;
pub use validate::validate_start_request;

use faults::FaultState;
use state::{CallLog, Registry, ServerState, lock};

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
    /// The key accepted; `None` accepts any non-empty key.
    pub api_key: Option<String>,
    /// More keys accepted beside `api_key` (say one per node of a fleet, so
    /// that [`Sandbox::calls`] tells the nodes apart); moot when `api_key`
    /// is `None`.
    pub extra_keys: Vec<String>,
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
            .field("extra_keys", &format_args!("<{} redacted>", self.extra_keys.len()))
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
            extra_keys: Vec::new(),
            data_dir: data_dir.into(),
            url_ttl: Duration::from_secs(3600),
        }
    }
}

/// A handle to a running server; clones share it.
#[derive(Clone)]
pub struct Sandbox {
    shared: Arc<ServerState>,
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
        let shared = Arc::new(ServerState {
            api_url: url_of(api.local_addr()?),
            storage_url: url_of(storage.local_addr()?),
            opts,
            secret,
            clock_offset: Mutex::new(Duration::ZERO),
            registry: Mutex::new(Registry { next_library_id: 1, ..Registry::default() }),
            faults: Mutex::new(FaultState::new(Faults::default())),
            url_serial: AtomicU64::new(1),
            min_serial: AtomicU64::new(0),
            stats: Mutex::new(Stats::default()),
            violations: Mutex::new(Vec::new()),
            calls: Mutex::new(CallLog::default()),
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

    pub fn violations(&self) -> Vec<ContractViolation> {
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

    /// Every API call and storage PUT in the order they arrived (the latest
    /// 131,072): who made it, for which group, when. See [`Call`].
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.shared.calls).calls()
    }

    /// Stop accepting, drop open connections, and wait for every task.
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }
}

/// Accept loop for one listener: each connection is served by hyper (HTTP/1.1,
/// keep-alive) until it ends, its handler asks for a reset, or shutdown.
async fn serve(listener: TcpListener, router: Router, shared: Arc<ServerState>) {
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
