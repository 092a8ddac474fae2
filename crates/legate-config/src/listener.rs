//! `envoy.config.listener.v3`: listeners, filter chains and their match criteria.

use serde::Deserialize;

use crate::core::{Address, CidrRange, Metadata, TrafficDirection, TransportSocket};
use crate::duration::Duration;
use crate::extensions::{ListenerFilter, NetworkFilter};
use crate::unsupported::Unsupported;

/// `envoy.config.listener.v3.Listener`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Unique name; Envoy generates one when absent, legate uses the address (`0.0.0.0_10000`).
    pub name: Option<String>,
    pub address: Address,
    pub additional_addresses: Option<Unsupported>,
    /// Stats go under `listener.<stat_prefix>.` (default: the address, `listener.0.0.0.0_80.`).
    pub stat_prefix: Option<String>,
    #[serde(default)]
    pub filter_chains: Vec<FilterChain>,
    /// Used when no filter chain matches; without it such a connection is closed.
    pub default_filter_chain: Option<FilterChain>,
    pub filter_chain_matcher: Option<Unsupported>,
    #[serde(default)]
    pub listener_filters: Vec<ListenerFilter>,
    /// Default 15 s; 0 disables the timeout.
    pub listener_filters_timeout: Option<Duration>,
    #[serde(default)]
    pub continue_on_listener_filters_timeout: bool,
    /// Soft limit on each connection's read and write buffers (default 1 MiB).
    pub per_connection_buffer_limit_bytes: Option<u32>,
    pub metadata: Option<Metadata>,
    #[serde(default)]
    pub drain_type: DrainType,
    #[serde(default)]
    pub traffic_direction: TrafficDirection,
    /// Default true: each worker gets its own socket and the kernel balances connections.
    pub enable_reuse_port: Option<bool>,
    /// Default true.
    pub bind_to_port: Option<bool>,
    /// listen(2) backlog, default 128 as Envoy.
    pub tcp_backlog_size: Option<u32>,
    pub use_original_dst: Option<Unsupported>,
    pub transparent: Option<Unsupported>,
    pub freebind: Option<Unsupported>,
    pub socket_options: Option<Unsupported>,
    pub connection_balance_config: Option<Unsupported>,
    pub access_log: Option<Unsupported>,
    pub udp_listener_config: Option<Unsupported>,
    pub api_listener: Option<Unsupported>,
    pub internal_listener: Option<Unsupported>,
    pub max_connections_to_accept_per_socket_event: Option<u32>,
    #[serde(default)]
    pub ignore_global_conn_limit: bool,
    pub enable_mptcp: Option<Unsupported>,
}

impl Listener {
    pub const DEFAULT_BUFFER_LIMIT: u32 = 1024 * 1024;
    pub const DEFAULT_LISTENER_FILTERS_TIMEOUT: Duration = Duration::from_secs(15);

    pub fn per_connection_buffer_limit_bytes(&self) -> u32 {
        self.per_connection_buffer_limit_bytes.unwrap_or(Self::DEFAULT_BUFFER_LIMIT)
    }

    /// The address part of stat names and of the default listener name.
    pub fn address_stat_name(&self) -> String {
        self.address.socket().map(|s| s.stat_name()).unwrap_or_default()
    }

    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.address_stat_name())
    }

    /// `listener.<prefix>.` without the trailing dot.
    pub fn stat_prefix(&self) -> String {
        self.stat_prefix.clone().unwrap_or_else(|| self.address_stat_name())
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum DrainType {
    #[default]
    #[serde(rename = "DEFAULT")]
    Default,
    #[serde(rename = "MODIFY_ONLY")]
    ModifyOnly,
}

/// `envoy.config.listener.v3.FilterChain`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FilterChain {
    #[serde(default)]
    pub filter_chain_match: FilterChainMatch,
    #[serde(default)]
    pub filters: Vec<NetworkFilter>,
    pub transport_socket: Option<TransportSocket>,
    pub transport_socket_connect_timeout: Option<Duration>,
    pub metadata: Option<Metadata>,
    #[serde(default)]
    pub name: String,
    pub use_proxy_proto: Option<Unsupported>,
}

/// `envoy.config.listener.v3.FilterChainMatch`. Criteria are applied in Envoy's order (see
/// `legate-proxy/src/listener/filter_chain_match.rs`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct FilterChainMatch {
    pub destination_port: Option<u32>,
    #[serde(default)]
    pub prefix_ranges: Vec<CidrRange>,
    #[serde(default)]
    pub address_suffix: String,
    pub suffix_len: Option<u32>,
    #[serde(default)]
    pub direct_source_prefix_ranges: Vec<CidrRange>,
    #[serde(default)]
    pub source_type: ConnectionSourceType,
    #[serde(default)]
    pub source_prefix_ranges: Vec<CidrRange>,
    #[serde(default)]
    pub source_ports: Vec<u32>,
    #[serde(default)]
    pub server_names: Vec<String>,
    #[serde(default)]
    pub transport_protocol: String,
    #[serde(default)]
    pub application_protocols: Vec<String>,
}

/// `FilterChainMatch.ConnectionSourceType`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, Hash)]
pub enum ConnectionSourceType {
    #[default]
    #[serde(rename = "ANY")]
    Any,
    /// The source is a local address of this host, or loopback.
    #[serde(rename = "SAME_IP_OR_LOOPBACK", alias = "LOCAL")]
    SameIpOrLoopback,
    #[serde(rename = "EXTERNAL")]
    External,
}
