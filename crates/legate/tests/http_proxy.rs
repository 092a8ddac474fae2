//! The HTTP connection manager as a proxy (Envoy docs: "HTTP connection management", "HTTP
//! header manipulation", "Access logging"; proto
//! `envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager`): the
//! headers an upstream sees and a client gets back, connection reuse, HTTP/2 on either side,
//! large bodies streamed with bounded memory, and access log lines.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use legate_testing::config::{
    bootstrap, cluster_config, file_access_log, hcm_config, http_bootstrap, json_access_log, static_cluster, with_http2,
};
use legate_testing::{
    h2_events, h2c_get, h2c_many, hpack_request, json, legate_bin, H2Event, H2Frame, HttpClient, HttpProxy,
    HttpUpstream, Legate, PatternChecker, PatternWriter, UpstreamAction, Value, H2_PREFACE,
};
use regex::Regex;

const MIB: u64 = 1024 * 1024;

fn start(config: &Value) -> Legate {
    Legate::start(legate_bin!(), &config.to_string())
}

fn uuid4() -> Regex {
    Regex::new("^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$").unwrap()
}

#[test]
fn upstream_sees_forwarded_for_proto_request_id_and_expected_timeout() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("ok"));
    let mut config = http_bootstrap(&[upstream.addr()]);
    hcm_config(&mut config, 0)["use_remote_address"] = json!(true);
    let px = start(&config);
    let mut c = HttpClient::connect(px.connect_addr("ingress"));

    let r = c.get("/");
    assert_eq!(r.status, 200, "{r:?}");
    let seen = upstream.last_request();
    assert_eq!(seen.header_all("x-forwarded-for"), vec!["127.0.0.1"], "{:?}", seen.headers);
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    // A loopback peer is internal (RFC 1918 and loopback, Envoy's default).
    assert_eq!(seen.header("x-envoy-internal"), Some("true"));
    let id = seen.header("x-request-id").expect("x-request-id generated");
    assert!(uuid4().is_match(id), "x-request-id should be a UUID version 4: {id:?}");
    assert_eq!(seen.header("x-envoy-expected-rq-timeout-ms"), Some("15000"), "the route timeout, 15 s by default");

    // An existing x-forwarded-for is appended to; an internal client's request id is kept.
    c.send("GET", "/", &[("x-forwarded-for", "203.0.113.7"), ("x-request-id", "keep-me")], b"");
    let seen = upstream.last_request();
    assert_eq!(seen.header_all("x-forwarded-for"), vec!["203.0.113.7,127.0.0.1"]);
    assert_eq!(seen.header("x-request-id"), Some("keep-me"));

    // A new id per request.
    c.get("/");
    let ids: Vec<String> =
        upstream.requests().iter().map(|r| r.header("x-request-id").unwrap_or_default().to_string()).collect();
    assert_ne!(ids[0], ids[2], "{ids:?}");
}

/// `generate_request_id: false`: no id is made, a client's is passed on; without
/// `use_remote_address` a client's `x-forwarded-proto` is kept, else it is set.
#[test]
fn request_ids_are_not_made_when_turned_off_and_a_forwarded_proto_is_kept() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("ok"));
    let mut config = http_bootstrap(&[upstream.addr()]);
    hcm_config(&mut config, 0)["generate_request_id"] = json!(false);
    let px = start(&config);
    let mut c = HttpClient::connect(px.connect_addr("ingress"));

    assert_eq!(c.get("/").status, 200);
    let seen = upstream.last_request();
    assert_eq!(seen.header("x-request-id"), None, "{:?}", seen.headers);
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));

    c.send("GET", "/", &[("x-request-id", "client-id"), ("x-forwarded-proto", "https")], b"");
    let seen = upstream.last_request();
    assert_eq!(seen.header("x-request-id"), Some("client-id"));
    assert_eq!(seen.header_all("x-forwarded-proto"), vec!["https"]);
}

#[test]
fn hop_by_hop_headers_are_stripped_in_both_directions() {
    let upstream = HttpUpstream::http1(|_| {
        UpstreamAction::ok("ok")
            .with_header("connection", "x-hop-resp")
            .with_header("x-hop-resp", "1")
            .with_header("keep-alive", "timeout=30")
            .with_header("proxy-connection", "keep-alive")
            .with_header("x-end-to-end", "kept")
    });
    let px = start(&http_bootstrap(&[upstream.addr()]));
    let mut c = HttpClient::connect(px.connect_addr("ingress"));

    let r = c.send(
        "GET",
        "/",
        &[
            ("connection", "keep-alive, x-hop-req"),
            ("x-hop-req", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "gzip"),
            ("x-end-to-end", "kept"),
        ],
        b"",
    );

    assert_eq!(r.status, 200, "{r:?}");
    let seen = upstream.last_request();
    for name in ["connection", "x-hop-req", "keep-alive", "proxy-connection", "te"] {
        assert_eq!(seen.header(name), None, "{name} must not be forwarded upstream: {:?}", seen.headers);
    }
    assert_eq!(seen.header("x-end-to-end"), Some("kept"));
    for name in ["x-hop-resp", "keep-alive", "proxy-connection"] {
        assert_eq!(r.header(name), None, "{name} must not be forwarded downstream: {r:?}");
    }
    assert!(r.header_all("connection").iter().all(|v| !v.contains("x-hop-resp")), "{r:?}");
    assert_eq!(r.header("x-end-to-end"), Some("kept"));
}

