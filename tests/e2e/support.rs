//! Temp folders, a sandbox, configs, generated exports, bounded waits.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use spatialgen_sync::config::{ApiKey, Config};
use spatialgen_sync::group::{GroupOptions, UploadGroup, build_folder_group};
use spatialgen_sync::journal::prelude::*;
use spatialgen_sync::journal::{Enqueued, GroupId, Journal};
use spatialgen_sync::sandbox::{Sandbox, SandboxOptions};
use spatialgen_sync::upload::{Engine, EngineOptions};

/// The key the sandbox accepts in these tests.
pub const KEY: &str = "test-key-0123";

/// One test's world: a temp folder with an export area, a journal, a config,
/// and a sandbox server on 127.0.0.1.
pub struct World {
    pub dir: tempfile::TempDir,
    pub sandbox: Sandbox,
    pub exports: PathBuf,
    pub config_path: PathBuf,
    pub journal_path: PathBuf,
}

impl World {
    /// A sandbox with `part_size` and key [`KEY`], and a config whose
    /// `[upload]` table gets `upload_extra` lines on top of fast retries.
    pub async fn new(part_size: u64, upload_extra: &str) -> World {
        World::with_sandbox(part_size, upload_extra, |_| {}).await
    }

    /// [`World::new`] whose sandbox options are then changed by `edit`
    /// (say, more keys accepted).
    pub async fn with_sandbox(part_size: u64, upload_extra: &str, edit: impl FnOnce(&mut SandboxOptions)) -> World {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut opts = SandboxOptions::new(dir.path().join("sandbox"));
        opts.part_size = part_size;
        opts.api_key = Some(KEY.to_string());
        edit(&mut opts);
        let sandbox = Sandbox::start("127.0.0.1:0".parse().unwrap(), opts).await.expect("sandbox starts");
        let exports = dir.path().join("exports");
        std::fs::create_dir_all(&exports).unwrap();
        let journal_path = dir.path().join("state/journal.sqlite3");
        let config_path = dir.path().join("agent.toml");
        let w = World { dir, sandbox, exports, config_path, journal_path };
        w.write_config(upload_extra, "");
        w
    }

    /// (Re)write the config; `extra_tables` is appended (e.g. `[[watch]]`).
    pub fn write_config(&self, upload_extra: &str, extra_tables: &str) {
        let attempts = if upload_extra.contains("retry_attempts") { "" } else { "retry_attempts = 30\n" };
        let text = format!(
            "[api]\nendpoint = \"{}\"\napi_key_env = \"E2E_SPATIALGEN_KEY\"\nrequest_timeout = \"10s\"\nstall_timeout = \"10s\"\n\n\
             [journal]\npath = \"{}\"\n\n\
             [upload]\nretry_base = \"20ms\"\nretry_cap = \"200ms\"\n{attempts}shutdown_grace = \"2s\"\n{upload_extra}\n\n\
             {extra_tables}\n",
            self.sandbox.base_url(),
            self.journal_path.display(),
        );
        std::fs::write(&self.config_path, text).unwrap();
    }

    pub fn config(&self) -> Arc<Config> {
        Arc::new(Config::load(&self.config_path).expect("test config is valid"))
    }

    pub fn journal(&self) -> Arc<Journal> {
        Arc::new(Journal::open(&self.journal_path).expect("journal opens"))
    }

    /// An export folder `name` with files of the given names and sizes:
    /// videos and audio are real containers of exactly that size
    /// ([`container_for`]), other files pseudo-random bytes; the data is
    /// derived from the file name.
    pub fn export(&self, name: &str, files: &[(&str, usize)]) -> PathBuf {
        let folder = self.exports.join(name);
        std::fs::create_dir_all(&folder).unwrap();
        for (file, size) in files {
            let path = folder.join(file);
            if let Some(p) = path.parent() {
                std::fs::create_dir_all(p).unwrap();
            }
            let seed = format!("{name}/{file}");
            let bytes = container_for(file, &seed, *size).unwrap_or_else(|| bytes_for(&seed, *size));
            std::fs::write(&path, bytes).unwrap();
        }
        folder
    }

    /// Group a folder the way `upload` does, with a fixed layout and perspective.
    pub fn group(&self, folder: &Path, layout: &str, perspective: &str) -> UploadGroup {
        let mut watch = spatialgen_sync::config::WatchConfig::new(&self.exports);
        watch.layout = layout.parse().unwrap();
        watch.perspective = Some(perspective.parse().unwrap());
        let staging = self.dir.path().join("state/staging");
        let g = build_folder_group(folder, &GroupOptions { watch: &watch, staging_dir: Some(&staging), matcher: None })
            .unwrap();
        assert!(g.violations.is_empty(), "{:?}", g.violations);
        g
    }

    pub fn enqueue(&self, journal: &Journal, group: &UploadGroup) -> GroupId {
        match journal.enqueue(group).unwrap() {
            Enqueued::Queued(id) => id,
            other => panic!("not queued: {other:?}"),
        }
    }

    pub fn engine(&self, journal: Arc<Journal>, key: &str, opts: EngineOptions) -> Engine {
        Engine::new(self.config(), journal, ApiKey::new(key), opts).expect("engine builds")
    }

    /// `spatialgen-sync` with the test's key in its environment.
    pub fn command(&self, key: &str) -> std::process::Command {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_spatialgen-sync"));
        c.env("E2E_SPATIALGEN_KEY", key).env("SPATIALGEN_LOG", "info").env_remove("SPATIALGEN_SYNC_CONFIG");
        c
    }
}

