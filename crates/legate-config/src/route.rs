//! `envoy.config.route.v3`: the route table of an HTTP connection manager.
//!
//! A `RouteConfiguration` holds virtual hosts, picked by the request's authority; each holds
//! routes, tried in order, whose `match` decides and whose action (`route`, `redirect`,
//! `direct_response`) says what to do. Envoy pages: "HTTP routing", "Route matching", "Traffic
//! splitting", "Retry semantics"; protos `route.proto` and `route_components.proto`.
//!
//! Where legate differs on purpose: the `validate_clusters` check also covers request mirror
//! clusters, and virtual host names must be unique (both are silent in Envoy; legate's stats and
//! static clusters make a mismatch a typo, not a late-bound name).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::cluster::RoutingPriority;
use crate::core::{DataSource, FractionalPercent, HeaderValueOption, Metadata, RuntimeFractionalPercent};
use crate::duration::Duration;
pub use crate::extensions::{FilterPerRouteConfig, RetryHostPredicateConfig};
use crate::matcher::{Int64Range, RegexMatchAndSubstitute, RegexMatcher, StringMatcher};
use crate::unsupported::Unsupported;
use crate::validate::Validator;

/// `envoy.config.route.v3.RouteConfiguration`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfiguration {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub virtual_hosts: Vec<VirtualHost>,
    pub vhds: Option<Unsupported>,
    /// Removed from requests that are not internal (`x-envoy-internal`).
    #[serde(default)]
    pub internal_only_headers: Vec<String>,
    #[serde(default)]
    pub response_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default)]
    pub response_headers_to_remove: Vec<String>,
    #[serde(default)]
    pub request_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default)]
    pub request_headers_to_remove: Vec<String>,
    /// Default: header mutations apply route first, then virtual host, then this level, so the
    /// least specific wins; true reverses the order.
    #[serde(default)]
    pub most_specific_header_mutations_wins: bool,
    /// Default true for a static `route_config`: every cluster a route names must exist.
    pub validate_clusters: Option<bool>,
    /// Largest `direct_response` body (default 4096 bytes).
    pub max_direct_response_body_size_bytes: Option<u32>,
    pub cluster_specifier_plugins: Option<Unsupported>,
    /// Used by routes without their own, and virtual hosts without their own.
    #[serde(default)]
    pub request_mirror_policies: Vec<RequestMirrorPolicy>,
    /// Match virtual host domains against the authority without its `:port`.
    #[serde(default)]
    pub ignore_port_in_host_matching: bool,
    pub alternate_header_for_host_matching: Option<Unsupported>,
    pub ignore_path_parameters_in_path_matching: Option<Unsupported>,
    #[serde(default, deserialize_with = "crate::extensions::deserialize_per_filter_configs")]
    pub typed_per_filter_config: BTreeMap<String, FilterPerRouteConfig>,
    pub metadata: Option<Metadata>,
}

impl RouteConfiguration {
    pub const DEFAULT_MAX_DIRECT_RESPONSE_BODY_SIZE_BYTES: u32 = 4096;

    pub fn validate_clusters(&self) -> bool {
        self.validate_clusters.unwrap_or(true)
    }

    pub fn max_direct_response_body_size_bytes(&self) -> u32 {
        self.max_direct_response_body_size_bytes.unwrap_or(Self::DEFAULT_MAX_DIRECT_RESPONSE_BODY_SIZE_BYTES)
    }

    /// Checks what the proto's rules and Envoy's `RouteMatcher` refuse, with `at` the path of
    /// this message; `clusters` are the static cluster names.
    pub(crate) fn validate(&self, at: &str, v: &mut Validator, clusters: &std::collections::HashSet<&str>) {
        let clusters = (self.validate_clusters() && !v.late_clusters).then_some(clusters);
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        // Envoy keys domains lower-cased, in four tables: exact, `*suffix`, `prefix*` and `*`.
        let mut domains: BTreeMap<String, usize> = BTreeMap::new();
        let mut wildcard: Option<usize> = None;
        for (i, vhost) in self.virtual_hosts.iter().enumerate() {
            let vh_at = format!("{at}.virtual_hosts[{i}]");
            if let Some(first) = names.insert(&vhost.name, i) {
                v.error(
                    &format!("{vh_at}.name"),
                    format!("duplicate virtual host name '{}' (also virtual_hosts[{first}])", vhost.name),
                );
            }
            for (j, domain) in vhost.domains.iter().enumerate() {
                let domain = domain.to_ascii_lowercase();
                let d_at = format!("{vh_at}.domains[{j}]");
                if domain == "*" {
                    if wildcard.replace(i).is_some() {
                        v.error(&d_at, format!("Only a single wildcard domain is permitted in route {}", self.name));
                    }
                } else if domains.insert(domain.clone(), i).is_some() {
                    v.error(
                        &d_at,
                        format!(
                            "Only unique values for domains are permitted. Duplicate entry of domain {domain} in route {}",
                            self.name
                        ),
                    );
                }
            }
            vhost.validate(&vh_at, v, clusters, self.max_direct_response_body_size_bytes());
        }
        headers_to_add(at, "request_headers_to_add", &self.request_headers_to_add, v);
        headers_to_add(at, "response_headers_to_add", &self.response_headers_to_add, v);
        mirror_policies(&format!("{at}.request_mirror_policies"), &self.request_mirror_policies, v, clusters);
        crate::extensions::validate_per_filter_configs(
            &format!("{at}.typed_per_filter_config"),
            &self.typed_per_filter_config,
            v,
        );
    }
}

/// `envoy.config.route.v3.VirtualHost`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VirtualHost {
    /// Required; names the `vhost.<name>.` stats.
    #[serde(default)]
    pub name: String,
    /// At least one. Exact names first, then `*.suffix`, then `prefix*`, then `*`; a domain
    /// may appear in one virtual host only.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Shrunk to its length once read: a route is ~900 bytes, and the spare capacity a vector
    /// keeps as it grows cost ~600 bytes more per route (10,000 routes: 6 MB).
    #[serde(default, deserialize_with = "shrunk_vec")]
    pub routes: Vec<Route>,
    pub matcher: Option<Unsupported>,
    #[serde(default)]
    pub require_tls: TlsRequirementType,
    pub virtual_clusters: Option<Unsupported>,
    pub rate_limits: Option<Unsupported>,
    #[serde(default)]
    pub request_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default)]
    pub request_headers_to_remove: Vec<String>,
    #[serde(default)]
    pub response_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default)]
    pub response_headers_to_remove: Vec<String>,
    /// Deprecated in Envoy for `typed_per_filter_config` (which wins when both are set), but
    /// common in real configs.
    pub cors: Option<CorsPolicy>,
    #[serde(default, deserialize_with = "crate::extensions::deserialize_per_filter_configs")]
    pub typed_per_filter_config: BTreeMap<String, FilterPerRouteConfig>,
    /// Sends `x-envoy-attempt-count` upstream.
    #[serde(default)]
    pub include_request_attempt_count: bool,
    /// Sends `x-envoy-attempt-count` downstream.
    #[serde(default)]
    pub include_attempt_count_in_response: bool,
    /// Used by routes without their own (never merged with a route's).
    pub retry_policy: Option<RetryPolicy>,
    pub retry_policy_typed_config: Option<Unsupported>,
    pub hedge_policy: Option<Unsupported>,
    pub include_is_timeout_retry_header: Option<Unsupported>,
    /// Bytes buffered for retries and shadowing (default: the listener's buffer limit).
    pub per_request_buffer_limit_bytes: Option<u32>,
    pub request_body_buffer_limit: Option<Unsupported>,
    #[serde(default)]
    pub request_mirror_policies: Vec<RequestMirrorPolicy>,
    pub metadata: Option<Metadata>,
}

