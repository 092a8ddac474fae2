//! The one registry of extensions legate implements: Envoy name and type URL → config type.
//!
//! Envoy v3 picks an extension by the `@type` of its `typed_config`; the `name` is a label,
//! used only when `typed_config` is absent. `udpa.type.v1.TypedStruct` and
//! `xds.type.v3.TypedStruct` wrappers are unwrapped to the type they carry. An extension that
//! is not in these tables fails the load with Envoy's wording and the field path; the data
//! plane maps each variant of these enums to its implementation in
//! `legate-proxy/src/extensions.rs`.

use std::collections::BTreeMap;

use serde::de::{Deserializer, Error};
use serde::Deserialize;
use serde_json::Value;

use crate::access_log::{FileAccessLog, StderrAccessLog, StdoutAccessLog};
use crate::filters::http::{
    buffer::{Buffer, BufferPerRoute},
    cors::Cors,
    fault::HttpFault,
    health_check::HealthCheck,
    local_ratelimit::LocalRateLimit,
    router::Router,
};
use crate::filters::network::{
    connection_limit::ConnectionLimit, direct_response::DirectResponse, echo::Echo,
    http_connection_manager::HttpConnectionManager, tcp_proxy::TcpProxy,
};
use crate::path::{self, PathError};
use crate::route::CorsPolicy;
use crate::unsupported::Unsupported;
use crate::validate::Validator;

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
    Rbac(crate::filters::network::rbac::NetworkRbac),
    DirectResponse(DirectResponse),
    /// Boxed: far larger than the other configs.
    HttpConnectionManager(Box<HttpConnectionManager>),
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
        name: "envoy.filters.network.rbac",
        type_url: "envoy.extensions.filters.network.rbac.v3.RBAC",
        parse: |v| path::from_value(v).map(NetworkFilterConfig::Rbac),
    },
    Extension {
        name: "envoy.filters.network.direct_response",
        type_url: "envoy.extensions.filters.network.direct_response.v3.Config",
        parse: |v| path::from_value(v).map(NetworkFilterConfig::DirectResponse),
    },
    Extension {
        name: "envoy.filters.network.http_connection_manager",
        type_url: "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        parse: |v| path::from_value(v).map(|h| NetworkFilterConfig::HttpConnectionManager(Box::new(h))),
    },
];

/// Configs of the HTTP filters legate implements (`envoy.filters.http.*`).
#[derive(Clone, Debug, PartialEq)]
pub enum HttpFilterConfig {
    Router(Router),
    HealthCheck(HealthCheck),
    LocalRateLimit(LocalRateLimit),
    Fault(HttpFault),
    Cors(Cors),
    Buffer(Buffer),
    Rbac(crate::filters::http::rbac::RbacFilter),
    ExtAuthz(Box<crate::filters::http::ext_authz::ExtAuthz>),
    Compressor(Box<crate::filters::http::compressor::Compressor>),
    Csrf(crate::filters::http::csrf::CsrfPolicy),
    /// `envoy.extensions.filters.http.grpc_web.v3.GrpcWeb` has no fields.
    GrpcWeb,
    Decompressor(Box<crate::filters::http::decompressor::Decompressor>),
}

impl HttpFilterConfig {
    /// Envoy's canonical name of the filter, for messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            HttpFilterConfig::Router(_) => "envoy.filters.http.router",
            HttpFilterConfig::HealthCheck(_) => "envoy.filters.http.health_check",
            HttpFilterConfig::LocalRateLimit(_) => "envoy.filters.http.local_ratelimit",
            HttpFilterConfig::Fault(_) => "envoy.filters.http.fault",
            HttpFilterConfig::Cors(_) => "envoy.filters.http.cors",
            HttpFilterConfig::Buffer(_) => "envoy.filters.http.buffer",
            HttpFilterConfig::Rbac(_) => "envoy.filters.http.rbac",
            HttpFilterConfig::ExtAuthz(_) => "envoy.filters.http.ext_authz",
            HttpFilterConfig::Compressor(_) => "envoy.filters.http.compressor",
            HttpFilterConfig::Csrf(_) => "envoy.filters.http.csrf",
            HttpFilterConfig::GrpcWeb => "envoy.filters.http.grpc_web",
            HttpFilterConfig::Decompressor(_) => "envoy.filters.http.decompressor",
        }
    }

    /// The router ends the chain; every other filter passes the request on.
    pub fn is_terminal(&self) -> bool {
        matches!(self, HttpFilterConfig::Router(_))
    }
}

