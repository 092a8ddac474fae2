//! Circuit breakers: limits for a whole cluster, counted across all workers (Envoy's
//! `ResourceManager`). Acquiring returns a guard; dropping the guard gives the slot back, so a
//! connection or request that ends by any path releases what it held.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use legate_config::cluster::{CircuitBreakers as CircuitBreakersConfig, RoutingPriority, Thresholds};
use legate_stats::{Gauge, Scope};

use super::stats::{CircuitBreakersRemainingStats, CircuitBreakersStats};

/// Default and high priority limits of a cluster, in one allocation: ten resources with an
/// `Arc` each cost 10,000 clusters ~8 KiB apiece of memory that mostly never counts anything.
/// A guard keeps that allocation alive, so a connection or request that outlives its cluster
/// (a CDS update replaced it) still releases into the limits it counted against.
pub struct CircuitBreakers(Arc<Limits>);

/// Both priorities' limits.
struct Limits {
    default: PriorityLimits,
    high: PriorityLimits,
}

/// The limits of one routing priority.
struct PriorityLimits {
    /// `retry_budget`: (budget fraction, min_retry_concurrency); replaces `max_retries`.
    retry_budget: Option<(f64, u64)>,
    /// Indexed by [`Kind`].
    resources: [ResourceState; 5],
    /// `circuit_breakers.<priority>.*_open`.
    open: CircuitBreakersStats,
    /// `circuit_breakers.<priority>.remaining_*`, with `track_remaining` only.
    remaining: Option<Box<CircuitBreakersRemainingStats>>,
}

/// The five resources of a priority, as indices into [`PriorityLimits::resources`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Connections,
    PendingRequests,
    Requests,
    Retries,
    ConnectionPools,
}

/// The resource limits of one routing priority (Envoy's `ResourceManager`), a view borrowed
/// from the cluster's [`CircuitBreakers`].
pub struct ResourceManager<'a> {
    pub connections: Resource<'a>,
    pub pending_requests: Resource<'a>,
    pub requests: Resource<'a>,
    pub retries: Resource<'a>,
    pub connection_pools: Resource<'a>,
}

/// One counted resource with its limit, borrowed from the cluster's [`CircuitBreakers`].
pub struct Resource<'a> {
    limits: &'a Arc<Limits>,
    priority: RoutingPriority,
    kind: Kind,
}

/// A resource's count and limit.
struct ResourceState {
    max: u64,
    count: AtomicU64,
    /// Mirrors `count >= max` into the `*_open` gauge; flips are counted exactly once.
    open: AtomicBool,
}

impl CircuitBreakers {
    pub fn new(config: &CircuitBreakersConfig, cluster_scope: &Scope) -> Self {
        CircuitBreakers(Arc::new(Limits {
            default: PriorityLimits::new(
                &config.for_priority(RoutingPriority::Default),
                &cluster_scope.scope("circuit_breakers.default"),
            ),
            high: PriorityLimits::new(
                &config.for_priority(RoutingPriority::High),
                &cluster_scope.scope("circuit_breakers.high"),
            ),
        }))
    }

    pub fn for_priority(&self, priority: RoutingPriority) -> ResourceManager<'_> {
        let resource = |kind| Resource { limits: &self.0, priority, kind };
        ResourceManager {
            connections: resource(Kind::Connections),
            pending_requests: resource(Kind::PendingRequests),
            requests: resource(Kind::Requests),
            retries: resource(Kind::Retries),
            connection_pools: resource(Kind::ConnectionPools),
        }
    }
}

impl Limits {
    fn priority(&self, priority: RoutingPriority) -> &PriorityLimits {
        match priority {
            RoutingPriority::Default => &self.default,
            RoutingPriority::High => &self.high,
        }
    }
}

impl PriorityLimits {
    fn new(t: &Thresholds, scope: &Scope) -> Self {
        let limits = PriorityLimits {
            retry_budget: t.retry_budget.map(|b| {
                (b.budget_percent.map_or(20.0, |p| p.value) / 100.0, u64::from(b.min_retry_concurrency.unwrap_or(3)))
            }),
            resources: [
                t.max_connections(),
                t.max_pending_requests(),
                t.max_requests(),
                t.max_retries(),
                t.max_connection_pools(),
            ]
            .map(|max| ResourceState { max, count: AtomicU64::new(0), open: AtomicBool::new(false) }),
            open: CircuitBreakersStats::new(scope),
            remaining: t.track_remaining.then(|| Box::new(CircuitBreakersRemainingStats::new(scope))),
        };
        if limits.remaining.is_some() {
            for kind in [Kind::Connections, Kind::PendingRequests, Kind::Requests, Kind::Retries, Kind::ConnectionPools]
            {
                if let (Some(gauge), Some(state)) = (limits.remaining_gauge(kind), limits.state(kind)) {
                    gauge.set(state.max.min(u64::from(u32::MAX)));
                }
            }
        }
        limits
    }

