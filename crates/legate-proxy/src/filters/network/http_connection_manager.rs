//! `envoy.filters.network.http_connection_manager`: the terminal network filter that speaks
//! HTTP/1.1 (legate's codec, `codec_http1`) and HTTP/2 (hyper's), runs each request through
//! the HTTP filters and the router, and owns the downstream side of the timeout timeline.
//!
//! The filter takes the connection's socket over (DESIGN.md §4). Per connection it enforces
//! `idle_timeout` (no active stream), `max_connection_duration`, `request_headers_timeout`
//! and drain (HTTP/1.1 closes after the response in flight, HTTP/2 sends GOAWAY, both within
//! `drain_timeout`); per stream (in `active_stream`) `request_timeout`, `stream_idle_timeout`
//! and `max_stream_duration`. HTTP/1.1 with `header_key_format` is served by hyper behind the
//! smuggling guard (`http::h1_guard`), which also runs its header timeout.

pub mod active_stream;
mod codec_http1;
pub mod forward_client_cert;
mod parked;
pub use parked::ParkedHttp1;
pub mod path;
pub mod response_body;
pub mod stats;
pub(crate) mod stream_boxes;

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http::header::HeaderValue;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use legate_config::filters::network::http_connection_manager::{
    CodecType, HttpConnectionManager as HcmConfig, ServerHeaderTransformation,
};
use legate_stats::Scope;
use tokio::io::AsyncReadExt;

use crate::access_log::{AccessLogFilter, AccessLogger, LogFormat};
use crate::filters::http::HttpFilterFactory;
use crate::http::h1_guard::{H1Guard, ParkSignals};
use crate::http::h1_server::{Limits, ServerConn};
use crate::http::h2_guard::{End, FloodLimits, H2Guard, Http2Stats};
use crate::http::io::{linger, CountingIo, LentIo, LocalExec};
use crate::listener::drain::{DrainPhase, DrainWaiter};
use crate::network::{
    ConnectionEvent, ConnectionInfo, FilterStatus, ReadFilter, ReadFilterCallbacks, TakeOverFuture, TakenOverEnd,
    TransportSocket,
};
use crate::router::{RouteConfig, RouteConfigProvider};
use crate::worker::{clock, WorkerContext};
pub use stats::{HcmStats, ListenerHttpStats, UnderscoreStats};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One HCM config, compiled once and shared by every worker.
pub struct HttpConnectionManagerShared {
    pub config: Box<HcmConfig>,
    pub route_config: crate::router::RouteConfigProvider,
    /// The HTTP filters before the router, each with whether it is disabled by default.
    pub filters: Vec<(HttpFilterFactory, bool)>,
    pub stats: HcmStats,
    /// `listener.<address>.http.<stat_prefix>.*`, under the listener whose filter chain made
    /// this connection manager.
    pub listener_stats: ListenerHttpStats,
    pub access_logs: Vec<Arc<AccessLogger>>,
    /// The root stats scope, for per-code cluster stats.
    pub root: Scope,
    pub server_name: HeaderValue,
    pub via: Option<HeaderValue>,
    pub idle_timeout: Option<Duration>,
    pub max_connection_duration: Option<Duration>,
    /// `common_http_protocol_options.max_requests_per_connection`.
    pub max_requests_per_connection: Option<u32>,
    pub max_stream_duration: Option<Duration>,
    pub stream_idle_timeout: Option<Duration>,
    pub request_timeout: Option<Duration>,
    pub request_headers_timeout: Option<Duration>,
    pub drain_timeout: Duration,
    /// How long a connection legate closes waits for the client to close its side (0: not at
    /// all).
    pub delayed_close_timeout: Duration,
    pub max_headers_count: usize,
    pub max_request_headers_bytes: usize,
    pub router: legate_config::filters::http::router::Router,
    pub local_reply: Option<LocalReplyMapper>,
    /// `http2_protocol_options`' limits on what a client may send.
    pub http2_flood_limits: FloodLimits,
    /// `http2.*`, made with the first HTTP/2 connection (as Envoy's codec stats are).
    http2_stats: OnceLock<Http2Stats>,
    /// `http1.*` and `http2.*`: header names with underscores, counted as Envoy's codecs do.
    pub http1_underscores: UnderscoreStats,
    pub http2_underscores: UnderscoreStats,
    /// `tracing`, where set.
    pub tracer: Option<crate::trace::HcmTracer>,
}

/// `local_reply_config`, compiled.
pub struct LocalReplyMapper {
    pub mappers: Vec<ResponseMapper>,
    pub body_format: Option<(LogFormat, HeaderValue)>,
}

pub struct ResponseMapper {
    pub filter: AccessLogFilter,
    pub status: Option<http::StatusCode>,
    pub body: Option<bytes::Bytes>,
    pub body_format: Option<(LogFormat, HeaderValue)>,
    pub headers: crate::router::HeaderParser,
}

