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
    /// A reply the HTTP/1.1 codec makes itself (a refused head, the header timeout): Envoy's
    /// codec opens a stream for it and answers through it, so it is a request and a response.
    pub fn codec_reply(&self, code: u16) {
        self.downstream_rq_total.inc();
        self.downstream_rq_http1_total.inc();
        self.response_code(code);
    }

    /// Counts a response into `downstream_rq_completed` and `downstream_rq_<N>xx`.
    pub fn response_code(&self, code: u16) {
        self.downstream_rq_completed.inc();
        match code / 100 {
            1 => self.downstream_rq_1xx.inc(),
            2 => self.downstream_rq_2xx.inc(),
            3 => self.downstream_rq_3xx.inc(),
            4 => self.downstream_rq_4xx.inc(),
            5 => self.downstream_rq_5xx.inc(),
            _ => {}
        }
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
