//! Listener filters other than `tls_inspector` (see `filter_chain_match.rs` and `tls.rs` for
//! it): `envoy.filters.listener.http_inspector` (HTTP/1.0, HTTP/1.1 or h2c as the connection's
//! application protocol for `filter_chain_match`) and `envoy.filters.listener.proxy_protocol`
//! (the client's address from a PROXY v1/v2 header put there by a load balancer), alone and in
//! a chain with `tls_inspector` and TLS termination.

use std::io::{Read, Write};
use std::net::SocketAddr;

use legate_testing::config::{address, bootstrap, http_bootstrap, static_cluster, tcp_proxy};
use legate_testing::{
    connect, json, legate_bin, read_to_end, HttpUpstream, Legate, TagServer, TcpServer, TempDir, TestCa, TlsClient,
    Value,
};

fn listener_filter(name: &str, message: &str, config: Value) -> Value {
    let mut typed = json!({ "@type": format!("type.googleapis.com/envoy.extensions.filters.listener.{message}") });
    typed.as_object_mut().unwrap().extend(config.as_object().unwrap().clone());
    json!({ "name": format!("envoy.filters.listener.{name}"), "typed_config": typed })
}

fn http_inspector() -> Value {
    listener_filter("http_inspector", "http_inspector.v3.HttpInspector", json!({}))
}

fn proxy_protocol(config: Value) -> Value {
    listener_filter("proxy_protocol", "proxy_protocol.v3.ProxyProtocol", config)
}

/// Backends `names[i]` (each a [`TagServer`] writing its name) and a cluster of the same name.
fn backends(names: &[&str]) -> (Vec<TcpServer>, Vec<Value>) {
    let servers: Vec<TcpServer> = names.iter().map(|n| TagServer::start(n)).collect();
    let clusters = names.iter().zip(&servers).map(|(n, s)| static_cluster(n, &[s.addr()])).collect();
    (servers, clusters)
}

fn tag_after(addr: SocketAddr, first_bytes: &[u8]) -> String {
    let mut stream = connect(addr);
    stream.write_all(first_bytes).unwrap();
    String::from_utf8(read_to_end(&mut stream)).unwrap()
}

