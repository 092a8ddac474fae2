//! `/server_info`, `/ready`, `/memory`.

use std::rc::Rc;

use hyper::StatusCode;
use serde_json::json;

use super::{json, text, AdminResponse, Query};
use crate::server::{Server, ServerState};

/// Envoy's `<sha>/<version>/<status>/<build type>/<ssl>` shape.
pub fn version() -> String {
    format!("legate/{}/Clean/RELEASE/rustls", env!("CARGO_PKG_VERSION"))
}

pub fn handle(server: &Rc<Server>, _query: &Query) -> AdminResponse {
    let o = &server.options;
    let node = server.loaded.bootstrap.node.clone().unwrap_or_default();
    let uptime = format!("{}s", server.uptime().as_secs());
    let info = json!({
        "version": version(),
        "state": server.state().name(),
        "hot_restart_version": "disabled",
        "command_line_options": {
            "base_id": "0",
            "concurrency": o.concurrency(),
            "config_path": o.config_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            "config_yaml": o.config_yaml.clone().unwrap_or_default(),
            "allow_unknown_static_fields": false,
            "reject_unknown_dynamic_fields": false,
            "admin_address_path": o.admin_address_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            "local_address_ip_version": "v4",
            "log_level": o.log_level,
            "component_log_level": "",
            "log_path": "",
            "service_cluster": node.cluster,
            "service_node": node.id,
            "service_zone": node.locality.as_ref().map(|l| l.zone.clone()).unwrap_or_default(),
            "mode": o.mode.envoy_name(),
            "disable_hot_restart": true,
            "drain_time": format!("{}s", o.drain_time_s),
            // legate tells every connection at once when it drains.
            "drain_strategy": "Immediate",
            "file_flush_interval": duration_text(o.file_flush_interval_msec),
            // Envoy prints every field, defaults included: the options legate has no
            // counterpart for read as Envoy's defaults.
            "use_dynamic_base_id": false,
            "base_id_path": "",
            "ignore_unknown_dynamic_fields": false,
            "log_format": "[%Y-%m-%d %T.%e][%t][%l][%n] [%g:%#] %v",
            "log_format_escaped": false,
            "parent_shutdown_time": "900s",
            "enable_mutex_tracing": false,
            "restart_epoch": 0,
            "cpuset_threads": false,
            "disabled_extensions": [],
            "enable_fine_grain_logging": false,
            "socket_path": "@envoy_domain_socket",
            "socket_mode": 0,
            "enable_core_dump": false,
        },
        "node": server.loaded.raw_node.clone(),
        "uptime_current_epoch": uptime,
        "uptime_all_epochs": uptime,
    });
    let mut info = info;
    info["node"]["id"] = json!(node.id);
    info["node"]["cluster"] = json!(node.cluster);
    // As sent to control planes: the user agent is legate's.
    info["node"]["user_agent_name"] = json!("legate");
    info["node"]["user_agent_version"] = json!(env!("CARGO_PKG_VERSION"));
    json(StatusCode::OK, &info)
}

/// A protobuf `Duration` as JSON prints it: whole seconds `10s`, else with the fraction.
fn duration_text(millis: u64) -> String {
    match millis % 1000 {
        0 => format!("{}s", millis / 1000),
        ms => format!("{}.{ms:03}s", millis / 1000),
    }
}

pub fn ready(server: &Rc<Server>, _query: &Query) -> AdminResponse {
    let state = server.state();
    let status = if state == ServerState::Live { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    text(status, format!("{}\n", state.name()))
}

pub fn memory(_server: &Rc<Server>, _query: &Query) -> AdminResponse {
    let m = crate::memory::read();
    json(
        StatusCode::OK,
        &json!({
            "allocated": m.allocated.to_string(),
            "heap_size": m.heap_size.to_string(),
            "pageheap_unmapped": "0",
            "pageheap_free": m.free.to_string(),
            "total_thread_cache": "0",
            "total_physical_bytes": m.physical.to_string(),
        }),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_print_as_protobuf_json() {
        assert_eq!(super::duration_text(10_000), "10s");
        assert_eq!(super::duration_text(100), "0.100s");
        assert_eq!(super::duration_text(1_500), "1.500s");
    }
}
