//! legate's HTTP/1.1 server codec for downstream connections (RFC 9112).
//!
//! Why not hyper's server: with hyper, every request head was parsed twice (once by the
//! guard that refuses request smuggling shapes hyper accepts, once by hyper), copied through
//! two buffers, and hyper's dispatcher sat between the socket and the connection manager
//! (callgrind: about 6k of 41k instructions per request). An idle connection also had to put
//! hyper aside to give back its buffers. Here one strict parse builds the request, the
//! connection manager's own task writes the response (head and first body bytes in one
//! write), and an idle connection holds no buffer at all.
//!
//! Strict, as Envoy's codec: a head with a bare LF, both `content-length` and
//! `transfer-encoding`, differing lengths, a transfer coding other than a final `chunked`, or
//! a malformed chunk is refused. Header names keep the case rules of Envoy's default (lower
//! case); `header_key_format` configurations are served by hyper instead.

use std::cell::RefCell;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, EXPECT, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderValue, Method, StatusCode, Uri, Version};
use http_body::{Frame, SizeHint};
use legate_stats::Counter;

use super::body::BoxError;
pub use super::h1_body::Framing as BodyFraming;
use super::h1_body::{
    decode_chunk, digits, ends_chunked, fold_length, length_of, put_field, take, trim_ows, Chunk, ChunkStep, Encoder,
};
use super::headers;
use super::io::CountingIo;
use crate::network::TransportSocket;
use crate::worker::reused::Reused;

/// How much one read asks for while requests flow.
const READ_ROOM: usize = 16 * 1024;
/// Room for a read of a request body while requests flow: a body arriving faster than it
/// leaves is read in 64 KiB slices, a quarter of the system calls of 16 KiB ones.
const BODY_READ_ROOM: usize = crate::network::transport_socket::MAX_BUSY_READ;
/// hyper's limit on a request target, kept: longer ones are answered 414.
const MAX_URI: usize = u16::MAX as usize - 1;
/// Header slots parsed on the stack: a request with more fields is parsed again with room
/// for `max_headers_count` of them, on the heap. (Every slot's span is zeroed per request:
/// 128 of them took 2 KB of memset per request.)
const STACK_HEADERS: usize = 32;
/// Reads of a closing connection's last bytes in one poll (see [`ServerConn::poll_linger`]).
const LINGER_READS_PER_POLL: usize = 16;
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Limits on a request head (`max_request_headers_kb`, `max_headers_count`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_head: usize,
    pub max_headers: usize,
}

/// Why a request head was refused, and the status it is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    BadRequest,
    /// The head is larger than `max_request_headers_kb`, or has too many fields.
    TooLarge,
    UriTooLong,
}

impl HeadError {
    pub fn status(self) -> StatusCode {
        match self {
            HeadError::BadRequest => StatusCode::BAD_REQUEST,
            HeadError::TooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            HeadError::UriTooLong => StatusCode::URI_TOO_LONG,
        }
    }

    /// `%RESPONSE_CODE_DETAILS%` of the reply, Envoy's HTTP/1 codec's.
    pub fn details(self) -> &'static str {
        match self {
            HeadError::TooLarge => "http1.headers_too_large",
            HeadError::BadRequest | HeadError::UriTooLong => "http1.codec_error",
        }
    }
}

/// How a request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
}

/// A parsed request head.
#[derive(Debug)]
pub struct RequestHead {
    /// Boxed, as the connection manager takes it (its `serve_stream` says why).
    pub parts: Reused<http::request::Parts>,
    pub framing: Framing,
    /// The client lets the connection stay open after this exchange.
    pub keep_alive: bool,
    pub expect_continue: bool,
    /// CONNECT, or `connection: upgrade` with an `upgrade` other than `h2c` (which Envoy
    /// ignores): the bytes after the exchange belong to a tunnel, or to nobody.
    pub wants_upgrade: bool,
}

/// Parses the request head at the start of `buf` and takes it out: `None` while incomplete.
/// Not inlined: its slots (1.5 KB) would otherwise sit in the frame of the connection's poll,
/// above every request's deeper calls.
#[inline(never)]
pub fn parse_head(buf: &mut BytesMut, limits: &Limits) -> Result<Option<RequestHead>, HeadError> {
    let on_stack = {
        let mut spans = [Span::default(); STACK_HEADERS];
        let scanned = {
            let mut slots = [const { MaybeUninit::uninit() }; STACK_HEADERS];
            let slots = slots.get_mut(..limits.max_headers.min(STACK_HEADERS)).unwrap_or_default();
            scan(buf, limits, slots, &mut spans)
        };
        match scanned {
            // More fields than the stack's slots, which the limit allows: parsed again below.
            Err(Scan::MoreFields) if limits.max_headers > STACK_HEADERS => None,
            Err(Scan::MoreFields) => return Err(HeadError::TooLarge),
            Err(Scan::Head(e)) => return Err(e),
            Ok(scanned) => Some(scanned.map(|scanned| build(buf, scanned, &spans)).transpose()),
        }
    };
    match on_stack {
        Some(parsed) => parsed,
        None => parse_large_head(buf, limits),
    }
}