pub static HTTP_FILTERS: &[Extension<HttpFilterConfig>] = &[
    Extension {
        name: "envoy.filters.http.router",
        type_url: "envoy.extensions.filters.http.router.v3.Router",
        parse: |v| path::from_value(v).map(HttpFilterConfig::Router),
    },
    Extension {
        name: "envoy.filters.http.health_check",
        type_url: "envoy.extensions.filters.http.health_check.v3.HealthCheck",
        parse: |v| path::from_value(v).map(HttpFilterConfig::HealthCheck),
    },
    Extension {
        name: "envoy.filters.http.local_ratelimit",
        type_url: "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        parse: |v| path::from_value(v).map(HttpFilterConfig::LocalRateLimit),
    },
    Extension {
        name: "envoy.filters.http.fault",
        type_url: "envoy.extensions.filters.http.fault.v3.HTTPFault",
        parse: |v| path::from_value(v).map(HttpFilterConfig::Fault),
    },
    Extension {
        name: "envoy.filters.http.cors",
        type_url: "envoy.extensions.filters.http.cors.v3.Cors",
        parse: |v| path::from_value(v).map(HttpFilterConfig::Cors),
    },
    Extension {
        name: "envoy.filters.http.buffer",
        type_url: "envoy.extensions.filters.http.buffer.v3.Buffer",
        parse: |v| path::from_value(v).map(HttpFilterConfig::Buffer),
    },
    Extension {
        name: "envoy.filters.http.rbac",
        type_url: "envoy.extensions.filters.http.rbac.v3.RBAC",
        parse: |v| path::from_value(v).map(HttpFilterConfig::Rbac),
    },
    Extension {
        name: "envoy.filters.http.ext_authz",
        type_url: "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
        parse: |v| path::from_value(v).map(|c| HttpFilterConfig::ExtAuthz(Box::new(c))),
    },
    Extension {
        name: "envoy.filters.http.compressor",
        type_url: "envoy.extensions.filters.http.compressor.v3.Compressor",
        parse: |v| path::from_value(v).map(|c| HttpFilterConfig::Compressor(Box::new(c))),
    },
    Extension {
        name: "envoy.filters.http.csrf",
        type_url: "envoy.extensions.filters.http.csrf.v3.CsrfPolicy",
        parse: |v| path::from_value(v).map(HttpFilterConfig::Csrf),
    },
    Extension {
        name: "envoy.filters.http.grpc_web",
        type_url: "envoy.extensions.filters.http.grpc_web.v3.GrpcWeb",
        parse: |v| path::from_value::<Empty>(v).map(|_| HttpFilterConfig::GrpcWeb),
    },
    Extension {
        name: "envoy.filters.http.decompressor",
        type_url: "envoy.extensions.filters.http.decompressor.v3.Decompressor",
        parse: |v| path::from_value(v).map(|c| HttpFilterConfig::Decompressor(Box::new(c))),
    },
];

/// Per-route configs of HTTP filters (`typed_per_filter_config` values on route
/// configurations, virtual hosts, routes and weighted clusters), keyed by filter name.
#[derive(Clone, Debug, PartialEq)]
pub enum FilterPerRouteConfig {
    Cors(CorsPolicy),
    Fault(HttpFault),
    LocalRateLimit(LocalRateLimit),
    Buffer(BufferPerRoute),
    Rbac(crate::filters::http::rbac::RbacPerRoute),
    ExtAuthz(crate::filters::http::ext_authz::ExtAuthzPerRoute),
    Compressor(crate::filters::http::compressor::CompressorPerRoute),
    Csrf(crate::filters::http::csrf::CsrfPolicy),
    /// `envoy.config.route.v3.FilterConfig` with `disabled: true`: the filter does not run for
    /// this route. (Conversely, a filter the connection manager declares `disabled` runs where
    /// a route gives it an entry that is not disabled.)
    Disabled,
}

