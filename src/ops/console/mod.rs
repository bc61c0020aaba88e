//! The console: one HTTP listener for `/metrics`, `/healthz`, the control
//! API under `/api/v1/` and the web page at `/`.
//!
//! The handlers are thin: every read is one journal call (through
//! [`AsyncJournal::call`]) turned into the same rows `status --json` prints
//! ([`crate::ops::status`]); every action is the function the CLI calls
//! ([`crate::upload::control`]: cancel, retry, pause, resume). What only the
//! running agent knows (the window state, the bandwidth in force, whether
//! the engine still runs) comes through [`Controls`], so the routes are
//! tested against a real journal with a stand-in for the rest.
//!
//! Writes (POST, PUT) need `Authorization: Bearer <token>` with the token of
//! `[http] token_file`, compared in constant time; a missing or wrong one
//! gets 401 before anything is looked at. Without a token file the API is
//! read-only: writes get 403 saying how to turn them on. Reads need no
//! token (they show what `status` shows, never a secret). The token is
//! never logged or echoed.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Serialize;
use serde_json::{Value, json};

use crate::config::{Config, HttpToken, Rate};
use crate::journal::{AsyncJournal, GroupId, JournalError, Pause, PauseView};
use crate::ops::metrics::{Metrics, StateSource};
use crate::ops::status::{file_json, history_json, json_row};
use crate::upload::EngineError;
use crate::upload::control::{self, CancelAnswer, RetryAnswer};

pub mod guard;
pub mod listen;
pub mod nodes;
pub mod pages;

use self::guard::GroupPath;

/// The page, with its CSS and script inline: no CDN, no build step.
pub const PAGE: &str = include_str!("page.html");

/// How long `POST …/cancel` waits for the running engine to carry out the
/// cancel before answering 202 (it still carries it out).
const CANCEL_WAIT: Duration = Duration::from_secs(10);

/// Why a request was refused; each maps to one status code and a JSON
/// body `{"error": "…"}`.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("a write needs the header Authorization: Bearer <token> with the token of [http] token_file")]
    Unauthorized,
    #[error("the control API is read-only: set [http] token_file (a 0600 file holding a token) to allow writes")]
    ReadOnly,
    #[error("no group {0} in the journal")]
    NoSuchGroup(GroupId),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("journal unreachable: {0}")]
    Journal(JournalError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("cannot render the answer: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the request body is over the limit of {} KiB", guard::BODY_LIMIT / 1024)]
    TooLarge,
    #[error("no such page or API route")]
    NotFound,
}

impl From<JournalError> for ConsoleError {
    fn from(e: JournalError) -> ConsoleError {
        match e {
            JournalError::NoSuchGroup(id) => ConsoleError::NoSuchGroup(id),
            e => ConsoleError::Journal(e),
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let code = match &self {
            ConsoleError::Unauthorized => StatusCode::UNAUTHORIZED,
            ConsoleError::ReadOnly => StatusCode::FORBIDDEN,
            ConsoleError::NoSuchGroup(_) | ConsoleError::NotFound => StatusCode::NOT_FOUND,
            ConsoleError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ConsoleError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ConsoleError::Conflict(_) => StatusCode::CONFLICT,
            ConsoleError::Journal(_) => StatusCode::SERVICE_UNAVAILABLE,
            ConsoleError::Engine(_) | ConsoleError::Json(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = axum::Json(json!({ "error": self.to_string() }));
        if code == StatusCode::UNAUTHORIZED {
            (code, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
        } else {
            (code, body).into_response()
        }
    }
}

/// The upload windows as the console shows them.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WindowsView {
    /// Are any `[[upload.window]]` configured?
    pub configured: bool,
    /// May uploads run now (always, without windows)?
    pub open: bool,
    /// `open`, `open until …`, `paused until …`.
    pub message: String,
    /// When that flips next (RFC 3339), if ever.
    pub until: Option<String>,
}

/// The bandwidth limit in force.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BandwidthView {
    /// Bytes per second; None = unlimited.
    pub bytes_per_second: Option<u64>,
    /// Set through `PUT /api/v1/bandwidth` (until the next reload), rather than by the config.
    pub live: bool,
}

/// What only the running agent knows, for `GET /api/v1/status`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentView {
    pub windows: WindowsView,
    pub bandwidth: BandwidthView,
    /// This agent's host name.
    pub node: Option<String>,
    /// Is the upload engine running?
    pub engine_running: bool,
    pub version: &'static str,
}

/// The running agent's side of the console.
pub trait Controls: Send + Sync + 'static {
    /// The state that is not in the journal.
    fn agent(&self) -> AgentView;
    /// Set (`Some`) or lift (`None`) the bandwidth limit, live, until the next reload.
    fn set_bandwidth(&self, limit: Option<Rate>);
    /// Why the engine stopped, if it did (the agent is then unhealthy).
    fn engine_stopped(&self) -> Option<String>;
    /// The config in force (for a cancel's API client, the watch folders).
    fn config(&self) -> Arc<Config>;
}

