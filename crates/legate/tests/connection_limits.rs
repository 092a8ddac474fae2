//! Connection limits at three levels, each rejecting by accepting and closing at once, as Envoy
//! does: the per-listener runtime limit (`envoy.resource_limits.listener.<name>.connection_limit`,
//! Envoy "Circuit breaking" / listener connection limits), the `connection_limit` network
//! filter (proto `envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit`), and the
//! global limit of the overload manager (`envoy.resource_monitors.global_downstream_max_connections`).

use legate_testing::config::{bootstrap, listener, static_cluster, tcp_proxy, tcp_proxy_bootstrap};
use legate_testing::{connect, echo_roundtrip, expect_closed, json, legate_bin, Legate, TcpEchoServer};

#[test]
fn listener_runtime_limit_rejects_the_third_connection() {
    let echo = TcpEchoServer::start();
    let mut config = tcp_proxy_bootstrap(&[echo.addr()]);
    config["layered_runtime"] = json!({ "layers": [{
        "name": "static",
        "static_layer": { "envoy.resource_limits.listener.ingress.connection_limit": 2 }
    }] });
    let px = Legate::start(legate_bin!(), &config.to_string());
    let addr = px.listener_addr("ingress");
    let mut c1 = connect(addr);
    echo_roundtrip(&mut c1, b"one");
    let mut c2 = connect(addr);
    echo_roundtrip(&mut c2, b"two");

    let mut c3 = connect(addr);
    expect_closed(&mut c3, "third connection over a limit of 2");
    px.wait_stat("listener.ingress.downstream_cx_overflow", 1);
    echo_roundtrip(&mut c1, b"one still works");

    // The limit is on open connections: closing one makes room.
    drop(c2);
    px.wait_stat("listener.ingress.downstream_cx_active", 1);
    let mut c4 = connect(addr);
    echo_roundtrip(&mut c4, b"room again");
    assert_eq!(px.stat("listener.ingress.downstream_cx_overflow"), Some(1));
}

#[test]
fn connection_limit_filter_closes_over_limit_and_counts() {
    let echo = TcpEchoServer::start();
    let limit = json!({
        "name": "envoy.filters.network.connection_limit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit",
            "stat_prefix": "cl",
            "max_connections": 1
        }
    });
    let config = bootstrap(
        vec![listener("ingress", vec![limit, tcp_proxy("ingress", "backend")])],
        vec![static_cluster("backend", &[echo.addr()])],
    );
    let px = Legate::start(legate_bin!(), &config.to_string());
    let addr = px.listener_addr("ingress");
    let mut c1 = connect(addr);
    echo_roundtrip(&mut c1, b"one");

    let mut c2 = connect(addr);
    expect_closed(&mut c2, "second connection over the filter's limit of 1");

    px.wait_stat("connection_limit.cl.limited_connections", 1);
    assert_eq!(px.stat("connection_limit.cl.active_connections"), Some(1));
    assert_eq!(echo.accepted(), 1, "a limited connection must not reach the upstream");
    drop(c1);
    px.wait_stat("connection_limit.cl.active_connections", 0);
    let mut c3 = connect(addr);
    echo_roundtrip(&mut c3, b"room again");
}

#[test]
fn global_downstream_limit_spans_listeners() {
    let echo = TcpEchoServer::start();
    let mut config = bootstrap(
        vec![listener("one", vec![tcp_proxy("one", "backend")]), listener("two", vec![tcp_proxy("two", "backend")])],
        vec![static_cluster("backend", &[echo.addr()])],
    );
    config["overload_manager"] = json!({ "resource_monitors": [{
        "name": "envoy.resource_monitors.global_downstream_max_connections",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
            "max_active_downstream_connections": 2
        }
    }] });
    let px = Legate::start(legate_bin!(), &config.to_string());
    let (one, two) = (px.listener_addr("one"), px.listener_addr("two"));
    let mut c1 = connect(one);
    echo_roundtrip(&mut c1, b"one");
    let mut c2 = connect(two);
    echo_roundtrip(&mut c2, b"two");

    let mut c3 = connect(one);
    expect_closed(&mut c3, "third connection over a global limit of 2");

    px.wait_stat("listener.one.downstream_global_cx_overflow", 1);
    assert_eq!(px.stat("listener.two.downstream_global_cx_overflow"), Some(0));
    drop(c2);
    px.wait_stat("listener.two.downstream_cx_active", 0);
    let mut c4 = connect(one);
    echo_roundtrip(&mut c4, b"room again");
}
