//! [`HttpUpstream`]: a real HTTP/1.1 or h2c server (hyper) on `127.0.0.1:0`, on its own thread
//! and current-thread runtime. A handler decides per request what to do ([`UpstreamAction`]);
//! every request is recorded with its connection, and accepted connections are counted, so a
//! test can say "the upstream saw exactly one connection" or "the retry carried the same body".
//! The first bytes of each connection are kept as they arrived, before hyper parsed (and
//! tolerated) them: what the proxy wrote, byte for byte.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::oneshot;
use tokio::time::Sleep;

use crate::eventually::{eventually, EVENTUALLY};
use crate::http::head;
use crate::pattern::PatternWriter;

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct UpstreamRequest {
    /// `GET`, `POST`…
    pub method: String,
    /// Path with query, as on the request line (or `:path`).
    pub path: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// `:scheme` of an HTTP/2 request (or of an HTTP/1.1 absolute URL).
    pub scheme: Option<String>,
    /// Header names lowercased, in the order received; `:authority` of an HTTP/2 request is
    /// listed as `host`.
    pub headers: Vec<(String, String)>,
    /// The whole request body.
    pub body: Bytes,
    /// Whether the body ended normally (false: the proxy reset the request mid-body).
    pub body_complete: bool,
    /// Which accepted connection carried it, 0-based in accept order.
    pub connection: usize,
    /// Order of arrival of the request headers at this upstream, 0-based.
    pub index: usize,
    /// When the request headers arrived.
    pub received_at: Instant,
}

impl UpstreamRequest {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        head::header(&self.headers, name)
    }

    /// Every value of header `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        head::header_all(&self.headers, name)
    }

    /// The body as text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `GET /x body=5`, with `(cut)` when the body ended early: for a report.
    pub fn summary(&self) -> String {
        let cut = if self.body_complete { "" } else { "(cut)" };
        format!("{} {} body={}{cut}", self.method, self.path, self.body.len())
    }
}

/// What the upstream does with a request (after reading its whole body).
#[derive(Clone, Debug)]
pub enum UpstreamAction {
    /// A response with this status, these headers and this body (`content-length` framed).
    Respond {
        /// Status code.
        status: u16,
        /// Extra response headers.
        headers: Vec<(String, String)>,
        /// The body.
        body: Bytes,
    },
    /// Waits, then does the inner action.
    Delay(Duration, Box<UpstreamAction>),
    /// Drops the connection without a response (HTTP/1.1: the socket closes; HTTP/2: the
    /// stream is reset).
    Reset,
    /// 200 with a chunked body: the chunks with `interval` between them (a slow upstream).
    Stream {
        /// Body chunks, the first sent with the headers.
        chunks: Vec<Bytes>,
        /// Pause between chunks.
        interval: Duration,
    },
    /// 200 with a `content-length: len` body of the [`PatternWriter`] stream `seed`,
    /// generated as it is sent (large transfers without holding them in memory).
    Pattern {
        /// Body length.
        len: u64,
        /// Pattern seed.
        seed: u64,
    },
    /// Never answers (the connection stays open until the proxy gives up).
    Hang,
    /// A unary gRPC response: `200`, `content-type: application/grpc`, `message` in one
    /// length-prefixed frame, and `grpc-status` in the trailers.
    Grpc {
        /// The encoded protobuf message.
        message: Bytes,
        /// The `grpc-status` trailer.
        grpc_status: u32,
    },
}

impl UpstreamAction {
    /// `200` with `body`.
    pub fn ok(body: impl Into<Bytes>) -> Self {
        Self::status(200, body)
    }

    /// `status` with `body`.
    pub fn status(status: u16, body: impl Into<Bytes>) -> Self {
        UpstreamAction::Respond { status, headers: Vec::new(), body: body.into() }
    }

    /// Adds a response header (to the response this action ends in).
    pub fn with_header(self, name: &str, value: &str) -> Self {
        match self {
            UpstreamAction::Respond { status, mut headers, body } => {
                headers.push((name.to_string(), value.to_string()));
                UpstreamAction::Respond { status, headers, body }
            }
            UpstreamAction::Delay(d, inner) => UpstreamAction::Delay(d, Box::new(inner.with_header(name, value))),
            other => panic!("with_header on {other:?}: only a Respond carries headers"),
        }
    }

