//! The resource types of xDS and a decoded resource.

use serde_json::Value;

/// The five resource types legate subscribes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    Listener,
    RouteConfiguration,
    Cluster,
    ClusterLoadAssignment,
    Secret,
}

impl ResourceType {
    pub const ALL: [ResourceType; 5] = [
        ResourceType::Listener,
        ResourceType::RouteConfiguration,
        ResourceType::Cluster,
        ResourceType::ClusterLoadAssignment,
        ResourceType::Secret,
    ];

    /// The `type.googleapis.com/…` URL of its v3 message.
    pub fn type_url(self) -> &'static str {
        match self {
            ResourceType::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            ResourceType::RouteConfiguration => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            ResourceType::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            ResourceType::ClusterLoadAssignment => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            ResourceType::Secret => "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
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
        }
    }
}

/// One resource as it arrived, turned into the JSON shape of Envoy's YAML: snake_case field
/// names, durations as `"5s"`, enums by name, `Any` as `{"@type": …, fields}` — ready for the
/// same deserializers as the static config. The top-level `@type` is removed.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedResource {
    pub name: String,
    /// The resource's own version (delta xDS) or the response's `version_info`.
    pub version: String,
    pub value: Value,
}

impl DecodedResource {
    /// Builds a resource from a proto3-JSON / YAML object (camelCase accepted), checking its
    /// `@type` against `resource_type` and reading its name.
    pub fn from_json(resource_type: ResourceType, mut value: Value, version: &str) -> Result<Self, String> {
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
        Ok(DecodedResource { name, version: version.to_string(), value })
    }
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
        assert_eq!(r.value, json!({"name": "a", "connect_timeout": "1s"}));
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
