//! Request tracing (Envoy's `HttpTracer` and `ConnectionManagerTracingConfig`): which requests
//! a connection manager traces, the span each traced request gets, the context passed on to
//! the upstream, and the tags the span carries when the stream ends. The tracer (Zipkin)
//! reports the spans; see [`zipkin`].
//!
//! The decision is Envoy's: it is kept in `x-request-id` itself (the UUID's version nibble
//! becomes `9` sampled, `a` forced by the service, `b` forced by the client), so a request
//! already decided keeps its decision through every proxy that forwards its id.

pub mod opentelemetry;
mod reporter;
pub mod zipkin;

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use http::header::{HeaderName, HeaderValue, USER_AGENT};
use http::HeaderMap;
use legate_config::core::FractionalPercent;
use legate_config::filters::network::http_connection_manager::Tracing as TracingConfig;
use legate_config::route::RouteTracing;
use legate_config::trace::{CustomTag as CustomTagConfig, TracerConfig, TracingProvider};
use legate_stats::Scope;

use crate::http::headers::{X_ENVOY_DECORATOR_OPERATION, X_ENVOY_ORIGINAL_PATH, X_REQUEST_ID};
use crate::http::StreamInfo;

legate_stats::stats! {
    /// `http.<stat_prefix>.tracing.*`.
    pub struct TracingStats {
        counter random_sampling,
        counter service_forced,
        counter client_enabled,
        counter not_traceable,
        counter health_check,
    }
}

static X_CLIENT_TRACE_ID: HeaderName = HeaderName::from_static("x-client-trace-id");
pub static X_ENVOY_FORCE_TRACE: HeaderName = HeaderName::from_static("x-envoy-force-trace");
static X_ENVOY_DOWNSTREAM_SERVICE_CLUSTER: HeaderName = HeaderName::from_static("x-envoy-downstream-service-cluster");

/// The bootstrap's tracer, for connection managers whose `tracing` names none. Set once at
/// start-up, before the listeners are built.
static BOOTSTRAP_PROVIDER: OnceLock<Option<TracingProvider>> = OnceLock::new();

/// Records the bootstrap's `tracing.http`.
pub fn configure(bootstrap: &legate_config::bootstrap::Bootstrap) {
    let _ = BOOTSTRAP_PROVIDER.set(bootstrap.tracing.as_ref().and_then(|t| t.http.clone()));
}

/// Why a request is traced or not (Envoy's `Tracing::Reason`), as its `x-request-id` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceReason {
    NotTraceable,
    Sampling,
    ServiceForced,
    ClientForced,
}

/// Where in a UUID `x-request-id` the decision is kept, and its marks.
const TRACE_BYTE: usize = 14;
const NO_TRACE: u8 = b'4';
const TRACE_SAMPLED: u8 = b'9';
const TRACE_FORCED: u8 = b'a';
const TRACE_CLIENT: u8 = b'b';

/// A connection manager's tracing: its sampling rates and tags, and its tracer (none when
/// neither it nor the bootstrap names one: requests are still decided and counted).
pub struct HcmTracer {
    pub stats: TracingStats,
    /// Of 100, of 10,000 and of 10,000, as Envoy turns the percentages into fractions.
    client_sampling: FractionalPercent,
    random_sampling: FractionalPercent,
    overall_sampling: FractionalPercent,
    max_path_tag_length: usize,
    custom_tags: Vec<CustomTag>,
    /// The listener's `traffic_direction` is OUTBOUND: spans are client spans.
    pub egress: bool,
    driver: Option<Tracer>,
}

