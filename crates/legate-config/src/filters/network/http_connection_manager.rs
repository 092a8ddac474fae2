//! `envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager`
//! (`envoy.filters.network.http_connection_manager`): the terminal network filter that speaks
//! HTTP, runs the HTTP filters and routes. Envoy pages: "HTTP connection management", "HTTP
//! connection manager" (configuration), "Timeouts" in the FAQ.
//!
//! HTTP filters: an unknown filter marked `is_optional` is left out of
//! [`HttpConnectionManager::http_filters`], as Envoy skips it; so indices in that list (and in
//! validation paths) count the filters legate runs.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::access_log::{AccessLog, AccessLogFilter, SubstitutionFormatString};
use crate::core::{DataSource, HeaderValueOption};
use crate::duration::Duration;
use crate::extensions::{is_registered, resolve, HTTP_FILTERS};
use crate::path;
use crate::protocol::{Http1ProtocolOptions, Http2ProtocolOptions, HttpProtocolOptions, SchemeHeaderTransformation};
use crate::route::RouteConfiguration;
use crate::unsupported::Unsupported;
use crate::validate::Validator;

pub use crate::extensions::HttpFilterConfig;

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpConnectionManager {
    #[serde(default)]
    pub codec_type: CodecType,
    /// Required; stats go under `http.<stat_prefix>.`.
    #[serde(default)]
    pub stat_prefix: String,
    /// Exactly one of `rds`, `route_config`, `scoped_routes`.
    pub rds: Option<Rds>,
    /// Shared: a 10,000-route table is kilobytes per route in this form, and the bootstrap, the
    /// listener's filter chains and the HCM each hold the config.
    pub route_config: Option<std::sync::Arc<RouteConfiguration>>,
    pub scoped_routes: Option<Unsupported>,
    /// In order; the last must be the router.
    #[serde(default, deserialize_with = "deserialize_http_filters")]
    pub http_filters: Vec<HttpFilter>,
    /// Adds `user-agent` and `x-envoy-downstream-service-cluster` (default false).
    pub add_user_agent: Option<bool>,
    /// Spans for the requests chosen by these sampling rates, reported to `provider` (or the
    /// bootstrap's tracer).
    pub tracing: Option<Box<Tracing>>,
    /// Downstream connection settings (idle timeout 1 h by default).
    pub common_http_protocol_options: Option<HttpProtocolOptions>,
    pub http1_safe_max_connection_duration: Option<Unsupported>,
    pub http_protocol_options: Option<Http1ProtocolOptions>,
    pub http2_protocol_options: Option<Http2ProtocolOptions>,
    pub http3_protocol_options: Option<Unsupported>,
    /// The `server` response header (default `envoy`).
    #[serde(default)]
    pub server_name: String,
    #[serde(default)]
    pub server_header_transformation: ServerHeaderTransformation,
    /// `:scheme` set or matched to the upstream, instead of worked out per request.
    pub scheme_header_transformation: Option<SchemeHeaderTransformation>,
    /// Request headers size limit in KiB, 1..=8192 (default 60); over it: 431.
    pub max_request_headers_kb: Option<u32>,
    /// A stream with no activity either way for this long gets 408 (504 once the request was
    /// received), or a reset once the response started. Default 5 min; 0 disables it. A
    /// route's `idle_timeout` overrides it after the request headers.
    pub stream_idle_timeout: Option<Duration>,
    /// Bounds receiving the whole request (disarmed when it is all sent upstream or the
    /// response starts). Default 0: disabled.
    pub request_timeout: Option<Duration>,
    /// Bounds receiving the request headers, from their first byte. Default 0: disabled.
    pub request_headers_timeout: Option<Duration>,
    /// Grace between HTTP/2 GOAWAY notices when draining (default 5 s).
    pub drain_timeout: Option<Duration>,
    /// After legate closes, how long it waits for the peer's FIN (default 1 s; 0 disables).
    pub delayed_close_timeout: Option<Duration>,
    #[serde(default)]
    pub access_log: Vec<AccessLog>,
    pub access_log_flush_interval: Option<Unsupported>,
    pub flush_access_log_on_new_request: Option<Unsupported>,
    pub access_log_options: Option<Unsupported>,
    /// Trust the connection's peer address (not `x-forwarded-for`) as the client's, and append
    /// it to `x-forwarded-for`. Default false.
    pub use_remote_address: Option<bool>,
    /// Addresses from the right of `x-forwarded-for` to skip as trusted proxies.
    #[serde(default)]
    pub xff_num_trusted_hops: u32,
    pub original_ip_detection_extensions: Option<Unsupported>,
    pub early_header_mutation_extensions: Option<Unsupported>,
    pub internal_address_config: Option<Unsupported>,
    #[serde(default)]
    pub skip_xff_append: bool,
    /// Appended as a `via` header value, requests and responses (empty: none).
    #[serde(default)]
    pub via: String,
    /// Add `x-request-id` when missing (default true).
    pub generate_request_id: Option<bool>,
    /// Keep an edge request's `x-request-id` instead of replacing it.
    #[serde(default)]
    pub preserve_external_request_id: bool,
    #[serde(default)]
    pub always_set_request_id_in_response: bool,
    /// How `x-forwarded-client-cert` is handled (default `SANITIZE`: removed).
    #[serde(default)]
    pub forward_client_cert_details: ForwardClientCertDetails,
    /// What `SANITIZE_SET`/`APPEND_FORWARD` put in the header besides `Hash`.
    pub set_current_client_cert_details: Option<SetCurrentClientCertDetails>,
    /// Forward `Expect: 100-continue` and the upstream's `100 Continue` instead of answering
    /// it locally.
    #[serde(default)]
    pub proxy_100_continue: bool,
    #[serde(default)]
    pub represent_ipv4_remote_address_as_ipv4_mapped_ipv6: bool,
    /// Upgrades (`websocket`, `CONNECT`) proxied; routes may turn them off.
    #[serde(default)]
    pub upgrade_configs: Vec<UpgradeConfig>,
    /// RFC 3986 path normalisation before filters and routing (default false).
    pub normalize_path: Option<bool>,
    /// `//a///b` becomes `/a/b` before filters and routing.
    #[serde(default)]
    pub merge_slashes: bool,
    #[serde(default)]
    pub path_with_escaped_slashes_action: PathWithEscapedSlashesAction,
    pub request_id_extension: Option<Unsupported>,
    pub local_reply_config: Option<LocalReplyConfig>,
    /// Remove `:port` from the authority when it is the listener's port.
    #[serde(default)]
    pub strip_matching_host_port: bool,
    /// Remove any `:port` from the authority (at most one of the two).
    #[serde(default)]
    pub strip_any_host_port: bool,
    /// Reset only the stream on an invalid message (default false: close the connection).
    pub stream_error_on_invalid_http_message: Option<bool>,
    pub path_normalization_options: Option<Unsupported>,
    #[serde(default)]
    pub strip_trailing_host_dot: bool,
    pub proxy_status_config: Option<Unsupported>,
    pub typed_header_validation_config: Option<Unsupported>,
    /// Append the listener port to `x-forwarded-port` when not already set.
    #[serde(default)]
    pub append_x_forwarded_port: bool,
    /// Add `x-envoy-local-overloaded` when the overload manager refuses a request.
    #[serde(default)]
    pub append_local_overload: bool,
    pub add_proxy_protocol_connection_state: Option<bool>,
}

