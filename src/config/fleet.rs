//! `[journal]` for a fleet: the PostgreSQL URL (its password never shown),
//! the node's name, the lease, the password's sources; and the rules that
//! tie them to `[[watch]] name`. Nothing here connects to the database:
//! `journal::pg` does, with what is checked here.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ConfigError;
use super::env::check_secret_permissions;

/// The `sslmode` values libpq knows, in its spelling.
pub const SSL_MODES: [&str; 6] = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"];

/// `[journal] url`: a `postgresql://` (or `postgres://`) URL. `Debug`,
/// `Display` and serialization show it with any password replaced by `***`;
/// only [`DatabaseUrl::expose`] gives the text as written.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> DatabaseUrl {
        DatabaseUrl(url.into())
    }

    /// The URL as written, password included: for the database client only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password (if any) replaced by `***`.
    pub fn redacted(&self) -> String {
        match reqwest::Url::parse(&self.0) {
            Ok(mut u) => {
                if u.password().is_some() {
                    let _ = u.set_password(Some("***"));
                }
                u.to_string()
            }
            Err(_) => "(not a URL; not shown)".to_string(),
        }
    }

    /// Check the URL's shape: scheme, host, database name, a known
    /// `sslmode`. The message says what is wrong without repeating the password.
    pub fn vet(&self) -> Result<DatabaseTarget, String> {
        let u = reqwest::Url::parse(self.0.trim())
            .map_err(|e| format!("is not a URL ({e}); expected postgresql://user@host/database"))?;
        if !matches!(u.scheme(), "postgresql" | "postgres") {
            return Err(format!("scheme {:?} is not postgresql://", u.scheme()));
        }
        let host = u.host_str().filter(|h| !h.is_empty()).ok_or("has no host")?.to_string();
        let dbname = u.path().trim_start_matches('/').to_string();
        if dbname.is_empty() || dbname.contains('/') {
            return Err("must name one database after the host (postgresql://user@host/database)".into());
        }
        let mut sslmode = "prefer".to_string();
        let mut sslrootcert = None;
        for (k, v) in u.query_pairs() {
            match k.as_ref() {
                "sslmode" => {
                    if !SSL_MODES.contains(&v.as_ref()) {
                        return Err(format!("sslmode {v:?} is not one of {}", SSL_MODES.join(", ")));
                    }
                    sslmode = v.into_owned();
                }
                "sslrootcert" => sslrootcert = Some(PathBuf::from(v.as_ref())),
                _ => {}
            }
        }
        Ok(DatabaseTarget {
            host,
            port: u.port().unwrap_or(5432),
            dbname,
            user: (!u.username().is_empty()).then(|| u.username().to_string()),
            has_password: u.password().is_some(),
            sslmode,
            sslrootcert,
        })
    }
}

/// What a vetted URL names (no password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseTarget {
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub user: Option<String>,
    pub has_password: bool,
    /// libpq's spelling; `prefer` when the URL says nothing.
    pub sslmode: String,
    pub sslrootcert: Option<PathBuf>,
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<DatabaseUrl, D::Error> {
        String::deserialize(d).map(DatabaseUrl)
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

/// Is `name` usable as a node's or a watch folder's fleet-wide name?
/// Letters, digits, `.`, `_`, `-`; 1 to 64 of them.
pub(super) fn fleet_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 64 {
        return Some("must be 1 to 64 characters".into());
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return Some(format!("{name:?} may hold only letters, digits, '.', '_' and '-'"));
    }
    None
}

/// This machine's host name, the default node name.
pub fn host_name() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname writes at
        // most that many bytes and we stop at the first NUL.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if rc == 0 {
            let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
            let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
            if !name.is_empty() {
                return name;
            }
        }
    }
    std::env::var("COMPUTERNAME").or_else(|_| std::env::var("HOSTNAME")).unwrap_or_else(|_| "localhost".into())
}

/// The password for the database, in libpq's order: in the URL, else the
/// `PGPASSWORD` environment variable, else `password_file` (which must be
/// private, like the API key file). `None`: connect without one (trust,
/// peer or certificate authentication).
pub fn database_password(url: &DatabaseUrl, password_file: Option<&Path>) -> Result<Option<String>, ConfigError> {
    if url.vet().is_ok_and(|t| t.has_password) {
        return Ok(None); // the client takes it from the URL itself
    }
    if let Ok(p) = std::env::var("PGPASSWORD")
        && !p.is_empty()
    {
        return Ok(Some(p));
    }
    let Some(file) = password_file else { return Ok(None) };
    check_secret_permissions("journal.password_file", file)?;
    let raw = std::fs::read_to_string(file)
        .map_err(|e| ConfigError::Secret(format!("journal.password_file: cannot read {}: {e}", file.display())))?;
    let p = raw.trim_end_matches(['\r', '\n']);
    if p.is_empty() {
        return Err(ConfigError::Secret(format!("journal.password_file: {} is empty", file.display())));
    }
    Ok(Some(p.to_string()))
}
