//! The Zipkin tracer (`envoy.tracers.zipkin`): B3 context in and out of requests, spans as
//! Zipkin's JSON v2, and a reporter per worker that posts them to the collector cluster.
//!
//! A worker keeps its sampled spans until it has `tracing.zipkin.min_flush_spans` (runtime,
//! default 5) or its timer fires (`tracing.zipkin.flush_interval_ms`, default 5 s), then posts
//! them in one request through the collector cluster's pool, as Envoy's reporter does.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use legate_config::trace::ZipkinConfig;
use legate_stats::{Counter, Scope};

use super::reporter::{self, Exporter, FlushRule};
use super::Span;
use crate::http::async_client::{self, AsyncRequest, AsyncResponse};
use crate::http::StreamInfo;
use crate::worker::WorkerContext;

legate_stats::stats! {
    /// `tracing.zipkin.*`.
    pub struct ZipkinStats {
        counter spans_sent,
        counter timer_flushed,
        counter reports_skipped_no_cluster,
        counter reports_sent,
        counter reports_dropped,
        counter reports_failed,
    }
}

static X_B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
static X_B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
static X_B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
static X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
static B3: HeaderName = HeaderName::from_static("b3");

/// One connection manager's Zipkin tracer (its config; the spans wait per worker).
pub struct Driver {
    collector_cluster: String,
    collector_endpoint: String,
    collector_hostname: String,
    trace_id_128bit: bool,
    shared_span_context: bool,
    egress: bool,
    stats: ZipkinStats,
}

/// A caller's context, from B3 headers.
struct Incoming {
    trace_id_high: Option<u64>,
    trace_id: u64,
    span_id: u64,
    parent_id: Option<u64>,
}

impl Driver {
    pub fn new(config: &ZipkinConfig, egress: bool, root: &Scope) -> Self {
        Driver {
            collector_cluster: config.collector_cluster.clone(),
            collector_endpoint: config.collector_endpoint.clone(),
            collector_hostname: config.collector_hostname().to_string(),
            trace_id_128bit: config.trace_id_128bit,
            shared_span_context: config.shared_span_context(),
            egress,
            stats: ZipkinStats::new(&root.scope("tracing.zipkin")),
        }
    }

    /// The request's span: a new trace, or the caller's continued (B3 headers). `None` when
    /// the caller's context does not parse (Envoy's null span: nothing is traced or passed on).
    pub(super) fn start_span(
        &self,
        headers: &HeaderMap,
        authority: &str,
        traced: bool,
        info: &StreamInfo,
    ) -> Option<Box<Span>> {
        let (incoming, sampled) = extract(headers).ok()?;
        let sampled = sampled.unwrap_or(traced);
        let client = self.egress;
        let mut span = Box::new(Span {
            trace_id_high: None,
            trace_id: 0,
            id: 0,
            parent_id: None,
            sampled,
            client,
            shared: false,
            name: authority.to_string(),
            trace_state: None,
            start: info.start_time(),
            tags: Vec::new(),
        });
        match incoming {
            None => {
                span.trace_id = fastrand::u64(..);
                span.id = span.trace_id;
                span.trace_id_high = self.trace_id_128bit.then(|| fastrand::u64(..));
            }
            Some(caller) => {
                span.trace_id = caller.trace_id;
                span.trace_id_high = caller.trace_id_high;
                if client || !self.shared_span_context {
                    span.id = fastrand::u64(..);
                    span.parent_id = Some(caller.span_id);
                } else {
                    span.id = caller.span_id;
                    span.parent_id = caller.parent_id;
                }
            }
        }
        // Envoy's JSON v2 marks every finished server span shared under shared_span_context.
        span.shared = !client && self.shared_span_context;
        Some(span)
    }

