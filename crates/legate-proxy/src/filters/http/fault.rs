//! `envoy.filters.http.fault` (`envoy.extensions.filters.http.fault.v3.HTTPFault`), Envoy's
//! "Fault injection" filter page: delays and aborts a fraction of requests.
//!
//! A request is faulted only if it goes to `upstream_cluster` (when set), comes from one of
//! `downstream_nodes` (`x-envoy-downstream-service-node`, when set) and matches every one of
//! `headers`. Then, as Envoy's `FaultFilter::decodeHeaders`:
//! - a delay (`fixed_delay`, or the milliseconds of `x-envoy-fault-delay-request` with
//!   `header_delay`) applies to `percentage` of requests: the chain stops (`StopIteration`),
//!   flag `DI`, `delays_injected`; when it ends, an abort may follow, else the request goes on;
//! - an abort (`http_status`, `grpc_status`, or `x-envoy-fault-abort-request` /
//!   `x-envoy-fault-abort-grpc-request` with `header_abort`) applies to `percentage` of
//!   requests: a local reply with body `fault filter abort`, flag `FI`, `aborts_injected`.
//!
//! With header-controlled faults, `x-envoy-fault-delay-request-percentage` and
//! `x-envoy-fault-abort-request-percentage` may lower (never raise) the configured numerator.
//! A `percentage` left out is 0 %: the fault never fires (the proto default, as in Envoy).
//! A faulted request counts once in `active_faults` until its fault ends (the delay elapsed
//! without an abort) or the stream ends; past `max_active_faults` a fault is skipped and
//! counted in `faults_overflow`. A route or virtual host may replace the whole config
//! (`typed_per_filter_config`).
//!
//! A route to weighted clusters matches `upstream_cluster` by the cluster picked with the
//! route. An HTTP abort of a gRPC request is answered gRPC's way by the connection manager.
//!
//! The runtime may override each setting, as Envoy's: `fault.http.delay.fixed_delay_percent`,
//! `fault.http.abort.abort_percent` (an integer is a percentage, a fractional percent as
//! given), `fault.http.delay.fixed_duration_ms`, `fault.http.abort.http_status`,
//! `fault.http.abort.grpc_status`, `fault.http.max_active_faults` (each key renamed by the
//! config's `*_runtime` fields). A request with `x-envoy-downstream-service-cluster: <dc>` reads
//! `fault.http.<dc>.delay.fixed_delay_percent` and `.abort.abort_percent` instead of the
//! percentages (the config's value their default), and `fault.http.<dc>.delay.fixed_duration_ms`,
//! `.abort.http_status`, `.abort.grpc_status` over the others.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::StatusCode;
use legate_config::core::FractionalPercent;
use legate_config::filters::http::fault::HttpFault;
use legate_config::route::FilterPerRouteConfig;
use legate_stats::Scope;
use tokio::time::Sleep;

use super::{first_value, headers_match, parse_decimal, StreamView};
use crate::http::filter::{FilterCallbacks, FilterHeadersStatus, HttpFilter};
use crate::http::{LocalReply, ResponseFlag, StreamInfo};
use crate::router::{ClusterSpecifier, RouteKind};
use crate::runtime;

pub const X_ENVOY_FAULT_ABORT_REQUEST: &str = "x-envoy-fault-abort-request";
pub const X_ENVOY_FAULT_ABORT_REQUEST_PERCENTAGE: &str = "x-envoy-fault-abort-request-percentage";
pub const X_ENVOY_FAULT_ABORT_GRPC_REQUEST: &str = "x-envoy-fault-abort-grpc-request";
pub const X_ENVOY_FAULT_DELAY_REQUEST: &str = "x-envoy-fault-delay-request";
pub const X_ENVOY_FAULT_DELAY_REQUEST_PERCENTAGE: &str = "x-envoy-fault-delay-request-percentage";
pub const X_ENVOY_DOWNSTREAM_SERVICE_CLUSTER: &str = "x-envoy-downstream-service-cluster";
pub const X_ENVOY_DOWNSTREAM_SERVICE_NODE: &str = "x-envoy-downstream-service-node";

