//! `envoy.config.core.v3.ConfigSource` and the bootstrap's `dynamic_resources`: where
//! listeners, routes, clusters, endpoints and secrets come from when they are not static.

use serde::Deserialize;

use crate::core::HeaderValue;
use crate::duration::Duration;
use crate::unsupported::Unsupported;

/// `envoy.config.bootstrap.v3.Bootstrap.DynamicResources`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DynamicResources {
    /// Listeners (LDS), subscribed by wildcard.
    pub lds_config: Option<ConfigSource>,
    pub lds_resources_locator: Option<Unsupported>,
    /// Clusters (CDS), subscribed by wildcard.
    pub cds_config: Option<ConfigSource>,
    pub cds_resources_locator: Option<Unsupported>,
    /// The one aggregated stream that every `ads: {}` config source shares.
    pub ads_config: Option<ApiConfigSource>,
}

/// `envoy.config.core.v3.ConfigSource`: exactly one of `path`/`path_config_source`,
/// `api_config_source` and `ads`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigSource {
    /// Deprecated form of `path_config_source.path`.
    pub path: Option<String>,
    pub path_config_source: Option<PathConfigSource>,
    /// Boxed: most sources are files or `ads` (an EDS cluster's source, 10,000 times over,
    /// would carry its ~150 bytes inline).
    pub api_config_source: Option<Box<ApiConfigSource>>,
    /// Use the bootstrap's `dynamic_resources.ads_config` stream.
    pub ads: Option<AggregatedConfigSource>,
    pub self_config_source: Option<Unsupported>,
    pub authorities: Option<Unsupported>,
    /// How long a subscription waits for its first update before the resource it holds back
    /// (a warming cluster, a listener waiting for routes) goes on without it. Default 15 s;
    /// 0 waits forever.
    pub initial_fetch_timeout: Option<Duration>,
    /// Only `V3` exists.
    #[serde(default)]
    pub resource_api_version: ApiVersion,
}

/// `envoy.config.core.v3.ApiVersion`: legate speaks v3 only, as every current Envoy.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum ApiVersion {
    #[default]
    #[serde(rename = "AUTO")]
    Auto,
    #[serde(rename = "V3")]
    V3,
}

/// Which of the three sources a [`ConfigSource`] names.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ConfigSourceKind<'a> {
    Path(&'a str),
    Api(&'a ApiConfigSource),
    Ads,
}

impl ConfigSource {
    /// The source, or `None` when none is set (a validation error where one is required).
    pub fn kind(&self) -> Option<ConfigSourceKind<'_>> {
        if let Some(path) = self.path_config_source.as_ref().map(|p| p.path.as_str()).or(self.path.as_deref()) {
            return Some(ConfigSourceKind::Path(path));
        }
        if let Some(api) = &self.api_config_source {
            return Some(ConfigSourceKind::Api(api));
        }
        self.ads.as_ref().map(|_| ConfigSourceKind::Ads)
    }

    /// The file of a filesystem source (SDS files, `path_config_source`).
    pub fn file(&self) -> Option<&str> {
        match self.kind()? {
            ConfigSourceKind::Path(path) => Some(path),
            _ => None,
        }
    }

    /// `initial_fetch_timeout`: 15 s by default, `None` when 0 (wait forever).
    pub fn initial_fetch_timeout(&self) -> Option<std::time::Duration> {
        let timeout = self.initial_fetch_timeout.map(|d| d.0).unwrap_or(std::time::Duration::from_secs(15));
        (!timeout.is_zero()).then_some(timeout)
    }
}

/// `envoy.config.core.v3.AggregatedConfigSource` (no fields).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AggregatedConfigSource {}

/// `envoy.config.core.v3.PathConfigSource`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PathConfigSource {
    pub path: String,
    /// The directory whose changes trigger a re-read (Kubernetes ConfigMaps swap a symlink in
    /// it); legate re-reads on a change of either.
    pub watched_directory: Option<WatchedDirectory>,
}