    /// `action` after `delay`.
    pub fn delay(delay: Duration, action: UpstreamAction) -> Self {
        UpstreamAction::Delay(delay, Box::new(action))
    }
}

type Handler = dyn Fn(&UpstreamRequest) -> UpstreamAction + Send + Sync;

/// What the server thread and the test share.
struct State {
    handler: Box<Handler>,
    requests: Mutex<Vec<UpstreamRequest>>,
    next_request: AtomicUsize,
    /// Notified each time `next_request` grows (the lock only orders the notification).
    request_started: (Mutex<()>, Condvar),
    accepted: AtomicUsize,
    active: AtomicUsize,
    /// The first [`RECEIVED_KEPT`] bytes read on each connection, in accept order.
    received: Mutex<Vec<Vec<u8>>>,
}

/// How many bytes of each connection [`HttpUpstream::received`] keeps: request heads, not the
/// 100 MiB bodies some tests stream.
const RECEIVED_KEPT: usize = 64 * 1024;

/// An HTTP server on `127.0.0.1:0`; stops (closing every connection) on drop.
pub struct HttpUpstream {
    addr: SocketAddr,
    http2: bool,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for HttpUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpUpstream").field("addr", &self.addr).field("http2", &self.http2).finish()
    }
}

impl HttpUpstream {
    /// An HTTP/1.1 server (keep-alive) answering with `handler`.
    pub fn http1(handler: impl Fn(&UpstreamRequest) -> UpstreamAction + Send + Sync + 'static) -> Self {
        Self::start(false, Box::new(handler))
    }

    /// An HTTP/1.1 server on a given address: a host that comes back where it was.
    pub fn http1_at(
        addr: SocketAddr,
        handler: impl Fn(&UpstreamRequest) -> UpstreamAction + Send + Sync + 'static,
    ) -> Self {
        Self::start_with(addr, false, Box::new(handler), None)
    }

    /// An h2c server (HTTP/2 with prior knowledge) answering with `handler`.
    pub fn http2(handler: impl Fn(&UpstreamRequest) -> UpstreamAction + Send + Sync + 'static) -> Self {
        Self::start(true, Box::new(handler))
    }

    /// HTTP/1.1, answering every request `200` with body `tag` and `x-upstream: tag`: tells
    /// a client which upstream it reached.
    pub fn tag(tag: &str) -> Self {
        let tag = tag.to_string();
        Self::http1(move |_| UpstreamAction::ok(tag.clone()).with_header("x-upstream", &tag))
    }

    fn start(http2: bool, handler: Box<Handler>) -> Self {
        Self::start_with(SocketAddr::from(([127, 0, 0, 1], 0)), http2, handler, None)
    }

