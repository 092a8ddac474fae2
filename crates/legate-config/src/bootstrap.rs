//! `envoy.config.bootstrap.v3.Bootstrap`: the whole configuration.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::cluster::Cluster;
use crate::core::Node;
use crate::duration::Duration;
use crate::listener::Listener;
use crate::path;
use crate::unsupported::Unsupported;

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Bootstrap {
    pub node: Option<Node>,
    #[serde(default)]
    pub node_context_params: Vec<String>,
    #[serde(default)]
    pub static_resources: StaticResources,
    pub dynamic_resources: Option<crate::config_source::DynamicResources>,
    pub cluster_manager: Option<Unsupported>,
    pub hds_config: Option<Unsupported>,
    pub flags_path: Option<Unsupported>,
    pub stats_sinks: Option<Unsupported>,
    pub deferred_stat_options: Option<DeferredStatOptions>,
    pub stats_config: Option<Unsupported>,
    /// How often histograms are latched into their cumulative view (default 5 s).
    pub stats_flush_interval: Option<Duration>,
    pub stats_flush_on_admin: Option<Unsupported>,
    pub watchdog: Option<Unsupported>,
    pub watchdogs: Option<Unsupported>,
    /// The tracer of connection managers whose `tracing` names none.
    pub tracing: Option<crate::trace::Tracing>,
    pub layered_runtime: Option<LayeredRuntime>,
    pub admin: Option<Admin>,
    pub overload_manager: Option<OverloadManager>,
    #[serde(default)]
    pub enable_dispatcher_stats: bool,
    pub header_prefix: Option<Unsupported>,
    pub stats_server_version_override: Option<u64>,
    pub use_tcp_for_dns_lookups: Option<Unsupported>,
    pub dns_resolution_config: Option<Unsupported>,
    pub typed_dns_resolver_config: Option<Unsupported>,
    pub bootstrap_extensions: Option<Unsupported>,
    pub fatal_actions: Option<Unsupported>,
    pub config_sources: Option<Unsupported>,
    pub default_config_source: Option<Unsupported>,
    pub default_socket_interface: Option<String>,
    pub certificate_provider_instances: Option<Unsupported>,
    pub inline_headers: Option<Unsupported>,
    pub perf_tracing_file_path: Option<Unsupported>,
    pub default_regex_engine: Option<Unsupported>,
    pub xds_delegate_extension: Option<Unsupported>,
    pub xds_config_tracker_extension: Option<Unsupported>,
    pub listener_manager: Option<Unsupported>,
    pub application_log_config: Option<Unsupported>,
    pub grpc_async_client_manager_config: Option<Unsupported>,
    pub memory_allocator_manager: Option<Unsupported>,
}

impl Bootstrap {
    pub fn stats_flush_interval(&self) -> std::time::Duration {
        self.stats_flush_interval.unwrap_or(Duration::from_secs(5)).0
    }

    /// A value from the static runtime layers (later layers win), as Envoy's runtime reads it.
    pub fn runtime_u64(&self, key: &str) -> Option<u64> {
        let runtime = self.layered_runtime.as_ref()?;
        runtime.layers.iter().rev().find_map(|layer| {
            let value = layer.static_layer.as_ref()?.get(key)?;
            value.as_u64().or_else(|| value.as_str()?.parse().ok())
        })
    }
}

/// `envoy.config.bootstrap.v3.Bootstrap.DeferredStatOptions`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeferredStatOptions {
    /// Create a cluster's traffic stats on its first use, not with the cluster: idle clusters
    /// (a control plane's thousands) then cost far less memory, and their stats appear in
    /// `/stats` once used.
    #[serde(default)]
    pub enable_deferred_creation_stats: bool,
}

/// `Bootstrap.StaticResources`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StaticResources {
    #[serde(default)]
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub clusters: Vec<Cluster>,
    pub secrets: Option<Unsupported>,
}

/// `envoy.config.bootstrap.v3.Admin`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Where each admin request is logged, one line per request; `/dev/null` turns it off.
    pub access_log_path: Option<String>,
    pub access_log: Option<Unsupported>,
    pub profile_path: Option<String>,
    pub address: Option<crate::core::Address>,
    pub socket_options: Option<Unsupported>,
    #[serde(default)]
    pub ignore_global_conn_limit: bool,
}

/// `envoy.config.bootstrap.v3.LayeredRuntime`: only static layers carry values in legate.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LayeredRuntime {
    #[serde(default)]
    pub layers: Vec<RuntimeLayer>,
}

/// `RuntimeLayer`. An `admin_layer` is accepted and stays empty: legate has no
/// `/runtime_modify` yet, so nothing can write into it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuntimeLayer {
    #[serde(default)]
    pub name: String,
    #[serde(default, deserialize_with = "flatten_runtime")]
    pub static_layer: Option<serde_json::Map<String, Value>>,
    pub disk_layer: Option<Unsupported>,
    pub admin_layer: Option<Value>,
    pub rtds_layer: Option<Unsupported>,
}

/// Runtime keys may be written nested (`envoy: {resource_limits: …}`); Envoy joins them with dots.
fn flatten_runtime<'de, D: Deserializer<'de>>(d: D) -> Result<Option<serde_json::Map<String, Value>>, D::Error> {
    fn walk(prefix: &str, value: Value, out: &mut serde_json::Map<String, Value>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    walk(&path::join(prefix, &k), v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other);
            }
        }
    }
    let value = Value::deserialize(d)?;
    let mut out = serde_json::Map::new();
    walk("", value, &mut out);
    Ok(Some(out))
}

/// `envoy.config.overload.v3.OverloadManager`: legate implements the global downstream
/// connection limit monitor, which needs no actions.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OverloadManager {
    pub refresh_interval: Option<Duration>,
    #[serde(default)]
    pub resource_monitors: Vec<ResourceMonitor>,
    pub actions: Option<Unsupported>,
    pub loadshed_points: Option<Unsupported>,
    pub buffer_factory_config: Option<Unsupported>,
}

impl OverloadManager {
    /// `max_active_downstream_connections` of the global connection limit monitor, if any.
    pub fn global_downstream_max_connections(&self) -> Option<u64> {
        // One monitor type exists today; a `match` keeps this exhaustive when more arrive.
        #[allow(clippy::unnecessary_find_map)]
        self.resource_monitors.iter().find_map(|m| match m {
            ResourceMonitor::GlobalDownstreamMaxConnections { max_active_downstream_connections } => {
                Some(*max_active_downstream_connections)
            }
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum ResourceMonitor {
    /// `envoy.resource_monitors.global_downstream_max_connections`.
    GlobalDownstreamMaxConnections { max_active_downstream_connections: u64 },
}

impl<'de> Deserialize<'de> for ResourceMonitor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct DownstreamConnectionsConfig {
            max_active_downstream_connections: crate::core::Int64,
        }
        static MONITORS: &[crate::extensions::Extension<ResourceMonitor>] = &[crate::extensions::Extension {
            name: "envoy.resource_monitors.global_downstream_max_connections",
            type_url: "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
            parse: |v| {
                let c: DownstreamConnectionsConfig = path::from_value(v)?;
                Ok(ResourceMonitor::GlobalDownstreamMaxConnections {
                    max_active_downstream_connections: c.max_active_downstream_connections.0.max(0) as u64,
                })
            },
        }];
        crate::extensions::deserialize_typed(d, MONITORS, "resource monitor").map(|(_, monitor)| monitor)
    }
}
