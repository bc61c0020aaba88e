//! Test support for read errors for real: a test that needs every open to
//! fail with EMFILE runs again as a child process of its own, where it may
//! lower its own descriptor limit without touching the tests running beside
//! it.

const SIEGE_CHILD: &str = "SPATIALGEN_WATCH_SIEGE_CHILD";

/// `true` in the child, which then runs the test's body. In the parent,
/// runs test `name` (its full path) again as a child process of its own
/// with one test thread, where it may lower its own descriptor limit
/// without touching the tests running beside it here, and asserts that the
/// child passed; then `false`.
pub(crate) fn siege_child(name: &str) -> bool {
    if std::env::var_os(SIEGE_CHILD).is_some() {
        return true;
    }
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(SIEGE_CHILD, "1")
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name}: {}\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("siege-child-ok"), "{name} did not run: {stdout}\n{stderr}");
    false
}

/// This process's descriptor limit lowered to what is open now plus
/// `spare`: past those, every open fails with EMFILE. Restored on drop.
/// Only in a child of [`siege_child`].
pub(crate) struct Starved(libc::rlimit);

impl Starved {
    pub(crate) fn now(spare: u64) -> Starved {
        use std::os::fd::AsRawFd;
        assert!(std::env::var_os(SIEGE_CHILD).is_some(), "only in a child process of its own");
        let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes into the struct passed.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) }, 0);
        // Descriptors are handed out lowest first: with the limit at the
        // lowest free one, nothing more opens.
        let lowest = std::fs::File::open("/dev/null").expect("a descriptor is free").as_raw_fd() as u64;
        let starved = libc::rlimit { rlim_cur: lowest + spare, rlim_max: old.rlim_max };
        // SAFETY: setrlimit reads the struct passed.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &starved) }, 0);
        Starved(old)
    }
}

impl Drop for Starved {
    fn drop(&mut self) {
        // SAFETY: setrlimit reads the struct passed.
        let restored = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &self.0) };
        assert_eq!(restored, 0, "the descriptor limit is restored");
    }
}