    /// Serves on `addr`; with `tls`, each connection is a TLS handshake first (see
    /// `crate::tls_peer`), and [`Self::received`] then holds the TLS bytes.
    pub(crate) fn start_with(
        addr: SocketAddr,
        http2: bool,
        handler: Box<Handler>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        let listener = StdTcpListener::bind(addr).expect("bind HTTP upstream");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            handler,
            requests: Mutex::new(Vec::new()),
            next_request: AtomicUsize::new(0),
            request_started: (Mutex::new(()), Condvar::new()),
            accepted: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            received: Mutex::new(Vec::new()),
        });
        let (stop, stopped) = oneshot::channel();
        let thread_state = state.clone();
        let thread = thread::Builder::new()
            .name(format!("http-upstream-{addr}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let tls = tls.map(tokio_rustls::TlsAcceptor::from);
                runtime.block_on(accept_loop(listener, http2, thread_state, stopped, tls));
                // Dropping the runtime drops every connection task: sockets close.
            })
            .expect("spawn HTTP upstream thread");
        HttpUpstream { addr, http2, state, stop: Some(stop), thread: Some(thread) }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests received so far (those whose body was read), in arrival order.
    pub fn requests(&self) -> Vec<UpstreamRequest> {
        let mut requests = self.state.requests.lock().unwrap().clone();
        requests.sort_by_key(|r| r.index);
        requests
    }

    /// Requests whose headers arrived, recorded or not yet (a request is recorded once its
    /// body ended): tells whether anything was forwarded at all.
    pub fn requests_started(&self) -> usize {
        self.state.next_request.load(Ordering::SeqCst)
    }

    /// What reached the upstream after it had started `before` requests
    /// ([`Self::requests_started`]), once that settles: waits up to 1 s until `expected`
    /// requests started (a proxy may count a request before the upstream sees it), then up to
    /// 3 s until every started request is recorded (one with an unfinished body is recorded when
    /// the proxy abandons it). Returns the number started and those recorded.
    pub fn requests_since(&self, before: usize, expected: usize) -> (usize, Vec<UpstreamRequest>) {
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.requests_started() - before < expected && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let started = self.requests_started() - before;
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let seen: Vec<UpstreamRequest> = self.requests().into_iter().filter(|r| r.index >= before).collect();
            if seen.len() >= started || Instant::now() >= deadline {
                return (started, seen);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until at least `n` requests started (their headers arrived); panics after
    /// [`EVENTUALLY`]. Wakes as soon as the request arrives, for tests that wait thousands of
    /// times.
    pub fn wait_requests_started(&self, n: usize) {
        let (lock, started) = &self.state.request_started;
        let guard = lock.lock().unwrap();
        let _ = started.wait_timeout_while(guard, EVENTUALLY, |_| self.requests_started() < n).unwrap();
        let seen = self.requests_started();
        assert!(seen >= n, "upstream {}: {seen} requests started within {EVENTUALLY:?}, expected {n}", self.addr);
    }

    /// How many requests were recorded.
    pub fn request_count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    /// The latest request (by arrival); panics if there was none.
    pub fn last_request(&self) -> UpstreamRequest {
        self.requests().pop().unwrap_or_else(|| panic!("upstream {} received no request", self.addr))
    }

    /// Waits (bounded) until at least `n` requests were recorded; returns them.
    pub fn wait_requests(&self, n: usize) -> Vec<UpstreamRequest> {
        eventually(
            &format!("upstream {} to receive {n} requests", self.addr),
            EVENTUALLY,
            || self.request_count(),
            |c| *c >= n,
        );
        self.requests()
    }

    /// The first 64 KiB read on connection `connection` (0-based in accept order), exactly as
    /// the proxy wrote them; empty for a connection not accepted.
    pub fn received(&self, connection: usize) -> Vec<u8> {
        self.state.received.lock().unwrap().get(connection).cloned().unwrap_or_default()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Connections currently open (accepted and not yet closed by either side).
    pub fn active_connections(&self) -> usize {
        self.state.active.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until exactly `n` connections are open.
    pub fn wait_active_connections(&self, n: usize) {
        eventually(
            &format!("upstream {} to have {n} open connections", self.addr),
            EVENTUALLY,
            || self.active_connections(),
            |c| *c == n,
        );
    }
}

impl Drop for HttpUpstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(
    listener: StdTcpListener,
    http2: bool,
    state: Arc<State>,
    mut stop: oneshot::Receiver<()>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    loop {
        let stream = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let _ = stream.set_nodelay(true);
        let connection = state.accepted.fetch_add(1, Ordering::SeqCst);
        state.active.fetch_add(1, Ordering::SeqCst);
        state.received.lock().unwrap().push(Vec::new());
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let active = ActiveGuard(state.clone());
            let io = Recording { stream, state: state.clone(), connection };
            match tls {
                None => serve(io, http2, state, connection).await,
                Some(acceptor) => {
                    if let Ok(tls) = acceptor.accept(io).await {
                        serve(tls, http2, state, connection).await;
                    }
                }
            }
            drop(active);
        });
    }
}

async fn serve<I>(io: I, http2: bool, state: Arc<State>, connection: usize)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let service = service_fn(move |request| handle(state.clone(), connection, request));
    if http2 {
        let _ = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_concurrent_streams(1000)
            .serve_connection(io, service)
            .await;
    } else {
        let _ = http1::Builder::new().timer(TokioTimer::new()).keep_alive(true).serve_connection(io, service).await;
    }
}

/// A connection that keeps the first [`RECEIVED_KEPT`] bytes read from it.
struct Recording {
    stream: tokio::net::TcpStream,
    state: Arc<State>,
    connection: usize,
}