legate_stats::stats! {
    /// `http.<stat_prefix>.fault.*`, Envoy's ALL_FAULT_FILTER_STATS. Requests carrying
    /// `x-envoy-downstream-service-cluster` also count `fault.<downstream_cluster>.delays_injected`
    /// and `.aborts_injected` (unless `disable_downstream_cluster_stats`).
    pub struct FaultStats {
        counter delays_injected,
        counter aborts_injected,
        counter response_rl_injected,
        counter faults_overflow,
        gauge active_faults,
    }
}

/// The filter's config, shared by every stream on every worker.
pub struct FaultFilterConfig {
    pub name: String,
    settings: HttpFault,
    stats: FaultStats,
    /// `http.<stat_prefix>.fault`, for the per-downstream-cluster counters.
    scope: Scope,
    /// Faults active now on all workers: `active_faults`, readable without summing shards.
    active_faults: AtomicU64,
}

impl FaultFilterConfig {
    /// `scope` is the connection manager's `http.<stat_prefix>`.
    pub fn new(name: String, config: &HttpFault, scope: &Scope) -> Self {
        let scope = scope.scope("fault");
        FaultFilterConfig {
            name,
            settings: config.clone(),
            stats: FaultStats::new(&scope),
            scope,
            active_faults: AtomicU64::new(0),
        }
    }

    /// A counter of `fault.<downstream_cluster>.`: a name looked up per faulted request, as
    /// Envoy builds these names dynamically too.
    fn count_for_downstream(&self, downstream_cluster: Option<&str>, stat: &str) {
        if let Some(cluster) = downstream_cluster {
            self.scope.scope(cluster).counter(stat).inc();
        }
    }
}

/// An abort decided for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Abort {
    /// 200 when only a gRPC status was given.
    status: StatusCode,
    grpc_status: Option<u64>,
    /// The request is gRPC (`content-type: application/grpc…`).
    grpc_request: bool,
}

/// One stream's fault filter.
pub struct FaultFilter {
    config: Arc<FaultFilterConfig>,
    /// This stream counts in `active_faults` (at most once, whatever it injects).
    fault_active: bool,
    /// The delay being injected.
    delay: Option<Pin<Box<Sleep>>>,
    /// Decided with the delay, injected when it ends.
    abort_after_delay: Option<Abort>,
    /// `x-envoy-downstream-service-cluster`, when its stats are wanted.
    downstream_cluster: Option<String>,
}

impl FaultFilter {
    pub fn new(config: Arc<FaultFilterConfig>) -> Self {
        FaultFilter { config, fault_active: false, delay: None, abort_after_delay: None, downstream_cluster: None }
    }

    fn on_request(&mut self, head: &http::request::Parts, stream: StreamView<'_>) -> FilterHeadersStatus {
        let config = &*self.config;
        // A route's config replaces the filter's.
        let settings = match stream.per_filter_config(&config.name) {
            Some(FilterPerRouteConfig::Fault(route_settings)) => route_settings,
            _ => &config.settings,
        };
        if !matches_upstream_cluster(settings, head, &stream) || !matches_downstream_nodes(settings, head) {
            return FilterHeadersStatus::Continue;
        }
        if !headers_match(&settings.headers, head, stream.info.scheme.as_str()) {
            return FilterHeadersStatus::Continue;
        }
        let caller = first_value(head, X_ENVOY_DOWNSTREAM_SERVICE_CLUSTER);
        if !settings.disable_downstream_cluster_stats {
            self.downstream_cluster = caller.filter(|c| !c.is_empty()).map(str::to_string);
        }
        // The caller's runtime keys are built per request: not where the runtime has no
        // values, which would give every one of them its default anyway.
        let caller = caller.filter(|_| runtime::has_values());

        if let Some(delay) = delay_duration(settings, head, caller) {
            if try_inc_active_faults(config, &mut self.fault_active, settings) {
                tracing::debug!("fault: delaying request {}ms", delay.as_millis());
                self.delay = Some(Box::pin(tokio::time::sleep(delay)));
                config.count_for_downstream(self.downstream_cluster.as_deref(), "delays_injected");
                config.stats.delays_injected.inc();
                stream.info.set_flag(ResponseFlag::DelayInjected);
                // Envoy decides on the abort when the delay ends; the draw is the same.
                self.abort_after_delay = abort_status(settings, head, caller);
                return FilterHeadersStatus::StopIteration;
            }
        }
        if let Some(abort) = abort_status(settings, head, caller) {
            if try_inc_active_faults(config, &mut self.fault_active, settings) {
                let downstream_cluster = self.downstream_cluster.as_deref();
                return FilterHeadersStatus::LocalReply(abort_reply(config, downstream_cluster, abort, stream.info));
            }
        }
        FilterHeadersStatus::Continue
    }

