//! The one TOML file the agent runs from: schema, defaults, validation and
//! secret loading.
//!
//! Loading is two steps, like ripgrep's "raw, then validated" arguments:
//! serde reads the text into the structs below (`deny_unknown_fields`
//! everywhere, so a typo is an error, with the nearest valid key suggested),
//! then [`Config::validate`] checks what types cannot express and reports
//! *every* problem at once, each prefixed with `file:line` and the key path.
//! Relative paths in the file are taken relative to the file's directory.
//!
//! This module does no network I/O. [`Config::check_environment`] looks at the
//! filesystem (folders exist, journal directory writable) and the secret is
//! read by [`Config::api_key`]; both are separate so that `plan` and `status`
//! work without a key.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::{Layout, Perspective};

/// Everything that can be wrong with a config file. Every variant is fatal:
/// the CLI maps it to exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    /// The file is not valid TOML or does not fit the schema.
    #[error("{location}: {message}")]
    Parse { location: String, message: String },
    /// The file parsed but some values are wrong; all of them are listed.
    #[error("{} problem(s) in the config:\n{}", .0.len(), .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
    /// The API key could not be obtained.
    #[error("{0}")]
    Secret(String),
}

/// A duration written like `30s`, `5m`, `2h` or `1h 30m`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }
}

impl fmt::Debug for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Dur, String> {
        humantime::parse_duration(s.trim())
            .map(Dur)
            .map_err(|e| format!("invalid duration {s:?} ({e}); write it like \"30s\", \"5m\" or \"2h\""))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A transfer rate written like `200MiB/s`, `50MB/s` or `800Mbit/s`, in bytes per second.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Rate(pub u64);

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Rate, String> {
        let bad = || format!("invalid rate {s:?}; write it like \"200MiB/s\", \"50MB/s\" or \"800Mbit/s\"");
        let t = s.trim();
        let t = t.strip_suffix("/s").ok_or_else(bad)?.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let num: f64 = num.parse().map_err(|_| bad())?;
        let mult: f64 = match unit.trim() {
            "B" => 1.0,
            "KB" | "kB" => 1e3,
            "MB" => 1e6,
            "GB" => 1e9,
            "KiB" => 1024.0,
            "MiB" => 1024.0 * 1024.0,
            "GiB" => 1024.0 * 1024.0 * 1024.0,
            "kbit" | "Kbit" => 1e3 / 8.0,
            "Mbit" => 1e6 / 8.0,
            "Gbit" => 1e9 / 8.0,
            _ => return Err(bad()),
        };
        let bytes = num * mult;
        if !(bytes >= 1.0 && bytes.is_finite()) {
            return Err(format!("rate {s:?} must be at least 1 B/s"));
        }
        Ok(Rate(bytes as u64))
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}B/s", self.0))
    }
}

/// The API key. Its `Debug` and `Display` never show it; only
/// [`ApiKey::expose`] does, and only `api/` calls that, to set the header.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

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
    #[serde(default = "JournalConfig::default_path")]
    pub path: PathBuf,
}

impl JournalConfig {
    fn default_path() -> PathBuf {
        PathBuf::from("journal.sqlite3")
    }
    /// Where zipped `.fcpxmld` bundles and other transient files are kept.
    pub fn staging_dir(&self) -> PathBuf {
        let parent = self.path.parent().unwrap_or(Path::new("."));
        parent.join("staging")
    }
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig { path: Self::default_path() }
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

/// `[metrics]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address for Prometheus text metrics and `/healthz`, e.g. `127.0.0.1:9464`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
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
        }
    }
}

/// How a watch folder is cut into videos.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WatchMode {
    /// Each direct subfolder is one video.
    #[default]
    Folders,
    /// Files directly in the folder, grouped by name stem.
    Flat,
}

/// `layout = "auto"` or a fixed layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayoutChoice {
    #[default]
    Auto,
    Fixed(Layout),
}

impl FromStr for LayoutChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().eq_ignore_ascii_case("auto") {
            return Ok(LayoutChoice::Auto);
        }
        s.parse::<Layout>()
            .map(LayoutChoice::Fixed)
            .map_err(|_| format!("unknown layout {s:?}; expected auto | {}", Layout::choices()))
    }
}

