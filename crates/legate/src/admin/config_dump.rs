//! `/config_dump`: the configuration in effect, in Envoy's `ConfigDump` shape.

use std::rc::Rc;
use std::sync::Arc;

use hyper::StatusCode;
use legate_proxy::upstream::Cluster;
use serde_json::{json, Value};

use super::{json, rfc3339, AdminResponse, Query};
use crate::server::Server;

const BOOTSTRAP: &str = "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump";
const CLUSTERS: &str = "type.googleapis.com/envoy.admin.v3.ClustersConfigDump";
const LISTENERS: &str = "type.googleapis.com/envoy.admin.v3.ListenersConfigDump";
const ROUTES: &str = "type.googleapis.com/envoy.admin.v3.RoutesConfigDump";
const SCOPED_ROUTES: &str = "type.googleapis.com/envoy.admin.v3.ScopedRoutesConfigDump";
const SECRETS: &str = "type.googleapis.com/envoy.admin.v3.SecretsConfigDump";
const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// The repeated fields `?resource=` can name, with the type of their elements (Envoy wraps
/// each element in it).
const RESOURCES: &[(&str, &str)] = &[
    ("static_clusters", "ClustersConfigDump.StaticCluster"),
    ("dynamic_active_clusters", "ClustersConfigDump.DynamicCluster"),
    ("dynamic_warming_clusters", "ClustersConfigDump.DynamicCluster"),
    ("static_listeners", "ListenersConfigDump.StaticListener"),
    ("dynamic_listeners", "ListenersConfigDump.DynamicListener"),
    ("static_scoped_route_configs", "ScopedRoutesConfigDump.InlineScopedRouteConfigs"),
    ("dynamic_scoped_route_configs", "ScopedRoutesConfigDump.DynamicScopedRouteConfigs"),
    ("static_route_configs", "RoutesConfigDump.StaticRouteConfig"),
    ("dynamic_route_configs", "RoutesConfigDump.DynamicRouteConfig"),
    ("static_secrets", "SecretsConfigDump.StaticSecret"),
    ("dynamic_active_secrets", "SecretsConfigDump.DynamicSecret"),
    ("dynamic_warming_secrets", "SecretsConfigDump.DynamicSecret"),
];
const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const ROUTE_CONFIGURATION: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

/// `{"@type": type_url, ...resource}`.
fn typed(type_url: &str, resource: &Value) -> Value {
    let mut object = serde_json::Map::new();
    object.insert("@type".into(), json!(type_url));
    if let Value::Object(fields) = resource {
        object.extend(fields.clone());
    }
    Value::Object(object)
}

pub fn handle(server: &Rc<Server>, query: &Query) -> AdminResponse {
    let updated = rfc3339(server.started_at);
    let raw = server.loaded.raw();
    let list = |key: &str| {
        raw.get("static_resources").and_then(|s| s.get(key)).and_then(Value::as_array).cloned().unwrap_or_default()
    };
    let clusters: Vec<Value> =
        list("clusters").iter().map(|c| json!({"cluster": typed(CLUSTER, c), "last_updated": updated})).collect();
    // Both lists are in config order; unnamed listeners are dumped with the name legate gave
    // them (their address), as Envoy dumps its generated names.
    let manager = server.listener_manager.borrow();
    let listeners: Vec<Value> = list("listeners")
        .iter()
        .zip(manager.listeners())
        .map(|(raw_listener, (listener, _))| {
            let mut dumped = typed(LISTENER, raw_listener);
            if let Value::Object(fields) = &mut dumped {
                fields.entry("name").or_insert_with(|| json!(listener.name));
            }
            json!({"listener": dumped, "last_updated": updated})
        })
        .collect();
    let mut bootstrap = raw.clone();
    if let Some(node) = bootstrap_node(server) {
        bootstrap["node"] = node;
    }
    let mut clusters_dump = json!({"@type": CLUSTERS, "static_clusters": clusters});
    dynamic_clusters(server, &mut clusters_dump);
    let mut listeners_dump = json!({"@type": LISTENERS, "static_listeners": listeners});
    dynamic_listeners(server, &mut listeners_dump);
    drop(manager);
    let mut routes_dump = json!({"@type": ROUTES});
    let inline_routes = static_routes(&list("listeners"), &updated);
    if !inline_routes.is_empty() {
        routes_dump["static_route_configs"] = json!(inline_routes);
    }
    if let Some(dynamic) = dynamic_routes(server) {
        routes_dump["dynamic_route_configs"] = json!(dynamic);
    }
    let mut secrets_dump = json!({"@type": SECRETS});
    let secrets: Vec<Value> = list("secrets")
        .iter()
        .map(|secret| json!({"name": secret["name"], "last_updated": updated, "secret": typed(SECRET, secret)}))
        .collect();
    if !secrets.is_empty() {
        secrets_dump["static_secrets"] = json!(secrets);
    }
    // Envoy's six, in its order, each present even when empty.
    let mut configs = vec![
        json!({"@type": BOOTSTRAP, "bootstrap": bootstrap, "last_updated": updated}),
        clusters_dump,
        listeners_dump,
        json!({"@type": SCOPED_ROUTES}),
        routes_dump,
        secrets_dump,
    ];
    for config in &mut configs {
        redact(config, false);
    }
    let configs: Vec<Value> = match query.get("resource") {
        Some(resource) => {
            let Some((_, element)) = RESOURCES.iter().find(|(name, _)| *name == resource) else {
                return super::text(StatusCode::NOT_FOUND, format!("{resource} not found in config dump"));
            };
            let element = format!("type.googleapis.com/envoy.admin.v3.{element}");
            configs
                .iter()
                .filter_map(|c| c.get(resource).and_then(Value::as_array))
                .flatten()
                .map(|item| typed(&element, item))
                .collect()
        }
        None => configs,
    };
    json(StatusCode::OK, &json!({ "configs": configs }))
}

