//! The Direct Upload API (`/api/videos/uploads/...`); the router also
//! serves the key-less admin endpoints (`/_sandbox/...`, in [`super::admin`]).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::{Value, json};

use super::admin;
use super::faults::Fault;
use super::state::{
    LibraryFileRecord, LibraryRecord, Registry, ServerState, Session, StoredFile, expire_if_due, iso, lock,
};
use super::{
    ContractViolationKind, FileStatus, GROUP_LIFETIME, KEY_HEADER, MAX_PARTS_PER_CALL, SandboxError, SessionStatus,
};
use crate::model::{FileRole, Layout, Perspective};

type Sh = Arc<ServerState>;

pub(crate) fn router(shared: Sh) -> Router {
    Router::new()
        .route("/api/videos/uploads", post(start))
        .route("/api/videos/uploads/{session}", delete(cancel))
        .route("/api/videos/uploads/{session}/files/{upload}/part-urls", post(part_urls))
        .route("/api/videos/uploads/{session}/files/{upload}/complete", post(complete))
        .route("/_sandbox/state", get(admin::state))
        .route("/_sandbox/faults", post(admin::set_faults).get(admin::faults))
        .route("/_sandbox/expire-urls", post(admin::expire_urls))
        .route("/_sandbox/advance-clock", post(admin::advance_clock))
        .fallback(fallback)
        .with_state(shared)
}

/// Who made an API call, and its number in the call log.
struct Arrival {
    call: u64,
    key: Arc<str>,
}

/// What every API call goes through before its own work: the call log and
/// the violation record for a missing key, latency, injected faults, then
/// the key check.
async fn gate(
    sh: &ServerState,
    endpoint: &'static str,
    session: Option<&str>,
    headers: &HeaderMap,
) -> Result<Arrival, SandboxError> {
    *lock(&sh.stats).api_received.entry(endpoint.to_string()).or_default() += 1;
    let key = headers.get(KEY_HEADER);
    if key.is_none() {
        sh.violation(ContractViolationKind::MissingKey, format!("{endpoint} call without the {KEY_HEADER} header"));
    }
    let key: Arc<str> = key.and_then(|k| k.to_str().ok()).map(str::trim).unwrap_or_default().into();
    let call = lock(&sh.calls).record(&key, endpoint, session.map(str::to_string));
    let (latency, fault, retry_after) = {
        let mut f = lock(&sh.faults);
        let fault = f.api();
        let extra = if endpoint == "complete" { f.faults.complete_latency } else { Duration::ZERO };
        (f.faults.latency + extra, fault, f.faults.retry_after)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(fault) = fault {
        sh.count_fault(fault);
        return Err(match fault {
            Fault::RateLimit => SandboxError::RateLimited(retry_after),
            _ => SandboxError::Injected,
        });
    }
    let ok = match &sh.opts.api_key {
        Some(expected) => !key.is_empty() && (*key == **expected || sh.opts.extra_keys.iter().any(|k| *key == **k)),
        None => !key.is_empty(),
    };
    if ok { Ok(Arrival { call, key }) } else { Err(SandboxError::Unauthorized) }
}

/// Turn the outcome into a response and count it.
fn finish(sh: &ServerState, endpoint: &str, result: Result<Response, SandboxError>) -> Response {
    let resp = result.unwrap_or_else(IntoResponse::into_response);
    let status = resp.status().as_u16();
    let mut stats = lock(&sh.stats);
    *stats.api.entry(endpoint.to_string()).or_default().entry(status).or_default() += 1;
    if status == 401 {
        stats.unauthorized += 1;
    }
    resp
}

fn parse_json(body: &Bytes, empty_ok: bool) -> Result<Value, SandboxError> {
    if empty_ok && body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|e| SandboxError::BadRequest(format!("the request body is not valid JSON: {e}")))
}

async fn start(State(sh): State<Sh>, headers: HeaderMap, body: Bytes) -> Response {
    let r = async {
        let arrival = gate(&sh, "start", None, &headers).await?;
        let req = parse_json(&body, false)?;
        super::validate_start_request(&req).map_err(SandboxError::Validation)?;
        let (session_id, resp) = create_session(&sh, &req)?;
        lock(&sh.calls).set_session(arrival.call, &session_id);
        Ok(resp)
    }
    .await;
    finish(&sh, "start", r)
}

