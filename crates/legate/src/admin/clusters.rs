//! `/clusters`: every cluster's settings and each host's counters and health, in Envoy's
//! `cluster::host::stat::value` text or `?format=json`.

use std::fmt::Write as _;
use std::rc::Rc;

use hyper::StatusCode;
use legate_config::cluster::RoutingPriority;
use legate_proxy::upstream::circuit_breakers::ResourceManager;
use legate_proxy::upstream::Cluster;
use serde_json::{json, Value};

use super::{json, text, AdminResponse, Query};
use crate::server::Server;

pub fn handle(server: &Rc<Server>, query: &Query) -> AdminResponse {
    let clusters = server.cluster_manager.clusters();
    if query.get("format") == Some("json") {
        let statuses: Vec<Value> = clusters.iter().map(|c| cluster_json(c)).collect();
        return json(StatusCode::OK, &json!({ "cluster_statuses": statuses }));
    }
    let mut out = String::new();
    for cluster in &clusters {
        cluster_text(&mut out, cluster);
    }
    text(StatusCode::OK, out)
}

fn cluster_text(out: &mut String, cluster: &Cluster) {
    let name = &cluster.name;
    let _ = writeln!(out, "{name}::observability_name::{}", cluster.info.stat_name(&cluster.name));
    if let Some(detector) = cluster.outlier_detector() {
        let (average, threshold) = detector.success_rate_figures(false);
        let (local_average, local_threshold) = detector.success_rate_figures(true);
        for (field, value) in [
            ("success_rate_average", average),
            ("success_rate_ejection_threshold", threshold),
            ("local_origin_success_rate_average", local_average),
            ("local_origin_success_rate_ejection_threshold", local_threshold),
        ] {
            let _ = writeln!(out, "{name}::outlier::{field}::{}", format_g(value.unwrap_or(-1.0)));
        }
    }
    for (label, priority) in [("default_priority", RoutingPriority::Default), ("high_priority", RoutingPriority::High)]
    {
        for (field, max) in thresholds(&cluster.breakers(priority)) {
            let _ = writeln!(out, "{name}::{label}::{field}::{max}");
        }
    }
    let _ = writeln!(out, "{name}::added_via_api::{}", cluster.added_via_api());
    for host in cluster.priority_set().all_hosts() {
        let h = format!("{name}::{}", host.address());
        for (stat, value) in host.stats.values() {
            let _ = writeln!(out, "{h}::{stat}::{value}");
        }
        let _ = writeln!(out, "{h}::hostname::{}", host.hostname());
        let _ = writeln!(out, "{h}::health_flags::{}", host.health_flags_text());
        let _ = writeln!(out, "{h}::weight::{}", host.weight);
        let _ = writeln!(out, "{h}::region::{}", host.locality().region);
        let _ = writeln!(out, "{h}::zone::{}", host.locality().zone);
        let _ = writeln!(out, "{h}::sub_zone::{}", host.locality().sub_zone);
        let _ = writeln!(out, "{h}::canary::false");
        let _ = writeln!(out, "{h}::priority::{}", host.priority());
        let outlier = host.outlier_if_tracked();
        let rate = outlier.and_then(|o| o.success_rate()).unwrap_or(-1.0);
        let local_rate = outlier.and_then(|o| o.local_origin_success_rate()).unwrap_or(-1.0);
        let _ = writeln!(out, "{h}::success_rate::{}", format_g(rate));
        let _ = writeln!(out, "{h}::local_origin_success_rate::{}", format_g(local_rate));
    }
}

fn thresholds(rm: &ResourceManager<'_>) -> [(&'static str, u64); 4] {
    [
        ("max_connections", rm.connections.max()),
        ("max_pending_requests", rm.pending_requests.max()),
        ("max_requests", rm.requests.max()),
        ("max_retries", rm.retries.max()),
    ]
}

