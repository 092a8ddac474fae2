//! tcp_proxy's `tunneling_config`: the connection goes to the upstream inside an HTTP/1.1
//! `CONNECT` tunnel its proxy opens; a refusal is a failed connect.

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use legate_testing::config::{bootstrap, listener, static_cluster, tcp_proxy};
use legate_testing::{connect, json, legate_bin, Legate, TcpServer};

/// An HTTP proxy that records the `CONNECT` head, answers `status`, greets as the far end
/// would, then echoes.
fn http_proxy(status: &'static str, seen: Arc<Mutex<Vec<String>>>) -> TcpServer {
    TcpServer::start(move |stream| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        seen.lock().unwrap().push(head);
        let mut stream = stream;
        let answer = format!("HTTP/1.1 {status}\r\n\r\n");
        if stream.write_all(answer.as_bytes()).is_err() || !status.starts_with('2') {
            return;
        }
        let _ = stream.write_all(b"hello from the far end\n");
        let mut buf = [0u8; 1024];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || stream.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    })
}

fn proxy(upstream: std::net::SocketAddr) -> Legate {
    let mut tcp = tcp_proxy("tunnel", "proxy");
    tcp["typed_config"]["tunneling_config"] = json!({
        "hostname": "db.internal:5432",
        "headers_to_add": [{"header": {"key": "proxy-authorization", "value": "Basic dGVzdA=="}}],
    });
    let config = bootstrap(vec![listener("ingress", vec![tcp])], vec![static_cluster("proxy", &[upstream])]);
    Legate::start(legate_bin!(), &config.to_string())
}

#[test]
fn a_connection_rides_a_connect_tunnel() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let upstream = http_proxy("200 Connection established", seen.clone());
    let px = proxy(upstream.addr());
    let mut client = connect(px.listener_addr("ingress"));
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut greeting = [0u8; 23];
    client.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"hello from the far end\n", "the far end's first bytes come through");
    client.write_all(b"ping").unwrap();
    let mut echoed = [0u8; 4];
    client.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"ping");
    let head = seen.lock().unwrap()[0].to_ascii_lowercase();
    assert!(head.starts_with("connect db.internal:5432 http/1.1\r\n"), "{head}");
    assert!(head.contains("host: db.internal:5432\r\n"), "{head}");
    assert!(head.contains("proxy-authorization: basic dgvzda==\r\n"), "{head}");
}

#[test]
fn a_refused_tunnel_is_a_failed_connect() {
    let upstream = http_proxy("403 Forbidden", Arc::new(Mutex::new(Vec::new())));
    let px = proxy(upstream.addr());
    let mut client = connect(px.listener_addr("ingress"));
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = client.write_all(b"ping");
    let mut got = Vec::new();
    let _ = client.read_to_end(&mut got);
    assert!(got.is_empty(), "{got:?}");
    px.wait_stat("cluster.proxy.upstream_cx_connect_fail", 1);
}