impl HcmTracer {
    /// `scope` is the connection manager's (`http.<stat_prefix>`), `root` the store's.
    pub fn new(config: &TracingConfig, scope: &Scope, root: &Scope, egress: bool) -> Result<Self, String> {
        use legate_config::core::Denominator;
        let fraction = |p: Option<&legate_config::core::Percent>, default: u32, denominator: Denominator| {
            let numerator = match (p, denominator) {
                (None, _) => default,
                // Envoy truncates the client rate to whole percents, rounds the others.
                (Some(p), Denominator::Hundred) => p.value as u32,
                (Some(p), _) => (p.value * 100.0).round() as u32,
            };
            FractionalPercent { numerator, denominator }
        };
        let provider = config.provider.as_ref().or_else(|| BOOTSTRAP_PROVIDER.get().and_then(Option::as_ref));
        let driver = provider.map(|p| match &p.config {
            TracerConfig::Zipkin(zipkin) => Tracer::Zipkin(Arc::new(zipkin::Driver::new(zipkin, egress, root))),
            TracerConfig::OpenTelemetry(otel) => {
                Tracer::OpenTelemetry(Arc::new(opentelemetry::Driver::new(otel, egress, root)))
            }
        });
        Ok(HcmTracer {
            stats: TracingStats::new(&scope.scope("tracing")),
            client_sampling: fraction(config.client_sampling.as_ref(), 100, Denominator::Hundred),
            random_sampling: fraction(config.random_sampling.as_ref(), 10_000, Denominator::TenThousand),
            overall_sampling: fraction(config.overall_sampling.as_ref(), 10_000, Denominator::TenThousand),
            max_path_tag_length: config.max_path_tag_length.unwrap_or(TracingConfig::DEFAULT_MAX_PATH_TAG_LENGTH)
                as usize,
            custom_tags: config.custom_tags.iter().map(CustomTag::new).collect::<Result<_, _>>()?,
            egress,
            driver,
        })
    }

    /// Envoy's `mutateTracingRequestHeader` then `traceRequest`, once the route is known:
    /// decides (keeping the decision in `x-request-id`), counts the reason, and starts the
    /// stream's span, whose context goes upstream in `headers`.
    pub fn trace_request(
        &self,
        head: &mut http::request::Parts,
        route: Option<&RouteTrace>,
        authority: &str,
        info: &StreamInfo,
    ) -> Box<StreamTrace> {
        let headers = &mut head.headers;
        let reason = self.decide(headers, route.and_then(|r| r.tracing.as_ref()));
        match reason {
            TraceReason::ClientForced => self.stats.client_enabled.inc(),
            TraceReason::Sampling => self.stats.random_sampling.inc(),
            TraceReason::ServiceForced => self.stats.service_forced.inc(),
            TraceReason::NotTraceable => self.stats.not_traceable.inc(),
        }
        let traced = reason != TraceReason::NotTraceable;
        let force_trace = headers.contains_key(&X_ENVOY_FORCE_TRACE);
        let mut trace = Box::new(StreamTrace { span: None, decorated_operation: None, force_trace });
        let mut span = match &self.driver {
            Some(driver) => driver.start_span(headers, authority, traced, info),
            None => None,
        };
        // The decorator names the span; ingress, a name the caller asked for wins over it.
        // The headers are handled with or without a tracer (Envoy's null span).
        let mut propagate = true;
        if let Some(decorator) = route.and_then(|r| r.decorator.as_ref()) {
            if let Some(span) = span.as_mut() {
                span.name = decorator.operation.clone();
            }
            propagate = decorator.propagate;
            trace.decorated_operation = Some(decorator.operation.clone());
        }
        if self.egress {
            match &trace.decorated_operation {
                Some(operation) if propagate => {
                    if let Ok(v) = HeaderValue::from_str(operation) {
                        headers.insert(X_ENVOY_DECORATOR_OPERATION.clone(), v);
                    }
                }
                _ => {}
            }
        } else if let Some(asked) = headers.remove(&X_ENVOY_DECORATOR_OPERATION) {
            if let Ok(name) = asked.to_str() {
                if !name.is_empty() {
                    if let Some(span) = span.as_mut() {
                        span.name = name.to_string();
                    }
                    trace.decorated_operation = None;
                }
            }
        }
        if !propagate {
            trace.decorated_operation = None;
        }
        let (Some(driver), Some(mut span)) = (&self.driver, span) else { return trace };
        let request = RequestLine {
            method: head.method.as_str(),
            path: head.uri.path_and_query().map_or("/", |p| p.as_str()),
            authority,
        };
        span.request_tags(&head.headers, &request, info, self.max_path_tag_length, &self.custom_tags, route);
        driver.inject(&span, &mut head.headers);
        trace.span = Some(span);
        trace
    }

