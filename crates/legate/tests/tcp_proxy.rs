//! `envoy.filters.network.tcp_proxy` end to end (Envoy docs: "TCP proxy", proto
//! `envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy`): the real binary between a real
//! client and real upstreams. Asserts the bytes the client sees and the stats an operator reads.

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use legate_testing::config::{bootstrap, listener, static_cluster, tcp_proxy, tcp_proxy_bootstrap};
use legate_testing::{
    connect, connect_with_recv_buffer, echo_roundtrip, eventually, expect_closed, json, legate_bin, read_to_end,
    BlackholeServer, BulkSender, ClosedPort, EofReplyServer, Legate, PatternChecker, PatternWriter, TagServer,
    TcpEchoServer, TcpServer, Value, EVENTUALLY,
};

const MIB: u64 = 1024 * 1024;

fn start(config: &Value) -> Legate {
    Legate::start(legate_bin!(), &config.to_string())
}

/// The tcp_proxy `typed_config` of the first filter of the first listener.
fn tcp_proxy_config(config: &mut Value) -> &mut Value {
    &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
}

fn cluster(config: &mut Value, index: usize) -> &mut Value {
    &mut config["static_resources"]["clusters"][index]
}

/// Connects, reads until the upstream closes, returns what arrived (a backend's tag).
fn fetch_tag(px: &Legate) -> String {
    let mut c = connect(px.listener_addr("ingress"));
    String::from_utf8(read_to_end(&mut c)).unwrap()
}

#[test]
fn round_robin_alternates_between_two_backends() {
    let a = TagServer::start("a");
    let b = TagServer::start("b");
    let px = start(&tcp_proxy_bootstrap(&[a.addr(), b.addr()]));

    let tags: Vec<String> = (0..10).map(|_| fetch_tag(&px)).collect();

    assert_eq!(tags.iter().filter(|t| *t == "a").count(), 5, "{tags:?}");
    assert_eq!(tags.iter().filter(|t| *t == "b").count(), 5, "{tags:?}");
    assert!(tags.windows(2).all(|w| w[0] != w[1]), "round robin must alternate: {tags:?}");
    px.wait_stat("cluster.backend.upstream_cx_total", 10);
    px.wait_stat("tcp.ingress.downstream_cx_total", 10);
}

#[test]
fn endpoint_weights_skew_round_robin() {
    let a = TagServer::start("a");
    let b = TagServer::start("b");
    let mut config = tcp_proxy_bootstrap(&[a.addr(), b.addr()]);
    let endpoints = &mut cluster(&mut config, 0)["load_assignment"]["endpoints"][0]["lb_endpoints"];
    endpoints[0]["load_balancing_weight"] = json!(3);
    endpoints[1]["load_balancing_weight"] = json!(1);
    let px = start(&config);

    let tags: Vec<String> = (0..40).map(|_| fetch_tag(&px)).collect();

    let (na, nb) = (tags.iter().filter(|t| *t == "a").count(), tags.iter().filter(|t| *t == "b").count());
    assert_eq!(na + nb, 40, "{tags:?}");
    // Weighted round robin is 3:1, so ~30/10; the bounds only allow for a random start.
    assert!((26..=34).contains(&na), "expected ~30 of 40 on the weight-3 endpoint, got a={na} b={nb}");
}

#[test]
fn lower_priority_is_unused_while_priority_0_is_healthy() {
    let p0 = TagServer::start("p0");
    let p1 = TagServer::start("p1");
    let mut config = tcp_proxy_bootstrap(&[p0.addr()]);
    let second = json!({ "priority": 1, "lb_endpoints": [{ "endpoint": { "address": legate_testing::config::address(p1.addr()) } }] });
    cluster(&mut config, 0)["load_assignment"]["endpoints"].as_array_mut().unwrap().push(second);
    let px = start(&config);

    let tags: Vec<String> = (0..6).map(|_| fetch_tag(&px)).collect();

    assert!(tags.iter().all(|t| t == "p0"), "{tags:?}");
    assert_eq!(p1.accepted(), 0);
}

