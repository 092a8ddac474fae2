//! The one registry of extensions legate implements: Envoy name and type URL → config type.
//!
//! Envoy v3 picks an extension by the `@type` of its `typed_config`; the `name` is a label,
//! used only when `typed_config` is absent. `udpa.type.v1.TypedStruct` and
//! `xds.type.v3.TypedStruct` wrappers are unwrapped to the type they carry. An extension that
//! is not in these tables fails the load with Envoy's wording and the field path; the data
//! plane maps each variant of these enums to its implementation in
//! `legate-proxy/src/extensions.rs`.

use serde::de::{Deserializer, Error};
use serde::Deserialize;
use serde_json::Value;

use crate::filters::network::{
    connection_limit::ConnectionLimit, direct_response::DirectResponse, echo::Echo, tcp_proxy::TcpProxy,
};
use crate::path::{self, PathError};
use crate::unsupported::Unsupported;

/// One registry entry: an Envoy extension name, its config type URL and its config parser.
pub struct Extension<T> {
    pub name: &'static str,
    pub type_url: &'static str,
    pub parse: fn(Value) -> Result<T, PathError>,
}

/// Configs of the network filters legate implements (`envoy.filters.network.*`).
#[derive(Clone, Debug, PartialEq)]
pub enum NetworkFilterConfig {
    TcpProxy(TcpProxy),
    Echo(Echo),
    ConnectionLimit(ConnectionLimit),
    DirectResponse(DirectResponse),
}

pub static NETWORK_FILTERS: &[Extension<NetworkFilterConfig>] = &[
    Extension {
        name: "envoy.filters.network.tcp_proxy",
        type_url: "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        parse: |v| path::from_value(v).map(NetworkFilterConfig::TcpProxy),
    },
    Extension {
        name: "envoy.filters.network.echo",
        type_url: "envoy.extensions.filters.network.echo.v3.Echo",
        parse: |v| path::from_value(v).map(NetworkFilterConfig::Echo),
    },
    Extension {
        name: "envoy.filters.network.connection_limit",
        type_url: "envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit",
        parse: |v| path::from_value(v).map(NetworkFilterConfig::ConnectionLimit),
    },
    Extension {
        name: "envoy.filters.network.direct_response",
        type_url: "envoy.extensions.filters.network.direct_response.v3.Config",
        parse: |v| path::from_value(v).map(NetworkFilterConfig::DirectResponse),
    },
];

/// Configs of the listener filters legate implements (`envoy.filters.listener.*`).
#[derive(Clone, Debug, PartialEq)]
pub enum ListenerFilterConfig {
    TlsInspector(crate::filters::listener::tls_inspector::TlsInspector),
}

pub static LISTENER_FILTERS: &[Extension<ListenerFilterConfig>] = &[Extension {
    name: "envoy.filters.listener.tls_inspector",
    type_url: "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
    parse: |v| path::from_value(v).map(ListenerFilterConfig::TlsInspector),
}];

/// Transport sockets (`envoy.transport_sockets.*`).
#[derive(Clone, Debug, PartialEq)]
pub enum TransportSocketConfig {
    /// Plain TCP, Envoy's default.
    RawBuffer,
}

pub static TRANSPORT_SOCKETS: &[Extension<TransportSocketConfig>] = &[Extension {
    name: "envoy.transport_sockets.raw_buffer",
    type_url: "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer",
    parse: |v| path::from_value::<Empty>(v).map(|_| TransportSocketConfig::RawBuffer),
}];

/// A config message with no fields (`RawBuffer`, `Echo`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// Resolves a `{name, typed_config}` pair through `registry`. Errors carry a path relative to
/// the message holding the pair.
pub fn resolve<T>(
    registry: &[Extension<T>],
    kind: &str,
    name: &str,
    typed_config: Option<Value>,
) -> Result<T, PathError> {
    let Some(typed_config) = typed_config else {
        // No typed_config: Envoy falls back to the name and the extension's default config.
        return match registry.iter().find(|e| e.name == name) {
            Some(ext) => (ext.parse)(Value::Object(Default::default())),
            None => Err(PathError {
                path: "name".into(),
                message: format!(
                    "Didn't find a registered implementation for {kind} name: '{name}' (legate does not implement it)"
                ),
            }),
        };
    };
    let Value::Object(mut fields) = typed_config else {
        return Err(PathError { path: "typed_config".into(), message: "expected an object with \"@type\"".into() });
    };
    let Some(Value::String(type_url)) = fields.remove("@type") else {
        return Err(PathError { path: "typed_config".into(), message: "missing \"@type\"".into() });
    };
    let message_type = type_url.rsplit('/').next().unwrap_or(&type_url).to_string();
    if message_type == "udpa.type.v1.TypedStruct" || message_type == "xds.type.v3.TypedStruct" {
        let inner_url = match fields.remove("type_url") {
            Some(Value::String(s)) => s,
            _ => return Err(PathError { path: "typed_config.type_url".into(), message: "missing type_url".into() }),
        };
        let mut inner = match fields.remove("value") {
            Some(Value::Object(m)) => m,
            None => Default::default(),
            Some(_) => {
                return Err(PathError { path: "typed_config.value".into(), message: "expected an object".into() })
            }
        };
        inner.insert("@type".into(), Value::String(inner_url));
        return resolve(registry, kind, name, Some(Value::Object(inner)));
    }
    match registry.iter().find(|e| e.type_url == message_type) {
        Some(ext) => (ext.parse)(Value::Object(fields)).map_err(|e| PathError {
            path: path::join("typed_config", &e.path),
            message: e.message,
        }),
        None => Err(PathError {
            path: "typed_config".into(),
            message: format!(
                "Didn't find a registered implementation for '{name}' with type URL: '{message_type}' (legate does not implement this {kind})"
            ),
        }),
    }
}

