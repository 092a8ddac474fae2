//! Failover that users do not notice (issue 4): three hosts behind one cluster with the
//! "fast failover" recipe — retries on connect-failure/reset/5xx to a different host,
//! per-try timeout, outlier detection, an active health check — under steady load from a
//! real client. One host crashes, blackholes, or overloads; the client must see no error, and
//! the bad host must leave rotation.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use legate_testing::config::{cluster_config, route_action};
use legate_testing::{
    eventually, json, legate_bin, HttpClient, HttpUpstream, Legate, UpstreamAction, Value, EVENTUALLY,
};

/// The recipe of `examples/fast-failover.yaml` — retries to other hosts, a per-try timeout,
/// outlier detection, health checks — on loopback ports, with its timers shortened so that a
/// test takes seconds (each scaled alike: the recipe's logic is unchanged).
fn failover_config(hosts: &[std::net::SocketAddr]) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/fast-failover.yaml");
    let yaml = std::fs::read_to_string(path).expect("examples/fast-failover.yaml");
    let mut config: Value = serde_yaml_ng::from_str(&yaml).expect("the example is YAML");
    let loopback = |port: u16| json!({ "socket_address": { "address": "127.0.0.1", "port_value": port } });
    config["admin"]["address"] = loopback(0);
    let listener = &mut config["static_resources"]["listeners"][0];
    assert_eq!(listener["name"], "ingress");
    listener["address"] = loopback(0);
    let retry = &mut route_action(&mut config)["retry_policy"];
    assert_eq!(retry["retry_on"], "connect-failure,reset,5xx");
    retry["per_try_timeout"] = json!("0.3s");
    let cluster = cluster_config(&mut config, 0);
    assert_eq!(cluster["name"], CLUSTER);
    let endpoints: Vec<Value> =
        hosts.iter().map(|a| json!({ "endpoint": { "address": loopback(a.port()) } })).collect();
    cluster["load_assignment"]["endpoints"][0]["lb_endpoints"] = json!(endpoints);
    cluster["outlier_detection"]["interval"] = json!("0.5s");
    cluster["outlier_detection"]["base_ejection_time"] = json!("1s");
    cluster["outlier_detection"]["failure_percentage_request_volume"] = json!(10);
    let check = &mut cluster["health_checks"][0];
    check["timeout"] = json!("0.2s");
    check["interval"] = json!("0.2s");
    check["no_traffic_interval"] = json!("0.2s");
    config
}

/// The example's cluster.
const CLUSTER: &str = "app";

fn stat(name: &str) -> String {
    format!("cluster.{CLUSTER}.{name}")
}

/// Sends `n` requests one after another on fresh connections; returns the non-200 answers.
fn load(addr: std::net::SocketAddr, n: usize, errors: &mut Vec<String>) {
    for i in 0..n {
        let mut client = HttpClient::connect(addr);
        let r = client.get(&format!("/work/{i}"));
        if r.status != 200 {
            errors.push(format!("request {i}: {} {}", r.status, r.body));
        }
    }
}

