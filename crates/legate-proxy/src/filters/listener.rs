//! Listener filters (`envoy.filters.listener.*`): run in order on an accepted socket before a
//! filter chain is chosen, to learn what the chain match needs (SNI, ALPN, transport
//! protocol, the client's address behind a load balancer). They share one buffer of the bytes
//! read so far: `tls_inspector` and `http_inspector` only look (the bytes are replayed to the
//! connection), `proxy_protocol` consumes its header. The whole run is bounded by
//! `listener_filters_timeout` (see `listener::active_listener`).

pub mod http_inspector;
pub mod proxy_protocol;
pub mod tls_inspector;

use std::io;
use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use legate_config::extensions::ListenerFilterConfig;
use legate_stats::Scope;
use tokio::net::TcpStream;

use http_inspector::HttpInspectorStats;
use proxy_protocol::ProxyProtocolFilter;
use tls_inspector::{ClientHello, TlsInspectorStats};

/// One configured listener filter with its stats; shared by the listener's connections.
pub enum ListenerFilter {
    TlsInspector(TlsInspectorStats),
    HttpInspector(HttpInspectorStats),
    ProxyProtocol(ProxyProtocolFilter),
}

impl ListenerFilter {
    /// `root` is the stats root: the filters' stats are global (`tls_inspector.*`,
    /// `http_inspector.*`, `proxy_proto.*`), as in Envoy.
    pub fn new(config: &ListenerFilterConfig, root: &Scope) -> Self {
        match config {
            ListenerFilterConfig::TlsInspector(_) => ListenerFilter::TlsInspector(tls_inspector::stats(root)),
            ListenerFilterConfig::HttpInspector(_) => ListenerFilter::HttpInspector(http_inspector::stats(root)),
            ListenerFilterConfig::ProxyProtocol(c) => ListenerFilter::ProxyProtocol(ProxyProtocolFilter::new(c, root)),
        }
    }
}

/// What the listener filters learned about one connection.
pub struct Inspected {
    /// Bytes read and not consumed: replayed to the connection.
    pub data: BytesMut,
    /// Set by `tls_inspector` when the connection starts with a ClientHello.
    pub hello: Option<ClientHello>,
    /// Set by `http_inspector`: `http/1.0`, `http/1.1` or `h2c`.
    pub http_protocol: Option<&'static str>,
    /// The client's address: the socket's peer, or the PROXY header's source.
    pub remote: SocketAddr,
    /// The address the client connected to: the socket's, or the PROXY header's destination.
    pub local: SocketAddr,
}

/// How a run of the listener filters ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    /// The peer closed or reset (`downstream_listener_filter_remote_close`).
    RemoteClose,
    /// A filter refused the connection (`downstream_listener_filter_error`).
    Error,
}

/// Runs `filters` in order over `stream`, accumulating into `state`.
///
/// # Cancel safety
/// Cancel safe: what was read stays in `state.data` (`continue_on_listener_filters_timeout`).
pub async fn run(filters: &[ListenerFilter], stream: &TcpStream, state: &mut Inspected) -> Outcome {
    for filter in filters {
        let outcome = match filter {
            ListenerFilter::TlsInspector(stats) => match tls_inspector::inspect(stream, &mut state.data, stats).await {
                Some(hello) => {
                    state.hello = hello;
                    Outcome::Continue
                }
                None => Outcome::RemoteClose,
            },
            ListenerFilter::HttpInspector(stats) => inspect_http(stream, state, stats).await,
            ListenerFilter::ProxyProtocol(filter) => read_proxy_header(stream, state, filter).await,
        };
        if outcome != Outcome::Continue {
            return outcome;
        }
    }
    Outcome::Continue
}

async fn inspect_http(stream: &TcpStream, state: &mut Inspected, stats: &HttpInspectorStats) -> Outcome {
    if state.hello.is_some() {
        // TLS: nothing to see in cleartext.
        return Outcome::Continue;
    }
    loop {
        match http_inspector::detect(&state.data) {
            http_inspector::Detect::Http(protocol) => {
                stats.record(Some(protocol));
                state.http_protocol = Some(protocol);
                return Outcome::Continue;
            }
            http_inspector::Detect::NotHttp => {
                stats.record(None);
                return Outcome::Continue;
            }
            http_inspector::Detect::NeedMore => {}
        }
        match read_more(stream, &mut state.data, http_inspector::MAX_INSPECT_SIZE).await {
            Ok(0) => return Outcome::RemoteClose,
            Ok(_) => {}
            Err(_) => {
                stats.read_error.inc();
                return Outcome::RemoteClose;
            }
        }
    }
}

async fn read_proxy_header(stream: &TcpStream, state: &mut Inspected, filter: &ProxyProtocolFilter) -> Outcome {
    loop {
        match proxy_protocol::parse(&state.data) {
            proxy_protocol::Parse::Header { version, len, addresses } => {
                let stats = filter.version_stats(version);
                if filter.disallowed.contains(&version) {
                    stats.disallowed.inc();
                    return Outcome::Error;
                }
                stats.found.inc();
                state.data.advance(len);
                if let Some((source, destination)) = addresses {
                    state.remote = source;
                    state.local = destination;
                }
                return Outcome::Continue;
            }
            proxy_protocol::Parse::Invalid(version) => {
                filter.version_stats(version).error.inc();
                return Outcome::Error;
            }
            proxy_protocol::Parse::NotProxy if filter.allow_without => {
                filter.stats.not_found_allowed.inc();
                return Outcome::Continue;
            }
            proxy_protocol::Parse::NotProxy => {
                filter.stats.not_found_disallowed.inc();
                return Outcome::Error;
            }
            proxy_protocol::Parse::NeedMore => {}
        }
        match read_more(stream, &mut state.data, proxy_protocol::MAX_HEADER).await {
            Ok(0) | Err(_) => return Outcome::RemoteClose,
            Ok(_) => {}
        }
    }
}

/// Reads what the socket has into `data`, which holds at most `limit` bytes; `Ok(0)` is the
/// peer's end of stream (or a full buffer, which callers have already ruled out).
///
/// # Cancel safety
/// Cancel safe: a read either happened (and is in `data`) or did not.
pub(crate) async fn read_more(stream: &TcpStream, data: &mut BytesMut, limit: usize) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        data.reserve(4096);
        let room = limit.saturating_sub(data.len());
        match stream.try_read_buf(&mut bytes::BufMut::limit(&mut *data, room)) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}
