//! Choosing a filter chain for a new connection, with Envoy's precedence.
//!
//! Criteria are applied one after another in Envoy's order: destination port, destination IP
//! (`prefix_ranges`), `server_names`, `transport_protocol`, `application_protocols`,
//! `direct_source_prefix_ranges`, `source_type`, `source_prefix_ranges`, `source_ports`. At
//! each step the chains that match most specifically survive (a longer prefix, an exact server
//! name over a wildcard, any stated value over an empty criterion); chains with the criterion
//! left empty survive only when no chain states a matching value. A chain that wins a step but
//! fails a later one is not replaced by a less specific chain: the connection has no match,
//! as in Envoy ("Filter chain match" in the listener docs).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use legate_config::listener::{ConnectionSourceType, FilterChainMatch};

use super::FilterChain;

/// What is known of a connection when its filter chain is chosen.
pub struct ConnectionMetadata<'a> {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The peer as the socket sees it (differs from `remote` only behind PROXY protocol).
    pub direct_remote: SocketAddr,
    /// SNI from the TLS inspector; empty without one.
    pub server_name: &'a str,
    /// `raw_buffer` unless a listener filter detected `tls`.
    pub transport_protocol: &'a str,
    pub application_protocols: &'a [String],
}

/// A `FilterChainMatch` with its CIDR ranges parsed once.
pub struct FilterChainMatcher {
    destination_port: Option<u16>,
    prefix_ranges: Vec<(IpAddr, u8)>,
    server_names: Vec<String>,
    transport_protocol: String,
    application_protocols: Vec<String>,
    direct_source_prefix_ranges: Vec<(IpAddr, u8)>,
    source_type: ConnectionSourceType,
    source_prefix_ranges: Vec<(IpAddr, u8)>,
    source_ports: Vec<u16>,
}

impl FilterChainMatcher {
    pub fn new(m: &FilterChainMatch) -> Self {
        // Validation already refused malformed ranges and ports.
        let ranges = |r: &[legate_config::core::CidrRange]| r.iter().filter_map(|c| c.parse().ok()).collect();
        FilterChainMatcher {
            destination_port: m.destination_port.map(|p| p as u16),
            prefix_ranges: ranges(&m.prefix_ranges),
            server_names: m.server_names.iter().map(|s| s.to_ascii_lowercase()).collect(),
            transport_protocol: m.transport_protocol.clone(),
            application_protocols: m.application_protocols.clone(),
            direct_source_prefix_ranges: ranges(&m.direct_source_prefix_ranges),
            source_type: m.source_type,
            source_prefix_ranges: ranges(&m.source_prefix_ranges),
            source_ports: m.source_ports.iter().map(|p| *p as u16).collect(),
        }
    }
}

/// How well one criterion of a chain matches: `None` no match, `Some(0)` criterion empty,
/// higher is more specific.
type Score = Option<u32>;

