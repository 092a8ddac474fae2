//! `envoy.config.endpoint.v3`: the hosts of a cluster, by locality and priority.

use serde::Deserialize;

use crate::core::{Address, Locality, Metadata};
use crate::unsupported::Unsupported;

/// `envoy.config.endpoint.v3.ClusterLoadAssignment`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterLoadAssignment {
    #[serde(default)]
    pub cluster_name: String,
    #[serde(default)]
    pub endpoints: Vec<LocalityLbEndpoints>,
    pub named_endpoints: Option<Unsupported>,
    pub policy: Option<Policy>,
}

impl ClusterLoadAssignment {
    /// Envoy's default overprovisioning factor, in percent.
    pub const DEFAULT_OVERPROVISIONING_FACTOR: u32 = 140;

    pub fn overprovisioning_factor(&self) -> u32 {
        self.policy.as_ref().and_then(|p| p.overprovisioning_factor).unwrap_or(Self::DEFAULT_OVERPROVISIONING_FACTOR)
    }
}

/// `ClusterLoadAssignment.Policy`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub drop_overloads: Option<Unsupported>,
    pub overprovisioning_factor: Option<u32>,
    pub endpoint_stale_after: Option<Unsupported>,
    #[serde(default)]
    pub weighted_priority_health: bool,
}

/// `envoy.config.endpoint.v3.LocalityLbEndpoints`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LocalityLbEndpoints {
    pub locality: Option<Locality>,
    pub metadata: Option<Metadata>,
    #[serde(default)]
    pub lb_endpoints: Vec<LbEndpoint>,
    pub load_balancing_weight: Option<u32>,
    #[serde(default)]
    pub priority: u32,
    pub proximity: Option<u32>,
    pub leds_cluster_locality_config: Option<Unsupported>,
}

/// `envoy.config.endpoint.v3.LbEndpoint`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LbEndpoint {
    pub endpoint: Option<Endpoint>,
    pub endpoint_name: Option<Unsupported>,
    #[serde(default)]
    pub health_status: HealthStatus,
    pub metadata: Option<Metadata>,
    /// At least 1; default 1.
    pub load_balancing_weight: Option<u32>,
}

/// `envoy.config.endpoint.v3.Endpoint`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub address: Address,
    pub health_check_config: Option<EndpointHealthCheckConfig>,
    #[serde(default)]
    pub hostname: String,
    pub additional_addresses: Option<Unsupported>,
}

/// `Endpoint.HealthCheckConfig`: how active health checks reach this endpoint.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EndpointHealthCheckConfig {
    /// Checks go to this port instead of the endpoint's (0: the endpoint's).
    #[serde(default)]
    pub port_value: u32,
    /// The `host` of HTTP checks of this endpoint.
    #[serde(default)]
    pub hostname: String,
    /// Checks go to this address instead (an IP address).
    pub address: Option<Address>,
    /// The endpoint is not actively checked (and counts as passing).
    #[serde(default)]
    pub disable_active_health_check: bool,
}

/// `envoy.config.core.v3.HealthStatus`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum HealthStatus {
    #[default]
    #[serde(rename = "UNKNOWN")]
    Unknown,
    #[serde(rename = "HEALTHY")]
    Healthy,
    #[serde(rename = "UNHEALTHY")]
    Unhealthy,
    #[serde(rename = "DRAINING")]
    Draining,
    #[serde(rename = "TIMEOUT")]
    Timeout,
    #[serde(rename = "DEGRADED")]
    Degraded,
}
