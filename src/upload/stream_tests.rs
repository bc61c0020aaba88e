//! Tests of `stream`.

use super::*;

async fn next_data(body: &mut reqwest::Body) -> Option<Result<Bytes, reqwest::Error>> {
    use http_body::Body as _;
    std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx))
        .await
        .map(|r| r.map(|f| f.into_data().expect("a streamed body has only data frames")))
}

#[test]
fn only_a_quoted_32_hex_etag_is_comparable() {
    let md5: [u8; 16] = Md5::digest(b"hello").into();
    let hexed = hex::encode(md5);
    assert_eq!(etag_md5(&format!("\"{hexed}\"")), Some(md5));
    assert_eq!(etag_md5(&format!("\"{}\"", hexed.to_uppercase())), Some(md5));
    assert_eq!(etag_md5(&hexed), None, "unquoted");
    assert_eq!(etag_md5(&format!("W/\"{hexed}\"")), None, "weak");
    assert_eq!(etag_md5(&format!("\"{hexed}-3\"")), None, "multipart-style");
    assert_eq!(etag_md5("\"zz5d41402abc4b2a76b9719d911017c5\""), None, "not hex");
}

#[test]
fn mismatch_is_retryable_and_unknown_etag_accepted() {
    let md5: [u8; 16] = Md5::digest(b"hello").into();
    let other = format!("\"{}\"", hex::encode(Md5::digest(b"world")));
    let err = check_etag("http://s/b/k?X-Sig=secret", other, &md5).unwrap_err();
    assert!(matches!(err, TransferError::EtagMismatch { .. }));
    assert_eq!(err.class(), ErrorClass::Retry { after: None });
    assert!(!err.to_string().contains("secret"), "{err}");
    assert_eq!(check_etag("http://s/b/k", "\"abc-2\"".into(), &md5).unwrap(), "\"abc-2\"");
    let same = format!("\"{}\"", hex::encode(md5));
    assert_eq!(check_etag("http://s/b/k", same.clone(), &md5).unwrap(), same);
}

#[tokio::test]
async fn open_refuses_a_missing_or_short_file_as_source_changed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.mov");
    let opts = PutOptions::default();
    let missing = FileRangeBody::open(&path, 0, 10, &opts, Arc::default(), Arc::default()).await.err().unwrap();
    assert!(missing.is_source_changed() && missing.class() == ErrorClass::Fatal, "{missing}");
    std::fs::write(&path, b"0123456789").unwrap();
    let short = FileRangeBody::open(&path, 5, 6, &opts, Arc::default(), Arc::default()).await.err().unwrap();
    assert!(short.is_source_changed(), "{short}");
    assert!(short.to_string().contains("shorter"), "{short}");
    assert!(FileRangeBody::open(&path, 5, 5, &opts, Arc::default(), Arc::default()).await.is_ok());
}

#[cfg(unix)]
#[tokio::test]
async fn open_reads_only_the_file_that_was_grouped_never_a_link_or_a_fifo() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.mov");
    std::fs::write(&path, b"0123456789").unwrap();
    let m = std::fs::metadata(&path).unwrap();
    let id =
        FileIdentity { size: 10, mtime_ns: super::super::finish::mtime_ns(&m), dev: Some(m.dev()), ino: Some(m.ino()) };
    let opts = PutOptions { expect: Some(id), ..PutOptions::default() };
    assert!(FileRangeBody::open(&path, 0, 10, &opts, Arc::default(), Arc::default()).await.is_ok());
    // Same size and mtime, another inode: refused.
    let other = dir.path().join("b.mov");
    std::fs::write(&other, b"0123456789").unwrap();
    let f = std::fs::File::options().write(true).open(&other).unwrap();
    f.set_modified(m.modified().unwrap()).unwrap();
    std::fs::rename(&other, &path).unwrap();
    let e = FileRangeBody::open(&path, 0, 10, &opts, Arc::default(), Arc::default()).await.err().unwrap();
    assert!(e.is_source_changed() && e.to_string().contains("replaced"), "{e}");
    // A symbolic link in its place: refused, nothing read through it.
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(dir.path().join("target"), &path).unwrap();
    std::fs::write(dir.path().join("target"), b"0123456789").unwrap();
    let e =
        FileRangeBody::open(&path, 0, 10, &PutOptions::default(), Arc::default(), Arc::default()).await.err().unwrap();
    assert!(e.to_string().contains("symbolic link"), "{e}");
    // A FIFO: refused at once instead of blocking.
    let fifo = dir.path().join("p.mov");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let e = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        FileRangeBody::open(&fifo, 0, 10, &PutOptions::default(), Arc::default(), Arc::default()),
    )
    .await
    .expect("does not block")
    .err()
    .unwrap();
    assert!(e.to_string().contains("FIFO"), "{e}");
}

