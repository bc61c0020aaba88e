//! What every request passes before a route sees it, and what every answer
//! carries: the `Host` check, the token of a write (from the headers,
//! before any body is read), the body cap, JSON errors and the security
//! headers.
//!
//! **Host.** A web page the user opens can point a name it controls at
//! 127.0.0.1 (DNS rebinding) and then read the console as if it were its
//! own origin. Such a request carries that name in `Host`, so a request is
//! answered only when its `Host` is
//! - an IP address: a loopback one, the one the connection arrived on, or
//!   any when the listener is bound to every address (an address cannot be
//!   rebound; only a name can);
//! - `localhost` or a name under `.localhost` (browsers resolve those to
//!   loopback themselves);
//! - this machine's host name;
//! - or a name in `[http] allowed_hosts` (`.example.com` allows the names
//!   under it; `*` allows any).
//!
//! Anything else gets 421 with a JSON error naming the setting. A request
//! without `Host` (HTTP/1.0 tools; no browser sends one) is answered.

use std::net::{IpAddr, SocketAddr};
use std::sync::LazyLock;

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::listen::LocalAddr;
use super::{Console, ConsoleError, PAGE};
use crate::journal::GroupId;

/// The largest request body the API takes (its bodies are a few dozen bytes).
pub const BODY_LIMIT: usize = 16 * 1024;

/// An error body this long at most is carried into the JSON error.
const ERROR_TEXT_LIMIT: usize = 2048;

/// Marks an answer whose non-2xx body is meant as text (`/healthz`).
#[derive(Debug, Clone, Copy)]
pub struct PlainText;

/// The host part of a `Host` header value, lower-cased, without the port,
/// brackets or a trailing dot.
fn host_name(value: &str) -> &str {
    let v = value.trim();
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    let host = match v.rsplit_once(':') {
        // One colon and digits after it: a port. More colons: a bare IPv6 address.
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => v,
    };
    host.strip_suffix('.').unwrap_or(host)
}

/// May a request with this `Host` be answered? See the module's doc.
pub fn host_allowed(
    value: &str,
    local: Option<IpAddr>,
    listen: Option<SocketAddr>,
    allowed: &[String],
    node: Option<&str>,
) -> bool {
    let host = host_name(value).to_ascii_lowercase();
    if host.is_empty() {
        return false;
    }
    if allowed.iter().any(|a| a == "*") {
        return true;
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return ip.is_loopback()
            || Some(ip) == local
            || listen.is_some_and(|l| l.ip() == ip || l.ip().is_unspecified())
            || allowed.iter().any(|a| host_name(a).parse::<IpAddr>().is_ok_and(|x| x == ip));
    }
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    if let Some(node) = node {
        let node = node.to_ascii_lowercase();
        let short = node.split('.').next().unwrap_or(&node);
        if host == node || host == short {
            return true;
        }
    }
    allowed.iter().any(|a| {
        let a = host_name(a).to_ascii_lowercase();
        match a.strip_prefix('.') {
            Some(domain) => host == domain || host.strip_suffix(&a).is_some_and(|sub| !sub.is_empty()),
            None => host == a,
        }
    })
}

/// This machine's host name, asked once (not a system call per request).
static HOST_NAME: LazyLock<String> = LazyLock::new(crate::config::host_name);

/// Refuse a request whose `Host` this console does not answer to (421).
pub async fn check_host(State(c): State<Console>, req: Request, next: Next) -> Response {
    let Some(value) = req.headers().get(header::HOST) else { return next.run(req).await };
    let cfg = c.controls.config();
    let allowed = cfg.http.as_ref().map(|h| h.allowed_hosts.as_slice()).unwrap_or_default();
    let local = req.extensions().get::<LocalAddr>().map(|l| l.0.ip());
    let ok = value.to_str().is_ok_and(|v| host_allowed(v, local, cfg.http_listen(), allowed, Some(&HOST_NAME)));
    if ok {
        return next.run(req).await;
    }
    let shown: String = String::from_utf8_lossy(value.as_bytes()).chars().take(100).collect();
    tracing::debug!(host = %shown, "request with a foreign Host refused");
    let message = format!(
        "this console does not answer to the Host {shown:?}: only to its listen address, loopback names and \
         [http] allowed_hosts (add the name there if it is a name of this machine)"
    );
    (StatusCode::MISDIRECTED_REQUEST, axum::Json(json!({ "error": message }))).into_response()
}

/// A write goes on only with the token: decided from the headers alone, so
/// a refused client's body is never read.
pub async fn require_token(State(c): State<Console>, req: Request, next: Next) -> Response {
    match c.authorize(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// A body declared larger than [`BODY_LIMIT`] is refused before it is read
/// (a chunked one stops at the limit in the extractor).
pub async fn limit_body(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return ConsoleError::TooLarge.into_response();
    }
    next.run(req).await
}

/// Every answer: an error's body as `{"error": "…"}`, and the security
/// headers (the page's CSP allows its own inline script and style, by
/// hash, and requests to this origin; nothing else).
pub async fn harden(req: Request, next: Next) -> Response {
    let is_page = req.uri().path() == "/";
    let mut resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if (status.is_client_error() || status.is_server_error())
        && !is_json
        && resp.extensions().get::<PlainText>().is_none()
    {
        resp = as_json_error(resp).await;
    }
    let h = resp.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    let csp = if is_page { PAGE_CSP.clone() } else { HeaderValue::from_static(API_CSP) };
    h.insert(header::CONTENT_SECURITY_POLICY, csp);
    resp
}

/// Turn a text (or empty) error answer into `{"error": "…"}`, keeping its
/// status and headers such as `Allow` and `WWW-Authenticate`.
async fn as_json_error(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let text = match axum::body::to_bytes(body, ERROR_TEXT_LIMIT).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(_) => String::new(),
    };
    let text =
        if text.is_empty() { parts.status.canonical_reason().unwrap_or("error").to_ascii_lowercase() } else { text };
    let body = json!({ "error": text }).to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(body))
}

/// Answers other than the page load nothing and may not be framed.
const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// The page's policy: its inline `<script>` and `<style>` by hash.
static PAGE_CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    HeaderValue::from_str(&page_csp(PAGE)).unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
});

/// The CSP for a page whose script and style are inline blocks.
pub fn page_csp(page: &str) -> String {
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        inline_hashes(page, "<script>", "</script>"),
        inline_hashes(page, "<style>", "</style>"),
    )
}

/// `'sha256-…'` of every `open`…`close` block of `page`, space-separated
/// (`'none'` when there is none).
fn inline_hashes(page: &str, open: &str, close: &str) -> String {
    let mut out = Vec::new();
    let mut rest = page;
    while let Some(start) = rest.find(open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(close) else { break };
        let digest = Sha256::digest(&after.as_bytes()[..end]);
        out.push(format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(digest)));
        rest = &after[end + close.len()..];
    }
    if out.is_empty() { "'none'".into() } else { out.join(" ") }
}

/// A group id from the path; anything else is a 400 that does not echo it.
pub struct GroupPath(pub GroupId);

impl<S: Send + Sync> FromRequestParts<S> for GroupPath {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<GroupPath, ConsoleError> {
        match Path::<GroupId>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(GroupPath(id)),
            Err(_) => Err(ConsoleError::BadRequest(
                "the group in the path must be its id: a whole number, as `status` shows it".into(),
            )),
        }
    }
}