pub static PER_ROUTE_FILTER_CONFIGS: &[Extension<FilterPerRouteConfig>] = &[
    Extension {
        name: "envoy.filters.http.cors",
        type_url: "envoy.extensions.filters.http.cors.v3.CorsPolicy",
        parse: |v| path::from_value(v).map(FilterPerRouteConfig::Cors),
    },
    Extension {
        name: "envoy.filters.http.fault",
        type_url: "envoy.extensions.filters.http.fault.v3.HTTPFault",
        parse: |v| path::from_value(v).map(FilterPerRouteConfig::Fault),
    },
    Extension {
        name: "envoy.filters.http.local_ratelimit",
        type_url: "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        parse: |v| path::from_value(v).map(FilterPerRouteConfig::LocalRateLimit),
    },
    Extension {
        name: "envoy.filters.http.buffer",
        type_url: "envoy.extensions.filters.http.buffer.v3.BufferPerRoute",
        parse: |v| path::from_value(v).map(FilterPerRouteConfig::Buffer),
    },
    Extension {
        name: "envoy.filters.http.rbac",
        type_url: "envoy.extensions.filters.http.rbac.v3.RBACPerRoute",
        parse: |v| path::from_value(v).map(FilterPerRouteConfig::Rbac),
    },
    Extension {
        name: "envoy.filters.http.ext_authz",
        type_url: "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
        parse: |v| path::from_value(v).map(FilterPerRouteConfig::ExtAuthz),
    },
    Extension {
        name: "envoy.filters.http.compressor",
        type_url: "envoy.extensions.filters.http.compressor.v3.CompressorPerRoute",
        parse: |v| path::from_value(v).map(FilterPerRouteConfig::Compressor),
    },
    Extension {
        name: "envoy.filters.http.csrf",
        type_url: "envoy.extensions.filters.http.csrf.v3.CsrfPolicy",
        parse: |v| path::from_value(v).map(FilterPerRouteConfig::Csrf),
    },
];

/// Retry host predicates (`RetryPolicy.retry_host_predicate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryHostPredicateConfig {
    /// Retries avoid hosts already tried for this request.
    PreviousHosts,
}

pub static RETRY_HOST_PREDICATES: &[Extension<RetryHostPredicateConfig>] = &[Extension {
    name: "envoy.retry_host_predicates.previous_hosts",
    type_url: "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate",
    parse: |v| path::from_value::<Empty>(v).map(|_| RetryHostPredicateConfig::PreviousHosts),
}];

/// Access loggers (`envoy.access_loggers.*`).
#[derive(Clone, Debug, PartialEq)]
pub enum AccessLoggerConfig {
    File(FileAccessLog),
    Stdout(StdoutAccessLog),
    Stderr(StderrAccessLog),
}

pub static ACCESS_LOGGERS: &[Extension<AccessLoggerConfig>] = &[
    Extension {
        name: "envoy.access_loggers.file",
        type_url: "envoy.extensions.access_loggers.file.v3.FileAccessLog",
        parse: |v| path::from_value(v).map(AccessLoggerConfig::File),
    },
    Extension {
        name: "envoy.access_loggers.stdout",
        type_url: "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
        parse: |v| path::from_value(v).map(AccessLoggerConfig::Stdout),
    },
    Extension {
        name: "envoy.access_loggers.stderr",
        type_url: "envoy.extensions.access_loggers.stream.v3.StderrAccessLog",
        parse: |v| path::from_value(v).map(AccessLoggerConfig::Stderr),
    },
];

/// Tracers legate implements (`envoy.tracers.*`).
#[derive(Clone, Debug, PartialEq)]
pub enum TracerConfig {
    Zipkin(crate::trace::ZipkinConfig),
    OpenTelemetry(crate::trace::OpenTelemetryConfig),
}

pub static TRACERS: &[Extension<TracerConfig>] = &[
    Extension {
        name: "envoy.tracers.zipkin",
        type_url: "envoy.config.trace.v3.ZipkinConfig",
        parse: |v| path::from_value(v).map(TracerConfig::Zipkin),
    },
    Extension {
        name: "envoy.tracers.opentelemetry",
        type_url: "envoy.config.trace.v3.OpenTelemetryConfig",
        parse: |v| path::from_value(v).map(TracerConfig::OpenTelemetry),
    },
];

