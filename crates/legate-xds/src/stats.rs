//! Envoy's per-subscription stats (`SubscriptionStats`): `cluster_manager.cds.*`,
//! `listener_manager.lds.*`, `http.<prefix>.rds.<name>.*`, `cluster.<name>.update_*`, …

legate_stats::stats! {
    /// The names of [`SubscriptionStats`], declared under each subscription's scope.
    struct SubscriptionStatNames {
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
        /// How long each update took to apply (Envoy's `update_duration` histogram): one
        /// sample per update, recorded by the main thread.
        rare_histogram update_duration,
    }
}

/// A subscription's stats, created as one group (eight slots under one registry entry, where
/// the four an EDS cluster's subscription changes took an entry each, ~20 bytes with the map's
/// spare room); the subscription keeps its scope (24 bytes) instead of nine handles (144), and
/// finds each by name when it changes it. Only the main thread changes them, once per update,
/// so the look-up by name is off every request's path.
#[derive(Clone, Debug)]
pub struct SubscriptionStats {
    scope: legate_stats::Scope,
}

impl SubscriptionStats {
    /// Creates the stats under `scope`.
    pub fn new(scope: &legate_stats::Scope) -> Self {
        SubscriptionStatNames::create_group(scope);
        SubscriptionStats { scope: scope.clone() }
    }

    pub fn update_attempt(&self) -> legate_stats::Counter {
        self.scope.counter("update_attempt")
    }

    pub fn update_failure(&self) -> legate_stats::Counter {
        self.scope.counter("update_failure")
    }

    pub fn update_rejected(&self) -> legate_stats::Counter {
        self.scope.counter("update_rejected")
    }

    pub fn update_empty(&self) -> legate_stats::Counter {
        self.scope.counter("update_empty")
    }

    pub fn init_fetch_timeout(&self) -> legate_stats::Counter {
        self.scope.counter("init_fetch_timeout")
    }

    /// Records an accepted update of `version_info`.
    pub fn accepted(&self, version_info: &str, took: std::time::Duration) {
        self.scope.counter("update_success").inc();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        self.scope.gauge("update_time").set(now.as_millis() as u64);
        self.scope.gauge("version").set(version_hash(version_info));
        self.scope.rare_histogram("update_duration").record(took.as_millis() as u64);
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