fn cluster_json(cluster: &Cluster) -> Value {
    let threshold = |rm: &ResourceManager<'_>, priority: Option<&str>| {
        let mut t = serde_json::Map::new();
        if let Some(p) = priority {
            t.insert("priority".into(), json!(p));
        }
        for (field, max) in thresholds(rm) {
            t.insert(field.into(), json!(max));
        }
        Value::Object(t)
    };
    let hosts: Vec<Value> = cluster
        .priority_set()
        .all_hosts()
        .map(|host| {
            let stats: Vec<Value> = host
                .stats
                .values()
                .iter()
                .map(|(name, value)| {
                    if name.ends_with("_active") {
                        json!({"name": name, "value": value.to_string(), "type": "GAUGE"})
                    } else {
                        json!({"name": name, "value": value.to_string()})
                    }
                })
                .collect();
            let status = health_status(host.health_flags());
            let outlier = host.outlier_if_tracked();
            let mut host_status = json!({
                "address": {"socket_address": {"address": host.address().ip().to_string(), "port_value": host.address().port()}},
                "stats": stats,
                "health_status": status,
                "weight": host.weight,
                "hostname": host.hostname(),
                "priority": host.priority(),
                "locality": {"region": host.locality().region, "zone": host.locality().zone, "sub_zone": host.locality().sub_zone},
            });
            if let Some(rate) = outlier.and_then(|o| o.success_rate()) {
                host_status["success_rate"] = json!({ "value": rate });
            }
            if let Some(rate) = outlier.and_then(|o| o.local_origin_success_rate()) {
                host_status["local_origin_success_rate"] = json!({ "value": rate });
            }
            host_status
        })
        .collect();
    let mut status = json!({
        "name": cluster.name,
        "observability_name": cluster.info.stat_name(&cluster.name),
        "added_via_api": cluster.added_via_api(),
        "circuit_breakers": {"thresholds": [
            threshold(&cluster.breakers(RoutingPriority::Default), None),
            threshold(&cluster.breakers(RoutingPriority::High), Some("HIGH")),
        ]},
        "host_statuses": hosts,
    });
    // Set only when positive, as Envoy's.
    if let Some(detector) = cluster.outlier_detector() {
        for (local, field) in
            [(false, "success_rate_ejection_threshold"), (true, "local_origin_success_rate_ejection_threshold")]
        {
            if let Some(threshold) = detector.success_rate_figures(local).1.filter(|t| *t > 0.0) {
                status[field] = json!({ "value": threshold });
            }
        }
    }
    status
}

/// A double as fmt's `{:g}` prints it (Envoy's `/clusters`): six significant digits, no
/// trailing zeros.
fn format_g(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return format!("{value}");
    }
    let scale = 10f64.powi(5 - value.abs().log10().floor() as i32);
    format!("{}", (value * scale).round() / scale)
}

/// A host's `health_status` as Envoy's `setHealthFlag` writes it: the EDS status from the EDS
/// flags (`HEALTHY` unless they say otherwise), and each other flag that is set as `true`
/// (proto3's JSON leaves out the false ones).
fn health_status(flags: u32) -> Value {
    use legate_proxy::upstream::host::health_flag;
    let eds = match flags {
        f if f & health_flag::FAILED_EDS_HEALTH != 0 => "UNHEALTHY",
        f if f & health_flag::DEGRADED_EDS_HEALTH != 0 => "DEGRADED",
        _ => "HEALTHY",
    };
    let mut status = json!({ "eds_health_status": eds });
    for (flag, field) in [
        (health_flag::FAILED_ACTIVE_HC, "failed_active_health_check"),
        (health_flag::FAILED_OUTLIER_CHECK, "failed_outlier_check"),
        (health_flag::PENDING_DYNAMIC_REMOVAL, "pending_dynamic_removal"),
        (health_flag::EXCLUDED_VIA_IMMEDIATE_HC_FAIL, "excluded_via_immediate_hc_fail"),
        (health_flag::ACTIVE_HC_TIMEOUT, "active_hc_timeout"),
    ] {
        if flags & flag != 0 {
            status[field] = json!(true);
        }
    }
    status
}

#[cfg(test)]
mod tests {
    #[test]
    fn doubles_print_as_fmt_g() {
        assert_eq!(super::format_g(-1.0), "-1");
        assert_eq!(super::format_g(100.0), "100");
        assert_eq!(super::format_g(200.0 / 3.0), "66.6667");
        assert_eq!(super::format_g(99.5), "99.5");
    }
}
