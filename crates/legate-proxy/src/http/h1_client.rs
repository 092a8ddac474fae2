//! legate's HTTP/1.1 client codec for pooled upstream connections (RFC 9112).
//!
//! Why not hyper's client: hyper runs every client connection as a task of its own, so each
//! request crossed tasks twice (a channel and a wake-up each way) and the connection task
//! spent more instructions per request than the router itself (measured with callgrind:
//! 14k of 54k per request). Here the downstream stream's own task writes the request and reads
//! the response: the router's head encoded into one reused buffer, one read, one parse whose
//! header values share one copy of the response head.
//!
//! A connection between exchanges is watched by its pool's driver task for the upstream
//! closing it; the watch costs no wake-up per request: the driver's waker is registered with
//! the socket again when the connection goes back to the pool.
//!
//! The request is written while the response is read (an upstream may answer before the body
//! is sent); an exchange whose request is not complete when its response is leaves the
//! connection unfit for reuse, as does anything unexpected: `connection: close`, a body
//! delimited by the close, bytes after the response.

use std::cell::{Cell, RefCell, RefMut};
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll, Waker};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Body as _, Frame, SizeHint};
use legate_stats::Counter;

use super::body::{AttemptBody, BoxError};
use super::h1_body::{
    decode_chunk, ends_chunked, fold_length, length_of, put_field, take, Chunk, ChunkStep, Encoder,
    Framing as BodyFraming, LengthError,
};
use super::headers::{self, KEEP_ALIVE, PROXY_CONNECTION};
use super::io::CountingIo;
use crate::network::{batched_sends, TransportSocket};
use legate_uring::Sent;

/// A response head past this size is a protocol error (Envoy's `max_response_headers_kb`
/// default, 60 KiB).
const MAX_HEAD: usize = 60 * 1024;
/// Envoy's `max_headers_count` default.
const MAX_HEADERS: usize = 100;
/// How much one read asks for.
const READ_ROOM: usize = 16 * 1024;
/// Room for a read of a response body: a body arriving faster than it leaves is read in
/// 64 KiB slices, a quarter of the system calls of 16 KiB ones.
const BODY_READ_ROOM: usize = crate::network::transport_socket::MAX_BUSY_READ;

/// Why an exchange failed.
#[derive(Debug)]
pub enum Error {
    /// The connection was already closed: the request never went out.
    NotSent,
    /// The connection closed (`None`: a clean end of stream) or failed before a whole response
    /// head arrived.
    Closed(Option<io::ErrorKind>),
    /// The upstream broke the protocol: a malformed or oversized head, or bad body framing.
    Protocol(&'static str),
    /// The downstream request body failed, or did not match its framing.
    RequestBody,
    /// The connection failed after the response head.
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotSent => f.write_str("connection closed before the request was sent"),
            Error::Closed(None) => f.write_str("connection closed before a response"),
            Error::Closed(Some(kind)) => write!(f, "connection failed before a response: {kind}"),
            Error::Protocol(what) => write!(f, "upstream protocol error: {what}"),
            Error::RequestBody => f.write_str("downstream request body failed"),
            Error::Io(e) => write!(f, "upstream connection failed: {e}"),
        }
    }
}

impl std::error::Error for Error {}

/// One upstream HTTP/1.1 connection, shared by its pool, the exchange using it and the pool's
/// driver task. Only ever used from its worker's thread.
pub struct ClientConn {
    state: RefCell<State>,
    /// `header_key_format: proper_case_words`.
    title_case: bool,
    /// The pool driver's waker: registered with the socket while the connection is idle.
    watcher: RefCell<Option<Waker>>,
    /// The last exchange ended with both messages complete and the connection fit for more.
    clean: Cell<bool>,
    /// The socket after a `101 Switching Protocols`, for the tunnel.
    upgraded: RefCell<Option<CountingIo<TransportSocket>>>,
    /// Its request waits in the worker's queue of deferred writes ([`defer`]).
    deferred: Cell<bool>,
}

struct State {
    /// `None` once closed.
    io: Option<TransportSocket>,
    /// The request of the exchange in progress, until the response is complete.
    writer: Option<Writer>,
    /// The last request's buffer, for the next one (no allocation per request).
    spare: BytesMut,
    read_buf: BytesMut,
    /// The field names of the last response.
    names: headers::NameCache,
    rx: Counter,
    tx: Counter,
}

impl ClientConn {
    /// `rx`/`tx` count the bytes read and written (`upstream_cx_rx_bytes_total`, ...).
    pub fn new(io: TransportSocket, title_case: bool, rx: Counter, tx: Counter) -> Self {
        ClientConn {
            state: RefCell::new(State {
                io: Some(io),
                writer: None,
                spare: BytesMut::new(),
                read_buf: BytesMut::new(),
                names: headers::NameCache::default(),
                rx,
                tx,
            }),
            title_case,
            watcher: RefCell::new(None),
            clean: Cell::new(false),
            upgraded: RefCell::new(None),
            deferred: Cell::new(false),
        }
    }

    pub fn is_open(&self) -> bool {
        self.state.borrow().io.is_some()
    }

    /// Closes the socket ([`State::close`]).
    pub fn close(&self) {
        self.state.borrow_mut().close();
    }

    /// Whether the connection holds buffers it could give back ([`Self::release_buffers`]).
    pub fn holds_buffers(&self) -> bool {
        let state = self.state.borrow();
        state.read_buf.capacity() > 0 || state.spare.capacity() > 0
    }

    /// Gives back the read buffer and the spare request buffer of a connection that idles in
    /// its pool; the next exchange takes them anew. A read buffer is 16 KiB: kept by every
    /// idle upstream connection, it would be most of what one costs.
    pub fn release_buffers(&self) {
        let mut state = self.state.borrow_mut();
        if state.writer.is_none() && state.read_buf.is_empty() {
            state.read_buf = BytesMut::new();
            state.spare = BytesMut::new();
        }
    }

    /// Whether the last exchange left the connection fit for another request.
    pub fn clean(&self) -> bool {
        self.clean.get() && self.is_open()
    }

    /// The socket a `101 Switching Protocols` left behind, with any bytes already read.
    pub fn take_upgraded(&self) -> Option<CountingIo<TransportSocket>> {
        self.upgraded.borrow_mut().take()
    }

    /// The pool driver's side: ready when the connection is closed, by the pool or by the
    /// upstream while `idle` (the upstream may only close or stay silent between exchanges:
    /// any byte is a protocol error and closes it too).
    pub fn poll_watch(&self, cx: &mut Context<'_>, idle: bool) -> Poll<()> {
        {
            let mut watcher = self.watcher.borrow_mut();
            if !watcher.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *watcher = Some(cx.waker().clone());
            }
        }
        if idle {
            self.poll_idle_read(cx)
        } else if self.is_open() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    /// Registers the driver's waker with the socket again as the connection goes back to its
    /// pool (an exchange's reads replaced it). Returns false, and wakes the driver, when the
    /// upstream closed the connection meanwhile.
    pub fn rearm_watch(&self) -> bool {
        let watcher = self.watcher.borrow();
        let Some(waker) = watcher.as_ref() else { return self.is_open() };
        if self.poll_idle_read(&mut Context::from_waker(waker)).is_ready() {
            waker.wake_by_ref();
            return false;
        }
        true
    }

