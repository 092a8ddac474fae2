//! `envoy.extensions.filters.http.health_check.v3.HealthCheck` (`envoy.filters.http.health_check`):
//! answers health check requests (those matching `headers`) itself, or passes them through.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::core::Percent;
use crate::duration::Duration;
use crate::route::HeaderMatcher;
use crate::validate::Validator;

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Required by the proto. false: answer 200 (or 503 while draining or failed) without
    /// going upstream; true: forward, and mark the request as a health check.
    pub pass_through_mode: Option<bool>,
    /// In pass-through mode, reuse an upstream answer for this long.
    pub cache_time: Option<Duration>,
    /// Answer 503 when a listed cluster has fewer healthy hosts than this percentage
    /// (not in pass-through mode).
    #[serde(default)]
    pub cluster_min_healthy_percentages: BTreeMap<String, Percent>,
    /// A request is a health check when it matches all of these (usually `:path`).
    #[serde(default)]
    pub headers: Vec<HeaderMatcher>,
}

impl HealthCheck {
    pub(crate) fn validate(&self, at: &str, v: &mut Validator) {
        if self.pass_through_mode.is_none() {
            v.error(&format!("{at}.pass_through_mode"), "value is required");
        }
        for (cluster, percent) in &self.cluster_min_healthy_percentages {
            v.percent(&format!("{at}.cluster_min_healthy_percentages.{cluster}"), percent);
        }
        for (i, h) in self.headers.iter().enumerate() {
            h.validate(&format!("{at}.headers[{i}]"), v);
        }
    }
}
