//! Hashing load balancers end to end (Envoy docs: "Ring hash" and "Maglev" load balancers,
//! `RouteAction.hash_policy`): the real binary in front of three real upstreams, the route
//! hashing a request header, each request answered with the name of the upstream it reached.

use std::collections::BTreeSet;

use legate_testing::config::{bootstrap, http_listener, route_config, router_filter, static_cluster, virtual_host};
use legate_testing::{json, legate_bin, HttpClient, HttpUpstream, Legate, Value};

/// Listener `ingress` → cluster `backend` with `lb_policy` over `upstreams`, the route hashing
/// the `x-user` header.
fn hash_bootstrap(lb_policy: &str, upstreams: &[HttpUpstream]) -> Value {
    let addrs: Vec<_> = upstreams.iter().map(HttpUpstream::addr).collect();
    let mut cluster = static_cluster("backend", &addrs);
    cluster["lb_policy"] = json!(lb_policy);
    let route = json!({
        "match": { "prefix": "/" },
        "route": { "cluster": "backend", "hash_policy": [{ "header": { "header_name": "x-user" } }] },
    });
    let routes = route_config(vec![virtual_host("vh", &["*"], vec![route])]);
    bootstrap(vec![http_listener("ingress", routes, vec![router_filter()], json!({}))], vec![cluster])
}

/// The upstream tag that answered a request from `user`.
fn upstream_for(client: &mut HttpClient, user: &str) -> String {
    let r = client.send("GET", "/", &[("host", "example.com"), ("x-user", user)], b"");
    assert_eq!(r.status, 200, "{user}: {r:?}");
    r.body
}

fn same_user_sticks_and_users_spread(lb_policy: &str) {
    let upstreams = [HttpUpstream::tag("a"), HttpUpstream::tag("b"), HttpUpstream::tag("c")];
    let px = Legate::start(legate_bin!(), &hash_bootstrap(lb_policy, &upstreams).to_string());
    let mut client = HttpClient::connect(px.connect_addr("ingress"));

    let alice: BTreeSet<String> = (0..30).map(|_| upstream_for(&mut client, "alice")).collect();
    assert_eq!(alice.len(), 1, "{lb_policy}: every request of one user reaches one upstream: {alice:?}");

    // 40 users over 3 equal hosts all landing on one has probability about 3 × 3^-40.
    let spread: BTreeSet<String> = (0..40).map(|i| upstream_for(&mut client, &format!("user-{i}"))).collect();
    assert!(spread.len() > 1, "{lb_policy}: different users reach different upstreams: {spread:?}");
    px.wait_stat("cluster.backend.upstream_rq_200", 70);
}

#[test]
fn ring_hash_sends_one_user_to_one_upstream() {
    same_user_sticks_and_users_spread("RING_HASH");
}

#[test]
fn maglev_sends_one_user_to_one_upstream() {
    same_user_sticks_and_users_spread("MAGLEV");
}

/// A cookie policy with a TTL: the first response sets the cookie (Envoy's generated value)
/// and a client that sends it back sticks to one upstream, across connections.
#[test]
fn a_generated_cookie_makes_a_client_sticky() {
    let upstreams = [HttpUpstream::tag("a"), HttpUpstream::tag("b"), HttpUpstream::tag("c")];
    let mut config = hash_bootstrap("RING_HASH", &upstreams);
    let route = &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["route_config"]["virtual_hosts"][0]["routes"][0]["route"];
    route["hash_policy"] = json!([{ "cookie": { "name": "lb", "ttl": "600s", "path": "/" } }]);
    let px = Legate::start(legate_bin!(), &config.to_string());

    let mut first = HttpClient::connect(px.connect_addr("ingress"));
    let r = first.get("/");
    assert_eq!(r.status, 200, "{r:?}");
    let set_cookie = r.header("set-cookie").expect("the generated cookie is set").to_string();
    assert!(set_cookie.starts_with("lb=\"") && set_cookie.ends_with("; Max-Age=600; Path=/; HttpOnly"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_string();

    let mut seen = BTreeSet::new();
    for _ in 0..10 {
        // A new connection each time: without the cookie these would spread.
        let mut client = HttpClient::connect(px.connect_addr("ingress"));
        let r = client.send("GET", "/", &[("cookie", cookie.as_str())], b"");
        assert_eq!(r.header("set-cookie"), None, "the cookie is not set again");
        seen.insert(r.body);
    }
    assert_eq!(seen.len(), 1, "one upstream for the cookie: {seen:?}");
}
