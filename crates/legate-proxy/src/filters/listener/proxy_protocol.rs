//! `envoy.filters.listener.proxy_protocol`: reads the HAProxy PROXY protocol header (v1 text,
//! v2 binary; "The PROXY protocol", versions 1 and 2) that a load balancer in front puts
//! before the client's bytes, and makes its source and destination the connection's remote
//! and local addresses (for `filter_chain_match`, `x-forwarded-for` with
//! `use_remote_address`, access logs). The header is consumed; what follows it goes on to the
//! next listener filter and the connection.
//!
//! Without a header the connection is closed (`not_found_disallowed`), unless
//! `allow_requests_without_proxy_protocol`. A malformed header, an unsupported address family
//! (AF_UNIX, UDP) or a disallowed version closes it too. `LOCAL` (v2) and `UNKNOWN` (v1) keep
//! the socket's own addresses. TLVs are skipped (`rules` is refused at load).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use legate_config::filters::listener::proxy_protocol::{ProxyProtocol as ProxyProtocolConfig, ProxyProtocolVersion};
use legate_stats::Scope;

legate_stats::stats! {
    /// `proxy_proto.[<stat_prefix>.]*`.
    pub struct ProxyProtocolStats {
        counter not_found_disallowed,
        counter not_found_allowed,
    }
}

legate_stats::stats! {
    /// `proxy_proto.[<stat_prefix>.]versions.<v1|v2>.*`.
    pub struct ProxyProtocolVersionStats {
        counter found,
        counter disallowed,
        counter error,
    }
}

/// v1 headers are at most 107 bytes, CRLF included.
const V1_MAX: usize = 107;
const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// The filter's config and stats, shared by the listener's connections.
pub struct ProxyProtocolFilter {
    pub allow_without: bool,
    pub disallowed: Vec<ProxyProtocolVersion>,
    pub stats: ProxyProtocolStats,
    pub v1: ProxyProtocolVersionStats,
    pub v2: ProxyProtocolVersionStats,
}

impl ProxyProtocolFilter {
    pub fn new(config: &ProxyProtocolConfig, root: &Scope) -> Self {
        let scope = if config.stat_prefix.is_empty() {
            root.scope("proxy_proto")
        } else {
            root.scope(&format!("proxy_proto.{}", config.stat_prefix))
        };
        ProxyProtocolFilter {
            allow_without: config.allow_requests_without_proxy_protocol,
            disallowed: config.disallowed_versions.clone(),
            stats: ProxyProtocolStats::new(&scope),
            v1: ProxyProtocolVersionStats::new(&scope.scope("versions.v1")),
            v2: ProxyProtocolVersionStats::new(&scope.scope("versions.v2")),
        }
    }

    pub fn version_stats(&self, version: ProxyProtocolVersion) -> &ProxyProtocolVersionStats {
        match version {
            ProxyProtocolVersion::V1 => &self.v1,
            ProxyProtocolVersion::V2 => &self.v2,
        }
    }
}

/// What the bytes so far hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// A complete header of `len` bytes; `addresses` are (source, destination), `None` for
    /// `LOCAL`/`UNKNOWN`.
    Header {
        version: ProxyProtocolVersion,
        len: usize,
        addresses: Option<(SocketAddr, SocketAddr)>,
    },
    /// A header of this version that is malformed or unsupported.
    Invalid(ProxyProtocolVersion),
    /// No PROXY header.
    NotProxy,
    NeedMore,
}

/// Parses a PROXY header at the start of `data`.
pub fn parse(data: &[u8]) -> Parse {
    let starts = |prefix: &[u8]| {
        let n = data.len().min(prefix.len());
        data.get(..n) == prefix.get(..n)
    };
    if data.is_empty() {
        return Parse::NeedMore;
    }
    if starts(V2_SIGNATURE) {
        return if data.len() < V2_SIGNATURE.len() { Parse::NeedMore } else { parse_v2(data) };
    }
    if starts(V1_PREFIX) {
        return if data.len() < V1_PREFIX.len() { Parse::NeedMore } else { parse_v1(data) };
    }
    Parse::NotProxy
}