impl fmt::Display for LayoutChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutChoice::Auto => f.write_str("auto"),
            LayoutChoice::Fixed(l) => l.fmt(f),
        }
    }
}

impl<'de> Deserialize<'de> for LayoutChoice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for LayoutChoice {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What happens to the source files once their group is in the library.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AfterUpload {
    #[default]
    Keep,
    Delete,
    Move,
}

/// `[watch.roles]`: glob patterns (globset syntax, case-insensitive) that
/// replace the default patterns of one role. A pattern is matched against the
/// file's path relative to the export folder, with `/` separators.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RolePatterns {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_left: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_right: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtitle: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aime: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fcpxmld: Option<Vec<String>>,
    /// Temporary files: ignored, and an export is not finished while one is present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporary: Option<Vec<String>>,
    /// Files that are simply ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore: Option<Vec<String>>,
}

impl RolePatterns {
    /// `(key, patterns)` for every role that was set.
    pub fn entries(&self) -> Vec<(&'static str, &Vec<String>)> {
        [
            ("video_left", &self.video_left),
            ("video_right", &self.video_right),
            ("video", &self.video),
            ("audio", &self.audio),
            ("subtitle", &self.subtitle),
            ("aime", &self.aime),
            ("fcpxmld", &self.fcpxmld),
            ("temporary", &self.temporary),
            ("ignore", &self.ignore),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
        .collect()
    }
}

/// `[[watch]]`: one watched folder and how its exports become videos.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    pub path: PathBuf,
    #[serde(default)]
    pub mode: WatchMode,
    #[serde(default)]
    pub layout: LayoutChoice,
    /// What `auto` uses when there is no L/R pair and no `.aivu`.
    #[serde(default = "WatchConfig::default_default_layout")]
    pub default_layout: Layout,
    #[serde(default = "WatchConfig::default_perspective")]
    pub perspective: Perspective,
    /// Quiet time before an export counts as finished.
    #[serde(default = "WatchConfig::default_settle")]
    pub settle: Dur,
    /// If set, an export is finished as soon as a file of this name appears in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_marker: Option<String>,
    /// If set, poll at this interval instead of relying on OS events (network shares).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll: Option<Dur>,
    /// Full rescan interval (events can be lost).
    #[serde(default = "WatchConfig::default_rescan")]
    pub rescan: Dur,
    #[serde(default)]
    pub follow_symlinks: bool,
    #[serde(default)]
    pub after_upload: AfterUpload,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub move_to: Option<PathBuf>,
    /// Language of audio files whose names carry no tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_language: Option<String>,
    /// Language of subtitle files whose names carry no tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtitle_language: Option<String>,
    /// SpatialGen dashboard folder for these videos.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Higher goes first.
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub roles: RolePatterns,
}

impl WatchConfig {
    fn default_default_layout() -> Layout {
        Layout::Mvhevc
    }
    fn default_perspective() -> Perspective {
        Perspective::Regular
    }
    fn default_settle() -> Dur {
        Dur::secs(30)
    }
    fn default_rescan() -> Dur {
        Dur::secs(600)
    }

    /// A watch entry for `path` with every default (used by `upload`, `demo` and tests).
    pub fn new(path: impl Into<PathBuf>) -> WatchConfig {
        let mut w: WatchConfig = toml::from_str("path = \"\"").expect("defaults are valid");
        w.path = path.into();
        w
    }
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
    #[serde(default)]
    pub watch: Vec<WatchConfig>,
}

