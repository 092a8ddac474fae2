//! Local replies for upstream failures (Envoy docs: "Router", "Circuit breaking", "Access
//! logging" response flags; DESIGN.md §3: "A local reply always carries Envoy's body text and
//! response flag, and every failure increments the stat that an operator would look for").
//! Each test provokes one failure with a real upstream that misbehaves on purpose and checks
//! the status and body the client gets, the flag in the access log and the cluster stat.

use std::time::Duration;

use legate_testing::config::{cluster_config, http_bootstrap, route_action, with_http2};
use legate_testing::{json, legate_bin, BlackholeServer, ClosedPort, HttpProxy, HttpUpstream, UpstreamAction};

const CONNECT_ERROR: &str = "upstream connect error or disconnect/reset before headers. reset reason: ";

#[test]
fn cluster_without_endpoints_is_503_no_healthy_upstream_uh() {
    let px = HttpProxy::start(legate_bin!(), http_bootstrap(&[]));

    let r = px.client().get("/");

    assert_eq!((r.status, r.body.as_str()), (503, "no healthy upstream"), "{r:?}");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(px.logged(1), "503 UH");
    px.legate.wait_stat("cluster.backend.upstream_cx_none_healthy", 1);
    px.legate.wait_stat("http.ingress.downstream_rq_5xx", 1);
    // Envoy's router charges the cluster the 503 it answered for it.
    px.legate.wait_stat("cluster.backend.upstream_rq_503", 1);
    px.legate.wait_stat("cluster.backend.upstream_rq_5xx", 1);
    px.legate.wait_stat("cluster.backend.upstream_rq_completed", 1);
}

/// A local reply to a gRPC request is a gRPC one, as Envoy's: a trailers-only 200 with the
/// `grpc-status` of the HTTP status (503 → 14, unavailable) and the body as `grpc-message`.
#[test]
fn a_grpc_request_gets_a_grpc_local_reply() {
    let px = HttpProxy::start(legate_bin!(), http_bootstrap(&[]));

    let r = px.client().send("POST", "/pkg.Svc/Call", &[("content-type", "application/grpc")], b"");

    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/grpc"), "{r:?}");
    assert_eq!(r.header("grpc-status"), Some("14"), "{r:?}");
    assert_eq!(r.header("grpc-message"), Some("no healthy upstream"), "{r:?}");
    assert_eq!(r.body, "");
    assert_eq!(px.logged(1), "200 UH");
    px.legate.wait_stat("cluster.backend.upstream_rq_503", 1);
}

#[test]
fn connection_refused_is_503_remote_connection_failure_uf() {
    let closed = ClosedPort::new();
    let px = HttpProxy::start(legate_bin!(), http_bootstrap(&[closed.addr()]));

    let r = px.client().get("/");

    assert_eq!(r.status, 503, "{r:?}");
    let expected = format!("{CONNECT_ERROR}remote connection failure");
    assert!(r.body.starts_with(&expected), "body {:?} should start with {expected:?}", r.body);
    assert_eq!(px.logged(1), "503 UF");
    px.legate.wait_stat("cluster.backend.upstream_cx_connect_fail", 1);
    // It waited in the pending queue for that connection (Envoy's `purgePendingStreams`).
    px.legate.wait_stat("cluster.backend.upstream_rq_pending_failure_eject", 1);
    px.legate.wait_stat("cluster.backend.upstream_rq_503", 1);
    px.legate.wait_stat("cluster.backend.upstream_rq_5xx", 1);
    // Envoy's pools count a request once it has a connection: this one never had one.
    assert_eq!(px.legate.stat("cluster.backend.upstream_rq_total"), Some(0));
    assert_eq!(px.legate.stat("cluster.backend.upstream_rq_active"), Some(0));
}

#[test]
fn upstream_reset_before_headers_is_503_connection_termination_uc() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::Reset);
    let px = HttpProxy::start(legate_bin!(), http_bootstrap(&[upstream.addr()]));

    let r = px.client().get("/");

    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.body, format!("{CONNECT_ERROR}connection termination"));
    assert_eq!(px.logged(1), "503 UC");
    assert_eq!(upstream.request_count(), 1);
    px.legate.wait_stat("cluster.backend.upstream_rq_5xx", 1);
    // Envoy's ALL_CLUSTER_TRAFFIC_STATS count a connection the upstream closed under a
    // request; Istio's default stats inclusion list scrapes it.
    px.legate.wait_stat("cluster.backend.upstream_cx_destroy_remote_with_active_rq", 1);
}

