//! Bootstrap builders. JSON is YAML, so configs are built with `serde_json::json!` — values are
//! interpolated safely and a test adjusts one field with `v["connect_timeout"] = json!("1s")` —
//! and passed to legate as the YAML file's text. Shapes are Envoy v3's, nothing legate-specific.

use std::net::SocketAddr;

use serde_json::{json, Value};

/// `{"socket_address": {...}}` for `addr`.
pub fn address(addr: SocketAddr) -> Value {
    json!({ "socket_address": { "address": addr.ip().to_string(), "port_value": addr.port() } })
}

/// A listener on `127.0.0.1:0` named `name` with `stat_prefix: name` and one filter chain.
pub fn listener(name: &str, filters: Vec<Value>) -> Value {
    json!({
        "name": name,
        "stat_prefix": name,
        "address": address(SocketAddr::from(([127, 0, 0, 1], 0))),
        "filter_chains": [{ "filters": filters }],
    })
}

/// `envoy.filters.network.tcp_proxy` to `cluster`.
pub fn tcp_proxy(stat_prefix: &str, cluster: &str) -> Value {
    json!({
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": stat_prefix,
            "cluster": cluster,
        }
    })
}

/// `envoy.filters.network.echo`.
pub fn echo() -> Value {
    json!({
        "name": "envoy.filters.network.echo",
        "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo" }
    })
}

/// A STATIC cluster with one locality holding `endpoints`, ROUND_ROBIN, `connect_timeout: 5s`.
pub fn static_cluster(name: &str, endpoints: &[SocketAddr]) -> Value {
    let lb_endpoints: Vec<Value> =
        endpoints.iter().map(|a| json!({ "endpoint": { "address": address(*a) } })).collect();
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "5s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": { "cluster_name": name, "endpoints": [{ "lb_endpoints": lb_endpoints }] },
    })
}

/// A bootstrap: admin on `127.0.0.1:0`, the given static listeners and clusters.
pub fn bootstrap(listeners: Vec<Value>, clusters: Vec<Value>) -> Value {
    json!({
        "admin": { "address": address(SocketAddr::from(([127, 0, 0, 1], 0))) },
        "static_resources": { "listeners": listeners, "clusters": clusters },
    })
}

/// The common case: listener `ingress` → tcp_proxy (`stat_prefix: ingress`) → cluster
/// `backend` with `endpoints`.
pub fn tcp_proxy_bootstrap(endpoints: &[SocketAddr]) -> Value {
    bootstrap(
        vec![listener("ingress", vec![tcp_proxy("ingress", "backend")])],
        vec![static_cluster("backend", endpoints)],
    )
}

/// `envoy.filters.http.router`.
pub fn router_filter() -> Value {
    json!({
        "name": "envoy.filters.http.router",
        "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" }
    })
}

/// `envoy.filters.network.http_connection_manager` with `stat_prefix`, an inline
/// `route_config` and `http_filters`; the fields of `extra` (an object) are added to its
/// `typed_config` (`use_remote_address`, `access_log`, timeouts…).
pub fn http_connection_manager(
    stat_prefix: &str,
    route_config: Value,
    http_filters: Vec<Value>,
    extra: Value,
) -> Value {
    let mut typed_config = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat_prefix,
        "route_config": route_config,
        "http_filters": http_filters,
    });
    if let Value::Object(fields) = extra {
        typed_config.as_object_mut().expect("object").extend(fields);
    }
    json!({ "name": "envoy.filters.network.http_connection_manager", "typed_config": typed_config })
}

/// A listener on `127.0.0.1:0` named `name` whose one filter is an HTTP connection manager
/// with `stat_prefix: name` (so its stats are `http.<name>.*`); see
/// [`http_connection_manager`] for the other arguments.
pub fn http_listener(name: &str, route_config: Value, http_filters: Vec<Value>, extra_hcm_fields: Value) -> Value {
    listener(name, vec![http_connection_manager(name, route_config, http_filters, extra_hcm_fields)])
}

/// A `RouteConfiguration` named `local_route`.
pub fn route_config(virtual_hosts: Vec<Value>) -> Value {
    json!({ "name": "local_route", "virtual_hosts": virtual_hosts })
}

