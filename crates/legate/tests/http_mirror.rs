//! `request_mirror_policies`: every request also goes, fire and forget, to the shadow cluster
//! with `-shadow` appended to its host; the client only sees the primary's response.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use legate_testing::config::{
    bootstrap, http_listener, route_config, route_to, router_filter, static_cluster, virtual_host,
};
use legate_testing::{connect, eventually, json, legate_bin, Legate, TcpServer, EVENTUALLY};

/// An HTTP/1.1 upstream answering `body` to each request and recording each request's head
/// and body.
fn recording_upstream(body: &'static str, seen: Arc<Mutex<Vec<String>>>) -> TcpServer {
    TcpServer::start(move |stream| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut stream = stream;
        loop {
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
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            let mut content = vec![0u8; length];
            if reader.read_exact(&mut content).is_err() {
                return;
            }
            seen.lock().unwrap().push(format!("{head}{}", String::from_utf8_lossy(&content)));
            let reply = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
            if stream.write_all(reply.as_bytes()).is_err() {
                return;
            }
        }
    })
}

fn config(primary: SocketAddr, shadow: SocketAddr) -> String {
    let mut route = route_to("/", "primary");
    route["route"]["request_mirror_policies"] = json!([{ "cluster": "shadow" }]);
    let routes = route_config(vec![virtual_host("all", &["*"], vec![route])]);
    bootstrap(
        vec![http_listener("ingress", routes, vec![router_filter()], json!({}))],
        vec![static_cluster("primary", &[primary]), static_cluster("shadow", &[shadow])],
    )
    .to_string()
}

#[test]
fn requests_are_mirrored_with_their_body_and_a_shadow_host() {
    let primary_seen = Arc::new(Mutex::new(Vec::new()));
    let shadow_seen = Arc::new(Mutex::new(Vec::new()));
    let primary = recording_upstream("primary", primary_seen.clone());
    let shadow = recording_upstream("shadow", shadow_seen.clone());
    let px = Legate::start(legate_bin!(), &config(primary.addr(), shadow.addr()));
    let mut client = connect(px.listener_addr("ingress"));
    client
        .write_all(
            b"POST /orders HTTP/1.1\r\nHost: shop.example:8080\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        )
        .unwrap();
    let mut response = String::new();
    client.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("primary"), "{response}");
    eventually("the shadow cluster saw the request", EVENTUALLY, || shadow_seen.lock().unwrap().len(), |n| *n == 1);
    let shadowed = shadow_seen.lock().unwrap()[0].to_ascii_lowercase();
    assert!(shadowed.starts_with("post /orders http/1.1"), "{shadowed}");
    assert!(shadowed.contains("host: shop.example-shadow:8080"), "{shadowed}");
    assert!(shadowed.ends_with("hello"), "{shadowed}");
    let primary_request = primary_seen.lock().unwrap()[0].to_ascii_lowercase();
    assert!(primary_request.contains("host: shop.example:8080"), "{primary_request}");
    px.wait_stat("cluster.shadow.upstream_rq_200", 1);
}

/// Mirror policies on the virtual host (and, below it, the route configuration) apply to
/// routes that have none of their own; a route's own replace them.
#[test]
fn virtual_host_mirror_policies_apply_to_routes_without_their_own() {
    let primary = recording_upstream("primary", Arc::new(Mutex::new(Vec::new())));
    let shadow_seen = Arc::new(Mutex::new(Vec::new()));
    let shadow = recording_upstream("shadow", shadow_seen.clone());
    let mut vhost = virtual_host("all", &["*"], vec![route_to("/", "primary")]);
    vhost["request_mirror_policies"] = json!([{ "cluster": "shadow" }]);
    let config = bootstrap(
        vec![http_listener("ingress", route_config(vec![vhost]), vec![router_filter()], json!({}))],
        vec![static_cluster("primary", &[primary.addr()]), static_cluster("shadow", &[shadow.addr()])],
    );
    let px = Legate::start(legate_bin!(), &config.to_string());
    let mut client = connect(px.listener_addr("ingress"));
    client.write_all(b"GET /inherited HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    client.read_to_string(&mut response).unwrap();
    assert!(response.ends_with("primary"), "{response}");
    eventually("the shadow cluster saw the request", EVENTUALLY, || shadow_seen.lock().unwrap().len(), |n| *n == 1);
}