/// The reader yields exactly the range, in bounded chunks, and its MD5 is of that range.
#[tokio::test]
async fn reader_yields_the_range_in_bounded_chunks_with_its_md5() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.mov");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let progress = Arc::new(AtomicU64::new(0));
    let opts = PutOptions { chunk_size: 4096, progress: Some(progress.clone()), ..PutOptions::default() };
    let (body, digest) =
        FileRangeBody::open(&path, 1000, 150_001, &opts, Arc::default(), Arc::default()).await.unwrap();
    let mut body = body;
    let mut got = Vec::new();
    while let Some(chunk) = next_data(&mut body).await {
        let chunk = chunk.unwrap();
        assert!(chunk.len() <= 4096);
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got, &data[1000..151_001]);
    let md5 = digest.finish().await.ok().flatten().unwrap();
    assert_eq!(md5, <[u8; 16]>::from(Md5::digest(&data[1000..151_001])));
    assert_eq!(progress.load(Ordering::Relaxed), 150_001);
}

#[tokio::test]
async fn a_file_that_shrinks_while_read_fails_the_body_and_reports_io() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.mov");
    std::fs::write(&path, vec![1u8; 64 * 1024]).unwrap();
    let opts = PutOptions { chunk_size: 4096, verify_md5: false, ..PutOptions::default() };
    let (body, digest) = FileRangeBody::open(&path, 0, 64 * 1024, &opts, Arc::default(), Arc::default()).await.unwrap();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(10_000).unwrap();
    let mut body = body;
    let mut failed = false;
    while let Some(chunk) = next_data(&mut body).await {
        if chunk.is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "the body must end in an error, not short");
    let err = digest.finish().await.unwrap_err().expect("the file's error, not a dropped body");
    assert!(err.is_source_changed(), "{err}");
}

/// A storage that answers each PUT with the MD5 of what it received,
/// or, when `corrupt`, with the MD5 of something else.
async fn md5_storage(corrupt: bool) -> crate::api::test_server::TestServer {
    use crate::api::test_server::Reply;
    crate::api::test_server::TestServer::start(move |seen| {
        let mut md5: [u8; 16] = Md5::digest(&seen.body).into();
        if corrupt {
            md5[0] ^= 1;
        }
        Reply::json(200, "").with("etag", &format!("\"{}\"", hex::encode(md5)))
    })
    .await
}

fn client_for(server: &crate::api::test_server::TestServer) -> Client {
    let cfg = crate::config::ApiConfig { endpoint: server.url(""), ..Default::default() };
    Client::new(&cfg, crate::config::ApiKey::new("k-test-key")).unwrap()
}

fn sample_file(dir: &Path, len: usize) -> (PathBuf, Vec<u8>) {
    let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8 ^ (i >> 12) as u8).collect();
    let path = dir.join("v.mov");
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

