//! Per-worker HTTP connection pools, one per (host, protocol) (Envoy's `ConnPoolImpl`).
//!
//! HTTP/1.1: one request per connection at a time; idle connections are reused last-in
//! first-out. HTTP/2: streams are multiplexed on a connection up to `max_concurrent_streams`,
//! and a new connection is opened when every connection is full. A request that finds no
//! ready connection waits in the pending request queue (`max_pending_requests`); a new
//! connection is opened for it when `max_connections` allows, else `upstream_cx_overflow`.
//! Idle connections close after the cluster's `idle_timeout` (1 h), any connection after
//! `max_connection_duration`, and an HTTP/1.1 connection after `max_requests_per_connection`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioIo, TokioTimer};
use legate_config::cluster::{RoutingPriority, UpstreamProtocol};
use tokio::sync::{oneshot, Notify};

use super::circuit_breakers::ResourceGuard;
use super::upstream_cx::UpstreamCx;
use super::{Cluster, HostSharedPtr};
use crate::http::body::{AttemptBody, BoxError};
use crate::http::h1_client::{self, ClientConn};
use crate::http::h2_guard::{End, FloodLimits, H2Guard, Http2Stats};
use crate::http::io::{CountingIo, LocalExec};
use crate::worker::clock;

/// How long a pooled HTTP/1.1 connection idles before it gives its buffers back (a 16 KiB
/// read buffer and the last request's buffer; Envoy's drained buffers keep no memory
/// either). The next exchange allocates them again, a fraction of a microsecond; a busy
/// connection's driver wakes this often to look, a few times a second.
const RELEASE_BUFFERS_AFTER: Duration = Duration::from_millis(250);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PoolProtocol {
    Http1,
    Http2,
}

/// Why no connection could be had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolFailure {
    /// The pending request queue is full (`max_pending_requests`): `UO`.
    Overflow,
    /// The connection could not be made; the reason as Envoy words it (`UF`).
    ConnectFailure(String),
    /// `connect_timeout` passed (`UF`).
    ConnectTimeout,
}

impl PoolFailure {
    /// Envoy's reset reason text for local replies.
    pub fn reason(&self) -> String {
        match self {
            PoolFailure::Overflow => "overflow".into(),
            PoolFailure::ConnectFailure(detail) => {
                format!("remote connection failure, transport failure reason: {detail}")
            }
            PoolFailure::ConnectTimeout => "connection timeout".into(),
        }
    }
}

/// The pools of one worker: per host and protocol, and per SNI with `auto_sni` (a TLS
/// connection made for one name cannot carry requests for another).
#[derive(Default)]
pub struct HttpPools {
    pools: RefCell<HashMap<PoolKey, Vec<Rc<Pool>>>>,
    /// The [`topology_generation`] the pools were last checked against.
    generation: Cell<u64>,
}

/// Bumped whenever a cluster's hosts change or clusters come and go: workers then drop the
/// pools of hosts and clusters that are gone, at their next request.
static TOPOLOGY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub fn topology_changed() {
    TOPOLOGY.fetch_add(1, std::sync::atomic::Ordering::Release);
}

fn topology_generation() -> u64 {
    TOPOLOGY.load(std::sync::atomic::Ordering::Acquire)
}

/// A host (by address of its `Arc`) and a protocol.
type PoolKey = (usize, PoolProtocol);

impl HttpPools {
    /// Whether hosts or clusters changed since the last [`Self::prune`] (one atomic load).
    pub fn stale(&self) -> bool {
        topology_generation() != self.generation.get()
    }

    /// Drains and forgets the pools whose host left its cluster, or whose cluster is no longer
    /// the one of its name in `clusters` (replaced or removed by CDS), and, where the cluster
    /// sets `close_connections_on_host_health_failure`, those of a host failing its active
    /// health check (Envoy's `onHostHealthFailure`).
    pub fn prune(&self, clusters: &super::cluster_manager::ClusterMap) {
        self.generation.set(topology_generation());
        // Each cluster's hosts, collected once per prune (not once per pool).
        let mut hosts: HashMap<usize, rustc_hash::FxHashSet<usize>> = HashMap::default();
        self.pools.borrow_mut().retain(|_, by_sni| {
            by_sni.retain(|pool| {
                let current = clusters.get(&pool.cluster.name).is_some_and(|c| Arc::ptr_eq(c, &pool.cluster));
                let present = current
                    && hosts
                        .entry(Arc::as_ptr(&pool.cluster) as usize)
                        .or_insert_with(|| {
                            pool.cluster.priority_set().all_hosts().map(|h| HostSharedPtr::as_ptr(h) as usize).collect()
                        })
                        .contains(&(HostSharedPtr::as_ptr(&pool.host) as usize));
                let failed = pool.cluster.info.other_config().close_connections_on_host_health_failure
                    && pool.host.health_flags() & super::host::health_flag::FAILED_ACTIVE_HC != 0;
                let present = present && !failed;
                if !present {
                    pool.drain();
                }
                present
            });
            !by_sni.is_empty()
        });
    }

