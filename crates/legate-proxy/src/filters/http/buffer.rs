//! `envoy.filters.http.buffer` (`envoy.extensions.filters.http.buffer.v3.Buffer`), Envoy's
//! "Buffer" filter page: the whole request body is read before the request goes on, so the
//! upstream gets it at once, with a `content-length`.
//!
//! A request with a body stops the chain (`StopAllIterationAndBuffer`) until the body is
//! complete; past `max_request_bytes` the connection manager answers 413 `Payload Too Large`
//! (`request_payload_too_large`, `downstream_rq_too_large`), as Envoy's filter manager does
//! when a decoder buffer overflows. A request without a body goes on at once. A route or
//! virtual host may turn buffering off (`BufferPerRoute.disabled`) or set its own
//! `max_request_bytes` (`BufferPerRoute.buffer`). The filter has no stats.

use std::sync::Arc;

use legate_config::filters::http::buffer::Buffer;
use legate_config::route::FilterPerRouteConfig;

use super::StreamView;
use crate::http::filter::{FilterCallbacks, FilterHeadersStatus, HttpFilter};

/// The filter's config, shared by every stream on every worker.
pub struct BufferFilterConfig {
    pub name: String,
    max_request_bytes: usize,
}

impl BufferFilterConfig {
    pub fn new(name: String, config: &Buffer) -> Result<Self, String> {
        let max_request_bytes = config.max_request_bytes.ok_or("buffer: max_request_bytes is required")?;
        Ok(BufferFilterConfig { name, max_request_bytes: max_request_bytes as usize })
    }
}

/// One stream's buffer filter.
pub struct BufferFilter {
    config: Arc<BufferFilterConfig>,
    /// The limit for this stream (the route's, or the filter's).
    max_request_bytes: usize,
}

impl BufferFilter {
    pub fn new(config: Arc<BufferFilterConfig>) -> Self {
        let max_request_bytes = config.max_request_bytes;
        BufferFilter { config, max_request_bytes }
    }

    fn on_request(&mut self, end_stream: bool, stream: StreamView<'_>) -> FilterHeadersStatus {
        // Nothing to buffer.
        if end_stream {
            return FilterHeadersStatus::Continue;
        }
        match stream.per_filter_config(&self.config.name) {
            Some(FilterPerRouteConfig::Disabled) => return FilterHeadersStatus::Continue,
            Some(FilterPerRouteConfig::Buffer(per_route)) => {
                if per_route.disabled == Some(true) {
                    return FilterHeadersStatus::Continue;
                }
                if let Some(max) = per_route.buffer.as_ref().and_then(|b| b.max_request_bytes) {
                    self.max_request_bytes = max as usize;
                }
            }
            _ => {}
        }
        FilterHeadersStatus::StopAllIterationAndBuffer
    }
}

impl HttpFilter for BufferFilter {
    fn decode_headers(
        &mut self,
        _head: &mut http::request::Parts,
        end_stream: bool,
        cb: &mut FilterCallbacks<'_>,
    ) -> FilterHeadersStatus {
        self.on_request(end_stream, StreamView::of(cb))
    }

    fn max_buffered_body(&self) -> usize {
        self.max_request_bytes
    }
}

#[cfg(test)]
mod tests {
    use legate_config::path::from_value;

    use super::super::test_support::*;
    use super::*;

    const ROUTES: &str = "
virtual_hosts:
- name: vh
  domains: ['*']
  routes:
  - match: {prefix: /upload}
    route: {cluster: c}
    typed_per_filter_config:
      envoy.filters.http.buffer:
        '@type': type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute
        buffer: {max_request_bytes: 1048576}
  - match: {prefix: /stream}
    route: {cluster: c}
    typed_per_filter_config:
      envoy.filters.http.buffer:
        '@type': type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute
        disabled: true
  - match: {prefix: /}
    route: {cluster: c}
";

    fn decode(uri: &str, end_stream: bool) -> (BufferFilter, FilterHeadersStatus) {
        let config: Buffer = from_value(yaml("max_request_bytes: 1024")).unwrap();
        let config = Arc::new(BufferFilterConfig::new("envoy.filters.http.buffer".into(), &config).unwrap());
        let routes = Routes::new(ROUTES);
        let head = request("POST", uri, &[]);
        let (vhost, route) = routes.find(&head);
        let mut info = stream_info();
        let mut filter = BufferFilter::new(config);
        let status = filter.on_request(
            end_stream,
            StreamView { info: &mut info, route: route.as_ref(), virtual_host: vhost.as_ref(), route_config: None },
        );
        (filter, status)
    }

    #[test]
    fn buffers_up_to_max_request_bytes() {
        let (filter, status) = decode("/", false);
        assert!(matches!(status, FilterHeadersStatus::StopAllIterationAndBuffer));
        assert_eq!(filter.max_buffered_body(), 1024);
    }

    #[test]
    fn requests_without_body_go_on() {
        assert!(matches!(decode("/", true).1, FilterHeadersStatus::Continue));
    }

    #[test]
    fn routes_set_their_own_limit_or_turn_buffering_off() {
        let (filter, status) = decode("/upload", false);
        assert!(matches!(status, FilterHeadersStatus::StopAllIterationAndBuffer));
        assert_eq!(filter.max_buffered_body(), 1_048_576);
        assert!(matches!(decode("/stream", false).1, FilterHeadersStatus::Continue));
    }
}