    fn poll_idle_read(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        let Some(io) = state.io.as_mut() else { return Poll::Ready(()) };
        match io.poll_read_append(cx, &mut state.read_buf, READ_ROOM, false) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(read) => {
                if let Ok(n) = read {
                    state.rx.add(n as u64);
                }
                state.close();
                Poll::Ready(())
            }
        }
    }
}

impl State {
    /// Drops the socket (an exchange cut short is a reset to the upstream) and what the
    /// connection held for it.
    fn close(&mut self) {
        self.io = None;
        self.writer = None;
        self.read_buf = BytesMut::new();
    }
}

/// Sends `request` on `conn`: resolves with the response head once it arrived; the body
/// streams from the response (and what is left of the request goes out as it is read).
pub fn send(conn: Rc<ClientConn>, request: Request<AttemptBody>) -> Exchange {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let head = RequestHead { method: &parts.method, path, headers: &parts.headers, host: None, extra: &[] };
    send_head(conn, &head, body)
}

/// A request head to encode: the fields of a map (the downstream's, as the router changed
/// them), with `host` and a few fields set per attempt written without copying the map.
pub struct RequestHead<'a> {
    pub method: &'a Method,
    /// The origin-form target.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// Written first as `host`: a `host` in `headers` is then left out.
    pub host: Option<&'a HeaderValue>,
    /// Written after `headers`, whose fields of the same names are left out.
    pub extra: &'a [(&'a HeaderName, HeaderValue)],
}

/// [`send`] for a request given as a [`RequestHead`] (encoded before this returns).
pub fn send_head(conn: Rc<ClientConn>, head: &RequestHead<'_>, body: AttemptBody) -> Exchange {
    conn.clean.set(false);
    let mut state = conn.state.borrow_mut();
    let out = std::mem::take(&mut state.spare);
    let error = match Writer::new(head, body, conn.title_case, out) {
        Ok(writer) => {
            state.writer = Some(writer);
            None
        }
        Err(e) => Some(e),
    };
    drop(state);
    IN_FLIGHT.with(|n| n.set(n.get() + 1));
    Exchange { conn, error, head_request: *head.method == Method::HEAD, first_poll: true }
}

thread_local! {
    /// The worker's exchanges waiting for their response heads.
    static IN_FLIGHT: Cell<usize> = const { Cell::new(0) };
    /// The worker's requests encoded in this turn of its event loop and not yet written.
    static DEFERRED: RefCell<Vec<(Rc<ClientConn>, Waker)>> = const { RefCell::new(Vec::new()) };
}

/// The future of one exchange, until the response head.
pub struct Exchange {
    conn: Rc<ClientConn>,
    /// The request could not be encoded.
    error: Option<Error>,
    head_request: bool,
    first_poll: bool,
}

impl Drop for Exchange {
    fn drop(&mut self) {
        IN_FLIGHT.with(|n| n.set(n.get().saturating_sub(1)));
        if self.conn.deferred.get() {
            undefer(&self.conn);
        }
    }
}

/// Writes of requests wait for the worker's other ready tasks: with other exchanges in
/// flight on the worker, the requests read in one turn of the event loop are written to their
/// upstreams one after another, after the reads. Written as each was read, every write woke
/// an upstream sharing the worker's CPU in between, which preempted the worker to answer
/// that one request (context switches per small request 0.74-0.80 against 0.45 deferred; the
/// backend's CPU per request fell ~20 %). A lone exchange has nothing to wait for: deferring
/// it only cost latency (~2 us, one connection in a loop).
///
/// The first exchange deferred in a turn (the queue's head) yields once and then writes them
/// all; the others are not polled again for it (each such poll went down its whole stream's
/// futures: ~1k instructions per request).
fn defer(conn: &Rc<ClientConn>, cx: &Context<'_>) {
    conn.deferred.set(true);
    let first = DEFERRED.with(|queue| {
        let mut queue = queue.borrow_mut();
        queue.push((conn.clone(), cx.waker().clone()));
        queue.len() == 1
    });
    if first {
        cx.waker().wake_by_ref();
    }
}

/// Takes `conn` out of the queue; when it was the head, the next one becomes the head and
/// is woken to write them.
fn undefer(conn: &Rc<ClientConn>) {
    conn.deferred.set(false);
    // (`try_with`: an exchange may be dropped as the thread ends.)
    let _ = DEFERRED.try_with(|queue| {
        let mut queue = queue.borrow_mut();
        let Some(at) = queue.iter().position(|(queued, _)| Rc::ptr_eq(queued, conn)) else { return };
        queue.remove(at);
        if at == 0 {
            if let Some((_, waker)) = queue.first() {
                waker.wake_by_ref();
            }
        }
    });
}

/// The head of the queue: writes every deferred request, each polled with its own task's
/// waker (a write that could not finish, or an upstream that already sent something, wakes
/// that task, which goes on as any exchange).
fn write_deferred() {
    let queue = DEFERRED.with(|queue| std::mem::take(&mut *queue.borrow_mut()));
    if queue.len() > 1 {
        send_together(&queue);
    }
    for (conn, waker) in &queue {
        conn.deferred.set(false);
        let mut cx = Context::from_waker(waker);
        let mut state = conn.state.borrow_mut();
        let state = &mut *state;
        let settled = match poll_writer(&mut cx, state) {
            Ok(None) => state.writer.as_ref().is_none_or(|w| w.done),
            _ => false,
        };
        // The exchange's read is registered with its task's waker: its task is not polled
        // again until the response comes (an upstream that already sent something wakes it now;
        // over TLS the task is simply woken).
        let quiet = match state.io.as_mut() {
            Some(TransportSocket::RawBuffer(tcp)) => tcp.poll_read_ready(&mut cx).is_pending(),
            _ => false,
        };
        if !(settled && quiet) {
            waker.wake_by_ref();
        }
    }
    // The queue's allocation goes back for the next turn.
    let mut queue = queue;
    queue.clear();
    DEFERRED.with(|slot| {
        let mut slot = slot.borrow_mut();
        if slot.is_empty() && slot.capacity() < queue.capacity() {
            *slot = queue;
        }
    });
}

