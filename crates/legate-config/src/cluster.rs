//! `envoy.config.cluster.v3.Cluster`: a named group of upstream hosts.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::core::{Metadata, Percent, TransportSocket};
use crate::duration::Duration;
use crate::endpoint::ClusterLoadAssignment;
use crate::protocol::{Http1ProtocolOptions, Http2ProtocolOptions, HttpProtocolOptions, UpstreamHttpProtocolOptions};
use crate::unsupported::Unsupported;
use crate::validate::Validator;

pub use crate::extensions::ProtocolOptionsConfig;

/// A live cluster that sets more than a name, a type and a few scalars keeps this
/// (`upstream::cluster_info`): members most clusters leave unset are boxed (`Option<Box<_>>`,
/// 8 bytes), so that they cost nothing inline when absent.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub name: String,
    /// Replaces `name` in stat names.
    pub alt_stat_name: Option<Box<str>>,
    #[serde(rename = "type", default)]
    pub discovery_type: DiscoveryType,
    pub cluster_type: Option<Unsupported>,
    /// `EDS` clusters: where the endpoints come from.
    pub eds_cluster_config: Option<EdsClusterConfig>,
    /// Default 5 s (Envoy's).
    pub connect_timeout: Option<Duration>,
    /// Default 1 MiB.
    pub per_connection_buffer_limit_bytes: Option<u32>,
    #[serde(default)]
    pub lb_policy: LbPolicy,
    /// The typed form of the load balancer; it takes precedence over `lb_policy` and is
    /// written into the classic fields at load ([`Cluster::apply_load_balancing_policy`]).
    pub load_balancing_policy: Option<Box<crate::load_balancing_policy::LoadBalancingPolicy>>,
    /// Boxed, as the other members an EDS cluster leaves out (10,000 clusters carry them).
    pub load_assignment: Option<Box<ClusterLoadAssignment>>,
    /// Active health checks; legate runs at most one per cluster.
    #[serde(default)]
    pub health_checks: Vec<crate::health_check::HealthCheck>,
    /// Deprecated for `common_http_protocol_options.max_requests_per_connection` of the
    /// `envoy.extensions.upstreams.http.v3.HttpProtocolOptions` extension options.
    pub max_requests_per_connection: Option<u32>,
    #[serde(default)]
    pub circuit_breakers: CircuitBreakers,
    /// Deprecated for the `HttpProtocolOptions` extension options, like the next three.
    pub upstream_http_protocol_options: Option<Box<UpstreamHttpProtocolOptions>>,
    pub common_http_protocol_options: Option<Box<HttpProtocolOptions>>,
    pub http_protocol_options: Option<Box<Http1ProtocolOptions>>,
    /// Deprecated; its presence alone makes the cluster speak HTTP/2.
    pub http2_protocol_options: Option<Box<Http2ProtocolOptions>>,
    /// Keyed by extension name; legate knows `envoy.extensions.upstreams.http.v3.HttpProtocolOptions`.
    #[serde(default, deserialize_with = "crate::extensions::deserialize_protocol_options")]
    pub typed_extension_protocol_options: BTreeMap<String, ProtocolOptionsConfig>,
    /// How often DNS clusters re-resolve (default 5 s).
    pub dns_refresh_rate: Option<Duration>,
    /// Back-off after a failed resolution (default: `dns_refresh_rate`).
    pub dns_failure_refresh_rate: Option<Box<RefreshRate>>,
    /// Re-resolve when the answer's TTL runs out instead of every `dns_refresh_rate`.
    #[serde(default)]
    pub respect_dns_ttl: bool,
    #[serde(default)]
    pub dns_lookup_family: DnsLookupFamily,
    /// Deprecated for `typed_dns_resolver_config`, like the next two.
    #[serde(default)]
    pub dns_resolvers: Vec<crate::core::Address>,
    #[serde(default)]
    pub use_tcp_for_dns_lookups: bool,
    pub dns_resolution_config: Option<Box<crate::dns::DnsResolutionConfig>>,
    pub typed_dns_resolver_config: Option<Box<crate::dns::TypedDnsResolverConfig>>,
    pub wait_for_warm_on_init: Option<bool>,
    pub outlier_detection: Option<Box<crate::outlier_detection::OutlierDetection>>,
    pub cleanup_interval: Option<Box<Duration>>,
    /// Source address and socket options of upstream connections (e.g. TCP_USER_TIMEOUT).
    pub upstream_bind_config: Option<Box<crate::socket_option::BindConfig>>,
    pub lb_subset_config: Option<Unsupported>,
    pub ring_hash_lb_config: Option<Box<RingHashLbConfig>>,
    pub maglev_lb_config: Option<Box<MaglevLbConfig>>,
    pub original_dst_lb_config: Option<Unsupported>,
    pub least_request_lb_config: Option<Box<LeastRequestLbConfig>>,
    pub round_robin_lb_config: Option<Box<RoundRobinLbConfig>>,
    #[serde(default)]
    pub common_lb_config: CommonLbConfig,
    pub transport_socket: Option<Box<TransportSocket>>,
    pub transport_socket_matches: Option<Unsupported>,
    pub metadata: Option<Box<Metadata>>,
    /// Deprecated for `use_downstream_protocol_config` of the `HttpProtocolOptions` extension.
    #[serde(default)]
    pub protocol_selection: ClusterProtocolSelection,
    pub upstream_connection_options: Option<Box<UpstreamConnectionOptions>>,
    #[serde(default)]
    pub close_connections_on_host_health_failure: bool,
    #[serde(default)]
    pub ignore_health_on_host_removal: bool,
    pub filters: Option<Unsupported>,
    pub track_timeout_budgets: Option<Unsupported>,
    pub track_cluster_stats: Option<Unsupported>,
    pub preconnect_policy: Option<Unsupported>,
    #[serde(default)]
    pub connection_pool_per_downstream_connection: bool,
}

