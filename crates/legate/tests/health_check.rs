//! Active health checking through the real proxy ("Health checking" architecture page): a host
//! failing its HTTP checks goes `/failed_active_hc` and traffic goes to the healthy host until
//! it passes `healthy_threshold` checks again; a TCP check sends a payload and matches the reply.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use legate_testing::config::{cluster_config, http_bootstrap, tcp_proxy_bootstrap};
use legate_testing::{
    eventually, json, legate_bin, serde_json, ClosedPort, HttpClient, HttpUpstream, Legate, TcpServer, UpstreamAction,
};

const HC: &str = "cluster.backend.health_check";

fn health_flags(px: &Legate, host: std::net::SocketAddr) -> String {
    let (status, clusters) = px.admin_get("/clusters");
    assert_eq!(status, 200);
    let prefix = format!("backend::{host}::health_flags::");
    clusters.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_default().to_string()
}

fn wait_flags(px: &Legate, host: std::net::SocketAddr, expected: &str) {
    eventually(
        &format!("{host} health_flags {expected}"),
        Duration::from_secs(10),
        || health_flags(px, host),
        |flags| flags == expected,
    );
}

/// Two hosts answering `good` and `bad`, both passing `/healthz` checks until the flag is
/// cleared, after which `bad`'s checks get 503.
fn good_and_failable() -> (HttpUpstream, HttpUpstream, Arc<AtomicBool>) {
    let good = HttpUpstream::http1(|r| UpstreamAction::ok(if r.path == "/healthz" { "ok" } else { "good" }));
    let passing = Arc::new(AtomicBool::new(true));
    let bad_passing = passing.clone();
    let bad = HttpUpstream::http1(move |r| match r.path.as_str() {
        "/healthz" if bad_passing.load(Ordering::SeqCst) => UpstreamAction::ok("ok"),
        "/healthz" => UpstreamAction::status(503, "failing"),
        _ => UpstreamAction::ok("bad"),
    });
    (good, bad, passing)
}

#[test]
fn a_host_failing_http_checks_is_excluded_until_it_passes_again() {
    let (good, bad, passing) = good_and_failable();
    let mut config = http_bootstrap(&[good.addr(), bad.addr()]);
    cluster_config(&mut config, 0)["health_checks"] = json!([{
        "timeout": "1s",
        "interval": "0.2s",
        "no_traffic_interval": "0.2s",
        "unhealthy_threshold": 2,
        "healthy_threshold": 2,
        "http_health_check": {"path": "/healthz"}
    }]);
    let px = Legate::start(legate_bin!(), &config.to_string());

    // Hosts start unhealthy and turn healthy on their first passing check.
    px.wait_stat(&format!("{HC}.healthy"), 2);
    wait_flags(&px, bad.addr(), "healthy");
    let check = bad.requests().into_iter().find(|r| r.path == "/healthz").expect("a health check reached the host");
    assert_eq!(check.method, "GET");
    assert_eq!(check.header("user-agent"), Some("Envoy/HC"));
    assert_eq!(check.header("host"), Some("backend"), "Envoy's default host is the cluster name");

    // A 503 is not an expected status: the host is unhealthy at once.
    passing.store(false, Ordering::SeqCst);
    px.wait_stat(&format!("{HC}.healthy"), 1);
    wait_flags(&px, bad.addr(), "/failed_active_hc");
    assert!(px.stat(&format!("{HC}.failure")).unwrap() >= 1);
    assert_eq!(px.stat(&format!("{HC}.passive_failure")), Some(0));
    assert_eq!(px.stat("cluster.backend.membership_healthy"), Some(1));
    let mut client = HttpClient::connect(px.connect_addr("ingress"));
    for _ in 0..10 {
        let r = client.get("/");
        assert_eq!((r.status, r.body.as_str()), (200, "good"), "only the healthy host takes traffic");
    }

    // After `healthy_threshold` passing checks the host takes traffic again.
    passing.store(true, Ordering::SeqCst);
    wait_flags(&px, bad.addr(), "healthy");
    px.wait_stat(&format!("{HC}.healthy"), 2);
    eventually(
        "a request reaches the recovered host",
        Duration::from_secs(10),
        || client.get("/").body,
        |b| b == "bad",
    );
    assert!(px.stat(&format!("{HC}.success")).unwrap() >= 3);
    assert!(px.stat(&format!("{HC}.attempt")).unwrap() >= 4);
}