impl tokio::io::AsyncRead for Recording {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let Some(kept) = this.state.received.lock().unwrap().get_mut(this.connection) {
            let new = &buf.filled()[before..];
            let room = RECEIVED_KEPT.saturating_sub(kept.len()).min(new.len());
            kept.extend_from_slice(&new[..room]);
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Recording {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

struct ActiveGuard(Arc<State>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Why the upstream answered with nothing: hyper closes the connection (HTTP/1.1) or resets
/// the stream (HTTP/2) when the service fails.
#[derive(Debug)]
struct ResetOnPurpose;

impl std::fmt::Display for ResetOnPurpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reset on purpose")
    }
}

impl std::error::Error for ResetOnPurpose {}

async fn handle(
    state: Arc<State>,
    connection: usize,
    request: hyper::Request<Incoming>,
) -> Result<hyper::Response<UpstreamBody>, ResetOnPurpose> {
    let index = state.next_request.fetch_add(1, Ordering::SeqCst);
    {
        let (lock, started) = &state.request_started;
        let _ordered = lock.lock().unwrap();
        started.notify_all();
    }
    let received_at = Instant::now();
    let (head, mut incoming) = request.into_parts();
    let mut headers = Vec::new();
    if let Some(authority) = head.uri.authority() {
        if !head.headers.contains_key(http::header::HOST) {
            headers.push(("host".to_string(), authority.as_str().to_string()));
        }
    }
    for (name, value) in &head.headers {
        headers.push((name.as_str().to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned()));
    }
    let mut body = Vec::new();
    let mut body_complete = true;
    loop {
        match std::future::poll_fn(|cx| Pin::new(&mut incoming).poll_frame(cx)).await {
            None => break,
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    body.extend_from_slice(data);
                }
            }
            Some(Err(_)) => {
                body_complete = false;
                break;
            }
        }
    }
    let recorded = UpstreamRequest {
        method: head.method.to_string(),
        path: head.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into()),
        version: format!("{:?}", head.version),
        scheme: head.uri.scheme_str().map(str::to_string),
        headers,
        body: Bytes::from(body),
        body_complete,
        connection,
        index,
        received_at,
    };
    let action = (state.handler)(&recorded);
    state.requests.lock().unwrap().push(recorded);
    if !body_complete {
        return Err(ResetOnPurpose);
    }
    perform(action).await
}

async fn perform(mut action: UpstreamAction) -> Result<hyper::Response<UpstreamBody>, ResetOnPurpose> {
    loop {
        let (status, headers, body) = match action {
            UpstreamAction::Delay(delay, next) => {
                tokio::time::sleep(delay).await;
                action = *next;
                continue;
            }
            UpstreamAction::Reset => return Err(ResetOnPurpose),
            UpstreamAction::Hang => std::future::pending().await,
            UpstreamAction::Respond { status, headers, body } => (status, headers, UpstreamBody::Full(Some(body))),
            UpstreamAction::Stream { chunks, interval } => {
                (200, Vec::new(), UpstreamBody::Chunks { chunks: chunks.into(), interval, sleep: None })
            }
            UpstreamAction::Pattern { len, seed } => {
                (200, Vec::new(), UpstreamBody::Pattern { left: len, writer: PatternWriter::new(seed) })
            }
            UpstreamAction::Grpc { message, grpc_status } => {
                let mut frame = vec![0u8];
                frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
                frame.extend_from_slice(&message);
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", grpc_status.into());
                let headers = vec![("content-type".to_string(), "application/grpc".to_string())];
                (200, headers, UpstreamBody::Grpc { frame: Some(Bytes::from(frame)), trailers: Some(trailers) })
            }
        };
        let mut response = hyper::Response::builder().status(status);
        for (name, value) in &headers {
            response = response.header(name.as_str(), value.as_str());
        }
        return Ok(response.body(body).expect("valid response from the test's handler"));
    }
}