#[test]
fn weighted_clusters_send_to_both_clusters() {
    let a = TagServer::start("a");
    let b = TagServer::start("b");
    let mut filter = tcp_proxy("ingress", "unused");
    filter["typed_config"].as_object_mut().unwrap().remove("cluster");
    filter["typed_config"]["weighted_clusters"] =
        json!({ "clusters": [{ "name": "a", "weight": 1 }, { "name": "b", "weight": 1 }] });
    let config = bootstrap(
        vec![listener("ingress", vec![filter])],
        vec![static_cluster("a", &[a.addr()]), static_cluster("b", &[b.addr()])],
    );
    let px = start(&config);

    let tags: Vec<String> = (0..40).map(|_| fetch_tag(&px)).collect();

    assert!(tags.iter().all(|t| t == "a" || t == "b"), "{tags:?}");
    // Two equal weights over 40 connections: all on one side has probability 2^-39.
    assert!(tags.iter().any(|t| t == "a") && tags.iter().any(|t| t == "b"), "{tags:?}");
    let na = tags.iter().filter(|t| *t == "a").count() as u64;
    px.wait_stat("cluster.a.upstream_cx_total", na);
    px.wait_stat("cluster.b.upstream_cx_total", 40 - na);
}

#[test]
fn twenty_mib_each_way_arrive_intact() {
    const TOTAL: u64 = 20 * MIB;
    let echo = TcpEchoServer::start();
    let px = start(&tcp_proxy_bootstrap(&[echo.addr()]));
    let mut c = connect(px.listener_addr("ingress"));
    let mut w = c.try_clone().unwrap();

    let writer = thread::spawn(move || {
        let mut pattern = PatternWriter::new(42);
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = TOTAL;
        while left > 0 {
            let n = (buf.len() as u64).min(left) as usize;
            pattern.fill(&mut buf[..n]);
            w.write_all(&buf[..n]).expect("write to proxy");
            left -= n as u64;
        }
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut checker = PatternChecker::new(42);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = c.read(&mut buf).unwrap_or_else(|e| panic!("read after {} bytes: {e}", checker.len()));
        if n == 0 {
            break;
        }
        checker.check(&buf[..n]).unwrap();
    }
    writer.join().unwrap();
    drop(c);

    assert_eq!(checker.len(), TOTAL, "echoed stream length");
    px.wait_stat("tcp.ingress.downstream_cx_rx_bytes_total", TOTAL);
    px.wait_stat("tcp.ingress.downstream_cx_tx_bytes_total", TOTAL);
    px.wait_stat("cluster.backend.upstream_cx_tx_bytes_total", TOTAL);
    px.wait_stat("cluster.backend.upstream_cx_rx_bytes_total", TOTAL);
}

/// Envoy's tcp_proxy enables half-close: a client FIN is forwarded and the upstream can still
/// answer afterwards.
#[test]
fn client_half_close_still_receives_upstream_reply() {
    let upstream = EofReplyServer::start();
    let px = start(&tcp_proxy_bootstrap(&[upstream.addr()]));
    let mut c = connect(px.listener_addr("ingress"));

    c.write_all(b"hello").unwrap();
    c.shutdown(Shutdown::Write).unwrap();

    assert_eq!(String::from_utf8(read_to_end(&mut c)).unwrap(), "received 5 bytes");
}

#[test]
fn upstream_half_close_client_can_still_send() {
    let (tx, rx) = mpsc::channel();
    let upstream = TcpServer::start(move |mut s| {
        s.write_all(b"bye").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        let _ = tx.send(got);
    });
    let px = start(&tcp_proxy_bootstrap(&[upstream.addr()]));
    let mut c = connect(px.listener_addr("ingress"));

    assert_eq!(read_to_end(&mut c), b"bye", "upstream greeting then FIN");
    c.write_all(b"still here").unwrap();
    c.shutdown(Shutdown::Write).unwrap();

    let got = rx.recv_timeout(EVENTUALLY).expect("upstream saw the client's FIN");
    assert_eq!(String::from_utf8_lossy(&got), "still here");
}

#[test]
fn idle_timeout_closes_connection_and_counts() {
    let echo = TcpEchoServer::start();
    let mut config = tcp_proxy_bootstrap(&[echo.addr()]);
    tcp_proxy_config(&mut config)["idle_timeout"] = json!("0.5s");
    let px = start(&config);
    let mut c = connect(px.listener_addr("ingress"));
    echo_roundtrip(&mut c, b"wake up");

    expect_closed(&mut c, "idle connection");

    px.wait_stat("tcp.ingress.idle_timeout", 1);
}

#[test]
fn max_downstream_connection_duration_closes_a_busy_connection() {
    let echo = TcpEchoServer::start();
    let mut config = tcp_proxy_bootstrap(&[echo.addr()]);
    tcp_proxy_config(&mut config)["max_downstream_connection_duration"] = json!("0.5s");
    let px = start(&config);
    let mut c = connect(px.listener_addr("ingress"));

    // Keep the connection busy (so an idle timer would not fire) until the proxy closes it.
    let closed = eventually(
        "the proxy to close a busy connection",
        EVENTUALLY,
        || {
            if c.write_all(b"x").is_err() {
                return true;
            }
            let mut b = [0u8; 1];
            match c.read(&mut b) {
                Ok(1) => false,
                Ok(_) => true,
                Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => true,
                Err(e) => panic!("reading the echo: {e}"),
            }
        },
        |closed| *closed,
    );
    assert!(closed);
    px.wait_stat("tcp.ingress.max_downstream_connection_duration", 1);
}

#[test]
fn refused_upstream_closes_downstream_and_counts_connect_fail() {
    let closed = ClosedPort::new();
    let px = start(&tcp_proxy_bootstrap(&[closed.addr()]));
    let mut c = connect(px.listener_addr("ingress"));

    expect_closed(&mut c, "downstream of a refused upstream");

    px.wait_stat("cluster.backend.upstream_cx_connect_fail", 1);
}

#[test]
fn max_connect_attempts_3_tries_three_times_then_gives_up() {
    let closed = ClosedPort::new();
    let mut config = tcp_proxy_bootstrap(&[closed.addr()]);
    tcp_proxy_config(&mut config)["max_connect_attempts"] = json!(3);
    let px = start(&config);
    let mut c = connect(px.listener_addr("ingress"));

    px.wait_stat("cluster.backend.upstream_cx_connect_fail", 3);
    px.wait_stat("cluster.backend.upstream_cx_connect_attempts_exceeded", 1);
    expect_closed(&mut c, "downstream after 3 refused attempts");
}

#[test]
fn hanging_upstream_hits_connect_timeout() {
    let hole = BlackholeServer::start();
    let mut config = tcp_proxy_bootstrap(&[hole.addr()]);
    cluster(&mut config, 0)["connect_timeout"] = json!("0.25s");
    let px = start(&config);
    let mut c = connect(px.listener_addr("ingress"));

    expect_closed(&mut c, "downstream of an upstream that never completes the handshake");

    px.wait_stat("cluster.backend.upstream_cx_connect_timeout", 1);
    // A connect that timed out also failed, as Envoy's pools count it.
    px.wait_stat("cluster.backend.upstream_cx_connect_fail", 1);
}

#[test]
fn two_hundred_concurrent_connections_over_two_workers() {
    const N: usize = 200;
    let echo = TcpEchoServer::start();
    let px =
        Legate::builder(legate_bin!()).config(&tcp_proxy_bootstrap(&[echo.addr()]).to_string()).concurrency(2).start();
    let addr = px.listener_addr("ingress");

    let mut conns: Vec<_> = (0..N).map(|_| connect(addr)).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.write_all(format!("connection {i:03}\n").as_bytes()).unwrap();
    }
    // All written before any is read: the 200 are open at the same time.
    for (i, c) in conns.iter_mut().enumerate() {
        let expected = format!("connection {i:03}\n");
        let mut got = vec![0; expected.len()];
        c.read_exact(&mut got).unwrap_or_else(|e| panic!("connection {i}: {e}"));
        assert_eq!(String::from_utf8_lossy(&got), expected);
    }
    drop(conns);

    px.wait_stat("listener.ingress.downstream_cx_total", N as u64);
    eventually(
        "worker_0 + worker_1 downstream_cx_total == 200",
        EVENTUALLY,
        || {
            let s = px.stats();
            (
                s.get("listener.ingress.worker_0.downstream_cx_total").copied(),
                s.get("listener.ingress.worker_1.downstream_cx_total").copied(),
            )
        },
        |(w0, w1)| w0.unwrap_or(0) + w1.unwrap_or(0) == N as u64,
    );
    px.wait_stat("listener.ingress.downstream_cx_active", 0);
    assert_eq!(echo.accepted(), N);
}

