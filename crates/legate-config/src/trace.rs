//! Tracing: the tracer a connection manager reports its spans to (`envoy.config.trace.v3`) and
//! the tags it adds to them (`envoy.type.tracing.v3.CustomTag`).

use serde::de::Deserializer;
use serde::Deserialize;

use crate::extensions::{deserialize_typed, TRACERS};
use crate::unsupported::Unsupported;
use crate::validate::Validator;

pub use crate::extensions::TracerConfig;

/// `envoy.config.trace.v3.Tracing`, the bootstrap's `tracing`: the tracer of connection
/// managers whose own `tracing` names no `provider`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    pub http: Option<TracingProvider>,
}

/// `envoy.config.trace.v3.Tracing.Http`: a tracer by its extension name and config.
#[derive(Clone, Debug, PartialEq)]
pub struct TracingProvider {
    pub name: String,
    pub config: TracerConfig,
}

impl<'de> Deserialize<'de> for TracingProvider {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (name, config) = deserialize_typed(d, TRACERS, "tracer")?;
        Ok(TracingProvider { name, config })
    }
}

impl TracingProvider {
    pub(crate) fn validate(&self, at: &str, v: &mut Validator, clusters: &std::collections::HashSet<&str>) {
        match &self.config {
            TracerConfig::Zipkin(zipkin) => zipkin.validate(&format!("{at}.typed_config"), v, clusters),
            TracerConfig::OpenTelemetry(otel) => otel.validate(&format!("{at}.typed_config"), v, clusters),
        }
    }
}

/// `envoy.config.trace.v3.OpenTelemetryConfig` (`envoy.tracers.opentelemetry`): spans exported
/// over OTLP/gRPC to a cluster.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OpenTelemetryConfig {
    /// The collector (`envoy_grpc`); without it spans are made and not exported, as Envoy.
    pub grpc_service: Option<crate::config_source::GrpcService>,
    /// The resource's `service.name` (default `unknown_service:envoy`).
    #[serde(default)]
    pub service_name: String,
    pub http_service: Option<Unsupported>,
    pub resource_detectors: Option<Unsupported>,
    pub sampler: Option<Unsupported>,
    pub max_cache_size: Option<Unsupported>,
}

impl OpenTelemetryConfig {
    pub const DEFAULT_SERVICE_NAME: &'static str = "unknown_service:envoy";

    pub fn service_name(&self) -> &str {
        if self.service_name.is_empty() {
            Self::DEFAULT_SERVICE_NAME
        } else {
            &self.service_name
        }
    }

    fn validate(&self, at: &str, v: &mut Validator, clusters: &std::collections::HashSet<&str>) {
        let Some(grpc) = &self.grpc_service else { return };
        let Some(envoy_grpc) = &grpc.envoy_grpc else {
            v.error(&format!("{at}.grpc_service"), "an envoy_grpc service is required (google_grpc is not supported)");
            return;
        };
        let cluster = envoy_grpc.cluster_name.as_str();
        v.non_empty(&format!("{at}.grpc_service.envoy_grpc.cluster_name"), cluster);
        if !cluster.is_empty() && !v.late_clusters && !clusters.contains(cluster) {
            v.error(
                &format!("{at}.grpc_service.envoy_grpc.cluster_name"),
                format!("Unknown gRPC client cluster '{cluster}'"),
            );
        }
    }
}

/// `envoy.config.trace.v3.ZipkinConfig` (`envoy.tracers.zipkin`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ZipkinConfig {
    /// The cluster of the Zipkin collectors.
    #[serde(default)]
    pub collector_cluster: String,
    /// The path spans are posted to, e.g. `/api/v2/spans`.
    #[serde(default)]
    pub collector_endpoint: String,
    /// 128-bit trace ids for traces legate starts (64-bit by default).
    #[serde(default)]
    pub trace_id_128bit: bool,
    /// Whether a server span shares the id of the client span it continues (default true).
    pub shared_span_context: Option<bool>,
    #[serde(default)]
    pub collector_endpoint_version: CollectorEndpointVersion,
    /// The `host` of the reports (default: the collector cluster's name).
    #[serde(default)]
    pub collector_hostname: String,
    /// Whether a request's upstream part is a span of its own (a CLIENT span under the
    /// SERVER one) rather than the SERVER span's context passed on.
    #[serde(default)]
    pub split_spans_for_request: bool,
    pub trace_context_option: Option<Unsupported>,
    pub collector_service: Option<Unsupported>,
}