/// [`parse_head`] for a request with more fields than the stack has slots for.
fn parse_large_head(buf: &mut BytesMut, limits: &Limits) -> Result<Option<RequestHead>, HeadError> {
    let mut spans = vec![Span::default(); limits.max_headers];
    let scanned = {
        let mut slots = Vec::new();
        slots.resize_with(limits.max_headers, MaybeUninit::uninit);
        match scan(buf, limits, &mut slots, &mut spans) {
            Ok(scanned) => scanned,
            Err(Scan::MoreFields) => return Err(HeadError::TooLarge),
            Err(Scan::Head(e)) => return Err(e),
        }
    };
    scanned.map(|scanned| build(buf, scanned, &spans)).transpose()
}

/// Where a field's name and value lie in the head.
#[derive(Debug, Default, Clone, Copy)]
struct Span {
    name: (u32, u32),
    value: (u32, u32),
}

/// What the parse found, as places in the buffer.
struct Scanned {
    len: usize,
    method: Method,
    path: (usize, usize),
    version: Version,
    count: usize,
}

/// Why [`scan`] found no head.
enum Scan {
    Head(HeadError),
    /// More fields than the slots it was given.
    MoreFields,
}

impl From<HeadError> for Scan {
    fn from(e: HeadError) -> Self {
        Scan::Head(e)
    }
}

/// Parses a complete head (`None` while incomplete) and records where its parts lie.
fn scan<'b>(
    bytes: &'b [u8],
    limits: &Limits,
    slots: &mut [MaybeUninit<httparse::Header<'b>>],
    spans: &mut [Span],
) -> Result<Option<Scanned>, Scan> {
    let mut request = httparse::Request::new(&mut []);
    let len = match request.parse_with_uninit_headers(bytes, slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if bytes.len() > limits.max_head => return Err(HeadError::TooLarge.into()),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Scan::MoreFields),
        Err(_) => return Err(HeadError::BadRequest.into()),
    };
    if len > limits.max_head {
        return Err(HeadError::TooLarge.into());
    }
    let head = bytes.get(..len).unwrap_or_default();
    // Offsets within the head, which is shorter than `max_head`: they fit in a `u32`.
    let base = bytes.as_ptr() as usize;
    let offset = |part: &[u8]| (part.as_ptr() as usize - base) as u32;
    // (`spans` has a place for every header slot httparse was given.)
    let count = request.headers.len();
    for (span, header) in spans.iter_mut().zip(request.headers.iter()) {
        let (name, value) = (offset(header.name.as_bytes()), offset(header.value));
        *span =
            Span { name: (name, name + header.name.len() as u32), value: (value, value + header.value.len() as u32) };
    }
    let method =
        Method::from_bytes(request.method.unwrap_or_default().as_bytes()).map_err(|_| HeadError::BadRequest)?;
    let path = request.path.unwrap_or_default();
    if path.len() > MAX_URI {
        return Err(HeadError::UriTooLong.into());
    }
    let start = offset(path.as_bytes()) as usize;
    // Every line must end in CRLF. httparse also takes a bare LF; lines end only after the
    // request line's version, after each field value and at the empty line, so those are
    // the places to look (the whole head need not be scanned byte by byte).
    let mut line_ends = std::iter::once(start + path.len() + " HTTP/1.1".len())
        .chain(spans.iter().take(count).map(|span| span.value.1 as usize));
    // (httparse leaves a value's trailing whitespace out of it.)
    let crlf = |at: usize| {
        let rest = head.get(at..).unwrap_or_default();
        let blank = rest.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
        rest.get(blank..blank + 2) == Some(b"\r\n".as_slice())
    };
    // Empty lines before the request line (which httparse skips) too.
    let method_at = request.method.map_or(0, |m| offset(m.as_bytes()) as usize);
    let leading = head.get(..method_at).unwrap_or_default();
    let leading_ok = leading.chunks(2).all(|pair| pair == b"\r\n");
    if !leading_ok || !head.ends_with(b"\r\n\r\n") || !line_ends.all(crlf) {
        return Err(HeadError::BadRequest.into());
    }
    let version = match request.version {
        Some(1) => Version::HTTP_11,
        Some(0) => Version::HTTP_10,
        _ => return Err(HeadError::BadRequest.into()),
    };
    Ok(Some(Scanned { len, method, path: (start, start + path.len()), version, count }))
}

thread_local! {
    /// The field names of the last request head built on this worker: its clients mostly
    /// send the same names in the same order (one kind of client, or a proxy in front). Kept
    /// per worker rather than per connection, so that an idle connection holds none of it.
    static REQUEST_NAMES: std::cell::RefCell<headers::NameCache> = std::cell::RefCell::default();
}

/// Takes the scanned head out of `buf` and builds the request from it; its field values share
/// one copy of the head.
fn build(buf: &mut BytesMut, scanned: Scanned, spans: &[Span]) -> Result<RequestHead, HeadError> {
    REQUEST_NAMES.with_borrow_mut(|names| build_with(buf, scanned, spans, names))
}

