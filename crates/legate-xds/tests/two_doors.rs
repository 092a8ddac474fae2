//! The two doors held equal (DESIGN.md §5): one cluster and one listener written as Envoy
//! YAML and parsed the normal way, and the same config encoded as protobuf (as a control
//! plane sends it) and decoded by `legate_xds::decode`, give equal typed config.

mod support;

use legate_xds::{decode, ResourceType};
use serde_json::Value;
use support::parse;

fn yaml(text: &str) -> Value {
    serde_yaml_ng::from_str(text).unwrap()
}

/// The YAML through the static door and through the protobuf door.
fn both_doors<T: serde::de::DeserializeOwned>(resource_type: ResourceType, value: Value) -> (T, T) {
    let from_yaml: T = parse(value.clone());
    let any = decode::any_from_json(resource_type.type_url(), &value).unwrap();
    let decoded = decode::decode_resource(resource_type, &any, "1").unwrap();
    let from_protobuf: T = parse(decoded.value().unwrap());
    (from_yaml, from_protobuf)
}

#[test]
fn cluster_from_yaml_equals_cluster_from_protobuf() {
    let cluster = yaml(
        r#"
name: backend
type: STRICT_DNS
connect_timeout: 0.25s
lb_policy: LEAST_REQUEST
dns_lookup_family: V4_ONLY
per_connection_buffer_limit_bytes: 32768
circuit_breakers:
  thresholds:
  - priority: HIGH
    max_connections: 100
    max_pending_requests: 10
    max_requests: 1000
    max_retries: 3
outlier_detection:
  consecutive_5xx: 5
  interval: 10s
  base_ejection_time: 30s
  max_ejection_percent: 50
health_checks:
- timeout: 1s
  interval: 5s
  unhealthy_threshold: 3
  healthy_threshold: 2
  http_health_check:
    path: /healthz
typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    common_http_protocol_options:
      idle_timeout: 60s
    explicit_http_config:
      http2_protocol_options:
        max_concurrent_streams: 100
load_assignment:
  cluster_name: backend
  endpoints:
  - locality:
      region: eu
      zone: a
    load_balancing_weight: 3
    priority: 0
    lb_endpoints:
    - endpoint:
        address:
          socket_address:
            address: backend.local
            port_value: 8080
      load_balancing_weight: 2
      health_status: HEALTHY
"#,
    );
    let (from_yaml, from_protobuf) = both_doors::<legate_config::cluster::Cluster>(ResourceType::Cluster, cluster);
    assert_eq!(from_yaml, from_protobuf);
}

#[test]
fn listener_from_yaml_equals_listener_from_protobuf() {
    let listener = yaml(
        r#"
name: ingress
address:
  socket_address:
    address: 0.0.0.0
    port_value: 10000
per_connection_buffer_limit_bytes: 1048576
filter_chains:
- filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: ingress_http
      codec_type: AUTO
      stream_idle_timeout: 300s
      request_timeout: 10s
      use_remote_address: true
      route_config:
        name: local_route
        virtual_hosts:
        - name: backend
          domains: ["*"]
          routes:
          - match:
              prefix: /api
            route:
              cluster: backend
              timeout: 15s
              retry_policy:
                retry_on: 5xx,connect-failure
                num_retries: 2
                per_try_timeout: 5s
          - match:
              prefix: /
            direct_response:
              status: 404
              body:
                inline_string: not here
      http_filters:
      - name: envoy.filters.http.router
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
- filter_chain_match:
    destination_port: 10001
  filters:
  - name: envoy.filters.network.tcp_proxy
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
      stat_prefix: tcp
      cluster: backend
      idle_timeout: 30s
"#,
    );
    let (from_yaml, from_protobuf) = both_doors::<legate_config::listener::Listener>(ResourceType::Listener, listener);
    assert_eq!(from_yaml, from_protobuf);
}

#[test]
fn routes_and_endpoints_from_yaml_equal_those_from_protobuf() {
    let routes = yaml(
        r#"
name: local_route
virtual_hosts:
- name: api
  domains: ["api.example.com", "api.example.com:*"]
  request_headers_to_add:
  - header: {key: x-via, value: legate}
    append_action: OVERWRITE_IF_EXISTS_OR_ADD
  routes:
  - match:
      safe_regex: {regex: "^/v[0-9]+/users"}
      headers:
      - name: x-canary
        string_match: {exact: "true"}
    route:
      weighted_clusters:
        clusters:
        - {name: users-v2, weight: 10}
        - {name: users-v1, weight: 90}
      timeout: 3s
  - match: {prefix: /old}
    redirect: {path_redirect: /new, response_code: PERMANENT_REDIRECT}
"#,
    );
    let (from_yaml, from_protobuf) =
        both_doors::<legate_config::route::RouteConfiguration>(ResourceType::RouteConfiguration, routes);
    assert_eq!(from_yaml, from_protobuf);

    let endpoints = yaml(
        r#"
cluster_name: users-v1
policy:
  overprovisioning_factor: 120
endpoints:
- locality: {region: eu, zone: b}
  priority: 1
  load_balancing_weight: 5
  lb_endpoints:
  - endpoint:
      address: {socket_address: {address: 10.0.0.1, port_value: 8080}}
      health_check_config: {port_value: 9090}
    health_status: DRAINING
    load_balancing_weight: 7
"#,
    );
    let (from_yaml, from_protobuf) =
        both_doors::<legate_config::endpoint::ClusterLoadAssignment>(ResourceType::ClusterLoadAssignment, endpoints);
    assert_eq!(from_yaml, from_protobuf);
}
