//! Deserialization that reports the path of the failing field.
//!
//! `serde_path_to_error` tracks the path through one deserializer. A `typed_config` is decoded
//! in a second pass (its type is only known after reading `@type`), so its errors would lose
//! the outer path. The inner pass therefore returns its own path inside the error message,
//! behind a marker, and [`from_value`] joins the two: the user sees one path,
//! `static_resources.listeners[0].filter_chains[0].filters[0].typed_config.idle_timeout`.

use serde::de::DeserializeOwned;

/// Separates an inner path from its message inside a serde custom error.
const MARK: char = '\u{1}';

/// A deserialization failure: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError {
    /// Dotted path of the field, `a.b[2].c`; empty at the root.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Deserializes `value` into `T` as Envoy's parser reads it ([`crate::proto_json`]), reporting
/// the failing field's full path.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, PathError> {
    from_value_ref(&value)
}

/// [`from_value`] without taking the tree: xDS keeps the resource it parses (for
/// `/config_dump`), and copying a large resource only to read it costs more than the parse.
pub fn from_value_ref<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, PathError> {
    serde_path_to_error::deserialize(crate::proto_json::ProtoJson(value)).map_err(path_error)
}

fn path_error<E: std::fmt::Display>(err: serde_path_to_error::Error<E>) -> PathError {
    {
        let outer = err.path().to_string();
        let outer = if outer == "." { String::new() } else { outer };
        let mut message = err.into_inner().to_string();
        // serde lists every field a message has; for Envoy's large messages that buries the
        // one that matters, so keep "unknown field `x`" only.
        if message.starts_with("unknown field") {
            if let Some(cut) = message.find(", expected") {
                message.truncate(cut);
            }
        }
        split_nested(&outer, &message)
    }
}

/// Wraps an inner error so that an enclosing [`from_value`] can join the paths. `field` is the
/// name of the field that holds the nested value (`typed_config`), relative to the enclosing
/// struct being deserialized.
pub fn nest<E: serde::de::Error>(field: &str, inner: PathError) -> E {
    let path = join(field, &inner.path);
    E::custom(format!("{MARK}{path}{MARK}{}", inner.message))
}

fn split_nested(outer: &str, message: &str) -> PathError {
    // serde may append " at line X column Y" to a custom message; the marker starts it.
    if let Some(rest) = message.strip_prefix(MARK) {
        if let Some((inner_path, inner_message)) = rest.split_once(MARK) {
            return PathError { path: join(outer, inner_path), message: inner_message.to_string() };
        }
    }
    PathError { path: outer.to_string(), message: message.to_string() }
}

/// Joins two path fragments: `a` + `b` → `a.b`, `a` + `[0].b` → `a[0].b`.
pub fn join(outer: &str, inner: &str) -> String {
    if outer.is_empty() {
        inner.to_string()
    } else if inner.is_empty() {
        outer.to_string()
    } else if inner.starts_with('[') {
        format!("{outer}{inner}")
    } else {
        format!("{outer}.{inner}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[allow(dead_code)]
        port: u32,
    }

    #[derive(Debug)]
    struct Wrapped;

    impl<'de> Deserialize<'de> for Wrapped {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let v = serde_json::Value::deserialize(d)?;
            from_value::<Inner>(v).map(|_| Wrapped).map_err(|e| nest("typed_config", e))
        }
    }

    #[derive(Deserialize, Debug)]
    struct Outer {
        #[allow(dead_code)]
        filters: Vec<Wrapped>,
    }

    #[test]
    fn nested_paths_are_joined() {
        let v = serde_json::json!({"filters": [{"port": 1}, {"port": "x"}]});
        let err = from_value::<Outer>(v).unwrap_err();
        assert_eq!(err.path, "filters[1].typed_config.port");
        assert!(err.message.contains("invalid type"), "{}", err.message);
    }
}