    pub fn get(
        &self,
        cluster: &Arc<Cluster>,
        host: &HostSharedPtr,
        protocol: PoolProtocol,
        sni: Option<&str>,
    ) -> Rc<Pool> {
        // The pool keeps its host alive, so the address cannot be reused by another host.
        let key = (HostSharedPtr::as_ptr(host) as usize, protocol);
        let mut pools = self.pools.borrow_mut();
        let by_sni = pools.entry(key).or_default();
        if let Some(pool) = by_sni.iter().find(|p| p.sni.as_deref() == sni) {
            return pool.clone();
        }
        let pool = Rc::new(Pool::new(cluster.clone(), host.clone(), protocol, sni.map(Arc::from)));
        by_sni.push(pool.clone());
        pool
    }
}

struct Settings {
    /// `header_key_format` of the cluster's HTTP/1.1 options.
    proper_case_headers: bool,
    preserve_header_case: bool,
    connect_timeout: Duration,
    idle_timeout: Option<Duration>,
    max_connection_duration: Option<Duration>,
    max_requests_per_connection: Option<u32>,
    max_concurrent_streams: u32,
    initial_stream_window_size: u32,
    initial_connection_window_size: u32,
    /// What an HTTP/2 server may send.
    http2_flood_limits: FloodLimits,
}

/// What a connection's driver and its handles share.
struct ConnShared {
    created: Instant,
    requests: Cell<u32>,
    /// Set while an HTTP/1.1 connection sits in the idle list (or an HTTP/2 one has no
    /// stream).
    idle_since: Cell<Option<Instant>>,
    /// No new requests: past `max_connection_duration` or `max_requests_per_connection`.
    draining: Cell<bool>,
    closed: Cell<bool>,
    /// The last exchange ended normally (an HTTP/1.1 connection then closes without a request
    /// in flight even when it is not reused).
    released_clean: Cell<bool>,
    /// Wakes the driver when the connection goes idle or starts draining.
    changed: Notify,
    local_address: Option<SocketAddr>,
}

struct H2Client {
    sender: http2::SendRequest<AttemptBody>,
    shared: Rc<ConnShared>,
    active: Cell<u32>,
}

enum Client {
    /// legate's own HTTP/1.1 client ([`h1_client`]).
    Http1(Rc<ClientConn>, Rc<ConnShared>),
    /// hyper's HTTP/1.1 client, for clusters that preserve the case of header names: hyper
    /// records the downstream's case in a type only its own client can read.
    Http1CasePreserving(http1::SendRequest<AttemptBody>, Rc<ConnShared>),
    Http2(Rc<H2Client>),
}

impl Client {
    fn shared(&self) -> &Rc<ConnShared> {
        match self {
            Client::Http1(_, shared) | Client::Http1CasePreserving(_, shared) => shared,
            Client::Http2(client) => &client.shared,
        }
    }

    /// Closes an HTTP/1.1 connection now (an HTTP/2 one closes when its driver sees it
    /// draining).
    fn close(self) {
        match self {
            Client::Http1(conn, _) => conn.close(),
            // Dropping the only sender ends the connection once it is done.
            Client::Http1CasePreserving(sender, _) => drop(sender),
            Client::Http2(_) => {}
        }
    }
}

#[derive(Default)]
struct State {
    /// Idle HTTP/1.1 connections, the most recently used last.
    idle: Vec<Client>,
    h2: Vec<Rc<H2Client>>,
    connecting: usize,
    live: usize,
    waiters: VecDeque<oneshot::Sender<Result<Client, PoolFailure>>>,
}

pub struct Pool {
    pub cluster: Arc<Cluster>,
    pub host: HostSharedPtr,
    protocol: PoolProtocol,
    /// The server name of this pool's TLS connections (`auto_sni`).
    sni: Option<Arc<str>>,
    settings: Settings,
    state: RefCell<State>,
    /// The pool left its worker's map (its host or cluster went away): every connection
    /// closes once its request is done.
    drained: Cell<bool>,
    /// `cluster.<name>.http2.*`, once the pool has made an HTTP/2 connection.
    http2_stats: std::cell::OnceCell<Http2Stats>,
}

