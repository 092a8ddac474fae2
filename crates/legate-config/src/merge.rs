//! `--config-yaml` merged over the config file, as Envoy merges them: protobuf `MergeFrom`.
//!
//! Messages merge field by field, repeated fields are appended, scalars are replaced. So
//! `--config-yaml "admin: {address: ...}"` replaces the admin address and keeps the rest, and a
//! listener given there is added to the file's listeners.

use serde_json::Value;

pub fn merge_from(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(existing) => merge_from(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (Value::Array(base), Value::Array(overlay)) => base.extend(overlay),
        (base, overlay) => *base = overlay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merges_like_protobuf_merge_from() {
        let mut base = json!({"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9901}}},
                              "static_resources": {"clusters": [{"name": "a"}]}});
        merge_from(
            &mut base,
            json!({"admin": {"address": {"socket_address": {"port_value": 9902}}},
                   "static_resources": {"clusters": [{"name": "b"}]}}),
        );
        assert_eq!(base["admin"]["address"]["socket_address"]["address"], "127.0.0.1");
        assert_eq!(base["admin"]["address"]["socket_address"]["port_value"], 9902);
        assert_eq!(base["static_resources"]["clusters"].as_array().unwrap().len(), 2);
    }
}