    fn state(&self, kind: Kind) -> Option<&ResourceState> {
        self.resources.get(kind as usize)
    }

    fn open_gauge(&self, kind: Kind) -> &Gauge {
        match kind {
            Kind::Connections => &self.open.cx_open,
            Kind::PendingRequests => &self.open.rq_pending_open,
            Kind::Requests => &self.open.rq_open,
            Kind::Retries => &self.open.rq_retry_open,
            Kind::ConnectionPools => &self.open.cx_pool_open,
        }
    }

    fn remaining_gauge(&self, kind: Kind) -> Option<&Gauge> {
        let remaining = self.remaining.as_deref()?;
        Some(match kind {
            Kind::Connections => &remaining.remaining_cx,
            Kind::PendingRequests => &remaining.remaining_pending,
            Kind::Requests => &remaining.remaining_rq,
            Kind::Retries => &remaining.remaining_retries,
            Kind::ConnectionPools => &remaining.remaining_cx_pools,
        })
    }

    /// Takes one unit of `kind` if `max` allows; `false` means the breaker is open.
    fn try_acquire(&self, kind: Kind, max: u64) -> bool {
        let Some(state) = self.state(kind) else { return false };
        let mut current = state.count.load(Ordering::Relaxed);
        loop {
            if current >= max {
                return false;
            }
            match state.count.compare_exchange_weak(current, current + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        if let Some(g) = self.remaining_gauge(kind) {
            g.sub(1);
        }
        self.update_open(kind, state);
        true
    }

    fn release(&self, kind: Kind) {
        let Some(state) = self.state(kind) else { return };
        state.count.fetch_sub(1, Ordering::AcqRel);
        if let Some(g) = self.remaining_gauge(kind) {
            g.add(1);
        }
        self.update_open(kind, state);
    }

    fn update_open(&self, kind: Kind, state: &ResourceState) {
        let now_open = state.count.load(Ordering::Relaxed) >= state.max;
        if state.open.compare_exchange(!now_open, now_open, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            if now_open {
                self.open_gauge(kind).inc();
            } else {
                self.open_gauge(kind).dec();
            }
        }
    }
}

impl ResourceManager<'_> {
    /// A retry slot: under `retry_budget`, retries may be up to the budget's share of the
    /// active and pending requests (at least `min_retry_concurrency`); else `max_retries`.
    pub fn try_acquire_retry(&self) -> Option<ResourceGuard> {
        match self.retries.limits().retry_budget {
            Some((fraction, min)) => {
                let active = self.requests.count() + self.pending_requests.count();
                let limit = ((active as f64 * fraction) as u64).max(min);
                self.retries.try_acquire_up_to(limit)
            }
            None => self.retries.try_acquire(),
        }
    }
}

impl Resource<'_> {
    fn limits(&self) -> &PriorityLimits {
        self.limits.priority(self.priority)
    }

    pub fn max(&self) -> u64 {
        self.limits().state(self.kind).map_or(0, |state| state.max)
    }

    pub fn count(&self) -> u64 {
        self.limits().state(self.kind).map_or(0, |state| state.count.load(Ordering::Relaxed))
    }

    /// Takes one unit if the limit allows; `None` means the breaker is open (overflow).
    pub fn try_acquire(&self) -> Option<ResourceGuard> {
        self.try_acquire_up_to(self.max())
    }

    /// As `try_acquire`, with a limit computed by the caller (a retry budget).
    pub fn try_acquire_up_to(&self, max: u64) -> Option<ResourceGuard> {
        self.limits().try_acquire(self.kind, max).then(|| ResourceGuard {
            limits: self.limits.clone(),
            priority: self.priority,
            kind: self.kind,
        })
    }
}

/// A held unit of a [`Resource`], released on drop.
pub struct ResourceGuard {
    limits: Arc<Limits>,
    priority: RoutingPriority,
    kind: Kind,
}

impl Drop for ResourceGuard {
    fn drop(&mut self) {
        self.limits.priority(self.priority).release(self.kind);
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
        let cx = cb.for_priority(RoutingPriority::Default).connections;
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