    fn decide(&self, headers: &mut HeaderMap, route: Option<&RouteTracing>) -> TraceReason {
        let Some(id) = headers.get_mut(&X_REQUEST_ID) else { return TraceReason::NotTraceable };
        // Envoy's `modBy`: the id's first 8 characters as hex, modulo 10,000.
        let Some(random) = id
            .as_bytes()
            .get(..8)
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .map(|n| n % 10_000)
        else {
            return TraceReason::NotTraceable;
        };
        let client = route.and_then(|r| r.client_sampling.as_ref()).unwrap_or(&self.client_sampling);
        let random_rate = route.and_then(|r| r.random_sampling.as_ref()).unwrap_or(&self.random_sampling);
        let overall = route.and_then(|r| r.overall_sampling.as_ref()).unwrap_or(&self.overall_sampling);
        let enabled = crate::runtime::enabled_for;

        let mut reason = reason_of(id.as_bytes());
        if reason == TraceReason::NotTraceable {
            if headers.contains_key(&X_CLIENT_TRACE_ID) && enabled("tracing.client_enabled", client, fastrand::u64(..))
            {
                reason = TraceReason::ClientForced;
            } else if headers.contains_key(&X_ENVOY_FORCE_TRACE) {
                reason = TraceReason::ServiceForced;
            } else if enabled("tracing.random_sampling", random_rate, random) {
                reason = TraceReason::Sampling;
            }
        }
        if reason != TraceReason::NotTraceable && !enabled("tracing.global_enabled", overall, random) {
            reason = TraceReason::NotTraceable;
        }
        if let Some(id) = headers.get_mut(&X_REQUEST_ID) {
            mark(id, reason);
        }
        reason
    }

    /// The stream ended: the span gets its response tags and goes to the tracer, if sampled.
    pub fn finish(
        &self,
        trace: &mut StreamTrace,
        info: &StreamInfo,
        worker: &std::rc::Rc<crate::worker::WorkerContext>,
    ) {
        if info.health_check {
            self.stats.health_check.inc();
        }
        let (Some(driver), Some(mut span)) = (&self.driver, trace.span.take()) else { return };
        if !span.sampled {
            return;
        }
        span.response_tags(info);
        driver.report(*span, info, worker);
    }
}

/// The tracer a connection manager reports to.
enum Tracer {
    Zipkin(Arc<zipkin::Driver>),
    OpenTelemetry(Arc<opentelemetry::Driver>),
}

impl Tracer {
    fn start_span(&self, headers: &HeaderMap, authority: &str, traced: bool, info: &StreamInfo) -> Option<Box<Span>> {
        match self {
            Tracer::Zipkin(d) => d.start_span(headers, authority, traced, info),
            Tracer::OpenTelemetry(d) => d.start_span(headers, authority, traced, info),
        }
    }

    fn inject(&self, span: &Span, headers: &mut HeaderMap) {
        match self {
            Tracer::Zipkin(d) => d.inject(span, headers),
            Tracer::OpenTelemetry(d) => d.inject(span, headers),
        }
    }

    fn report(&self, span: Span, info: &StreamInfo, worker: &std::rc::Rc<crate::worker::WorkerContext>) {
        match self {
            Tracer::Zipkin(d) => d.report(span, info, worker),
            Tracer::OpenTelemetry(d) => d.report(span, info, worker),
        }
    }
}

/// The decision an `x-request-id` carries: only a UUID (36 characters) carries one.
fn reason_of(id: &[u8]) -> TraceReason {
    if id.len() != 36 {
        return TraceReason::NotTraceable;
    }
    match id.get(TRACE_BYTE) {
        Some(&TRACE_SAMPLED) => TraceReason::Sampling,
        Some(&TRACE_FORCED) => TraceReason::ServiceForced,
        Some(&TRACE_CLIENT) => TraceReason::ClientForced,
        _ => TraceReason::NotTraceable,
    }
}

/// Writes the decision into a UUID `x-request-id` (others are left as they are).
fn mark(id: &mut HeaderValue, reason: TraceReason) {
    let bytes = id.as_bytes();
    if bytes.len() != 36 {
        return;
    }
    let mark = match reason {
        TraceReason::NotTraceable => NO_TRACE,
        TraceReason::Sampling => TRACE_SAMPLED,
        TraceReason::ServiceForced => TRACE_FORCED,
        TraceReason::ClientForced => TRACE_CLIENT,
    };
    if bytes.get(TRACE_BYTE) == Some(&mark) {
        return;
    }
    let mut marked = [0u8; 36];
    marked.copy_from_slice(bytes);
    marked[TRACE_BYTE] = mark;
    if let Ok(v) = HeaderValue::from_bytes(&marked) {
        *id = v;
    }
}