    /// The delay running; then the abort decided with it, or on with the request.
    fn poll_delay(&mut self, cx: &mut Context<'_>, info: &mut StreamInfo) -> Poll<FilterHeadersStatus> {
        let Some(delay) = self.delay.as_mut() else { return Poll::Ready(FilterHeadersStatus::Continue) };
        if delay.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.delay = None;
        if let Some(abort) = self.abort_after_delay.take() {
            let reply = abort_reply(&self.config, self.downstream_cluster.as_deref(), abort, info);
            return Poll::Ready(FilterHeadersStatus::LocalReply(reply));
        }
        // The fault is over: the request no longer counts as faulted.
        self.release_active_fault();
        Poll::Ready(FilterHeadersStatus::Continue)
    }

    fn release_active_fault(&mut self) {
        if std::mem::take(&mut self.fault_active) {
            self.config.active_faults.fetch_sub(1, Ordering::Relaxed);
            self.config.stats.active_faults.dec();
        }
    }
}

impl Drop for FaultFilter {
    fn drop(&mut self) {
        self.release_active_fault();
    }
}

impl HttpFilter for FaultFilter {
    fn decode_headers(
        &mut self,
        head: &mut http::request::Parts,
        _end_stream: bool,
        cb: &mut FilterCallbacks<'_>,
    ) -> FilterHeadersStatus {
        self.on_request(head, StreamView::of(cb))
    }

    fn poll_resume(
        &mut self,
        cx: &mut Context<'_>,
        _head: &mut http::request::Parts,
        cb: &mut FilterCallbacks<'_>,
    ) -> Poll<FilterHeadersStatus> {
        self.poll_delay(cx, cb.stream_info)
    }
}

/// Envoy's `tryIncActiveFaults`: the limit is only checked for a stream's first fault; it is
/// fuzzy across workers, as in Envoy (no compare-and-swap).
fn try_inc_active_faults(config: &FaultFilterConfig, fault_active: &mut bool, settings: &HttpFault) -> bool {
    if *fault_active {
        return true;
    }
    let max = runtime::integer(
        runtime_key(&settings.max_active_faults_runtime, "fault.http.max_active_faults"),
        settings.max_active_faults.map_or(u64::MAX, u64::from),
    );
    if config.active_faults.load(Ordering::Relaxed) >= max {
        config.stats.faults_overflow.inc();
        return false;
    }
    config.active_faults.fetch_add(1, Ordering::Relaxed);
    config.stats.active_faults.inc();
    *fault_active = true;
    true
}

