//! `/config_dump`: the configuration in effect, in Envoy's `ConfigDump` shape.

use std::rc::Rc;

use hyper::StatusCode;
use serde_json::{json, Value};

use super::{json, rfc3339, AdminResponse, Query};
use crate::server::Server;

const BOOTSTRAP: &str = "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump";
const CLUSTERS: &str = "type.googleapis.com/envoy.admin.v3.ClustersConfigDump";
const LISTENERS: &str = "type.googleapis.com/envoy.admin.v3.ListenersConfigDump";

pub fn handle(server: &Rc<Server>, query: &Query) -> AdminResponse {
    let updated = rfc3339(server.started_at);
    let raw = &server.loaded.raw;
    let typed = |type_url: &str, resource: &Value| {
        let mut object = serde_json::Map::new();
        object.insert("@type".into(), json!(type_url));
        if let Value::Object(fields) = resource {
            object.extend(fields.clone());
        }
        Value::Object(object)
    };
    let list = |key: &str| {
        raw.get("static_resources").and_then(|s| s.get(key)).and_then(Value::as_array).cloned().unwrap_or_default()
    };
    let clusters: Vec<Value> = list("clusters")
        .iter()
        .map(|c| json!({"cluster": typed("type.googleapis.com/envoy.config.cluster.v3.Cluster", c), "last_updated": updated}))
        .collect();
    // Both lists are in config order; unnamed listeners are dumped with the name legate gave
    // them (their address), as Envoy dumps its generated names.
    let manager = server.listener_manager.borrow();
    let listeners: Vec<Value> = list("listeners")
        .iter()
        .zip(manager.listeners())
        .map(|(raw_listener, (listener, _))| {
            let mut dumped = typed("type.googleapis.com/envoy.config.listener.v3.Listener", raw_listener);
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
    let mut configs = vec![
        json!({"@type": BOOTSTRAP, "bootstrap": bootstrap, "last_updated": updated}),
        json!({"@type": CLUSTERS, "static_clusters": clusters}),
        json!({"@type": LISTENERS, "static_listeners": listeners}),
    ];
    for config in &mut configs {
        redact(config, false);
    }
    let configs: Vec<Value> = match query.get("resource") {
        Some(resource) => {
            configs.into_iter().filter_map(|c| c.get(resource).and_then(Value::as_array).cloned()).flatten().collect()
        }
        None => configs,
    };
    json(StatusCode::OK, &json!({ "configs": configs }))
}

/// The node as the server uses it (command-line overrides applied).
fn bootstrap_node(server: &Server) -> Option<Value> {
    let node = server.loaded.bootstrap.node.as_ref()?;
    let mut value = server.loaded.raw.get("node").cloned().unwrap_or_else(|| json!({}));
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
