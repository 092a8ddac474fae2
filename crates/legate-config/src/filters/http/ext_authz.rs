//! `envoy.extensions.filters.http.ext_authz.v3` (`envoy.filters.http.ext_authz`): each request
//! is checked with an authorization service (gRPC `Authorization/Check`, or plain HTTP) before
//! it goes on.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config_source::GrpcService;
use crate::core::{HeaderValue, RuntimeFractionalPercent};
use crate::duration::Duration;
use crate::matcher::StringMatcher;
use crate::unsupported::Unsupported;
use crate::validate::Validator;

/// `ExtAuthz`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExtAuthz {
    pub grpc_service: Option<GrpcService>,
    pub http_service: Option<HttpService>,
    /// Only V3 exists now; AUTO means it.
    pub transport_api_version: Option<ApiVersion>,
    /// An unreachable or failing service lets the request through (default: `status_on_error`).
    #[serde(default)]
    pub failure_mode_allow: bool,
    /// Such a request carries `x-envoy-auth-failure-mode-allowed: true`.
    #[serde(default)]
    pub failure_mode_allow_header_add: bool,
    pub with_request_body: Option<Unsupported>,
    #[serde(default)]
    pub clear_route_cache: bool,
    /// The answer when the service cannot decide (default 403).
    pub status_on_error: Option<HttpStatus>,
    /// Dynamic metadata namespaces sent along; legate keeps no dynamic metadata, so there is
    /// never any to send.
    #[serde(default)]
    pub metadata_context_namespaces: Vec<String>,
    pub filter_enabled: Option<RuntimeFractionalPercent>,
    pub filter_enabled_metadata: Option<Unsupported>,
    pub deny_at_disable: Option<Unsupported>,
    #[serde(default)]
    pub include_peer_certificate: bool,
    /// Between `ext_authz.` and the stats' names.
    #[serde(default)]
    pub stat_prefix: String,
    pub bootstrap_metadata_labels_key: Option<Unsupported>,
    pub typed_metadata_context_namespaces: Option<Unsupported>,
    /// The request headers sent to the service (gRPC: all when unset; HTTP: these besides
    /// `authorization`, `:method`, `:path` and `:authority`).
    pub allowed_headers: Option<ListStringMatcher>,
    pub disallowed_headers: Option<ListStringMatcher>,
    pub include_tls_session: Option<Unsupported>,
    pub charge_cluster_response_stats: Option<bool>,
    pub route_metadata_context_namespaces: Option<Unsupported>,
    pub route_typed_metadata_context_namespaces: Option<Unsupported>,
    #[serde(default)]
    pub encode_raw_headers: bool,
    #[serde(default)]
    pub validate_mutations: bool,
    pub decoder_header_mutation_rules: Option<Unsupported>,
    pub enable_dynamic_metadata_ingestion: Option<bool>,
    pub filter_metadata: Option<Unsupported>,
    #[serde(default)]
    pub emit_filter_state_stats: bool,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum ApiVersion {
    #[default]
    #[serde(rename = "AUTO")]
    Auto,
    #[serde(rename = "V2")]
    V2,
    #[serde(rename = "V3")]
    V3,
}

/// `envoy.type.v3.HttpStatus`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpStatus {
    #[serde(default)]
    pub code: u32,
}

/// `envoy.type.matcher.v3.ListStringMatcher`: any of the patterns.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListStringMatcher {
    #[serde(default)]
    pub patterns: Vec<StringMatcher>,
}

impl ListStringMatcher {
    pub fn matches(&self, s: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(s))
    }
}

/// `HttpService`: the service as a plain HTTP server.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpService {
    pub server_uri: Option<HttpUri>,
    /// Prepended to the request's path.
    #[serde(default)]
    pub path_prefix: String,
    pub authorization_request: Option<AuthorizationRequest>,
    pub authorization_response: Option<AuthorizationResponse>,
    pub retry_policy: Option<Unsupported>,
}