/// Envoy's `abortWithStatus`.
fn abort_reply(
    config: &FaultFilterConfig,
    downstream_cluster: Option<&str>,
    abort: Abort,
    info: &mut StreamInfo,
) -> LocalReply {
    config.count_for_downstream(downstream_cluster, "aborts_injected");
    config.stats.aborts_injected.inc();
    info.set_flag(ResponseFlag::FaultInjected);
    const BODY: &str = "fault filter abort";
    const DETAILS: &str = "fault_filter_abort";
    match abort.grpc_status {
        // Envoy answers a gRPC request with a trailers-only response carrying the status.
        Some(grpc_status) if abort.grpc_request => {
            let mut reply = LocalReply::new(StatusCode::OK, Bytes::new(), DETAILS)
                .with_flag(ResponseFlag::FaultInjected)
                .with_header(CONTENT_TYPE, HeaderValue::from_static("application/grpc"))
                .with_header(HeaderName::from_static("grpc-status"), HeaderValue::from(grpc_status))
                .with_header(HeaderName::from_static("grpc-message"), HeaderValue::from_static(BODY));
            reply.text = false;
            reply
        }
        _ => LocalReply::new(abort.status, BODY, DETAILS).with_flag(ResponseFlag::FaultInjected),
    }
}

/// `upstream_cluster` is empty, or the route goes to that cluster.
fn matches_upstream_cluster(settings: &HttpFault, head: &http::request::Parts, stream: &StreamView<'_>) -> bool {
    if settings.upstream_cluster.is_empty() {
        return true;
    }
    let Some(RouteKind::Route(action)) = stream.route.map(|r| &r.kind) else { return false };
    match &action.cluster {
        ClusterSpecifier::Cluster(name) => **name == *settings.upstream_cluster,
        ClusterSpecifier::Header(header) => {
            head.headers.get(header).is_some_and(|v| v.as_bytes() == settings.upstream_cluster.as_bytes())
        }
        // The one picked with the route (Envoy's `clusterName()` of the weighted entry).
        ClusterSpecifier::Weighted { .. } => {
            stream.info.upstream_cluster.as_ref().is_some_and(|c| c.name() == settings.upstream_cluster.as_str())
        }
    }
}

/// `downstream_nodes` is empty, or lists the request's `x-envoy-downstream-service-node`.
fn matches_downstream_nodes(settings: &HttpFault, head: &http::request::Parts) -> bool {
    if settings.downstream_nodes.is_empty() {
        return true;
    }
    let Some(node) = first_value(head, X_ENVOY_DOWNSTREAM_SERVICE_NODE) else { return false };
    settings.downstream_nodes.iter().any(|n| n == node)
}

/// The configured percentage, or with a header-controlled fault the request's header
/// numerator if lower (Envoy's `HeaderPercentageProvider`).
fn percentage(
    configured: Option<FractionalPercent>,
    header: Option<&str>,
    head: &http::request::Parts,
) -> FractionalPercent {
    let configured = configured.unwrap_or_default();
    match header.and_then(|h| first_value(head, h)).and_then(parse_decimal::<u32>) {
        Some(numerator) => FractionalPercent { numerator: numerator.min(configured.numerator), ..configured },
        None => configured,
    }
}

/// A `*_runtime` field, or Envoy's key where it is left empty.
fn runtime_key<'a>(configured: &'a str, default: &'a str) -> &'a str {
    if configured.is_empty() {
        default
    } else {
        configured
    }
}

/// Whether the request draws the fault: the runtime's percentage for the caller's key when
/// it names its cluster, else for the filter's key, the configured one their default.
fn drawn(percent: &FractionalPercent, key: &str, caller: Option<&str>, setting: &str) -> bool {
    let percent = match caller {
        Some(dc) => runtime::fraction(&format!("fault.http.{dc}.{setting}"), percent),
        None => runtime::fraction(key, percent),
    };
    runtime::draw(&percent)
}

