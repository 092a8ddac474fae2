//! The HTTP timeout timeline (DESIGN.md §3 steps 5, 9 and 11; Envoy docs: "Timeouts" FAQ,
//! `HttpConnectionManager` and `HttpProtocolOptions` protos): what the client sees when each
//! downstream and upstream timer fires, and the stat that counts it.
//!
//! Envoy's 408-or-504 rule (`Http::Utility::maybeRequestTimeoutCode`, used by
//! `onIdleTimeout`, `onRequestTimeout` and `onRequestHeaderTimeout` in `conn_manager_impl.cc`):
//! 504 when the whole request had been received, 408 when it had not.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use legate_testing::config::{cluster_config, hcm_config, http_bootstrap, http_protocol_options, route_action};
use legate_testing::{
    h2_events, hpack_request, json, legate_bin, H2Event, H2Frame, HttpProxy, HttpUpstream, UpstreamAction, EVENTUALLY,
    H2_PREFACE,
};

fn ok_upstream() -> HttpUpstream {
    HttpUpstream::http1(|_| UpstreamAction::ok("ok"))
}

/// `common_http_protocol_options.idle_timeout`: a connection with no stream is closed.
#[test]
fn downstream_idle_timeout_closes_an_idle_connection() {
    let upstream = ok_upstream();
    let mut config = http_bootstrap(&[upstream.addr()]);
    hcm_config(&mut config, 0)["common_http_protocol_options"] = json!({ "idle_timeout": "0.5s" });
    let px = HttpProxy::start(legate_bin!(), config);
    let mut c = px.client();
    assert_eq!(c.get("/").status, 200);

    assert!(c.closed_within(EVENTUALLY), "legate should close the idle connection");

    px.legate.wait_stat("http.ingress.downstream_cx_idle_timeout", 1);
    px.legate.wait_stat("http.ingress.downstream_cx_destroy_local", 1);
}

/// `common_http_protocol_options.max_connection_duration`: a busy HTTP/1.1 connection is
/// drained (`connection: close` on a response, or closed between requests).
#[test]
fn max_connection_duration_ends_a_busy_connection() {
    let upstream = ok_upstream();
    let mut config = http_bootstrap(&[upstream.addr()]);
    hcm_config(&mut config, 0)["common_http_protocol_options"] = json!({ "max_connection_duration": "1s" });
    let px = HttpProxy::start(legate_bin!(), config);
    let mut c = px.client();
    let started = Instant::now();

    let mut answered = 0;
    let ended = loop {
        match c.try_send("GET", "/", &[], b"") {
            Ok(r) => {
                assert_eq!(r.status, 200, "{r:?}");
                answered += 1;
                if r.header_all("connection").iter().any(|v| v.eq_ignore_ascii_case("close")) {
                    assert!(c.closed_within(EVENTUALLY), "closed after `connection: close`");
                    break "connection: close";
                }
            }
            Err(_) => break "closed between requests",
        }
        if started.elapsed() > EVENTUALLY {
            panic!("connection still serving after {answered} requests and {:?}", started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    };

    assert!(answered >= 1, "ended by {ended} before any request was answered");
    assert!(started.elapsed() >= Duration::from_millis(900), "ended by {ended} after only {:?}", started.elapsed());
    px.legate.wait_stat("http.ingress.downstream_cx_max_duration_reached", 1);
}

/// `stream_idle_timeout` with the whole request received and an upstream that never answers:
/// Envoy's `onIdleTimeout` replies `maybeRequestTimeoutCode(true)` = 504 "stream timeout", `SI`.
#[test]
fn stream_idle_timeout_after_the_whole_request_is_504_stream_timeout_si() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::Hang);
    let mut config = http_bootstrap(&[upstream.addr()]);
    hcm_config(&mut config, 0)["stream_idle_timeout"] = json!("0.5s");
    let px = HttpProxy::start(legate_bin!(), config);

    let r = px.client().get("/");

    assert_eq!(r.body, "stream timeout", "{r:?}");
    px.legate.wait_stat("http.ingress.downstream_rq_idle_timeout", 1);
    assert_eq!(px.logged(1).split(' ').nth(1), Some("SI"), "response flag");
    assert_eq!(r.status, 504, "Envoy answers 504 when the request was complete (maybeRequestTimeoutCode)");
}

