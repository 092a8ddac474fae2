//! The gRPC-Web filter (`envoy.filters.http.grpc_web`): browsers' gRPC-Web requests go to a
//! gRPC upstream as gRPC, and its answer comes back as gRPC-Web, trailers framed into the body,
//! base64 for the text variant.

use std::io::{Read, Write};

use base64::Engine;
use legate_testing::config::{
    bootstrap, http_listener, route_config, route_to, router_filter, static_cluster, virtual_host, with_http2,
};
use legate_testing::{connect, json, legate_bin, HttpUpstream, Legate, UpstreamAction};

fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn proxy(upstream: &HttpUpstream, http2: bool) -> Legate {
    let grpc_web = json!({"name": "envoy.filters.http.grpc_web", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWeb"}});
    let routes = route_config(vec![virtual_host("all", &["*"], vec![route_to("/", "grpc")])]);
    let cluster = static_cluster("grpc", &[upstream.addr()]);
    let config = bootstrap(
        vec![http_listener("ingress", routes, vec![grpc_web, router_filter()], json!({}))],
        vec![if http2 { with_http2(cluster) } else { cluster }],
    );
    Legate::start(legate_bin!(), &config.to_string())
}

/// The status, the lowercased head and the body's bytes.
fn post(px: &Legate, content_type: &str, accept: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut client = connect(px.listener_addr("ingress"));
    let head = format!(
        "POST /echo.Echo/Ping HTTP/1.1\r\nHost: api.example\r\nContent-Type: {content_type}\r\nAccept: {accept}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    client.write_all(head.as_bytes()).unwrap();
    client.write_all(body).unwrap();
    let mut response = Vec::new();
    client.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a head");
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let code = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut body = response[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (code, head, body)
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&raw[end + 2..end + 2 + size]);
        raw = &raw[end + 2 + size + 2..];
    }
    out
}

#[test]
fn grpc_web_requests_reach_a_grpc_upstream_and_come_back_framed() {
    let upstream = HttpUpstream::http2(|_| UpstreamAction::Grpc { message: "pong".into(), grpc_status: 0 });
    let px = proxy(&upstream, true);

    let (code, head, body) = post(&px, "application/grpc-web+proto", "*/*", &frame(0, b"ping"));
    assert_eq!(code, 200);
    assert!(head.contains("content-type: application/grpc-web+proto"), "{head}");
    let mut expected = frame(0, b"pong");
    expected.extend(frame(0x80, b"grpc-status:0\r\n"));
    assert_eq!(body, expected, "{}", String::from_utf8_lossy(&body));
    let seen = &upstream.requests()[0];
    assert_eq!(seen.header("content-type"), Some("application/grpc"));
    assert_eq!(seen.header("te"), Some("trailers"));
    assert_eq!(seen.body.as_ref(), frame(0, b"ping").as_slice());

    // The text variant: base64 both ways, each frame encoded on its own.
    let b64 = base64::engine::general_purpose::STANDARD;
    let text = b64.encode(frame(0, b"ping"));
    let (code, head, body) = post(&px, "application/grpc-web-text", "application/grpc-web-text", text.as_bytes());
    assert_eq!(code, 200);
    assert!(head.contains("content-type: application/grpc-web-text+proto"), "{head}");
    let expected = format!("{}{}", b64.encode(frame(0, b"pong")), b64.encode(frame(0x80, b"grpc-status:0\r\n")));
    assert_eq!(String::from_utf8_lossy(&body), expected);
    assert_eq!(upstream.requests()[1].body.as_ref(), frame(0, b"ping").as_slice());

    // Refused as Envoy's filter refuses it (400), the refusal made a gRPC status.
    let (code, head, body) = post(&px, "application/grpc-web-text", "*/*", b"not base64!!");
    assert_eq!(code, 400);
    assert!(head.contains("grpc-status: 13"), "{head}");
    assert!(body.is_empty(), "{}", String::from_utf8_lossy(&body));
    assert_eq!(upstream.requests().len(), 2);
}

/// An answer that is not gRPC (an upstream's error page) reaches the client as a gRPC status.
#[test]
fn a_non_grpc_answer_becomes_a_grpc_status() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::status(503, "<html>down</html>"));
    let px = proxy(&upstream, false);
    let (code, head, body) = post(&px, "application/grpc-web+proto", "*/*", &frame(0, b"ping"));
    assert_eq!(code, 503);
    assert!(head.contains("grpc-status: 14"), "{head}");
    assert!(body.is_empty(), "{}", String::from_utf8_lossy(&body));
}
