//! The body of a response on its way downstream, and the end of its stream: stats, access
//! logs and the connection's idle accounting run when the body ends or is dropped (the
//! downstream went away).
//!
//! While an upstream body streams, the timers that still apply after the response headers
//! were sent run here: the route `timeout` (it spans until the response is complete),
//! `per_try_idle_timeout`, `stream_idle_timeout` and `max_stream_duration`. A timer that
//! fires now can only reset the stream.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::worker::clock;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use super::ConnectionContext;
use crate::filters::http::router::UpstreamRequestGuard;
use crate::http::body::{BodySource, BoxError};
use crate::http::filter::BodyTransform;
use crate::http::{ResponseFlag, StreamInfo};
use crate::upstream::pool::{ConnBody, PooledConn};
use crate::worker::reused::{Reusable, Reused, SpareBoxes};
use std::thread::LocalKey;

/// An upstream response body with what it holds on to until it ends, and its timers (here
/// rather than in [`ResponseBody`]: a response is moved several times on its way out, and a
/// local reply's body has no timers).
pub struct UpstreamBody {
    pub body: ConnBody,
    pub conn: Option<PooledConn>,
    pub request: UpstreamRequestGuard,
    pub timers: BodyTimers,
}

thread_local! {
    static SPARE_UPSTREAM_BODIES: SpareBoxes<UpstreamBody> = const { SpareBoxes::new() };
}

impl Reusable for UpstreamBody {
    fn spares() -> &'static LocalKey<SpareBoxes<Self>> {
        &SPARE_UPSTREAM_BODIES
    }
}

enum Inner {
    Full(Option<Bytes>),
    Upstream(Reused<UpstreamBody>),
}

/// Which timer ends a stream that is still streaming its response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyTimeout {
    /// Route `timeout` (or `per_try_timeout`): `upstream_rq_timeout`, `UT`.
    Route,
    /// `per_try_idle_timeout`: `upstream_rq_per_try_idle_timeout`, `UT`.
    PerTryIdle,
    /// `stream_idle_timeout`: `downstream_rq_idle_timeout`, `SI`.
    StreamIdle,
    /// `max_stream_duration`: `downstream_rq_max_duration_reached`, `DT`.
    MaxDuration,
}

/// The timers of a streaming response, on one timer: a fixed deadline (route, per-try or
/// max stream duration) and up to two idle timeouts measured from the last body activity.
/// Activity only records the time; the one `Sleep` is re-armed for the next due timeout when
/// it fires early, so a busy stream costs no timer update per chunk.
#[derive(Default)]
pub struct BodyTimers {
    deadline: Option<(BodyTimeout, tokio::time::Instant)>,
    idle: [Option<(BodyTimeout, Duration)>; 2],
    last_activity: Option<tokio::time::Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl BodyTimers {
    /// `deadline` fires at a fixed time; each of `idle` after that long without activity,
    /// counted from `now`.
    pub fn new(
        now: tokio::time::Instant,
        deadline: Option<(BodyTimeout, tokio::time::Instant)>,
        idle: [Option<(BodyTimeout, Duration)>; 2],
    ) -> Self {
        let active = deadline.is_some() || idle.iter().any(Option::is_some);
        BodyTimers { deadline, idle, last_activity: active.then_some(now), sleep: None }
    }

    fn touch(&mut self) {
        if self.last_activity.is_some() {
            self.last_activity = Some(tokio::time::Instant::from_std(clock::now()));
        }
    }

    /// The timeout due first, and when.
    fn next_due(&self) -> Option<(BodyTimeout, tokio::time::Instant)> {
        let last = self.last_activity?;
        self.deadline
            .into_iter()
            .chain(self.idle.iter().flatten().map(|(which, d)| (*which, last + *d)))
            .min_by_key(|(_, at)| *at)
    }

    fn poll_fired(&mut self, cx: &mut Context<'_>) -> Option<BodyTimeout> {
        loop {
            let (which, at) = self.next_due()?;
            let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            if sleep.deadline() != at {
                sleep.as_mut().reset(at);
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return None;
            }
            if tokio::time::Instant::from_std(clock::now()) >= at {
                return Some(which);
            }
        }
    }
}

use std::future::Future;

pub struct ResponseBody {
    inner: Inner,
    completion: Option<StreamCompletion>,
    /// An encoder filter's change of the bytes (compression); none on the plain path.
    transform: Option<Box<Transforming>>,
}

/// A body transform under way.
struct Transforming {
    transform: Box<dyn BodyTransform>,
    /// The source ended (its tail is out); trailers still to send after it.
    ended: bool,
    trailers: Option<HeaderMap>,
}

impl Transforming {
    fn of(completion: &mut StreamCompletion) -> Option<Box<Self>> {
        let transform = completion.body_transform.take()?;
        Some(Box::new(Transforming { transform, ended: false, trailers: None }))
    }
}

impl ResponseBody {
    pub fn full(body: Bytes, mut completion: StreamCompletion) -> Self {
        let transform = Transforming::of(&mut completion);
        ResponseBody { inner: Inner::Full((!body.is_empty()).then_some(body)), completion: Some(completion), transform }
    }