#[test]
fn http_inspector_routes_by_http_version() {
    let (_servers, clusters) = backends(&["http1", "h2c", "other"]);
    let listener = json!({
        "name": "sniff", "stat_prefix": "sniff",
        "address": address(SocketAddr::from(([127, 0, 0, 1], 0))),
        "listener_filters": [http_inspector()],
        "filter_chains": [
            { "filter_chain_match": { "application_protocols": ["http/1.1", "http/1.0"] }, "filters": [tcp_proxy("h1", "http1")] },
            { "filter_chain_match": { "application_protocols": ["h2c"] }, "filters": [tcp_proxy("h2", "h2c")] },
            { "filters": [tcp_proxy("other", "other")] },
        ],
    });
    let px = Legate::start(legate_bin!(), &bootstrap(vec![listener], clusters).to_string());
    let addr = px.connect_addr("sniff");

    assert_eq!(tag_after(addr, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"), "http1");
    assert_eq!(tag_after(addr, b"GET / HTTP/1.0\r\n\r\n"), "http1");
    assert_eq!(tag_after(addr, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), "h2c");
    assert_eq!(tag_after(addr, b"SSH-2.0-OpenSSH_9.6\r\n"), "other");
    px.wait_stat("http_inspector.http11_found", 1);
    assert_eq!(px.stat("http_inspector.http10_found"), Some(1));
    assert_eq!(px.stat("http_inspector.http2_found"), Some(1));
    assert_eq!(px.stat("http_inspector.http_not_found"), Some(1));
}

/// The PROXY header's source becomes the client's address: `filter_chain_match` on
/// `source_prefix_ranges` sees it, for v1 and v2 alike.
#[test]
fn proxy_protocol_source_selects_the_filter_chain() {
    let (_servers, clusters) = backends(&["behind_lb", "other"]);
    let listener = json!({
        "name": "pp", "stat_prefix": "pp",
        "address": address(SocketAddr::from(([127, 0, 0, 1], 0))),
        "listener_filters": [proxy_protocol(json!({}))],
        "filter_chains": [
            {
                "filter_chain_match": { "source_prefix_ranges": [{ "address_prefix": "203.0.113.0", "prefix_len": 24 }] },
                "filters": [tcp_proxy("behind_lb", "behind_lb")],
            },
            { "filters": [tcp_proxy("other", "other")] },
        ],
    });
    let px = Legate::start(legate_bin!(), &bootstrap(vec![listener], clusters).to_string());
    let addr = px.connect_addr("pp");

    assert_eq!(tag_after(addr, b"PROXY TCP4 203.0.113.7 127.0.0.1 50000 80\r\nhello"), "behind_lb");
    assert_eq!(tag_after(addr, b"PROXY TCP4 198.51.100.7 127.0.0.1 50000 80\r\nhello"), "other");
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[0x21, 0x11, 0, 12, 203, 0, 113, 9, 127, 0, 0, 1, 0xc3, 0x50, 0, 80]);
    v2.extend_from_slice(b"hello");
    assert_eq!(tag_after(addr, &v2), "behind_lb");
    px.wait_stat("proxy_proto.versions.v1.found", 2);
    assert_eq!(px.stat("proxy_proto.versions.v2.found"), Some(1));

    // No header, or a broken one: closed before any filter chain, counted.
    let mut plain = connect(addr);
    plain.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(read_to_end(&mut plain).is_empty());
    px.wait_stat("proxy_proto.not_found_disallowed", 1);
    let mut broken = connect(addr);
    broken.write_all(b"PROXY TCP4 not-an-ip 127.0.0.1 1 2\r\n").unwrap();
    assert!(read_to_end(&mut broken).is_empty());
    px.wait_stat("proxy_proto.versions.v1.error", 1);
    assert_eq!(px.stat("listener.pp.downstream_listener_filter_error"), Some(2));
}

/// With `use_remote_address`, the HCM's `x-forwarded-for` carries the PROXY source; without a
/// header the connection is accepted when `allow_requests_without_proxy_protocol`.
#[test]
fn proxy_protocol_client_address_reaches_x_forwarded_for() {
    let upstream = HttpUpstream::tag("backend");
    let mut config = http_bootstrap(&[upstream.addr()]);
    let listener = &mut config["static_resources"]["listeners"][0];
    listener["listener_filters"] = json!([proxy_protocol(json!({ "allow_requests_without_proxy_protocol": true }))]);
    listener["filter_chains"][0]["filters"][0]["typed_config"]["use_remote_address"] = json!(true);
    let px = Legate::start(legate_bin!(), &config.to_string());
    let addr = px.connect_addr("ingress");

    let mut stream = connect(addr);
    stream
        .write_all(
            b"PROXY TCP4 192.0.2.55 127.0.0.1 40000 80\r\nGET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .unwrap();
    let reply = String::from_utf8(read_to_end(&mut stream)).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(upstream.last_request().header("x-forwarded-for"), Some("192.0.2.55"));

    let mut stream = connect(addr);
    stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
    let reply = String::from_utf8(read_to_end(&mut stream)).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(upstream.last_request().header("x-forwarded-for"), Some("127.0.0.1"));
    px.wait_stat("proxy_proto.not_found_allowed", 1);
}

/// proxy_protocol, then tls_inspector, then TLS termination: the bytes after the PROXY header
/// are the ClientHello.
#[test]
fn proxy_protocol_before_tls_termination() {
    let ca = TestCa::new("legate test CA");
    let dir = TempDir::new();
    let upstream = HttpUpstream::tag("backend");
    let (crt, key) = ca.issue("edge", &["edge.example.com"]).write(&dir, "edge");
    let mut config = http_bootstrap(&[upstream.addr()]);
    let listener = &mut config["static_resources"]["listeners"][0];
    listener["listener_filters"] = json!([
        proxy_protocol(json!({})),
        listener_filter("tls_inspector", "tls_inspector.v3.TlsInspector", json!({})),
    ]);
    listener["filter_chains"][0]["filter_chain_match"] = json!({ "server_names": ["edge.example.com"] });
    listener["filter_chains"][0]["filters"][0]["typed_config"]["use_remote_address"] = json!(true);
    listener["filter_chains"][0]["transport_socket"] = json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": { "tls_certificates": [{
                "certificate_chain": { "filename": crt }, "private_key": { "filename": key },
            }]},
        },
    });
    let px = Legate::start(legate_bin!(), &config.to_string());

    let client = TlsClient::new(&ca, "edge.example.com");
    let mut stream = client
        .connect_after(px.connect_addr("ingress"), b"PROXY TCP4 192.0.2.77 127.0.0.1 40000 443\r\n")
        .expect("TLS after the PROXY header");
    stream.write_all(b"GET / HTTP/1.1\r\nhost: edge.example.com\r\nconnection: close\r\n\r\n").unwrap();
    let reply = String::from_utf8(stream.read_to_end_lenient().unwrap()).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(upstream.last_request().header("x-forwarded-for"), Some("192.0.2.77"));
    assert_eq!(upstream.last_request().header("x-forwarded-proto"), Some("https"));
    let _ = stream.read(&mut [0u8; 1]);
}