/// A route's `idle_timeout` takes the place of the connection manager's
/// `stream_idle_timeout`: shorter, it fires; 0, there is none on that route.
#[test]
fn a_routes_idle_timeout_replaces_the_stream_idle_timeout() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::delay(Duration::from_secs(1), UpstreamAction::ok("late")));
    for (route_idle, hcm_idle, expected) in [("0.3s", "300s", 504), ("0s", "0.3s", 200)] {
        let mut config = http_bootstrap(&[upstream.addr()]);
        hcm_config(&mut config, 0)["stream_idle_timeout"] = json!(hcm_idle);
        route_action(&mut config)["idle_timeout"] = json!(route_idle);
        let px = HttpProxy::start(legate_bin!(), config);

        let r = px.client().get("/");

        assert_eq!(r.status, expected, "route {route_idle}, connection manager {hcm_idle}: {r:?}");
    }
}

/// `stream_idle_timeout` while the request body is still arriving: 408 "stream timeout".
#[test]
fn stream_idle_timeout_while_the_body_stalls_is_408_stream_timeout() {
    let upstream = ok_upstream();
    let mut config = http_bootstrap(&[upstream.addr()]);
    hcm_config(&mut config, 0)["stream_idle_timeout"] = json!("0.5s");
    let px = HttpProxy::start(legate_bin!(), config);
    let mut c = px.client();

    c.write_head("POST", "/upload", &[], 100).unwrap();
    c.write_raw(&[b'x'; 10]).unwrap();
    let r = c.read_response().unwrap();

    assert_eq!((r.status, r.body.as_str()), (408, "stream timeout"), "{r:?}");
    px.legate.wait_stat("http.ingress.downstream_rq_idle_timeout", 1);
    assert_eq!(px.logged(1), "408 SI");
}

/// `stream_idle_timeout` while the response body stalls: the response has started, so the
/// stream can only be reset (the connection closes mid-body), counted as an idle timeout and
/// as a reset after the response started.
#[test]
fn stream_idle_timeout_while_the_response_body_stalls_resets_the_stream() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::Stream {
        chunks: vec![bytes::Bytes::from_static(b"first"), bytes::Bytes::from_static(b"never")],
        interval: Duration::from_secs(60),
    });
    let mut config = http_bootstrap(&[upstream.addr()]);
    hcm_config(&mut config, 0)["stream_idle_timeout"] = json!("0.5s");
    let px = HttpProxy::start(legate_bin!(), config);
    let mut c = px.client();

    c.write_head("GET", "/", &[], 0).unwrap();
    let mut body = Vec::new();
    let r = c.read_response_streaming(|chunk| body.extend_from_slice(chunk));

    assert!(r.is_err(), "the response cannot end normally: {r:?}");
    assert_eq!(body, b"first", "what the upstream sent before it stalled came through");
    px.legate.wait_stat("http.ingress.downstream_rq_idle_timeout", 1);
    px.legate.wait_stat("http.ingress.rq_reset_after_downstream_response_started", 1);
    px.legate.wait_stat("http.ingress.downstream_rq_tx_reset", 1);
    assert_eq!(px.legate.stat("http.ingress.downstream_rq_rx_reset"), Some(0), "legate reset it, not the client");
}