    pub fn upstream(body: Reused<UpstreamBody>, mut completion: StreamCompletion) -> Self {
        let transform = Transforming::of(&mut completion);
        ResponseBody { inner: Inner::Upstream(body), completion: Some(completion), transform }
    }

    /// The next frame of a transformed body: the source's data through the transform, its
    /// tail once the source ends, then the source's trailers.
    fn poll_transformed(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(mut t) = self.transform.take() else { return Poll::Ready(None) };
        let out = loop {
            if t.ended {
                if let Some(trailers) = t.trailers.take() {
                    break Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                self.finish(true, None);
                return Poll::Ready(None);
            }
            let frame = match self.poll_source(cx, false) {
                Poll::Pending => break Poll::Pending,
                Poll::Ready(frame) => frame,
            };
            let bytes = match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => t.transform.data(&data),
                    Err(frame) => {
                        t.ended = true;
                        let trailers = frame.into_trailers().ok();
                        match trailers.as_ref().and_then(|tr| t.transform.trailers(tr)) {
                            // The transform took the trailers into the body.
                            Some(mut bytes) => {
                                let tail = t.transform.finish();
                                if !tail.is_empty() {
                                    let mut joined = bytes::BytesMut::from(&bytes[..]);
                                    joined.extend_from_slice(&tail);
                                    bytes = joined.freeze();
                                }
                                bytes
                            }
                            None => {
                                t.trailers = trailers;
                                t.transform.finish()
                            }
                        }
                    }
                },
                None => {
                    t.ended = true;
                    t.transform.finish()
                }
                Some(Err(e)) => break Poll::Ready(Some(Err(e))),
            };
            if !bytes.is_empty() {
                if let Some(c) = &mut self.completion {
                    c.info.bytes_sent += bytes.len() as u64;
                }
                break Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
        };
        self.transform = Some(t);
        out
    }

