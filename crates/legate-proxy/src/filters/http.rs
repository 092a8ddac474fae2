//! HTTP filters (`envoy.filters.http.*`). The router ends every chain; the others run before
//! it in configuration order. Each factory is built once per connection manager config and
//! creates a fresh filter per stream.
//!
//! A factory is shared by every worker (`Send + Sync`); what its filters share across streams
//! (a token bucket, the count of active faults, the health check cache) lives in it behind
//! atomics. A filter belongs to one stream on one worker.
//!
//! A route may turn a filter off (`typed_per_filter_config` holding an
//! `envoy.config.route.v3.FilterConfig` with `disabled: true`): the filter then neither
//! decodes nor encodes that stream, as Envoy's filter manager skips it.

pub mod buffer;
pub mod compressor;
pub mod cors;
pub mod csrf;
pub mod decompressor;
pub mod ext_authz;
pub mod fault;
pub mod grpc_web;
pub mod health_check;
pub mod local_ratelimit;
pub mod rbac;
mod route_state;
pub mod router;

use std::borrow::Cow;
use std::sync::Arc;

use legate_config::filters::network::http_connection_manager::{HttpFilter as HttpFilterConfigEntry, HttpFilterConfig};
use legate_config::route::{FilterPerRouteConfig, HeaderMatcher};
use legate_stats::Scope;

use crate::http::filter::{FilterCallbacks, HttpFilter};
use crate::http::StreamInfo;
use crate::router::{Route, VirtualHost};

/// One configured HTTP filter, ready to create a filter per stream.
pub enum HttpFilterFactory {
    HealthCheck(Arc<health_check::HealthCheckFilterConfig>),
    LocalRateLimit(Arc<local_ratelimit::LocalRateLimitFilterConfig>),
    Fault(Arc<fault::FaultFilterConfig>),
    Cors(Arc<cors::CorsFilterConfig>),
    Buffer(Arc<buffer::BufferFilterConfig>),
    Rbac(Arc<rbac::RbacFilterConfig>),
    ExtAuthz(Arc<ext_authz::ExtAuthzFilterConfig>),
    Compressor(Arc<compressor::CompressorFilterConfig>),
    Csrf(Arc<csrf::CsrfFilterConfig>),
    /// `envoy.filters.http.grpc_web`, by its name.
    GrpcWeb(String),
    Decompressor(Arc<decompressor::DecompressorFilterConfig>),
}

impl HttpFilterFactory {
    /// `None` for the router, which the connection manager runs itself.
    /// `stat_prefix` is the connection manager's: filter stats go under `http.<stat_prefix>.`.
    pub fn new(entry: &HttpFilterConfigEntry, root: &Scope, stat_prefix: &str) -> Result<Option<Self>, String> {
        let name = entry.name.clone();
        let http_scope = || root.scope(&format!("http.{stat_prefix}"));
        let factory = match &entry.config {
            HttpFilterConfig::Router(_) => return Ok(None),
            HttpFilterConfig::HealthCheck(config) => HttpFilterFactory::HealthCheck(Arc::new(
                health_check::HealthCheckFilterConfig::new(name, config, &http_scope())?,
            )),
            HttpFilterConfig::LocalRateLimit(config) => HttpFilterFactory::LocalRateLimit(Arc::new(
                local_ratelimit::LocalRateLimitFilterConfig::new(name, config, root)?,
            )),
            HttpFilterConfig::Fault(config) => {
                HttpFilterFactory::Fault(Arc::new(fault::FaultFilterConfig::new(name, config, &http_scope())))
            }
            HttpFilterConfig::Cors(_) => {
                HttpFilterFactory::Cors(Arc::new(cors::CorsFilterConfig::new(name, &http_scope())))
            }
            HttpFilterConfig::Buffer(config) => {
                HttpFilterFactory::Buffer(Arc::new(buffer::BufferFilterConfig::new(name, config)?))
            }
            HttpFilterConfig::Rbac(config) => {
                HttpFilterFactory::Rbac(Arc::new(rbac::RbacFilterConfig::new(name, config, &http_scope())?))
            }
            HttpFilterConfig::ExtAuthz(config) => HttpFilterFactory::ExtAuthz(Arc::new(
                ext_authz::ExtAuthzFilterConfig::new(name, config, &http_scope())?,
            )),
            HttpFilterConfig::Compressor(config) => HttpFilterFactory::Compressor(Arc::new(
                compressor::CompressorFilterConfig::new(name, config, &http_scope())?,
            )),
            HttpFilterConfig::Csrf(config) => {
                HttpFilterFactory::Csrf(Arc::new(csrf::CsrfFilterConfig::new(name, config, &http_scope())))
            }
            HttpFilterConfig::GrpcWeb => HttpFilterFactory::GrpcWeb(name),
            HttpFilterConfig::Decompressor(config) => HttpFilterFactory::Decompressor(Arc::new(
                decompressor::DecompressorFilterConfig::new(name, config, &http_scope())?,
            )),
        };
        Ok(Some(factory))
    }

