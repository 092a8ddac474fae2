//! `envoy.filters.http.cors` (`envoy.extensions.filters.http.cors.v3.Cors`), Envoy's "CORS"
//! filter page: cross-origin resource sharing by the policies of routes and virtual hosts.
//!
//! The policies come from `typed_per_filter_config` (`envoy.extensions.filters.http.cors.v3.CorsPolicy`)
//! of the route, then of the virtual host; only when neither has one, from the deprecated
//! `cors` fields of the route action and the virtual host. For each setting the most specific
//! policy that sets it wins; `filter_enabled` (default 100 %) and `shadow_enabled` (default
//! 0 %) are the most specific policy's. Requests to redirect or direct-response routes, or
//! with no route, are left alone.
//!
//! A request with a non-empty `origin` counts `origin_valid` or `origin_invalid`. In shadow
//! mode (shadow enabled, filter not) that is all. Otherwise:
//! - a preflight (`OPTIONS` with `access-control-request-method`) is answered 200 with no body
//!   (`cors_response`): `access-control-allow-origin` (the origin, when allowed),
//!   `-allow-credentials`, `-allow-methods`, `-allow-headers` (`*` echoes the request's
//!   method or headers), `-max-age`, `-allow-private-network` (when allowed and asked for by
//!   `access-control-request-private-network: true`); a preflight whose origin is not
//!   allowed goes upstream instead unless `forward_not_matching_preflights` is false;
//! - any response to an allowed origin (the preflight's included) carries
//!   `access-control-allow-origin`, `-allow-credentials` and `-expose-headers`.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS,
    ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
};
use http::{Method, StatusCode};
use legate_config::route::{CorsPolicy, FilterPerRouteConfig};
use legate_stats::Scope;

use super::StreamView;
use crate::http::filter::{FilterCallbacks, FilterHeadersStatus, HttpFilter};
use crate::http::LocalReply;
use crate::router::RouteKind;

pub const ACCESS_CONTROL_REQUEST_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-request-private-network");
pub const ACCESS_CONTROL_ALLOW_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-allow-private-network");

legate_stats::stats! {
    /// `http.<stat_prefix>.cors.*`, Envoy's ALL_CORS_STATS.
    pub struct CorsStats {
        counter origin_valid,
        counter origin_invalid,
    }
}

/// The filter's config (it has no settings of its own), shared by every stream on every worker.
pub struct CorsFilterConfig {
    pub name: String,
    stats: CorsStats,
}

impl CorsFilterConfig {
    /// `scope` is the connection manager's `http.<stat_prefix>`.
    pub fn new(name: String, scope: &Scope) -> Self {
        CorsFilterConfig { name, stats: CorsStats::new(&scope.scope("cors")) }
    }
}

/// The policies that apply to a stream, most specific first.
struct Policies<'a>([Option<&'a CorsPolicy>; 3]);

impl<'a> Policies<'a> {
    /// `None` when the stream has no route entry (no route, a redirect, a direct response).
    fn of(stream: &StreamView<'a>, filter_name: &str) -> Option<Self> {
        let route = stream.route?;
        let RouteKind::Route(action) = &route.kind else { return None };
        let vhost = stream.virtual_host;
        let typed = |c: Option<&'a FilterPerRouteConfig>| match c {
            Some(FilterPerRouteConfig::Cors(policy)) => Some(policy),
            _ => None,
        };
        let from_route = typed(route.per_filter_config.get(filter_name));
        let from_vhost = typed(vhost.and_then(|v| v.per_filter_config.get(filter_name)));
        let from_config = typed(stream.route_config.and_then(|c| c.per_filter_config.get(filter_name)));
        // The `cors` fields count only when no typed per-filter config exists, as in Envoy.
        let policies = if from_route.is_some() || from_vhost.is_some() || from_config.is_some() {
            [from_route, from_vhost, from_config]
        } else {
            [action.cors.as_deref(), vhost.and_then(|v| v.cors.as_ref()), None]
        };
        Some(Policies(policies))
    }

    fn iter(&self) -> impl Iterator<Item = &'a CorsPolicy> + '_ {
        self.0.iter().flatten().copied()
    }

    fn first_string(&self, field: impl Fn(&'a CorsPolicy) -> &'a str) -> &'a str {
        self.iter().map(field).find(|s| !s.is_empty()).unwrap_or("")
    }

    fn first_flag(&self, field: impl Fn(&'a CorsPolicy) -> Option<bool>) -> Option<bool> {
        self.iter().find_map(field)
    }

    /// The most specific policy's `filter_enabled`, default on; off without a policy.
    fn enabled(&self) -> bool {
        self.iter().next().is_some_and(|p| p.filter_enabled.as_ref().is_none_or(crate::runtime::fraction_enabled))
    }

    /// The most specific policy's `shadow_enabled`, default off.
    fn shadow_enabled(&self) -> bool {
        self.iter().next().is_some_and(|p| p.shadow_enabled.as_ref().is_some_and(crate::runtime::fraction_enabled))
    }

    /// A matcher of the most specific policy with any matches the origin, or `*`.
    fn origin_allowed(&self, origin: &str) -> bool {
        let Some(policy) = self.iter().find(|p| !p.allow_origin_string_match.is_empty()) else { return false };
        policy.allow_origin_string_match.iter().any(|m| m.matches("*") || m.matches(origin))
    }

    fn allow_credentials(&self) -> bool {
        self.first_flag(|p| p.allow_credentials).unwrap_or(false)
    }

    fn allow_private_network_access(&self) -> bool {
        self.first_flag(|p| p.allow_private_network_access).unwrap_or(false)
    }

    fn forward_not_matching_preflights(&self) -> bool {
        self.first_flag(|p| p.forward_not_matching_preflights).unwrap_or(true)
    }
}

