//! The server's state, shared by the API and storage handlers: options,
//! URL signing secret and serials, the clock, faults, counters, recorded
//! violations, and behind one mutex (the [`Registry`]) the sessions, their
//! files and the library. Also the views of it the [`super::Sandbox`]
//! handle returns.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use jiff::Timestamp;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::model::{FileRole, Layout, Perspective};

use super::SandboxOptions;
use super::faults::{Fault, FaultState};
use super::records::{
    Call, ContractViolation, ContractViolationKind, FileInfo, FileStatus, LibraryEntry, LibraryFile, SessionInfo,
    SessionStatus,
};
use super::stats::Stats;

/// Everything the handlers share.
pub(crate) struct ServerState {
    pub(super) opts: SandboxOptions,
    pub(super) api_url: String,
    pub(super) storage_url: String,
    /// Per-server HMAC key for presigned URLs.
    pub(super) secret: [u8; 32],
    /// Added to the wall clock; only grows.
    pub(super) clock_offset: Mutex<Duration>,
    /// Sessions, uploads and the library, behind the one mutex.
    pub(super) registry: Mutex<Registry>,
    pub(super) faults: Mutex<FaultState>,
    /// Next URL serial.
    pub(super) url_serial: AtomicU64,
    /// URLs with a smaller serial are expired (`expire_all_urls`).
    pub(super) min_serial: AtomicU64,
    pub(super) stats: Mutex<Stats>,
    pub(super) violations: Mutex<Vec<ContractViolation>>,
    pub(super) calls: Mutex<CallLog>,
    pub(super) shutdown: CancellationToken,
    pub(super) tasks: TaskTracker,
}

/// Sessions, uploads and the library.
#[derive(Default)]
pub(crate) struct Registry {
    pub(super) sessions: HashMap<String, Session>,
    /// Session ids in creation order, for stable listings.
    pub(super) order: Vec<String>,
    /// uploadId → (session id, index into its files).
    pub(super) uploads: HashMap<String, (String, usize)>,
    pub(super) next_library_id: u64,
    pub(super) library: Vec<LibraryRecord>,
}

pub(crate) struct Session {
    pub(super) id: String,
    pub(super) video_name: String,
    pub(super) layout: Layout,
    pub(super) perspective: Option<Perspective>,
    pub(super) created: Timestamp,
    pub(super) expires: Timestamp,
    pub(super) status: SessionStatus,
    pub(super) canceled_at: Option<Timestamp>,
    pub(super) library_id: Option<u64>,
    pub(super) files: Vec<StoredFile>,
}

pub(crate) struct StoredFile {
    pub(super) upload_id: String,
    pub(super) file_name: String,
    pub(super) role: FileRole,
    pub(super) language: Option<String>,
    pub(super) total: u64,
    pub(super) part_size: u64,
    pub(super) total_parts: u64,
    pub(super) status: FileStatus,
    /// MD5 of each part received in full.
    pub(super) parts: BTreeMap<u64, [u8; 16]>,
    pub(super) object: PathBuf,
    /// Serializes PUTs to the same part.
    pub(super) part_locks: HashMap<u64, Arc<tokio::sync::Mutex<()>>>,
}

impl StoredFile {
    pub(super) fn single_put(&self) -> bool {
        self.total_parts == 1
    }

    pub(super) fn strategy(&self) -> &'static str {
        if self.single_put() { "single_put" } else { "multipart" }
    }

    /// Parts with a PUT under way: each PUT holds a clone of its part's lock
    /// from the moment it picked its target until its last write ended.
    pub(super) fn parts_in_flight(&self) -> Vec<u64> {
        let mut v: Vec<u64> =
            self.part_locks.iter().filter(|(_, l)| Arc::strong_count(l) > 1).map(|(n, _)| *n).collect();
        v.sort_unstable();
        v
    }

    /// `(byteStart, byteEnd inclusive)` of part `n` (1-based).
    pub(super) fn part_range(&self, n: u64) -> (u64, u64) {
        let start = (n - 1) * self.part_size;
        let end = (n * self.part_size).min(self.total) - 1;
        (start, end)
    }
}

pub(crate) struct LibraryRecord {
    pub(super) library_id: u64,
    pub(super) session_id: String,
    pub(super) video_name: String,
    pub(super) layout: Layout,
    pub(super) perspective: Option<Perspective>,
    pub(super) files: Vec<LibraryFileRecord>,
}

pub(crate) struct LibraryFileRecord {
    pub(super) file_name: String,
    pub(super) role: FileRole,
    pub(super) language: Option<String>,
    pub(super) size: u64,
    pub(super) path: PathBuf,
    /// Filled on first `library()` call.
    pub(super) sha256: Option<String>,
}

/// The calls the log keeps (the latest); about 150 bytes each.
pub(crate) const MAX_CALLS: usize = 1 << 17;