impl LocalReplyMapper {
    fn new(c: &legate_config::filters::network::http_connection_manager::LocalReplyConfig) -> Result<Self, String> {
        let format = |f: &legate_config::access_log::SubstitutionFormatString| {
            LogFormat::body_format(f).map_err(|e| format!("local_reply_config: {e}"))
        };
        let mut mappers = Vec::new();
        for m in &c.mappers {
            let Some(filter) = &m.filter else { return Err("local_reply_config: a mapper needs a filter".into()) };
            mappers.push(ResponseMapper {
                filter: AccessLogFilter::from_config(filter).map_err(|e| format!("local_reply_config: {e}"))?,
                status: m
                    .status_code
                    .and_then(|c| u16::try_from(c).ok())
                    .and_then(|c| http::StatusCode::from_u16(c).ok()),
                body: m.body.as_ref().map(|b| b.read().map(bytes::Bytes::from)).transpose()?,
                body_format: m.body_format_override.as_ref().map(format).transpose()?,
                headers: crate::router::HeaderParser::new(&m.headers_to_add, &[])?,
            });
        }
        Ok(LocalReplyMapper { mappers, body_format: c.body_format.as_ref().map(format).transpose()? })
    }
}

impl HttpConnectionManagerShared {
    /// `listener` is the scope of the listener it serves (`listener.<address>`); `egress`,
    /// whether that listener's traffic is OUTBOUND.
    pub fn new(config: &HcmConfig, root: &Scope, listener: &Scope, egress: bool) -> Result<Self, String> {
        let route_config = match (&config.route_config, &config.rds) {
            (Some(rc), _) => RouteConfigProvider::Static(Arc::new(RouteConfig::new(rc)?)),
            (None, Some(rds)) => RouteConfigProvider::Rds(crate::router::rds::provider(&rds.route_config_name)?),
            (None, None) => return Err("http_connection_manager: one of rds or route_config is required".into()),
        };
        let mut filters = Vec::new();
        let mut router = None;
        for filter in &config.http_filters {
            match HttpFilterFactory::new(filter, root, &config.stat_prefix)? {
                // `disabled: true` filters run only where a route's per-filter config
                // enables them (Envoy's semantics).
                Some(factory) => filters.push((factory, filter.disabled)),
                None => {
                    if let legate_config::filters::network::http_connection_manager::HttpFilterConfig::Router(r) =
                        &filter.config
                    {
                        router = Some(r.clone());
                    }
                }
            }
        }
        let mut access_logs = Vec::new();
        for log in &config.access_log {
            access_logs.push(Arc::new(AccessLogger::from_config(log)?));
        }
        let common = config.common_http_protocol_options.clone().unwrap_or_default();
        let nonzero = |d: Option<&legate_config::Duration>| d.map(|d| d.as_std()).filter(|d| !d.is_zero());
        let server_name = if config.server_name.is_empty() { "envoy" } else { config.server_name.as_str() };
        let hcm_scope = root.scope(&format!("http.{}", config.stat_prefix));
        let tracer = match &config.tracing {
            Some(tracing) => Some(crate::trace::HcmTracer::new(tracing, &hcm_scope, root, egress)?),
            None => None,
        };
        Ok(HttpConnectionManagerShared {
            tracer,
            route_config,
            filters,
            stats: HcmStats::new(&hcm_scope),
            listener_stats: ListenerHttpStats::new(&listener.scope(&format!("http.{}", config.stat_prefix))),
            access_logs,
            root: root.clone(),
            server_name: HeaderValue::from_str(server_name).map_err(|_| "invalid server_name".to_string())?,
            via: (!config.via.is_empty())
                .then(|| HeaderValue::from_str(&config.via))
                .transpose()
                .map_err(|_| "invalid via".to_string())?,
            idle_timeout: match &common.idle_timeout {
                Some(d) => nonzero(Some(d)),
                None => Some(Duration::from_secs(3600)),
            },
            max_connection_duration: nonzero(common.max_connection_duration.as_ref()),
            max_requests_per_connection: common.max_requests_per_connection.filter(|&n| n > 0),
            max_stream_duration: nonzero(common.max_stream_duration.as_ref()),
            stream_idle_timeout: Some(config.stream_idle_timeout()).filter(|d| !d.is_zero()),
            request_timeout: nonzero(config.request_timeout.as_ref()),
            request_headers_timeout: nonzero(config.request_headers_timeout.as_ref()),
            drain_timeout: config.drain_timeout(),
            delayed_close_timeout: config.delayed_close_timeout(),
            max_headers_count: common.max_headers_count.unwrap_or(100).max(1) as usize,
            max_request_headers_bytes: config.max_request_headers_kb() as usize * 1024,
            router: router.unwrap_or_default(),
            local_reply: config.local_reply_config.as_ref().map(LocalReplyMapper::new).transpose()?,
            http2_flood_limits: FloodLimits::new(config.http2_protocol_options.as_ref().unwrap_or(&Default::default())),
            http2_stats: OnceLock::new(),
            http1_underscores: UnderscoreStats::new(&root.scope("http1")),
            http2_underscores: UnderscoreStats::new(&root.scope("http2")),
            config: Box::new(config.clone()),
        })
    }

    /// A response as its head goes out: `downstream_rq_completed` and `downstream_rq_<N>xx`,
    /// under the connection manager's prefix and again under its listener's.
    pub fn count_response(&self, code: u16) {
        self.stats.response_code(code);
        self.listener_stats.response_code(code);
    }

    /// A reply the HTTP/1.1 codec makes itself (a refused head, the header timeout): Envoy's
    /// codec opens a stream for it and answers through it, so it is a request and a response.
    pub fn count_codec_reply(&self, code: u16) {
        self.stats.downstream_rq_total.inc();
        self.stats.downstream_rq_http1_total.inc();
        self.count_response(code);
    }