/// The deferred requests whole in one buffer on raw sockets go out in one system call
/// (`batched_sends`): the upstreams sharing the worker's CPU are woken once for them all,
/// instead of preempting the worker at each `send` to answer one request. What it leaves
/// (a full socket, TLS, a body still coming, no io_uring) is written one socket at a time
/// right after, as before.
fn send_together(queue: &[(Rc<ClientConn>, Waker)]) {
    let mut ready: Vec<RefMut<'_, State>> = Vec::with_capacity(queue.len());
    for (conn, waker) in queue {
        let mut state = conn.state.borrow_mut();
        let st = &mut *state;
        let whole = match (st.writer.as_mut(), &st.io) {
            (Some(writer), Some(TransportSocket::RawBuffer(_))) if writer.failed.is_none() && !writer.done => {
                writer.gather(&mut Context::from_waker(waker)).is_ok() && writer.enc.single_slice().is_some()
            }
            _ => false,
        };
        if whole {
            ready.push(state);
        }
    }
    if ready.len() < 2 {
        return;
    }
    let mut results = Vec::with_capacity(ready.len());
    {
        let sends: Option<Vec<(&tokio::net::TcpStream, &[u8])>> = ready
            .iter()
            .map(|st| match (&st.io, &st.writer) {
                (Some(TransportSocket::RawBuffer(tcp)), Some(writer)) => Some((tcp, writer.enc.single_slice()?)),
                _ => None,
            })
            .collect();
        let Some(sends) = sends else { return };
        batched_sends::send_all(&sends, &mut results);
    }
    for (state, sent) in ready.iter_mut().zip(results) {
        let st = &mut **state;
        let Some(writer) = st.writer.as_mut() else { continue };
        match sent {
            Sent::Bytes(n) => writer.wrote(n, &st.tx),
            // The socket's write readiness is tokio's to clear: the write after this finds
            // the socket full again, through tokio.
            Sent::Failed(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Sent::Failed(e) => writer.failed = Some(e.kind()),
            Sent::NotTried => {}
        }
    }
}

impl Future for Exchange {
    type Output = Result<Response<Body>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Some(e) = this.error.take() {
            return Poll::Ready(Err(e));
        }
        if std::mem::take(&mut this.first_poll) && IN_FLIGHT.with(Cell::get) > 1 {
            defer(&this.conn, cx);
            return Poll::Pending;
        }
        if this.conn.deferred.get() {
            let head = DEFERRED.with(|queue| queue.borrow().first().is_some_and(|(c, _)| Rc::ptr_eq(c, &this.conn)));
            match head {
                true => write_deferred(),
                // Polled before its turn (a timer, the downstream): it writes now.
                false => undefer(&this.conn),
            }
        }
        let mut state = this.conn.state.borrow_mut();
        let state = &mut *state;
        if state.io.is_none() {
            let started = state.writer.take().is_some_and(|w| w.started);
            return Poll::Ready(Err(if started { Error::Closed(None) } else { Error::NotSent }));
        }
        let write_error = poll_writer(cx, state)?;
        let head = match ready!(poll_head(cx, state)) {
            // A write that failed usually says more than the read after it.
            Err(Error::Closed(kind)) => return Poll::Ready(Err(Error::Closed(write_error.or(kind)))),
            Err(e) => return Poll::Ready(Err(e)),
            Ok(head) => head,
        };
        let framing = response_framing(&head, this.head_request);
        let mut response = Response::new(());
        *response.status_mut() = head.status;
        *response.version_mut() = head.version;
        *response.headers_mut() = head.headers;
        if head.status == StatusCode::SWITCHING_PROTOCOLS {
            // The socket leaves the pool for the tunnel, with what was read past the head.
            if let Some(io) = state.io.take() {
                let rest = state.read_buf.split();
                let upgraded = CountingIo::new(io, rest, state.rx.clone(), state.tx.clone());
                *this.conn.upgraded.borrow_mut() = Some(upgraded);
            }
        }
        let mut body =
            Body { conn: this.conn.clone(), decoder: framing.decoder, finished: false, keep_alive: framing.keep_alive };
        if body.decoder.is_done() {
            body.finish(state);
        }
        Poll::Ready(Ok(response.map(|()| body)))
    }
}

/// Writes what it can of the request: the kind of a write that failed (the response may
/// still arrive), or the request body's failure.
fn poll_writer(cx: &mut Context<'_>, state: &mut State) -> Result<Option<io::ErrorKind>, Error> {
    // Polled in place: it is polled several times per exchange, and moving it out and back
    // copied it twice each time.
    let Some(writer) = state.writer.as_mut() else { return Ok(None) };
    if writer.failed.is_none() && !writer.done {
        match writer.poll(cx, &mut state.io, &state.tx) {
            Poll::Ready(Err(Error::Io(_))) | Poll::Ready(Ok(())) | Poll::Pending => {}
            Poll::Ready(Err(e)) => return Err(e),
        }
    }
    Ok(writer.failed)
}

/// A parsed response head.
struct Head {
    status: StatusCode,
    version: Version,
    /// The fields to forward: connection-level ones (`connection` naming only connection
    /// options, `keep-alive`, `proxy-connection`, `transfer-encoding`) are read into `hop`
    /// instead, so that nobody downstream has to look them up to strip them.
    headers: HeaderMap,
    hop: HopByHop,
}

/// What the connection-level fields of a response say.
#[derive(Debug, Default, Clone, Copy)]
struct HopByHop {
    /// `connection: close`.
    close: bool,
    /// `connection: keep-alive` (HTTP/1.0).
    keep_alive: bool,
    /// A `transfer-encoding`, and whether its last coding is `chunked`.
    transfer_encoding: bool,
    chunked: bool,
    /// The `content-length`, checked: every value the same number.
    content_length: Option<u64>,
}

impl HopByHop {
    /// Reads a `connection` field: true when it names only connection options (`close`,
    /// `keep-alive`, `upgrade`), so that it need not be forwarded to be stripped.
    fn connection(&mut self, value: &[u8]) -> bool {
        // What nearly every keep-alive response says, without splitting it into tokens.
        if value.eq_ignore_ascii_case(b"keep-alive") {
            self.keep_alive = true;
            return true;
        }
        let mut options_only = true;
        for token in value.split(|&b| b == b',').map(|t| t.trim_ascii()) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if !token.is_empty() && !token.eq_ignore_ascii_case(b"upgrade") {
                options_only = false;
            }
        }
        options_only
    }

    fn transfer_encoding(&mut self, value: &[u8]) {
        self.transfer_encoding = true;
        self.chunked = ends_chunked(value);
    }

    fn content_length(&mut self, value: &[u8]) -> Result<(), Error> {
        fold_length(value, &mut self.content_length).map_err(|e| match e {
            LengthError::Invalid => Error::Protocol("invalid content-length"),
            LengthError::Conflicting => Error::Protocol("conflicting content-length"),
        })
    }
}