/// Over HTTP/2 the request's upstream stream is reset, counted in `upstream_rq_tx_reset`
/// (Envoy counts a local reset of a multiplexed stream; its HTTP/1.1 pool closes the
/// connection and counts none).
#[test]
fn route_timeout_is_504_upstream_request_timeout_ut() {
    for http2 in [false, true] {
        let late = |_: &_| UpstreamAction::delay(Duration::from_secs(3), UpstreamAction::ok("late"));
        let upstream = if http2 { HttpUpstream::http2(late) } else { HttpUpstream::http1(late) };
        let mut config = http_bootstrap(&[upstream.addr()]);
        route_action(&mut config)["timeout"] = json!("0.5s");
        if http2 {
            let cluster = cluster_config(&mut config, 0).take();
            *cluster_config(&mut config, 0) = with_http2(cluster);
        }
        let px = HttpProxy::start(legate_bin!(), config);

        let r = px.client().get("/");

        assert_eq!((r.status, r.body.as_str()), (504, "upstream request timeout"), "{r:?}");
        assert_eq!(px.logged(1), "504 UT");
        px.legate.wait_stat("cluster.backend.upstream_rq_timeout", 1);
        px.legate.wait_stat("cluster.backend.upstream_rq_504", 1);
        if http2 {
            px.legate.wait_stat("cluster.backend.upstream_rq_tx_reset", 1);
            px.legate.wait_stat("cluster.backend.http2.tx_reset", 1);
        } else {
            assert_eq!(px.legate.stat("cluster.backend.upstream_rq_tx_reset"), Some(0));
        }
    }
}

/// `x-envoy-upstream-rq-timeout-alt-response` (from an internal client): the timeout answers
/// a bodiless 204 instead of 504, still `UT`.
#[test]
fn the_alt_response_header_turns_a_route_timeout_into_204() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::delay(Duration::from_secs(3), UpstreamAction::ok("late")));
    let mut config = http_bootstrap(&[upstream.addr()]);
    route_action(&mut config)["timeout"] = json!("0.3s");
    let px = HttpProxy::start(legate_bin!(), config);

    let r = px.client().send("GET", "/", &[("x-envoy-upstream-rq-timeout-alt-response", "")], b"");

    assert_eq!((r.status, r.body.as_str()), (204, ""), "{r:?}");
    assert_eq!(px.logged(1), "204 UT");
    px.legate.wait_stat("cluster.backend.upstream_rq_timeout", 1);
    px.legate.wait_stat("cluster.backend.upstream_rq_204", 1);
    assert_eq!(upstream.last_request().header("x-envoy-upstream-rq-timeout-alt-response"), None);
}

#[test]
fn per_try_timeout_retries_and_the_second_try_answers() {
    let upstream = HttpUpstream::http1(|r| match r.index {
        0 => UpstreamAction::delay(Duration::from_secs(3), UpstreamAction::ok("first, too late")),
        _ => UpstreamAction::ok("second"),
    });
    let mut config = http_bootstrap(&[upstream.addr()]);
    route_action(&mut config)["timeout"] = json!("10s");
    route_action(&mut config)["retry_policy"] =
        json!({ "retry_on": "5xx", "num_retries": 2, "per_try_timeout": "0.3s" });
    let px = HttpProxy::start(legate_bin!(), config);

    let r = px.client().get("/");

    assert_eq!((r.status, r.body.as_str()), (200, "second"), "{r:?}");
    assert_eq!(upstream.request_count(), 2);
    assert_eq!(px.logged(1), "200 -");
    px.legate.wait_stat("cluster.backend.upstream_rq_per_try_timeout", 1);
    px.legate.wait_stat("cluster.backend.upstream_rq_retry", 1);
    px.legate.wait_stat("cluster.backend.upstream_rq_retry_success", 1);
}