    pub fn http2_stats(&self) -> &Http2Stats {
        self.http2_stats.get_or_init(|| Http2Stats::new(&self.root.scope("http2")))
    }

    pub fn server_header_transformation(&self) -> ServerHeaderTransformation {
        self.config.server_header_transformation
    }
}

/// The per-connection network filter: takes the socket over on the first event.
pub struct HttpConnectionManager {
    shared: Arc<HttpConnectionManagerShared>,
    worker: Rc<WorkerContext>,
    buffer_limit: usize,
}

impl HttpConnectionManager {
    pub fn new(shared: Arc<HttpConnectionManagerShared>, worker: Rc<WorkerContext>) -> Self {
        HttpConnectionManager { shared, worker, buffer_limit: 0 }
    }
}

impl ReadFilter for HttpConnectionManager {
    fn on_new_connection(&mut self, cb: &mut ReadFilterCallbacks<'_>) -> FilterStatus {
        self.buffer_limit = cb.buffer_limit();
        cb.take_over_io();
        FilterStatus::StopIteration
    }

    fn on_data(&mut self, _data: &mut BytesMut, _end_stream: bool, _cb: &mut ReadFilterCallbacks<'_>) -> FilterStatus {
        // Bytes stay buffered: they are handed over with the socket.
        FilterStatus::StopIteration
    }

    fn take_over(&mut self, socket: TransportSocket, buffered: BytesMut, info: ConnectionInfo) -> TakeOverFuture {
        let start = Start {
            shared: self.shared.clone(),
            worker: self.worker.clone(),
            info,
            buffer_limit: self.buffer_limit,
            socket,
            buffered,
        };
        // One allocation for the connection's future; the connection's task reads the clock
        // once per wake-up for it (`network::Run`).
        Box::pin(serve(Box::new(start)))
    }

    fn needs_events_after_take_over(&self) -> bool {
        // Its connection's future has all it needs.
        false
    }
}

/// What a connection's streams share.
pub struct ConnectionContext {
    pub shared: Arc<HttpConnectionManagerShared>,
    pub worker: Rc<WorkerContext>,
    pub info: ConnectionInfo,
    pub http2: bool,
    /// The listener's `per_connection_buffer_limit_bytes`: how much request body a stream
    /// keeps for retries.
    pub buffer_limit: usize,
    /// Streams not yet finished.
    pub active_streams: Cell<u32>,
    /// When `active_streams` last fell to 0 (the connection's idle time starts then).
    pub idle_since: Cell<Option<Instant>>,
    /// Set once the connection drains: HTTP/1.1 responses carry `connection: close`.
    pub draining: Cell<bool>,
    /// When the stream asked to be polled again, where the connection's own timer does it
    /// (legate's HTTP/1.1 codec polls its one stream in the connection's task): a request
    /// waiting upstream then registers no timer of its own. `None` where hyper runs streams.
    stream_wake: Option<Cell<Option<Instant>>>,
    /// Requests received so far (for `max_requests_per_connection`).
    requests: Cell<u32>,
}

impl ConnectionContext {
    /// Counts a request. The one that reaches `max_requests_per_connection` drains the
    /// connection: its response says `connection: close` (HTTP/1.1) or a GOAWAY goes out
    /// (HTTP/2), as Envoy's.
    fn count_request(&self) {
        let requests = self.requests.get().saturating_add(1);
        self.requests.set(requests);
        let max = self.shared.max_requests_per_connection;
        if max.is_some_and(|max| requests >= max) && !self.draining.get() {
            self.shared.stats.downstream_cx_max_requests_reached.inc();
            self.draining.set(true);
        }
    }

    /// Whether the connection's own timer polls the stream again when it asks
    /// ([`Self::wake_stream_by`]); otherwise the stream keeps a timer of its own.
    pub fn polls_stream_on_time(&self) -> bool {
        self.stream_wake.is_some()
    }

    /// Asks for the stream to be polled again by `at` (see [`Self::polls_stream_on_time`]).
    pub fn wake_stream_by(&self, at: Instant) {
        if let Some(wake) = &self.stream_wake {
            wake.set(Some(wake.get().map_or(at, |earlier| earlier.min(at))));
        }
    }

    /// The time the stream asked to be polled again by, if it did since the last call.
    fn take_stream_wake(&self) -> Option<Instant> {
        self.stream_wake.as_ref().and_then(Cell::take)
    }
}

/// Keeps `downstream_cx_active` and friends right on every way out.
struct ConnectionGuard<'a> {
    stats: &'a HcmStats,
    http2: bool,
    /// Counted in `downstream_cx_ssl_active` (the listener terminated TLS).
    ssl: bool,
    started: Instant,
    local_close: bool,
    active_streams_at_close: u32,
}

/// A [`ConnectionGuard`]'s state while its connection is parked.
struct GuardState {
    http2: bool,
    ssl: bool,
    started: Instant,
    local_close: bool,
}

impl<'a> ConnectionGuard<'a> {
    fn new(stats: &'a HcmStats, state: GuardState) -> Self {
        let GuardState { http2, ssl, started, local_close } = state;
        ConnectionGuard { stats, http2, ssl, started, local_close, active_streams_at_close: 0 }
    }

