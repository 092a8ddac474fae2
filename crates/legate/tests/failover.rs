//! Failover that users do not notice (issue 4): three hosts behind one cluster with the
//! "fast failover" recipe — retries on connect-failure/reset/5xx to a different host,
//! per-try timeout, outlier detection, an active health check — under steady load from a
//! real client. One host crashes, blackholes, or overloads; the client must see no error, and
//! the bad host must leave rotation.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use legate_testing::config::{cluster_config, http_bootstrap, route_action};
use legate_testing::{
    eventually, json, legate_bin, HttpClient, HttpUpstream, Legate, UpstreamAction, Value, EVENTUALLY,
};

/// The recipe: retries to other hosts, a per-try timeout, outlier detection, health checks.
fn failover_config(hosts: &[std::net::SocketAddr]) -> Value {
    let mut config = http_bootstrap(hosts);
    route_action(&mut config)["timeout"] = json!("5s");
    route_action(&mut config)["retry_policy"] = json!({
        "retry_on": "connect-failure,reset,5xx",
        "num_retries": 2,
        "per_try_timeout": "0.3s",
        "retry_host_predicate": [{
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": { "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate" }
        }],
        "host_selection_retry_max_attempts": 5
    });
    let cluster = cluster_config(&mut config, 0);
    cluster["outlier_detection"] = json!({
        "consecutive_5xx": 3,
        "consecutive_gateway_failure": 3,
        "enforcing_consecutive_gateway_failure": 100,
        "interval": "0.5s",
        "base_ejection_time": "30s",
        "max_ejection_percent": 34
    });
    cluster["health_checks"] = json!([{
        "timeout": "0.2s",
        "interval": "0.2s",
        "no_traffic_interval": "0.2s",
        "unhealthy_threshold": 1,
        "healthy_threshold": 1,
        "http_health_check": { "path": "/healthz" }
    }]);
    config
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
    px.wait_stat("cluster.backend.health_check.healthy", hosts.len() as u64);
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
        |clusters| clusters.contains(&format!("backend::{crashed}::health_flags::/failed_active_hc")),
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
    assert!(px.stat("cluster.backend.upstream_rq_per_try_timeout").unwrap_or(0) >= 1);
    eventually(
        "the blackholed host leaves rotation",
        EVENTUALLY,
        || px.admin_get("/clusters").1,
        |clusters| {
            clusters.contains(&format!("backend::{}::health_flags::/failed_active_hc", c.addr()))
                || clusters.contains(&format!("backend::{}::health_flags::/failed_outlier_check", c.addr()))
        },
    );
}

#[test]
fn an_overloaded_host_costs_no_client_error_and_is_ejected() {
    let a = HttpUpstream::http1(healthy(Arc::new(AtomicU64::new(0))));
    let b = HttpUpstream::http1(healthy(Arc::new(AtomicU64::new(0))));
    // Health checks pass; real traffic gets 503 every time.
    let c = HttpUpstream::http1(|r| {
        if r.path == "/healthz" {
            UpstreamAction::ok("ok")
        } else {
            UpstreamAction::status(503, "busy")
        }
    });
    let px = start(&[a.addr(), b.addr(), c.addr()]);
    let addr = px.connect_addr("ingress");
    let mut errors = Vec::new();
    load(addr, 90, &mut errors);
    assert!(errors.is_empty(), "client-visible errors: {errors:?}");
    px.wait_stat("cluster.backend.outlier_detection.ejections_active", 1);
    let before = c.requests().iter().filter(|r| r.path != "/healthz").count();
    load(addr, 30, &mut errors);
    let after = c.requests().iter().filter(|r| r.path != "/healthz").count();
    assert_eq!(before, after, "the ejected host gets no more traffic");
    assert!(errors.is_empty(), "client-visible errors: {errors:?}");
    assert!(px.stat("cluster.backend.upstream_rq_retry_success").unwrap_or(0) >= 1);
}