/// The delay to inject, if the request draws one (Envoy's `delayDuration`): whole
/// milliseconds, above zero.
fn delay_duration(settings: &HttpFault, head: &http::request::Parts, caller: Option<&str>) -> Option<Duration> {
    let delay = settings.delay.as_ref()?;
    let from_header = delay.header_delay.is_some();
    let percent = percentage(delay.percentage, from_header.then_some(X_ENVOY_FAULT_DELAY_REQUEST_PERCENTAGE), head);
    let key = runtime_key(&settings.delay_percent_runtime, "fault.http.delay.fixed_delay_percent");
    if !drawn(&percent, key, caller, "delay.fixed_delay_percent") {
        return None;
    }
    let millis = match delay.fixed_delay {
        Some(fixed) => u64::try_from(fixed.as_std().as_millis()).unwrap_or(u64::MAX),
        None => parse_decimal::<u64>(first_value(head, X_ENVOY_FAULT_DELAY_REQUEST)?)?,
    };
    let mut millis =
        runtime::integer(runtime_key(&settings.delay_duration_runtime, "fault.http.delay.fixed_duration_ms"), millis);
    if let Some(dc) = caller {
        millis = runtime::integer(&format!("fault.http.{dc}.delay.fixed_duration_ms"), millis);
    }
    (millis > 0).then(|| Duration::from_millis(millis))
}

/// The abort to inject, if the request draws one (Envoy's `abortStatus`): an HTTP status
/// wins over a gRPC one, which answers 200.
fn abort_status(settings: &HttpFault, head: &http::request::Parts, caller: Option<&str>) -> Option<Abort> {
    let abort = settings.abort.as_ref()?;
    let from_header = abort.header_abort.is_some();
    let percent = percentage(abort.percentage, from_header.then_some(X_ENVOY_FAULT_ABORT_REQUEST_PERCENTAGE), head);
    let key = runtime_key(&settings.abort_percent_runtime, "fault.http.abort.abort_percent");
    if !drawn(&percent, key, caller, "abort.abort_percent") {
        return None;
    }
    let http_status = if from_header {
        // Out of [200, 600): no abort.
        first_value(head, X_ENVOY_FAULT_ABORT_REQUEST).and_then(parse_decimal::<u16>).filter(|c| (200..600).contains(c))
    } else {
        abort.http_status.and_then(|c| u16::try_from(c).ok())
    };
    // The runtime's status over the configured one, the caller's over both.
    let http_status = http_status.map(|configured| {
        let key = runtime_key(&settings.abort_http_status_runtime, "fault.http.abort.http_status");
        let status = match caller {
            Some(dc) => runtime::integer(&format!("fault.http.{dc}.abort.http_status"), u64::from(configured)),
            None => runtime::integer(key, u64::from(configured)),
        };
        u16::try_from(status).ok().filter(|c| (200..600).contains(c)).unwrap_or(configured)
    });
    let grpc_request = crate::router::route::is_grpc(&head.headers);
    if let Some(status) = http_status.and_then(|c| StatusCode::from_u16(c).ok()) {
        return Some(Abort { status, grpc_status: None, grpc_request });
    }
    let grpc_status = if from_header {
        first_value(head, X_ENVOY_FAULT_ABORT_GRPC_REQUEST).and_then(parse_decimal::<u64>)
    } else {
        abort.grpc_status.map(u64::from)
    };
    let grpc_status = grpc_status.map(|configured| match caller {
        Some(dc) => runtime::integer(&format!("fault.http.{dc}.abort.grpc_status"), configured),
        None => runtime::integer(
            runtime_key(&settings.abort_grpc_status_runtime, "fault.http.abort.grpc_status"),
            configured,
        ),
    });
    grpc_status.map(|grpc_status| Abort { status: StatusCode::OK, grpc_status: Some(grpc_status), grpc_request })
}

#[cfg(test)]
mod tests {
    use legate_config::path::from_value;

    use super::super::test_support::*;
    use super::*;

    fn filter_config(text: &str) -> (Arc<legate_stats::Store>, Arc<FaultFilterConfig>) {
        let (store, root) = stats();
        let config: HttpFault = from_value(yaml(text)).unwrap();
        (
            store,
            Arc::new(FaultFilterConfig::new("envoy.filters.http.fault".into(), &config, &root.scope("http.ingress"))),
        )
    }