#[test]
fn server_header_is_envoy_unless_server_name_is_set() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("ok").with_header("server", "upstream/1.0"));
    let default = start(&http_bootstrap(&[upstream.addr()]));
    let mut config = http_bootstrap(&[upstream.addr()]);
    hcm_config(&mut config, 0)["server_name"] = json!("legate-edge");
    let named = start(&config);

    let r = HttpClient::connect(default.connect_addr("ingress")).get("/");
    assert_eq!(r.header_all("server"), vec!["envoy"], "OVERWRITE is the default transformation: {r:?}");
    let r = HttpClient::connect(named.connect_addr("ingress")).get("/");
    assert_eq!(r.header_all("server"), vec!["legate-edge"], "{r:?}");
    // Local replies carry it too.
    let r = HttpClient::connect(named.connect_addr("ingress")).send("GET", "/", &[("host", "")], b"");
    assert_eq!(r.header("server"), Some("legate-edge"), "{r:?}");
}

#[test]
fn responses_carry_upstream_service_time() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::delay(Duration::from_millis(50), UpstreamAction::ok("ok")));
    let px = start(&http_bootstrap(&[upstream.addr()]));

    let r = HttpClient::connect(px.connect_addr("ingress")).get("/");

    let ms = upstream_service_time_ms(&r);
    assert!(ms >= 50, "the upstream took at least 50 ms, the header says {ms}");
}

fn upstream_service_time_ms(r: &legate_testing::HttpResponse) -> u64 {
    r.header("x-envoy-upstream-service-time")
        .unwrap_or_else(|| panic!("no x-envoy-upstream-service-time: {r:?}"))
        .parse()
        .expect("a number of milliseconds")
}

/// Envoy's router times `x-envoy-upstream-service-time` from the end of the downstream request,
/// so a retried request's header spans both tries and the back-off between them.
#[test]
fn upstream_service_time_spans_every_try() {
    let upstream = HttpUpstream::http1(|r| {
        let answer = match r.index {
            0 => UpstreamAction::status(503, "busy"),
            _ => UpstreamAction::ok("ok"),
        };
        UpstreamAction::delay(Duration::from_millis(200), answer)
    });
    let mut config = http_bootstrap(&[upstream.addr()]);
    legate_testing::config::route_action(&mut config)["retry_policy"] = json!({ "retry_on": "5xx", "num_retries": 1 });
    let px = start(&config);

    let r = HttpClient::connect(px.connect_addr("ingress")).get("/");

    assert_eq!(r.status, 200, "{r:?}");
    let ms = upstream_service_time_ms(&r);
    assert!(ms >= 400, "two tries of at least 200 ms each, the header says {ms}");
}

/// A head the HTTP/1.1 codec refuses is answered 400 and counted as a request and a 4xx
/// response, beside `downstream_cx_protocol_error` (Envoy's codec opens a stream to answer it).
#[test]
fn a_refused_head_is_counted_as_a_request_and_a_4xx() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("never"));
    let px = HttpProxy::start(legate_bin!(), http_bootstrap(&[upstream.addr()]));

    let reply = px.client().raw(b"GET / HTTP/1.1\r\nhost: a\r\nbad header\r\n\r\n");

    assert!(reply.starts_with(b"HTTP/1.1 400"), "{:?}", String::from_utf8_lossy(&reply));
    px.legate.wait_stat("http.ingress.downstream_cx_protocol_error", 1);
    px.legate.wait_stat("http.ingress.downstream_rq_4xx", 1);
    assert_eq!(px.legate.stat("http.ingress.downstream_rq_total"), Some(1));
    assert_eq!(px.legate.stat("http.ingress.downstream_rq_completed"), Some(1));
    assert_eq!(upstream.request_count(), 0);
}

/// Puts the HTTP filter `name` first in the connection manager's chain, before the router.
fn first_http_filter(config: &mut Value, name: &str, typed_config: Value) {
    let filters = hcm_config(config, 0)["http_filters"].as_array_mut().expect("http_filters");
    filters.insert(0, json!({ "name": name, "typed_config": typed_config }));
}

/// Requests the health check filter answers are left out of `downstream_rq_<N>xx` and
/// `downstream_rq_completed` (Envoy's `chargeStats`), so that a load balancer's probes do
/// not dilute the error rate.
#[test]
fn health_check_requests_are_not_counted_as_responses() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("ok"));
    let mut config = http_bootstrap(&[upstream.addr()]);
    first_http_filter(
        &mut config,
        "envoy.filters.http.health_check",
        json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck",
            "pass_through_mode": false,
            "headers": [{ "name": ":path", "string_match": { "exact": "/healthz" } }],
        }),
    );
    let px = start(&config);
    let mut c = HttpClient::connect(px.connect_addr("ingress"));

    assert_eq!(c.get("/healthz").status, 200);
    assert_eq!(c.get("/healthz").status, 200);
    assert_eq!(c.get("/app").status, 200);

    px.wait_stat("http.ingress.downstream_rq_total", 3);
    px.wait_stat("http.ingress.downstream_rq_2xx", 1);
    assert_eq!(px.stat("http.ingress.downstream_rq_completed"), Some(1));
    assert_eq!(upstream.request_count(), 1);
}

#[test]
fn keep_alive_reuses_one_upstream_connection_for_a_hundred_requests() {
    let upstream = HttpUpstream::http1(|r| UpstreamAction::ok(r.path.clone()));
    let px =
        Legate::builder(legate_bin!()).config(&http_bootstrap(&[upstream.addr()]).to_string()).concurrency(1).start();
    let mut c = HttpClient::connect(px.connect_addr("ingress"));

    for i in 0..100 {
        let r = c.get(&format!("/{i}"));
        assert_eq!((r.status, r.body.as_str()), (200, format!("/{i}").as_str()), "request {i}: {r:?}");
    }

    assert_eq!(upstream.connections(), 1, "one upstream connection reused for every request");
    assert!(upstream.requests().iter().all(|r| r.connection == 0));
    px.wait_stat("cluster.backend.upstream_rq_total", 100);
    px.wait_stat("cluster.backend.upstream_cx_total", 1);
    px.wait_stat("http.ingress.downstream_cx_total", 1);
    px.wait_stat("http.ingress.downstream_rq_total", 100);
}

