//! `envoy.filters.listener.tls_inspector`: reads the TLS ClientHello to learn the server name
//! (SNI) and the offered ALPN protocols, and marks the connection's transport protocol `tls`,
//! so `filter_chain_match` can use `server_names`, `application_protocols` and
//! `transport_protocol`. Nothing is decrypted; the bytes read are replayed, untouched, to the
//! connection's filters (TLS passthrough to a `tcp_proxy` works unchanged).
//!
//! The ClientHello is parsed here by hand (RFC 8446 §4.1.2, RFC 6066 §3, RFC 7301 §3.1), every
//! read bounds-checked: the bytes come from an untrusted peer.

use bytes::BytesMut;
use legate_stats::Scope;
use tokio::net::TcpStream;

legate_stats::stats! {
    /// `tls_inspector.*`, Envoy's ALL_TLS_INSPECTOR_STATS.
    pub struct TlsInspectorStats {
        counter client_hello_too_large,
        counter tls_found,
        counter tls_not_found,
        counter alpn_found,
        counter alpn_not_found,
        counter sni_found,
        counter sni_not_found,
        histogram bytes_processed,
    }
}

/// Envoy refuses ClientHellos larger than this.
pub const MAX_CLIENT_HELLO: usize = 64 * 1024;

/// What the inspector learned.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    pub server_name: String,
    pub application_protocols: Vec<String>,
}

/// The outcome of parsing the bytes read so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// A complete ClientHello.
    Tls(ClientHello),
    /// Not TLS (or not a ClientHello): the transport protocol stays `raw_buffer`.
    NotTls,
    /// A ClientHello has started; more bytes are needed.
    NeedMore,
}

/// Reads from `stream` into `data` (which may already hold bytes earlier listener filters
/// read) until the ClientHello is complete or clearly absent. `None`: the peer closed or
/// reset, or the ClientHello was too large; drop the socket.
///
/// # Cancel safety
/// Cancel safe: what was read stays in `data` (`listener_filters_timeout` relies on it).
pub async fn inspect(
    stream: &TcpStream,
    data: &mut BytesMut,
    stats: &TlsInspectorStats,
) -> Option<Option<ClientHello>> {
    let outcome = loop {
        match parse(data) {
            Parse::Tls(hello) => {
                stats.tls_found.inc();
                if hello.server_name.is_empty() {
                    stats.sni_not_found.inc();
                } else {
                    stats.sni_found.inc();
                }
                if hello.application_protocols.is_empty() {
                    stats.alpn_not_found.inc();
                } else {
                    stats.alpn_found.inc();
                }
                break Some(Some(hello));
            }
            Parse::NotTls => {
                stats.tls_not_found.inc();
                break Some(None);
            }
            Parse::NeedMore if data.len() >= MAX_CLIENT_HELLO => {
                stats.client_hello_too_large.inc();
                break None;
            }
            Parse::NeedMore => {}
        }
        match super::read_more(stream, data, MAX_CLIENT_HELLO).await {
            Ok(0) | Err(_) => break None,
            Ok(_) => {}
        }
    };
    stats.bytes_processed.record(data.len() as u64);
    outcome
}

/// Builds the inspector's stats under `tls_inspector.` of the root scope.
pub fn stats(root: &Scope) -> TlsInspectorStats {
    TlsInspectorStats::new(&root.scope("tls_inspector"))
}

/// Parses a ClientHello from the start of a connection, possibly split over several records.
pub fn parse(data: &[u8]) -> Parse {
    // Reassemble the handshake message from consecutive handshake records.
    let mut handshake = Vec::new();
    let mut rest = data;
    loop {
        let Some(header) = rest.get(..5) else {
            return if rest.is_empty() || looks_like_handshake_start(rest) { Parse::NeedMore } else { Parse::NotTls };
        };
        // ContentType handshake (22), legacy_record_version 3.x.
        if header[0] != 22 || header[1] != 3 {
            return Parse::NotTls;
        }
        let length = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if length == 0 || length > 16384 + 256 {
            return Parse::NotTls;
        }
        let Some(fragment) = rest.get(5..5 + length) else {
            return Parse::NeedMore;
        };
        handshake.extend_from_slice(fragment);
        rest = &rest[5 + length..];
        match handshake_message(&handshake) {
            Some(Ok(message)) => return parse_client_hello(message).map_or(Parse::NotTls, Parse::Tls),
            Some(Err(())) => return Parse::NotTls,
            None => continue,
        }
    }
}

/// A prefix of a record header that could still be a handshake record.
fn looks_like_handshake_start(prefix: &[u8]) -> bool {
    prefix.first() == Some(&22) && prefix.get(1).is_none_or(|v| *v == 3)
}

/// The ClientHello body once complete: `None` needs more, `Err` is not a ClientHello.
fn handshake_message(handshake: &[u8]) -> Option<Result<&[u8], ()>> {
    let header = handshake.get(..4)?;
    if header[0] != 1 {
        return Some(Err(()));
    }
    let length = (usize::from(header[1]) << 16) | (usize::from(header[2]) << 8) | usize::from(header[3]);
    if length > MAX_CLIENT_HELLO {
        return Some(Err(()));
    }
    handshake.get(4..4 + length).map(Ok)
}

