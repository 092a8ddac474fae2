//! A read-side guard for HTTP/1.1 downstream connections: request smuggling shapes that
//! hyper's parser would accept are refused before hyper sees them.
//!
//! hyper resolves `Content-Length` together with `Transfer-Encoding` by dropping the length
//! (RFC 9112 §6.3 allows it); Envoy refuses such a request with 400, and so does legate. The
//! guard follows the message framing of each request on the connection (head, then a sized or
//! chunked body) and checks every head and every chunk line strictly: both framing headers,
//! differing lengths, a `Transfer-Encoding` whose last coding is not `chunked`, bare LF line
//! ends, malformed or overflowing chunk sizes. A refused message is replaced by bytes hyper
//! itself refuses (a request with an invalid `Content-Length`), so the client gets hyper's 400
//! and the connection closes; nothing of it reaches an upstream. After an upgrade or CONNECT
//! request the bytes are opaque and pass through unchecked.
//!
//! The guard also runs `request_headers_timeout`: it knows when a request head starts and
//! when it is complete. When the timeout passes first it answers Envoy's 408 `request header
//! timeout` itself and ends the stream hyper reads.
//!
//! Because it sees every byte both ways, the guard also tells the connection when hyper may be
//! put aside while the connection is idle ([`ParkSignals`]): between two whole requests, with
//! every response byte handed to the socket.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use std::future::Future;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What hyper is given in place of a refused message: it answers 400 and closes.
const REFUSED: &[u8] = b"GET / HTTP/1.1\r\nhost: refused\r\ncontent-length: refused\r\n\r\n";

/// Envoy's reply when a request head is not complete within `request_headers_timeout`.
const HEADER_TIMEOUT_REPLY: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 22\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nrequest header timeout";

thread_local! {
    /// Where a worker's guards read before checking: one buffer per thread.
    static SCRATCH: std::cell::RefCell<Box<[u8]>> = std::cell::RefCell::new(vec![0u8; 8192].into_boxed_slice());
}

/// Longest chunk-size line accepted (hex digits and extensions).
const MAX_CHUNK_LINE: usize = 4096;

enum Framing {
    Head,
    /// Bytes left in a `Content-Length` body.
    Sized(u64),
    Chunked(Chunk),
    /// After an upgrade or CONNECT, or after a refusal.
    Opaque,
}

enum Chunk {
    /// Reading a chunk-size line.
    Size(Vec<u8>),
    Data(u64),
    /// Expecting the CRLF after a chunk's data (how many of its 2 bytes were seen).
    DataEnd(u8),
    /// Reading trailer lines after the last chunk.
    Trailer(Vec<u8>),
}

/// Shared between the guard (inside hyper) and the connection that owns hyper, on one thread
/// (atomics only because hyper wants an upgradable socket to be `Send`).
pub struct ParkSignals {
    /// Between two whole requests and with nothing left unflushed: hyper holds no bytes of
    /// the connection, so it can be dropped and made again when the next request arrives.
    at_rest: AtomicBool,
    /// Set while hyper is being put aside: its shutdown must not close the socket.
    parking: AtomicBool,
}

impl ParkSignals {
    pub fn at_rest(&self) -> bool {
        self.at_rest.load(Relaxed)
    }

    pub fn set_parking(&self, parking: bool) {
        self.parking.store(parking, Relaxed);
    }
}

pub struct H1Guard<T> {
    inner: T,
    park: Arc<ParkSignals>,
    /// Bytes were written since the last successful flush.
    unflushed: bool,
    framing: Framing,
    /// An incomplete request head.
    head: Vec<u8>,
    /// Checked bytes waiting for hyper.
    out: BytesMut,
    max_head: usize,
    refused: bool,
    /// `request_headers_timeout`, and the counter it bumps.
    header_timeout: Option<(std::time::Duration, legate_stats::Counter)>,
    /// Armed while a request head is arriving.
    head_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The 408 still to write after the header timeout fired.
    timeout_reply: Option<&'static [u8]>,
}

impl<T> H1Guard<T> {
    pub fn new(inner: T, max_head: usize) -> Self {
        H1Guard {
            inner,
            park: Arc::new(ParkSignals { at_rest: AtomicBool::new(true), parking: AtomicBool::new(false) }),
            unflushed: false,
            framing: Framing::Head,
            head: Vec::new(),
            out: BytesMut::new(),
            max_head,
            refused: false,
            header_timeout: None,
            head_deadline: None,
            timeout_reply: None,
        }
    }

