//! Header additions and removals of route configs, virtual hosts, routes and weighted
//! clusters (`request_headers_to_add`, `response_headers_to_remove`…). Values may hold
//! command operators such as `%DOWNSTREAM_REMOTE_ADDRESS%`, formatted per request.

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use legate_config::core::{HeaderAppendAction, HeaderValueOption};

use crate::access_log::formatter::Formatter;
use crate::http::StreamInfo;

enum Value {
    Static(HeaderValue),
    Formatted(Formatter),
}

struct Addition {
    name: HeaderName,
    value: Value,
    action: HeaderAppendAction,
    keep_empty_value: bool,
}

/// One level's header mutations, compiled.
#[derive(Default)]
pub struct HeaderParser {
    add: Vec<Addition>,
    remove: Vec<HeaderName>,
}

impl HeaderParser {
    pub fn new(add: &[HeaderValueOption], remove: &[String]) -> Result<Self, String> {
        let mut parser = HeaderParser::default();
        for option in add {
            let key = option.header.key.to_ascii_lowercase();
            // Envoy's `isModifiableHeader`: the host goes through the route's host rewrites.
            if key == "host" {
                return Err(":-prefixed or host headers may not be modified".into());
            }
            let name = HeaderName::from_bytes(key.as_bytes())
                .map_err(|_| format!("invalid header name '{}'", option.header.key))?;
            let raw = &option.header.value;
            let value = if raw.contains('%') {
                Value::Formatted(Formatter::parse(raw)?)
            } else {
                Value::Static(
                    HeaderValue::from_str(raw)
                        .map_err(|_| format!("invalid value for header '{}'", option.header.key))?,
                )
            };
            parser.add.push(Addition {
                name,
                value,
                action: option.action(),
                keep_empty_value: option.keep_empty_value,
            });
        }
        for name in remove {
            if name.eq_ignore_ascii_case("host") {
                return Err(":-prefixed or host headers may not be removed".into());
            }
            let name = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|_| format!("invalid header name '{name}'"))?;
            parser.remove.push(name);
        }
        Ok(parser)
    }

    /// Whether a value is formatted per request (it may read the request snapshot).
    pub fn uses_formatters(&self) -> bool {
        self.add.iter().any(|a| matches!(a.value, Value::Formatted(_)))
    }

    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }

    /// Removes, then adds, as Envoy's `HeaderParser::evaluateHeaders`.
    pub fn evaluate(&self, headers: &mut HeaderMap, info: &StreamInfo) {
        for name in &self.remove {
            headers.remove(name);
        }
        let mut scratch = Vec::new();
        for addition in &self.add {
            let value = match &addition.value {
                Value::Static(v) => v.clone(),
                Value::Formatted(f) => {
                    scratch.clear();
                    f.format_into(info, &mut scratch);
                    // An operator with no value prints `-` in logs; a header gets nothing.
                    if scratch == b"-" {
                        scratch.clear();
                    }
                    match HeaderValue::from_bytes(&scratch) {
                        Ok(v) => v,
                        Err(_) => continue,
                    }
                }
            };
            if value.is_empty() && !addition.keep_empty_value {
                continue;
            }
            match addition.action {
                HeaderAppendAction::AppendIfExistsOrAdd => {
                    headers.append(addition.name.clone(), value);
                }
                HeaderAppendAction::AddIfAbsent => {
                    if !headers.contains_key(&addition.name) {
                        headers.insert(addition.name.clone(), value);
                    }
                }
                HeaderAppendAction::OverwriteIfExistsOrAdd => {
                    headers.insert(addition.name.clone(), value);
                }
                HeaderAppendAction::OverwriteIfExists => {
                    if headers.contains_key(&addition.name) {
                        headers.insert(addition.name.clone(), value);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Envoy's `isModifiableHeader`: the host is not a header mutations may add or remove.
    #[test]
    fn the_host_may_not_be_added_or_removed() {
        let option: HeaderValueOption =
            serde_json::from_value(serde_json::json!({ "header": { "key": "Host", "value": "x" } })).unwrap();
        let err = HeaderParser::new(&[option], &[]).err().unwrap_or_default();
        assert_eq!(err, ":-prefixed or host headers may not be modified");
        let err = HeaderParser::new(&[], &["host".into()]).err().unwrap_or_default();
        assert_eq!(err, ":-prefixed or host headers may not be removed");
    }
}
