//! Cluster and cluster manager stats under Envoy's names.

legate_stats::stats! {
    /// `cluster.<name>.*`: Envoy's ALL_CLUSTER_TRAFFIC_STATS (the connection-level part and
    /// the request counters every cluster has). With `deferred_stat_options`, created on the
    /// cluster's first request (Envoy's deferred creation of traffic stats).
    pub compact struct ClusterStats {
        counter upstream_cx_total,
        gauge upstream_cx_active,
        counter upstream_cx_http1_total,
        counter upstream_cx_http2_total,
        counter upstream_cx_connect_fail,
        counter upstream_cx_connect_timeout,
        counter upstream_cx_connect_attempts_exceeded,
        counter upstream_cx_overflow,
        counter upstream_cx_none_healthy,
        histogram upstream_cx_connect_ms,
        histogram upstream_cx_length_ms,
        counter upstream_cx_destroy,
        counter upstream_cx_destroy_local,
        counter upstream_cx_destroy_remote,
        counter upstream_cx_destroy_with_active_rq,
        counter upstream_cx_destroy_local_with_active_rq,
        counter upstream_cx_destroy_remote_with_active_rq,
        counter upstream_cx_idle_timeout,
        counter upstream_cx_max_duration_reached,
        counter upstream_cx_rx_bytes_total,
        gauge upstream_cx_rx_bytes_buffered,
        counter upstream_cx_tx_bytes_total,
        gauge upstream_cx_tx_bytes_buffered,
        counter upstream_cx_protocol_error,
        counter upstream_cx_pool_overflow,
        counter upstream_flow_control_paused_reading_total,
        counter upstream_flow_control_resumed_reading_total,
        counter upstream_flow_control_backed_up_total,
        counter upstream_flow_control_drained_total,
        counter upstream_rq_total,
        gauge upstream_rq_active,
        counter upstream_rq_pending_total,
        counter upstream_rq_pending_overflow,
        counter upstream_rq_pending_failure_eject,
        gauge upstream_rq_pending_active,
        counter upstream_rq_cancelled,
        counter upstream_rq_timeout,
        counter upstream_rq_retry,
        counter upstream_rq_retry_overflow,
        counter upstream_rq_retry_success,
        counter upstream_rq_retry_limit_exceeded,
        counter upstream_rq_retry_backoff_exponential,
        counter upstream_rq_retry_backoff_ratelimited,
        counter upstream_rq_1xx,
        counter upstream_rq_2xx,
        counter upstream_rq_3xx,
        counter upstream_rq_4xx,
        counter upstream_rq_5xx,
        counter upstream_rq_completed,
        counter upstream_rq_per_try_timeout,
        counter upstream_rq_per_try_idle_timeout,
        counter upstream_rq_rx_reset,
        counter upstream_rq_stale_connection_resend,
        counter upstream_rq_tx_reset,
        counter upstream_rq_max_duration_reached,
        counter upstream_cx_max_requests,
        histogram upstream_rq_time,
        counter upstream_rq_maintenance_mode,
        counter retry_or_shadow_abandoned,
    }
}

legate_stats::stats! {
    /// `cluster.<name>.*`: the load balancer, membership and config update stats, which exist
    /// from the cluster's creation. Those legate has no reason to change are in
    /// [`ClusterUnchangedStats`]. Compact: 10,000 clusters each carry it.
    pub compact struct ClusterEndpointStats {
        counter lb_healthy_panic,
        gauge membership_healthy,
        gauge membership_degraded,
        gauge membership_excluded,
        gauge membership_total,
        counter membership_change,
        gauge max_host_weight,
    }
}

legate_stats::stats! {
    /// `cluster.<name>.update_*` as a DNS cluster's refreshes count them. Every cluster has
    /// these stats ([`ClusterEndpointStats::with_unchanged`] declares them); only DNS clusters
    /// keep handles ([`super::dns::DnsResolver`]): an EDS cluster counts the same names through
    /// its subscription's stats.
    pub struct ClusterUpdateStats {
        counter update_attempt,
        counter update_success,
        counter update_failure,
        counter update_empty,
        counter update_no_rebuild,
    }
}

legate_stats::stats! {
    /// `cluster.<name>.*` stats of Envoy's that legate lists (as Envoy, at 0) but never
    /// changes: zone-aware routing, the original destination cluster, bind errors, LRS
    /// assignment staleness; `version` is set by the cluster's EDS subscription, under the
    /// same name. Only declared ([`Self::declare`]): no handle, no slot, for 10,000 clusters.
    pub struct ClusterUnchangedStats {
        counter lb_local_cluster_not_ok,
        counter lb_recalculate_zone_structures,
        counter lb_zone_cluster_too_small,
        counter lb_zone_no_capacity_left,
        counter lb_zone_number_differs,
        counter lb_zone_routing_all_directly,
        counter lb_zone_routing_sampled,
        counter lb_zone_routing_cross_zone,
        counter bind_errors,
        counter original_dst_host_invalid,
        counter assignment_stale,
        counter assignment_timeout_received,
        gauge version,
    }
}

impl ClusterEndpointStats {
    /// Creates the stats, and declares those of [`ClusterUnchangedStats`] and
    /// [`ClusterUpdateStats`].
    pub fn with_unchanged(scope: &legate_stats::Scope) -> Self {
        let stats = ClusterEndpointStats::new(scope);
        ClusterUnchangedStats::declare(scope);
        ClusterUpdateStats::declare(scope);
        stats
    }
}

legate_stats::stats! {
    /// `cluster.<name>.circuit_breakers.<priority>.*`: Envoy's ALL_CLUSTER_CIRCUIT_BREAKERS_STATS.
    pub struct CircuitBreakersStats {
        gauge cx_open,
        gauge cx_pool_open,
        gauge rq_open,
        gauge rq_pending_open,
        gauge rq_retry_open,
    }
}

legate_stats::stats! {
    /// `cluster.<name>.circuit_breakers.<priority>.remaining_*`, only with `track_remaining`.
    pub struct CircuitBreakersRemainingStats {
        gauge remaining_cx,
        gauge remaining_pending,
        gauge remaining_rq,
        gauge remaining_retries,
        gauge remaining_cx_pools,
    }
}

legate_stats::stats! {
    /// `cluster_manager.*`: Envoy's ALL_CLUSTER_MANAGER_STATS.
    pub struct ClusterManagerStats {
        counter cluster_added,
        counter cluster_modified,
        counter cluster_removed,
        counter cluster_updated,
        counter cluster_updated_via_merge,
        counter update_merge_cancelled,
        counter update_out_of_merge_window,
        gauge active_clusters,
        gauge warming_clusters,
    }
}

impl ClusterStats {
    /// Counts an answer into `upstream_rq_completed` and `upstream_rq_<N>xx` (with
    /// `upstream_rq_<code>` beside them, Envoy's `chargeBasicResponseStat`).
    pub fn upstream_response_class(&self, code: u16) {
        self.upstream_rq_completed().inc();
        match code / 100 {
            1 => self.upstream_rq_1xx().inc(),
            2 => self.upstream_rq_2xx().inc(),
            3 => self.upstream_rq_3xx().inc(),
            4 => self.upstream_rq_4xx().inc(),
            5 => self.upstream_rq_5xx().inc(),
            _ => {}
        }
    }
}
