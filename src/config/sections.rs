//! The service sections of the file — `[api]`, `[journal]`, `[upload]` (with
//! its `[[upload.window]]` entries), `[log]`, `[metrics]` and `[hooks]` —
//! with their defaults. Each section is its own struct with
//! `deny_unknown_fields`; each default is written once, in the function its
//! serde attribute names, and `Default` uses the same (or parses an empty
//! table). Checks that types cannot express are in `validate.rs`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fleet::DatabaseUrl;
use super::units::{Dur, Rate};

fn default_endpoint() -> String {
    "https://spatialgen.com".into()
}
fn default_key_env() -> String {
    "SPATIALGEN_API_KEY".into()
}

/// `[api]`: where SpatialGen is and how to authenticate.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Base URL; `/api/videos/uploads` is appended. `http://` only for loopback.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// Environment variable that holds the key.
    #[serde(default = "default_key_env")]
    pub api_key_env: String,
    /// Alternative to the env var: a file readable only by the agent's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
    /// TCP + TLS connect timeout for API and storage requests.
    #[serde(default = "ApiConfig::default_connect_timeout")]
    pub connect_timeout: Dur,
    /// Whole-request timeout for the JSON API calls (not for part PUTs).
    #[serde(default = "ApiConfig::default_request_timeout")]
    pub request_timeout: Dur,
    /// A part PUT that makes no progress for this long is aborted and retried.
    #[serde(default = "ApiConfig::default_stall_timeout")]
    pub stall_timeout: Dur,
}

impl ApiConfig {
    fn default_connect_timeout() -> Dur {
        Dur::secs(10)
    }
    fn default_request_timeout() -> Dur {
        Dur::secs(60)
    }
    fn default_stall_timeout() -> Dur {
        Dur::secs(60)
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            endpoint: default_endpoint(),
            api_key_env: default_key_env(),
            api_key_file: None,
            connect_timeout: Self::default_connect_timeout(),
            request_timeout: Self::default_request_timeout(),
            stall_timeout: Self::default_stall_timeout(),
        }
    }
}

/// `[journal]`: where the agent keeps its state.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    /// The SQLite file. Default: `journal.sqlite3` beside the config file.
    /// With `url`, only its folder is used (for staged files).
    #[serde(default = "JournalConfig::default_path")]
    pub path: PathBuf,
    /// A PostgreSQL database that a fleet of agents shares, instead of the
    /// SQLite file (`path` and `url` are exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<DatabaseUrl>,
    /// This agent's name in the fleet. Default: the host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// How long a claim outlives a silent node before another takes it over.
    #[serde(default = "JournalConfig::default_lease")]
    pub lease: Dur,
    /// The database password, if not in the URL or `PGPASSWORD` (mode 0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// The running agent forgets ended groups older than this once a day,
    /// by `forget`'s rules. `None` (absent, or `"off"`): history is kept.
    #[serde(default, with = "off_or_duration")]
    pub forget_after: Option<Dur>,
    /// `path` was written in the file (not the default).
    #[serde(skip)]
    pub path_given: bool,
}

impl JournalConfig {
    fn default_path() -> PathBuf {
        PathBuf::from("journal.sqlite3")
    }
    fn default_lease() -> Dur {
        Dur::secs(30)
    }
    /// The node name in force: `node`, or the host name.
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(super::fleet::host_name)
    }
    /// Where zipped `.fcpxmld` bundles and other transient files are kept.
    pub fn staging_dir(&self) -> PathBuf {
        let parent = self.path.parent().unwrap_or(Path::new("."));
        parent.join("staging")
    }
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            path: Self::default_path(),
            url: None,
            node: None,
            lease: Self::default_lease(),
            password_file: None,
            forget_after: None,
            path_given: false,
        }
    }
}

/// A duration, or `"off"` for none (`[journal] forget_after`).
mod off_or_duration {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Dur;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Dur>, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim().eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        s.parse::<Dur>().map(Some).map_err(|e| serde::de::Error::custom(format!("{e}, or \"off\"")))
    }

    pub fn serialize<S: Serializer>(v: &Option<Dur>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => d.serialize(s),
            None => s.serialize_str("off"),
        }
    }
}

/// `[upload]`: concurrency, retries and what to do on shutdown.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UploadConfig {
    /// Groups uploading at once.
    #[serde(default = "UploadConfig::default_max_groups")]
    pub max_groups: usize,
    /// Part PUTs in flight at once, across all groups.
    #[serde(default = "UploadConfig::default_max_parts")]
    pub max_parts_in_flight: usize,
    /// Compare a plain-MD5 ETag with the MD5 computed while streaming.
    #[serde(default = "yes")]
    pub verify_etag: bool,
    /// Part URLs asked for in one call (the API allows up to 10,000).
    #[serde(default = "UploadConfig::default_url_batch")]
    pub part_url_batch: u32,
    /// First retry delay; doubles per attempt, with full jitter.
    #[serde(default = "UploadConfig::default_retry_base")]
    pub retry_base: Dur,
    /// Longest delay between two attempts of one request.
    #[serde(default = "UploadConfig::default_retry_cap")]
    pub retry_cap: Dur,
    /// Attempts per request before the group is marked `failed`.
    #[serde(default = "UploadConfig::default_retry_attempts")]
    pub retry_attempts: u32,
    /// Time per request, across its attempts, before the group is marked `failed`.
    #[serde(default = "UploadConfig::default_retry_budget")]
    pub retry_budget: Dur,
    /// A `failed` group is re-queued by itself after this long.
    #[serde(default = "UploadConfig::default_retry_failed_after")]
    pub retry_failed_after: Dur,
    /// On SIGINT/SIGTERM, how long parts in flight may take to finish.
    #[serde(default = "UploadConfig::default_shutdown_grace")]
    pub shutdown_grace: Dur,
    /// If set, a JSON receipt per completed group is written here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt_dir: Option<PathBuf>,
    /// Shared limit for all PUTs, e.g. `"200MiB/s"`. None = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<Rate>,
    /// Upload windows; when any is given, uploads run only inside one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub window: Vec<WindowConfig>,
}

