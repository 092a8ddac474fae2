//! Reads a JSON tree the way proto3 JSON does before typed deserialization.
//!
//! - A `null` value means "field not set": the key is dropped (real configs write
//!   `filter_chain_match:` with nothing after it).
//! - Message field names may be lowerCamelCase (`connectTimeout`): they become snake_case,
//!   except inside maps whose keys are user data (metadata, runtime layers, `Struct`s).

use serde_json::{Map, Value};

/// Keys under which the whole subtree is user data, not proto field names: metadata values,
/// runtime layers, `Struct`s (access log `json_format`), and maps keyed by cluster names.
const FREE_FORM: &[&str] = &[
    "filter_metadata",
    "typed_filter_metadata",
    "static_layer",
    "dynamic_parameters",
    "fields",
    "json_format",
    "typed_json_format",
    "cluster_min_healthy_percentages",
];

/// Field names whose lowerCamelCase form loses an underscore before digits (`acceptHttp10` is
/// `accept_http_10`), which [`snake_case`] cannot restore by itself.
const DIGIT_FIELDS: &[(&str, &str)] = &[
    ("accept_http10", "accept_http_10"),
    ("default_host_for_http10", "default_host_for_http_10"),
    ("ignore_http11_upgrade", "ignore_http_11_upgrade"),
];

pub fn normalize(value: &mut Value) {
    normalize_under(value, "");
}

/// `parent` is the key holding `value`: `metadata` is a `Metadata` message (whose maps are
/// free-form) everywhere except under `node`, where it is a `Struct`.
fn normalize_under(value: &mut Value, parent: &str) {
    match value {
        Value::Object(map) => {
            // Most trees are snake_case already (files, protobufs decoded by their proto
            // names): walk those in place instead of rebuilding every map.
            let rebuild = map.iter().any(|(key, child)| child.is_null() || snake_case(key).is_some());
            if !rebuild {
                for (key, child) in map.iter_mut() {
                    let free_form = FREE_FORM.contains(&key.as_str()) || (key == "metadata" && parent == "node");
                    if !free_form {
                        normalize_under(child, key);
                    }
                }
                return;
            }
            let old = std::mem::take(map);
            let mut new = Map::with_capacity(old.len());
            for (key, mut child) in old {
                if child.is_null() {
                    continue;
                }
                let key = match snake_case(&key) {
                    Some(snake) => match DIGIT_FIELDS.iter().find(|(from, _)| *from == snake) {
                        Some((_, to)) => to.to_string(),
                        None => snake,
                    },
                    None => key,
                };
                let free_form = FREE_FORM.contains(&key.as_str()) || (key == "metadata" && parent == "node");
                if !free_form {
                    normalize_under(&mut child, &key);
                }
                new.insert(key, child);
            }
            *map = new;
        }
        Value::Array(items) => items.iter_mut().for_each(|item| normalize_under(item, parent)),
        _ => {}
    }
}

/// `connectTimeout` → `connect_timeout`; `None` for keys that are not lowerCamelCase
/// identifiers (already snake_case, `@type`, or names with dots such as extension names).
fn snake_case(key: &str) -> Option<String> {
    let first = key.chars().next()?;
    if !first.is_ascii_lowercase()
        || !key.chars().all(|c| c.is_ascii_alphanumeric())
        || !key.chars().any(|c| c.is_ascii_uppercase())
    {
        return None;
    }
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn drops_nulls_and_snake_cases_keys() {
        let mut v = json!({
            "connectTimeout": "1s",
            "filter_chain_match": null,
            "typedConfig": {"@type": "x", "statPrefix": "a"},
            "metadata": {"filter_metadata": {"myApp": {"someKey": 1}}},
            "envoy.lb": 1,
            "node": {"metadata": {"myKey": 1}},
            "routeConfig": {"metadata": {"filterMetadata": {"myApp": {"someKey": 1}}}},
            "httpProtocolOptions": {"acceptHttp10": true}
        });
        normalize(&mut v);
        assert_eq!(
            v,
            json!({
                "connect_timeout": "1s",
                "typed_config": {"@type": "x", "stat_prefix": "a"},
                "metadata": {"filter_metadata": {"myApp": {"someKey": 1}}},
                "envoy.lb": 1,
                "node": {"metadata": {"myKey": 1}},
                "route_config": {"metadata": {"filter_metadata": {"myApp": {"someKey": 1}}}},
                "http_protocol_options": {"accept_http_10": true}
            })
        );
    }
}
