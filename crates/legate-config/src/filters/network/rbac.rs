//! `envoy.extensions.filters.network.rbac.v3.RBAC` (`envoy.filters.network.rbac`): connections
//! allowed or closed by role-based policies on the connection (addresses, TLS identity).

use serde::Deserialize;

use crate::duration::Duration;
use crate::rbac::Rbac;
use crate::unsupported::Unsupported;
use crate::validate::Validator;

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetworkRbac {
    /// Without rules every connection is allowed.
    pub rules: Option<Rbac>,
    pub matcher: Option<Unsupported>,
    /// Evaluated and counted, never enforced.
    pub shadow_rules: Option<Rbac>,
    pub shadow_matcher: Option<Unsupported>,
    #[serde(default)]
    pub shadow_rules_stat_prefix: String,
    /// Required: stats go under `<stat_prefix>.rbac.`.
    #[serde(default)]
    pub stat_prefix: String,
    #[serde(default)]
    pub enforcement_type: EnforcementType,
    /// How long a denied connection is held (reading stopped) before it is closed.
    pub delay_deny: Option<Duration>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum EnforcementType {
    #[default]
    #[serde(rename = "ONE_TIME_ON_FIRST_BYTE")]
    OneTimeOnFirstByte,
    #[serde(rename = "CONTINUOUS")]
    Continuous,
}

impl NetworkRbac {
    pub(crate) fn validate(&self, at: &str, v: &mut Validator) {
        v.non_empty(&format!("{at}.stat_prefix"), &self.stat_prefix);
        if let Some(rules) = &self.rules {
            rules.validate(&format!("{at}.rules"), v);
        }
        if let Some(rules) = &self.shadow_rules {
            rules.validate(&format!("{at}.shadow_rules"), v);
        }
    }
}