/// The new session's id, and the answer.
fn create_session(sh: &ServerState, req: &Value) -> Result<(String, Response), SandboxError> {
    // Validation passed, so every field below is present and well-typed.
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let layout = text(req, "layout")
        .parse::<Layout>()
        .map_err(|e| SandboxError::Internal(format!("validated layout did not parse: {e}")))?;
    let perspective = match req.get("perspective").and_then(Value::as_str) {
        Some(p) => Some(
            p.parse::<Perspective>()
                .map_err(|e| SandboxError::Internal(format!("validated perspective did not parse: {e}")))?,
        ),
        None => None,
    };
    let now = sh.now();
    let expires = now
        .checked_add(jiff::SignedDuration::from_secs(GROUP_LIFETIME.as_secs() as i64))
        .map_err(|e| SandboxError::Internal(format!("clock overflow: {e}")))?;
    let session_id = uuid::Uuid::new_v4().to_string();
    let part_size = sh.opts.part_size;
    let mut files = Vec::new();
    for f in req.get("files").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
        let role = text(f, "fileRole")
            .parse::<FileRole>()
            .map_err(|e| SandboxError::Internal(format!("validated role did not parse: {e}")))?;
        let total = f.get("sizeBytes").and_then(Value::as_u64).unwrap_or(1);
        let upload_id = uuid::Uuid::new_v4().to_string();
        let object = sh.data_dir().join("objects").join(&upload_id);
        // Sparse: parts land at their offsets in any order.
        std::fs::File::create(&object)
            .and_then(|file| file.set_len(total))
            .map_err(|e| SandboxError::Internal(format!("cannot create object {}: {e}", object.display())))?;
        files.push(StoredFile {
            upload_id,
            file_name: text(f, "fileName"),
            role,
            language: f.get("languageTag").and_then(Value::as_str).map(str::to_lowercase),
            total,
            part_size,
            total_parts: total.div_ceil(part_size),
            status: FileStatus::Pending,
            parts: Default::default(),
            object,
            part_locks: Default::default(),
        });
    }
    let session = Session {
        id: session_id.clone(),
        video_name: text(req, "videoName"),
        layout,
        perspective,
        created: now,
        expires,
        status: SessionStatus::Pending,
        canceled_at: None,
        library_id: None,
        files,
    };
    let absurd = lock(&sh.faults).faults.absurd_plan;
    let plan = |f: &StoredFile| {
        let mut v = file_json(f);
        if absurd {
            // One byte more than the file has, with a part count that adds up.
            let total = f.total + 1;
            v["totalBytes"] = json!(total);
            if f.part_size > 0 {
                v["totalParts"] = json!(total.div_ceil(f.part_size));
            }
        }
        v
    };
    if absurd {
        sh.count_fault(Fault::AbsurdPlan);
    }
    let body = json!({
        "sessionId": session.id,
        "status": session.status.as_str(),
        "expiresAt": iso(session.expires),
        "files": session.files.iter().map(plan).collect::<Vec<_>>(),
    });
    let mut st = lock(&sh.registry);
    for (i, f) in session.files.iter().enumerate() {
        st.uploads.insert(f.upload_id.clone(), (session_id.clone(), i));
    }
    st.order.push(session_id.clone());
    st.sessions.insert(session_id.clone(), session);
    Ok((session_id, (StatusCode::CREATED, axum::Json(body)).into_response()))
}

/// The fields every per-file response shares.
fn file_json(f: &StoredFile) -> Value {
    let mut v = json!({
        "uploadId": f.upload_id,
        "fileRole": f.role.as_str(),
        "fileName": f.file_name,
        "totalBytes": f.total,
        "partSizeBytes": f.part_size,
        "totalParts": f.total_parts,
        "uploadStrategy": f.strategy(),
        "status": f.status.as_str(),
    });
    if let Some(lang) = &f.language {
        v["languageTag"] = json!(lang);
    }
    v
}

