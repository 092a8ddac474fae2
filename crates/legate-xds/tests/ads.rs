//! State-of-the-world ADS against the test control plane: the first update, ACKs carrying
//! version and nonce, NACKs carrying the previous version and the reason, updates and
//! removals, bad resources, reconnection, and RDS/EDS-style names following the watches.

mod support;

use legate_testing::control_plane::{type_url, ControlPlane, XdsResource};
use legate_xds::ResourceType;
use serde_json::json;
use support::{control_plane_cluster, grpc_api, Event, Harness};

fn cluster(name: &str, timeout: &str) -> serde_json::Value {
    json!({"name": name, "connectTimeout": timeout, "type": "EDS", "edsClusterConfig": {"edsConfig": {"ads": {}}}})
}

fn ads_harness(control_plane: &ControlPlane, api_type: &str) -> Harness {
    Harness::start(vec![control_plane_cluster("xds_cluster", control_plane.address())], Some(grpc_api(api_type)))
}

#[test]
fn initial_update_is_acked_with_version_and_nonce() {
    let control_plane = ControlPlane::start();
    control_plane.set(type_url::CLUSTER, "1", vec![cluster("a", "1s")]);
    let harness = ads_harness(&control_plane, "AGGREGATED_GRPC");
    harness.subscribe("cds", json!({"ads": {}}), ResourceType::Cluster, &[]).unwrap();

    let update = harness.wait_for_version("cds", "1");
    assert_eq!(update.names(), ["a"]);
    let Event::Update { resources, .. } = &update else { unreachable!() };
    assert_eq!(resources[0].1["connect_timeout"], "1s");

    let first = control_plane.wait_for_request("first CDS request", |r| r.type_url == type_url::CLUSTER);
    assert_eq!(first.version_info, "");
    assert_eq!(first.response_nonce, "");
    assert!(first.resource_names.is_empty(), "CDS is a wildcard subscription");
    assert_eq!(first.node_id.as_deref(), Some("test-node"));
    let ack = control_plane.wait_for_ack(type_url::CLUSTER, "1");
    assert_eq!(ack.version_info, "1");
    assert!(!ack.response_nonce.is_empty());
    // set_node_on_first_message_only: the ACK carries no node.
    assert_eq!(ack.node_id, None);
    harness.wait_for_gauge("control_plane.connected_state", 1);
    assert_eq!(harness.store.counter_value("watch.cds.update_success"), Some(1));
}

#[test]
fn rejected_update_is_nacked_with_previous_version_and_reason() {
    let control_plane = ControlPlane::start();
    control_plane.set(type_url::CLUSTER, "1", vec![cluster("a", "1s")]);
    let harness = ads_harness(&control_plane, "AGGREGATED_GRPC");
    harness.subscribe("cds", json!({"ads": {}}), ResourceType::Cluster, &[]).unwrap();
    harness.wait_for_version("cds", "1");
    control_plane.wait_for_ack(type_url::CLUSTER, "1");

    harness.reject("cds", Some("clusters[0].lb_policy: unknown variant"));
    control_plane.set(type_url::CLUSTER, "2", vec![cluster("a", "2s")]);
    let nack = control_plane.wait_for_nack(type_url::CLUSTER, "2");
    assert_eq!(nack.version_info, "1", "a NACK carries the version accepted before");
    assert_eq!(nack.error_detail.as_deref(), Some("clusters[0].lb_policy: unknown variant"));
    assert_eq!(nack.error_code, Some(13));
    assert_eq!(harness.store.counter_value("watch.cds.update_rejected"), Some(1));

    harness.reject("cds", None);
    control_plane.set(type_url::CLUSTER, "3", vec![cluster("a", "3s")]);
    harness.wait_for_version("cds", "3");
    assert_eq!(control_plane.wait_for_ack(type_url::CLUSTER, "3").version_info, "3");
}

#[test]
fn update_and_removal_reach_the_watch() {
    let control_plane = ControlPlane::start();
    control_plane.set(type_url::CLUSTER, "1", vec![cluster("a", "1s"), cluster("b", "1s")]);
    let harness = ads_harness(&control_plane, "AGGREGATED_GRPC");
    harness.subscribe("cds", json!({"ads": {}}), ResourceType::Cluster, &[]).unwrap();
    assert_eq!(harness.wait_for_version("cds", "1").names(), ["a", "b"]);

    control_plane.set(type_url::CLUSTER, "2", vec![cluster("a", "5s")]);
    let Event::Update { resources, removed, state_of_the_world, .. } = harness.wait_for_version("cds", "2") else {
        unreachable!()
    };
    assert!(state_of_the_world);
    assert_eq!(resources.len(), 1);
    assert_eq!(resources[0].1["connect_timeout"], "5s");
    assert_eq!(removed, ["b"]);
    control_plane.wait_for_ack(type_url::CLUSTER, "2");
}