/// `ZipkinConfig.CollectorEndpointVersion`. Envoy refuses the unset value (Zipkin's v1 API).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum CollectorEndpointVersion {
    #[default]
    #[serde(rename = "DEPRECATED_AND_UNAVAILABLE_DO_NOT_USE")]
    Unset,
    #[serde(rename = "HTTP_JSON")]
    HttpJson,
    #[serde(rename = "HTTP_PROTO")]
    HttpProto,
    #[serde(rename = "GRPC")]
    Grpc,
}

impl ZipkinConfig {
    /// Whether a server span shares the id of the client span it continues (default true).
    pub fn shared_span_context(&self) -> bool {
        self.shared_span_context.unwrap_or(true)
    }

    /// The `host` the reports carry.
    pub fn collector_hostname(&self) -> &str {
        if self.collector_hostname.is_empty() {
            &self.collector_cluster
        } else {
            &self.collector_hostname
        }
    }

    fn validate(&self, at: &str, v: &mut Validator, clusters: &std::collections::HashSet<&str>) {
        v.non_empty(&format!("{at}.collector_cluster"), &self.collector_cluster);
        v.non_empty(&format!("{at}.collector_endpoint"), &self.collector_endpoint);
        if !self.collector_cluster.is_empty() && !v.late_clusters && !clusters.contains(self.collector_cluster.as_str())
        {
            v.error(
                &format!("{at}.collector_cluster"),
                format!("envoy.tracers.zipkin: unknown cluster '{}'", self.collector_cluster),
            );
        }
        if self.collector_endpoint_version == CollectorEndpointVersion::Unset {
            v.error(
                &format!("{at}.collector_endpoint_version"),
                "hidden_envoy_deprecated_HTTP_JSON_V1 has been deprecated. Please use a non-default \
                 envoy::config::trace::v3::ZipkinConfig::CollectorEndpointVersion value.",
            );
        }
        if self.split_spans_for_request {
            v.error(
                &format!("{at}.split_spans_for_request"),
                "legate does not split a request's spans yet (one span per request, its context passed upstream)",
            );
        }
        if matches!(
            self.collector_endpoint_version,
            CollectorEndpointVersion::HttpProto | CollectorEndpointVersion::Grpc
        ) {
            v.error(
                &format!("{at}.collector_endpoint_version"),
                "legate reports spans as JSON (HTTP_JSON) only; HTTP_PROTO and GRPC are not supported yet",
            );
        }
    }
}

/// `envoy.type.tracing.v3.CustomTag`: a tag every span of the connection manager (or route)
/// carries, with its value from one source.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CustomTag {
    #[serde(default)]
    pub tag: String,
    pub literal: Option<LiteralTag>,
    pub environment: Option<EnvironmentTag>,
    pub request_header: Option<HeaderTag>,
    pub metadata: Option<Unsupported>,
    pub value: Option<Unsupported>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LiteralTag {
    #[serde(default)]
    pub value: String,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentTag {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub default_value: String,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderTag {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub default_value: String,
}

impl CustomTag {
    pub(crate) fn validate(&self, at: &str, v: &mut Validator) {
        v.non_empty(&format!("{at}.tag"), &self.tag);
        v.oneof(
            at,
            &[
                ("literal", self.literal.is_some()),
                ("environment", self.environment.is_some()),
                ("request_header", self.request_header.is_some()),
                ("metadata", false),
                ("value", false),
            ],
            true,
        );
        if let Some(e) = &self.environment {
            v.non_empty(&format!("{at}.environment.name"), &e.name);
        }
        if let Some(h) = &self.request_header {
            v.non_empty(&format!("{at}.request_header.name"), &h.name);
        }
    }
}
