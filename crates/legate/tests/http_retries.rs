//! Router retries (Envoy docs: "Retry semantics", proto `envoy.config.route.v3.RetryPolicy`,
//! "HTTP header manipulation": `x-envoy-retry-on`, `x-envoy-max-retries`): which failures are
//! retried, how often, what the client gets when retries run out, and that a retry carries
//! the same request.

use std::time::Duration;

use legate_testing::config::{cluster_config, http_bootstrap, route_action};
use legate_testing::{json, legate_bin, HttpProxy, HttpUpstream, PatternWriter, UpstreamAction, Value};

/// legate in front of `upstream` with `retry_policy` on its one route (none when null), and
/// an access log of `%RESPONSE_CODE% %RESPONSE_FLAGS%`.
fn start(upstream: &HttpUpstream, retry_policy: Value) -> HttpProxy {
    let mut config = http_bootstrap(&[upstream.addr()]);
    if !retry_policy.is_null() {
        route_action(&mut config)["retry_policy"] = retry_policy;
    }
    HttpProxy::start(legate_bin!(), config)
}

#[test]
fn a_503_is_retried_on_5xx_and_the_retry_answers() {
    let upstream = HttpUpstream::http1(|r| match r.index {
        0 => UpstreamAction::status(503, "busy"),
        _ => UpstreamAction::ok("second"),
    });
    let px = start(&upstream, json!({ "retry_on": "5xx", "num_retries": 2 }));

    let r = px.client().get("/");

    assert_eq!((r.status, r.body.as_str()), (200, "second"), "{r:?}");
    assert_eq!(upstream.request_count(), 2);
    assert_eq!(px.logged(1), "200 -");
    let stats = &px.legate;
    stats.wait_stat("cluster.backend.upstream_rq_retry", 1);
    stats.wait_stat("cluster.backend.upstream_rq_retry_success", 1);
    // The retried 503 is counted under `retry.`; the plain counters hold the answer.
    stats.wait_stat("cluster.backend.retry.upstream_rq_503", 1);
    stats.wait_stat("cluster.backend.retry.upstream_rq_5xx", 1);
    stats.wait_stat("cluster.backend.retry.upstream_rq_completed", 1);
    stats.wait_stat("cluster.backend.upstream_rq_200", 1);
    stats.wait_stat("cluster.backend.upstream_rq_completed", 1);
    assert_eq!(stats.stat("cluster.backend.upstream_rq_503").unwrap_or(0), 0);
    assert_eq!(stats.stat("cluster.backend.upstream_rq_5xx"), Some(0));
    stats.wait_stat("http.ingress.downstream_rq_2xx", 1);
}

#[test]
fn a_reset_is_retried_on_reset() {
    let upstream = HttpUpstream::http1(|r| match r.index {
        0 => UpstreamAction::Reset,
        _ => UpstreamAction::ok("after reset"),
    });
    let px = start(&upstream, json!({ "retry_on": "reset", "num_retries": 1 }));

    let r = px.client().get("/");

    assert_eq!((r.status, r.body.as_str()), (200, "after reset"), "{r:?}");
    assert_eq!(upstream.request_count(), 2);
    assert_eq!(upstream.connections(), 2, "the reset connection is not reused");
    px.legate.wait_stat("cluster.backend.upstream_rq_retry", 1);
    px.legate.wait_stat("cluster.backend.upstream_rq_retry_success", 1);
    // A reset that is retried is charged to no code (Envoy's `maybeRetryReset`).
    px.legate.wait_stat("cluster.backend.upstream_rq_200", 1);
    assert_eq!(px.legate.stat("cluster.backend.upstream_rq_5xx"), Some(0));
    assert_eq!(px.legate.stat("cluster.backend.upstream_rq_completed"), Some(1));
}

