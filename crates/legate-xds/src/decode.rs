//! Protobuf resources to the JSON shape of Envoy's YAML, and back for tests.
//!
//! A control plane sends each resource as a `google.protobuf.Any`. legate's config model reads
//! the JSON of Envoy's YAML (DESIGN.md §5), so a resource is decoded against the descriptors of
//! Envoy's whole API and written as JSON with proto field names (snake_case), durations as
//! `"5s"`, enums by name, wrappers as plain values and nested `Any`s as `{"@type": …, fields}`;
//! fields left at their default are skipped, as a YAML author would leave them out. From there
//! static and dynamic config run the same deserializers.
//!
//! The descriptors are Envoy's v3 API as compiled by the `envoy-types` crate, without their
//! comments (`descriptors/README.md`), so every extension Envoy knows decodes, and the config
//! model decides what legate supports, with the field path in its error.

use std::sync::LazyLock;

use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde_json::Value;

use crate::resource::{DecodedResource, ResourceType};

/// The wrapper delta xDS uses, and SotW responses may use, around each resource.
pub const RESOURCE_WRAPPER_TYPE_URL: &str = "type.googleapis.com/envoy.service.discovery.v3.Resource";

static ENVOY_API: &[u8] = include_bytes!("../descriptors/envoy-api.bin");

static POOL: LazyLock<Result<DescriptorPool, String>> =
    LazyLock::new(|| DescriptorPool::decode(ENVOY_API).map_err(|e| format!("Envoy API descriptors: {e}")));

/// Every message of Envoy's v3 API (and the `google.protobuf`, `xds`, `udpa` ones it uses).
pub fn descriptor_pool() -> Result<&'static DescriptorPool, String> {
    POOL.as_ref().map_err(Clone::clone)
}

/// The message a type URL names (`type.googleapis.com/envoy.config.cluster.v3.Cluster`).
pub fn message_descriptor(type_url: &str) -> Result<MessageDescriptor, String> {
    let name = type_url.rsplit_once('/').map(|(_, name)| name).unwrap_or(type_url);
    descriptor_pool()?.get_message_by_name(name).ok_or_else(|| format!("unknown type URL '{type_url}'"))
}

/// Decodes a message's bytes into YAML-shaped JSON (snake_case, defaults skipped).
pub fn to_json(type_url: &str, bytes: &[u8]) -> Result<Value, String> {
    let descriptor = message_descriptor(type_url)?;
    let message =
        DynamicMessage::decode(descriptor, bytes).map_err(|e| format!("malformed '{type_url}' protobuf: {e}"))?;
    let options =
        SerializeOptions::new().use_proto_field_name(true).skip_default_fields(true).stringify_64_bit_integers(false);
    message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| format!("'{type_url}' protobuf: {e}"))
}

/// Decodes one resource of a response into what the subscribers read. `any.type_url` must be
/// the subscription's type, or the `Resource` wrapper holding it.
pub fn decode_resource(resource_type: ResourceType, any: &Any, version: &str) -> Result<DecodedResource, String> {
    if any.type_url == RESOURCE_WRAPPER_TYPE_URL {
        let wrapper = envoy_types::pb::envoy::service::discovery::v3::Resource::decode(any.value.as_slice())
            .map_err(|e| format!("malformed '{RESOURCE_WRAPPER_TYPE_URL}' protobuf: {e}"))?;
        let inner = wrapper.resource.ok_or_else(|| format!("resource '{}' without a 'resource'", wrapper.name))?;
        return decode_resource(resource_type, &inner, version);
    }
    if any.type_url != resource_type.type_url() {
        return Err(format!("resource type '{}' where '{}' was expected", any.type_url, resource_type.type_url()));
    }
    let value = to_json(&any.type_url, &any.value)?;
    // Checked as a tree, kept as bytes: the tree is built again when it is delivered.
    DecodedResource::from_protobuf(resource_type, &any.value, value, version)
}

/// Encodes proto3 JSON (camelCase or snake_case, `Any`s with `@type`) as the message of
/// `type_url`: what a control plane puts in an `Any`.
pub fn encode_json(type_url: &str, json: &Value) -> Result<Vec<u8>, String> {
    Ok(dynamic_from_json(type_url, json)?.encode_to_vec())
}

/// [`encode_json`] wrapped in an `Any`.
pub fn any_from_json(type_url: &str, json: &Value) -> Result<Any, String> {
    Ok(Any { type_url: type_url.to_string(), value: encode_json(type_url, json)? })
}