impl VirtualHost {
    fn validate(&self, at: &str, v: &mut Validator, clusters: Option<&std::collections::HashSet<&str>>, max_body: u32) {
        v.non_empty(&format!("{at}.name"), &self.name);
        if self.domains.is_empty() {
            v.error(&format!("{at}.domains"), "value must contain at least 1 item(s)");
        }
        for (i, route) in self.routes.iter().enumerate() {
            route.validate(&format!("{at}.routes[{i}]"), v, clusters, max_body);
        }
        headers_to_add(at, "request_headers_to_add", &self.request_headers_to_add, v);
        headers_to_add(at, "response_headers_to_add", &self.response_headers_to_add, v);
        if let Some(cors) = &self.cors {
            cors.validate(&format!("{at}.cors"), v);
        }
        if let Some(retry) = &self.retry_policy {
            retry.validate(&format!("{at}.retry_policy"), v);
        }
        mirror_policies(&format!("{at}.request_mirror_policies"), &self.request_mirror_policies, v, clusters);
        crate::extensions::validate_per_filter_configs(
            &format!("{at}.typed_per_filter_config"),
            &self.typed_per_filter_config,
            v,
        );
    }
}

/// `VirtualHost.TlsRequirementType`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum TlsRequirementType {
    #[default]
    #[serde(rename = "NONE")]
    None,
    /// Requests from outside (not `x-envoy-internal`) over plain HTTP get a 301 to https.
    #[serde(rename = "EXTERNAL_ONLY")]
    ExternalOnly,
    /// Every request over plain HTTP gets a 301 to https.
    #[serde(rename = "ALL")]
    All,
}

/// `envoy.config.route.v3.Route`: a match and exactly one action.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
/// Members that most routes leave out are boxed: a 10,000-route table holds one of these per
/// route, for `/config_dump` and for updates.
pub struct Route {
    #[serde(default)]
    pub name: String,
    #[serde(rename = "match")]
    pub r#match: RouteMatch,
    pub route: Option<RouteAction>,
    pub redirect: Option<Box<RedirectAction>>,
    pub direct_response: Option<Box<DirectResponseAction>>,
    pub filter_action: Option<Unsupported>,
    pub non_forwarding_action: Option<Unsupported>,
    pub metadata: Option<Box<Metadata>>,
    /// The name of the route's spans, and whether it is passed on upstream.
    pub decorator: Option<Decorator>,
    #[serde(default, deserialize_with = "crate::extensions::deserialize_per_filter_configs")]
    pub typed_per_filter_config: BTreeMap<String, FilterPerRouteConfig>,
    #[serde(default)]
    pub request_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default)]
    pub request_headers_to_remove: Vec<String>,
    #[serde(default)]
    pub response_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default)]
    pub response_headers_to_remove: Vec<String>,
    /// Sampling rates and tags for this route's requests, over the connection manager's.
    pub tracing: Option<Box<RouteTracing>>,
    /// Bytes buffered for retries and shadowing (default: the virtual host's).
    pub per_request_buffer_limit_bytes: Option<u32>,
    pub request_body_buffer_limit: Option<Unsupported>,
    pub stat_prefix: Option<Unsupported>,
}

impl Route {
    fn validate(&self, at: &str, v: &mut Validator, clusters: Option<&std::collections::HashSet<&str>>, max_body: u32) {
        self.r#match.validate(&format!("{at}.match"), v);
        v.oneof(
            at,
            &[
                ("route", self.route.is_some()),
                ("redirect", self.redirect.is_some()),
                ("direct_response", self.direct_response.is_some()),
            ],
            true,
        );
        if let Some(action) = &self.route {
            action.validate(&format!("{at}.route"), v, clusters);
        }
        if let Some(redirect) = &self.redirect {
            redirect.validate(&format!("{at}.redirect"), v);
        }
        if let Some(direct) = &self.direct_response {
            direct.validate(&format!("{at}.direct_response"), v, max_body);
        }
        if let Some(tracing) = &self.tracing {
            for (i, tag) in tracing.custom_tags.iter().enumerate() {
                tag.validate(&format!("{at}.tracing.custom_tags[{i}]"), v);
            }
        }
        if let Some(decorator) = &self.decorator {
            v.non_empty(&format!("{at}.decorator.operation"), &decorator.operation);
        }
        headers_to_add(at, "request_headers_to_add", &self.request_headers_to_add, v);
        headers_to_add(at, "response_headers_to_add", &self.response_headers_to_add, v);
        crate::extensions::validate_per_filter_configs(
            &format!("{at}.typed_per_filter_config"),
            &self.typed_per_filter_config,
            v,
        );
    }
}

/// `envoy.config.route.v3.Decorator`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Decorator {
    #[serde(default)]
    pub operation: String,
    pub propagate: Option<bool>,
}

/// `envoy.config.route.v3.Tracing`: a route's own sampling rates (each over the connection
/// manager's) and tags.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteTracing {
    pub client_sampling: Option<FractionalPercent>,
    pub random_sampling: Option<FractionalPercent>,
    pub overall_sampling: Option<FractionalPercent>,
    #[serde(default)]
    pub custom_tags: Vec<crate::trace::CustomTag>,
}

/// `envoy.config.route.v3.RouteMatch`: exactly one path specifier, then every other criterion
/// must also hold.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// The `:path` (query string included, as Envoy compares it) starts with this.
    pub prefix: Option<String>,
    /// The path, without its query string, equals this.
    pub path: Option<String>,
    /// The whole path, without its query string, matches this regex.
    pub safe_regex: Option<RegexMatcher>,
    /// Matches CONNECT requests only.
    pub connect_matcher: Option<ConnectMatcher>,
    /// The path without its query is this, or starts with this followed by `/`.
    pub path_separated_prefix: Option<String>,
    pub path_match_policy: Option<Unsupported>,
    /// Applies to `prefix`, `path` and `path_separated_prefix` (not `safe_regex`); default true.
    pub case_sensitive: Option<bool>,
    /// Matches this fraction of requests: the runtime's for its key, else the default.
    pub runtime_fraction: Option<RuntimeFractionalPercent>,
    #[serde(default)]
    pub headers: Vec<HeaderMatcher>,
    /// Only the first value of a repeated parameter is considered.
    #[serde(default)]
    pub query_parameters: Vec<QueryParameterMatcher>,
    /// Matches `content-type: application/grpc*` only.
    pub grpc: Option<GrpcRouteMatchOptions>,
    pub tls_context: Option<Unsupported>,
    pub dynamic_metadata: Option<Unsupported>,
    pub filter_state: Option<Unsupported>,
    /// Every cookie matcher must match.
    #[serde(default)]
    pub cookies: Vec<CookieMatcher>,
}

/// `envoy.config.route.v3.CookieMatcher`: the value of the first cookie of `name` in the
/// `cookie` headers (surrounding quotes removed) matches `string_match`; an absent cookie does
/// not match. `invert_match` turns the result around.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CookieMatcher {
    #[serde(default)]
    pub name: String,
    pub string_match: Option<StringMatcher>,
    #[serde(default)]
    pub invert_match: bool,
}

impl CookieMatcher {
    /// `value` is the cookie's value, `None` when the request has no such cookie.
    pub fn matches(&self, value: Option<&str>) -> bool {
        let found = match (value, &self.string_match) {
            (Some(v), Some(m)) => m.matches(v),
            _ => false,
        };
        found != self.invert_match
    }
}

impl RouteMatch {
    pub fn case_sensitive(&self) -> bool {
        self.case_sensitive.unwrap_or(true)
    }

