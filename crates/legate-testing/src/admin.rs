//! A raw HTTP/1.1 client for the admin endpoint: one request per connection with
//! `Connection: close`, as `curl` would send it. No hyper, so that what is tested is the bytes
//! legate writes, not what a client library tolerates.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use crate::http::head;
use crate::net::connect_stream;

/// A parsed response.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
    /// Body, decoded (chunked) and as text.
    pub body: String,
}

impl HttpResponse {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        head::header(&self.headers, name)
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        head::header_all(&self.headers, name)
    }
}

/// Sends `method path` to `addr` and reads the whole response (bounded by [`crate::IO_TIMEOUT`]).
/// A body is framed by `content-length`, `transfer-encoding: chunked`, or the close.
pub fn http_request(addr: SocketAddr, method: &str, path: &str) -> io::Result<HttpResponse> {
    let mut stream = connect_stream(addr)?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: legate-testing\r\nAccept: */*\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Ok(_) => {}
        // A server that sends the response and then closes with unread bytes may reset;
        // whatever arrived before the reset is still the response.
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset && !raw.is_empty() => {}
        Err(e) => return Err(e),
    }
    parse_response(&raw).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{method} {path}: {e}; raw response: {:?}", String::from_utf8_lossy(&raw)),
        )
    })
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|e| e.to_string())?;
    let (status, headers) = head::parse_response_head(head)?;
    let rest = &raw[head_end + 4..];
    let body = if head::header(&headers, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = head::header(&headers, "content-length") {
        let len: usize = len.parse().map_err(|_| format!("bad content-length {len:?}"))?;
        if rest.len() < len {
            return Err(format!("body has {} bytes, content-length says {len}", rest.len()));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    let body = String::from_utf8(body).map_err(|e| format!("body is not UTF-8: {e}"))?;
    Ok(HttpResponse { status, headers, body })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").ok_or("truncated chunk size")?;
        let size_str = std::str::from_utf8(&rest[..line_end]).map_err(|e| e.to_string())?;
        let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_str:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_and_chunked() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nLIVE\n").unwrap();
        assert_eq!((r.status, r.body.as_str(), r.header("x-a")), (200, "LIVE\n", Some("b")));
        let r = parse_response(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
            .unwrap();
        assert_eq!((r.status, r.body.as_str()), (404, "abc"));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc").is_err());
    }
}