/// One step of a key path, used to find the line a problem is on.
#[derive(Debug, Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
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
        let base = source.parent().unwrap_or(Path::new(".")).to_owned();
        cfg.resolve_paths(&base);
        let problems = cfg.validate_with_lines(text);
        if problems.is_empty() { Ok(cfg) } else { Err(ConfigError::Invalid(problems)) }
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
        if let Some(p) = self.upload.receipt_dir.as_mut() {
            fix(p);
        }
        if let Some(p) = self.log.dir.as_mut() {
            fix(p);
        }
        for w in &mut self.watch {
            fix(&mut w.path);
            if let Some(p) = w.move_to.as_mut() {
                fix(p);
            }
        }
    }

    /// Every problem types cannot catch, as `(key path, message)`.
    fn problems(&self) -> Vec<(Vec<Seg<'static>>, String)> {
        let mut out: Vec<(Vec<Seg<'static>>, String)> = Vec::new();
        let mut err = |path: Vec<Seg<'static>>, msg: String| out.push((path, msg));

        if let Err(e) = check_endpoint(&self.api.endpoint) {
            err(vec![Seg::Key("api"), Seg::Key("endpoint")], e);
        }
        if self.api.api_key_env.trim().is_empty() && self.api.api_key_file.is_none() {
            err(
                vec![Seg::Key("api"), Seg::Key("api_key_env")],
                "must name an environment variable (or set api_key_file)".into(),
            );
        }
        let up = &self.upload;
        if up.max_groups == 0 {
            err(vec![Seg::Key("upload"), Seg::Key("max_groups")], "must be at least 1".into());
        }
        if up.max_parts_in_flight == 0 {
            err(vec![Seg::Key("upload"), Seg::Key("max_parts_in_flight")], "must be at least 1".into());
        }
        if !(1..=10_000).contains(&up.part_url_batch) {
            err(
                vec![Seg::Key("upload"), Seg::Key("part_url_batch")],
                "must be between 1 and 10000 (the API's limit per call)".into(),
            );
        }
        if up.retry_attempts == 0 {
            err(vec![Seg::Key("upload"), Seg::Key("retry_attempts")], "must be at least 1".into());
        }
        if up.retry_base.0.is_zero() {
            err(
                vec![Seg::Key("upload"), Seg::Key("retry_base")],
                "must be greater than zero (a zero delay would hot-loop)".into(),
            );
        }
        if up.retry_cap < up.retry_base {
            err(
                vec![Seg::Key("upload"), Seg::Key("retry_cap")],
                format!("({}) must not be shorter than retry_base ({})", up.retry_cap, up.retry_base),
            );
        }
        for (i, win) in up.window.iter().enumerate() {
            let at = |k: &'static str| vec![Seg::Key("upload"), Seg::Key("window"), Seg::Index(i), Seg::Key(k)];
            for d in &win.days {
                if parse_weekday(d).is_none() {
                    err(at("days"), format!("unknown day {d:?}; expected mon, tue, wed, thu, fri, sat or sun"));
                }
            }
            for (k, v) in [("from", &win.from), ("to", &win.to)] {
                if parse_hhmm(v).is_none() {
                    err(at(k), format!("invalid time {v:?}; write it as HH:MM, e.g. \"19:00\""));
                }
            }
        }
        if let Err(e) = self.log.level.parse::<tracing_subscriber::EnvFilter>() {
            err(vec![Seg::Key("log"), Seg::Key("level")], format!("invalid filter {:?}: {e}", self.log.level));
        }
        if self.log.keep == 0 {
            err(vec![Seg::Key("log"), Seg::Key("keep")], "must be at least 1".into());
        }
        for (k, v) in [
            ("on_complete", &self.hooks.on_complete),
            ("on_failure", &self.hooks.on_failure),
            ("on_rejected", &self.hooks.on_rejected),
        ] {
            if v.as_ref().is_some_and(|argv| argv.is_empty() || argv[0].trim().is_empty()) {
                err(
                    vec![Seg::Key("hooks"), Seg::Key(k)],
                    "must be a non-empty list: [\"/path/to/program\", \"arg\", ...]".into(),
                );
            }
        }
        if let Some(url) = &self.hooks.webhook
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            err(vec![Seg::Key("hooks"), Seg::Key("webhook")], format!("{url:?} is not an http(s) URL"));
        }

        let mut seen: Vec<&Path> = Vec::new();
        for (i, w) in self.watch.iter().enumerate() {
            let at = |k: &'static str| vec![Seg::Key("watch"), Seg::Index(i), Seg::Key(k)];
            if w.path.as_os_str().is_empty() {
                err(at("path"), "must not be empty".into());
            }
            if let Some(other) = seen.iter().find(|p| w.path.starts_with(p) || p.starts_with(&w.path)) {
                err(at("path"), format!("{} overlaps another watch folder ({})", w.path.display(), other.display()));
            }
            seen.push(&w.path);
            if w.settle.0.is_zero() && w.ready_marker.is_none() {
                err(at("settle"), "must be greater than zero unless ready_marker is set".into());
            }
            if let Some(p) = w.poll
                && p.0 < Duration::from_millis(100)
            {
                err(at("poll"), format!("{p} is too short; use at least 100ms"));
            }
            if w.rescan.0 < Duration::from_secs(1) {
                err(at("rescan"), "must be at least 1s".into());
            }
            if let Some(m) = &w.ready_marker
                && (m.is_empty() || m.contains('/') || m.contains('\\'))
            {
                err(at("ready_marker"), format!("{m:?} must be a plain file name"));
            }
            match (w.after_upload, &w.move_to) {
                (AfterUpload::Move, None) => err(at("move_to"), "is required when after_upload = \"move\"".into()),
                (AfterUpload::Move, Some(dest)) if dest.starts_with(&w.path) => err(
                    at("move_to"),
                    format!("{} is inside the watch folder; uploaded exports would be found again", dest.display()),
                ),
                (AfterUpload::Keep | AfterUpload::Delete, Some(_)) => {
                    err(at("move_to"), "is only used with after_upload = \"move\"".into())
                }
                _ => {}
            }
            for (k, lang, audio) in
                [("audio_language", &w.audio_language, true), ("subtitle_language", &w.subtitle_language, false)]
            {
                if let Some(l) = lang {
                    let l = l.to_ascii_lowercase();
                    let ok = crate::model::LANGUAGES.contains(&l.as_str()) || (audio && l == crate::model::NO_LANGUAGE);
                    if !ok {
                        err(
                            at(k),
                            format!(
                                "{l:?} is not a supported language tag; supported: {}{}",
                                crate::model::LANGUAGES.join(" "),
                                if audio { " zxx" } else { "" }
                            ),
                        );
                    }
                }
            }
            for (role, patterns) in w.roles.entries() {
                for p in patterns {
                    if let Err(e) = globset::Glob::new(p) {
                        err(
                            vec![Seg::Key("watch"), Seg::Index(i), Seg::Key("roles"), Seg::Key(role)],
                            format!("bad glob {p:?}: {}", e.kind()),
                        );
                    }
                }
            }
        }
        out
    }

    /// Validate a config built in code (no file to point at).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let problems: Vec<String> =
            self.problems().into_iter().map(|(path, msg)| format!("{}: {msg}", key_path(&path))).collect();
        if problems.is_empty() { Ok(()) } else { Err(ConfigError::Invalid(problems)) }
    }

    fn validate_with_lines(&self, text: &str) -> Vec<String> {
        let problems = self.problems();
        if problems.is_empty() {
            return Vec::new();
        }
        let doc = toml::de::DeTable::parse(text).ok();
        problems
            .into_iter()
            .map(|(path, msg)| {
                let line = doc.as_ref().and_then(|d| locate(d.get_ref(), &path)).map(|off| line_of(text, off));
                match line {
                    Some(l) => format!("{}:{l}: {}: {msg}", self.source.display(), key_path(&path)),
                    None => format!("{}: {}: {msg}", self.source.display(), key_path(&path)),
                }
            })
            .collect()
    }

    /// Filesystem checks for `check` and `run`: watch folders exist, the
    /// journal's directory can be written, `move_to` exists. All problems at once.
    pub fn check_environment(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        for (i, w) in self.watch.iter().enumerate() {
            if !w.path.is_dir() {
                problems.push(format!("watch[{i}].path: {} is not an existing folder", w.path.display()));
            }
            if let Some(dest) = &w.move_to
                && !dest.is_dir()
            {
                problems.push(format!("watch[{i}].move_to: {} is not an existing folder", dest.display()));
            }
        }
        let dir = self.journal.path.parent().unwrap_or(Path::new("."));
        if let Err(e) = writable_dir(dir) {
            problems.push(format!("journal.path: cannot write in {}: {e}", dir.display()));
        }
        if let Some(r) = &self.upload.receipt_dir
            && let Err(e) = writable_dir(r)
        {
            problems.push(format!("upload.receipt_dir: cannot write in {}: {e}", r.display()));
        }
        if problems.is_empty() { Ok(()) } else { Err(ConfigError::Invalid(problems)) }
    }

    /// The API key, from `api_key_file` if set, else from the env var `api_key_env`.
    pub fn api_key(&self) -> Result<ApiKey, ConfigError> {
        if let Some(file) = &self.api.api_key_file {
            check_secret_permissions(file)?;
            let raw = std::fs::read_to_string(file)
                .map_err(|e| ConfigError::Secret(format!("api.api_key_file: cannot read {}: {e}", file.display())))?;
            let key = raw.trim();
            if key.is_empty() {
                return Err(ConfigError::Secret(format!("api.api_key_file: {} is empty", file.display())));
            }
            return Ok(ApiKey::new(key));
        }
        let var = &self.api.api_key_env;
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(ApiKey::new(v.trim())),
            Ok(_) => Err(ConfigError::Secret(format!("api.api_key_env: the environment variable {var} is empty"))),
            Err(_) => Err(ConfigError::Secret(format!(
                "api.api_key_env: the environment variable {var} is not set (export {var}=... or set api.api_key_file)"
            ))),
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

/// Vet the API endpoint: a URL with a host, `https://`, or plain `http://`
/// to a loopback address only. `check` (through validation) and the API
/// client (`api::Client::new`) both decide with this one parser.
pub fn vet_endpoint(endpoint: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(endpoint.trim())
        .map_err(|e| format!("{endpoint:?} is not a URL ({e}; expected https://host)"))?;
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(|| format!("{endpoint:?} has no host"))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback_host(host) => Ok(url),
        "http" => Err(format!(
            "{endpoint:?} is plain http to a non-loopback host; the API key only travels over https (http is allowed for 127.0.0.1/localhost only)"
        )),
        other => Err(format!("unsupported scheme {other:?} in {endpoint:?}; use https://")),
    }
}

