//! Circuit breakers: limits for a whole cluster, counted across all workers (Envoy's
//! `ResourceManager`). Acquiring returns a guard; dropping the guard gives the slot back, so a
//! connection or request that ends by any path releases what it held.
//!
//! Each limit may be overridden by the runtime, read at each acquire as Envoy's:
//! `circuit_breakers.<cluster>.<default|high>.max_connections`, `max_pending_requests`,
//! `max_requests`, `max_retries`, and `retry_budget.budget_percent` /
//! `retry_budget.min_retry_concurrency`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use legate_config::cluster::{CircuitBreakers as CircuitBreakersConfig, RoutingPriority, Thresholds};
use legate_stats::{Gauge, Scope};

use super::stats::{CircuitBreakersRemainingStats, CircuitBreakersStats};

/// Default and high priority limits of a cluster. Their counts are made on the cluster's
/// first acquire: 10,000 idle clusters would otherwise hold ~0.8 KiB each of counts that never
/// move (their stats exist from the start, as Envoy's). A guard holds its resource's `Arc`, so
/// a connection or request that outlives its cluster (a CDS update replaced it) still releases
/// into the limit it counted against.
pub struct CircuitBreakers {
    /// The cluster's `circuit_breakers`; `None` when it sets nothing (most clusters: the
    /// defaults then take no room).
    config: Option<Box<CircuitBreakersConfig>>,
    /// One pointer, as a `OnceLock` is two words: two workers that both make the counts on
    /// their first acquire make handles to the same stats, and one box is dropped before any
    /// count moves.
    counts: once_cell::race::OnceBox<Limits>,
    /// `circuit_breakers.<cluster name>`, the runtime keys' prefix.
    runtime_prefix: Box<str>,
}

/// Both priorities' limits.
struct Limits {
    default: PriorityLimits,
    high: PriorityLimits,
}

/// The limits of one routing priority.
struct PriorityLimits {
    /// `retry_budget`: (budget percent, min_retry_concurrency); replaces `max_retries`.
    retry_budget: Option<(f64, u64)>,
    /// `circuit_breakers.<cluster>.<priority>.retry_budget.`: `budget_percent`,
    /// `min_retry_concurrency`.
    budget_keys: [Box<str>; 2],
    /// Indexed by [`Kind`].
    resources: [Arc<ResourceState>; 5],
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
    breakers: &'a CircuitBreakers,
    /// `cluster.<name>`, to create the stat handles with the counts (the cluster's own scope:
    /// the breakers keep no copy of it).
    cluster_scope: &'a Scope,
    priority: RoutingPriority,
    kind: Kind,
}

/// A resource's count, limit and gauges.
struct ResourceState {
    max: u64,
    /// The runtime's key for `max` (none for the connection pools, as in Envoy).
    runtime_key: Option<Box<str>>,
    count: AtomicU64,
    /// Mirrors `count >= max` into the `*_open` gauge; flips are counted exactly once.
    open: AtomicBool,
    open_gauge: Gauge,
    remaining: Option<Gauge>,
}

impl CircuitBreakers {
    /// Declares the `circuit_breakers.<priority>.*_open` stats and creates `remaining_*` (at
    /// their limits); the counts, and the handles of the `*_open` gauges, wait for the first
    /// acquire.
    pub fn new(config: &CircuitBreakersConfig, cluster_name: &str, cluster_scope: &Scope) -> Self {
        for priority in [RoutingPriority::Default, RoutingPriority::High] {
            let scope = priority_scope(cluster_scope, priority);
            CircuitBreakersStats::declare(&scope);
            let thresholds = config.for_priority(priority);
            if thresholds.track_remaining {
                set_remaining_to_limits(&CircuitBreakersRemainingStats::new(&scope), &thresholds);
            }
        }
        CircuitBreakers {
            config: (*config != CircuitBreakersConfig::default()).then(|| Box::new(config.clone())),
            counts: Default::default(),
            runtime_prefix: format!("circuit_breakers.{cluster_name}").into(),
        }
    }

    /// The thresholds of `priority` (Envoy's defaults when the config sets none).
    fn thresholds(&self, priority: RoutingPriority) -> Thresholds {
        match &self.config {
            Some(config) => config.for_priority(priority),
            None => Thresholds { priority, ..Default::default() },
        }
    }

