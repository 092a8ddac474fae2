//! DNS clusters against a real name server on loopback ([`DnsServer`]), named in the cluster's
//! `typed_dns_resolver_config` as Envoy users do with c-ares: STRICT_DNS follows the answers
//! (hosts added and removed without dropping requests in flight), LOGICAL_DNS keeps one host,
//! `respect_dns_ttl` re-resolves at the TTL, and a failed resolution keeps the last hosts.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use legate_testing::config::{cluster_config, http_bootstrap};
use legate_testing::{
    eventually, json, legate_bin, DnsServer, HttpClient, HttpUpstream, Legate, UpstreamAction, Value,
};

const NAME: &str = "backend.legate.test";

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// One cluster `backend` of `kind` resolving `NAME` through `dns`, to port `port`.
fn dns_config(kind: &str, dns: &DnsServer, port: u16, extra: Value) -> Value {
    let mut config = http_bootstrap(&[]);
    let cluster = cluster_config(&mut config, 0);
    cluster["type"] = json!(kind);
    cluster["dns_lookup_family"] = json!("V4_ONLY");
    cluster["dns_refresh_rate"] = json!("0.2s");
    cluster["load_assignment"]["endpoints"] = json!([{ "lb_endpoints": [
        { "endpoint": { "address": { "socket_address": { "address": NAME, "port_value": port } } } }
    ]}]);
    cluster["typed_dns_resolver_config"] = json!({
        "name": "envoy.network.dns_resolver.cares",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig",
            "resolvers": [{ "socket_address": { "address": "127.0.0.1", "port_value": dns.addr().port() } }]
        }
    });
    if let (Some(c), Value::Object(fields)) = (cluster.as_object_mut(), extra) {
        c.extend(fields);
    }
    config
}

/// Two upstreams on one port, at 127.0.0.1 and 127.0.0.2 (a DNS name maps to addresses, the
/// port comes from the endpoint).
fn two_upstreams() -> (HttpUpstream, HttpUpstream) {
    let a = HttpUpstream::http1(|r| match r.path.as_str() {
        "/slow" => UpstreamAction::delay(Duration::from_millis(1500), UpstreamAction::ok("a")),
        _ => UpstreamAction::ok("a"),
    });
    let b = HttpUpstream::http1_at(SocketAddr::new(ip(2), a.addr().port()), |_| UpstreamAction::ok("b"));
    (a, b)
}

#[test]
fn strict_dns_follows_the_answers_without_dropping_requests() {
    let dns = DnsServer::start(30);
    dns.set(NAME, &[ip(1)]);
    let (a, b) = two_upstreams();
    let px = Legate::start(legate_bin!(), &dns_config("STRICT_DNS", &dns, a.addr().port(), json!({})).to_string());
    let mut client = HttpClient::connect(px.connect_addr("ingress"));
    assert_eq!(client.get("/").body, "a");
    assert_eq!(px.stat("cluster.backend.membership_total"), Some(1));

    // A second address: a second host.
    dns.set(NAME, &[ip(1), ip(2)]);
    px.wait_stat("cluster.backend.membership_total", 2);
    eventually("b takes traffic", Duration::from_secs(10), || client.get("/").body, |body| body == "b");

    // a leaves the answer while a request to it is in flight: the request still completes.
    let ingress = px.connect_addr("ingress");
    let before = a.requests_started();
    let slow = std::thread::spawn(move || {
        let mut client = HttpClient::connect(ingress);
        // Round robin over two hosts: one of two tries lands on a.
        (0..2).map(|_| client.get("/slow")).collect::<Vec<_>>()
    });
    a.wait_requests_started(before + 1);
    dns.set(NAME, &[ip(2)]);
    px.wait_stat("cluster.backend.membership_total", 1);
    let answers = slow.join().unwrap();
    assert!(answers.iter().all(|r| r.status == 200), "{answers:?}");
    assert!(answers.iter().any(|r| r.body == "a"), "the request in flight to a completed: {answers:?}");
    for _ in 0..6 {
        assert_eq!(client.get("/").body, "b", "only b is left");
    }
    assert!(px.stat("cluster.backend.update_success").unwrap() >= 3);
    drop(b);
}

#[test]
fn a_failed_resolution_keeps_the_last_hosts() {
    let dns = DnsServer::start(30);
    dns.set(NAME, &[ip(1)]);
    let (a, _b) = two_upstreams();
    let extra = json!({ "dns_failure_refresh_rate": { "base_interval": "0.1s", "max_interval": "0.4s" } });
    let px = Legate::start(legate_bin!(), &dns_config("STRICT_DNS", &dns, a.addr().port(), extra).to_string());
    let mut client = HttpClient::connect(px.connect_addr("ingress"));
    assert_eq!(client.get("/").body, "a");
    dns.set(NAME, &[]); // NXDOMAIN from now on
    let failures = px.wait_stat_at_least("cluster.backend.update_failure", 3);
    assert!(failures >= 3);
    assert_eq!(client.get("/").body, "a", "the last good answer still serves");
    assert_eq!(px.stat("cluster.backend.membership_total"), Some(1));
}

#[test]
fn logical_dns_keeps_one_host() {
    let dns = DnsServer::start(30);
    dns.set(NAME, &[ip(1), ip(2)]);
    let (a, _b) = two_upstreams();
    let px = Legate::start(legate_bin!(), &dns_config("LOGICAL_DNS", &dns, a.addr().port(), json!({})).to_string());
    let mut client = HttpClient::connect(px.connect_addr("ingress"));
    assert_eq!(client.get("/").status, 200);
    assert_eq!(px.stat("cluster.backend.membership_total"), Some(1));
}

#[test]
fn respect_dns_ttl_re_resolves_at_the_ttl() {
    // TTL 1 s against a refresh rate of 60 s: only the TTL can bring more queries.
    let dns = DnsServer::start(1);
    dns.set(NAME, &[ip(1)]);
    let (a, _b) = two_upstreams();
    let extra = json!({ "respect_dns_ttl": true, "dns_refresh_rate": "60s" });
    let px = Legate::start(legate_bin!(), &dns_config("STRICT_DNS", &dns, a.addr().port(), extra).to_string());
    px.wait_stat_at_least("cluster.backend.update_attempt", 3);

    let dns = DnsServer::start(1);
    dns.set(NAME, &[ip(1)]);
    let extra = json!({ "dns_refresh_rate": "60s" });
    let px = Legate::start(legate_bin!(), &dns_config("STRICT_DNS", &dns, a.addr().port(), extra).to_string());
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(px.stat("cluster.backend.update_attempt"), Some(1), "without respect_dns_ttl: the refresh rate");
}
