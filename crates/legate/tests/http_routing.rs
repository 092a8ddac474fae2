//! HTTP routing end to end (Envoy docs: "HTTP routing", proto
//! `envoy.config.route.v3.RouteConfiguration`): the real binary between a real client and real
//! upstreams. Virtual host selection by `:authority`, route matching in order, what a route
//! does (forward with rewrites, split by weight, pick a cluster from a header, redirect,
//! answer directly) and the header mutations at each level of the route table.

use std::collections::BTreeMap;

use legate_testing::config::{
    bootstrap, http_listener, route_config, route_to, router_filter, static_cluster, virtual_host,
};
use legate_testing::{json, legate_bin, HttpClient, HttpUpstream, Legate, UpstreamAction, Value};

fn start(config: &Value) -> Legate {
    Legate::start(legate_bin!(), &config.to_string())
}

/// Listener `ingress` (stats `http.ingress.*`) with these virtual hosts, and these clusters.
fn routing_bootstrap(virtual_hosts: Vec<Value>, clusters: Vec<Value>) -> Value {
    bootstrap(vec![http_listener("ingress", route_config(virtual_hosts), vec![router_filter()], json!({}))], clusters)
}

/// A route answering 200 with `body` itself (no upstream): tells the client which route
/// (or virtual host) matched.
fn direct(matcher: Value, body: &str) -> Value {
    json!({ "match": matcher, "direct_response": { "status": 200, "body": { "inline_string": body } } })
}

/// The body of `GET path` with `host`, asserting a 200.
fn body_for(client: &mut HttpClient, host: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let mut all = vec![("host", host)];
    all.extend_from_slice(headers);
    let r = client.send("GET", path, &all, b"");
    assert_eq!(r.status, 200, "GET {path} (host {host}, {headers:?}): {r:?}");
    r.body
}

/// Envoy's search order: exact domain, longest `*suffix`, longest `prefix*`, then `*`.
#[test]
fn virtual_host_is_chosen_by_exact_suffix_prefix_then_default_domain() {
    let vh = |name: &str, domains: &[&str]| virtual_host(name, domains, vec![direct(json!({ "prefix": "/" }), name)]);
    let config = routing_bootstrap(
        vec![
            vh("default", &["*"]),
            vh("prefix", &["api.*"]),
            vh("suffix", &["*.example.com"]),
            vh("longer-suffix", &["*.eu.example.com"]),
            vh("exact", &["api.example.com", "other.test"]),
        ],
        vec![],
    );
    let px = start(&config);
    let mut c = HttpClient::connect(px.connect_addr("ingress"));

    let seen: Vec<(&str, String)> = [
        "api.example.com",
        "other.test",
        "www.example.com",
        "api.eu.example.com",
        "api.foo.example.com",
        "api.other.org",
        "nothing.org",
        "API.EXAMPLE.COM",
    ]
    .into_iter()
    .map(|host| (host, body_for(&mut c, host, "/", &[])))
    .collect();

    let expected = [
        ("api.example.com", "exact"),
        ("other.test", "exact"),
        ("www.example.com", "suffix"),
        ("api.eu.example.com", "longer-suffix"),
        // Both `*.example.com` and `api.*` match: suffix wildcards come first.
        ("api.foo.example.com", "suffix"),
        ("api.other.org", "prefix"),
        ("nothing.org", "default"),
        // Domains are matched case-insensitively.
        ("API.EXAMPLE.COM", "exact"),
    ];
    let seen: Vec<(&str, &str)> = seen.iter().map(|(h, b)| (*h, b.as_str())).collect();
    assert_eq!(seen, expected);
}

