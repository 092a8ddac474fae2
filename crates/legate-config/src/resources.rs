//! One resource at a time, as xDS delivers them: a listener, a cluster, a route configuration,
//! a load assignment or a secret, parsed from the same JSON shape as the bootstrap's YAML and
//! checked by the same rules. Errors carry the field path inside the resource; the xDS client
//! sends them back as the NACK's `error_detail`. The trees must be normalized already
//! ([`crate::normalize`]), as `legate-xds` delivers them.

use std::collections::HashSet;

use serde_json::Value;

use crate::cluster::Cluster;
use crate::endpoint::ClusterLoadAssignment;
use crate::listener::Listener;
use crate::path::{self, PathError};
use crate::route::RouteConfiguration;
use crate::tls::Secret;
use crate::validate::Validator;

/// The problems of one resource, one `path: message` each, joined.
fn report(errors: Vec<PathError>) -> Result<(), String> {
    if errors.is_empty() {
        return Ok(());
    }
    Err(errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
}

fn parse<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T, String> {
    path::from_value_ref(value).map_err(|e| e.to_string())
}

/// A listener from LDS. Inline route configurations check their clusters against `clusters`
/// (those known now), as Envoy's `validate_clusters` default for them.
pub fn listener(value: &Value, clusters: &HashSet<&str>) -> Result<Listener, String> {
    let listener: Listener = parse(value)?;
    let mut v = Validator { late_tcp_proxy_clusters: true, ..Default::default() };
    v.listener("", &listener, clusters);
    report(v.errors)?;
    Ok(listener)
}

/// A cluster from CDS.
pub fn cluster(value: &Value) -> Result<Cluster, String> {
    let mut cluster: Cluster = parse(value)?;
    cluster.apply_load_balancing_policy().map_err(|e| e.to_string())?;
    let mut v = Validator::default();
    v.cluster("", &cluster);
    report(v.errors)?;
    Ok(cluster)
}

/// A route configuration from RDS. Its clusters are checked against `clusters` only with
/// `validate_clusters: true` (the default is false for RDS, as in Envoy: routes may arrive
/// before their clusters).
pub fn route_configuration(value: &Value, clusters: &HashSet<&str>) -> Result<RouteConfiguration, String> {
    let config: RouteConfiguration = parse(value)?;
    let mut v = Validator { late_clusters: !config.validate_clusters.unwrap_or(false), ..Default::default() };
    config.validate("", &mut v, clusters);
    report(v.errors)?;
    Ok(config)
}

/// A load assignment from EDS: every endpoint an IP address and a port.
pub fn cluster_load_assignment(value: &Value) -> Result<ClusterLoadAssignment, String> {
    let assignment: ClusterLoadAssignment = parse(value)?;
    let mut errors = Vec::new();
    for (i, locality) in assignment.endpoints.iter().enumerate() {
        for (j, endpoint) in locality.lb_endpoints.iter().enumerate() {
            let at = format!("endpoints[{i}].lb_endpoints[{j}].endpoint.address");
            match endpoint.endpoint.as_ref().and_then(|e| e.address.socket()) {
                None => errors.push(PathError { path: at, message: "a socket_address is required".into() }),
                Some(socket) if socket.ip().is_none() => errors.push(PathError {
                    path: format!("{at}.socket_address.address"),
                    message: format!("malformed IP address: {}", socket.address),
                }),
                Some(socket) if socket.port_value > 65535 => errors.push(PathError {
                    path: format!("{at}.socket_address.port_value"),
                    message: format!("invalid port {}: must be at most 65535", socket.port_value),
                }),
                Some(_) => {}
            }
        }
    }
    report(errors)?;
    Ok(assignment)
}

/// A secret from SDS.
pub fn secret(value: &Value) -> Result<Secret, String> {
    parse(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_bad_cluster_names_the_field() {
        let err = cluster(&json!({"name": "c", "lb_policy": "ROUND_ROBBIN"})).unwrap_err();
        assert!(err.starts_with("lb_policy: unknown variant `ROUND_ROBBIN`"), "{err}");
    }

    #[test]
    fn rds_checks_clusters_only_when_asked() {
        let rc = |validate: bool| {
            json!({"name": "r", "validate_clusters": validate, "virtual_hosts": [{"name": "v", "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "missing"}}]}]})
        };
        let known = HashSet::from(["present"]);
        assert!(route_configuration(&rc(false), &known).is_ok());
        let err = route_configuration(&rc(true), &known).unwrap_err();
        assert!(err.contains("route: unknown cluster 'missing'"), "{err}");
    }

    #[test]
    fn lds_checks_inline_route_clusters_but_not_tcp_proxy_ones() {
        let filter = |name: &str, config: Value| json!({"name": name, "typed_config": config});
        let listener = |filters: Value| {
            json!({"name": "l", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": filters}]})
        };
        let tcp = filter(
            "envoy.filters.network.tcp_proxy",
            json!({"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": "t", "weighted_clusters": {"clusters": [{"name": "x", "weight": 1}, {"name": "y", "weight": 1}]}}),
        );
        let known = HashSet::from(["present"]);
        assert!(super::listener(&listener(json!([tcp])), &known).is_ok());
        let hcm = filter(
            "envoy.filters.network.http_connection_manager",
            json!({"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "h",
                "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "missing"}}]}]},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config":
                    {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}),
        );
        let err = super::listener(&listener(json!([hcm])), &known).unwrap_err();
        assert!(err.contains("route: unknown cluster 'missing'"), "{err}");
    }

    #[test]
    fn endpoints_must_be_addresses() {
        let cla = json!({"cluster_name": "c", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "backend.local", "port_value": 80}}}}]}]});
        let err = cluster_load_assignment(&cla).unwrap_err();
        assert!(err.contains("malformed IP address: backend.local"), "{err}");
    }
}