#[test]
fn exhausted_retries_pass_the_last_response_through_with_urx() {
    let upstream = HttpUpstream::http1(|r| UpstreamAction::status(503, format!("busy {}", r.index)));
    let px = start(&upstream, json!({ "retry_on": "5xx", "num_retries": 2 }));

    let r = px.client().get("/");

    assert_eq!((r.status, r.body.as_str()), (503, "busy 2"), "the last attempt's response: {r:?}");
    assert_eq!(upstream.request_count(), 3, "one try and two retries");
    assert_eq!(px.logged(1), "503 URX");
    px.legate.wait_stat("cluster.backend.upstream_rq_retry", 2);
    px.legate.wait_stat("cluster.backend.upstream_rq_retry_limit_exceeded", 1);
    px.legate.wait_stat("cluster.backend.retry.upstream_rq_503", 2);
    px.legate.wait_stat("cluster.backend.upstream_rq_503", 1);
    assert_eq!(px.legate.stat("cluster.backend.upstream_rq_completed"), Some(1));
    assert_eq!(px.legate.stat("cluster.backend.upstream_rq_retry_success"), Some(0));
}

/// A retry that finds no healthy host gets Envoy's "no healthy upstream" (`UH`), not the
/// previous try's failure: here the one host's reset ejects it, and panic is disabled.
#[test]
fn a_retry_that_finds_no_healthy_host_answers_no_healthy_upstream() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::Reset);
    let mut config = http_bootstrap(&[upstream.addr()]);
    route_action(&mut config)["retry_policy"] = json!({ "retry_on": "reset", "num_retries": 1 });
    let cluster = cluster_config(&mut config, 0);
    cluster["outlier_detection"] = json!({ "consecutive_5xx": 1, "max_ejection_percent": 100 });
    cluster["common_lb_config"] = json!({ "healthy_panic_threshold": { "value": 0 } });
    let px = HttpProxy::start(legate_bin!(), config);

    let r = px.client().get("/");

    assert_eq!((r.status, r.body.as_str()), (503, "no healthy upstream"), "{r:?}");
    assert_eq!(upstream.request_count(), 1);
    assert_eq!(px.logged(1), "503 UH");
    let stats = &px.legate;
    stats.wait_stat("cluster.backend.upstream_rq_retry", 1);
    stats.wait_stat("cluster.backend.outlier_detection.ejections_enforced_total", 1);
    stats.wait_stat("cluster.backend.upstream_cx_none_healthy", 1);
    stats.wait_stat("cluster.backend.upstream_rq_503", 1);
}

#[test]
fn x_envoy_retry_on_and_max_retries_request_headers_are_honoured() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::status(503, "busy"));
    let px = start(&upstream, Value::Null);
    let mut c = px.client();

    let plain = c.get("/");
    assert_eq!(plain.status, 503);
    assert_eq!(upstream.request_count(), 1, "no retry policy, no retry");

    let r = c.send("GET", "/", &[("x-envoy-retry-on", "5xx"), ("x-envoy-max-retries", "3")], b"");

    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(upstream.request_count(), 1 + 4, "x-envoy-max-retries: 3 means four tries");
    px.legate.wait_stat("cluster.backend.upstream_rq_retry", 3);
    assert_eq!(px.logged(2), "503 URX");
}

/// `x-envoy-retry-grpc-on` adds gRPC retry conditions: a trailers-only `grpc-status: 14`
/// (unavailable) is retried.
#[test]
fn x_envoy_retry_grpc_on_retries_the_listed_grpc_statuses() {
    let upstream = HttpUpstream::http1(|r| match r.index {
        0 => UpstreamAction::Respond {
            status: 200,
            headers: vec![("content-type".into(), "application/grpc".into()), ("grpc-status".into(), "14".into())],
            body: bytes::Bytes::new(),
        },
        _ => UpstreamAction::ok("second"),
    });
    let px = start(&upstream, Value::Null);

    let r = px.client().send("POST", "/svc/Method", &[("x-envoy-retry-grpc-on", "unavailable")], b"");

    assert_eq!((r.status, r.body.as_str()), (200, "second"), "{r:?}");
    assert_eq!(upstream.request_count(), 2);
    px.legate.wait_stat("cluster.backend.upstream_rq_retry", 1);
    assert_eq!(upstream.last_request().header("x-envoy-retry-grpc-on"), None, "consumed by the router");
}

