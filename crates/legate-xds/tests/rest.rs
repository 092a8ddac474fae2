//! REST xDS (`api_type: REST`): polling `/v3/discovery:<type>`, ACK and NACK carried by the
//! next poll, and non-200 answers.

mod support;

use legate_testing::control_plane::{type_url, RestControlPlane};
use legate_xds::ResourceType;
use serde_json::json;
use support::{control_plane_cluster, Event, Harness};

fn rest_source() -> serde_json::Value {
    json!({"api_config_source": {
        "api_type": "REST",
        "transport_api_version": "V3",
        "cluster_names": ["rest_cluster"],
        "refresh_delay": "0.1s",
        "request_timeout": "5s"
    }})
}

#[test]
fn rest_polls_deliver_updates_and_carry_ack_and_nack() {
    let control_plane = RestControlPlane::start();
    control_plane.set(type_url::CLUSTER, "1", vec![json!({"name": "a", "connectTimeout": "1s"})]);
    let harness = Harness::start(vec![control_plane_cluster("rest_cluster", control_plane.address())], None);
    harness.subscribe("cds", rest_source(), ResourceType::Cluster, &[]).unwrap();
    assert_eq!(harness.wait_for_version("cds", "1").names(), ["a"]);
    let ack = control_plane.wait_for_request("poll after version 1", |r| r.version_info == "1");
    assert_eq!(ack.node_id.as_deref(), Some("test-node"));
    assert_eq!(ack.error_detail, None);

    harness.reject("cds", Some("no thanks"));
    control_plane.set(type_url::CLUSTER, "2", vec![json!({"name": "a", "connectTimeout": "2s"})]);
    let nack = control_plane
        .wait_for_request("poll carrying the rejection", |r| r.error_detail.as_deref() == Some("no thanks"));
    assert_eq!(nack.version_info, "1");

    harness.reject("cds", None);
    let Event::Update { resources, .. } = harness.wait_for_version("cds", "2") else { unreachable!() };
    assert_eq!(resources[0].1["connect_timeout"], "2s");
    control_plane.wait_for_request("poll after version 2", |r| r.version_info == "2" && r.error_detail.is_none());
}

#[test]
fn rest_server_errors_are_connection_failures_and_not_modified_is_no_change() {
    let control_plane = RestControlPlane::start();
    control_plane.set(type_url::CLUSTER, "1", vec![json!({"name": "a"})]);
    let harness = Harness::start(vec![control_plane_cluster("rest_cluster", control_plane.address())], None);
    harness.subscribe("cds", rest_source(), ResourceType::Cluster, &[]).unwrap();
    harness.wait_for_version("cds", "1");

    control_plane.set_status(Some(304));
    let seen = control_plane.requests().len();
    control_plane.wait_for_requests(seen + 3);
    assert!(harness.events("cds").iter().all(|e| matches!(e, Event::Update { .. })));

    control_plane.set_status(Some(503));
    harness.wait_for("cds", "connection failure", |e| matches!(e, Event::Failed(reason) if reason.contains("503")));
}