/// A route's part in tracing: its decorator and its own sampling rates and tags.
#[derive(Debug, Default)]
pub struct RouteTrace {
    pub decorator: Option<Decorator>,
    pub tracing: Option<RouteTracing>,
    custom_tags: Vec<CustomTag>,
}

#[derive(Debug)]
pub struct Decorator {
    pub operation: String,
    pub propagate: bool,
}

impl RouteTrace {
    /// `None` for a route with neither a decorator nor tracing settings.
    pub fn new(route: &legate_config::route::Route) -> Result<Option<Box<Self>>, String> {
        if route.decorator.is_none() && route.tracing.is_none() {
            return Ok(None);
        }
        Ok(Some(Box::new(RouteTrace {
            decorator: route
                .decorator
                .as_ref()
                .map(|d| Decorator { operation: d.operation.clone(), propagate: d.propagate.unwrap_or(true) }),
            tracing: route.tracing.as_deref().cloned(),
            custom_tags: route
                .tracing
                .iter()
                .flat_map(|t| &t.custom_tags)
                .map(CustomTag::new)
                .collect::<Result<_, _>>()?,
        })))
    }
}

/// What a stream's tracing keeps until its end.
#[derive(Debug)]
pub struct StreamTrace {
    pub span: Option<Box<Span>>,
    /// The decorator's operation, sent back (ingress) in `x-envoy-decorator-operation`.
    pub decorated_operation: Option<String>,
    /// The request asked for a trace (`x-envoy-force-trace`): its response carries its id.
    pub force_trace: bool,
}

impl StreamTrace {
    /// Envoy's `encodeHeaders` part: ingress, the operation goes back to the caller; egress,
    /// the upstream's operation names the span. Either way the header stops here.
    pub fn on_response_headers(&mut self, headers: &mut HeaderMap, egress: bool, request_id: Option<&HeaderValue>) {
        if self.force_trace {
            if let Some(id) = request_id {
                headers.insert(X_REQUEST_ID.clone(), id.clone());
            }
        }
        if egress {
            if let Some(named) = headers.remove(&X_ENVOY_DECORATOR_OPERATION) {
                if let (Some(span), Ok(name)) = (self.span.as_mut(), named.to_str()) {
                    if !name.is_empty() {
                        span.name = name.to_string();
                    }
                }
            }
        } else if let Some(operation) = &self.decorated_operation {
            if let Ok(v) = HeaderValue::from_str(operation) {
                headers.insert(X_ENVOY_DECORATOR_OPERATION.clone(), v);
            }
        }
    }
}

/// One span: the request's part of a trace.
#[derive(Debug)]
pub struct Span {
    /// The high half of a 128-bit trace id.
    pub trace_id_high: Option<u64>,
    pub trace_id: u64,
    pub id: u64,
    pub parent_id: Option<u64>,
    pub sampled: bool,
    /// A client span (egress, or a new span under a caller's) rather than a server span.
    pub client: bool,
    /// A server span sharing its caller's span id.
    pub shared: bool,
    pub name: String,
    /// W3C `tracestate`, carried on (OpenTelemetry).
    pub trace_state: Option<String>,
    pub start: SystemTime,
    pub tags: Vec<(std::borrow::Cow<'static, str>, String)>,
}

impl Span {
    fn tag(&mut self, name: impl Into<std::borrow::Cow<'static, str>>, value: impl Into<String>) {
        let (name, value) = (name.into(), value.into());
        // Zipkin drops empty tags.
        if name.is_empty() || value.is_empty() {
            return;
        }
        match self.tags.iter_mut().find(|(n, _)| *n == name) {
            Some(existing) => existing.1 = value,
            None => self.tags.push((name, value)),
        }
    }

