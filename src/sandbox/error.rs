//! Why the sandbox refuses a request, and how each refusal is answered:
//! JSON `{"error", "message"}` from the API, S3-style XML from storage.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::KEY_HEADER;

/// Why a request was refused. API variants answer JSON
/// `{"error", "message"}`; storage variants answer S3-style XML.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("missing or invalid {KEY_HEADER} header")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("{}", .0.join("; "))]
    Validation(Vec<String>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("too many requests; retry after {} s", retry_after_secs(*.0))]
    RateLimited(Duration),
    #[error("injected server error")]
    Injected,
    #[error("internal error: {0}")]
    Internal(String),
    #[error("Request has expired")]
    UrlExpired,
    #[error("The request signature we calculated does not match the signature you provided")]
    BadSignature,
    #[error("{0}")]
    StorageBadRequest(String),
    #[error("You must provide the Content-Length HTTP header.")]
    MissingContentLength,
    #[error(
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed."
    )]
    NoSuchUpload,
    #[error("We encountered an internal error. Please try again.")]
    StorageInternal,
}

fn retry_after_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl IntoResponse for SandboxError {
    fn into_response(self) -> Response {
        use SandboxError as E;
        let message = self.to_string();
        let (status, code, xml) = match &self {
            E::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", false),
            E::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request", false),
            E::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", false),
            E::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", false),
            E::Conflict(_) => (StatusCode::CONFLICT, "conflict", false),
            E::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited", false),
            E::Injected => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error", false),
            E::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error", false),
            E::UrlExpired => (StatusCode::FORBIDDEN, "AccessDenied", true),
            E::BadSignature => (StatusCode::FORBIDDEN, "SignatureDoesNotMatch", true),
            E::StorageBadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest", true),
            E::MissingContentLength => (StatusCode::LENGTH_REQUIRED, "MissingContentLength", true),
            E::NoSuchUpload => (StatusCode::NOT_FOUND, "NoSuchUpload", true),
            E::StorageInternal => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError", true),
        };
        if xml {
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{}</Message></Error>",
                xml_escape(&message)
            );
            return (status, [("content-type", "application/xml")], body).into_response();
        }
        let mut json = serde_json::json!({ "error": code, "message": message });
        if let E::Validation(list) = &self {
            json["violations"] = serde_json::json!(list);
        }
        let mut resp = (status, axum::Json(json)).into_response();
        if let E::RateLimited(d) = self {
            resp.headers_mut().insert("retry-after", axum::http::HeaderValue::from(retry_after_secs(d)));
        }
        resp
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
