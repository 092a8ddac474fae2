//! The `node` legate sends to control planes (`envoy.config.core.v3.Node`): the bootstrap's
//! node with `user_agent_name: legate` and its version, so a control plane can tell legate
//! from Envoy.

use envoy_types::pb::envoy::config::core::v3::Node as NodeMessage;
use legate_config::core::Node;
use serde_json::{json, Map, Value};

use crate::decode;

const NODE_TYPE_URL: &str = "type.googleapis.com/envoy.config.core.v3.Node";

/// The bootstrap's node as the protobuf message. `metadata` is a `Struct` and `extensions`
/// are messages, so the node goes through the descriptors rather than field by field.
pub(crate) fn node_message(node: &Node) -> Result<NodeMessage, String> {
    let mut fields = Map::new();
    fields.insert("id".into(), json!(node.id));
    fields.insert("cluster".into(), json!(node.cluster));
    fields.insert("user_agent_name".into(), json!(node.user_agent_name));
    if let Some(version) = &node.user_agent_version {
        fields.insert("user_agent_version".into(), json!(version));
    }
    if let Some(build) = &node.user_agent_build_version {
        fields.insert("user_agent_build_version".into(), build.clone());
    }
    if let Some(metadata) = &node.metadata {
        fields.insert("metadata".into(), metadata.clone());
    }
    if let Some(parameters) = &node.dynamic_parameters {
        fields.insert("dynamic_parameters".into(), parameters.clone());
    }
    if let Some(locality) = &node.locality {
        fields.insert(
            "locality".into(),
            json!({"region": locality.region, "zone": locality.zone, "sub_zone": locality.sub_zone}),
        );
    }
    if !node.extensions.is_empty() {
        fields.insert("extensions".into(), Value::Array(node.extensions.clone()));
    }
    if !node.client_features.is_empty() {
        fields.insert("client_features".into(), json!(node.client_features));
    }
    let addresses: Vec<Value> = node
        .listening_addresses
        .iter()
        .filter_map(|a| a.socket())
        .map(|s| json!({"socket_address": {"address": s.address, "port_value": s.port_value}}))
        .collect();
    if !addresses.is_empty() {
        fields.insert("listening_addresses".into(), Value::Array(addresses));
    }
    decode::message_from_json(NODE_TYPE_URL, &Value::Object(fields)).map_err(|e| format!("node: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_carries_identity_metadata_and_user_agent() {
        let node: Node = serde_json::from_value(json!({
            "id": "proxy-1",
            "cluster": "edge",
            "metadata": {"team": "a", "replicas": 3},
            "locality": {"zone": "z1"},
        }))
        .unwrap();
        let mut node = node;
        node.user_agent_name = "legate".into();
        node.user_agent_version = Some("0.1.0".into());
        let message = node_message(&node).unwrap();
        assert_eq!(message.id, "proxy-1");
        assert_eq!(message.cluster, "edge");
        assert_eq!(message.user_agent_name, "legate");
        assert_eq!(message.locality.unwrap().zone, "z1");
        assert!(message.metadata.unwrap().fields.contains_key("team"));
    }
}
