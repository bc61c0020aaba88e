//! A private PostgreSQL server for tests, benchmarks and trials of a fleet:
//! Debian's `postgresql` binaries (`/usr/lib/postgresql/*/bin`, or
//! `pg_config --bindir`), a cluster made by `initdb` in a temporary folder
//! (as the `postgres` user when run as root, since the server refuses root),
//! listening on a free loopback port with password authentication.
//!
//! [`PgServer::start`] makes one the caller owns (stopped on drop, and
//! killed with this process: the server gets `SIGKILL` when the thread
//! that started it ends, so start it from a thread that lives as long as
//! it should). [`shared`] is one per process for a test suite: the server
//! named by `SPATIALGEN_TEST_POSTGRES` (an admin URL, as `.ci/run` exports
//! it) or else a private one; each test gets a database of its own from
//! [`SharedPg::database`].

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The superuser's password in a private cluster.
pub const PASSWORD: &str = "sandbox-pg-password";

/// A private PostgreSQL server.
#[derive(Debug)]
pub struct PgServer {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// The uid/gid the server runs as (root cannot run it).
    owner: Option<(u32, u32)>,
    child: Mutex<Option<Child>>,
    _dir: tempfile::TempDir,
}

/// Where the PostgreSQL server binaries are.
pub fn find_bindir() -> Result<PathBuf, String> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).filter(|b| b.join("initdb").exists()).collect())
        .unwrap_or_default();
    // The newest version first (directory names are major versions).
    found.sort_by_key(|p| {
        std::cmp::Reverse(
            p.parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0),
        )
    });
    if let Some(b) = found.into_iter().next() {
        return Ok(b);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let b = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if b.join("initdb").exists() {
            return Ok(b);
        }
    }
    Err("no PostgreSQL server binaries: install Debian's postgresql package (apt-get install postgresql); \
         looked in /usr/lib/postgresql/*/bin and pg_config --bindir"
        .into())
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).map_err(|e| e.to_string())
}

#[cfg(unix)]
fn postgres_owner() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions; getpwnam returns null or a
    // pointer to a static record, read at once.
    unsafe {
        if libc::geteuid() != 0 {
            return None;
        }
        let pw = libc::getpwnam(c"postgres".as_ptr());
        if pw.is_null() { None } else { Some(((*pw).pw_uid, (*pw).pw_gid)) }
    }
}

#[cfg(not(unix))]
fn postgres_owner() -> Option<(u32, u32)> {
    None
}

impl PgServer {
    /// The server `SPATIALGEN_TEST_POSTGRES` names, or else a private one
    /// started now: its admin URL, and the private server (stopped when
    /// dropped; keep it as long as the URL is used).
    pub fn named_or_private() -> Result<(String, Option<PgServer>), String> {
        match std::env::var("SPATIALGEN_TEST_POSTGRES") {
            Ok(url) if !url.is_empty() => Ok((url, None)),
            _ => {
                let server = PgServer::start()?;
                Ok((server.admin_url(), Some(server)))
            }
        }
    }

    /// Make a cluster and start it; wait until it accepts connections.
    pub fn start() -> Result<PgServer, String> {
        let bin = find_bindir()?;
        let owner = postgres_owner();
        let dir = tempfile::Builder::new().prefix("spatialgen-sync-pg-").tempdir().map_err(|e| e.to_string())?;
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).map_err(|e| e.to_string())?;
        #[cfg(unix)]
        if let Some((uid, gid)) = owner {
            for p in [dir.path(), pwfile.as_path()] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).map_err(|e| format!("chown {}: {e}", p.display()))?;
            }
        }
        let mut init = Command::new(bin.join("initdb"));
        init.arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_owner(&mut init, owner);
        let out = init.output().map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let server = PgServer { bin, data, port: free_port()?, owner, child: Mutex::new(None), _dir: dir };
        server.run()?;
        Ok(server)
    }

    /// Start the server process on the cluster (again, after [`PgServer::kill`]).
    pub fn run(&self) -> Result<(), String> {
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(&self.data)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.data)
            // fsync off: the machine does not crash in a test, the process
            // may; a commit is written (to the page cache) before it is
            // acknowledged, so a killed server loses nothing it acknowledged.
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=300", "-c", "shared_buffers=32MB"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        as_owner(&mut cmd, self.owner);
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().map_err(|e| format!("postgres: {e}"))?;
        *self.child.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
        self.wait_ready(Duration::from_secs(30))
    }

    fn wait_ready(&self, within: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            match admin(&self.admin_url(), "SELECT 1") {
                Ok(_) => return Ok(()),
                Err(e) if start.elapsed() > within => return Err(format!("the test server did not start: {e}")),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Kill the server at once (as a crash or a power cut would), keeping
    /// its data: [`PgServer::run`] starts it again on the same port.
    pub fn kill(&self) {
        if let Some(mut c) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() {
            #[cfg(unix)]
            // SAFETY: signalling our own child by pid.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGKILL);
            }
            let _ = c.wait();
            // Backends notice the postmaster is gone and exit; wait until
            // the port is free so the restart can bind it.
            let start = Instant::now();
            while TcpListener::bind(("127.0.0.1", self.port)).is_err() && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = std::fs::remove_file(self.data.join("postmaster.pid"));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's URL for database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgresql://postgres:{PASSWORD}@127.0.0.1:{}/{db}?sslmode=disable", self.port)
    }

    pub fn admin_url(&self) -> String {
        self.url("postgres")
    }

    /// A new empty database `name`; its URL.
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        create_database(&self.admin_url(), name)
    }
}

