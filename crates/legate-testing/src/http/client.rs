//! [`HttpClient`]: a blocking HTTP/1.1 client over one `TcpStream`, kept alive across
//! requests. Hand-written (no hyper) so that a test controls every byte: split or stalled
//! requests, pipelining, and malformed input through [`HttpClient::raw`]. Every read and
//! write is bounded by [`IO_TIMEOUT`].

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::admin::HttpResponse;
use crate::http::head;
use crate::net::{connect, IO_TIMEOUT};

/// A client connection.
#[derive(Debug)]
pub struct HttpClient {
    addr: SocketAddr,
    stream: TcpStream,
    /// Bytes read but not yet consumed by a response.
    buf: Vec<u8>,
    /// Methods of requests written and not yet answered (a `HEAD` response has no body).
    in_flight: VecDeque<String>,
}

/// What came back from [`HttpClient::raw_reply`].
#[derive(Clone, Debug)]
pub struct RawReply {
    /// Every byte received.
    pub bytes: Vec<u8>,
    /// Whether the peer closed (FIN or RST) while we waited.
    pub closed: bool,
}

impl RawReply {
    /// The bytes as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The status codes of every response in the bytes, in order (status lines found at the
    /// start of the reply or after a blank line).
    pub fn statuses(&self) -> Vec<u16> {
        let text = self.text();
        let mut out = Vec::new();
        let mut rest = text.as_str();
        let mut at_start = true;
        while !rest.is_empty() {
            if at_start {
                if let Some(code) =
                    rest.strip_prefix("HTTP/1.").and_then(|r| r.get(2..5)).and_then(|c| c.parse::<u16>().ok())
                {
                    out.push(code);
                }
            }
            match rest.find("\r\n\r\n") {
                Some(i) => {
                    rest = &rest[i + 4..];
                    // Skip a body: the next status line starts where "HTTP/1." is found.
                    match rest.find("HTTP/1.") {
                        Some(j) => {
                            rest = &rest[j..];
                            at_start = true;
                        }
                        None => break,
                    }
                }
                None => break,
            }
        }
        out
    }
}

impl HttpClient {
    /// Connects to `addr`; panics on failure.
    pub fn connect(addr: SocketAddr) -> Self {
        HttpClient { addr, stream: connect(addr), buf: Vec::new(), in_flight: VecDeque::new() }
    }

