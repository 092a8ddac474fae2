//! `envoy.filters.network.tcp_proxy`: relays a downstream connection's bytes to an upstream
//! host and back (Envoy's "TCP proxy" architecture page). Terminal.
//!
//! Lifecycle of the upstream side, [`Upstream`]:
//! `on_new_connection` picks the cluster (weighted when `weighted_clusters`), a host from this
//! worker's load balancer and a `max_connections` breaker slot, then starts connecting with
//! the cluster's `connect_timeout`, downstream reading disabled → `Connecting` → on failure or
//! timeout, another attempt up to `max_connect_attempts`, then the downstream is closed →
//! `Connected`: bytes flow both ways; an end of stream on one side half-closes the other
//! (`enable_half_close`) → closed when either side resets, on `idle_timeout` (default 1 h) or
//! `max_downstream_connection_duration`.
//!
//! Back-pressure: downstream bytes wait in `upstream_write` for the upstream socket; above the
//! cluster's `per_connection_buffer_limit_bytes` downstream reading is disabled until it drains.
//! Upstream bytes are read only while the downstream write buffer is below the listener's
//! limit. A slow reader on one side therefore pauses the other side's reading.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use legate_config::cluster::RoutingPriority;
use legate_config::filters::network::tcp_proxy::TcpProxy as TcpProxyConfig;
use legate_stats::Scope;
use tokio::time::Sleep;

use crate::network::{
    ConnectionCloseType, ConnectionEvent, FilterStatus, ReadFilter, ReadFilterCallbacks, TransportSocket,
};
use crate::tls::client::{Alpn, ConnectError};
use crate::upstream::cluster_manager::ChooseHostError;
use crate::upstream::outlier_detection::OutlierResult;
use crate::upstream::upstream_cx::UpstreamCx;
use crate::upstream::Cluster;
use crate::worker::{clock, WorkerContext};

legate_stats::stats! {
    /// `tcp.<stat_prefix>.*`, Envoy's ALL_TCP_PROXY_STATS.
    pub struct TcpProxyStats {
        counter downstream_cx_no_route,
        counter downstream_cx_rx_bytes_total,
        gauge downstream_cx_rx_bytes_buffered,
        counter downstream_cx_total,
        counter downstream_cx_tx_bytes_total,
        gauge downstream_cx_tx_bytes_buffered,
        counter downstream_flow_control_paused_reading_total,
        counter downstream_flow_control_resumed_reading_total,
        counter idle_timeout,
        counter max_downstream_connection_duration,
        counter upstream_flush_total,
        gauge upstream_flush_active,
    }
}

/// Bytes asked of the upstream socket per read, as the downstream side reads: 16 KiB, and
/// 64 KiB while the flow is busy.
const UPSTREAM_READ_SIZE: usize = crate::network::transport_socket::MAX_READ;
const UPSTREAM_BUSY_READ_SIZE: usize = crate::network::transport_socket::MAX_BUSY_READ;

/// The filter's config, shared by every connection on every worker.
pub struct TcpProxyShared {
    /// Cluster names with their weights (one entry with weight 1 for `cluster`).
    clusters: Vec<(String, u32)>,
    total_weight: u64,
    idle_timeout: Option<Duration>,
    max_connect_attempts: u32,
    max_downstream_connection_duration: Option<Duration>,
    /// `tunneling_config`: the `CONNECT` request, written once.
    tunnel: Option<bytes::Bytes>,
    pub stats: TcpProxyStats,
}

impl TcpProxyShared {
    pub fn new(config: &TcpProxyConfig, scope: &Scope) -> Self {
        let clusters: Vec<(String, u32)> = match (&config.cluster, &config.weighted_clusters) {
            (Some(c), _) => vec![(c.clone(), 1)],
            (None, Some(w)) => w.clusters.iter().map(|c| (c.name.clone(), c.weight)).collect(),
            (None, None) => Vec::new(),
        };
        TcpProxyShared {
            total_weight: clusters.iter().map(|(_, w)| u64::from(*w)).sum(),
            clusters,
            idle_timeout: config.idle_timeout(),
            max_connect_attempts: config.max_connect_attempts(),
            max_downstream_connection_duration: config.max_downstream_connection_duration.map(|d| d.0),
            tunnel: config.tunneling_config.as_ref().map(connect_request),
            stats: TcpProxyStats::new(&scope.scope(&format!("tcp.{}", config.stat_prefix))),
        }
    }

