//! Header handling on every request's path: hop-by-hop removal (the usual request carries
//! none, so the scan must be cheap), `x-request-id` generation and the decimal values legate
//! adds (`content-length`, `x-envoy-upstream-service-time`).
//! Run: `cargo bench -p legate-proxy --bench headers`.

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue};
use legate_proxy::http::headers;

/// What a browser sends, give or take.
fn browser_request() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in [
        ("host", "www.example.com"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"),
        ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("accept-language", "en-US,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br"),
        ("referer", "https://www.example.com/"),
        ("cookie", "session=0123456789abcdef; theme=dark"),
        ("sec-fetch-dest", "document"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-site", "same-origin"),
        ("upgrade-insecure-requests", "1"),
    ] {
        h.append(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    h
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("headers");
    let plain = browser_request();
    group.bench_function("strip_hop_by_hop/none_present", |b| {
        b.iter_batched_ref(|| plain.clone(), headers::strip_hop_by_hop, criterion::BatchSize::SmallInput)
    });
    let mut with_hop = browser_request();
    with_hop.insert("connection", HeaderValue::from_static("keep-alive, x-private"));
    with_hop.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    with_hop.insert("x-private", HeaderValue::from_static("secret"));
    group.bench_function("strip_hop_by_hop/connection_named", |b| {
        b.iter_batched_ref(|| with_hop.clone(), headers::strip_hop_by_hop, criterion::BatchSize::SmallInput)
    });
    group.bench_function("x_request_id", |b| b.iter(headers::uuid4_header));
    let mut n = 0u64;
    group.bench_function("decimal_header", |b| {
        b.iter(|| {
            n = (n + 1) % 512;
            headers::decimal_header(n)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