    /// The connection parks: it stays counted, and its parked state keeps this.
    fn into_state(self) -> GuardState {
        let state =
            GuardState { http2: self.http2, ssl: self.ssl, started: self.started, local_close: self.local_close };
        std::mem::forget(self);
        state
    }

    /// Who closed the connection, as its filters hear it.
    fn close(&mut self, context: &ConnectionContext) -> ConnectionEvent {
        self.active_streams_at_close = context.active_streams.get();
        if self.local_close {
            ConnectionEvent::LocalClose
        } else {
            ConnectionEvent::RemoteClose
        }
    }
}

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        let s = self.stats;
        s.downstream_cx_active.dec();
        if self.http2 {
            s.downstream_cx_http2_active.dec();
        } else {
            s.downstream_cx_http1_active.dec();
        }
        if self.ssl {
            s.downstream_cx_ssl_active.dec();
        }
        s.downstream_cx_destroy.inc();
        if self.local_close {
            s.downstream_cx_destroy_local.inc();
        } else {
            s.downstream_cx_destroy_remote.inc();
        }
        if self.active_streams_at_close > 0 {
            s.downstream_cx_destroy_active_rq.inc();
            if self.local_close {
                s.downstream_cx_destroy_local_active_rq.inc();
            } else {
                s.downstream_cx_destroy_remote_active_rq.inc();
            }
        }
        s.downstream_cx_length_ms.record(clock::since(self.started).as_millis() as u64);
    }
}

/// Whether the bytes start with the HTTP/2 connection preface (h2c prior knowledge). Reads
/// until it can tell; `None` when the peer closed first.
async fn sniff_http2(
    socket: &mut TransportSocket,
    buffered: &mut BytesMut,
    rx: &legate_stats::Counter,
) -> Option<bool> {
    loop {
        if let Some(http2) = preface_seen(buffered) {
            return Some(http2);
        }
        match socket.read_buf(buffered).await {
            Ok(0) | Err(_) => return None,
            Ok(read) => rx.add(read as u64),
        }
    }
}

/// Whether `buffered` starts with the HTTP/2 preface, once it can tell.
fn preface_seen(buffered: &[u8]) -> Option<bool> {
    let n = buffered.len().min(H2_PREFACE.len());
    if buffered.get(..n) != H2_PREFACE.get(..n) {
        Some(false)
    } else {
        (n == H2_PREFACE.len()).then_some(true)
    }
}

/// Only the socket of hyper's parts: the rest goes now (its read buffer, even empty, holds an
/// 8 KiB allocation), not at the end of the caller's scope.
fn socket_of<I, S>(parts: hyper::server::conn::http1::Parts<I, S>) -> I {
    parts.io
}