    fn validate(&self, at: &str, v: &mut Validator) {
        v.oneof(
            at,
            &[
                ("prefix", self.prefix.is_some()),
                ("path", self.path.is_some()),
                ("safe_regex", self.safe_regex.is_some()),
                ("connect_matcher", self.connect_matcher.is_some()),
                ("path_separated_prefix", self.path_separated_prefix.is_some()),
            ],
            true,
        );
        if let Some(p) = &self.path_separated_prefix {
            // The proto's pattern `^[^?#]+[^?#/]$`.
            let ok = p.len() >= 2 && !p.contains(['?', '#']) && !p.ends_with('/');
            if !ok {
                v.error(
                    &format!("{at}.path_separated_prefix"),
                    "value does not match regex pattern \"^[^?#]+[^?#/]$\"",
                );
            }
        }
        for (i, header) in self.headers.iter().enumerate() {
            header.validate(&format!("{at}.headers[{i}]"), v);
        }
        for (i, query) in self.query_parameters.iter().enumerate() {
            query.validate(&format!("{at}.query_parameters[{i}]"), v);
        }
        for (i, cookie) in self.cookies.iter().enumerate() {
            v.non_empty(&format!("{at}.cookies[{i}].name"), &cookie.name);
            if cookie.string_match.is_none() {
                v.error(&format!("{at}.cookies[{i}].string_match"), "value is required");
            }
        }
    }
}

/// `RouteMatch.ConnectMatcher`: no fields.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConnectMatcher {}

/// `RouteMatch.GrpcRouteMatchOptions`: no fields.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GrpcRouteMatchOptions {}

/// `envoy.config.route.v3.HeaderMatcher`. Without a match specifier it is a presence match.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatcher {
    /// `:authority`, `:method`, `:path` name the pseudo-headers (HTTP/1 `Host` is `:authority`).
    #[serde(default)]
    pub name: String,
    /// Deprecated for `string_match`. An empty value matches any value (Envoy's legacy rule).
    pub exact_match: Option<String>,
    /// Deprecated for `string_match`.
    pub safe_regex_match: Option<RegexMatcher>,
    /// The value must be a base-10 integer in `[start, end)`.
    pub range_match: Option<Int64Range>,
    /// true: the header is present; false: it is absent.
    pub present_match: Option<bool>,
    /// Deprecated for `string_match`.
    pub prefix_match: Option<String>,
    /// Deprecated for `string_match`.
    pub suffix_match: Option<String>,
    /// Deprecated for `string_match`.
    pub contains_match: Option<String>,
    pub string_match: Option<StringMatcher>,
    #[serde(default)]
    pub invert_match: bool,
    /// A missing header is matched as the empty string instead of failing the match.
    #[serde(default)]
    pub treat_missing_header_as_empty: bool,
}

impl HeaderMatcher {
    /// Envoy's `HeaderUtility::matchHeaders`. `value` is every value of the header joined with
    /// `,` by the caller, `None` when the header is absent.
    pub fn matches(&self, value: Option<&str>) -> bool {
        let value = match value {
            Some(v) => v,
            None if self.treat_missing_header_as_empty => "",
            None => {
                // A missing header fails every match except `present_match: false`, and the
                // inversion of `present_match: true`.
                return match self.present_match {
                    Some(present) => present == self.invert_match,
                    None => false,
                };
            }
        };
        let matched = if let Some(exact) = &self.exact_match {
            exact.is_empty() || value == exact
        } else if let Some(regex) = &self.safe_regex_match {
            regex.is_match(value)
        } else if let Some(range) = &self.range_match {
            // Envoy's SimpleAtoi: optional sign and digits, nothing else (surrounding
            // whitespace aside, which it also skips).
            value.trim().parse::<i64>().is_ok_and(|n| range.contains(n))
        } else if let Some(present) = self.present_match {
            present
        } else if let Some(prefix) = &self.prefix_match {
            value.starts_with(prefix.as_str())
        } else if let Some(suffix) = &self.suffix_match {
            value.ends_with(suffix.as_str())
        } else if let Some(contains) = &self.contains_match {
            value.contains(contains.as_str())
        } else if let Some(m) = &self.string_match {
            m.matches(value)
        } else {
            true
        };
        matched != self.invert_match
    }

    pub(crate) fn validate(&self, at: &str, v: &mut Validator) {
        v.non_empty(&format!("{at}.name"), &self.name);
        v.oneof(
            at,
            &[
                ("exact_match", self.exact_match.is_some()),
                ("safe_regex_match", self.safe_regex_match.is_some()),
                ("range_match", self.range_match.is_some()),
                ("present_match", self.present_match.is_some()),
                ("prefix_match", self.prefix_match.is_some()),
                ("suffix_match", self.suffix_match.is_some()),
                ("contains_match", self.contains_match.is_some()),
                ("string_match", self.string_match.is_some()),
            ],
            false,
        );
        for (field, value) in [
            ("prefix_match", &self.prefix_match),
            ("suffix_match", &self.suffix_match),
            ("contains_match", &self.contains_match),
        ] {
            if value.as_deref() == Some("") {
                v.error(&format!("{at}.{field}"), "value length must be at least 1 characters");
            }
        }
        if let Some(m) = &self.string_match {
            m.validate(&format!("{at}.string_match"), v);
        }
    }
}

/// `envoy.config.route.v3.QueryParameterMatcher`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueryParameterMatcher {
    #[serde(default)]
    pub name: String,
    pub string_match: Option<StringMatcher>,
    /// Envoy requires the parameter to be present whatever this says (even `false`).
    pub present_match: Option<bool>,
}

impl QueryParameterMatcher {
    /// Envoy's `ConfigUtility::QueryParameterMatcher::matches`: `value` is the first value of
    /// the parameter (`Some("")` for `?name` or `?name=`), `None` when absent.
    pub fn matches(&self, value: Option<&str>) -> bool {
        match (value, &self.string_match) {
            (None, _) => false,
            (Some(v), Some(m)) => m.matches(v),
            (Some(_), None) => true,
        }
    }

    fn validate(&self, at: &str, v: &mut Validator) {
        v.non_empty(&format!("{at}.name"), &self.name);
        if self.name.len() > 1024 {
            v.error(&format!("{at}.name"), "value length must be at most 1024 bytes");
        }
        v.oneof(
            at,
            &[("string_match", self.string_match.is_some()), ("present_match", self.present_match.is_some())],
            false,
        );
        if let Some(m) = &self.string_match {
            m.validate(&format!("{at}.string_match"), v);
        }
    }
}