#[test]
fn per_try_timeouts_on_every_try_end_in_504() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::delay(Duration::from_secs(5), UpstreamAction::ok("late")));
    let mut config = http_bootstrap(&[upstream.addr()]);
    route_action(&mut config)["timeout"] = json!("10s");
    route_action(&mut config)["retry_policy"] =
        json!({ "retry_on": "5xx", "num_retries": 2, "per_try_timeout": "0.2s" });
    let px = HttpProxy::start(legate_bin!(), config);

    let r = px.client().get("/");

    assert_eq!((r.status, r.body.as_str()), (504, "upstream request timeout"), "{r:?}");
    assert_eq!(upstream.wait_requests(3).len(), 3, "the first try and two retries");
    let line = px.logged(1);
    let (code, flags) = line.split_once(' ').unwrap_or_default();
    assert_eq!(code, "504");
    assert!(flags.split(',').any(|f| f == "UT"), "flags {flags:?} should include UT");
    px.legate.wait_stat("cluster.backend.upstream_rq_per_try_timeout", 3);
    px.legate.wait_stat("cluster.backend.upstream_rq_retry", 2);
    // Only the answer is charged: the two timeouts retried are not.
    px.legate.wait_stat("cluster.backend.upstream_rq_504", 1);
    assert_eq!(px.legate.stat("cluster.backend.upstream_rq_5xx"), Some(1));
}

/// A connect that neither succeeds nor is refused, on loopback: [`BlackholeServer`] fills a
/// backlog-0 listener's accept queue, so further SYNs are dropped.
#[test]
fn connect_timeout_is_503_connection_timeout_uf() {
    let hole = BlackholeServer::start();
    let mut config = http_bootstrap(&[hole.addr()]);
    cluster_config(&mut config, 0)["connect_timeout"] = json!("0.5s");
    let px = HttpProxy::start(legate_bin!(), config);

    let r = px.client().get("/");

    assert_eq!((r.status, r.body.as_str()), (503, format!("{CONNECT_ERROR}connection timeout").as_str()), "{r:?}");
    assert_eq!(px.logged(1), "503 UF");
    px.legate.wait_stat("cluster.backend.upstream_cx_connect_timeout", 1);
    px.legate.wait_stat("cluster.backend.upstream_cx_connect_fail", 1);
    px.legate.wait_stat("cluster.backend.upstream_rq_pending_failure_eject", 1);
}

/// A full connection breaker still lets a pool with no connection at all make one (Envoy's
/// `tryCreateNewConnection`): its requests are served, and the overflow counted.
#[test]
fn an_empty_pool_opens_a_connection_past_a_full_breaker() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("served"));
    let mut config = http_bootstrap(&[upstream.addr()]);
    cluster_config(&mut config, 0)["circuit_breakers"] = json!({ "thresholds": [{ "max_connections": 0 }] });
    route_action(&mut config)["timeout"] = json!("5s");
    let px = HttpProxy::start(legate_bin!(), config);

    let r = px.client().get("/");

    assert_eq!((r.status, r.body.as_str()), (200, "served"), "{r:?}");
    px.legate.wait_stat_at_least("cluster.backend.upstream_cx_overflow", 1);
}

/// One connection allowed and busy, one request allowed to wait for it: the third
/// concurrent request overflows the pending queue ("Circuit breaking").
#[test]
fn pending_requests_overflow_is_503_overloaded_uo() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::Hang);
    let mut config = http_bootstrap(&[upstream.addr()]);
    cluster_config(&mut config, 0)["circuit_breakers"] =
        json!({ "thresholds": [{ "max_connections": 1, "max_pending_requests": 1 }] });
    let px = HttpProxy::start(legate_bin!(), config);

    let mut first = px.client();
    first.write_request("GET", "/first", &[], b"").unwrap();
    upstream.wait_requests(1);
    let mut second = px.client();
    second.write_request("GET", "/second", &[], b"").unwrap();
    px.legate.wait_stat("cluster.backend.upstream_rq_pending_active", 1);
    let third = px.client().get("/third");

    assert_eq!(third.status, 503, "{third:?}");
    assert_eq!(third.header("x-envoy-overloaded"), Some("true"), "{third:?}");
    assert_eq!(third.body, format!("{CONNECT_ERROR}overflow"));
    assert_eq!(px.logged(1), "503 UO");
    assert_eq!(upstream.request_count(), 1, "neither waiting request reached the upstream");
    assert_eq!(upstream.connections(), 1);
    px.legate.wait_stat("cluster.backend.upstream_rq_pending_overflow", 1);
    px.legate.wait_stat_at_least("cluster.backend.upstream_cx_overflow", 1);
    px.legate.wait_stat("cluster.backend.upstream_rq_503", 1);
    assert_eq!(px.legate.stat("cluster.backend.upstream_rq_cancelled"), Some(0));
    // The waiting request's client leaves: its place in the queue is cancelled.
    drop(second);
    px.legate.wait_stat("cluster.backend.upstream_rq_cancelled", 1);
    px.legate.wait_stat("cluster.backend.upstream_rq_pending_active", 0);
    assert_eq!(px.legate.stat("cluster.backend.upstream_rq_total"), Some(1), "only the first had a connection");
    drop(first);
}

