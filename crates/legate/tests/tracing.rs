//! Tracing with Zipkin (`tracing.provider: envoy.tracers.zipkin`): the decision kept in
//! `x-request-id`, B3 context passed upstream, and the spans posted as Zipkin JSON v2 to the
//! collector cluster, as Envoy does.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use legate_testing::config::{bootstrap, http_listener, route_config, router_filter, static_cluster, virtual_host};
use legate_testing::{
    connect, eventually, json, legate_bin, run_bounded, HttpUpstream, Legate, UpstreamAction, UpstreamRequest, Value,
    EVENTUALLY,
};

/// An HTTP/1.1 server answering `status` to each request, recording them.
fn recording_server(status: u16) -> HttpUpstream {
    HttpUpstream::http1(move |_| UpstreamAction::status(status, "ok"))
}

fn zipkin_tracing(extra: Value) -> Value {
    let mut tracing = json!({
        "provider": {
            "name": "envoy.tracers.zipkin",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
                "collector_cluster": "zipkin",
                "collector_endpoint": "/api/v2/spans",
                "collector_endpoint_version": "HTTP_JSON",
            },
        },
    });
    if let (Some(t), Some(extra)) = (tracing.as_object_mut(), extra.as_object()) {
        t.extend(extra.clone());
    }
    tracing
}

/// A listener tracing every request, its route decorated `checkout`; spans reported one by
/// one (`tracing.zipkin.min_flush_spans: 1`).
fn config(app: SocketAddr, collector: SocketAddr, tracing: Value) -> String {
    let route = json!({
        "match": {"prefix": "/"},
        "route": {"cluster": "app"},
        "decorator": {"operation": "checkout"},
    });
    let routes = route_config(vec![virtual_host("all", &["*"], vec![route])]);
    let mut config = bootstrap(
        vec![http_listener("ingress", routes, vec![router_filter()], json!({ "tracing": tracing }))],
        vec![static_cluster("app", &[app]), static_cluster("zipkin", &[collector])],
    );
    config["layered_runtime"] =
        json!({"layers": [{"name": "static", "static_layer": {"tracing.zipkin.min_flush_spans": 1}}]});
    config.to_string()
}