#[test]
fn routes_match_by_prefix_path_regex_headers_and_query_parameters_first_match_wins() {
    let routes = vec![
        direct(json!({ "path": "/exact" }), "path"),
        direct(json!({ "prefix": "/first" }), "first-a"),
        direct(json!({ "prefix": "/first/x" }), "first-b"),
        direct(json!({ "safe_regex": { "regex": "/regex/[0-9]+" } }), "regex"),
        direct(
            json!({ "prefix": "/hdr", "headers": [{ "name": "x-mode", "string_match": { "exact": "blue" } }] }),
            "hdr-blue",
        ),
        direct(json!({ "prefix": "/hdr", "headers": [{ "name": "x-mode", "present_match": true }] }), "hdr-present"),
        direct(json!({ "prefix": "/hdr" }), "hdr-other"),
        direct(
            json!({ "prefix": "/q", "query_parameters": [{ "name": "debug", "string_match": { "exact": "1" } }] }),
            "q-debug",
        ),
        direct(json!({ "prefix": "/q" }), "q-plain"),
    ];
    let px = start(&routing_bootstrap(vec![virtual_host("vh", &["*"], routes)], vec![]));
    let mut c = HttpClient::connect(px.connect_addr("ingress"));
    let mut get = |path: &str, headers: &[(&str, &str)]| body_for(&mut c, "example.com", path, headers);

    assert_eq!(get("/exact", &[]), "path");
    assert_eq!(get("/exact?with=query", &[]), "path", "`path` ignores the query string");
    assert_eq!(get("/first/x", &[]), "first-a", "the first matching route wins, not the longest");
    assert_eq!(get("/first", &[]), "first-a");
    assert_eq!(get("/regex/123", &[]), "regex");
    assert_eq!(get("/hdr", &[("x-mode", "blue")]), "hdr-blue");
    assert_eq!(get("/hdr", &[("x-mode", "red")]), "hdr-present");
    assert_eq!(get("/hdr", &[]), "hdr-other");
    assert_eq!(get("/q?debug=1", &[]), "q-debug");
    assert_eq!(get("/q?debug=2", &[]), "q-plain");
    assert_eq!(get("/q?other=1&debug=1", &[]), "q-debug");
    assert_eq!(get("/q", &[]), "q-plain");

    // `safe_regex` must match the whole path; `path` the whole path.
    for path in ["/regex/12a", "/regex/", "/exact/more", "/nothing"] {
        let r = c.send("GET", path, &[("host", "example.com")], b"");
        assert_eq!(r.status, 404, "GET {path}: {r:?}");
    }
}

/// Header matchers see the pseudo-headers as Envoy's header map holds them: `:method`, `:path`
/// with its query string, `:authority` and `:scheme`.
#[test]
fn header_matchers_match_the_pseudo_headers() {
    let on = |name: &str, matcher: Value, body: &str| {
        direct(json!({ "prefix": "/", "headers": [{ "name": name, "string_match": matcher }] }), body)
    };
    let routes = vec![
        on(":method", json!({ "exact": "POST" }), "method"),
        on(":path", json!({ "suffix": "?debug=1" }), "path"),
        on(":authority", json!({ "exact": "admin.example.com" }), "authority"),
        on(":scheme", json!({ "exact": "https" }), "https"),
        on(":scheme", json!({ "exact": "http" }), "http"),
    ];
    let px = start(&routing_bootstrap(vec![virtual_host("vh", &["*"], routes)], vec![]));
    let mut c = HttpClient::connect(px.connect_addr("ingress"));

    let post = c.send("POST", "/form", &[("host", "example.com"), ("content-length", "0")], b"");
    assert_eq!((post.status, post.body.as_str()), (200, "method"), "{post:?}");
    assert_eq!(body_for(&mut c, "example.com", "/items?debug=1", &[]), "path");
    assert_eq!(body_for(&mut c, "admin.example.com", "/items", &[]), "authority");
    // Plain-text HTTP/1.1: `:scheme` is `http`, so the `https` route above is passed over.
    assert_eq!(body_for(&mut c, "example.com", "/items", &[]), "http");
    // A header sent with a pseudo-header's name is not the pseudo-header (`:` is not a token
    // character: HTTP/1.1 refuses such a field outright).
    let r = c.send("GET", "/items", &[("host", "example.com"), (":method", "POST")], b"");
    assert_eq!(r.status, 400, "{r:?}");
}

