//! Idle HTTP/1.1 keep-alive connections. Once a connection has idled for 20 ms legate puts its
//! request state aside (buffers, the request loop) and its whole task (the socket waits in the
//! worker's park; a client that came back soon after its last park keeps its task 250 ms
//! first); both are made again when the next bytes arrive. None of that may be visible to the client: every request on the connection
//! is answered, whatever shape it arrives in and however long the client paused before it.

use std::time::Duration;

use legate_testing::config::{hcm_config, http_bootstrap, json_access_log};
use legate_testing::{json, legate_bin, HttpProxy, HttpUpstream, UpstreamAction, EVENTUALLY};

/// Longer than the idle time after which legate parks a connection's socket (20 ms, or
/// 250 ms for a client that came back soon after its last park), with margin.
const PAUSE: Duration = Duration::from_millis(500);

/// A client pacing its requests: back soon after its connection was parked.
const SHORT_PAUSE: Duration = Duration::from_millis(80);

fn echo_upstream() -> HttpUpstream {
    HttpUpstream::http1(|r| UpstreamAction::ok(format!("{} {} {}", r.method, r.path, String::from_utf8_lossy(&r.body))))
}

#[test]
fn requests_after_idle_pauses_are_served_on_the_same_connection() {
    let upstream = echo_upstream();
    let px = HttpProxy::start(legate_bin!(), http_bootstrap(&[upstream.addr()]));
    let mut c = px.client();

    let r = c.get("/first");
    assert_eq!((r.status, r.body.as_str()), (200, "GET /first "), "{r:?}");

    // A plain request after a pause.
    std::thread::sleep(PAUSE);
    let r = c.get("/second");
    assert_eq!((r.status, r.body.as_str()), (200, "GET /second "), "{r:?}");

    // A request with a body after a pause.
    std::thread::sleep(PAUSE);
    let r = c.send("POST", "/third", &[], b"payload");
    assert_eq!((r.status, r.body.as_str()), (200, "POST /third payload"), "{r:?}");

    // Two pipelined requests in one write after a pause.
    std::thread::sleep(PAUSE);
    let mut both = c.request_head("GET", "/fourth", &[], 0);
    both.extend(c.request_head("GET", "/fifth", &[], 0));
    c.write_raw(&both).unwrap();
    let r = c.read_response().unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "GET /fourth "), "{r:?}");
    let r = c.read_response().unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "GET /fifth "), "{r:?}");

    // A head that arrives in two pieces with a pause in between, after a pause.
    std::thread::sleep(PAUSE);
    let head = c.request_head("GET", "/sixth", &[], 0);
    let (start, rest) = head.split_at(10);
    c.write_raw(start).unwrap();
    std::thread::sleep(PAUSE);
    c.write_raw(rest).unwrap();
    let r = c.read_response().unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "GET /sixth "), "{r:?}");

    // A body that arrives after a pause behind its head.
    std::thread::sleep(PAUSE);
    c.write_raw(&c.request_head("PUT", "/seventh", &[], 4)).unwrap();
    std::thread::sleep(PAUSE);
    c.write_raw(b"late").unwrap();
    let r = c.read_response().unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "PUT /seventh late"), "{r:?}");

    // Paced requests: parked once, then kept in the task between requests, then parked again.
    for i in 0..4 {
        std::thread::sleep(SHORT_PAUSE);
        let r = c.get(&format!("/paced/{i}"));
        assert_eq!((r.status, r.body.clone()), (200, format!("GET /paced/{i} ")), "{r:?}");
    }
    std::thread::sleep(PAUSE);
    let r = c.get("/eighth");
    assert_eq!((r.status, r.body.as_str()), (200, "GET /eighth "), "{r:?}");

    // All on one downstream connection, none closed by legate; and on one upstream
    // connection, which gave its buffers back during each pause and took them anew.
    assert_eq!(px.legate.stat("http.ingress.downstream_cx_total"), Some(1));
    assert_eq!(px.legate.stat("cluster.backend.upstream_cx_total"), Some(1));
    assert_eq!(px.legate.stat("http.ingress.downstream_rq_completed"), Some(12));
    assert_eq!(px.legate.stat("http.ingress.downstream_cx_destroy"), Some(0));
}

#[test]
fn a_parked_connection_still_times_out_and_drains() {
    let upstream = echo_upstream();
    let mut config = http_bootstrap(&[upstream.addr()]);
    hcm_config(&mut config, 0)["common_http_protocol_options"] = json!({ "idle_timeout": "1s" });
    let px = HttpProxy::start(legate_bin!(), config);

    // Idles past the park, then past the idle timeout.
    let mut idle = px.client();
    assert_eq!(idle.get("/").status, 200);
    assert!(idle.closed_within(EVENTUALLY), "legate should close the idle connection");
    px.legate.wait_stat("http.ingress.downstream_cx_idle_timeout", 1);
    px.legate.wait_stat("http.ingress.downstream_cx_destroy_local", 1);

    // Parked when the server drains: closed at once.
    let mut parked = px.client();
    assert_eq!(parked.get("/").status, 200);
    std::thread::sleep(PAUSE);
    let (status, _) = px.legate.admin_post("/drain_listeners");
    assert_eq!(status, 200);
    assert!(parked.closed_within(EVENTUALLY), "a drain closes a parked connection");
    px.legate.wait_stat("http.ingress.downstream_cx_drain_close", 1);
}

