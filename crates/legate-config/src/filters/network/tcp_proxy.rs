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
    /// Carries the connection in an HTTP/1.1 `CONNECT` tunnel to the upstream.
    pub tunneling_config: Option<TunnelingConfig>,
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

/// `TcpProxy.TunnelingConfig`: the upstream is an HTTP proxy, asked to `CONNECT` to `hostname`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TunnelingConfig {
    /// The `CONNECT` target, `host:port`.
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub use_post: bool,
    #[serde(default)]
    pub headers_to_add: Vec<crate::core::HeaderValueOption>,
    #[serde(default)]
    pub propagate_response_headers: bool,
    #[serde(default)]
    pub post_path: String,
    #[serde(default)]
    pub propagate_response_trailers: bool,
    pub request_id_extension: Option<Unsupported>,
    pub request_id_header: Option<Unsupported>,
    pub request_id_metadata_key: Option<Unsupported>,
}

impl TunnelingConfig {
    pub(crate) fn validate(&self, at: &str, v: &mut crate::validate::Validator) {
        v.non_empty(&format!("{at}.hostname"), &self.hostname);
        if self.hostname.contains('%') {
            v.error(
                &format!("{at}.hostname"),
                "substitution formatters in the tunnel hostname are not supported by legate yet",
            );
        }
        for (field, set) in [
            ("use_post", self.use_post),
            ("post_path", !self.post_path.is_empty()),
            ("propagate_response_headers", self.propagate_response_headers),
            ("propagate_response_trailers", self.propagate_response_trailers),
        ] {
            if set {
                v.error(&format!("{at}.{field}"), "this Envoy field is not supported by legate yet");
            }
        }
        for (i, h) in self.headers_to_add.iter().enumerate() {
            if h.header.value.contains('%') {
                v.error(
                    &format!("{at}.headers_to_add[{i}].header.value"),
                    "substitution formatters in tunnel headers are not supported by legate yet",
                );
            }
        }
    }
}