/// Compression libraries (`envoy.compression.*.compressor`).
#[derive(Clone, Debug, PartialEq)]
pub enum CompressorConfig {
    Gzip(crate::filters::http::compressor::Gzip),
    Brotli(crate::filters::http::compressor::Brotli),
    Zstd(crate::filters::http::compressor::Zstd),
}

pub static COMPRESSORS: &[Extension<CompressorConfig>] = &[
    Extension {
        name: "envoy.compression.gzip.compressor",
        type_url: "envoy.extensions.compression.gzip.compressor.v3.Gzip",
        parse: |v| path::from_value(v).map(CompressorConfig::Gzip),
    },
    Extension {
        name: "envoy.compression.brotli.compressor",
        type_url: "envoy.extensions.compression.brotli.compressor.v3.Brotli",
        parse: |v| path::from_value(v).map(CompressorConfig::Brotli),
    },
    Extension {
        name: "envoy.compression.zstd.compressor",
        type_url: "envoy.extensions.compression.zstd.compressor.v3.Zstd",
        parse: |v| path::from_value(v).map(CompressorConfig::Zstd),
    },
];

/// Decompression libraries (`envoy.compression.*.decompressor`).
#[derive(Clone, Debug, PartialEq)]
pub enum DecompressorConfig {
    Gzip(crate::filters::http::decompressor::GzipDecompressor),
    Brotli(crate::filters::http::decompressor::BrotliDecompressor),
    Zstd(crate::filters::http::decompressor::ZstdDecompressor),
}

pub static DECOMPRESSORS: &[Extension<DecompressorConfig>] = &[
    Extension {
        name: "envoy.compression.gzip.decompressor",
        type_url: "envoy.extensions.compression.gzip.decompressor.v3.Gzip",
        parse: |v| path::from_value(v).map(DecompressorConfig::Gzip),
    },
    Extension {
        name: "envoy.compression.brotli.decompressor",
        type_url: "envoy.extensions.compression.brotli.decompressor.v3.Brotli",
        parse: |v| path::from_value(v).map(DecompressorConfig::Brotli),
    },
    Extension {
        name: "envoy.compression.zstd.decompressor",
        type_url: "envoy.extensions.compression.zstd.decompressor.v3.Zstd",
        parse: |v| path::from_value(v).map(DecompressorConfig::Zstd),
    },
];

/// Values of a cluster's `typed_extension_protocol_options`.
#[derive(Clone, Debug, PartialEq)]
pub enum ProtocolOptionsConfig {
    Http(crate::upstreams_http::HttpProtocolOptions),
}

pub static PROTOCOL_OPTIONS: &[Extension<ProtocolOptionsConfig>] = &[Extension {
    name: "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    type_url: "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    parse: |v| path::from_value(v).map(ProtocolOptionsConfig::Http),
}];

/// Configs of the listener filters legate implements (`envoy.filters.listener.*`).
#[derive(Clone, Debug, PartialEq)]
pub enum ListenerFilterConfig {
    TlsInspector(crate::filters::listener::tls_inspector::TlsInspector),
    HttpInspector(crate::filters::listener::http_inspector::HttpInspector),
    ProxyProtocol(crate::filters::listener::proxy_protocol::ProxyProtocol),
}

pub static LISTENER_FILTERS: &[Extension<ListenerFilterConfig>] = &[
    Extension {
        name: "envoy.filters.listener.tls_inspector",
        type_url: "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
        parse: |v| path::from_value(v).map(ListenerFilterConfig::TlsInspector),
    },
    Extension {
        name: "envoy.filters.listener.http_inspector",
        type_url: "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector",
        parse: |v| path::from_value(v).map(ListenerFilterConfig::HttpInspector),
    },
    Extension {
        name: "envoy.filters.listener.proxy_protocol",
        type_url: "envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol",
        parse: |v| path::from_value(v).map(ListenerFilterConfig::ProxyProtocol),
    },
];

