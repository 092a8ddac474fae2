//! Upgrades through the HTTP connection manager: WebSocket over HTTP/1.1 (the upgrade is
//! forwarded, bytes flow both ways after `101`; also through a cluster whose connections are
//! hyper's, `header_key_format`), an upgrade the route does not allow (`403`), and CONNECT
//! terminated by legate (`connect_config`: `200`, then a raw TCP tunnel).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use legate_testing::config::{cluster_config, hcm_config, http_bootstrap, route_config, route_to, virtual_host};
use legate_testing::{connect, json, legate_bin, Legate, TcpEchoServer, TcpServer, Value};

fn config(upstream: std::net::SocketAddr, hcm_upgrades: Value, route: Value) -> String {
    config_value(upstream, hcm_upgrades, route).to_string()
}

fn config_value(upstream: std::net::SocketAddr, hcm_upgrades: Value, route: Value) -> Value {
    let mut config = http_bootstrap(&[upstream]);
    let hcm = hcm_config(&mut config, 0);
    hcm["upgrade_configs"] = hcm_upgrades;
    hcm["route_config"] = route_config(vec![virtual_host("all", &["*"], vec![route])]);
    config
}

/// Reads an HTTP head (up to the blank line).
fn read_head(reader: &mut BufReader<TcpStream>) -> String {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    head
}

/// An upstream that answers an upgrade with `101` and then echoes bytes.
fn websocket_upstream() -> TcpServer {
    TcpServer::start(|stream| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let head = read_head(&mut reader);
        let mut stream = stream;
        if !head.to_ascii_lowercase().contains("upgrade: websocket") {
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
            return;
        }
        let _ =
            stream.write_all(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n");
        let mut buf = [0u8; 1024];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || stream.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    })
}

const UPGRADE_REQUEST: &[u8] =
    b"GET /chat HTTP/1.1\r\nHost: example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n";

#[test]
fn websocket_upgrade_is_tunnelled_both_ways() {
    let upstream = websocket_upstream();
    let yaml = config(upstream.addr(), json!([{ "upgrade_type": "websocket" }]), route_to("/", "backend"));
    let px = Legate::start(legate_bin!(), &yaml);
    assert_tunnelled(&px);
}

/// The same through a cluster that writes header names as received (`preserve_case`): its
/// connections are hyper's client, which hands the upgraded socket over its own way.
#[test]
fn websocket_upgrade_is_tunnelled_through_a_case_preserving_cluster() {
    let upstream = websocket_upstream();
    let mut config = config_value(upstream.addr(), json!([{ "upgrade_type": "websocket" }]), route_to("/", "backend"));
    let preserve = json!({ "stateful_formatter": { "name": "preserve_case", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.http.header_formatters.preserve_case.v3.PreserveCaseFormatterConfig"
    } } });
    cluster_config(&mut config, 0)["typed_extension_protocol_options"] = json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": { "http_protocol_options": { "header_key_format": preserve } }
        }
    });
    let px = Legate::start(legate_bin!(), &config.to_string());
    assert_tunnelled(&px);
}

/// Upgrades a connection to `px`'s listener and echoes two messages through the tunnel.
fn assert_tunnelled(px: &Legate) {
    let mut client = connect(px.listener_addr("ingress"));
    client.write_all(UPGRADE_REQUEST).unwrap();
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let head = read_head(&mut reader);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_ascii_lowercase().contains("upgrade: websocket"), "{head}");
    for message in [&b"hello"[..], b"over the tunnel"] {
        client.write_all(message).unwrap();
        let mut echoed = vec![0u8; message.len()];
        reader.read_exact(&mut echoed).unwrap();
        assert_eq!(echoed, message);
    }
    px.wait_stat("http.ingress.downstream_cx_upgrades_active", 1);
    drop(reader);
    drop(client);
    px.wait_stat("http.ingress.downstream_cx_upgrades_active", 0);
    assert_eq!(px.stat("http.ingress.downstream_cx_upgrades_total"), Some(1));
}

#[test]
fn upgrade_not_allowed_on_the_route_is_refused_with_403() {
    let upstream = websocket_upstream();
    let yaml = config(upstream.addr(), json!([]), route_to("/", "backend"));
    let px = Legate::start(legate_bin!(), &yaml);
    let mut client = connect(px.listener_addr("ingress"));
    client.write_all(UPGRADE_REQUEST).unwrap();
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let head = read_head(&mut reader);
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert_eq!(px.stat("http.ingress.downstream_rq_ws_on_non_ws_route"), Some(1));
}

#[test]
fn connect_is_terminated_and_tunnelled_as_raw_tcp() {
    let echo = TcpEchoServer::start();
    let yaml = config(
        echo.addr(),
        json!([{ "upgrade_type": "CONNECT" }]),
        json!({
            "match": { "connect_matcher": {} },
            "route": { "cluster": "backend", "upgrade_configs": [{ "upgrade_type": "CONNECT", "connect_config": {} }] }
        }),
    );
    let px = Legate::start(legate_bin!(), &yaml);
    let mut client = connect(px.listener_addr("ingress"));
    client.write_all(b"CONNECT backend.example:443 HTTP/1.1\r\nHost: backend.example:443\r\n\r\n").unwrap();
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let head = read_head(&mut reader);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    client.write_all(b"raw bytes").unwrap();
    let mut echoed = [0u8; 9];
    reader.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"raw bytes");
}
