//! A listener's accept loop on one worker (Envoy's `ActiveTcpListener`): limits, listener
//! filters, filter chain choice, the transport socket's handshake (TLS, under
//! `transport_socket_connect_timeout`) and the connection task with its stats.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::BytesMut;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::drain::{DrainPhase, DrainWaiter};
use super::filter_chain_match::ConnectionMetadata;
use super::Listener;
use crate::filters::listener::{self as listener_filter, Inspected, Outcome};
use crate::network::{
    Connection, ConnectionEvent, ConnectionInfo, FilterManager, ParkedFilter, Run, RunEnd, TransportSocket, Woken,
};
use crate::worker::clock::{self, Stamp};
use crate::worker::WorkerContext;

/// Connections accepted in one go before a drain or a listener update is looked at again.
const ACCEPT_BURST: usize = 16;

/// Accepts until told to stop, then drops the socket (new connections are refused by the
/// kernel once every worker's socket is gone). Open connections are not affected. Each
/// connection takes the listener's version current when it is accepted: an update changes
/// `version` and new connections get the new filter chains; `None` removes the listener.
pub async fn run(
    mut version: watch::Receiver<Option<Arc<Listener>>>,
    socket: TcpListener,
    worker: Rc<WorkerContext>,
    mut stop: watch::Receiver<bool>,
) {
    let mut listener = match version.borrow_and_update().clone() {
        Some(listener) => listener,
        None => return,
    };
    // A socket bound to one address accepts connections to that address only: their local
    // address is known without a `getsockname` per connection (Envoy asks the socket only
    // when the listener's address is a wildcard). Not so for a transparent socket (TPROXY
    // hands it connections to other addresses).
    let transparent = {
        let sock = socket2::SockRef::from(&socket);
        sock.ip_transparent_v4().unwrap_or(false) || sock.ip_transparent_v6().unwrap_or(false)
    };
    let fixed_local = socket.local_addr().ok().filter(|local| !local.ip().is_unspecified() && !transparent);
    loop {
        tokio::select! {
            biased;
            // Drain first: stop accepting as soon as it is asked.
            _ = stop.wait_for(|stop| *stop) => break,
            changed = version.changed() => {
                match version.borrow_and_update().clone() {
                    Some(next) if changed.is_ok() => listener = next,
                    _ => break,
                }
            }
            accepted = socket.accept() => match accepted {
                Ok((stream, remote)) => {
                    on_accept(&listener, stream, remote, fixed_local, &worker);
                    // The connections already waiting are taken here, a few at a time: each
                    // round of this `select!` makes and drops a wait on both watch channels
                    // (~600 instructions, measured with one request per connection).
                    for _ in 1..ACCEPT_BURST {
                        match std::future::poll_fn(|cx| Poll::Ready(socket.poll_accept(cx))).await {
                            Poll::Ready(Ok((stream, remote))) => {
                                on_accept(&listener, stream, remote, fixed_local, &worker)
                            }
                            // An error is left for the `select!` to see again.
                            _ => break,
                        }
                    }
                }
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(listener = %listener.name, error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
        }
    }
    tracing::debug!(listener = %listener.name, worker = worker.index, "stopped accepting");
}

fn on_accept(
    listener: &Arc<Listener>,
    stream: TcpStream,
    remote: std::net::SocketAddr,
    fixed_local: Option<std::net::SocketAddr>,
    worker: &Rc<WorkerContext>,
) {
    let server = &worker.server;
    if let Some(limit) = server.global_connection_limit {
        if !listener.config.ignore_global_conn_limit && server.active_connections.load(Ordering::Relaxed) >= limit {
            listener.stats.downstream_global_cx_overflow.inc();
            return;
        }
    }
    let limit = crate::runtime::integer(&listener.connection_limit_key, u64::MAX);
    if listener.active_connections.load(Ordering::Relaxed) >= limit {
        listener.stats.downstream_cx_overflow.inc();
        return;
    }
    let Some(local) = fixed_local.or_else(|| stream.local_addr().ok()) else { return };
    let inspected = Inspected { data: BytesMut::new(), hello: None, http_protocol: None, remote, local };
    if listener.listener_filters.is_empty() {
        start_connection(listener, stream, remote, worker, inspected);
        return;
    }
    // Listener filters: learn SNI/ALPN (and the client behind a PROXY header) before choosing
    // the filter chain, all within listener_filters_timeout.
    let listener = listener.clone();
    let worker = worker.clone();
    listener.stats.downstream_pre_cx_active.inc();
    tokio::task::spawn_local(async move {
        let mut inspected = inspected;
        let filters = listener_filter::run(&listener.listener_filters, &stream, &mut inspected);
        let outcome = match listener.listener_filters_timeout {
            Some(limit) => tokio::time::timeout(limit, filters).await.ok(),
            None => Some(filters.await),
        };
        listener.stats.downstream_pre_cx_active.dec();
        match outcome {
            Some(Outcome::Continue) => {}
            Some(Outcome::RemoteClose) => {
                listener.stats.downstream_listener_filter_remote_close.inc();
                return;
            }
            Some(Outcome::Error) => {
                listener.stats.downstream_listener_filter_error.inc();
                return;
            }
            None => {
                listener.stats.downstream_pre_cx_timeout.inc();
                if !listener.continue_on_listener_filters_timeout {
                    return;
                }
            }
        }
        start_connection(&listener, stream, remote, &worker, inspected);
    });
}

/// Chooses the filter chain and starts the connection; `inspected` is what listener filters
/// learned, with the bytes they read.
fn start_connection(
    listener: &Arc<Listener>,
    stream: TcpStream,
    direct_remote: std::net::SocketAddr,
    worker: &Rc<WorkerContext>,
    inspected: Inspected,
) {
    let Inspected { data, hello, http_protocol, remote, local } = inspected;
    let http_protocols = http_protocol.map(|p| [p.to_string()]);
    let metadata = ConnectionMetadata {
        local,
        remote,
        direct_remote,
        server_name: hello.as_ref().map_or("", |h| h.server_name.as_str()),
        transport_protocol: if hello.is_some() { "tls" } else { "raw_buffer" },
        application_protocols: match (&hello, &http_protocols) {
            (Some(h), _) => h.application_protocols.as_slice(),
            (None, Some(p)) => p.as_slice(),
            (None, None) => &[],
        },
    };
    let Some(chain) = listener.find_filter_chain(&metadata) else {
        tracing::debug!(listener = %listener.name, %remote, "closing connection: no matching filter chain found");
        listener.stats.no_filter_chain_match.inc();
        return;
    };
    let _ = stream.set_nodelay(true);
    let mut info = ConnectionInfo {
        id: worker.server.next_connection_id(),
        remote_address: remote,
        local_address: local,
        worker: worker.index,
        ssl: None,
        drain: Some(chain.drain.subscribe()),
    };
    // The connection ends when its chain has finished draining.
    let chain_drain = chain.drain.subscribe();
    let waiter = DrainWaiter::new(&worker.drains);
    let mut filters = FilterManager::with_capacity(chain.factories.len());
    for factory in &chain.factories {
        factory.add_to(&mut filters, worker);
    }
    let guard = ActiveConnection::new(listener.clone(), worker.clone());
    tracing::debug!(connection = info.id, %remote, listener = %listener.name, "new connection");
    let buffer_limit = listener.buffer_limit;
    let Some(tls) = chain.transport_socket.clone() else {
        let connection = Box::new(
            Connection::new(TransportSocket::RawBuffer(stream), info, buffer_limit, filters).with_initial_data(data),
        );
        tokio::task::spawn_local(Served::new(connection.run(), waiter, chain_drain, guard));
        return;
    };
    // DESIGN.md §3 step 3: the transport socket's handshake, then the network filters over the
    // decrypted stream. The bytes listener filters read (the ClientHello) go to rustls.
    let timeout = chain.transport_socket_connect_timeout;
    let listener = listener.clone();
    tokio::task::spawn_local(async move {
        let handshake = tls.handshake(stream, data);
        let result = match timeout {
            Some(limit) => match tokio::time::timeout(limit, handshake).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::debug!(connection = info.id, "closing connection: TLS handshake timed out");
                    listener.stats.downstream_cx_transport_socket_connect_timeout.inc();
                    return;
                }
            },
            None => handshake.await,
        };
        let Ok((socket, ssl)) = result else { return };
        info.ssl = Some(Arc::new(ssl));
        let run = Box::new(Connection::new(socket, info, buffer_limit, filters)).run();
        Served::new(run, waiter, chain_drain, guard).await;
    });
}