/// `per_try_timeout` bounds a try until its response starts: a body that streams for longer
/// comes through whole (Envoy's `onPerTryTimeout` ignores the timer once the downstream
/// response started), under the route's `timeout`.
#[test]
fn per_try_timeout_does_not_cut_a_response_body_that_already_started() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::Stream {
        chunks: [&b"one"[..], b"two", b"three", b"four"].into_iter().map(bytes::Bytes::from_static).collect(),
        interval: Duration::from_millis(250),
    });
    let mut config = http_bootstrap(&[upstream.addr()]);
    route_action(&mut config)["timeout"] = json!("10s");
    route_action(&mut config)["retry_policy"] =
        json!({ "retry_on": "5xx", "num_retries": 1, "per_try_timeout": "0.3s" });
    let px = HttpProxy::start(legate_bin!(), config);

    let r = px.client().get("/");

    assert_eq!((r.status, r.body.as_str()), (200, "onetwothreefour"), "{r:?}");
    assert_eq!(px.logged(1), "200 -");
    assert_eq!(upstream.request_count(), 1);
    assert_eq!(px.legate.stat("cluster.backend.upstream_rq_per_try_timeout"), Some(0));
    assert_eq!(px.legate.stat("cluster.backend.upstream_rq_timeout"), Some(0));
}

/// `request_timeout`: the whole request must arrive in time; headers and half a body then a
/// stall get 408 "request timeout".
#[test]
fn request_timeout_with_a_stalled_body_is_408_request_timeout() {
    let upstream = ok_upstream();
    let mut config = http_bootstrap(&[upstream.addr()]);
    hcm_config(&mut config, 0)["request_timeout"] = json!("0.5s");
    let px = HttpProxy::start(legate_bin!(), config);
    let mut c = px.client();

    c.write_head("POST", "/upload", &[], 100).unwrap();
    c.write_raw(&[b'x'; 50]).unwrap();
    let r = c.read_response().unwrap();

    assert_eq!((r.status, r.body.as_str()), (408, "request timeout"), "{r:?}");
    px.legate.wait_stat("http.ingress.downstream_rq_timeout", 1);
    // Answered before the request ended (Envoy counts it as the response head goes out).
    px.legate.wait_stat("http.ingress.downstream_rq_response_before_rq_complete", 1);
    assert!(c.closed_within(EVENTUALLY), "the rest of the request never came: the connection cannot be reused");
    assert!(upstream.requests().iter().all(|r| !r.body_complete), "the upstream never saw a whole request");
}

/// `request_headers_timeout`: half the headers then a stall. Envoy's
/// `onRequestHeaderTimeout` counts `downstream_rq_header_timeout` and replies 408 "request
/// header timeout" before closing.
#[test]
fn request_headers_timeout_closes_a_connection_stuck_in_its_headers() {
    let upstream = ok_upstream();
    let mut config = http_bootstrap(&[upstream.addr()]);
    hcm_config(&mut config, 0)["request_headers_timeout"] = json!("0.5s");
    let px = HttpProxy::start(legate_bin!(), config);
    let mut c = px.client();

    c.write_raw(b"GET /slow HTTP/1.1\r\nhost: example.com\r\nx-half: ").unwrap();
    let reply = c.read_raw(Duration::from_millis(500), EVENTUALLY);

    assert!(reply.closed, "legate should close the connection; got {:?}", reply.text());
    px.legate.wait_stat("http.ingress.downstream_rq_header_timeout", 1);
    // Envoy answers through a stream of its own: a request, and a 4xx response.
    px.legate.wait_stat("http.ingress.downstream_rq_4xx", 1);
    assert_eq!(px.legate.stat("http.ingress.downstream_rq_total"), Some(1));
    assert_eq!(upstream.request_count(), 0);
    let text = reply.text();
    assert!(
        text.starts_with("HTTP/1.1 408") && text.ends_with("request header timeout"),
        "Envoy replies 408 \"request header timeout\" before closing; got {text:?}"
    );
    // And it is logged, with no flag.
    assert_eq!(px.logged(1), "408 -");
}

