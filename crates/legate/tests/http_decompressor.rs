//! The decompressor filter (`envoy.filters.http.decompressor`): gzip bodies are decoded on
//! their way, requests to the upstream and responses to the client, as Envoy's filter does.

use std::io::Write;

use legate_testing::config::{
    bootstrap, http_listener, route_config, route_to, router_filter, static_cluster, virtual_host,
};
use legate_testing::{json, legate_bin, HttpClient, HttpUpstream, Legate, UpstreamAction};

const TEXT: &str = "a body that travels compressed and arrives plain. ";

fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn gzip_bodies_are_decoded_both_ways() {
    let upstream = HttpUpstream::http1(|request| match request.path.as_str() {
        "/download" => UpstreamAction::ok(gzip(&TEXT.repeat(20))).with_header("content-encoding", "gzip"),
        "/brotli" => UpstreamAction::ok("not really brotli").with_header("content-encoding", "br"),
        _ => UpstreamAction::ok("stored"),
    });
    let filter = json!({"name": "envoy.filters.http.decompressor", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.decompressor.v3.Decompressor",
        "decompressor_library": {"name": "upload", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.compression.gzip.decompressor.v3.Gzip"}},
    }});
    let routes = route_config(vec![virtual_host("all", &["*"], vec![route_to("/", "app")])]);
    let config = bootstrap(
        vec![http_listener("ingress", routes, vec![filter, router_filter()], json!({}))],
        vec![static_cluster("app", &[upstream.addr()])],
    );
    let px = Legate::start(legate_bin!(), &config.to_string());
    let mut client = HttpClient::connect(px.listener_addr("ingress"));

    let upload = gzip(&TEXT.repeat(10));
    let response = client.send(
        "POST",
        "/upload",
        &[("host", "a"), ("content-encoding", "gzip"), ("accept-encoding", "br")],
        &upload,
    );
    assert_eq!(response.status, 200);
    let seen = &upstream.requests()[0];
    assert_eq!(seen.body_text(), TEXT.repeat(10));
    assert_eq!(seen.header("content-encoding"), None);
    assert_eq!(seen.header("accept-encoding"), Some("br,gzip"), "advertised to the upstream");

    let download = client.send("GET", "/download", &[("host", "a")], b"");
    assert_eq!(download.body, TEXT.repeat(20));
    assert_eq!(download.header("content-encoding"), None);
    let other = client.send("GET", "/brotli", &[("host", "a")], b"");
    assert_eq!((other.header("content-encoding"), other.body.as_str()), (Some("br"), "not really brotli"));

    let stats = "http.ingress.decompressor.upload.gzip.";
    px.wait_stat(&format!("{stats}request.decompressed"), 1);
    assert_eq!(px.stat(&format!("{stats}request.total_uncompressed_bytes")), Some((TEXT.len() * 10) as u64));
    assert_eq!(px.stat(&format!("{stats}response.decompressed")), Some(1));
    assert_eq!(px.stat(&format!("{stats}response.not_decompressed")), Some(2));
}

/// A response made to inflate without bound stops at `max_inflate_ratio` times what came in.
#[test]
fn an_inflation_bomb_stops_at_the_ratio() {
    let zeros = vec![0u8; 20 << 20];
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&zeros).unwrap();
    let bomb = encoder.finish().unwrap();
    let compressed = bomb.len();
    let upstream =
        HttpUpstream::http1(move |_| UpstreamAction::ok(bomb.clone()).with_header("content-encoding", "gzip"));
    let filter = json!({"name": "envoy.filters.http.decompressor", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.decompressor.v3.Decompressor",
        "decompressor_library": {"name": "bomb", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.compression.gzip.decompressor.v3.Gzip",
            "max_inflate_ratio": 10}},
    }});
    let routes = route_config(vec![virtual_host("all", &["*"], vec![route_to("/", "app")])]);
    let config = bootstrap(
        vec![http_listener("ingress", routes, vec![filter, router_filter()], json!({}))],
        vec![static_cluster("app", &[upstream.addr()])],
    );
    let px = Legate::start(legate_bin!(), &config.to_string());
    let mut client = HttpClient::connect(px.listener_addr("ingress"));
    client.write_request("GET", "/bomb", &[("host", "a")], b"").unwrap();
    let mut received = 0usize;
    let response = client.read_response_streaming(|chunk| received += chunk.len()).unwrap();
    assert_eq!(response.status, 200);
    assert!(received > 0 && received <= compressed * 10, "{received} bytes from {compressed}");
    assert_eq!(client.get("/again").status, 200, "legate serves on");
}