impl Cluster {
    /// Writes `load_balancing_policy`, when set, into `lb_policy` and the `*_lb_config`
    /// fields. The error's path is relative to the cluster.
    pub fn apply_load_balancing_policy(&mut self) -> Result<(), crate::path::PathError> {
        let Some(policy) = &self.load_balancing_policy else { return Ok(()) };
        let chosen = policy.choose().map_err(|e| crate::path::PathError {
            path: crate::path::join("load_balancing_policy", &e.path),
            message: e.message,
        })?;
        crate::load_balancing_policy::apply(self, chosen);
        Ok(())
    }

    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_DNS_REFRESH_RATE: Duration = Duration::from_secs(5);
    pub const DEFAULT_BUFFER_LIMIT: u32 = 1024 * 1024;

    pub fn connect_timeout(&self) -> std::time::Duration {
        self.connect_timeout.unwrap_or(Self::DEFAULT_CONNECT_TIMEOUT).0
    }

    pub fn dns_refresh_rate(&self) -> std::time::Duration {
        self.dns_refresh_rate.unwrap_or(Self::DEFAULT_DNS_REFRESH_RATE).0
    }

    /// The resolver of a DNS cluster, from whichever of Envoy's forms the config uses.
    pub fn dns_resolver(&self) -> crate::dns::DnsResolverConfig {
        crate::dns::resolver_config(
            self.typed_dns_resolver_config.as_deref(),
            self.dns_resolution_config.as_deref(),
            &self.dns_resolvers,
            self.use_tcp_for_dns_lookups,
        )
    }

    pub fn per_connection_buffer_limit_bytes(&self) -> u32 {
        self.per_connection_buffer_limit_bytes.unwrap_or(Self::DEFAULT_BUFFER_LIMIT)
    }

    /// The `<name>` of `cluster.<name>.` stats.
    pub fn stat_name(&self) -> &str {
        self.alt_stat_name.as_deref().unwrap_or(&self.name)
    }

    /// The `envoy.extensions.upstreams.http.v3.HttpProtocolOptions` extension options, if any.
    pub fn upstream_http_options(&self) -> Option<&crate::upstreams_http::HttpProtocolOptions> {
        self.typed_extension_protocol_options.values().map(|ProtocolOptionsConfig::Http(h)| h).next()
    }

