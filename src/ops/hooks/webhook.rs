//! The webhook: one signed JSON POST per ended group, retried by
//! [`crate::retry`].
//!
//! The body is serialized once and those exact bytes are both sent and
//! signed: `X-SpatialGen-Sync-Signature: sha256=<hex HMAC-SHA256 of the
//! body>` with the secret from `hooks.webhook_secret_file` ([`sign`]). A
//! receiver recomputes the HMAC over the raw body it read (before parsing
//! it) and compares in constant time. The secret is held as a
//! [`WebhookSecret`], whose `Debug` and `Display` never show it; the URL is
//! logged as scheme and host only.

use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use super::HooksError;
use crate::config::WebhookSecret;
use crate::retry::{Repeat, Retry, RetryError, RetryPolicy, parse_retry_after, with_retries};

/// The header that carries the body's signature.
pub const SIGNATURE_HEADER: &str = "X-SpatialGen-Sync-Signature";

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under `secret`, as sent in
/// [`SIGNATURE_HEADER`].
pub fn sign(secret: &WebhookSecret, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.expose()).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[derive(Debug, Clone)]
pub(super) struct Webhook {
    pub(super) url: reqwest::Url,
    /// `scheme://host[:port]`, the only part of the URL that is logged.
    pub(super) shown: String,
    pub(super) client: reqwest::Client,
    /// Signs every body when set.
    pub(super) secret: Option<WebhookSecret>,
}

/// How one webhook delivery ended.
#[derive(Debug)]
pub(super) enum Sent {
    Delivered,
    /// The receiver refused it (a 4xx other than 408/429), or the request
    /// cannot be built: repeating the same body cannot help.
    Refused,
    /// Still failing in a way that may pass (unreachable, 5xx, 429) when
    /// this round's retry budget ran out.
    Failing,
    /// The token fired first.
    Canceled,
}

impl Webhook {
    pub(super) fn new(raw: &str, secret: Option<WebhookSecret>) -> Result<Webhook, HooksError> {
        let url = reqwest::Url::parse(raw).map_err(|e| HooksError::BadUrl(format!("{e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(HooksError::BadUrl("must be an http(s) URL with a host".into()));
        }
        let shown = shown_url(&url);
        let client = reqwest::Client::builder()
            .user_agent(concat!("spatialgen-sync/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(HooksError::Client)?;
        Ok(Webhook { url, shown, client, secret })
    }

    /// POST `body` until it is delivered, refused, the policy's budget is
    /// spent, or `cancel` fires (no attempt starts after that).
    pub(super) async fn send(
        &self,
        body: &serde_json::Value,
        policy: RetryPolicy,
        timeout: Duration,
        cancel: &CancellationToken,
        group: i64,
    ) -> Sent {
        let bytes = match serde_json::to_vec(body) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(group, "webhook {}: {}; given up", self.shown, HooksError::Body(e.to_string()));
                return Sent::Refused;
            }
        };
        let signature = self.secret.as_ref().map(|s| sign(s, &bytes));
        let what = format!("webhook {}", self.shown);
        let mut last = 0u32;
        let op = |attempt: u32| {
            last = attempt;
            self.post_once(bytes.clone(), signature.clone(), timeout)
        };
        let result = with_retries(&policy, Retry::new(&what, cancel, Repeat::Always), op).await;
        let shown = &self.shown;
        match result {
            Ok(()) => {
                tracing::info!(group, "webhook {shown} delivered (attempt {last})");
                Sent::Delivered
            }
            // No claim gates a webhook: Unconfirmed cannot happen here.
            Err(RetryError::Canceled | RetryError::Unconfirmed) => {
                tracing::warn!(group, "webhook {shown} not delivered: shutdown after attempt {last}");
                Sent::Canceled
            }
            Err(RetryError::Exhausted { last: e, .. }) => {
                tracing::warn!(group, "webhook {shown} still failing after attempt {last}: {e}");
                Sent::Failing
            }
            Err(RetryError::Stopped(e)) => {
                tracing::error!(group, "webhook {shown} refused at attempt {last}; given up: {e}");
                Sent::Refused
            }
        }
    }

    async fn post_once(&self, body: Vec<u8>, signature: Option<String>, timeout: Duration) -> Result<(), HooksError> {
        let mut req = self
            .client
            .post(self.url.clone())
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(sig) = signature {
            req = req.header(SIGNATURE_HEADER, sig);
        }
        let resp = req.body(body).send().await.map_err(|e| HooksError::Transport(e.without_url()))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let text: String = resp.text().await.unwrap_or_default().chars().take(512).collect();
        let code = status.as_u16();
        let retry = status.is_server_error() || code == 408 || code == 429;
        Err(HooksError::Status { status: code, body: text, retry, retry_after })
    }
}

/// `scheme://host[:port]` of `url`: enough to say where, never a path token or query secret.
fn shown_url(url: &reqwest::Url) -> String {
    match url.port() {
        Some(p) => format!("{}://{}:{p}", url.scheme(), url.host_str().unwrap_or("?")),
        None => format!("{}://{}", url.scheme(), url.host_str().unwrap_or("?")),
    }
}