/// Response bodies the upstream sends.
enum UpstreamBody {
    Full(Option<Bytes>),
    Chunks { chunks: VecDeque<Bytes>, interval: Duration, sleep: Option<Pin<Box<Sleep>>> },
    Pattern { left: u64, writer: PatternWriter },
    Grpc { frame: Option<Bytes>, trailers: Option<http::HeaderMap> },
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            UpstreamBody::Full(body) => Poll::Ready(body.take().filter(|b| !b.is_empty()).map(|b| Ok(Frame::data(b)))),
            UpstreamBody::Chunks { chunks, interval, sleep } => {
                if chunks.is_empty() {
                    return Poll::Ready(None);
                }
                if let Some(s) = sleep {
                    if s.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                *sleep = Some(Box::pin(tokio::time::sleep(*interval)));
                Poll::Ready(chunks.pop_front().map(|c| Ok(Frame::data(c))))
            }
            UpstreamBody::Grpc { frame, trailers } => match frame.take() {
                Some(frame) => Poll::Ready(Some(Ok(Frame::data(frame)))),
                None => Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t)))),
            },
            UpstreamBody::Pattern { left, writer } => {
                if *left == 0 {
                    return Poll::Ready(None);
                }
                let n = (*left).min(64 * 1024) as usize;
                let mut buf = vec![0u8; n];
                writer.fill(&mut buf);
                *left -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Full(body) => body.as_ref().is_none_or(|b| b.is_empty()),
            UpstreamBody::Chunks { chunks, .. } => chunks.is_empty(),
            UpstreamBody::Pattern { left, .. } => *left == 0,
            UpstreamBody::Grpc { frame, trailers } => frame.is_none() && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Full(body) => SizeHint::with_exact(body.as_ref().map_or(0, |b| b.len() as u64)),
            UpstreamBody::Chunks { .. } => SizeHint::default(),
            UpstreamBody::Pattern { left, .. } => SizeHint::with_exact(*left),
            UpstreamBody::Grpc { .. } => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::HttpClient;

    #[test]
    fn records_requests_and_keeps_connections_alive() {
        let upstream = HttpUpstream::http1(|r| {
            if r.index == 0 {
                UpstreamAction::status(503, "first").with_header("x-a", "1")
            } else {
                UpstreamAction::ok(format!("echo {}", r.body_text()))
            }
        });
        let mut c = HttpClient::connect(upstream.addr());
        let first = c.send("GET", "/a?b=1", &[("x-test", "yes")], b"");
        assert_eq!((first.status, first.body.as_str(), first.header("x-a")), (503, "first", Some("1")));
        let second = c.send("POST", "/p", &[], b"hello");
        assert_eq!((second.status, second.body.as_str()), (200, "echo hello"));
        let requests = upstream.requests();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].path, "/a?b=1");
        assert_eq!(requests[0].header("x-test"), Some("yes"));
        assert_eq!(requests[1].body_text(), "hello");
        assert_eq!(upstream.connections(), 1);
        let received = upstream.received(0);
        assert!(received.starts_with(b"GET /a?b=1 HTTP/1.1\r\n"), "{:?}", String::from_utf8_lossy(&received));
        assert!(received.ends_with(b"\r\n\r\nhello"), "{:?}", String::from_utf8_lossy(&received));
    }

    #[test]
    fn streams_patterns_and_resets() {
        let upstream = HttpUpstream::http1(|r| match r.path.as_str() {
            "/pattern" => UpstreamAction::Pattern { len: 200_000, seed: 3 },
            "/slow" => UpstreamAction::Stream {
                chunks: vec![Bytes::from("a"), Bytes::from("b")],
                interval: Duration::from_millis(10),
            },
            _ => UpstreamAction::Reset,
        });
        let mut c = HttpClient::connect(upstream.addr());
        let mut checker = crate::PatternChecker::new(3);
        let head = c.send_streaming("GET", "/pattern", &[], b"", |chunk| checker.check(chunk).unwrap()).unwrap();
        assert_eq!((head.status, checker.len()), (200, 200_000));
        let slow = c.send("GET", "/slow", &[], b"");
        assert_eq!((slow.status, slow.body.as_str(), slow.header("transfer-encoding")), (200, "ab", Some("chunked")));
        assert!(c.try_send("GET", "/reset", &[], b"").is_err());
        let h2 = HttpUpstream::http2(|_| UpstreamAction::ok("h2"));
        let r = crate::http::h2c_get(h2.addr(), "/x", &[]);
        assert_eq!((r.status, r.body.as_str()), (200, "h2"));
        assert_eq!(h2.last_request().version, "HTTP/2.0");
        let many = crate::http::h2c_many(h2.addr(), "/m", 20);
        assert!(many.iter().all(|r| r.status == 200), "{many:?}");
        assert_eq!(h2.connections(), 2);
    }
}