    /// The socket under the guard (once hyper is done with it).
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Arms `request_headers_timeout` at the first byte of each request head.
    pub fn with_header_timeout(mut self, timeout: Option<std::time::Duration>, counter: legate_stats::Counter) -> Self {
        self.header_timeout = timeout.map(|t| (t, counter));
        self
    }

    /// Keeps the head timer in step with the framing: armed while a head is incomplete.
    fn update_head_timer(&mut self) {
        let in_head = matches!(self.framing, Framing::Head) && !self.head.is_empty() && !self.refused;
        match (&self.header_timeout, in_head, self.head_deadline.is_some()) {
            (Some((timeout, _)), true, false) => {
                self.head_deadline = Some(Box::pin(tokio::time::sleep(*timeout)));
            }
            (_, false, true) => self.head_deadline = None,
            _ => {}
        }
    }

    /// What the connection watches to know when hyper may be put aside.
    pub fn park_signals(&self) -> Arc<ParkSignals> {
        self.park.clone()
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Gives back the memory of a request head and of checked bytes while the connection idles.
    pub fn release_buffers(&mut self) {
        self.head = Vec::new();
        self.out = BytesMut::new();
    }

    fn update_at_rest(&self) {
        let at_rest = matches!(self.framing, Framing::Head)
            && self.head.is_empty()
            && self.out.is_empty()
            && !self.refused
            && self.timeout_reply.is_none()
            && !self.unflushed;
        self.park.at_rest.store(at_rest, Relaxed);
    }

    fn refuse(&mut self) {
        self.refused = true;
        self.head.clear();
        self.out.extend_from_slice(REFUSED);
        self.framing = Framing::Opaque;
    }

    /// Runs `input` through the framing, appending what may go to hyper to `out`.
    fn feed(&mut self, input: &[u8]) {
        let mut input = input;
        // Bytes after a head, fed again under the head's framing.
        let mut after_head: Vec<u8>;
        while !input.is_empty() && !self.refused {
            match &mut self.framing {
                Framing::Opaque => {
                    self.out.extend_from_slice(input);
                    return;
                }
                Framing::Head if self.head.is_empty() => {
                    // The common case: a whole head in one read, checked where it lies.
                    let Some(end) = find(input, b"\r\n\r\n").map(|i| i + 4) else {
                        self.head.extend_from_slice(input);
                        input = &[];
                        if request_line_is_not_http1(&self.head) || self.head.len() > self.max_head {
                            let head = std::mem::take(&mut self.head);
                            self.out.extend_from_slice(&head);
                            self.framing = Framing::Opaque;
                        }
                        continue;
                    };
                    let (head, rest) = input.split_at(end);
                    match check_head(head) {
                        Err(()) => {
                            self.refuse();
                            return;
                        }
                        Ok(next) => {
                            self.out.extend_from_slice(head);
                            self.framing = next;
                        }
                    }
                    input = rest;
                }
                Framing::Head => {
                    // Find the end of the head, counting what is already buffered.
                    let start = self.head.len().saturating_sub(3);
                    self.head.extend_from_slice(input);
                    input = &[];
                    let Some(end) = find(&self.head[start..], b"\r\n\r\n").map(|i| start + i + 4) else {
                        if request_line_is_not_http1(&self.head) || self.head.len() > self.max_head {
                            // hyper answers 431 for an oversized head: let it.
                            let head = std::mem::take(&mut self.head);
                            self.out.extend_from_slice(&head);
                            self.framing = Framing::Opaque;
                        }
                        continue;
                    };
                    let rest = self.head.split_off(end);
                    let head = std::mem::take(&mut self.head);
                    match check_head(&head) {
                        Err(()) => {
                            self.refuse();
                            return;
                        }
                        Ok(next) => {
                            self.out.extend_from_slice(&head);
                            self.framing = next;
                        }
                    }
                    after_head = rest;
                    input = &after_head;
                }
                Framing::Sized(left) => {
                    let n = (*left).min(input.len() as u64) as usize;
                    self.out.extend_from_slice(&input[..n]);
                    *left -= n as u64;
                    input = &input[n..];
                    if *left == 0 {
                        self.framing = Framing::Head;
                    }
                }
                Framing::Chunked(chunk) => {
                    let Some((&byte, rest)) = input.split_first() else { return };
                    match chunk {
                        Chunk::Size(line) => {
                            line.push(byte);
                            self.out.extend_from_slice(&[byte]);
                            input = rest;
                            if byte == b'\n' {
                                match chunk_size(line) {
                                    Some(0) => *chunk = Chunk::Trailer(Vec::new()),
                                    Some(n) => *chunk = Chunk::Data(n),
                                    None => {
                                        self.refuse();
                                        return;
                                    }
                                }
                            } else if line.len() > MAX_CHUNK_LINE {
                                self.refuse();
                                return;
                            }
                        }
                        Chunk::Data(left) => {
                            let n = (*left).min(input.len() as u64) as usize;
                            self.out.extend_from_slice(&input[..n]);
                            *left -= n as u64;
                            input = &input[n..];
                            if *left == 0 {
                                *chunk = Chunk::DataEnd(0);
                            }
                        }
                        Chunk::DataEnd(seen) => {
                            let want = if *seen == 0 { b'\r' } else { b'\n' };
                            if byte != want {
                                self.refuse();
                                return;
                            }
                            self.out.extend_from_slice(&[byte]);
                            input = rest;
                            *seen += 1;
                            if *seen == 2 {
                                *chunk = Chunk::Size(Vec::new());
                            }
                        }
                        Chunk::Trailer(line) => {
                            line.push(byte);
                            self.out.extend_from_slice(&[byte]);
                            input = rest;
                            if byte == b'\n' {
                                if line.len() < 2 || line[line.len() - 2] != b'\r' {
                                    self.refuse();
                                    return;
                                }
                                if line.len() == 2 {
                                    self.framing = Framing::Head;
                                } else {
                                    line.clear();
                                }
                            } else if line.len() > MAX_CHUNK_LINE {
                                self.refuse();
                                return;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Whether the head's first line is complete and is not an HTTP/1.x request line (HTTP/0.9,
/// garbage): hyper refuses it at once, so it need not wait for the end of a head.
fn request_line_is_not_http1(head: &[u8]) -> bool {
    let Some(end) = head.iter().position(|&b| b == b'\n') else { return false };
    let line = head[..end].strip_suffix(b"\r").unwrap_or(&head[..end]);
    !line.rsplit(|&b| b == b' ').next().is_some_and(|version| version.starts_with(b"HTTP/"))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A chunk-size line (`1a;ext=v\r\n`): the size, or `None` when malformed or too large.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r\n")?;
    let digits = match line.iter().position(|&b| b == b';') {
        Some(i) => &line[..i],
        None => line,
    };
    if digits.is_empty() || digits.len() > 16 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// Checks a complete request head; `Ok` with the framing of its body.
fn check_head(head: &[u8]) -> Result<Framing, ()> {
    // Every line must end with CRLF: a bare LF is refused.
    for (i, &b) in head.iter().enumerate() {
        if b == b'\n' && (i == 0 || head[i - 1] != b'\r') {
            return Err(());
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        // hyper refuses what httparse cannot parse (or reports 431 for too many headers).
        _ => return Ok(Framing::Opaque),
    }
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding: Vec<String> = Vec::new();
    let mut upgrade = request.method == Some("CONNECT");
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value).map_err(|_| ())?.trim();
            for part in value.split(',') {
                let part = part.trim();
                if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) || part.len() > 19 {
                    return Err(());
                }
                let n: u64 = part.parse().map_err(|_| ())?;
                if content_length.is_some_and(|c| c != n) {
                    return Err(());
                }
                content_length = Some(n);
            }
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            let value = std::str::from_utf8(header.value).map_err(|_| ())?;
            transfer_encoding.extend(value.split(',').map(|t| t.trim().to_ascii_lowercase()));
        } else if header.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    if !transfer_encoding.is_empty() {
        if content_length.is_some() || request.version == Some(0) {
            return Err(());
        }
        if transfer_encoding.last().map(String::as_str) != Some("chunked")
            || transfer_encoding.iter().filter(|t| *t == "chunked").count() != 1
        {
            return Err(());
        }
        return Ok(if upgrade { Framing::Opaque } else { Framing::Chunked(Chunk::Size(Vec::new())) });
    }
    if upgrade {
        return Ok(Framing::Opaque);
    }
    Ok(match content_length {
        Some(n) if n > 0 => Framing::Sized(n),
        _ => Framing::Head,
    })
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for H1Guard<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let polled = self.as_mut().poll_read_checked(cx, buf);
        self.update_at_rest();
        polled
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> H1Guard<T> {
    fn poll_read_checked(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(reply) = this.timeout_reply {
            // Best effort: a peer that does not read gets the close alone.
            match Pin::new(&mut this.inner).poll_write(cx, reply) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(n)) if n < reply.len() => {
                    this.timeout_reply = reply.get(n..);
                    return Poll::Pending;
                }
                Poll::Ready(_) => {
                    this.timeout_reply = None;
                    return Poll::Ready(Ok(()));
                }
            }
        }
        if let Some(deadline) = &mut this.head_deadline {
            if deadline.as_mut().poll(cx).is_ready() {
                this.head_deadline = None;
                this.head.clear();
                this.refused = true;
                this.framing = Framing::Opaque;
                if let Some((_, counter)) = &this.header_timeout {
                    counter.inc();
                }
                this.timeout_reply = Some(HEADER_TIMEOUT_REPLY);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..n]);
                this.out.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.refused {
                // Nothing after a refused message reaches hyper.
                return Poll::Ready(Ok(()));
            }
            if matches!(this.framing, Framing::Opaque) {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            // Read into the worker's scratch buffer (zeroed once per thread, not per read),
            // check, and queue what may pass in `out`.
            let polled = SCRATCH.with_borrow_mut(|scratch| {
                let mut read = ReadBuf::new(&mut scratch[..]);
                match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => {
                        let filled = read.filled();
                        if !filled.is_empty() {
                            this.feed(filled);
                        }
                        Poll::Ready(Ok(filled.is_empty()))
                    }
                }
            });
            match polled {
                Poll::Pending => {
                    // Register the head timer's waker too (it may have been armed just now).
                    if let Some(deadline) = &mut this.head_deadline {
                        if deadline.as_mut().poll(cx).is_ready() {
                            cx.waker().wake_by_ref();
                        }
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(true)) => {
                    // End of stream: hand over an incomplete head so hyper sees it.
                    let head = std::mem::take(&mut this.head);
                    if head.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                    this.out.extend_from_slice(&head);
                    this.framing = Framing::Opaque;
                }
                Poll::Ready(Ok(false)) => this.update_head_timer(),
            }
        }
    }
}

// hyper calls `poll_flush` only once its own write buffer is empty, so a successful flush
// with no write after it means every response byte reached the socket.
impl<T: AsyncWrite + Unpin> AsyncWrite for H1Guard<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.unflushed = true;
        self.park.at_rest.store(false, Relaxed);
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.unflushed = true;
        self.park.at_rest.store(false, Relaxed);
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.inner).poll_flush(cx);
        if let Poll::Ready(Ok(())) = flushed {
            self.unflushed = false;
            self.update_at_rest();
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.park.parking.load(Relaxed) {
            // hyper is being put aside, not the connection closed.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut guard = H1Guard::new((), 64 * 1024);
        for piece in input {
            guard.feed(piece);
        }
        (guard.out.to_vec(), guard.refused)
    }

    #[test]
    fn passes_ordinary_requests_split_anywhere() {
        let request = b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\nGET /c HTTP/1.1\r\nHost: a\r\n\r\n";
        for split in 1..request.len() {
            let (out, refused) = run(&[&request[..split], &request[split..]]);
            assert!(!refused, "split at {split}");
            assert_eq!(out, request.to_vec(), "split at {split}");
        }
    }

    #[test]
    fn refuses_smuggling_shapes() {
        for bad in [
            &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX"[..],
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\nContent-Length: 1\r\n\r\na",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n",
            b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ] {
            let (out, refused) = run(&[bad]);
            assert!(refused, "{:?}", String::from_utf8_lossy(bad));
            assert!(out.ends_with(REFUSED));
        }
    }

    #[test]
    fn an_http09_request_line_goes_to_hyper_at_once() {
        let (out, refused) = run(&[b"GET /\r\n"]);
        assert!(!refused);
        assert_eq!(out, b"GET /\r\n".to_vec());
    }

    #[test]
    fn upgrade_turns_the_stream_opaque() {
        let request =
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello\n\n";
        let (out, refused) = run(&[request]);
        assert!(!refused);
        assert_eq!(out, request.to_vec());
    }
}