/// `envoy.config.route.v3.RouteAction`: forward to a cluster.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteAction {
    /// One of `cluster`, `cluster_header`, `weighted_clusters` is required.
    pub cluster: Option<String>,
    /// The cluster is named by this request header (first value); missing header or unknown
    /// cluster: `cluster_not_found_response_code`.
    pub cluster_header: Option<String>,
    pub weighted_clusters: Option<Box<WeightedCluster>>,
    pub cluster_specifier_plugin: Option<Unsupported>,
    pub inline_cluster_specifier_plugin: Option<Unsupported>,
    #[serde(default)]
    pub cluster_not_found_response_code: ClusterNotFoundResponseCode,
    pub metadata_match: Option<Unsupported>,
    /// Replaces the matched prefix (or path); the original goes in `x-envoy-original-path`.
    #[serde(default)]
    pub prefix_rewrite: String,
    pub regex_rewrite: Option<Box<RegexMatchAndSubstitute>>,
    pub path_rewrite_policy: Option<Unsupported>,
    pub path_rewrite: Option<Unsupported>,
    /// One of the four `host_rewrite_*` / `auto_host_rewrite` at most.
    pub host_rewrite_literal: Option<String>,
    /// The upstream host's hostname (DNS clusters, or endpoint `hostname`) becomes the authority.
    pub auto_host_rewrite: Option<bool>,
    pub host_rewrite_header: Option<String>,
    pub host_rewrite_path_regex: Option<Box<RegexMatchAndSubstitute>>,
    /// With a host rewrite, the original authority is appended to `x-forwarded-host`.
    #[serde(default)]
    pub append_x_forwarded_host: bool,
    /// Spans all tries, from the end of the downstream request to the end of the response.
    /// Default 15 s; 0 disables it. See [`Self::timeout`].
    pub timeout: Option<Duration>,
    /// Overrides the connection manager's `stream_idle_timeout` for this route; 0 disables both.
    pub idle_timeout: Option<Duration>,
    pub early_data_policy: Option<Unsupported>,
    /// Replaces the virtual host's policy entirely (never merged).
    pub retry_policy: Option<Box<RetryPolicy>>,
    pub retry_policy_typed_config: Option<Unsupported>,
    /// Replaces the virtual host's and route configuration's policies when not empty.
    #[serde(default)]
    pub request_mirror_policies: Vec<RequestMirrorPolicy>,
    #[serde(default)]
    pub priority: RoutingPriority,
    pub rate_limits: Option<Unsupported>,
    pub include_vh_rate_limits: Option<Unsupported>,
    #[serde(default)]
    pub hash_policy: Vec<HashPolicy>,
    /// Deprecated in Envoy for `typed_per_filter_config`, still common: accepted.
    pub cors: Option<Box<CorsPolicy>>,
    /// Deprecated for `max_stream_duration.grpc_timeout_header_max`.
    pub max_grpc_timeout: Option<Duration>,
    /// Deprecated for `max_stream_duration.grpc_timeout_header_offset`.
    pub grpc_timeout_offset: Option<Duration>,
    #[serde(default)]
    pub upgrade_configs: Vec<UpgradeConfig>,
    pub internal_redirect_policy: Option<Unsupported>,
    pub internal_redirect_action: Option<Unsupported>,
    pub max_internal_redirects: Option<Unsupported>,
    pub hedge_policy: Option<Unsupported>,
    pub max_stream_duration: Option<MaxStreamDuration>,
}

impl RouteAction {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

    /// The route timeout: 15 s when unset, zero when disabled (`0s`).
    pub fn timeout(&self) -> std::time::Duration {
        self.timeout.unwrap_or(Self::DEFAULT_TIMEOUT).0
    }

    /// The clusters this action names in config (not `cluster_header` ones).
    pub fn cluster_names(&self) -> Vec<&str> {
        match (&self.cluster, &self.weighted_clusters) {
            (Some(c), _) => vec![c.as_str()],
            (None, Some(w)) => w.clusters.iter().filter(|c| !c.name.is_empty()).map(|c| c.name.as_str()).collect(),
            (None, None) => vec![],
        }
    }

    fn validate(&self, at: &str, v: &mut Validator, clusters: Option<&std::collections::HashSet<&str>>) {
        v.oneof(
            at,
            &[
                ("cluster", self.cluster.is_some()),
                ("cluster_header", self.cluster_header.is_some()),
                ("weighted_clusters", self.weighted_clusters.is_some()),
            ],
            true,
        );
        if let Some(cluster) = &self.cluster {
            v.non_empty(&format!("{at}.cluster"), cluster);
            if let Some(known) = clusters {
                if !cluster.is_empty() && !known.contains(cluster.as_str()) {
                    v.error(&format!("{at}.cluster"), format!("route: unknown cluster '{cluster}'"));
                }
            }
        }
        if let Some(header) = &self.cluster_header {
            v.non_empty(&format!("{at}.cluster_header"), header);
        }
        if let Some(w) = &self.weighted_clusters {
            w.validate(&format!("{at}.weighted_clusters"), v, clusters);
        }
        v.oneof(
            at,
            &[
                ("host_rewrite_literal", self.host_rewrite_literal.is_some()),
                ("auto_host_rewrite", self.auto_host_rewrite.is_some()),
                ("host_rewrite_header", self.host_rewrite_header.is_some()),
                ("host_rewrite_path_regex", self.host_rewrite_path_regex.is_some()),
            ],
            false,
        );
        if !self.prefix_rewrite.is_empty() && self.regex_rewrite.is_some() {
            v.error(at, "Specify only one of prefix_rewrite, regex_rewrite or path_rewrite_policy");
        }
        if let Some(retry) = &self.retry_policy {
            retry.validate(&format!("{at}.retry_policy"), v);
        }
        mirror_policies(&format!("{at}.request_mirror_policies"), &self.request_mirror_policies, v, clusters);
        for (i, hash) in self.hash_policy.iter().enumerate() {
            hash.validate(&format!("{at}.hash_policy[{i}]"), v);
        }
        if let Some(cors) = &self.cors {
            cors.validate(&format!("{at}.cors"), v);
        }
        for (i, upgrade) in self.upgrade_configs.iter().enumerate() {
            v.non_empty(&format!("{at}.upgrade_configs[{i}].upgrade_type"), &upgrade.upgrade_type);
        }
    }
}

/// `RouteAction.ClusterNotFoundResponseCode`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum ClusterNotFoundResponseCode {
    #[default]
    #[serde(rename = "SERVICE_UNAVAILABLE")]
    ServiceUnavailable,
    #[serde(rename = "NOT_FOUND")]
    NotFound,
    #[serde(rename = "INTERNAL_SERVER_ERROR")]
    InternalServerError,
}

impl ClusterNotFoundResponseCode {
    pub fn status(self) -> u16 {
        match self {
            ClusterNotFoundResponseCode::ServiceUnavailable => 503,
            ClusterNotFoundResponseCode::NotFound => 404,
            ClusterNotFoundResponseCode::InternalServerError => 500,
        }
    }
}

/// `envoy.config.route.v3.WeightedCluster`: the request goes to one cluster, picked by weight.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WeightedCluster {
    /// At least one.
    #[serde(default)]
    pub clusters: Vec<ClusterWeight>,
    /// Deprecated and ignored by Envoy, which uses the sum of the weights.
    pub total_weight: Option<u32>,
    #[serde(default)]
    pub runtime_key_prefix: String,
    /// A request header carrying the random value (a u64) that picks the cluster, so several
    /// proxy layers pick consistently; absent or invalid: a random value.
    #[serde(default)]
    pub header_name: String,
}

impl WeightedCluster {
    /// The sum of the weights, the range the random value is taken modulo.
    pub fn total_weight(&self) -> u64 {
        self.clusters.iter().map(|c| u64::from(c.weight.unwrap_or(0))).sum()
    }