/// Transport sockets (`envoy.transport_sockets.*`).
#[derive(Clone, Debug, PartialEq)]
pub enum TransportSocketConfig {
    /// Plain TCP, Envoy's default.
    RawBuffer,
    /// `envoy.transport_sockets.tls` on a filter chain.
    DownstreamTls(Box<crate::tls::DownstreamTlsContext>),
    /// `envoy.transport_sockets.tls` on a cluster.
    UpstreamTls(Box<crate::tls::UpstreamTlsContext>),
}

/// `envoy.transport_sockets.tls` names two messages; the `@type` says which. Without a
/// typed_config there is nothing to terminate TLS with, so the name alone is refused.
pub static TRANSPORT_SOCKETS: &[Extension<TransportSocketConfig>] = &[
    Extension {
        name: "envoy.transport_sockets.raw_buffer",
        type_url: "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer",
        parse: |v| path::from_value::<Empty>(v).map(|_| TransportSocketConfig::RawBuffer),
    },
    Extension {
        name: "envoy.transport_sockets.tls",
        type_url: "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        parse: |v| path::from_value(v).map(|c| TransportSocketConfig::DownstreamTls(Box::new(c))),
    },
    Extension {
        name: "envoy.transport_sockets.tls",
        type_url: "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        parse: |v| path::from_value(v).map(|c| TransportSocketConfig::UpstreamTls(Box::new(c))),
    },
];

/// A config message with no fields (`RawBuffer`, `Echo`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// Deserializes an `envoy.config.core.v3.TypedExtensionConfig` (`{name, typed_config}`) and
/// resolves it through `registry`: the extension's name and its config.
pub fn deserialize_typed<'de, D: Deserializer<'de>, T>(
    d: D,
    registry: &[Extension<T>],
    kind: &str,
) -> Result<(String, T), D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct TypedExtensionConfig {
        #[serde(default)]
        name: String,
        typed_config: Option<Value>,
    }
    let raw = TypedExtensionConfig::deserialize(d)?;
    let config = resolve(registry, kind, &raw.name, raw.typed_config).map_err(|e| path::nest::<D::Error>("", e))?;
    Ok((raw.name, config))
}

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

/// The message type an `Any` carries (`@type` without its `type.googleapis.com/` prefix), looking
/// through `TypedStruct` wrappers.
fn any_message_type(value: &Value) -> Option<&str> {
    let url = value.get("@type")?.as_str()?;
    let message_type = url.rsplit('/').next().unwrap_or(url);
    if message_type == "udpa.type.v1.TypedStruct" || message_type == "xds.type.v3.TypedStruct" {
        let inner = value.get("type_url")?.as_str()?;
        return Some(inner.rsplit('/').next().unwrap_or(inner));
    }
    Some(message_type)
}

/// Whether `registry` has the extension a `{name, typed_config}` pair asks for.
pub(crate) fn is_registered<T>(registry: &[Extension<T>], name: &str, typed_config: Option<&Value>) -> bool {
    match typed_config {
        Some(any) => any_message_type(any).is_some_and(|t| registry.iter().any(|e| e.type_url == t)),
        None => registry.iter().any(|e| e.name == name),
    }
}

/// Resolves a bare `Any` (a map value of `typed_per_filter_config` or
/// `typed_extension_protocol_options`); errors carry a path relative to the `Any`.
fn resolve_any<T>(registry: &[Extension<T>], kind: &str, name: &str, any: Value) -> Result<T, PathError> {
    resolve(registry, kind, name, Some(any)).map_err(|e| {
        let path = match e.path.strip_prefix("typed_config") {
            Some(rest) => rest.strip_prefix('.').unwrap_or(rest).to_string(),
            None => e.path,
        };
        PathError { path, message: e.message }
    })
}