#[test]
fn tcp_check_sends_a_payload_and_matches_the_reply() {
    // Answers PONG to each PING, on one connection (the checker reuses it).
    let good = TcpServer::start(|mut stream| {
        let mut buf = [0u8; 4];
        while stream.read_exact(&mut buf).is_ok() {
            if &buf == b"PING" && stream.write_all(b"PONG").is_err() {
                break;
            }
        }
    });
    let wrong = TcpServer::start(|mut stream| {
        let mut buf = [0u8; 4];
        if stream.read_exact(&mut buf).is_ok() {
            let _ = stream.write_all(b"NOPE");
        }
    });
    let closed = ClosedPort::new();
    let mut config = tcp_proxy_bootstrap(&[good.addr(), wrong.addr(), closed.addr()]);
    cluster_config(&mut config, 0)["health_checks"] = json!([{
        "timeout": "1s",
        "interval": "0.2s",
        "no_traffic_interval": "0.2s",
        "unhealthy_threshold": 1,
        "healthy_threshold": 1,
        "tcp_health_check": {"send": {"text": "50494e47"}, "receive": [{"binary": "UE9ORw=="}]}
    }]);
    let px = Legate::start(legate_bin!(), &config.to_string());

    wait_flags(&px, good.addr(), "healthy");
    px.wait_stat_at_least(&format!("{HC}.network_failure"), 2);
    assert_eq!(health_flags(&px, wrong.addr()), "/failed_active_hc", "NOPE never matches PONG");
    assert_eq!(health_flags(&px, closed.addr()), "/failed_active_hc");
    assert_eq!(px.stat(&format!("{HC}.healthy")), Some(1));
    assert!(px.stat(&format!("{HC}.success")).unwrap() >= 1);
}

/// A `grpc.health.v1.HealthCheckResponse` with `status` (1 SERVING, 2 NOT_SERVING).
fn health_response(status: u8) -> Vec<u8> {
    vec![0x08, status]
}