/// A new empty database `name` on the server whose superuser URL is
/// `admin_url`; the new database's URL.
pub fn create_database(admin_url: &str, name: &str) -> Result<String, String> {
    admin(admin_url, &format!("CREATE DATABASE {name}"))?;
    Ok(with_database(admin_url, name))
}

/// Run `sql` as the superuser at `url`, on a thread of its own (the
/// `postgres` client cannot block a thread that drives an async runtime,
/// and tests call this from async code).
fn admin(url: &str, sql: &str) -> Result<(), String> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut c = postgres::Client::connect(url, postgres::NoTls).map_err(|e| format!("{e:?}"))?;
            c.batch_execute(sql).map_err(|e| format!("{sql}: {e:?}"))
        })
        .join()
        .unwrap_or_else(|_| Err("the admin connection panicked".into()))
    })
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Run `cmd` as `owner` (from `/tmp`, a folder it can enter).
#[cfg(unix)]
fn as_owner(cmd: &mut Command, owner: Option<(u32, u32)>) {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid).env("HOME", "/tmp").current_dir("/tmp");
    }
}

#[cfg(not(unix))]
fn as_owner(_cmd: &mut Command, _owner: Option<(u32, u32)>) {}

/// One server for a whole test run, and a database per test.
#[derive(Debug)]
pub struct SharedPg {
    admin: String,
    run: u128,
    next: AtomicU64,
}

/// The process's shared server: `SPATIALGEN_TEST_POSTGRES` if set, else a
/// private one started on a thread that lives as long as the process.
/// Panics with what to install when neither is possible: a fleet test is
/// never skipped.
pub fn shared() -> &'static SharedPg {
    static SHARED: OnceLock<SharedPg> = OnceLock::new();
    SHARED.get_or_init(|| {
        let admin = match std::env::var("SPATIALGEN_TEST_POSTGRES") {
            Ok(url) if !url.trim().is_empty() => url,
            _ => {
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::Builder::new()
                    .name("test-postgres".into())
                    .spawn(move || match PgServer::start() {
                        Ok(server) => {
                            let _ = tx.send(Ok(server.admin_url()));
                            // The server lives (and dies) with this thread.
                            loop {
                                std::thread::park();
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    })
                    .unwrap_or_else(|e| panic!("cannot start the test PostgreSQL thread: {e}"));
                match rx.recv() {
                    Ok(Ok(url)) => url,
                    Ok(Err(e)) => panic!("PostgreSQL for the fleet tests: {e}"),
                    Err(_) => panic!("PostgreSQL for the fleet tests: the server thread ended"),
                }
            }
        };
        // Process ids repeat (under Wine every run is a small pid) and test
        // databases are left behind: the start time keeps names apart.
        let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        SharedPg { admin, run, next: AtomicU64::new(0) }
    })
}

impl SharedPg {
    /// A new empty database; its URL (with the password, `sslmode=disable`).
    pub fn database(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!("t{}_{}_{n}", std::process::id(), self.run);
        create_database(&self.admin, &name)
            .unwrap_or_else(|e| panic!("test PostgreSQL at {}: {e}", redact(&self.admin)))
    }
}

/// `admin` with its database replaced by `db`.
pub fn with_database(admin: &str, db: &str) -> String {
    match reqwest::Url::parse(admin) {
        Ok(mut u) => {
            u.set_path(&format!("/{db}"));
            u.to_string()
        }
        Err(_) => admin.to_string(),
    }
}

fn redact(url: &str) -> String {
    crate::config::DatabaseUrl::new(url).redacted()
}