    /// Envoy's `finalizeDownstreamSpan`, the request's part: read while the request is as
    /// it came (its original path, before any rewrite).
    fn request_tags(
        &mut self,
        headers: &HeaderMap,
        request: &RequestLine<'_>,
        info: &StreamInfo,
        max_path: usize,
        custom: &[CustomTag],
        route: Option<&RouteTrace>,
    ) {
        let header = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(id) = header(&X_REQUEST_ID) {
            self.tag("guid:x-request-id", id);
        }
        let path = header(&X_ENVOY_ORIGINAL_PATH).unwrap_or(request.path);
        let url = format!("{}://{}{}", info.scheme.as_str(), request.authority, path);
        self.tag("http.url", truncate(&url, max_path));
        self.tag("http.method", request.method);
        self.tag("downstream_cluster", header(&X_ENVOY_DOWNSTREAM_SERVICE_CLUSTER).unwrap_or("-"));
        self.tag("user_agent", header(&USER_AGENT).unwrap_or("-"));
        self.tag("http.protocol", protocol_name(info.protocol));
        self.tag("peer.address", info.downstream_direct_remote_address.ip().to_string());
        if let Some(id) = header(&X_CLIENT_TRACE_ID) {
            self.tag("guid:x-client-trace-id", id);
        }
        if info.grpc_request {
            self.tag("grpc.path", request.path);
            self.tag("grpc.authority", request.authority);
            if let Some(v) = header(&http::header::CONTENT_TYPE) {
                self.tag("grpc.content_type", v);
            }
            if let Some(v) = header(&HeaderName::from_static("grpc-timeout")) {
                self.tag("grpc.timeout", v);
            }
        }
        // The route's tags first: they win over the connection manager's of the same name.
        let route_tags = route.map(|r| r.custom_tags.as_slice()).unwrap_or_default();
        for tag in custom.iter().chain(route_tags) {
            if let Some(value) = tag.value(headers) {
                self.tag(tag.tag.clone(), value);
            }
        }
    }

    /// The response's part (Envoy's `setCommonTags` and the gRPC status).
    fn response_tags(&mut self, info: &StreamInfo) {
        self.tag("request_size", info.bytes_received.to_string());
        self.tag("response_size", info.bytes_sent.to_string());
        self.tag("component", "proxy");
        if let Some(cluster) = &info.upstream_cluster {
            self.tag("upstream_cluster", cluster.name().to_string());
            self.tag("upstream_cluster.name", cluster.observability_name().to_string());
        }
        let code = info.response_code.unwrap_or(0);
        self.tag("http.status_code", code.to_string());
        self.tag("response_flags", info.response_flags.to_short_string());
        let mut error = code == 0 || code >= 500;
        let trailers = info.response_trailers.as_deref();
        let headers = info.response_headers.as_deref();
        let grpc = |name: &str| {
            trailers
                .and_then(|t| t.get(name))
                .or_else(|| headers.and_then(|h| h.get(name)))
                .and_then(|v| v.to_str().ok())
        };
        if info.grpc_request {
            if let Some(status) = grpc("grpc-status") {
                self.tag("grpc.status_code", status);
                // Unknown, DeadlineExceeded, Unimplemented, ResourceExhausted, Internal,
                // Unavailable, DataLoss: Envoy's server-side errors.
                error |= matches!(status, "2" | "4" | "12" | "8" | "13" | "14" | "15");
            }
            if let Some(message) = grpc("grpc-message") {
                self.tag("grpc.message", message);
            }
        }
        if error {
            self.tag("error", "true");
        }
    }
}

/// The request line as it came, for the span's tags.
struct RequestLine<'a> {
    method: &'a str,
    path: &'a str,
    authority: &'a str,
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn protocol_name(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "-",
    }
}

/// A `custom_tags` entry, its value settled where it can be (a literal, the environment at
/// load, as Envoy reads it once).
#[derive(Debug)]
struct CustomTag {
    tag: String,
    source: TagSource,
}

#[derive(Debug)]
enum TagSource {
    Fixed(String),
    RequestHeader { name: HeaderName, default: String },
}