/// URL serials whose issuing key the log keeps (the latest); 16 bytes each.
pub(crate) const MAX_URL_KEYS: usize = 1 << 20;

/// Every API call and storage PUT as it arrived, and which key each URL
/// serial was issued to (so a PUT is attributed to the node that asked
/// for its URL, without anything new in the URL). Both bounded: the oldest
/// entries go first.
#[derive(Default)]
pub(crate) struct CallLog {
    calls: VecDeque<Call>,
    /// Calls dropped from the front so far: a call's number minus this is
    /// its index.
    dropped: u64,
    /// The key of serial `first_serial + i` at index `i`.
    url_keys: VecDeque<Arc<str>>,
    first_serial: u64,
}

impl CallLog {
    /// Record a call now; returns its number (for [`CallLog::set_session`]).
    pub(super) fn record(&mut self, caller: &str, endpoint: &'static str, session: Option<String>) -> u64 {
        let n = self.dropped + self.calls.len() as u64;
        self.calls.push_back(Call { at: Instant::now(), caller: caller.to_string(), endpoint, session });
        if self.calls.len() > MAX_CALLS {
            self.calls.pop_front();
            self.dropped += 1;
        }
        n
    }

    /// The session call `n` turned out to be for (a `start` that created it).
    pub(super) fn set_session(&mut self, n: u64, session: &str) {
        let i = n.checked_sub(self.dropped).and_then(|i| usize::try_from(i).ok());
        if let Some(call) = i.and_then(|i| self.calls.get_mut(i)) {
            call.session = Some(session.to_string());
        }
    }

    pub(super) fn calls(&self) -> Vec<Call> {
        self.calls.iter().cloned().collect()
    }

    /// Take the next URL serial from `next` for a URL issued to `caller`.
    /// Serials are taken only here, under the log's lock, so they follow
    /// one another in `url_keys`.
    pub(super) fn issue_serial(&mut self, next: &AtomicU64, caller: &Arc<str>) -> u64 {
        let serial = next.fetch_add(1, Ordering::SeqCst);
        if self.url_keys.is_empty() {
            self.first_serial = serial;
        }
        self.url_keys.push_back(caller.clone());
        if self.url_keys.len() > MAX_URL_KEYS {
            self.url_keys.pop_front();
            self.first_serial += 1;
        }
        serial
    }

    /// The key URL `serial` was issued to, if the log still knows.
    pub(super) fn url_caller(&self, serial: u64) -> Option<&str> {
        let i = usize::try_from(serial.checked_sub(self.first_serial)?).ok()?;
        self.url_keys.get(i).map(|k| &**k)
    }
}

/// Lock, ignoring poisoning: every critical section leaves the state
/// consistent before anything that could panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// ISO-8601 with milliseconds, as in the API document's examples.
pub(crate) fn iso(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

impl ServerState {
    /// The server's clock.
    pub(crate) fn now(&self) -> Timestamp {
        let t = SystemTime::now() + *lock(&self.clock_offset);
        Timestamp::try_from(t).unwrap_or(Timestamp::MAX)
    }

    pub(crate) fn expire_all_urls(&self) {
        let next = self.url_serial.load(Ordering::SeqCst);
        self.min_serial.fetch_max(next, Ordering::SeqCst);
    }

    pub(crate) fn violation(&self, kind: ContractViolationKind, detail: String) {
        tracing::warn!(?kind, %detail, "protocol violation");
        lock(&self.violations).push(ContractViolation { kind, detail });
    }

    pub(crate) fn count_fault(&self, fault: Fault) {
        *lock(&self.stats).faults.entry(fault.name().to_string()).or_default() += 1;
    }

    pub(super) fn data_dir(&self) -> &Path {
        &self.opts.data_dir
    }

    /// Expire pending sessions whose 5 days are up (deleting their partial
    /// objects), so that every listing and lookup sees the clock's truth.
    pub(super) fn expire_sessions(&self, st: &mut Registry) {
        let now = self.now();
        for s in st.sessions.values_mut() {
            expire_if_due(s, now);
        }
    }

    pub(super) fn sessions(&self) -> Vec<SessionInfo> {
        let mut st = lock(&self.registry);
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

    pub(super) fn library(&self) -> Vec<LibraryEntry> {
        // Hash outside the lock: a large file takes seconds.
        let todo: Vec<PathBuf> = lock(&self.registry)
            .library
            .iter()
            .flat_map(|e| e.files.iter())
            .filter(|f| f.sha256.is_none())
            .map(|f| f.path.clone())
            .collect();
        let hashed: HashMap<PathBuf, String> =
            todo.into_iter().filter_map(|p| sha256_file(&p).ok().map(|h| (p, h))).collect();
        let mut st = lock(&self.registry);
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
pub(crate) fn expire_if_due(s: &mut Session, now: Timestamp) {
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