impl Pool {
    /// Closes the idle connections now and the busy ones when their requests end (Envoy
    /// drains the pools of a removed host or a replaced cluster the same way).
    fn drain(&self) {
        self.drained.set(true);
        let mut state = self.state.borrow_mut();
        for client in state.idle.drain(..) {
            let shared = client.shared().clone();
            client.close();
            shared.closed.set(true);
            shared.changed.notify_one();
        }
        for client in &state.h2 {
            client.shared.draining.set(true);
            client.shared.changed.notify_one();
        }
    }

    fn new(cluster: Arc<Cluster>, host: HostSharedPtr, protocol: PoolProtocol, sni: Option<Arc<str>>) -> Self {
        let common = cluster.info.other_config().upstream_common_http_protocol_options();
        let h2 = cluster.info.other_config().upstream_http2_options();
        let nonzero = |d: Option<&legate_config::Duration>| d.map(|d| d.as_std()).filter(|d| !d.is_zero());
        let http1 = cluster.info.other_config().upstream_http1_options();
        let settings = Settings {
            proper_case_headers: http1.proper_case_headers(),
            preserve_header_case: http1.preserve_header_case(),
            connect_timeout: cluster.connect_timeout(),
            idle_timeout: match &common.idle_timeout {
                Some(d) => nonzero(Some(d)),
                None => Some(Duration::from_secs(3600)),
            },
            max_connection_duration: nonzero(common.max_connection_duration.as_ref()),
            max_requests_per_connection: common
                .max_requests_per_connection
                .or(cluster.info.other_config().max_requests_per_connection)
                .filter(|n| *n > 0),
            max_concurrent_streams: h2.max_concurrent_streams().max(1),
            initial_stream_window_size: h2.initial_stream_window_size(),
            initial_connection_window_size: h2.initial_connection_window_size(),
            http2_flood_limits: FloodLimits::new(&h2),
        };
        Pool {
            cluster,
            host,
            protocol,
            sni,
            settings,
            state: RefCell::new(State::default()),
            drained: Cell::new(false),
            http2_stats: std::cell::OnceCell::new(),
        }
    }

    pub fn protocol(&self) -> PoolProtocol {
        self.protocol
    }

    /// Whether requests must carry the downstream request's header case to this pool
    /// (`preserve_case`): hyper keeps it among the request's extensions.
    pub fn preserves_header_case(&self) -> bool {
        self.settings.preserve_header_case
    }

    /// A connection ready for one request: an idle one, or one made (or freed) for this
    /// request while it waits in the pending queue. `fresh` skips the idle connections: a
    /// request that just met a stale one is resent on a connection that cannot be stale too.
    pub async fn acquire(self: &Rc<Self>, priority: RoutingPriority, fresh: bool) -> Result<PooledConn, PoolFailure> {
        if !fresh {
            while let Some(client) = self.ready_client() {
                if let Some(conn) = self.prepare(client).await {
                    return Ok(conn);
                }
            }
        }
        let stats = &self.cluster.stats();
        let breakers = self.cluster.breakers(priority);
        let Some(_pending) = breakers.pending_requests.try_acquire() else {
            stats.upstream_rq_pending_overflow().inc();
            return Err(PoolFailure::Overflow);
        };
        stats.upstream_rq_pending_total().inc();
        stats.upstream_rq_pending_active().inc();
        let mut active = PendingActive { cluster: &self.cluster, waiting: true };
        let outcome = loop {
            let (tx, rx) = oneshot::channel();
            self.state.borrow_mut().waiters.push_back(tx);
            self.maybe_connect(priority);
            let client = match rx.await {
                Ok(Ok(client)) => client,
                Ok(Err(failure)) => {
                    // A connection this request waited for failed (Envoy's
                    // `purgePendingStreams`).
                    stats.upstream_rq_pending_failure_eject().inc();
                    break Err(failure);
                }
                Err(_) => break Err(PoolFailure::ConnectFailure("connection pool closed".into())),
            };
            if let Some(conn) = self.prepare(client).await {
                break Ok(conn);
            }
        };
        active.waiting = false;
        outcome
    }

    fn ready_client(self: &Rc<Self>) -> Option<Client> {
        let mut state = self.state.borrow_mut();
        match self.protocol {
            PoolProtocol::Http1 => {
                while let Some(client) = state.idle.pop() {
                    let open = match &client {
                        Client::Http1(conn, _) => conn.is_open(),
                        Client::Http1CasePreserving(sender, _) => !sender.is_closed(),
                        Client::Http2(_) => false,
                    };
                    if open && !client.shared().closed.get() {
                        return Some(client);
                    }
                }
                None
            }
            PoolProtocol::Http2 => {
                let max = self.settings.max_concurrent_streams;
                state.h2.retain(|c| !c.sender.is_closed() && !c.shared.closed.get());
                let client = state.h2.iter().find(|c| c.active.get() < max && !c.shared.draining.get())?.clone();
                client.active.set(client.active.get() + 1);
                Some(Client::Http2(client))
            }
        }
    }