/// `envoy.config.core.v3.HttpUri`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpUri {
    #[serde(default)]
    pub uri: String,
    #[serde(default)]
    pub cluster: String,
    /// Required.
    pub timeout: Option<Duration>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationRequest {
    /// Deprecated for the filter's `allowed_headers`.
    pub allowed_headers: Option<ListStringMatcher>,
    #[serde(default)]
    pub headers_to_add: Vec<HeaderValue>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationResponse {
    /// The service's headers set on the request when it allows it.
    pub allowed_upstream_headers: Option<ListStringMatcher>,
    /// The service's headers appended to the request when it allows it.
    pub allowed_upstream_headers_to_append: Option<ListStringMatcher>,
    /// The service's headers in the refusal (all when unset).
    pub allowed_client_headers: Option<ListStringMatcher>,
    /// The service's headers added to the response when it allows the request.
    pub allowed_client_headers_on_success: Option<ListStringMatcher>,
    pub dynamic_metadata_from_headers: Option<Unsupported>,
}

/// `ExtAuthzPerRoute`: off for the route, or settings of its own.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExtAuthzPerRoute {
    pub disabled: Option<bool>,
    pub check_settings: Option<CheckSettings>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CheckSettings {
    /// Sent to a gRPC service as the check's `context_extensions`.
    #[serde(default)]
    pub context_extensions: BTreeMap<String, String>,
    #[serde(default)]
    pub disable_request_body_buffering: bool,
    pub with_request_body: Option<Unsupported>,
    pub grpc_service: Option<Unsupported>,
    pub http_service: Option<Unsupported>,
}

impl ExtAuthz {
    pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(200);

    pub(crate) fn validate(&self, at: &str, v: &mut Validator, clusters: &std::collections::HashSet<&str>) {
        v.oneof(
            at,
            &[("grpc_service", self.grpc_service.is_some()), ("http_service", self.http_service.is_some())],
            true,
        );
        let mut cluster = None;
        if let Some(grpc) = &self.grpc_service {
            match &grpc.envoy_grpc {
                Some(e) => {
                    cluster = Some((format!("{at}.grpc_service.envoy_grpc.cluster_name"), e.cluster_name.as_str()))
                }
                None => v.error(
                    &format!("{at}.grpc_service"),
                    "an envoy_grpc service is required (google_grpc is not supported)",
                ),
            }
        }
        if let Some(http) = &self.http_service {
            match &http.server_uri {
                Some(uri) => {
                    v.non_empty(&format!("{at}.http_service.server_uri.uri"), &uri.uri);
                    cluster = Some((format!("{at}.http_service.server_uri.cluster"), uri.cluster.as_str()));
                    if uri.timeout.is_none() {
                        v.error(&format!("{at}.http_service.server_uri.timeout"), "value is required");
                    }
                }
                None => v.error(&format!("{at}.http_service.server_uri"), "value is required"),
            }
            if self.allowed_headers.is_some()
                && http.authorization_request.as_ref().is_some_and(|r| r.allowed_headers.is_some())
            {
                v.error(&format!("{at}.allowed_headers"), "Invalid duplicate configuration for allowed_headers.");
            }
        }
        if let Some((path, name)) = cluster {
            v.non_empty(&path, name);
            if !name.is_empty() && !v.late_clusters && !clusters.contains(name) {
                v.error(&path, format!("Unknown gRPC client cluster '{name}'"));
            }
        }
        if self.transport_api_version == Some(ApiVersion::V2) {
            v.error(&format!("{at}.transport_api_version"), "V2 is no longer supported by Envoy; use V3");
        }
        for (field, set) in [
            ("clear_route_cache", self.clear_route_cache),
            ("include_peer_certificate", self.include_peer_certificate),
            ("encode_raw_headers", self.encode_raw_headers),
            ("validate_mutations", self.validate_mutations),
            ("emit_filter_state_stats", self.emit_filter_state_stats),
        ] {
            if set {
                v.error(&format!("{at}.{field}"), "this Envoy field is not supported by legate yet");
            }
        }
    }

    /// `status_on_error`, where it names an HTTP status (Envoy: else 403).
    pub fn status_on_error(&self) -> u16 {
        match self.status_on_error.map(|s| s.code) {
            Some(code @ 100..=511) => code as u16,
            _ => 403,
        }
    }
}

impl ExtAuthzPerRoute {
    pub(crate) fn validate(&self, at: &str, v: &mut Validator) {
        v.oneof(at, &[("disabled", self.disabled.is_some()), ("check_settings", self.check_settings.is_some())], true);
        if self.disabled == Some(false) {
            v.error(&format!("{at}.disabled"), "value must equal true");
        }
    }
}