type Criterion = fn(&FilterChainMatcher, &ConnectionMetadata<'_>) -> Score;

const CRITERIA: [Criterion; 9] = [
    |m, c| match m.destination_port {
        None => Some(0),
        Some(p) => (p == c.local.port()).then_some(1),
    },
    |m, c| best_prefix(&m.prefix_ranges, c.local.ip()),
    |m, c| server_name_score(&m.server_names, c.server_name),
    |m, c| {
        if m.transport_protocol.is_empty() {
            Some(0)
        } else {
            (m.transport_protocol == c.transport_protocol).then_some(1)
        }
    },
    |m, c| {
        if m.application_protocols.is_empty() {
            Some(0)
        } else {
            m.application_protocols.iter().any(|p| c.application_protocols.contains(p)).then_some(1)
        }
    },
    |m, c| best_prefix(&m.direct_source_prefix_ranges, c.direct_remote.ip()),
    |m, c| {
        let local = is_local(c.remote.ip(), c.local.ip());
        match m.source_type {
            ConnectionSourceType::Any => Some(0),
            ConnectionSourceType::SameIpOrLoopback => local.then_some(1),
            ConnectionSourceType::External => (!local).then_some(1),
        }
    },
    |m, c| best_prefix(&m.source_prefix_ranges, c.remote.ip()),
    |m, c| {
        if m.source_ports.is_empty() {
            Some(0)
        } else {
            m.source_ports.contains(&c.remote.port()).then_some(1)
        }
    },
];

/// The chain for this connection, or `None` (`no_filter_chain_match`).
pub fn find<'a>(chains: &'a [Arc<FilterChain>], conn: &ConnectionMetadata<'_>) -> Option<&'a Arc<FilterChain>> {
    // Every connection runs this, once: a listener's chains are few, and the candidates fit
    // in one word without allocating (a `Vec` per criterion cost ten allocations per
    // connection, measured with one request per connection).
    if chains.len() <= u64::BITS as usize {
        find_among_few(chains, conn)
    } else {
        find_among_many(chains, conn)
    }
}

/// [`find`] for any number of chains.
fn find_among_many<'a>(chains: &'a [Arc<FilterChain>], conn: &ConnectionMetadata<'_>) -> Option<&'a Arc<FilterChain>> {
    let mut candidates: Vec<&Arc<FilterChain>> = chains.iter().collect();
    for criterion in CRITERIA {
        let scored: Vec<(u32, &Arc<FilterChain>)> =
            candidates.iter().filter_map(|chain| criterion(&chain.matcher, conn).map(|s| (s, *chain))).collect();
        let best = scored.iter().map(|(s, _)| *s).max()?;
        candidates = scored.into_iter().filter(|(s, _)| *s == best).map(|(_, c)| c).collect();
    }
    // Validation refuses identical matches, so at most one chain is left.
    candidates.first().copied()
}

/// [`find`] for at most 64 chains: the candidates are the bits of a word.
fn find_among_few<'a>(chains: &'a [Arc<FilterChain>], conn: &ConnectionMetadata<'_>) -> Option<&'a Arc<FilterChain>> {
    if chains.is_empty() || chains.len() > u64::BITS as usize {
        return find_among_many(chains, conn);
    }
    let mut candidates = u64::MAX >> (u64::BITS as usize - chains.len());
    for criterion in CRITERIA {
        let (mut best, mut kept) = (None, 0u64);
        for (i, chain) in chains.iter().enumerate() {
            if candidates & (1 << i) == 0 {
                continue;
            }
            let Some(score) = criterion(&chain.matcher, conn) else { continue };
            match best {
                Some(b) if score < b => {}
                Some(b) if score == b => kept |= 1 << i,
                _ => (best, kept) = (Some(score), 1 << i),
            }
        }
        if kept == 0 {
            return None;
        }
        candidates = kept;
    }
    chains.get(candidates.trailing_zeros() as usize)
}

fn best_prefix(ranges: &[(IpAddr, u8)], ip: IpAddr) -> Score {
    if ranges.is_empty() {
        return Some(0);
    }
    ranges.iter().filter(|(net, len)| contains(*net, *len, ip)).map(|(_, len)| u32::from(*len) + 1).max()
}

/// `*.example.com` matches `a.example.com` (and `a.b.example.com`); exact names beat
/// wildcards and longer wildcards beat shorter ones.
fn server_name_score(names: &[String], server_name: &str) -> Score {
    if names.is_empty() {
        return Some(0);
    }
    if server_name.is_empty() {
        return None;
    }
    // The names were lowercased once; the SNI is compared without a lowercased copy.
    let sni = server_name.as_bytes();
    names
        .iter()
        .filter_map(|name| {
            if name.as_bytes().eq_ignore_ascii_case(sni) {
                Some(u32::MAX)
            } else if let Some(suffix) = name.strip_prefix('*') {
                let tail = sni.len().checked_sub(suffix.len()).filter(|at| *at > 0).and_then(|at| sni.get(at..));
                (suffix.starts_with('.') && tail.is_some_and(|t| t.eq_ignore_ascii_case(suffix.as_bytes())))
                    .then_some(suffix.len() as u32)
            } else {
                None
            }
        })
        .max()
}

fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

pub(crate) fn contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (normalize(net), normalize(ip)) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len.min(32))) };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len.min(128))) };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// Envoy's SAME_IP_OR_LOOPBACK: the peer is loopback or has this connection's local IP.
fn is_local(remote: IpAddr, local: IpAddr) -> bool {
    let remote = normalize(remote);
    remote.is_loopback() || remote == normalize(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(name: &str, yaml: &str) -> Arc<FilterChain> {
        let m: FilterChainMatch = serde_yaml_ng::from_str(yaml).unwrap();
        Arc::new(FilterChain {
            name: name.into(),
            config: Default::default(),
            matcher: FilterChainMatcher::new(&m),
            transport_socket: None,
            transport_socket_connect_timeout: None,
            factories: vec![],
            drain: Default::default(),
        })
    }

    fn pick<'a>(chains: &'a [Arc<FilterChain>], local: &str, remote: &str, sni: &str) -> Option<&'a str> {
        let c = ConnectionMetadata {
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            direct_remote: remote.parse().unwrap(),
            server_name: sni,
            transport_protocol: if sni.is_empty() { "raw_buffer" } else { "tls" },
            application_protocols: &[],
        };
        if chains.len() <= 64 {
            let few = find_among_few(chains, &c).map(|c| c.name.as_str());
            assert_eq!(few, find_among_many(chains, &c).map(|c| c.name.as_str()), "the two ways of choosing disagree");
        }
        find(chains, &c).map(|c| c.name.as_str())
    }

    #[test]
    fn destination_port_beats_everything_after_it() {
        let chains = [
            chain("port", "destination_port: 8080"),
            chain("src", "source_prefix_ranges: [{address_prefix: 10.0.0.0, prefix_len: 8}]"),
        ];
        assert_eq!(pick(&chains, "10.0.0.1:8080", "10.1.1.1:5", ""), Some("port"));
        assert_eq!(pick(&chains, "10.0.0.1:9090", "10.1.1.1:5", ""), Some("src"));
        assert_eq!(pick(&chains, "10.0.0.1:9090", "11.1.1.1:5", ""), None);
    }

    #[test]
    fn longest_prefix_wins() {
        let chains = [
            chain("wide", "source_prefix_ranges: [{address_prefix: 10.0.0.0, prefix_len: 8}]"),
            chain("narrow", "source_prefix_ranges: [{address_prefix: 10.1.0.0, prefix_len: 16}]"),
        ];
        assert_eq!(pick(&chains, "127.0.0.1:80", "10.1.2.3:5", ""), Some("narrow"));
        assert_eq!(pick(&chains, "127.0.0.1:80", "10.2.2.3:5", ""), Some("wide"));
    }

    #[test]
    fn specific_match_does_not_fall_back_to_a_wildcard_chain_later() {
        // Envoy: the port step keeps only "port"; its source_type then fails: no match, even
        // though "any" would have matched.
        let chains = [chain("port", "{destination_port: 80, source_type: EXTERNAL}"), chain("any", "{}")];
        assert_eq!(pick(&chains, "127.0.0.1:80", "127.0.0.1:5", ""), None);
        assert_eq!(pick(&chains, "127.0.0.1:81", "127.0.0.1:5", ""), Some("any"));
    }

    #[test]
    fn exact_server_name_beats_wildcard() {
        let chains = [
            chain("wild", "server_names: ['*.example.com']"),
            chain("exact", "server_names: [api.example.com]"),
            chain("none", "{}"),
        ];
        assert_eq!(pick(&chains, "127.0.0.1:443", "1.2.3.4:5", "api.example.com"), Some("exact"));
        assert_eq!(pick(&chains, "127.0.0.1:443", "1.2.3.4:5", "www.example.com"), Some("wild"));
        assert_eq!(pick(&chains, "127.0.0.1:443", "1.2.3.4:5", ""), Some("none"));
        // SNI compares case-insensitively; a wildcard needs a label before its suffix.
        assert_eq!(pick(&chains, "127.0.0.1:443", "1.2.3.4:5", "API.Example.COM"), Some("exact"));
        assert_eq!(pick(&chains, "127.0.0.1:443", "1.2.3.4:5", "WWW.example.com"), Some("wild"));
        assert_eq!(pick(&chains, "127.0.0.1:443", "1.2.3.4:5", ".example.com"), Some("none"));
        assert_eq!(pick(&chains, "127.0.0.1:443", "1.2.3.4:5", "example.com"), Some("none"));
    }

    #[test]
    fn source_ports_and_source_type() {
        let chains = [chain("p", "source_ports: [1234]"), chain("local", "source_type: SAME_IP_OR_LOOPBACK")];
        // source_type is decided before source_ports: the stated source type wins.
        assert_eq!(pick(&chains, "127.0.0.1:80", "127.0.0.1:1234", ""), Some("local"));
        assert_eq!(pick(&chains, "10.0.0.1:80", "10.9.9.9:1234", ""), Some("p"));
        assert_eq!(pick(&chains, "10.0.0.1:80", "10.9.9.9:1235", ""), None);
    }

    #[test]
    fn many_chains_choose_as_few_do() {
        // 64 chains fit the word of candidates; 65 and more take the general way. Both are
        // checked against each other in `pick`.
        for count in [1, 63, 64, 65, 70] {
            let chains: Vec<Arc<FilterChain>> =
                (0..count).map(|i| chain(&format!("c{i}"), &format!("destination_port: {}", 1000 + i))).collect();
            let last = format!("127.0.0.1:{}", 1000 + count - 1);
            assert_eq!(pick(&chains, &last, "1.2.3.4:5", ""), Some(format!("c{}", count - 1).as_str()));
            assert_eq!(pick(&chains, "127.0.0.1:1000", "1.2.3.4:5", ""), Some("c0"));
            assert_eq!(pick(&chains, "127.0.0.1:999", "1.2.3.4:5", ""), None);
        }
        assert_eq!(pick(&[], "127.0.0.1:80", "1.2.3.4:5", ""), None);
    }
}