/// One `typed_per_filter_config` entry; `None` for an optional filter legate does not have,
/// which Envoy skips too.
fn per_filter_config(name: &str, any: Value) -> Result<Option<FilterPerRouteConfig>, PathError> {
    const KIND: &str = "per-route filter config";
    if any_message_type(&any) != Some("envoy.config.route.v3.FilterConfig") {
        return resolve_any(PER_ROUTE_FILTER_CONFIGS, KIND, name, any).map(Some);
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct FilterConfig {
        #[serde(rename = "@type")]
        _type: String,
        config: Option<Value>,
        #[serde(default)]
        is_optional: bool,
        #[serde(default)]
        disabled: bool,
    }
    let wrapper: FilterConfig = path::from_value(any)?;
    if wrapper.disabled {
        // Envoy ignores `config` of a disabled filter.
        return Ok(Some(FilterPerRouteConfig::Disabled));
    }
    let Some(config) = wrapper.config else {
        return Err(PathError { path: "config".into(), message: "value is required unless disabled is true".into() });
    };
    if wrapper.is_optional && !is_registered(PER_ROUTE_FILTER_CONFIGS, name, Some(&config)) {
        return Ok(None);
    }
    resolve_any(PER_ROUTE_FILTER_CONFIGS, KIND, name, config)
        .map(Some)
        .map_err(|e| PathError { path: path::join("config", &e.path), message: e.message })
}

/// `deserialize_with` for `typed_per_filter_config` maps. Entries for optional filters legate
/// does not implement are left out, as Envoy ignores them; an optional filter declared only in
/// the connection manager's `http_filters` does not make its per-route config optional here
/// (the route table is read before the filter list is known), so such entries are refused.
pub(crate) fn deserialize_per_filter_configs<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, FilterPerRouteConfig>, D::Error> {
    let raw = BTreeMap::<String, Value>::deserialize(d)?;
    let mut configs = BTreeMap::new();
    for (name, any) in raw {
        match per_filter_config(&name, any) {
            Ok(Some(config)) => {
                configs.insert(name, config);
            }
            Ok(None) => {}
            Err(e) => return Err(path::nest(&name, e)),
        }
    }
    Ok(configs)
}

/// Checks per-route filter configs under `at` (`...typed_per_filter_config`).
pub(crate) fn validate_per_filter_configs(
    at: &str,
    configs: &BTreeMap<String, FilterPerRouteConfig>,
    v: &mut Validator,
) {
    for (name, config) in configs {
        let c_at = format!("{at}.{name}");
        match config {
            FilterPerRouteConfig::Cors(policy) => policy.validate(&c_at, v),
            FilterPerRouteConfig::Fault(fault) => fault.validate(&c_at, v),
            FilterPerRouteConfig::LocalRateLimit(limit) => {
                limit.validate(&c_at, v);
                if limit.token_bucket.is_none() {
                    v.error(&format!("{c_at}.token_bucket"), "a per-route local rate limit requires a token_bucket");
                }
            }
            FilterPerRouteConfig::Buffer(buffer) => buffer.validate(&c_at, v),
            FilterPerRouteConfig::Rbac(rbac) => rbac.validate(&c_at, v),
            FilterPerRouteConfig::ExtAuthz(authz) => authz.validate(&c_at, v),
            FilterPerRouteConfig::Compressor(c) => c.validate(&c_at, v),
            FilterPerRouteConfig::Csrf(c) => c.validate(&c_at, v),
            FilterPerRouteConfig::Disabled => {}
        }
    }
}

/// `deserialize_with` for a cluster's `typed_extension_protocol_options`.
pub(crate) fn deserialize_protocol_options<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, ProtocolOptionsConfig>, D::Error> {
    let raw = BTreeMap::<String, Value>::deserialize(d)?;
    let mut options = BTreeMap::new();
    for (name, any) in raw {
        let config = resolve_any(PROTOCOL_OPTIONS, "protocol options", &name, any).map_err(|e| path::nest(&name, e))?;
        options.insert(name, config);
    }
    Ok(options)
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
    fn registration_looks_through_typed_struct() {
        let wrapped = json!({"@type": "type.googleapis.com/xds.type.v3.TypedStruct",
                             "type_url": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"});
        assert!(is_registered(HTTP_FILTERS, "x", Some(&wrapped)));
        assert!(is_registered(HTTP_FILTERS, "envoy.filters.http.router", None));
        assert!(!is_registered(HTTP_FILTERS, "envoy.filters.http.lua", None));
    }

    #[test]
    fn unknown_type_url_names_the_field() {
        let v = json!({"@type": "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy"});
        let err = resolve(NETWORK_FILTERS, "network filter", "envoy.filters.network.redis_proxy", Some(v)).unwrap_err();
        assert_eq!(err.path, "typed_config");
        assert!(err.message.contains("RedisProxy"), "{}", err.message);
    }
}