fn build_with(
    buf: &mut BytesMut,
    scanned: Scanned,
    spans: &[Span],
    names: &mut headers::NameCache,
) -> Result<RequestHead, HeadError> {
    let Scanned { len, method, path, version, count } = scanned;
    let head = take(buf, len);
    let uri = Uri::from_maybe_shared(head.slice(path.0..path.1)).map_err(|_| HeadError::BadRequest)?;
    let http11 = version == Version::HTTP_11;
    let mut facts = Facts { keep_alive: http11, ..Facts::default() };
    // Room for the fields the connection manager adds (`x-forwarded-proto`, `x-request-id`,
    // `x-envoy-expected-rq-timeout-ms`…): growing the map would rehash it.
    let mut headers = headers::header_map(count + 8);
    for (index, span) in spans.iter().take(count).enumerate() {
        let name = head.get(span.name.0 as usize..span.name.1 as usize).unwrap_or_default();
        let name = names.name(index, name).map_err(|_| HeadError::BadRequest)?;
        let range = span.value.0 as usize..span.value.1 as usize;
        let raw = head.get(range.clone()).unwrap_or_default();
        let value = if name == CONTENT_LENGTH {
            match facts.content_length(raw)? {
                // A repeated, equal length is not forwarded twice (nor as a list).
                Seen::Again => continue,
                Seen::First(n) if raw.contains(&b',') => Ok(HeaderValue::from(n)),
                Seen::First(_) => HeaderValue::from_maybe_shared(head.slice(range)),
            }
        } else {
            if name == TRANSFER_ENCODING {
                facts.transfer_encoding(raw);
            } else if name == CONNECTION {
                facts.connection(raw);
            } else if name == EXPECT {
                facts.expect_continue = raw.eq_ignore_ascii_case(b"100-continue");
            } else if name == UPGRADE {
                facts.upgrade = Some(!raw.trim_ascii().eq_ignore_ascii_case(b"h2c"));
            }
            HeaderValue::from_maybe_shared(head.slice(range))
        }
        .map_err(|_| HeadError::BadRequest)?;
        headers.append(name, value);
    }
    let framing = facts.framing(http11)?;
    let wants_upgrade =
        method == Method::CONNECT || (http11 && facts.connection_upgrade && facts.upgrade == Some(true));
    let mut parts = Reused::new(http::Request::new(()).into_parts().0);
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(RequestHead {
        parts,
        framing,
        keep_alive: facts.keep_alive,
        expect_continue: facts.expect_continue && http11,
        wants_upgrade,
    })
}

/// What the connection-level fields of a request say.
#[derive(Debug, Default)]
struct Facts {
    keep_alive: bool,
    close: bool,
    connection_upgrade: bool,
    /// An `upgrade` field, and whether it asks for something other than `h2c`.
    upgrade: Option<bool>,
    expect_continue: bool,
    content_length: Option<u64>,
    /// `transfer-encoding` codings seen, how many were `chunked`, and whether the last was.
    codings: usize,
    chunked: usize,
    last_chunked: bool,
}

enum Seen {
    First(u64),
    Again,
}

impl Facts {
    fn connection(&mut self, value: &[u8]) {
        for token in value.split(|&b| b == b',').map(trim_ows) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
                self.keep_alive = false;
            } else if token.eq_ignore_ascii_case(b"keep-alive") && !self.close {
                self.keep_alive = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                self.connection_upgrade = true;
            }
        }
    }

    fn transfer_encoding(&mut self, value: &[u8]) {
        for coding in value.split(|&b| b == b',').map(trim_ows) {
            self.codings += 1;
            self.last_chunked = coding.eq_ignore_ascii_case(b"chunked");
            self.chunked += usize::from(self.last_chunked);
        }
    }

    /// A `content-length` field: every value in it, and in earlier ones, the same number (see
    /// [`fold_length`]).
    fn content_length(&mut self, value: &[u8]) -> Result<Seen, HeadError> {
        let again = self.content_length.is_some();
        fold_length(value, &mut self.content_length).map_err(|_| HeadError::BadRequest)?;
        match (again, self.content_length) {
            (false, Some(n)) => Ok(Seen::First(n)),
            _ => Ok(Seen::Again),
        }
    }

    /// RFC 9112 §6.3, refusing what a smuggler would send: a coding other than one final
    /// `chunked`, a length beside a coding (Envoy's default), a coding in HTTP/1.0.
    fn framing(&self, http11: bool) -> Result<Framing, HeadError> {
        if self.codings > 0 {
            if !http11 || self.content_length.is_some() || !self.last_chunked || self.chunked != 1 {
                return Err(HeadError::BadRequest);
            }
            return Ok(Framing::Chunked);
        }
        Ok(match self.content_length {
            Some(0) | None => Framing::Empty,
            Some(n) => Framing::Length(n),
        })
    }
}

/// Why reading a request head ended without one.
#[derive(Debug)]
pub enum ReadError {
    /// The client closed between requests (with nothing, or an incomplete head, sent).
    Closed,
    Head(HeadError),
    Io(io::Error),
}

/// What is left of the request body being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decoder {
    Length(u64),
    Chunked(Chunk),
    Done,
}

/// A downstream HTTP/1.1 connection: its socket and read buffer, shared by the connection
/// manager's loop and the body reader of the request in flight (one task, one thread).
pub struct ServerConn {
    state: RefCell<State>,
}

struct State {
    io: Option<TransportSocket>,
    read_buf: BytesMut,
    /// The buffer responses are encoded into, kept between them.
    spare: BytesMut,
    rx: Counter,
    tx: Counter,
    limits: Limits,
    /// Counts requests: a body reader of an earlier one reads nothing.
    stream: u64,
    decoder: Decoder,
    /// `100 Continue` still to write before the body is read.
    continue_owed: &'static [u8],
    /// The client closed its side.
    eof: bool,
    /// Requests are flowing: reads use a buffer kept for them.
    busy: bool,
}

