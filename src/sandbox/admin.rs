//! The key-less admin endpoints under `/_sandbox/`: the whole state as JSON,
//! faults, URL expiry and the clock. Routed by [`super::api::router`].

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::SandboxError;
use super::faults::{FaultState, Faults};
use super::state::{ServerState, iso, lock};

type Sh = Arc<ServerState>;

pub(super) async fn state(State(sh): State<Sh>) -> Response {
    let s = sh.clone();
    // library() may hash large files: off the async workers.
    let r = tokio::task::spawn_blocking(move || {
        json!({
            "endpoint": s.api_url,
            "storage": s.storage_url,
            "partSize": s.opts.part_size,
            "now": iso(s.now()),
            "sessions": s.sessions(),
            "library": s.library(),
            "violations": *lock(&s.violations),
            "stats": *lock(&s.stats),
            "faults": lock(&s.faults).faults,
        })
    })
    .await;
    match r {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => SandboxError::Internal(format!("state task failed: {e}")).into_response(),
    }
}

pub(super) async fn set_faults(State(sh): State<Sh>, body: Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(f) => {
            *lock(&sh.faults) = FaultState::new(f.clone());
            axum::Json(f).into_response()
        }
        Err(e) => SandboxError::BadRequest(format!("faults: {e}")).into_response(),
    }
}

pub(super) async fn faults(State(sh): State<Sh>) -> Response {
    axum::Json(lock(&sh.faults).faults.clone()).into_response()
}

pub(super) async fn expire_urls(State(sh): State<Sh>) -> Response {
    sh.expire_all_urls();
    axum::Json(json!({"expired": true})).into_response()
}

pub(super) async fn advance_clock(State(sh): State<Sh>, body: Bytes) -> Response {
    let secs = serde_json::from_slice::<Value>(&body).ok().and_then(|v| v.get("seconds").and_then(Value::as_f64));
    match secs {
        Some(s) if s.is_finite() && s >= 0.0 => {
            *lock(&sh.clock_offset) += Duration::from_secs_f64(s);
            axum::Json(json!({"now": iso(sh.now())})).into_response()
        }
        _ => SandboxError::BadRequest("expected {\"seconds\": N} with N ≥ 0".into()).into_response(),
    }
}