    /// Passes the span's context on to the upstream (Envoy's `injectContext`).
    pub(super) fn inject(&self, span: &Span, headers: &mut HeaderMap) {
        let trace_id = match span.trace_id_high {
            Some(high) => format!("{high:016x}{:016x}", span.trace_id),
            None => format!("{:016x}", span.trace_id),
        };
        let hex = |id: u64| HeaderValue::from_str(&format!("{id:016x}")).ok();
        if let Ok(v) = HeaderValue::from_str(&trace_id) {
            headers.insert(X_B3_TRACE_ID.clone(), v);
        }
        if let Some(v) = hex(span.id) {
            headers.insert(X_B3_SPAN_ID.clone(), v);
        }
        if let Some(v) = span.parent_id.and_then(hex) {
            headers.insert(X_B3_PARENT_SPAN_ID.clone(), v);
        }
        headers.insert(X_B3_SAMPLED.clone(), HeaderValue::from_static(if span.sampled { "1" } else { "0" }));
    }

    /// A finished, sampled span: kept by this worker until the next report.
    pub(super) fn report(self: &Arc<Self>, span: Span, info: &StreamInfo, worker: &Rc<WorkerContext>) {
        let json = self.to_json(&span, info, &worker.server.local_cluster_name);
        reporter::buffer(self, worker, json);
    }

    /// Zipkin's JSON v2 for one span.
    fn to_json(&self, span: &Span, info: &StreamInfo, service_name: &str) -> String {
        use serde_json::{json, Map, Value};
        let micros = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        let trace_id = match span.trace_id_high {
            Some(high) => format!("{high:016x}{:016x}", span.trace_id),
            None => format!("{:016x}", span.trace_id),
        };
        let local = info.downstream_local_address;
        let mut endpoint = Map::new();
        endpoint.insert("serviceName".into(), Value::from(service_name));
        let ip_field = if local.is_ipv4() { "ipv4" } else { "ipv6" };
        endpoint.insert(ip_field.into(), Value::from(local.ip().to_string()));
        endpoint.insert("port".into(), Value::from(local.port()));
        let tags: Map<String, Value> =
            span.tags.iter().map(|(name, value)| (name.to_string(), Value::from(value.as_str()))).collect();
        let mut out = Map::new();
        out.insert("traceId".into(), Value::from(trace_id));
        if let Some(parent) = span.parent_id {
            out.insert("parentId".into(), Value::from(format!("{parent:016x}")));
        }
        out.insert("id".into(), Value::from(format!("{:016x}", span.id)));
        out.insert("kind".into(), Value::from(if span.client { "CLIENT" } else { "SERVER" }));
        if !span.name.is_empty() {
            out.insert("name".into(), Value::from(span.name.as_str()));
        }
        out.insert("timestamp".into(), Value::from(micros(span.start)));
        let duration = info.end.unwrap_or_else(|| info.elapsed());
        out.insert("duration".into(), Value::from(duration.as_micros() as u64));
        out.insert("localEndpoint".into(), Value::Object(endpoint));
        out.insert("tags".into(), Value::Object(tags));
        if span.shared {
            out.insert("shared".into(), json!(true));
        }
        Value::Object(out).to_string()
    }
}

/// The caller's context and sampling flag from the single `b3` header, else the `x-b3-*`
/// ones. `Err` for a context that does not parse.
fn extract(headers: &HeaderMap) -> Result<(Option<Incoming>, Option<bool>), ()> {
    let text = |name: &HeaderName| headers.get(name).map(|v| v.to_str().map_err(|_| ())).transpose();
    if let Some(b3) = text(&B3)? {
        let mut parts = b3.split('-');
        let first = parts.next().unwrap_or_default();
        let Some(span) = parts.next() else {
            // Only a sampling state: `0`, `1` or `d` (debug).
            return Ok((None, sampled_flag(first)));
        };
        let (trace_id_high, trace_id) = trace_id(first)?;
        let span_id = parse_span_id(span)?;
        let sampled = parts.next().and_then(sampled_flag);
        let parent_id = parts.next().map(parse_span_id).transpose()?;
        return Ok((Some(Incoming { trace_id_high, trace_id, span_id, parent_id }), sampled));
    }
    let sampled = text(&X_B3_SAMPLED)?.map(|s| s == "1" || s == "true");
    let (Some(trace), Some(span)) = (text(&X_B3_TRACE_ID)?, text(&X_B3_SPAN_ID)?) else {
        if headers.contains_key(&X_B3_TRACE_ID) || headers.contains_key(&X_B3_SPAN_ID) {
            return Err(());
        }
        return Ok((None, sampled));
    };
    let (trace_id_high, trace_id) = trace_id(trace)?;
    let span_id = parse_span_id(span)?;
    let parent_id = text(&X_B3_PARENT_SPAN_ID)?.map(parse_span_id).transpose()?;
    Ok((Some(Incoming { trace_id_high, trace_id, span_id, parent_id }), sampled))
}