/// The `{name, typed_config}` shape shared by filters, listener filters and transport sockets.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTypedExtension {
    #[serde(default)]
    name: String,
    typed_config: Option<Value>,
    config_discovery: Option<Unsupported>,
}

fn deserialize_extension<'de, D: Deserializer<'de>, T>(
    deserializer: D,
    registry: &[Extension<T>],
    kind: &str,
) -> Result<(String, T), D::Error> {
    let raw = RawTypedExtension::deserialize(deserializer)?;
    let _ = raw.config_discovery;
    let config = resolve(registry, kind, &raw.name, raw.typed_config).map_err(|e| path::nest::<D::Error>("", e))?;
    Ok((raw.name, config))
}

/// `envoy.config.listener.v3.Filter`: a network filter.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkFilter {
    pub name: String,
    pub config: NetworkFilterConfig,
}

impl<'de> Deserialize<'de> for NetworkFilter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (name, config) = deserialize_extension(d, NETWORK_FILTERS, "network filter")?;
        Ok(NetworkFilter { name, config })
    }
}

/// `envoy.config.listener.v3.ListenerFilter`.
#[derive(Clone, Debug, PartialEq)]
pub struct ListenerFilter {
    pub name: String,
    pub config: ListenerFilterConfig,
}

impl<'de> Deserialize<'de> for ListenerFilter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[serde(default)]
            name: String,
            typed_config: Option<Value>,
            config_discovery: Option<Unsupported>,
            filter_disabled: Option<Unsupported>,
        }
        let raw = Raw::deserialize(d)?;
        let _ = (raw.config_discovery, raw.filter_disabled);
        let config = resolve(LISTENER_FILTERS, "listener filter", &raw.name, raw.typed_config)
            .map_err(|e| path::nest::<D::Error>("", e))?;
        Ok(ListenerFilter { name: raw.name, config })
    }
}

impl<'de> Deserialize<'de> for crate::core::TransportSocket {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (name, config) = deserialize_extension(d, TRANSPORT_SOCKETS, "transport socket")?;
        Ok(crate::core::TransportSocket { name, config })
    }
}

/// Raised for a value that parses but is not allowed (proto-validate rules).
pub fn invalid<E: Error>(field: &str, message: impl std::fmt::Display) -> E {
    path::nest(field, PathError { path: String::new(), message: message.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resolves_by_type_url_and_by_name() {
        let tcp = json!({"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                         "stat_prefix": "t", "cluster": "c"});
        assert!(matches!(
            resolve(NETWORK_FILTERS, "network filter", "anything", Some(tcp)),
            Ok(NetworkFilterConfig::TcpProxy(_))
        ));
        assert!(matches!(
            resolve(NETWORK_FILTERS, "network filter", "envoy.filters.network.echo", None),
            Ok(NetworkFilterConfig::Echo(_))
        ));
    }

    #[test]
    fn unwraps_typed_struct() {
        let v = json!({"@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
                       "type_url": "type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo", "value": {}});
        assert!(matches!(resolve(NETWORK_FILTERS, "network filter", "x", Some(v)), Ok(NetworkFilterConfig::Echo(_))));
    }

    #[test]
    fn unknown_type_url_names_the_field() {
        let v = json!({"@type": "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy"});
        let err = resolve(NETWORK_FILTERS, "network filter", "envoy.filters.network.redis_proxy", Some(v)).unwrap_err();
        assert_eq!(err.path, "typed_config");
        assert!(err.message.contains("RedisProxy"), "{}", err.message);
    }
}
