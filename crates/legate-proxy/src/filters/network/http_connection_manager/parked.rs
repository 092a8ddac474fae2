//! An idle HTTP/1.1 keep-alive connection, parked (see [`crate::worker::park`]): what the
//! connection manager needs to go on, without the connection's task, futures, timer, codec
//! state or event loop registration. Woken, it reads what arrived and resumes in a task,
//! closes (the client went, the idle timeout, `max_connection_duration`, a drain), or parks
//! again.

use std::io::Read;
use std::rc::Rc;
use std::time::Instant;

use bytes::BytesMut;

use super::codec_http1::{self, Http1End};
use super::{
    idle_or_too_old, next_idle_check, note_drain, ConnectionContext, ConnectionGuard, Draining, GuardState, Timeline,
    PARK_LATE_AFTER,
};
use crate::http::h1_server::{Limits, ServerConn};
use crate::network::{ConnectionEvent, Parked, ParkedFilter, TakenOverEnd, TransportSocket, Woken};

/// The first read of a woken connection: a request head usually fits; the codec reads the
/// rest.
const FIRST_READ: usize = 4096;

/// What a parked connection keeps.
struct Kept {
    context: KeptContext,
    draining: Draining,
    timeline: Timeline,
    guard: GuardState,
    parked_at: Instant,
}

/// The parked state; un-counts the connection when dropped unresumed.
pub struct ParkedHttp1(Option<Kept>);

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
        if let Some(kept) = self.0.take() {
            drop(ConnectionGuard::new(&kept.context.shared.stats, kept.guard));
        }
    }
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
    let kept = ParkedHttp1(Some(Kept { context, draining, timeline, guard, parked_at: Instant::now() }));
    match socket {
        Some(Ok(socket)) => TakenOverEnd::Idle(Box::new(kept.into_parked(socket))),
        _ => {
            let mut kept = kept;
            if let Some(kept) = kept.0.as_mut() {
                kept.guard.local_close = true;
            }
            TakenOverEnd::Closed(ConnectionEvent::LocalClose)
        }
    }
}

impl ParkedHttp1 {
    fn into_parked(mut self, socket: std::net::TcpStream) -> Parked {
        let wake_at = self.0.as_mut().and_then(|kept| {
            // The park hears drains for it.
            kept.draining.waiter.release_slot();
            next_idle_check(&kept.context, &kept.timeline, Instant::now()).into_iter().flatten().min()
        });
        Parked { socket, wake_at, state: ParkedFilter::Http1(self) }
    }

    /// See [`ParkedFilter::wake`].
    pub fn wake(mut self, socket: std::net::TcpStream) -> Woken {
        let Some(mut kept) = self.0.take() else { return Woken::Closed(ConnectionEvent::LocalClose) };
        let mut first = BytesMut::zeroed(FIRST_READ);
        match (&socket).read(&mut first) {
            Ok(0) => {
                // The client closed.
                self.0 = Some(kept);
                Woken::Closed(ConnectionEvent::RemoteClose)
            }
            Ok(n) => {
                first.truncate(n);
                kept.timeline.park_late = kept.parked_at.elapsed() < PARK_LATE_AFTER;
                let stats = &kept.context.shared.stats;
                stats.downstream_cx_rx_bytes_total.add(n as u64);
                let Ok(socket) = tokio::net::TcpStream::from_std(socket) else {
                    kept.guard.local_close = true;
                    self.0 = Some(kept);
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
                Woken::Park(
                    ParkedHttp1(Some(Kept { context, draining, timeline, guard, parked_at })).into_parked(socket),
                )
            }
            Err(_) => {
                // Reading failed: the client is gone.
                self.0 = Some(kept);
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
