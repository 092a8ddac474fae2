//! `grpc_services[0].envoy_grpc`: the control plane reached through its static cluster with
//! the cluster's TLS transport socket (ALPN `h2`), and `initial_metadata` on every stream.

mod support;

use legate_testing::control_plane::{type_url, ControlPlane};
use legate_testing::TestCa;
use legate_xds::ResourceType;
use serde_json::json;
use support::{control_plane_cluster, Harness};

#[test]
fn control_plane_over_tls_with_initial_metadata() {
    let ca = TestCa::new("xds-ca");
    let cert = ca.issue("control-plane", &["control-plane.test"]);
    let control_plane = ControlPlane::start_tls(&cert);
    control_plane.set(type_url::CLUSTER, "1", vec![json!({"name": "a"})]);

    let mut cluster = control_plane_cluster("xds_cluster", control_plane.address());
    cluster["transport_socket"] = json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": "control-plane.test",
            "common_tls_context": {"validation_context": {"trusted_ca": {"inline_string": ca.pem()}}}
        }
    });
    let ads = json!({
        "api_type": "GRPC",
        "transport_api_version": "V3",
        "grpc_services": [{
            "envoy_grpc": {"cluster_name": "xds_cluster"},
            "initial_metadata": [{"key": "x-tenant", "value": "blue"}]
        }]
    });
    let harness = Harness::start(vec![cluster], Some(ads));
    harness.subscribe("cds", json!({"ads": {}}), ResourceType::Cluster, &[]).unwrap();
    assert_eq!(harness.wait_for_version("cds", "1").names(), ["a"]);
    let ack = control_plane.wait_for_ack(type_url::CLUSTER, "1");
    assert_eq!(ack.metadata.get("x-tenant").map(String::as_str), Some("blue"));
    assert_eq!(ack.node_id.as_deref(), Some("test-node"), "without set_node_on_first_message_only, every request");
    assert_eq!(harness.store.counter_value("cluster.xds_cluster.ssl.handshake"), Some(1));
}