#[test]
fn retriable_status_codes_retry_only_the_listed_codes() {
    let upstream = HttpUpstream::http1(|r| match (r.path.as_str(), r.index) {
        ("/teapot", 0) => UpstreamAction::status(418, "teapot"),
        ("/teapot", _) => UpstreamAction::ok("brewed"),
        _ => UpstreamAction::status(500, "not listed"),
    });
    let px = start(
        &upstream,
        json!({ "retry_on": "retriable-status-codes", "retriable_status_codes": [418], "num_retries": 1 }),
    );
    let mut c = px.client();

    let teapot = c.get("/teapot");
    assert_eq!((teapot.status, teapot.body.as_str()), (200, "brewed"), "{teapot:?}");
    assert_eq!(upstream.request_count(), 2);

    let other = c.get("/other");
    assert_eq!((other.status, other.body.as_str()), (500, "not listed"), "{other:?}");
    assert_eq!(upstream.request_count(), 3, "500 is not in retriable_status_codes");
    px.legate.wait_stat("cluster.backend.upstream_rq_retry", 1);
}

#[test]
fn a_post_body_is_replayed_intact_on_retry() {
    let upstream = HttpUpstream::http1(|r| match r.index {
        0 => UpstreamAction::status(503, "busy"),
        _ => UpstreamAction::ok(format!("got {} bytes", r.body.len())),
    });
    let px = start(&upstream, json!({ "retry_on": "5xx", "num_retries": 1 }));
    let mut body = vec![0u8; 200 * 1024];
    PatternWriter::new(5).fill(&mut body);

    let r = px.client().send("POST", "/submit", &[("content-type", "application/octet-stream")], &body);

    assert_eq!((r.status, r.body.as_str()), (200, "got 204800 bytes"), "{r:?}");
    let seen = upstream.requests();
    assert_eq!(seen.len(), 2);
    for (i, attempt) in seen.iter().enumerate() {
        assert_eq!(attempt.method, "POST");
        assert!(attempt.body_complete, "attempt {i} body ended early");
        assert!(attempt.body == body, "attempt {i}: {} bytes, not the {} sent", attempt.body.len(), body.len());
        assert_eq!(attempt.header("content-type"), Some("application/octet-stream"));
    }
}

/// `per_request_buffer_limit_bytes` (route, else virtual host) bounds what is kept for a
/// retry: a larger body goes through once, and its failure is the answer.
#[test]
fn a_body_past_the_routes_buffer_limit_is_not_retried() {
    let upstream = HttpUpstream::http1(|r| match r.index {
        0 | 1 => UpstreamAction::status(503, "busy"),
        _ => UpstreamAction::ok(format!("got {} bytes", r.body.len())),
    });
    let mut config = http_bootstrap(&[upstream.addr()]);
    route_action(&mut config)["retry_policy"] = json!({ "retry_on": "5xx", "num_retries": 1 });
    let routes = &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["route_config"]["virtual_hosts"][0]["routes"][0];
    routes["per_request_buffer_limit_bytes"] = json!(1024);
    let px = HttpProxy::start(legate_bin!(), config);

    let r = px.client().send("POST", "/submit", &[], &vec![7u8; 64 * 1024]);

    assert_eq!((r.status, r.body.as_str()), (503, "busy"), "{r:?}");
    assert_eq!(upstream.request_count(), 1);
    let r = px.client().send("POST", "/submit", &[], b"small");
    assert_eq!((r.status, r.body.as_str()), (200, "got 5 bytes"), "a small body is retried: {r:?}");
    assert_eq!(upstream.request_count(), 3);
}

/// Retries wait a jittered exponential back-off (uniform below `base_interval` × 2^(n-1)).
/// Three retries with a 0.5 s base wait ~1.75 s in all on average; under 30 ms has a
/// probability of about 1e-5, while retrying without back-off takes a few milliseconds.
#[test]
fn retries_are_spaced_by_the_back_off() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::status(503, "busy"));
    let px =
        start(&upstream, json!({ "retry_on": "5xx", "num_retries": 3, "retry_back_off": { "base_interval": "0.5s" } }));

    let r = px.client().get("/");

    assert_eq!(r.status, 503, "{r:?}");
    let seen = upstream.requests();
    assert_eq!(seen.len(), 4);
    let spread = seen[3].received_at.duration_since(seen[0].received_at);
    assert!(spread >= Duration::from_millis(30), "four tries within {spread:?}: no back-off between retries?");
    px.legate.wait_stat("cluster.backend.upstream_rq_retry_backoff_exponential", 3);
}