/// `envoy.config.core.v3.WatchedDirectory`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WatchedDirectory {
    pub path: String,
}

/// `envoy.config.core.v3.ApiConfigSource`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiConfigSource {
    pub api_type: ApiType,
    #[serde(default)]
    pub transport_api_version: ApiVersion,
    /// `REST`: the static clusters serving `/v3/discovery:<type>`.
    #[serde(default)]
    pub cluster_names: Vec<String>,
    /// gRPC: the control plane (only the first is used, as Envoy).
    #[serde(default)]
    pub grpc_services: Vec<GrpcService>,
    /// `REST`: the polling interval (default 1 s).
    pub refresh_delay: Option<Duration>,
    /// `REST`: the timeout of each poll (default 1 s).
    pub request_timeout: Option<Duration>,
    /// Envoy's token bucket on the requests legate sends (`max_tokens`, `fill_rate`).
    pub rate_limit_settings: Option<serde_json::Value>,
    /// Send `node` only on the first request of each stream.
    #[serde(default)]
    pub set_node_on_first_message_only: bool,
    pub config_validators: Option<Unsupported>,
}

impl ApiConfigSource {
    pub fn refresh_delay(&self) -> std::time::Duration {
        self.refresh_delay.map(|d| d.0).unwrap_or(std::time::Duration::from_secs(1))
    }

    pub fn request_timeout(&self) -> std::time::Duration {
        self.request_timeout.map(|d| d.0).unwrap_or(std::time::Duration::from_secs(1))
    }

    /// The cluster of the control plane: `grpc_services[0].envoy_grpc.cluster_name` for gRPC,
    /// `cluster_names[0]` for REST.
    pub fn cluster_name(&self) -> Option<&str> {
        match self.api_type {
            ApiType::Rest => self.cluster_names.first().map(String::as_str),
            _ => self.grpc_services.first().and_then(|g| g.envoy_grpc.as_ref()).map(|e| e.cluster_name.as_str()),
        }
    }

    /// Whether the stream carries incremental (delta) xDS.
    pub fn is_delta(&self) -> bool {
        matches!(self.api_type, ApiType::DeltaGrpc | ApiType::AggregatedDeltaGrpc)
    }
}

/// `ApiConfigSource.ApiType`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum ApiType {
    /// JSON over HTTP POST, polled every `refresh_delay`.
    #[serde(rename = "REST")]
    Rest,
    /// State-of-the-world over a gRPC stream.
    #[default]
    #[serde(rename = "GRPC")]
    Grpc,
    /// Incremental xDS over a gRPC stream.
    #[serde(rename = "DELTA_GRPC")]
    DeltaGrpc,
    /// Only valid in `ads_config`: state-of-the-world ADS.
    #[serde(rename = "AGGREGATED_GRPC")]
    AggregatedGrpc,
    /// Only valid in `ads_config`: incremental ADS.
    #[serde(rename = "AGGREGATED_DELTA_GRPC")]
    AggregatedDeltaGrpc,
}

/// `envoy.config.core.v3.GrpcService`: legate's own gRPC client (`envoy_grpc`) only.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GrpcService {
    pub envoy_grpc: Option<EnvoyGrpc>,
    pub google_grpc: Option<Unsupported>,
    /// The deadline of a unary call; streams have none.
    pub timeout: Option<Duration>,
    /// Headers added to every call.
    #[serde(default)]
    pub initial_metadata: Vec<HeaderValue>,
    pub retry_policy: Option<Unsupported>,
}

/// `GrpcService.EnvoyGrpc`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EnvoyGrpc {
    pub cluster_name: String,
    /// `:authority` of the calls; the cluster name by default.
    #[serde(default)]
    pub authority: String,
    pub retry_policy: Option<Unsupported>,
    pub max_receive_message_length: Option<u32>,
    pub skip_envoy_headers: Option<bool>,
}