/// Reads until a final response head is complete (interim `1xx` responses other than `101`
/// are read and dropped, as Envoy does without `proxy_100_continue`).
fn poll_head(cx: &mut Context<'_>, state: &mut State) -> Poll<Result<Head, Error>> {
    loop {
        if !state.read_buf.is_empty() {
            match parse_head(&mut state.read_buf, &mut state.names)? {
                Some(head) if head.status.is_informational() && head.status != StatusCode::SWITCHING_PROTOCOLS => {
                    continue
                }
                Some(head) => return Poll::Ready(Ok(head)),
                None if state.read_buf.len() >= MAX_HEAD => {
                    return Poll::Ready(Err(Error::Protocol("response headers too large")))
                }
                None => {}
            }
        }
        let Some(io) = state.io.as_mut() else { return Poll::Ready(Err(Error::Closed(None))) };
        match ready!(io.poll_read_append(cx, &mut state.read_buf, READ_ROOM, true)) {
            Ok(0) => return Poll::Ready(Err(Error::Closed(None))),
            Ok(n) => state.rx.add(n as u64),
            Err(e) => return Poll::Ready(Err(Error::Closed(Some(e.kind())))),
        }
    }
}

/// Parses the head at the start of `buf` and takes it out: `None` while it is incomplete.
/// The header values share the head's bytes.
fn parse_head(buf: &mut BytesMut, names: &mut headers::NameCache) -> Result<Option<Head>, Error> {
    match parse_head_in::<STACK_HEADERS>(buf, names) {
        // More fields than the first try's slots: again, with room for all that are allowed.
        Err(Error::Protocol(TOO_MANY_HEADERS)) => parse_head_in::<MAX_HEADERS>(buf, names),
        parsed => parsed,
    }
}

/// The slots of a first try at parsing a response head: each slot's span is zeroed per
/// response, and most responses have a few fields (`MAX_HEADERS` slots took 1.6 KB of
/// memset per response).
const STACK_HEADERS: usize = 32;
const TOO_MANY_HEADERS: &str = "too many response headers";

/// [`parse_head`] with room for `N` fields. Not inlined: its slots (4.8 KB for `MAX_HEADERS`)
/// would otherwise sit in the frame of the exchange's poll, which runs at every step of it.
#[inline(never)]
fn parse_head_in<const N: usize>(buf: &mut BytesMut, names: &mut headers::NameCache) -> Result<Option<Head>, Error> {
    // Where each name and value lies in `buf`, so that the values can share its bytes once
    // the parser's borrow ends. (The parser's slots are not zeroed: only the spans are.)
    let mut spans = [(0u32, 0u32, 0u32, 0u32); N];
    let (len, code, version, count) = {
        let mut headers = [const { std::mem::MaybeUninit::uninit() }; N];
        let mut response = httparse::Response::new(&mut []);
        let parsed =
            httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut response, buf, &mut headers);
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(Error::Protocol(TOO_MANY_HEADERS)),
            Err(_) => return Err(Error::Protocol("malformed response head")),
        };
        if len > MAX_HEAD {
            return Err(Error::Protocol("response headers too large"));
        }
        // Offsets within the head, which is shorter than `MAX_HEAD`: they fit in a `u32`.
        let base = buf.as_ptr() as usize;
        let offset = |part: &[u8]| (part.as_ptr() as usize - base) as u32;
        let mut count = 0;
        for (span, header) in spans.iter_mut().zip(response.headers.iter()) {
            let (name, value) = (offset(header.name.as_bytes()), offset(header.value));
            *span = (name, name + header.name.len() as u32, value, value + header.value.len() as u32);
            count += 1;
        }
        let version = match response.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        (len, response.code.unwrap_or_default(), version, count)
    };
    let head = take(buf, len);
    let status = StatusCode::from_u16(code).map_err(|_| Error::Protocol("invalid status code"))?;
    let mut headers = headers::header_map(count);
    let mut hop = HopByHop::default();
    for (index, &(name_start, name_end, value_start, value_end)) in spans.iter().take(count).enumerate() {
        let (name, value) = (name_start as usize..name_end as usize, value_start as usize..value_end as usize);
        let name = head.get(name).ok_or(Error::Protocol("malformed response head"))?;
        let name = names.name(index, name).map_err(|_| Error::Protocol("invalid header name"))?;
        let raw = head.get(value.clone()).ok_or(Error::Protocol("malformed response head"))?;
        if name == CONNECTION {
            if hop.connection(raw) {
                continue;
            }
        } else if name == TRANSFER_ENCODING {
            hop.transfer_encoding(raw);
            continue;
        } else if name == KEEP_ALIVE || name == PROXY_CONNECTION {
            continue;
        } else if name == CONTENT_LENGTH {
            hop.content_length(raw)?;
        }
        let value =
            HeaderValue::from_maybe_shared(head.slice(value)).map_err(|_| Error::Protocol("invalid header value"))?;
        headers.append(name, value);
    }
    if hop.transfer_encoding && hop.content_length.is_some() {
        // The transfer coding delimits the body; a length beside it is not forwarded
        // (RFC 9112 §6.3).
        headers.remove(CONTENT_LENGTH);
    }
    Ok(Some(Head { status, version, headers, hop }))
}

struct Framing {
    decoder: Decoder,
    keep_alive: bool,
}

/// How the response body is delimited (RFC 9112 §6.3), and whether the connection stays
/// open after it.
fn response_framing(head: &Head, head_request: bool) -> Framing {
    let hop = &head.hop;
    let mut keep_alive = match head.version {
        Version::HTTP_10 => hop.keep_alive && !hop.close,
        _ => !hop.close,
    };
    let status = head.status;
    if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Framing { decoder: Decoder::Done, keep_alive };
    }
    if hop.transfer_encoding {
        // With a content-length too, the message is suspect: not reused (RFC 9112 §6.3).
        keep_alive &= hop.content_length.is_none();
        return match hop.chunked {
            true => Framing { decoder: Decoder::Chunked(Chunk::Size), keep_alive },
            false => Framing { decoder: Decoder::Eof, keep_alive: false },
        };
    }
    match hop.content_length {
        Some(0) => Framing { decoder: Decoder::Done, keep_alive },
        Some(n) => Framing { decoder: Decoder::Length(n), keep_alive },
        None => Framing { decoder: Decoder::Eof, keep_alive: false },
    }
}

/// What is left of the response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decoder {
    /// This many bytes (`content-length`).
    Length(u64),
    /// `transfer-encoding: chunked`, at this point of a chunk.
    Chunked(Chunk),
    /// Until the upstream closes.
    Eof,
    /// Read to its end.
    Done,
}

impl Decoder {
    fn is_done(&self) -> bool {
        *self == Decoder::Done
    }
}

/// The body of a response read by [`send`].
pub struct Body {
    conn: Rc<ClientConn>,
    decoder: Decoder,
    /// The exchange's end was accounted for ([`Body::finish`]).
    finished: bool,
    keep_alive: bool,
}

impl Body {
    /// The response is complete: the connection is fit for reuse when the request is too and
    /// nothing followed the response.
    fn finish(&mut self, state: &mut State) {
        if self.finished {
            return;
        }
        self.finished = true;
        let request_done = match state.writer.take() {
            Some(writer) => {
                // A buffer grown by a large body is not kept for the life of the connection.
                if writer.enc.out.capacity() <= READ_ROOM {
                    state.spare = writer.enc.out;
                }
                writer.done
            }
            None => true,
        };
        let clean = self.keep_alive && request_done && state.read_buf.is_empty();
        // Nor is a body's 64 KiB read room kept while the connection waits in its pool.
        if state.read_buf.is_empty() && state.read_buf.capacity() > READ_ROOM {
            state.read_buf = BytesMut::new();
        }
        self.conn.clean.set(clean);
    }

