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

/// `envoy.config.bootstrap.v3.LayeredRuntime`: the runtime's layers, later ones overriding
/// earlier ones (legate_proxy::runtime).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LayeredRuntime {
    #[serde(default)]
    pub layers: Vec<RuntimeLayer>,
}

/// `RuntimeLayer`: exactly one of its four kinds (checked by [`LayeredRuntime::validate`]).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuntimeLayer {
    #[serde(default)]
    pub name: String,
    #[serde(default, deserialize_with = "flatten_runtime")]
    pub static_layer: Option<serde_json::Map<String, Value>>,
    pub disk_layer: Option<DiskLayer>,
    /// `RuntimeLayer.AdminLayer` has no fields: `/runtime_modify` writes into it.
    pub admin_layer: Option<Value>,
    pub rtds_layer: Option<RtdsLayer>,
}

/// `RuntimeLayer.DiskLayer`: a directory tree, one key per file, read again when
/// `symlink_root` is swapped.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DiskLayer {
    #[serde(default)]
    pub symlink_root: String,
    #[serde(default)]
    pub subdirectory: String,
    /// The node's cluster (`--service-cluster` / `node.cluster`) is appended to the path.
    #[serde(default)]
    pub append_service_cluster: bool,
}

/// `RuntimeLayer.RtdsLayer`: the `envoy.service.runtime.v3.Runtime` resource `name` from a
/// control plane.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RtdsLayer {
    #[serde(default)]
    pub name: String,
    pub rtds_config: Option<crate::config_source::ConfigSource>,
}

/// The kind of one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeLayerKind {
    Static,
    Disk,
    Admin,
    Rtds,
}

impl RuntimeLayer {
    /// Its kind, or the error of a layer with none or several.
    pub fn kind(&self) -> Result<RuntimeLayerKind, String> {
        let kinds = [
            (self.static_layer.is_some(), RuntimeLayerKind::Static),
            (self.disk_layer.is_some(), RuntimeLayerKind::Disk),
            (self.admin_layer.is_some(), RuntimeLayerKind::Admin),
            (self.rtds_layer.is_some(), RuntimeLayerKind::Rtds),
        ];
        let mut set = kinds.iter().filter(|(set, _)| *set);
        match (set.next(), set.next()) {
            (Some((_, kind)), None) => Ok(*kind),
            (None, _) => Err("exactly one of static_layer, disk_layer, admin_layer, rtds_layer must be set".into()),
            (Some(_), Some(_)) => {
                Err("only one of static_layer, disk_layer, admin_layer, rtds_layer may be set".into())
            }
        }
    }
}

impl LayeredRuntime {
    /// Envoy's load-time checks: each layer of one kind, names unique, one admin layer.
    /// The error is the field's path and Envoy's message.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let mut names = std::collections::HashSet::new();
        let mut admin_layers = 0;
        for (index, layer) in self.layers.iter().enumerate() {
            let at = |e: String| (format!("layered_runtime.layers[{index}]"), e);
            if layer.name.is_empty() {
                let message = "value length must be at least 1 characters".to_string();
                return Err((format!("layered_runtime.layers[{index}].name"), message));
            }
            match layer.kind().map_err(at)? {
                RuntimeLayerKind::Admin => admin_layers += 1,
                RuntimeLayerKind::Disk => {
                    let disk = layer.disk_layer.as_ref().map(|d| d.symlink_root.as_str()).unwrap_or_default();
                    if disk.is_empty() {
                        return Err(at("disk_layer.symlink_root: value length must be at least 1 characters".into()));
                    }
                }
                RuntimeLayerKind::Rtds => {
                    let rtds = layer.rtds_layer.as_ref();
                    if rtds.is_none_or(|r| r.rtds_config.is_none()) {
                        return Err(at("rtds_layer.rtds_config: value is required".into()));
                    }
                }
                RuntimeLayerKind::Static => {}
            }
            if !names.insert(layer.name.as_str()) {
                return Err(at(format!("Duplicate layer name: {}", layer.name)));
            }
        }
        if admin_layers > 1 {
            let message = "Too many admin layers specified in LayeredRuntime, at most one may be specified";
            return Err(("layered_runtime".into(), message.into()));
        }
        Ok(())
    }
}

/// Runtime keys may be written nested (`envoy: {resource_limits: …}`); Envoy joins them with
/// dots, down to a scalar, an empty mapping or a fractional percent (a mapping with
/// `numerator` or `denominator`). A null or a list is no runtime value.
fn flatten_runtime<'de, D: Deserializer<'de>>(d: D) -> Result<Option<serde_json::Map<String, Value>>, D::Error> {
    fn walk(prefix: &str, value: Value, out: &mut serde_json::Map<String, Value>) -> Result<(), String> {
        match value {
            Value::Object(map)
                if !map.is_empty() && !map.contains_key("numerator") && !map.contains_key("denominator") =>
            {
                for (k, v) in map {
                    walk(&format!("{prefix}.{k}"), v, out)?;
                }
            }
            Value::Null | Value::Array(_) => return Err(format!("Invalid runtime entry value for {prefix}")),
            other => {
                out.insert(prefix.to_string(), other);
            }
        }
        Ok(())
    }
    let value = Value::deserialize(d)?;
    let mut out = serde_json::Map::new();
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                walk(&k, v, &mut out).map_err(serde::de::Error::custom)?;
            }
        }
        Value::Null => {}
        _ => return Err(serde::de::Error::custom("static_layer must be a Struct")),
    }
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
