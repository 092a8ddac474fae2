//! The external authorization filter (`envoy.filters.http.ext_authz`): each request waits for
//! an authorization service — plain HTTP or gRPC `Authorization/Check` — which allows it
//! (with header changes), refuses it (with its own status, headers and body), or cannot
//! decide (`status_on_error`, or through with `failure_mode_allow`).

use std::io::{Read, Write};
use std::net::SocketAddr;

use legate_proxy::filters::http::ext_authz::proto;
use legate_testing::config::{bootstrap, http_listener, route_config, router_filter, static_cluster, virtual_host};
use legate_testing::{connect, json, legate_bin, ClosedPort, HttpUpstream, Legate, UpstreamAction, Value};

fn ext_authz(config: Value) -> Value {
    let mut typed_config = json!({"@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"});
    typed_config.as_object_mut().unwrap().extend(config.as_object().unwrap().clone());
    json!({"name": "envoy.filters.http.ext_authz", "typed_config": typed_config})
}

fn proxy(app: SocketAddr, authz: SocketAddr, filter: Value, route_extra: Value) -> Legate {
    let mut route = json!({"match": {"prefix": "/"}, "route": {"cluster": "app"}});
    route.as_object_mut().unwrap().extend(route_extra.as_object().unwrap().clone());
    let routes = route_config(vec![virtual_host("all", &["*"], vec![route])]);
    let config = bootstrap(
        vec![http_listener("ingress", routes, vec![ext_authz(filter), router_filter()], json!({}))],
        vec![static_cluster("app", &[app]), static_cluster("authz", &[authz])],
    );
    Legate::start(legate_bin!(), &config.to_string())
}