    fn next_frame(&mut self, cx: &mut Context<'_>, state: &mut State) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        loop {
            let buffered = state.read_buf.len();
            match self.decoder {
                Decoder::Done => return Poll::Ready(None),
                Decoder::Length(left) if buffered > 0 => {
                    let n = buffered.min(usize::try_from(left).unwrap_or(usize::MAX));
                    let left = left - n as u64;
                    self.decoder = if left == 0 { Decoder::Done } else { Decoder::Length(left) };
                    return Poll::Ready(Some(Ok(Frame::data(take(&mut state.read_buf, n)))));
                }
                Decoder::Eof if buffered > 0 => {
                    let n = state.read_buf.len();
                    return Poll::Ready(Some(Ok(Frame::data(take(&mut state.read_buf, n)))));
                }
                Decoder::Chunked(chunk) if buffered > 0 => {
                    match decode_chunk(chunk, &mut state.read_buf, MAX_HEAD).map_err(Error::Protocol)? {
                        ChunkStep::Next(next) => {
                            self.decoder = next.map_or(Decoder::Done, Decoder::Chunked);
                            continue;
                        }
                        ChunkStep::Frame(frame, next) => {
                            self.decoder = next.map_or(Decoder::Done, Decoder::Chunked);
                            return Poll::Ready(Some(Ok(frame)));
                        }
                        ChunkStep::NeedMore => {}
                    }
                }
                _ => {}
            }
            let Some(io) = state.io.as_mut() else {
                return Poll::Ready(Some(Err(Error::Io(io::ErrorKind::NotConnected.into()))));
            };
            match ready!(io.poll_read_append(cx, &mut state.read_buf, BODY_READ_ROOM, true)) {
                Ok(0) if self.decoder == Decoder::Eof => {
                    self.decoder = Decoder::Done;
                    self.keep_alive = false;
                }
                Ok(0) => return Poll::Ready(Some(Err(Error::Io(io::ErrorKind::UnexpectedEof.into())))),
                Ok(n) => state.rx.add(n as u64),
                Err(e) => return Poll::Ready(Some(Err(Error::Io(e)))),
            }
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let conn = this.conn.clone();
        let mut state = conn.state.borrow_mut();
        let state = &mut *state;
        // The rest of the request goes out while the response comes in.
        if let Err(e) = poll_writer(cx, state) {
            return Poll::Ready(Some(Err(e.into())));
        }
        let frame = ready!(this.next_frame(cx, state));
        // Done with the last frame: whoever reads the body may not ask for its end.
        if this.decoder.is_done() {
            this.finish(state);
        }
        Poll::Ready(frame.map(|f| f.map_err(BoxError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder {
            Decoder::Done => SizeHint::with_exact(0),
            Decoder::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

/// The request on its way out: the head, then the body as the downstream sends it.
struct Writer {
    body: AttemptBody,
    enc: Encoder,
    /// Everything is written.
    done: bool,
    /// Some bytes were written.
    started: bool,
    /// A write failed (the response may still arrive).
    failed: Option<io::ErrorKind>,
    /// The request body failed while it was gathered.
    body_failed: bool,
}

impl Writer {
    /// `out` is a spare buffer to encode into.
    fn new(head: &RequestHead<'_>, body: AttemptBody, title_case: bool, mut out: BytesMut) -> Result<Self, Error> {
        let left_out = |name: &HeaderName| {
            (head.host.is_some() && name == http::header::HOST) || head.extra.iter().any(|(n, _)| *n == name)
        };
        let host = head.host.map(|v| (&http::header::HOST, v));
        let kept = head.headers.iter().filter(|(n, _)| !left_out(n));
        let fields = host.into_iter().chain(kept).chain(head.extra.iter().map(|(n, v)| (*n, v)));
        // One pass over the fields: the framing is read as they are written. `out` is a spare
        // buffer that usually has the room already.
        out.clear();
        out.reserve(head.method.as_str().len() + head.path.len() + 16 + 32 * (head.headers.len() + head.extra.len()));
        out.put_slice(head.method.as_str().as_bytes());
        out.put_u8(b' ');
        out.put_slice(head.path.as_bytes());
        out.put_slice(b" HTTP/1.1\r\n");
        let mut framing = BodyFraming::Empty;
        for (name, value) in fields {
            if name == TRANSFER_ENCODING {
                if ends_chunked(value.as_bytes()) {
                    framing = BodyFraming::Chunked;
                }
            } else if name == CONTENT_LENGTH && framing == BodyFraming::Empty {
                framing = BodyFraming::Length(length_of(value).ok_or(Error::RequestBody)?);
            }
            put_field(&mut out, name.as_str(), value.as_bytes(), title_case);
        }
        out.put_slice(b"\r\n");
        Ok(Writer {
            body,
            enc: Encoder::new(out, framing),
            done: false,
            started: false,
            failed: None,
            body_failed: false,
        })
    }

    /// Gathers what the body has ready, so that the head and a small body go out in one
    /// write.
    fn gather(&mut self, cx: &mut Context<'_>) -> Result<(), Error> {
        let gathered = self.gather_frames(cx);
        self.body_failed |= gathered.is_err();
        gathered
    }

    fn gather_frames(&mut self, cx: &mut Context<'_>) -> Result<(), Error> {
        if self.body_failed {
            return Err(Error::RequestBody);
        }
        while self.enc.wants_more() {
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => break,
                Poll::Ready(None) => self.enc.end(None).map_err(|_| Error::RequestBody)?,
                Poll::Ready(Some(Err(_))) => return Err(Error::RequestBody),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => self.enc.put_data(data).map_err(|_| Error::RequestBody)?,
                    Err(frame) => self.enc.end(frame.into_trailers().ok()).map_err(|_| Error::RequestBody)?,
                },
            }
        }
        Ok(())
    }

    /// `n` bytes were written by someone else (a batch of sends).
    fn wrote(&mut self, n: usize, tx: &Counter) {
        self.started = true;
        tx.add(n as u64);
        self.enc.advance(n);
    }

    /// Writes as far as the socket and the request body allow: ready once all is written.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut Option<TransportSocket>,
        tx: &Counter,
    ) -> Poll<Result<(), Error>> {
        loop {
            self.gather(cx)?;
            let Some(io) = io.as_mut() else {
                return Poll::Ready(Err(Error::Io(io::ErrorKind::NotConnected.into())));
            };
            if self.enc.is_written() {
                if !self.enc.ended {
                    return Poll::Pending;
                }
                if let Err(e) = ready!(io.poll_flush_records(cx)) {
                    self.failed = Some(e.kind());
                    return Poll::Ready(Err(Error::Io(e)));
                }
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            let written = match ready!(self.enc.poll_write_to(cx, &mut *io)) {
                Ok(0) => Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => Ok(n),
                Err(e) => Err(e),
            };
            let n = match written {
                Ok(n) => n,
                Err(e) => {
                    self.failed = Some(e.kind());
                    return Poll::Ready(Err(Error::Io(e)));
                }
            };
            self.wrote(n, tx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &[u8]) -> (Result<Option<Head>, Error>, BytesMut) {
        let mut buf = BytesMut::from(bytes);
        (parse_head(&mut buf, &mut headers::NameCache::default()), buf)
    }

    fn framing(response: &str, head_request: bool) -> Result<(Decoder, bool), Error> {
        let (parsed, _) = head(response.as_bytes());
        let parsed = parsed?.ok_or(Error::Protocol("incomplete"))?;
        let framing = response_framing(&parsed, head_request);
        Ok((framing.decoder, framing.keep_alive))
    }

    #[test]
    fn a_head_is_taken_from_the_buffer_and_its_values_share_its_bytes() {
        let (parsed, rest) = head(b"HTTP/1.1 404 Not Found\r\nServer: up\r\nx-a: 1\r\nx-a: 2\r\n\r\nbody");
        let parsed = parsed.ok().flatten().expect("a complete head");
        assert_eq!(parsed.status, StatusCode::NOT_FOUND);
        assert_eq!(parsed.version, Version::HTTP_11);
        assert_eq!(parsed.headers.get("server").map(|v| v.as_bytes()), Some(&b"up"[..]));
        let values: Vec<_> = parsed.headers.get_all("x-a").iter().map(|v| v.as_bytes().to_vec()).collect();
        assert_eq!(values, vec![b"1".to_vec(), b"2".to_vec()]);
        assert_eq!(&rest[..], b"body");
    }

    #[test]
    fn connection_level_fields_are_read_not_forwarded() {
        let response = b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nkeep-alive: timeout=5\r\n\
            transfer-encoding: chunked\r\ncontent-length: 3\r\nx-a: 1\r\n\r\n";
        let parsed = head(response).0.ok().flatten().expect("a complete head");
        let names: Vec<_> = parsed.headers.keys().map(|n| n.as_str().to_string()).collect();
        assert_eq!(names, vec!["x-a".to_string()]);
        assert!(parsed.hop.keep_alive && parsed.hop.chunked && parsed.hop.content_length == Some(3));
        // A `connection` naming another field goes on, for the proxy to strip what it names.
        let parsed = head(b"HTTP/1.1 200 OK\r\nconnection: close, x-secret\r\nx-secret: 1\r\n\r\n").0;
        let parsed = parsed.ok().flatten().expect("a complete head");
        assert!(parsed.hop.close);
        assert_eq!(parsed.headers.get("connection").map(|v| v.as_bytes()), Some(&b"close, x-secret"[..]));
    }

    #[test]
    fn an_incomplete_head_waits_and_a_malformed_one_is_a_protocol_error() {
        let incomplete = b"HTTP/1.1 200 OK\r\ncontent-len";
        let (parsed, rest) = head(incomplete);
        assert!(matches!(parsed, Ok(None)));
        assert_eq!(rest.len(), incomplete.len(), "nothing is taken from an incomplete head");
        assert!(matches!(head(b"HTTP/1.1 2OO OK\r\n\r\n").0, Err(Error::Protocol(_))));
        assert!(matches!(head(b"ICY 200 OK\r\n\r\n").0, Err(Error::Protocol(_))));
        // Past the first try's slots, a head is parsed again with room for all allowed.
        let fields: String = (0..MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        let (parsed, rest) = head(format!("HTTP/1.1 200 OK\r\n{fields}\r\nbody").as_bytes());
        let parsed = parsed.ok().flatten().expect("a head with MAX_HEADERS fields");
        assert_eq!(parsed.headers.len(), MAX_HEADERS);
        assert_eq!(&rest[..], b"body");
        let partial = format!("HTTP/1.1 200 OK\r\n{fields}");
        assert!(matches!(head(partial.as_bytes()).0, Ok(None)));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        let too_many = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert!(matches!(head(too_many.as_bytes()).0, Err(Error::Protocol("too many response headers"))));
    }

    #[test]
    fn the_body_is_delimited_as_rfc_9112_says() {
        let ok = |r: &str, head_request| framing(r, head_request).ok();
        assert_eq!(ok("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", false), Some((Decoder::Length(5), true)));
        assert_eq!(ok("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", true), Some((Decoder::Done, true)));
        assert_eq!(ok("HTTP/1.1 204 No Content\r\n\r\n", false), Some((Decoder::Done, true)));
        assert_eq!(ok("HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n", false), Some((Decoder::Done, true)));
        assert_eq!(ok("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", false), Some((Decoder::Done, true)));
        // The same length repeated is one length.
        assert_eq!(ok("HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\n\r\n", false), Some((Decoder::Length(3), true)));
        let chunked = Some((Decoder::Chunked(Chunk::Size), true));
        assert_eq!(ok("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n", false), chunked);
        // Transfer-encoding wins over a content-length, and the connection is not reused.
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n", false),
            Some((Decoder::Chunked(Chunk::Size), false))
        );
        // Neither, or a last coding other than chunked: the body runs to the close.
        assert_eq!(ok("HTTP/1.1 200 OK\r\n\r\n", false), Some((Decoder::Eof, false)));
        assert_eq!(ok("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", false), Some((Decoder::Eof, false)));
        // Keep-alive: HTTP/1.1 unless `close`; HTTP/1.0 only with `keep-alive`.
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nconnection: x, Close\r\ncontent-length: 1\r\n\r\n", false),
            Some((Decoder::Length(1), false))
        );
        assert_eq!(ok("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", false), Some((Decoder::Length(1), false)));
        assert_eq!(
            ok("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n", false),
            Some((Decoder::Length(1), true))
        );
        for bad in [
            "content-length: -1",
            "content-length: 1x",
            "content-length: 2\r\ncontent-length: 3",
            "content-length: 99999999999999999999",
        ] {
            let r = format!("HTTP/1.1 200 OK\r\n{bad}\r\n\r\n");
            assert!(matches!(framing(&r, false), Err(Error::Protocol(_))), "{bad}");
        }
    }

    /// Decodes a whole chunked body: its data and trailers.
    fn dechunk(bytes: &[u8]) -> Result<(Vec<u8>, Option<HeaderMap>), Error> {
        let mut buf = BytesMut::from(bytes);
        let mut decoder = Decoder::Chunked(Chunk::Size);
        let (mut data, mut trailers) = (Vec::new(), None);
        while let Decoder::Chunked(chunk) = decoder {
            if buf.is_empty() {
                return Err(Error::Protocol("incomplete"));
            }
            match decode_chunk(chunk, &mut buf, MAX_HEAD).map_err(Error::Protocol)? {
                ChunkStep::Next(next) => decoder = next.map_or(Decoder::Done, Decoder::Chunked),
                ChunkStep::Frame(frame, next) => {
                    let next = next.map_or(Decoder::Done, Decoder::Chunked);
                    decoder = next;
                    match frame.into_data() {
                        Ok(d) => data.extend_from_slice(&d),
                        Err(frame) => trailers = frame.into_trailers().ok(),
                    }
                }
                ChunkStep::NeedMore => return Err(Error::Protocol("incomplete")),
            }
        }
        Ok((data, trailers))
    }

    #[test]
    fn chunks_are_decoded_with_extensions_and_trailers() {
        let (data, trailers) = dechunk(b"5;a=b\r\nhello\r\nA \r\n0123456789\r\n0\r\n\r\n").expect("valid");
        assert_eq!(data, b"hello0123456789");
        assert!(trailers.is_none());
        let (data, trailers) = dechunk(b"1\r\nx\r\n0\r\nx-sum: 1\r\nx-more: 2\r\n\r\n").expect("valid");
        assert_eq!(data, b"x");
        let trailers = trailers.expect("trailers");
        assert_eq!(trailers.get("x-sum").map(|v| v.as_bytes()), Some(&b"1"[..]));
        assert_eq!(trailers.len(), 2);
    }

    #[test]
    fn malformed_chunks_are_protocol_errors() {
        for bad in
            [&b"zz\r\n"[..], b"5\r\nhelloXY", b"\r\n", b"5 x\r\nhello\r\n", b"11111111111111111\r\n", b"5\nhello\r\n"]
        {
            assert!(matches!(dechunk(bad), Err(Error::Protocol(what)) if what != "incomplete"), "{bad:?}");
        }
        let long = vec![b'1'; crate::http::h1_body::MAX_CHUNK_LINE + 1];
        assert!(matches!(dechunk(&long), Err(Error::Protocol("chunk size line too long"))));
    }

    #[test]
    fn the_request_head_is_encoded_once_with_its_framing() {
        let request = Request::builder()
            .method("POST")
            .uri("/a?b=c")
            .header("host", "example")
            .header("x-request-id", "1")
            .header("transfer-encoding", "chunked")
            .body(AttemptBody::empty())
            .expect("a request");
        let (parts, body) = request.into_parts();
        let head =
            RequestHead { method: &parts.method, path: "/a?b=c", headers: &parts.headers, host: None, extra: &[] };
        let writer = Writer::new(&head, body, true, BytesMut::new()).expect("encodes");
        assert_eq!(writer.enc.framing, BodyFraming::Chunked);
        assert_eq!(
            &writer.enc.out[..],
            &b"POST /a?b=c HTTP/1.1\r\nHost: example\r\nX-Request-Id: 1\r\nTransfer-Encoding: chunked\r\n\r\n"[..]
        );
        let request =
            Request::builder().uri("/").header("content-length", "7").body(AttemptBody::empty()).expect("a request");
        let (parts, body) = request.into_parts();
        let head = RequestHead { method: &parts.method, path: "/", headers: &parts.headers, host: None, extra: &[] };
        let writer = Writer::new(&head, body, false, BytesMut::new()).expect("encodes");
        assert_eq!(writer.enc.framing, BodyFraming::Length(7));
        assert!(writer.enc.out.starts_with(b"GET / HTTP/1.1\r\ncontent-length: 7\r\n"));
        // `host` and the fields set per attempt replace the map's.
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("downstream"));
        headers.insert("x-envoy-attempt-count", HeaderValue::from_static("1"));
        headers.insert("accept", HeaderValue::from_static("*/*"));
        let host = HeaderValue::from_static("upstream");
        let count = HeaderName::from_static("x-envoy-attempt-count");
        let te = (&TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        let extra = [(&count, HeaderValue::from_static("2")), te];
        let head =
            RequestHead { method: &Method::PUT, path: "/x", headers: &headers, host: Some(&host), extra: &extra };
        let writer = Writer::new(&head, AttemptBody::empty(), false, BytesMut::new()).expect("encodes");
        assert_eq!(writer.enc.framing, BodyFraming::Chunked);
        assert_eq!(
            &writer.enc.out[..],
            &b"PUT /x HTTP/1.1\r\nhost: upstream\r\naccept: */*\r\nx-envoy-attempt-count: 2\r\ntransfer-encoding: chunked\r\n\r\n"[..]
        );
    }

    /// Counts its wake-ups: stands for the task of one exchange.
    struct Task(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Task {
        fn wake(self: std::sync::Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// `n` connected sockets: (legate's ends, the upstreams' ends).
    async fn socket_pairs(n: usize) -> (Vec<tokio::net::TcpStream>, Vec<tokio::net::TcpStream>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("an address");
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..n {
            ours.push(tokio::net::TcpStream::connect(addr).await.expect("connects"));
            theirs.push(listener.accept().await.expect("accepts").0);
        }
        (ours, theirs)
    }

    #[test]
    fn deferred_writes_go_out_together_and_survive_their_first_exchange_going_away() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        rt.block_on(async {
            let store = legate_stats::Store::new(1);
            let (sockets, mut upstreams) = socket_pairs(3).await;
            let conns: Vec<_> = sockets
                .into_iter()
                .map(|tcp| {
                    let io = TransportSocket::RawBuffer(tcp);
                    Rc::new(ClientConn::new(io, false, store.counter("rx"), store.counter("tx")))
                })
                .collect();
            let request = |path: &str| Request::builder().uri(path).body(AttemptBody::empty()).expect("a request");
            let mut exchanges: Vec<_> = conns
                .iter()
                .zip(["/a", "/b", "/c"])
                .map(|(c, path)| Box::pin(send(c.clone(), request(path))))
                .collect();
            let tasks: Vec<_> =
                (0..3).map(|_| std::sync::Arc::new(Task(std::sync::atomic::AtomicUsize::new(0)))).collect();
            let wakes = |i: usize| tasks[i].0.load(std::sync::atomic::Ordering::Relaxed);
            let poll = |exchange: &mut Pin<Box<Exchange>>, task: &std::sync::Arc<Task>| {
                let waker = Waker::from(task.clone());
                exchange.as_mut().poll(&mut Context::from_waker(&waker)).is_pending()
            };
            // Three exchanges in flight: each first poll only queues its request; the first
            // queued wakes its task to write them all.
            for (i, exchange) in exchanges.iter_mut().enumerate() {
                assert!(poll(exchange, &tasks[i]));
            }
            assert_eq!((wakes(0), wakes(1), wakes(2)), (1, 0, 0));
            // The first goes away before writing: the next in the queue is woken to do it.
            exchanges.remove(0);
            assert_eq!(wakes(1), 1);
            assert!(poll(&mut exchanges[0], &tasks[1]));
            // Both requests went out; the third exchange was not woken for it.
            assert_eq!(wakes(2), 0);
            let mut seen = Vec::new();
            for upstream in &mut upstreams[1..] {
                let mut buf = [0u8; 256];
                let n = tokio::io::AsyncReadExt::read(upstream, &mut buf).await.expect("reads");
                seen.push(String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().to_string());
                let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                tokio::io::AsyncWriteExt::write_all(upstream, reply).await.expect("writes");
            }
            assert_eq!(seen, ["GET /b HTTP/1.1", "GET /c HTTP/1.1"]);
            // The upstream's answer wakes the third exchange, whose read the writing registered.
            tokio::time::timeout(std::time::Duration::from_secs(10), async {
                while wakes(2) == 0 {
                    tokio::task::yield_now().await;
                }
            })
            .await
            .expect("the third exchange is woken by its response");
            let waker = Waker::from(tasks[2].clone());
            match exchanges[1].as_mut().poll(&mut Context::from_waker(&waker)) {
                Poll::Ready(Ok(response)) => assert_eq!(response.status(), StatusCode::OK),
                _ => panic!("the third exchange has its response"),
            }
            // The first request was never written.
            let mut buf = [0u8; 16];
            assert!(upstreams[0].try_read(&mut buf).is_err_and(|e| e.kind() == io::ErrorKind::WouldBlock));
        });
    }

    #[test]
    fn requests_written_together_reach_each_upstream_and_one_too_large_for_its_socket_is_finished_as_it_drains() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        rt.block_on(async {
            let store = legate_stats::Store::new(1);
            let (mut conns, upstreams) = socket_pairs(4).await;
            // The last socket is full: its upstream has not read what was sent before.
            // (Written to without tokio, which would answer `WouldBlock` from its own
            // readiness; again after a pause until nothing more fits: the peer's delayed ACKs
            // free room for a while.)
            let full = conns.pop().expect("four sockets").into_std().expect("a std socket");
            let mut filler = 0;
            let chunk = [b'x'; 65536];
            for _ in 0..50 {
                let before = filler;
                for size in [65536, 1024, 1] {
                    loop {
                        match std::io::Write::write(&mut &full, &chunk[..size]) {
                            Ok(n) => filler += n,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => panic!("fills the socket: {e}"),
                        }
                    }
                }
                if filler == before {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(60)).await;
            }
            conns.push(tokio::net::TcpStream::from_std(full).expect("back to tokio"));
            let tx = store.counter("tx");
            let conns: Vec<_> = conns
                .into_iter()
                .map(|tcp| {
                    Rc::new(ClientConn::new(TransportSocket::RawBuffer(tcp), false, store.counter("rx"), tx.clone()))
                })
                .collect();
            // The last request is larger than any room its socket may have found since.
            let paths = ["/a", "/b", "/c", "/d"];
            let big = "a".repeat(1 << 20);
            let field = move |i: usize| if i == 3 { big.clone() } else { "b".to_string() };
            // All in flight at once, as on a busy worker: each exchange and each upstream's
            // answer is a task of one LocalSet.
            let tasks = tokio::task::LocalSet::new();
            let exchanges: Vec<_> = conns
                .iter()
                .zip(paths)
                .enumerate()
                .map(|(i, (conn, path))| {
                    let chunks = std::collections::VecDeque::from([Bytes::from_static(b"hello")]);
                    let body = AttemptBody::new(super::super::body::BodySource::buffered(chunks, None));
                    let request = Request::post(path).header("content-length", "5").header("x-field", field(i));
                    tasks.spawn_local(send(conn.clone(), request.body(body).expect("a request")))
                })
                .collect();
            let answers: Vec<_> = upstreams
                .into_iter()
                .zip(paths)
                .enumerate()
                .map(|(i, (mut upstream, path))| {
                    let skip = if i == 3 { filler } else { 0 };
                    let expected =
                        format!("POST {path} HTTP/1.1\r\ncontent-length: 5\r\nx-field: {}\r\n\r\nhello", field(i));
                    tasks.spawn_local(async move {
                        let mut got = Vec::new();
                        while got.len() < skip + expected.len() {
                            let mut buf = vec![0u8; 1 << 16];
                            let n = tokio::io::AsyncReadExt::read(&mut upstream, &mut buf).await.expect("reads");
                            assert!(n > 0, "the upstream of {path} got {} bytes", got.len());
                            got.extend_from_slice(&buf[..n]);
                        }
                        assert!(got[skip..] == *expected.as_bytes(), "the upstream of {path} got the request as sent");
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                        tokio::io::AsyncWriteExt::write_all(&mut upstream, reply).await.expect("writes");
                        expected.len()
                    })
                })
                .collect();
            let (responses, sizes) = tokio::time::timeout(
                std::time::Duration::from_secs(20),
                tasks.run_until(async {
                    let mut responses = Vec::new();
                    for exchange in exchanges {
                        responses.push(exchange.await.expect("the exchange's task"));
                    }
                    let mut sizes = Vec::new();
                    for answer in answers {
                        sizes.push(answer.await.expect("the upstream's task"));
                    }
                    (responses, sizes)
                }),
            )
            .await
            .expect("every exchange completes");
            for response in responses {
                assert_eq!(response.expect("a response").status(), StatusCode::OK);
            }
            assert_eq!(tx.value(), sizes.iter().sum::<usize>() as u64);
        });
    }

    #[test]
    fn an_idle_connection_gives_its_buffers_back_and_serves_the_next_exchange() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
            let tcp =
                tokio::net::TcpStream::connect(listener.local_addr().expect("an address")).await.expect("connects");
            let mut upstream = listener.accept().await.expect("accepts").0;
            let store = legate_stats::Store::new(1);
            let io = TransportSocket::RawBuffer(tcp);
            let conn = Rc::new(ClientConn::new(io, false, store.counter("rx"), store.counter("tx")));
            assert!(!conn.holds_buffers(), "a new connection has none yet");
            for (path, body) in [("/a", "first"), ("/b", "second")] {
                let request = Request::builder().uri(path).body(AttemptBody::empty()).expect("a request");
                let exchange = async {
                    let response = send(conn.clone(), request).await.expect("a response");
                    http_body_util::BodyExt::collect(response.into_body()).await.expect("a body").to_bytes()
                };
                let answer = async {
                    let mut buf = [0u8; 256];
                    let n = tokio::io::AsyncReadExt::read(&mut upstream, &mut buf).await.expect("reads");
                    assert!(buf[..n].starts_with(format!("GET {path} HTTP/1.1").as_bytes()));
                    let reply = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                    tokio::io::AsyncWriteExt::write_all(&mut upstream, reply.as_bytes()).await.expect("writes");
                };
                let (received, ()) = tokio::join!(exchange, answer);
                assert_eq!(&received[..], body.as_bytes());
                assert!(conn.holds_buffers(), "an exchange leaves its buffers for the next");
                conn.release_buffers();
                assert!(!conn.holds_buffers(), "idle, they are given back");
                assert!(conn.clean(), "and the connection stays fit for more");
            }
        });
    }
}