fn check_endpoint(endpoint: &str) -> Result<(), String> {
    vet_endpoint(endpoint).map(drop)
}

/// Is `host` a loopback name or address? Accepts the bracketed IPv6 form
/// `Url::host_str` gives (`[::1]`) as well as the bare one.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Can files be made in `dir`? The probe is created with `O_EXCL` (and so
/// never through a symlink planted under its name), mode 0600, under a
/// random name, and removed again.
fn writable_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = tempfile::Builder::new().prefix(".spatialgen-sync-probe-").tempfile_in(dir)?;
    probe.close()
}

#[cfg(unix)]
fn check_secret_permissions(file: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(file)
        .map_err(|e| ConfigError::Secret(format!("api.api_key_file: cannot read {}: {e}", file.display())))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::Secret(format!(
            "api.api_key_file: {} is readable by group or others (mode {mode:o}); fix it with: chmod 600 {}",
            file.display(),
            file.display()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_secret_permissions(_file: &Path) -> Result<(), ConfigError> {
    Ok(())
}

/// `mon`..`sun` (also full names) to 0..6.
pub fn parse_weekday(s: &str) -> Option<u8> {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let l = s.trim().to_ascii_lowercase();
    DAYS.iter().position(|d| l.starts_with(d) && (l.len() == 3 || l.ends_with("day"))).map(|p| p as u8)
}

/// `HH:MM` to minutes after midnight.
pub fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && s.trim().len() <= 5).then_some(h * 60 + m)
}

fn key_path(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Byte offset of the deepest part of `path` found in the document.
fn locate(table: &toml::de::DeTable, path: &[Seg]) -> Option<usize> {
    let (Seg::Key(first), rest) = path.split_first()? else { return None };
    let (key, value) = table.iter().find(|(k, _)| k.get_ref().as_ref() == *first)?;
    let here = key.span().start;
    Some(locate_value(value, rest).unwrap_or(here))
}

fn locate_value(value: &toml::Spanned<toml::de::DeValue>, path: &[Seg]) -> Option<usize> {
    let Some((seg, rest)) = path.split_first() else { return Some(value.span().start) };
    match (seg, value.get_ref()) {
        (Seg::Key(_), toml::de::DeValue::Table(t)) => locate(t, path),
        (Seg::Index(i), toml::de::DeValue::Array(a)) => {
            let item = a.get(*i)?;
            Some(locate_value(item, rest).unwrap_or(item.span().start))
        }
        _ => None,
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Add "did you mean" to serde's "unknown field `x`, expected one of ..." message.
fn suggest_nearest_key(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else { return message.to_string() };
    let Some((field, expected)) = rest.split_once('`') else { return message.to_string() };
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let best = candidates.iter().map(|c| (edit_distance(field, c), *c)).min();
    match best {
        Some((d, c)) if d <= 3.max(field.len() / 3) => format!("{message} (did you mean `{c}`?)"),
        _ => message.to_string(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests;
