//! `envoy.extensions.filters.http.router.v3.Router`: the terminal HTTP filter that sends the
//! request upstream along the matched route (`envoy.filters.http.router`).

use serde::Deserialize;

use crate::access_log::AccessLog;
use crate::unsupported::Unsupported;
use crate::validate::Validator;

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Router {
    /// Per-upstream-cluster request stats by status code class (default true).
    pub dynamic_stats: Option<bool>,
    /// Deprecated tracing option; legate does not trace, so true is a no-op either way.
    #[serde(default)]
    pub start_child_span: bool,
    /// Logged once per upstream attempt.
    #[serde(default)]
    pub upstream_log: Vec<AccessLog>,
    pub upstream_log_options: Option<Unsupported>,
    /// Do not add `x-envoy-*` headers (upstream timeouts, attempt counts, upstream time).
    #[serde(default)]
    pub suppress_envoy_headers: bool,
    /// `x-envoy-*` request headers checked for validity; an invalid one gets a 400.
    #[serde(default)]
    pub strict_check_headers: Vec<String>,
    /// Use `x-envoy-expected-rq-timeout-ms` (not `x-envoy-upstream-rq-timeout-ms`) as the
    /// timeout, for a chain of proxies sharing one deadline.
    #[serde(default)]
    pub respect_expected_rq_timeout: bool,
    #[serde(default)]
    pub suppress_grpc_request_failure_code_stats: bool,
    pub upstream_http_filters: Option<Unsupported>,
}

/// The headers `strict_check_headers` may name, as Envoy's router filter.
pub const STRICT_CHECK_HEADERS: &[&str] = &[
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-max-retries",
    "x-envoy-retry-grpc-on",
    "x-envoy-retry-on",
];

impl Router {
    pub fn dynamic_stats(&self) -> bool {
        self.dynamic_stats.unwrap_or(true)
    }

    pub(crate) fn validate(&self, at: &str, v: &mut Validator) {
        for (i, header) in self.strict_check_headers.iter().enumerate() {
            if !STRICT_CHECK_HEADERS.contains(&header.as_str()) {
                v.error(
                    &format!("{at}.strict_check_headers[{i}]"),
                    format!("value must be in list [{}]", STRICT_CHECK_HEADERS.join(", ")),
                );
            }
        }
        for (i, log) in self.upstream_log.iter().enumerate() {
            log.validate(&format!("{at}.upstream_log[{i}]"), v);
        }
    }
}