    /// Waits for an HTTP/1.1 connection to finish its previous exchange; `None` when it
    /// closed meanwhile.
    async fn prepare(self: &Rc<Self>, client: Client) -> Option<PooledConn> {
        let shared = client.shared().clone();
        let client = match client {
            Client::Http1CasePreserving(mut sender, shared) => {
                if sender.ready().await.is_err() {
                    return None;
                }
                Client::Http1CasePreserving(sender, shared)
            }
            Client::Http1(conn, _) if !conn.is_open() => return None,
            Client::Http1(conn, shared) => {
                if !conn.holds_buffers() {
                    // Its driver stopped looking while the connection idled without
                    // buffers; it looks again at this busy spell (see `drive`).
                    shared.changed.notify_one();
                }
                Client::Http1(conn, shared)
            }
            other => other,
        };
        shared.idle_since.set(None);
        shared.released_clean.set(false);
        shared.requests.set(shared.requests.get() + 1);
        Some(PooledConn { pool: self.clone(), client: Some(client), shared })
    }

    /// Opens connections for waiting requests, as far as `max_connections` allows.
    fn maybe_connect(self: &Rc<Self>, priority: RoutingPriority) {
        let (waiting, connecting, has_h2) = {
            let s = self.state.borrow();
            (s.waiters.len(), s.connecting, !s.h2.is_empty())
        };
        let wanted = match self.protocol {
            PoolProtocol::Http1 => waiting,
            // One new HTTP/2 connection serves many waiters.
            PoolProtocol::Http2 => usize::from(waiting > 0 && !has_h2 || waiting > connecting * 100),
        };
        if connecting >= wanted {
            return;
        }
        let breakers = self.cluster.breakers(priority);
        let guard = match breakers.connections.try_acquire() {
            Some(guard) => guard,
            None => {
                self.cluster.stats().upstream_cx_overflow().inc();
                // A pool with no connection at all makes one anyway, or its waiters would have
                // none to be served by (Envoy's `tryCreateNewConnection`).
                let empty = {
                    let s = self.state.borrow();
                    s.live == 0 && s.connecting == 0
                };
                match empty.then(|| breakers.connections.try_acquire_up_to(u64::MAX)).flatten() {
                    Some(guard) => guard,
                    None => return,
                }
            }
        };
        self.state.borrow_mut().connecting += 1;
        tokio::task::spawn_local(self.clone().connect(guard, priority));
    }

