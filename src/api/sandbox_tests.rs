//! The client, the part streamer and the retry helper against the real
//! sandbox over loopback: whole groups, faults, expired URLs, corrupt ETags.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::Dur;
use crate::model::{FileRole, Layout};
use crate::retry::{Repeat, Retry, RetryError, RetryPolicy, with_retries};
use crate::sandbox::{Faults, Sandbox, SandboxOptions};
use crate::upload::stream::{PutOptions, TransferError, put_file_range};

const KEY: &str = "sandbox-test-key-7f3a";
const PART: u64 = 1 << 20;

struct Env {
    sandbox: Sandbox,
    client: Client,
    dir: tempfile::TempDir,
}

async fn env(key: Option<&str>) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = SandboxOptions::new(dir.path().join("sandbox"));
    opts.part_size = PART;
    opts.api_key = key.map(str::to_string);
    let sandbox = Sandbox::start("127.0.0.1:0".parse().unwrap(), opts).await.unwrap();
    let cfg = ApiConfig {
        endpoint: sandbox.base_url(),
        connect_timeout: Dur(Duration::from_secs(2)),
        request_timeout: Dur(Duration::from_secs(10)),
        stall_timeout: Dur(Duration::from_secs(10)),
        ..ApiConfig::default()
    };
    let client = Client::new(&cfg, ApiKey::new(KEY)).unwrap();
    Env { sandbox, client, dir }
}

/// Deterministic, non-repeating-looking bytes.
fn write_file(dir: &Path, name: &str, len: usize, seed: u8) -> PathBuf {
    let data: Vec<u8> = (0..len).map(|i| (((i as u64 * 2654435761) >> 7) as u8) ^ seed ^ (i >> 16) as u8).collect();
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path
}

fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(5),
        cap: Duration::from_millis(50),
        max_attempts: 40,
        budget: Duration::from_secs(60),
    }
}