    pub fn create(&self) -> Box<dyn HttpFilter> {
        match self {
            HttpFilterFactory::HealthCheck(config) => Box::new(health_check::HealthCheckFilter::new(config.clone())),
            HttpFilterFactory::LocalRateLimit(config) => {
                Box::new(local_ratelimit::LocalRateLimitFilter::new(config.clone()))
            }
            HttpFilterFactory::Fault(config) => Box::new(fault::FaultFilter::new(config.clone())),
            HttpFilterFactory::Cors(config) => Box::new(cors::CorsFilter::new(config.clone())),
            HttpFilterFactory::Buffer(config) => Box::new(buffer::BufferFilter::new(config.clone())),
            HttpFilterFactory::Rbac(config) => Box::new(rbac::RbacFilter::new(config.clone())),
            HttpFilterFactory::ExtAuthz(config) => Box::new(ext_authz::ExtAuthzFilter::new(config.clone())),
            HttpFilterFactory::Compressor(config) => Box::new(compressor::CompressorFilter::new(config.clone())),
            HttpFilterFactory::Csrf(config) => Box::new(csrf::CsrfFilter::new(config.clone())),
            HttpFilterFactory::GrpcWeb(_) => Box::new(grpc_web::GrpcWebFilter::new()),
            HttpFilterFactory::Decompressor(config) => Box::new(decompressor::DecompressorFilter::new(config.clone())),
        }
    }

    /// The name the connection manager config gave the filter, which routes use as the key of
    /// their `typed_per_filter_config`.
    pub fn name(&self) -> &str {
        match self {
            HttpFilterFactory::HealthCheck(config) => &config.name,
            HttpFilterFactory::LocalRateLimit(config) => &config.name,
            HttpFilterFactory::Fault(config) => &config.name,
            HttpFilterFactory::Cors(config) => &config.name,
            HttpFilterFactory::Buffer(config) => &config.name,
            HttpFilterFactory::Rbac(config) => &config.name,
            HttpFilterFactory::ExtAuthz(config) => &config.name,
            HttpFilterFactory::Compressor(config) => &config.name,
            HttpFilterFactory::Csrf(config) => &config.name,
            HttpFilterFactory::GrpcWeb(name) => name,
            HttpFilterFactory::Decompressor(config) => &config.name,
        }
    }
}

/// A stream as the filters of this module decide on it: [`FilterCallbacks`] without the
/// worker. Their decisions take this view, so unit tests can make one (a `WorkerContext` is
/// only made by a running worker).
pub struct StreamView<'a> {
    pub info: &'a mut StreamInfo,
    pub route: Option<&'a Arc<Route>>,
    pub virtual_host: Option<&'a Arc<VirtualHost>>,
    pub route_config: Option<&'a crate::router::RouteConfig>,
}

impl<'a> StreamView<'a> {
    pub fn of(cb: &'a mut FilterCallbacks<'_>) -> Self {
        StreamView {
            info: &mut *cb.stream_info,
            route: cb.route,
            virtual_host: cb.virtual_host,
            route_config: Some(cb.route_config),
        }
    }

    /// The most specific `typed_per_filter_config` for `filter_name`: route, then virtual
    /// host, then route configuration (as [`FilterCallbacks::per_filter_config`]).
    pub fn per_filter_config(&self, filter_name: &str) -> Option<&'a FilterPerRouteConfig> {
        self.route
            .and_then(|r| r.per_filter_config.get(filter_name))
            .or_else(|| self.virtual_host.and_then(|v| v.per_filter_config.get(filter_name)))
            .or_else(|| self.route_config.and_then(|c| c.per_filter_config.get(filter_name)))
    }
}

/// What a `HeaderMatcher` named `name` sees in a request: the pseudo-headers `:path` (with the
/// query), `:method` and `:authority` from the request line, `:scheme` as given (the stream's,
/// [`StreamInfo::scheme`]), any other header with all its values joined by `,` (Envoy's
/// `HeaderUtility::getAllOfHeaderAsString`). `None`: absent.
pub(crate) fn request_header_value<'h>(
    head: &'h http::request::Parts,
    scheme: &'h str,
    name: &str,
) -> Option<Cow<'h, str>> {
    match name {
        ":path" => head.uri.path_and_query().map(|pq| Cow::Borrowed(pq.as_str())),
        ":method" => Some(Cow::Borrowed(head.method.as_str())),
        ":authority" => Some(router::authority_of(head)).filter(|a| !a.is_empty()).map(Cow::Borrowed),
        ":scheme" => Some(Cow::Borrowed(scheme)),
        _ if name.starts_with(':') => None,
        _ => crate::router::retry_policy::joined(&head.headers, name).map(Cow::Owned),
    }
}

/// Every matcher matches the request (Envoy's `HeaderUtility::matchHeaders`; none: true).
pub(crate) fn headers_match(matchers: &[HeaderMatcher], head: &http::request::Parts, scheme: &str) -> bool {
    matchers.iter().all(|m| m.matches(request_header_value(head, scheme, &m.name).as_deref()))
}

/// The first value of a request header, for headers Envoy reads one value of (the fault
/// filter's controls are untrusted, and only their first value counts).
pub(crate) fn first_value<'h>(head: &'h http::request::Parts, name: &str) -> Option<&'h str> {
    head.headers.get(name).and_then(|v| v.to_str().ok())
}

