//! [`ApiError`]: every way an API call or a storage PUT can fail, and the one
//! question each failure answers ([`ErrorClass`]): retry it, refresh the part
//! URLs and retry, the group is gone, or fatal.
//!
//! Error text is shown to users and written to logs, so it is built from
//! redacted pieces only: presigned URLs appear as `scheme://host/path?…`, and
//! the server's own words are scrubbed of URL query strings and of the key.

use std::fmt;
use std::time::Duration;

pub use crate::retry::ErrorClass;

/// Which request failed; part of every message and of the classification
/// (a 403 from storage means an expired URL, from the API a bad key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    StartGroup,
    PartUrls,
    CompleteFile,
    CancelGroup,
    PutPart,
}

impl Op {
    /// A request to object storage (presigned URL) rather than to the API.
    pub fn is_storage(self) -> bool {
        matches!(self, Op::PutPart)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::StartGroup => "start upload group",
            Op::PartUrls => "get part URLs",
            Op::CompleteFile => "complete file upload",
            Op::CancelGroup => "cancel upload group",
            Op::PutPart => "upload part",
        })
    }
}

/// How a request failed below HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// TCP or TLS connection could not be made.
    Connect,
    /// The connect or request timeout fired.
    Timeout,
    /// The connection broke while the request or response was under way
    /// (reset, closed early, body error).
    Interrupted,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Connect => "cannot connect",
            TransportKind::Timeout => "timed out",
            TransportKind::Interrupted => "connection interrupted",
        })
    }
}

/// Every failure of [`super::Client`]. See [`ApiError::class`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The configured endpoint cannot be used (not a URL, plain `http://` to a
    /// non-loopback host, ...).
    #[error("API endpoint {endpoint:?} refused: {reason}")]
    Endpoint { endpoint: String, reason: String },
    /// The HTTP client could not be built (TLS roots, a key that is not a valid header value, ...).
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
    /// The request never got an HTTP answer.
    #[error("{op}: {kind} ({target}): {detail}")]
    Transport { op: Op, kind: TransportKind, target: String, detail: String },
    /// A part PUT made no progress for the stall timeout and was aborted.
    #[error("{op}: no progress for {} ({target})", crate::config::Dur(*.after))]
    Stalled { op: Op, target: String, after: Duration },
    /// A non-2xx answer. `message` is the server's body, condensed and scrubbed:
    /// shown to the user, never interpreted.
    #[error("{op}: HTTP {status} from {target}{}", if .message.is_empty() { String::new() } else { format!(": {}", .message) })]
    Status { op: Op, status: u16, target: String, message: String, retry_after: Option<Duration> },
    /// A 2xx answer this client cannot use (bad JSON, a part whose byte range
    /// does not add up, no ETag, ...).
    #[error("{op}: unexpected response from {target}: {detail}")]
    InvalidResponse { op: Op, target: String, detail: String },
}

impl ApiError {
    /// The one decision every caller needs; see [`ErrorClass`].
    pub fn class(&self) -> ErrorClass {
        match self {
            ApiError::Endpoint { .. } | ApiError::Setup(_) | ApiError::InvalidResponse { .. } => ErrorClass::Fatal,
            ApiError::Transport { .. } | ApiError::Stalled { .. } => ErrorClass::Retry { after: None },
            ApiError::Status { op, status, retry_after, .. } => match (*status, op.is_storage()) {
                (408 | 429 | 500..=599, _) => ErrorClass::Retry { after: *retry_after },
                // S3 answers an expired (or otherwise no longer valid) signature with 403.
                (403, true) => ErrorClass::RefreshUrls,
                // API: unknown or expired session/file. Storage: the multipart
                // upload behind the URL was aborted (group canceled or expired).
                (404, _) => ErrorClass::Gone,
                _ => ErrorClass::Fatal,
            },
        }
    }

    /// The API refused the key or its role (401/403 from the API, not from storage).
    pub fn is_auth(&self) -> bool {
        matches!(self, ApiError::Status { op, status: 401 | 403, .. } if !op.is_storage())
    }