    /// The HTTP protocol spoken to this cluster's hosts: the extension options first, then the
    /// deprecated cluster fields, as Envoy reads them; HTTP/1.1 by default.
    pub fn http_protocol(&self) -> UpstreamProtocol {
        if let Some(ext) = self.upstream_http_options() {
            if let Some(explicit) = &ext.explicit_http_config {
                if explicit.http2_protocol_options.is_some() {
                    return UpstreamProtocol::Http2;
                }
                if explicit.http_protocol_options.is_some() {
                    return UpstreamProtocol::Http1;
                }
            }
            if ext.use_downstream_protocol_config.is_some() {
                return UpstreamProtocol::UseDownstream;
            }
        }
        if self.protocol_selection == ClusterProtocolSelection::UseDownstreamProtocol {
            return UpstreamProtocol::UseDownstream;
        }
        if self.http2_protocol_options.is_some() {
            return UpstreamProtocol::Http2;
        }
        UpstreamProtocol::Http1
    }

    /// Upstream connection options: the extension's, else the deprecated field, else defaults
    /// (idle timeout 1 h). The deprecated `max_requests_per_connection` fills in when the
    /// options do not set it.
    pub fn upstream_common_http_protocol_options(&self) -> HttpProtocolOptions {
        let mut options = self
            .upstream_http_options()
            .and_then(|ext| ext.common_http_protocol_options.clone())
            .or_else(|| self.common_http_protocol_options.as_deref().cloned())
            .unwrap_or_default();
        if options.max_requests_per_connection.is_none() {
            options.max_requests_per_connection = self.max_requests_per_connection;
        }
        options
    }

    /// `upstream_http_protocol_options` (auto SNI and SAN): the extension's, else the
    /// deprecated cluster field.
    pub fn upstream_sni_options(&self) -> crate::protocol::UpstreamHttpProtocolOptions {
        self.upstream_http_options()
            .and_then(|ext| ext.upstream_http_protocol_options.clone())
            .or_else(|| self.upstream_http_protocol_options.as_deref().cloned())
            .unwrap_or_default()
    }

    /// HTTP/2 settings for upstream connections: the extension's (explicit or downstream-mode),
    /// else the deprecated field, else defaults.
    pub fn upstream_http2_options(&self) -> Http2ProtocolOptions {
        let ext = self.upstream_http_options();
        ext.and_then(|e| e.explicit_http_config.as_ref()?.http2_protocol_options.clone())
            .or_else(|| ext.and_then(|e| e.use_downstream_protocol_config.as_ref()?.http2_protocol_options.clone()))
            .or_else(|| self.http2_protocol_options.as_deref().cloned())
            .unwrap_or_default()
    }

    /// HTTP/1 settings for upstream connections, found like [`Self::upstream_http2_options`].
    pub fn upstream_http1_options(&self) -> Http1ProtocolOptions {
        let ext = self.upstream_http_options();
        ext.and_then(|e| e.explicit_http_config.as_ref()?.http_protocol_options.clone())
            .or_else(|| ext.and_then(|e| e.use_downstream_protocol_config.as_ref()?.http_protocol_options.clone()))
            .or_else(|| self.http_protocol_options.as_deref().cloned())
            .unwrap_or_default()
    }

    /// HTTP-related checks; `at` is this cluster's path.
    pub(crate) fn validate_http(&self, at: &str, v: &mut Validator) {
        for (name, ProtocolOptionsConfig::Http(options)) in &self.typed_extension_protocol_options {
            options.validate(&format!("{at}.typed_extension_protocol_options.{name}"), v);
        }
        if self.protocol_selection == ClusterProtocolSelection::UseConfiguredProtocol
            && self.http_protocol_options.is_some()
            && self.http2_protocol_options.is_some()
        {
            v.error(
                at,
                "cluster: Both HTTP1 and HTTP2 options may only be configured with non-default 'protocol_selection' values",
            );
        }
        if let Some(common) = &self.common_http_protocol_options {
            common.validate(&format!("{at}.common_http_protocol_options"), v);
        }
        if let Some(h2) = &self.http2_protocol_options {
            h2.validate(&format!("{at}.http2_protocol_options"), v);
        }
        for (field, thresholds) in [
            ("thresholds", &self.circuit_breakers.thresholds),
            ("per_host_thresholds", &self.circuit_breakers.per_host_thresholds),
        ] {
            for (i, t) in thresholds.iter().enumerate() {
                if let Some(budget) = &t.retry_budget {
                    if let Some(p) = &budget.budget_percent {
                        v.percent(&format!("{at}.circuit_breakers.{field}[{i}].retry_budget.budget_percent"), p);
                    }
                }
            }
        }
    }
}

