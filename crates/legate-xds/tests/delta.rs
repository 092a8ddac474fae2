//! Incremental (delta) ADS against the test control plane:
//! per-resource versions, removals, NACKs, subscribe/unsubscribe and `initial_resource_versions`
//! after a reconnection.

mod support;

use legate_testing::control_plane::{type_url, ControlPlane, XdsResource};
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
fn delta_ads_delivers_changes_and_removals_and_acks_by_nonce() {
    let control_plane = ControlPlane::start();
    control_plane.set(type_url::CLUSTER, "1", vec![cluster("a", "1s"), cluster("b", "1s")]);
    let harness = Harness::start(
        vec![control_plane_cluster("xds_cluster", control_plane.address())],
        Some(grpc_api("AGGREGATED_DELTA_GRPC")),
    );
    harness.subscribe("cds", json!({"ads": {}}), ResourceType::Cluster, &[]).unwrap();
    let Event::Update { resources, state_of_the_world, .. } = harness.wait_for_version("cds", "1") else {
        unreachable!()
    };
    assert!(!state_of_the_world);
    assert_eq!(resources.len(), 2);
    let first = control_plane.wait_for_request("first delta request", |r| r.type_url == type_url::CLUSTER);
    assert!(first.delta);
    assert!(first.subscribe.is_empty(), "CDS is a wildcard subscription");
    assert_eq!(first.node_id.as_deref(), Some("test-node"));
    control_plane.wait_for_ack(type_url::CLUSTER, "1");

    // Only what changed travels: a changed, b removed.
    control_plane.set(type_url::CLUSTER, "2", vec![cluster("a", "7s")]);
    let Event::Update { resources, removed, .. } = harness.wait_for_version("cds", "2") else { unreachable!() };
    assert_eq!(resources.len(), 1);
    assert_eq!(resources[0].1["connect_timeout"], "7s");
    assert_eq!(removed, ["b"]);
    control_plane.wait_for_ack(type_url::CLUSTER, "2");

    harness.reject("cds", Some("bad cluster"));
    control_plane.set(type_url::CLUSTER, "3", vec![cluster("a", "9s")]);
    let nack = control_plane.wait_for_nack(type_url::CLUSTER, "3");
    assert_eq!(nack.error_detail.as_deref(), Some("bad cluster"));
    assert_eq!(nack.error_code, Some(13));

    let malformed = XdsResource {
        name: "c".into(),
        any: envoy_types::pb::google::protobuf::Any { type_url: type_url::CLUSTER.into(), value: vec![0x0a, 0xff] },
    };
    harness.reject("cds", None);
    control_plane.set_raw(type_url::CLUSTER, "4", vec![malformed]);
    let detail = control_plane.wait_for_nack(type_url::CLUSTER, "4").error_detail.unwrap();
    assert!(detail.contains("malformed"), "{detail}");
}

#[test]
fn delta_endpoint_subscriptions_follow_the_watches() {
    let control_plane = ControlPlane::start();
    control_plane.set(type_url::ENDPOINT, "1", vec![assignment("x", 1001), assignment("y", 1002)]);
    let harness = Harness::start(
        vec![control_plane_cluster("xds_cluster", control_plane.address())],
        Some(grpc_api("AGGREGATED_DELTA_GRPC")),
    );
    harness.subscribe("eds-x", json!({"ads": {}}), ResourceType::ClusterLoadAssignment, &["x"]).unwrap();
    assert_eq!(harness.wait_for_version("eds-x", "1").names(), ["x"]);
    control_plane.wait_for_request("subscribe x", |r| r.type_url == type_url::ENDPOINT && r.subscribe == ["x"]);

    harness.subscribe("eds-y", json!({"ads": {}}), ResourceType::ClusterLoadAssignment, &["y"]).unwrap();
    control_plane.wait_for_request("subscribe y", |r| r.subscribe == ["y"] && r.unsubscribe.is_empty());
    assert_eq!(harness.wait_for_version("eds-y", "1").names(), ["y"]);

    harness.drop_watch("eds-x");
    control_plane.wait_for_request("unsubscribe x", |r| r.unsubscribe == ["x"] && r.subscribe.is_empty());
}

#[test]
fn delta_reconnect_sends_initial_resource_versions() {
    let mut control_plane = ControlPlane::start();
    control_plane.set(type_url::CLUSTER, "1", vec![cluster("a", "1s")]);
    let harness = Harness::start(
        vec![control_plane_cluster("xds_cluster", control_plane.address())],
        Some(grpc_api("AGGREGATED_DELTA_GRPC")),
    );
    harness.subscribe("cds", json!({"ads": {}}), ResourceType::Cluster, &[]).unwrap();
    harness.wait_for_version("cds", "1");
    let ack = control_plane.wait_for_ack(type_url::CLUSTER, "1");

    control_plane.stop();
    harness.wait_for("cds", "connection failure", |e| matches!(e, Event::Failed(_)));
    control_plane.restart();
    let resubscribe = control_plane.wait_for_request("request on a new stream", |r| r.stream != ack.stream);
    assert_eq!(resubscribe.initial_resource_versions.keys().collect::<Vec<_>>(), ["a"]);
    // The control plane knows legate holds `a` at that version: nothing to resend.
    control_plane.set(type_url::CLUSTER, "2", vec![cluster("a", "1s"), cluster("b", "2s")]);
    assert_eq!(harness.wait_for_version("cds", "2").names(), ["b"]);
}
