use std::time::{Duration, SystemTime};

use super::test_server::{Reply, TestServer};
use super::*;
use crate::config::Dur;
use crate::model::{FileRole, Layout, Perspective};

const KEY: &str = "sk_live_0123456789abcdef";

fn cfg(endpoint: &str) -> ApiConfig {
    ApiConfig {
        endpoint: endpoint.into(),
        connect_timeout: Dur(Duration::from_secs(2)),
        request_timeout: Dur(Duration::from_secs(5)),
        stall_timeout: Dur(Duration::from_secs(5)),
        ..ApiConfig::default()
    }
}

fn client(server: &TestServer) -> Client {
    Client::new(&cfg(&server.url("")), ApiKey::new(KEY)).unwrap()
}

/// The Start Upload Group answer as spatialgen-api.md shows it.
const DOC_CREATED: &str = r#"{
  "sessionId": "5ea97a59-95e0-4c8b-a634-b0fa9976f6ff",
  "status": "pending",
  "expiresAt": "2026-05-04T19:02:14.000Z",
  "files": [
    { "uploadId": "402f0bda-...", "fileRole": "video_left", "fileName": "left-eye.mov",
      "totalBytes": 1287340032, "partSizeBytes": 104857600, "totalParts": 13,
      "uploadStrategy": "multipart", "status": "pending" }
  ]
}"#;

fn part(n: u32, start: u64, end: u64, size: u64) -> serde_json::Value {
    serde_json::json!({
        "partNumber": n, "sizeBytes": size, "byteStart": start, "byteEnd": end,
        "url": format!("https://storage.example/b/k?partNumber={n}&X-Amz-Signature=deadbeef"),
        "expiresAt": "2026-05-04T19:02:14.000Z"
    })
}

fn part_urls_json(parts: Vec<serde_json::Value>) -> String {
    serde_json::json!({
        "uploadId": "u1", "fileRole": "video", "fileName": "a.mov",
        "totalBytes": 250, "partSizeBytes": 100, "totalParts": 3,
        "uploadStrategy": "multipart", "status": "uploading", "somethingNew": [1, 2],
        "parts": parts
    })
    .to_string()
}

// ---------- JSON in and out ----------

#[test]
fn start_group_is_camel_case_and_omits_absent_fields() {
    let req = StartGroup {
        video_name: "Trip".into(),
        description: None,
        layout: Layout::Separate,
        perspective: Some(Perspective::D180),
        folder_name: None,
        files: vec![
            StartFile {
                file_name: "a_L.mov".into(),
                file_role: FileRole::VideoLeft,
                size_bytes: 10,
                language_tag: None,
            },
            StartFile {
                file_name: "a.en.m4a".into(),
                file_role: FileRole::Audio,
                size_bytes: 5,
                language_tag: Some("en".into()),
            },
        ],
    };
    let json = serde_json::to_value(&req).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "videoName": "Trip", "layout": "Separate", "perspective": "180",
            "files": [
                {"fileName": "a_L.mov", "fileRole": "video_left", "sizeBytes": 10},
                {"fileName": "a.en.m4a", "fileRole": "audio", "sizeBytes": 5, "languageTag": "en"}
            ]
        })
    );
}

#[test]
fn the_documented_answer_decodes() {
    let g: GroupCreated = serde_json::from_str(DOC_CREATED).unwrap();
    assert_eq!(g.session_id, "5ea97a59-95e0-4c8b-a634-b0fa9976f6ff");
    assert_eq!(g.expires_at.as_deref(), Some("2026-05-04T19:02:14.000Z"));
    let f = g.file_for("left-eye.mov", FileRole::VideoLeft).unwrap();
    assert_eq!((f.total_bytes, f.part_size_bytes, f.total_parts), (1_287_340_032, 104_857_600, 13));
    assert_eq!(f.upload_strategy, Strategy::Multipart);
    assert_eq!(f.part_range(13), Some((12 * 104_857_600, 1_287_340_032 - 1)));
    assert_eq!(f.part_range(14), None);
    assert_eq!(f.part_range(0), None);
}