/// One stream's CORS filter.
pub struct CorsFilter {
    config: Arc<CorsFilterConfig>,
    /// Policies apply to this stream and the filter is enforcing.
    is_cors_request: bool,
    /// The request's origin, when allowed.
    latched_origin: Option<HeaderValue>,
    allow_credentials: bool,
    expose_headers: Option<HeaderValue>,
}

impl CorsFilter {
    pub fn new(config: Arc<CorsFilterConfig>) -> Self {
        CorsFilter {
            config,
            is_cors_request: false,
            latched_origin: None,
            allow_credentials: false,
            expose_headers: None,
        }
    }

    fn on_request(&mut self, head: &http::request::Parts, stream: StreamView<'_>) -> FilterHeadersStatus {
        let config = &self.config;
        let Some(policies) = Policies::of(&stream, &config.name) else { return FilterHeadersStatus::Continue };
        let (enabled, shadow_enabled) = (policies.enabled(), policies.shadow_enabled());
        if !enabled && !shadow_enabled {
            return FilterHeadersStatus::Continue;
        }
        let Some(origin) = head.headers.get(ORIGIN).filter(|o| !o.is_empty()) else {
            return FilterHeadersStatus::Continue;
        };
        let origin_allowed = origin.to_str().is_ok_and(|o| policies.origin_allowed(o));
        if origin_allowed {
            config.stats.origin_valid.inc();
            self.latched_origin = Some(origin.clone());
        } else {
            config.stats.origin_invalid.inc();
        }
        if shadow_enabled && !enabled {
            return FilterHeadersStatus::Continue;
        }
        self.is_cors_request = true;
        self.allow_credentials = policies.allow_credentials();
        self.expose_headers = header_value(policies.first_string(|p| &p.expose_headers));

        if head.method != Method::OPTIONS {
            return FilterHeadersStatus::Continue;
        }
        let Some(request_method) = head.headers.get(ACCESS_CONTROL_REQUEST_METHOD).filter(|m| !m.is_empty()) else {
            return FilterHeadersStatus::Continue;
        };
        // A preflight.
        if !origin_allowed && policies.forward_not_matching_preflights() {
            return FilterHeadersStatus::Continue;
        }
        let mut reply = LocalReply::new(StatusCode::OK, Bytes::new(), "cors_response");
        let headers = &mut reply.headers;
        if origin_allowed {
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        }
        if self.allow_credentials {
            headers.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        let echo_or = |configured: &str, requested: Option<&HeaderValue>| match configured {
            "" => None,
            "*" => requested.cloned(),
            value => header_value(value),
        };
        if let Some(methods) = echo_or(policies.first_string(|p| &p.allow_methods), Some(request_method)) {
            headers.insert(ACCESS_CONTROL_ALLOW_METHODS, methods);
        }
        let requested_headers = head.headers.get(ACCESS_CONTROL_REQUEST_HEADERS);
        if let Some(allowed) = echo_or(policies.first_string(|p| &p.allow_headers), requested_headers) {
            headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, allowed);
        }
        if let Some(max_age) = header_value(policies.first_string(|p| &p.max_age)) {
            headers.insert(ACCESS_CONTROL_MAX_AGE, max_age);
        }
        // Chrome's private network access preflight.
        let private_network_asked =
            head.headers.get(ACCESS_CONTROL_REQUEST_PRIVATE_NETWORK).is_some_and(|v| v.as_bytes() == b"true");
        if policies.allow_private_network_access() && private_network_asked {
            headers.insert(ACCESS_CONTROL_ALLOW_PRIVATE_NETWORK, HeaderValue::from_static("true"));
        }
        FilterHeadersStatus::LocalReply(reply)
    }