fn get(px: &Legate, extra_headers: &str) -> String {
    let mut client = connect(px.listener_addr("ingress"));
    let request =
        format!("GET /orders?id=7 HTTP/1.1\r\nHost: shop.example\r\n{extra_headers}Connection: close\r\n\r\n");
    client.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    client.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The spans of the reports the collector received, in order.
fn spans(reports: &[UpstreamRequest]) -> Vec<Value> {
    reports
        .iter()
        .flat_map(|r| {
            let body = r.body_text();
            serde_json::from_str::<Vec<Value>>(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
        })
        .collect()
}

#[test]
fn a_sampled_request_is_traced_upstream_and_reported_to_zipkin() {
    let app = recording_server(200);
    let collector = recording_server(202);
    let px = Legate::builder(legate_bin!())
        .config(&config(app.addr(), collector.addr(), zipkin_tracing(json!({}))))
        .arg("--service-cluster")
        .arg("front-proxy")
        .start();
    let response = get(&px, "User-Agent: curl/8\r\n");
    // Ingress: the route's decorator goes back to the caller.
    assert!(response.to_ascii_lowercase().contains("x-envoy-decorator-operation: checkout"), "{response}");

    let upstream = app.requests()[0].clone();
    let trace_id = upstream.header("x-b3-traceid").expect("x-b3-traceid upstream").to_string();
    let span_id = upstream.header("x-b3-spanid").expect("x-b3-spanid upstream").to_string();
    assert_eq!(trace_id.len(), 16, "{upstream:?}");
    assert_eq!(trace_id, span_id, "a new trace's first span has the trace's id");
    assert_eq!(upstream.header("x-b3-sampled"), Some("1"), "{upstream:?}");
    assert_eq!(upstream.header("x-b3-parentspanid"), None, "{upstream:?}");
    // The decision travels in the request id: its version nibble says sampled.
    let request_id = upstream.header("x-request-id").unwrap();
    assert_eq!(request_id.as_bytes()[14], b'9', "{request_id}");

    eventually("the collector got a report", EVENTUALLY, || collector.requests().len(), |n| *n >= 1);
    let report = collector.requests()[0].clone();
    assert_eq!((report.method.as_str(), report.path.as_str()), ("POST", "/api/v2/spans"));
    assert_eq!(report.header("host"), Some("zipkin"));
    assert_eq!(report.header("content-type"), Some("application/json"));
    let spans = spans(&collector.requests());
    assert_eq!(spans.len(), 1, "{spans:?}");
    let span = &spans[0];
    assert_eq!(span["traceId"], trace_id.as_str());
    assert_eq!(span["id"], span_id.as_str());
    assert_eq!(span["kind"], "SERVER");
    assert_eq!(span["name"], "checkout");
    assert_eq!(span["shared"], true);
    assert!(span.get("parentId").is_none(), "{span}");
    assert!(span["timestamp"].as_u64().unwrap() > 1_600_000_000_000_000, "{span}");
    assert!(span["duration"].as_u64().is_some(), "{span}");
    assert_eq!(span["localEndpoint"]["serviceName"], "front-proxy");
    let tags = &span["tags"];
    assert_eq!(tags["http.method"], "GET");
    assert_eq!(tags["http.url"], "http://shop.example/orders?id=7");
    assert_eq!(tags["http.status_code"], "200");
    assert_eq!(tags["http.protocol"], "HTTP/1.1");
    assert_eq!(tags["upstream_cluster"], "app");
    assert_eq!(tags["component"], "proxy");
    assert_eq!(tags["response_flags"], "-");
    assert_eq!(tags["user_agent"], "curl/8");
    assert_eq!(tags["guid:x-request-id"], request_id);
    assert!(tags.get("error").is_none(), "{tags}");
    px.wait_stat("tracing.zipkin.reports_sent", 1);
    assert_eq!(px.stat("tracing.zipkin.spans_sent"), Some(1));
    assert_eq!(px.stat("http.ingress.tracing.random_sampling"), Some(1));
}

/// A caller's B3 context is continued: the server span shares the caller's span id (Envoy's
/// `shared_span_context`), and a name the caller asks for wins over the decorator.
#[test]
fn a_callers_trace_is_continued() {
    let app = recording_server(200);
    let collector = recording_server(202);
    let px = Legate::start(legate_bin!(), &config(app.addr(), collector.addr(), zipkin_tracing(json!({}))));
    get(
        &px,
        "x-b3-traceid: 463ac35c9f6413ad48485a3953bb6124\r\nx-b3-spanid: a2fb4a1d1a96d312\r\n\
         x-b3-parentspanid: 0020000000000001\r\nx-b3-sampled: 1\r\nx-envoy-decorator-operation: asked\r\n",
    );
    let upstream = app.requests()[0].clone();
    assert_eq!(upstream.header("x-b3-traceid"), Some("463ac35c9f6413ad48485a3953bb6124"), "{upstream:?}");
    assert_eq!(upstream.header("x-b3-spanid"), Some("a2fb4a1d1a96d312"), "{upstream:?}");
    assert_eq!(upstream.header("x-b3-parentspanid"), Some("0020000000000001"), "{upstream:?}");
    assert_eq!(upstream.header("x-envoy-decorator-operation"), None, "ingress takes it off: {upstream:?}");
    eventually("the collector got a report", EVENTUALLY, || collector.requests().len(), |n| *n >= 1);
    let spans = spans(&collector.requests());
    assert_eq!(spans[0]["traceId"], "463ac35c9f6413ad48485a3953bb6124");
    assert_eq!(spans[0]["id"], "a2fb4a1d1a96d312");
    assert_eq!(spans[0]["parentId"], "0020000000000001");
    assert_eq!(spans[0]["name"], "asked");
}

/// With a random sampling rate of 0, requests are not traced (counted, context passed on as
/// not sampled, nothing reported) unless forced: `x-envoy-force-trace` from an internal
/// caller is traced and its response carries its request id.
#[test]
fn unsampled_requests_are_not_reported_and_forced_ones_are() {
    let app = recording_server(200);
    let collector = recording_server(202);
    let tracing = zipkin_tracing(json!({"random_sampling": {"value": 0}}));
    let px = Legate::start(legate_bin!(), &config(app.addr(), collector.addr(), tracing));
    get(&px, "");
    let first = app.requests()[0].clone();
    assert_eq!(first.header("x-b3-sampled"), Some("0"), "{first:?}");
    assert_eq!(first.header("x-request-id").unwrap().as_bytes()[14], b'4', "{first:?}");
    assert_eq!(px.stat("http.ingress.tracing.not_traceable"), Some(1));

    let response = get(&px, "x-envoy-force-trace: true\r\n");
    let forced = app.requests()[1].clone();
    let request_id = forced.header("x-request-id").unwrap().to_string();
    assert_eq!(request_id.as_bytes()[14], b'a', "{forced:?}");
    assert!(response.contains(&request_id), "the forced trace's id comes back: {response}");
    px.wait_stat("tracing.zipkin.reports_sent", 1);
    assert_eq!(px.stat("http.ingress.tracing.service_forced"), Some(1));
    let spans = spans(&collector.requests());
    assert_eq!(spans.len(), 1, "only the forced request: {spans:?}");
    assert_eq!(spans[0]["tags"]["guid:x-request-id"], request_id.as_str());
}

/// A collector answering anything but 202 counts the report as dropped; a collector cluster
/// that the worker does not know skips it.
#[test]
fn reports_the_collector_refuses_are_dropped() {
    let app = recording_server(200);
    let collector = recording_server(503);
    let px = Legate::start(legate_bin!(), &config(app.addr(), collector.addr(), zipkin_tracing(json!({}))));
    get(&px, "");
    px.wait_stat("tracing.zipkin.reports_dropped", 1);
    assert_eq!(px.stat("tracing.zipkin.reports_sent"), Some(0));
}

fn validate(config: &str) -> String {
    let out = run_bounded(legate_bin!(), &["--mode", "validate", "--config-yaml", config], Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1), "expected a refusal:\n{}", out.stderr);
    out.stderr
}

#[test]
fn tracing_settings_legate_cannot_honour_are_refused_with_their_path() {
    let (app, collector): (SocketAddr, SocketAddr) = ("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
    let at = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.tracing";

    let mut v1 = zipkin_tracing(json!({}));
    v1["provider"]["typed_config"].as_object_mut().unwrap().remove("collector_endpoint_version");
    let err = validate(&config(app, collector, v1));
    assert!(
        err.contains(&format!(
            "{at}.provider.typed_config.collector_endpoint_version: hidden_envoy_deprecated_HTTP_JSON_V1"
        )),
        "{err}"
    );

    let mut unknown = zipkin_tracing(json!({}));
    unknown["provider"]["typed_config"]["collector_cluster"] = json!("nowhere");
    let err = validate(&config(app, collector, unknown));
    assert!(err.contains("envoy.tracers.zipkin: unknown cluster 'nowhere'"), "{err}");

    let err = validate(&config(app, collector, zipkin_tracing(json!({"verbose": true}))));
    assert!(err.contains(&format!("{at}.verbose")), "{err}");

    let mut datadog = zipkin_tracing(json!({}));
    datadog["provider"] = json!({"name": "envoy.tracers.datadog", "typed_config": {
        "@type": "type.googleapis.com/envoy.config.trace.v3.DatadogConfig", "collector_cluster": "zipkin"}});
    let err = validate(&config(app, collector, datadog));
    assert!(err.contains("legate does not implement this tracer"), "{err}");

    let mut otel = zipkin_tracing(json!({}));
    otel["provider"] = json!({"name": "envoy.tracers.opentelemetry", "typed_config": {
        "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
        "grpc_service": {"envoy_grpc": {"cluster_name": "otel-collector"}}}});
    let err = validate(&config(app, collector, otel));
    assert!(err.contains("Unknown gRPC client cluster 'otel-collector'"), "{err}");
}

/// OpenTelemetry (`envoy.tracers.opentelemetry` over `envoy_grpc`): the caller's W3C context
/// is continued in a span of its own, passed upstream in `traceparent`, and exported to the
/// collector as an OTLP `Export` call under the configured `service.name`.
#[test]
fn opentelemetry_spans_are_exported_over_otlp_grpc() {
    use legate_proxy::trace::opentelemetry::otlp::ExportTraceServiceRequest;

    let app = recording_server(200);
    let collector = HttpUpstream::http2(|_| {
        UpstreamAction::ok("").with_header("content-type", "application/grpc").with_header("grpc-status", "0")
    });
    let tracing = json!({
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                "grpc_service": {"envoy_grpc": {"cluster_name": "zipkin"}, "timeout": "5s"},
                "service_name": "envoy-1",
            },
        },
    });
    let mut config: Value = serde_json::from_str(&config(app.addr(), collector.addr(), tracing)).unwrap();
    config["layered_runtime"]["layers"][0]["static_layer"] = json!({"tracing.opentelemetry.min_flush_spans": 1});
    let px = Legate::start(legate_bin!(), &config.to_string());
    get(
        &px,
        "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\ntracestate: vendor=1\r\n\
         Content-Type: text/plain\r\n",
    );
    let upstream = app.requests()[0].clone();
    let parent = upstream.header("traceparent").expect("traceparent upstream").to_string();
    let parts: Vec<&str> = parent.split('-').collect();
    assert_eq!(parts.len(), 4, "{parent}");
    assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736", "the caller's trace");
    assert_ne!(parts[2], "00f067aa0ba902b7", "a span of its own");
    assert_eq!(parts[3], "01");
    assert_eq!(upstream.header("tracestate"), Some("vendor=1"));

    eventually("the collector got an export", EVENTUALLY, || collector.requests().len(), |n| *n >= 1);
    let export = collector.requests()[0].clone();
    assert_eq!(export.method, "POST");
    assert_eq!(export.path, "/opentelemetry.proto.collector.trace.v1.TraceService/Export");
    assert_eq!(export.header("content-type"), Some("application/grpc"));
    let message = export.body.get(5..).expect("a gRPC frame");
    let request = ExportTraceServiceRequest::decode_from(message).unwrap();
    let resource = request.resource_spans[0].resource.as_ref().unwrap();
    assert_eq!(resource.attributes[0].key, "service.name");
    assert_eq!(resource.attributes[0].value.as_ref().unwrap().string_value, "envoy-1");
    let span = &request.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(hex(&span.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex(&span.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(hex(&span.span_id), parts[2]);
    assert_eq!(span.name, "checkout");
    assert_eq!(span.kind, 2, "SERVER");
    assert_eq!(span.trace_state, "vendor=1");
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
    let attribute = |key: &str| {
        span.attributes.iter().find(|a| a.key == key).and_then(|a| a.value.as_ref()).map(|v| v.string_value.clone())
    };
    assert_eq!(attribute("http.status_code").as_deref(), Some("200"));
    assert_eq!(attribute("upstream_cluster").as_deref(), Some("app"));
    assert!(span.status.is_none(), "not an error");
    px.wait_stat("tracing.opentelemetry.spans_sent", 1);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Tracing without a tracer (no provider here or in the bootstrap): requests are still decided
/// and counted, and the decorator's header is handled, as with Envoy's null tracer.
#[test]
fn tracing_without_a_tracer_still_decides_and_decorates() {
    let app = recording_server(200);
    let collector = recording_server(202);
    let px = Legate::start(legate_bin!(), &config(app.addr(), collector.addr(), json!({})));
    let response = get(&px, "");
    assert!(response.to_ascii_lowercase().contains("x-envoy-decorator-operation: checkout"), "{response}");
    // A caller's own name is taken off (and not answered with the decorator's).
    let response = get(&px, "x-envoy-decorator-operation: asked\r\n");
    assert!(!response.to_ascii_lowercase().contains("x-envoy-decorator-operation"), "{response}");
    let upstream = app.requests()[1].clone();
    assert_eq!(upstream.header("x-envoy-decorator-operation"), None, "{upstream:?}");
    assert_eq!(upstream.header("x-b3-traceid"), None, "no tracer, no context: {upstream:?}");
    assert_eq!(upstream.header("x-request-id").unwrap().as_bytes()[14], b'9');
    px.wait_stat("http.ingress.tracing.random_sampling", 2);
}