    fn decode(
        config: &Arc<FaultFilterConfig>,
        head: &http::request::Parts,
        routes: Option<&Routes>,
    ) -> (FaultFilter, FilterHeadersStatus, StreamInfo) {
        let mut filter = FaultFilter::new(config.clone());
        let mut info = stream_info();
        let (vhost, route) = routes.map(|r| r.find(head)).unwrap_or((None, None));
        let stream =
            StreamView { info: &mut info, route: route.as_ref(), virtual_host: vhost.as_ref(), route_config: None };
        let status = filter.on_request(head, stream);
        (filter, status, info)
    }

    fn reply(status: FilterHeadersStatus) -> LocalReply {
        match status {
            FilterHeadersStatus::LocalReply(reply) => reply,
            _ => panic!("expected a local reply"),
        }
    }

    #[test]
    fn abort_answers_fault_filter_abort() {
        let (store, config) = filter_config("abort: {http_status: 503, percentage: {numerator: 100}}");
        let (filter, status, info) =
            decode(&config, &request("GET", "/", &[("x-envoy-downstream-service-cluster", "web")]), None);
        let reply = reply(status);
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(&reply.body[..], b"fault filter abort");
        assert_eq!(reply.details, "fault_filter_abort");
        assert_eq!(reply.flag, Some(ResponseFlag::FaultInjected));
        assert!(info.response_flags.has(ResponseFlag::FaultInjected));
        assert_eq!(store.counter_value("http.ingress.fault.aborts_injected"), Some(1));
        assert_eq!(store.counter_value("http.ingress.fault.web.aborts_injected"), Some(1));
        assert_eq!(store.gauge_value("http.ingress.fault.active_faults"), Some(1));
        drop(filter);
        assert_eq!(store.gauge_value("http.ingress.fault.active_faults"), Some(0));
    }