#[tokio::test]
async fn a_range_arrives_exactly_with_its_content_length_and_md5_etag() {
    let server = md5_storage(false).await;
    let client = client_for(&server);
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = sample_file(dir.path(), 3 << 20);
    let (offset, len) = (1_000_001u64, 1_500_000u64);
    let progress = Arc::new(AtomicU64::new(0));
    let opts = PutOptions { progress: Some(progress.clone()), chunk_size: 256 * 1024, ..PutOptions::default() };
    let url = server.url("/bucket/key?X-Amz-Signature=x");
    let etag = put_file_range(&client, &url, &path, offset, len, &opts).await.unwrap();
    let seen = server.seen();
    let range = &data[offset as usize..(offset + len) as usize];
    assert_eq!(seen[0].body.as_ref(), range);
    assert_eq!(seen[0].headers["content-length"], len.to_string());
    assert!(seen[0].headers.get("transfer-encoding").is_none(), "never chunked");
    assert_eq!(etag, format!("\"{}\"", hex::encode(Md5::digest(range))));
    assert_eq!(progress.load(Ordering::Relaxed), len);
}

#[tokio::test]
async fn a_corrupted_etag_is_caught_unless_verification_is_off() {
    let server = md5_storage(true).await;
    let client = client_for(&server);
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = sample_file(dir.path(), 300_000);
    let url = server.url("/bucket/key?X-Amz-Signature=x");
    let progress = Arc::new(AtomicU64::new(0));
    let opts = PutOptions { progress: Some(progress.clone()), ..PutOptions::default() };
    let err = put_file_range(&client, &url, &path, 0, 300_000, &opts).await.unwrap_err();
    assert!(matches!(err, TransferError::EtagMismatch { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Retry { after: None });
    assert_eq!(progress.load(Ordering::Relaxed), 0, "a failed attempt takes its bytes back");
    assert!(
        put_file_range(&client, &url, &path, 0, 300_000, &PutOptions { verify_md5: false, ..PutOptions::default() })
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_missing_file_is_fatal_before_anything_is_sent() {
    let server = md5_storage(false).await;
    let client = client_for(&server);
    let err =
        put_file_range(&client, &server.url("/b/k"), Path::new("/nonexistent/v.mov"), 0, 10, &PutOptions::default())
            .await
            .unwrap_err();
    assert!(err.is_source_changed() && err.class() == ErrorClass::Fatal, "{err}");
    assert!(server.seen().is_empty());
}

#[tokio::test]
async fn the_throttle_is_awaited_before_every_chunk() {
    let server = md5_storage(false).await;
    let client = client_for(&server);
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = sample_file(dir.path(), 100_000);
    let asked = Arc::new(AtomicU64::new(0));
    let counter = asked.clone();
    let throttle: ChunkGate = Arc::new(move |n| {
        counter.fetch_add(n, Ordering::Relaxed);
        Box::pin(tokio::time::sleep(std::time::Duration::from_millis(1)))
    });
    let opts = PutOptions { throttle: Some(throttle), chunk_size: 8192, ..PutOptions::default() };
    put_file_range(&client, &server.url("/b/k"), &path, 0, 100_000, &opts).await.unwrap();
    assert_eq!(asked.load(Ordering::Relaxed), 100_000);
}

#[tokio::test]
async fn a_storage_that_answers_before_taking_the_part_is_retried_not_fatal() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 16 * 1024];
        let _ = sock.read(&mut buf).await.unwrap();
        let md5 = hex::encode(Md5::digest(b""));
        let answer = format!("HTTP/1.1 200 OK\r\nETag: \"{md5}\"\r\nContent-Length: 0\r\n\r\n");
        sock.write_all(answer.as_bytes()).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    });
    let cfg = crate::config::ApiConfig { endpoint: format!("http://{addr}"), ..Default::default() };
    let client = Client::new(&cfg, crate::config::ApiKey::new("k")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = sample_file(dir.path(), 32 << 20);
    let err = put_file_range(&client, &format!("http://{addr}/b/k"), &path, 0, 32 << 20, &PutOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, TransferError::Incomplete { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Retry { after: None }, "{err}");
}
