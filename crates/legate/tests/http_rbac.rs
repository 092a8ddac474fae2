//! The RBAC HTTP filter (`envoy.filters.http.rbac`): requests allowed or refused with Envoy's
//! 403 by policies on the request and the caller, shadow policies only counted, and routes
//! with rules of their own or none.

use std::io::{Read, Write};
use std::time::Duration;

use legate_testing::config::{bootstrap, file_access_log, http_listener, route_config, static_cluster, virtual_host};
use legate_testing::{connect, eventually, json, legate_bin, HttpUpstream, Legate, TempDir, Value};

fn rbac_filter(config: Value) -> Value {
    let mut typed_config = json!({"@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"});
    typed_config.as_object_mut().unwrap().extend(config.as_object().unwrap().clone());
    json!({"name": "envoy.filters.http.rbac", "typed_config": typed_config})
}

fn router() -> Value {
    legate_testing::config::router_filter()
}

/// legate with its access log flushed every 100 ms, so tests wait for lines, not 10 s.
fn start(config: &Value) -> Legate {
    Legate::builder(legate_bin!()).config(&config.to_string()).arg("--file-flush-interval-msec").arg("100").start()
}

/// Sends one request; the status line's code and the body.
fn send(px: &Legate, method: &str, path: &str, extra: &str) -> (u16, String) {
    let mut client = connect(px.listener_addr("ingress"));
    let request = format!("{method} {path} HTTP/1.1\r\nHost: api.example\r\n{extra}Connection: close\r\n\r\n");
    client.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    client.read_to_string(&mut response).unwrap();
    let code = response.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    (code, body)
}

#[test]
fn requests_are_allowed_or_refused_by_policy() {
    let upstream = HttpUpstream::tag("app");
    let logs = TempDir::new();
    let log = logs.path().join("access.log");
    let rules = json!({
        "rules": {
            "action": "ALLOW",
            "policies": {
                "public-reads": {
                    "permissions": [{"and_rules": {"rules": [
                        {"header": {"name": ":method", "string_match": {"exact": "GET"}}},
                        {"url_path": {"path": {"prefix": "/public/"}}},
                    ]}}],
                    "principals": [{"any": true}],
                },
                "admins": {
                    "permissions": [{"any": true}],
                    "principals": [{"header": {"name": "x-role", "string_match": {"exact": "admin"}}}],
                },
            },
        },
        "shadow_rules": {
            "action": "DENY",
            "policies": {"no-deletes": {
                "permissions": [{"header": {"name": ":method", "string_match": {"exact": "DELETE"}}}],
                "principals": [{"any": true}],
            }},
        },
        "shadow_rules_stat_prefix": "audit",
    });
    let routes = route_config(vec![virtual_host(
        "all",
        &["*"],
        vec![json!({"match": {"prefix": "/"}, "route": {"cluster": "app"}})],
    )]);
    let hcm = json!({"access_log": [file_access_log(&log, Some("%RESPONSE_CODE% %RESPONSE_CODE_DETAILS%\n"))]});
    let config = bootstrap(
        vec![http_listener("ingress", routes, vec![rbac_filter(rules), router()], hcm)],
        vec![static_cluster("app", &[upstream.addr()])],
    );
    let px = start(&config);

    assert_eq!(send(&px, "GET", "/public/doc?x=1", "").0, 200);
    let (code, body) = send(&px, "POST", "/public/doc", "");
    assert_eq!(code, 403);
    assert_eq!(body, "RBAC: access denied");
    assert_eq!(send(&px, "GET", "/private", "").0, 403, "the path, not the query, is matched");
    assert_eq!(send(&px, "DELETE", "/private", "x-role: admin\r\n").0, 200, "admins may, shadow rules only count");

    px.wait_stat("http.ingress.rbac.allowed", 2);
    assert_eq!(px.stat("http.ingress.rbac.denied"), Some(2));
    assert_eq!(px.stat("http.ingress.rbac.audit.shadow_denied"), Some(1));
    assert_eq!(px.stat("http.ingress.rbac.audit.shadow_allowed"), Some(3));
    assert_eq!(upstream.requests().len(), 2, "refused requests never reach the upstream");
    let logged = eventually(
        "the refusals are logged",
        Duration::from_secs(10),
        || std::fs::read_to_string(&log).unwrap_or_default(),
        |text| text.lines().count() >= 4,
    );
    assert!(logged.lines().any(|l| l == "403 rbac_access_denied_matched_policy[none]"), "{logged}");
}

/// A DENY policy names itself in the refusal's details; a route's `RBACPerRoute` replaces the
/// filter's rules, and one without `rbac` turns the filter off there.
#[test]
fn deny_policies_and_per_route_rules() {
    let upstream = HttpUpstream::tag("app");
    let logs = TempDir::new();
    let log = logs.path().join("access.log");
    let deny_all = json!({"rules": {"action": "DENY", "policies": {"block everyone": {
        "permissions": [{"any": true}], "principals": [{"any": true}],
    }}}});
    let per_route = |rbac: Value| {
        json!({"envoy.filters.http.rbac": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute", "rbac": rbac}})
    };
    let open_route = json!({"match": {"prefix": "/open"}, "route": {"cluster": "app"},
        "typed_per_filter_config": {"envoy.filters.http.rbac": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute"}}});
    let local_only = json!({"rules": {"action": "ALLOW", "policies": {"loopback": {
        "permissions": [{"destination_port_range": {"start": 1, "end": 65536}}],
        "principals": [{"direct_remote_ip": {"address_prefix": "127.0.0.0", "prefix_len": 8}}],
    }}}});
    let local_route = json!({"match": {"prefix": "/local"}, "route": {"cluster": "app"},
        "typed_per_filter_config": per_route(local_only)});
    let rest = json!({"match": {"prefix": "/"}, "route": {"cluster": "app"}});
    let routes = route_config(vec![virtual_host("all", &["*"], vec![open_route, local_route, rest])]);
    let hcm = json!({"access_log": [file_access_log(&log, Some("%RESPONSE_CODE% %RESPONSE_CODE_DETAILS%\n"))]});
    let config = bootstrap(
        vec![http_listener("ingress", routes, vec![rbac_filter(deny_all), router()], hcm)],
        vec![static_cluster("app", &[upstream.addr()])],
    );
    let px = start(&config);

    assert_eq!(send(&px, "GET", "/anything", "").0, 403);
    assert_eq!(send(&px, "GET", "/open/door", "").0, 200, "the filter is off on this route");
    assert_eq!(send(&px, "GET", "/local/x", "").0, 200, "this route's own rules allow loopback callers");
    let logged = eventually(
        "the refusal is logged",
        Duration::from_secs(10),
        || std::fs::read_to_string(&log).unwrap_or_default(),
        |text| text.lines().count() >= 3,
    );
    assert!(logged.lines().any(|l| l == "403 rbac_access_denied_matched_policy[block_everyone]"), "{logged}");
    assert_eq!(px.stat("http.ingress.rbac.denied"), Some(1));
    assert_eq!(px.stat("http.ingress.rbac.allowed"), Some(1), "the route's rules count under the same names");
}