/// The route configurations written inline in the connection managers of the static
/// listeners (`RoutesConfigDump.static_route_configs`).
fn static_routes(listeners: &[Value], updated: &str) -> Vec<Value> {
    let chains = listeners.iter().flat_map(|l| {
        let chains = l.get("filter_chains").and_then(Value::as_array).into_iter().flatten();
        chains.chain(l.get("default_filter_chain"))
    });
    chains
        .flat_map(|chain| chain.get("filters").and_then(Value::as_array).into_iter().flatten())
        .filter_map(|filter| filter.get("typed_config")?.get("route_config"))
        .map(|routes| json!({"route_config": typed(ROUTE_CONFIGURATION, routes), "last_updated": updated}))
        .collect()
}

/// CDS clusters: `dynamic_active_clusters` and `dynamic_warming_clusters`, each with the
/// version it came in; the last CDS version as `version_info`.
fn dynamic_clusters(server: &Server, dump: &mut Value) {
    let manager = &server.cluster_manager;
    let entry = |cluster: &Arc<Cluster>| {
        cluster.api.as_ref().map(|api| {
            let raw: Value = serde_json::from_str(&api.raw(&cluster.name)).unwrap_or_default();
            let update = &api.update;
            json!({"version_info": update.version_info, "cluster": typed(CLUSTER, &raw), "last_updated": rfc3339(update.last_updated)})
        })
    };
    let mut active: Vec<Value> = manager.clusters().iter().filter_map(entry).collect();
    let mut warming: Vec<Value> = manager.warming_clusters().iter().filter_map(entry).collect();
    if let Some(cds) = server.xds.cds.borrow().as_ref() {
        dump["version_info"] = json!(*cds.version_info.borrow());
        // A refused cluster's `error_state` goes on the version still in effect, or alone.
        for error in cds.errors.borrow().iter() {
            let state = error_state(CLUSTER, &error.raw, &error.details, error.at);
            let named = |e: &&mut Value| e["cluster"]["name"] == error.name.as_str();
            match active.iter_mut().chain(warming.iter_mut()).find(named) {
                Some(existing) => existing["error_state"] = state,
                None => active.push(json!({ "error_state": state })),
            }
        }
    }
    if !active.is_empty() {
        dump["dynamic_active_clusters"] = json!(active);
    }
    if !warming.is_empty() {
        dump["dynamic_warming_clusters"] = json!(warming);
    }
}

/// Envoy's `UpdateFailureState`.
fn error_state(type_url: &str, raw: &Value, details: &str, at: std::time::SystemTime) -> Value {
    json!({"failed_configuration": typed(type_url, raw), "last_update_attempt": rfc3339(at), "details": details})
}

