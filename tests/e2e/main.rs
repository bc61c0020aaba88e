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
#![cfg(unix)]

mod support;

mod agent;
mod binary;
mod commands;
mod console;
mod console_history;
mod controls;
mod crash;
mod dashboards;
mod engine;
mod files;
mod fleet;
mod macos;
mod media;
mod notify;
mod packaging;
mod server;
mod service;
mod siege;
mod siege_after;
mod siege_watch;
