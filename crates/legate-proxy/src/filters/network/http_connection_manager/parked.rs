//! An idle HTTP/1.1 keep-alive connection, parked (see [`crate::worker::park`]): what the
//! connection manager needs to go on, without the connection's task, futures, timer, codec
//! state or event loop registration. Woken, it reads what arrived and resumes in a task,
//! closes (the client went, the idle timeout, `max_connection_duration`, a drain), or parks
//! again.

use std::cell::Cell;
use std::io::Read;
use std::net::{SocketAddr, SocketAddrV4};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use super::codec_http1::{self, Http1End};
use super::{
    idle_or_too_old, next_idle_check, note_drain, ConnectionContext, ConnectionGuard, Draining, GuardState, Timeline,
    PARK_LATE_AFTER,
};
use super::{HttpConnectionManagerShared, WorkerContext};
use crate::http::h1_server::{Limits, ServerConn};
use crate::listener::drain::DrainWaiter;
use crate::network::{ConnectionEvent, ConnectionInfo, Parked, ParkedFilter, TakenOverEnd, TransportSocket, Woken};
use crate::tls::SslConnectionInfo;
use crate::worker::clock::Stamp;

/// The first read of a woken connection: a request head usually fits; the codec reads the
/// rest.
const FIRST_READ: usize = 4096;

/// What a parked connection keeps, in the form the code works with (the park holds it as
/// [`Compact`]).
struct Kept {
    context: KeptContext,
    draining: Draining,
    timeline: Timeline,
    guard: GuardState,
    parked_at: Instant,
}

/// The parked state; un-counts the connection when dropped unresumed.
pub struct ParkedHttp1(Option<Compact>);

/// What a parked connection keeps, as it sits in the park's table: [`Kept`] made when it
/// parks and expanded when it wakes, in 136 bytes where `Kept` takes 320 (an idle
/// connection's memory is mostly this). Times are [`Stamp`]s; IPv4 addresses sit inline;
/// what an idle HTTP/1.1 connection has by definition (no stream, a drain waiter without a
/// slot, its chain's drain as in its description) is not stored twice.
struct Compact {
    context: CompactContext,
    /// The drain waiter's announcement count.
    drain_seen: u64,
    server_seen: bool,
    started: Stamp,
    shutdown_at: Option<Stamp>,
    chain_drained: bool,
    park_late: bool,
    guard_http2: bool,
    guard_ssl: bool,
    guard_started: Stamp,
    local_close: bool,
    parked_at: Stamp,
}

/// The connection's context: its fields when the park holds the only reference (the common
/// case), else the shared context.
enum CompactContext {
    Owned {
        shared: Arc<HttpConnectionManagerShared>,
        worker: Rc<WorkerContext>,
        id: u64,
        endpoints: Endpoints,
        drain: Option<tokio::sync::watch::Receiver<crate::listener::drain::DrainPhase>>,
        buffer_limit: usize,
        requests: u32,
        active_streams: u32,
        idle_since: Option<Stamp>,
        http2: bool,
        draining: bool,
        /// Whether the context has a stream wake-up cell (legate's HTTP/1.1 codec); a parked
        /// connection has no stream, so the cell is empty.
        stream_wake: bool,
    },
    Shared(Rc<ConnectionContext>),
}

/// A connection's addresses (and TLS session): inline for IPv4 without TLS, what parks in
/// practice (16 bytes where two `SocketAddr`s take 64), else boxed.
enum Endpoints {
    V4 { remote: SocketAddrV4, local: SocketAddrV4 },
    Other(Box<(SocketAddr, SocketAddr, Option<Arc<SslConnectionInfo>>)>),
}