    fn validate(&self, at: &str, v: &mut Validator, clusters: Option<&std::collections::HashSet<&str>>) {
        if self.clusters.is_empty() {
            v.error(&format!("{at}.clusters"), "value must contain at least 1 item(s)");
        }
        for (i, c) in self.clusters.iter().enumerate() {
            let c_at = format!("{at}.clusters[{i}]");
            match (c.name.is_empty(), c.cluster_header.is_empty()) {
                (true, true) => v.error(&c_at, "At least one of name or cluster_header need to be specified"),
                (false, false) => v.error(&c_at, "Only one of name or cluster_header can be specified"),
                _ => {}
            }
            if c.weight.is_none() {
                v.error(&format!("{c_at}.weight"), "Field 'weight' is missing");
            }
            if let Some(known) = clusters {
                if !c.name.is_empty() && !known.contains(c.name.as_str()) {
                    v.error(&format!("{c_at}.name"), format!("route: unknown weighted cluster '{}'", c.name));
                }
            }
            headers_to_add(&c_at, "request_headers_to_add", &c.request_headers_to_add, v);
            headers_to_add(&c_at, "response_headers_to_add", &c.response_headers_to_add, v);
            crate::extensions::validate_per_filter_configs(
                &format!("{c_at}.typed_per_filter_config"),
                &c.typed_per_filter_config,
                v,
            );
        }
        if !self.clusters.is_empty() && self.clusters.iter().all(|c| c.weight.is_some()) {
            if self.total_weight() == 0 {
                v.error(at, "Sum of weights in the weighted_cluster must be greater than 0.");
            } else if self.total_weight() > u64::from(u32::MAX) {
                v.error(at, format!("The sum of weights of all weighted clusters exceeds {}", u32::MAX));
            }
        }
    }
}

/// `WeightedCluster.ClusterWeight`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterWeight {
    /// One of `name` or `cluster_header`.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub cluster_header: String,
    /// Required (Envoy refuses an entry without it); 0 is valid and never picked.
    pub weight: Option<u32>,
    pub metadata_match: Option<Unsupported>,
    #[serde(default)]
    pub request_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default)]
    pub request_headers_to_remove: Vec<String>,
    #[serde(default)]
    pub response_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default)]
    pub response_headers_to_remove: Vec<String>,
    #[serde(default, deserialize_with = "crate::extensions::deserialize_per_filter_configs")]
    pub typed_per_filter_config: BTreeMap<String, FilterPerRouteConfig>,
    pub host_rewrite_literal: Option<String>,
}

/// `RouteAction.UpgradeConfig`: turns an upgrade (`websocket`, `CONNECT`) on or off for a route.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UpgradeConfig {
    /// Case-insensitive, e.g. `websocket` or `CONNECT`.
    #[serde(default)]
    pub upgrade_type: String,
    /// Default true.
    pub enabled: Option<bool>,
    pub connect_config: Option<ConnectConfig>,
}

/// `UpgradeConfig.ConnectConfig`: CONNECT is terminated here and its payload sent raw upstream.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConnectConfig {
    pub proxy_protocol_config: Option<Unsupported>,
    /// Also forward a POST body as raw TCP.
    #[serde(default)]
    pub allow_post: bool,
}

/// `RouteAction.MaxStreamDuration`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MaxStreamDuration {
    /// Overrides the connection manager's `max_stream_duration`; 0 disables it for the route.
    pub max_stream_duration: Option<Duration>,
    /// Use the request's `grpc-timeout`, capped at this (0: uncapped).
    pub grpc_timeout_header_max: Option<Duration>,
    /// Subtracted from the `grpc-timeout` header.
    pub grpc_timeout_header_offset: Option<Duration>,
}

/// `RouteAction.HashPolicy`: one input of the request hash for hashing load balancers.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HashPolicy {
    pub header: Option<HashPolicyHeader>,
    pub cookie: Option<HashPolicyCookie>,
    pub connection_properties: Option<ConnectionProperties>,
    pub query_parameter: Option<HashPolicyQueryParameter>,
    pub filter_state: Option<Unsupported>,
    /// Stop at this policy when it produced a hash.
    #[serde(default)]
    pub terminal: bool,
}

impl HashPolicy {
    fn validate(&self, at: &str, v: &mut Validator) {
        v.oneof(
            at,
            &[
                ("header", self.header.is_some()),
                ("cookie", self.cookie.is_some()),
                ("connection_properties", self.connection_properties.is_some()),
                ("query_parameter", self.query_parameter.is_some()),
            ],
            true,
        );
        if let Some(h) = &self.header {
            v.non_empty(&format!("{at}.header.header_name"), &h.header_name);
        }
        if let Some(c) = &self.cookie {
            v.non_empty(&format!("{at}.cookie.name"), &c.name);
        }
        if let Some(q) = &self.query_parameter {
            v.non_empty(&format!("{at}.query_parameter.name"), &q.name);
        }
    }
}

/// `HashPolicy.Header`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HashPolicyHeader {
    #[serde(default)]
    pub header_name: String,
    pub regex_rewrite: Option<RegexMatchAndSubstitute>,
}

/// `HashPolicy.Cookie`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HashPolicyCookie {
    #[serde(default)]
    pub name: String,
    /// With a TTL, a missing cookie is generated (0: a session cookie).
    pub ttl: Option<Duration>,
    #[serde(default)]
    pub path: String,
    /// Extra attributes of a generated cookie (`SameSite=Strict`, `Secure`…).
    #[serde(default)]
    pub attributes: Vec<CookieAttribute>,
}

/// `RouteAction.HashPolicy.CookieAttribute`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CookieAttribute {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: String,
}

/// `HashPolicy.ConnectionProperties`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConnectionProperties {
    #[serde(default)]
    pub source_ip: bool,
}

/// `HashPolicy.QueryParameter`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HashPolicyQueryParameter {
    #[serde(default)]
    pub name: String,
}

/// `RouteAction.RequestMirrorPolicy`: a fire-and-forget copy of the request to another cluster,
/// with `-shadow` appended to its authority.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RequestMirrorPolicy {
    /// One of `cluster` or `cluster_header`.
    #[serde(default)]
    pub cluster: String,
    #[serde(default)]
    pub cluster_header: String,
    /// Absent: every request is mirrored.
    pub runtime_fraction: Option<RuntimeFractionalPercent>,
    /// Absent: the shadow inherits the parent span's sampling decision.
    pub trace_sampled: Option<bool>,
    #[serde(default)]
    pub disable_shadow_host_suffix_append: bool,
}

/// `envoy.config.route.v3.RetryPolicy`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Comma-separated conditions (`5xx,reset,connect-failure`), as `x-envoy-retry-on` and
    /// `x-envoy-retry-grpc-on`; see [`RETRY_ON`].
    #[serde(default)]
    pub retry_on: String,
    /// Retries after the first try (default 1), also bounded by the cluster's `max_retries`.
    pub num_retries: Option<u32>,
    /// Timeout of each try, started once the request is sent on an upstream connection (not
    /// while connecting). Absent (or 0, which Envoy reads as absent): only the route `timeout`
    /// bounds the tries.
    pub per_try_timeout: Option<Duration>,
    /// Each try fails after this long without upstream progress.
    pub per_try_idle_timeout: Option<Duration>,
    pub retry_priority: Option<Unsupported>,
    #[serde(default)]
    pub retry_host_predicate: Vec<RetryHostPredicate>,
    pub retry_options_predicates: Option<Unsupported>,
    /// Host picks per retry before accepting a host a predicate rejected; 0 (unset): 1.
    #[serde(default, deserialize_with = "crate::core::deserialize_int64")]
    pub host_selection_retry_max_attempts: i64,
    /// Statuses retried under `retriable-status-codes`.
    #[serde(default)]
    pub retriable_status_codes: Vec<u32>,
    /// Absent: 25 ms base, 250 ms maximum.
    pub retry_back_off: Option<RetryBackOff>,
    pub rate_limited_retry_back_off: Option<Unsupported>,
    /// Response headers that make a response retriable under `retriable-headers`.
    #[serde(default)]
    pub retriable_headers: Vec<HeaderMatcher>,
    /// The request is retried only if it matches one of these (when not empty).
    #[serde(default)]
    pub retriable_request_headers: Vec<HeaderMatcher>,
}

/// Every `retry_on` condition Envoy knows (HTTP, then gRPC). Envoy ignores any other token
/// (`parseRetryOn`'s validity result is dropped for routes), so legate loads such a policy too
/// and `--mode validate` warns about it.
pub const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

