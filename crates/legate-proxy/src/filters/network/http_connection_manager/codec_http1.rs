//! An HTTP/1.1 downstream connection on legate's own codec ([`crate::http::h1_server`]): one
//! request at a time, read, served by the connection manager, answered, and the connection
//! kept or closed. The connection's timeouts run here: `request_headers_timeout` while a
//! head arrives, `idle_timeout` and `max_connection_duration` between requests, drains (the
//! response in flight says `connection: close`), and `drain_timeout` as the last word.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use http::{Method, StatusCode, Version};
use http_body::Body as _;
use legate_config::filters::network::http_connection_manager::ServerHeaderTransformation;
use tokio::time::Sleep;

use super::{active_stream, stream_boxes};
use super::{
    idle_or_too_old, next_idle_check, note_drain, ConnectionContext, ConnectionGuard, Draining, Timeline, PARK_AFTER,
    PARK_LATE_AFTER,
};
use crate::http::body::Incoming;
use crate::http::h1_server::{
    encode_head, error_reply, Framing, ReadError, RequestHead, ResponseContext, ResponseWriter, ServerConn, WriteError,
};
use crate::http::headers;
use crate::http::io::DownstreamUpgrade;
use crate::http::{LocalReply, ResponseFlag, StreamInfo};
use crate::worker::clock;

/// One timer for the connection, moved only when a deadline comes nearer: a later deadline
/// (the idle timeout after each request) waits for the timer to fire, and is then found not
/// due and armed again. Resetting a tokio timer to an earlier time can wake the event loop
/// through its eventfd; doing it once per request would cost a system call per request.
struct ConnTimer {
    sleep: Pin<Box<Sleep>>,
    armed: Option<Instant>,
    /// The waker the sleep was last polled with, since it was last armed: until it fires,
    /// tokio keeps that waker, and polling again for the same task would only register it
    /// again (~120 instructions a poll, and the connection's task polls ~2.4 times a
    /// request).
    listening: Option<Waker>,
}

impl ConnTimer {
    fn new() -> Self {
        // Not armed: a distant time, from the clock of this wake-up (no clock read of its own).
        let distant = clock::now() + Duration::from_secs(3600);
        ConnTimer { sleep: Box::pin(tokio::time::sleep_until(distant.into())), armed: None, listening: None }
    }

    fn arm(&mut self, at: Option<Instant>) {
        let Some(at) = at else { return };
        if self.armed.is_none_or(|armed| at < armed) {
            self.sleep.as_mut().reset(at.into());
            self.armed = Some(at);
            // tokio's reset keeps the waker it holds, but does not promise to: the next poll
            // registers it again.
            self.listening = None;
        }
    }