#[test]
fn http2_downstream_and_upstream_fifty_concurrent_streams_on_one_connection() {
    let upstream = HttpUpstream::http2(|r| UpstreamAction::ok(format!("{} {}", r.version, r.path)));
    let mut config = http_bootstrap(&[upstream.addr()]);
    let cluster = cluster_config(&mut config, 0).take();
    *cluster_config(&mut config, 0) = with_http2(cluster);
    let px = start(&config);
    let addr = px.connect_addr("ingress");

    let one = h2c_get(addr, "/one", &[]);
    assert_eq!((one.status, one.body.as_str()), (200, "HTTP/2.0 /one"), "{one:?}");

    let many = h2c_many(addr, "/many", 50);
    assert_eq!(many.len(), 50);
    for (i, r) in many.iter().enumerate() {
        assert_eq!((r.status, r.body.as_str()), (200, "HTTP/2.0 /many"), "stream {i}: {r:?}");
    }

    assert_eq!(upstream.request_count(), 51);
    assert!(upstream.requests().iter().all(|r| r.version == "HTTP/2.0"));
    assert_eq!(upstream.connections(), 1, "HTTP/2 upstream streams are multiplexed on one connection");
    px.wait_stat("http.ingress.downstream_cx_http2_total", 2);
    px.wait_stat("http.ingress.downstream_rq_http2_total", 51);
    px.wait_stat("cluster.backend.upstream_cx_http2_total", 1);
    px.wait_stat("cluster.backend.upstream_rq_200", 51);
}

#[test]
fn http2_downstream_to_http1_upstream() {
    let upstream = HttpUpstream::http1(|r| UpstreamAction::ok(format!("{} {}", r.version, r.path)));
    let px = start(&http_bootstrap(&[upstream.addr()]));

    let r = h2c_get(px.connect_addr("ingress"), "/translated?x=1", &[("host", "h2.example")]);

    assert_eq!((r.status, r.body.as_str()), (200, "HTTP/1.1 /translated?x=1"), "{r:?}");
    let seen = upstream.last_request();
    assert_eq!(seen.header_all("host"), vec!["h2.example"], ":authority becomes host: {:?}", seen.headers);
    px.wait_stat("http.ingress.downstream_rq_http2_total", 1);
    px.wait_stat("cluster.backend.upstream_cx_http1_total", 1);
}

/// Legate's resident memory must not grow with a body it streams: Envoy buffers at most
/// `per_connection_buffer_limit_bytes` (1 MiB) per direction.
const RSS_LIMIT_KIB: u64 = 60 * 1024;

#[test]
fn hundred_mib_request_body_streams_upstream_with_bounded_memory() {
    const TOTAL: u64 = 100 * MIB;
    let upstream = HttpUpstream::http1(|r| {
        let mut checker = PatternChecker::new(7);
        match checker.check(&r.body) {
            Ok(()) => UpstreamAction::ok(format!("received {}", checker.len())),
            Err(e) => UpstreamAction::status(500, e),
        }
    });
    let px = start(&http_bootstrap(&[upstream.addr()]));
    let mut c = HttpClient::connect(px.connect_addr("ingress"));

    c.write_head("POST", "/upload", &[], TOTAL as usize).unwrap();
    let mut pattern = PatternWriter::new(7);
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = TOTAL;
    let mut max_rss = 0;
    let mut next_sample = TOTAL;
    while left > 0 {
        let n = (buf.len() as u64).min(left) as usize;
        pattern.fill(&mut buf[..n]);
        c.stream().write_all(&buf[..n]).unwrap_or_else(|e| panic!("write after {} bytes: {e}", TOTAL - left));
        left -= n as u64;
        if left <= next_sample {
            max_rss = max_rss.max(px.rss_kib());
            next_sample = next_sample.saturating_sub(8 * MIB);
        }
    }
    let r = c.read_response().unwrap();

    assert_eq!((r.status, r.body.as_str()), (200, format!("received {TOTAL}").as_str()), "{r:?}");
    let max_rss = max_rss.max(px.rss_kib());
    eprintln!("legate peak RSS streaming a 100 MiB request body: {max_rss} KiB");
    assert!(max_rss < RSS_LIMIT_KIB, "legate RSS reached {max_rss} KiB streaming a 100 MiB request body");
    px.wait_stat_at_least("cluster.backend.upstream_cx_tx_bytes_total", TOTAL);
    px.wait_stat_at_least("http.ingress.downstream_cx_rx_bytes_total", TOTAL);
}

#[test]
fn hundred_mib_response_body_streams_downstream_with_bounded_memory() {
    const TOTAL: u64 = 100 * MIB;
    let upstream = HttpUpstream::http1(|_| UpstreamAction::Pattern { len: TOTAL, seed: 11 });
    let px = start(&http_bootstrap(&[upstream.addr()]));
    let mut c = HttpClient::connect(px.connect_addr("ingress"));

    let mut checker = PatternChecker::new(11);
    let mut max_rss = 0;
    let mut next_sample = 0;
    let r = c
        .send_streaming("GET", "/download", &[], b"", |chunk| {
            checker.check(chunk).unwrap();
            if checker.len() >= next_sample {
                max_rss = max_rss.max(px.rss_kib());
                next_sample += 8 * MIB;
            }
        })
        .unwrap();

    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-length"), Some(TOTAL.to_string().as_str()));
    assert_eq!(checker.len(), TOTAL, "body length");
    let max_rss = max_rss.max(px.rss_kib());
    eprintln!("legate peak RSS streaming a 100 MiB response body: {max_rss} KiB");
    assert!(max_rss < RSS_LIMIT_KIB, "legate RSS reached {max_rss} KiB streaming a 100 MiB response body");
    // The connection is still good for another request.
    assert_eq!(c.get("/small").status, 200);
}