/// Which HTTP protocol legate speaks to a cluster's hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    /// Prior knowledge (h2c) on plain TCP.
    Http2,
    /// The protocol of the downstream request.
    UseDownstream,
}

/// `Cluster.ClusterProtocolSelection`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum ClusterProtocolSelection {
    #[default]
    #[serde(rename = "USE_CONFIGURED_PROTOCOL")]
    UseConfiguredProtocol,
    #[serde(rename = "USE_DOWNSTREAM_PROTOCOL")]
    UseDownstreamProtocol,
}

/// `Cluster.DiscoveryType`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum DiscoveryType {
    /// Hosts are the IP addresses in `load_assignment`.
    #[default]
    #[serde(rename = "STATIC")]
    Static,
    /// Every address each host name resolves to is a host; re-resolved every `dns_refresh_rate`.
    #[serde(rename = "STRICT_DNS")]
    StrictDns,
    /// One host per name, connecting to the first address of the latest resolution.
    #[serde(rename = "LOGICAL_DNS")]
    LogicalDns,
    #[serde(rename = "EDS")]
    Eds,
    #[serde(rename = "ORIGINAL_DST")]
    OriginalDst,
}

/// `Cluster.LbPolicy`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum LbPolicy {
    #[default]
    #[serde(rename = "ROUND_ROBIN")]
    RoundRobin,
    #[serde(rename = "LEAST_REQUEST")]
    LeastRequest,
    #[serde(rename = "RANDOM")]
    Random,
    #[serde(rename = "RING_HASH")]
    RingHash,
    #[serde(rename = "MAGLEV")]
    Maglev,
    #[serde(rename = "CLUSTER_PROVIDED")]
    ClusterProvided,
    #[serde(rename = "LOAD_BALANCING_POLICY_CONFIG")]
    LoadBalancingPolicyConfig,
}

/// `Cluster.LeastRequestLbConfig`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LeastRequestLbConfig {
    /// Hosts sampled per pick (default 2: power of two choices).
    pub choice_count: Option<u32>,
    /// With unequal host weights, a host's weight is divided by (active requests + 1) to this
    /// power (default 1.0).
    pub active_request_bias: Option<crate::core::RuntimeDouble>,
    pub slow_start_config: Option<SlowStartConfig>,
}

/// `Cluster.RefreshRate`: exponential back-off between failed DNS resolutions.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RefreshRate {
    /// The first wait (required, ≥ 1 ms).
    pub base_interval: Option<Duration>,
    /// The longest wait (default 10 × `base_interval`).
    pub max_interval: Option<Duration>,
}

impl RefreshRate {
    pub fn base(&self) -> std::time::Duration {
        self.base_interval.map_or(std::time::Duration::ZERO, |d| d.0)
    }
    pub fn max(&self) -> std::time::Duration {
        self.max_interval.map_or(self.base() * 10, |d| d.0)
    }
}

/// `Cluster.RoundRobinLbConfig`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoundRobinLbConfig {
    pub slow_start_config: Option<SlowStartConfig>,
}

/// `Cluster.SlowStartConfig`: a host that just joined (or just passed its health check again)
/// gets a share of traffic that grows over `slow_start_window` instead of its full share at once.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SlowStartConfig {
    pub slow_start_window: Option<Duration>,
    /// How fast the share grows: the weight scales by (elapsed / window)^(1 / aggression)
    /// (default 1.0: linearly).
    pub aggression: Option<crate::core::RuntimeDouble>,
    /// The least share of its weight a host gets during the window (default 10 %).
    pub min_weight_percent: Option<Percent>,
}