/// `HttpConnectionManager.Tracing`: which requests are traced and what their spans carry.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    /// Requests with `x-client-trace-id` traced (default 100 %).
    pub client_sampling: Option<crate::core::Percent>,
    /// Requests traced at random (default 100 %).
    pub random_sampling: Option<crate::core::Percent>,
    /// The share of the traced requests kept, whatever their reason (default 100 %).
    pub overall_sampling: Option<crate::core::Percent>,
    /// Verbose spans carry an annotation per event; legate's carry none.
    #[serde(default)]
    pub verbose: bool,
    /// The longest `http.url` tag (default 256).
    pub max_path_tag_length: Option<u32>,
    #[serde(default)]
    pub custom_tags: Vec<crate::trace::CustomTag>,
    pub provider: Option<crate::trace::TracingProvider>,
    pub spawn_upstream_span: Option<bool>,
}

impl Tracing {
    pub const DEFAULT_MAX_PATH_TAG_LENGTH: u32 = 256;

    pub(crate) fn validate(&self, at: &str, v: &mut Validator, clusters: &std::collections::HashSet<&str>) {
        for (name, p) in [
            ("client_sampling", &self.client_sampling),
            ("random_sampling", &self.random_sampling),
            ("overall_sampling", &self.overall_sampling),
        ] {
            if let Some(p) = p {
                v.percent(&format!("{at}.{name}"), p);
            }
        }
        for (i, tag) in self.custom_tags.iter().enumerate() {
            tag.validate(&format!("{at}.custom_tags[{i}]"), v);
        }
        if self.verbose {
            v.error(&format!("{at}.verbose"), "verbose span annotations are not supported by legate yet");
        }
        if self.spawn_upstream_span == Some(true) {
            v.error(&format!("{at}.spawn_upstream_span"), "upstream spans are not supported by legate yet");
        }
        if let Some(provider) = &self.provider {
            provider.validate(&format!("{at}.provider"), v, clusters);
        }
    }
}