/// Envoy's default format ("Default format string"):
/// `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE%
/// %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%
/// "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%"
/// "%UPSTREAM_HOST%"`.
#[test]
fn file_access_log_without_format_writes_envoys_default_line() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("hello"));
    let config = http_bootstrap(&[upstream.addr()]);
    let px = HttpProxy::with_access_log(legate_bin!(), config, |log| file_access_log(log, None));
    let mut c = px.client();

    let r = c.send("GET", "/log/path?q=1", &[("host", "example.com"), ("user-agent", "curl/8.5.0")], b"");
    assert_eq!(r.status, 200, "{r:?}");

    let lines = px.log_lines(1);
    let line = &lines[0];
    let shape = Regex::new(concat!(
        r#"^\[(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z)\] "#,
        r#""GET /log/path\?q=1 HTTP/1\.1" 200 - 0 5 (\d+) (\d+) "#,
        r#""-" "curl/8\.5\.0" "([0-9a-f-]{36})" "example\.com" "127\.0\.0\.1:(\d+)"$"#,
    ))
    .unwrap();
    let caps = shape.captures(line).unwrap_or_else(|| panic!("not Envoy's default format: {line:?}"));
    let request_id = upstream.last_request().header("x-request-id").unwrap().to_string();
    assert_eq!(&caps[4], request_id, "%REQ(X-REQUEST-ID)% is the id sent upstream");
    assert_eq!(caps[5].parse::<u16>().unwrap(), upstream.addr().port(), "%UPSTREAM_HOST%");
    let (duration, service): (u64, u64) = (caps[2].parse().unwrap(), caps[3].parse().unwrap());
    assert!(service <= duration, "upstream service time {service} ms within the duration {duration} ms");
    assert_eq!(lines.len(), 1, "one line per request: {lines:?}");
}

/// A proxy whose only route is `/api` to `upstream`, logging each request as a JSON object of
/// `fields`.
fn api_proxy_with_json_log(upstream: &HttpUpstream, fields: Value) -> HttpProxy {
    let mut config = http_bootstrap(&[upstream.addr()]);
    let routes = &mut hcm_config(&mut config, 0)["route_config"]["virtual_hosts"][0]["routes"];
    routes[0]["match"] = json!({ "prefix": "/api" });
    HttpProxy::with_access_log(legate_bin!(), config, |log| json_access_log(log, fields))
}

/// The first `n` access log lines, each parsed as a JSON object.
fn json_log_entries(px: &HttpProxy, n: usize) -> Vec<BTreeMap<String, Value>> {
    px.log_lines(n)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON object ({e}): {l:?}")))
        .collect()
}

/// A request refused by the connection manager's own checks (here a header name with an
/// underscore, `REJECT_REQUEST`) is still logged with its method, path and headers: Envoy runs
/// those checks on the headers it logs.
#[test]
fn a_request_refused_before_routing_is_logged_with_its_headers() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("never"));
    let mut config = http_bootstrap(&[upstream.addr()]);
    hcm_config(&mut config, 0)["common_http_protocol_options"] =
        json!({ "headers_with_underscores_action": "REJECT_REQUEST" });
    let fields = json!({
        "method": "%REQ(:METHOD)%",
        "path": "%REQ(:PATH)%",
        "agent": "%REQ(USER-AGENT)%",
        "code": "%RESPONSE_CODE%",
        "details": "%RESPONSE_CODE_DETAILS%",
        "shell": "%ENVIRONMENT(LEGATE_TEST_SURELY_UNSET)%",
    });
    let px = HttpProxy::with_access_log(legate_bin!(), config, |log| json_access_log(log, fields));

    let r = px.client().send("GET", "/api/refused", &[("user-agent", "probe/1"), ("x_bad", "1")], b"");

    assert_eq!(r.status, 400, "{r:?}");
    let entry = &json_log_entries(&px, 1)[0];
    assert_eq!(entry["method"], json!("GET"));
    assert_eq!(entry["path"], json!("/api/refused"));
    assert_eq!(entry["agent"], json!("probe/1"));
    assert_eq!(entry["code"], json!(400));
    assert_eq!(entry["details"], json!("http1.unexpected_underscore"));
    // An unset variable logs `-`, a string (Envoy's `EnvironmentFormatter`).
    assert_eq!(entry["shell"], json!("-"));
    assert_eq!(upstream.request_count(), 0);
    // Counted where Envoy's HTTP/1 codec counts it.
    px.legate.wait_stat("http1.requests_rejected_with_underscores_in_headers", 1);
    // A request without a body was whole when it was refused.
    px.legate.wait_stat("http.ingress.downstream_rq_4xx", 1);
    assert_eq!(px.legate.stat("http.ingress.downstream_rq_response_before_rq_complete"), Some(0));
}