impl RetryPolicy {
    pub const DEFAULT_BASE_INTERVAL: Duration = Duration::from_millis(25);

    pub fn num_retries(&self) -> u32 {
        self.num_retries.unwrap_or(1)
    }

    /// The `retry_on` conditions, trimmed, empty items dropped.
    pub fn retry_on(&self) -> impl Iterator<Item = &str> {
        self.retry_on.split(',').map(str::trim).filter(|s| !s.is_empty())
    }

    pub fn host_selection_retry_max_attempts(&self) -> i64 {
        self.host_selection_retry_max_attempts.max(1)
    }

    /// Exponential back-off: base (default 25 ms) and maximum (default 10 × base).
    pub fn back_off(&self) -> (std::time::Duration, std::time::Duration) {
        let base = self.retry_back_off.as_ref().map_or(Self::DEFAULT_BASE_INTERVAL, |b| b.base_interval).0;
        // Envoy rounds a base below 1 ms up to 1 ms.
        let base = base.max(std::time::Duration::from_millis(1));
        let max = self.retry_back_off.as_ref().and_then(|b| b.max_interval).map_or(base * 10, |m| m.0);
        (base, max)
    }

    pub(crate) fn validate(&self, at: &str, v: &mut Validator) {
        if let Some(b) = &self.retry_back_off {
            let b_at = format!("{at}.retry_back_off");
            if b.base_interval.is_zero() {
                v.error(&format!("{b_at}.base_interval"), "value must be greater than 0s");
            }
            if let Some(max) = b.max_interval {
                if max.is_zero() {
                    v.error(&format!("{b_at}.max_interval"), "value must be greater than 0s");
                } else if max < b.base_interval {
                    v.error(
                        &format!("{b_at}.max_interval"),
                        "max_interval must be greater than or equal to the base_interval",
                    );
                }
            }
        }
        for (i, p) in self.retry_host_predicate.iter().enumerate() {
            v.non_empty(&format!("{at}.retry_host_predicate[{i}].name"), &p.name);
        }
        for (i, h) in self.retriable_headers.iter().enumerate() {
            h.validate(&format!("{at}.retriable_headers[{i}]"), v);
        }
        for (i, h) in self.retriable_request_headers.iter().enumerate() {
            h.validate(&format!("{at}.retriable_request_headers[{i}]"), v);
        }
    }
}

/// `RetryPolicy.RetryBackOff`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetryBackOff {
    /// Required, above 0; below 1 ms counts as 1 ms.
    pub base_interval: Duration,
    /// At least `base_interval`; default 10 × `base_interval`.
    pub max_interval: Option<Duration>,
}

/// `RetryPolicy.RetryHostPredicate`, resolved through the extension registry.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryHostPredicate {
    pub name: String,
    pub config: RetryHostPredicateConfig,
}

impl<'de> Deserialize<'de> for RetryHostPredicate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (name, config) =
            crate::extensions::deserialize_typed(d, crate::extensions::RETRY_HOST_PREDICATES, "retry host predicate")?;
        Ok(RetryHostPredicate { name, config })
    }
}

/// `envoy.config.route.v3.RedirectAction`: answer with a redirect to a URL built from the
/// request's.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedirectAction {
    /// The scheme becomes `https` (at most one of this and `scheme_redirect`).
    #[serde(default)]
    pub https_redirect: bool,
    pub scheme_redirect: Option<String>,
    #[serde(default)]
    pub host_redirect: String,
    /// 0: keep the port (dropped when it is the scheme's default).
    #[serde(default)]
    pub port_redirect: u32,
    /// At most one of `path_redirect`, `prefix_rewrite`, `regex_rewrite`. A query string in
    /// `path_redirect` replaces the request's.
    pub path_redirect: Option<String>,
    pub prefix_rewrite: Option<String>,
    pub regex_rewrite: Option<RegexMatchAndSubstitute>,
    #[serde(default)]
    pub response_code: RedirectResponseCode,
    #[serde(default)]
    pub strip_query: bool,
}

impl RedirectAction {
    fn validate(&self, at: &str, v: &mut Validator) {
        v.oneof(
            at,
            &[("https_redirect", self.https_redirect), ("scheme_redirect", self.scheme_redirect.is_some())],
            false,
        );
        v.oneof(
            at,
            &[
                ("path_redirect", self.path_redirect.is_some()),
                ("prefix_rewrite", self.prefix_rewrite.is_some()),
                ("regex_rewrite", self.regex_rewrite.is_some()),
            ],
            false,
        );
        if self.port_redirect > 65535 {
            v.error(
                &format!("{at}.port_redirect"),
                format!("invalid port {}: must be at most 65535", self.port_redirect),
            );
        }
    }
}

/// `RedirectAction.RedirectResponseCode`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum RedirectResponseCode {
    #[default]
    #[serde(rename = "MOVED_PERMANENTLY")]
    MovedPermanently,
    #[serde(rename = "FOUND")]
    Found,
    #[serde(rename = "SEE_OTHER")]
    SeeOther,
    #[serde(rename = "TEMPORARY_REDIRECT")]
    TemporaryRedirect,
    #[serde(rename = "PERMANENT_REDIRECT")]
    PermanentRedirect,
}

impl RedirectResponseCode {
    pub fn status(&self) -> u16 {
        match self {
            RedirectResponseCode::MovedPermanently => 301,
            RedirectResponseCode::Found => 302,
            RedirectResponseCode::SeeOther => 303,
            RedirectResponseCode::TemporaryRedirect => 307,
            RedirectResponseCode::PermanentRedirect => 308,
        }
    }
}

/// `envoy.config.route.v3.DirectResponseAction`: answer without going upstream.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DirectResponseAction {
    /// 200..=599.
    #[serde(default)]
    pub status: u32,
    /// Read when the config is loaded; no body when absent.
    pub body: Option<DataSource>,
    /// Formats the body per request (`%LOCAL_REPLY_BODY%` is `body`) and sets its
    /// `content-type`, as a local reply's `body_format`.
    pub body_format: Option<crate::access_log::SubstitutionFormatString>,
}

impl DirectResponseAction {
    /// `max_body` is the route configuration's `max_direct_response_body_size_bytes`.
    fn validate(&self, at: &str, v: &mut Validator, max_body: u32) {
        if let Some(format) = &self.body_format {
            format.validate(&format!("{at}.body_format"), v);
        }
        if !(200..600).contains(&self.status) {
            v.error(&format!("{at}.status"), format!("value must be inside range [200, 600) (got {})", self.status));
        }
        match self.body.as_ref().map(DataSource::read) {
            Some(Err(e)) => v.error(&format!("{at}.body"), e),
            Some(Ok(body)) if body.len() > max_body as usize => v.error(
                &format!("{at}.body"),
                format!("response body size is {} bytes; maximum is {max_body}", body.len()),
            ),
            _ => {}
        }
    }
}

/// `envoy.config.route.v3.CorsPolicy`, also the per-route config of the CORS filter
/// (`envoy.extensions.filters.http.cors.v3.CorsPolicy`, same fields).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CorsPolicy {
    /// An origin is allowed if any matcher matches it.
    #[serde(default)]
    pub allow_origin_string_match: Vec<StringMatcher>,
    /// `access-control-allow-methods`.
    #[serde(default)]
    pub allow_methods: String,
    /// `access-control-allow-headers`.
    #[serde(default)]
    pub allow_headers: String,
    /// `access-control-expose-headers`.
    #[serde(default)]
    pub expose_headers: String,
    /// `access-control-max-age`.
    #[serde(default)]
    pub max_age: String,
    pub allow_credentials: Option<bool>,
    /// Absent (and no `shadow_enabled`): enforced for every request.
    pub filter_enabled: Option<RuntimeFractionalPercent>,
    /// Evaluated and counted but not enforced, for this fraction.
    pub shadow_enabled: Option<RuntimeFractionalPercent>,
    pub allow_private_network_access: Option<bool>,
    /// Forward preflights whose origin does not match upstream (default true).
    pub forward_not_matching_preflights: Option<bool>,
}

