//! What the agent needs beyond the file itself: filesystem checks
//! ([`Config::check_environment`]: folders exist, directories writable),
//! the secret ([`Config::api_key`], from a private file or an environment
//! variable), and the one endpoint rule ([`vet_endpoint`]) that validation
//! and the API client share. Nothing here does network I/O.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::units::{ApiKey, HttpToken, WebhookSecret};
use super::{Config, ConfigError, HooksConfig};

impl Config {
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
        if self.journal.url.is_none()
            && let Err(e) = writable_dir(dir)
        {
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
            check_secret_permissions("api.api_key_file", file)?;
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

    /// The console's bearer token from `[http] token_file`, checked like the
    /// API key file (readable by the agent's user only, not empty); `None`
    /// when no token file is configured (the API is then read-only).
    pub fn http_token(&self) -> Result<Option<HttpToken>, ConfigError> {
        let Some(file) = self.http.as_ref().and_then(|h| h.token_file.as_ref()) else { return Ok(None) };
        check_secret_permissions("http.token_file", file)?;
        let raw = std::fs::read_to_string(file)
            .map_err(|e| ConfigError::Secret(format!("http.token_file: cannot read {}: {e}", file.display())))?;
        let token = raw.trim();
        if token.is_empty() {
            return Err(ConfigError::Secret(format!("http.token_file: {} is empty", file.display())));
        }
        Ok(Some(HttpToken::new(token)))
    }
}

impl HooksConfig {
    /// The webhook's signing secret from `webhook_secret_file`, if set: the
    /// file must be readable by the agent's user only (as the API key file)
    /// and not empty; surrounding whitespace (a trailing newline) is not
    /// part of the secret.
    pub fn webhook_secret(&self) -> Result<Option<WebhookSecret>, ConfigError> {
        let Some(file) = &self.webhook_secret_file else {
            return Ok(None);
        };
        let key = "hooks.webhook_secret_file";
        check_secret_permissions(key, file)?;
        let raw = std::fs::read(file)
            .map_err(|e| ConfigError::Secret(format!("{key}: cannot read {}: {e}", file.display())))?;
        let secret = raw.trim_ascii();
        if secret.is_empty() {
            return Err(ConfigError::Secret(format!("{key}: {} is empty", file.display())));
        }
        Ok(Some(WebhookSecret::new(secret)))
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

pub(super) fn check_endpoint(endpoint: &str) -> Result<(), String> {
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

/// A secret file (`key` names it in messages, e.g. `api.api_key_file`) must
/// be readable by its owner only: on Unix no group or other mode bit, on
/// Windows no read access for Everyone, Users and the like in its DACL.
pub(super) fn check_secret_permissions(key: &str, file: &Path) -> Result<(), ConfigError> {
    let others = crate::owner_only::others_can_read(file)
        .map_err(|e| ConfigError::Secret(format!("{key}: cannot read {}: {e}", file.display())))?;
    match others {
        None => Ok(()),
        Some(who) => Err(ConfigError::Secret(format!(
            "{key}: {} is readable by {who}; fix it with: {}",
            file.display(),
            crate::owner_only::fix_hint(file)
        ))),
    }
}

/// Where the packaged service's config lives: `/etc/spatialgen-sync/` (the
/// .deb), `/usr/local/etc/spatialgen-sync/` on macOS (the launchd plist's),
/// `%ProgramData%\spatialgen-sync\` on Windows (`install.ps1`'s).
pub fn system_config() -> PathBuf {
    if cfg!(windows) {
        let data = std::env::var_os("ProgramData").map_or_else(|| PathBuf::from(r"C:\ProgramData"), PathBuf::from);
        data.join("spatialgen-sync").join("config.toml")
    } else if cfg!(target_os = "macos") {
        PathBuf::from("/usr/local/etc/spatialgen-sync/config.toml")
    } else {
        PathBuf::from("/etc/spatialgen-sync/config.toml")
    }
}

/// The config file to use when `--config` is left out: `system` (normally
/// [`system_config`]) if it exists, else `spatialgen-sync/config.toml` in the
/// XDG config folder (`$XDG_CONFIG_HOME`, or `~/.config` from `home`).
/// An error names every place looked at.
pub fn find_config(system: &Path, xdg_config_home: Option<&Path>, home: Option<&Path>) -> Result<PathBuf, ConfigError> {
    let user = xdg_config_home
        .filter(|p| p.is_absolute())
        .map(Path::to_path_buf)
        .or_else(|| home.map(|h| h.join(".config")))
        .map(|d| d.join("spatialgen-sync").join("config.toml"));
    let looked: Vec<PathBuf> = std::iter::once(system.to_path_buf()).chain(user).collect();
    match looked.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.clone()),
        None => Err(ConfigError::NotFound { looked }),
    }
}