/// The header timeout starts at the head's first byte, also on a connection that idled
/// before it (and whose buffers were given back meanwhile).
#[test]
fn request_headers_timeout_runs_for_a_head_started_after_an_idle_time() {
    let upstream = ok_upstream();
    let mut config = http_bootstrap(&[upstream.addr()]);
    hcm_config(&mut config, 0)["request_headers_timeout"] = json!("0.5s");
    let px = HttpProxy::start(legate_bin!(), config);
    let mut c = px.client();
    assert_eq!(c.get("/").status, 200);

    std::thread::sleep(Duration::from_millis(300));
    c.write_raw(b"GET /slow HTTP/1.1\r\nhost: example.com\r\nx-half: ").unwrap();
    let reply = c.read_raw(Duration::from_millis(500), EVENTUALLY);

    assert!(reply.closed && reply.text().starts_with("HTTP/1.1 408"), "got {:?}", reply.text());
    px.legate.wait_stat("http.ingress.downstream_rq_header_timeout", 1);
}

/// A listener whose every request is answered 403 by a direct response, before any of its
/// body is read; `delayed_close_timeout` as given.
fn early_reply_proxy(delayed_close_timeout: Option<&str>) -> (HttpUpstream, HttpProxy) {
    early_reply_proxy_with(delayed_close_timeout, json!({}))
}

/// [`early_reply_proxy`] with more connection manager fields.
fn early_reply_proxy_with(
    delayed_close_timeout: Option<&str>,
    hcm_fields: serde_json::Value,
) -> (HttpUpstream, HttpProxy) {
    let upstream = ok_upstream();
    let mut config = http_bootstrap(&[upstream.addr()]);
    let hcm = hcm_config(&mut config, 0);
    for (field, value) in hcm_fields.as_object().into_iter().flatten() {
        hcm[field] = value.clone();
    }
    hcm["route_config"]["virtual_hosts"][0]["routes"][0] = json!({
        "match": { "prefix": "/" },
        "direct_response": { "status": 403, "body": { "inline_string": "denied" } },
    });
    if let Some(timeout) = delayed_close_timeout {
        hcm["delayed_close_timeout"] = json!(timeout);
    }
    (upstream, HttpProxy::start(legate_bin!(), config))
}

