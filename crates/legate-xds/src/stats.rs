//! Envoy's per-subscription stats (`SubscriptionStats`): `cluster_manager.cds.*`,
//! `listener_manager.lds.*`, `http.<prefix>.rds.<name>.*`, `cluster.<name>.update_*`, …

legate_stats::stats! {
    pub struct SubscriptionStats {
        counter update_attempt,
        counter update_success,
        counter update_failure,
        counter update_rejected,
        counter update_empty,
        counter init_fetch_timeout,
        /// Milliseconds since the epoch of the last accepted update.
        gauge update_time,
        /// A hash of the last accepted `version_info`.
        gauge version,
        /// How long the last update took to apply (Envoy's `update_duration` histogram).
        histogram update_duration,
    }
}

impl SubscriptionStats {
    /// Records an accepted update of `version_info`.
    pub fn accepted(&self, version_info: &str, took: std::time::Duration) {
        self.update_success.inc();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        self.update_time.set(now.as_millis() as u64);
        self.version.set(version_hash(version_info));
        self.update_duration.record(took.as_millis() as u64);
    }
}

/// Envoy reports the version as `HashUtil::xxHash64(version_info)` (seed 0).
pub fn version_hash(version_info: &str) -> u64 {
    xxhash_rust::xxh64::xxh64(version_info.as_bytes(), 0)
}

legate_stats::stats! {
    /// `control_plane.*`, Envoy's ALL_CONTROL_PLANE_STATS: the gRPC stream to a control plane.
    pub struct ControlPlaneStats {
        /// 1 while the stream is up, 0 while legate reconnects.
        gauge connected_state,
        /// Requests waiting for the stream to come up, or for a `rate_limit_settings` token.
        gauge pending_requests,
        /// Requests held back by `rate_limit_settings`.
        counter rate_limit_enforced,
    }
}
