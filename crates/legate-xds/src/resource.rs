//! The resource types of xDS and a decoded resource.

use std::ops::Range;
use std::sync::Arc;

use serde_json::Value;

/// The six resource types legate subscribes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    Listener,
    RouteConfiguration,
    Cluster,
    ClusterLoadAssignment,
    Secret,
    /// RTDS: a runtime layer.
    Runtime,
}

impl ResourceType {
    pub const ALL: [ResourceType; 6] = [
        ResourceType::Listener,
        ResourceType::RouteConfiguration,
        ResourceType::Cluster,
        ResourceType::ClusterLoadAssignment,
        ResourceType::Secret,
        ResourceType::Runtime,
    ];

    /// The `type.googleapis.com/…` URL of its v3 message.
    pub fn type_url(self) -> &'static str {
        match self {
            ResourceType::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            ResourceType::RouteConfiguration => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            ResourceType::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            ResourceType::ClusterLoadAssignment => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            ResourceType::Secret => "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
            ResourceType::Runtime => "type.googleapis.com/envoy.service.runtime.v3.Runtime",
        }
    }

    pub fn from_type_url(url: &str) -> Option<ResourceType> {
        ResourceType::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// LDS and CDS are subscribed by wildcard; a state-of-the-world response that leaves a
    /// resource out removes it. The others are subscribed by name.
    pub fn is_wildcard(self) -> bool {
        matches!(self, ResourceType::Listener | ResourceType::Cluster)
    }

    /// The REST path: `/v3/discovery:listeners` and so on.
    pub fn rest_path(self) -> &'static str {
        match self {
            ResourceType::Listener => "/v3/discovery:listeners",
            ResourceType::RouteConfiguration => "/v3/discovery:routes",
            ResourceType::Cluster => "/v3/discovery:clusters",
            ResourceType::ClusterLoadAssignment => "/v3/discovery:endpoints",
            ResourceType::Secret => "/v3/discovery:secrets",
            ResourceType::Runtime => "/v3/discovery:runtime",
        }
    }

    /// The field of a resource that holds its name.
    pub fn name_field(self) -> &'static str {
        match self {
            ResourceType::ClusterLoadAssignment => "cluster_name",
            _ => "name",
        }
    }

    /// The short name used in logs (`LDS`, `RDS`, …).
    pub fn short_name(self) -> &'static str {
        match self {
            ResourceType::Listener => "LDS",
            ResourceType::RouteConfiguration => "RDS",
            ResourceType::Cluster => "CDS",
            ResourceType::ClusterLoadAssignment => "EDS",
            ResourceType::Secret => "SDS",
            ResourceType::Runtime => "RTDS",
        }
    }
}

/// One resource of a response, with its name read and its shape checked, held as compactly as
/// its source allows until a subscriber asks for it: [`DecodedResource::value`] builds the JSON
/// shape of Envoy's YAML (snake_case field names, durations as `"5s"`, enums by name, `Any` as
/// `{"@type": …, fields}`, the top-level `@type` removed) — ready for the same deserializers as
/// the static config.
///
/// Why not the tree itself: a tree takes about twelve times the size of the resource's text,
/// and a response's resources all wait until every watch has had its update (10,000 clusters'
/// assignments from one EDS response). Kept as their text or protobuf bytes, only the resource
/// being applied exists as a tree; glibc then has a small peak to leave behind.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedResource {
    pub name: String,
    /// The resource's own version (delta xDS) or the response's `version_info`.
    pub version: String,
    resource_type: ResourceType,
    body: Body,
}

/// What a [`DecodedResource`] keeps; each form gives the same tree back, built by the same
/// code that checked it when the response arrived.
#[derive(Clone, Debug, PartialEq)]
enum Body {
    /// The tree itself (YAML files, REST responses: small and rare).
    Tree(Value),
    /// A JSON file's item as written (the resource, or a `Resource` wrapper holding it), where
    /// it lies in the file's text (shared by the file's resources, not copied): parsed again by
    /// the same parser, so the tree is the one it gave the first time.
    JsonItem { file: Arc<String>, at: Range<usize> },
    /// A protobuf resource's bytes (the wrapper already removed): decoded again.
    Protobuf(Vec<u8>),
}

impl DecodedResource {
    /// Builds a resource from a proto3-JSON / YAML object (camelCase accepted), checking its
    /// `@type` against `resource_type` and reading its name.
    pub fn from_json(resource_type: ResourceType, value: Value, version: &str) -> Result<Self, String> {
        let (name, value) = checked(resource_type, value)?;
        Ok(DecodedResource { name, version: version.to_string(), resource_type, body: Body::Tree(value) })
    }