impl Compact {
    fn new(kept: Kept) -> Compact {
        let Kept { context, draining, timeline, guard, parked_at } = kept;
        let context = match context {
            KeptContext::Owned(context) => {
                let ConnectionContext {
                    shared,
                    worker,
                    info,
                    http2,
                    buffer_limit,
                    active_streams,
                    idle_since,
                    draining,
                    stream_wake,
                    requests,
                } = context;
                // The worker's index is its context's.
                let ConnectionInfo { id, remote_address, local_address, worker: _, ssl, drain } = info;
                let endpoints = match (remote_address, local_address, ssl) {
                    (SocketAddr::V4(remote), SocketAddr::V4(local), None) => Endpoints::V4 { remote, local },
                    (remote, local, ssl) => Endpoints::Other(Box::new((remote, local, ssl))),
                };
                CompactContext::Owned {
                    shared,
                    worker,
                    id,
                    endpoints,
                    drain,
                    buffer_limit,
                    requests: requests.get(),
                    active_streams: active_streams.get(),
                    idle_since: idle_since.get().map(Stamp::of),
                    http2,
                    draining: draining.get(),
                    stream_wake: stream_wake.is_some(),
                }
            }
            KeptContext::Shared(context) => CompactContext::Shared(context),
        };
        let Draining { waiter, chain: _, server_seen } = draining;
        let Timeline { started, shutdown_at, chain_drained, park_late } = timeline;
        let GuardState { http2: guard_http2, ssl: guard_ssl, started: guard_started, local_close } = guard;
        Compact {
            context,
            drain_seen: waiter.into_seen(),
            server_seen,
            started: Stamp::of(started),
            shutdown_at: shutdown_at.map(Stamp::of),
            chain_drained,
            park_late,
            guard_http2,
            guard_ssl,
            guard_started: Stamp::of(guard_started),
            local_close,
            parked_at: Stamp::of(parked_at),
        }
    }

    fn expand(self) -> Kept {
        let context = match self.context {
            CompactContext::Owned {
                shared,
                worker,
                id,
                endpoints,
                drain,
                buffer_limit,
                requests,
                active_streams,
                idle_since,
                http2,
                draining,
                stream_wake,
            } => {
                let (remote_address, local_address, ssl) = match endpoints {
                    Endpoints::V4 { remote, local } => (SocketAddr::V4(remote), SocketAddr::V4(local), None),
                    Endpoints::Other(other) => *other,
                };
                let info = ConnectionInfo { id, remote_address, local_address, worker: worker.index, ssl, drain };
                KeptContext::Owned(ConnectionContext {
                    shared,
                    worker,
                    info,
                    http2,
                    buffer_limit,
                    active_streams: Cell::new(active_streams),
                    idle_since: Cell::new(idle_since.map(Stamp::instant)),
                    draining: Cell::new(draining),
                    stream_wake: stream_wake.then(|| Cell::new(None)),
                    requests: Cell::new(requests),
                })
            }
            CompactContext::Shared(context) => KeptContext::Shared(context),
        };
        let draining = Draining {
            waiter: DrainWaiter::with_seen(&context.worker.drains, self.drain_seen),
            chain: context.info.drain.clone(),
            server_seen: self.server_seen,
        };
        Kept {
            context,
            draining,
            timeline: Timeline {
                started: self.started.instant(),
                shutdown_at: self.shutdown_at.map(Stamp::instant),
                chain_drained: self.chain_drained,
                park_late: self.park_late,
            },
            guard: GuardState {
                http2: self.guard_http2,
                ssl: self.guard_ssl,
                started: self.guard_started.instant(),
                local_close: self.local_close,
            },
            parked_at: self.parked_at.instant(),
        }
    }
}

/// The connection's context, by value while nothing else holds it (the common case): it then
/// lives in the park's table with the rest, not in a block of its own among the freed remains
/// of the connection's requests.
enum KeptContext {
    Owned(ConnectionContext),
    Shared(Rc<ConnectionContext>),
}

impl KeptContext {
    fn new(context: Rc<ConnectionContext>) -> Self {
        match Rc::try_unwrap(context) {
            Ok(context) => KeptContext::Owned(context),
            Err(context) => KeptContext::Shared(context),
        }
    }

    fn into_rc(self) -> Rc<ConnectionContext> {
        match self {
            KeptContext::Owned(context) => Rc::new(context),
            KeptContext::Shared(context) => context,
        }
    }
}

impl std::ops::Deref for KeptContext {
    type Target = ConnectionContext;

    fn deref(&self) -> &ConnectionContext {
        match self {
            KeptContext::Owned(context) => context,
            KeptContext::Shared(context) => context,
        }
    }
}

impl Drop for ParkedHttp1 {
    fn drop(&mut self) {
        if let Some(compact) = self.0.take() {
            uncount(compact.expand());
        }
    }
}

/// The connection closes from its parked state: no longer counted as open.
fn uncount(kept: Kept) {
    drop(ConnectionGuard::new(&kept.context.shared.stats, kept.guard));
}

