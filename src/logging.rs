//! Logging: tracing to stderr (human or JSON) and, with `[log] dir`, to
//! daily-rotated files keeping `[log] keep` of them.
//!
//! `RUST_LOG`, when set, wins over `[log] level`, so an operator can turn on
//! `debug` for one run without editing the config. Every group's events carry
//! a `group` field (its journal id), so one grep follows a group's whole life.

use std::io::IsTerminal;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::MakeWriterExt;

use crate::config::{LogConfig, LogFormat};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log.level: invalid filter {0:?}: {1}")]
    Filter(String, String),
    #[error("log.dir: cannot create rotating log files in {0}: {1}")]
    Dir(String, String),
    #[error("a global logger is already installed")]
    AlreadySet,
}

/// Keeps the background log writer alive; drop it last (it flushes).
#[must_use = "dropping the guard stops file logging"]
pub struct LogGuard {
    _file: Option<WorkerGuard>,
}

/// Install the global subscriber for a long-running command.
pub fn init(cfg: &LogConfig) -> Result<LogGuard, LogError> {
    let (subscriber, guard) = build(cfg)?;
    tracing::subscriber::set_global_default(subscriber).map_err(|_| LogError::AlreadySet)?;
    Ok(guard)
}

type Subscriber = Box<dyn tracing::Subscriber + Send + Sync>;

/// The subscriber `init` installs, for callers that scope it themselves.
pub fn build(cfg: &LogConfig) -> Result<(Subscriber, LogGuard), LogError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(&v).map_err(|e| LogError::Filter(v, e.to_string()))?,
        _ => EnvFilter::try_new(&cfg.level).map_err(|e| LogError::Filter(cfg.level.clone(), e.to_string()))?,
    };
    let (file_writer, guard) = match &cfg.dir {
        Some(dir) => {
            let appender = tracing_appender::rolling::Builder::new()
                .rotation(tracing_appender::rolling::Rotation::DAILY)
                .filename_prefix("spatialgen-sync")
                .filename_suffix("log")
                .max_log_files(cfg.keep)
                .build(dir)
                .map_err(|e| LogError::Dir(dir.display().to_string(), e.to_string()))?;
            let (nb, guard) = tracing_appender::non_blocking(appender);
            (Some(nb), Some(guard))
        }
        None => (None, None),
    };
    let ansi = std::io::stderr().is_terminal() && file_writer.is_none();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let subscriber: Subscriber = match (cfg.format, file_writer) {
        (LogFormat::Human, None) => Box::new(builder.with_ansi(ansi).with_writer(std::io::stderr).finish()),
        (LogFormat::Human, Some(f)) => Box::new(builder.with_ansi(false).with_writer(std::io::stderr.and(f)).finish()),
        (LogFormat::Json, None) => Box::new(builder.json().with_writer(std::io::stderr).finish()),
        (LogFormat::Json, Some(f)) => Box::new(builder.json().with_writer(std::io::stderr.and(f)).finish()),
    };
    Ok((subscriber, LogGuard { _file: guard }))
}

/// A quiet stderr logger for short commands (`status`, `plan`, `check`):
/// warnings and errors only, unless `RUST_LOG` says otherwise.
pub fn init_quiet() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// A URL fit for logs: scheme, host and path, never the query (presigned
/// URLs carry their signature there).
pub fn redact_url(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_drops_the_query() {
        assert_eq!(redact_url("http://s3/b/k?X-Amz-Signature=abc&e=1"), "http://s3/b/k?…");
        assert_eq!(redact_url("http://s3/b/k"), "http://s3/b/k");
    }

    #[test]
    fn rotating_files_are_written_in_the_log_dir() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig { dir: Some(dir.path().to_owned()), ..LogConfig::default() };
        let (subscriber, guard) = build(&cfg).unwrap();
        tracing::subscriber::with_default(subscriber, || tracing::info!(group = 7, "hello from the log test"));
        drop(guard);
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(files.len(), 1, "{files:?}");
        let name = files[0].file_name().unwrap().to_string_lossy().to_string();
        assert!(name.starts_with("spatialgen-sync.") && name.ends_with(".log"), "{name}");
        let text = std::fs::read_to_string(&files[0]).unwrap();
        assert!(text.contains("hello from the log test") && text.contains("group=7"), "{text}");
    }

    #[test]
    fn bad_filter_is_reported() {
        let cfg = LogConfig { level: "info,[[".into(), ..LogConfig::default() };
        if std::env::var("RUST_LOG").is_err() {
            assert!(matches!(build(&cfg), Err(LogError::Filter(..))));
        }
    }
}