/// The status, the response head (lowercased) and the body.
fn send(px: &Legate, path: &str, extra: &str) -> (u16, String, String) {
    let mut client = connect(px.listener_addr("ingress"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: shop.example\r\n{extra}Connection: close\r\n\r\n");
    client.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    client.read_to_string(&mut response).unwrap();
    let code = response.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (code, head.to_ascii_lowercase(), body.to_string())
}

#[test]
fn an_http_service_allows_or_refuses_each_request() {
    let app = HttpUpstream::tag("app");
    let authz = HttpUpstream::http1(|request| match request.header("authorization") {
        Some("Bearer good") => {
            UpstreamAction::ok("").with_header("x-current-user", "alice").with_header("x-other", "no")
        }
        _ => UpstreamAction::status(403, "go away").with_header("www-authenticate", "Bearer"),
    });
    let filter = json!({"http_service": {
        "server_uri": {"uri": "ext_authz", "cluster": "authz", "timeout": "5s"},
        "path_prefix": "/check",
        "authorization_response": {"allowed_upstream_headers": {"patterns": [{"exact": "x-current-user"}]}},
    }});
    let px = proxy(app.addr(), authz.addr(), filter, json!({}));

    let (code, _, body) = send(&px, "/orders?id=1", "Authorization: Bearer good\r\nx-unrelated: 1\r\n");
    assert_eq!((code, body.as_str()), (200, "app"));
    let seen = &authz.requests()[0];
    assert_eq!((seen.method.as_str(), seen.path.as_str()), ("GET", "/check/orders?id=1"));
    assert_eq!(seen.header("authorization"), Some("Bearer good"));
    assert_eq!(seen.header("host"), Some("shop.example"));
    assert_eq!(seen.header("x-unrelated"), None, "only the allowed headers go to the service");
    let upstream = &app.requests()[0];
    assert_eq!(upstream.header("x-current-user"), Some("alice"));
    assert_eq!(upstream.header("x-other"), None);

    let (code, head, body) = send(&px, "/orders", "Authorization: Bearer bad\r\n");
    assert_eq!((code, body.as_str()), (403, "go away"));
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    assert_eq!(app.requests().len(), 1, "the refused request never reached the app");
    px.wait_stat("http.ingress.ext_authz.ok", 1);
    assert_eq!(px.stat("http.ingress.ext_authz.denied"), Some(1));
    // The route's cluster counts them too, the refusal as its response.
    assert_eq!(px.stat("cluster.app.ext_authz.ok"), Some(1));
    assert_eq!(px.stat("cluster.app.ext_authz.denied"), Some(1));
    assert_eq!(px.stat("cluster.app.upstream_rq_403"), Some(1));
}

#[test]
fn an_unreachable_service_refuses_unless_failure_mode_allow() {
    let app = HttpUpstream::tag("app");
    let nowhere = ClosedPort::new();
    let grpc = |extra: Value| {
        let mut filter = json!({"grpc_service": {"envoy_grpc": {"cluster_name": "authz"}, "timeout": "2s"}});
        filter.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        filter
    };
    let px = proxy(app.addr(), nowhere.addr(), grpc(json!({"status_on_error": {"code": 503}})), json!({}));
    let (code, _, body) = send(&px, "/", "");
    assert_eq!((code, body.as_str()), (503, ""));
    px.wait_stat("http.ingress.ext_authz.error", 1);

    let open = proxy(
        app.addr(),
        nowhere.addr(),
        grpc(json!({"failure_mode_allow": true, "failure_mode_allow_header_add": true})),
        json!({}),
    );
    assert_eq!(send(&open, "/", "").0, 200);
    assert_eq!(app.requests()[0].header("x-envoy-auth-failure-mode-allowed"), Some("true"));
    open.wait_stat("http.ingress.ext_authz.failure_mode_allowed", 1);

    // A route may turn the check off.
    let off = json!({"typed_per_filter_config": {"envoy.filters.http.ext_authz": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
        "disabled": true}}});
    let unchecked = proxy(app.addr(), nowhere.addr(), grpc(json!({})), off);
    assert_eq!(send(&unchecked, "/", "").0, 200);
    assert_eq!(unchecked.stat("http.ingress.ext_authz.error"), Some(0));
}

#[test]
fn a_grpc_service_decides_with_check_responses() {
    let app = HttpUpstream::tag("app");
    let authz = HttpUpstream::http2(|request| {
        let check = proto::CheckRequest::decode_from(request.body.get(5..).unwrap_or_default()).unwrap();
        let http = check.attributes.as_ref().and_then(|a| a.request.as_ref()).and_then(|r| r.http.clone()).unwrap();
        let header = |key: &str, value: &str, append: bool| proto::HeaderValueOption {
            header: Some(proto::HeaderValue { key: key.into(), value: value.into() }),
            append: append.then_some(proto::BoolValue { value: true }),
        };
        let response = if http.headers.get("x-user").map(String::as_str) == Some("ok") {
            let team = check.attributes.as_ref().and_then(|a| a.context_extensions.get("team")).cloned();
            proto::CheckResponse {
                status: Some(proto::RpcStatus { code: 0, message: String::new() }),
                ok_response: Some(proto::OkHttpResponse {
                    headers: vec![header(
                        "x-auth",
                        &format!("{} {} {}", http.method, http.path, team.unwrap_or_default()),
                        false,
                    )],
                    headers_to_remove: vec!["x-user".into()],
                    response_headers_to_add: vec![header("x-authorized", "yes", true)],
                }),
                denied_response: None,
            }
        } else {
            proto::CheckResponse {
                status: Some(proto::RpcStatus { code: 7, message: "denied".into() }),
                denied_response: Some(proto::DeniedHttpResponse {
                    status: Some(proto::HttpStatus { code: 401 }),
                    headers: vec![header("x-why", "policy", false)],
                    body: "nope".into(),
                }),
                ok_response: None,
            }
        };
        UpstreamAction::ok(response.to_frame())
            .with_header("content-type", "application/grpc")
            .with_header("grpc-status", "0")
    });
    let settings = json!({"typed_per_filter_config": {"envoy.filters.http.ext_authz": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
        "check_settings": {"context_extensions": {"team": "shop"}}}}});
    let filter = json!({"grpc_service": {"envoy_grpc": {"cluster_name": "authz"}, "timeout": "5s"}});
    let px = proxy(app.addr(), authz.addr(), filter, settings);

    let (code, head, _) = send(&px, "/orders?id=1", "x-user: ok\r\n");
    assert_eq!(code, 200);
    assert!(head.contains("x-authorized: yes"), "{head}");
    let upstream = &app.requests()[0];
    assert_eq!(upstream.header("x-auth"), Some("GET /orders?id=1 shop"));
    assert_eq!(upstream.header("x-user"), None, "removed as the service asked");
    let call = &authz.requests()[0];
    assert_eq!(call.path, "/envoy.service.auth.v3.Authorization/Check");
    assert_eq!(call.header("content-type"), Some("application/grpc"));

    let (code, head, body) = send(&px, "/orders", "x-user: mallory\r\n");
    assert_eq!((code, body.as_str()), (401, "nope"));
    assert!(head.contains("x-why: policy"), "{head}");
    px.wait_stat("http.ingress.ext_authz.denied", 1);
    assert_eq!(px.stat("http.ingress.ext_authz.ok"), Some(1));
}