#[test]
fn upload_session_id_is_accepted_and_unknown_fields_ignored() {
    let json = r#"{"uploadSessionId": "s-2", "brandNew": {"x": 1}, "files": [
        {"uploadId": "u", "fileRole": "video", "fileName": "v.mov", "totalBytes": 5, "partSizeBytes": 100,
         "totalParts": 1, "uploadStrategy": "single_put", "extra": true}]}"#;
    let g: GroupCreated = serde_json::from_str(json).unwrap();
    assert_eq!(g.session_id, "s-2");
    assert_eq!(g.status, None);
    assert_eq!(g.files[0].part_range(1), Some((0, 4)), "single_put: one part, the whole file");
}

#[test]
fn an_answer_without_a_session_id_or_with_parts_that_do_not_add_up_is_refused() {
    let err = serde_json::from_str::<GroupCreated>(r#"{"files": []}"#).unwrap_err();
    assert!(err.to_string().contains("sessionId"), "{err}");
    let bad = DOC_CREATED.replace("\"totalParts\": 13", "\"totalParts\": 12");
    let err = serde_json::from_str::<GroupCreated>(&bad).unwrap_err();
    assert!(err.to_string().contains("totalParts 12"), "{err}");
}

#[test]
fn files_are_matched_by_name_and_role_not_position() {
    let json = r#"{"sessionId": "s", "files": [
        {"uploadId": "u-sub", "fileRole": "subtitle", "fileName": "a.srt", "totalBytes": 5, "partSizeBytes": 5, "totalParts": 1, "uploadStrategy": "single_put"},
        {"uploadId": "u-vid", "fileRole": "video", "fileName": "a.mov", "totalBytes": 5, "partSizeBytes": 5, "totalParts": 1, "uploadStrategy": "single_put"},
        {"uploadId": "u-aud", "fileRole": "audio", "fileName": "a.mov", "totalBytes": 5, "partSizeBytes": 5, "totalParts": 1, "uploadStrategy": "single_put"}]}"#;
    let g: GroupCreated = serde_json::from_str(json).unwrap();
    assert_eq!(g.file_for("a.mov", FileRole::Video).unwrap().upload_id, "u-vid");
    assert_eq!(g.file_for("a.mov", FileRole::Audio).unwrap().upload_id, "u-aud");
    assert_eq!(g.file_for("a.srt", FileRole::Subtitle).unwrap().upload_id, "u-sub");
    assert!(g.file_for("a.srt", FileRole::Video).is_none());
}