impl CorsPolicy {
    pub(crate) fn validate(&self, at: &str, v: &mut Validator) {
        for (i, m) in self.allow_origin_string_match.iter().enumerate() {
            m.validate(&format!("{at}.allow_origin_string_match[{i}]"), v);
        }
    }
}

/// Checks `HeaderValueOption`s of `field` under `at`.
pub(crate) fn headers_to_add(at: &str, field: &str, options: &[HeaderValueOption], v: &mut Validator) {
    if options.len() > 1000 {
        v.error(&format!("{at}.{field}"), "value must contain no more than 1000 item(s)");
    }
    for (i, option) in options.iter().enumerate() {
        let o_at = format!("{at}.{field}[{i}]");
        v.non_empty(&format!("{o_at}.header.key"), &option.header.key);
        // Envoy's HeaderParser: `append` is only allowed with the default action.
        if option.append.is_some() && option.append_action != Default::default() {
            v.error(&o_at, "Both append and append_action are set and it's not allowed");
        }
    }
}

fn mirror_policies(
    at: &str,
    policies: &[RequestMirrorPolicy],
    v: &mut Validator,
    clusters: Option<&std::collections::HashSet<&str>>,
) {
    for (i, p) in policies.iter().enumerate() {
        let p_at = format!("{at}[{i}]");
        match (p.cluster.is_empty(), p.cluster_header.is_empty()) {
            (true, true) => {
                v.error(&p_at, "Exactly one of cluster or cluster_header in request mirror policy need to be set")
            }
            (false, false) => v.error(
                &p_at,
                format!(
                    "Only one of cluster '{}' or cluster_header '{}' in request mirror policy can be specified",
                    p.cluster, p.cluster_header
                ),
            ),
            _ => {}
        }
        if let Some(known) = clusters {
            if !p.cluster.is_empty() && !known.contains(p.cluster.as_str()) {
                v.error(&format!("{p_at}.cluster"), format!("route: unknown shadow cluster '{}'", p.cluster));
            }
        }
    }
}

