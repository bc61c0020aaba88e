//! The client stays bounded against any server: oversized JSON answers and
//! absurd upload plans are refused with a clear error.

use std::time::Duration;

use super::test_server::{Reply, TestServer};
use super::*;
use crate::config::Dur;
use crate::model::{FileRole, Layout};
use reqwest::Method;

fn client(server: &TestServer) -> Client {
    let cfg =
        ApiConfig { endpoint: server.url(""), request_timeout: Dur(Duration::from_secs(10)), ..ApiConfig::default() };
    Client::new(&cfg, crate::config::ApiKey::new("k-test-key")).unwrap()
}

fn start() -> StartGroup {
    StartGroup {
        video_name: "v".into(),
        description: None,
        layout: Layout::TwoD,
        perspective: None,
        folder_name: None,
        files: vec![StartFile {
            file_name: "v.mov".into(),
            file_role: FileRole::Video,
            size_bytes: 100,
            language_tag: None,
        }],
    }
}

fn created(total_bytes: u64, part_size: u64, parts: u32) -> String {
    format!(
        r#"{{"sessionId":"s1","files":[{{"uploadId":"u1","fileRole":"video","fileName":"v.mov",
        "totalBytes":{total_bytes},"partSizeBytes":{part_size},"totalParts":{parts},"uploadStrategy":"multipart"}}]}}"#
    )
}

#[tokio::test]
async fn a_json_answer_padded_past_the_cap_is_refused_with_a_clear_error() {
    let padded = format!(r#"{{"pad":"{}",{}"#, "x".repeat(MAX_JSON_BODY + 10), &created(100, 100, 1)[1..]);
    let server = TestServer::start(move |_| Reply::json(200, &padded)).await;
    let err = client(&server).start_group(&start()).await.unwrap_err();
    assert!(matches!(err, ApiError::InvalidResponse { .. }), "{err}");
    assert!(err.to_string().contains("larger than 16 MiB"), "{err}");
}

#[tokio::test]
async fn absurd_plans_are_refused_naming_the_file() {
    for (body, says) in [
        (created(100, 100, 0), "totalParts 0"),
        (created(1 << 40, 1, 10_001), "totalParts 10001"),
        (created(100, 0, 1), "partSizeBytes is 0"),
        (created(0, 100, 1), "totalBytes is 0"),
        (created(100, 10, 3), "does not match"),
    ] {
        let server = TestServer::start(move |_| Reply::json(200, &body)).await;
        let err = client(&server).start_group(&start()).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains(says) && text.contains("v.mov"), "{says}: {text}");
        assert_eq!(err.class(), ErrorClass::Fatal);
    }
}

#[tokio::test]
async fn a_start_answer_that_cannot_be_used_cancels_the_server_group_it_names() {
    for (body, session) in [
        // Decodes as JSON, but the plan is absurd.
        (created(100, 100, 0), Some("s1")),
        // Cut short: not JSON at all, yet it names the group it created.
        (r#"{"sessionId": "s-cut", "files": [{"uploadId":"#.to_string(), Some("s-cut")),
        (r#"{"uploadSessionId":"s-alt","files":"nope"}"#.to_string(), Some("s-alt")),
        // Names no group: nothing to cancel.
        ("<html>bad gateway</html>".to_string(), None),
        (r#"{"sessionId": 42}"#.to_string(), None),
    ] {
        let answer = body.clone();
        let server = TestServer::start(move |seen| match seen.method {
            Method::POST => Reply::json(200, &answer),
            _ => Reply::json(200, r#"{"status":"canceled"}"#),
        })
        .await;
        let err = client(&server).start_group(&start()).await.unwrap_err();
        let text = err.to_string();
        assert_eq!(err.class(), ErrorClass::Fatal, "{text}");
        let deletes: Vec<String> =
            server.seen().into_iter().filter(|s| s.method == Method::DELETE).map(|s| s.uri).collect();
        match session {
            Some(id) => {
                assert_eq!(deletes, vec![format!("/api/videos/uploads/{id}")], "{body}");
                assert!(text.contains(&format!("server group {id} canceled")), "{text}");
            }
            None => assert!(deletes.is_empty(), "{body}: {deletes:?}"),
        }
    }
}