    /// The HTTP status, when there was an HTTP answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Which request failed, when a request was made.
    pub fn op(&self) -> Option<Op> {
        match self {
            ApiError::Transport { op, .. }
            | ApiError::Stalled { op, .. }
            | ApiError::Status { op, .. }
            | ApiError::InvalidResponse { op, .. } => Some(*op),
            ApiError::Endpoint { .. } | ApiError::Setup(_) => None,
        }
    }
}

/// `scheme://host[:port]/path`, with `?…` when the URL had a query string.
/// Presigned URLs carry their signature in the query: it must never reach
/// a log line or an error message.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let mut out = format!("{}://{}", u.scheme(), u.host_str().unwrap_or(""));
            if let Some(port) = u.port() {
                out.push_str(&format!(":{port}"));
            }
            out.push_str(u.path());
            if u.query().is_some() {
                out.push_str("?…");
            }
            out
        }
        // Not a URL we can parse: keep what is before any query or fragment,
        // and drop anything that looks like credentials.
        Err(_) => {
            let cut = url.find(['?', '#']).unwrap_or(url.len());
            let head = &url[..cut];
            let head = match head.find("://") {
                Some(i) => match head[i + 3..].find('@') {
                    Some(at) if !head[i + 3..i + 3 + at].contains('/') => {
                        format!("{}{}", &head[..i + 3], &head[i + 3 + at + 1..])
                    }
                    _ => head.to_string(),
                },
                None => head.to_string(),
            };
            if cut < url.len() { format!("{head}?…") } else { head }
        }
    }
}

/// Text from the outside (a server's error body, a library's error chain)
/// made safe to show: every `http(s)://` URL in it loses its query string,
/// and the key, if it appears, becomes `***`.
pub fn scrub(text: &str, key: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = find_url(rest) {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let end =
            tail.find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ')')).unwrap_or(tail.len());
        out.push_str(&redact_url(&tail[..end]));
        rest = &tail[end..];
    }
    out.push_str(rest);
    if key.is_empty() { out } else { out.replace(key, "***") }
}

fn find_url(s: &str) -> Option<usize> {
    let lower = s.to_ascii_lowercase();
    match (lower.find("http://"), lower.find("https://")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The server's error body condensed for a message: `error: message` from a
/// JSON body when it has those fields, otherwise the text itself with
/// whitespace collapsed, cut to a readable length. Never interpreted.
pub(crate) fn condense_body(body: &[u8], key: &str) -> String {
    const MAX: usize = 600;
    let text = String::from_utf8_lossy(body);
    let from_json = serde_json::from_str::<serde_json::Value>(&text).ok().and_then(|v| {
        let obj = v.as_object()?;
        let field = |k: &str| obj.get(k).and_then(|x| x.as_str()).filter(|s| !s.is_empty());
        match (field("error"), field("message")) {
            (Some(e), Some(m)) if e != m => Some(format!("{e}: {m}")),
            (Some(e), _) => Some(e.to_string()),
            (None, Some(m)) => Some(m.to_string()),
            (None, None) => None,
        }
    });
    let text = from_json.unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "));
    let mut text = scrub(&text, key);
    if text.len() > MAX {
        let mut cut = MAX;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// Lives with the retry policy; re-exported so `api::parse_retry_after` keeps working.
pub use crate::retry::parse_retry_after;

impl crate::retry::Retryable for ApiError {
    fn class(&self) -> ErrorClass {
        ApiError::class(self)
    }

    fn may_have_arrived(&self) -> bool {
        match self {
            ApiError::Transport { kind, .. } => matches!(kind, TransportKind::Timeout | TransportKind::Interrupted),
            // A PUT that stalled had started sending its body.
            ApiError::Stalled { .. } => true,
            ApiError::Endpoint { .. }
            | ApiError::Setup(_)
            | ApiError::Status { .. }
            | ApiError::InvalidResponse { .. } => false,
        }
    }
}