/// Parked connections are counted as open, and un-counted as the client closes each one,
/// while the others are answered on the same connection as before. More of them than one
/// segment of the park's table holds (128).
#[test]
fn many_parked_connections_resume_and_close_in_any_order() {
    const CLIENTS: usize = 300;
    let upstream = echo_upstream();
    let px = HttpProxy::start(legate_bin!(), http_bootstrap(&[upstream.addr()]));
    let mut clients: Vec<_> = (0..CLIENTS).map(|_| px.client()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let r = c.get(&format!("/first/{i}"));
        assert_eq!((r.status, r.body.clone()), (200, format!("GET /first/{i} ")), "{r:?}");
    }
    std::thread::sleep(PAUSE);
    assert_eq!(px.legate.stat("http.ingress.downstream_cx_active"), Some(CLIENTS as u64));

    // Every other client goes away while parked; the rest are answered, last first.
    let mut kept = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        if i % 2 == 0 {
            drop(c);
        } else {
            kept.push((i, c));
        }
    }
    px.legate.wait_stat("http.ingress.downstream_cx_destroy_remote", CLIENTS as u64 / 2);
    for (i, c) in kept.iter_mut().rev() {
        let r = c.get(&format!("/second/{i}"));
        assert_eq!((r.status, r.body.clone()), (200, format!("GET /second/{i} ")), "{r:?}");
    }
    assert_eq!(px.legate.stat("http.ingress.downstream_cx_active"), Some(CLIENTS as u64 / 2));
    assert_eq!(px.legate.stat("http.ingress.downstream_cx_total"), Some(CLIENTS as u64));
    assert_eq!(px.legate.stat("http.ingress.downstream_rq_completed"), Some(CLIENTS as u64 * 3 / 2));

    // Parked again, then all closed by their clients.
    std::thread::sleep(PAUSE);
    drop(kept);
    px.legate.wait_stat("http.ingress.downstream_cx_destroy_remote", CLIENTS as u64);
    px.legate.wait_stat("http.ingress.downstream_cx_active", 0);
    assert_eq!(px.legate.stat("http.ingress.downstream_cx_destroy_local"), Some(0));
    // The listener's count (read at the next stats flush) is back to 0 too.
    px.legate.wait_stat("server.total_connections", 0);
}

/// `max_connection_duration` reaches a connection that idles parked since its first request.
#[test]
fn a_parked_connection_reaches_its_max_connection_duration() {
    let upstream = echo_upstream();
    let mut config = http_bootstrap(&[upstream.addr()]);
    hcm_config(&mut config, 0)["common_http_protocol_options"] = json!({ "max_connection_duration": "1s" });
    let px = HttpProxy::start(legate_bin!(), config);
    let mut c = px.client();
    assert_eq!(c.get("/").status, 200);
    assert!(c.closed_within(EVENTUALLY), "legate should close the connection at its max duration");
    px.legate.wait_stat("http.ingress.downstream_cx_max_duration_reached", 1);
    px.legate.wait_stat("http.ingress.downstream_cx_destroy_local", 1);
    assert_eq!(px.legate.stat("http.ingress.downstream_cx_idle_timeout"), Some(0));
}

/// A parked connection keeps its description: the access log names the same connection and
/// addresses before and after each park (IPv4 addresses are kept inline, others boxed), and
/// `max_requests_per_connection` counts its requests across parks.
#[test]
fn a_parked_connection_keeps_its_id_addresses_and_request_count() {
    for ip in ["127.0.0.1", "::1"] {
        if ip == "::1" && std::net::TcpListener::bind("[::1]:0").is_err() {
            eprintln!("no IPv6 loopback here: the IPv6 case is skipped");
            continue;
        }
        let upstream = echo_upstream();
        let mut config = http_bootstrap(&[upstream.addr()]);
        config["static_resources"]["listeners"][0]["address"] =
            json!({ "socket_address": { "address": ip, "port_value": 0 } });
        hcm_config(&mut config, 0)["common_http_protocol_options"] = json!({ "max_requests_per_connection": 3 });
        let fields = json!({
            "id": "%CONNECTION_ID%",
            "remote": "%DOWNSTREAM_REMOTE_ADDRESS%",
            "local": "%DOWNSTREAM_LOCAL_ADDRESS%",
        });
        let px = HttpProxy::with_access_log(legate_bin!(), config, |log| json_access_log(log, fields));
        let mut c = px.client();
        for i in 0..3 {
            if i > 0 {
                std::thread::sleep(PAUSE);
            }
            let r = c.get(&format!("/{i}"));
            assert_eq!((r.status, r.body.clone()), (200, format!("GET /{i} ")), "{ip}: {r:?}");
        }
        assert!(c.closed_within(EVENTUALLY), "{ip}: closed after its third request");
        px.legate.wait_stat("http.ingress.downstream_cx_max_requests_reached", 1);

        let lines = px.log_lines(3);
        let entries: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        let expected = json!({
            "id": entries[0]["id"],
            "remote": c.local_addr().to_string(),
            "local": px.addr().to_string(),
        });
        assert!(entries[0]["id"].is_number(), "{ip}: {lines:?}");
        for entry in &entries {
            assert_eq!(entry, &expected, "{ip}: {lines:?}");
        }
        assert_eq!(px.legate.stat("http.ingress.downstream_cx_total"), Some(1), "{ip}");
    }
}
