//! The open-file limit: how many descriptors a config needs, and raising
//! the soft limit to the hard one when the agent starts (as Go programs
//! and Syncthing do), so systemd's default soft limit of 1,024 does not
//! decide how many watch folders and console clients the agent can serve.

use crate::config::Config;

/// A rough count of the descriptors `cfg` may hold at once: the runtime,
/// journal and logs; every console connection; a socket and a file per
/// part in flight; the watcher's walk of each folder; a fleet's database
/// connections; and room for hooks.
pub fn needed(cfg: &Config) -> u64 {
    let base = 64;
    let console = if cfg.http_listen().is_some() { cfg.http_max_connections() } else { 0 };
    let parts = 2 * cfg.upload.max_groups.saturating_mul(cfg.upload.max_parts_in_flight);
    let watch = 16 * cfg.watch.len();
    let database = if cfg.journal.url.is_some() { 8 } else { 0 };
    [base, console, parts, watch, database].iter().map(|&n| n as u64).fold(0u64, u64::saturating_add)
}

/// The soft and hard limits of this process, where there are such.
#[cfg(unix)]
pub fn limits() -> Option<(u64, u64)> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return None;
    }
    Some((r.rlim_cur, r.rlim_max))
}

#[cfg(not(unix))]
pub fn limits() -> Option<(u64, u64)> {
    None
}

/// Raise the soft limit to the hard one (on macOS at most `OPEN_MAX`, which
/// its `setrlimit` enforces). The limits before and after, when it rose.
#[cfg(unix)]
pub fn raise_soft_limit() -> Option<(u64, u64)> {
    let (soft, hard) = limits()?;
    let target = if cfg!(target_os = "macos") { hard.min(10_240) } else { hard };
    if soft >= target {
        return None;
    }
    let r = libc::rlimit { rlim_cur: target as libc::rlim_t, rlim_max: hard as libc::rlim_t };
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
        return None;
    }
    Some((soft, target))
}

#[cfg(not(unix))]
pub fn raise_soft_limit() -> Option<(u64, u64)> {
    None
}

/// A warning when a soft limit of `soft` (hard `hard`) is below what `cfg`
/// needs, saying whether `run` lifts it itself.
pub fn warning(cfg: &Config, soft: u64, hard: u64) -> Option<String> {
    let need = needed(cfg);
    if soft >= need {
        return None;
    }
    let what = format!(
        "the open-file limit is {soft} (soft); this config may need about {need} ({} watch folder(s), \
         max_connections {}, {} part(s) in flight)",
        cfg.watch.len(),
        cfg.http_max_connections(),
        cfg.upload.max_groups.saturating_mul(cfg.upload.max_parts_in_flight),
    );
    Some(if hard >= need {
        format!("{what}; `run` raises its soft limit to the hard limit ({hard}) itself")
    } else {
        format!(
            "{what}, and the hard limit is {hard}: raise it (systemd: LimitNOFILE=65536 in the unit; \
             Docker: --ulimit nofile=65536:65536; a shell: ulimit -Hn 65536)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        Config::parse(text, std::path::Path::new("/etc/sgs/config.toml")).unwrap()
    }

    #[test]
    fn the_need_grows_with_watch_folders_connections_and_parts() {
        let small = cfg("[[watch]]\npath = \"/a\"\n");
        let n = needed(&small);
        let more = cfg("[[watch]]\npath = \"/a\"\n[[watch]]\npath = \"/b\"\n");
        assert_eq!(needed(&more), n + 16);
        let http = cfg("[[watch]]\npath = \"/a\"\n[http]\nmax_connections = 500\n");
        assert_eq!(needed(&http), n + 500);
        let parts = cfg("[[watch]]\npath = \"/a\"\n[upload]\nmax_groups = 10\nmax_parts_in_flight = 10\n");
        assert!(needed(&parts) >= 200 + 64, "{}", needed(&parts));
    }

    #[test]
    fn a_low_soft_limit_is_named_with_the_way_out() {
        let c = cfg("[[watch]]\npath = \"/a\"\n[http]\nmax_connections = 2000\n");
        assert_eq!(warning(&c, 65_536, 65_536), None);
        let w = warning(&c, 1024, 524_288).unwrap();
        assert!(w.contains("open-file limit is 1024") && w.contains("max_connections 2000"), "{w}");
        assert!(w.contains("raises its soft limit to the hard limit (524288)"), "{w}");
        let w = warning(&c, 1024, 1024).unwrap();
        assert!(w.contains("LimitNOFILE") && w.contains("hard limit is 1024"), "{w}");
    }

    #[cfg(unix)]
    #[test]
    fn the_limits_of_this_process_are_read() {
        let (soft, hard) = limits().unwrap();
        assert!(soft >= 1 && soft <= hard, "{soft} {hard}");
    }
}