/// Find a live session and one of its files, applying expiry first.
/// Canceled groups are a conflict and a violation: the client was told.
fn lookup<'a>(
    sh: &ServerState,
    st: &'a mut Registry,
    endpoint: &str,
    session_id: &str,
    upload_id: &str,
) -> Result<(&'a mut Session, usize), SandboxError> {
    let now = sh.now();
    let Some(s) = st.sessions.get_mut(session_id) else {
        return Err(SandboxError::NotFound(format!("unknown upload session {session_id}")));
    };
    expire_if_due(s, now);
    match s.status {
        SessionStatus::Expired => {
            return Err(SandboxError::NotFound(format!("upload session {session_id} has expired")));
        }
        SessionStatus::Canceled => {
            sh.violation(
                ContractViolationKind::CallAfterCancel,
                format!("{endpoint} for file {upload_id} of canceled group {session_id}"),
            );
            return Err(SandboxError::Conflict(format!("upload group {session_id} was canceled")));
        }
        SessionStatus::Pending | SessionStatus::Completed => {}
    }
    let Some(i) = s.files.iter().position(|f| f.upload_id == upload_id) else {
        return Err(SandboxError::NotFound(format!("unknown file {upload_id} in upload session {session_id}")));
    };
    Ok((s, i))
}

async fn part_urls(
    State(sh): State<Sh>,
    Path((session_id, upload_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = async {
        let arrival = gate(&sh, "part-urls", Some(&session_id), &headers).await?;
        let req = parse_json(&body, true)?;
        let mut st = lock(&sh.registry);
        let (s, i) = lookup(&sh, &mut st, "part-urls", &session_id, &upload_id)?;
        let f = &s.files[i];
        if f.status == FileStatus::Completed {
            return Err(SandboxError::Conflict(format!("file {upload_id} is already completed")));
        }
        let numbers = requested_parts(&req, f)?;
        let mut v = file_json(f);
        let expires = sh.now().as_second().saturating_add(sh.opts.url_ttl.as_secs() as i64);
        let expires_iso = jiff::Timestamp::from_second(expires).map(iso).unwrap_or_default();
        let parts: Vec<Value> = numbers
            .into_iter()
            .map(|n| {
                let (start, end) = f.part_range(n);
                let path = super::storage::object_path(&f.upload_id, if f.single_put() { None } else { Some(n) });
                json!({
                    "partNumber": n,
                    "sizeBytes": end - start + 1,
                    "byteStart": start,
                    "byteEnd": end,
                    "url": super::storage::presign(&sh, &path, expires, &arrival.key),
                    "expiresAt": expires_iso,
                })
            })
            .collect();
        v["parts"] = json!(parts);
        Ok(axum::Json(v).into_response())
    }
    .await;
    finish(&sh, "part-urls", r)
}

/// The part numbers a part-urls body asks for, in the order asked.
fn requested_parts(req: &Value, f: &StoredFile) -> Result<Vec<u64>, SandboxError> {
    let bad = |m: String| Err(SandboxError::BadRequest(m));
    let Some(obj) = req.as_object() else { return bad("the request body must be a JSON object".into()) };
    let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let total = f.total_parts;
    match (get("partNumbers"), get("startPartNumber"), get("count")) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            bad("use either partNumbers, or startPartNumber with count, not both".into())
        }
        (Some(list), None, None) => {
            let Some(list) = list.as_array() else { return bad("partNumbers must be an array".into()) };
            if list.is_empty() {
                return bad("partNumbers must not be empty".into());
            }
            if list.len() as u64 > MAX_PARTS_PER_CALL {
                return bad(format!("at most {MAX_PARTS_PER_CALL} part numbers per call (got {})", list.len()));
            }
            list.iter()
                .map(|v| match v.as_u64() {
                    Some(n) if (1..=total).contains(&n) => Ok(n),
                    _ => Err(SandboxError::BadRequest(format!(
                        "part number {v} is out of range: this file has parts 1 to {total}"
                    ))),
                })
                .collect()
        }
        (None, Some(start), Some(count)) => {
            let Some(start) = start.as_u64().filter(|n| (1..=total).contains(n)) else {
                return bad(format!("startPartNumber {start} is out of range: this file has parts 1 to {total}"));
            };
            let Some(count) = count.as_u64().filter(|c| (1..=MAX_PARTS_PER_CALL).contains(c)) else {
                return bad(format!("count must be an integer from 1 to {MAX_PARTS_PER_CALL} (got {count})"));
            };
            let last = (start + count - 1).min(total);
            Ok((start..=last).collect())
        }
        (None, Some(_), None) | (None, None, Some(_)) => bad("startPartNumber and count go together: give both".into()),
        (None, None, None) if f.single_put() => Ok(vec![1]),
        (None, None, None) => bad(format!(
            "file {} is multipart ({total} parts): ask for partNumbers, or startPartNumber with count",
            f.upload_id
        )),
    }
}

