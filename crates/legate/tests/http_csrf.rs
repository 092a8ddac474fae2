//! The CSRF filter (`envoy.filters.http.csrf`): a state-changing request whose origin is not
//! the host it goes to is refused with Envoy's 403, unless the policy only shadows.

use std::io::{Read, Write};

use legate_testing::config::{bootstrap, http_listener, route_config, router_filter, static_cluster, virtual_host};
use legate_testing::{connect, json, legate_bin, HttpUpstream, Legate, Value};

fn percent(n: u32) -> Value {
    json!({"default_value": {"numerator": n, "denominator": "HUNDRED"}})
}

fn send(px: &Legate, method: &str, path: &str, extra: &str) -> (u16, String) {
    let mut client = connect(px.listener_addr("ingress"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: shop.example\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    client.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    client.read_to_string(&mut response).unwrap();
    let code = response.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, response.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string())
}

#[test]
fn cross_origin_writes_are_refused() {
    let app = HttpUpstream::tag("app");
    let csrf = json!({"name": "envoy.filters.http.csrf", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy",
        "filter_enabled": percent(100)}});
    let shadow = json!({"envoy.filters.http.csrf": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy",
        "filter_enabled": percent(0), "shadow_enabled": percent(100)}});
    let partners = json!({"envoy.filters.http.csrf": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy",
        "filter_enabled": percent(100), "additional_origins": [{"suffix": ".partner.example"}]}});
    let routes = route_config(vec![virtual_host(
        "all",
        &["*"],
        vec![
            json!({"match": {"prefix": "/shadow"}, "route": {"cluster": "app"}, "typed_per_filter_config": shadow}),
            json!({"match": {"prefix": "/partners"}, "route": {"cluster": "app"}, "typed_per_filter_config": partners}),
            json!({"match": {"prefix": "/"}, "route": {"cluster": "app"}}),
        ],
    )]);
    let config = bootstrap(
        vec![http_listener("ingress", routes, vec![csrf, router_filter()], json!({}))],
        vec![static_cluster("app", &[app.addr()])],
    );
    let px = Legate::start(legate_bin!(), &config.to_string());

    assert_eq!(send(&px, "POST", "/cart", "Origin: http://shop.example\r\n").0, 200);
    assert_eq!(send(&px, "GET", "/cart", "Origin: http://evil.example\r\n").0, 200, "reads are not checked");
    assert_eq!(send(&px, "POST", "/cart", "Origin: http://evil.example\r\n"), (403, "Invalid origin".to_string()));
    assert_eq!(send(&px, "DELETE", "/cart", "Referer: http://evil.example/page\r\n").0, 403);
    assert_eq!(send(&px, "PUT", "/cart", "").0, 403, "no origin at all");
    assert_eq!(send(&px, "POST", "/shadow", "Origin: http://evil.example\r\n").0, 200, "shadow only counts");
    assert_eq!(send(&px, "POST", "/partners", "Origin: https://api.partner.example\r\n").0, 200);

    px.wait_stat("http.ingress.csrf.request_valid", 2);
    assert_eq!(px.stat("http.ingress.csrf.request_invalid"), Some(4));
    assert_eq!(px.stat("http.ingress.csrf.missing_source_origin"), Some(1));
    assert_eq!(app.requests().len(), 4);
}
