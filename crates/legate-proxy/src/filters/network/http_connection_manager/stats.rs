//! `http.<stat_prefix>.*`: the connection manager's and the router's stats.

legate_stats::stats! {
    pub struct HcmStats {
        counter downstream_cx_total,
        gauge downstream_cx_active,
        counter downstream_cx_http1_total,
        gauge downstream_cx_http1_active,
        counter downstream_cx_http2_total,
        gauge downstream_cx_http2_active,
        counter downstream_cx_ssl_total,
        gauge downstream_cx_ssl_active,
        counter downstream_cx_upgrades_total,
        gauge downstream_cx_upgrades_active,
        counter downstream_cx_destroy,
        counter downstream_cx_destroy_remote,
        counter downstream_cx_destroy_local,
        counter downstream_cx_destroy_active_rq,
        counter downstream_cx_destroy_local_active_rq,
        counter downstream_cx_destroy_remote_active_rq,
        counter downstream_cx_rx_bytes_total,
        counter downstream_cx_tx_bytes_total,
        counter downstream_cx_protocol_error,
        counter downstream_cx_idle_timeout,
        counter downstream_cx_max_duration_reached,
        counter downstream_cx_max_requests_reached,
        counter downstream_cx_drain_close,
        counter downstream_cx_delayed_close_timeout,
        histogram downstream_cx_length_ms,
        counter downstream_rq_total,
        counter downstream_rq_http1_total,
        counter downstream_rq_http2_total,
        gauge downstream_rq_active,
        counter downstream_rq_1xx,
        counter downstream_rq_2xx,
        counter downstream_rq_3xx,
        counter downstream_rq_4xx,
        counter downstream_rq_5xx,
        counter downstream_rq_completed,
        counter downstream_rq_rx_reset,
        counter downstream_rq_tx_reset,
        counter downstream_rq_non_relative_path,
        counter downstream_rq_too_large,
        counter downstream_rq_timeout,
        counter downstream_rq_idle_timeout,
        counter downstream_rq_header_timeout,
        counter downstream_rq_max_duration_reached,
        counter downstream_rq_overload_close,
        counter downstream_rq_response_before_rq_complete,
        counter downstream_rq_ws_on_non_ws_route,
        counter downstream_rq_redirected_with_normalized_path,
        counter downstream_rq_failed_path_normalization,
        histogram downstream_rq_time,
        counter no_route,
        counter no_cluster,
        counter rq_redirect,
        counter rq_direct_response,
        counter rq_total,
        counter rq_reset_after_downstream_response_started,
    }
}

impl HcmStats {
    /// Counts a response into `downstream_rq_completed` and `downstream_rq_<N>xx`.
    pub fn response_code(&self, code: u16) {
        count_response(
            code,
            &self.downstream_rq_completed,
            [
                &self.downstream_rq_1xx,
                &self.downstream_rq_2xx,
                &self.downstream_rq_3xx,
                &self.downstream_rq_4xx,
                &self.downstream_rq_5xx,
            ],
        );
    }
}

legate_stats::stats! {
    /// `listener.<address>.http.<stat_prefix>.*`: the responses again, per listener (Envoy's
    /// `ConnectionManagerListenerStats`), for a connection manager shared by listeners.
    pub struct ListenerHttpStats {
        counter downstream_rq_1xx,
        counter downstream_rq_2xx,
        counter downstream_rq_3xx,
        counter downstream_rq_4xx,
        counter downstream_rq_5xx,
        counter downstream_rq_completed,
    }
}

impl ListenerHttpStats {
    pub fn response_code(&self, code: u16) {
        count_response(
            code,
            &self.downstream_rq_completed,
            [
                &self.downstream_rq_1xx,
                &self.downstream_rq_2xx,
                &self.downstream_rq_3xx,
                &self.downstream_rq_4xx,
                &self.downstream_rq_5xx,
            ],
        );
    }
}

/// A response in `completed` and in its class's counter (1xx to 5xx).
fn count_response(code: u16, completed: &legate_stats::Counter, classes: [&legate_stats::Counter; 5]) {
    completed.inc();
    if let Some(class) = classes.get(usize::from(code / 100).wrapping_sub(1)) {
        class.inc();
    }
}

legate_stats::stats! {
    /// `http1.*` / `http2.*`: what Envoy's codecs count of header names with underscores
    /// (`headers_with_underscores_action`), shared by every connection manager.
    pub struct UnderscoreStats {
        counter dropped_headers_with_underscores,
        counter requests_rejected_with_underscores_in_headers,
    }
}