/// HTTP/1.1's `:scheme` (Envoy's "HTTP header manipulation"): an absolute URL's, else the
/// `x-forwarded-proto` of a trusted downstream when it names one, else the connection's. An
/// absolute URL with another scheme is a 400; at the edge, an `https` one in the clear is a
/// 403, and the client's `x-forwarded-proto` is replaced by the connection's.
#[test]
fn the_scheme_of_an_http1_request() {
    let routes = || {
        vec![
            direct(
                json!({ "prefix": "/", "headers": [{ "name": ":scheme", "string_match": { "exact": "https" } }] }),
                "https",
            ),
            direct(
                json!({ "prefix": "/", "headers": [{ "name": ":scheme", "string_match": { "exact": "http" } }] }),
                "http",
            ),
        ]
    };
    let px = start(&routing_bootstrap(vec![virtual_host("vh", &["*"], routes())], vec![]));
    let mut c = HttpClient::connect(px.connect_addr("ingress"));
    assert_eq!(body_for(&mut c, "example.com", "/", &[]), "http");
    assert_eq!(body_for(&mut c, "example.com", "/", &[("x-forwarded-proto", "https")]), "https");
    assert_eq!(body_for(&mut c, "example.com", "/", &[("x-forwarded-proto", "HTTPS")]), "https");
    assert_eq!(body_for(&mut c, "example.com", "/", &[("x-forwarded-proto", "gopher")]), "http");
    assert_eq!(body_for(&mut c, "example.com", "https://example.com/", &[]), "https");
    assert_eq!(body_for(&mut c, "example.com", "HTTP://example.com/", &[("x-forwarded-proto", "https")]), "http");
    let r = c.send("GET", "ftp://example.com/", &[("host", "example.com")], b"");
    assert_eq!(r.status, 400, "{r:?}");

    let mut edge = routing_bootstrap(vec![virtual_host("vh", &["*"], routes())], vec![]);
    legate_testing::config::hcm_config(&mut edge, 0)["use_remote_address"] = json!(true);
    let px = start(&edge);
    let mut c = HttpClient::connect(px.connect_addr("ingress"));
    assert_eq!(body_for(&mut c, "example.com", "/", &[("x-forwarded-proto", "https")]), "http");
    assert_eq!(body_for(&mut c, "example.com", "http://example.com/", &[]), "http");
    let r = c.send("GET", "https://example.com/", &[("host", "example.com")], b"");
    assert_eq!(r.status, 403, "{r:?}");

    let mut overwritten = routing_bootstrap(vec![virtual_host("vh", &["*"], routes())], vec![]);
    legate_testing::config::hcm_config(&mut overwritten, 0)["scheme_header_transformation"] =
        json!({ "scheme_to_overwrite": "https" });
    let px = start(&overwritten);
    let mut c = HttpClient::connect(px.connect_addr("ingress"));
    assert_eq!(body_for(&mut c, "example.com", "/", &[]), "https");
    assert_eq!(body_for(&mut c, "example.com", "http://example.com/", &[("x-forwarded-proto", "http")]), "https");
}

#[test]
fn no_route_is_a_404_counted_as_no_route() {
    let api = virtual_host("api", &["api.test"], vec![direct(json!({ "prefix": "/api" }), "api")]);
    let px = start(&routing_bootstrap(vec![api], vec![]));
    let mut c = HttpClient::connect(px.connect_addr("ingress"));

    let no_route = c.send("GET", "/other", &[("host", "api.test")], b"");
    let no_vhost = c.send("GET", "/api", &[("host", "unknown.test")], b"");

    for r in [&no_route, &no_vhost] {
        assert_eq!(r.status, 404, "{r:?}");
        assert_eq!(r.body, "", "Envoy's no-route reply has no body: {r:?}");
        assert_eq!(r.header("server"), Some("envoy"), "{r:?}");
    }
    assert_eq!(body_for(&mut c, "api.test", "/api", &[]), "api", "the connection stays usable");
    px.wait_stat("http.ingress.no_route", 2);
    px.wait_stat("http.ingress.downstream_rq_4xx", 2);
}

/// A rewriting route table: `/old/` → `/new/` by prefix, `/re/<word>/<n>` → `/v2/<n>/<word>`
/// by regex, anything else untouched; the upstream echoes the path it saw.
fn rewriting_proxy(upstream: &HttpUpstream) -> Legate {
    let routes = vec![
        json!({ "match": { "prefix": "/old/" }, "route": { "cluster": "backend", "prefix_rewrite": "/new/" } }),
        json!({ "match": { "prefix": "/re/" }, "route": { "cluster": "backend", "regex_rewrite": {
            "pattern": { "regex": "^/re/([a-z]+)/([0-9]+)$" }, "substitution": "/v2/\\2/\\1" } } }),
        json!({ "match": { "prefix": "/" }, "route": { "cluster": "backend" } }),
    ];
    start(&routing_bootstrap(
        vec![virtual_host("vh", &["*"], routes)],
        vec![static_cluster("backend", &[upstream.addr()])],
    ))
}

