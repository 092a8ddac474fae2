//! The OpenTelemetry tracer (`envoy.tracers.opentelemetry`): W3C trace context (`traceparent`,
//! `tracestate`) in and out of requests, and spans exported over OTLP/gRPC
//! (`opentelemetry.proto.collector.trace.v1.TraceService/Export`) to the `grpc_service`'s
//! cluster, batched per worker as the Zipkin tracer's (runtime
//! `tracing.opentelemetry.min_flush_spans`, default 5; `flush_interval_ms`, default 5 s).
//!
//! Where Envoy releases differ, current Envoy's behaviour is kept: the route's decorator names
//! the span, a 5xx (a 4xx too for a client span) sets the span's status to ERROR, a call is
//! unary, and a request the connection manager decided not to trace is not sampled whatever
//! its `traceparent` says.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use legate_config::trace::OpenTelemetryConfig;
use legate_stats::{Counter, Scope};
use prost::Message;

use super::reporter::{self, Exporter, FlushRule};
use super::Span;
use crate::http::async_client::{self, AsyncRequest};
use crate::http::StreamInfo;
use crate::worker::WorkerContext;

legate_stats::stats! {
    /// `tracing.opentelemetry.*`.
    pub struct OpenTelemetryStats {
        counter spans_sent,
        counter timer_flushed,
    }
}

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// A unary call's deadline when the `grpc_service` names none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// One connection manager's OpenTelemetry tracer.
pub struct Driver {
    /// The collector's cluster and `:authority`; none: spans are not exported.
    collector: Option<(String, String)>,
    timeout: Duration,
    service_name: String,
    egress: bool,
    stats: OpenTelemetryStats,
}

impl Driver {
    pub fn new(config: &OpenTelemetryConfig, egress: bool, root: &Scope) -> Self {
        let grpc = config.grpc_service.as_ref();
        Driver {
            collector: grpc.and_then(|g| g.envoy_grpc.as_ref()).map(|e| {
                let authority = if e.authority.is_empty() { &e.cluster_name } else { &e.authority };
                (e.cluster_name.clone(), authority.clone())
            }),
            timeout: grpc
                .and_then(|g| g.timeout)
                .map(|t| t.as_std())
                .filter(|t| !t.is_zero())
                .unwrap_or(DEFAULT_TIMEOUT),
            service_name: config.service_name().to_string(),
            egress,
            stats: OpenTelemetryStats::new(&root.scope("tracing.opentelemetry")),
        }
    }

    /// The request's span: a child of the caller's (`traceparent`), else a new trace. `None`
    /// for a `traceparent` that does not parse (Envoy's null span).
    pub(super) fn start_span(
        &self,
        headers: &HeaderMap,
        authority: &str,
        traced: bool,
        info: &StreamInfo,
    ) -> Option<Box<Span>> {
        let caller = match headers.get(&TRACEPARENT) {
            Some(value) => Some(parse_traceparent(value.as_bytes())?),
            None => None,
        };
        let name = if self.egress { format!("egress {authority}") } else { "ingress".to_string() };
        let mut span = Box::new(Span {
            trace_id_high: None,
            trace_id: 0,
            id: fastrand::u64(..),
            parent_id: None,
            sampled: traced,
            client: self.egress,
            shared: false,
            name,
            trace_state: None,
            start: info.start_time(),
            tags: Vec::new(),
        });
        match caller {
            Some(caller) => {
                span.trace_id_high = Some(caller.trace_id_high);
                span.trace_id = caller.trace_id;
                span.parent_id = Some(caller.parent_id);
                span.sampled = traced && caller.sampled;
                let states: Vec<&str> = headers.get_all(&TRACESTATE).iter().filter_map(|v| v.to_str().ok()).collect();
                span.trace_state = (!states.is_empty()).then(|| states.join(","));
            }
            None => {
                span.trace_id_high = Some(fastrand::u64(..));
                span.trace_id = fastrand::u64(..);
            }
        }
        Some(span)
    }

    /// `traceparent: 00-<trace id>-<span id>-<flags>` and the caller's `tracestate`.
    pub(super) fn inject(&self, span: &Span, headers: &mut HeaderMap) {
        let parent = format!(
            "00-{:016x}{:016x}-{:016x}-{}",
            span.trace_id_high.unwrap_or(0),
            span.trace_id,
            span.id,
            if span.sampled { "01" } else { "00" }
        );
        if let Ok(v) = HeaderValue::from_str(&parent) {
            headers.insert(TRACEPARENT.clone(), v);
        }
        let state = span.trace_state.as_deref().unwrap_or_default();
        if let Ok(v) = HeaderValue::from_str(state) {
            headers.insert(TRACESTATE.clone(), v);
        }
    }

    /// A finished, sampled span: kept by this worker until the next export.
    pub(super) fn report(self: &Arc<Self>, span: Span, info: &StreamInfo, worker: &Rc<WorkerContext>) {
        reporter::buffer(self, worker, to_otlp(&span, info));
    }
}

/// A caller's context from `traceparent` (W3C: `version-traceid-parentid-flags`).
struct Caller {
    trace_id_high: u64,
    trace_id: u64,
    parent_id: u64,
    sampled: bool,
}