fn healthy(counter: Arc<AtomicU64>) -> impl Fn(&legate_testing::UpstreamRequest) -> UpstreamAction {
    move |r| {
        if r.path != "/healthz" {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        UpstreamAction::ok("ok")
    }
}

fn start(hosts: &[std::net::SocketAddr]) -> Legate {
    let px = Legate::start(legate_bin!(), &failover_config(hosts).to_string());
    // Every host passes its first health check before the load starts.
    px.wait_stat(&stat("health_check.healthy"), hosts.len() as u64);
    px
}

#[test]
fn a_crashed_host_costs_no_client_error() {
    let served = Arc::new(AtomicU64::new(0));
    let a = HttpUpstream::http1(healthy(served.clone()));
    let b = HttpUpstream::http1(healthy(served.clone()));
    let c = HttpUpstream::http1(healthy(Arc::new(AtomicU64::new(0))));
    let px = start(&[a.addr(), b.addr(), c.addr()]);
    let addr = px.connect_addr("ingress");
    let mut errors = Vec::new();
    load(addr, 30, &mut errors);
    let crashed = c.addr();
    drop(c); // the process is gone: its port refuses, its connections reset
    load(addr, 90, &mut errors);
    assert!(errors.is_empty(), "client-visible errors: {errors:?}");
    eventually(
        "the crashed host leaves rotation (health check)",
        EVENTUALLY,
        || px.admin_get("/clusters").1,
        |clusters| clusters.contains(&format!("{CLUSTER}::{crashed}::health_flags::/failed_active_hc")),
    );
}

#[test]
fn a_blackholed_host_costs_no_client_error() {
    let silent = Arc::new(AtomicBool::new(false));
    let a = HttpUpstream::http1(healthy(Arc::new(AtomicU64::new(0))));
    let b = HttpUpstream::http1(healthy(Arc::new(AtomicU64::new(0))));
    let s = silent.clone();
    let c =
        HttpUpstream::http1(
            move |_| if s.load(Ordering::Relaxed) { UpstreamAction::Hang } else { UpstreamAction::ok("ok") },
        );
    let px = start(&[a.addr(), b.addr(), c.addr()]);
    let addr = px.connect_addr("ingress");
    let mut errors = Vec::new();
    load(addr, 30, &mut errors);
    silent.store(true, Ordering::Relaxed); // it keeps its connections, and never answers
    load(addr, 60, &mut errors);
    assert!(errors.is_empty(), "client-visible errors: {errors:?}");
    assert!(px.stat(&stat("upstream_rq_per_try_timeout")).unwrap_or(0) >= 1);
    eventually(
        "the blackholed host leaves rotation",
        EVENTUALLY,
        || px.admin_get("/clusters").1,
        |clusters| {
            clusters.contains(&format!("{CLUSTER}::{}::health_flags::/failed_active_hc", c.addr()))
                || clusters.contains(&format!("{CLUSTER}::{}::health_flags::/failed_outlier_check", c.addr()))
        },
    );
}

#[test]
fn an_overloaded_host_costs_no_client_error_is_ejected_and_returns() {
    let a = HttpUpstream::http1(healthy(Arc::new(AtomicU64::new(0))));
    let b = HttpUpstream::http1(healthy(Arc::new(AtomicU64::new(0))));
    // Health checks pass; half of the real traffic gets 503 while it is overloaded.
    let overloaded = Arc::new(AtomicBool::new(true));
    let (o, n) = (overloaded.clone(), Arc::new(AtomicU64::new(0)));
    let c = HttpUpstream::http1(move |r| {
        let odd = n.fetch_add(1, Ordering::Relaxed) % 2 == 1;
        if r.path != "/healthz" && odd && o.load(Ordering::Relaxed) {
            UpstreamAction::status(503, "busy")
        } else {
            UpstreamAction::ok("ok")
        }
    });
    let mut config = failover_config(&[a.addr(), b.addr(), c.addr()]);
    cluster_config(&mut config, 0)["outlier_detection"]["base_ejection_time"] = json!("2s");
    let px = Legate::start(legate_bin!(), &config.to_string());
    px.wait_stat(&stat("health_check.healthy"), 3);
    let addr = px.connect_addr("ingress");
    let mut errors = Vec::new();
    load(addr, 90, &mut errors);
    assert!(errors.is_empty(), "client-visible errors: {errors:?}");
    px.wait_stat(&stat("outlier_detection.ejections_active"), 1);
    assert!(px.stat(&stat("outlier_detection.ejections_enforced_failure_percentage")).unwrap_or(0) >= 1);
    let traffic = |c: &HttpUpstream| c.requests().iter().filter(|r| r.path != "/healthz").count();
    let before = traffic(&c);
    load(addr, 15, &mut errors);
    assert_eq!(before, traffic(&c), "the ejected host gets no more traffic");
    assert!(errors.is_empty(), "client-visible errors: {errors:?}");
    assert!(px.stat(&stat("upstream_rq_retry_success")).unwrap_or(0) >= 1);

    // The overload ends; after base_ejection_time the host is back in rotation.
    overloaded.store(false, Ordering::Relaxed);
    px.wait_stat(&stat("outlier_detection.ejections_active"), 0);
    eventually(
        "traffic returns to the host after base_ejection_time",
        EVENTUALLY,
        || {
            load(addr, 6, &mut Vec::new());
            traffic(&c)
        },
        |now| *now > before,
    );
}

#[test]
fn a_host_that_comes_back_is_used_again_after_healthy_threshold_checks() {
    let a = HttpUpstream::http1(healthy(Arc::new(AtomicU64::new(0))));
    let b = HttpUpstream::http1(healthy(Arc::new(AtomicU64::new(0))));
    let c = HttpUpstream::http1(healthy(Arc::new(AtomicU64::new(0))));
    let c_addr = c.addr();
    let mut config = failover_config(&[a.addr(), b.addr(), c_addr]);
    assert_eq!(cluster_config(&mut config, 0)["health_checks"][0]["healthy_threshold"], 2);
    let px = Legate::start(legate_bin!(), &config.to_string());
    px.wait_stat(&stat("health_check.healthy"), 3);
    let addr = px.connect_addr("ingress");
    let mut errors = Vec::new();
    drop(c); // crash
    load(addr, 30, &mut errors);
    let failed = format!("{CLUSTER}::{c_addr}::health_flags::/failed_active_hc");
    eventually("the crashed host is out", EVENTUALLY, || px.admin_get("/clusters").1, |c| c.contains(&failed));
    px.wait_stat(&stat("membership_healthy"), 2);

    // The process restarts on the same port; two passing checks bring it back.
    let passes_before = px.stat(&stat("health_check.success")).unwrap_or(0);
    let served = Arc::new(AtomicU64::new(0));
    let c = HttpUpstream::http1_at(c_addr, healthy(served.clone()));
    px.wait_stat(&stat("membership_healthy"), 3);
    let passes = px.stat(&stat("health_check.success")).unwrap_or(0) - passes_before;
    assert!(passes >= 2, "back after {passes} passing checks, healthy_threshold is 2");
    let healthy_flag = format!("{CLUSTER}::{c_addr}::health_flags::healthy");
    assert!(px.admin_get("/clusters").1.contains(&healthy_flag));
    load(addr, 30, &mut errors);
    assert!(served.load(Ordering::Relaxed) > 0, "the host that came back serves again");
    assert!(errors.is_empty(), "client-visible errors: {errors:?}");
    drop(c);
}