async fn complete(
    State(sh): State<Sh>,
    Path((session_id, upload_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = async {
        gate(&sh, "complete", Some(&session_id), &headers).await?;
        let req = parse_json(&body, true)?;
        let not_completed = lock(&sh.faults).faults.complete_not_completed;
        let mut guard = lock(&sh.registry);
        let st = &mut *guard;
        let (s, i) = lookup(&sh, st, "complete", &session_id, &upload_id)?;
        if s.files[i].status != FileStatus::Completed && not_completed {
            sh.count_fault(Fault::CompleteNotCompleted);
            let mut v = file_json(&s.files[i]);
            v["status"] = json!("processing");
            v["libraryId"] = Value::Null;
            return Ok(axum::Json(v).into_response());
        }
        if s.files[i].status != FileStatus::Completed {
            // A PUT still writing would change the bytes after the check.
            if let Some(n) = s.files[i].parts_in_flight().first() {
                return Err(SandboxError::Conflict(format!(
                    "a PUT to part {n} of file {upload_id} is still in progress"
                )));
            }
            check_parts(&sh, &req, &s.files[i])?;
            s.files[i].status = FileStatus::Completed;
            s.files[i].part_locks.clear();
            if s.files.iter().all(|f| f.status == FileStatus::Completed) {
                let library_id = st.next_library_id;
                st.next_library_id += 1;
                let s = st
                    .sessions
                    .get_mut(&session_id)
                    .ok_or_else(|| SandboxError::Internal("session vanished".into()))?;
                s.status = SessionStatus::Completed;
                s.library_id = Some(library_id);
                let record = shelve(&sh, s, library_id)?;
                st.library.push(record);
            }
        }
        let s = st.sessions.get(&session_id).ok_or_else(|| SandboxError::Internal("session vanished".into()))?;
        let mut v = file_json(&s.files[i]);
        v["libraryId"] = json!(s.library_id);
        Ok(axum::Json(v).into_response())
    }
    .await;
    finish(&sh, "complete", r)
}

/// The `parts` list of a complete call against what storage received.
fn check_parts(sh: &ServerState, req: &Value, f: &StoredFile) -> Result<(), SandboxError> {
    let refuse = |kind: ContractViolationKind, msg: String| {
        sh.violation(kind, format!("complete of {} ({}): {msg}", f.upload_id, f.file_name));
        Err(SandboxError::BadRequest(msg))
    };
    let listed = req.get("parts").filter(|v| !v.is_null());
    let parts: Vec<(u64, String)> = match listed {
        None if f.single_put() => match f.parts.get(&1) {
            Some(_) => return Ok(()),
            None => return refuse(ContractViolationKind::MissingParts, "the file's bytes were never uploaded".into()),
        },
        None => {
            return refuse(
                ContractViolationKind::MissingParts,
                format!("parts is required for a multipart file (parts 1 to {})", f.total_parts),
            );
        }
        Some(Value::Array(list)) => {
            let mut out = Vec::with_capacity(list.len());
            for p in list {
                let n = p.get("partNumber").and_then(Value::as_u64);
                let etag = p.get("etag").or_else(|| p.get("ETag")).and_then(Value::as_str);
                match (n, etag) {
                    (Some(n), Some(e)) => out.push((n, e.to_string())),
                    _ => {
                        return Err(SandboxError::BadRequest(format!(
                            "each entry of parts needs a partNumber (integer) and an etag (string); got {p}"
                        )));
                    }
                }
            }
            out
        }
        Some(_) => return Err(SandboxError::BadRequest("parts must be an array".into())),
    };
    if let Some(w) = parts.windows(2).find(|w| w[1].0 <= w[0].0) {
        return refuse(
            ContractViolationKind::UnsortedParts,
            format!(
                "parts must be listed in ascending partNumber order, each once (part {} follows part {})",
                w[1].0, w[0].0
            ),
        );
    }
    if let Some((n, _)) = parts.iter().find(|(n, _)| *n == 0 || *n > f.total_parts) {
        return Err(SandboxError::BadRequest(format!(
            "part {n} does not exist: this file has parts 1 to {}",
            f.total_parts
        )));
    }
    if parts.len() as u64 != f.total_parts {
        let listed: std::collections::BTreeSet<u64> = parts.iter().map(|(n, _)| *n).collect();
        let missing: Vec<String> =
            (1..=f.total_parts).filter(|n| !listed.contains(n)).take(20).map(|n| n.to_string()).collect();
        return refuse(
            ContractViolationKind::MissingParts,
            format!("every part from 1 to {} must be listed; missing: {}", f.total_parts, missing.join(", ")),
        );
    }
    for (n, etag) in &parts {
        let Some(md5) = f.parts.get(n) else {
            return refuse(
                ContractViolationKind::MissingParts,
                format!("part {n} was never uploaded (or its upload failed)"),
            );
        };
        let given = etag.trim().trim_matches('"');
        if !given.eq_ignore_ascii_case(&hex::encode(md5)) {
            return refuse(
                ContractViolationKind::EtagMismatch,
                format!("the ETag given for part {n} ({etag}) does not match the bytes stored"),
            );
        }
    }
    Ok(())
}

/// Move a completed group's objects into the library and describe them.
fn shelve(sh: &ServerState, s: &mut Session, library_id: u64) -> Result<LibraryRecord, SandboxError> {
    // The session id keeps folders of earlier runs on the same data dir apart.
    let dir = sh.data_dir().join("library").join(format!("{library_id}-{}", s.id));
    std::fs::create_dir_all(&dir)
        .map_err(|e| SandboxError::Internal(format!("cannot create {}: {e}", dir.display())))?;
    let mut files = Vec::new();
    for (i, f) in s.files.iter_mut().enumerate() {
        // Only the last path component, and never "." or "..": the name is the client's.
        let base = f.file_name.rsplit(['/', '\\']).next().unwrap_or_default();
        let base = if base.is_empty() || base == "." || base == ".." { f.upload_id.as_str() } else { base };
        let mut target = dir.join(base);
        if target.exists() {
            target = dir.join(format!("{}-{base}", i + 1));
        }
        std::fs::rename(&f.object, &target)
            .map_err(|e| SandboxError::Internal(format!("cannot move {} into the library: {e}", f.object.display())))?;
        f.object = target.clone();
        files.push(LibraryFileRecord {
            file_name: f.file_name.clone(),
            role: f.role,
            language: f.language.clone(),
            size: f.total,
            path: target,
            sha256: None,
        });
    }
    Ok(LibraryRecord {
        library_id,
        session_id: s.id.clone(),
        video_name: s.video_name.clone(),
        layout: s.layout,
        perspective: s.perspective,
        files,
    })
}

async fn cancel(State(sh): State<Sh>, Path(session_id): Path<String>, headers: HeaderMap) -> Response {
    let r = async {
        gate(&sh, "cancel", Some(&session_id), &headers).await?;
        let now = sh.now();
        let mut st = lock(&sh.registry);
        let Some(s) = st.sessions.get_mut(&session_id) else {
            return Err(SandboxError::NotFound(format!("unknown upload session {session_id}")));
        };
        expire_if_due(s, now);
        match s.status {
            SessionStatus::Expired => {
                return Err(SandboxError::NotFound(format!("upload session {session_id} has expired")));
            }
            SessionStatus::Canceled => {
                return Err(SandboxError::Conflict(format!("upload group {session_id} is already canceled")));
            }
            SessionStatus::Completed => {
                return Err(SandboxError::Conflict(format!(
                    "upload group {session_id} is completed and can no longer be canceled"
                )));
            }
            SessionStatus::Pending => {}
        }
        s.status = SessionStatus::Canceled;
        s.canceled_at = Some(now);
        let mut canceled = 0;
        for f in &mut s.files {
            if f.status != FileStatus::Completed {
                canceled += 1;
            }
            f.status = FileStatus::Canceled;
            f.parts.clear();
            let _ = std::fs::remove_file(&f.object);
        }
        Ok(axum::Json(json!({
            "sessionId": s.id,
            "status": "canceled",
            "canceledAt": s.canceled_at.map(iso),
            "fileCount": s.files.len(),
            "canceledFileCount": canceled,
        }))
        .into_response())
    }
    .await;
    finish(&sh, "cancel", r)
}

async fn fallback(State(sh): State<Sh>) -> Response {
    finish(&sh, "other", Err(SandboxError::NotFound("no such endpoint".into())))
}
