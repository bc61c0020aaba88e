//! The listener's accept loop: what a hostile or careless client can hold.
//!
//! - **A cap on open connections** (`[http] max_connections`, read at each
//!   accept so a reload applies): beyond it a new connection gets a
//!   one-line 503 and is closed at once, so idle clients cannot take the
//!   descriptors the watcher and the uploads need.
//! - **A header timeout** ([`HEADER_TIMEOUT`] in the agent): a client must send a whole
//!   request head within it, and the clock starts again while a kept-alive
//!   connection waits for its next request, so it is also the idle timeout.
//! - **Small heads**: hyper's read buffer is capped ([`MAX_HEAD`]).
//! - **Stalled requests**: a request in flight whose client stops reading
//!   the answer (or sending the body) for [`STALL`] is dropped, so slow
//!   readers cannot hold connections (and their answers' memory) for ever.
//! - **Accept errors** (out of descriptors) are logged once per streak and
//!   retried after a growing pause, never in a busy loop.
//! - **A bounded stop**: on shutdown the listening socket closes, a
//!   connection with no request in flight (idle, or a head half sent) is
//!   dropped at once, one with a request in flight gets until `grace`, and
//!   whatever is left then is dropped.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

/// A request head must arrive whole within this; a kept-alive connection
/// is closed after this long without a new request.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// hyper's read buffer, which bounds a request head (the API's heads are a
/// few hundred bytes; hyper's smallest allowed value is 8 KiB).
pub const MAX_HEAD: usize = 16 * 1024;

/// A request in flight whose connection moves no byte for this long is dropped.
pub const STALL: Duration = Duration::from_secs(30);

/// The longest pause between accept attempts after errors.
const ACCEPT_BACKOFF_CAP: Duration = Duration::from_secs(1);

/// What a connection beyond the cap is told before it is closed.
fn refused() -> String {
    let body = "{\"error\":\"too many open connections to the console ([http] max_connections)\"}\n";
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The listener's settings, read when they are needed (so a reload applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Open connections at most.
    pub max_connections: usize,
    /// How long a request in flight may take to finish once the stop began.
    pub grace: Duration,
    /// A request head must arrive within this; also the keep-alive idle timeout.
    pub header_timeout: Duration,
    /// A request in flight whose connection moves no byte this long is dropped.
    pub stall: Duration,
}

/// Where the settings come from: the config in force.
pub type SettingsSource = Arc<dyn Fn() -> Settings + Send + Sync>;

/// The address a request's connection arrived on (a request extension),
/// for the `Host` check.
#[derive(Debug, Clone, Copy)]
pub struct LocalAddr(pub SocketAddr);

/// Serve `router` on `listener` until `stop`, then stop within the grace.
pub async fn serve(listener: TcpListener, router: Router, settings: SettingsSource, stop: CancellationToken) {
    let closing = CancellationToken::new();
    let mut conns: JoinSet<()> = JoinSet::new();
    let mut accept_failing: Option<Duration> = None;
    let mut refusing = false;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => {
                if accept_failing.take().is_some() {
                    tracing::info!("the console accepts connections again");
                }
                stream
            }
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                let pause = match accept_failing {
                    None => {
                        tracing::warn!("the console cannot accept connections: {e}; trying again with a growing pause");
                        Duration::from_millis(10)
                    }
                    Some(p) => (p * 2).min(ACCEPT_BACKOFF_CAP),
                };
                accept_failing = Some(pause);
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(pause) => continue,
                }
            }
        };
        let Settings { max_connections: max, header_timeout, stall, .. } = settings();
        if conns.len() >= max {
            if !refusing {
                refusing = true;
                tracing::warn!(max_connections = max, "the console has {max} connections open; refusing new ones");
            }
            // Never wait for a client that does not read: one try, then close.
            let _ = stream.try_write(refused().as_bytes());
            drop(stream);
            continue;
        }
        if refusing && conns.len() < max / 2 {
            refusing = false;
            tracing::info!("the console accepts new connections again");
        }
        conns.spawn(connection(stream, router.clone(), header_timeout, stall, closing.clone()));
    }
    drop(listener);
    closing.cancel();
    let grace = settings().grace;
    let drained = tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::info!(open = conns.len(), "console connections still open after the grace are closed");
    }
    conns.shutdown().await;
}

/// An accept error that concerns only the connection being accepted.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted)
}

/// Counts a request in flight on one connection while it lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(n: &Arc<AtomicUsize>) -> InFlight {
        n.fetch_add(1, Ordering::SeqCst);
        InFlight(n.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A stream that notes when bytes last moved either way.
struct Watched {
    inner: TcpStream,
    born: Instant,
    /// Milliseconds after `born` of the last read or write that moved bytes.
    last: Arc<AtomicU64>,
}

impl Watched {
    fn moved(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.moved();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.moved();
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// One connection, until the client is done, a timeout closes it, or the stop.
async fn connection(
    stream: TcpStream,
    router: Router,
    header_timeout: Duration,
    stall: Duration,
    closing: CancellationToken,
) {
    let local = stream.local_addr().ok();
    let last = Arc::new(AtomicU64::new(0));
    let stream = Watched { inner: stream, born: Instant::now(), last: last.clone() };
    let born = stream.born;
    let in_flight = Arc::new(AtomicUsize::new(0));
    let counter = in_flight.clone();
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let mut router = router.clone();
        let guard = InFlight::new(&counter);
        if let Some(addr) = local {
            req.extensions_mut().insert(LocalAddr(addr));
        }
        async move {
            let response = router.call(req.map(axum::body::Body::new)).await;
            drop(guard);
            Ok::<_, Infallible>(match response {
                Ok(r) => r,
                Err(never) => match never {},
            })
        }
    });
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout).max_buf_size(MAX_HEAD).keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    // A request whose answer the client stops reading (or whose body it
    // stops sending) is dropped after `stall` without progress; the header
    // timeout covers a connection with no request in flight.
    let mut tick = tokio::time::interval((stall / 4).max(Duration::from_millis(10)));
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = closing.cancelled() => break,
            _ = tick.tick() => {
                let quiet = born.elapsed().saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                if in_flight.load(Ordering::SeqCst) > 0 && quiet >= stall {
                    tracing::debug!("a console client stopped reading or sending for {}; connection closed", crate::config::Dur(quiet));
                    return;
                }
            }
        }
    }
    if in_flight.load(Ordering::SeqCst) == 0 {
        return;
    }
    // Let the request in flight finish (the caller bounds this by the grace).
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}
