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

/// Two or more transforms in encoding order, each fed what the one before it produced. At the
/// trailers, each transform that keeps them finishes first (its tail goes through the later
/// ones before a later one frames the trailers), as each of Envoy's encoder filters flushes
/// at `encodeTrailers` before passing them on.
pub struct ChainedTransforms {
    transforms: Vec<Box<dyn BodyTransform>>,
    /// How many, from the first, are finished.
    finished: usize,
    /// Tails produced at the trailers, for `finish` to send when no transform took them.
    pending: bytes::BytesMut,
}

impl ChainedTransforms {
    pub fn new(transforms: Vec<Box<dyn BodyTransform>>) -> Self {
        ChainedTransforms { transforms, finished: 0, pending: bytes::BytesMut::new() }
    }

    /// `data` through the transforms from index `from` on.
    fn through(&mut self, from: usize, data: Bytes) -> Bytes {
        let mut data = data;
        for t in self.transforms.iter_mut().skip(from) {
            if data.is_empty() {
                break;
            }
            data = t.data(&data);
        }
        data
    }

    /// Finishes transform `i`: its tail through the ones after it.
    fn finish_one(&mut self, i: usize) -> Bytes {
        let tail = match self.transforms.get_mut(i) {
            Some(t) => t.finish(),
            None => Bytes::new(),
        };
        self.finished = i + 1;
        self.through(i + 1, tail)
    }
}

impl BodyTransform for ChainedTransforms {
    fn data(&mut self, data: &[u8]) -> Bytes {
        self.through(0, Bytes::copy_from_slice(data))
    }

    fn trailers(&mut self, trailers: &http::HeaderMap) -> Option<Bytes> {
        for i in 0..self.transforms.len() {
            let taken = self.transforms.get_mut(i).and_then(|t| t.trailers(trailers));
            match taken {
                Some(bytes) => {
                    let framed = self.through(i + 1, bytes);
                    self.pending.extend_from_slice(&framed);
                    return Some(self.pending.split().freeze());
                }
                None => {
                    let tail = self.finish_one(i);
                    self.pending.extend_from_slice(&tail);
                }
            }
        }
        None
    }

    fn finish(&mut self) -> Bytes {
        for i in self.finished..self.transforms.len() {
            let tail = self.finish_one(i);
            self.pending.extend_from_slice(&tail);
        }
        self.pending.split().freeze()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Upper-cases; ends with `a-end`; keeps the trailers.
    struct Upper;
    impl BodyTransform for Upper {
        fn data(&mut self, data: &[u8]) -> Bytes {
            Bytes::from(data.to_ascii_uppercase())
        }
        fn finish(&mut self) -> Bytes {
            Bytes::from_static(b"a-end")
        }
    }

    /// Brackets each chunk; takes the trailers into the body; ends with `B-END`.
    struct Framer;
    impl BodyTransform for Framer {
        fn data(&mut self, data: &[u8]) -> Bytes {
            Bytes::from([b"<", data, b">"].concat())
        }
        fn trailers(&mut self, _trailers: &http::HeaderMap) -> Option<Bytes> {
            Some(Bytes::from_static(b"TRAILERS"))
        }
        fn finish(&mut self) -> Bytes {
            Bytes::from_static(b"B-END")
        }
    }

    #[test]
    fn chained_transforms_feed_each_other_and_flush_before_the_trailers() {
        let mut chain = ChainedTransforms::new(vec![Box::new(Upper), Box::new(Framer)]);
        assert_eq!(chain.data(b"body"), "<BODY>");
        // The first keeps the trailers: its tail goes through the second before the second
        // frames them.
        assert_eq!(chain.trailers(&http::HeaderMap::new()).as_deref(), Some(&b"<a-end>TRAILERS"[..]));
        assert_eq!(chain.finish(), "B-END");

        let mut plain = ChainedTransforms::new(vec![Box::new(Upper), Box::new(Upper)]);
        assert_eq!(plain.data(b"x"), "X");
        assert_eq!(plain.trailers(&http::HeaderMap::new()), None);
        // The first's tail goes through the second, then the second's own.
        assert_eq!(plain.finish(), "A-ENDa-end");
    }
}