    fn pick_cluster(&self) -> Option<&str> {
        if self.clusters.len() <= 1 {
            return self.clusters.first().map(|(c, _)| c.as_str());
        }
        let mut pick = fastrand::u64(0..self.total_weight.max(1));
        for (name, weight) in &self.clusters {
            if pick < u64::from(*weight) {
                return Some(name);
            }
            pick -= u64::from(*weight);
        }
        self.clusters.last().map(|(c, _)| c.as_str())
    }
}

/// A connected upstream, with the bytes that came after a tunnel's answer.
type Connected = (TransportSocket, BytesMut);

/// The upstream side of one proxied connection.
enum Upstream {
    /// Not started yet, or given up.
    None,
    /// A connect attempt is under way.
    Connecting {
        /// TCP, then the cluster's transport socket handshake (TLS), then the tunnel's
        /// `CONNECT`; with the bytes that came after the tunnel's answer.
        connect: Pin<Box<dyn Future<Output = Result<Connected, ConnectError>>>>,
        deadline: Pin<Box<Sleep>>,
        cx: UpstreamCx,
    },
    /// Bytes flow.
    Connected { stream: TransportSocket, cx: UpstreamCx },
}

pub struct TcpProxy {
    shared: Arc<TcpProxyShared>,
    worker: Rc<WorkerContext>,
    upstream: Upstream,
    cluster: Option<Arc<Cluster>>,
    connect_attempts: u32,
    /// Downstream bytes not yet written upstream.
    upstream_write: BytesMut,
    /// The downstream's end of stream, to pass upstream after `upstream_write`.
    upstream_write_end: bool,
    upstream_write_shutdown: bool,
    /// The upstream sent its end of stream.
    upstream_read_end: bool,
    /// Downstream reading is disabled by us because `upstream_write` is over the limit.
    downstream_paused: bool,
    /// Upstream reading is paused because the downstream write buffer is over the limit.
    upstream_paused: bool,
    /// The last upstream read filled its room (see `read_into`).
    upstream_busy: bool,
    idle_timer: Option<Pin<Box<Sleep>>>,
    last_activity: Instant,
    max_duration_timer: Option<Pin<Box<Sleep>>>,
    reported_upstream_buffered: u64,
    reported_tx_buffered: u64,
}

impl TcpProxy {
    pub fn new(shared: Arc<TcpProxyShared>, worker: Rc<WorkerContext>) -> Self {
        TcpProxy {
            shared,
            worker,
            upstream: Upstream::None,
            cluster: None,
            connect_attempts: 0,
            upstream_write: BytesMut::new(),
            upstream_write_end: false,
            upstream_write_shutdown: false,
            upstream_read_end: false,
            downstream_paused: false,
            upstream_paused: false,
            upstream_busy: false,
            idle_timer: None,
            last_activity: clock::now(),
            max_duration_timer: None,
            reported_upstream_buffered: 0,
            reported_tx_buffered: 0,
        }
    }