impl HttpConnectionManager {
    pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
    pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_DELAYED_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
    pub const DEFAULT_MAX_REQUEST_HEADERS_KB: u32 = 60;

    /// 5 minutes when unset; zero when disabled.
    pub fn stream_idle_timeout(&self) -> std::time::Duration {
        self.stream_idle_timeout.unwrap_or(Self::DEFAULT_STREAM_IDLE_TIMEOUT).0
    }

    /// Zero (disabled) when unset.
    pub fn request_timeout(&self) -> std::time::Duration {
        self.request_timeout.unwrap_or_default().0
    }

    /// Zero (disabled) when unset.
    pub fn request_headers_timeout(&self) -> std::time::Duration {
        self.request_headers_timeout.unwrap_or_default().0
    }

    pub fn drain_timeout(&self) -> std::time::Duration {
        self.drain_timeout.unwrap_or(Self::DEFAULT_DRAIN_TIMEOUT).0
    }

    /// 1 s when unset; zero when disabled.
    pub fn delayed_close_timeout(&self) -> std::time::Duration {
        self.delayed_close_timeout.unwrap_or(Self::DEFAULT_DELAYED_CLOSE_TIMEOUT).0
    }

    pub fn max_request_headers_kb(&self) -> u32 {
        self.max_request_headers_kb.unwrap_or(Self::DEFAULT_MAX_REQUEST_HEADERS_KB)
    }

    pub fn generate_request_id(&self) -> bool {
        self.generate_request_id.unwrap_or(true)
    }

    pub fn use_remote_address(&self) -> bool {
        self.use_remote_address.unwrap_or(false)
    }

    pub fn add_user_agent(&self) -> bool {
        self.add_user_agent.unwrap_or(false)
    }

    pub fn normalize_path(&self) -> bool {
        self.normalize_path.unwrap_or(false)
    }

    /// The `server` header value.
    pub fn server_name(&self) -> &str {
        if self.server_name.is_empty() {
            "envoy"
        } else {
            &self.server_name
        }
    }

    /// Downstream connection options (defaults when not configured).
    pub fn common_http_protocol_options(&self) -> HttpProtocolOptions {
        self.common_http_protocol_options.clone().unwrap_or_default()
    }