/// A connection's task: the connection until it closes, parks (see [`crate::worker::park`])
/// or its filter chain has finished draining, and its place in the stats. Written by hand
/// rather than as a `select!` in an async block, which kept both futures on top of their
/// arguments: this struct is the task's whole state.
struct Served {
    run: Run,
    /// Taken when the connection parks. Dropped after `run` (fields drop in order): the
    /// connection is gone when it is un-counted.
    rest: Option<ServedRest>,
}

struct ServedRest {
    waiter: DrainWaiter,
    chain: watch::Receiver<DrainPhase>,
    guard: ActiveConnection,
}

impl Served {
    fn new(run: Run, waiter: DrainWaiter, chain: watch::Receiver<DrainPhase>, guard: ActiveConnection) -> Self {
        Served { run, rest: Some(ServedRest { waiter, chain, guard }) }
    }
}

impl std::future::Future for Served {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let this = self.get_mut();
        // The connection first: every wake-up of the connection polls this.
        if let std::task::Poll::Ready(end) = std::pin::Pin::new(&mut this.run).poll(cx) {
            match end {
                RunEnd::Closed(event) => tracing::debug!(?event, "connection closed"),
                RunEnd::Parked(filters, parked) => {
                    if let Some(mut rest) = this.rest.take() {
                        rest.waiter.release_slot();
                        let worker = rest.guard.worker.clone();
                        let connection = ParkedConnection { filters: kept_filters(filters), state: parked.state, rest };
                        worker.park.insert(&worker.drains, parked.socket, parked.wake_at, connection);
                    }
                }
            }
            return std::task::Poll::Ready(());
        }
        let Some(rest) = this.rest.as_mut() else { return std::task::Poll::Ready(()) };
        std::task::ready!(rest.waiter.poll_chain_reached(cx, &rest.chain, DrainPhase::Closed));
        tracing::debug!("connection closed: its filter chain finished draining");
        std::task::Poll::Ready(())
    }
}