/// A virtual host.
pub fn virtual_host(name: &str, domains: &[&str], routes: Vec<Value>) -> Value {
    json!({ "name": name, "domains": domains, "routes": routes })
}

/// A route: `prefix` → `cluster`.
pub fn route_to(prefix: &str, cluster: &str) -> Value {
    json!({ "match": { "prefix": prefix }, "route": { "cluster": cluster } })
}

/// The common case: listener `ingress` (stats `http.ingress.*`) → virtual host `*` → prefix
/// `/` → STATIC cluster `backend` with `endpoints` (HTTP/1.1 upstream).
pub fn http_bootstrap(endpoints: &[SocketAddr]) -> Value {
    let routes = route_config(vec![virtual_host("backend", &["*"], vec![route_to("/", "backend")])]);
    bootstrap(
        vec![http_listener("ingress", routes, vec![router_filter()], json!({}))],
        vec![static_cluster("backend", endpoints)],
    )
}

/// Makes `cluster` speak h2c to its hosts (`typed_extension_protocol_options`
/// `envoy.extensions.upstreams.http.v3.HttpProtocolOptions` with
/// `explicit_http_config.http2_protocol_options`).
pub fn with_http2(mut cluster: Value) -> Value {
    cluster["typed_extension_protocol_options"] =
        http_protocol_options(json!({ "explicit_http_config": { "http2_protocol_options": {} } }));
    cluster
}

/// A cluster's `typed_extension_protocol_options` holding one
/// `envoy.extensions.upstreams.http.v3.HttpProtocolOptions` with the fields of `fields` (an
/// object: `explicit_http_config`, `common_http_protocol_options`…).
pub fn http_protocol_options(fields: Value) -> Value {
    let mut options = json!({ "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions" });
    if let Value::Object(fields) = fields {
        options.as_object_mut().expect("object").extend(fields);
    }
    json!({ "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": options })
}

/// `envoy.access_loggers.file` writing to `path`, with a text `format` or Envoy's default
/// format when `None`.
pub fn file_access_log(path: &std::path::Path, format: Option<&str>) -> Value {
    let mut typed_config = json!({
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": path.to_str().expect("UTF-8 path"),
    });
    if let Some(format) = format {
        typed_config["log_format"] = json!({ "text_format_source": { "inline_string": format } });
    }
    json!({ "name": "envoy.access_loggers.file", "typed_config": typed_config })
}

/// `envoy.access_loggers.file` writing one JSON object per line (`log_format.json_format`).
pub fn json_access_log(path: &std::path::Path, fields: Value) -> Value {
    json!({
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": path.to_str().expect("UTF-8 path"),
            "log_format": { "json_format": fields },
        }
    })
}

/// The `typed_config` of the first filter of listener `index` (the HTTP connection manager
/// of a bootstrap built here), to adjust a field.
pub fn hcm_config(config: &mut Value, index: usize) -> &mut Value {
    &mut config["static_resources"]["listeners"][index]["filter_chains"][0]["filters"][0]["typed_config"]
}

/// The route action (`route`) of the first route of listener 0's inline route config: the
/// single route of an [`http_bootstrap`] config, to set `timeout`, `retry_policy`…
pub fn route_action(config: &mut Value) -> &mut Value {
    &mut hcm_config(config, 0)["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
}

/// Cluster `index` of a bootstrap, to adjust a field.
pub fn cluster_config(config: &mut Value, index: usize) -> &mut Value {
    &mut config["static_resources"]["clusters"][index]
}

/// Where [`unreadable_upstream_tls`]'s certificate is said to be (no such file).
pub const UNREADABLE_CERT: &str = "/nonexistent/legate-test/cert.pem";

/// A cluster's `transport_socket` whose TLS context cannot be built: its certificate and key
/// are files that do not exist. In proto field names, which both the bootstrap and xDS's
/// JSON accept.
pub fn unreadable_upstream_tls() -> Value {
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": { "tls_certificates": [{
                "certificate_chain": { "filename": UNREADABLE_CERT },
                "private_key": { "filename": "/nonexistent/legate-test/key.pem" },
            }] },
        },
    })
}