fn yes() -> bool {
    true
}

impl UploadConfig {
    fn default_max_groups() -> usize {
        2
    }
    fn default_max_parts() -> usize {
        4
    }
    fn default_url_batch() -> u32 {
        100
    }
    fn default_retry_base() -> Dur {
        Dur::secs(1)
    }
    fn default_retry_cap() -> Dur {
        Dur::secs(300)
    }
    fn default_retry_attempts() -> u32 {
        10
    }
    fn default_retry_budget() -> Dur {
        Dur::secs(30 * 60)
    }
    fn default_retry_failed_after() -> Dur {
        Dur::secs(3600)
    }
    fn default_shutdown_grace() -> Dur {
        Dur::secs(10)
    }
}

impl Default for UploadConfig {
    fn default() -> Self {
        // One source of defaults: the serde attributes above.
        toml::from_str("").expect("empty [upload] table takes every default")
    }
}

/// `[[upload.window]]`: a weekly time window in local time.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// `mon` … `sun`; empty means every day.
    #[serde(default)]
    pub days: Vec<String>,
    /// `HH:MM`, local time.
    pub from: String,
    /// `HH:MM`, local time; earlier than `from` means the window ends the next day.
    pub to: String,
    /// Limit inside this window; falls back to `[upload] bandwidth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<Rate>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `RUST_LOG`-style filter, e.g. `info` or `spatialgen_sync=debug,info`.
    #[serde(default = "LogConfig::default_level")]
    pub level: String,
    #[serde(default)]
    pub format: LogFormat,
    /// If set, logs also go to daily-rotated files here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Rotated files kept.
    #[serde(default = "LogConfig::default_keep")]
    pub keep: usize,
}

impl LogConfig {
    fn default_level() -> String {
        "info".into()
    }
    fn default_keep() -> usize {
        14
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: Self::default_level(), format: LogFormat::Human, dir: None, keep: Self::default_keep() }
    }
}

/// `[metrics]`: the older spelling of `[http] listen`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address for `/metrics`, `/healthz`, the control API and the console
    /// page, e.g. `127.0.0.1:9464`. Prefer `[http] listen`; both at once is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
}

/// Where `[http]` listens when the section is there without `listen`.
pub const DEFAULT_HTTP_LISTEN: SocketAddr =
    SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 9464));

/// `[http]`: the one listener for `/metrics`, `/healthz`, `/api/v1/…` and
/// the console page. With neither this section nor `[metrics] listen` the
/// agent serves no HTTP at all.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// The address; left out, [`DEFAULT_HTTP_LISTEN`] (loopback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// File holding the bearer token every POST/PUT must carry (mode 0600).
    /// Without it the API is read-only. Required for a non-loopback address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Host names a request's `Host` header may carry besides the listen
    /// address and loopback names (`localhost`, `127.0.0.1`, `[::1]`): the
    /// names this console is reached by. Anything else is refused (421), so
    /// a web page cannot read the console through a rebinding DNS name.
    /// `.example.com` allows every name under it; `*` allows any (behind a
    /// proxy that checks the name itself).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
    /// Open connections at most; beyond it new ones are refused at once
    /// (503), so idle clients cannot take the descriptors the watcher and
    /// the uploads need.
    #[serde(default = "HttpConfig::default_max_connections")]
    pub max_connections: usize,
}

impl HttpConfig {
    /// Browsers open up to six connections per host; a few tabs, a
    /// Prometheus and scripts fit well within it.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
    /// The highest `max_connections` accepted.
    pub const MAX_CONNECTIONS_LIMIT: usize = 4096;

    fn default_max_connections() -> usize {
        HttpConfig::DEFAULT_MAX_CONNECTIONS
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: None,
            token_file: None,
            allowed_hosts: Vec::new(),
            max_connections: HttpConfig::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// `[hooks]`: commands run (without a shell) when a group ends, and a webhook.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HooksConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_complete: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_rejected: Option<Vec<String>>,
    /// A hook still running after this long is killed.
    #[serde(default = "HooksConfig::default_timeout")]
    pub timeout: Dur,
    /// URL that receives a JSON POST for every group that ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// A file readable only by the agent's user (0600) holding the secret
    /// the webhook body is signed with (`X-SpatialGen-Sync-Signature`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret_file: Option<PathBuf>,
}

impl HooksConfig {
    fn default_timeout() -> Dur {
        Dur::secs(60)
    }
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            on_complete: None,
            on_failure: None,
            on_rejected: None,
            timeout: Self::default_timeout(),
            webhook: None,
            webhook_secret_file: None,
        }
    }
}
