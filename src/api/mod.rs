//! The typed SpatialGen Direct Upload client: the four API calls, the
//! presigned part PUT, and the classification of every failure.
//!
//! Invariants:
//! - The key header (`X-SPATIALGEN-APPKEY`) is a default header of the *API*
//!   HTTP client only. Presigned PUTs go through a second HTTP client built
//!   with no default headers at all, so no code path can attach the key to a
//!   storage request.
//! - Redirects: the API client follows one only to the same scheme, host and
//!   port (the key goes with it); the storage client follows none. A refused
//!   redirect comes back as an [`ApiError::Status`] with the 3xx code (fatal).
//! - API calls have a total timeout (`request_timeout`). PUTs have none, since
//!   a large part on a slow link may rightly take long; instead a watchdog
//!   aborts a PUT that makes no progress for `stall_timeout` (see
//!   `watch_stall` for what counts as progress once the body is sent).
//!   Time the body spends waiting for a bandwidth limit
//!   (`held` in [`Client::put_part`]) does not count.
//! - Error text carries no key and no URL query string (see [`error`]).
//! - This module knows HTTP and JSON, not the journal: it never retries by
//!   itself. Callers decide with [`ApiError::class`] (see [`crate::retry`]).

pub mod error;
pub mod model;

#[cfg(test)]
mod bounds_tests;
#[cfg(test)]
mod decode_proptests;
#[cfg(all(test, feature = "sandbox"))]
mod sandbox_tests;
#[cfg(test)]
pub(crate) mod test_server;
#[cfg(test)]
mod tests;

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, Response, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use error::{ApiError, ErrorClass, Op, TransportKind, parse_retry_after, redact_url, scrub};
pub use model::{
    CompletedPart, CreatedFile, FileCompleted, GroupCreated, PartUrl, PartUrls, PartUrlsRequest, StartFile, StartGroup,
    Strategy,
};

use crate::config::{ApiConfig, ApiKey};

/// The header that carries the key on every API call (and on nothing else).
pub const KEY_HEADER: &str = "X-SPATIALGEN-APPKEY";

/// Path under the endpoint where every call hangs.
const API_PATH: [&str; 3] = ["api", "videos", "uploads"];

/// At most this much of an error body is read (it is only shown, condensed).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// At most this much of a JSON answer is read; a longer one is refused.
/// 10,000 part URLs of ~1 KiB each fit with room to spare.
pub const MAX_JSON_BODY: usize = 16 * 1024 * 1024;

/// At most this much of a storage answer's body is drained to return the
/// connection to the pool; past it the connection is dropped instead.
const MAX_STORAGE_DRAIN: usize = 64 * 1024;

/// Same-host redirects allowed before giving up.
const MAX_REDIRECTS: usize = 5;

/// A SpatialGen client. Cheap to clone (both HTTP clients share their pools).
#[derive(Clone)]
pub struct Client {
    /// JSON API calls; carries the key as a default header.
    api: reqwest::Client,
    /// Presigned PUTs; no default headers, no redirects, no total timeout.
    storage: reqwest::Client,
    /// `{endpoint}/api/videos/uploads`.
    base: Url,
    /// Kept only to scrub it out of server text that might echo it.
    key: ApiKey,
    /// A PUT with no progress for this long is aborted.
    stall_timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("base", &self.base.as_str()).field("stall_timeout", &self.stall_timeout).finish()
    }
}

/// How the server took a cancel ([`Client::cancel_group`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canceled {
    /// Canceled by this request.
    Now,
    /// The server does not know the group (404): expired or never created.
    Unknown,
    /// The group had already ended (409): canceled before, or completed.
    AlreadyEnded,
}