/// Over HTTP/2 a header name with an underscore under `REJECT_REQUEST` resets the stream
/// (INTERNAL_ERROR, as Envoy's HTTP/2 codec), counted as a reset and logged with no response;
/// the connection's other streams are served.
#[test]
fn an_http2_request_refused_for_an_underscore_is_reset() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("ok"));
    let mut config = http_bootstrap(&[upstream.addr()]);
    hcm_config(&mut config, 0)["common_http_protocol_options"] =
        json!({ "headers_with_underscores_action": "REJECT_REQUEST" });
    let fields = json!({
        "path": "%REQ(:PATH)%",
        "code": "%RESPONSE_CODE%",
        "flags": "%RESPONSE_FLAGS%",
        "details": "%RESPONSE_CODE_DETAILS%",
    });
    let px = HttpProxy::with_access_log(legate_bin!(), config, |log| json_access_log(log, fields));

    let mut frames = H2_PREFACE.to_vec();
    H2Frame::settings(&[]).write_to(&mut frames);
    // "Literal Header Field without Indexing — New Name" (RFC 7541 §6.2.2): `x_bad: 1`.
    let mut refused = hpack_request("GET", "/refused", "h2.example");
    refused.extend_from_slice(b"\x00\x05x_bad\x011");
    H2Frame::headers(1, refused, true).write_to(&mut frames);
    H2Frame::headers(3, hpack_request("GET", "/fine", "h2.example"), true).write_to(&mut frames);
    let reply = px.client().raw_reply(&frames);

    let events = h2_events(&reply.bytes);
    assert!(events.iter().any(|e| matches!(e, H2Event::RstStream { stream: 1, code: 2 })), "{events:?}");
    assert!(events.iter().any(|e| matches!(e, H2Event::Headers { stream: 3, status: Some(200), .. })), "{events:?}");
    let entries = json_log_entries(&px, 2);
    let reset = entries.iter().find(|e| e["path"] == json!("/refused")).expect("the reset stream is logged");
    assert_eq!(reset["code"], json!(0));
    assert_eq!(reset["flags"], json!("DPE"));
    assert_eq!(reset["details"], json!("http2.unexpected_underscore"));
    px.legate.wait_stat("http2.requests_rejected_with_underscores_in_headers", 1);
    px.legate.wait_stat("http.ingress.downstream_rq_rx_reset", 1);
    px.legate.wait_stat("http.ingress.downstream_rq_2xx", 1);
    assert_eq!(px.legate.stat("http.ingress.downstream_rq_4xx"), Some(0));
    assert_eq!(upstream.request_count(), 1);
}

/// A head the HTTP/1.1 codec refuses gets Envoy's "Bad Request" reply and an access log line
/// with no request in it (`"- - HTTP/1.1" 400 DPE`), as Envoy's codec answers through a stream.
#[test]
fn a_head_the_codec_refuses_is_answered_bad_request_and_logged() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("never"));
    let fields = json!({
        "method": "%REQ(:METHOD)%",
        "code": "%RESPONSE_CODE%",
        "flags": "%RESPONSE_FLAGS%",
        "details": "%RESPONSE_CODE_DETAILS%",
        "sent": "%BYTES_SENT%",
    });
    let px = HttpProxy::with_access_log(legate_bin!(), http_bootstrap(&[upstream.addr()]), |log| {
        json_access_log(log, fields)
    });

    let reply = px.client().raw(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n");

    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{reply}");
    assert!(reply.contains("\r\ncontent-type: text/plain\r\n"), "{reply}");
    assert!(reply.contains("\r\nserver: envoy\r\n"), "{reply}");
    assert!(reply.ends_with("\r\n\r\nBad Request"), "{reply}");
    let entry = &json_log_entries(&px, 1)[0];
    assert_eq!(entry["method"], Value::Null);
    assert_eq!(entry["code"], json!(400));
    assert_eq!(entry["flags"], json!("DPE"));
    assert_eq!(entry["details"], json!("http1.codec_error"));
    assert_eq!(entry["sent"], json!(11));
    assert_eq!(upstream.request_count(), 0);
}

/// `%REQ(...)%` reads the request as the router finalized it, as Envoy's access log does:
/// rewritten path and host, the route's added headers, and `x-envoy-original-path` (which is
/// why Envoy's default format asks for it before `:PATH`).
#[test]
fn the_access_log_sees_the_request_as_the_router_finalized_it() {
    let upstream = HttpUpstream::http1(|r| UpstreamAction::ok(r.path.clone()));
    let mut config = http_bootstrap(&[upstream.addr()]);
    let routes = &mut hcm_config(&mut config, 0)["route_config"]["virtual_hosts"][0]["routes"];
    routes[0]["match"] = json!({ "prefix": "/old/" });
    routes[0]["route"]["prefix_rewrite"] = json!("/new/");
    routes[0]["route"]["host_rewrite_literal"] = json!("inner.example");
    routes[0]["request_headers_to_add"] = json!([{ "header": { "key": "x-added", "value": "yes" } }]);
    let format = "%REQ(:PATH)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %REQ(:AUTHORITY)% %REQ(X-ADDED)%\n";
    let px = HttpProxy::with_access_log(legate_bin!(), config, |log| file_access_log(log, Some(format)));

    let r = px.client().send("GET", "/old/thing", &[("host", "outer.example")], b"");

    assert_eq!((r.status, r.body.as_str()), (200, "/new/thing"), "{r:?}");
    assert_eq!(px.logged(1), "/new/thing /old/thing inner.example yes");
}

/// On the hyper-served HTTP/1.1 path (`header_key_format`) a refused head is counted and
/// logged as on legate's own codec (hyper writes the 400 itself, without a body).
#[test]
fn a_head_refused_on_the_hyper_path_is_counted_and_logged() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("never"));
    let mut config = http_bootstrap(&[upstream.addr()]);
    hcm_config(&mut config, 0)["http_protocol_options"] = json!({ "header_key_format": { "proper_case_words": {} } });
    let px = HttpProxy::start(legate_bin!(), config);

    let reply = px.client().raw(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n");

    assert!(reply.starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&reply));
    assert_eq!(px.logged(1), "400 DPE");
    px.legate.wait_stat("http.ingress.downstream_rq_4xx", 1);
    px.legate.wait_stat("http.ingress.downstream_rq_total", 1);
}