#[test]
fn circuit_breaker_max_connections_1_rejects_the_second_connection() {
    let echo = TcpEchoServer::start();
    let mut config = tcp_proxy_bootstrap(&[echo.addr()]);
    cluster(&mut config, 0)["circuit_breakers"] = json!({ "thresholds": [{ "max_connections": 1 }] });
    let px = start(&config);
    let addr = px.listener_addr("ingress");
    let mut first = connect(addr);
    echo_roundtrip(&mut first, b"first");
    px.wait_stat("cluster.backend.circuit_breakers.default.cx_open", 1);

    let mut second = connect(addr);
    expect_closed(&mut second, "connection over the circuit breaker");

    px.wait_stat("cluster.backend.upstream_cx_overflow", 1);
    echo_roundtrip(&mut first, b"first still works");
    assert_eq!(echo.accepted(), 1);
}

/// `per_connection_buffer_limit_bytes` bounds what legate holds for a client that does not
/// read: reading from the upstream stops at the high watermark (Envoy "Flow control"), so a
/// 50 MiB flood neither grows legate's memory nor is lost.
#[test]
fn slow_reader_back_pressure_bounds_memory_and_loses_nothing() {
    const TOTAL: u64 = 50 * MIB;
    let sender = BulkSender::start(TOTAL, 7);
    let mut config = tcp_proxy_bootstrap(&[sender.addr()]);
    config["static_resources"]["listeners"][0]["per_connection_buffer_limit_bytes"] = json!(65536);
    cluster(&mut config, 0)["per_connection_buffer_limit_bytes"] = json!(65536);
    let px = start(&config);
    let baseline_kib = px.rss_kib();

    let mut c = connect_with_recv_buffer(px.listener_addr("ingress"), 64 * 1024);
    // Wait until the flood stalls: nothing written for a whole second.
    let mut last = (0, Instant::now());
    let (stalled_at, _) = eventually(
        "the upstream's writes to stall while the client does not read",
        Duration::from_secs(30),
        || {
            let w = sender.written();
            if w != last.0 {
                last = (w, Instant::now());
            }
            (w, last.1.elapsed())
        },
        |(w, quiet)| *w > 0 && *quiet >= Duration::from_secs(1),
    );
    let rss_kib = px.rss_kib();
    eprintln!("upstream stalled after {stalled_at} bytes; legate RSS {baseline_kib} KiB -> {rss_kib} KiB");
    // What waits for the client is in the downstream write buffer's gauge; reading from the
    // upstream paused.
    assert!(px.stat("tcp.ingress.downstream_cx_tx_bytes_buffered").is_some_and(|b| b > 0));
    assert_eq!(px.stat("tcp.ingress.downstream_cx_rx_bytes_buffered"), Some(0));
    px.wait_stat_at_least("cluster.backend.upstream_flow_control_paused_reading_total", 1);

    assert!(
        stalled_at < TOTAL,
        "the upstream wrote all {TOTAL} bytes to a client that reads nothing: back-pressure did not reach it"
    );
    let growth_mib = rss_kib.saturating_sub(baseline_kib) / 1024;
    assert!(
        growth_mib < 40,
        "legate's RSS grew by {growth_mib} MiB ({baseline_kib} KiB -> {rss_kib} KiB) holding a stalled stream \
         (upstream wrote {stalled_at} bytes)"
    );

    let mut checker = PatternChecker::new(7);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = c.read(&mut buf).unwrap_or_else(|e| panic!("read after {} bytes: {e}", checker.len()));
        if n == 0 {
            break;
        }
        checker.check(&buf[..n]).unwrap();
    }
    assert_eq!(checker.len(), TOTAL, "bytes received after the client started reading");
    // Resumed at half the limit, not at every byte drained: far fewer pauses than reads.
    let paused = px.stat("cluster.backend.upstream_flow_control_paused_reading_total").unwrap_or(0);
    assert!(paused < TOTAL / 65536, "{paused} pauses for {} limit-sized chunks", TOTAL / 65536);
    px.wait_stat("tcp.ingress.downstream_cx_tx_bytes_buffered", 0);
}