    /// The counts, created on first use.
    fn counts(&self, cluster_scope: &Scope) -> &Limits {
        self.counts.get_or_init(|| {
            let limits = |priority| {
                let name = match priority {
                    RoutingPriority::Default => "default",
                    RoutingPriority::High => "high",
                };
                let keys = format!("{}.{name}", self.runtime_prefix);
                PriorityLimits::new(&self.thresholds(priority), &priority_scope(cluster_scope, priority), &keys)
            };
            Box::new(Limits { default: limits(RoutingPriority::Default), high: limits(RoutingPriority::High) })
        })
    }

    /// The resources of `priority`; `cluster_scope` is the cluster's (`cluster.<name>`), as
    /// given to [`Self::new`] (see [`super::Cluster::breakers`]).
    pub fn for_priority<'a>(&'a self, cluster_scope: &'a Scope, priority: RoutingPriority) -> ResourceManager<'a> {
        let resource = |kind| Resource { breakers: self, cluster_scope, priority, kind };
        ResourceManager {
            connections: resource(Kind::Connections),
            pending_requests: resource(Kind::PendingRequests),
            requests: resource(Kind::Requests),
            retries: resource(Kind::Retries),
            connection_pools: resource(Kind::ConnectionPools),
        }
    }
}

/// `remaining_*` with nothing held: each resource's limit (as a gauge shows it, capped at
/// 2³² − 1).
fn set_remaining_to_limits(remaining: &CircuitBreakersRemainingStats, t: &Thresholds) {
    let cap = |max: u64| max.min(u64::from(u32::MAX));
    remaining.remaining_cx.set(cap(t.max_connections()));
    remaining.remaining_pending.set(cap(t.max_pending_requests()));
    remaining.remaining_rq.set(cap(t.max_requests()));
    remaining.remaining_retries.set(cap(t.max_retries()));
    remaining.remaining_cx_pools.set(cap(t.max_connection_pools()));
}

/// `cluster.<name>.circuit_breakers.<priority>`.
fn priority_scope(cluster_scope: &Scope, priority: RoutingPriority) -> Scope {
    match priority {
        RoutingPriority::Default => cluster_scope.scope("circuit_breakers.default"),
        RoutingPriority::High => cluster_scope.scope("circuit_breakers.high"),
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
    fn new(t: &Thresholds, scope: &Scope, runtime_prefix: &str) -> Self {
        let open = CircuitBreakersStats::new(scope);
        let remaining = t.track_remaining.then(|| CircuitBreakersRemainingStats::new(scope));
        if let Some(remaining) = &remaining {
            set_remaining_to_limits(remaining, t);
        }
        let r = |max: u64, key: Option<&str>, open_gauge: Gauge, remaining: Option<Gauge>| {
            Arc::new(ResourceState {
                max,
                runtime_key: key.map(|k| format!("{runtime_prefix}.{k}").into()),
                count: AtomicU64::new(0),
                open: AtomicBool::new(false),
                open_gauge,
                remaining,
            })
        };
        let remaining = remaining.as_ref();
        PriorityLimits {
            retry_budget: t
                .retry_budget
                .map(|b| (b.budget_percent.map_or(20.0, |p| p.value), u64::from(b.min_retry_concurrency.unwrap_or(3)))),
            budget_keys: [
                format!("{runtime_prefix}.retry_budget.budget_percent").into(),
                format!("{runtime_prefix}.retry_budget.min_retry_concurrency").into(),
            ],
            resources: [
                r(
                    t.max_connections(),
                    Some("max_connections"),
                    open.cx_open,
                    remaining.map(|s| s.remaining_cx.clone()),
                ),
                r(
                    t.max_pending_requests(),
                    Some("max_pending_requests"),
                    open.rq_pending_open,
                    remaining.map(|s| s.remaining_pending.clone()),
                ),
                r(t.max_requests(), Some("max_requests"), open.rq_open, remaining.map(|s| s.remaining_rq.clone())),
                r(
                    t.max_retries(),
                    Some("max_retries"),
                    open.rq_retry_open,
                    remaining.map(|s| s.remaining_retries.clone()),
                ),
                r(t.max_connection_pools(), None, open.cx_pool_open, remaining.map(|s| s.remaining_cx_pools.clone())),
            ],
        }
    }

    fn state(&self, kind: Kind) -> Option<&Arc<ResourceState>> {
        self.resources.get(kind as usize)
    }
}

impl ResourceState {
    /// The limit in force: the runtime's, else the config's.
    fn limit(&self) -> u64 {
        match &self.runtime_key {
            Some(key) => crate::runtime::integer(key, self.max),
            None => self.max,
        }
    }

    /// Takes one unit if `max` allows; `None` means the breaker is open.
    fn try_acquire(self: &Arc<Self>, max: u64) -> Option<ResourceGuard> {
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
        let now_open = self.count.load(Ordering::Relaxed) >= self.limit();
        // Read first: a compare-exchange locks the line even when it fails, and the state
        // changes only when the count crosses the limit (twice per request otherwise).
        if self.open.load(Ordering::Relaxed) != now_open
            && self.open.compare_exchange(!now_open, now_open, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            if now_open {
                self.open_gauge.inc();
            } else {
                self.open_gauge.dec();
            }
        }
    }
}

impl ResourceManager<'_> {
    /// A retry slot: under `retry_budget`, retries may be up to the budget's share of the
    /// active and pending requests (at least `min_retry_concurrency`); else `max_retries`.
    pub fn try_acquire_retry(&self) -> Option<ResourceGuard> {
        let limits = self.retries.counted();
        match limits.retry_budget {
            Some((percent, min)) => {
                let [percent_key, min_key] = &limits.budget_keys;
                let percent = crate::runtime::double(percent_key, percent);
                let min = crate::runtime::integer(min_key, min);
                let active = self.requests.count() + self.pending_requests.count();
                let limit = ((active as f64 * percent / 100.0) as u64).max(min);
                self.retries.try_acquire_up_to(limit)
            }
            None => self.retries.try_acquire(),
        }
    }
}