/// Sends a request announcing a 16 MiB body, reads the early reply up to its body, then
/// sends the body: how many bytes of it went out before a write failed, and the error.
fn upload_after_early_reply(px: &HttpProxy) -> (TcpStream, String, usize, Option<std::io::Error>) {
    const BODY: usize = 16 << 20;
    let mut s = TcpStream::connect(px.addr()).unwrap();
    s.set_read_timeout(Some(EVENTUALLY)).unwrap();
    write!(s, "POST /upload HTTP/1.1\r\nhost: example.com\r\ncontent-length: {BODY}\r\n\r\n").unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !reply.ends_with(b"denied") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
        }
    }
    let chunk = vec![b'x'; 64 << 10];
    let mut sent = 0;
    let mut failed = None;
    while sent < BODY {
        match s.write(&chunk) {
            Ok(n) => sent += n,
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    (s, String::from_utf8_lossy(&reply).into_owned(), sent, failed)
}

/// Sends `request`, reads legate's 403 up to its FIN, and keeps this side open.
fn reply_then_legates_fin(px: &HttpProxy, request: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(px.addr()).unwrap();
    s.set_read_timeout(Some(EVENTUALLY)).unwrap();
    s.write_all(request).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    assert!(String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 403"), "{reply:?}");
    s
}

/// The client closes its side after legate's: its last read is a clean end of stream (not a
/// reset), and legate closes without its wait running out.
fn close_and_expect_a_clean_end(px: &HttpProxy, mut s: TcpStream) {
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let end = s.read_to_end(&mut rest);
    assert!(matches!(end, Ok(0)), "a clean end of stream, not a reset: {end:?}");
    px.legate.wait_stat("http.ingress.downstream_cx_destroy", 1);
    assert_eq!(px.legate.stat("http.ingress.downstream_cx_delayed_close_timeout"), Some(0));
}

/// `delayed_close_timeout` (default 1 s): legate answers before reading the request body
/// and closes, but keeps reading (and dropping) what the client still sends until the client
/// closes too. A socket closed with unread bytes answers with a reset, and a reset can
/// destroy the reply before the client reads it; here the whole body goes out and the
/// client's last read is a clean end of stream.
#[test]
fn a_closing_connection_reads_what_the_client_still_sends_until_it_closes() {
    // Longer than the default, for a loaded machine: the wait must outlast the upload.
    let (_upstream, px) = early_reply_proxy(Some("5s"));
    let (s, reply, sent, failed) = upload_after_early_reply(&px);

    assert!(reply.starts_with("HTTP/1.1 403") && reply.ends_with("denied"), "{reply:?}");
    assert!(failed.is_none(), "the whole body goes out, {sent} bytes did before {failed:?}");
    close_and_expect_a_clean_end(&px, s);
}

/// The same where hyper serves HTTP/1.1 (`header_key_format`).
#[test]
fn a_closing_connection_served_by_hyper_reads_what_the_client_still_sends() {
    let fields = json!({ "http_protocol_options": { "header_key_format": { "proper_case_words": {} } } });
    let (_upstream, px) = early_reply_proxy_with(Some("5s"), fields);
    let (s, reply, sent, failed) = upload_after_early_reply(&px);

    assert!(reply.starts_with("HTTP/1.1 403") && reply.ends_with("denied"), "{reply:?}");
    assert!(failed.is_none(), "the whole body goes out, {sent} bytes did before {failed:?}");
    close_and_expect_a_clean_end(&px, s);
}

/// `delayed_close_timeout` ends the wait for a client that does not close:
/// `downstream_cx_delayed_close_timeout` counts it. The client has had legate's FIN at once.
#[test]
fn delayed_close_timeout_ends_the_wait_for_a_client_that_does_not_close() {
    let (_upstream, px) = early_reply_proxy(Some("0.3s"));
    let _open = reply_then_legates_fin(&px, b"POST / HTTP/1.1\r\nhost: example.com\r\ncontent-length: 100000\r\n\r\n");

    // Still open on this side: legate closes once its wait is over.
    px.legate.wait_stat("http.ingress.downstream_cx_delayed_close_timeout", 1);
    px.legate.wait_stat("http.ingress.downstream_cx_destroy_local", 1);
}

/// A client whose request said `connection: close` and was read in full sends nothing more:
/// legate closes without waiting for it (here the wait would be a minute).
#[test]
fn a_client_done_with_its_last_request_is_not_waited_for() {
    let (_upstream, px) = early_reply_proxy(Some("60s"));
    let _open = reply_then_legates_fin(&px, b"GET / HTTP/1.1\r\nhost: example.com\r\nconnection: close\r\n\r\n");

    // This side stays open; legate's side is closed all the same.
    px.legate.wait_stat("http.ingress.downstream_cx_destroy_local", 1);
    assert_eq!(px.legate.stat("http.ingress.downstream_cx_delayed_close_timeout"), Some(0));
}

/// HTTP/2 too: a connection hyper closes (here on a client's protocol error, after its
/// GOAWAY) keeps reading and dropping what the client still sends until the client closes,
/// or until `delayed_close_timeout`, counted as for HTTP/1.1.
#[test]
fn an_http2_connection_closing_reads_what_the_client_still_sends() {
    let (_upstream, px) = early_reply_proxy(Some("2s"));
    let mut frames = H2_PREFACE.to_vec();
    H2Frame::settings(&[]).write_to(&mut frames);
    // DATA on stream 0: a connection error (PROTOCOL_ERROR).
    H2Frame { kind: 0x0, flags: 0, stream: 0, payload: b"x".to_vec() }.write_to(&mut frames);
    let goaway_then_eof = |s: &mut TcpStream| {
        s.set_read_timeout(Some(EVENTUALLY)).unwrap();
        s.write_all(&frames).unwrap();
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).unwrap();
        let events = h2_events(&reply);
        assert!(events.iter().any(|e| matches!(e, H2Event::GoAway { code: 1, .. })), "{events:?}");
    };

    // A client that goes on sending, then closes: all of it is read, and its last read is a
    // clean end of stream.
    let mut s = TcpStream::connect(px.addr()).unwrap();
    goaway_then_eof(&mut s);
    let junk = vec![0u8; 64 << 10];
    for _ in 0..256 {
        s.write_all(&junk).expect("legate reads what follows its GOAWAY until the client closes");
    }
    close_and_expect_a_clean_end(&px, s);

    // A client that does not close: the wait ends at the timeout.
    let mut idle = TcpStream::connect(px.addr()).unwrap();
    goaway_then_eof(&mut idle);
    px.legate.wait_stat("http.ingress.downstream_cx_delayed_close_timeout", 1);
    px.legate.wait_stat("http.ingress.downstream_cx_destroy", 2);
}

/// `delayed_close_timeout: 0s` closes the socket as soon as the reply is out: the rest of
/// the body meets a reset.
#[test]
fn delayed_close_timeout_zero_closes_at_once() {
    let (_upstream, px) = early_reply_proxy(Some("0s"));
    let (_s, reply, sent, failed) = upload_after_early_reply(&px);

    assert!(reply.starts_with("HTTP/1.1 403"), "{reply:?}");
    assert!(failed.is_some(), "a write fails once legate has closed; {sent} bytes went out");
    px.legate.wait_stat("http.ingress.downstream_cx_destroy_local", 1);
    assert_eq!(px.legate.stat("http.ingress.downstream_cx_delayed_close_timeout"), Some(0));
}

/// An upstream connection idle for the cluster's `common_http_protocol_options.idle_timeout`
/// is closed by legate.
#[test]
fn upstream_idle_timeout_closes_the_pooled_connection() {
    let upstream = ok_upstream();
    let mut config = http_bootstrap(&[upstream.addr()]);
    cluster_config(&mut config, 0)["typed_extension_protocol_options"] = http_protocol_options(json!({
        "common_http_protocol_options": { "idle_timeout": "0.5s" },
        "explicit_http_config": { "http_protocol_options": {} },
    }));
    let px = HttpProxy::start(legate_bin!(), config);
    let mut c = px.client();
    assert_eq!(c.get("/").status, 200);
    assert_eq!(upstream.connections(), 1);

    upstream.wait_active_connections(0);

    px.legate.wait_stat("cluster.backend.upstream_cx_idle_timeout", 1);
    px.legate.wait_stat("cluster.backend.upstream_cx_destroy_local", 1);
    // The next request opens a new connection.
    assert_eq!(c.get("/").status, 200);
    assert_eq!(upstream.connections(), 2);
}

/// `max_requests_per_connection: 2`: five sequential requests need three upstream
/// connections; Envoy counts each connection that reached the limit in `upstream_cx_max_requests`.
#[test]
fn max_requests_per_connection_opens_a_new_connection_every_two_requests() {
    let upstream = HttpUpstream::http1(|r| UpstreamAction::ok(r.connection.to_string()));
    let mut config = http_bootstrap(&[upstream.addr()]);
    cluster_config(&mut config, 0)["typed_extension_protocol_options"] = http_protocol_options(json!({
        "common_http_protocol_options": { "max_requests_per_connection": 2 },
        "explicit_http_config": { "http_protocol_options": {} },
    }));
    let px = HttpProxy::start(legate_bin!(), config);
    let mut c = px.client();

    let served_by: Vec<String> = (0..5).map(|_| c.get("/").body).collect();

    assert_eq!(served_by, ["0", "0", "1", "1", "2"], "upstream connection of each request");
    assert_eq!(upstream.connections(), 3);
    px.legate.wait_stat("cluster.backend.upstream_cx_total", 3);
    px.legate.wait_stat("cluster.backend.upstream_cx_max_requests", 2);
}

/// HTTP/2 downstream with the HCM's `max_requests_per_connection: 2`: both streams are
/// answered, then a GOAWAY drains the connection and it closes; Envoy counts it in
/// `downstream_cx_max_requests_reached`.
#[test]
fn an_http2_connection_reaching_max_requests_per_connection_is_drained_with_goaway() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("ok"));
    let mut config = http_bootstrap(&[upstream.addr()]);
    hcm_config(&mut config, 0)["codec_type"] = json!("AUTO");
    hcm_config(&mut config, 0)["common_http_protocol_options"] = json!({ "max_requests_per_connection": 2 });
    let px = HttpProxy::start(legate_bin!(), config);
    let mut c = px.client();

    let mut frames = H2_PREFACE.to_vec();
    H2Frame::settings(&[]).write_to(&mut frames);
    let block = hpack_request("GET", "/", "h2.example");
    H2Frame::headers(1, block.clone(), true).write_to(&mut frames);
    H2Frame::headers(3, block, true).write_to(&mut frames);
    let reply = c.raw_reply(&frames);

    let events = h2_events(&reply.bytes);
    let answered: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            H2Event::Headers { stream, status: Some(200), .. } => Some(*stream),
            _ => None,
        })
        .collect();
    assert_eq!(answered, [1, 3], "{events:?}");
    assert!(
        events.iter().any(|e| matches!(e, H2Event::GoAway { code: 0, .. })),
        "a GOAWAY (NO_ERROR) drains the connection: {events:?}"
    );
    // The graceful GOAWAY comes with a PING; as a client would, answer it, and the
    // connection closes.
    let ping = first_ping_payload(&reply.bytes).expect("a PING with the GOAWAY");
    let ack = H2Frame { kind: 0x6, flags: 0x1, stream: 0, payload: ping };
    let closing = c.raw_reply(&ack.to_bytes());
    assert!(reply.closed || closing.closed, "the connection closes once its streams are done");
    px.legate.wait_stat("http.ingress.downstream_cx_max_requests_reached", 1);
}