/// A filter's local reply (here the fault filter's abort) logs the cluster the route names:
/// Envoy knows it with the route, before the filters run.
#[test]
fn a_filter_reply_logs_the_routes_cluster() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("never"));
    let mut config = http_bootstrap(&[upstream.addr()]);
    first_http_filter(
        &mut config,
        "envoy.filters.http.fault",
        json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
            "abort": { "http_status": 418, "percentage": { "numerator": 100 } },
        }),
    );
    let fields = json!({ "code": "%RESPONSE_CODE%", "cluster": "%UPSTREAM_CLUSTER%", "flags": "%RESPONSE_FLAGS%" });
    let px = HttpProxy::with_access_log(legate_bin!(), config, |log| json_access_log(log, fields));

    assert_eq!(px.client().get("/").status, 418);

    let entry = &json_log_entries(&px, 1)[0];
    assert_eq!(entry["code"], json!(418));
    assert_eq!(entry["cluster"], json!("backend"));
    assert_eq!(entry["flags"], json!("FI"));
    assert_eq!(upstream.request_count(), 0);
}

#[test]
fn json_access_log_writes_one_object_per_request() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("hello"));
    let fields = json!({
        "method": "%REQ(:METHOD)%",
        "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
        "protocol": "%PROTOCOL%",
        "code": "%RESPONSE_CODE%",
        "flags": "%RESPONSE_FLAGS%",
        "bytes_sent": "%BYTES_SENT%",
        "cluster": "%UPSTREAM_CLUSTER%",
        "upstream": "%UPSTREAM_HOST%",
        "literal": "text %RESPONSE_CODE%",
    });
    let px = api_proxy_with_json_log(&upstream, fields);
    let mut c = px.client();

    assert_eq!(c.get("/api/x").status, 200);
    assert_eq!(c.get("/nowhere").status, 404);

    let entries = json_log_entries(&px, 2);
    let ok = &entries[0];
    assert_eq!(ok["method"], json!("GET"), "{ok:?}");
    assert_eq!(ok["path"], json!("/api/x"));
    assert_eq!(ok["protocol"], json!("HTTP/1.1"));
    // `json_format` renders a lone numeric operator as a number ("Format dictionaries").
    assert_eq!(ok["code"], json!(200), "{ok:?}");
    assert_eq!(ok["bytes_sent"], json!(5), "{ok:?}");
    assert_eq!(ok["flags"], json!("-"));
    assert_eq!(ok["cluster"], json!("backend"));
    assert_eq!(ok["upstream"], json!(upstream.addr().to_string()));
    assert_eq!(ok["literal"], json!("text 200"));
    let nr = &entries[1];
    assert_eq!((&nr["code"], &nr["flags"]), (&json!(404), &json!("NR")), "{nr:?}");
    // Typed JSON renders an unset value as null, not "-" (Envoy "Command operators"; envoy#27901).
    assert_eq!((&nr["upstream"], &nr["cluster"]), (&Value::Null, &Value::Null), "{nr:?}");
}

/// The request's timeline points: `DS_RX_END` (`%REQUEST_DURATION%`) once the downstream's
/// request is whole, `US_TX_END` (`%REQUEST_TX_DURATION%`) once it went upstream, in that order
/// and before the response's end; a request that never went upstream has no `US_TX_END`.
#[test]
fn access_log_durations_follow_the_request_to_the_upstream() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("hello"));
    let fields = json!({
        "request_ms": "%REQUEST_DURATION%",
        "request_tx_ms": "%REQUEST_TX_DURATION%",
        "rx_end_us": "%COMMON_DURATION(DS_RX_BEG:DS_RX_END:us)%",
        "tx_beg_us": "%COMMON_DURATION(DS_RX_BEG:US_TX_BEG:us)%",
        "tx_end_us": "%COMMON_DURATION(DS_RX_BEG:US_TX_END:us)%",
        "done_us": "%COMMON_DURATION(DS_RX_BEG:DS_TX_END:us)%",
    });
    let px = api_proxy_with_json_log(&upstream, fields);
    let mut c = px.client();

    assert_eq!(c.get("/api/get").status, 200);
    let post = c.send("POST", "/api/post", &[("content-type", "text/plain")], &[b'x'; 20_000]);
    assert_eq!(post.status, 200, "{post:?}");
    assert_eq!(upstream.last_request().body.len(), 20_000);
    assert_eq!(c.get("/nowhere").status, 404);

    let entries = json_log_entries(&px, 3);
    let us = |entry: &BTreeMap<String, Value>, key: &str| {
        entry[key].as_u64().unwrap_or_else(|| panic!("{key} is not a number: {entry:?}"))
    };
    for proxied in &entries[..2] {
        assert!(proxied["request_ms"].is_u64() && proxied["request_tx_ms"].is_u64(), "{proxied:?}");
        let (rx_end, tx_beg, tx_end, done) =
            (us(proxied, "rx_end_us"), us(proxied, "tx_beg_us"), us(proxied, "tx_end_us"), us(proxied, "done_us"));
        assert!(tx_beg <= tx_end && rx_end <= tx_end && tx_end <= done, "{proxied:?}");
    }
    let not_routed = &entries[2];
    assert!(not_routed["request_ms"].is_u64(), "{not_routed:?}");
    assert_eq!(
        (&not_routed["request_tx_ms"], &not_routed["tx_end_us"]),
        (&Value::Null, &Value::Null),
        "{not_routed:?}"
    );
}

