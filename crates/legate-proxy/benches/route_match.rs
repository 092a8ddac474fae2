//! Route matching cost per request as route tables grow (issue: "matching must not get slower
//! per request as routes grow where a faster structure exists").
//!
//! Three shapes, each at 10, 1 000 and 10 000 entries, matching the entry configured last
//! (the worst case for a linear scan): many exact domains, many prefix routes in one virtual
//! host, many exact-path routes. Run: `cargo bench -p legate-proxy --bench route_match`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use legate_config::route::RouteConfiguration;
use legate_proxy::router::{MatchInput, RouteConfig};

fn parse(value: serde_json::Value) -> RouteConfig {
    let config: RouteConfiguration = legate_config::path::from_value(value).expect("route configuration");
    RouteConfig::new(&config).expect("compiles")
}

fn route(matcher: serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "match": matcher, "route": { "cluster": "c" } })
}

fn many_domains(n: usize) -> RouteConfig {
    let vhosts: Vec<_> = (0..n)
        .map(|i| {
            serde_json::json!({
                "name": format!("vh{i}"),
                "domains": [format!("host{i}.example.com")],
                "routes": [route(serde_json::json!({ "prefix": "/" }))],
            })
        })
        .collect();
    parse(serde_json::json!({ "name": "domains", "virtual_hosts": vhosts }))
}

fn many_routes(n: usize, kind: &str) -> RouteConfig {
    let routes: Vec<_> = (0..n).map(|i| route(serde_json::json!({ kind: format!("/service{i}/api") }))).collect();
    parse(serde_json::json!({
        "name": "routes",
        "virtual_hosts": [{ "name": "all", "domains": ["*"], "routes": routes }],
    }))
}

fn matches(config: &RouteConfig, host: &str, path: &str, head: &http::request::Parts) -> bool {
    let Some(vhost) = config.virtual_host(host) else { return false };
    vhost.route(&MatchInput { path, query: None, head, scheme: "http", random: 0 }).is_some()
}

fn bench(c: &mut Criterion) {
    let (head, ()) = http::Request::new(()).into_parts();
    let mut group = c.benchmark_group("route_match");
    for n in [10usize, 1_000, 10_000] {
        let domains = many_domains(n);
        let host = format!("host{}.example.com", n - 1);
        assert!(matches(&domains, &host, "/", &head));
        group.bench_with_input(BenchmarkId::new("exact_domains", n), &n, |b, _| {
            b.iter(|| matches(&domains, &host, "/", &head))
        });
        let prefixes = many_routes(n, "prefix");
        let path = format!("/service{}/api/items/42", n - 1);
        assert!(matches(&prefixes, "any", &path, &head));
        group.bench_with_input(BenchmarkId::new("prefix_routes", n), &n, |b, _| {
            b.iter(|| matches(&prefixes, "any", &path, &head))
        });
        let exact = many_routes(n, "path");
        let path = format!("/service{}/api", n - 1);
        assert!(matches(&exact, "any", &path, &head));
        group.bench_with_input(BenchmarkId::new("exact_paths", n), &n, |b, _| {
            b.iter(|| matches(&exact, "any", &path, &head))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