    /// Starts one connect attempt; closes the downstream when no attempt can be made. Each
    /// attempt picks its cluster (weighted) and host again, as Envoy's `pickRoute`.
    fn connect(&mut self, cb: &mut ReadFilterCallbacks<'_>) {
        let Some(name) = self.shared.pick_cluster().map(str::to_string) else {
            self.shared.stats.downstream_cx_no_route.inc();
            cb.close(ConnectionCloseType::NoFlush);
            return;
        };
        let Some(cluster) = self.worker.cluster_manager.get(&name) else {
            self.shared.stats.downstream_cx_no_route.inc();
            cb.close(ConnectionCloseType::NoFlush);
            return;
        };
        // The breaker before the host, as Envoy's `establishUpstreamConnection`: a full one
        // is an overflow whatever the hosts' health, and picks no host.
        let Some(breaker) = cluster.breakers(RoutingPriority::Default).connections.try_acquire() else {
            cluster.stats().upstream_cx_overflow().inc();
            cb.close(ConnectionCloseType::NoFlush);
            return;
        };
        let host = match self.worker.cluster_manager.choose_host(&name) {
            Ok((_, host)) => host,
            Err(ChooseHostError::NoCluster) => {
                self.shared.stats.downstream_cx_no_route.inc();
                cb.close(ConnectionCloseType::NoFlush);
                return;
            }
            Err(ChooseHostError::NoHost(cluster)) => {
                cluster.stats().upstream_cx_none_healthy().inc();
                cb.close(ConnectionCloseType::NoFlush);
                return;
            }
        };
        // What waits for the upstream is counted under the cluster it now goes to.
        self.clear_upstream_gauge();
        self.cluster = Some(cluster.clone());
        self.connect_attempts += 1;
        tracing::debug!(connection = cb.info().id, cluster = %cluster.name, host = %host.address(), "tcp_proxy: connecting");
        let cx = UpstreamCx::new(cluster.clone(), host.clone(), breaker);
        let address = host.address();
        let connect_cluster = cluster.clone();
        let tunnel = self.shared.tunnel.clone();
        self.upstream = Upstream::Connecting {
            connect: Box::pin(async move {
                let mut stream = crate::tls::client::connect(&connect_cluster, address, Alpn::Configured, None).await?;
                let early = match tunnel {
                    Some(request) => open_tunnel(&mut stream, &request).await.map_err(ConnectError::Tcp)?,
                    None => BytesMut::new(),
                };
                Ok((stream, early))
            }),
            deadline: Box::pin(tokio::time::sleep(cluster.connect_timeout())),
            cx,
        };
    }

    /// A connect attempt failed: try again or give up.
    fn on_connect_failure(&mut self, cb: &mut ReadFilterCallbacks<'_>) {
        self.upstream = Upstream::None;
        if self.connect_attempts < self.shared.max_connect_attempts {
            self.connect(cb);
            return;
        }
        if let Some(cluster) = &self.cluster {
            cluster.stats().upstream_cx_connect_attempts_exceeded().inc();
        }
        cb.close(ConnectionCloseType::FlushWrite);
    }

    fn on_connected(
        &mut self,
        stream: TransportSocket,
        early: BytesMut,
        mut cx: UpstreamCx,
        cb: &mut ReadFilterCallbacks<'_>,
    ) {
        cx.connected(&mut self.last_activity);
        // What the tunnel's far end sent along with the proxy's answer (a server speaking
        // first) goes down at once.
        if !early.is_empty() {
            cb.write(early, false);
        }
        // The session's one result for outlier detection (Envoy's `onUpstreamConnection`).
        cx.cluster.outlier_result(&cx.host, OutlierResult::LocalOriginConnectSuccessFinal);
        self.upstream = Upstream::Connected { stream, cx };
        cb.read_disable(false);
    }

    /// Writes what the downstream sent to the upstream socket.
    fn flush_upstream(&mut self, cx: &mut Context<'_>, cb: &mut ReadFilterCallbacks<'_>) -> io::Result<()> {
        let Upstream::Connected { stream, cx: ucx } = &mut self.upstream else { return Ok(()) };
        while !self.upstream_write.is_empty() {
            match stream.poll_write_slice(cx, &self.upstream_write) {
                Poll::Pending => break,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Ready(Ok(n)) => {
                    let _ = self.upstream_write.split_to(n);
                    ucx.cluster.stats().upstream_cx_tx_bytes_total().add(n as u64);
                    self.last_activity = clock::now();
                }
            }
        }
        // TLS records still held by rustls.
        let flushed = match stream.poll_flush_records(cx) {
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Ready(Ok(())) => true,
            Poll::Pending => false,
        };
        if flushed && self.upstream_write.is_empty() && self.upstream_write_end && !self.upstream_write_shutdown {
            // A peer that already went away makes shutdown fail; the read side notices.
            if stream.poll_shutdown_write(cx).is_ready() {
                self.upstream_write_shutdown = true;
            }
        }
        if self.downstream_paused && self.upstream_write.len() <= ucx.cluster.per_connection_buffer_limit_bytes() / 2 {
            self.downstream_paused = false;
            self.shared.stats.downstream_flow_control_resumed_reading_total.inc();
            cb.read_disable(false);
        }
        if self.upstream_write.is_empty() && self.upstream_write.capacity() > 0 {
            self.upstream_write = BytesMut::new();
        }
        Ok(())
    }