#[test]
fn prefix_rewrite_changes_the_path_the_upstream_sees_and_keeps_the_original() {
    let upstream = HttpUpstream::http1(|r| UpstreamAction::ok(r.path.clone()));
    let px = rewriting_proxy(&upstream);
    let mut c = HttpClient::connect(px.connect_addr("ingress"));

    let r = c.get("/old/thing?x=1");
    assert_eq!((r.status, r.body.as_str()), (200, "/new/thing?x=1"), "{r:?}");
    let seen = upstream.last_request();
    assert_eq!(seen.path, "/new/thing?x=1");
    assert_eq!(seen.header("x-envoy-original-path"), Some("/old/thing?x=1"));

    let r = c.get("/untouched");
    assert_eq!(r.body, "/untouched");
    assert_eq!(upstream.last_request().header("x-envoy-original-path"), None, "no rewrite, no original path");
}

/// `regex_rewrite.substitution` uses RE2's `\1` group references
/// (`envoy.type.matcher.v3.RegexMatchAndSubstitute`).
#[test]
fn regex_rewrite_substitutes_capture_groups() {
    let upstream = HttpUpstream::http1(|r| UpstreamAction::ok(r.path.clone()));
    let px = rewriting_proxy(&upstream);
    let mut c = HttpClient::connect(px.connect_addr("ingress"));

    let r = c.get("/re/item/42?keep=query");

    assert_eq!(r.status, 200, "{r:?}");
    let seen = upstream.last_request();
    assert_eq!(seen.path, "/v2/42/item?keep=query", "RE2-style \\1 group references");
    assert_eq!(seen.header("x-envoy-original-path"), Some("/re/item/42?keep=query"));
}

#[test]
fn host_rewrite_literal_changes_the_host_the_upstream_sees() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("ok"));
    let routes = vec![json!({ "match": { "prefix": "/" },
        "route": { "cluster": "backend", "host_rewrite_literal": "rewritten.internal" } })];
    let px = start(&routing_bootstrap(
        vec![virtual_host("vh", &["*"], routes)],
        vec![static_cluster("backend", &[upstream.addr()])],
    ));
    let mut c = HttpClient::connect(px.connect_addr("ingress"));

    let r = c.send("GET", "/", &[("host", "public.example")], b"");

    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(upstream.last_request().header_all("host"), vec!["rewritten.internal"]);
}

#[test]
fn weighted_clusters_send_traffic_to_both_clusters() {
    let a = HttpUpstream::tag("a");
    let b = HttpUpstream::tag("b");
    let routes = vec![json!({ "match": { "prefix": "/" }, "route": { "weighted_clusters": { "clusters": [
        { "name": "a", "weight": 50 }, { "name": "b", "weight": 50 } ] } } })];
    let px = start(&routing_bootstrap(
        vec![virtual_host("vh", &["*"], routes)],
        vec![static_cluster("a", &[a.addr()]), static_cluster("b", &[b.addr()])],
    ));
    let mut c = HttpClient::connect(px.connect_addr("ingress"));

    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for _ in 0..200 {
        let r = c.get("/");
        assert_eq!(r.status, 200, "{r:?}");
        *counts.entry(r.body).or_default() += 1;
    }

    let (na, nb) = (counts.get("a").copied().unwrap_or(0), counts.get("b").copied().unwrap_or(0));
    assert_eq!(na + nb, 200, "{counts:?}");
    // 50/50 over 200 requests: fewer than 40 on one side has probability < 1e-17.
    assert!(na >= 40 && nb >= 40, "both clusters should get traffic: {counts:?}");
    assert_eq!((a.request_count() as u64, b.request_count() as u64), (na, nb));
    px.wait_stat("cluster.a.upstream_rq_200", na);
    px.wait_stat("cluster.b.upstream_rq_200", nb);
}

