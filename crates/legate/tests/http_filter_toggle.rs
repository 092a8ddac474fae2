//! Per-route filter toggles (`envoy.config.route.v3.FilterConfig`): a filter disabled in the
//! connection manager runs only on routes that configure it; a route can turn an enabled
//! filter off with `disabled: true`.

use legate_testing::config::{hcm_config, http_bootstrap, route_config, route_to, virtual_host};
use legate_testing::{json, legate_bin, HttpClient, HttpUpstream, Legate, UpstreamAction, Value};

fn fault_abort(status: u16) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
        "abort": { "http_status": status, "percentage": { "numerator": 100 } }
    })
}

fn router() -> Value {
    json!({ "name": "envoy.filters.http.router",
            "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } })
}

#[test]
fn a_disabled_filter_runs_only_where_a_route_enables_it() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("upstream"));
    let mut config = http_bootstrap(&[upstream.addr()]);
    let hcm = hcm_config(&mut config, 0);
    let mut faulty = route_to("/faulty", "backend");
    faulty["typed_per_filter_config"] = json!({
        "envoy.filters.http.fault": {
            "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
            "config": fault_abort(418)
        }
    });
    hcm["route_config"] = route_config(vec![virtual_host("all", &["*"], vec![faulty, route_to("/", "backend")])]);
    hcm["http_filters"] =
        json!([{ "name": "envoy.filters.http.fault", "disabled": true, "typed_config": fault_abort(503) }, router()]);
    let px = Legate::start(legate_bin!(), &config.to_string());
    let mut client = HttpClient::connect(px.connect_addr("ingress"));

    let r = client.get("/plain");
    assert_eq!((r.status, r.body.as_str()), (200, "upstream"), "disabled by default: {r:?}");
    let r = client.get("/faulty");
    assert_eq!(r.status, 418, "enabled by the route, with the route's config: {r:?}");
}

#[test]
fn a_route_can_turn_an_enabled_filter_off() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("upstream"));
    let mut config = http_bootstrap(&[upstream.addr()]);
    let hcm = hcm_config(&mut config, 0);
    let mut quiet = route_to("/quiet", "backend");
    quiet["typed_per_filter_config"] = json!({
        "envoy.filters.http.fault": { "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": true }
    });
    hcm["route_config"] = route_config(vec![virtual_host("all", &["*"], vec![quiet, route_to("/", "backend")])]);
    hcm["http_filters"] = json!([{ "name": "envoy.filters.http.fault", "typed_config": fault_abort(503) }, router()]);
    let px = Legate::start(legate_bin!(), &config.to_string());
    let mut client = HttpClient::connect(px.connect_addr("ingress"));

    assert_eq!(client.get("/quiet").status, 200);
    assert_eq!(client.get("/other").status, 503);
}

/// The route configuration's `typed_per_filter_config` is the least specific level, under the
/// virtual host's and the route's (Envoy's `mostSpecificPerFilterConfig`): it turns the
/// filter off everywhere but where a virtual host or route says otherwise.
#[test]
fn the_route_configuration_level_applies_under_virtual_hosts_and_routes() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("upstream"));
    let mut config = http_bootstrap(&[upstream.addr()]);
    let hcm = hcm_config(&mut config, 0);
    let mut loud = route_to("/loud", "backend");
    loud["typed_per_filter_config"] = json!({
        "envoy.filters.http.fault": {
            "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
            "config": fault_abort(418)
        }
    });
    let mut routes = route_config(vec![virtual_host("all", &["*"], vec![loud, route_to("/", "backend")])]);
    routes["typed_per_filter_config"] = json!({
        "envoy.filters.http.fault": { "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": true }
    });
    hcm["route_config"] = routes;
    hcm["http_filters"] = json!([{ "name": "envoy.filters.http.fault", "typed_config": fault_abort(503) }, router()]);
    let px = Legate::start(legate_bin!(), &config.to_string());
    let mut client = HttpClient::connect(px.connect_addr("ingress"));

    assert_eq!(client.get("/other").status, 200, "off for the whole route table");
    assert_eq!(client.get("/loud").status, 418, "on again where the route configures it");
}

/// A weighted cluster is picked with the route, before the filters (as Envoy): the fault
/// filter's `upstream_cluster` matches the picked one.
#[test]
fn filters_see_the_weighted_cluster_picked_with_the_route() {
    let a = HttpUpstream::http1(|_| UpstreamAction::ok("a"));
    let b = HttpUpstream::http1(|_| UpstreamAction::ok("b"));
    let mut config = http_bootstrap(&[a.addr()]);
    config["static_resources"]["clusters"]
        .as_array_mut()
        .unwrap()
        .push(legate_testing::config::static_cluster("b", &[b.addr()]));
    let hcm = hcm_config(&mut config, 0);
    let route = json!({ "match": { "prefix": "/" }, "route": { "weighted_clusters": {
        "header_name": "x-pick",
        "clusters": [{ "name": "backend", "weight": 1 }, { "name": "b", "weight": 1 }],
    } } });
    hcm["route_config"] = route_config(vec![virtual_host("all", &["*"], vec![route])]);
    let mut fault = fault_abort(418);
    fault["upstream_cluster"] = json!("b");
    hcm["http_filters"] = json!([{ "name": "envoy.filters.http.fault", "typed_config": fault }, router()]);
    let px = Legate::start(legate_bin!(), &config.to_string());
    let mut client = HttpClient::connect(px.connect_addr("ingress"));

    let mut to = |pick: &str| client.send("GET", "/", &[("x-pick", pick)], b"").status;
    assert_eq!(to("0"), 200, "backend: no fault");
    assert_eq!(to("1"), 418, "b: the fault");
}

/// The route's response header mutations come before the encoder filters, as Envoy's router
/// applies them: the CORS filter's `access-control-allow-origin` wins over a route's.
#[test]
fn encoder_filters_see_the_routes_response_mutations() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("upstream"));
    let mut config = http_bootstrap(&[upstream.addr()]);
    let hcm = hcm_config(&mut config, 0);
    let mut route = route_to("/", "backend");
    route["response_headers_to_add"] = json!([{
        "header": { "key": "access-control-allow-origin", "value": "*" },
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"
    }]);
    let mut vhost = virtual_host("all", &["*"], vec![route]);
    vhost["typed_per_filter_config"] = json!({ "envoy.filters.http.cors": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
        "allow_origin_string_match": [{ "exact": "https://a.example" }]
    } });
    hcm["route_config"] = route_config(vec![vhost]);
    hcm["http_filters"] = json!([{ "name": "envoy.filters.http.cors", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors" } }, router()]);
    let px = Legate::start(legate_bin!(), &config.to_string());
    let mut client = HttpClient::connect(px.connect_addr("ingress"));

    let r = client.send("GET", "/", &[("origin", "https://a.example")], b"");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), Some("https://a.example"), "{r:?}");
}