/// Upload one file the way the engine does, retrying transient failures and
/// refreshing URLs the storage no longer accepts. Returns the complete answer.
async fn upload_file(
    c: &Client,
    policy: &RetryPolicy,
    session: &str,
    f: &CreatedFile,
    path: &Path,
) -> Result<FileCompleted, String> {
    let cancel = CancellationToken::new();
    let ask = match f.upload_strategy {
        Strategy::SinglePut => PartUrlsRequest::SinglePut,
        Strategy::Multipart => PartUrlsRequest::Range { start: 1, count: f.total_parts },
    };
    let urls = with_retries(policy, Retry::new("part urls", &cancel, Repeat::Always), |_| {
        c.part_urls(session, &f.upload_id, &ask)
    })
    .await
    .map_err(|e| e.to_string())?;
    let mut done = Vec::new();
    for p in urls.parts {
        let mut url = p.url.clone();
        let etag = loop {
            let opts = PutOptions::default();
            let put = |_| put_file_range(c, &url, path, p.byte_start, p.size_bytes, &opts);
            match with_retries(policy, Retry::new("part", &cancel, Repeat::Always), put).await {
                Ok(etag) => break etag,
                Err(RetryError::Stopped(e)) if e.class() == ErrorClass::RefreshUrls => {
                    let again = PartUrlsRequest::Numbers(vec![p.part_number]);
                    let fresh = with_retries(policy, Retry::new("refresh", &cancel, Repeat::Always), |_| {
                        c.part_urls(session, &f.upload_id, &again)
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                    url = fresh.parts[0].url.clone();
                }
                Err(e) => return Err(e.to_string()),
            }
        };
        done.push(CompletedPart { part_number: p.part_number, etag });
    }
    if f.upload_strategy == Strategy::SinglePut {
        done.clear();
    }
    with_retries(policy, Retry::new("complete", &cancel, Repeat::Always), |_| {
        c.complete_file(session, &f.upload_id, &done)
    })
    .await
    .map_err(|e| e.to_string())
}

struct Source {
    path: PathBuf,
    role: FileRole,
    language: Option<&'static str>,
}

/// A 2D group: a 3.5-part video (multipart), an audio file and a subtitle (single_put).
fn two_d_group(dir: &Path) -> Vec<Source> {
    vec![
        Source {
            path: write_file(dir, "trip.mov", (3 * PART + PART / 2) as usize, 1),
            role: FileRole::Video,
            language: None,
        },
        Source { path: write_file(dir, "trip.en.m4a", 200_001, 2), role: FileRole::Audio, language: Some("en") },
        Source { path: write_file(dir, "trip.en.srt", 1_234, 3), role: FileRole::Subtitle, language: Some("en") },
    ]
}

fn start_request(name: &str, files: &[Source]) -> StartGroup {
    StartGroup {
        video_name: name.into(),
        description: None,
        layout: Layout::TwoD,
        perspective: None,
        folder_name: Some("tests".into()),
        files: files
            .iter()
            .map(|s| StartFile {
                file_name: s.path.file_name().unwrap().to_string_lossy().into_owned(),
                file_role: s.role,
                size_bytes: std::fs::metadata(&s.path).unwrap().len(),
                language_tag: s.language.map(str::to_string),
            })
            .collect(),
    }
}

/// Create the group and upload every file; the library id of the last `complete`.
async fn upload_group(e: &Env, policy: &RetryPolicy, name: &str, files: &[Source]) -> u64 {
    let cancel = CancellationToken::new();
    let req = start_request(name, files);
    let g = with_retries(policy, Retry::new("start", &cancel, Repeat::IfNotSent), |_| e.client.start_group(&req))
        .await
        .unwrap();
    let mut library = None;
    for (i, s) in files.iter().enumerate() {
        let f = g.file_for(&req.files[i].file_name, s.role).expect("every file registered");
        let done = upload_file(&e.client, policy, &g.session_id, f, &s.path).await.unwrap();
        assert_eq!(done.status, "completed");
        if i + 1 < files.len() {
            assert_eq!(done.library_id, None, "libraryId only on the group's last complete");
        }
        library = done.library_id;
    }
    library.expect("the last complete carries the library id")
}

fn assert_stored_identically(e: &Env, library_id: u64, files: &[Source]) {
    let entry = e.sandbox.library().into_iter().find(|l| l.library_id == library_id).expect("library entry");
    assert_eq!(entry.files.len(), files.len());
    for s in files {
        let name = s.path.file_name().unwrap().to_string_lossy();
        let stored = entry.files.iter().find(|f| f.file_name == name).expect("file in library");
        assert_eq!(stored.size, std::fs::metadata(&s.path).unwrap().len(), "{name}");
        assert_eq!(stored.sha256, sha256_of(&s.path), "{name} arrived byte-identical");
    }
}

#[tokio::test]
async fn a_whole_group_arrives_byte_identical_without_the_key_on_storage() {
    let e = env(Some(KEY)).await;
    let files = two_d_group(e.dir.path());
    let id = upload_group(&e, &fast_policy(), "trip", &files).await;
    assert_stored_identically(&e, id, &files);
    assert_eq!(e.sandbox.violations(), vec![], "no key on a storage PUT, parts complete and sorted");
    let stats = e.sandbox.stats();
    assert_eq!(stats.storage_puts, 4 + 1 + 1);
    assert_eq!(stats.unauthorized + stats.forbidden, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_rate_limits_and_resets_are_recovered() {
    let e = env(None).await;
    e.sandbox.set_faults(Faults {
        api_5xx: 0.2,
        put_5xx: 0.2,
        rate_limit: 0.1,
        retry_after: Duration::from_millis(1),
        reset_mid_body: 0.2,
        seed: Some(42),
        ..Faults::default()
    });
    let files = two_d_group(e.dir.path());
    let t0 = std::time::Instant::now();
    let id = upload_group(&e, &fast_policy(), "faulty", &files).await;
    assert_stored_identically(&e, id, &files);
    assert_eq!(e.sandbox.violations(), vec![]);
    let stats = e.sandbox.stats();
    let injected: u64 =
        ["api_5xx", "put_5xx", "rate_limit", "reset_mid_body"].iter().map(|k| stats.fault_count(k)).sum();
    assert!(injected >= 3, "the faults did happen: {:?}", stats.faults);
    // Each 429 asked for 1 s (whole seconds, rounded up), and was honoured.
    let limited = stats.fault_count("rate_limit");
    assert!(t0.elapsed() >= Duration::from_secs(limited), "{limited} Retry-After(s) honoured in {:?}", t0.elapsed());
}

#[tokio::test]
async fn a_rate_limit_carries_its_retry_after() {
    let e = env(None).await;
    e.sandbox.set_faults(Faults { rate_limit: 1.0, retry_after: Duration::from_secs(3), ..Faults::default() });
    let err = e.client.part_urls("s", "u", &PartUrlsRequest::SinglePut).await.unwrap_err();
    assert_eq!(err.status(), Some(429));
    assert_eq!(err.class(), ErrorClass::Retry { after: Some(Duration::from_secs(3)) });
}

#[tokio::test]
async fn an_expired_url_asks_for_fresh_urls_and_then_goes_through() {
    let e = env(None).await;
    let src = [Source {
        path: write_file(e.dir.path(), "v.mov", (PART + 10) as usize, 9),
        role: FileRole::Video,
        language: None,
    }];
    let req = start_request("exp", &src);
    let g = e.client.start_group(&req).await.unwrap();
    let f = g.file_for("v.mov", FileRole::Video).unwrap();
    assert_eq!((f.upload_strategy, f.total_parts), (Strategy::Multipart, 2));
    let urls = e.client.part_urls(&g.session_id, &f.upload_id, &PartUrlsRequest::Range { start: 1, count: 2 }).await;
    let urls = urls.unwrap();
    e.sandbox.expire_all_urls();
    let p = &urls.parts[1];
    let err = put_file_range(&e.client, &p.url, &src[0].path, p.byte_start, p.size_bytes, &PutOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::RefreshUrls, "{err}");
    assert!(err.to_string().contains("Request has expired"), "{err}");
    assert!(!err.to_string().contains(p.url.split('?').nth(1).unwrap()), "no signature in the message: {err}");
    // The refreshed URL works, and so does the rest of the file.
    let done = upload_file(&e.client, &fast_policy(), &g.session_id, f, &src[0].path).await.unwrap();
    assert_eq!(done.status, "completed");
    assert_stored_identically(&e, done.library_id.unwrap(), &src);
}

#[tokio::test]
async fn a_corrupted_etag_is_detected_and_a_retry_fixes_it() {
    let e = env(None).await;
    let src = [Source { path: write_file(e.dir.path(), "v.mov", 300_000, 4), role: FileRole::Video, language: None }];
    let g = e.client.start_group(&start_request("etag", &src)).await.unwrap();
    let f = &g.files[0];
    let urls = e.client.part_urls(&g.session_id, &f.upload_id, &PartUrlsRequest::SinglePut).await.unwrap();
    let p = &urls.parts[0];
    e.sandbox.set_faults(Faults { corrupt_etag: 1.0, ..Faults::default() });
    let err =
        put_file_range(&e.client, &p.url, &src[0].path, 0, p.size_bytes, &PutOptions::default()).await.unwrap_err();
    assert!(matches!(err, TransferError::EtagMismatch { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Retry { after: None });
    // Without verification the same answer is accepted as is.
    assert!(
        put_file_range(
            &e.client,
            &p.url,
            &src[0].path,
            0,
            p.size_bytes,
            &PutOptions { verify_md5: false, ..PutOptions::default() }
        )
        .await
        .is_ok()
    );
    e.sandbox.set_faults(Faults::default());
    let etag = put_file_range(&e.client, &p.url, &src[0].path, 0, p.size_bytes, &PutOptions::default()).await.unwrap();
    assert!(crate::upload::stream::etag_md5(&etag).is_some());
    let done = e.client.complete_file(&g.session_id, &f.upload_id, &[]).await.unwrap();
    assert!(done.library_id.is_some());
}

#[tokio::test]
async fn a_wrong_key_is_an_auth_error_and_a_broken_rule_is_fatal_with_the_servers_words() {
    let e = env(Some("the-only-key")).await;
    let src = [Source { path: write_file(e.dir.path(), "v.mov", 10, 1), role: FileRole::Video, language: None }];
    let err = e.client.start_group(&start_request("k", &src)).await.unwrap_err();
    assert!(err.is_auth(), "{err}");
    assert_eq!(err.class(), ErrorClass::Fatal);
    assert!(!format!("{err} {err:?}").contains(KEY));

    let e = env(None).await;
    let mut req = start_request("bad", &src);
    req.files[0].language_tag = Some("en".into()); // not allowed on a video
    let err = e.client.start_group(&req).await.unwrap_err();
    assert_eq!((err.status(), err.class()), (Some(422), ErrorClass::Fatal), "{err}");
    assert!(err.to_string().to_lowercase().contains("language"), "the server's message is kept: {err}");
}

#[tokio::test]
async fn canceled_and_expired_groups() {
    let e = env(None).await;
    let src = [Source {
        path: write_file(e.dir.path(), "v.mov", (2 * PART) as usize, 5),
        role: FileRole::Video,
        language: None,
    }];
    let g = e.client.start_group(&start_request("c", &src)).await.unwrap();
    let f = &g.files[0];
    let urls = e.client.part_urls(&g.session_id, &f.upload_id, &PartUrlsRequest::Numbers(vec![2])).await.unwrap();
    e.client.cancel_group(&g.session_id).await.unwrap();
    e.client.cancel_group(&g.session_id).await.unwrap(); // again: still "canceled"
    let p = &urls.parts[0];
    let err = put_file_range(&e.client, &p.url, &src[0].path, p.byte_start, p.size_bytes, &PutOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Gone, "storage NoSuchUpload: {err}");

    let g = e.client.start_group(&start_request("x", &src)).await.unwrap();
    e.sandbox.advance_clock(Duration::from_secs(5 * 24 * 3600 + 60));
    let err = e.client.part_urls(&g.session_id, &g.files[0].upload_id, &PartUrlsRequest::Numbers(vec![1])).await;
    assert_eq!(err.unwrap_err().class(), ErrorClass::Gone);
}
