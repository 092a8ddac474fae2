//! `envoy.extensions.filters.http.csrf.v3` (`envoy.filters.http.csrf`): state-changing requests
//! whose origin is not the host they go to are refused.

use serde::Deserialize;

use crate::core::RuntimeFractionalPercent;
use crate::matcher::StringMatcher;
use crate::validate::Validator;

/// `CsrfPolicy`: the filter's config, and a route's.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CsrfPolicy {
    /// Required: the share of requests checked and refused.
    pub filter_enabled: Option<RuntimeFractionalPercent>,
    /// The share of requests checked and only counted.
    pub shadow_enabled: Option<RuntimeFractionalPercent>,
    /// Origins allowed besides the request's own host.
    #[serde(default)]
    pub additional_origins: Vec<StringMatcher>,
}

impl CsrfPolicy {
    pub(crate) fn validate(&self, at: &str, v: &mut Validator) {
        if self.filter_enabled.is_none() {
            v.error(&format!("{at}.filter_enabled"), "value is required");
        }
        for (i, m) in self.additional_origins.iter().enumerate() {
            m.validate(&format!("{at}.additional_origins[{i}]"), v);
        }
    }
}
