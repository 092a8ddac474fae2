//! Envoy Gateway's translator outputs (`../shared/envoy-configs/xds-resources/`, proto3 JSON)
//! served through the test control plane over ADS: every scenario is decoded, and each type is
//! either ACKed (legate's config model takes it) or NACKed naming the resource and the field
//! legate refuses. The score is printed; the test fails only on a scenario left unanswered or a
//! NACK that says nothing.

mod support;

use legate_testing::control_plane::{scenarios, type_url, xds_resources_dir, ControlPlane};
use legate_xds::ResourceType;
use serde_json::json;
use support::{control_plane_cluster, grpc_api, Harness};

#[test]
fn envoy_gateway_scenarios_are_acked_or_nacked_with_a_reason() {
    let scenarios = scenarios();
    if scenarios.is_empty() {
        eprintln!("no Envoy Gateway scenarios found; skipping");
        return;
    }
    let control_plane = ControlPlane::start();
    let harness = Harness::start(
        vec![control_plane_cluster("xds_cluster", control_plane.address())],
        Some(grpc_api("AGGREGATED_GRPC")),
    );
    harness.subscribe_validating("lds", json!({"ads": {}}), ResourceType::Listener, &[]).unwrap();
    harness.subscribe_validating("cds", json!({"ads": {}}), ResourceType::Cluster, &[]).unwrap();
    // RDS and EDS by name, as the listeners and clusters would ask for them.
    harness.subscribe_validating("rds", json!({"ads": {}}), ResourceType::RouteConfiguration, &["none"]).unwrap();
    harness.subscribe_validating("eds", json!({"ads": {}}), ResourceType::ClusterLoadAssignment, &["none"]).unwrap();
    let mut acked = 0;
    let mut nacked = Vec::new();
    for (i, scenario) in scenarios.iter().enumerate() {
        let version = format!("{i}-{scenario}");
        let mut types = vec![type_url::LISTENER, type_url::CLUSTER];
        for (watch, kind, url, name_field) in
            [("rds", "routes", type_url::ROUTE, "name"), ("eds", "endpoints", type_url::ENDPOINT, "clusterName")]
        {
            let names = resource_names(scenario, kind, name_field);
            if names.is_empty() {
                continue;
            }
            let wanted: Vec<&str> = names.iter().map(String::as_str).collect();
            harness.update_names(watch, &wanted);
            control_plane.wait_for_request(&format!("{scenario}: {kind} asked by name"), |r| {
                r.type_url == url && r.resource_names == names
            });
            types.push(url);
        }
        control_plane.load_scenario(scenario, &version).unwrap_or_else(|e| panic!("{scenario}: {e}"));
        for url in types {
            let answer = control_plane.wait_for_request(&format!("ACK or NACK of {scenario} {url}"), |r| {
                r.type_url == url && r.answers_version.as_deref() == Some(version.as_str())
            });
            match answer.error_detail {
                None => acked += 1,
                Some(detail) => {
                    assert!(detail.contains(':'), "{scenario}: a NACK names the resource and field: {detail}");
                    nacked.push(format!("{scenario} {}: {detail}", url.rsplit('.').next().unwrap_or(url)));
                }
            }
        }
    }
    eprintln!("Envoy Gateway scenarios: {acked} ACKed, {} NACKed", nacked.len());
    for line in &nacked {
        eprintln!("  NACK {line}");
    }
}

/// The names in `<scenario>.<kind>.yaml`, sorted as legate asks for them.
fn resource_names(scenario: &str, kind: &str, name_field: &str) -> Vec<String> {
    let path = xds_resources_dir().join(format!("{scenario}.{kind}.yaml"));
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    let resources: Vec<serde_json::Value> = serde_yaml_ng::from_str(&text).unwrap_or_default();
    let names: std::collections::BTreeSet<String> =
        resources.iter().filter_map(|r| r.get(name_field)?.as_str().map(str::to_string)).collect();
    names.into_iter().collect()
}
