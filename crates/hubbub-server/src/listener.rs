//! One listener's connections: the cap on how many are open, the time a connection gets to send
//! a request's headers, the time an HTTP keep-alive connection may sit idle, and their counters.
//!
//! Each accepted connection takes a [`Slot`] (or is refused when the listener is full) and is
//! read through [`Tracked`], which notes when bytes of a new request arrive. [`watch`] runs the
//! connection and closes it when it overstays a limit. A WebSocket keeps its slot for as long as
//! its socket lives, but once upgraded it is no longer watched (it has its own keep-alive).

use hubbub_proto::error::{ErrorDetail, ERROR_CODE_HEADER};
use hyper::body::{Body, Frame, SizeHint};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// The admin listener's cap on open connections (operators and scrapers, never clients).
pub const ADMIN_MAX_CONNECTIONS: usize = 256;

/// What one listener allows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections (WebSockets included); a connection beyond it is refused.
    pub max_connections: usize,
    /// Time to send complete request headers: from the start of the connection for the first
    /// request, from the request's first bytes for later ones.
    pub header_timeout: Duration,
    /// Time an HTTP connection may sit with no request in flight.
    pub idle_timeout: Duration,
}

/// One listener's counters, read by `/metrics`.
#[derive(Debug, Default)]
pub struct ListenerStats {
    open: AtomicUsize,
    refused: AtomicU64,
    header_timeouts: AtomicU64,
    idle_closed: AtomicU64,
}

impl ListenerStats {
    /// Connections open now (WebSockets included).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections refused because the listener was full.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Connections closed because their request headers did not arrive in time.
    pub fn header_timeouts(&self) -> u64 {
        self.header_timeouts.load(Ordering::Relaxed)
    }

    /// Keep-alive connections closed after sitting idle.
    pub fn idle_closed(&self) -> u64 {
        self.idle_closed.load(Ordering::Relaxed)
    }

    /// A slot for a new connection, or `None` (counted) when `max` are open.
    pub fn admit(self: &Arc<Self>, max: usize) -> Option<Slot> {
        if self.open.fetch_add(1, Ordering::Relaxed) >= max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(Slot(Arc::clone(self)))
    }
}

/// The counters of both listeners.
#[derive(Debug, Default)]
pub struct Listeners {
    pub public: Arc<ListenerStats>,
    pub admin: Arc<ListenerStats>,
}