/// A connection its filter parked: what its task held, without the task.
pub struct ParkedConnection {
    /// `None` when no filter needs to hear the connection's events (the connection manager
    /// alone): 40 bytes less per parked connection.
    filters: Option<Box<FilterManager>>,
    state: ParkedFilter,
    rest: ServedRest,
}

impl ParkedConnection {
    /// Something may need the connection (see [`crate::worker::park`]): it resumes in a task
    /// of its own, closes, ends with its filter chain's drain, or comes back to be parked
    /// again (`Some`, with its socket and next `wake_at`).
    pub fn wake(self, socket: std::net::TcpStream) -> Option<(std::net::TcpStream, Option<Instant>, ParkedConnection)> {
        let ParkedConnection { filters, state, mut rest } = self;
        let mut filters = filters.map_or_else(FilterManager::new, |filters| *filters);
        // The filter first, as the connection's task polls it before its chain's drain: it
        // hears (and counts) a drain before the chain's end closes the connection.
        match state.wake(socket) {
            // The task looks at the chain's drain at its first poll.
            Woken::Resume(future) => {
                tokio::task::spawn_local(Served { run: Run::TakenOver { filters, future }, rest: Some(rest) });
                None
            }
            Woken::Park(parked) => {
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                if rest.waiter.poll_chain_reached(&mut cx, &rest.chain, DrainPhase::Closed).is_ready() {
                    tracing::debug!("connection closed: its filter chain finished draining");
                    return None;
                }
                rest.waiter.release_slot();
                let filters = kept_filters(filters);
                Some((parked.socket, parked.wake_at, ParkedConnection { filters, state: parked.state, rest }))
            }
            Woken::Closed(event) => {
                filters.on_event(event);
                tracing::debug!(?event, "connection closed");
                None
            }
        }
    }

    /// The park could not watch its socket (no epoll instance or no room in it: the
    /// system's limits): an idle keep-alive connection is closed, as a client must expect
    /// of one.
    pub fn close_unwatched(mut self) {
        tracing::warn!("closing an idle connection: it cannot be watched while idle");
        if let Some(filters) = self.filters.as_mut() {
            filters.on_event(ConnectionEvent::LocalClose);
        }
    }
}

/// What a parked connection keeps of its filters.
fn kept_filters(filters: FilterManager) -> Option<Box<FilterManager>> {
    (!filters.holds_nothing()).then(|| Box::new(filters))
}

/// Counts one open connection in every place that tracks it, and un-counts it on drop (also
/// when the worker shuts down with the connection still open).
struct ActiveConnection {
    listener: Arc<Listener>,
    worker: Rc<WorkerContext>,
    started: Stamp,
}

impl ActiveConnection {
    fn new(listener: Arc<Listener>, worker: Rc<WorkerContext>) -> Self {
        listener.stats.downstream_cx_total.inc();
        listener.stats.downstream_cx_active.inc();
        if let Some(w) = listener.worker_stats.get(worker.index) {
            w.downstream_cx_total.inc();
            w.downstream_cx_active.inc();
        }
        listener.active_connections.fetch_add(1, Ordering::Relaxed);
        worker.server.active_connections.fetch_add(1, Ordering::Relaxed);
        ActiveConnection { listener, worker, started: Stamp::of(clock::now()) }
    }
}

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        let stats = &self.listener.stats;
        stats.downstream_cx_destroy.inc();
        stats.downstream_cx_active.dec();
        stats.downstream_cx_length_ms.record(clock::since(self.started.instant()).as_millis() as u64);
        if let Some(w) = self.listener.worker_stats.get(self.worker.index) {
            w.downstream_cx_active.dec();
        }
        self.listener.active_connections.fetch_sub(1, Ordering::Relaxed);
        self.worker.server.active_connections.fetch_sub(1, Ordering::Relaxed);
    }
}