    async fn connect(self: Rc<Self>, guard: ResourceGuard, priority: RoutingPriority) {
        let stats = &self.cluster.stats();
        let mut cx = UpstreamCx::new(self.cluster.clone(), self.host.clone(), guard);
        match self.protocol {
            PoolProtocol::Http1 => stats.upstream_cx_http1_total().inc(),
            PoolProtocol::Http2 => stats.upstream_cx_http2_total().inc(),
        }
        let address = self.host.address();
        // TCP and the cluster's transport socket (TLS) handshake, within connect_timeout.
        let alpn = match self.protocol {
            PoolProtocol::Http1 => crate::tls::client::Alpn::Http1,
            PoolProtocol::Http2 => crate::tls::client::Alpn::Http2,
        };
        // Boxed, as the other protocols' states below: the task keeps the largest state of
        // its life, and a pooled connection lives long in the smallest (legate's HTTP/1.1
        // driver): 4.8 KB per upstream connection otherwise.
        let connect = Box::pin(crate::tls::client::connect(&self.cluster, address, alpn, self.sni.as_deref()));
        let stream = match tokio::time::timeout(self.settings.connect_timeout, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                stats.upstream_cx_connect_fail().inc();
                self.host.stats.cx_connect_fail.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.connect_failed(PoolFailure::ConnectFailure(e.transport_failure_reason()), priority);
                return;
            }
            Err(_) => {
                stats.upstream_cx_connect_timeout().inc();
                stats.upstream_cx_connect_fail().inc();
                self.host.stats.cx_connect_fail.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                cx.closed_locally = true;
                self.connect_failed(PoolFailure::ConnectTimeout, priority);
                return;
            }
        };
        let local_address = stream.tcp().local_addr().ok();
        let mut activity = Instant::now();
        cx.connected(&mut activity);
        let (rx, tx) = (
            stats.counter_handle(stats.upstream_cx_rx_bytes_total()),
            stats.counter_handle(stats.upstream_cx_tx_bytes_total()),
        );
        let shared = Rc::new(ConnShared {
            created: Instant::now(),
            requests: Cell::new(0),
            idle_since: Cell::new(None),
            draining: Cell::new(false),
            closed: Cell::new(false),
            released_clean: Cell::new(false),
            changed: Notify::new(),
            local_address,
        });
        {
            let mut state = self.state.borrow_mut();
            state.connecting -= 1;
            state.live += 1;
        }
        match self.protocol {
            PoolProtocol::Http1 if !self.settings.preserve_header_case => {
                let conn = Rc::new(ClientConn::new(stream, self.settings.proper_case_headers, rx, tx));
                self.on_available(Client::Http1(conn.clone(), shared.clone()));
                // Ends when the connection is closed, by the pool or by the upstream.
                let watch =
                    std::future::poll_fn(|cx| conn.poll_watch(cx, shared.idle_since.get().is_some()).map(|()| true));
                self.drive(watch, &shared, &mut cx, Some(&conn)).await;
                conn.close();
            }
            PoolProtocol::Http1 => match http1::Builder::new()
                .title_case_headers(self.settings.proper_case_headers)
                .preserve_header_case(true)
                .handshake::<_, AttemptBody>(TokioIo::new(CountingIo::new(stream, BytesMut::new(), rx, tx)))
                .await
            {
                Ok((sender, connection)) => {
                    self.on_available(Client::Http1CasePreserving(sender, shared.clone()));
                    // Upgrades (WebSocket) hand the socket over when the exchange switches
                    // protocols; the connection then leaves the pool.
                    let driver = async move { connection.with_upgrades().await.is_ok() };
                    Box::pin(self.drive(driver, &shared, &mut cx, None)).await;
                }
                Err(_) => stats.upstream_cx_protocol_error().inc(),
            },
            PoolProtocol::Http2 => {
                let mut builder = http2::Builder::new(LocalExec);
                builder
                    .timer(TokioTimer::new())
                    .initial_stream_window_size(self.settings.initial_stream_window_size)
                    .initial_connection_window_size(self.settings.initial_connection_window_size);
                let io = CountingIo::new(stream, BytesMut::new(), rx, tx);
                // Made with the first HTTP/2 connection, as Envoy's codec stats are.
                let flood_stats =
                    self.http2_stats.get_or_init(|| Http2Stats::new(&self.cluster.scope.scope("http2"))).clone();
                let resets_sent = stats.counter_handle(stats.upstream_rq_tx_reset());
                let guard = H2Guard::new(io, End::Client, self.settings.http2_flood_limits, flood_stats)
                    .counting_resets_sent(resets_sent);
                let io = TokioIo::new(guard);
                match Box::pin(builder.handshake::<_, AttemptBody>(io)).await {
                    Ok((sender, connection)) => {
                        let client = Rc::new(H2Client { sender, shared: shared.clone(), active: Cell::new(0) });
                        self.state.borrow_mut().h2.push(client.clone());
                        shared.idle_since.set(Some(clock::now()));
                        self.serve_h2_waiters(&client);
                        let driver = async move { connection.await.is_ok() };
                        Box::pin(self.drive(driver, &shared, &mut cx, None)).await;
                    }
                    Err(_) => stats.upstream_cx_protocol_error().inc(),
                }
            }
        }
        // A connection that ends under a request (an HTTP/1.1 one lent out, an HTTP/2 one with
        // streams) is counted as Envoy's `*_with_active_rq`.
        let active = match self.protocol {
            PoolProtocol::Http1 => shared.idle_since.get().is_none() && shared.requests.get() > 0,
            PoolProtocol::Http2 => {
                self.state.borrow().h2.iter().any(|c| Rc::ptr_eq(&c.shared, &shared) && c.active.get() > 0)
            }
        };
        if active && !shared.released_clean.get() {
            stats.upstream_cx_destroy_with_active_rq().inc();
            if cx.closed_locally {
                stats.upstream_cx_destroy_local_with_active_rq().inc();
            } else {
                stats.upstream_cx_destroy_remote_with_active_rq().inc();
            }
        }
        shared.closed.set(true);
        let mut state = self.state.borrow_mut();
        state.live -= 1;
        state.h2.retain(|c| !Rc::ptr_eq(&c.shared, &shared));
        let waiting = !state.waiters.is_empty();
        drop(state);
        if waiting {
            // Requests were waiting: the slot this connection freed may open one for them
            // (Envoy's pool tries again whenever a connection closes).
            self.maybe_connect(priority);
        }
    }

    /// Runs a connection until it ends, closing it when idle past `idle_timeout` or when
    /// `max_connection_duration` has passed. legate's own HTTP/1.1 connection (`buffers`)
    /// gives its buffers back once idle for `RELEASE_BUFFERS_AFTER`.
    async fn drive(
        &self,
        driver: impl std::future::Future<Output = bool>,
        shared: &Rc<ConnShared>,
        cx: &mut UpstreamCx,
        buffers: Option<&ClientConn>,
    ) {
        tokio::pin!(driver);
        let stats = &self.cluster.stats();
        loop {
            let now = Instant::now();
            // Armed from when the connection went idle, or from now while it is busy: the
            // timer re-checks when it fires, so going idle needs no wake-up (one per request).
            let idle_deadline = self.settings.idle_timeout.map(|d| shared.idle_since.get().unwrap_or(now) + d);
            let duration_deadline = self.settings.max_connection_duration.map(|d| shared.created + d);
            // A busy connection may go idle without a wake-up: looked at again after the
            // same delay. One idle without buffers is woken when next lent out (`prepare`).
            let release_deadline = buffers
                .filter(|conn| shared.idle_since.get().is_none() || conn.holds_buffers())
                .map(|_| shared.idle_since.get().unwrap_or(now) + RELEASE_BUFFERS_AFTER);
            let next = [idle_deadline, duration_deadline.filter(|_| !shared.draining.get()), release_deadline]
                .into_iter()
                .flatten()
                .min();
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.max(now).into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ok = &mut driver => {
                    if !ok {
                        stats.upstream_cx_protocol_error().inc();
                    }
                    return;
                }
                () = sleep => {
                    let now = Instant::now();
                    if duration_deadline.is_some_and(|d| now >= d) && !shared.draining.get() {
                        stats.upstream_cx_max_duration_reached().inc();
                        shared.draining.set(true);
                    }
                    let idle = shared.idle_since.get();
                    if idle.zip(self.settings.idle_timeout).is_some_and(|(at, d)| now >= at + d) {
                        stats.upstream_cx_idle_timeout().inc();
                        cx.closed_locally = true;
                        return;
                    }
                    if shared.draining.get() && idle.is_some() {
                        cx.closed_locally = true;
                        return;
                    }
                    if idle.is_some_and(|at| now >= at + RELEASE_BUFFERS_AFTER) {
                        if let Some(conn) = buffers {
                            conn.release_buffers();
                        }
                    }
                }
                () = shared.changed.notified() => {}
            }
        }
    }

    fn connect_failed(self: &Rc<Self>, failure: PoolFailure, priority: RoutingPriority) {
        let mut state = self.state.borrow_mut();
        state.connecting -= 1;
        // Nothing else will serve the waiters when no connection is open or opening: fail
        // them all; otherwise the one this connection was for.
        let fail_all = state.live == 0 && state.connecting == 0;
        let mut failed = Vec::new();
        while let Some(waiter) = state.waiters.pop_front() {
            if waiter.is_closed() {
                continue;
            }
            failed.push(waiter);
            if !fail_all {
                break;
            }
        }
        drop(state);
        for waiter in failed {
            let _ = waiter.send(Err(failure.clone()));
        }
        let _ = priority;
    }

    /// An HTTP/1.1 connection is free: to the first waiter still waiting, else idle.
    fn on_available(&self, client: Client) {
        let mut client = Some(client);
        let mut state = self.state.borrow_mut();
        while let Some(waiter) = state.waiters.pop_front() {
            let Some(c) = client.take() else { break };
            match waiter.send(Ok(c)) {
                Ok(()) => return,
                Err(Ok(c)) => client = Some(c),
                Err(Err(_)) => return,
            }
        }
        let Some(client) = client else { return };
        if let Client::Http1(conn, shared) = &client {
            // The driver watches an idle connection for the upstream closing it.
            shared.idle_since.set(Some(clock::now()));
            if !conn.rearm_watch() {
                shared.closed.set(true);
                return;
            }
        }
        if let Client::Http1CasePreserving(_, shared) = &client {
            // No wake-up for the driver: its idle timer checks `idle_since` when it fires.
            shared.idle_since.set(Some(clock::now()));
        }
        state.idle.push(client);
    }

    fn serve_h2_waiters(&self, client: &Rc<H2Client>) {
        let max = self.settings.max_concurrent_streams;
        let mut state = self.state.borrow_mut();
        while client.active.get() < max && !client.shared.draining.get() {
            let Some(waiter) = state.waiters.pop_front() else { break };
            client.active.set(client.active.get() + 1);
            if waiter.send(Ok(Client::Http2(client.clone()))).is_err() {
                client.active.set(client.active.get() - 1);
            }
        }
    }

    fn release(&self, client: Client, shared: &Rc<ConnShared>, reusable: bool) {
        let limit_reached = self.settings.max_requests_per_connection.is_some_and(|max| shared.requests.get() >= max);
        if limit_reached && !shared.draining.get() {
            self.cluster.stats().upstream_cx_max_requests().inc();
            shared.draining.set(true);
            shared.changed.notify_one();
        }
        if self.drained.get() && !shared.draining.get() {
            shared.draining.set(true);
            shared.changed.notify_one();
        }
        if self.protocol == PoolProtocol::Http1 {
            shared.released_clean.set(reusable);
        }
        // The response was read to its end; the connection also needs a clean end of the
        // request and nothing that closes it (`connection: close`, a close-delimited body).
        let reusable = match &client {
            Client::Http1(conn, _) => reusable && conn.clean(),
            _ => reusable,
        };
        match client {
            Client::Http1(..) | Client::Http1CasePreserving(..) => {
                let shared = client.shared().clone();
                if reusable && !shared.draining.get() && !shared.closed.get() {
                    self.on_available(client);
                } else {
                    client.close();
                    shared.closed.set(true);
                    shared.changed.notify_one();
                    self.state.borrow_mut().waiters.retain(|w| !w.is_closed());
                }
            }
            Client::Http2(client) => {
                client.active.set(client.active.get().saturating_sub(1));
                if client.active.get() == 0 {
                    client.shared.idle_since.set(Some(clock::now()));
                    if client.shared.draining.get() {
                        // A draining connection closes as soon as its last stream ends.
                        client.shared.changed.notify_one();
                    }
                }
                self.serve_h2_waiters(&client);
            }
        }
    }
}