/// Everything the routes share. Cheap to clone.
#[derive(Clone)]
pub struct Console {
    pub journal: AsyncJournal,
    pub controls: Arc<dyn Controls>,
    /// The bearer token; replaced on reload. None = read-only.
    pub token: Arc<RwLock<Option<HttpToken>>>,
    pub metrics: Arc<Metrics>,
    pub source: Arc<dyn StateSource>,
}

impl Console {
    /// A write may go ahead: the token is configured and the request carries it.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), ConsoleError> {
        let token = self.token.read().unwrap_or_else(|p| p.into_inner());
        let Some(token) = token.as_ref() else { return Err(ConsoleError::ReadOnly) };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match given {
            Some(g) if token.matches(g) => Ok(()),
            _ => Err(ConsoleError::Unauthorized),
        }
    }
}

/// Every route of the listener, behind the guards of [`guard`]: the Host
/// check on everything, the token (from the headers) and then the body cap
/// on writes, JSON errors and security headers on every answer.
pub fn router(console: Console) -> Router {
    let metrics = crate::ops::metrics::metrics_router(console.metrics.clone(), console.source.clone());
    let writes = Router::new()
        .route("/api/v1/groups/{id}/cancel", post(cancel))
        .route("/api/v1/groups/{id}/retry", post(retry))
        .route("/api/v1/pause", post(pause))
        .route("/api/v1/resume", post(resume))
        .route("/api/v1/bandwidth", put(bandwidth))
        // Layers run last-added first: the token, then the body's size.
        .route_layer(middleware::from_fn(guard::limit_body))
        .route_layer(middleware::from_fn_with_state(console.clone(), guard::require_token));
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(health))
        .route("/api/v1/status", get(pages::status))
        .route("/api/v1/groups", get(pages::groups))
        .route("/api/v1/events", get(pages::events))
        .route("/api/v1/nodes", get(nodes::nodes))
        .route("/api/v1/groups/{id}", get(group))
        .merge(writes)
        .with_state(console.clone())
        .merge(metrics)
        .fallback(|| async { ConsoleError::NotFound })
        .layer(DefaultBodyLimit::max(guard::BODY_LIMIT))
        .layer(middleware::from_fn_with_state(console, guard::check_host))
        .layer(middleware::from_fn(guard::harden))
}

async fn page() -> Response {
    ([(header::CACHE_CONTROL, "no-cache")], Html(PAGE)).into_response()
}

/// The pauses as the console lists them: every one the journal records,
/// then a closed upload window.
fn pauses_json(pauses: &[Pause], windows: &WindowsView) -> serde_json::Result<Vec<Value>> {
    let mut out: Vec<Value> =
        pauses.iter().map(|p| serde_json::to_value(PauseView::from(p))).collect::<Result<_, _>>()?;
    if !windows.open {
        out.push(json!({
            "reason": "window",
            "message": format!("outside every upload window: {}", windows.message),
            "since": null,
            "nextCheck": windows.until,
        }));
    }
    Ok(out)
}

async fn group(State(c): State<Console>, GroupPath(id): GroupPath) -> Result<Response, ConsoleError> {
    let (row, record, events, pauses) =
        c.journal.call(move |j| Ok((j.summary(id)?, j.group(id)?, j.events(id)?, j.pauses()?))).await?;
    let mut v = json_row(&row, &pauses)?;
    if let Value::Object(m) = &mut v {
        // `files` is the row's count; each file itself is in `fileDetails`.
        m.insert("fileDetails".into(), Value::Array(record.files.iter().map(file_json).collect()));
        m.insert("history".into(), Value::Array(history_json(&events)));
    }
    Ok(axum::Json(v).into_response())
}

async fn cancel(State(c): State<Console>, GroupPath(id): GroupPath) -> Result<Response, ConsoleError> {
    c.journal.call(move |j| j.summary(id)).await?;
    let cfg = c.controls.config();
    let answer = control::cancel(&cfg, &c.journal, id, CANCEL_WAIT).await?;
    tracing::info!(group = id, ?answer, "cancel from the console");
    let (code, result, message) = match answer {
        CancelAnswer::Canceled => (StatusCode::OK, "canceled", format!("group {id} canceled")),
        CancelAnswer::AlreadyCanceled => (StatusCode::OK, "canceled", format!("group {id} is already canceled")),
        CancelAnswer::Requested => (
            StatusCode::ACCEPTED,
            "requested",
            format!("the cancel of group {id} is recorded; the running agent carries it out"),
        ),
        CancelAnswer::StillSettling => {
            return Err(ConsoleError::Conflict(format!("group {id} is still settling; nothing has been sent yet")));
        }
        CancelAnswer::CompletedOnServer { library_id } => {
            return Err(ConsoleError::Conflict(format!(
                "group {id} was not canceled: it had completed on the server (library id {library_id})"
            )));
        }
        CancelAnswer::NothingToCancel(state) => {
            return Err(ConsoleError::Conflict(format!("group {id} is {state}; there is nothing to cancel")));
        }
        CancelAnswer::NotCanceled(why) => {
            return Err(ConsoleError::Conflict(format!("group {id}: not canceled: {why}")));
        }
    };
    Ok((code, axum::Json(json!({ "result": result, "message": message, "id": id }))).into_response())
}