/// Cleartext AUTO codec: whether the connection starts with the HTTP/2 preface. A connection
/// that has sent nothing yet is idle: the idle timeout and a drain end it here too.
async fn detect_http2(
    shared: &HttpConnectionManagerShared,
    worker: &WorkerContext,
    socket: &mut TransportSocket,
    buffered: &mut BytesMut,
) -> Result<bool, ConnectionEvent> {
    let stats = &shared.stats;
    // Most clients send their first bytes with the connection: what is there already decides
    // without the idle timer and the drain wait below (a timer made, armed and dropped for
    // every connection).
    if buffered.is_empty() {
        let room = crate::network::transport_socket::MAX_READ;
        match std::future::poll_fn(|cx| std::task::Poll::Ready(socket.poll_read_append(cx, buffered, room, false)))
            .await
        {
            std::task::Poll::Ready(Ok(0) | Err(_)) => return Err(ConnectionEvent::RemoteClose),
            std::task::Poll::Ready(Ok(read)) => stats.downstream_cx_rx_bytes_total.add(read as u64),
            std::task::Poll::Pending => {}
        }
    }
    if let Some(http2) = preface_seen(buffered) {
        return Ok(http2);
    }
    let sniff = sniff_http2(socket, buffered, &stats.downstream_cx_rx_bytes_total);
    let idle = async {
        match shared.idle_timeout {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    // A filter chain drain leaves it alone: it closes when the drain time is over. So does a
    // graceful server drain while the listeners still accept: its first request is served,
    // answered `connection: close`.
    let mut waiter = DrainWaiter::new(&worker.drains);
    let drain = std::future::poll_fn(|cx| loop {
        std::task::ready!(waiter.poll_announced(cx));
        let drains = waiter.drains();
        if drains.server_draining() && drains.listeners_stopped() {
            return std::task::Poll::Ready(());
        }
    });
    tokio::select! {
        sniffed = sniff => sniffed.ok_or(ConnectionEvent::RemoteClose),
        () = idle => {
            stats.downstream_cx_idle_timeout.inc();
            Err(ConnectionEvent::LocalClose)
        }
        () = drain => {
            stats.downstream_cx_drain_close.inc();
            Err(ConnectionEvent::LocalClose)
        }
    }
}

/// What a connection starts from. Boxed and moved out at once: an `async fn` keeps its
/// arguments for as long as it runs, and this future lives as long as the connection.
struct Start {
    shared: Arc<HttpConnectionManagerShared>,
    worker: Rc<WorkerContext>,
    info: ConnectionInfo,
    buffer_limit: usize,
    socket: TransportSocket,
    buffered: BytesMut,
}

/// The codec a connection speaks, with its socket.
enum Codec {
    /// legate's own HTTP/1.1 codec.
    Http1(Rc<ServerConn>),
    /// hyper: HTTP/2, and HTTP/1.1 with `header_key_format`.
    Hyper(Box<CountingIo<TransportSocket>>),
}

/// Chooses the codec (the preface sniffed when the config allows both) and makes the
/// connection's context.
async fn open(start: Box<Start>) -> Result<(Rc<ConnectionContext>, Codec), ConnectionEvent> {
    let Start { shared, worker, info, buffer_limit, mut socket, mut buffered } = *start;
    let stats = &shared.stats;
    // TCP_NODELAY is already set: every accepted connection gets it (`start_connection`).
    // Over TLS, ALPN settles the codec for AUTO (Envoy: "h2" → HTTP/2, anything else
    // negotiated → HTTP/1.1); without ALPN the preface is sniffed as for cleartext.
    let alpn = info.ssl.as_ref().and_then(|ssl| ssl.alpn.as_deref());
    let http2 = match shared.config.codec_type {
        CodecType::Http1 => false,
        CodecType::Http2 => true,
        _ if alpn == Some("h2") => true,
        _ if alpn.is_some() => false,
        _ => detect_http2(&shared, &worker, &mut socket, &mut buffered).await?,
    };
    stats.downstream_cx_total.inc();
    stats.downstream_cx_active.inc();
    if info.ssl.is_some() {
        stats.downstream_cx_ssl_total.inc();
        stats.downstream_cx_ssl_active.inc();
    }
    if http2 {
        stats.downstream_cx_http2_total.inc();
        stats.downstream_cx_http2_active.inc();
    } else {
        stats.downstream_cx_http1_total.inc();
        stats.downstream_cx_http1_active.inc();
    }
    // hyper serves HTTP/1.1 only where header names keep a case of their own
    // (`header_key_format`): it records the client's case where only its codecs can read it.
    let case_kept = shared
        .config
        .http_protocol_options
        .as_ref()
        .is_some_and(|o| o.proper_case_headers() || o.preserve_header_case());
    let codec = if !http2 && !case_kept {
        let limits = Limits { max_head: shared.max_request_headers_bytes, max_headers: shared.max_headers_count };
        let (rx, tx) = (stats.downstream_cx_rx_bytes_total.clone(), stats.downstream_cx_tx_bytes_total.clone());
        Codec::Http1(Rc::new(ServerConn::new(socket, buffered, rx, tx, limits)))
    } else {
        let (rx, tx) = (stats.downstream_cx_rx_bytes_total.clone(), stats.downstream_cx_tx_bytes_total.clone());
        Codec::Hyper(Box::new(CountingIo::new(socket, buffered, rx, tx)))
    };
    let context = Rc::new(ConnectionContext {
        shared,
        worker,
        info,
        http2,
        buffer_limit,
        active_streams: Cell::new(0),
        idle_since: Cell::new(Some(clock::now())),
        draining: Cell::new(false),
        stream_wake: matches!(codec, Codec::Http1(_)).then(|| Cell::new(None)),
        requests: Cell::new(0),
    });
    Ok((context, codec))
}

async fn serve(start: Box<Start>) -> TakenOverEnd {
    // Boxed: its state is needed only until the codec is known.
    let (context, codec) = match Box::pin(open(start)).await {
        Ok(opened) => opened,
        Err(event) => return TakenOverEnd::Closed(event),
    };
    let stats = &context.shared.stats;
    let mut guard = ConnectionGuard {
        stats,
        http2: context.http2,
        ssl: context.info.ssl.is_some(),
        started: clock::now(),
        local_close: false,
        active_streams_at_close: 0,
    };
    let mut draining = Draining::new(&context);
    let mut timeline = Timeline { started: clock::now(), shutdown_at: None, chain_drained: false, park_late: false };
    match codec {
        Codec::Http1(conn) => {
            let end = codec_http1::serve(&context, conn, &mut draining, &mut timeline, &mut guard).await;
            let guard = guard.into_state();
            return parked::after_http1(end, context, draining, timeline, guard);
        }
        Codec::Hyper(io) => {
            // Boxed: the connection's future stays as small as the common case needs.
            let result = Box::pin(serve_hyper(&context, *io, &mut draining, &mut timeline, &mut guard)).await;
            if let Err(e) = result {
                if e.is_timeout() {
                    stats.downstream_rq_header_timeout.inc();
                    guard.local_close = true;
                } else if e.is_parse() || e.is_parse_too_large() || e.is_parse_status() {
                    stats.downstream_cx_protocol_error.inc();
                    guard.local_close = true;
                    if !context.http2 {
                        // hyper answered the refused head itself (no body, and a URI too long
                        // reads as a head too large here): counted and logged as legate's
                        // own codec's replies are.
                        let (status, details) = match e.is_parse_too_large() {
                            true => (http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "http1.headers_too_large"),
                            false => (http::StatusCode::BAD_REQUEST, "http1.codec_error"),
                        };
                        let reply = crate::http::LocalReply::new(status, "", details)
                            .with_flag(crate::http::ResponseFlag::DownstreamProtocolError);
                        let info = codec_http1::codec_stream_info(&context, clock::now(), &reply);
                        codec_http1::account_codec_reply(&context, info, status.as_u16(), 0);
                    }
                }
                tracing::debug!(connection = context.info.id, error = %e, "downstream connection ended");
            }
        }
    }
    TakenOverEnd::Closed(guard.close(&context))
}

/// A connection served by hyper: HTTP/2, and HTTP/1.1 with `header_key_format`.
async fn serve_hyper(
    context: &Rc<ConnectionContext>,
    io: CountingIo<TransportSocket>,
    draining: &mut Draining,
    timeline: &mut Timeline,
    guard: &mut ConnectionGuard<'_>,
) -> Result<(), hyper::Error> {
    let stats = &context.shared.stats;
    let service = {
        let context = context.clone();
        // Boxed: hyper moves a stream's future several times (into its HTTP/2 stream, to the
        // executor, into the task), and this one weighs ~6 KB; callgrind counted ~5k
        // instructions of copying per HTTP/2 request unboxed. The boxes are the worker's,
        // reused from stream to stream.
        let spare = context.worker.spare_stream_boxes();
        service_fn(move |request| {
            context.count_request();
            let context = context.clone();
            stream_boxes::Recycled::new(&spare, move || active_stream::handle(context, request))
        })
    };
    let shared = &context.shared;
    if context.http2 {
        let mut builder = http2::Builder::new(LocalExec);
        let h2 = shared.config.http2_protocol_options.clone().unwrap_or_default();
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(h2.max_concurrent_streams())
            .initial_stream_window_size(h2.initial_stream_window_size())
            .initial_connection_window_size(h2.initial_connection_window_size())
            .max_header_list_size(shared.max_request_headers_bytes as u32)
            .max_pending_accept_reset_streams(Some(100))
            .max_local_error_reset_streams(Some(1024));
        if h2.allow_connect {
            builder.enable_connect_protocol();
        }
        let (io, lent) = LentIo::lend(io);
        let io = H2Guard::new(io, End::Server, shared.http2_flood_limits, shared.http2_stats().clone());
        // Boxed, as below: the connection's future stays small whatever hyper's state weighs.
        let mut connection = boxed_out_of_line(|| builder.serve_connection(TokioIo::new(io), service));
        let ended = Box::pin(run_connection(context, connection.as_mut(), None, draining, timeline, guard, |c| {
            c.graceful_shutdown()
        }))
        .await
        .map(|_| ());
        drop(connection);
        if let Ok(io) = Rc::try_unwrap(lent) {
            let mut io = io.into_inner();
            Box::pin(delayed_close(shared, linger(&mut io))).await;
        }
        ended
    } else {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            // The guard below runs request_headers_timeout, with Envoy's 408 reply.
            .header_read_timeout(None)
            .max_headers(shared.max_headers_count)
            .max_header_size(shared.max_request_headers_bytes)
            .max_buf_size(shared.max_request_headers_bytes.max(8192) + 8192)
            .half_close(false)
            .keep_alive(true);
        if let Some(http1) = &shared.config.http_protocol_options {
            builder.title_case_headers(http1.proper_case_headers()).preserve_header_case(http1.preserve_header_case());
        }
        // Smuggling shapes hyper would accept are refused before it parses them.
        let mut io = H1Guard::new(io, shared.max_request_headers_bytes + 8192)
            .with_header_timeout(shared.request_headers_timeout, stats.downstream_rq_header_timeout.clone());
        let park = io.park_signals();
        loop {
            let mut connection =
                boxed_out_of_line(|| builder.serve_connection(TokioIo::new(io), service.clone()).with_upgrades());
            // Boxed, as is the wait while parked: the connection's own future stays small.
            let ended =
                Box::pin(run_connection(context, connection.as_mut(), Some(&park), draining, timeline, guard, |c| {
                    c.graceful_shutdown()
                }))
                .await;
            match ended {
                Ok(Ended::Parked) => {
                    park.set_parking(false);
                    // hyper gives back the socket; bytes it read and did not parse would belong
                    // to a message it was still in, so such a connection is not resumed.
                    let Some(parts) = Pin::into_inner(connection).into_parts() else { break Ok(()) };
                    if !parts.read_buf.is_empty() {
                        guard.local_close = true;
                        break Ok(());
                    }
                    io = socket_of(parts).into_inner();
                    io.release_buffers();
                    if !Box::pin(park_idle(context, &mut io, draining, timeline, guard)).await {
                        break Ok(());
                    }
                }
                ended => {
                    if let Some(parts) = Pin::into_inner(connection).into_parts() {
                        let mut io = socket_of(parts).into_inner();
                        Box::pin(delayed_close(shared, linger(io.get_mut()))).await;
                    }
                    break ended.map(|_| ());
                }
            }
        }
    }
}

/// `delayed_close_timeout`: `linger` (the socket's side: FIN, then reading until the client
/// closes too) for at most that long; `downstream_cx_delayed_close_timeout` counts the waits
/// that ran out. Every way a downstream connection closes goes through here.
async fn delayed_close(shared: &HttpConnectionManagerShared, linger: impl std::future::Future<Output = ()>) {
    let delay = shared.delayed_close_timeout;
    if !delay.is_zero() && tokio::time::timeout(delay, linger).await.is_err() {
        shared.stats.downstream_cx_delayed_close_timeout.inc();
    }
}

/// `Box::pin(make())`, with `make`'s value built in this function's stack frame. hyper's
/// connections (1–1.5 KB) built in [`serve_hyper`] itself made its frame 5.8 KB, and every
/// poll of an HTTP/2 connection (and of an HTTP/1.1 one served by hyper) runs below it: deeper
/// stack, more of it past the first-level cache.
#[inline(never)]
fn boxed_out_of_line<F>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    Box::pin(make())
}

/// What tells a connection to drain: the server (SIGTERM, `/drain_listeners`) or its filter
/// chain (a listener update replaced or removed it).
struct Draining {
    waiter: DrainWaiter,
    chain: Option<tokio::sync::watch::Receiver<DrainPhase>>,
    /// The server's drain was reported.
    server_seen: bool,
}

/// Who asked a connection to drain.
#[derive(PartialEq, Eq)]
enum DrainRequest {
    Server,
    FilterChain,
}

impl Draining {
    fn new(context: &ConnectionContext) -> Self {
        Draining {
            waiter: DrainWaiter::new(&context.worker.drains),
            chain: context.info.drain.clone(),
            server_seen: false,
        }
    }

    /// Ready with who wants the connection drained: the server once, its filter chain while
    /// `chain` (the caller stops asking once it heard). Cheap to poll on every wake-up.
    fn poll_next(&mut self, cx: &mut std::task::Context<'_>, chain: bool) -> std::task::Poll<DrainRequest> {
        loop {
            std::task::ready!(self.waiter.poll_announced(cx));
            if !self.server_seen && self.waiter.drains().server_draining() {
                self.server_seen = true;
                return std::task::Poll::Ready(DrainRequest::Server);
            }
            if chain && self.chain.as_ref().is_some_and(|c| *c.borrow() >= DrainPhase::Draining) {
                return std::task::Poll::Ready(DrainRequest::FilterChain);
            }
        }
    }

    async fn next(&mut self, chain: bool) -> DrainRequest {
        std::future::poll_fn(|cx| self.poll_next(cx, chain)).await
    }
}

/// How long an HTTP/1.1 keep-alive connection idles before its request state is put aside
/// (legate's codec: the request loop and buffers; hyper's: its whole connection): freed and
/// made again when the next request arrives, so idle connections cost little memory (nginx
/// frees its request buffers the same way). Clients that send their next request sooner, as
/// under load, never pay for the rebuild.
const PARK_AFTER: Duration = Duration::from_millis(20);

/// An HTTP/1.1 connection over plain TCP idle for `PARK_AFTER` leaves its task for the
/// worker's park (see [`crate::worker::park`]), unless its client came back within this
/// long the last time it was parked: then it idles this long in its task first. A round trip
/// through the park costs a few system calls and a new task (a client pausing 30 ms between
/// its requests paid 3.4 µs more per request, 17 %, when every pause parked), so a client
/// that paces its requests keeps its task, and a connection that has gone quiet, or a burst
/// of new ones that went idle at once, costs its memory for no longer than `PARK_AFTER`.
const PARK_LATE_AFTER: Duration = Duration::from_millis(250);

/// How a run of hyper's connection ended.
enum Ended {
    Closed,
    /// hyper was put aside while the connection idles.
    Parked,
}

/// A connection's lifetime state, kept while hyper is put aside and made again.
struct Timeline {
    started: Instant,
    /// When a graceful shutdown began (drain, idle timeout, `max_connection_duration`).
    shutdown_at: Option<Instant>,
    /// An HTTP/1.1 connection of a draining filter chain is not cut while idle (a client may be
    /// sending on it right now): its next response says `connection: close`, as Envoy's.
    chain_drained: bool,
    /// Its client came back soon after the connection was last parked: it waits
    /// `PARK_LATE_AFTER` before parking again.
    park_late: bool,
}

/// Whether the connection must close for its idle timeout or `max_connection_duration`,
/// counting the stat that says which.
fn idle_or_too_old(context: &ConnectionContext, timeline: &Timeline, now: Instant) -> bool {
    let shared = &context.shared;
    let idle_for = context.idle_since.get().map(|at| now.saturating_duration_since(at));
    let idle = context.active_streams.get() == 0
        && timeline.shutdown_at.is_none()
        && shared.idle_timeout.zip(idle_for).is_some_and(|(d, idle_for)| idle_for >= d);
    let too_old =
        timeline.shutdown_at.is_none() && shared.max_connection_duration.is_some_and(|d| now >= timeline.started + d);
    if idle {
        shared.stats.downstream_cx_idle_timeout.inc();
    } else if too_old {
        shared.stats.downstream_cx_max_duration_reached.inc();
    }
    idle || too_old
}

/// The next time an idle check is due: the idle timeout (armed from now while streams are
/// active) or `max_connection_duration`.
fn next_idle_check(context: &ConnectionContext, timeline: &Timeline, now: Instant) -> [Option<Instant>; 2] {
    let shared = &context.shared;
    let idle_from = match context.active_streams.get() {
        0 => context.idle_since.get().unwrap_or(now),
        _ => now,
    };
    let idle_deadline = shared.idle_timeout.map(|d| idle_from + d).filter(|_| timeline.shutdown_at.is_none());
    let duration_deadline =
        shared.max_connection_duration.map(|d| timeline.started + d).filter(|_| timeline.shutdown_at.is_none());
    [idle_deadline, duration_deadline]
}

/// Counts a drain request and marks the connection as draining; `true` when it must shut
/// down now. An HTTP/1.1 connection of a draining filter chain is not cut (a client may be
/// sending on it right now): its next response says `connection: close`, as Envoy's.
fn note_drain(
    drain: DrainRequest,
    context: &ConnectionContext,
    timeline: &mut Timeline,
    guard: &mut ConnectionGuard<'_>,
) -> bool {
    context.shared.stats.downstream_cx_drain_close.inc();
    guard.local_close = true;
    context.draining.set(true);
    if drain == DrainRequest::FilterChain && !context.http2 {
        timeline.chain_drained = true;
        return false;
    }
    true
}

/// Waits, without hyper, until a parked connection has bytes to read (`true`) or must close
/// (`false`: idle timeout, `max_connection_duration`, server drain).
async fn park_idle(
    context: &Rc<ConnectionContext>,
    io: &mut H1Guard<CountingIo<TransportSocket>>,
    draining: &mut Draining,
    timeline: &mut Timeline,
    guard: &mut ConnectionGuard<'_>,
) -> bool {
    loop {
        let now = Instant::now();
        let next = next_idle_check(context, timeline, now).into_iter().flatten().min();
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let close = tokio::select! {
            readable = io.get_ref().get_ref().readable() => return readable.is_ok(),
            () = sleep => idle_or_too_old(context, timeline, Instant::now()),
            drain = draining.next(!timeline.chain_drained) => note_drain(drain, context, timeline, guard),
        };
        if close {
            guard.local_close = true;
            // FIN (and TLS close_notify), as hyper's own shutdown would; bounded in case the
            // peer does not read.
            let _ = tokio::time::timeout(Duration::from_secs(1), tokio::io::AsyncWriteExt::shutdown(io)).await;
            return false;
        }
    }
}

/// Drives a hyper connection, starting its graceful shutdown on drain, idle timeout or
/// `max_connection_duration`, and putting it aside (HTTP/1.1, `park`) once idle.
async fn run_connection<C, F>(
    context: &Rc<ConnectionContext>,
    mut connection: std::pin::Pin<&mut C>,
    park: Option<&ParkSignals>,
    draining: &mut Draining,
    timeline: &mut Timeline,
    guard: &mut ConnectionGuard<'_>,
    graceful_shutdown: F,
) -> Result<Ended, hyper::Error>
where
    C: std::future::Future<Output = Result<(), hyper::Error>>,
    F: Fn(std::pin::Pin<&mut C>),
{
    let shared = &context.shared;
    let mut parking = false;
    // One timer for the connection, re-armed only when it fires: streams starting and ending
    // just update `context.idle_since`, without waking this loop (it would be once per request).
    let sleep = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(sleep);
    loop {
        let now = Instant::now();
        let [idle_deadline, duration_deadline] = next_idle_check(context, timeline, now);
        let force_close = timeline.shutdown_at.map(|at| at + shared.drain_timeout);
        let park_deadline = park
            .filter(|_| !parking && timeline.shutdown_at.is_none() && context.active_streams.get() == 0)
            .map(|_| context.idle_since.get().unwrap_or(now) + PARK_AFTER);
        let next = [idle_deadline, duration_deadline, force_close, park_deadline].into_iter().flatten().min();
        if let Some(at) = next {
            sleep.as_mut().reset(at.into());
        }
        // Biased, hyper's connection first: polled on every wake-up of the connection.
        tokio::select! {
            biased;
            result = connection.as_mut() => {
                return result.map(|()| if parking { Ended::Parked } else { Ended::Closed });
            }
            () = &mut sleep, if next.is_some() => {
                let now = Instant::now();
                if force_close.is_some_and(|at| now >= at) {
                    // Streams did not finish within drain_timeout.
                    guard.local_close = true;
                    return Ok(Ended::Closed);
                }
                if idle_or_too_old(context, timeline, now) {
                    guard.local_close = true;
                    context.draining.set(true);
                    timeline.shutdown_at = Some(now);
                    graceful_shutdown(connection.as_mut());
                } else if let Some(park) = park.filter(|p| p.at_rest() && !parking) {
                    let idle_for = context.idle_since.get().map(|at| now.saturating_duration_since(at));
                    if context.active_streams.get() == 0
                        && timeline.shutdown_at.is_none()
                        && idle_for.is_some_and(|d| d >= PARK_AFTER)
                    {
                        // hyper closes an idle connection at once; its shutdown of the socket
                        // is skipped (`ParkSignals::parking`).
                        parking = true;
                        park.set_parking(true);
                        graceful_shutdown(connection.as_mut());
                    }
                }
            }
            drain = draining.next(!timeline.chain_drained), if timeline.shutdown_at.is_none() => {
                if parking {
                    // Closing after all: hyper's shutdown must reach the socket.
                    parking = false;
                    if let Some(park) = park {
                        park.set_parking(false);
                    }
                }
                if note_drain(drain, context, timeline, guard) {
                    timeline.shutdown_at = Some(Instant::now());
                    graceful_shutdown(connection.as_mut());
                }
            }
            // HTTP/2 reached `max_requests_per_connection`: GOAWAY, and the streams finish.
            // (Counted as hyper takes a stream, in the poll of the connection above.)
            () = std::future::poll_fn(|_| match context.draining.get() {
                true => std::task::Poll::Ready(()),
                false => std::task::Poll::Pending,
            }), if context.http2 && timeline.shutdown_at.is_none() => {
                timeline.shutdown_at = Some(Instant::now());
                graceful_shutdown(connection.as_mut());
            }
        }
    }
}