    /// Ready when the armed time comes.
    fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.armed.is_none() {
            return Poll::Pending;
        }
        let heard = self.listening.as_ref().is_some_and(|waker| waker.will_wake(cx.waker()));
        if heard && !self.sleep.is_elapsed() {
            return Poll::Pending;
        }
        if self.sleep.as_mut().poll(cx).is_pending() {
            if !heard {
                self.listening = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        self.armed = None;
        self.listening = None;
        Poll::Ready(())
    }

    /// Resolves when the armed time comes.
    async fn fired(&mut self) {
        poll_fn(|cx| self.poll_fired(cx)).await
    }
}

/// How serving a connection ended.
pub(super) enum Http1End {
    /// Closed, or handed to a tunnel.
    Closed,
    /// Idle, with nothing of a request held, and its socket can be parked (see
    /// [`crate::worker::park`]): the caller puts the connection aside.
    Idle(Rc<ServerConn>),
}

/// Serves the connection until it closes, is handed to a tunnel or idles: requests while
/// they flow ([`active`], boxed); then, idle, it waits here ([`idle`]) with no buffer and
/// none of a request's state, or is parked (over plain TCP: a TLS connection's state cannot
/// leave its task; and see `PARK_LATE_AFTER`).
///
/// A function returning a block rather than an `async fn`: an `async fn` keeps its
/// arguments twice (as given, and as its locals), and this future lives as long as the
/// connection.
#[allow(clippy::manual_async_fn)] // on purpose, see above
pub(super) fn serve<'a, 'g>(
    context: &'a Rc<ConnectionContext>,
    conn: Rc<ServerConn>,
    drain: &'a mut Draining,
    timeline: &'a mut Timeline,
    guard: &'a mut ConnectionGuard<'g>,
) -> impl Future<Output = Http1End> + use<'a, 'g> {
    async move {
        let mut timer = ConnTimer::new();
        loop {
            if !Box::pin(active(context, &conn, drain, timeline, guard, &mut timer)).await {
                return Http1End::Closed;
            }
            match idle(context, &conn, drain, timeline, guard, &mut timer).await {
                Idled::BytesArrived => {}
                Idled::Park => return Http1End::Idle(conn),
                Idled::Gone => return Http1End::Closed,
                Idled::Close => {
                    Box::pin(shutdown(context, &conn, true)).await;
                    return Http1End::Closed;
                }
            }
        }
    }
}

/// Serves requests until the connection closes (`false`) or idles (`true`).
///
/// The exchange is written out here rather than in a function of its own: a request's
/// future weighs kilobytes, and each future handed to an `.await` is copied whole into its
/// caller's (callgrind: 24k instructions of copying per request when it was nested).
async fn active(
    context: &Rc<ConnectionContext>,
    conn: &Rc<ServerConn>,
    drain: &mut Draining,
    timeline: &mut Timeline,
    guard: &mut ConnectionGuard<'_>,
    timer: &mut ConnTimer,
) -> bool {
    // Where each request's future runs: a box from the worker's spares (allocating ~5 KB per
    // request costs more than reusing it), given back as soon as the response head is out of
    // it, so that a connection waiting for its next request holds none.
    let spare: Rc<stream_boxes::Spare<_>> = context.worker.spare_stream_boxes();
    loop {
        let head = match wait_head(context, conn, drain, timeline, guard, timer).await {
            Waited::Head(head) => head,
            Waited::Idle => return true,
            Waited::Closed => return false,
        };
        context.count_request();
        let method = head.parts.method.clone();
        // HTTP/1.0 connections close after each response, as they did with hyper.
        let keep_alive = head.keep_alive && head.parts.version == Version::HTTP_11 && !head.wants_upgrade;
        // The client said this request is its last (`connection: close`, or HTTP/1.0).
        let last_request = !head.keep_alive;
        let body = conn.start(&head);
        let end_stream = head.framing == Framing::Empty;
        let mut handover = None;
        let upgrade = match head.wants_upgrade {
            true => {
                active_stream::upgrade_type(&head.parts.method, head.parts.version, &head.parts.headers).map(|kind| {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    handover = Some(tx);
                    (kind, DownstreamUpgrade::Http1(rx))
                })
            }
            false => None,
        };
        let mut stream = spare.start(|| {
            active_stream::serve_stream(context.clone(), head.parts, Incoming::Http1(body), end_stream, upgrade)
        });
        let Some(running) = stream.as_mut().as_pin_mut() else {
            return false;
        };
        let response = run_stream(context, conn, running, drain, timeline, guard, timer).await;
        spare.give_back(stream);
        let Some(response) = response else {
            return false;
        };
        let (mut parts, body) = response;
        let rc = ResponseContext {
            method: &method,
            keep_alive,
            end_stream: body.is_end_stream(),
            exact_size: body.size_hint().exact(),
        };
        let mut out = conn.take_spare();
        let (encoding, keep_alive) = encode_head(&mut out, &parts, &rc);
        let upgraded =
            parts.status == StatusCode::SWITCHING_PROTOCOLS || (method == Method::CONNECT && parts.status.is_success());
        headers::recycle(std::mem::take(&mut parts.headers));
        let mut writer = ResponseWriter::new(out, body, encoding);
        let written = drive(context, conn, &mut writer, drain, timeline, guard, timer).await;
        drop(writer);
        match written {
            Ok(()) => {}
            Err(WriteError::Body) => {
                guard.local_close = true;
                Box::pin(shutdown(context, conn, true)).await;
                return false;
            }
            Err(WriteError::Io(_)) => return false,
        }
        if let Some(tx) = handover.filter(|_| upgraded) {
            if let Some(io) = conn.take_upgraded() {
                let _ = tx.send(io);
            }
            return false;
        }
        let request_done = conn.finish_request();
        if !(keep_alive && request_done && !context.draining.get() && timeline.shutdown_at.is_none()) {
            guard.local_close = true;
            // Nothing more is coming from a client whose last request was read in full:
            // waiting for its close would only hold the connection.
            let linger = !(last_request && request_done);
            // Without lingering, a plain socket's FIN goes with its close (the socket is
            // dropped next), which spares the `shutdown` call; TLS still sends close_notify.
            if linger || conn.is_tls() {
                Box::pin(shutdown(context, conn, linger)).await;
            }
            return false;
        }
    }
}

/// FIN (and TLS close_notify), bounded in case the peer does not read; then, for up to
/// `delayed_close_timeout`, what the client still sends is read and dropped until it closes
/// too, so that the socket does not close with unread bytes (which answers with a reset, and
/// a reset may destroy the response before the client reads it). Envoy waits the same time for
/// the peer's close, without sending its FIN first or reading. (Callers box this and the reply
/// below: their timers would otherwise weigh on every idle connection's future.)
async fn shutdown(context: &ConnectionContext, conn: &ServerConn, linger: bool) {
    let _ = tokio::time::timeout(Duration::from_secs(1), poll_fn(|cx| conn.poll_shutdown(cx))).await;
    if linger {
        super::delayed_close(&context.shared, poll_fn(|cx| conn.poll_linger(cx))).await;
    }
}

/// Writes a reply of the codec's own and closes.
async fn reply_and_close(context: &ConnectionContext, conn: &ServerConn, reply: &[u8]) {
    let mut rest = reply;
    let _ = tokio::time::timeout(Duration::from_secs(1), poll_fn(|cx| conn.poll_write_all(cx, &mut rest))).await;
    shutdown(context, conn, true).await;
}

/// A reply the codec makes itself (a refused head, the header timeout) for a request that
/// began at `start`. Envoy's codec answers through a stream of its own, with the connection
/// manager's local reply: `local_reply_config` applies, the reply is a request and a response
/// in the stats, and a line in the access logs (`"- - HTTP/1.1" 400 DPE`).
async fn codec_reply(context: &ConnectionContext, conn: &ServerConn, start: Instant, reply: LocalReply) {
    let shared = &context.shared;
    let mut info = codec_stream_info(context, start, &reply);
    let mut reply = reply;
    if let Some(mapper) = &shared.local_reply {
        active_stream::map_local_reply(mapper, &mut reply, &mut info);
    }
    let server = (shared.server_header_transformation() != ServerHeaderTransformation::PassThrough)
        .then_some(&shared.server_name);
    let status = reply.status.as_u16();
    let body = reply.body.len() as u64;
    Box::pin(reply_and_close(context, conn, &error_reply(reply, server))).await;
    account_codec_reply(context, info, status, body);
}

/// The stream a codec's own reply answers: no request, the reply's flag and details.
pub(super) fn codec_stream_info(context: &ConnectionContext, start: Instant, reply: &LocalReply) -> StreamInfo {
    let connection = &context.info;
    let mut info =
        StreamInfo::new(Version::HTTP_11, connection.id, connection.remote_address, connection.local_address);
    info.start = start;
    if let Some(ssl) = &connection.ssl {
        info.requested_server_name = ssl.server_name.clone();
        info.downstream_ssl = Some(ssl.clone());
    }
    if let Some(flag) = reply.flag {
        info.set_flag(flag);
    }
    info.response_code_details = Some(std::borrow::Cow::Owned(reply.details.clone()));
    info
}

/// A codec's reply sent: counted as a request and a response, and logged.
pub(super) fn account_codec_reply(context: &ConnectionContext, mut info: StreamInfo, status: u16, body: u64) {
    let shared = &context.shared;
    info.response_code = Some(status);
    info.bytes_sent = body;
    info.end = Some(info.elapsed());
    shared.count_codec_reply(status);
    for logger in &shared.access_logs {
        logger.log(&info);
    }
}

/// How waiting for a request head ended. (A return value, gone at once: boxing the head
/// would cost an allocation per request.)
#[allow(clippy::large_enum_variant)]
enum Waited {
    Head(RequestHead),
    /// Nothing arrived for a while: the connection idles.
    Idle,
    Closed,
}

/// Waits for the next request head.
async fn wait_head(
    context: &Rc<ConnectionContext>,
    conn: &ServerConn,
    drain: &mut Draining,
    timeline: &mut Timeline,
    guard: &mut ConnectionGuard<'_>,
    timer: &mut ConnTimer,
) -> Waited {
    let shared = &context.shared;
    let stats = &shared.stats;
    let mut head_deadline: Option<Instant> = None;
    loop {
        let now = clock::now();
        if head_deadline.is_none() && conn.head_started() {
            head_deadline = shared.request_headers_timeout.map(|t| now + t);
        }
        let [idle, duration] = next_idle_check(context, timeline, now);
        let park = (!conn.head_started()).then(|| context.idle_since.get().unwrap_or(now) + PARK_AFTER);
        timer.arm([idle, duration, head_deadline, park].into_iter().flatten().min());
        let report_start = head_deadline.is_none() && shared.request_headers_timeout.is_some();
        let chain = !timeline.chain_drained;
        tokio::select! {
            biased;
            head = poll_fn(|cx| conn.poll_head(cx, report_start)) => match head {
                Ok(Some(head)) => return Waited::Head(head),
                // The head's first bytes: the header timeout is armed above.
                Ok(None) => {}
                Err(ReadError::Head(e)) => {
                    stats.downstream_cx_protocol_error.inc();
                    guard.local_close = true;
                    let reason = e.status().canonical_reason().unwrap_or_default();
                    let reply = LocalReply::new(e.status(), reason, e.details())
                        .with_flag(ResponseFlag::DownstreamProtocolError);
                    Box::pin(codec_reply(context, conn, clock::now(), reply)).await;
                    return Waited::Closed;
                }
                Err(ReadError::Closed | ReadError::Io(_)) => return Waited::Closed,
            },
            () = timer.fired() => {
                let now = clock::now();
                if let Some(deadline) = head_deadline.filter(|at| now >= *at) {
                    stats.downstream_rq_header_timeout.inc();
                    guard.local_close = true;
                    let started = shared.request_headers_timeout.map_or(now, |t| deadline - t);
                    let reply =
                        LocalReply::new(StatusCode::REQUEST_TIMEOUT, "request header timeout", "request_header_timeout");
                    Box::pin(codec_reply(context, conn, started, reply)).await;
                    return Waited::Closed;
                }
                if closing(context, conn, timeline, guard, now).await {
                    return Waited::Closed;
                }
                if !conn.head_started() && context.idle_since.get().is_none_or(|at| now >= at + PARK_AFTER) {
                    conn.release_buffers();
                    return Waited::Idle;
                }
            }
            request = poll_fn(|cx| drain.poll_next(cx, chain)) => {
                if note_drain(request, context, timeline, guard) && !conn.head_started() {
                    Box::pin(shutdown(context, conn, true)).await;
                    return Waited::Closed;
                }
            }
        }
    }
}

/// How an idle connection's wait ended.
enum Idled {
    BytesArrived,
    /// Idle long enough to leave the task (see `PARK_LATE_AFTER`).
    Park,
    /// The client closed, or reading failed.
    Gone,
    /// legate closes it: idle timeout, `max_connection_duration`, drain.
    Close,
}

/// Waits, with nothing of a request held, until bytes arrive or the connection must close.
/// One poll function rather than a `select!` of futures, and not an `async fn` (which would
/// keep its arguments twice): this wait is what every idle connection's future holds.
fn idle<'a, 'g>(
    context: &'a ConnectionContext,
    conn: &'a ServerConn,
    drain: &'a mut Draining,
    timeline: &'a mut Timeline,
    guard: &'a mut ConnectionGuard<'g>,
    timer: &'a mut ConnTimer,
) -> impl Future<Output = Idled> + use<'a, 'g> {
    let parkable = conn.parkable();
    let park_now = parkable && !timeline.park_late;
    poll_fn(move |cx| loop {
        if park_now {
            return Poll::Ready(Idled::Park);
        }
        let now = clock::now();
        let [idle, duration] = next_idle_check(context, timeline, now);
        let park = parkable.then(|| context.idle_since.get().unwrap_or(now) + PARK_LATE_AFTER);
        timer.arm([idle, duration, park].into_iter().flatten().min());
        if let Poll::Ready(read) = conn.poll_fill(cx) {
            return Poll::Ready(if read.is_ok_and(|n| n > 0) { Idled::BytesArrived } else { Idled::Gone });
        }
        if timer.poll_fired(cx).is_ready() {
            let now = clock::now();
            if idle_or_too_old(context, timeline, now) {
                guard.local_close = true;
                return Poll::Ready(Idled::Close);
            }
            if park.is_some_and(|at| now >= at) {
                return Poll::Ready(Idled::Park);
            }
            continue;
        }
        let request = std::task::ready!(drain.poll_next(cx, !timeline.chain_drained));
        if note_drain(request, context, timeline, guard) {
            return Poll::Ready(Idled::Close);
        }
    })
}

/// On the timer between requests: closes the connection if its idle timeout or
/// `max_connection_duration` has come (`true`).
async fn closing(
    context: &ConnectionContext,
    conn: &ServerConn,
    timeline: &Timeline,
    guard: &mut ConnectionGuard<'_>,
    now: Instant,
) -> bool {
    if !idle_or_too_old(context, timeline, now) {
        return false;
    }
    guard.local_close = true;
    Box::pin(shutdown(context, conn, true)).await;
    true
}

/// Runs the stream until its response head: `None` when the client went away (the stream is
/// dropped: Envoy's downstream reset) or the drain time ran out.
async fn run_stream<S, R>(
    context: &Rc<ConnectionContext>,
    conn: &ServerConn,
    mut stream: Pin<&mut S>,
    drain: &mut Draining,
    timeline: &mut Timeline,
    guard: &mut ConnectionGuard<'_>,
    timer: &mut ConnTimer,
) -> Option<R>
where
    S: Future<Output = R>,
{
    let work = |cx: &mut Context<'_>| match stream.as_mut().poll(cx) {
        Poll::Ready(response) => Poll::Ready(Some(response)),
        Poll::Pending => conn.poll_client_gone(cx).map(|()| None),
    };
    within_drain_time(context, drain, timeline, guard, timer, work).await.flatten()
}