impl Resource<'_> {
    /// This priority's counts, created on first use.
    fn counted(&self) -> &PriorityLimits {
        self.breakers.counts(self.cluster_scope).priority(self.priority)
    }

    pub fn max(&self) -> u64 {
        match self.breakers.counts.get() {
            Some(counts) => counts.priority(self.priority).state(self.kind).map_or(0, |state| state.limit()),
            None => {
                let t = self.breakers.thresholds(self.priority);
                match self.kind {
                    Kind::Connections => t.max_connections(),
                    Kind::PendingRequests => t.max_pending_requests(),
                    Kind::Requests => t.max_requests(),
                    Kind::Retries => t.max_retries(),
                    Kind::ConnectionPools => t.max_connection_pools(),
                }
            }
        }
    }

    pub fn count(&self) -> u64 {
        let Some(counts) = self.breakers.counts.get() else { return 0 };
        counts.priority(self.priority).state(self.kind).map_or(0, |state| state.count.load(Ordering::Relaxed))
    }

    /// Takes one unit if the limit allows; `None` means the breaker is open (overflow).
    pub fn try_acquire(&self) -> Option<ResourceGuard> {
        let state = self.counted().state(self.kind)?;
        state.try_acquire(state.limit())
    }

    /// As `try_acquire`, with a limit computed by the caller (a retry budget).
    pub fn try_acquire_up_to(&self, max: u64) -> Option<ResourceGuard> {
        self.counted().state(self.kind)?.try_acquire(max)
    }
}

/// A held unit of a [`Resource`], released on drop.
pub struct ResourceGuard {
    resource: Arc<ResourceState>,
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
        let cb = CircuitBreakers::new(&config, "c", &scope);
        let cx = cb.for_priority(&scope, RoutingPriority::Default).connections;
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

    #[test]
    fn counts_wait_for_the_first_acquire_and_stats_do_not() {
        let store = legate_stats::Store::new(1);
        let scope = store.scope("cluster.c");
        let config = CircuitBreakersConfig {
            thresholds: vec![Thresholds {
                priority: RoutingPriority::High,
                max_requests: Some(7),
                track_remaining: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        let cb = CircuitBreakers::new(&config, "c", &scope);
        assert!(cb.counts.get().is_none());
        let high = cb.for_priority(&scope, RoutingPriority::High);
        assert_eq!((high.requests.max(), high.requests.count()), (7, 0));
        assert_eq!(cb.for_priority(&scope, RoutingPriority::Default).requests.max(), 1024);
        assert_eq!(store.gauge_value("cluster.c.circuit_breakers.high.remaining_rq"), Some(7));
        assert_eq!(store.gauge_value("cluster.c.circuit_breakers.default.rq_open"), Some(0));
        assert!(cb.counts.get().is_none(), "reading creates nothing");
        let guard = high.requests.try_acquire();
        assert!(guard.is_some() && cb.counts.get().is_some());
        assert_eq!((high.requests.max(), high.requests.count()), (7, 1));
        assert_eq!(store.gauge_value("cluster.c.circuit_breakers.high.remaining_rq"), Some(6));
        drop(guard);
        assert_eq!(store.gauge_value("cluster.c.circuit_breakers.high.remaining_rq"), Some(7));
    }
}