impl CustomTag {
    fn new(config: &CustomTagConfig) -> Result<Self, String> {
        let source = if let Some(literal) = &config.literal {
            TagSource::Fixed(literal.value.clone())
        } else if let Some(env) = &config.environment {
            TagSource::Fixed(std::env::var(&env.name).unwrap_or_else(|_| env.default_value.clone()))
        } else if let Some(header) = &config.request_header {
            TagSource::RequestHeader {
                name: HeaderName::from_bytes(header.name.as_bytes())
                    .map_err(|_| format!("custom_tags: invalid header name '{}'", header.name))?,
                default: header.default_value.clone(),
            }
        } else {
            return Err(format!("custom_tags: tag '{}' has no value source", config.tag));
        };
        Ok(CustomTag { tag: config.tag.clone(), source })
    }

    fn value(&self, headers: &HeaderMap) -> Option<String> {
        match &self.source {
            TagSource::Fixed(value) => Some(value.clone()),
            TagSource::RequestHeader { name, default } => match headers.get(name).and_then(|v| v.to_str().ok()) {
                Some(v) => Some(v.to_string()),
                None if !default.is_empty() => Some(default.clone()),
                None => None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decision_is_kept_in_a_uuid_request_id() {
        let mut id = HeaderValue::from_static("cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2");
        assert_eq!(reason_of(id.as_bytes()), TraceReason::NotTraceable);
        mark(&mut id, TraceReason::Sampling);
        assert_eq!(id, "cc21d9b0-cf5c-932b-8c7e-98aeb7988cd2");
        assert_eq!(reason_of(id.as_bytes()), TraceReason::Sampling);
        mark(&mut id, TraceReason::ClientForced);
        assert_eq!(reason_of(id.as_bytes()), TraceReason::ClientForced);
        let mut other = HeaderValue::from_static("not-a-uuid");
        mark(&mut other, TraceReason::Sampling);
        assert_eq!(other, "not-a-uuid");
    }

    fn tracer(yaml: &str) -> HcmTracer {
        let config: TracingConfig =
            legate_config::path::from_value(serde_yaml_ng::from_str::<serde_json::Value>(yaml).unwrap()).unwrap();
        let store = legate_stats::Store::new(1);
        HcmTracer::new(&config, &store.scope("http.t"), &store.scope(""), false).unwrap()
    }

    #[test]
    fn sampling_rates_decide_by_the_request_id() {
        let half = tracer("random_sampling: {value: 50}");
        let mut headers = HeaderMap::new();
        // 0x00001388 = 5000: not below 5000 of 10,000.
        headers.insert(&X_REQUEST_ID, HeaderValue::from_static("00001388-cf5c-432b-8c7e-98aeb7988cd2"));
        assert_eq!(half.decide(&mut headers, None), TraceReason::NotTraceable);
        assert_eq!(headers[&X_REQUEST_ID], "00001388-cf5c-432b-8c7e-98aeb7988cd2");
        headers.insert(&X_REQUEST_ID, HeaderValue::from_static("00001387-cf5c-432b-8c7e-98aeb7988cd2"));
        assert_eq!(half.decide(&mut headers, None), TraceReason::Sampling);
        assert_eq!(headers[&X_REQUEST_ID], "00001387-cf5c-932b-8c7e-98aeb7988cd2");

        let none = tracer("random_sampling: {value: 0}");
        headers.insert(&X_REQUEST_ID, HeaderValue::from_static("00000000-cf5c-432b-8c7e-98aeb7988cd2"));
        assert_eq!(none.decide(&mut headers, None), TraceReason::NotTraceable);
        headers.insert(&X_ENVOY_FORCE_TRACE, HeaderValue::from_static("true"));
        assert_eq!(none.decide(&mut headers, None), TraceReason::ServiceForced);
        assert_eq!(headers[&X_REQUEST_ID], "00000000-cf5c-a32b-8c7e-98aeb7988cd2");

        // An overall rate of 0 keeps nothing, forced or not.
        let off = tracer("overall_sampling: {value: 0}");
        headers.insert(&X_REQUEST_ID, HeaderValue::from_static("00000000-cf5c-432b-8c7e-98aeb7988cd2"));
        assert_eq!(off.decide(&mut headers, None), TraceReason::NotTraceable);
        headers.remove(&X_REQUEST_ID);
        assert_eq!(tracer("{}").decide(&mut headers, None), TraceReason::NotTraceable, "no id, no trace");
    }
}