#[test]
fn malformed_protobuf_unknown_type_and_duplicates_are_nacked() {
    let control_plane = ControlPlane::start();
    control_plane.set(type_url::CLUSTER, "1", vec![cluster("a", "1s")]);
    let harness = ads_harness(&control_plane, "AGGREGATED_GRPC");
    harness.subscribe("cds", json!({"ads": {}}), ResourceType::Cluster, &[]).unwrap();
    harness.wait_for_version("cds", "1");

    let malformed = XdsResource {
        name: "bad".into(),
        any: envoy_types::pb::google::protobuf::Any { type_url: type_url::CLUSTER.into(), value: vec![0x0a, 0xff] },
    };
    control_plane.set_raw(type_url::CLUSTER, "2", vec![malformed]);
    let nack = control_plane.wait_for_nack(type_url::CLUSTER, "2");
    assert_eq!(nack.version_info, "1");
    let detail = nack.error_detail.unwrap();
    assert!(detail.contains("malformed") && detail.contains("envoy.config.cluster.v3.Cluster"), "{detail}");

    let unknown = XdsResource {
        name: "x".into(),
        any: envoy_types::pb::google::protobuf::Any {
            type_url: "type.googleapis.com/example.Unknown".into(),
            value: vec![],
        },
    };
    control_plane.set_raw(type_url::CLUSTER, "3", vec![unknown]);
    let detail = control_plane.wait_for_nack(type_url::CLUSTER, "3").error_detail.unwrap();
    assert!(detail.contains("type.googleapis.com/example.Unknown"), "{detail}");

    control_plane.set(type_url::CLUSTER, "4", vec![cluster("a", "1s"), cluster("a", "2s")]);
    let detail = control_plane.wait_for_nack(type_url::CLUSTER, "4").error_detail.unwrap();
    assert!(detail.contains("duplicate CDS resource name 'a'"), "{detail}");

    // Nothing of the bad versions reached the watch.
    assert!(harness.events("cds").iter().all(|e| !matches!(e, Event::Update { version, .. } if version != "1")));
}

#[test]
fn reconnects_after_the_control_plane_restarts_and_resubscribes_from_the_accepted_version() {
    let mut control_plane = ControlPlane::start();
    control_plane.set(type_url::CLUSTER, "1", vec![cluster("a", "1s")]);
    let harness = ads_harness(&control_plane, "AGGREGATED_GRPC");
    harness.subscribe("cds", json!({"ads": {}}), ResourceType::Cluster, &[]).unwrap();
    harness.wait_for_version("cds", "1");
    let first = control_plane.wait_for_ack(type_url::CLUSTER, "1");

    control_plane.stop();
    harness.wait_for("cds", "connection failure", |e| matches!(e, Event::Failed(_)));
    harness.wait_for_gauge("control_plane.connected_state", 0);

    control_plane.set(type_url::CLUSTER, "2", vec![cluster("a", "2s")]);
    control_plane.restart();
    let resubscribe = control_plane
        .wait_for_request("request on a new stream", |r| r.stream != first.stream && r.type_url == type_url::CLUSTER);
    assert_eq!(resubscribe.version_info, "1", "re-subscribes from the version it holds");
    assert_eq!(resubscribe.response_nonce, "", "nonces belong to the old stream");
    assert_eq!(resubscribe.node_id.as_deref(), Some("test-node"), "a new stream's first request has the node");
    harness.wait_for_version("cds", "2");
    control_plane.wait_for_ack(type_url::CLUSTER, "2");
    harness.wait_for_gauge("control_plane.connected_state", 1);
}

#[test]
fn endpoint_names_follow_the_watches() {
    let control_plane = ControlPlane::start();
    let assignment = |name: &str, port: u16| json!({"clusterName": name, "endpoints": [{"lbEndpoints": [{"endpoint": {"address": {"socketAddress": {"address": "127.0.0.1", "portValue": port}}}}]}]});
    control_plane.set(type_url::ENDPOINT, "1", vec![assignment("x", 1001), assignment("y", 1002)]);
    let harness = ads_harness(&control_plane, "AGGREGATED_GRPC");
    harness.subscribe("eds-x", json!({"ads": {}}), ResourceType::ClusterLoadAssignment, &["x"]).unwrap();
    assert_eq!(harness.wait_for_version("eds-x", "1").names(), ["x"]);
    control_plane
        .wait_for_request("EDS request for x", |r| r.type_url == type_url::ENDPOINT && r.resource_names == ["x"]);

    harness.subscribe("eds-y", json!({"ads": {}}), ResourceType::ClusterLoadAssignment, &["y"]).unwrap();
    control_plane.wait_for_request("EDS request for x and y", |r| {
        r.type_url == type_url::ENDPOINT && r.resource_names == ["x", "y"]
    });
    assert_eq!(harness.wait_for_version("eds-y", "1").names(), ["y"]);

    harness.drop_watch("eds-x");
    control_plane.wait_for_request("EDS request for y alone", |r| {
        r.type_url == type_url::ENDPOINT && r.resource_names == ["y"] && !r.response_nonce.is_empty()
    });
}