    /// Checks this filter's config; `at` is the path of its `typed_config`.
    pub(crate) fn validate(&self, at: &str, v: &mut Validator, clusters: &std::collections::HashSet<&str>) {
        v.non_empty(&format!("{at}.stat_prefix"), &self.stat_prefix);
        if self.codec_type == CodecType::Http3 {
            v.error(&format!("{at}.codec_type"), "HTTP3 is not supported by legate yet");
        }
        v.oneof(
            at,
            &[("rds", self.rds.is_some()), ("route_config", self.route_config.is_some()), ("scoped_routes", false)],
            true,
        );
        if let Some(rc) = &self.route_config {
            rc.validate(&format!("{at}.route_config"), v, clusters);
        }
        if let Some(rds) = &self.rds {
            v.non_empty(&format!("{at}.rds.route_config_name"), &rds.route_config_name);
            if rds.config_source.kind().is_none() {
                v.error(
                    &format!("{at}.rds.config_source"),
                    "one of path_config_source, api_config_source or ads is required",
                );
            }
        }
        self.validate_http_filters(at, v, clusters);
        if let Some(tracing) = &self.tracing {
            tracing.validate(&format!("{at}.tracing"), v, clusters);
            for (i, filter) in self.http_filters.iter().enumerate() {
                if matches!(&filter.config, HttpFilterConfig::Router(r) if r.start_child_span) {
                    v.error(
                        &format!("{at}.http_filters[{i}].typed_config.start_child_span"),
                        "child spans for upstream requests are not supported by legate yet",
                    );
                }
            }
        }
        if let Some(kb) = self.max_request_headers_kb {
            if !(1..=8192).contains(&kb) {
                v.error(&format!("{at}.max_request_headers_kb"), "value must be inside range (0, 8192]");
            }
        }
        if let Some(details) = &self.set_current_client_cert_details {
            if details.cert || details.chain {
                v.error(
                    &format!("{at}.set_current_client_cert_details"),
                    "cert and chain are not supported by legate yet (subject, dns and uri are)",
                );
            }
        }
        if let Some(scheme) = &self.scheme_header_transformation {
            scheme.validate(&format!("{at}.scheme_header_transformation"), v);
        }
        if self.strip_matching_host_port && self.strip_any_host_port {
            v.error(at, "Error: Only one of `strip_matching_host_port` or `strip_any_host_port` can be set.");
        }
        if let Some(common) = &self.common_http_protocol_options {
            common.validate(&format!("{at}.common_http_protocol_options"), v);
        }
        if let Some(h2) = &self.http2_protocol_options {
            h2.validate(&format!("{at}.http2_protocol_options"), v);
        }
        for (i, log) in self.access_log.iter().enumerate() {
            log.validate(&format!("{at}.access_log[{i}]"), v);
        }
        if let Some(local_reply) = &self.local_reply_config {
            for (i, mapper) in local_reply.mappers.iter().enumerate() {
                let m_at = format!("{at}.local_reply_config.mappers[{i}]");
                if mapper.filter.is_none() {
                    v.error(&format!("{m_at}.filter"), "value is required");
                }
                if mapper.status_code.is_some_and(|c| !(200..600).contains(&c)) {
                    v.error(&format!("{m_at}.status_code"), "value must be inside range [200, 600)");
                }
            }
        }
        for (i, upgrade) in self.upgrade_configs.iter().enumerate() {
            v.non_empty(&format!("{at}.upgrade_configs[{i}].upgrade_type"), &upgrade.upgrade_type);
        }
    }

    fn validate_http_filters(&self, at: &str, v: &mut Validator, clusters: &std::collections::HashSet<&str>) {
        let filters_at = format!("{at}.http_filters");
        let Some(last) = self.http_filters.len().checked_sub(1) else {
            v.error(
                &filters_at,
                "the last HTTP filter must be a terminal filter (envoy.filters.http.router); there are no HTTP filters",
            );
            return;
        };
        for (i, filter) in self.http_filters.iter().enumerate() {
            let f_at = format!("{filters_at}[{i}]");
            v.non_empty(&format!("{f_at}.name"), &filter.name);
            let terminal = filter.config.is_terminal();
            if terminal && i != last {
                v.error(
                    &f_at,
                    format!(
                        "Error: terminal filter named {} of type {} must be the last filter in a http filter chain.",
                        filter.name,
                        filter.config.kind_name()
                    ),
                );
            }
            if !terminal && i == last {
                v.error(
                    &f_at,
                    format!(
                        "Error: non-terminal filter named {} of type {} is the last filter in a http filter chain.",
                        filter.name,
                        filter.config.kind_name()
                    ),
                );
            }
            let typed_at = format!("{f_at}.typed_config");
            match &filter.config {
                HttpFilterConfig::Router(router) => router.validate(&typed_at, v),
                HttpFilterConfig::HealthCheck(hc) => hc.validate(&typed_at, v),
                HttpFilterConfig::LocalRateLimit(limit) => limit.validate(&typed_at, v),
                HttpFilterConfig::Fault(fault) => fault.validate(&typed_at, v),
                HttpFilterConfig::Buffer(buffer) => buffer.validate(&typed_at, v),
                HttpFilterConfig::Rbac(rbac) => rbac.validate(&typed_at, v),
                HttpFilterConfig::ExtAuthz(authz) => authz.validate(&typed_at, v, clusters),
                HttpFilterConfig::Compressor(c) => c.validate(&typed_at, v),
                HttpFilterConfig::Csrf(c) => c.validate(&typed_at, v),
                HttpFilterConfig::GrpcWeb => {}
                HttpFilterConfig::Decompressor(d) => d.validate(&typed_at, v),
                HttpFilterConfig::Cors(_) => {}
            }
        }
    }
}