/// Parks an idle connection that [`codec_http1::serve`] gave back; when its socket cannot
/// leave the event loop, the connection closes.
pub(super) fn park(
    context: Rc<ConnectionContext>,
    conn: Rc<ServerConn>,
    draining: Draining,
    timeline: Timeline,
    guard: GuardState,
) -> TakenOverEnd {
    let socket = conn.take_socket().map(|socket| socket.into_std());
    drop(conn);
    let context = KeptContext::new(context);
    let mut kept = Kept { context, draining, timeline, guard, parked_at: Instant::now() };
    match socket {
        Some(Ok(socket)) => TakenOverEnd::Idle(Box::new(into_parked(kept, socket))),
        _ => {
            kept.guard.local_close = true;
            uncount(kept);
            TakenOverEnd::Closed(ConnectionEvent::LocalClose)
        }
    }
}

fn into_parked(kept: Kept, socket: std::net::TcpStream) -> Parked {
    let wake_at = next_idle_check(&kept.context, &kept.timeline, Instant::now()).into_iter().flatten().min();
    // The park hears drains for it (the waiter gives its slot back).
    let state = ParkedFilter::Http1(ParkedHttp1(Some(Compact::new(kept))));
    Parked { socket, wake_at, state }
}

impl ParkedHttp1 {
    /// See [`ParkedFilter::wake`].
    pub fn wake(mut self, socket: std::net::TcpStream) -> Woken {
        let Some(compact) = self.0.take() else { return Woken::Closed(ConnectionEvent::LocalClose) };
        let mut kept = compact.expand();
        let mut first = BytesMut::zeroed(FIRST_READ);
        match (&socket).read(&mut first) {
            Ok(0) => {
                // The client closed.
                uncount(kept);
                Woken::Closed(ConnectionEvent::RemoteClose)
            }
            Ok(n) => {
                first.truncate(n);
                kept.timeline.park_late = kept.parked_at.elapsed() < PARK_LATE_AFTER;
                let stats = &kept.context.shared.stats;
                stats.downstream_cx_rx_bytes_total.add(n as u64);
                let Ok(socket) = tokio::net::TcpStream::from_std(socket) else {
                    kept.guard.local_close = true;
                    uncount(kept);
                    return Woken::Closed(ConnectionEvent::LocalClose);
                };
                let shared = &kept.context.shared;
                let limits =
                    Limits { max_head: shared.max_request_headers_bytes, max_headers: shared.max_headers_count };
                let (rx, tx) = (stats.downstream_cx_rx_bytes_total.clone(), stats.downstream_cx_tx_bytes_total.clone());
                let conn = Rc::new(ServerConn::new(TransportSocket::RawBuffer(socket), first, rx, tx, limits));
                Woken::Resume(Box::pin(resume(kept, conn)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let Kept { context, mut draining, mut timeline, guard, parked_at } = kept;
                let mut guard = ConnectionGuard::new(&context.shared.stats, guard);
                let now = Instant::now();
                let mut close = idle_or_too_old(&context, &timeline, now);
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                if !close {
                    if let std::task::Poll::Ready(request) = draining.poll_next(&mut cx, !timeline.chain_drained) {
                        close = note_drain(request, &context, &mut timeline, &mut guard);
                    }
                }
                if close {
                    guard.local_close = true;
                    // FIN, as the codec's shutdown would.
                    let _ = socket.shutdown(std::net::Shutdown::Write);
                    let event = guard.close(&context);
                    drop(guard);
                    return Woken::Closed(event);
                }
                let guard = guard.into_state();
                Woken::Park(into_parked(Kept { context, draining, timeline, guard, parked_at }, socket))
            }
            Err(_) => {
                // Reading failed: the client is gone.
                uncount(kept);
                Woken::Closed(ConnectionEvent::RemoteClose)
            }
        }
    }
}

/// The woken connection's task: requests again, until it closes or parks again.
async fn resume(kept: Kept, conn: Rc<ServerConn>) -> TakenOverEnd {
    let Kept { context, mut draining, mut timeline, guard, .. } = kept;
    let context = context.into_rc();
    let mut guard = ConnectionGuard::new(&context.shared.stats, guard);
    let end = codec_http1::serve(&context, conn, &mut draining, &mut timeline, &mut guard).await;
    let guard = guard.into_state();
    after_http1(end, context, draining, timeline, guard)
}

/// What a connection served by [`codec_http1::serve`] comes to, from its start or from a
/// park: parked again when it idles, else closed (counted by `guard`'s drop).
pub(super) fn after_http1(
    end: Http1End,
    context: Rc<ConnectionContext>,
    draining: Draining,
    timeline: Timeline,
    guard: GuardState,
) -> TakenOverEnd {
    match end {
        Http1End::Idle(conn) => park(context, conn, draining, timeline, guard),
        Http1End::Closed => TakenOverEnd::Closed(ConnectionGuard::new(&context.shared.stats, guard).close(&context)),
    }
}