#[test]
fn cluster_header_names_the_cluster() {
    let a = HttpUpstream::tag("a");
    let b = HttpUpstream::tag("b");
    let routes = vec![json!({ "match": { "prefix": "/" }, "route": { "cluster_header": "x-target-cluster" } })];
    let px = start(&routing_bootstrap(
        vec![virtual_host("vh", &["*"], routes)],
        vec![static_cluster("a", &[a.addr()]), static_cluster("b", &[b.addr()])],
    ));
    let mut c = HttpClient::connect(px.connect_addr("ingress"));

    assert_eq!(c.send("GET", "/", &[("x-target-cluster", "b")], b"").body, "b");
    assert_eq!(c.send("GET", "/", &[("x-target-cluster", "a")], b"").body, "a");
    // No such cluster: Envoy's cluster_not_found_response_code, 503 by default.
    let missing = c.send("GET", "/", &[("x-target-cluster", "nope")], b"");
    assert_eq!(missing.status, 503, "{missing:?}");
    let absent = c.send("GET", "/", &[], b"");
    assert_eq!(absent.status, 503, "{absent:?}");

    assert_eq!((a.request_count(), b.request_count()), (1, 1));
    px.wait_stat("http.ingress.no_cluster", 2);
}

#[test]
fn redirects_answer_with_status_and_location() {
    let routes = vec![
        json!({ "match": { "prefix": "/secure" }, "redirect": { "https_redirect": true } }),
        json!({ "match": { "prefix": "/moved" },
                "redirect": { "host_redirect": "new.example", "path_redirect": "/elsewhere", "response_code": "FOUND" } }),
        json!({ "match": { "prefix": "/v1/" },
                "redirect": { "prefix_rewrite": "/v2/", "response_code": "PERMANENT_REDIRECT", "strip_query": true } }),
    ];
    let px = start(&routing_bootstrap(vec![virtual_host("vh", &["*"], routes)], vec![]));
    let mut c = HttpClient::connect(px.connect_addr("ingress"));
    let mut get = |path: &str| c.send("GET", path, &[("host", "example.com")], b"");

    let https = get("/secure/page?a=1");
    assert_eq!(https.status, 301, "{https:?}");
    assert_eq!(https.header("location"), Some("https://example.com/secure/page?a=1"));
    assert_eq!(https.body, "");

    let moved = get("/moved/x");
    assert_eq!(moved.status, 302, "{moved:?}");
    assert_eq!(moved.header("location"), Some("http://new.example/elsewhere"));

    let prefix = get("/v1/items?q=1");
    assert_eq!(prefix.status, 308, "{prefix:?}");
    assert_eq!(prefix.header("location"), Some("http://example.com/v2/items"));

    px.wait_stat("http.ingress.rq_redirect", 3);
    px.wait_stat("http.ingress.downstream_rq_3xx", 3);
}

#[test]
fn direct_response_answers_status_and_body() {
    let routes = vec![
        json!({ "match": { "prefix": "/teapot" },
                "direct_response": { "status": 418, "body": { "inline_string": "short and stout" } } }),
        json!({ "match": { "prefix": "/empty" }, "direct_response": { "status": 204 } }),
    ];
    let px = start(&routing_bootstrap(vec![virtual_host("vh", &["*"], routes)], vec![]));
    let mut c = HttpClient::connect(px.connect_addr("ingress"));

    let teapot = c.get("/teapot");
    assert_eq!((teapot.status, teapot.body.as_str()), (418, "short and stout"), "{teapot:?}");
    assert_eq!(teapot.header("content-length"), Some("15"));
    assert_eq!(teapot.header("content-type"), Some("text/plain"));
    let empty = c.get("/empty");
    assert_eq!((empty.status, empty.body.as_str()), (204, ""), "{empty:?}");

    px.wait_stat("http.ingress.rq_direct_response", 2);
}