/// Two listeners can share one cluster; a second connection manager has its own stats.
#[test]
fn two_http_listeners_keep_separate_stats() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("ok"));
    let routes = |name: &str| {
        legate_testing::config::route_config(vec![legate_testing::config::virtual_host(
            name,
            &["*"],
            vec![legate_testing::config::route_to("/", "backend")],
        )])
    };
    let listener = |name: &str| {
        legate_testing::config::http_listener(
            name,
            routes(name),
            vec![legate_testing::config::router_filter()],
            json!({}),
        )
    };
    let config = bootstrap(vec![listener("one"), listener("two")], vec![static_cluster("backend", &[upstream.addr()])]);
    let px = start(&config);

    for _ in 0..3 {
        assert_eq!(HttpClient::connect(px.connect_addr("one")).get("/").status, 200);
    }
    assert_eq!(HttpClient::connect(px.connect_addr("two")).get("/").status, 200);

    px.wait_stat("http.one.downstream_rq_2xx", 3);
    px.wait_stat("http.two.downstream_rq_2xx", 1);
    px.wait_stat("cluster.backend.upstream_rq_2xx", 4);
}

/// Two listeners sharing a connection manager `stat_prefix`: `http.<prefix>.*` adds them up,
/// and `listener.<listener>.http.<prefix>.*` keeps each listener's responses (Envoy's
/// `ConnectionManagerListenerStats`), the codec's own replies included.
#[test]
fn per_listener_http_stats_split_a_shared_stat_prefix() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("ok"));
    let routes = legate_testing::config::route_config(vec![legate_testing::config::virtual_host(
        "web",
        &["*"],
        vec![legate_testing::config::route_to("/", "backend")],
    )]);
    let listener = |name: &str| {
        legate_testing::config::http_listener(
            name,
            routes.clone(),
            vec![legate_testing::config::router_filter()],
            json!({ "stat_prefix": "web" }),
        )
    };
    let config = bootstrap(vec![listener("one"), listener("two")], vec![static_cluster("backend", &[upstream.addr()])]);
    let px = start(&config);

    for _ in 0..3 {
        assert_eq!(HttpClient::connect(px.connect_addr("one")).get("/").status, 200);
    }
    assert_eq!(HttpClient::connect(px.connect_addr("two")).get("/").status, 200);
    let refused = HttpClient::connect(px.connect_addr("two")).raw(b"GET / HTTP/1.1\r\nbad header\r\n\r\n");
    assert!(refused.starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&refused));

    px.wait_stat("http.web.downstream_rq_2xx", 4);
    px.wait_stat("http.web.downstream_rq_4xx", 1);
    px.wait_stat("http.web.downstream_rq_completed", 5);
    px.wait_stat("listener.one.http.web.downstream_rq_2xx", 3);
    px.wait_stat("listener.one.http.web.downstream_rq_completed", 3);
    px.wait_stat("listener.two.http.web.downstream_rq_2xx", 1);
    px.wait_stat("listener.two.http.web.downstream_rq_4xx", 1);
    px.wait_stat("listener.two.http.web.downstream_rq_completed", 2);
    assert_eq!(px.stat("listener.one.http.web.downstream_rq_4xx"), Some(0));
}

/// `/clusters` per host: `rq_success` counts answers below 500, `rq_error` 5xx answers; a
/// gRPC answer counts by its `grpc-status` (Envoy's router defers it to the trailers).
#[test]
fn clusters_count_each_hosts_successes_and_errors() {
    let upstream = HttpUpstream::http2(|r| match r.path.as_str() {
        "/fail" => UpstreamAction::status(503, "no"),
        "/grpc-ok" => UpstreamAction::Grpc { message: bytes::Bytes::from_static(b"\x08\x01"), grpc_status: 0 },
        "/grpc-unavailable" => UpstreamAction::Grpc { message: bytes::Bytes::new(), grpc_status: 14 },
        _ => UpstreamAction::ok("fine"),
    });
    let mut config = http_bootstrap(&[upstream.addr()]);
    let cluster = cluster_config(&mut config, 0).take();
    *cluster_config(&mut config, 0) = with_http2(cluster);
    let px = start(&config);
    let mut c = HttpClient::connect(px.connect_addr("ingress"));
    let grpc = [("content-type", "application/grpc")];

    for (path, status) in [("/", 200), ("/", 200), ("/fail", 503), ("/grpc-ok", 200), ("/grpc-unavailable", 200)] {
        let headers: &[(&str, &str)] = if path.starts_with("/grpc") { &grpc } else { &[] };
        assert_eq!(c.send("POST", path, headers, b"").status, status, "{path}");
    }

    let host = upstream.addr();
    let text = legate_testing::eventually(
        "/clusters to count the five answers",
        legate_testing::EVENTUALLY,
        || px.admin_get("/clusters").1,
        |t| t.contains(&format!("backend::{host}::rq_total::5\n")),
    );
    for line in [format!("backend::{host}::rq_success::3"), format!("backend::{host}::rq_error::2")] {
        assert!(text.lines().any(|l| l == line), "/clusters lacks {line:?}:\n{text}");
    }
}