fn parse_traceparent(value: &[u8]) -> Option<Caller> {
    let text = std::str::from_utf8(value).ok()?;
    if text.len() != 55 {
        return None;
    }
    let mut parts = text.split('-');
    let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || version.len() != 2 || trace.len() != 32 || parent.len() != 16 || flags.len() != 2 {
        return None;
    }
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit()).then(|| u64::from_str_radix(s, 16).ok()).flatten();
    hex(version)?;
    let (high, low) = trace.split_at(16);
    let (trace_id_high, trace_id, parent_id) = (hex(high)?, hex(low)?, hex(parent)?);
    let flags = hex(flags)?;
    // All-zero ids are invalid (W3C).
    if (trace_id_high == 0 && trace_id == 0) || parent_id == 0 {
        return None;
    }
    Some(Caller { trace_id_high, trace_id, parent_id, sampled: flags & 1 == 1 })
}

/// The span as OTLP has it; every tag a string attribute.
fn to_otlp(span: &Span, info: &StreamInfo) -> otlp::Span {
    let nanos = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let start = nanos(span.start);
    let duration = info.end.unwrap_or_else(|| info.elapsed());
    let mut trace_id = Vec::with_capacity(16);
    trace_id.extend_from_slice(&span.trace_id_high.unwrap_or(0).to_be_bytes());
    trace_id.extend_from_slice(&span.trace_id.to_be_bytes());
    let code = info.response_code.unwrap_or(0);
    let error = span.tags.iter().any(|(name, value)| name == "error" && value == "true")
        || (span.client && (400..500).contains(&code));
    otlp::Span {
        trace_id,
        span_id: span.id.to_be_bytes().to_vec(),
        trace_state: span.trace_state.clone().unwrap_or_default(),
        parent_span_id: span.parent_id.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
        name: span.name.clone(),
        kind: if span.client { otlp::SPAN_KIND_CLIENT } else { otlp::SPAN_KIND_SERVER },
        start_time_unix_nano: start,
        end_time_unix_nano: start.saturating_add(duration.as_nanos() as u64),
        attributes: span.tags.iter().map(|(name, value)| otlp::KeyValue::string(name, value)).collect(),
        status: error.then(|| otlp::Status { message: String::new(), code: otlp::STATUS_CODE_ERROR }),
    }
}

impl Exporter for Driver {
    type Item = otlp::Span;

    fn flush_rule(&self) -> FlushRule {
        FlushRule::from_runtime("tracing.opentelemetry.min_flush_spans", "tracing.opentelemetry.flush_interval_ms")
    }

    fn timer_flushed(&self) -> &Counter {
        &self.stats.timer_flushed
    }

    /// One `Export` call with every span waiting, under the resource's `service.name`.
    fn export(self: Arc<Self>, worker: Rc<WorkerContext>, spans: Vec<otlp::Span>) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(async move {
            let Some((cluster, authority)) = &self.collector else { return };
            self.stats.spans_sent.add(spans.len() as u64);
            let request = otlp::ExportTraceServiceRequest {
                resource_spans: vec![otlp::ResourceSpans {
                    resource: Some(otlp::Resource {
                        attributes: vec![otlp::KeyValue::string("service.name", &self.service_name)],
                    }),
                    scope_spans: vec![otlp::ScopeSpans { spans }],
                }],
            };
            let frame = crate::http::grpc::frame(0, &request.encode_to_vec());
            let request = AsyncRequest {
                cluster,
                authority,
                method: http::Method::POST,
                path: EXPORT_PATH,
                headers: HeaderMap::new(),
                body: frame,
                timeout: self.timeout,
                grpc: true,
            };
            let response = async_client::send(&worker, request).await;
            if response.grpc_status() != Some(0) {
                tracing::debug!(?response, "OTLP trace export failed");
            }
        })
    }
}

/// The OTLP messages legate sends (opentelemetry-proto's `trace/v1`, `common/v1`,
/// `resource/v1`, `collector/trace/v1`), with the fields it fills.
pub mod otlp {
    pub const SPAN_KIND_SERVER: i32 = 2;
    pub const SPAN_KIND_CLIENT: i32 = 3;
    pub const STATUS_CODE_ERROR: i32 = 2;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_spans: Vec<ResourceSpans>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceSpans {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_spans: Vec<ScopeSpans>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeSpans {
        #[prost(message, repeated, tag = "2")]
        pub spans: Vec<Span>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        #[prost(string, tag = "3")]
        pub trace_state: String,
        #[prost(bytes = "vec", tag = "4")]
        pub parent_span_id: Vec<u8>,
        #[prost(string, tag = "5")]
        pub name: String,
        #[prost(int32, tag = "6")]
        pub kind: i32,
        #[prost(fixed64, tag = "7")]
        pub start_time_unix_nano: u64,
        #[prost(fixed64, tag = "8")]
        pub end_time_unix_nano: u64,
        #[prost(message, repeated, tag = "9")]
        pub attributes: Vec<KeyValue>,
        #[prost(message, optional, tag = "15")]
        pub status: Option<Status>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(int32, tag = "3")]
        pub code: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }

    impl ExportTraceServiceRequest {
        /// Reads a request (a collector's side: tests).
        pub fn decode_from(bytes: &[u8]) -> Result<Self, prost::DecodeError> {
            <Self as prost::Message>::decode(bytes)
        }
    }

    impl KeyValue {
        pub fn string(key: &str, value: &str) -> Self {
            KeyValue { key: key.to_string(), value: Some(AnyValue { string_value: value.to_string() }) }
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(string, tag = "1")]
        pub string_value: String,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_read_as_w3c_says() {
        let caller = parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(caller.trace_id_high, 0x4bf92f3577b34da6);
        assert_eq!(caller.trace_id, 0xa3ce929d0e0e4736);
        assert_eq!(caller.parent_id, 0x00f067aa0ba902b7);
        assert!(caller.sampled);
        assert!(!parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap().sampled);
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-011",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
            b"garbage",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
