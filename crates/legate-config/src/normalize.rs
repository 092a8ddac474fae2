//! Reads a JSON tree the way proto3 JSON does before typed deserialization.
//!
//! - A `null` value means "field not set": the key is dropped (real configs write
//!   `filter_chain_match:` with nothing after it).
//! - Message field names may be lowerCamelCase (`connectTimeout`): they become snake_case,
//!   except inside maps whose keys are user data (metadata, runtime layers, `Struct`s).

use serde_json::{Map, Value};

/// Keys under which the whole subtree is user data, not proto field names.
const FREE_FORM: &[&str] =
    &["filter_metadata", "typed_filter_metadata", "static_layer", "metadata", "dynamic_parameters", "fields"];

pub fn normalize(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let old = std::mem::take(map);
            let mut new = Map::with_capacity(old.len());
            for (key, mut child) in old {
                if child.is_null() {
                    continue;
                }
                let key = snake_case(&key).unwrap_or(key);
                if !FREE_FORM.contains(&key.as_str()) {
                    normalize(&mut child);
                }
                new.insert(key, child);
            }
            *map = new;
        }
        Value::Array(items) => items.iter_mut().for_each(normalize),
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
            "envoy.lb": 1
        });
        normalize(&mut v);
        assert_eq!(
            v,
            json!({
                "connect_timeout": "1s",
                "typed_config": {"@type": "x", "stat_prefix": "a"},
                "metadata": {"filter_metadata": {"myApp": {"someKey": 1}}},
                "envoy.lb": 1
            })
        );
    }
}
