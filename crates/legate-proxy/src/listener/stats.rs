//! Listener and listener manager stats under Envoy's names.

legate_stats::stats! {
    /// `listener.<address>.*`, Envoy's ALL_LISTENER_STATS.
    pub struct ListenerStats {
        counter downstream_cx_total,
        counter downstream_cx_destroy,
        gauge downstream_cx_active,
        histogram downstream_cx_length_ms,
        counter downstream_cx_transport_socket_connect_timeout,
        counter downstream_cx_overflow,
        counter downstream_cx_overload_reject,
        counter downstream_global_cx_overflow,
        counter downstream_pre_cx_timeout,
        gauge downstream_pre_cx_active,
        counter downstream_listener_filter_error,
        counter downstream_listener_filter_remote_close,
        counter extension_config_missing,
        counter network_extension_config_missing,
        counter no_filter_chain_match,
    }
}

legate_stats::stats! {
    /// `listener.<address>.worker_<id>.*`, Envoy's ALL_PER_HANDLER_LISTENER_STATS.
    pub struct PerWorkerListenerStats {
        counter downstream_cx_total,
        gauge downstream_cx_active,
    }
}

legate_stats::stats! {
    /// `listener_manager.*`, Envoy's ALL_LISTENER_MANAGER_STATS.
    pub struct ListenerManagerStats {
        counter listener_added,
        counter listener_modified,
        counter listener_removed,
        counter listener_stopped,
        counter listener_create_success,
        counter listener_create_failure,
        counter listener_in_place_updated,
        gauge total_filter_chains_draining,
        gauge total_listeners_warming,
        gauge total_listeners_active,
        gauge total_listeners_draining,
        gauge workers_started,
    }
}
