//! `envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy`.

use serde::Deserialize;

use crate::duration::Duration;
use crate::unsupported::Unsupported;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TcpProxy {
    /// Stats go under `tcp.<stat_prefix>.`.
    pub stat_prefix: String,
    /// The upstream cluster (one of `cluster` / `weighted_clusters`).
    pub cluster: Option<String>,
    pub weighted_clusters: Option<WeightedCluster>,
    pub on_demand: Option<Unsupported>,
    pub metadata_match: Option<Unsupported>,
    /// Closes both sides after this long with no bytes either way. Envoy's default is 1 hour;
    /// `0s` disables it.
    pub idle_timeout: Option<Duration>,
    pub access_log: Option<Unsupported>,
    /// Connect attempts before giving up (default 1, at least 1).
    pub max_connect_attempts: Option<u32>,
    pub hash_policy: Option<Unsupported>,
    pub tunneling_config: Option<Unsupported>,
    /// Closes the downstream connection this long after it was accepted.
    pub max_downstream_connection_duration: Option<Duration>,
    pub access_log_flush_interval: Option<Unsupported>,
    pub access_log_options: Option<Unsupported>,
    pub flush_access_log_on_connected: Option<Unsupported>,
    pub backoff_options: Option<Unsupported>,
}

impl TcpProxy {
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

    /// The idle timeout to apply, `None` when disabled.
    pub fn idle_timeout(&self) -> Option<std::time::Duration> {
        let t = self.idle_timeout.unwrap_or(Self::DEFAULT_IDLE_TIMEOUT);
        (!t.is_zero()).then_some(t.0)
    }

    pub fn max_connect_attempts(&self) -> u32 {
        self.max_connect_attempts.unwrap_or(1)
    }

    /// Every cluster this filter may send to.
    pub fn cluster_names(&self) -> Vec<&str> {
        match (&self.cluster, &self.weighted_clusters) {
            (Some(c), _) => vec![c.as_str()],
            (None, Some(w)) => w.clusters.iter().map(|c| c.name.as_str()).collect(),
            (None, None) => vec![],
        }
    }
}

/// `TcpProxy.WeightedCluster`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WeightedCluster {
    pub clusters: Vec<ClusterWeight>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterWeight {
    pub name: String,
    pub weight: u32,
    pub metadata_match: Option<Unsupported>,
}