impl SlowStartConfig {
    pub fn window(&self) -> std::time::Duration {
        self.slow_start_window.map_or(std::time::Duration::ZERO, |d| d.0)
    }
    pub fn aggression(&self) -> f64 {
        self.aggression.as_ref().map_or(1.0, |a| a.default_value)
    }
    pub fn min_weight_percent(&self) -> f64 {
        self.min_weight_percent.map_or(10.0, |p| p.value)
    }
}

/// `Cluster.CommonLbConfig.ConsistentHashingLbConfig`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConsistentHashingLbConfig {
    /// Refused at load when true: legate places hosts by address.
    #[serde(default)]
    pub use_hostname_for_hashing: bool,
    /// Bounded loads: no host takes more than this percentage of the average load (≥ 100);
    /// a key whose host is full goes to the next host of the ring or table.
    pub hash_balance_factor: Option<u32>,
}

/// `Cluster.CommonLbConfig.LocalityWeightedLbConfig`: no fields; its presence turns on
/// locality-weighted picking.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LocalityWeightedLbConfig {}

/// `Cluster.RingHashLbConfig`: the ring of the `RING_HASH` policy.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RingHashLbConfig {
    /// Fewest entries on the ring (default 1024, at most 8M).
    pub minimum_ring_size: Option<u64>,
    /// Most entries on the ring (default 8M, at most 8M).
    pub maximum_ring_size: Option<u64>,
    #[serde(default)]
    pub hash_function: HashFunction,
}

impl RingHashLbConfig {
    pub const DEFAULT_MINIMUM_RING_SIZE: u64 = 1024;
    /// Envoy's `validate.rules` bound on both sizes, and the default maximum.
    pub const MAX_RING_SIZE: u64 = 8 * 1024 * 1024;

    pub fn minimum_ring_size(&self) -> u64 {
        self.minimum_ring_size.unwrap_or(Self::DEFAULT_MINIMUM_RING_SIZE)
    }

    pub fn maximum_ring_size(&self) -> u64 {
        self.maximum_ring_size.unwrap_or(Self::MAX_RING_SIZE)
    }
}

/// `Cluster.RingHashLbConfig.HashFunction`: how host keys are placed on the ring.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum HashFunction {
    #[default]
    #[serde(rename = "XX_HASH")]
    XxHash,
    /// Refused at load: legate hashes with xxHash64 only.
    #[serde(rename = "MURMUR_HASH_2")]
    MurmurHash2,
}

/// `Cluster.MaglevLbConfig`: the lookup table of the `MAGLEV` policy.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MaglevLbConfig {
    /// Entries in the table: a prime, default 65537, at most 5000011.
    pub table_size: Option<u64>,
}

impl MaglevLbConfig {
    pub const DEFAULT_TABLE_SIZE: u64 = 65537;
    pub const MAX_TABLE_SIZE: u64 = 5_000_011;

    pub fn table_size(&self) -> u64 {
        self.table_size.unwrap_or(Self::DEFAULT_TABLE_SIZE)
    }
}

/// `Cluster.CommonLbConfig`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CommonLbConfig {
    /// Below this percentage of healthy hosts the LB ignores health (default 50 %).
    pub healthy_panic_threshold: Option<Percent>,
    pub zone_aware_lb_config: Option<Unsupported>,
    pub locality_weighted_lb_config: Option<LocalityWeightedLbConfig>,
    pub update_merge_window: Option<Duration>,
    #[serde(default)]
    pub ignore_new_hosts_until_first_hc: bool,
    #[serde(default)]
    pub close_connections_on_host_set_change: bool,
    pub consistent_hashing_lb_config: Option<ConsistentHashingLbConfig>,
    pub override_host_status: Option<Unsupported>,
}

impl CommonLbConfig {
    pub fn healthy_panic_threshold(&self) -> f64 {
        self.healthy_panic_threshold.map(|p| p.value).unwrap_or(50.0)
    }
}

