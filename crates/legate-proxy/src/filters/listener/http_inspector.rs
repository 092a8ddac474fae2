//! `envoy.filters.listener.http_inspector`: tells HTTP/1.0, HTTP/1.1 and HTTP/2 with prior
//! knowledge (h2c) from the first bytes of a cleartext connection and sets the connection's
//! application protocol (`http/1.0`, `http/1.1`, `h2c`) for `filter_chain_match`'s
//! `application_protocols`. Nothing is consumed: the bytes are replayed to the filters.
//! A connection `tls_inspector` found to be TLS is left alone, as in Envoy.

use legate_stats::Scope;

legate_stats::stats! {
    /// `http_inspector.*`, Envoy's ALL_HTTP_INSPECTOR_STATS.
    pub struct HttpInspectorStats {
        counter read_error,
        counter http10_found,
        counter http11_found,
        counter http2_found,
        counter http_not_found,
    }
}

/// Envoy stops looking for the request line after this many bytes.
pub const MAX_INSPECT_SIZE: usize = 8192;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the bytes so far say.
#[derive(Debug, PartialEq, Eq)]
pub enum Detect {
    /// The application protocol, as `filter_chain_match` names it.
    Http(&'static str),
    NotHttp,
    NeedMore,
}

pub fn stats(root: &Scope) -> HttpInspectorStats {
    HttpInspectorStats::new(&root.scope("http_inspector"))
}

/// Looks at the start of a connection: the HTTP/2 preface, or an HTTP/1.x request line
/// (`METHOD SP target SP HTTP/1.x CRLF`, RFC 9112 §3).
pub fn detect(data: &[u8]) -> Detect {
    let n = data.len().min(H2_PREFACE.len());
    if data.get(..n) == H2_PREFACE.get(..n) && !data.is_empty() {
        return if n == H2_PREFACE.len() { Detect::Http("h2c") } else { Detect::NeedMore };
    }
    let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") else {
        return if data.len() >= MAX_INSPECT_SIZE { Detect::NotHttp } else { Detect::NeedMore };
    };
    let Some(line) = data.get(..line_end) else { return Detect::NotHttp };
    let mut parts = line.split(|b| *b == b' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Detect::NotHttp;
    };
    // A method is a token (RFC 9110 §9.1): visible ASCII without separators.
    let token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    if method.is_empty() || !method.iter().all(token) || target.is_empty() {
        return Detect::NotHttp;
    }
    match version {
        b"HTTP/1.1" => Detect::Http("http/1.1"),
        b"HTTP/1.0" => Detect::Http("http/1.0"),
        _ => Detect::NotHttp,
    }
}

impl HttpInspectorStats {
    /// Counts one outcome.
    pub fn record(&self, protocol: Option<&str>) {
        match protocol {
            Some("h2c") => self.http2_found.inc(),
            Some("http/1.1") => self.http11_found.inc(),
            Some("http/1.0") => self.http10_found.inc(),
            _ => self.http_not_found.inc(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_http_versions_apart() {
        assert_eq!(detect(b"GET / HTTP/1.1\r\nhost: x\r\n"), Detect::Http("http/1.1"));
        assert_eq!(detect(b"POST /a?b HTTP/1.0\r\n"), Detect::Http("http/1.0"));
        assert_eq!(detect(H2_PREFACE), Detect::Http("h2c"));
        assert_eq!(detect(b"PRI * HTTP/2"), Detect::NeedMore);
        assert_eq!(detect(b"GET / HTT"), Detect::NeedMore);
        assert_eq!(detect(b"\x16\x03\x01\x02\x00\x01\r\n"), Detect::NotHttp);
        assert_eq!(detect(b"GET / HTTP/2.0\r\n"), Detect::NotHttp);
        assert_eq!(detect(b"G(T / HTTP/1.1\r\n"), Detect::NotHttp);
        assert_eq!(detect(&[b'a'; MAX_INSPECT_SIZE]), Detect::NotHttp);
    }
}
