//! End-to-end tests: the engine and the real binary against the sandbox
//! over loopback, on real files and real SQLite journals in temp folders;
//! the operator's surface (check, example config, packaging). One test
//! binary; `support` holds the shared helpers.
//!
//! Unix only: the suite spawns the binary and stops it with signals
//! (SIGTERM, SIGKILL, SIGHUP), starts Linux's PostgreSQL and Chromium, and
//! checks systemd units. On Windows CI builds the `.exe` and runs its
//! `check` and `demo` under Wine, and the library's unit tests (see the
//! README's platform table).

#[cfg(unix)]
mod support;

#[cfg(unix)]
mod agent;
#[cfg(unix)]
mod binary;
#[cfg(unix)]
mod commands;
#[cfg(unix)]
mod console;
#[cfg(unix)]
mod console_history;
#[cfg(unix)]
mod controls;
#[cfg(unix)]
mod crash;
#[cfg(unix)]
mod dashboards;
#[cfg(unix)]
mod engine;
#[cfg(unix)]
mod files;
#[cfg(unix)]
mod fleet;
#[cfg(unix)]
mod macos;
#[cfg(unix)]
mod media;
#[cfg(unix)]
mod notify;
#[cfg(unix)]
mod packaging;
#[cfg(unix)]
mod server;
#[cfg(unix)]
mod service;
#[cfg(unix)]
mod siege;
#[cfg(unix)]
mod siege_after;
#[cfg(unix)]
mod siege_watch;