fn parse_v1(data: &[u8]) -> Parse {
    let invalid = Parse::Invalid(ProxyProtocolVersion::V1);
    let Some(end) = data.windows(2).position(|w| w == b"\r\n") else {
        return if data.len() >= V1_MAX { invalid } else { Parse::NeedMore };
    };
    if end + 2 > V1_MAX {
        return invalid;
    }
    let Some(line) = data.get(V1_PREFIX.len()..end).and_then(|l| std::str::from_utf8(l).ok()) else {
        return invalid;
    };
    let fields: Vec<&str> = line.split(' ').collect();
    let header = |addresses| Parse::Header { version: ProxyProtocolVersion::V1, len: end + 2, addresses };
    match fields.as_slice() {
        ["UNKNOWN", ..] => header(None),
        [family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let ip = |s: &str| -> Option<IpAddr> {
                match *family {
                    "TCP4" => s.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
                    _ => s.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
                }
            };
            // Ports are decimal without leading zeros or signs.
            let port = |s: &str| -> Option<u16> {
                (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0')))
                    .then(|| s.parse().ok())
                    .flatten()
            };
            match (ip(src), ip(dst), port(sport), port(dport)) {
                (Some(s), Some(d), Some(sp), Some(dp)) => {
                    header(Some((SocketAddr::new(s, sp), SocketAddr::new(d, dp))))
                }
                _ => invalid,
            }
        }
        _ => invalid,
    }
}

fn parse_v2(data: &[u8]) -> Parse {
    let invalid = Parse::Invalid(ProxyProtocolVersion::V2);
    let Some(&[ver_cmd, family, len_hi, len_lo]) = data.get(12..16) else { return Parse::NeedMore };
    if ver_cmd >> 4 != 2 {
        return invalid;
    }
    let len = 16 + usize::from(u16::from_be_bytes([len_hi, len_lo]));
    let Some(body) = data.get(16..len) else { return Parse::NeedMore };
    let header = |addresses| Parse::Header { version: ProxyProtocolVersion::V2, len, addresses };
    match ver_cmd & 0x0f {
        // LOCAL: a health check from the proxy itself; its addresses are not a client's.
        0 => return header(None),
        1 => {}
        _ => return invalid,
    }
    match family {
        // AF_UNSPEC: keep the socket's addresses.
        0x00 => header(None),
        // TCP over IPv4.
        0x11 => match body.get(..12) {
            Some(&[a, b, c, d, e, f, g, h, sp1, sp2, dp1, dp2]) => header(Some((
                SocketAddr::new(Ipv4Addr::new(a, b, c, d).into(), u16::from_be_bytes([sp1, sp2])),
                SocketAddr::new(Ipv4Addr::new(e, f, g, h).into(), u16::from_be_bytes([dp1, dp2])),
            ))),
            _ => invalid,
        },
        // TCP over IPv6.
        0x21 => {
            let (Some(src), Some(dst), Some(&[sp1, sp2, dp1, dp2])) =
                (body.get(..16), body.get(16..32), body.get(32..36))
            else {
                return invalid;
            };
            let ip = |b: &[u8]| <[u8; 16]>::try_from(b).ok().map(Ipv6Addr::from);
            match (ip(src), ip(dst)) {
                (Some(s), Some(d)) => header(Some((
                    SocketAddr::new(s.into(), u16::from_be_bytes([sp1, sp2])),
                    SocketAddr::new(d.into(), u16::from_be_bytes([dp1, dp2])),
                ))),
                _ => invalid,
            }
        }
        // UDP and AF_UNIX: not a TCP client address.
        _ => invalid,
    }
}

/// The largest header worth reading for: v2 with the largest TLV block.
pub const MAX_HEADER: usize = 16 + u16::MAX as usize;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_tcp4_tcp6_unknown_and_errors() {
        let p = parse(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET /");
        assert_eq!(
            p,
            Parse::Header {
                version: ProxyProtocolVersion::V1,
                len: 45,
                addresses: Some(("192.0.2.1:56324".parse().unwrap(), "198.51.100.2:443".parse().unwrap()))
            }
        );
        assert!(matches!(
            parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n"),
            Parse::Header { addresses: Some(_), .. }
        ));
        assert!(matches!(parse(b"PROXY UNKNOWN\r\n"), Parse::Header { addresses: None, len: 15, .. }));
        assert_eq!(parse(b"PROXY TCP4 192.0.2.1"), Parse::NeedMore);
        assert_eq!(parse(b"PRO"), Parse::NeedMore);
        assert_eq!(parse(b"PROXY TCP4 300.0.2.1 198.51.100.2 1 2\r\n"), Parse::Invalid(ProxyProtocolVersion::V1));
        assert_eq!(parse(b"PROXY TCP4 192.0.2.1 198.51.100.2 01 2\r\n"), Parse::Invalid(ProxyProtocolVersion::V1));
        assert_eq!(parse(&[b'P'; 200]), Parse::NotProxy);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Parse::NotProxy);
    }

    #[test]
    fn v2_tcp4_local_and_errors() {
        let mut header = V2_SIGNATURE.to_vec();
        header.extend_from_slice(&[0x21, 0x11, 0, 12, 10, 0, 0, 1, 10, 0, 0, 2, 0x1f, 0x90, 0x01, 0xbb]);
        header.extend_from_slice(b"rest");
        assert_eq!(
            parse(&header),
            Parse::Header {
                version: ProxyProtocolVersion::V2,
                len: 28,
                addresses: Some(("10.0.0.1:8080".parse().unwrap(), "10.0.0.2:443".parse().unwrap()))
            }
        );
        assert_eq!(parse(&header[..20]), Parse::NeedMore);
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert!(matches!(parse(&local), Parse::Header { addresses: None, len: 16, .. }));
        let mut unix = V2_SIGNATURE.to_vec();
        unix.extend_from_slice(&[0x21, 0x31, 0, 0]);
        assert_eq!(parse(&unix), Parse::Invalid(ProxyProtocolVersion::V2));
        let mut bad_version = V2_SIGNATURE.to_vec();
        bad_version.extend_from_slice(&[0x11, 0x11, 0, 0]);
        assert_eq!(parse(&bad_version), Parse::Invalid(ProxyProtocolVersion::V2));
    }
}
