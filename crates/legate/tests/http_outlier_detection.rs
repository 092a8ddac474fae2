//! Outlier detection through the real proxy: a host that keeps answering 503 is ejected after
//! `consecutive_5xx` and the cluster's traffic goes to the healthy host; `/clusters` shows the
//! host as `/failed_outlier_check`; stats count the ejection.

use legate_testing::config::{cluster_config, http_bootstrap};
use legate_testing::{json, legate_bin, HttpClient, HttpUpstream, Legate, UpstreamAction};

#[test]
fn a_failing_host_is_ejected_and_traffic_goes_to_the_healthy_one() {
    let good = HttpUpstream::http1(|_| UpstreamAction::ok("good"));
    let bad = HttpUpstream::http1(|_| UpstreamAction::status(503, "bad"));
    let mut config = http_bootstrap(&[good.addr(), bad.addr()]);
    cluster_config(&mut config, 0)["outlier_detection"] = json!({
        "consecutive_5xx": 3,
        "interval": "1s",
        "base_ejection_time": "60s",
        "max_ejection_percent": 50
    });
    let px = Legate::start(legate_bin!(), &config.to_string());
    let mut client = HttpClient::connect(px.connect_addr("ingress"));

    // Round robin alternates: the bad host sees its third 503 within the first six requests.
    let mut bad_answers = 0;
    for _ in 0..6 {
        if client.get("/").status == 503 {
            bad_answers += 1;
        }
    }
    assert_eq!(bad_answers, 3, "the bad host answered until its third 503");
    px.wait_stat("cluster.backend.outlier_detection.ejections_enforced_consecutive_5xx", 1);
    assert_eq!(px.stat("cluster.backend.outlier_detection.ejections_active"), Some(1));
    for _ in 0..20 {
        let r = client.get("/");
        assert_eq!((r.status, r.body.as_str()), (200, "good"), "only the healthy host is used now");
    }
    let bad_requests = bad.requests().len();
    assert_eq!(bad_requests, 3, "the ejected host got nothing more");

    let (status, clusters) = px.admin_get("/clusters");
    assert_eq!(status, 200);
    let line = format!("backend::{}::health_flags::/failed_outlier_check", bad.addr());
    assert!(clusters.contains(&line), "{clusters}");
    // Envoy's detector figures, unknown (-1) with fewer hosts than success_rate_minimum_hosts.
    for line in ["backend::outlier::success_rate_average::-1", "backend::outlier::success_rate_ejection_threshold::-1"]
    {
        assert!(clusters.lines().any(|l| l == line), "{line}: {clusters}");
    }
    assert_eq!(px.stat("cluster.backend.membership_healthy"), Some(1));
}

/// Envoy's `successful_active_health_check_uneject_host` (default true): a passing active
/// health check returns an ejected host to service long before `base_ejection_time`; with the
/// option off, the ejection holds.
#[test]
fn a_passing_health_check_unejects_unless_told_not_to() {
    for uneject in [true, false] {
        let good = HttpUpstream::http1(|_| UpstreamAction::ok("good"));
        // Fails real traffic, passes its health checks.
        let bad = HttpUpstream::http1(|r| match r.path.as_str() {
            "/healthz" => UpstreamAction::ok("fine"),
            _ => UpstreamAction::status(503, "bad"),
        });
        let mut config = http_bootstrap(&[good.addr(), bad.addr()]);
        let cluster = cluster_config(&mut config, 0);
        cluster["outlier_detection"] = json!({
            "consecutive_5xx": 2,
            "interval": "60s",
            "base_ejection_time": "60s",
            "max_ejection_percent": 50,
            "successful_active_health_check_uneject_host": uneject
        });
        cluster["health_checks"] = json!([{
            "timeout": "1s", "interval": "0.3s", "no_traffic_interval": "0.3s",
            "unhealthy_threshold": 1, "healthy_threshold": 1,
            "http_health_check": { "path": "/healthz" }
        }]);
        let px = Legate::start(legate_bin!(), &config.to_string());
        px.wait_stat("cluster.backend.health_check.healthy", 2);
        let mut client = HttpClient::connect(px.connect_addr("ingress"));
        for _ in 0..4 {
            client.get("/");
        }
        px.wait_stat("cluster.backend.outlier_detection.ejections_enforced_consecutive_5xx", 1);
        let checks = px.stat("cluster.backend.health_check.success").unwrap_or(0);
        // A few more passing checks of both hosts.
        px.wait_stat_at_least("cluster.backend.health_check.success", checks + 6);
        let active = px.stat("cluster.backend.outlier_detection.ejections_active");
        assert_eq!(active, Some(u64::from(!uneject)), "uneject on health check: {uneject}");
    }
}