async fn retry(State(c): State<Console>, GroupPath(id): GroupPath) -> Result<Response, ConsoleError> {
    match c.journal.call(move |j| control::retry(j, id)).await? {
        RetryAnswer::Requeued { id: new } => {
            tracing::info!(group = id, requeued_as = new, "retry from the console");
            let message = if new == id {
                format!("group {id} re-queued")
            } else {
                format!("group {id} re-queued as group {new}")
            };
            Ok(axum::Json(json!({ "result": "requeued", "id": new, "message": message })).into_response())
        }
        RetryAnswer::Refused(why) => Err(ConsoleError::Conflict(why)),
    }
}

async fn pause(State(c): State<Console>) -> Result<Response, ConsoleError> {
    let changed = c.journal.call(|j| control::pause(j, "from the console")).await?;
    tracing::info!(changed, "pause from the console");
    Ok(axum::Json(json!({ "paused": true, "changed": changed })).into_response())
}

async fn resume(State(c): State<Console>) -> Result<Response, ConsoleError> {
    let changed = c.journal.call(control::resume).await?;
    tracing::info!(changed, "resume from the console");
    Ok(axum::Json(json!({ "paused": false, "changed": changed })).into_response())
}

/// `PUT /api/v1/bandwidth` with `{"limit": "200MiB/s"}` or `{"limit": null}`.
async fn bandwidth(State(c): State<Console>, body: Bytes) -> Result<Response, ConsoleError> {
    let bad = || ConsoleError::BadRequest(r#"expected {"limit": "200MiB/s"} or {"limit": null}"#.into());
    let v: Value = serde_json::from_slice(&body).map_err(|_| bad())?;
    let limit = match v.get("limit").ok_or_else(bad)? {
        Value::Null => None,
        Value::String(s) => Some(s.parse::<Rate>().map_err(ConsoleError::BadRequest)?),
        _ => return Err(bad()),
    };
    c.controls.set_bandwidth(limit);
    tracing::info!(bytes_per_second = ?limit.map(|r| r.0), "bandwidth set from the console until the next reload");
    Ok(axum::Json(json!({ "bytesPerSecond": limit.map(|r| r.0) })).into_response())
}

/// 200 `ok`, or 503 with one line per reason: the engine stopped, the
/// journal cannot be read, a fault it records (the key refused, a watch
/// folder missing), or a configured watch folder that is not there now.
/// An operator's pause is not a fault.
async fn health(State(c): State<Console>) -> Response {
    let mut reasons: Vec<String> = Vec::new();
    if let Some(why) = c.controls.engine_stopped() {
        reasons.push(format!("engine stopped: {why}"));
    }
    let source = c.source.clone();
    let read = tokio::task::spawn_blocking(move || source.snapshot().map_err(|e| e.to_string()));
    // A stalled database must not stall the health check with it.
    let limit = c.journal.blocking().call_timeout().unwrap_or(Duration::from_secs(30));
    let snap = match tokio::time::timeout(limit, read).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(format!("journal read did not finish: {e}")),
        Err(_) => Err(format!("the journal database did not answer within {}", crate::config::Dur(limit))),
    };
    match snap {
        Ok(s) => reasons.extend(s.held.into_iter().map(|(_, line)| line)),
        Err(e) => reasons.push(format!("journal unreachable: {e}")),
    }
    let cfg = c.controls.config();
    let folders: Vec<std::path::PathBuf> = cfg.watch.iter().map(|w| w.path.clone()).collect();
    let missing = tokio::task::spawn_blocking(move || folders.into_iter().filter(|p| !p.is_dir()).collect::<Vec<_>>())
        .await
        .unwrap_or_default();
    for p in missing {
        let shown = p.display().to_string();
        if !reasons.iter().any(|r| r.contains(&shown)) {
            reasons.push(format!("watch folder {shown} is missing (unmounted or deleted?)"));
        }
    }
    let mut resp = if reasons.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        let text: String = reasons.iter().map(|r| format!("{r}\n")).collect();
        (StatusCode::SERVICE_UNAVAILABLE, text).into_response()
    };
    // One line per reason, for people and probes alike.
    resp.extensions_mut().insert(guard::PlainText);
    resp
}

#[cfg(test)]
mod nodes_tests;
#[cfg(test)]
mod pages_tests;
#[cfg(test)]
mod siege_tests;
#[cfg(test)]
mod tests;