/// `max_requests`: outstanding requests to the cluster; its overflow is also counted as
/// `upstream_rq_pending_overflow` ("Circuit breaking").
#[test]
fn max_requests_overflow_is_503_overloaded_uo() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::Hang);
    let mut config = http_bootstrap(&[upstream.addr()]);
    cluster_config(&mut config, 0)["circuit_breakers"] = json!({ "thresholds": [{ "max_requests": 1 }] });
    let px = HttpProxy::start(legate_bin!(), config);

    let mut first = px.client();
    first.write_request("GET", "/first", &[], b"").unwrap();
    upstream.wait_requests(1);
    let second = px.client().get("/second");

    assert_eq!(second.status, 503, "{second:?}");
    assert_eq!(second.header("x-envoy-overloaded"), Some("true"), "{second:?}");
    assert_eq!(px.logged(1), "503 UO");
    assert_eq!(upstream.request_count(), 1);
    px.legate.wait_stat("cluster.backend.upstream_rq_pending_overflow", 1);
    px.legate.wait_stat("cluster.backend.upstream_rq_503", 1);
    drop(first);
}

/// `max_requests` is taken as a request gets its connection (Envoy's `attachStreamToClient`):
/// one waiting in the pending queue does not hold it, and is served when the connection frees.
#[test]
fn a_request_waiting_for_a_connection_does_not_hold_a_max_requests_slot() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::delay(Duration::from_millis(300), UpstreamAction::ok("ok")));
    let mut config = http_bootstrap(&[upstream.addr()]);
    cluster_config(&mut config, 0)["circuit_breakers"] =
        json!({ "thresholds": [{ "max_connections": 1, "max_requests": 1 }] });
    let px = HttpProxy::start(legate_bin!(), config);

    let mut first = px.client();
    first.write_request("GET", "/first", &[], b"").unwrap();
    upstream.wait_requests(1);
    let second = px.client().get("/second");
    let first = first.read_response().unwrap();

    assert_eq!((first.status, second.status), (200, 200), "{first:?} {second:?}");
    assert_eq!(px.legate.stat("cluster.backend.upstream_rq_pending_overflow"), Some(0));
    assert_eq!(upstream.connections(), 1);
}

/// `max_retries: 0`: a retriable response is passed through and the retry counted as an
/// overflow; Envoy's router flags the stream `UO` (`RetryStatus::NoOverflow`).
#[test]
fn retry_overflow_passes_the_response_through_and_counts() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::status(503, "busy"));
    let mut config = http_bootstrap(&[upstream.addr()]);
    route_action(&mut config)["retry_policy"] = json!({ "retry_on": "5xx", "num_retries": 3 });
    cluster_config(&mut config, 0)["circuit_breakers"] = json!({ "thresholds": [{ "max_retries": 0 }] });
    let px = HttpProxy::start(legate_bin!(), config);

    let r = px.client().get("/");

    assert_eq!((r.status, r.body.as_str()), (503, "busy"), "the upstream's own response: {r:?}");
    assert_eq!(upstream.request_count(), 1, "no retry was made");
    px.legate.wait_stat("cluster.backend.upstream_rq_retry_overflow", 1);
    assert_eq!(px.legate.stat("cluster.backend.upstream_rq_retry"), Some(0));
    assert_eq!(px.logged(1), "503 UO");
}

/// A request naming a cluster that does not exist (`cluster_header`) is `NC`.
#[test]
fn unknown_cluster_is_503_nc() {
    let mut config = http_bootstrap(&[]);
    *route_action(&mut config) = json!({ "cluster_header": "x-cluster" });
    let px = HttpProxy::start(legate_bin!(), config);

    let r = px.client().send("GET", "/", &[("x-cluster", "missing")], b"");

    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(px.logged(1), "503 NC");
    px.legate.wait_stat("http.ingress.no_cluster", 1);
}