/// `/drain_listeners?graceful` runs Envoy's drain sequence: connections are told to finish
/// (an idle one closes), new ones still come in and are answered with `connection: close`,
/// and the listener stops once `--drain-time-s` is over. `skip_exit` needs `graceful`.
#[test]
fn drain_listeners_graceful_drains_then_stops_accepting() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("ok"));
    let config = http_bootstrap(&[upstream.addr()]);
    let px = Legate::builder(legate_bin!()).config(&config.to_string()).arg("--drain-time-s").arg("2").start();
    let addr = px.connect_addr("ingress");
    let mut kept = HttpClient::connect(addr);
    let r = kept.get("/");
    assert_eq!((r.status, r.header("connection")), (200, None), "{r:?}");

    assert_eq!(px.admin_post("/drain_listeners?skip_exit"), (400, "skip_exit requires graceful\n".to_string()));
    assert_eq!(px.admin_post("/drain_listeners?graceful").0, 200);

    assert!(kept.closed_within(legate_testing::EVENTUALLY), "an idle connection closes when the drain starts");
    let r = HttpClient::connect(addr).get("/");
    assert_eq!((r.status, r.header("connection")), (200, Some("close")), "a new one, during the drain: {r:?}");
    legate_testing::eventually(
        "the listener to stop after the drain time",
        legate_testing::EVENTUALLY,
        || legate_testing::is_refused(addr),
        |r| *r,
    );
}

/// `/drain_listeners?inboundonly` stops the listeners whose `traffic_direction` is INBOUND;
/// the others keep accepting.
#[test]
fn drain_listeners_inboundonly_stops_only_inbound_listeners() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("ok"));
    let routes = legate_testing::config::route_config(vec![legate_testing::config::virtual_host(
        "all",
        &["*"],
        vec![legate_testing::config::route_to("/", "backend")],
    )]);
    let listener = |name: &str, direction: &str| {
        let mut l = legate_testing::config::http_listener(
            name,
            routes.clone(),
            vec![legate_testing::config::router_filter()],
            json!({}),
        );
        l["traffic_direction"] = json!(direction);
        l
    };
    let config = bootstrap(
        vec![listener("inbound", "INBOUND"), listener("outbound", "OUTBOUND")],
        vec![static_cluster("backend", &[upstream.addr()])],
    );
    let px = start(&config);
    let (inbound, outbound) = (px.connect_addr("inbound"), px.connect_addr("outbound"));

    assert_eq!(px.admin_post("/drain_listeners?inboundonly").0, 200);

    legate_testing::eventually(
        "the inbound listener to stop",
        legate_testing::EVENTUALLY,
        || legate_testing::is_refused(inbound),
        |r| *r,
    );
    assert_eq!(HttpClient::connect(outbound).get("/").status, 200);
    px.wait_stat("listener_manager.listener_stopped", 1);
}

/// A raw HTTP/1.1 upstream: records each request's bytes and answers with a fixed response.
fn raw_upstream(response: &'static [u8]) -> (std::net::SocketAddr, std::sync::mpsc::Receiver<Vec<u8>>) {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                    if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                        let _ = tx.send(request.drain(..end + 4).collect());
                        let _ = stream.write_all(response);
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// `header_key_format`: `preserve_case` downstream and upstream writes header names as the
/// peer sent them (Envoy Gateway's `http1-preserve-case`); `proper_case_words` writes
/// `Content-Type`.
#[test]
fn header_key_format_preserves_or_proper_cases_header_names() {
    let (upstream, requests) = raw_upstream(
        b"HTTP/1.1 200 OK\r\nX-Mixed-CASE: yes\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok",
    );
    let preserve = json!({ "stateful_formatter": { "name": "preserve_case", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.http.header_formatters.preserve_case.v3.PreserveCaseFormatterConfig"
    } } });
    let mut config = http_bootstrap(&[upstream]);
    hcm_config(&mut config, 0)["http_protocol_options"] = json!({ "header_key_format": preserve });
    cluster_config(&mut config, 0)["typed_extension_protocol_options"] = json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": { "http_protocol_options": { "header_key_format": preserve } }
        }
    });
    let px = Legate::start(legate_bin!(), &config.to_string());
    let reply = HttpClient::connect(px.connect_addr("ingress"))
        .raw(b"GET / HTTP/1.1\r\nHost: example.com\r\nX-Custom-HEADER: 1\r\nConnection: close\r\n\r\n");
    let reply = String::from_utf8_lossy(&reply).to_string();
    assert!(reply.contains("X-Mixed-CASE: yes"), "{reply}");
    let request = String::from_utf8(requests.recv_timeout(Duration::from_secs(10)).unwrap()).unwrap();
    assert!(request.contains("X-Custom-HEADER: 1"), "{request}");
    drop(px);

    let mut config = http_bootstrap(&[upstream]);
    hcm_config(&mut config, 0)["http_protocol_options"] = json!({ "header_key_format": { "proper_case_words": {} } });
    let px = Legate::start(legate_bin!(), &config.to_string());
    let reply = HttpClient::connect(px.connect_addr("ingress"))
        .raw(b"GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n");
    let reply = String::from_utf8_lossy(&reply).to_string();
    assert!(reply.contains("Content-Type: text/plain") && reply.contains("X-Mixed-Case: yes"), "{reply}");
}

/// An HTTP/1.0 upstream's answer reaches an HTTP/1.1 client as an HTTP/1.1 response, framed
/// for it (Envoy's codec writes its own version): it used to go out as `HTTP/1.0` and close
/// the client's connection.
#[test]
fn an_http10_upstream_answers_an_http11_client_in_http11() {
    use std::io::{BufRead, BufReader, Read};
    let upstream = legate_testing::TcpServer::start(|stream| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
            line.clear();
        }
        let mut stream = stream;
        let _ = stream.write_all(b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nold server");
    });
    let px = start(&http_bootstrap(&[upstream.addr()]));
    let mut client = HttpClient::connect(px.listener_addr("ingress"));
    let first = client.get("/one");
    assert_eq!((first.status, first.body.as_str()), (200, "old server"));
    client.stream().write_all(b"GET /raw HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    client.stream().read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200 OK\r\n"), "{raw}");
    assert!(raw.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{raw}");
}
