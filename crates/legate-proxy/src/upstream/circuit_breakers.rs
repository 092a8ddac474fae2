//! Circuit breakers: limits for a whole cluster, counted across all workers (Envoy's
//! `ResourceManager`). Acquiring returns a guard; dropping the guard gives the slot back, so a
//! connection or request that ends by any path releases what it held.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use legate_config::cluster::{CircuitBreakers as CircuitBreakersConfig, RoutingPriority, Thresholds};
use legate_stats::{Gauge, Scope};

use super::stats::{CircuitBreakersRemainingStats, CircuitBreakersStats};

/// The resource limits of one routing priority.
pub struct ResourceManager {
    /// `retry_budget`: (budget fraction, min_retry_concurrency); replaces `max_retries`.
    pub retry_budget: Option<(f64, u64)>,
    pub connections: Arc<Resource>,
    pub pending_requests: Arc<Resource>,
    pub requests: Arc<Resource>,
    pub retries: Arc<Resource>,
    pub connection_pools: Arc<Resource>,
}

/// Default and high priority limits of a cluster.
pub struct CircuitBreakers {
    pub default: ResourceManager,
    pub high: ResourceManager,
}

impl CircuitBreakers {
    pub fn new(config: &CircuitBreakersConfig, cluster_scope: &Scope) -> Self {
        CircuitBreakers {
            default: ResourceManager::new(
                &config.for_priority(RoutingPriority::Default),
                &cluster_scope.scope("circuit_breakers.default"),
            ),
            high: ResourceManager::new(
                &config.for_priority(RoutingPriority::High),
                &cluster_scope.scope("circuit_breakers.high"),
            ),
        }
    }

    pub fn for_priority(&self, priority: RoutingPriority) -> &ResourceManager {
        match priority {
            RoutingPriority::Default => &self.default,
            RoutingPriority::High => &self.high,
        }
    }
}

impl ResourceManager {
    /// A retry slot: under `retry_budget`, retries may be up to the budget's share of the
    /// active and pending requests (at least `min_retry_concurrency`); else `max_retries`.
    pub fn try_acquire_retry(&self) -> Option<ResourceGuard> {
        match self.retry_budget {
            Some((fraction, min)) => {
                let active = self.requests.count() + self.pending_requests.count();
                let limit = ((active as f64 * fraction) as u64).max(min);
                self.retries.try_acquire_up_to(limit)
            }
            None => self.retries.try_acquire(),
        }
    }

    fn new(t: &Thresholds, scope: &Scope) -> Self {
        let open = CircuitBreakersStats::new(scope);
        let remaining = t.track_remaining.then(|| CircuitBreakersRemainingStats::new(scope));
        let r = |max: u64, open: Gauge, remaining: Option<Gauge>| Arc::new(Resource::new(max, open, remaining));
        ResourceManager {
            retry_budget: t.retry_budget.map(|b| {
                (b.budget_percent.map_or(20.0, |p| p.value) / 100.0, u64::from(b.min_retry_concurrency.unwrap_or(3)))
            }),
            connections: r(t.max_connections(), open.cx_open, remaining.as_ref().map(|s| s.remaining_cx.clone())),
            pending_requests: r(
                t.max_pending_requests(),
                open.rq_pending_open,
                remaining.as_ref().map(|s| s.remaining_pending.clone()),
            ),
            requests: r(t.max_requests(), open.rq_open, remaining.as_ref().map(|s| s.remaining_rq.clone())),
            retries: r(t.max_retries(), open.rq_retry_open, remaining.as_ref().map(|s| s.remaining_retries.clone())),
            connection_pools: r(
                t.max_connection_pools(),
                open.cx_pool_open,
                remaining.as_ref().map(|s| s.remaining_cx_pools.clone()),
            ),
        }
    }
}

/// One counted resource with its limit.
pub struct Resource {
    max: u64,
    count: AtomicU64,
    /// Mirrors `count >= max` into the `*_open` gauge; flips are counted exactly once.
    open: AtomicBool,
    open_gauge: Gauge,
    remaining: Option<Gauge>,
}

impl Resource {
    fn new(max: u64, open_gauge: Gauge, remaining: Option<Gauge>) -> Self {
        if let Some(g) = &remaining {
            g.set(max.min(u64::from(u32::MAX)));
        }
        Resource { max, count: AtomicU64::new(0), open: AtomicBool::new(false), open_gauge, remaining }
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Takes one unit if the limit allows; `None` means the breaker is open (overflow).
    pub fn try_acquire(self: &Arc<Self>) -> Option<ResourceGuard> {
        self.try_acquire_up_to(self.max)
    }

    /// As `try_acquire`, with a limit computed by the caller (a retry budget).
    pub fn try_acquire_up_to(self: &Arc<Self>, max: u64) -> Option<ResourceGuard> {
        let mut current = self.count.load(Ordering::Relaxed);
        loop {
            if current >= max {
                return None;
            }
            match self.count.compare_exchange_weak(current, current + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        if let Some(g) = &self.remaining {
            g.sub(1);
        }
        self.update_open();
        Some(ResourceGuard { resource: self.clone() })
    }

    fn release(&self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
        if let Some(g) = &self.remaining {
            g.add(1);
        }
        self.update_open();
    }

    fn update_open(&self) {
        let now_open = self.count.load(Ordering::Relaxed) >= self.max;
        if self.open.compare_exchange(!now_open, now_open, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            if now_open {
                self.open_gauge.inc();
            } else {
                self.open_gauge.dec();
            }
        }
    }
}

/// A held unit of a [`Resource`], released on drop.
pub struct ResourceGuard {
    resource: Arc<Resource>,
}

impl Drop for ResourceGuard {
    fn drop(&mut self) {
        self.resource.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_releases_on_drop() {
        let store = legate_stats::Store::new(1);
        let scope = store.scope("cluster.c");
        let config = CircuitBreakersConfig {
            thresholds: vec![Thresholds { max_connections: Some(2), track_remaining: true, ..Default::default() }],
            ..Default::default()
        };
        let cb = CircuitBreakers::new(&config, &scope);
        let cx = &cb.default.connections;
        let a = cx.try_acquire().unwrap();
        let b = cx.try_acquire().unwrap();
        assert!(cx.try_acquire().is_none());
        assert_eq!(store.gauge_value("cluster.c.circuit_breakers.default.cx_open"), Some(1));
        assert_eq!(store.gauge_value("cluster.c.circuit_breakers.default.remaining_cx"), Some(0));
        drop(a);
        assert_eq!(store.gauge_value("cluster.c.circuit_breakers.default.cx_open"), Some(0));
        assert!(cx.try_acquire().is_some());
        drop(b);
        assert_eq!(cx.count(), 0);
        assert_eq!(store.gauge_value("cluster.c.circuit_breakers.default.remaining_cx"), Some(2));
    }
}