impl Client {
    /// A client for `cfg.endpoint`. Refuses an endpoint that is not
    /// `https://`, except plain `http://` to a loopback address (the sandbox).
    pub fn new(cfg: &ApiConfig, key: ApiKey) -> Result<Client, ApiError> {
        let base = base_url(&cfg.endpoint)?;
        if key.expose().trim().is_empty() {
            return Err(ApiError::Setup("the API key is empty".into()));
        }
        let mut key_value = HeaderValue::from_str(key.expose())
            .map_err(|_| ApiError::Setup("the API key contains characters not allowed in an HTTP header".into()))?;
        key_value.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(KEY_HEADER, key_value);
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));

        let user_agent = concat!("spatialgen-sync/", env!("CARGO_PKG_VERSION"));
        let api = reqwest::Client::builder()
            .user_agent(user_agent)
            .default_headers(headers)
            .redirect(reqwest::redirect::Policy::custom(same_origin_only))
            .connect_timeout(cfg.connect_timeout.0)
            .timeout(cfg.request_timeout.0)
            .build()
            .map_err(|e| ApiError::Setup(chain(&e.without_url())))?;
        let storage = reqwest::Client::builder()
            .user_agent(user_agent)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(cfg.connect_timeout.0)
            // No `read_timeout`: reqwest counts the whole upload as time
            // without a read and would abort a long, healthy PUT. The stall
            // watchdog in `put_part` covers sending and the answer alike.
            .build()
            .map_err(|e| ApiError::Setup(chain(&e.without_url())))?;
        Ok(Client { api, storage, base, key, stall_timeout: cfg.stall_timeout.0 })
    }

    /// `{endpoint}/api/videos/uploads`.
    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    /// Start Upload Group: registers every file; the answer carries the
    /// session id and, per file, its upload id, part size and strategy.
    ///
    /// Not idempotent: call it with [`crate::retry::Repeat::IfNotSent`]. After
    /// an ambiguous failure (a timeout, or the connection broken once the
    /// request was sent) the server may have created a group that nobody
    /// will upload to; it expires unused after 5 days. So the engine does not
    /// repeat the request at once: the group fails for now with the error and
    /// its automatic retry starts it again. A connect failure (nothing sent),
    /// 429 and 5xx are retried as usual.
    ///
    /// An answer that cannot be used (bad JSON, an absurd plan) may still
    /// name the group it created: if a session id can be read from it, that
    /// server group is canceled here, so nothing is left behind that nobody
    /// will upload to, and the error says so.
    pub async fn start_group(&self, req: &StartGroup) -> Result<GroupCreated, ApiError> {
        let op = Op::StartGroup;
        let url = self.url(&[]);
        let target = redact_url(url.as_str());
        let bytes = self.call_raw(op, Method::POST, url, Some(req)).await?;
        let mut err = match self.decode::<GroupCreated>(op, &target, &bytes) {
            Ok(created) => return Ok(created),
            Err(e) => e,
        };
        if let (Some(session), ApiError::InvalidResponse { detail, .. }) = (model::lenient_session_id(&bytes), &mut err)
        {
            match self.cancel_group(&session).await {
                Ok(_) => detail.push_str(&format!("; server group {session} canceled")),
                Err(e) => detail.push_str(&format!("; server group {session} could not be canceled ({e})")),
            }
        }
        Err(err)
    }

    /// Get Part URLs for one file. The answer is checked (byte ranges add up)
    /// before it is returned.
    pub async fn part_urls(&self, session: &str, upload_id: &str, req: &PartUrlsRequest) -> Result<PartUrls, ApiError> {
        let url = self.url(&[session, "files", upload_id, "part-urls"]);
        let target = redact_url(url.as_str());
        let urls: PartUrls = self.call(Op::PartUrls, Method::POST, url, Some(req)).await?;
        urls.check().map_err(|detail| ApiError::InvalidResponse { op: Op::PartUrls, target, detail })?;
        Ok(urls)
    }

    /// Complete File Upload. `parts` is every part from 1 to `totalParts`,
    /// ascending, for multipart; empty for single_put (sent as `{}`).
    /// Safe to repeat: completing a completed file returns the same state.
    pub async fn complete_file(
        &self,
        session: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<FileCompleted, ApiError> {
        let url = self.url(&[session, "files", upload_id, "complete"]);
        self.call(Op::CompleteFile, Method::POST, url, Some(&model::CompleteBody { parts })).await
    }

    /// Cancel Upload Group. A group the server no longer knows (404) or
    /// that already ended (409) is not an error: nothing will upload to it
    /// either way. Which one it was is in the [`Canceled`] answer, since a
    /// 409 may mean the group *completed* (the caller can find out with a
    /// repeated `complete`, which is safe).
    pub async fn cancel_group(&self, session: &str) -> Result<Canceled, ApiError> {
        let url = self.url(&[session]);
        let target = redact_url(url.as_str());
        let resp = self.api.delete(url).send().await.map_err(|e| self.transport(Op::CancelGroup, &target, e))?;
        let answer = match resp.status().as_u16() {
            _ if resp.status().is_success() => Canceled::Now,
            404 => Canceled::Unknown,
            409 => Canceled::AlreadyEnded,
            _ => return Err(self.status_error(Op::CancelGroup, &target, resp).await),
        };
        // Drain (bounded) so the connection goes back to the pool; the body says nothing we need.
        let _ = self.capped_body(Op::CancelGroup, &target, resp).await;
        Ok(answer)
    }

    /// PUT `len` bytes from `body` to a presigned URL; returns the `ETag`
    /// header verbatim (quotes included). Sent with no key, no redirects,
    /// an exact `Content-Length`, and aborted if no byte moves for the stall
    /// timeout. The body cannot be replayed: a retry needs a new one.
    ///
    /// `held`, for a body that is sometimes held back on purpose (a
    /// bandwidth limit): while it reads true, the time does not count
    /// towards the stall timeout, which measures time without progress
    /// while sending is allowed.
    pub async fn put_part(
        &self,
        url: &str,
        body: reqwest::Body,
        len: u64,
        held: Option<&AtomicBool>,
    ) -> Result<String, ApiError> {
        let never = AtomicBool::new(false);
        let held = held.unwrap_or(&never);
        let op = Op::PutPart;
        let target = redact_url(url);
        let parsed = Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| ApiError::InvalidResponse {
                op,
                target: target.clone(),
                detail: "the part URL is not an http(s) URL".into(),
            })?;
        let moved = Arc::new(AtomicU64::new(0));
        let body = reqwest::Body::wrap(Watched { inner: body, moved: moved.clone(), left: len });
        let request = async {
            let resp = self
                .storage
                .put(parsed)
                .header(header::CONTENT_LENGTH, len)
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .body(body)
                .send()
                .await
                .map_err(|e| self.transport(op, &target, e))?;
            if !resp.status().is_success() {
                return Err(self.status_error(op, &target, resp).await);
            }
            let etag = resp.headers().get(header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned);
            // The status is in; draining only returns the connection to the
            // pool. A body past the drain cap is not read: dropping the
            // response unread closes its connection.
            let mut resp = resp;
            let mut drained = 0usize;
            while drained < MAX_STORAGE_DRAIN {
                match resp.chunk().await {
                    Ok(Some(chunk)) => drained += chunk.len(),
                    Ok(None) | Err(_) => break,
                }
            }
            drop(resp);
            etag.filter(|e| !e.is_empty()).ok_or_else(|| ApiError::InvalidResponse {
                op,
                target: target.clone(),
                detail: "the storage answered 2xx without an ETag header".into(),
            })
        };
        match watch_stall(request, &moved, held, len, self.stall_timeout).await {
            Some(result) => result,
            None => Err(ApiError::Stalled { op, target, after: self.stall_timeout }),
        }
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut u = self.base.clone();
        u.path_segments_mut().expect("base_url() only accepts http(s) URLs, which have a path").extend(segments);
        u
    }

    async fn call<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        op: Op,
        method: Method,
        url: Url,
        body: Option<&B>,
    ) -> Result<T, ApiError> {
        let target = redact_url(url.as_str());
        let bytes = self.call_raw(op, method, url, body).await?;
        self.decode(op, &target, &bytes)
    }

    /// Send one API request; the body of its 2xx answer, capped.
    async fn call_raw<B: Serialize + ?Sized>(
        &self,
        op: Op,
        method: Method,
        url: Url,
        body: Option<&B>,
    ) -> Result<Vec<u8>, ApiError> {
        let target = redact_url(url.as_str());
        let mut req = self.api.request(method, url);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| self.transport(op, &target, e))?;
        if !resp.status().is_success() {
            return Err(self.status_error(op, &target, resp).await);
        }
        self.capped_body(op, &target, resp).await
    }

    fn decode<T: DeserializeOwned>(&self, op: Op, target: &str, bytes: &[u8]) -> Result<T, ApiError> {
        serde_json::from_slice(bytes).map_err(|e| ApiError::InvalidResponse {
            op,
            target: target.to_string(),
            // serde quotes offending values, which come from the server: scrub them.
            detail: scrub(&format!("cannot decode the JSON answer: {e}"), self.key.expose()),
        })
    }

    /// The body of a JSON answer, refused past [`MAX_JSON_BODY`] (by its
    /// `Content-Length` before reading, or as soon as the bytes read exceed it).
    async fn capped_body(&self, op: Op, target: &str, mut resp: Response) -> Result<Vec<u8>, ApiError> {
        let too_big = || ApiError::InvalidResponse {
            op,
            target: target.to_string(),
            detail: format!("the answer is larger than {} MiB; refused", MAX_JSON_BODY >> 20),
        };
        if resp.content_length().is_some_and(|n| n > MAX_JSON_BODY as u64) {
            return Err(too_big());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.transport(op, target, e))? {
            if body.len() + chunk.len() > MAX_JSON_BODY {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn transport(&self, op: Op, target: &str, e: reqwest::Error) -> ApiError {
        let kind = if e.is_timeout() {
            TransportKind::Timeout
        } else if e.is_connect() {
            TransportKind::Connect
        } else {
            TransportKind::Interrupted
        };
        ApiError::Transport {
            op,
            kind,
            target: target.to_string(),
            detail: scrub(&chain(&e.without_url()), self.key.expose()),
        }
    }

    async fn status_error(&self, op: Op, target: &str, mut resp: Response) -> ApiError {
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let message = if resp.status().is_redirection() {
            let to = resp.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()).map(redact_url);
            format!("redirect to {} not followed", to.as_deref().unwrap_or("(no Location)"))
        } else {
            let mut body = Vec::new();
            while body.len() < MAX_ERROR_BODY {
                match resp.chunk().await {
                    Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                    Ok(None) | Err(_) => break,
                }
            }
            error::condense_body(&body, self.key.expose())
        };
        ApiError::Status { op, status, target: target.to_string(), message, retry_after }
    }
}

/// Parse and vet the configured endpoint (with the same parser and rule as
/// `check`: [`crate::config::vet_endpoint`]); append the API path.
fn base_url(endpoint: &str) -> Result<Url, ApiError> {
    let refuse = |reason: &str| ApiError::Endpoint { endpoint: redact_url(endpoint), reason: reason.to_string() };
    let mut url = crate::config::vet_endpoint(endpoint).map_err(|e| refuse(&e))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse("credentials in the URL are not supported; use api_key_env or api_key_file"));
    }
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut().map_err(|_| refuse("not a hierarchical URL"))?.pop_if_empty().extend(API_PATH);
    Ok(url)
}