    /// Where it is connected.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The client's own address (what the proxy sees as the downstream remote address).
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }

    /// The socket, for tests that write or shut down by hand.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// `GET path` with default headers; panics on an I/O error.
    pub fn get(&mut self, path: &str) -> HttpResponse {
        self.send("GET", path, &[], b"")
    }

    /// Sends a request and reads its response; panics on an I/O or parse error.
    ///
    /// `host: <addr>` and `user-agent: legate-testing` are added unless given, and
    /// `content-length` when there is a body (or the method is POST/PUT/PATCH) unless a
    /// `content-length` or `transfer-encoding` is given.
    pub fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
        self.try_send(method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path} via {}: {e}", self.addr))
    }

    /// [`Self::send`] returning the error (a closed connection, a timeout).
    pub fn try_send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<HttpResponse> {
        self.write_request(method, path, headers, body)?;
        self.read_response()
    }

    /// Sends a request and passes the response body to `on_body` as it arrives (a large body
    /// is never held whole); the returned response has an empty body.
    pub fn send_streaming(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        on_body: impl FnMut(&[u8]),
    ) -> io::Result<HttpResponse> {
        self.write_request(method, path, headers, body)?;
        self.read_response_streaming(on_body)
    }

    /// Writes a request (head and body) without reading the response.
    pub fn write_request(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> io::Result<()> {
        let mut head = self.request_head(method, path, headers, body.len());
        head.extend_from_slice(body);
        self.stream.write_all(&head)?;
        self.in_flight.push_back(method.to_string());
        Ok(())
    }

    /// The request line and headers for `method path` with the default headers of
    /// [`Self::send`]; `body_len` sets the `content-length` added.
    pub fn request_head(&self, method: &str, path: &str, headers: &[(&str, &str)], body_len: usize) -> Vec<u8> {
        let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        let mut head = format!("{method} {path} HTTP/1.1\r\n");
        if !has("host") {
            head.push_str(&format!("host: {}\r\n", self.addr));
        }
        if !has("user-agent") {
            head.push_str("user-agent: legate-testing\r\n");
        }
        let wants_length = body_len > 0 || matches!(method, "POST" | "PUT" | "PATCH");
        if wants_length && !has("content-length") && !has("transfer-encoding") {
            head.push_str(&format!("content-length: {body_len}\r\n"));
        }
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        head.into_bytes()
    }

    /// Writes a request head announcing `content-length: body_len` and nothing else: the
    /// body follows with [`Self::write_raw`] (or never, to stall).
    pub fn write_head(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body_len: usize,
    ) -> io::Result<()> {
        let head = self.request_head(method, path, headers, body_len);
        self.stream.write_all(&head)?;
        self.in_flight.push_back(method.to_string());
        Ok(())
    }

    /// Writes bytes as they are.
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one response (skipping `100 Continue`), framed by `content-length`,
    /// `transfer-encoding: chunked` or the close.
    pub fn read_response(&mut self) -> io::Result<HttpResponse> {
        let mut body = Vec::new();
        let mut response = self.read_response_streaming(|chunk| body.extend_from_slice(chunk))?;
        response.body = String::from_utf8_lossy(&body).into_owned();
        Ok(response)
    }

    /// Reads one response, passing its body to `on_body` as it arrives.
    pub fn read_response_streaming(&mut self, mut on_body: impl FnMut(&[u8])) -> io::Result<HttpResponse> {
        let method = self.in_flight.pop_front().unwrap_or_else(|| "GET".into());
        let (status, headers) = loop {
            let (status, headers) = self.read_head()?;
            if (100..200).contains(&status) && status != 101 {
                continue;
            }
            break (status, headers);
        };
        let response = HttpResponse { status, headers, body: String::new() };
        if method == "HEAD" || status == 204 || status == 304 || status == 101 {
            return Ok(response);
        }
        let chunked = response
            .header_all("transfer-encoding")
            .iter()
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("chunked")));
        if chunked {
            self.read_chunked(&mut on_body)?;
        } else if let Some(len) = response.header("content-length") {
            let len: u64 = len.parse().map_err(|_| invalid(format!("bad content-length {len:?}")))?;
            self.read_exact_body(len, &mut on_body)?;
        } else {
            // Close-delimited.
            loop {
                if !self.buf.is_empty() {
                    on_body(&self.buf);
                    self.buf.clear();
                }
                if self.fill()? == 0 {
                    break;
                }
            }
        }
        Ok(response)
    }

    /// Sends `bytes` and returns whatever comes back until the connection closes or goes
    /// quiet (see [`Self::raw_reply`]).
    pub fn raw(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.raw_reply(bytes).bytes
    }

    /// Sends `bytes` (a write error — the peer closed early — is not a failure) and reads
    /// until the peer closes, or the reply has been quiet for 500 ms after its last byte, or
    /// nothing at all arrived for 3 s.
    pub fn raw_reply(&mut self, bytes: &[u8]) -> RawReply {
        let _ = self.stream.write_all(bytes);
        self.read_raw(Duration::from_millis(500), Duration::from_secs(3))
    }

    /// Reads what arrives until close, `quiet` after the last byte, or `nothing` without any.
    pub fn read_raw(&mut self, quiet: Duration, nothing: Duration) -> RawReply {
        let mut bytes = std::mem::take(&mut self.buf);
        let started = Instant::now();
        let mut last = (!bytes.is_empty()).then(Instant::now);
        let _ = self.stream.set_read_timeout(Some(Duration::from_millis(50)));
        let mut chunk = [0u8; 16 * 1024];
        let closed = loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => break true,
                Ok(n) => {
                    bytes.extend_from_slice(&chunk[..n]);
                    last = Some(Instant::now());
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted) => {
                    break true
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break true,
            }
            let waited_enough = match last {
                Some(at) => at.elapsed() >= quiet,
                None => started.elapsed() >= nothing,
            };
            if waited_enough {
                break false;
            }
        };
        let _ = self.stream.set_read_timeout(Some(IO_TIMEOUT));
        RawReply { bytes, closed }
    }

    /// Whether the peer closes the connection within `within` (any bytes arriving meanwhile
    /// are kept for the next read).
    pub fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut chunk = [0u8; 16 * 1024];
        let closed = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            let _ = self.stream.set_read_timeout(Some(left));
            match self.stream.read(&mut chunk) {
                Ok(0) => break true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => break false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break true,
            }
        };
        let _ = self.stream.set_read_timeout(Some(IO_TIMEOUT));
        closed
    }

    /// Reads more bytes into the buffer; 0 at the end of the stream.
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn read_head(&mut self) -> io::Result<(u16, Vec<(String, String)>)> {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed before a complete response head (received {:?})",
                        String::from_utf8_lossy(&self.buf)
                    ),
                ));
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        head::parse_response_head(&head).map_err(invalid)
    }

    fn read_exact_body(&mut self, len: u64, on_body: &mut impl FnMut(&[u8])) -> io::Result<()> {
        let mut left = len;
        while left > 0 {
            if self.buf.is_empty() && self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("connection closed with {left} of {len} body bytes missing"),
                ));
            }
            let n = (self.buf.len() as u64).min(left) as usize;
            on_body(&self.buf[..n]);
            self.buf.drain(..n);
            left -= n as u64;
        }
        Ok(())
    }

    fn read_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed inside a chunked body"));
            }
        }
    }

    fn read_chunked(&mut self, on_body: &mut impl FnMut(&[u8])) -> io::Result<()> {
        loop {
            let line = self.read_line()?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size, 16).map_err(|_| invalid(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.read_line()?.is_empty() {}
                return Ok(());
            }
            self.read_exact_body(size, on_body)?;
            if !self.read_line()?.is_empty() {
                return Err(invalid("chunk data not followed by CRLF".into()));
            }
        }
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_of_pipelined_replies() {
        let reply = RawReply {
            bytes: b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 400 Bad Request\r\n\r\n".to_vec(),
            closed: true,
        };
        assert_eq!(reply.statuses(), vec![200, 400]);
    }
}