    #[test]
    fn absent_percentage_never_faults() {
        let (_store, config) = filter_config("abort: {http_status: 503}\ndelay: {fixed_delay: 1s}");
        for _ in 0..100 {
            assert!(matches!(decode(&config, &request("GET", "/", &[]), None).1, FilterHeadersStatus::Continue));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn delay_then_abort() {
        let (store, config) = filter_config(
            "delay: {fixed_delay: 2s, percentage: {numerator: 100}}\nabort: {http_status: 418, percentage: {numerator: 100}}",
        );
        let (mut filter, status, mut info) = decode(&config, &request("GET", "/", &[]), None);
        assert!(matches!(status, FilterHeadersStatus::StopIteration));
        assert!(info.response_flags.has(ResponseFlag::DelayInjected));
        assert_eq!(store.counter_value("http.ingress.fault.delays_injected"), Some(1));
        assert_eq!(store.counter_value("http.ingress.fault.aborts_injected"), Some(0));
        let start = tokio::time::Instant::now();
        let status = std::future::poll_fn(|cx| filter.poll_delay(cx, &mut info)).await;
        assert!(start.elapsed() >= Duration::from_secs(2));
        assert_eq!(reply(status).status, StatusCode::IM_A_TEAPOT);
        assert!(info.response_flags.has(ResponseFlag::FaultInjected));
        assert_eq!(store.counter_value("http.ingress.fault.aborts_injected"), Some(1));
        // Still one fault for the stream.
        assert_eq!(store.gauge_value("http.ingress.fault.active_faults"), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_delay_alone_ends_the_fault_when_it_elapses() {
        let (store, config) = filter_config("delay: {fixed_delay: 0.5s, percentage: {numerator: 100}}");
        let (mut filter, status, mut info) = decode(&config, &request("GET", "/", &[]), None);
        assert!(matches!(status, FilterHeadersStatus::StopIteration));
        assert_eq!(store.gauge_value("http.ingress.fault.active_faults"), Some(1));
        let status = std::future::poll_fn(|cx| filter.poll_delay(cx, &mut info)).await;
        assert!(matches!(status, FilterHeadersStatus::Continue));
        assert_eq!(store.gauge_value("http.ingress.fault.active_faults"), Some(0));
    }

    #[tokio::test]
    async fn header_controlled_faults() {
        let (_store, config) =
            filter_config("delay: {header_delay: {}, percentage: {numerator: 100}}\nabort: {header_abort: {}, percentage: {numerator: 100}}");
        // Nothing asked: nothing done.
        assert!(matches!(decode(&config, &request("GET", "/", &[]), None).1, FilterHeadersStatus::Continue));
        // An abort status out of range is ignored.
        let head = request("GET", "/", &[(X_ENVOY_FAULT_ABORT_REQUEST, "700")]);
        assert!(matches!(decode(&config, &head, None).1, FilterHeadersStatus::Continue));
        let head = request("GET", "/", &[(X_ENVOY_FAULT_ABORT_REQUEST, "429")]);
        assert_eq!(reply(decode(&config, &head, None).1).status, StatusCode::TOO_MANY_REQUESTS);
        // The header percentage can only lower the configured one.
        let head =
            request("GET", "/", &[(X_ENVOY_FAULT_ABORT_REQUEST, "429"), (X_ENVOY_FAULT_ABORT_REQUEST_PERCENTAGE, "0")]);
        assert!(matches!(decode(&config, &head, None).1, FilterHeadersStatus::Continue));
        let head = request("GET", "/", &[(X_ENVOY_FAULT_DELAY_REQUEST, "200")]);
        assert!(matches!(decode(&config, &head, None).1, FilterHeadersStatus::StopIteration));
        let head = request("GET", "/", &[(X_ENVOY_FAULT_DELAY_REQUEST, "0")]);
        assert!(matches!(decode(&config, &head, None).1, FilterHeadersStatus::Continue));

        let (_store, capped) = filter_config("abort: {header_abort: {}, percentage: {numerator: 0}}");
        let head = request(
            "GET",
            "/",
            &[(X_ENVOY_FAULT_ABORT_REQUEST, "500"), (X_ENVOY_FAULT_ABORT_REQUEST_PERCENTAGE, "100")],
        );
        assert!(matches!(decode(&capped, &head, None).1, FilterHeadersStatus::Continue));
    }

    #[test]
    fn header_controls_are_ignored_without_header_faults() {
        let (_store, config) = filter_config("abort: {http_status: 500, percentage: {numerator: 0}}");
        let head = request(
            "GET",
            "/",
            &[(X_ENVOY_FAULT_ABORT_REQUEST, "503"), (X_ENVOY_FAULT_ABORT_REQUEST_PERCENTAGE, "100")],
        );
        assert!(matches!(decode(&config, &head, None).1, FilterHeadersStatus::Continue));
    }

    #[test]
    fn grpc_abort() {
        let (_store, config) = filter_config("abort: {grpc_status: 14, percentage: {numerator: 100}}");
        let grpc = request("POST", "/pkg.Svc/Call", &[("content-type", "application/grpc")]);
        let grpc_reply = reply(decode(&config, &grpc, None).1);
        assert_eq!(grpc_reply.status, StatusCode::OK);
        assert_eq!(grpc_reply.headers["grpc-status"], "14");
        assert_eq!(grpc_reply.headers["grpc-message"], "fault filter abort");
        assert_eq!(grpc_reply.headers[CONTENT_TYPE], "application/grpc");
        assert!(grpc_reply.body.is_empty());
        let plain = reply(decode(&config, &request("GET", "/", &[]), None).1);
        assert_eq!((plain.status, &plain.body[..]), (StatusCode::OK, &b"fault filter abort"[..]));
    }

    #[test]
    fn max_active_faults_overflow_skips_the_fault() {
        let (store, config) =
            filter_config("abort: {http_status: 503, percentage: {numerator: 100}}\nmax_active_faults: 1");
        let (held, status, _) = decode(&config, &request("GET", "/", &[]), None);
        assert!(matches!(status, FilterHeadersStatus::LocalReply(_)));
        assert!(matches!(decode(&config, &request("GET", "/", &[]), None).1, FilterHeadersStatus::Continue));
        assert_eq!(store.counter_value("http.ingress.fault.faults_overflow"), Some(1));
        drop(held);
        assert!(matches!(decode(&config, &request("GET", "/", &[]), None).1, FilterHeadersStatus::LocalReply(_)));
    }

    #[test]
    fn headers_and_downstream_nodes_select_requests() {
        let (_store, config) = filter_config(
            "
abort: {http_status: 503, percentage: {numerator: 100}}
downstream_nodes: [canary]
headers: [{name: x-chaos, present_match: true}, {name: ':method', string_match: {exact: GET}}]
",
        );
        let with = |headers: &[(&str, &str)], method: &str| decode(&config, &request(method, "/", headers), None).1;
        assert!(matches!(with(&[("x-chaos", "1")], "GET"), FilterHeadersStatus::Continue));
        assert!(matches!(
            with(&[("x-chaos", "1"), (X_ENVOY_DOWNSTREAM_SERVICE_NODE, "prod")], "GET"),
            FilterHeadersStatus::Continue
        ));
        assert!(matches!(
            with(&[("x-chaos", "1"), (X_ENVOY_DOWNSTREAM_SERVICE_NODE, "canary")], "POST"),
            FilterHeadersStatus::Continue
        ));
        assert!(matches!(
            with(&[("x-chaos", "1"), (X_ENVOY_DOWNSTREAM_SERVICE_NODE, "canary")], "GET"),
            FilterHeadersStatus::LocalReply(_)
        ));
    }

    const ROUTES: &str = "
virtual_hosts:
- name: vh
  domains: ['*']
  routes:
  - match: {prefix: /a}
    route: {cluster: a}
  - match: {prefix: /h}
    route: {cluster_header: x-cluster}
  - match: {prefix: /quiet}
    route: {cluster: b}
    typed_per_filter_config:
      envoy.filters.http.fault:
        '@type': type.googleapis.com/envoy.config.route.v3.FilterConfig
        disabled: true
  - match: {prefix: /teapot}
    route: {cluster: b}
    typed_per_filter_config:
      envoy.filters.http.fault:
        '@type': type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
        abort: {http_status: 418, percentage: {numerator: 100}}
  - match: {prefix: /}
    route: {cluster: b}
";

    #[test]
    fn upstream_cluster_restricts_to_the_route_cluster() {
        let (_store, config) =
            filter_config("abort: {http_status: 503, percentage: {numerator: 100}}\nupstream_cluster: a");
        let routes = Routes::new(ROUTES);
        let status =
            |uri: &str, headers: &[(&str, &str)]| decode(&config, &request("GET", uri, headers), Some(&routes)).1;
        assert!(matches!(status("/a", &[]), FilterHeadersStatus::LocalReply(_)));
        assert!(matches!(status("/b", &[]), FilterHeadersStatus::Continue));
        assert!(matches!(status("/h", &[("x-cluster", "a")]), FilterHeadersStatus::LocalReply(_)));
        assert!(matches!(status("/h", &[("x-cluster", "b")]), FilterHeadersStatus::Continue));
        // No route: no cluster to match.
        assert!(matches!(decode(&config, &request("GET", "/a", &[]), None).1, FilterHeadersStatus::Continue));
    }

    #[test]
    fn routes_replace_or_disable_the_fault() {
        let (_store, config) = filter_config("abort: {http_status: 503, percentage: {numerator: 100}}");
        let routes = Routes::new(ROUTES);
        let status = |uri: &str| decode(&config, &request("GET", uri, &[]), Some(&routes)).1;
        assert_eq!(reply(status("/teapot")).status, StatusCode::IM_A_TEAPOT);
        assert_eq!(reply(status("/other")).status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