/// Redirect policy for the API client: the key is a default header, so a
/// redirect may only be followed where the key was meant to go.
fn same_origin_only(attempt: reqwest::redirect::Attempt<'_>) -> reqwest::redirect::Action {
    let Some(first) = attempt.previous().first() else { return attempt.stop() };
    let same = attempt.url().scheme() == first.scheme()
        && attempt.url().host_str() == first.host_str()
        && attempt.url().port_or_known_default() == first.port_or_known_default();
    if same && attempt.previous().len() <= MAX_REDIRECTS { attempt.follow() } else { attempt.stop() }
}

/// An error and its sources, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        src = s.source();
    }
    out
}

/// Run `fut` unless it stops making progress: `None` means stalled.
///
/// Progress is `moved`, the bytes hyper has taken from the body. While the
/// body is being sent, `stall` without a new byte is a stall. Once all `len`
/// bytes are taken, the socket buffers (several MiB) may still be draining
/// at the link's pace before the storage can answer, so the answer may take
/// `stall` *plus* as long as handing the body over took, which is the time
/// the link needed for a comparable amount of data. While `held` reads
/// true (the body waits for a bandwidth limiter) the clock is reset: that is
/// waiting by choice, not a stall.
async fn watch_stall<F: Future>(
    fut: F,
    moved: &AtomicU64,
    held: &AtomicBool,
    len: u64,
    stall: Duration,
) -> Option<F::Output> {
    let tick = (stall / 4).max(Duration::from_millis(5));
    let start = tokio::time::Instant::now();
    let mut seen = moved.load(Ordering::Relaxed);
    let mut since = start;
    let mut handed_over: Option<Duration> = None;
    let mut fut = std::pin::pin!(fut);
    loop {
        tokio::select! {
            out = &mut fut => return Some(out),
            _ = tokio::time::sleep(tick) => {
                let now = moved.load(Ordering::Relaxed);
                if now != seen || held.load(Ordering::Relaxed) {
                    seen = now;
                    since = tokio::time::Instant::now();
                }
                if handed_over.is_none() && seen >= len {
                    handed_over = Some(start.elapsed());
                }
                if since.elapsed() >= stall + handed_over.unwrap_or(Duration::ZERO) {
                    return None;
                }
            }
        }
    }
}

/// A request body that counts the bytes hyper takes from it (the stall
/// watchdog's signal) and reports its exact remaining size.
struct Watched {
    inner: reqwest::Body,
    moved: Arc<AtomicU64>,
    left: u64,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = reqwest::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let n = data.len() as u64;
            self.left = self.left.saturating_sub(n);
            self.moved.fetch_add(n, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

#[cfg(test)]
mod stall_tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waiting_for_the_bandwidth_limit_is_not_a_stall_but_silence_is() {
        let moved = AtomicU64::new(0);
        let stall = Duration::from_secs(60);
        // Held back by the limiter for ten stall periods: no stall.
        let held = AtomicBool::new(true);
        let slow = async {
            tokio::time::sleep(stall * 10).await;
            "sent"
        };
        assert_eq!(watch_stall(slow, &moved, &held, 100, stall).await, Some("sent"));
        // Nothing held and nothing moving: a stall after `stall`.
        let free = AtomicBool::new(false);
        let started = tokio::time::Instant::now();
        let silent = std::future::pending::<()>();
        assert_eq!(watch_stall(silent, &moved, &free, 100, stall).await, None);
        let waited = started.elapsed();
        assert!(waited >= stall && waited < stall * 2, "{waited:?}");
    }
}
