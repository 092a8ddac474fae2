//! The HTTP filter contract (Envoy's `StreamDecoderFilter` / `StreamEncoderFilter`), as far
//! as legate's filters need it.
//!
//! A stream's filters see the request headers in configuration order, then the router sends
//! the request upstream; the response headers pass back through them in reverse order. A
//! filter may change headers, answer locally (which ends the decode chain), pause the chain
//! (`StopIteration`, resumed through `poll_resume`, e.g. a fault delay) or ask for the whole
//! request body first (`StopAllIterationAndBuffer`, as the buffer filter does; bodies are not
//! buffered otherwise, they stream).

use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use legate_config::route::FilterPerRouteConfig;

use super::local_reply::LocalReply;
use super::stream_info::StreamInfo;
use crate::router::{Route, RouteConfig, VirtualHost};
use crate::worker::WorkerContext;

pub enum FilterHeadersStatus {
    Continue,
    /// The chain waits; the connection manager polls [`HttpFilter::poll_resume`].
    StopIteration,
    /// Read the whole request body (up to [`HttpFilter::max_buffered_body`]) and hand it to
    /// [`HttpFilter::decode_body`] before the next filter runs.
    StopAllIterationAndBuffer,
    /// Answer now; later filters and the router do not run.
    LocalReply(LocalReply),
}

/// What a filter can see and use while it runs.
pub struct FilterCallbacks<'a> {
    pub stream_info: &'a mut StreamInfo,
    pub route_config: &'a RouteConfig,
    pub virtual_host: Option<&'a Arc<VirtualHost>>,
    pub route: Option<&'a Arc<Route>>,
    pub worker: &'a Rc<WorkerContext>,
    /// The connection is draining (server drain, idle or duration limit).
    pub server_draining: bool,
}

impl FilterCallbacks<'_> {
    /// The most specific `typed_per_filter_config` for `filter_name`: route, then virtual
    /// host, then route configuration (Envoy's `mostSpecificPerFilterConfig`).
    pub fn per_filter_config(&self, filter_name: &str) -> Option<&FilterPerRouteConfig> {
        self.route
            .and_then(|r| r.per_filter_config.get(filter_name))
            .or_else(|| self.virtual_host.and_then(|v| v.per_filter_config.get(filter_name)))
            .or_else(|| self.route_config.per_filter_config.get(filter_name))
    }
}

/// A change of the response body's bytes (compression), chunk by chunk.
pub trait BodyTransform {
    /// The bytes to send for `data` (maybe none yet).
    fn data(&mut self, data: &[u8]) -> Bytes;
    /// The response's trailers: `Some` bytes to send in their place (the trailers are then
    /// not sent), `None` to send them as they are.
    fn trailers(&mut self, _trailers: &http::HeaderMap) -> Option<Bytes> {
        None
    }

    /// The last bytes, once the body ended.
    fn finish(&mut self) -> Bytes;
}

pub trait HttpFilter {
    /// Request headers. `end_stream`: the request has no body.
    fn decode_headers(
        &mut self,
        headers: &mut http::request::Parts,
        end_stream: bool,
        cb: &mut FilterCallbacks<'_>,
    ) -> FilterHeadersStatus;

    /// After `StopIteration`: `Ready` with what to do next (`Continue` or a local reply).
    fn poll_resume(
        &mut self,
        _cx: &mut Context<'_>,
        _headers: &mut http::request::Parts,
        _cb: &mut FilterCallbacks<'_>,
    ) -> Poll<FilterHeadersStatus> {
        Poll::Ready(FilterHeadersStatus::Continue)
    }

    /// After `StopAllIterationAndBuffer`: the most body bytes to buffer (past it: 413).
    fn max_buffered_body(&self) -> usize {
        usize::MAX
    }

    /// After `StopAllIterationAndBuffer`: the whole request body. It may be changed, or
    /// refused with a local reply.
    fn decode_body(
        &mut self,
        _headers: &mut http::request::Parts,
        _body: &mut Bytes,
        _cb: &mut FilterCallbacks<'_>,
    ) -> Option<LocalReply> {
        None
    }

    /// Response headers, on their way downstream (local replies included).
    fn encode_headers(&mut self, _headers: &mut http::response::Parts, _cb: &mut FilterCallbacks<'_>) {}

    /// After `encode_headers`: a change of the response body this filter asked for there.
    fn take_body_transform(&mut self) -> Option<Box<dyn BodyTransform>> {
        None
    }
}
