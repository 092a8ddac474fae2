//! `envoy.filters.network.connection_limit`: caps the connections of one filter chain across
//! all workers. A connection over the limit is closed, after `delay` when one is set (to slow
//! down clients that reconnect at once), and counted in `limited_connections`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Context;
use std::time::Duration;

use bytes::BytesMut;
use legate_config::filters::network::connection_limit::ConnectionLimit as ConnectionLimitConfig;
use legate_stats::Scope;

use crate::network::delayed_close::DelayedClose;
use crate::network::{FilterStatus, ReadFilter, ReadFilterCallbacks};

legate_stats::stats! {
    /// `connection_limit.<stat_prefix>.*`, Envoy's ALL_CONNECTION_LIMIT_STATS.
    pub struct ConnectionLimitStats {
        counter limited_connections,
        gauge active_connections,
    }
}

/// Shared by every connection of the filter chain, on every worker.
pub struct ConnectionLimitShared {
    max_connections: u64,
    delay: Option<Duration>,
    enabled: Option<legate_config::filters::network::connection_limit::RuntimeFeatureFlag>,
    active: AtomicU64,
    stats: ConnectionLimitStats,
}

impl ConnectionLimitShared {
    pub fn new(config: &ConnectionLimitConfig, scope: &Scope) -> Self {
        ConnectionLimitShared {
            max_connections: config.max_connections,
            delay: config.delay.map(|d| d.0).filter(|d| !d.is_zero()),
            enabled: config.runtime_enabled.clone(),
            active: AtomicU64::new(0),
            stats: ConnectionLimitStats::new(&scope.scope(&format!("connection_limit.{}", config.stat_prefix))),
        }
    }
}

pub struct ConnectionLimit {
    shared: Arc<ConnectionLimitShared>,
    /// This connection holds one unit of `active`.
    counted: bool,
    delay: DelayedClose,
}

impl ConnectionLimit {
    pub fn new(shared: Arc<ConnectionLimitShared>) -> Self {
        ConnectionLimit { shared, counted: false, delay: DelayedClose::default() }
    }
}

impl ReadFilter for ConnectionLimit {
    fn on_new_connection(&mut self, cb: &mut ReadFilterCallbacks<'_>) -> FilterStatus {
        if !crate::runtime::flag_enabled_or(self.shared.enabled.as_ref(), true) {
            return FilterStatus::Continue;
        }
        let admitted = self
            .shared
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| (n < self.shared.max_connections).then_some(n + 1))
            .is_ok();
        if admitted {
            self.counted = true;
            self.shared.stats.active_connections.inc();
            return FilterStatus::Continue;
        }
        self.shared.stats.limited_connections.inc();
        self.delay.close(self.shared.delay, cb);
        FilterStatus::StopIteration
    }

    fn on_data(&mut self, _data: &mut BytesMut, _end_stream: bool, _cb: &mut ReadFilterCallbacks<'_>) -> FilterStatus {
        if self.delay.pending() {
            return FilterStatus::StopIteration;
        }
        FilterStatus::Continue
    }

    fn poll_io(&mut self, cx: &mut Context<'_>, cb: &mut ReadFilterCallbacks<'_>) {
        self.delay.poll(cx, cb);
    }
}

impl Drop for ConnectionLimit {
    fn drop(&mut self) {
        if self.counted {
            self.shared.active.fetch_sub(1, Ordering::AcqRel);
            self.shared.stats.active_connections.dec();
        }
    }
}