    fn on_response(&mut self, head: &mut http::response::Parts) {
        if !self.is_cors_request {
            return;
        }
        let Some(origin) = &self.latched_origin else { return };
        head.headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if self.allow_credentials {
            head.headers.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        if let Some(expose) = &self.expose_headers {
            head.headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }
}

/// A configured header value; `None` when empty or not a valid header value.
fn header_value(value: &str) -> Option<HeaderValue> {
    if value.is_empty() {
        return None;
    }
    HeaderValue::from_str(value).ok()
}

impl HttpFilter for CorsFilter {
    fn decode_headers(
        &mut self,
        head: &mut http::request::Parts,
        _end_stream: bool,
        cb: &mut FilterCallbacks<'_>,
    ) -> FilterHeadersStatus {
        self.on_request(head, StreamView::of(cb))
    }

    fn encode_headers(&mut self, head: &mut http::response::Parts, _cb: &mut FilterCallbacks<'_>) {
        self.on_response(head);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    const ROUTES: &str = "
virtual_hosts:
- name: vh
  domains: ['*']
  typed_per_filter_config:
    envoy.filters.http.cors:
      '@type': type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
      allow_origin_string_match: [{exact: 'https://app.example'}]
      allow_methods: GET, POST
      allow_headers: content-type
      expose_headers: x-trace
      max_age: '600'
      allow_credentials: true
  routes:
  - match: {prefix: /wild}
    route: {cluster: c}
    typed_per_filter_config:
      envoy.filters.http.cors:
        '@type': type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
        allow_origin_string_match: [{safe_regex: {regex: '.*'}}]
        allow_methods: '*'
        allow_headers: '*'
        allow_private_network_access: true
  - match: {prefix: /strict}
    route: {cluster: c}
    typed_per_filter_config:
      envoy.filters.http.cors:
        '@type': type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
        forward_not_matching_preflights: false
  - match: {prefix: /shadow}
    route: {cluster: c}
    typed_per_filter_config:
      envoy.filters.http.cors:
        '@type': type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
        filter_enabled: {default_value: {numerator: 0}}
        shadow_enabled: {default_value: {numerator: 100}}
  - match: {prefix: /off}
    route: {cluster: c}
    typed_per_filter_config:
      envoy.filters.http.cors:
        '@type': type.googleapis.com/envoy.config.route.v3.FilterConfig
        disabled: true
  - match: {prefix: /redirect}
    redirect: {path_redirect: /}
  - match: {prefix: /}
    route: {cluster: c}
- name: legacy
  domains: [legacy]
  cors:
    allow_origin_string_match: [{prefix: 'https://'}]
    expose_headers: x-legacy
  routes:
  - match: {prefix: /}
    route:
      cluster: c
      cors: {allow_origin_string_match: [{exact: 'https://only.example'}]}
";

    struct Run {
        filter: CorsFilter,
        status: FilterHeadersStatus,
    }

    fn run(routes: &Routes, config: &Arc<CorsFilterConfig>, head: &http::request::Parts) -> Run {
        let mut filter = CorsFilter::new(config.clone());
        let mut info = stream_info();
        let (vhost, route) = routes.find(head);
        let stream =
            StreamView { info: &mut info, route: route.as_ref(), virtual_host: vhost.as_ref(), route_config: None };
        let status = filter.on_request(head, stream);
        Run { filter, status }
    }

    fn setup() -> (Arc<legate_stats::Store>, Arc<CorsFilterConfig>, Routes) {
        let (store, root) = stats();
        let config = Arc::new(CorsFilterConfig::new("envoy.filters.http.cors".into(), &root.scope("http.ingress")));
        (store, config, Routes::new(ROUTES))
    }

    /// The response as the client sees it: a local reply's headers, then the filter's encode.
    fn respond(run: &mut Run) -> http::response::Parts {
        let mut head = response(200);
        if let FilterHeadersStatus::LocalReply(reply) = &run.status {
            head.status = reply.status;
            head.headers = reply.headers.clone();
        }
        run.filter.on_response(&mut head);
        head
    }

    fn preflight(uri: &str, origin: &str, extra: &[(&str, &str)]) -> http::request::Parts {
        let mut headers = vec![("origin", origin), ("access-control-request-method", "PUT")];
        headers.extend_from_slice(extra);
        request("OPTIONS", uri, &headers)
    }

    #[test]
    fn preflight_is_answered_with_the_policy() {
        let (store, config, routes) = setup();
        let mut run = run(&routes, &config, &preflight("/api", "https://app.example", &[]));
        let FilterHeadersStatus::LocalReply(reply) = &run.status else { panic!("preflight answered") };
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.body.is_empty());
        assert_eq!(reply.details, "cors_response");
        let head = respond(&mut run);
        let h = &head.headers;
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_METHODS], "GET, POST");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_HEADERS], "content-type");
        assert_eq!(h[ACCESS_CONTROL_MAX_AGE], "600");
        assert_eq!(h[ACCESS_CONTROL_EXPOSE_HEADERS], "x-trace");
        assert!(!h.contains_key(ACCESS_CONTROL_ALLOW_PRIVATE_NETWORK));
        assert_eq!(store.counter_value("http.ingress.cors.origin_valid"), Some(1));
    }

    #[test]
    fn simple_request_from_an_allowed_origin_gets_the_headers() {
        let (_store, config, routes) = setup();
        let mut run = run(&routes, &config, &request("GET", "/api", &[("origin", "https://app.example")]));
        assert!(matches!(run.status, FilterHeadersStatus::Continue));
        let head = respond(&mut run);
        assert_eq!(head.headers[ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example");
        assert_eq!(head.headers[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(head.headers[ACCESS_CONTROL_EXPOSE_HEADERS], "x-trace");
        assert!(!head.headers.contains_key(ACCESS_CONTROL_ALLOW_METHODS));
    }

    #[test]
    fn other_origins_get_nothing_and_their_preflights_go_upstream() {
        let (store, config, routes) = setup();
        let mut run1 = run(&routes, &config, &request("GET", "/api", &[("origin", "https://evil.example")]));
        assert!(respond(&mut run1).headers.is_empty());
        let run2 = run(&routes, &config, &preflight("/api", "https://evil.example", &[]));
        assert!(matches!(run2.status, FilterHeadersStatus::Continue));
        assert_eq!(store.counter_value("http.ingress.cors.origin_invalid"), Some(2));
        // No origin: not a CORS request, not counted.
        let mut run3 = run(&routes, &config, &request("GET", "/api", &[]));
        assert!(respond(&mut run3).headers.is_empty());
        assert_eq!(store.counter_value("http.ingress.cors.origin_invalid"), Some(2));
    }

    #[test]
    fn not_matching_preflights_answered_when_not_forwarded() {
        let (_store, config, routes) = setup();
        // The route's policy sets only forward_not_matching_preflights: the rest is the vhost's.
        let mut run = run(&routes, &config, &preflight("/strict", "https://evil.example", &[]));
        assert!(matches!(run.status, FilterHeadersStatus::LocalReply(_)));
        let head = respond(&mut run);
        assert!(!head.headers.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
        assert_eq!(head.headers[ACCESS_CONTROL_ALLOW_METHODS], "GET, POST");
    }

    #[test]
    fn wildcards_echo_the_request_and_private_network_is_allowed() {
        let (_store, config, routes) = setup();
        let head = preflight(
            "/wild",
            "https://any.example",
            &[("access-control-request-headers", "x-a, x-b"), ("access-control-request-private-network", "true")],
        );
        let mut run = run(&routes, &config, &head);
        let head = respond(&mut run);
        assert_eq!(head.headers[ACCESS_CONTROL_ALLOW_ORIGIN], "https://any.example");
        assert_eq!(head.headers[ACCESS_CONTROL_ALLOW_METHODS], "PUT");
        assert_eq!(head.headers[ACCESS_CONTROL_ALLOW_HEADERS], "x-a, x-b");
        assert_eq!(head.headers[ACCESS_CONTROL_ALLOW_PRIVATE_NETWORK], "true");
        // allow_credentials from the virtual host.
        assert_eq!(head.headers[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    }

    #[test]
    fn shadow_mode_counts_only() {
        let (store, config, routes) = setup();
        let mut run = run(&routes, &config, &preflight("/shadow", "https://app.example", &[]));
        assert!(matches!(run.status, FilterHeadersStatus::Continue));
        assert!(respond(&mut run).headers.is_empty());
        assert_eq!(store.counter_value("http.ingress.cors.origin_valid"), Some(1));
    }

    #[test]
    fn redirect_and_unrouted_requests_are_left_alone() {
        let (store, config, routes) = setup();
        let mut run = run(&routes, &config, &preflight("/redirect", "https://app.example", &[]));
        assert!(matches!(run.status, FilterHeadersStatus::Continue));
        assert!(respond(&mut run).headers.is_empty());
        assert_eq!(store.counter_value("http.ingress.cors.origin_valid"), Some(0));
    }

    #[test]
    fn legacy_cors_fields_apply_route_first() {
        let (_store, config, routes) = setup();
        let legacy = |origin: &str| request("GET", "http://legacy/x", &[("origin", origin)]);
        let mut run1 = run(&routes, &config, &legacy("https://only.example"));
        let head = respond(&mut run1);
        assert_eq!(head.headers[ACCESS_CONTROL_ALLOW_ORIGIN], "https://only.example");
        assert_eq!(head.headers[ACCESS_CONTROL_EXPOSE_HEADERS], "x-legacy");
        // The route's origins win over the virtual host's.
        let mut run2 = run(&routes, &config, &legacy("https://other.example"));
        assert!(respond(&mut run2).headers.is_empty());
    }
}