/// The payload of the first PING (not an ACK) among the frames in `bytes`.
fn first_ping_payload(mut bytes: &[u8]) -> Option<Vec<u8>> {
    while bytes.len() >= 9 {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        let (kind, flags) = (bytes[3], bytes[4]);
        let payload = bytes.get(9..9 + len)?;
        if kind == 0x6 && flags & 0x1 == 0 {
            return Some(payload.to_vec());
        }
        bytes = &bytes[9 + len..];
    }
    None
}

/// gRPC deadlines (Envoy's `finalTimeout`): with `grpc_timeout_header_max` a gRPC request's
/// `grpc-timeout` is its route timeout, capped (0: uncapped); the deprecated
/// `max_grpc_timeout` also rewrites the upstream's `grpc-timeout` to the deadline it has.
#[test]
fn grpc_timeout_sets_the_route_timeout_where_the_route_says_so() {
    let upstream = HttpUpstream::http1(|r| match r.path.as_str() {
        "/slow.Svc/Call" => UpstreamAction::delay(Duration::from_secs(3), UpstreamAction::ok("late")),
        _ => UpstreamAction::ok(format!(
            "{} {}",
            r.header("x-envoy-expected-rq-timeout-ms").unwrap_or("-"),
            r.header("grpc-timeout").unwrap_or("-")
        )),
    });
    let grpc = |timeout: &'static str| [("content-type", "application/grpc"), ("grpc-timeout", timeout)];

    let mut config = http_bootstrap(&[upstream.addr()]);
    route_action(&mut config)["max_stream_duration"] = json!({ "grpc_timeout_header_max": "0s" });
    let px = HttpProxy::start(legate_bin!(), config);
    let mut c = px.client();
    let r = c.send("POST", "/fast.Svc/Call", &grpc("300m"), b"");
    assert_eq!(r.body, "300 300m", "the deadline, and the header as sent: {r:?}");
    let r = c.send("POST", "/slow.Svc/Call", &grpc("300m"), b"");
    assert_eq!((r.status, r.header("grpc-status")), (200, Some("14")), "timed out as gRPC: {r:?}");
    assert_eq!(r.header("grpc-message"), Some("upstream request timeout"));

    let mut config = http_bootstrap(&[upstream.addr()]);
    route_action(&mut config)["max_grpc_timeout"] = json!("1s");
    let px = HttpProxy::start(legate_bin!(), config);
    let r = px.client().send("POST", "/fast.Svc/Call", &grpc("5S"), b"");
    assert_eq!(r.body, "1000 1000m", "capped, and the upstream told: {r:?}");
}