/// One open connection's place under the cap; given back when dropped.
#[derive(Debug)]
pub struct Slot(Arc<ListenerStats>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a full listener answers on plain HTTP before closing: `503` with an `ErrorDetail` body.
pub fn busy_response() -> Vec<u8> {
    let detail = ErrorDetail::new(
        "ServiceUnavailable",
        "the server has too many open connections; retry later",
    );
    let body = serde_json::to_string(&detail).unwrap_or_default();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json; charset=utf-8\r\n\
         {ERROR_CODE_HEADER}: ServiceUnavailable\r\nretry-after: 1\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Refuses a connection: writes `busy` if the socket takes it at once (it always does when
/// just accepted), then closes. Never waits, so a flood of refusals costs no task.
pub fn refuse(stream: tokio::net::TcpStream, busy: Option<&[u8]>) {
    if let Some(busy) = busy {
        let _ = stream.try_write(busy);
    }
}

/// Milliseconds meaning "no request has started".
const NONE: u64 = u64::MAX;

/// Where one connection stands: requests in flight, when it went idle, when bytes of a new
/// request arrived. Shared by its reads, its requests and its watchdog.
#[derive(Debug)]
pub struct Track {
    _slot: Slot,
    start: Instant,
    in_flight: AtomicU32,
    served: AtomicBool,
    http2: AtomicBool,
    /// Still served as HTTP (false once upgraded or ended): reads note request starts.
    watched: AtomicBool,
    /// Milliseconds after `start` when bytes arrived with no request in flight, or [`NONE`].
    pending_since: AtomicU64,
    /// Milliseconds after `start` when the last request in flight ended.
    idle_since: AtomicU64,
}

/// Why a connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Header,
    Idle,
}

impl Track {
    pub fn new(slot: Slot) -> Arc<Self> {
        Arc::new(Self {
            _slot: slot,
            start: Instant::now(),
            in_flight: AtomicU32::new(0),
            served: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            watched: AtomicBool::new(true),
            pending_since: AtomicU64::new(NONE),
            idle_since: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    /// Bytes were read from the connection.
    fn on_read(&self) {
        if self.watched.load(Ordering::Relaxed) && self.in_flight.load(Ordering::Acquire) == 0 {
            let _ = self.pending_since.compare_exchange(
                NONE,
                self.now_ms(),
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    /// A request's headers arrived: it is in flight until the returned guard is dropped (with
    /// its response body).
    pub fn begin(self: &Arc<Self>, version: hyper::Version) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.pending_since.store(NONE, Ordering::Release);
        self.served.store(true, Ordering::Relaxed);
        if version == hyper::Version::HTTP_2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        InFlight(Arc::clone(self))
    }

    /// When this connection must be closed, and why; `None` while a request is in flight.
    fn deadline(&self, limits: &Limits) -> Option<(Instant, Expiry)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        if !self.served.load(Ordering::Relaxed) {
            return Some((self.start + limits.header_timeout, Expiry::Header));
        }
        let pending = self.pending_since.load(Ordering::Acquire);
        // HTTP/2 sends frames of its own between requests (settings, window updates, pings):
        // only the idle limit applies between its streams.
        if pending != NONE && !self.http2.load(Ordering::Relaxed) {
            return Some((self.at(pending) + limits.header_timeout, Expiry::Header));
        }
        let idle = self.idle_since.load(Ordering::Acquire);
        Some((self.at(idle) + limits.idle_timeout, Expiry::Idle))
    }
}

/// A request in flight on a tracked connection.
#[derive(Debug)]
pub struct InFlight(Arc<Track>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let track = &self.0;
        if track.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            track.idle_since.store(track.now_ms(), Ordering::Release);
        }
    }
}

/// Runs a connection until it ends, or closes it (by dropping it) when it overstays a limit;
/// counts the closings. Upgraded connections end here and are no longer watched.
pub async fn watch<F: Future>(conn: F, track: &Track, limits: &Limits, stats: &ListenerStats) {
    tokio::pin!(conn);
    // Deadlines set while the watchdog sleeps are never earlier than its next check.
    let period = limits.header_timeout.min(limits.idle_timeout);
    let expired = loop {
        let now = Instant::now();
        let wake = match track.deadline(limits) {
            Some((at, why)) if at <= now => break Some(why),
            Some((at, _)) => at.min(now + period),
            None => now + period,
        };
        tokio::select! {
            _ = &mut conn => break None,
            () = tokio::time::sleep_until(wake) => {}
        }
    };
    track.watched.store(false, Ordering::Relaxed);
    match expired {
        Some(Expiry::Header) => {
            stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("closed a connection that did not send request headers in time");
        }
        Some(Expiry::Idle) => {
            stats.idle_closed.fetch_add(1, Ordering::Relaxed);
        }
        None => {}
    }
}

/// A connection's stream, read and written as is, noting when bytes arrive.
#[derive(Debug)]
pub struct Tracked<S> {
    inner: S,
    track: Arc<Track>,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, track: Arc<Track>) -> Self {
        Self { inner, track }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.track.on_read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A response body that keeps its request in flight until it is sent (or dropped).
#[derive(Debug)]
pub struct Held<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B> Held<B> {
    pub fn new(body: B, in_flight: InFlight) -> Self {
        Self {
            body,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body + Unpin> Body for Held<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_connections: 2,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn the_cap_refuses_and_counts_and_a_closed_connection_frees_its_slot() {
        let stats = Arc::new(ListenerStats::default());
        let a = stats.admit(2).unwrap();
        let _b = stats.admit(2).unwrap();
        assert!(stats.admit(2).is_none());
        assert_eq!((stats.open(), stats.refused()), (2, 1));
        drop(a);
        assert!(stats.admit(2).is_some());
        assert_eq!(stats.open(), 1);
    }

    #[tokio::test]
    async fn deadlines_follow_the_requests() {
        let stats = Arc::new(ListenerStats::default());
        let track = Track::new(stats.admit(1).unwrap());
        let limits = limits();
        // Before any request: headers are due from the start.
        let (at, why) = track.deadline(&limits).unwrap();
        assert_eq!(
            (at, why),
            (track.start + limits.header_timeout, Expiry::Header)
        );
        let request = track.begin(hyper::Version::HTTP_11);
        track.on_read(); // body bytes of the request in flight do not start a new one
        assert!(track.deadline(&limits).is_none());
        drop(request);
        assert_eq!(track.deadline(&limits).unwrap().1, Expiry::Idle);
        track.on_read();
        assert_eq!(track.deadline(&limits).unwrap().1, Expiry::Header);
        let http2 = track.begin(hyper::Version::HTTP_2);
        drop(http2);
        track.on_read();
        assert_eq!(track.deadline(&limits).unwrap().1, Expiry::Idle);
        drop(track);
        assert_eq!(stats.open(), 0);
    }

    #[test]
    fn the_busy_answer_is_an_error_detail() {
        let busy = String::from_utf8(busy_response()).unwrap();
        let (head, body) = busy.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let detail: ErrorDetail = serde_json::from_str(body).unwrap();
        assert_eq!(detail.code, "ServiceUnavailable");
    }
}