/// A decimal number as Envoy's `absl::SimpleAtoi` reads one: surrounding ASCII whitespace and
/// a leading `+` allowed, nothing else.
pub(crate) fn parse_decimal<T: std::str::FromStr>(value: &str) -> Option<T> {
    value.trim_matches(|c: char| c.is_ascii_whitespace()).parse().ok()
}

#[cfg(test)]
pub(crate) mod test_support {
    //! What the filter tests share: configs from YAML, requests, streams on a route table.

    use std::net::SocketAddr;
    use std::sync::Arc;

    use http::Version;
    use legate_config::route::RouteConfiguration;
    use legate_stats::{Scope, Store};

    use crate::http::StreamInfo;
    use crate::router::{MatchInput, Route, RouteConfig, VirtualHost};

    /// YAML as the loader sees it; `legate_config::path::from_value` makes it a config type.
    pub fn yaml(text: &str) -> serde_json::Value {
        serde_yaml_ng::from_str(text).expect("test YAML parses")
    }

    pub fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut builder = http::Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("valid test request").into_parts().0
    }

    pub fn response(status: u16) -> http::response::Parts {
        let mut head = http::Response::new(()).into_parts().0;
        head.status = http::StatusCode::from_u16(status).expect("valid test status");
        head
    }

    pub fn stream_info() -> StreamInfo {
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("address");
        StreamInfo::new(Version::HTTP_11, 1, addr, addr)
    }

    pub fn stats() -> (Arc<Store>, Scope) {
        let store = Store::new(1);
        let scope = store.scope("");
        (store, scope)
    }

    /// A route table from YAML, and the virtual host and route a request to `authority` and
    /// `path` lands on.
    pub struct Routes {
        pub config: RouteConfig,
    }

    impl Routes {
        pub fn new(text: &str) -> Self {
            let config: RouteConfiguration = legate_config::path::from_value(yaml(text)).expect("route config");
            Routes { config: RouteConfig::new(&config).expect("test route config compiles") }
        }

        pub fn find(&self, head: &http::request::Parts) -> (Option<Arc<VirtualHost>>, Option<Arc<Route>>) {
            let authority = crate::filters::http::router::authority_of(head);
            let vhost = self.config.virtual_host(authority).cloned();
            let route = vhost.as_ref().and_then(|v| {
                v.route(&MatchInput {
                    path: head.uri.path(),
                    query: head.uri.query(),
                    head,
                    scheme: head.uri.scheme_str().unwrap_or("http"),
                    random: 0,
                })
                .cloned()
            });
            (vhost, route)
        }
    }
}

#[cfg(test)]
mod tests {

    use super::test_support::*;
    use super::*;

    fn shared<T: Send + Sync>() {}

    #[test]
    fn factories_cross_workers() {
        shared::<HttpFilterFactory>();
    }

    #[test]
    fn router_has_no_factory_and_others_keep_their_name() {
        let (_store, root) = stats();
        let router = HttpFilterConfigEntry {
            name: "envoy.filters.http.router".into(),
            config: HttpFilterConfig::Router(Default::default()),
            is_optional: false,
            disabled: false,
        };
        assert!(HttpFilterFactory::new(&router, &root, "ingress").unwrap().is_none());
        let cors = HttpFilterConfigEntry {
            name: "my-cors".into(),
            config: HttpFilterConfig::Cors(Default::default()),
            is_optional: false,
            disabled: false,
        };
        let factory = HttpFilterFactory::new(&cors, &root, "ingress").unwrap().unwrap();
        assert_eq!(factory.name(), "my-cors");
    }

    #[test]
    fn pseudo_headers_come_from_the_request_line() {
        let head = request("POST", "http://example.com:8080/a/b?x=1", &[("x-two", "1"), ("x-two", "2")]);
        assert_eq!(request_header_value(&head, "http", ":path").as_deref(), Some("/a/b?x=1"));
        assert_eq!(request_header_value(&head, "http", ":method").as_deref(), Some("POST"));
        assert_eq!(request_header_value(&head, "http", ":authority").as_deref(), Some("example.com:8080"));
        assert_eq!(request_header_value(&head, "http", ":scheme").as_deref(), Some("http"));
        assert_eq!(request_header_value(&head, "http", "x-two").as_deref(), Some("1,2"));
        assert_eq!(request_header_value(&head, "http", "x-none"), None);
        assert_eq!(request_header_value(&head, "http", ":protocol"), None);

        let head = request("GET", "/hc", &[("host", "svc")]);
        assert_eq!(request_header_value(&head, "http", ":authority").as_deref(), Some("svc"));
    }

    #[test]
    fn decimals_read_as_simple_atoi() {
        assert_eq!(parse_decimal::<u32>(" 42 "), Some(42));
        assert_eq!(parse_decimal::<u32>("+7"), Some(7));
        assert_eq!(parse_decimal::<u32>("4x"), None);
        assert_eq!(parse_decimal::<u32>("-1"), None);
    }
}