/// A request in the pending queue: `upstream_rq_pending_active` while it waits, and
/// `upstream_rq_cancelled` if it is dropped still waiting (the downstream went away, or a
/// timeout fired), as Envoy counts a pending stream cancelled.
struct PendingActive<'a> {
    cluster: &'a Arc<Cluster>,
    waiting: bool,
}

impl Drop for PendingActive<'_> {
    fn drop(&mut self) {
        let stats = self.cluster.stats();
        stats.upstream_rq_pending_active().dec();
        if self.waiting {
            stats.upstream_rq_cancelled().inc();
        }
    }
}

/// A connection lent to one request. Give it back with [`PooledConn::release`] once the
/// response is complete; dropping it otherwise closes an HTTP/1.1 connection (its exchange
/// is unfinished) and frees the stream of an HTTP/2 one.
pub struct PooledConn {
    pool: Rc<Pool>,
    client: Option<Client>,
    shared: Rc<ConnShared>,
}

impl PooledConn {
    /// Sends one request on this connection: resolves with the response head. An error says
    /// why no response came (reset, closed, malformed), from legate's HTTP/1.1 client or
    /// hyper's.
    pub fn send_request(
        &mut self,
        request: Outgoing<'_>,
    ) -> impl std::future::Future<Output = Result<Response<ConnBody>, SendError>> + 'static {
        // hyper's futures are boxed: ~250 bytes each, they made every request's future (and
        // its copies) that large, where legate's own exchange is a few words.
        enum Send<A, B, C> {
            Http1(A),
            Hyper1(std::pin::Pin<Box<B>>),
            Http2(std::pin::Pin<Box<C>>),
            /// A head for a connection that needs a built request: never sent.
            Mismatch,
        }
        // `client` is only ever empty inside `release`/`drop`, which consume the handle.
        let send = match (&mut self.client, request) {
            (Some(Client::Http1(conn, _)), Outgoing::Request(request)) => {
                Some(Send::Http1(h1_client::send(conn.clone(), request)))
            }
            (Some(Client::Http1(conn, _)), Outgoing::Head(head, body)) => {
                Some(Send::Http1(h1_client::send_head(conn.clone(), head, body)))
            }
            (Some(Client::Http1CasePreserving(sender, _)), Outgoing::Request(request)) => {
                Some(Send::Hyper1(Box::pin(sender.send_request(request))))
            }
            (Some(Client::Http2(client)), Outgoing::Request(request)) => {
                Some(Send::Http2(Box::pin(client.sender.clone().send_request(request))))
            }
            (Some(_), Outgoing::Head(..)) => Some(Send::Mismatch),
            (None, _) => None,
        };
        async move {
            match send {
                Some(Send::Http1(f)) => Ok(f.await.map_err(SendError::Http1)?.map(ConnBody::Http1)),
                Some(Send::Hyper1(f)) => Ok(f.await.map_err(SendError::Hyper)?.map(ConnBody::Hyper)),
                Some(Send::Http2(f)) => Ok(f.await.map_err(SendError::Hyper)?.map(ConnBody::Hyper)),
                Some(Send::Mismatch) => Err(SendError::Http1(h1_client::Error::Protocol("request head not encodable"))),
                // Never reached (see above); a pending future rather than a panic.
                None => std::future::pending().await,
            }
        }
    }

    /// Whether requests go out on this connection as a [`h1_client::RequestHead`] (legate's
    /// own HTTP/1.1 client encodes it without a request being built); otherwise as a request.
    pub fn encodes_heads(&self) -> bool {
        matches!(self.client, Some(Client::Http1(..)))
    }

    /// The upstream's side of a `101 Switching Protocols` response received on this
    /// connection (which then leaves the pool); `extensions` are the response's.
    pub fn upgrade(&self, extensions: &mut http::Extensions) -> Option<UpstreamUpgrade> {
        match &self.client {
            Some(Client::Http1(conn, _)) => conn.take_upgraded().map(UpstreamUpgrade::Http1),
            Some(_) => {
                // hyper takes its upgrade from a response's extensions: lent to one for it.
                let mut response = Response::new(());
                std::mem::swap(response.extensions_mut(), extensions);
                let upgrade = hyper::upgrade::on(&mut response);
                std::mem::swap(response.extensions_mut(), extensions);
                Some(UpstreamUpgrade::Hyper(upgrade))
            }
            None => None,
        }
    }

    /// See [`Pool::preserves_header_case`].
    pub fn preserves_header_case(&self) -> bool {
        self.pool.preserves_header_case()
    }

    pub fn protocol(&self) -> PoolProtocol {
        self.pool.protocol
    }

    /// The connection speaks TLS (its cluster's `transport_socket`).
    pub fn over_tls(&self) -> bool {
        self.pool.cluster.transport_socket().is_some()
    }

    pub fn local_address(&self) -> Option<SocketAddr> {
        self.shared.local_address
    }

    /// The connection carried an earlier request: it sat in the pool, where its upstream may
    /// have closed it (the keep-alive race).
    pub fn reused(&self) -> bool {
        self.shared.requests.get() > 1
    }

    /// The exchange finished; `reusable` when the response was read to its end.
    pub fn release(mut self, reusable: bool) {
        if let Some(client) = self.client.take() {
            self.pool.release(client, &self.shared, reusable);
        }
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            self.pool.release(client, &self.shared, false);
        }
    }
}

