//! `envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit`
//! (`envoy.filters.http.local_ratelimit`): a token bucket per filter (or per route, or per
//! connection) that answers 429 when empty. Envoy page: "Local rate limit".

use serde::Deserialize;

use crate::core::{HeaderValueOption, HttpStatus, RuntimeFractionalPercent, TokenBucket};
use crate::unsupported::Unsupported;
use crate::validate::Validator;

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LocalRateLimit {
    /// Required; stats go under `<stat_prefix>.http_local_rate_limit.`.
    #[serde(default)]
    pub stat_prefix: String,
    /// Status of a limited request (default 429; below 400 also means 429).
    pub status: Option<HttpStatus>,
    /// May be absent on the filter when routes carry their own; required per route.
    pub token_bucket: Option<TokenBucket>,
    /// Fraction of requests the limit applies to. Absent: 0 %, the filter does nothing.
    pub filter_enabled: Option<RuntimeFractionalPercent>,
    /// Fraction of enabled requests actually refused. Absent: 0 %, only counted.
    pub filter_enforced: Option<RuntimeFractionalPercent>,
    /// Added to limited requests that are let through (enabled, not enforced); at most 10.
    #[serde(default)]
    pub request_headers_to_add_when_not_enforced: Vec<HeaderValueOption>,
    /// Added to 429 responses; at most 10.
    #[serde(default)]
    pub response_headers_to_add: Vec<HeaderValueOption>,
    pub descriptors: Option<Unsupported>,
    /// 0..=10; must match the route's rate limit stage.
    #[serde(default)]
    pub stage: u32,
    /// One bucket per downstream connection instead of one per filter.
    #[serde(default)]
    pub local_rate_limit_per_downstream_connection: bool,
    pub local_cluster_rate_limit: Option<Unsupported>,
    #[serde(default)]
    pub enable_x_ratelimit_headers: XRateLimitHeadersRfcVersion,
    pub vh_rate_limits: Option<Unsupported>,
    /// Default true; only matters with descriptors.
    pub always_consume_default_token_bucket: Option<bool>,
    /// gRPC calls get `RESOURCE_EXHAUSTED` instead of `UNAVAILABLE`.
    #[serde(default)]
    pub rate_limited_as_resource_exhausted: bool,
    pub rate_limits: Option<Unsupported>,
    pub max_dynamic_descriptors: Option<Unsupported>,
}

impl LocalRateLimit {
    /// Status of a refused request: 429 unless configured to 400 or above.
    pub fn status(&self) -> u16 {
        match self.status {
            Some(HttpStatus { code }) if code >= 400 => u16::try_from(code).unwrap_or(429),
            _ => 429,
        }
    }

    pub(crate) fn validate(&self, at: &str, v: &mut Validator) {
        v.non_empty(&format!("{at}.stat_prefix"), &self.stat_prefix);
        if let Some(bucket) = &self.token_bucket {
            let b_at = format!("{at}.token_bucket");
            if bucket.max_tokens == 0 {
                v.error(&format!("{b_at}.max_tokens"), "value must be greater than 0");
            }
            if bucket.tokens_per_fill == Some(0) {
                v.error(&format!("{b_at}.tokens_per_fill"), "value must be greater than 0");
            }
            // Envoy's local rate limiter refuses faster refills.
            if bucket.fill_interval.0 < std::time::Duration::from_millis(50) {
                v.error(&format!("{b_at}.fill_interval"), "local rate limit token bucket fill timer must be >= 50ms");
            }
        }
        if self.stage > 10 {
            v.error(&format!("{at}.stage"), "value must be less than or equal to 10");
        }
        for (field, headers) in [
            ("request_headers_to_add_when_not_enforced", &self.request_headers_to_add_when_not_enforced),
            ("response_headers_to_add", &self.response_headers_to_add),
        ] {
            if headers.len() > 10 {
                v.error(&format!("{at}.{field}"), "value must contain no more than 10 item(s)");
            }
            crate::route::headers_to_add(at, field, headers, v);
        }
    }
}

/// `envoy.extensions.common.ratelimit.v3.XRateLimitHeadersRFCVersion`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum XRateLimitHeadersRfcVersion {
    #[default]
    #[serde(rename = "OFF")]
    Off,
    /// `x-ratelimit-limit`, `-remaining`, `-reset` per draft 03.
    #[serde(rename = "DRAFT_VERSION_03")]
    DraftVersion03,
}