/// A sequence read into a vector with no spare capacity.
fn shrunk_vec<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Vec<T>, D::Error> {
    let mut items = Vec::<T>::deserialize(deserializer)?;
    items.shrink_to_fit();
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path;
    use serde_json::json;

    fn header(v: serde_json::Value) -> HeaderMatcher {
        path::from_value(v).unwrap()
    }

    fn errors_of(config: serde_json::Value, clusters: &[&str]) -> Vec<String> {
        let rc: RouteConfiguration = path::from_value(config).unwrap();
        let mut v = Validator::default();
        rc.validate("route_config", &mut v, &clusters.iter().copied().collect());
        v.errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn parses_a_front_proxy_route_table() {
        let rc: RouteConfiguration = path::from_value(json!({
            "name": "local_route",
            "virtual_hosts": [{
                "name": "backend", "domains": ["*"],
                "routes": [
                    {"match": {"prefix": "/service/1"}, "route": {"cluster": "service1", "timeout": "0s"}},
                    {"match": {"safe_regex": {"regex": "/api/.*"}, "headers": [{"name": ":method", "string_match": {"exact": "GET"}}]},
                     "route": {"weighted_clusters": {"clusters": [{"name": "a", "weight": 80}, {"name": "b", "weight": 20}]}}},
                    {"match": {"path": "/old"}, "redirect": {"path_redirect": "/new", "response_code": "PERMANENT_REDIRECT"}},
                    {"match": {"prefix": "/health"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}
                ]
            }]
        }))
        .unwrap();
        let routes = &rc.virtual_hosts[0].routes;
        assert_eq!(routes[0].route.as_ref().unwrap().timeout(), std::time::Duration::ZERO);
        assert_eq!(routes[1].route.as_ref().unwrap().timeout(), std::time::Duration::from_secs(15));
        assert_eq!(routes[1].route.as_ref().unwrap().cluster_names(), ["a", "b"]);
        assert_eq!(routes[2].redirect.as_ref().unwrap().response_code.status(), 308);
        assert!(routes[0].r#match.case_sensitive());
        assert!(rc.validate_clusters());
        assert_eq!(rc.max_direct_response_body_size_bytes(), 4096);
    }

    #[test]
    fn header_matcher_follows_envoy_semantics() {
        // Missing header: only `present_match: false` (or inverted `true`) matches.
        assert!(!header(json!({"name": "x"})).matches(None));
        assert!(header(json!({"name": "x"})).matches(Some("anything")));
        assert!(header(json!({"name": "x", "present_match": false})).matches(None));
        assert!(!header(json!({"name": "x", "present_match": false})).matches(Some("v")));
        assert!(header(json!({"name": "x", "present_match": true, "invert_match": true})).matches(None));
        assert!(!header(json!({"name": "x", "exact_match": "v", "invert_match": true})).matches(None));
        assert!(header(json!({"name": "x", "string_match": {"exact": ""}, "treat_missing_header_as_empty": true}))
            .matches(None));
        // Legacy: an empty exact match is a presence match.
        assert!(header(json!({"name": "x", "exact_match": ""})).matches(Some("v")));
        let range = header(json!({"name": "x", "range_match": {"start": -10, "end": 0}}));
        assert!(range.matches(Some("-1")) && !range.matches(Some("0")) && !range.matches(Some("-1x")));
        assert!(header(json!({"name": "x", "safe_regex_match": {"regex": "\\d{3}"}, "invert_match": true}))
            .matches(Some("1234")));
        assert!(header(json!({"name": "x", "prefix_match": "ab"})).matches(Some("abc")));
    }

    #[test]
    fn query_parameter_matcher() {
        let m: QueryParameterMatcher = path::from_value(json!({"name": "debug"})).unwrap();
        assert!(m.matches(Some("")) && !m.matches(None));
        let m: QueryParameterMatcher = path::from_value(json!({"name": "v", "string_match": {"prefix": "2"}})).unwrap();
        assert!(m.matches(Some("2.1")) && !m.matches(Some("1")));
        let m: QueryParameterMatcher = path::from_value(json!({"name": "v", "present_match": false})).unwrap();
        assert!(m.matches(Some("x")), "Envoy requires presence even for present_match: false");
    }

    #[test]
    fn unknown_clusters_are_reported_with_envoy_wording() {
        let errors = errors_of(
            json!({"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
                {"match": {"prefix": "/"}, "route": {"cluster": "nope",
                    "request_mirror_policies": [{"cluster": "shadow"}]}},
                {"match": {"prefix": "/w"}, "route": {"weighted_clusters": {"clusters": [{"name": "x", "weight": 1}]}}}
            ]}]}),
            &["known"],
        );
        assert!(
            errors.contains(
                &"route_config.virtual_hosts[0].routes[0].route.cluster: route: unknown cluster 'nope'".to_string()
            ),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.contains(
                "routes[0].route.request_mirror_policies[0].cluster: route: unknown shadow cluster 'shadow'"
            )),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("weighted_clusters.clusters[0].name: route: unknown weighted cluster 'x'")),
            "{errors:?}"
        );
    }

    #[test]
    fn validate_clusters_false_skips_the_check() {
        let errors = errors_of(
            json!({"validate_clusters": false, "virtual_hosts": [{"name": "v", "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "later"}}]}]}),
            &[],
        );
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn duplicate_domains_wildcards_and_names() {
        let errors = errors_of(
            json!({"name": "rc", "virtual_hosts": [
                {"name": "a", "domains": ["*", "Example.com"]},
                {"name": "a", "domains": ["*", "example.com"]}
            ]}),
            &[],
        );
        assert!(
            errors
                .iter()
                .any(|e| e
                    .ends_with("virtual_hosts[1].domains[0]: Only a single wildcard domain is permitted in route rc")),
            "{errors:?}"
        );
        assert!(errors.iter().any(|e| e.ends_with("virtual_hosts[1].domains[1]: Only unique values for domains are permitted. Duplicate entry of domain example.com in route rc")), "{errors:?}");
        assert!(
            errors.iter().any(|e| e.contains("virtual_hosts[1].name: duplicate virtual host name 'a'")),
            "{errors:?}"
        );
    }

    #[test]
    fn route_needs_exactly_one_action_and_path_specifier() {
        let errors = errors_of(
            json!({"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
                {"match": {"prefix": "/", "path": "/x"}, "direct_response": {"status": 200}, "redirect": {}},
                {"match": {}}
            ]}]}),
            &[],
        );
        let joined = errors.join("\n");
        assert!(joined.contains("routes[0].match: only one of prefix, path, safe_regex, connect_matcher or path_separated_prefix may be set"), "{joined}");
        assert!(joined.contains("routes[0]: only one of route, redirect or direct_response may be set"), "{joined}");
        assert!(joined.contains("routes[1].match: one of prefix, path, safe_regex, connect_matcher or path_separated_prefix is required"), "{joined}");
        assert!(joined.contains("routes[1]: one of route, redirect or direct_response is required"), "{joined}");
    }

    #[test]
    fn weighted_clusters_sum_and_missing_weight() {
        let errors = errors_of(
            json!({"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
                {"match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": [{"name": "a", "weight": 0}]}}},
                {"match": {"prefix": "/b"}, "route": {"weighted_clusters": {"clusters": [{"name": "a"}]}}}
            ]}]}),
            &["a"],
        );
        let joined = errors.join("\n");
        assert!(
            joined.contains(
                "routes[0].route.weighted_clusters: Sum of weights in the weighted_cluster must be greater than 0."
            ),
            "{joined}"
        );
        assert!(
            joined.contains("routes[1].route.weighted_clusters.clusters[0].weight: Field 'weight' is missing"),
            "{joined}"
        );
    }

    #[test]
    fn direct_response_status_range() {
        let errors = errors_of(
            json!({"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
                {"match": {"prefix": "/"}, "direct_response": {"status": 600}}
            ]}]}),
            &[],
        );
        assert_eq!(errors, ["route_config.virtual_hosts[0].routes[0].direct_response.status: value must be inside range [200, 600) (got 600)"]);
    }

    #[test]
    fn direct_response_body_is_bounded() {
        let errors = errors_of(
            json!({"max_direct_response_body_size_bytes": 2, "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
                {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "abc"}}}
            ]}]}),
            &[],
        );
        assert_eq!(
            errors,
            ["route_config.virtual_hosts[0].routes[0].direct_response.body: response body size is 3 bytes; maximum is 2"]
        );
    }

    #[test]
    fn retry_policy_tokens_and_defaults() {
        let p: RetryPolicy = path::from_value(json!({
            "retry_on": "5xx, reset,connect-failure,unavailable", "host_selection_retry_max_attempts": "3",
            "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts"}]
        }))
        .unwrap();
        assert_eq!(p.num_retries(), 1);
        assert_eq!(p.host_selection_retry_max_attempts, 3);
        assert_eq!(p.retry_on().collect::<Vec<_>>(), ["5xx", "reset", "connect-failure", "unavailable"]);
        assert_eq!(p.retry_host_predicate[0].config, RetryHostPredicateConfig::PreviousHosts);
        assert_eq!(p.back_off(), (std::time::Duration::from_millis(25), std::time::Duration::from_millis(250)));
        let mut v = Validator::default();
        p.validate("rp", &mut v);
        assert!(v.errors.is_empty(), "{:?}", v.errors);

        // Envoy loads a policy naming a condition it does not know (and ignores the token).
        let unknown: RetryPolicy = path::from_value(json!({"retry_on": "5xx,gateway-eror"})).unwrap();
        let mut v = Validator::default();
        unknown.validate("rp", &mut v);
        assert!(v.errors.is_empty(), "{:?}", v.errors);
    }

    #[test]
    fn unknown_retry_host_predicate_is_refused() {
        let err = path::from_value::<RetryPolicy>(json!({"retry_host_predicate": [{
            "name": "envoy.retry_host_predicates.omit_canary_hosts",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.omit_canary_hosts.v3.OmitCanaryHostsPredicate"}
        }]}))
        .unwrap_err();
        assert_eq!(err.path, "retry_host_predicate[0].typed_config");
        assert!(
            err.message.starts_with(
                "Didn't find a registered implementation for 'envoy.retry_host_predicates.omit_canary_hosts'"
            ),
            "{}",
            err.message
        );
    }

    #[test]
    fn per_filter_configs_resolve_and_skip_optional() {
        let route: Route = path::from_value(json!({
            "match": {"prefix": "/"}, "route": {"cluster": "c"},
            "typed_per_filter_config": {
                "envoy.filters.http.cors": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
                    "allow_origin_string_match": [{"prefix": "*"}], "allow_methods": "GET"},
                "envoy.filters.http.buffer": {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": true},
                "envoy.filters.http.lua": {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "is_optional": true,
                    "config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute", "disabled": true}}
            }
        }))
        .unwrap();
        assert_eq!(route.typed_per_filter_config.len(), 2);
        assert!(matches!(route.typed_per_filter_config["envoy.filters.http.cors"], FilterPerRouteConfig::Cors(_)));
        assert_eq!(route.typed_per_filter_config["envoy.filters.http.buffer"], FilterPerRouteConfig::Disabled);

        let err = path::from_value::<Route>(json!({
            "match": {"prefix": "/"}, "route": {"cluster": "c"},
            "typed_per_filter_config": {"envoy.filters.http.lua":
                {"@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute", "disabled": true}}
        }))
        .unwrap_err();
        assert_eq!(err.path, "typed_per_filter_config.envoy.filters.http.lua");
        assert!(
            err.message.starts_with("Didn't find a registered implementation for 'envoy.filters.http.lua'"),
            "{}",
            err.message
        );
    }

    #[test]
    fn header_value_option_append_folding() {
        let o: HeaderValueOption =
            path::from_value(json!({"header": {"key": "x", "value": "1"}, "append": false})).unwrap();
        assert_eq!(o.action(), crate::core::HeaderAppendAction::OverwriteIfExistsOrAdd);
        let o: HeaderValueOption =
            path::from_value(json!({"header": {"key": "x", "value": "1"}, "append_action": "ADD_IF_ABSENT"})).unwrap();
        assert_eq!(o.action(), crate::core::HeaderAppendAction::AddIfAbsent);
        let both: HeaderValueOption = path::from_value(
            json!({"header": {"key": "x", "value": "1"}, "append": true, "append_action": "OVERWRITE_IF_EXISTS"}),
        )
        .unwrap();
        let mut v = Validator::default();
        headers_to_add("r", "request_headers_to_add", &[both], &mut v);
        assert_eq!(
            v.errors[0].to_string(),
            "r.request_headers_to_add[0]: Both append and append_action are set and it's not allowed"
        );
    }
}
