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
