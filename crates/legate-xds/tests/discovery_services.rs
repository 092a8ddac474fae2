//! Per-type discovery services (`api_config_source` with `api_type: GRPC`/`DELTA_GRPC`):
//! one stream per type, `ClusterDiscoveryService`, `EndpointDiscoveryService`,
//! `SecretDiscoveryService`.

mod support;

use legate_testing::control_plane::{type_url, ControlPlane};
use legate_xds::ResourceType;
use serde_json::json;
use support::{control_plane_cluster, grpc_api, Event, Harness};

fn cluster(name: &str, timeout: &str) -> serde_json::Value {
    json!({"name": name, "connectTimeout": timeout, "type": "STATIC"})
}

fn assignment(name: &str, port: u16) -> serde_json::Value {
    json!({"clusterName": name, "endpoints": [{"lbEndpoints": [{"endpoint": {"address": {"socketAddress": {"address": "127.0.0.1", "portValue": port}}}}]}]})
}

#[test]
fn per_type_grpc_and_delta_grpc_sources() {
    let control_plane = ControlPlane::start();
    control_plane.set(type_url::CLUSTER, "1", vec![cluster("a", "1s")]);
    control_plane.set(type_url::ENDPOINT, "e1", vec![assignment("x", 1001)]);
    let harness = Harness::start(vec![control_plane_cluster("xds_cluster", control_plane.address())], None);
    harness.subscribe("cds", json!({"api_config_source": grpc_api("GRPC")}), ResourceType::Cluster, &[]).unwrap();
    harness
        .subscribe(
            "eds",
            json!({"api_config_source": grpc_api("DELTA_GRPC")}),
            ResourceType::ClusterLoadAssignment,
            &["x"],
        )
        .unwrap();
    assert_eq!(harness.wait_for_version("cds", "1").names(), ["a"]);
    assert_eq!(harness.wait_for_version("eds", "e1").names(), ["x"]);
    let cds = control_plane.wait_for_ack(type_url::CLUSTER, "1");
    let eds = control_plane.wait_for_ack(type_url::ENDPOINT, "e1");
    assert!(!cds.delta && eds.delta);
    assert_ne!(cds.stream, eds.stream, "one stream per type without ADS");

    let error = harness.subscribe("lds", json!({"ads": {}}), ResourceType::Listener, &[]).unwrap_err();
    assert!(error.contains("ads_config"), "{error}");
}

#[test]
fn secrets_by_name_over_the_secret_discovery_service() {
    let control_plane = ControlPlane::start();
    let secret = |name: &str| json!({"name": name, "tlsCertificate": {"certificateChain": {"inlineString": "PEM"}}});
    control_plane.set(type_url::SECRET, "s1", vec![secret("server_cert"), secret("other")]);
    let harness = Harness::start(vec![control_plane_cluster("xds_cluster", control_plane.address())], None);
    harness
        .subscribe("sds", json!({"api_config_source": grpc_api("GRPC")}), ResourceType::Secret, &["server_cert"])
        .unwrap();
    let Event::Update { resources, .. } = harness.wait_for_version("sds", "s1") else { unreachable!() };
    assert_eq!(resources.len(), 1);
    assert_eq!(
        resources[0].1,
        json!({"name": "server_cert", "tls_certificate": {"certificate_chain": {"inline_string": "PEM"}}})
    );
    let ack = control_plane.wait_for_ack(type_url::SECRET, "s1");
    assert_eq!(ack.resource_names, ["server_cert"]);
}