#[test]
fn unknown_control_plane_cluster_is_refused_when_subscribing() {
    let control_plane = ControlPlane::start();
    let harness = Harness::start(
        vec![control_plane_cluster("other", control_plane.address())],
        Some(grpc_api("AGGREGATED_GRPC")),
    );
    let error = harness.subscribe("cds", json!({"ads": {}}), ResourceType::Cluster, &[]).unwrap_err();
    assert!(error.contains("xds_cluster"), "{error}");
}

#[test]
fn unreachable_control_plane_times_out_the_first_fetch_and_keeps_retrying() {
    let closed = legate_testing::ClosedPort::new();
    let harness =
        Harness::start(vec![control_plane_cluster("xds_cluster", closed.addr())], Some(grpc_api("AGGREGATED_GRPC")));
    harness.subscribe("cds", json!({"ads": {}, "initial_fetch_timeout": "0.3s"}), ResourceType::Cluster, &[]).unwrap();
    harness.wait_for(
        "cds",
        "initial fetch timeout",
        |e| matches!(e, Event::Failed(reason) if reason == "FetchTimedOut"),
    );
    assert_eq!(harness.store.counter_value("watch.cds.init_fetch_timeout"), Some(1));
    harness.wait_for_gauge("control_plane.pending_requests", 1);
    assert_eq!(harness.store.gauge_value("control_plane.connected_state"), Some(0));
    let deadline = std::time::Instant::now() + support::WAIT;
    while harness.store.counter_value("watch.cds.update_failure").unwrap_or(0) < 2 {
        assert!(std::time::Instant::now() < deadline, "legate retries the control plane");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn rate_limit_settings_hold_requests_back_until_a_token_comes() {
    let control_plane = ControlPlane::start();
    control_plane.set(type_url::CLUSTER, "1", vec![cluster("a", "1s")]);
    let mut ads = grpc_api("AGGREGATED_GRPC");
    // One token every 4 s: long enough that the second ACK surely finds the bucket empty.
    ads["rate_limit_settings"] = json!({"max_tokens": 1, "fill_rate": 0.25});
    let harness = Harness::start(vec![control_plane_cluster("xds_cluster", control_plane.address())], Some(ads));
    harness.subscribe("cds", json!({"ads": {}}), ResourceType::Cluster, &[]).unwrap();
    harness.wait_for_version("cds", "1");
    control_plane.wait_for_ack(type_url::CLUSTER, "1");
    // The ACK of 1 took the only token: the ACK of 2 waits for the next one.
    control_plane.set(type_url::CLUSTER, "2", vec![cluster("a", "2s")]);
    harness.wait_for_version("cds", "2");
    control_plane.wait_for_ack(type_url::CLUSTER, "2");
    assert_eq!(harness.store.counter_value("control_plane.rate_limit_enforced"), Some(1));
}

/// Envoy's `GrpcMuxImpl` ignores a response for a type it has no watch for ("Ignoring the
/// message for type URL … as it has no current subscribers"): no NACK, the stream goes on.
#[test]
fn response_for_a_type_nobody_asked_for_is_ignored() {
    let control_plane = ControlPlane::start();
    control_plane.set(type_url::CLUSTER, "1", vec![cluster("a", "1s")]);
    let harness = ads_harness(&control_plane, "AGGREGATED_GRPC");
    harness.subscribe("cds", json!({"ads": {}}), ResourceType::Cluster, &[]).unwrap();
    let ack = control_plane.wait_for_ack(type_url::CLUSTER, "1");

    control_plane.push_unrequested(type_url::LISTENER, "l1", vec![json!({"name": "l"})]);
    control_plane.set(type_url::CLUSTER, "2", vec![cluster("a", "2s")]);
    assert_eq!(control_plane.wait_for_ack(type_url::CLUSTER, "2").stream, ack.stream, "same stream");
    assert!(control_plane.requests().iter().all(|r| r.type_url != type_url::LISTENER));
    harness.wait_for_version("cds", "2");
}
