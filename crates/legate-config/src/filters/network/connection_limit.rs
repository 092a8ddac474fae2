//! `envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit`.

use serde::Deserialize;

use crate::duration::Duration;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConnectionLimit {
    /// Stats go under `connection_limit.<stat_prefix>.`.
    pub stat_prefix: String,
    /// Connections above this many (on this filter chain, across workers) are closed.
    pub max_connections: u64,
    /// How long to wait before closing a connection over the limit (default: close at once).
    pub delay: Option<Duration>,
    pub runtime_enabled: Option<RuntimeFeatureFlag>,
}

/// `envoy.config.core.v3.RuntimeFeatureFlag`: the runtime's bool for `runtime_key`, else
/// `default_value`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RuntimeFeatureFlag {
    pub default_value: bool,
    #[serde(default)]
    pub runtime_key: String,
}