    /// Builds a resource from one item of a JSON file's `resources` (the resource or a
    /// `Resource` wrapper), found at `at` in the file's text. The item is parsed and checked
    /// now, and kept as its place in the text.
    pub(crate) fn from_json_item(
        resource_type: ResourceType,
        file: &Arc<String>,
        at: Range<usize>,
        version: &str,
    ) -> Result<Self, String> {
        let (name, _) = checked(resource_type, unwrap_item(parse_item(file, &at)?))?;
        let body = Body::JsonItem { file: file.clone(), at };
        Ok(DecodedResource { name, version: version.to_string(), resource_type, body })
    }

    /// Builds a resource from a protobuf message of `resource_type` and the tree
    /// [`crate::decode::to_json`] made of it: the tree is checked now, the bytes are kept.
    pub(crate) fn from_protobuf(
        resource_type: ResourceType,
        bytes: &[u8],
        value: Value,
        version: &str,
    ) -> Result<Self, String> {
        let (name, _) = checked(resource_type, value)?;
        Ok(DecodedResource { name, version: version.to_string(), resource_type, body: Body::Protobuf(bytes.to_vec()) })
    }

    /// The resource in the JSON shape of Envoy's YAML, built now; drop it once applied.
    ///
    /// The source was parsed and checked when the response arrived, by the same code: this
    /// does not fail unless that code stopped being deterministic.
    pub fn value(&self) -> Result<Value, String> {
        let value = match &self.body {
            Body::Tree(value) => return Ok(value.clone()),
            Body::JsonItem { file, at } => unwrap_item(parse_item(file, at)?),
            Body::Protobuf(bytes) => crate::decode::to_json(self.resource_type.type_url(), bytes)?,
        };
        checked(self.resource_type, value).map(|(_, value)| value)
    }
}

fn parse_item(file: &str, at: &Range<usize>) -> Result<Value, String> {
    let item = file.get(at.clone()).ok_or("resource outside its file")?;
    serde_json::from_str(item).map_err(|e| format!("unable to parse: {e}"))
}

/// The resource an item of a file's `resources` holds: itself, or what its `Resource` wrapper
/// holds under `resource`.
pub(crate) fn unwrap_item(item: Value) -> Value {
    match item {
        Value::Object(mut wrapper)
            if wrapper.get("@type").and_then(Value::as_str)
                == Some("type.googleapis.com/envoy.service.discovery.v3.Resource") =>
        {
            wrapper.remove("resource").unwrap_or(Value::Null)
        }
        other => other,
    }
}

/// Normalizes a resource, checks its `@type` against `resource_type` (then removes it) and
/// reads its name.
fn checked(resource_type: ResourceType, mut value: Value) -> Result<(String, Value), String> {
    legate_config::normalize::normalize(&mut value);
    let Value::Object(map) = &mut value else {
        return Err(format!("{} resource is not an object", resource_type.short_name()));
    };
    // A `Resource` wrapper (delta xDS in JSON, or `resources: [{resource: …}]`) holds the real one.
    if let Some(url) = map.get("@type").and_then(Value::as_str) {
        if url != resource_type.type_url() {
            return Err(format!("resource type '{url}' where '{}' was expected", resource_type.type_url()));
        }
    }
    map.remove("@type");
    let name = map
        .get(resource_type.name_field())
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("{} resource without '{}'", resource_type.short_name(), resource_type.name_field()))?
        .to_string();
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn camel_case_resource_becomes_the_yaml_shape() {
        let value = json!({"@type": ResourceType::Cluster.type_url(), "name": "a", "connectTimeout": "1s"});
        let r = DecodedResource::from_json(ResourceType::Cluster, value, "7").unwrap();
        assert_eq!(r.name, "a");
        assert_eq!(r.value().unwrap(), json!({"name": "a", "connect_timeout": "1s"}));
    }

    #[test]
    fn wrong_type_and_missing_name_are_refused() {
        let value = json!({"@type": ResourceType::Listener.type_url(), "name": "a"});
        assert!(DecodedResource::from_json(ResourceType::Cluster, value, "1").unwrap_err().contains("Listener"));
        let value = json!({"clusterName": ""});
        assert!(DecodedResource::from_json(ResourceType::ClusterLoadAssignment, value, "1")
            .unwrap_err()
            .contains("cluster_name"));
    }
}