/// Writes the response; the drain time still bounds it.
async fn drive<B>(
    context: &Rc<ConnectionContext>,
    conn: &ServerConn,
    writer: &mut ResponseWriter<B>,
    drain: &mut Draining,
    timeline: &mut Timeline,
    guard: &mut ConnectionGuard<'_>,
    timer: &mut ConnTimer,
) -> Result<(), WriteError>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
{
    // The common case: all written at once, no timer or drain watch needed.
    if let Poll::Ready(result) = poll_fn(|cx| Poll::Ready(writer.poll(cx, conn))).await {
        return result;
    }
    let work = |cx: &mut Context<'_>| writer.poll(cx, conn);
    within_drain_time(context, drain, timeline, guard, timer, work).await.unwrap_or(Err(WriteError::Body))
}

/// Polls `work` while a stream runs, watching drains (which start the drain time) and the
/// timer (`max_connection_duration` starts it, its end cuts the connection: `None`).
async fn within_drain_time<T>(
    context: &Rc<ConnectionContext>,
    drain: &mut Draining,
    timeline: &mut Timeline,
    guard: &mut ConnectionGuard<'_>,
    timer: &mut ConnTimer,
    mut work: impl FnMut(&mut Context<'_>) -> Poll<T>,
) -> Option<T> {
    timer.arm(stream_deadline(context, timeline));
    poll_fn(|cx| loop {
        if let Poll::Ready(done) = work(cx) {
            return Poll::Ready(Some(done));
        }
        // The stream's own deadlines (the router's timeouts) are kept by this timer.
        timer.arm(context.take_stream_wake());
        if timer.poll_fired(cx).is_ready() {
            if past_drain_time(context, timeline, guard) {
                return Poll::Ready(None);
            }
            timer.arm(stream_deadline(context, timeline));
            // Polled again: it may be its deadline that came.
            continue;
        }
        let request = std::task::ready!(drain.poll_next(cx, !timeline.chain_drained));
        if note_drain(request, context, timeline, guard) {
            timeline.shutdown_at = Some(clock::now());
            timer.arm(stream_deadline(context, timeline));
        }
    })
    .await
}

/// While a stream runs: the end of the drain time, or `max_connection_duration`.
fn stream_deadline(context: &ConnectionContext, timeline: &Timeline) -> Option<Instant> {
    match timeline.shutdown_at {
        Some(at) => Some(at + context.shared.drain_timeout),
        None => context.shared.max_connection_duration.map(|d| timeline.started + d),
    }
}

/// On the timer while a stream runs: `true` when the drain time is over (the connection is
/// cut); `max_connection_duration` starts the drain (the response says `connection: close`).
fn past_drain_time(context: &ConnectionContext, timeline: &mut Timeline, guard: &mut ConnectionGuard<'_>) -> bool {
    let now = clock::now();
    if let Some(at) = timeline.shutdown_at {
        if now >= at + context.shared.drain_timeout {
            guard.local_close = true;
            return true;
        }
        return false;
    }
    if idle_or_too_old(context, timeline, now) {
        guard.local_close = true;
        context.draining.set(true);
        timeline.shutdown_at = Some(now);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The paused clock's time (tokio's clock moves on while the test waits; std's would not).
    fn now() -> Instant {
        tokio::time::Instant::now().into_std()
    }

    /// One poll of the timer, as on a wake-up of the connection's task for something else.
    async fn poll_once(timer: &mut ConnTimer) -> Poll<()> {
        poll_fn(|cx| Poll::Ready(timer.poll_fired(cx))).await
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_wakes_its_task_however_often_it_is_polled_and_armed() {
        let limit = Duration::from_secs(60);
        let mut timer = ConnTimer::new();
        // Polled twice before its time (the second poll finds its waker already held).
        timer.arm(Some(now() + Duration::from_secs(5)));
        assert!(poll_once(&mut timer).await.is_pending());
        assert!(poll_once(&mut timer).await.is_pending());
        tokio::time::timeout(limit, timer.fired()).await.expect("the armed time wakes the task");
        // Armed again once it fired: it needs a waker again.
        timer.arm(Some(now() + Duration::from_secs(5)));
        assert!(poll_once(&mut timer).await.is_pending());
        tokio::time::timeout(limit, timer.fired()).await.expect("the timer armed again wakes the task");
        // Armed late, then earlier while it waits: the earlier time wakes it; a later one is
        // not taken.
        let started = tokio::time::Instant::now();
        timer.arm(Some(now() + Duration::from_secs(3600)));
        assert!(poll_once(&mut timer).await.is_pending());
        timer.arm(Some(now() + Duration::from_secs(5)));
        timer.arm(Some(now() + Duration::from_secs(1800)));
        assert!(poll_once(&mut timer).await.is_pending());
        tokio::time::timeout(limit, timer.fired()).await.expect("the earlier time wakes the task");
        assert!(started.elapsed() < limit, "woken at the earlier time, not the later ones");
    }
}