/// `HttpConnectionManager.CodecType`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum CodecType {
    /// HTTP/2 when ALPN says `h2` or the client sends the HTTP/2 preface, else HTTP/1.1.
    #[default]
    #[serde(rename = "AUTO")]
    Auto,
    #[serde(rename = "HTTP1")]
    Http1,
    /// Prior knowledge HTTP/2 (h2c) or ALPN `h2`.
    #[serde(rename = "HTTP2")]
    Http2,
    #[serde(rename = "HTTP3")]
    Http3,
}

/// `HttpConnectionManager.ServerHeaderTransformation`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum ServerHeaderTransformation {
    /// `server` is always `server_name`.
    #[default]
    #[serde(rename = "OVERWRITE")]
    Overwrite,
    /// `server_name` only when the upstream sent none.
    #[serde(rename = "APPEND_IF_ABSENT")]
    AppendIfAbsent,
    /// The upstream's, or none.
    #[serde(rename = "PASS_THROUGH")]
    PassThrough,
}

/// `HttpConnectionManager.SetCurrentClientCertDetails`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SetCurrentClientCertDetails {
    #[serde(default)]
    pub subject: bool,
    #[serde(default)]
    pub cert: bool,
    #[serde(default)]
    pub chain: bool,
    #[serde(default)]
    pub dns: bool,
    #[serde(default)]
    pub uri: bool,
}

/// `HttpConnectionManager.ForwardClientCertDetails`: handling of `x-forwarded-client-cert`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum ForwardClientCertDetails {
    /// Remove the header.
    #[default]
    #[serde(rename = "SANITIZE")]
    Sanitize,
    #[serde(rename = "FORWARD_ONLY")]
    ForwardOnly,
    #[serde(rename = "APPEND_FORWARD")]
    AppendForward,
    #[serde(rename = "SANITIZE_SET")]
    SanitizeSet,
    #[serde(rename = "ALWAYS_FORWARD_ONLY")]
    AlwaysForwardOnly,
}

/// `HttpConnectionManager.PathWithEscapedSlashesAction`: paths with `%2F`, `%2f`, `%5C`, `%5c`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum PathWithEscapedSlashesAction {
    /// Envoy's default, which is `KEEP_UNCHANGED`.
    #[default]
    #[serde(rename = "IMPLEMENTATION_SPECIFIC_DEFAULT")]
    ImplementationSpecificDefault,
    #[serde(rename = "KEEP_UNCHANGED")]
    KeepUnchanged,
    /// 400.
    #[serde(rename = "REJECT_REQUEST")]
    RejectRequest,
    /// Unescape, then redirect to the unescaped path.
    #[serde(rename = "UNESCAPE_AND_REDIRECT")]
    UnescapeAndRedirect,
    #[serde(rename = "UNESCAPE_AND_FORWARD")]
    UnescapeAndForward,
}

/// `HttpConnectionManager.UpgradeConfig`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UpgradeConfig {
    /// Case-insensitive `upgrade` value (`websocket`), or `CONNECT`.
    #[serde(default)]
    pub upgrade_type: String,
    pub filters: Option<Unsupported>,
    /// Default true; routes may override.
    pub enabled: Option<bool>,
}

/// `envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter`.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpFilter {
    pub name: String,
    pub config: HttpFilterConfig,
    /// Kept for config dump: an optional filter legate has is run like any other.
    pub is_optional: bool,
    /// Off unless a route's `typed_per_filter_config` has an entry for it.
    pub disabled: bool,
}