#[test]
fn grpc_check_follows_the_serving_status_and_logs_events() {
    let serving = Arc::new(AtomicBool::new(true));
    let s = serving.clone();
    let grpc = HttpUpstream::http2(move |r| match r.path.as_str() {
        "/grpc.health.v1.Health/Check" => UpstreamAction::Grpc {
            message: health_response(if s.load(Ordering::SeqCst) { 1 } else { 2 }).into(),
            grpc_status: 0,
        },
        _ => UpstreamAction::ok("grpc host"),
    });
    let other = HttpUpstream::http1(|_| UpstreamAction::ok("other"));
    let dir = legate_testing::TempDir::new();
    let event_log = dir.join("hc_events.log");
    let mut config = http_bootstrap(&[grpc.addr(), other.addr()]);
    cluster_config(&mut config, 0)["health_checks"] = json!([{
        "timeout": "1s",
        "interval": "0.2s",
        "no_traffic_interval": "0.2s",
        "unhealthy_threshold": 2,
        "healthy_threshold": 1,
        "event_log_path": event_log.to_string_lossy(),
        "grpc_health_check": { "service_name": "shop.Cart", "authority": "cart.internal" }
    }]);
    // The other host answers no gRPC: its checks fail (404, not application/grpc).
    let px = Legate::start(legate_bin!(), &config.to_string());

    wait_flags(&px, grpc.addr(), "healthy");
    let check = grpc.requests().into_iter().find(|r| r.path.starts_with("/grpc")).expect("a gRPC check");
    assert_eq!((check.method.as_str(), check.version.as_str()), ("POST", "HTTP/2.0"));
    assert_eq!(check.header("content-type"), Some("application/grpc"));
    assert_eq!(check.header("te"), Some("trailers"));
    assert_eq!(check.header("host"), Some("cart.internal"));
    // One uncompressed frame: HealthCheckRequest { service: "shop.Cart" }.
    let mut expected = vec![0u8, 0, 0, 0, 11, 0x0a, 9];
    expected.extend_from_slice(b"shop.Cart");
    assert_eq!(check.body.as_ref(), expected.as_slice());
    assert_eq!(health_flags(&px, other.addr()), "/failed_active_hc");

    // NOT_SERVING fails the check; two in a row (unhealthy_threshold) take the host out.
    serving.store(false, Ordering::SeqCst);
    wait_flags(&px, grpc.addr(), "/failed_active_hc");
    serving.store(true, Ordering::SeqCst);
    wait_flags(&px, grpc.addr(), "healthy");

    let log = std::fs::read_to_string(&event_log).expect("event log written");
    let lines: Vec<serde_json::Value> =
        log.lines().map(|l| serde_json::from_str(l).expect("one JSON event per line")).collect();
    let grpc_port = u64::from(grpc.addr().port());
    let of_grpc: Vec<&serde_json::Value> =
        lines.iter().filter(|e| e["host"]["socket_address"]["port_value"] == grpc_port).collect();
    let kinds: Vec<&str> = of_grpc
        .iter()
        .map(|e| ["add_healthy_event", "eject_unhealthy_event"].into_iter().find(|k| e.get(*k).is_some()).unwrap_or(""))
        .collect();
    assert_eq!(kinds, ["add_healthy_event", "eject_unhealthy_event", "add_healthy_event"], "{log}");
    let first = of_grpc[0];
    assert_eq!(first["health_checker_type"], "GRPC");
    assert_eq!(first["cluster_name"], "backend");
    assert_eq!(first["add_healthy_event"]["first_check"], true);
    assert_eq!(of_grpc[1]["eject_unhealthy_event"]["failure_type"], "ACTIVE");
    assert!(first["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{first}");
    // The other host failed its first check: Envoy logs that failure.
    let other_port = u64::from(other.addr().port());
    assert!(
        lines.iter().any(|e| e["host"]["socket_address"]["port_value"] == other_port
            && e["health_check_failure_event"]["first_check"] == true),
        "{log}"
    );
}

#[test]
fn http_check_over_http2() {
    let h2 = HttpUpstream::http2(|_| UpstreamAction::ok("ok"));
    let mut config = http_bootstrap(&[h2.addr()]);
    cluster_config(&mut config, 0)["health_checks"] = json!([{
        "timeout": "1s",
        "interval": "0.2s",
        "unhealthy_threshold": 1,
        "healthy_threshold": 1,
        "http_health_check": {
            "path": "/healthz", "codec_client_type": "HTTP2",
            "request_headers_to_add": [{ "header": { "key": "X-Checker", "value": "legate" } }],
            "request_headers_to_remove": ["x-unused"]
        }
    }]);
    let px = Legate::start(legate_bin!(), &config.to_string());
    wait_flags(&px, h2.addr(), "healthy");
    let check = h2.requests().into_iter().find(|r| r.path == "/healthz").expect("a check");
    assert_eq!(check.version, "HTTP/2.0");
    assert_eq!(check.header("host"), Some("backend"));
    assert_eq!(check.header("user-agent"), Some("Envoy/HC"));
    assert_eq!(check.header("x-checker"), Some("legate"));
}

/// `x-envoy-immediate-health-check-fail` on an ordinary response (a host draining itself)
/// takes the host out at once, as a passive health check failure; its checks bring it back.
#[test]
fn a_host_announcing_immediate_health_check_fail_leaves_at_once() {
    let draining = Arc::new(AtomicBool::new(false));
    let d = draining.clone();
    let host = HttpUpstream::http1(move |r| match r.path.as_str() {
        "/healthz" => UpstreamAction::ok("ok"),
        _ if d.swap(false, Ordering::SeqCst) => {
            UpstreamAction::ok("draining").with_header("x-envoy-immediate-health-check-fail", "true")
        }
        _ => UpstreamAction::ok("host"),
    });
    let other = HttpUpstream::http1(|_| UpstreamAction::ok("other"));
    let mut config = http_bootstrap(&[host.addr(), other.addr()]);
    cluster_config(&mut config, 0)["health_checks"] = json!([{
        "timeout": "1s", "interval": "1.5s", "no_traffic_interval": "1.5s",
        "unhealthy_threshold": 3, "healthy_threshold": 2,
        "http_health_check": { "path": "/healthz" }
    }]);
    let px = Legate::start(legate_bin!(), &config.to_string());
    px.wait_stat(&format!("{HC}.healthy"), 2);
    let mut client = HttpClient::connect(px.connect_addr("ingress"));
    draining.store(true, Ordering::SeqCst);
    eventually("the host answers draining", Duration::from_secs(10), || client.get("/").body, |b| b == "draining");

    px.wait_stat(&format!("{HC}.passive_failure"), 1);
    assert_eq!(health_flags(&px, host.addr()), "/failed_active_hc/excluded_via_immediate_hc_fail");
    assert_eq!(px.stat("cluster.backend.membership_excluded"), Some(1));
    for _ in 0..6 {
        assert_eq!(client.get("/").body, "other", "the draining host takes no traffic");
    }
    // Two passing checks (healthy_threshold) and it is back.
    wait_flags(&px, host.addr(), "healthy");
    assert_eq!(px.stat("cluster.backend.membership_excluded"), Some(0));
}

/// `endpoint.health_check_config`: one endpoint is checked on another port with its own `host`
/// header; another is not actively checked at all, and takes traffic at once.
#[test]
fn endpoint_health_check_config_moves_or_disables_the_checks() {
    let served = HttpUpstream::http1(|_| UpstreamAction::ok("served"));
    let checks = HttpUpstream::http1(|_| UpstreamAction::ok("checked"));
    let unchecked = HttpUpstream::http1(|_| UpstreamAction::ok("unchecked"));
    let mut config = http_bootstrap(&[served.addr(), unchecked.addr()]);
    let cluster = cluster_config(&mut config, 0);
    let endpoints = &mut cluster["load_assignment"]["endpoints"][0]["lb_endpoints"];
    endpoints[0]["endpoint"]["health_check_config"] =
        json!({ "port_value": checks.addr().port(), "hostname": "served.internal" });
    endpoints[1]["endpoint"]["health_check_config"] = json!({ "disable_active_health_check": true });
    cluster["health_checks"] = json!([{
        "timeout": "1s", "interval": "0.2s", "no_traffic_interval": "0.2s",
        "unhealthy_threshold": 1, "healthy_threshold": 1,
        "http_health_check": { "path": "/healthz" }
    }]);
    let px = Legate::start(legate_bin!(), &config.to_string());

    wait_flags(&px, served.addr(), "healthy");
    assert_eq!(health_flags(&px, unchecked.addr()), "healthy", "not checked, never failed");
    let check = checks.requests().into_iter().find(|r| r.path == "/healthz").expect("checks reach the other port");
    assert_eq!(check.header("host"), Some("served.internal"));
    assert!(served.requests().iter().all(|r| r.path != "/healthz"), "no check on the serving port");
    assert!(unchecked.requests().iter().all(|r| r.path != "/healthz"), "no check of the disabled endpoint");
    let mut client = HttpClient::connect(px.connect_addr("ingress"));
    let bodies: std::collections::BTreeSet<String> = (0..4).map(|_| client.get("/").body).collect();
    assert_eq!(bodies.into_iter().collect::<Vec<_>>(), ["served", "unchecked"]);
}

/// `http_health_check.send` is the request body; `receive` must be in the response body (as
/// Envoy Gateway configures them): a host answering 200 without the payload fails.
#[test]
fn http_check_sends_a_body_and_matches_the_response_body() {
    let answer = Arc::new(std::sync::Mutex::new("status: ok"));
    let served = answer.clone();
    let host = HttpUpstream::http1(move |r| match r.path.as_str() {
        "/healthz" if r.body.as_ref() == b"ping" => UpstreamAction::ok(*served.lock().unwrap()),
        "/healthz" => UpstreamAction::status(400, "no ping"),
        _ => UpstreamAction::ok("app"),
    });
    let mut config = http_bootstrap(&[host.addr()]);
    cluster_config(&mut config, 0)["health_checks"] = json!([{
        "timeout": "1s",
        "interval": "0.2s",
        "no_traffic_interval": "0.2s",
        "unhealthy_threshold": 2,
        "healthy_threshold": 1,
        "http_health_check": {"path": "/healthz", "method": "POST", "send": {"text": "70696e67"}, "receive": [{"text": "6f6b"}]}
    }]);
    let px = Legate::start(legate_bin!(), &config.to_string());
    wait_flags(&px, host.addr(), "healthy");
    let check = host.requests().into_iter().find(|r| r.path == "/healthz").expect("a check");
    assert_eq!((check.method.as_str(), check.body.as_ref()), ("POST", &b"ping"[..]));
    // Still 200, but without "ok" in the body: unhealthy.
    *answer.lock().unwrap() = "status: down";
    wait_flags(&px, host.addr(), "/failed_active_hc");
}

/// A TCP check with nothing to receive is the connect itself (Envoy's TCP checker): a new
/// connection each interval, closed at once. A connection kept between checks would pass
/// with no I/O even after the host stopped accepting.
#[test]
fn a_connect_only_tcp_check_connects_each_time() {
    let upstream = TcpServer::start(|mut stream| {
        let mut buf = [0u8; 16];
        while stream.read(&mut buf).is_ok_and(|n| n > 0) {}
    });
    let mut config = tcp_proxy_bootstrap(&[upstream.addr()]);
    cluster_config(&mut config, 0)["health_checks"] = json!([{
        "timeout": "1s",
        "interval": "0.1s",
        "no_traffic_interval": "0.1s",
        "unhealthy_threshold": 1,
        "healthy_threshold": 1,
        "tcp_health_check": {}
    }]);
    let px = Legate::start(legate_bin!(), &config.to_string());

    px.wait_stat_at_least(&format!("{HC}.success"), 4);
    eventually("one connection per check", Duration::from_secs(10), || upstream.accepted(), |n| *n >= 4);
}

/// `close_connections_on_host_health_failure`: a host failing its active check loses its
/// pooled connections (Envoy's `onHostHealthFailure` drains its pools); without it they stay.
#[test]
fn a_host_failing_its_check_loses_its_connections_where_the_cluster_asks() {
    for close in [true, false] {
        let (good, bad, passing) = good_and_failable();
        let mut config = http_bootstrap(&[good.addr(), bad.addr()]);
        let cluster = cluster_config(&mut config, 0);
        cluster["close_connections_on_host_health_failure"] = json!(close);
        cluster["health_checks"] = json!([{
            "timeout": "1s", "interval": "0.2s", "no_traffic_interval": "0.2s",
            "unhealthy_threshold": 1, "healthy_threshold": 1,
            "http_health_check": {"path": "/healthz"}
        }]);
        let px = Legate::builder(legate_bin!()).config(&config.to_string()).concurrency(1).start();
        px.wait_stat(&format!("{HC}.healthy"), 2);
        let mut client = HttpClient::connect(px.connect_addr("ingress"));
        let bodies: Vec<String> = (0..4).map(|_| client.get("/").body).collect();
        assert!(bodies.iter().any(|b| b == "bad") && bodies.iter().any(|b| b == "good"), "{bodies:?}");
        px.wait_stat("cluster.backend.upstream_cx_active", 2);

        passing.store(false, Ordering::SeqCst);
        wait_flags(&px, bad.addr(), "/failed_active_hc");
        // The worker drains at its next request, which goes to the healthy host.
        assert_eq!(client.get("/").body, "good");
        let expected = if close { 1 } else { 2 };
        px.wait_stat("cluster.backend.upstream_cx_active", expected);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(px.stat("cluster.backend.upstream_cx_active"), Some(expected), "close: {close}");
    }
}