/// Envoy applies header mutations from the most specific level to the least (route, virtual
/// host, route configuration), so with overwrite the route configuration's value wins, and
/// with append every level's value is there, route first ("Custom request/response headers").
#[test]
fn header_mutations_at_route_config_virtual_host_and_route_level() {
    let upstream = HttpUpstream::http1(|_| {
        UpstreamAction::ok("ok").with_header("x-upstream-secret", "s3cr3t").with_header("x-upstream-kept", "yes")
    });
    let add = |key: &str, value: &str| json!({ "header": { "key": key, "value": value } });
    let overwrite = |key: &str, value: &str| json!({ "header": { "key": key, "value": value }, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD" });
    let route = json!({
        "match": { "prefix": "/" },
        "route": { "cluster": "backend" },
        "request_headers_to_add": [
            add("x-route", "%DOWNSTREAM_REMOTE_ADDRESS%"), add("x-level", "route"), overwrite("x-winner", "route"),
        ],
        "request_headers_to_remove": ["x-drop-at-route"],
        "response_headers_to_add": [add("x-route-resp", "route")],
    });
    let mut vhost = virtual_host("vh", &["*"], vec![route]);
    vhost["request_headers_to_add"] = json!([add("x-vh", "vh"), add("x-level", "vh"), overwrite("x-winner", "vh")]);
    vhost["request_headers_to_remove"] = json!(["x-drop-at-vh"]);
    vhost["response_headers_to_add"] = json!([add("x-vh-resp", "vh")]);
    let mut routes = route_config(vec![vhost]);
    routes["request_headers_to_add"] = json!([add("x-rc", "rc"), add("x-level", "rc"), overwrite("x-winner", "rc")]);
    routes["request_headers_to_remove"] = json!(["x-drop-at-rc"]);
    routes["response_headers_to_add"] = json!([add("x-rc-resp", "rc")]);
    routes["response_headers_to_remove"] = json!(["x-upstream-secret"]);
    let config = bootstrap(
        vec![http_listener("ingress", routes, vec![router_filter()], json!({}))],
        vec![static_cluster("backend", &[upstream.addr()])],
    );
    let px = start(&config);
    let mut c = HttpClient::connect(px.connect_addr("ingress"));

    let r = c.send(
        "GET",
        "/",
        &[("x-drop-at-route", "1"), ("x-drop-at-vh", "1"), ("x-drop-at-rc", "1"), ("x-client", "kept")],
        b"",
    );

    assert_eq!(r.status, 200, "{r:?}");
    let seen = upstream.last_request();
    assert_eq!(seen.header("x-route"), Some(c.local_addr().to_string().as_str()), "%DOWNSTREAM_REMOTE_ADDRESS%");
    assert_eq!(seen.header("x-vh"), Some("vh"));
    assert_eq!(seen.header("x-rc"), Some("rc"));
    assert_eq!(seen.header_all("x-level"), vec!["route", "vh", "rc"], "appended, most specific first");
    assert_eq!(seen.header_all("x-winner"), vec!["rc"], "overwrite: the route configuration wins");
    for dropped in ["x-drop-at-route", "x-drop-at-vh", "x-drop-at-rc"] {
        assert_eq!(seen.header(dropped), None, "{dropped} should be removed: {:?}", seen.headers);
    }
    assert_eq!(seen.header("x-client"), Some("kept"));

    assert_eq!(r.header("x-route-resp"), Some("route"));
    assert_eq!(r.header("x-vh-resp"), Some("vh"));
    assert_eq!(r.header("x-rc-resp"), Some("rc"));
    assert_eq!(r.header("x-upstream-secret"), None, "response_headers_to_remove: {r:?}");
    assert_eq!(r.header("x-upstream-kept"), Some("yes"));
}

/// `/config_dump` lists the route configurations written inline in the connection managers
/// under `RoutesConfigDump.static_route_configs` (where `istioctl proxy-config routes` and
/// other tools read routes).
#[test]
fn config_dump_lists_inline_route_configs() {
    let config =
        routing_bootstrap(vec![virtual_host("vh", &["*"], vec![direct(json!({ "prefix": "/" }), "x")])], vec![]);
    let px = start(&config);

    let dump = px.admin_json("/config_dump?resource=static_route_configs");
    let first = &dump["configs"][0];
    assert_eq!(first["@type"], "type.googleapis.com/envoy.admin.v3.RoutesConfigDump.StaticRouteConfig", "{dump}");
    assert_eq!(first["route_config"]["@type"], "type.googleapis.com/envoy.config.route.v3.RouteConfiguration");
    assert_eq!(first["route_config"]["name"], "local_route", "{dump}");
    assert_eq!(first["route_config"]["virtual_hosts"][0]["name"], "vh", "{dump}");
}

/// `require_tls`: a request over plain HTTP gets Envoy's TLS redirect, a 301 to the same URL
/// over https (`EXTERNAL_ONLY` too, for a request the connection manager did not mark
/// internal).
#[test]
fn require_tls_redirects_plain_http_to_https() {
    for requirement in ["ALL", "EXTERNAL_ONLY"] {
        let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("never over http"));
        let mut vh = virtual_host("vh", &["*"], vec![route_to("/", "backend")]);
        vh["require_tls"] = json!(requirement);
        let px = start(&routing_bootstrap(vec![vh], vec![static_cluster("backend", &[upstream.addr()])]));
        let mut c = HttpClient::connect(px.connect_addr("ingress"));

        let r = c.send("GET", "/a/b?c=1", &[("host", "shop.example:8080")], b"");

        assert_eq!(r.status, 301, "{requirement}: {r:?}");
        assert_eq!(r.header("location"), Some("https://shop.example:8080/a/b?c=1"), "{requirement}");
        assert_eq!(upstream.request_count(), 0);
    }
}

/// `internal_only_headers` are removed from requests from outside (not `x-envoy-internal`)
/// before anything acts on them.
#[test]
fn internal_only_headers_are_removed_from_external_requests() {
    let upstream = HttpUpstream::http1(|r| UpstreamAction::ok(r.header("x-user-id").unwrap_or("-").to_string()));
    let mut config = routing_bootstrap(
        vec![virtual_host("vh", &["*"], vec![route_to("/", "backend")])],
        vec![static_cluster("backend", &[upstream.addr()])],
    );
    let hcm = &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    hcm["route_config"]["internal_only_headers"] = json!(["x-user-id"]);
    let px = start(&config);
    let mut c = HttpClient::connect(px.connect_addr("ingress"));

    assert_eq!(body_for(&mut c, "any", "/", &[("x-user-id", "admin")]), "-");
}

/// `strip_any_host_port`, `strip_matching_host_port` and `strip_trailing_host_dot` normalize
/// the host before routing (Envoy's `maybeNormalizeHost`): the route table and the upstream
/// see the stripped host.
#[test]
fn host_normalization_happens_before_routing() {
    for (field, sent, expected) in [
        ("strip_any_host_port", "shop.example:8443", "shop.example"),
        ("strip_trailing_host_dot", "shop.example.", "shop.example"),
        ("strip_matching_host_port", "shop.example:1", "shop.example:1"),
    ] {
        let upstream = HttpUpstream::http1(|r| UpstreamAction::ok(r.header("host").unwrap_or("-").to_string()));
        let mut config = routing_bootstrap(
            vec![
                virtual_host("shop", &["shop.example", "shop.example:1"], vec![route_to("/", "backend")]),
                virtual_host("other", &["*"], vec![direct(json!({ "prefix": "/" }), "other")]),
            ],
            vec![static_cluster("backend", &[upstream.addr()])],
        );
        let hcm = &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        hcm[field] = json!(true);
        let px = start(&config);
        let mut c = HttpClient::connect(px.connect_addr("ingress"));

        assert_eq!(body_for(&mut c, sent, "/", &[]), expected, "{field} with host {sent}");
        if field == "strip_matching_host_port" {
            // The listener's own port is the one stripped.
            let own = format!("shop.example:{}", px.connect_addr("ingress").port());
            assert_eq!(body_for(&mut c, &own, "/", &[]), "shop.example", "{field} with host {own}");
        }
    }
}

/// `prefix_rewrite` on a `path` or `safe_regex` route replaces the whole matched path (Envoy's
/// `PathRouteEntryImpl` / `RegexRouteEntryImpl::rewritePathHeader`), the query kept; in a
/// redirect too.
#[test]
fn prefix_rewrite_applies_to_path_and_regex_routes() {
    let upstream = HttpUpstream::http1(|r| UpstreamAction::ok(r.path.clone()));
    let routes = vec![
        json!({ "match": { "path": "/old" }, "route": { "cluster": "backend", "prefix_rewrite": "/new" } }),
        json!({ "match": { "safe_regex": { "regex": "/re/[0-9]+" } }, "route": { "cluster": "backend", "prefix_rewrite": "/numbered" } }),
        json!({ "match": { "path": "/moved" }, "redirect": { "prefix_rewrite": "/here" } }),
    ];
    let px = start(&routing_bootstrap(
        vec![virtual_host("vh", &["*"], routes)],
        vec![static_cluster("backend", &[upstream.addr()])],
    ));
    let mut c = HttpClient::connect(px.connect_addr("ingress"));

    assert_eq!(body_for(&mut c, "h", "/old?x=1", &[]), "/new?x=1");
    assert_eq!(body_for(&mut c, "h", "/re/42?y=2", &[]), "/numbered?y=2");
    let r = c.send("GET", "/moved?z=3", &[("host", "h")], b"");
    assert_eq!((r.status, r.header("location")), (301, Some("http://h/here?z=3")), "{r:?}");
}

/// A `direct_response` with a 201 or 3xx status points `location` at the request's URL, as
/// Envoy's router does.
#[test]
fn a_direct_redirect_status_carries_the_request_url_as_location() {
    let routes = vec![
        json!({ "match": { "prefix": "/made" }, "direct_response": { "status": 201 } }),
        json!({ "match": { "prefix": "/" }, "direct_response": { "status": 200 } }),
    ];
    let px = start(&routing_bootstrap(vec![virtual_host("vh", &["*"], routes)], vec![]));
    let mut c = HttpClient::connect(px.connect_addr("ingress"));

    let r = c.send("POST", "/made/1?x=2", &[("host", "api.example")], b"");
    assert_eq!((r.status, r.header("location")), (201, Some("http://api.example/made/1?x=2")), "{r:?}");
    let r = c.send("GET", "/other", &[("host", "api.example")], b"");
    assert_eq!((r.status, r.header("location")), (200, None), "{r:?}");
}

/// The host rewrites run after the header mutations (Envoy's `finalizeRequestHeaders`):
/// `host_rewrite_header` can name a header the route adds; `host_rewrite_path_regex` makes
/// the host from the path; `append_x_forwarded_host` appends to an existing field with a
/// comma.
#[test]
fn host_rewrites_follow_the_header_mutations() {
    let upstream = HttpUpstream::http1(|r| {
        let xfh =
            r.headers.iter().filter(|(k, _)| k == "x-forwarded-host").map(|(_, v)| v.as_str()).collect::<Vec<_>>();
        UpstreamAction::ok(format!("{} {}", r.header("host").unwrap_or("-"), xfh.join("|")))
    });
    let routes = vec![
        json!({ "match": { "prefix": "/added" }, "route": {
            "cluster": "backend", "host_rewrite_header": "x-target", "append_x_forwarded_host": true },
            "request_headers_to_add": [{ "header": { "key": "x-target", "value": "added.example" } }] }),
        json!({ "match": { "prefix": "/" }, "route": {
            "cluster": "backend",
            "host_rewrite_path_regex": { "pattern": { "regex": "^/([^/]+)/.*$" }, "substitution": "\\1" } } }),
    ];
    let px = start(&routing_bootstrap(
        vec![virtual_host("vh", &["*"], routes)],
        vec![static_cluster("backend", &[upstream.addr()])],
    ));
    let mut c = HttpClient::connect(px.connect_addr("ingress"));

    assert_eq!(body_for(&mut c, "front", "/added/x", &[("x-forwarded-host", "edge")]), "added.example edge,front");
    assert_eq!(body_for(&mut c, "front", "/svc.example/x?q=1", &[]), "svc.example ");
}

/// Weighted clusters: `header_name` carries the random value that picks the entry (a layer in
/// front picks for both), and an entry's `cluster_header` names its cluster in the request.
#[test]
fn weighted_clusters_pick_by_header_and_name_clusters_by_header() {
    let a = HttpUpstream::http1(|_| UpstreamAction::ok("a"));
    let b = HttpUpstream::http1(|_| UpstreamAction::ok("b"));
    let route = json!({ "match": { "prefix": "/" }, "route": { "weighted_clusters": {
        "header_name": "x-pick",
        "clusters": [{ "name": "a", "weight": 1 }, { "cluster_header": "x-cluster", "weight": 1 }],
    } } });
    let px = start(&routing_bootstrap(
        vec![virtual_host("vh", &["*"], vec![route])],
        vec![static_cluster("a", &[a.addr()]), static_cluster("b", &[b.addr()])],
    ));
    let mut c = HttpClient::connect(px.connect_addr("ingress"));

    for _ in 0..5 {
        assert_eq!(body_for(&mut c, "h", "/", &[("x-pick", "4")]), "a", "4 mod 2 picks the first");
        assert_eq!(body_for(&mut c, "h", "/", &[("x-pick", "7"), ("x-cluster", "b")]), "b");
    }
    // The second entry without its header names no cluster.
    let r = c.send("GET", "/", &[("host", "h"), ("x-pick", "1")], b"");
    assert_eq!(r.status, 503, "{r:?}");
}
