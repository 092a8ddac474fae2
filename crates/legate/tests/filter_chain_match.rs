//! Filter chain selection (Envoy docs: "Filter chain match", proto
//! `envoy.config.listener.v3.FilterChainMatch`): criteria are applied in Envoy's order —
//! destination port, destination IP, server name, transport protocol, application protocols,
//! direct source IP, source type, source IP, source port — and at each step the most specific
//! match wins. 127.0.0.1 and 127.0.0.2 are both loopback on Linux, which gives two destination
//! IPs on one listener bound to 0.0.0.0. Each chain proxies to a backend that writes its name.

use std::net::SocketAddr;

use legate_testing::config::{address, bootstrap, static_cluster, tcp_proxy};
use std::io::{Read, Write};

use legate_testing::{
    connect, connect_from, expect_closed, free_port, json, legate_bin, read_to_end, tls_client_hello, Legate,
    TagServer, TcpEchoServer, TcpServer, Value,
};

/// Backends `names[i]` (each a [`TagServer`] writing its name) and a cluster of the same name.
fn backends(names: &[&str]) -> (Vec<TcpServer>, Vec<Value>) {
    let servers: Vec<TcpServer> = names.iter().map(|n| TagServer::start(n)).collect();
    let clusters = names.iter().zip(&servers).map(|(n, s)| static_cluster(n, &[s.addr()])).collect();
    (servers, clusters)
}

/// A filter chain with `filter_chain_match: m` proxying to cluster `to`.
fn chain(m: Value, to: &str) -> Value {
    json!({ "filter_chain_match": m, "filters": [tcp_proxy(to, to)] })
}

fn fcm_listener(addr: SocketAddr, chains: Vec<Value>) -> Value {
    json!({ "name": "fcm", "stat_prefix": "fcm", "address": address(addr), "filter_chains": chains })
}

fn any_port(ip: [u8; 4]) -> SocketAddr {
    SocketAddr::from((ip, 0))
}

fn tag_via(stream: std::io::Result<std::net::TcpStream>) -> String {
    let mut s = stream.expect("connect to legate");
    String::from_utf8(read_to_end(&mut s)).unwrap()
}

fn tag_at(px: &Legate, ip: [u8; 4]) -> String {
    let mut addr = px.connect_addr("fcm");
    addr.set_ip(ip.into());
    let mut s = connect(addr);
    String::from_utf8(read_to_end(&mut s)).unwrap()
}

#[test]
fn longest_destination_prefix_wins() {
    let (_s, clusters) = backends(&["wide", "narrow"]);
    let listener = fcm_listener(
        any_port([0, 0, 0, 0]),
        vec![
            chain(json!({ "prefix_ranges": [{ "address_prefix": "127.0.0.0", "prefix_len": 8 }] }), "wide"),
            chain(json!({ "prefix_ranges": [{ "address_prefix": "127.0.0.2", "prefix_len": 32 }] }), "narrow"),
        ],
    );
    let px = Legate::start(legate_bin!(), &bootstrap(vec![listener], clusters).to_string());

    assert_eq!(tag_at(&px, [127, 0, 0, 2]), "narrow");
    assert_eq!(tag_at(&px, [127, 0, 0, 1]), "wide");
}

/// Destination port is Envoy's first criterion: a chain naming the port beats a chain naming
/// the exact destination IP but no port.
#[test]
fn destination_port_outranks_destination_ip() {
    let (_s, clusters) = backends(&["by_ip", "by_port"]);
    let port = free_port();
    let listener = fcm_listener(
        SocketAddr::from(([0, 0, 0, 0], port)),
        vec![
            chain(json!({ "prefix_ranges": [{ "address_prefix": "127.0.0.2", "prefix_len": 32 }] }), "by_ip"),
            chain(json!({ "destination_port": port }), "by_port"),
        ],
    );
    let px = Legate::start(legate_bin!(), &bootstrap(vec![listener], clusters).to_string());

    assert_eq!(tag_at(&px, [127, 0, 0, 2]), "by_port");
    assert_eq!(tag_at(&px, [127, 0, 0, 1]), "by_port");
}

#[test]
fn source_port_selects_its_chain() {
    let (_s, clusters) = backends(&["from_port", "other"]);
    let source_port = free_port();
    let listener = fcm_listener(
        any_port([127, 0, 0, 1]),
        vec![chain(json!({ "source_ports": [source_port] }), "from_port"), chain(json!({}), "other")],
    );
    let px = Legate::start(legate_bin!(), &bootstrap(vec![listener], clusters).to_string());
    let addr = px.connect_addr("fcm");

    assert_eq!(tag_via(connect_from(SocketAddr::from(([127, 0, 0, 1], source_port)), addr)), "from_port");
    assert_eq!(tag_via(connect_from(any_port([127, 0, 0, 1]), addr)), "other");
}

