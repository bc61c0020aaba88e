//! The one TOML file the agent runs from: schema, defaults, validation and
//! secret loading.
//!
//! Loading is two steps, like ripgrep's "raw, then validated" arguments:
//! serde reads the text into the section structs (`deny_unknown_fields`
//! everywhere, so a typo is an error, with the nearest valid key suggested),
//! then [`Config::validate`] checks what types cannot express and reports
//! *every* problem at once, each prefixed with `file:line` and the key path.
//! Relative paths in the file are taken relative to the file's directory.
//!
//! This module does no network I/O. [`Config::check_environment`] looks at the
//! filesystem (folders exist, journal directory writable) and the secret is
//! read by [`Config::api_key`]; both are separate so that `plan` and `status`
//! work without a key.
//!
//! The parts, each re-exported here so every type is `config::X`:
//! - this file: [`ConfigError`], the whole-file [`Config`], loading
//!   ([`Config::load`], [`Config::parse`], [`Config::minimal`]) and the
//!   redacted rendering ([`Config::to_toml`]);
//! - `units.rs`: the string-written values ([`Dur`], [`Rate`], [`ApiKey`])
//!   and the weekday and `HH:MM` parsers;
//! - `sections.rs`: `[api]`, `[journal]`, `[upload]`, `[log]`, `[metrics]`,
//!   `[hooks]` and `[http]` with their defaults; `watch.rs`: `[[watch]]` entries;
//! - `validate.rs`: one check per section, run in file order by
//!   [`Config::validate`] and by loading;
//! - `locate.rs`: key paths, their line in the text, and "did you mean";
//! - `env.rs`: the filesystem checks, the secret, and [`vet_endpoint`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod env;
mod fleet;
mod locate;
mod sections;
mod units;
mod validate;
mod watch;

pub use env::{find_config, is_loopback_host, system_config, vet_endpoint};
pub use fleet::{DatabaseTarget, DatabaseUrl, SSL_MODES, database_password, host_name};
pub use sections::{
    ApiConfig, DEFAULT_HTTP_LISTEN, HooksConfig, HttpConfig, JournalConfig, LogConfig, LogFormat, MetricsConfig,
    UploadConfig, WindowConfig,
};
pub use units::{ApiKey, Dur, HttpToken, Rate, WebhookSecret, parse_hhmm, parse_weekday};
pub use watch::{AfterUpload, LayoutChoice, MediaCheck, RolePatterns, WatchConfig, WatchMode};

use locate::{line_of, suggest_nearest_key};

/// Everything that can be wrong with a config file. Every variant is fatal:
/// the CLI maps it to exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    /// The file is not valid TOML or does not fit the schema.
    #[error("{location}: {message}")]
    Parse { location: String, message: String },
    /// No `--config` given and no config file at the usual places.
    #[error(
        "no config file: give --config FILE (or set SPATIALGEN_SYNC_CONFIG); looked for {}",
        .looked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" and ")
    )]
    NotFound { looked: Vec<PathBuf> },
    /// The file parsed but some values are wrong; all of them are listed.
    #[error("{} problem(s) in the config:\n{}", .0.len(), .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
    /// The API key could not be obtained.
    #[error("{0}")]
    Secret(String),
}
/// The whole file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The file this was read from (absolute); not a key.
    #[serde(skip)]
    pub source: PathBuf,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub journal: JournalConfig,
    #[serde(default)]
    pub upload: UploadConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub hooks: HooksConfig,
    /// `[http]`; `None` when the file has no such section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpConfig>,
    #[serde(default)]
    pub watch: Vec<WatchConfig>,
}

impl Config {
    /// Read, parse and validate `path`. Paths inside are made absolute.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read { path: path.to_owned(), error })?;
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        Config::parse(&text, &abs)
    }

    /// Parse and validate `text` as if read from `source`.
    pub fn parse(text: &str, source: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            let location = match e.span() {
                Some(span) => format!("{}:{}", source.display(), line_of(text, span.start)),
                None => source.display().to_string(),
            };
            let message = e.message().trim().to_string();
            let message = suggest_nearest_key(&message);
            ConfigError::Parse { location, message }
        })?;
        cfg.source = source.to_owned();
        cfg.journal.path_given = text
            .parse::<toml::Table>()
            .ok()
            .and_then(|t| t.get("journal").and_then(|j| j.get("path")).map(|_| ()))
            .is_some();
        let base = source.parent().unwrap_or(Path::new(".")).to_owned();
        cfg.resolve_paths(&base);
        cfg.validate(Some(text))?;
        Ok(cfg)
    }

    /// The one HTTP listener's address: `[http] listen`, else the older
    /// `[metrics] listen`, else the loopback default when `[http]` is there;
    /// `None` = no HTTP server.
    pub fn http_listen(&self) -> Option<std::net::SocketAddr> {
        match &self.http {
            Some(h) => Some(h.listen.or(self.metrics.listen).unwrap_or(DEFAULT_HTTP_LISTEN)),
            None => self.metrics.listen,
        }
    }

    /// `[http] max_connections`, or its default (also for `[metrics] listen`).
    pub fn http_max_connections(&self) -> usize {
        self.http.as_ref().map_or(HttpConfig::DEFAULT_MAX_CONNECTIONS, |h| h.max_connections)
    }

    /// A config with one watch folder and every default, for `upload`/`demo`.
    pub fn minimal(endpoint: &str, journal: &Path) -> Config {
        let mut cfg: Config = toml::from_str("").expect("empty config takes every default");
        cfg.api.endpoint = endpoint.to_owned();
        cfg.journal.path = journal.to_owned();
        cfg
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.journal.path);
        if let Some(p) = self.api.api_key_file.as_mut() {
            fix(p);
        }
        if let Some(p) = self.journal.password_file.as_mut() {
            fix(p);
        }
        if let Some(p) = self.hooks.webhook_secret_file.as_mut() {
            fix(p);
        }
        if let Some(p) = self.upload.receipt_dir.as_mut() {
            fix(p);
        }
        if let Some(p) = self.log.dir.as_mut() {
            fix(p);
        }
        if let Some(p) = self.http.as_mut().and_then(|h| h.token_file.as_mut()) {
            fix(p);
        }
        for w in &mut self.watch {
            fix(&mut w.path);
            if let Some(p) = w.move_to.as_mut() {
                fix(p);
            }
        }
    }

    /// The effective settings as TOML (the key is never part of a `Config`).
    /// Secrets that may sit in the config are left out: the webhook URL is
    /// shown as scheme and host only (its path or query may carry a token),
    /// and a hook's arguments are replaced by their count (they may carry a
    /// password); the program is shown.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        shown.hooks.webhook = self.hooks.webhook.as_deref().map(redact_webhook);
        for hook in [&mut shown.hooks.on_complete, &mut shown.hooks.on_failure, &mut shown.hooks.on_rejected] {
            if let Some(argv) = hook.as_mut()
                && argv.len() > 1
            {
                let hidden = argv.len() - 1;
                argv.truncate(1);
                argv.push(format!("<{hidden} argument(s) not shown>"));
            }
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// The webhook URL as `scheme://host[:port]/…`, for display.
fn redact_webhook(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{}{port}/…", u.scheme(), u.host_str().unwrap_or(""))
        }
        Err(_) => "(not a URL; not shown)".to_string(),
    }
}

#[cfg(test)]
mod fleet_tests;
#[cfg(test)]
mod tests;