    /// The source's next frame. `plain` (no transform): its data counts as sent and its end
    /// ends the stream.
    fn poll_source(&mut self, cx: &mut Context<'_>, plain: bool) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self;
        match &mut this.inner {
            Inner::Full(body) => match body.take() {
                Some(data) => {
                    if let Some(c) = this.completion.as_mut().filter(|_| plain) {
                        c.info.bytes_sent += data.len() as u64;
                    }
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                None => {
                    if plain {
                        this.finish(true, None);
                    }
                    Poll::Ready(None)
                }
            },
            Inner::Upstream(upstream) => match Pin::new(&mut upstream.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    upstream.timers.touch();
                    if let Some(trailers) = frame.trailers_ref() {
                        upstream.request.trailers(trailers);
                    }
                    if let Some(c) = &mut this.completion {
                        if let Some(data) = frame.data_ref().filter(|_| plain) {
                            c.info.bytes_sent += data.len() as u64;
                        } else if let Some(trailers) = frame.trailers_ref() {
                            c.info.response_trailers = Some(Box::new(trailers.clone()));
                        }
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(None) => {
                    if let Some(c) = &mut this.completion {
                        c.info.last_upstream_rx_byte = Some(c.info.elapsed());
                    }
                    if plain {
                        this.finish(true, None);
                    }
                    Poll::Ready(None)
                }
                Poll::Ready(Some(Err(e))) => {
                    upstream.request.cluster.stats().upstream_rq_rx_reset().inc();
                    if let Some(c) = &this.completion {
                        let stats = &c.context.shared.stats;
                        stats.rq_reset_after_downstream_response_started.inc();
                        stats.downstream_rq_tx_reset.inc();
                    }
                    this.finish(false, Some(ResponseFlag::UpstreamRemoteReset));
                    Poll::Ready(Some(Err(e)))
                }
                Poll::Pending => match upstream.timers.poll_fired(cx) {
                    Some(which) => Poll::Ready(Some(Err(this.timed_out(which)))),
                    None => Poll::Pending,
                },
            },
        }
    }

    fn finish(&mut self, complete: bool, flag: Option<ResponseFlag>) {
        if let Inner::Upstream(upstream) = &mut self.inner {
            upstream.request.complete(complete);
            if let Some(conn) = upstream.conn.take() {
                conn.release(complete);
            }
        }
        if let Some(mut completion) = self.completion.take() {
            if let Some(flag) = flag {
                completion.info.set_flag(flag);
            }
            completion.finish(complete);
        }
    }

    fn timed_out(&mut self, which: BodyTimeout) -> BoxError {
        let flag = match which {
            BodyTimeout::Route | BodyTimeout::PerTryIdle => ResponseFlag::UpstreamRequestTimeout,
            BodyTimeout::StreamIdle => ResponseFlag::StreamIdleTimeout,
            BodyTimeout::MaxDuration => ResponseFlag::DurationTimeout,
        };
        if let Inner::Upstream(upstream) = &self.inner {
            let stats = &upstream.request.cluster.stats();
            match which {
                BodyTimeout::Route => stats.upstream_rq_timeout().inc(),
                BodyTimeout::PerTryIdle => stats.upstream_rq_per_try_idle_timeout().inc(),
                _ => {}
            }
        }
        if let Some(completion) = &self.completion {
            let stats = &completion.context.shared.stats;
            match which {
                BodyTimeout::StreamIdle => stats.downstream_rq_idle_timeout.inc(),
                BodyTimeout::MaxDuration => stats.downstream_rq_max_duration_reached.inc(),
                _ => {}
            }
            // The response started: legate resets the downstream stream (Envoy's filter
            // `resetStream`).
            stats.rq_reset_after_downstream_response_started.inc();
            stats.downstream_rq_tx_reset.inc();
        }
        self.finish(false, Some(flag));
        format!("{which:?} timeout").into()
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match this.transform {
            None => this.poll_source(cx, true),
            Some(_) => this.poll_transformed(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.transform.is_some() {
            return false;
        }
        match &self.inner {
            Inner::Full(body) => body.is_none(),
            Inner::Upstream(upstream) => upstream.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        if self.transform.is_some() {
            return SizeHint::default();
        }
        match &self.inner {
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
            Inner::Upstream(upstream) => upstream.body.size_hint(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if self.completion.is_none() {
            return;
        }
        // hyper drops a body it never had to poll (no bytes) as a normal end; any other
        // body dropped before its end means the downstream went away.
        let complete = match &self.inner {
            Inner::Full(body) => body.is_none(),
            Inner::Upstream(upstream) => upstream.body.is_end_stream(),
        } && self.transform.as_ref().is_none_or(|t| t.ended && t.trailers.is_none());
        if !complete {
            if let Some(c) = &self.completion {
                c.context.shared.stats.downstream_rq_rx_reset.inc();
            }
        }
        self.finish(complete, (!complete).then_some(ResponseFlag::DownstreamConnectionTermination));
    }
}

/// The end of a stream: what runs once, however it ends.
pub struct StreamCompletion {
    pub context: Rc<ConnectionContext>,
    pub info: Reused<StreamInfo>,
    /// A request body still arriving when the response started (a streaming upload, gRPC
    /// both ways): what it brought by the end is read again then.
    pub request_body: Option<Rc<RefCell<BodySource>>>,
    /// An encoder filter's change of the response body, for the body to apply.
    pub body_transform: Option<Box<dyn BodyTransform>>,
    started: Instant,
    done: bool,
}

impl StreamCompletion {
    pub fn new(context: Rc<ConnectionContext>, info: Reused<StreamInfo>) -> Self {
        let started = info.start;
        StreamCompletion { context, info, request_body: None, body_transform: None, started, done: false }
    }

    pub fn finish(&mut self, complete: bool) {
        if self.done {
            return;
        }
        self.done = true;
        if let Some(body) = self.request_body.take() {
            if let Ok(body) = body.try_borrow() {
                super::active_stream::received(&mut self.info, &body);
            }
        }
        let elapsed = clock::since(self.started);
        self.info.end = Some(elapsed);
        if complete {
            self.info.last_downstream_tx_byte = Some(elapsed);
        }
        let stats = &self.context.shared.stats;
        stats.downstream_rq_time.record(elapsed.as_millis() as u64);
        for logger in &self.context.shared.access_logs {
            logger.log(&self.info);
        }
        if let Some(tracer) = &self.context.shared.tracer {
            if let Some(mut trace) = self.info.trace.take() {
                tracer.finish(&mut trace, &self.info, &self.context.worker);
            }
        }
    }

    /// Response headers as sent, for `%RESP(...)%`.
    pub fn set_response_headers(&mut self, headers: &HeaderMap) {
        if !self.context.shared.access_logs.is_empty() {
            self.info.response_headers = Some(Box::new(headers.clone()));
        }
    }
}

impl Drop for StreamCompletion {
    fn drop(&mut self) {
        if !self.done && self.info.response_code.is_none() {
            // Dropped before any response: the downstream went away while legate waited
            // (hyper drops the stream's future).
            self.info.set_flag(ResponseFlag::DownstreamConnectionTermination);
            self.context.shared.stats.downstream_rq_rx_reset.inc();
        }
        self.finish(false);
        let context = &self.context;
        context.shared.stats.downstream_rq_active.dec();
        let active = context.active_streams.get().saturating_sub(1);
        context.active_streams.set(active);
        if active == 0 {
            context.idle_since.set(Some(clock::now()));
        }
    }
}