/// A request for [`PooledConn::send_request`].
// Passed by value into one call and taken apart there: boxing the request would cost an
// allocation per request for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Outgoing<'a> {
    /// A whole request, for any connection.
    Request(Request<AttemptBody>),
    /// A head encoded as it is, for a connection that [`PooledConn::encodes_heads`].
    Head(&'a h1_client::RequestHead<'a>, AttemptBody),
}

/// Why an exchange on a pooled connection failed.
#[derive(Debug)]
pub enum SendError {
    Http1(h1_client::Error),
    /// hyper's HTTP/2 client, or its HTTP/1.1 client (case-preserving clusters).
    Hyper(hyper::Error),
}

/// The body of a response read from a pooled connection.
pub enum ConnBody {
    Http1(h1_client::Body),
    Hyper(Incoming),
}

impl http_body::Body for ConnBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, BoxError>>> {
        match self.get_mut() {
            ConnBody::Http1(body) => std::pin::Pin::new(body).poll_frame(cx),
            ConnBody::Hyper(body) => std::pin::Pin::new(body).poll_frame(cx).map_err(BoxError::from),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ConnBody::Http1(body) => body.is_end_stream(),
            ConnBody::Hyper(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            ConnBody::Http1(body) => body.size_hint(),
            ConnBody::Hyper(body) => body.size_hint(),
        }
    }
}

/// The upstream side of an upgraded (`101`) exchange.
pub enum UpstreamUpgrade {
    /// The socket, with any bytes read past the response head.
    Http1(CountingIo<crate::network::TransportSocket>),
    Hyper(hyper::upgrade::OnUpgrade),
}

/// The pool protocol for a cluster, given the downstream's protocol.
pub fn pool_protocol(cluster: &Cluster, downstream: http::Version) -> PoolProtocol {
    match cluster.info.other_config().http_protocol() {
        UpstreamProtocol::Http1 => PoolProtocol::Http1,
        UpstreamProtocol::Http2 => PoolProtocol::Http2,
        UpstreamProtocol::UseDownstream if downstream == http::Version::HTTP_2 => PoolProtocol::Http2,
        UpstreamProtocol::UseDownstream => PoolProtocol::Http1,
    }
}