impl ServerConn {
    pub fn new(io: TransportSocket, buffered: BytesMut, rx: Counter, tx: Counter, limits: Limits) -> Self {
        ServerConn {
            state: RefCell::new(State {
                io: Some(io),
                read_buf: buffered,
                spare: BytesMut::new(),
                rx,
                tx,
                limits,
                stream: 0,
                decoder: Decoder::Done,
                continue_owed: b"",
                eof: false,
                busy: true,
            }),
        }
    }

    /// Bytes of a next request head have arrived (the header timeout runs).
    pub fn head_started(&self) -> bool {
        !self.state.borrow().read_buf.is_empty()
    }

    /// Whether an idle connection can be parked (see [`crate::worker::park`]): a plain TCP
    /// socket (TLS keeps state a parked socket could not), nothing read of a next request.
    pub fn parkable(&self) -> bool {
        let state = self.state.borrow();
        matches!(state.io, Some(TransportSocket::RawBuffer(_))) && state.read_buf.is_empty() && !state.eof
    }

    /// The plain TCP socket of an idle connection, to park it.
    pub fn take_socket(&self) -> Option<tokio::net::TcpStream> {
        let mut state = self.state.borrow_mut();
        match state.io.take() {
            Some(TransportSocket::RawBuffer(socket)) => Some(socket),
            other => {
                state.io = other;
                None
            }
        }
    }

    /// Gives back the buffers while the connection idles; reads take what they need from
    /// then on, until the next request.
    pub fn release_buffers(&self) {
        let mut state = self.state.borrow_mut();
        if state.read_buf.is_empty() {
            state.read_buf = BytesMut::new();
        }
        state.spare = BytesMut::new();
        state.busy = false;
    }