/// A bounds-checked cursor over untrusted bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn vec8(&mut self) -> Option<Reader<'a>> {
        let n = usize::from(self.u8()?);
        self.take(n).map(Reader)
    }
    fn vec16(&mut self) -> Option<Reader<'a>> {
        let n = usize::from(self.u16()?);
        self.take(n).map(Reader)
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn parse_client_hello(body: &[u8]) -> Option<ClientHello> {
    let mut r = Reader(body);
    let _legacy_version = r.u16()?;
    let _random = r.take(32)?;
    let _session_id = r.vec8()?;
    let _cipher_suites = r.vec16()?;
    let _compression = r.vec8()?;
    let mut hello = ClientHello::default();
    if r.is_empty() {
        return Some(hello); // No extensions (old clients).
    }
    let mut extensions = r.vec16()?;
    while !extensions.is_empty() {
        let kind = extensions.u16()?;
        let mut data = extensions.vec16()?;
        match kind {
            // server_name: a list of (type, name); type 0 is host_name.
            0 => {
                let mut list = data.vec16()?;
                while !list.is_empty() {
                    let name_type = list.u8()?;
                    let name = list.vec16()?;
                    if name_type == 0 && hello.server_name.is_empty() {
                        hello.server_name = String::from_utf8_lossy(name.0).to_ascii_lowercase();
                    }
                }
            }
            // application_layer_protocol_negotiation: a list of 8-bit-length names.
            16 => {
                let mut list = data.vec16()?;
                while !list.is_empty() {
                    let proto = list.vec8()?;
                    hello.application_protocols.push(String::from_utf8_lossy(proto.0).into_owned());
                }
            }
            _ => {}
        }
    }
    Some(hello)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal, well-formed ClientHello record with optional SNI and ALPN.
    pub fn client_hello(sni: Option<&str>, alpn: &[&str]) -> Vec<u8> {
        let mut ext = Vec::new();
        if let Some(name) = sni {
            let mut entry = vec![0u8];
            entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
            entry.extend_from_slice(name.as_bytes());
            let mut list = (entry.len() as u16).to_be_bytes().to_vec();
            list.extend(entry);
            ext.extend_from_slice(&0u16.to_be_bytes());
            ext.extend_from_slice(&(list.len() as u16).to_be_bytes());
            ext.extend(list);
        }
        if !alpn.is_empty() {
            let mut names = Vec::new();
            for p in alpn {
                names.push(p.len() as u8);
                names.extend_from_slice(p.as_bytes());
            }
            let mut list = (names.len() as u16).to_be_bytes().to_vec();
            list.extend(names);
            ext.extend_from_slice(&16u16.to_be_bytes());
            ext.extend_from_slice(&(list.len() as u16).to_be_bytes());
            ext.extend(list);
        }
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7u8; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
        body.extend_from_slice(&[1, 0]); // null compression
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend(ext);
        let mut handshake = vec![1];
        handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        handshake.extend(body);
        let mut record = vec![22, 3, 1];
        record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
        record.extend(handshake);
        record
    }

    #[test]
    fn finds_sni_and_alpn() {
        let hello = client_hello(Some("API.example.com"), &["h2", "http/1.1"]);
        assert_eq!(
            parse(&hello),
            Parse::Tls(ClientHello {
                server_name: "api.example.com".into(),
                application_protocols: vec!["h2".into(), "http/1.1".into()]
            })
        );
    }

    #[test]
    fn needs_more_until_complete_and_every_prefix_is_safe() {
        let hello = client_hello(Some("a.b"), &["h2"]);
        for n in 0..hello.len() {
            assert_eq!(parse(&hello[..n]), Parse::NeedMore, "prefix of {n} bytes");
        }
    }

    #[test]
    fn plain_text_is_not_tls() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Parse::NotTls);
        assert_eq!(parse(b"\x16\x01"), Parse::NotTls);
    }

    #[test]
    fn split_across_records() {
        let hello = client_hello(Some("split.example"), &[]);
        let handshake = &hello[5..];
        let (a, b) = handshake.split_at(10);
        let mut two = vec![22, 3, 1];
        two.extend_from_slice(&(a.len() as u16).to_be_bytes());
        two.extend_from_slice(a);
        two.extend_from_slice(&[22, 3, 1]);
        two.extend_from_slice(&(b.len() as u16).to_be_bytes());
        two.extend_from_slice(b);
        assert_eq!(
            parse(&two),
            Parse::Tls(ClientHello { server_name: "split.example".into(), application_protocols: vec![] })
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = fastrand::Rng::with_seed(7);
        let hello = client_hello(Some("x.y"), &["h2"]);
        for _ in 0..5000 {
            let mut bytes = hello.clone();
            for _ in 0..rng.usize(1..8) {
                let i = rng.usize(0..bytes.len());
                bytes[i] = rng.u8(..);
            }
            bytes.truncate(rng.usize(0..=bytes.len()));
            let _ = parse(&bytes);
        }
    }
}
