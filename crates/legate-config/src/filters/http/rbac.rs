//! `envoy.extensions.filters.http.rbac.v3` (`envoy.filters.http.rbac`): requests allowed or
//! denied (403) by role-based policies, and shadow policies that are only counted.

use serde::Deserialize;

use crate::rbac::Rbac;
use crate::unsupported::Unsupported;
use crate::validate::Validator;

/// `RBAC`. Without `rules` every request is allowed.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RbacFilter {
    pub rules: Option<Rbac>,
    /// Between `rbac.` and the enforced stats' names.
    #[serde(default)]
    pub rules_stat_prefix: String,
    pub matcher: Option<Unsupported>,
    /// Evaluated and counted, never enforced.
    pub shadow_rules: Option<Rbac>,
    pub shadow_matcher: Option<Unsupported>,
    /// Between `rbac.` and the shadow stats' names.
    #[serde(default)]
    pub shadow_rules_stat_prefix: String,
    /// Counts each policy's decisions (`rbac.policy.<name>.allowed`…).
    #[serde(default)]
    pub track_per_rule_stats: bool,
}

impl RbacFilter {
    pub(crate) fn validate(&self, at: &str, v: &mut Validator) {
        if let Some(rules) = &self.rules {
            rules.validate(&format!("{at}.rules"), v);
        }
        if let Some(rules) = &self.shadow_rules {
            rules.validate(&format!("{at}.shadow_rules"), v);
        }
    }
}

/// `RBACPerRoute`: the route's own policies; absent `rbac` turns the filter off there.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RbacPerRoute {
    pub rbac: Option<RbacFilter>,
}

impl RbacPerRoute {
    pub(crate) fn validate(&self, at: &str, v: &mut Validator) {
        if let Some(rbac) = &self.rbac {
            rbac.validate(&format!("{at}.rbac"), v);
        }
    }
}
