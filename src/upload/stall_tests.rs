//! The stall watchdog and the bandwidth throttle together: time a part
//! spends waiting for the limit is not a stall; a storage that stops
//! reading still is.

use std::sync::Arc;
use std::time::Duration;

use super::stream::{ChunkGate, PutOptions, TransferError, put_file_range};
use crate::api::test_server::{Reply, TestServer};
use crate::api::{ApiError, Client};
use crate::config::{ApiConfig, ApiKey, Dur};

fn client(endpoint: &str, stall: Duration) -> Client {
    let cfg = ApiConfig { endpoint: endpoint.into(), stall_timeout: Dur(stall), ..ApiConfig::default() };
    Client::new(&cfg, ApiKey::new("k-test-key")).unwrap()
}

fn sample(dir: &std::path::Path, len: usize) -> std::path::PathBuf {
    let path = dir.join("v.mov");
    std::fs::write(&path, (0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>()).unwrap();
    path
}

#[tokio::test]
async fn waiting_in_the_throttle_longer_than_the_stall_timeout_is_not_a_stall() {
    let server = TestServer::start(|_| Reply::json(200, "").with("etag", "\"held\"")).await;
    let c = client(&server.url(""), Duration::from_millis(200));
    let dir = tempfile::tempdir().unwrap();
    let path = sample(dir.path(), 32 * 1024);
    // Each 8 KiB chunk waits 600 ms for the limit: 2.4 s held, 12 stall timeouts.
    let throttle: ChunkGate = Arc::new(|_| Box::pin(tokio::time::sleep(Duration::from_millis(600))));
    let opts = PutOptions { throttle: Some(throttle), chunk_size: 8192, verify_md5: false, ..PutOptions::default() };
    let t0 = std::time::Instant::now();
    let etag = put_file_range(&c, &server.url("/b/k?sig=1"), &path, 0, 32 * 1024, &opts).await.unwrap();
    assert_eq!(etag, "\"held\"");
    assert!(t0.elapsed() >= Duration::from_millis(2400), "the throttle really held the part: {:?}", t0.elapsed());
    assert_eq!(server.seen().len(), 1, "one PUT, not aborted and sent again");
}

#[tokio::test]
async fn a_storage_that_stops_reading_is_still_a_stall_under_a_throttle() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let (_sock, _) = listener.accept().await.unwrap();
        // Holds the connection and never reads: the stall under test.
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
    let c = client(&format!("http://{addr}"), Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let len = 48 << 20; // more than the socket buffers hold
    let path = sample(dir.path(), len);
    // A throttle that always allows at once.
    let throttle: ChunkGate = Arc::new(|_| Box::pin(async {}));
    let opts = PutOptions { throttle: Some(throttle), verify_md5: false, ..PutOptions::default() };
    let t0 = std::time::Instant::now();
    let err = put_file_range(&c, &format!("http://{addr}/b/k"), &path, 0, len as u64, &opts).await.unwrap_err();
    assert!(matches!(err, TransferError::Api(ApiError::Stalled { .. })), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    hold.abort();
}