fn dynamic_from_json(type_url: &str, json: &Value) -> Result<DynamicMessage, String> {
    let descriptor = message_descriptor(type_url)?;
    let mut json = json.clone();
    if let Value::Object(map) = &mut json {
        map.remove("@type");
    }
    DynamicMessage::deserialize_with_options(descriptor, json, &DeserializeOptions::new().deny_unknown_fields(true))
        .map_err(|e| format!("'{type_url}' from JSON: {e}"))
}

/// Builds a generated message from proto3 JSON through the descriptors (for `Struct`s in a
/// `Node`'s metadata, and the test control plane).
pub fn message_from_json<M: Message + Default>(type_url: &str, json: &Value) -> Result<M, String> {
    dynamic_from_json(type_url, json)?.transcode_to::<M>().map_err(|e| format!("'{type_url}': {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

    #[test]
    fn descriptors_are_stripped_of_source_info() {
        let set = prost_reflect::prost_types::FileDescriptorSet::decode(ENVOY_API).unwrap();
        assert!(set.file.len() > 500, "Envoy's whole API: {} files", set.file.len());
        let with_comments: Vec<_> =
            set.file.iter().filter(|f| f.source_code_info.is_some()).filter_map(|f| f.name.clone()).collect();
        assert!(
            with_comments.is_empty(),
            "run the strip_descriptors example (descriptors/README.md): {with_comments:?}"
        );
    }

    #[test]
    fn cluster_decodes_to_the_yaml_shape() {
        let any = any_from_json(
            CLUSTER,
            &json!({
                "name": "backend",
                "connectTimeout": "0.25s",
                "type": "STRICT_DNS",
                "lbPolicy": "ROUND_ROBIN",
                "perConnectionBufferLimitBytes": 32768,
                "typedExtensionProtocolOptions": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicitHttpConfig": {"http2ProtocolOptions": {}}
                    }
                }
            }),
        )
        .unwrap();
        let resource = decode_resource(ResourceType::Cluster, &any, "3").unwrap();
        assert_eq!(resource.name, "backend");
        assert_eq!(resource.version, "3");
        assert_eq!(
            resource.value().unwrap(),
            json!({
                "name": "backend",
                "type": "STRICT_DNS",
                "connect_timeout": "0.250s",
                "per_connection_buffer_limit_bytes": 32768,
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {}}
                    }
                }
            })
        );
    }

    #[test]
    fn unknown_type_url_and_malformed_bytes_are_named() {
        let any = Any { type_url: "type.googleapis.com/example.Unknown".into(), value: vec![] };
        let error = decode_resource(ResourceType::Cluster, &any, "1").unwrap_err();
        assert!(error.contains("example.Unknown"), "{error}");
        let error = to_json("type.googleapis.com/example.Unknown", &[]).unwrap_err();
        assert!(error.contains("unknown type URL 'type.googleapis.com/example.Unknown'"), "{error}");
        let any = Any { type_url: CLUSTER.into(), value: vec![0x0a, 0xff, 0x01] };
        let error = decode_resource(ResourceType::Cluster, &any, "1").unwrap_err();
        assert!(error.contains("malformed 'type.googleapis.com/envoy.config.cluster.v3.Cluster'"), "{error}");
    }

    #[test]
    fn nested_any_of_an_unknown_type_is_refused() {
        let nested = Any { type_url: "type.googleapis.com/example.Filter".into(), value: vec![] };
        let listener = envoy_types::pb::envoy::config::listener::v3::Listener {
            name: "l".into(),
            listener_filters: vec![envoy_types::pb::envoy::config::listener::v3::ListenerFilter {
                name: "f".into(),
                config_type: Some(
                    envoy_types::pb::envoy::config::listener::v3::listener_filter::ConfigType::TypedConfig(nested),
                ),
                ..Default::default()
            }],
            ..Default::default()
        };
        let any = Any { type_url: ResourceType::Listener.type_url().into(), value: listener.encode_to_vec() };
        let error = decode_resource(ResourceType::Listener, &any, "1").unwrap_err();
        assert!(error.contains("example.Filter"), "{error}");
    }

    #[test]
    fn wrapped_resource_is_unwrapped() {
        let inner = any_from_json(CLUSTER, &json!({"name": "a"})).unwrap();
        let wrapper = envoy_types::pb::envoy::service::discovery::v3::Resource {
            name: "a".into(),
            version: "v1".into(),
            resource: Some(inner),
            ..Default::default()
        };
        let any = Any { type_url: RESOURCE_WRAPPER_TYPE_URL.into(), value: wrapper.encode_to_vec() };
        assert_eq!(decode_resource(ResourceType::Cluster, &any, "1").unwrap().name, "a");
    }
}