/// Fast engine options for tests.
pub fn fast() -> EngineOptions {
    EngineOptions {
        poll: Duration::from_millis(50),
        auth_recheck: Duration::from_secs(3600),
        housekeeping: Duration::from_secs(3600),
        session_backoff: Duration::from_millis(200),
        ..EngineOptions::default()
    }
}

/// A real container for a file the media check looks into, of exactly
/// `size` bytes, its sample data `bytes_for(seed, …)`: what
/// `synth::spec_for_name` says for the name (AAC audio, an HEVC eye, or
/// MV-HEVC stereo). `None` for other names.
///
/// # Panics
/// When `size` cannot hold the container's boxes (about a kilobyte).
pub fn container_for(name: &str, seed: &str, size: usize) -> Option<Vec<u8>> {
    use spatialgen_sync::media::synth::{self, Spec};
    let base = synth::spec_for_name(name)?;
    // The boxes' size depends a little on the payload (uniform sample
    // sizes or a table): settle on the payload that makes `size` exactly.
    let mut payload = 1024u64;
    for _ in 0..4 {
        let p = synth::parts(&Spec { payload, ..base.clone() });
        let boxes = (p.head.len() + p.tail.len()) as u64;
        assert!(
            size as u64 >= boxes + 8,
            "{name}: {size} bytes cannot hold a container ({boxes} bytes of boxes); give it more bytes"
        );
        payload = size as u64 - boxes;
    }
    let p = synth::parts(&Spec { payload, ..base });
    let mut out = p.head;
    out.extend(bytes_for(seed, p.payload as usize));
    out.extend(p.tail);
    assert_eq!(out.len(), size, "{name}: the container's size");
    Some(out)
}

/// Deterministic pseudo-random bytes (xorshift seeded from `seed`).
pub fn bytes_for(seed: &str, size: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in seed.bytes() {
        x = (x ^ u64::from(b)).wrapping_mul(0x100_0000_01B3);
    }
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(size);
    out
}

pub fn sha256_file(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

/// Every library entry's files match the sources in `folder` byte for byte.
pub fn assert_library_matches(sandbox: &Sandbox, session: &str, folder: &Path) {
    let lib = sandbox.library();
    let entry =
        lib.iter().find(|e| e.session_id == session).unwrap_or_else(|| panic!("no library entry for {session}"));
    for f in &entry.files {
        let src = find_source(folder, &f.file_name);
        assert_eq!(f.sha256, sha256_file(&src), "{} differs from {}", f.file_name, src.display());
        assert_eq!(f.size, std::fs::metadata(&src).unwrap().len());
    }
}

fn find_source(folder: &Path, name: &str) -> PathBuf {
    let direct = folder.join(name);
    if direct.exists() {
        return direct;
    }
    for e in walk(folder) {
        if e.file_name().is_some_and(|n| n == name) {
            return e;
        }
    }
    panic!("{name} not under {}", folder.display())
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap().path();
        if e.is_dir() { out.extend(walk(&e)) } else { out.push(e) }
    }
    out
}

/// Poll `cond` every 20 ms until it holds or `limit` passes (then panic with `what`).
pub async fn wait_for(limit: Duration, what: &str, cond: impl FnMut() -> bool) {
    wait_for_then(limit, cond, || what.to_string()).await;
}

/// [`wait_for`] whose panic message is built only on timeout (to show the
/// state at that moment, e.g. a process's output).
pub async fn wait_for_then(limit: Duration, mut cond: impl FnMut() -> bool, what: impl FnOnce() -> String) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() >= limit {
            panic!("timed out after {limit:?} waiting for {}", what());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Blocking variant for code outside async.
pub fn wait_for_blocking(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Output of one run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl World {
    /// A second config beside the first, with its own journal (for a
    /// separate agent process against the same sandbox).
    pub fn config_with_journal(&self, name: &str, upload_extra: &str) -> (PathBuf, PathBuf) {
        let journal = self.dir.path().join(format!("state-{name}/journal.sqlite3"));
        let config = self.dir.path().join(format!("agent-{name}.toml"));
        let text = format!(
            "[api]\nendpoint = \"{}\"\napi_key_env = \"E2E_SPATIALGEN_KEY\"\n\n[journal]\npath = \"{}\"\n\n\
             [upload]\nretry_base = \"20ms\"\nretry_cap = \"200ms\"\nretry_attempts = 30\n{upload_extra}\n",
            self.sandbox.base_url(),
            journal.display(),
        );
        std::fs::write(&config, text).unwrap();
        (config, journal)
    }

    /// Run `spatialgen-sync ARGS` to its end (async, so the in-process sandbox keeps serving).
    pub async fn run(&self, key: &str, args: &[&str]) -> Run {
        let out = tokio::process::Command::from(self.command(key)).args(args).output().await.expect("binary runs");
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Log lines of this test process (every test shares one subscriber; look
/// for lines only your test can produce).
pub fn captured_logs() -> Arc<std::sync::Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = {
            let buf = buf.clone();
            move || LogWriter(buf.clone())
        };
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("spatialgen_sync=info"))
            .with_ansi(false)
            .with_writer(writer)
            .try_init();
        buf
    })
    .clone()
}

struct LogWriter(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Run `engine` on its own task until the returned token is cancelled.
pub fn spawn_engine(
    engine: Engine,
) -> (tokio_util::sync::CancellationToken, tokio::task::JoinHandle<Result<(), spatialgen_sync::upload::EngineError>>) {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let s = shutdown.clone();
    (shutdown, tokio::spawn(async move { engine.run(s).await }))
}