/// Envoy checks the connection breaker before it picks a host: a full breaker is an overflow
/// even when no host is healthy.
#[test]
fn a_full_connection_breaker_overflows_before_any_host_is_picked() {
    let mut config = tcp_proxy_bootstrap(&[]);
    cluster(&mut config, 0)["circuit_breakers"] = json!({ "thresholds": [{ "max_connections": 0 }] });
    let px = start(&config);
    let mut c = connect(px.listener_addr("ingress"));

    expect_closed(&mut c, "downstream of a full breaker");

    px.wait_stat("cluster.backend.upstream_cx_overflow", 1);
    assert_eq!(px.stat("cluster.backend.upstream_cx_none_healthy"), Some(0));
}

#[test]
fn random_and_least_request_use_every_endpoint() {
    for policy in ["RANDOM", "LEAST_REQUEST"] {
        let a = TagServer::start("a");
        let b = TagServer::start("b");
        let mut config = tcp_proxy_bootstrap(&[a.addr(), b.addr()]);
        cluster(&mut config, 0)["lb_policy"] = json!(policy);
        let px = start(&config);

        let tags: Vec<String> = (0..40).map(|_| fetch_tag(&px)).collect();

        assert!(tags.iter().all(|t| t == "a" || t == "b"), "{policy}: {tags:?}");
        assert!(
            tags.iter().any(|t| t == "a") && tags.iter().any(|t| t == "b"),
            "{policy} never picked one endpoint: {tags:?}"
        );
    }
}