/// `Cluster.DnsLookupFamily`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum DnsLookupFamily {
    /// IPv6 if the name has any v6 address, else IPv4 (Envoy's default).
    #[default]
    #[serde(rename = "AUTO")]
    Auto,
    #[serde(rename = "V4_ONLY")]
    V4Only,
    #[serde(rename = "V6_ONLY")]
    V6Only,
    #[serde(rename = "V4_PREFERRED")]
    V4Preferred,
    #[serde(rename = "ALL")]
    All,
}

/// `envoy.config.cluster.v3.CircuitBreakers`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakers {
    #[serde(default)]
    pub thresholds: Vec<Thresholds>,
    #[serde(default)]
    pub per_host_thresholds: Vec<Thresholds>,
}

impl CircuitBreakers {
    /// The thresholds for `priority`, Envoy's defaults when not given.
    pub fn for_priority(&self, priority: RoutingPriority) -> Thresholds {
        self.thresholds
            .iter()
            .find(|t| t.priority == priority)
            .cloned()
            .unwrap_or(Thresholds { priority, ..Default::default() })
    }
}

/// `CircuitBreakers.Thresholds`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    #[serde(default)]
    pub priority: RoutingPriority,
    pub max_connections: Option<u32>,
    pub max_pending_requests: Option<u32>,
    pub max_requests: Option<u32>,
    pub max_retries: Option<u32>,
    /// When set, replaces `max_retries` with a share of active requests.
    pub retry_budget: Option<RetryBudget>,
    /// Publishes `remaining_*` gauges.
    #[serde(default)]
    pub track_remaining: bool,
    pub max_connection_pools: Option<u32>,
}

impl Thresholds {
    pub fn max_connections(&self) -> u64 {
        self.max_connections.map_or(1024, u64::from)
    }
    pub fn max_pending_requests(&self) -> u64 {
        self.max_pending_requests.map_or(1024, u64::from)
    }
    pub fn max_requests(&self) -> u64 {
        self.max_requests.map_or(1024, u64::from)
    }
    pub fn max_retries(&self) -> u64 {
        self.max_retries.map_or(3, u64::from)
    }
    /// Unlimited by default.
    pub fn max_connection_pools(&self) -> u64 {
        self.max_connection_pools.map_or(u64::MAX, u64::from)
    }
}

/// `Thresholds.RetryBudget`: retries allowed as a share of active requests, with a floor.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetryBudget {
    /// Default 20 %.
    pub budget_percent: Option<Percent>,
    /// Retries always allowed regardless of the budget (default 3).
    pub min_retry_concurrency: Option<u32>,
}

impl RetryBudget {
    pub fn budget_percent(&self) -> f64 {
        self.budget_percent.map_or(20.0, |p| p.value)
    }

    pub fn min_retry_concurrency(&self) -> u32 {
        self.min_retry_concurrency.unwrap_or(3)
    }
}

/// `envoy.config.core.v3.RoutingPriority`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, Hash)]
pub enum RoutingPriority {
    #[default]
    #[serde(rename = "DEFAULT")]
    Default,
    #[serde(rename = "HIGH")]
    High,
}

/// `envoy.config.cluster.v3.UpstreamConnectionOptions`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConnectionOptions {
    pub tcp_keepalive: Option<TcpKeepalive>,
    #[serde(default)]
    pub set_local_interface_name_on_upstream_connections: bool,
    pub happy_eyeballs_config: Option<Unsupported>,
}

/// `envoy.config.core.v3.TcpKeepalive`: unset fields keep the system's values.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TcpKeepalive {
    pub keepalive_probes: Option<u32>,
    /// Seconds idle before the first probe.
    pub keepalive_time: Option<u32>,
    /// Seconds between probes.
    pub keepalive_interval: Option<u32>,
}

/// `Cluster.EdsClusterConfig`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EdsClusterConfig {
    pub eds_config: Option<crate::config_source::ConfigSource>,
    /// The `ClusterLoadAssignment` to subscribe to; the cluster's name when empty.
    #[serde(default)]
    pub service_name: String,
}