#[test]
fn source_prefix_selects_by_client_ip() {
    let (_s, clusters) = backends(&["from_three", "other"]);
    let listener = fcm_listener(
        any_port([127, 0, 0, 1]),
        vec![
            chain(
                json!({ "source_prefix_ranges": [{ "address_prefix": "127.0.0.3", "prefix_len": 32 }] }),
                "from_three",
            ),
            chain(json!({}), "other"),
        ],
    );
    let px = Legate::start(legate_bin!(), &bootstrap(vec![listener], clusters).to_string());
    let addr = px.connect_addr("fcm");

    assert_eq!(tag_via(connect_from(any_port([127, 0, 0, 3]), addr)), "from_three");
    assert_eq!(tag_via(connect_from(any_port([127, 0, 0, 1]), addr)), "other");
}

#[test]
fn loopback_client_matches_same_ip_or_loopback_not_external() {
    let (_s, clusters) = backends(&["external", "local"]);
    let listener = fcm_listener(
        any_port([127, 0, 0, 1]),
        vec![
            chain(json!({ "source_type": "EXTERNAL" }), "external"),
            chain(json!({ "source_type": "SAME_IP_OR_LOOPBACK" }), "local"),
        ],
    );
    let px = Legate::start(legate_bin!(), &bootstrap(vec![listener], clusters).to_string());

    assert_eq!(tag_at(&px, [127, 0, 0, 1]), "local");
}

#[test]
fn no_matching_chain_closes_connection_and_counts() {
    let (_s, clusters) = backends(&["two"]);
    let listener = fcm_listener(
        any_port([0, 0, 0, 0]),
        vec![chain(json!({ "prefix_ranges": [{ "address_prefix": "127.0.0.2", "prefix_len": 32 }] }), "two")],
    );
    let px = Legate::start(legate_bin!(), &bootstrap(vec![listener], clusters).to_string());
    let mut addr = px.connect_addr("fcm");
    addr.set_ip([127, 0, 0, 1].into());

    let mut unmatched = connect(addr);
    expect_closed(&mut unmatched, "connection matching no filter chain");

    px.wait_stat("listener.fcm.no_filter_chain_match", 1);
    assert_eq!(tag_at(&px, [127, 0, 0, 2]), "two");
    assert_eq!(px.stat("listener.fcm.no_filter_chain_match"), Some(1));
}

#[test]
fn default_filter_chain_takes_unmatched_connections() {
    let (_s, clusters) = backends(&["two", "fallback"]);
    let mut listener = fcm_listener(
        any_port([0, 0, 0, 0]),
        vec![chain(json!({ "prefix_ranges": [{ "address_prefix": "127.0.0.2", "prefix_len": 32 }] }), "two")],
    );
    listener["default_filter_chain"] = json!({ "filters": [tcp_proxy("fallback", "fallback")] });
    let px = Legate::start(legate_bin!(), &bootstrap(vec![listener], clusters).to_string());

    assert_eq!(tag_at(&px, [127, 0, 0, 1]), "fallback");
    assert_eq!(tag_at(&px, [127, 0, 0, 2]), "two");
    px.wait_stat("listener.fcm.downstream_cx_total", 2);
    assert_eq!(px.stat("listener.fcm.no_filter_chain_match"), Some(0));
}

/// `tls_inspector` (Envoy "TLS Inspector" listener filter) reads the ClientHello so that chains
/// can match `server_names` (exact before wildcard), `transport_protocol` and
/// `application_protocols`; the bytes it read are then given to the chain's filters as if never
/// read — the echo upstream returns the ClientHello byte for byte.
#[test]
fn tls_inspector_routes_by_sni_and_alpn_and_replays_the_hello() {
    let (_s, mut clusters) = backends(&["wildcard", "h2", "plain"]);
    let echo = TcpEchoServer::start();
    clusters.push(static_cluster("exact", &[echo.addr()]));
    let mut listener = fcm_listener(
        any_port([127, 0, 0, 1]),
        vec![
            chain(json!({ "server_names": ["*.example.com"], "transport_protocol": "tls" }), "wildcard"),
            chain(json!({ "server_names": ["api.example.com"], "transport_protocol": "tls" }), "exact"),
            chain(json!({ "server_names": ["h2.example.org"], "application_protocols": ["h2"] }), "h2"),
            chain(json!({ "transport_protocol": "raw_buffer" }), "plain"),
        ],
    );
    listener["listener_filters"] = json!([{
        "name": "envoy.filters.listener.tls_inspector",
        "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector" }
    }]);
    let px = Legate::start(legate_bin!(), &bootstrap(vec![listener], clusters).to_string());
    let addr = px.connect_addr("fcm");
    let send = |hello: &[u8]| {
        let mut c = connect(addr);
        c.write_all(hello).unwrap();
        c
    };

    let hello = tls_client_hello(Some("api.example.com"), &[]);
    let mut c = send(&hello);
    let mut echoed = vec![0; hello.len()];
    c.read_exact(&mut echoed).expect("the ClientHello echoed back");
    assert_eq!(echoed, hello, "the inspected bytes reach the upstream unchanged");
    drop(c);

    assert_eq!(
        String::from_utf8(read_to_end(&mut send(&tls_client_hello(Some("www.example.com"), &[])))).unwrap(),
        "wildcard"
    );
    assert_eq!(
        String::from_utf8(read_to_end(&mut send(&tls_client_hello(Some("h2.example.org"), &["h2", "http/1.1"]))))
            .unwrap(),
        "h2"
    );
    assert_eq!(String::from_utf8(read_to_end(&mut send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))).unwrap(), "plain");
}
