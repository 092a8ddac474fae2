//! Envoy Gateway's translator outputs (`../shared/envoy-configs/xds-resources/`, proto3 JSON)
//! served through the test control plane over ADS: every scenario is decoded, and each type is
//! either ACKed (legate's config model takes it) or NACKed naming the resource and the field
//! legate refuses. The score is printed; the test fails only on a scenario left unanswered or a
//! NACK that says nothing.

mod support;

use legate_testing::control_plane::{scenarios, type_url, ControlPlane};
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
    let mut acked = 0;
    let mut nacked = Vec::new();
    for (i, scenario) in scenarios.iter().enumerate() {
        let version = format!("{i}-{scenario}");
        control_plane.load_scenario(scenario, &version).unwrap_or_else(|e| panic!("{scenario}: {e}"));
        for url in [type_url::LISTENER, type_url::CLUSTER] {
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