#[test]
fn strict_dns_cluster_resolves_localhost() {
    let echo = TcpEchoServer::start();
    let mut config = tcp_proxy_bootstrap(&[echo.addr()]);
    let c = cluster(&mut config, 0);
    c["type"] = json!("STRICT_DNS");
    c["dns_lookup_family"] = json!("V4_ONLY");
    c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["address"] =
        json!("localhost");
    let px = start(&config);
    px.wait_stat("cluster.backend.membership_healthy", 1);

    let mut conn = connect(px.listener_addr("ingress"));
    echo_roundtrip(&mut conn, b"via dns");
}

/// A client's FIN while the upstream connects is a half-close, not a departure: Envoy's
/// tcp_proxy runs with half-close on, and its `readDisable` then does not watch for an early
/// close. The attempt goes on, and the connection ends with it (here its `connect_timeout`).
#[test]
fn client_leaving_during_upstream_connect_ends_with_the_attempt() {
    let hole = BlackholeServer::start();
    let mut config = tcp_proxy_bootstrap(&[hole.addr()]);
    cluster(&mut config, 0)["connect_timeout"] = json!("1s");
    let px = start(&config);
    let c = connect(px.listener_addr("ingress"));
    px.wait_stat("cluster.backend.upstream_cx_total", 1);

    drop(c);

    px.wait_stat("cluster.backend.upstream_cx_connect_timeout", 1);
    px.wait_stat("listener.ingress.downstream_cx_active", 0);
    px.wait_stat("cluster.backend.upstream_cx_active", 0);
}

/// A client that half-closes before the upstream connection is up (`nc -N` with nothing to
/// send, against a server that speaks first) still gets the server's bytes: its FIN reaches
/// the upstream once connected.
#[test]
fn a_half_close_before_the_upstream_connects_still_gets_the_reply() {
    let banner = TagServer::start("banner");
    let px = start(&tcp_proxy_bootstrap(&[banner.addr()]));
    let mut c = connect(px.listener_addr("ingress"));

    c.shutdown(Shutdown::Write).unwrap();

    assert_eq!(String::from_utf8(read_to_end(&mut c)).unwrap(), "banner");
}

/// Connect results reach outlier detection (Envoy's tcp_proxy reports each connect failure,
/// and a success as the session's final result): a host refusing connections is ejected
/// after `consecutive_5xx` of them, and sessions go to the other host.
#[test]
fn a_host_refusing_connections_is_ejected_by_outlier_detection() {
    let closed = ClosedPort::new();
    let good = TagServer::start("good");
    let mut config = tcp_proxy_bootstrap(&[closed.addr(), good.addr()]);
    cluster(&mut config, 0)["outlier_detection"] =
        json!({ "consecutive_5xx": 2, "interval": "60s", "base_ejection_time": "60s", "max_ejection_percent": 50 });
    let px = start(&config);

    // Round robin alternates: the refusing host has failed twice within the first four.
    let tags: Vec<String> = (0..4).map(|_| fetch_tag(&px)).collect();
    assert_eq!(tags.iter().filter(|t| *t == "good").count(), 2, "{tags:?}");
    px.wait_stat("cluster.backend.outlier_detection.ejections_enforced_consecutive_5xx", 1);
    let tags: Vec<String> = (0..6).map(|_| fetch_tag(&px)).collect();
    assert!(tags.iter().all(|t| t == "good"), "only the healthy host is used now: {tags:?}");
}

/// `idle_timeout` runs from the connection's start (Envoy's `onNewConnection`): an upstream
/// whose connect hangs longer than it ends the session as idle.
#[test]
fn idle_timeout_runs_while_the_upstream_connect_hangs() {
    let hole = BlackholeServer::start();
    let mut config = tcp_proxy_bootstrap(&[hole.addr()]);
    cluster(&mut config, 0)["connect_timeout"] = json!("30s");
    tcp_proxy_config(&mut config)["idle_timeout"] = json!("0.3s");
    let px = start(&config);
    let mut c = connect(px.listener_addr("ingress"));

    expect_closed(&mut c, "downstream idle while its upstream connects");

    px.wait_stat("tcp.ingress.idle_timeout", 1);
    assert_eq!(px.stat("cluster.backend.upstream_cx_connect_timeout"), Some(0));
}
