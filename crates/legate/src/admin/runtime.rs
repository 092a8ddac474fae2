//! `/runtime` and `/runtime_modify`: the runtime's layers and final values, and the admin
//! layer's overrides (Envoy's `RuntimeHandler`).

use std::collections::BTreeSet;
use std::rc::Rc;

use hyper::StatusCode;
use serde_json::{json, Map, Value};

use super::{json, text, AdminResponse, Query};
use crate::server::Server;

/// Every key any layer has, with each layer's text (empty where it lacks the key) and the
/// last non-empty one as the final value; all values are strings, as Envoy prints them.
pub fn show(server: &Rc<Server>, _query: &Query) -> AdminResponse {
    let snapshot = server.runtime.snapshot();
    let keys: BTreeSet<&str> = snapshot.layers.iter().flat_map(|l| l.values.keys().map(String::as_str)).collect();
    let mut entries = Map::new();
    for key in keys {
        let layer_values: Vec<&str> =
            snapshot.layers.iter().map(|l| l.values.get(key).map_or("", |e| e.raw.as_str())).collect();
        let final_value = layer_values.iter().rev().find(|v| !v.is_empty()).copied().unwrap_or("");
        entries.insert(key.to_string(), json!({"final_value": final_value, "layer_values": layer_values}));
    }
    let layers: Vec<&str> = snapshot.layers.iter().map(|l| l.name.as_str()).collect();
    json(StatusCode::OK, &json!({"entries": Value::Object(entries), "layers": layers}))
}

/// Sets (or, with an empty value, removes) each parameter in the admin layer.
pub fn modify(server: &Rc<Server>, query: &Query) -> AdminResponse {
    let mut changes: Vec<(String, String)> = query.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    if changes.is_empty() {
        let usage = "usage: /runtime_modify?key1=value1&key2=value2&keyN=valueN\n       \
                     or send the parameters as form values\n\
                     use an empty value to remove a previously added override";
        return text(StatusCode::BAD_REQUEST, usage.into());
    }
    changes.sort();
    match server.runtime.merge_admin(&changes) {
        Ok(()) => text(StatusCode::OK, "OK\n".into()),
        Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}