    /// Reads until a request head is complete; with `report_start`, ready with `None` as soon
    /// as its first bytes are in (the header timeout starts then).
    pub fn poll_head(&self, cx: &mut Context<'_>, report_start: bool) -> Poll<Result<Option<RequestHead>, ReadError>> {
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        loop {
            if !state.read_buf.is_empty() {
                if let Some(head) = parse_head(&mut state.read_buf, &state.limits).map_err(ReadError::Head)? {
                    state.busy = true;
                    return Poll::Ready(Ok(Some(head)));
                }
                if report_start {
                    return Poll::Ready(Ok(None));
                }
            }
            if state.eof {
                return Poll::Ready(Err(ReadError::Closed));
            }
            match ready!(state.poll_read(cx, READ_ROOM)) {
                Ok(0) => state.eof = true,
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(ReadError::Io(e))),
            }
        }
    }

    /// Reads what has arrived (while the connection idles: into a buffer of its size);
    /// `Ok(0)` when the client closed.
    pub fn poll_fill(&self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut state = self.state.borrow_mut();
        let n = ready!(state.poll_read(cx, READ_ROOM))?;
        if n == 0 {
            state.eof = true;
        }
        Poll::Ready(Ok(n))
    }

    /// Starts the exchange of `head`: its body reader.
    pub fn start(self: &Rc<Self>, head: &RequestHead) -> RequestBody {
        let mut state = self.state.borrow_mut();
        state.stream += 1;
        state.decoder = match head.framing {
            Framing::Empty => Decoder::Done,
            Framing::Length(n) => Decoder::Length(n),
            Framing::Chunked => Decoder::Chunked(Chunk::Size),
        };
        state.continue_owed = if head.expect_continue && state.decoder != Decoder::Done { CONTINUE } else { b"" };
        RequestBody { conn: self.clone(), stream: state.stream }
    }

    /// While a request whose body is all read waits for its response: ready when the client
    /// closed or the socket failed (the exchange is abandoned, as Envoy resets the stream).
    /// Bytes of a next (pipelined) request are kept, up to a head's worth.
    pub fn poll_client_gone(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        if state.decoder != Decoder::Done || state.read_buf.len() > state.limits.max_head {
            // The body reader reads (and sees the close); or enough is buffered.
            return Poll::Pending;
        }
        if state.eof {
            return Poll::Ready(());
        }
        match ready!(state.poll_read(cx, READ_ROOM)) {
            Ok(0) | Err(_) => {
                state.eof = true;
                Poll::Ready(())
            }
            Ok(_) => Poll::Pending,
        }
    }

    /// After a response: whether the request body was read to its end, reading what is
    /// already buffered of it (a reply may come before the body is read).
    pub fn finish_request(&self) -> bool {
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        state.continue_owed = b"";
        // The pieces are dropped: nobody reads this body any more.
        while let Ok(Some(_)) = state.decode_buffered() {}
        state.decoder == Decoder::Done
    }

    /// The socket for a tunnel, with the bytes read past the request.
    pub fn take_upgraded(&self) -> Option<CountingIo<TransportSocket>> {
        let mut state = self.state.borrow_mut();
        let io = state.io.take()?;
        let prefix = std::mem::take(&mut state.read_buf);
        Some(CountingIo::new(io, prefix, state.rx.clone(), state.tx.clone()))
    }

    /// Closes the write side (FIN, and TLS close_notify).
    pub fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.state.borrow_mut();
        match state.io.as_mut() {
            Some(io) => tokio::io::AsyncWrite::poll_shutdown(Pin::new(io), cx),
            None => Poll::Ready(Ok(())),
        }
    }

    /// The connection runs over TLS.
    pub fn is_tls(&self) -> bool {
        self.state.borrow().io.as_ref().is_some_and(TransportSocket::is_tls)
    }

    /// Once legate has closed its side: reads and drops what the client still sends, ready
    /// when the client has closed too (or reading failed). A socket closed with unread bytes
    /// in it answers with a reset, which may destroy the response before the client reads it
    /// (a client still sending the body of a request answered early, 413 or 400).
    pub fn poll_linger(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.state.borrow_mut();
        // A client sending without pause is read in turns with the worker's other work.
        for _ in 0..LINGER_READS_PER_POLL {
            if state.eof {
                return Poll::Ready(());
            }
            state.read_buf.clear();
            match ready!(state.poll_read(cx, BODY_READ_ROOM)) {
                Ok(0) | Err(_) => state.eof = true,
                Ok(_) => {}
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Writes a whole reply made by the codec itself (an error, the header timeout's 408).
    pub fn poll_write_all(&self, cx: &mut Context<'_>, bytes: &mut &[u8]) -> Poll<io::Result<()>> {
        self.state.borrow_mut().poll_write_all(cx, bytes)
    }

    /// The buffer to encode the next response into.
    pub fn take_spare(&self) -> BytesMut {
        let mut spare = std::mem::take(&mut self.state.borrow_mut().spare);
        spare.clear();
        spare
    }
}

impl State {
    /// Reads at most `room` bytes (a head's reads [`READ_ROOM`], a body's [`BODY_READ_ROOM`]).
    fn poll_read(&mut self, cx: &mut Context<'_>, room: usize) -> Poll<io::Result<usize>> {
        let Some(io) = self.io.as_mut() else { return Poll::Ready(Ok(0)) };
        let n = ready!(io.poll_read_append(cx, &mut self.read_buf, room, self.busy))?;
        self.rx.add(n as u64);
        Poll::Ready(Ok(n))
    }

    /// Writes what is owed of `100 Continue`.
    fn poll_continue(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.continue_owed.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let mut owed = self.continue_owed;
        let written = self.poll_write_all(cx, &mut owed);
        self.continue_owed = owed;
        written
    }

    /// Writes all of `bytes` (what is left of them stays in `bytes` while the socket is full)
    /// and pushes them out of rustls.
    fn poll_write_all(&mut self, cx: &mut Context<'_>, bytes: &mut &[u8]) -> Poll<io::Result<()>> {
        let Some(io) = self.io.as_mut() else { return Poll::Ready(Err(io::ErrorKind::NotConnected.into())) };
        while !bytes.is_empty() {
            match ready!(io.poll_write_slice(cx, bytes)) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.tx.add(n as u64);
                    *bytes = bytes.get(n..).unwrap_or_default();
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        io.poll_flush_records(cx)
    }

    /// The next piece of the request body from the bytes already read: `Ok(None)` when more
    /// must be read (or the body is complete).
    fn decode_buffered(&mut self) -> Result<Option<Frame<Bytes>>, &'static str> {
        loop {
            match self.decoder {
                Decoder::Done => return Ok(None),
                _ if self.read_buf.is_empty() => return Ok(None),
                Decoder::Length(left) => {
                    let n = self.read_buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let left = left - n as u64;
                    self.decoder = if left == 0 { Decoder::Done } else { Decoder::Length(left) };
                    return Ok(Some(Frame::data(take(&mut self.read_buf, n))));
                }
                Decoder::Chunked(chunk) => match decode_chunk(chunk, &mut self.read_buf, self.limits.max_head)? {
                    ChunkStep::Next(next) => self.decoder = next.map_or(Decoder::Done, Decoder::Chunked),
                    ChunkStep::Frame(frame, next) => {
                        self.decoder = next.map_or(Decoder::Done, Decoder::Chunked);
                        return Ok(Some(frame));
                    }
                    ChunkStep::NeedMore => return Ok(None),
                },
            }
        }
    }
}

/// The body of the request in flight, read from the connection as the router asks for it.
pub struct RequestBody {
    conn: Rc<ServerConn>,
    stream: u64,
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut state = self.conn.state.borrow_mut();
        let state = &mut *state;
        if state.stream != self.stream {
            return Poll::Ready(Some(Err("the request's exchange is over".into())));
        }
        loop {
            match state.decode_buffered() {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(None) if state.decoder == Decoder::Done => return Poll::Ready(None),
                Ok(None) => {}
                Err(e) => {
                    // Nothing after a malformed body can be read as a request.
                    state.eof = true;
                    state.read_buf.clear();
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
            if let Err(e) = ready!(state.poll_continue(cx)) {
                return Poll::Ready(Some(Err(e.into())));
            }
            if state.eof {
                return Poll::Ready(Some(Err("the client closed before the request body ended".into())));
            }
            match ready!(state.poll_read(cx, BODY_READ_ROOM)) {
                Ok(0) => state.eof = true,
                Ok(_) => {}
                Err(e) => {
                    state.eof = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let state = self.conn.state.borrow();
        state.stream == self.stream && state.decoder == Decoder::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.conn.state.borrow().decoder {
            Decoder::Done => SizeHint::with_exact(0),
            Decoder::Length(n) => SizeHint::with_exact(n),
            Decoder::Chunked(_) => SizeHint::default(),
        }
    }
}

/// What the response says about its request and connection.
pub struct ResponseContext<'a> {
    pub method: &'a Method,
    /// The connection may stay open after it (as far as the request is concerned).
    pub keep_alive: bool,
    /// The body has ended already, or its exact size.
    pub end_stream: bool,
    pub exact_size: Option<u64>,
}

/// Encodes a response head into `out` (RFC 9112 §6): its body's encoding, and whether the
/// connection stays open after it. Framing fields are written as the body needs them;
/// `connection: close` when the connection will close; `date` when missing.
pub fn encode_head(out: &mut BytesMut, head: &http::response::Parts, rc: &ResponseContext<'_>) -> (BodyFraming, bool) {
    let status = head.status;
    let http10 = head.version == Version::HTTP_10;
    let connect_ok = *rc.method == Method::CONNECT && status.is_success();
    let no_length = status.is_informational() || status == StatusCode::NO_CONTENT || connect_ok;
    let bodiless = no_length || *rc.method == Method::HEAD || status == StatusCode::NOT_MODIFIED;
    // Room for a small body too, which is copied in after the head: a new connection's
    // buffer is then allocated once, not grown for its first body.
    let body = rc.exact_size.filter(|n| *n < super::h1_body::COPY_LIMIT as u64).unwrap_or(0) as usize;
    let size = 64 + head.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum::<usize>();
    out.reserve(size + body);
    if !http10 && status == StatusCode::OK {
        out.put_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.put_slice(if http10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
        out.put_slice(status.as_str().as_bytes());
        out.put_u8(b' ');
        out.put_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
        out.put_slice(b"\r\n");
    }
    let mut keep_alive = rc.keep_alive;
    let mut length = None;
    let mut chunked = false;
    let mut date = false;
    let mut close = false;
    for (name, value) in &head.headers {
        if name == CONTENT_LENGTH {
            if no_length {
                continue;
            }
            length = length_of(value);
        } else if name == TRANSFER_ENCODING {
            if bodiless {
                continue;
            }
            chunked = ends_chunked(value.as_bytes());
        } else if name == CONNECTION {
            if value.as_bytes().split(|&b| b == b',').any(|t| trim_ows(t).eq_ignore_ascii_case(b"close")) {
                keep_alive = false;
                close = true;
            }
        } else if name == DATE {
            date = true;
        }
        put_field(out, name.as_str(), value.as_bytes(), false);
    }
    let encoding = if status == StatusCode::SWITCHING_PROTOCOLS || bodiless {
        BodyFraming::Dropped
    } else if chunked {
        BodyFraming::Chunked
    } else if let Some(n) = length {
        BodyFraming::Length(n)
    } else if rc.end_stream {
        out.put_slice(b"content-length: 0\r\n");
        BodyFraming::Length(0)
    } else if let Some(n) = rc.exact_size {
        put_field(out, "content-length", digits(n, 10, &mut [0; 20]), false);
        BodyFraming::Length(n)
    } else if http10 {
        keep_alive = false;
        BodyFraming::Eof
    } else {
        out.put_slice(b"transfer-encoding: chunked\r\n");
        BodyFraming::Chunked
    };
    if status != StatusCode::SWITCHING_PROTOCOLS {
        if !keep_alive && !close {
            out.put_slice(b"connection: close\r\n");
        } else if keep_alive && http10 {
            out.put_slice(b"connection: keep-alive\r\n");
        }
    }
    if !date {
        DATE_CACHE.with_borrow_mut(|cache| put_field(out, "date", cache.now(), false));
    }
    out.put_slice(b"\r\n");
    (encoding, keep_alive)
}

/// The `date` field's value, formatted once a second per worker. The wall clock is read
/// only then: until the second is over, the connection's monotonic time tells that the
/// value still holds.
struct DateCache {
    valid_until: Option<std::time::Instant>,
    value: Vec<u8>,
}

impl DateCache {
    fn now(&mut self) -> &[u8] {
        let now = crate::worker::clock::now();
        if self.valid_until.is_none_or(|until| now >= until) {
            let wall = std::time::SystemTime::now();
            let into_second = wall.duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or_default();
            let left = std::time::Duration::from_nanos(1_000_000_000 - u64::from(into_second));
            self.valid_until = Some(now + left);
            self.value = httpdate::fmt_http_date(wall).into_bytes();
        }
        &self.value
    }
}

thread_local! {
    static DATE_CACHE: RefCell<DateCache> = const { RefCell::new(DateCache { valid_until: None, value: Vec::new() }) };
}

/// A reply the codec makes itself, closing the connection (a refused head, the header
/// timeout), as the connection manager's local replies are framed.
pub fn error_reply(reply: super::LocalReply, server: Option<&http::HeaderValue>) -> Vec<u8> {
    let mut out = BytesMut::new();
    let (mut head, ()) = http::Response::new(()).into_parts();
    head.status = reply.status;
    head.headers = reply.headers;
    if !reply.body.is_empty() && reply.text && !head.headers.contains_key(http::header::CONTENT_TYPE) {
        head.headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    }
    head.headers.insert(http::header::CONTENT_LENGTH, super::headers::decimal_header(reply.body.len() as u64));
    if let Some(server) = server {
        head.headers.insert(http::header::SERVER, server.clone());
    }
    let rc = ResponseContext {
        method: &Method::GET,
        keep_alive: false,
        end_stream: true,
        exact_size: Some(reply.body.len() as u64),
    };
    encode_head(&mut out, &head, &rc);
    out.extend_from_slice(&reply.body);
    out.to_vec()
}

/// Writes a response's body after its head.
pub struct ResponseWriter<B> {
    body: B,
    enc: Encoder,
}

/// Why writing a response stopped short.
#[derive(Debug)]
pub enum WriteError {
    /// The response body failed (the upstream reset, a timeout) or did not match its framing:
    /// the client cannot be told but by the close.
    Body,
    Io(io::Error),
}

impl<B> ResponseWriter<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    /// `out` holds the encoded head.
    pub fn new(out: BytesMut, body: B, framing: BodyFraming) -> Self {
        ResponseWriter { body, enc: Encoder::new(out, framing) }
    }

    /// Writes as far as the socket and the body allow: ready once all is written.
    pub fn poll(&mut self, cx: &mut Context<'_>, conn: &ServerConn) -> Poll<Result<(), WriteError>> {
        loop {
            // Gather what the body has ready, so that the head and a small body go out in one
            // write. The connection's state is not borrowed here: reading the response body
            // may read the request body (an upstream writer pulls it).
            while self.enc.wants_more() {
                let framed = match Pin::new(&mut self.body).poll_frame(cx) {
                    Poll::Pending => break,
                    Poll::Ready(None) => self.enc.end(None),
                    Poll::Ready(Some(Err(_))) => return Poll::Ready(Err(WriteError::Body)),
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => self.enc.put_data(data),
                        Err(frame) => self.enc.end(frame.into_trailers().ok()),
                    },
                };
                framed.map_err(|_| WriteError::Body)?;
            }
            let mut state = conn.state.borrow_mut();
            let state = &mut *state;
            let Some(io) = state.io.as_mut() else {
                return Poll::Ready(Err(WriteError::Io(io::ErrorKind::NotConnected.into())));
            };
            if self.enc.is_written() {
                if !self.enc.ended {
                    return Poll::Pending;
                }
                ready!(io.poll_flush_records(cx)).map_err(WriteError::Io)?;
                // The buffer is kept for the next response unless a large body grew it.
                if self.enc.out.capacity() <= READ_ROOM {
                    state.spare = std::mem::take(&mut self.enc.out);
                }
                return Poll::Ready(Ok(()));
            }
            let n = match ready!(self.enc.poll_write_to(cx, &mut *io)) {
                Ok(0) => return Poll::Ready(Err(WriteError::Io(io::ErrorKind::WriteZero.into()))),
                Ok(n) => n,
                Err(e) => return Poll::Ready(Err(WriteError::Io(e))),
            };
            state.tx.add(n as u64);
            self.enc.advance(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_head: 60 * 1024, max_headers: 100 };

    fn parse(bytes: &[u8]) -> Result<Option<RequestHead>, HeadError> {
        parse_head(&mut BytesMut::from(bytes), &LIMITS)
    }

    #[test]
    fn a_request_head_is_parsed_with_its_framing() {
        let mut buf = BytesMut::from(&b"POST /a?b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET"[..]);
        let head = parse_head(&mut buf, &LIMITS).unwrap().unwrap();
        assert_eq!(head.parts.method, Method::POST);
        assert_eq!(head.parts.uri, "/a?b");
        assert_eq!(head.parts.headers["host"], "x");
        assert_eq!(head.framing, Framing::Length(3));
        assert!(head.keep_alive && !head.wants_upgrade);
        assert_eq!(&buf[..], b"abcGET");
        assert!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
        let head = parse(b"\r\nGET / HTTP/1.1\r\nHost: x\r\nX:\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.parts.headers["x"], "");
        let head = parse(b"GET / HTTP/1.1\r\nHost: x \t\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.parts.headers["host"], "x");
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        for bad in [
            &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \x0cchunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\nContent-Length: 1\r\n\r\n",
            b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /\r\n\r\n",
            b"GET / HTTP/1.1\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\n",
            b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX:\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a \n\r\n",
        ] {
            assert_eq!(parse(bad).unwrap_err(), HeadError::BadRequest, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn an_equal_length_repeated_is_kept_once() {
        let head =
            parse(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.framing, Framing::Length(5));
        let lengths: Vec<_> = head.parts.headers.get_all(CONTENT_LENGTH).iter().collect();
        assert_eq!(lengths, ["5"]);
        // Leading zeros are no part of the value, however many; equal values are one length.
        let head = parse(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 000000000000000000000005\r\nContent-Length: 5\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.framing, Framing::Length(5));
    }

    #[test]
    fn limits_are_431_and_414() {
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..101 {
            many.extend_from_slice(format!("x{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse(&many).unwrap_err(), HeadError::TooLarge);
        let long = [b"GET / HTTP/1.1\r\nx: ".as_slice(), &vec![b'a'; 61 * 1024]].concat();
        assert_eq!(parse(&long).unwrap_err(), HeadError::TooLarge);
        // Past the stack's slots the head is parsed again with room for the limit: exactly
        // `max_headers` fields pass, whole or arriving in pieces; a limit under the stack's
        // slots holds too.
        let fields = |n: usize| -> Vec<u8> {
            let lines: String = (0..n).map(|i| format!("x{i}: y\r\n")).collect();
            format!("GET / HTTP/1.1\r\nhost: a\r\n{lines}\r\n").into_bytes()
        };
        let head = parse(&fields(99)).unwrap().unwrap();
        assert_eq!((head.parts.headers.len(), head.parts.headers["x98"].as_bytes()), (100, &b"y"[..]));
        let whole = fields(60);
        assert!(parse(&whole[..whole.len() - 2]).unwrap().is_none());
        let mut buf = BytesMut::from(&[whole.as_slice(), b"GET"].concat()[..]);
        assert_eq!(parse_head(&mut buf, &LIMITS).unwrap().unwrap().parts.headers.len(), 61);
        assert_eq!(&buf[..], b"GET", "the head is taken, what follows kept");
        assert_eq!(parse(&fields(100)).unwrap_err(), HeadError::TooLarge);
        let few = Limits { max_head: 60 * 1024, max_headers: 3 };
        assert!(parse_head(&mut BytesMut::from(&fields(2)[..]), &few).unwrap().is_some());
        assert_eq!(parse_head(&mut BytesMut::from(&fields(3)[..]), &few).unwrap_err(), HeadError::TooLarge);
        let uri = [b"GET /".as_slice(), &vec![b'a'; 70_000], b" HTTP/1.1\r\n\r\n"].concat();
        let limits = Limits { max_head: 100 * 1024, max_headers: 100 };
        assert_eq!(parse_head(&mut BytesMut::from(&uri[..]), &limits).unwrap_err(), HeadError::UriTooLong);
    }

    #[test]
    fn connection_fields_set_keep_alive_and_upgrade() {
        let h = parse(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap().unwrap();
        assert!(h.keep_alive);
        let h = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        let h = parse(b"GET / HTTP/1.1\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        let h = parse(b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").unwrap().unwrap();
        assert!(h.wants_upgrade);
        let h = parse(b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n").unwrap().unwrap();
        assert!(!h.wants_upgrade);
        let h = parse(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n").unwrap().unwrap();
        assert!(h.wants_upgrade);
    }

    fn encode(status: u16, headers: &[(&str, &str)], rc: &ResponseContext<'_>) -> (String, BodyFraming, bool) {
        let (mut head, ()) = http::Response::new(()).into_parts();
        head.status = StatusCode::from_u16(status).unwrap();
        for (n, v) in headers {
            head.headers.append(http::HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        let mut out = BytesMut::new();
        let (encoding, keep_alive) = encode_head(&mut out, &head, rc);
        (String::from_utf8(out.to_vec()).unwrap(), encoding, keep_alive)
    }

    #[test]
    fn a_response_head_is_framed_as_its_body_needs() {
        let get = ResponseContext { method: &Method::GET, keep_alive: true, end_stream: false, exact_size: None };
        let (text, encoding, keep_alive) = encode(200, &[("content-length", "5"), ("date", "d")], &get);
        assert_eq!(text, "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ndate: d\r\n\r\n");
        assert_eq!((encoding, keep_alive), (BodyFraming::Length(5), true));
        let (text, encoding, _) = encode(404, &[("date", "d")], &get);
        assert_eq!(text, "HTTP/1.1 404 Not Found\r\ndate: d\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!(encoding, BodyFraming::Chunked);
        let sized = ResponseContext { exact_size: Some(3), ..get };
        let (text, _, _) = encode(200, &[("date", "d")], &sized);
        assert!(text.contains("content-length: 3\r\n"));
        let close = ResponseContext { keep_alive: false, ..get };
        let (text, _, keep_alive) = encode(200, &[("content-length", "0"), ("date", "d")], &close);
        assert!(text.ends_with("connection: close\r\n\r\n") && !keep_alive);
        let head = ResponseContext { method: &Method::HEAD, ..get };
        let (text, encoding, _) = encode(200, &[("content-length", "5"), ("date", "d")], &head);
        assert!(text.contains("content-length: 5") && encoding == BodyFraming::Dropped);
        let (text, encoding, _) = encode(204, &[("content-length", "5"), ("date", "d")], &get);
        assert!(!text.contains("content-length") && encoding == BodyFraming::Dropped);
        let (text, _, _) = encode(200, &[("content-length", "0")], &get);
        assert!(text.contains("\r\ndate: ") && text.ends_with(" GMT\r\n\r\n"));
    }

    #[test]
    fn an_http10_response_without_length_ends_with_the_connection() {
        let (mut head, ()) = http::Response::new(()).into_parts();
        head.version = Version::HTTP_10;
        head.headers.insert(DATE, HeaderValue::from_static("d"));
        let rc = ResponseContext { method: &Method::GET, keep_alive: true, end_stream: false, exact_size: None };
        let mut out = BytesMut::new();
        let (encoding, keep_alive) = encode_head(&mut out, &head, &rc);
        assert_eq!(&out[..], b"HTTP/1.0 200 OK\r\ndate: d\r\nconnection: close\r\n\r\n");
        assert_eq!((encoding, keep_alive), (BodyFraming::Eof, false));
    }
}
