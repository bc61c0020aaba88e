//! End-to-end tests: the engine and the real binary against the sandbox
//! over loopback, on real files and real SQLite journals in temp folders;
//! the operator's surface (check, example config, packaging). One test
//! binary; `support` holds the shared helpers.

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
mod media;
mod notify;
mod packaging;
mod server;
mod service;
mod siege;
mod siege_after;
mod siege_watch;
