//! The compressor filter (`envoy.filters.http.compressor`): responses compressed with gzip,
//! brotli or zstd when the client takes the encoding and the response is worth it, as Envoy
//! decides, with Envoy's headers and stats.

use std::io::Read;

use legate_testing::config::{
    bootstrap, http_listener, route_config, route_to, router_filter, static_cluster, virtual_host,
};
use legate_testing::{json, legate_bin, HttpClient, HttpUpstream, Legate, UpstreamAction, Value};

const TEXT: &str = "legate compresses what Envoy would compress, and nothing else. ";

fn compressor(library: Value, response_direction: Value) -> Value {
    json!({"name": "envoy.filters.http.compressor", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor",
        "response_direction_config": response_direction,
        "compressor_library": {"name": "text_optimized", "typed_config": library},
    }})
}

fn gzip() -> Value {
    json!({"@type": "type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip",
           "compression_level": "BEST_COMPRESSION"})
}

/// An upstream answering `/long` with 40 copies of TEXT, `/short` with 10 bytes, `/tagged`
/// with an etag, all text/plain.
fn upstream() -> HttpUpstream {
    HttpUpstream::http1(|request| {
        let body = if request.path == "/short" { "0123456789".to_string() } else { TEXT.repeat(40) };
        let mut action = UpstreamAction::ok(body).with_header("content-type", "text/plain; charset=utf-8");
        if request.path == "/tagged" {
            action = action.with_header("etag", "\"v1\"");
        }
        action
    })
}

fn proxy(app: &HttpUpstream, filter: Value) -> Legate {
    let routes = route_config(vec![virtual_host("all", &["*"], vec![route_to("/", "app")])]);
    let config = bootstrap(
        vec![http_listener("ingress", routes, vec![filter, router_filter()], json!({}))],
        vec![static_cluster("app", &[app.addr()])],
    );
    Legate::start(legate_bin!(), &config.to_string())
}

/// The response and its body's raw bytes.
fn get(px: &Legate, path: &str, accept: Option<&str>) -> (legate_testing::HttpResponse, Vec<u8>) {
    let mut client = HttpClient::connect(px.listener_addr("ingress"));
    let mut headers = vec![("host", "shop.example")];
    if let Some(accept) = accept {
        headers.push(("accept-encoding", accept));
    }
    client.write_request("GET", path, &headers, b"").unwrap();
    let mut body = Vec::new();
    let response = client.read_response_streaming(|chunk| body.extend_from_slice(chunk)).unwrap();
    (response, body)
}

fn gunzip(bytes: &[u8]) -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes).read_to_string(&mut text).unwrap();
    text
}

#[test]
fn gzip_when_the_client_takes_it_and_the_response_is_worth_it() {
    let app = upstream();
    let px = proxy(
        &app,
        compressor(gzip(), json!({"common_config": {"min_content_length": 100}, "disable_on_etag_header": true})),
    );

    let (response, body) = get(&px, "/long", Some("br;q=0.5, gzip"));
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-encoding"), Some("gzip"));
    assert_eq!(response.header("vary"), Some("Accept-Encoding"));
    assert_eq!(response.header("content-length"), None);
    assert!(body.len() < TEXT.len() * 40 / 4, "compressed: {} bytes", body.len());
    assert_eq!(gunzip(&body), TEXT.repeat(40));

    let (plain, body) = get(&px, "/long", None);
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"), "compressible, so it varies");
    assert_eq!(body.len(), TEXT.len() * 40);
    let (identity, _) = get(&px, "/long", Some("identity, gzip;q=0"));
    assert_eq!(identity.header("content-encoding"), None);
    let (short, body) = get(&px, "/short", Some("gzip"));
    assert_eq!((short.header("content-encoding"), body.as_slice()), (None, &b"0123456789"[..]));
    let (tagged, _) = get(&px, "/tagged", Some("gzip"));
    assert_eq!(tagged.header("content-encoding"), None, "disable_on_etag_header");

    let stats = "http.ingress.compressor.text_optimized.gzip.";
    px.wait_stat(&format!("{stats}response.compressed"), 1);
    assert_eq!(px.stat(&format!("{stats}response.not_compressed")), Some(4));
    assert_eq!(px.stat(&format!("{stats}response.content_length_too_small")), Some(1));
    assert_eq!(px.stat(&format!("{stats}response.total_uncompressed_bytes")), Some((TEXT.len() * 40) as u64));
    assert_eq!(px.stat(&format!("{stats}no_accept_header")), Some(1));
    assert_eq!(px.stat(&format!("{stats}header_compressor_used")), Some(2), "/long and /tagged");
    assert_eq!(px.stat(&format!("{stats}header_not_valid")), Some(1), "gzip;q=0");
    assert_eq!(px.stat(&format!("{stats}not_compressed_etag")), Some(1));
}

#[test]
fn brotli_and_zstd() {
    let app = upstream();
    let brotli = compressor(
        json!({"@type": "type.googleapis.com/envoy.extensions.compression.brotli.compressor.v3.Brotli", "window_bits": 10}),
        json!({}),
    );
    let px = proxy(&app, brotli);
    let (response, body) = get(&px, "/long", Some("gzip;q=0.8, br"));
    assert_eq!(response.header("content-encoding"), Some("br"));
    let mut text = String::new();
    brotli::Decompressor::new(body.as_slice(), 4096).read_to_string(&mut text).unwrap();
    assert_eq!(text, TEXT.repeat(40));
    px.wait_stat("http.ingress.compressor.text_optimized.brotli.response.compressed", 1);

    let zstd = compressor(
        json!({"@type": "type.googleapis.com/envoy.extensions.compression.zstd.compressor.v3.Zstd", "compression_level": 10}),
        json!({}),
    );
    let px = proxy(&app, zstd);
    let (response, body) = get(&px, "/long", Some("*"));
    assert_eq!(response.header("content-encoding"), Some("zstd"));
    assert_eq!(String::from_utf8(zstd::decode_all(body.as_slice()).unwrap()).unwrap(), TEXT.repeat(40));
    px.wait_stat("http.ingress.compressor.text_optimized.zstd.header_wildcard", 1);
}