#[test]
fn part_url_requests_have_the_three_documented_shapes() {
    let s = |r: &PartUrlsRequest| serde_json::to_string(r).unwrap();
    assert_eq!(s(&PartUrlsRequest::Numbers(vec![3, 7])), r#"{"partNumbers":[3,7]}"#);
    assert_eq!(s(&PartUrlsRequest::Range { start: 1, count: 100 }), r#"{"startPartNumber":1,"count":100}"#);
    assert_eq!(s(&PartUrlsRequest::SinglePut), "{}");
}

#[test]
fn part_urls_are_checked_byte_for_byte() {
    let good: PartUrls =
        serde_json::from_str(&part_urls_json(vec![part(1, 0, 99, 100), part(3, 200, 249, 50)])).unwrap();
    good.check().unwrap();

    // sizeBytes disagrees with the inclusive range (an exclusive byteEnd would do this).
    let exclusive: PartUrls = serde_json::from_str(&part_urls_json(vec![part(1, 0, 100, 100)])).unwrap();
    let err = exclusive.check().unwrap_err();
    assert!(err.contains("sizeBytes 100") && err.contains("spans 101"), "{err}");

    // Self-consistent but not where part 2 lies.
    let shifted: PartUrls = serde_json::from_str(&part_urls_json(vec![part(2, 101, 200, 100)])).unwrap();
    assert!(shifted.check().unwrap_err().contains("should cover 100..=199"));

    // The last part must stop at the file's end, not at a full part size.
    let long_tail: PartUrls = serde_json::from_str(&part_urls_json(vec![part(3, 200, 299, 100)])).unwrap();
    assert!(long_tail.check().is_err());

    let beyond: PartUrls = serde_json::from_str(&part_urls_json(vec![part(4, 300, 399, 100)])).unwrap();
    assert!(beyond.check().unwrap_err().contains("no such part"));

    let backwards: PartUrls = serde_json::from_str(&part_urls_json(vec![part(1, 99, 0, 100)])).unwrap();
    assert!(backwards.check().unwrap_err().contains("negative"));
}

#[test]
fn complete_bodies_list_parts_or_are_empty() {
    let parts = [CompletedPart { part_number: 1, etag: "\"abc\"".into() }];
    assert_eq!(
        serde_json::to_string(&model::CompleteBody { parts: &parts }).unwrap(),
        r#"{"parts":[{"partNumber":1,"etag":"\"abc\""}]}"#
    );
    assert_eq!(serde_json::to_string(&model::CompleteBody { parts: &[] }).unwrap(), "{}");
}

#[test]
fn library_id_is_null_until_the_last_file() {
    let f = |j: &str| serde_json::from_str::<FileCompleted>(j).unwrap().library_id;
    assert_eq!(f(r#"{"uploadId":"u","status":"completed","libraryId":null}"#), None);
    assert_eq!(f(r#"{"uploadId":"u","status":"completed"}"#), None);
    assert_eq!(f(r#"{"uploadId":"u","status":"completed","libraryId":4711,"new":1}"#), Some(4711));
    assert_eq!(f(r#"{"uploadId":"u","status":"completed","libraryId":"4711"}"#), Some(4711));
}

#[test]
fn part_url_debug_hides_the_signature() {
    let p: PartUrl = serde_json::from_value(part(1, 0, 9, 10)).unwrap();
    let dbg = format!("{p:?}");
    assert!(dbg.contains("https://storage.example/b/k?…"), "{dbg}");
    assert!(!dbg.contains("deadbeef"), "{dbg}");
}

// ---------- classification and redaction ----------

fn status(op: Op, status: u16, retry_after: Option<Duration>) -> ApiError {
    ApiError::Status { op, status, target: "t".into(), message: String::new(), retry_after }
}

#[test]
fn every_status_has_one_class() {
    let secs = |s| Some(Duration::from_secs(s));
    let cases = [
        (Op::StartGroup, 408, None, ErrorClass::Retry { after: None }),
        (Op::PartUrls, 429, secs(7), ErrorClass::Retry { after: secs(7) }),
        (Op::PutPart, 429, None, ErrorClass::Retry { after: None }),
        (Op::CompleteFile, 500, None, ErrorClass::Retry { after: None }),
        (Op::PutPart, 503, secs(2), ErrorClass::Retry { after: secs(2) }),
        (Op::PutPart, 403, None, ErrorClass::RefreshUrls),
        (Op::StartGroup, 403, None, ErrorClass::Fatal),
        (Op::PartUrls, 404, None, ErrorClass::Gone),
        (Op::CompleteFile, 404, None, ErrorClass::Gone),
        (Op::PutPart, 404, None, ErrorClass::Gone),
        (Op::StartGroup, 400, None, ErrorClass::Fatal),
        (Op::StartGroup, 422, None, ErrorClass::Fatal),
        (Op::StartGroup, 401, None, ErrorClass::Fatal),
        (Op::PartUrls, 409, None, ErrorClass::Fatal),
        (Op::PutPart, 411, None, ErrorClass::Fatal),
        (Op::StartGroup, 307, None, ErrorClass::Fatal),
    ];
    for (op, code, after, want) in cases {
        assert_eq!(status(op, code, after).class(), want, "{op} {code}");
    }
    let transport = ApiError::Transport {
        op: Op::PutPart,
        kind: TransportKind::Interrupted,
        target: "t".into(),
        detail: "x".into(),
    };
    assert_eq!(transport.class(), ErrorClass::Retry { after: None });
    let stalled = ApiError::Stalled { op: Op::PutPart, target: "t".into(), after: Duration::from_secs(1) };
    assert_eq!(stalled.class(), ErrorClass::Retry { after: None });
    let invalid = ApiError::InvalidResponse { op: Op::PartUrls, target: "t".into(), detail: "x".into() };
    assert_eq!(invalid.class(), ErrorClass::Fatal);
}

#[test]
fn only_api_401_and_403_are_auth_errors() {
    assert!(status(Op::StartGroup, 401, None).is_auth());
    assert!(status(Op::PartUrls, 403, None).is_auth());
    assert!(!status(Op::PutPart, 403, None).is_auth(), "storage 403 is an expired URL");
    assert!(!status(Op::StartGroup, 404, None).is_auth());
}

#[test]
fn retry_after_is_seconds_or_an_http_date() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
    assert_eq!(parse_retry_after(" 120 ", now), Some(Duration::from_secs(120)));
    assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now), Some(Duration::from_secs(30)));
    assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now), Some(Duration::ZERO), "past = now");
    assert_eq!(parse_retry_after("soon", now), None);
    assert_eq!(parse_retry_after("-5", now), None);
}

#[test]
fn urls_lose_their_query_and_credentials() {
    assert_eq!(
        redact_url("https://bucket.s3.example.com:9000/a/b.mov?X-Amz-Signature=abc&partNumber=1"),
        "https://bucket.s3.example.com:9000/a/b.mov?…"
    );
    assert_eq!(redact_url("https://user:pw@h/p"), "https://h/p");
    assert_eq!(redact_url("http://h/p"), "http://h/p");
    assert_eq!(redact_url("not a url?sig=1"), "not a url?…");
    assert_eq!(redact_url("weird://us:pw@h?x"), "weird://h?…");
}

#[test]
fn server_text_is_scrubbed_of_queries_and_the_key() {
    let body = format!(
        "<Error><Code>AccessDenied</Code><Message>Request has expired</Message>\n<Url>https://s.example/b/k?X-Amz-Signature=abc</Url><Key>{KEY}</Key></Error>"
    );
    let text = error::condense_body(body.as_bytes(), KEY);
    assert!(text.contains("Request has expired"), "{text}");
    assert!(text.contains("https://s.example/b/k?…"), "{text}");
    assert!(!text.contains("X-Amz-Signature") && !text.contains(KEY), "{text}");

    let json = error::condense_body(br#"{"error":"validation_failed","message":"layout must be one of ..."}"#, KEY);
    assert_eq!(json, "validation_failed: layout must be one of ...");
    let long = error::condense_body("é".repeat(2000).as_bytes(), KEY);
    assert!(long.ends_with('…') && long.len() <= 604);
}

#[test]
fn endpoints_need_tls_except_on_loopback() {
    let key = || ApiKey::new(KEY);
    for ok in [
        "https://spatialgen.com",
        "https://spatialgen.com/",
        "http://127.0.0.1:8787",
        "http://localhost:1",
        "http://[::1]:9",
    ] {
        Client::new(&cfg(ok), key()).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for bad in ["http://spatialgen.com", "http://10.0.0.1", "ftp://x", "spatialgen.com", "https://u:p@spatialgen.com"] {
        let err = Client::new(&cfg(bad), key()).unwrap_err();
        assert!(matches!(err, ApiError::Endpoint { .. }), "{bad}: {err}");
        assert_eq!(err.class(), ErrorClass::Fatal);
        assert!(!err.to_string().contains(":p@"), "{err}");
    }
    let c = Client::new(&cfg("https://spatialgen.com"), key()).unwrap();
    assert_eq!(c.base_url(), "https://spatialgen.com/api/videos/uploads");
    let c = Client::new(&cfg("https://example.com/prefix/?q=1"), key()).unwrap();
    assert_eq!(c.base_url(), "https://example.com/prefix/api/videos/uploads");
    assert!(matches!(Client::new(&cfg("https://x.com"), ApiKey::new("bad\nkey")), Err(ApiError::Setup(_))));
    assert!(matches!(Client::new(&cfg("https://x.com"), ApiKey::new(" ")), Err(ApiError::Setup(_))));
}

#[test]
fn debug_never_shows_the_key() {
    let c = Client::new(&cfg("https://spatialgen.com"), ApiKey::new(KEY)).unwrap();
    let dbg = format!("{c:?}");
    assert!(!dbg.contains(KEY) && dbg.contains("spatialgen.com"), "{dbg}");
}

// ---------- over loopback ----------

fn created_for(size: u64) -> String {
    serde_json::json!({"sessionId": "s1", "files": [{"uploadId": "u1", "fileRole": "video", "fileName": "a.mov",
        "totalBytes": size, "partSizeBytes": size, "totalParts": 1, "uploadStrategy": "single_put"}]})
    .to_string()
}

#[tokio::test]
async fn api_calls_carry_the_key_and_storage_puts_do_not() {
    let server = TestServer::start(|seen| match (seen.method.as_str(), seen.uri.as_str()) {
        ("POST", "/api/videos/uploads") => Reply::json(201, &created_for(11)),
        ("POST", "/api/videos/uploads/s1/files/u1/part-urls") => Reply::json(
            200,
            &serde_json::json!({
            "uploadId": "u1", "totalBytes": 11, "partSizeBytes": 11, "totalParts": 1, "uploadStrategy": "single_put",
            "parts": [{"partNumber": 1, "sizeBytes": 11, "byteStart": 0, "byteEnd": 10,
                       "url": format!("http://{}/store/u1?sig=secret", seen.headers["host"].to_str().unwrap()),
                       "expiresAt": "x"}]})
            .to_string(),
        ),
        ("PUT", _) => Reply::json(200, "").with("etag", "\"v-e-r-b-a-t-i-m\""),
        ("POST", "/api/videos/uploads/s1/files/u1/complete") => {
            Reply::json(200, r#"{"uploadId":"u1","status":"completed","libraryId":42}"#)
        }
        ("DELETE", "/api/videos/uploads/s1") => Reply::json(200, r#"{"sessionId":"s1","status":"canceled"}"#),
        _ => Reply::json(500, "unexpected"),
    })
    .await;
    let c = client(&server);
    let req = StartGroup {
        video_name: "a".into(),
        description: Some("d".into()),
        layout: Layout::TwoD,
        perspective: None,
        folder_name: None,
        files: vec![StartFile {
            file_name: "a.mov".into(),
            file_role: FileRole::Video,
            size_bytes: 11,
            language_tag: None,
        }],
    };
    let g = c.start_group(&req).await.unwrap();
    let f = g.file_for("a.mov", FileRole::Video).unwrap();
    let urls = c.part_urls(&g.session_id, &f.upload_id, &PartUrlsRequest::SinglePut).await.unwrap();
    let etag = c.put_part(&urls.parts[0].url, reqwest::Body::from("hello world"), 11, None).await.unwrap();
    assert_eq!(etag, "\"v-e-r-b-a-t-i-m\"", "the ETag is kept verbatim, quotes included");
    let done = c.complete_file(&g.session_id, &f.upload_id, &[]).await.unwrap();
    assert_eq!(done.library_id, Some(42));
    c.cancel_group("s1").await.unwrap();

    let seen = server.seen();
    assert_eq!(seen.len(), 5);
    for s in &seen {
        let key = s.headers.get(KEY_HEADER).map(|v| v.to_str().unwrap().to_string());
        if s.method == "PUT" {
            assert_eq!(key, None, "the key must never reach storage");
            assert_eq!(s.headers["content-length"], "11");
            assert_eq!(s.body.as_ref(), b"hello world");
        } else {
            assert_eq!(key.as_deref(), Some(KEY), "{} {}", s.method, s.uri);
        }
    }
    let start: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(start["description"], "d");
    assert_eq!(seen[0].headers["content-type"], "application/json");
    assert_eq!(seen[1].body.as_ref(), b"{}", "single_put asks with {{}}");
    assert_eq!(seen[3].body.as_ref(), b"{}", "single_put completes with {{}}");
}

#[tokio::test]
async fn a_bad_part_range_over_the_wire_is_refused_before_any_put() {
    let server =
        TestServer::start(|_| Reply::json(200, &part_urls_json(vec![part(1, 0, 99, 100), part(2, 100, 200, 100)])))
            .await;
    let err = client(&server).part_urls("s", "u", &PartUrlsRequest::Range { start: 1, count: 3 }).await.unwrap_err();
    assert!(matches!(err, ApiError::InvalidResponse { op: Op::PartUrls, .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Fatal);
    assert!(err.to_string().contains("part 2"), "{err}");
}

#[tokio::test]
async fn redirects_go_nowhere_else() {
    let elsewhere = TestServer::start(|_| Reply::json(201, &created_for(1))).await;
    let target = elsewhere.url("/api/videos/uploads");
    let moved = TestServer::start(move |_| Reply::json(307, "").with("location", &target)).await;
    let req = StartGroup {
        video_name: "a".into(),
        description: None,
        layout: Layout::TwoD,
        perspective: None,
        folder_name: None,
        files: vec![],
    };
    let err = client(&moved).start_group(&req).await.unwrap_err();
    assert_eq!(err.status(), Some(307), "{err}");
    assert_eq!(err.class(), ErrorClass::Fatal);
    assert!(err.to_string().contains("not followed"), "{err}");
    assert!(elsewhere.seen().is_empty(), "nothing may reach another host (here: another port)");

    // Same origin: followed, with the key.
    let same = TestServer::start(|seen| match seen.uri.as_str() {
        "/api/videos/uploads" => Reply::json(308, "").with("location", "/v2/uploads"),
        _ => Reply::json(201, &created_for(1)),
    })
    .await;
    client(&same).start_group(&req).await.unwrap();
    let seen = same.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].uri, "/v2/uploads");
    assert_eq!(seen[1].headers[KEY_HEADER], KEY);

    // Storage: not even a same-origin redirect.
    let storage = TestServer::start(|_| Reply::json(301, "").with("location", "/elsewhere?sig=2")).await;
    let err = client(&storage).put_part(&storage.url("/b/k?sig=1"), "x".into(), 1, None).await.unwrap_err();
    assert_eq!(err.status(), Some(301));
    assert_eq!(storage.seen().len(), 1);
    assert!(!err.to_string().contains("sig="), "{err}");
}

#[tokio::test]
async fn server_answers_are_classified_and_never_leak_secrets() {
    let server = TestServer::start(|seen| {
        let echo = format!(
            "you sent {} to {} with key {}",
            seen.method,
            format_args!("http://h{}", seen.uri),
            seen.headers.get(KEY_HEADER).map(|v| v.to_str().unwrap()).unwrap_or("-")
        );
        match seen.uri.split('?').next().unwrap() {
            "/api/videos/uploads/busy/files/u/part-urls" => Reply::json(429, &echo).with("retry-after", "7"),
            "/api/videos/uploads/down/files/u/part-urls" => Reply::json(503, &echo),
            "/api/videos/uploads/gone/files/u/part-urls" => Reply::json(404, r#"{"error":"not_found"}"#),
            "/api/videos/uploads/auth/files/u/part-urls" => Reply::json(401, &echo),
            "/api/videos/uploads/invalid/files/u/complete" => {
                Reply::json(422, &format!(r#"{{"error":"validation","message":"{echo}"}}"#))
            }
            "/store/expired" => {
                Reply::json(403, "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>")
            }
            _ => Reply::json(500, "?"),
        }
    })
    .await;
    let c = client(&server);
    let urls = |s: &str| {
        let c = c.clone();
        let s = s.to_string();
        async move { c.part_urls(&s, "u", &PartUrlsRequest::Numbers(vec![1])).await.unwrap_err() }
    };
    let busy = urls("busy").await;
    assert_eq!(busy.class(), ErrorClass::Retry { after: Some(Duration::from_secs(7)) }, "{busy}");
    assert_eq!(urls("down").await.class(), ErrorClass::Retry { after: None });
    let gone = urls("gone").await;
    assert_eq!(gone.class(), ErrorClass::Gone);
    assert!(gone.to_string().contains("HTTP 404") && gone.to_string().contains("not_found"), "{gone}");
    let auth = urls("auth").await;
    assert!(auth.is_auth() && auth.class() == ErrorClass::Fatal);
    let invalid = c.complete_file("invalid", "u", &[CompletedPart { part_number: 1, etag: "\"e\"".into() }]).await;
    let invalid = invalid.unwrap_err();
    assert_eq!(invalid.class(), ErrorClass::Fatal);
    assert!(invalid.to_string().contains("validation: you sent POST"), "{invalid}");
    let expired =
        c.put_part(&server.url("/store/expired?X-Amz-Signature=s3cr3t"), "x".into(), 1, None).await.unwrap_err();
    assert_eq!(expired.class(), ErrorClass::RefreshUrls);
    assert!(expired.to_string().contains("Request has expired"), "{expired}");

    for err in [&busy, &auth, &invalid, &expired] {
        let text = format!("{err} {err:?}");
        assert!(!text.contains(KEY), "key leaked: {text}");
        assert!(!text.contains("s3cr3t"), "signature leaked: {text}");
    }
}

#[tokio::test]
async fn cancel_takes_404_and_409_as_ended_and_says_which() {
    let server = TestServer::start(|seen| match seen.uri.as_str() {
        "/api/videos/uploads/a" => Reply::json(404, ""),
        "/api/videos/uploads/b" => Reply::json(409, r#"{"error":"already canceled"}"#),
        _ => Reply::json(500, "oops"),
    })
    .await;
    let c = client(&server);
    assert_eq!(c.cancel_group("a").await.unwrap(), Canceled::Unknown);
    assert_eq!(c.cancel_group("b").await.unwrap(), Canceled::AlreadyEnded);
    let err = c.cancel_group("c").await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Retry { after: None });
}

#[tokio::test]
async fn no_listener_is_a_retryable_connect_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = Client::new(&cfg(&format!("http://127.0.0.1:{port}")), ApiKey::new(KEY)).unwrap();
    let err = c.cancel_group("s").await.unwrap_err();
    assert!(matches!(err, ApiError::Transport { kind: TransportKind::Connect, .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Retry { after: None });
}

/// A raw HTTP/1.1 server: reads the request head, then reads the body in
/// `step`-byte pieces every `pause` (or not at all when `step` is 0), then answers 200.
async fn slow_reader(step: usize, pause: Duration) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            sock.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_lowercase();
        let len: usize =
            head.lines().find_map(|l| l.strip_prefix("content-length:")).map(|v| v.trim().parse().unwrap()).unwrap();
        if step == 0 {
            // Holds the connection and never reads: the stall under test.
            tokio::time::sleep(Duration::from_secs(60)).await;
            return;
        }
        let mut buf = vec![0u8; step];
        let mut got = 0;
        while got < len {
            tokio::time::sleep(pause).await;
            let n = sock.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got += n;
        }
        sock.write_all(b"HTTP/1.1 200 OK\r\nETag: \"slow\"\r\nContent-Length: 0\r\n\r\n").await.unwrap();
        sock.flush().await.unwrap();
        // Keeps the connection open a while so the client reads the answer before the close.
        tokio::time::sleep(Duration::from_secs(1)).await;
    });
    addr
}

fn zeros(total: usize) -> reqwest::Body {
    let chunk = bytes::Bytes::from(vec![0u8; 64 * 1024]);
    let n = total / chunk.len();
    reqwest::Body::wrap_stream(futures_util::stream::iter((0..n).map(move |_| Ok::<_, std::io::Error>(chunk.clone()))))
}

#[tokio::test]
async fn a_put_that_stops_moving_is_aborted_as_stalled() {
    let addr = slow_reader(0, Duration::ZERO).await;
    let mut cfg = cfg(&format!("http://{addr}"));
    cfg.stall_timeout = Dur(Duration::from_millis(300));
    let c = Client::new(&cfg, ApiKey::new(KEY)).unwrap();
    let len = 64 << 20; // far more than the socket buffers hold
    let t0 = std::time::Instant::now();
    let err = c.put_part(&format!("http://{addr}/b/k?sig=1"), zeros(len), len as u64, None).await.unwrap_err();
    assert!(matches!(err, ApiError::Stalled { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Retry { after: None });
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

#[tokio::test]
async fn a_slow_but_moving_put_is_not_a_stall() {
    // 32 MiB read 512 KiB every 20 ms: ~1.3 s in all, far beyond the 300 ms stall limit,
    // and more than the socket buffers hold, so the body's hand-over is paced by the reader.
    let addr = slow_reader(512 * 1024, Duration::from_millis(20)).await;
    let mut cfg = cfg(&format!("http://{addr}"));
    cfg.stall_timeout = Dur(Duration::from_millis(300));
    let c = Client::new(&cfg, ApiKey::new(KEY)).unwrap();
    let len = 32 << 20;
    let t0 = std::time::Instant::now();
    let etag = c.put_part(&format!("http://{addr}/b/k"), zeros(len), len as u64, None).await.unwrap();
    assert_eq!(etag, "\"slow\"");
    assert!(t0.elapsed() > Duration::from_millis(300));
}

#[tokio::test]
async fn api_calls_time_out_and_may_be_retried() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let (_sock, _) = listener.accept().await.unwrap();
        // Accepts and never answers: the timeout under test.
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let mut cfg = cfg(&format!("http://{addr}"));
    cfg.request_timeout = Dur(Duration::from_millis(200));
    let c = Client::new(&cfg, ApiKey::new(KEY)).unwrap();
    let err = c.cancel_group("s").await.unwrap_err();
    assert!(matches!(err, ApiError::Transport { kind: TransportKind::Timeout, .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Retry { after: None });
    hold.abort();
}