/// LDS listeners: one `dynamic_listeners` entry per name with its `active_state`,
/// `warming_state`, `draining_state` and the last refused version's `error_state`.
fn dynamic_listeners(server: &Server, dump: &mut Value) {
    let manager = server.listener_manager.borrow();
    let state = |api: &legate_proxy::listener::listener_manager::ApiVersion| json!({"version_info": api.version_info, "listener": typed(LISTENER, &api.raw), "last_updated": rfc3339(api.last_updated)});
    let mut entries: std::collections::BTreeMap<String, serde_json::Map<String, Value>> = Default::default();
    for (listener, _) in manager.listeners() {
        if let Some(api) = manager.api_version(&listener.name) {
            entries.entry(listener.name.clone()).or_default().insert("active_state".into(), state(api));
        }
    }
    for warming in &manager.warming {
        entries.entry(warming.listener.name.clone()).or_default().insert("warming_state".into(), state(&warming.api));
    }
    for draining in manager.draining().iter() {
        if let Some(api) = &draining.api {
            entries.entry(draining.listener.name.clone()).or_default().insert("draining_state".into(), state(api));
        }
    }
    for error in &manager.errors {
        entries
            .entry(error.name.clone())
            .or_default()
            .insert("error_state".into(), error_state(LISTENER, &error.raw, &error.details, error.last_update_attempt));
    }
    if let Some(lds) = server.xds.lds.borrow().as_ref() {
        dump["version_info"] = json!(*lds.version_info.borrow());
    }
    if !entries.is_empty() {
        let listeners: Vec<Value> = entries
            .into_iter()
            .map(|(name, mut fields)| {
                fields.insert("name".into(), json!(name));
                Value::Object(fields)
            })
            .collect();
        dump["dynamic_listeners"] = json!(listeners);
    }
}

/// RDS route configurations in effect (`RoutesConfigDump.dynamic_route_configs`).
fn dynamic_routes(server: &Server) -> Option<Vec<Value>> {
    let routes: Vec<Value> = server
        .xds
        .rds
        .subscriptions()
        .iter()
        .filter_map(|s| {
            let raw = s.raw.borrow();
            let raw = raw.as_ref()?;
            Some(json!({
                "version_info": *s.version_info.borrow(),
                "route_config": typed(ROUTE_CONFIGURATION, raw),
                "last_updated": s.last_updated.borrow().map(rfc3339),
            }))
        })
        .collect();
    (!routes.is_empty()).then_some(routes)
}

/// The node as the server uses it (command-line overrides applied).
fn bootstrap_node(server: &Server) -> Option<Value> {
    let node = server.loaded.bootstrap.node.as_ref()?;
    let mut value = server.loaded.raw_node.clone();
    value["id"] = json!(node.id);
    value["cluster"] = json!(node.cluster);
    if let Some(locality) = &node.locality {
        value["locality"] = json!({"region": locality.region, "zone": locality.zone, "sub_zone": locality.sub_zone});
    }
    Some(value)
}

/// Fields Envoy marks `sensitive` (private keys, key passwords, ticket keys): their values are
/// replaced in the dump, file names included, as Envoy's `MessageUtil::redact` does.
const SENSITIVE: &[&str] =
    &["private_key", "privateKey", "password", "pkcs12", "session_ticket_keys", "sessionTicketKeys"];

/// Envoy's redaction: strings become `[redacted]`, bytes the base64 of it.
fn redact(value: &mut Value, sensitive: bool) {
    match value {
        Value::Object(fields) => {
            for (key, field) in fields.iter_mut() {
                let inside = sensitive || SENSITIVE.contains(&key.as_str());
                if inside && (key == "inline_bytes" || key == "inlineBytes") {
                    *field = json!("W3JlZGFjdGVkXQ==");
                } else {
                    redact(field, inside);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| redact(item, sensitive)),
        Value::String(text) if sensitive => *text = "[redacted]".into(),
        _ => {}
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    #[test]
    fn private_keys_are_redacted_certificates_kept() {
        let mut v = json!({"tls_certificates": [{
            "certificate_chain": {"filename": "/etc/cert.pem"},
            "private_key": {"inline_string": "-----BEGIN PRIVATE KEY-----"},
        }, {
            "private_key": {"inline_bytes": "c2VjcmV0"},
        }]});
        redact(&mut v, false);
        assert_eq!(v["tls_certificates"][0]["certificate_chain"]["filename"], "/etc/cert.pem");
        assert_eq!(v["tls_certificates"][0]["private_key"]["inline_string"], "[redacted]");
        assert_eq!(v["tls_certificates"][1]["private_key"]["inline_bytes"], "W3JlZGFjdGVkXQ==");
    }
}