/// `deserialize_with` for `http_filters`: resolves each filter through [`HTTP_FILTERS`] and
/// leaves out optional filters legate does not implement.
fn deserialize_http_filters<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<HttpFilter>, D::Error> {
    struct MaybeFilter(Option<HttpFilter>);

    impl<'de> Deserialize<'de> for MaybeFilter {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Raw {
                #[serde(default)]
                name: String,
                typed_config: Option<Value>,
                config_discovery: Option<Unsupported>,
                #[serde(default)]
                is_optional: bool,
                #[serde(default)]
                disabled: bool,
            }
            let raw = Raw::deserialize(d)?;
            let _ = raw.config_discovery;
            if raw.is_optional && !is_registered(HTTP_FILTERS, &raw.name, raw.typed_config.as_ref()) {
                return Ok(MaybeFilter(None));
            }
            let config = resolve(HTTP_FILTERS, "http filter", &raw.name, raw.typed_config)
                .map_err(|e| path::nest::<D::Error>("", e))?;
            Ok(MaybeFilter(Some(HttpFilter {
                name: raw.name,
                config,
                is_optional: raw.is_optional,
                disabled: raw.disabled,
            })))
        }
    }

    let filters = Vec::<MaybeFilter>::deserialize(d)?;
    Ok(filters.into_iter().filter_map(|f| f.0).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hcm(v: Value) -> HttpConnectionManager {
        path::from_value(v).unwrap()
    }

    fn errors(h: &HttpConnectionManager, clusters: &[&str]) -> Vec<String> {
        let mut v = Validator::default();
        h.validate("tc", &mut v, &clusters.iter().copied().collect());
        v.errors.iter().map(ToString::to_string).collect()
    }

    fn minimal() -> Value {
        json!({
            "stat_prefix": "ingress_http",
            "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c"}}]}]},
            "http_filters": [{"name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
        })
    }

    #[test]
    fn defaults() {
        let h = hcm(minimal());
        assert!(errors(&h, &["c"]).is_empty(), "{:?}", errors(&h, &["c"]));
        assert_eq!(h.stream_idle_timeout(), std::time::Duration::from_secs(300));
        assert_eq!(h.request_timeout(), std::time::Duration::ZERO);
        assert_eq!(h.drain_timeout(), std::time::Duration::from_secs(5));
        assert_eq!(h.delayed_close_timeout(), std::time::Duration::from_secs(1));
        assert_eq!(h.max_request_headers_kb(), 60);
        assert!(h.generate_request_id() && !h.use_remote_address());
        assert_eq!(h.server_name(), "envoy");
        assert_eq!(h.common_http_protocol_options().idle_timeout(), std::time::Duration::from_secs(3600));
        assert_eq!(h.codec_type, CodecType::Auto);
    }

    #[test]
    fn optional_unknown_filter_is_skipped_and_required_one_refused() {
        let mut v = minimal();
        v["http_filters"] = json!([
            {"name": "envoy.filters.http.lua", "is_optional": true,
             "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"}},
            {"name": "envoy.filters.http.router"}
        ]);
        let h = hcm(v.clone());
        assert_eq!(h.http_filters.len(), 1);
        assert!(matches!(h.http_filters[0].config, HttpFilterConfig::Router(_)));

        v["http_filters"][0]["is_optional"] = json!(false);
        let err = path::from_value::<HttpConnectionManager>(v).unwrap_err();
        assert_eq!(err.path, "http_filters[0].typed_config");
        assert!(err.message.contains("legate does not implement this http filter"), "{}", err.message);
    }

    #[test]
    fn router_must_be_last() {
        let mut v = minimal();
        v["http_filters"] = json!([{"name": "envoy.filters.http.router"}, {"name": "envoy.filters.http.cors"}]);
        let e = errors(&hcm(v.clone()), &["c"]);
        assert!(e.contains(&"tc.http_filters[0]: Error: terminal filter named envoy.filters.http.router of type envoy.filters.http.router must be the last filter in a http filter chain.".to_string()), "{e:?}");
        assert!(
            e.iter()
                .any(|e| e.starts_with("tc.http_filters[1]: Error: non-terminal filter named envoy.filters.http.cors")),
            "{e:?}"
        );
        v["http_filters"] = json!([]);
        let e = errors(&hcm(v), &["c"]);
        assert!(
            e[0].starts_with(
                "tc.http_filters: the last HTTP filter must be a terminal filter (envoy.filters.http.router)"
            ),
            "{e:?}"
        );
    }

    #[test]
    fn scheme_header_transformation_is_one_of_two_and_http_or_https() {
        let mut v = minimal();
        v["scheme_header_transformation"] = json!({"scheme_to_overwrite": "https"});
        assert!(errors(&hcm(v.clone()), &["c"]).is_empty());
        v["scheme_header_transformation"] = json!({"scheme_to_overwrite": "ftp", "match_upstream": true});
        let e = errors(&hcm(v), &["c"]);
        assert!(
            e.contains(
                &"tc.scheme_header_transformation.scheme_to_overwrite: value must be in list [http https]".to_string()
            ),
            "{e:?}"
        );
        assert!(
            e.contains(
                &"tc.scheme_header_transformation: only one of scheme_to_overwrite or match_upstream may be set"
                    .to_string()
            ),
            "{e:?}"
        );
    }

    #[test]
    fn route_specifier_codec_and_client_cert() {
        let mut v = minimal();
        v.as_object_mut().unwrap().remove("route_config");
        v["codec_type"] = json!("HTTP3");
        v["forward_client_cert_details"] = json!("APPEND_FORWARD");
        v["set_current_client_cert_details"] = json!({"subject": true, "cert": true});
        let e = errors(&hcm(v), &[]);
        assert!(e.contains(&"tc: one of rds, route_config or scoped_routes is required".to_string()), "{e:?}");
        assert!(e.contains(&"tc.codec_type: HTTP3 is not supported by legate yet".to_string()), "{e:?}");
        assert!(
            e.contains(
                &"tc.set_current_client_cert_details: cert and chain are not supported by legate yet (subject, dns and uri are)"
                    .to_string()
            ),
            "{e:?}"
        );
        let mut v = minimal();
        v.as_object_mut().unwrap().remove("route_config");
        v["rds"] = json!({"route_config_name": "r", "config_source": {"ads": {}}});
        let hcm = path::from_value::<HttpConnectionManager>(v).unwrap();
        assert_eq!(hcm.rds.map(|r| r.route_config_name).as_deref(), Some("r"));
    }

    #[test]
    fn filter_configs_are_validated() {
        let mut v = minimal();
        v["http_filters"] = json!([
            {"name": "envoy.filters.http.health_check", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck",
                "headers": [{"name": ":path", "string_match": {"exact": "/healthz"}}]}},
            {"name": "envoy.filters.http.local_ratelimit", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                "stat_prefix": "rl", "status": {"code": "BadRequest"},
                "token_bucket": {"max_tokens": 10, "fill_interval": "0.01s"}}},
            {"name": "envoy.filters.http.buffer", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer"}},
            {"name": "envoy.filters.http.fault", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
                "abort": {"http_status": 700, "percentage": {"numerator": 100}}}},
            {"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                "suppress_envoy_headers": true}}
        ]);
        let h = hcm(v);
        let HttpFilterConfig::LocalRateLimit(limit) = &h.http_filters[1].config else { panic!() };
        assert_eq!(limit.status(), 400);
        let e = errors(&h, &["c"]);
        assert_eq!(
            e,
            [
                "tc.http_filters[0].typed_config.pass_through_mode: value is required",
                "tc.http_filters[1].typed_config.token_bucket.fill_interval: local rate limit token bucket fill timer must be >= 50ms",
                "tc.http_filters[2].typed_config.max_request_bytes: value is required",
                "tc.http_filters[3].typed_config.abort.http_status: value must be inside range [200, 600) (got 700)",
            ]
        );
    }

    #[test]
    fn camel_case_json_format_keys_survive() {
        let mut tree = json!({"access_log": [{"name": "envoy.access_loggers.stdout", "typedConfig": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            "logFormat": {"jsonFormat": {"bytesSent": "%BYTES_SENT%"}}}}]});
        crate::normalize::normalize(&mut tree);
        assert_eq!(tree["access_log"][0]["typed_config"]["log_format"]["json_format"]["bytesSent"], "%BYTES_SENT%");
    }
}

/// `HttpConnectionManager.LocalReplyConfig`: rewrites legate's own replies (404 no route,
/// 503 no healthy upstream…): the first mapper whose filter matches may change the status,
/// body, headers and body format; `body_format` formats every local reply body (with
/// `%LOCAL_REPLY_BODY%`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LocalReplyConfig {
    #[serde(default)]
    pub mappers: Vec<ResponseMapper>,
    pub body_format: Option<SubstitutionFormatString>,
}

/// `HttpConnectionManager.ResponseMapper`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResponseMapper {
    /// Required: which local replies this mapper rewrites.
    pub filter: Option<AccessLogFilter>,
    /// 200..=599.
    pub status_code: Option<u32>,
    pub body: Option<DataSource>,
    pub body_format_override: Option<SubstitutionFormatString>,
    #[serde(default)]
    pub headers_to_add: Vec<HeaderValueOption>,
}

/// `HttpConnectionManager.Rds`: the route configuration by name from a config source.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rds {
    pub config_source: crate::config_source::ConfigSource,
    pub route_config_name: String,
}