fn sampled_flag(s: &str) -> Option<bool> {
    match s {
        "1" | "d" => Some(true),
        "0" => Some(false),
        _ => None,
    }
}

fn parse_span_id(s: &str) -> Result<u64, ()> {
    if s.len() != 16 {
        return Err(());
    }
    u64::from_str_radix(s, 16).map_err(|_| ())
}

/// A 64-bit (16 hex digits) or 128-bit (32) trace id: its high half, if any, and its low half.
fn trace_id(s: &str) -> Result<(Option<u64>, u64), ()> {
    match s.len() {
        16 => Ok((None, parse_span_id(s)?)),
        32 => {
            let (high, low) = s.split_at(16);
            Ok((Some(parse_span_id(high)?), parse_span_id(low)?))
        }
        _ => Err(()),
    }
}

impl Exporter for Driver {
    type Item = String;

    fn flush_rule(&self) -> FlushRule {
        FlushRule::from_runtime("tracing.zipkin.min_flush_spans", "tracing.zipkin.flush_interval_ms")
    }

    fn timer_flushed(&self) -> &Counter {
        &self.stats.timer_flushed
    }

    /// One report: the spans as a JSON list. A 202 is `reports_sent`, any other answer
    /// (legate's own 503 or 504 too) `reports_dropped`, a broken exchange `reports_failed`.
    fn export(self: Arc<Self>, worker: Rc<WorkerContext>, spans: Vec<String>) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(async move {
            let stats = &self.stats;
            let count = spans.len() as u64;
            let body = format!("[{}]", spans.join(","));
            let mut headers = HeaderMap::new();
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            let request = AsyncRequest {
                cluster: &self.collector_cluster,
                authority: &self.collector_hostname,
                method: http::Method::POST,
                path: &self.collector_endpoint,
                headers,
                body: Bytes::from(body),
                timeout: Duration::from_millis(crate::runtime::integer("tracing.zipkin.request_timeout", 5000).max(1)),
                grpc: false,
            };
            // Counted as they leave the buffer, sent or not (Envoy's `flushSpans`).
            stats.spans_sent.add(count);
            match async_client::send(&worker, request).await {
                AsyncResponse::NoCluster => stats.reports_skipped_no_cluster.inc(),
                AsyncResponse::Failed => stats.reports_failed.inc(),
                answer if answer.status() == Some(http::StatusCode::ACCEPTED) => stats.reports_sent.inc(),
                _ => stats.reports_dropped.inc(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn b3_context_is_read_from_either_form() {
        let (caller, sampled) = extract(&headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-parentspanid", "0020000000000001"),
            ("x-b3-sampled", "1"),
        ]))
        .unwrap();
        let caller = caller.unwrap();
        assert_eq!(caller.trace_id_high, Some(0x463ac35c9f6413ad));
        assert_eq!(caller.trace_id, 0x48485a3953bb6124);
        assert_eq!(caller.span_id, 0xa2fb4a1d1a96d312);
        assert_eq!(caller.parent_id, Some(0x0020000000000001));
        assert_eq!(sampled, Some(true));

        let (caller, sampled) = extract(&headers(&[("b3", "80f198ee56343ba8-e457b5a2e4d86bd1-0")])).unwrap();
        assert_eq!(caller.unwrap().span_id, 0xe457b5a2e4d86bd1);
        assert_eq!(sampled, Some(false));
        assert!(matches!(extract(&headers(&[("b3", "1")])), Ok((None, Some(true)))));
        assert!(extract(&headers(&[("x-b3-traceid", "80f198ee56343ba8")])).is_err(), "no span id");
        assert!(extract(&headers(&[("x-b3-traceid", "xyz"), ("x-b3-spanid", "e457b5a2e4d86bd1")])).is_err());
        assert!(matches!(extract(&HeaderMap::new()), Ok((None, None))));
    }
}