    /// Reads from the upstream while the downstream can take more.
    fn read_upstream(&mut self, cx: &mut Context<'_>, cb: &mut ReadFilterCallbacks<'_>) -> io::Result<()> {
        let Upstream::Connected { stream, cx: ucx } = &mut self.upstream else { return Ok(()) };
        let limit = cb.buffer_limit();
        while !self.upstream_read_end {
            // Paused above the downstream's limit (its high watermark), resumed once it drained
            // to half (the low watermark), as Envoy's buffer watermarks.
            if self.upstream_paused && cb.write_buffer_len() > limit / 2 {
                return Ok(());
            }
            if cb.write_buffer_len() >= limit {
                self.upstream_paused = true;
                ucx.cluster.stats().upstream_flow_control_paused_reading_total().inc();
                return Ok(());
            }
            if self.upstream_paused {
                self.upstream_paused = false;
                ucx.cluster.stats().upstream_flow_control_resumed_reading_total().inc();
            }
            let size = if self.upstream_busy { UPSTREAM_BUSY_READ_SIZE } else { UPSTREAM_READ_SIZE };
            let room = (limit - cb.write_buffer_len()).clamp(1, size);
            // A buffer of exactly what arrived, read in place while the flow is busy.
            let mut buf = BytesMut::new();
            let read = match stream.poll_read_append(cx, &mut buf, room, self.upstream_busy) {
                Poll::Pending => {
                    self.upstream_busy = false;
                    return Ok(());
                }
                Poll::Ready(read) => read,
            };
            self.upstream_busy = read.as_ref().is_ok_and(|&n| n == room);
            match read.map(|n| (n, buf)) {
                Ok((0, _)) => {
                    self.upstream_read_end = true;
                    cb.write(BytesMut::new(), true);
                }
                Ok((n, buf)) => {
                    ucx.cluster.stats().upstream_cx_rx_bytes_total().add(n as u64);
                    self.shared.stats.downstream_cx_tx_bytes_total.add(n as u64);
                    self.last_activity = clock::now();
                    cb.write(buf, false);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn poll_timers(&mut self, cx: &mut Context<'_>, cb: &mut ReadFilterCallbacks<'_>) {
        if let (Some(timer), Some(timeout)) = (&mut self.idle_timer, self.shared.idle_timeout) {
            if timer.as_mut().poll(cx).is_ready() {
                let deadline = self.last_activity + timeout;
                if deadline <= clock::now() {
                    self.shared.stats.idle_timeout.inc();
                    self.idle_timer = None;
                    self.close_upstream(true);
                    cb.close(ConnectionCloseType::NoFlush);
                    return;
                }
                // Activity since the timer was armed: re-arm for the rest (cheaper than
                // resetting the timer on every read).
                timer.as_mut().reset(deadline.into());
                let _ = timer.as_mut().poll(cx);
            }
        }
        if let Some(timer) = &mut self.max_duration_timer {
            if timer.as_mut().poll(cx).is_ready() {
                self.shared.stats.max_downstream_connection_duration.inc();
                self.max_duration_timer = None;
                self.close_upstream(true);
                cb.close(ConnectionCloseType::NoFlush);
            }
        }
    }

    fn close_upstream(&mut self, local: bool) {
        match std::mem::replace(&mut self.upstream, Upstream::None) {
            Upstream::Connected { mut cx, .. } | Upstream::Connecting { mut cx, .. } => cx.closed_locally = local,
            Upstream::None => {}
        }
    }

    /// The bytes waiting for a socket: downstream ones in the downstream connection's write
    /// buffer (`tcp.<prefix>.downstream_cx_tx_bytes_buffered`), upstream ones for the upstream
    /// connection (`cluster.<name>.upstream_cx_tx_bytes_buffered`). What the downstream sent
    /// is taken from its read buffer at once (`downstream_cx_rx_bytes_buffered` stays 0).
    fn sync_buffer_gauges(&mut self, cb: &ReadFilterCallbacks<'_>) {
        let to_upstream = self.upstream_write.len() as u64;
        if let Some(cluster) = &self.cluster {
            let gauge = cluster.stats().upstream_cx_tx_bytes_buffered();
            adjust(|n| gauge.add(n), |n| gauge.sub(n), &mut self.reported_upstream_buffered, to_upstream);
        }
        let tx = cb.write_buffer_len() as u64;
        let gauge = &self.shared.stats.downstream_cx_tx_bytes_buffered;
        adjust(|n| gauge.add(n), |n| gauge.sub(n), &mut self.reported_tx_buffered, tx);
    }

    fn clear_upstream_gauge(&mut self) {
        if let Some(cluster) = &self.cluster {
            let gauge = cluster.stats().upstream_cx_tx_bytes_buffered();
            adjust(|n| gauge.add(n), |n| gauge.sub(n), &mut self.reported_upstream_buffered, 0);
        }
    }

    /// The gauges' share of a connection that ends.
    fn clear_buffer_gauges(&mut self) {
        self.clear_upstream_gauge();
        let gauge = &self.shared.stats.downstream_cx_tx_bytes_buffered;
        adjust(|n| gauge.add(n), |n| gauge.sub(n), &mut self.reported_tx_buffered, 0);
    }
}

/// Writes `data` and the end of stream to an upstream the downstream left; `false` when
/// `idle` passed without progress. A write error ends it too (nothing more can be done).
/// `tunneling_config`'s HTTP/1.1 request: `CONNECT <hostname>` with its `host` and
/// `headers_to_add`.
fn connect_request(tunnel: &legate_config::filters::network::tcp_proxy::TunnelingConfig) -> bytes::Bytes {
    let mut request = format!("CONNECT {0} HTTP/1.1\r\nhost: {0}\r\n", tunnel.hostname);
    for h in &tunnel.headers_to_add {
        request.push_str(&format!("{}: {}\r\n", h.header.key, h.header.value));
    }
    request.push_str("\r\n");
    bytes::Bytes::from(request)
}

/// Asks the upstream proxy for the tunnel; a 2xx opens it. Returns what came after the
/// answer's head.
async fn open_tunnel(stream: &mut TransportSocket, request: &[u8]) -> io::Result<BytesMut> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const MAX_HEAD: usize = 16 * 1024;
    stream.write_all(request).await?;
    let mut head = BytesMut::with_capacity(1024);
    loop {
        if stream.read_buf(&mut head).await? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the proxy closed before answering CONNECT"));
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&head) {
            Ok(httparse::Status::Complete(length)) => {
                let code = response.code.unwrap_or(0);
                if !(200..300).contains(&code) {
                    return Err(io::Error::other(format!("the proxy answered CONNECT with {code}")));
                }
                return Ok(head.split_off(length));
            }
            Ok(httparse::Status::Partial) if head.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => return Err(io::Error::other("CONNECT answer head too large")),
            Err(e) => return Err(io::Error::other(format!("malformed CONNECT answer: {e}"))),
        }
    }
}

async fn flush(mut stream: TransportSocket, data: &[u8], idle: Option<Duration>) -> bool {
    use tokio::io::AsyncWriteExt;
    let mut rest = data;
    while !rest.is_empty() {
        match within(idle, stream.write(rest)).await {
            None => return false,
            Some(Ok(0) | Err(_)) => return true,
            Some(Ok(n)) => rest = rest.get(n..).unwrap_or_default(),
        }
    }
    within(idle, stream.shutdown()).await.is_some()
}

/// `step`'s output, or `None` when `idle` passes first.
async fn within<T>(idle: Option<Duration>, step: impl Future<Output = T>) -> Option<T> {
    match idle {
        Some(idle) => tokio::time::timeout(idle, step).await.ok(),
        None => Some(step.await),
    }
}

/// Moves a gauge by the change from what was `reported` to `now`.
fn adjust(add: impl Fn(u64), sub: impl Fn(u64), reported: &mut u64, now: u64) {
    if now > *reported {
        add(now - *reported);
    } else if now < *reported {
        sub(*reported - now);
    }
    *reported = now;
}

impl ReadFilter for TcpProxy {
    fn on_new_connection(&mut self, cb: &mut ReadFilterCallbacks<'_>) -> FilterStatus {
        self.shared.stats.downstream_cx_total.inc();
        cb.enable_half_close();
        // No downstream bytes are read until the upstream is there to take them; with
        // half-close on, a client's FIN meanwhile waits there too (Envoy's `readDisable` does
        // not watch for an early close then), and reaches the upstream once connected.
        cb.detect_early_close_when_read_disabled(false);
        cb.read_disable(true);
        if let Some(duration) = self.shared.max_downstream_connection_duration {
            self.max_duration_timer = Some(Box::pin(tokio::time::sleep(duration)));
        }
        // The idle timer runs from the start: an upstream that never answers the connect is
        // idle too (Envoy's `onNewConnection`).
        if let Some(timeout) = self.shared.idle_timeout {
            self.idle_timer = Some(Box::pin(tokio::time::sleep(timeout)));
        }
        self.connect(cb);
        FilterStatus::StopIteration
    }

    fn on_data(&mut self, data: &mut BytesMut, end_stream: bool, cb: &mut ReadFilterCallbacks<'_>) -> FilterStatus {
        self.shared.stats.downstream_cx_rx_bytes_total.add(data.len() as u64);
        if !data.is_empty() {
            self.last_activity = clock::now();
        }
        if self.upstream_write.is_empty() {
            self.upstream_write = data.split();
        } else {
            self.upstream_write.extend_from_slice(&data.split());
        }
        self.upstream_write_end |= end_stream;
        let limit = self.cluster.as_ref().map_or(cb.buffer_limit(), |c| c.per_connection_buffer_limit_bytes());
        if !self.downstream_paused && self.upstream_write.len() > limit {
            self.downstream_paused = true;
            self.shared.stats.downstream_flow_control_paused_reading_total.inc();
            cb.read_disable(true);
        }
        FilterStatus::StopIteration
    }

    fn poll_io(&mut self, cx: &mut Context<'_>, cb: &mut ReadFilterCallbacks<'_>) {
        if cb.is_closing() {
            return;
        }
        // A failed attempt may start the next one: poll it at once so that it registers its
        // wakers (otherwise nothing would wake this connection again).
        while let Upstream::Connecting { connect, deadline, .. } = &mut self.upstream {
            let outcome = match connect.as_mut().poll(cx) {
                Poll::Ready(Ok(stream)) => Ok(stream),
                Poll::Ready(Err(e)) => Err(Some(e)),
                Poll::Pending if deadline.as_mut().poll(cx).is_ready() => Err(None),
                Poll::Pending => break,
            };
            let Upstream::Connecting { cx: mut ucx, .. } = std::mem::replace(&mut self.upstream, Upstream::None) else {
                break;
            };
            match outcome {
                Ok((stream, early)) => self.on_connected(stream, early, ucx, cb),
                Err(error) => {
                    match &error {
                        Some(e) => {
                            tracing::debug!(connection = cb.info().id, host = %ucx.host.address(), error = %e, "tcp_proxy: connect failed");
                            ucx.cluster.stats().upstream_cx_connect_fail().inc();
                        }
                        None => {
                            tracing::debug!(connection = cb.info().id, host = %ucx.host.address(), "tcp_proxy: connect timeout");
                            // A timed-out connect is also a failed one (Envoy's pools count both).
                            ucx.cluster.stats().upstream_cx_connect_timeout().inc();
                            ucx.cluster.stats().upstream_cx_connect_fail().inc();
                        }
                    }
                    ucx.host.stats.cx_connect_fail.fetch_add(1, Ordering::Relaxed);
                    let result = match error {
                        Some(_) => OutlierResult::LocalOriginConnectFailed,
                        None => OutlierResult::LocalOriginTimeout,
                    };
                    ucx.cluster.outlier_result(&ucx.host, result);
                    // A timeout is our decision to give up; a refusal comes from the peer.
                    ucx.closed_locally = error.is_none();
                    drop(ucx);
                    self.on_connect_failure(cb);
                }
            }
        }
        if matches!(self.upstream, Upstream::Connected { .. }) {
            let flushed = self.flush_upstream(cx, cb);
            let read = flushed.and_then(|_| self.read_upstream(cx, cb));
            if let Err(e) = read {
                tracing::debug!(connection = cb.info().id, error = %e, "tcp_proxy: upstream connection error");
                self.close_upstream(false);
                cb.close(ConnectionCloseType::FlushWrite);
                return;
            }
            if self.upstream_read_end && self.upstream_write_shutdown && self.upstream_write.is_empty() {
                // Both directions finished: the upstream connection is done.
                self.close_upstream(false);
            }
            self.poll_timers(cx, cb);
        } else if self.max_duration_timer.is_some() || self.idle_timer.is_some() {
            self.poll_timers(cx, cb);
        }
        self.sync_buffer_gauges(cb);
    }

    fn on_event(&mut self, event: ConnectionEvent) {
        self.clear_buffer_gauges();
        let upstream = std::mem::replace(&mut self.upstream, Upstream::None);
        match upstream {
            Upstream::Connected { stream, mut cx }
                if event == ConnectionEvent::RemoteClose && !self.upstream_write.is_empty() =>
            {
                // The downstream left with bytes still on their way: deliver them before
                // closing the upstream (Envoy's upstream flush).
                cx.closed_locally = true;
                let data = std::mem::take(&mut self.upstream_write);
                let shared = self.shared.clone();
                shared.stats.upstream_flush_total.inc();
                shared.stats.upstream_flush_active.inc();
                tokio::task::spawn_local(async move {
                    // Envoy's `Drainer`: `idle_timeout` bounds each wait for progress (none when
                    // it is off), and counts in `idle_timeout` when it ends the flush.
                    if !flush(stream, &data, shared.idle_timeout).await {
                        shared.stats.idle_timeout.inc();
                    }
                    shared.stats.upstream_flush_active.dec();
                    drop(cx);
                });
            }
            Upstream::Connected { mut cx, .. } | Upstream::Connecting { mut cx, .. } => {
                cx.closed_locally = true;
            }
            Upstream::None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Envoy's `Drainer`: a flush ends when the upstream takes everything, or when it makes no
    /// progress for `idle` (which the caller counts as an idle timeout).
    #[tokio::test(flavor = "current_thread")]
    async fn a_flush_completes_or_ends_after_an_idle_wait() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let data = vec![7u8; 64 * 1024];

        let reading = tokio::spawn(async move {
            let (mut peer, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            peer.read_to_end(&mut got).await.unwrap();
            (got.len(), listener)
        });
        let stream = TransportSocket::RawBuffer(tokio::net::TcpStream::connect(addr).await.unwrap());
        assert!(flush(stream, &data, Some(Duration::from_secs(5))).await, "the upstream took it all");
        let (len, listener) = reading.await.unwrap();
        assert_eq!(len, data.len());

        // A peer that never reads: the socket fills, and the idle wait ends the flush.
        let _stalled = tokio::spawn(async move { listener.accept().await.map(|(peer, _)| peer) });
        let stream = TransportSocket::RawBuffer(tokio::net::TcpStream::connect(addr).await.unwrap());
        let big = vec![7u8; 32 * 1024 * 1024];
        assert!(!flush(stream, &big, Some(Duration::from_millis(200))).await, "no progress for 200 ms");
    }
}
