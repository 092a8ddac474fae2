//! One upstream connection's accounting, shared by tcp_proxy and the HTTP connection pools.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::circuit_breakers::ResourceGuard;
use super::{Cluster, HostSharedPtr};

/// One upstream connection's accounting: created when the attempt starts, dropped when the
/// connection is gone, so every path updates the cluster and host stats once.
pub struct UpstreamCx {
    pub cluster: Arc<Cluster>,
    pub host: HostSharedPtr,
    _breaker: ResourceGuard,
    pub started: Instant,
    pub connected_at: Option<Instant>,
    pub closed_locally: bool,
}

impl UpstreamCx {
    pub fn new(cluster: Arc<Cluster>, host: HostSharedPtr, breaker: ResourceGuard) -> Self {
        cluster.stats().upstream_cx_total().inc();
        cluster.stats().upstream_cx_active().inc();
        host.stats.cx_total.fetch_add(1, Ordering::Relaxed);
        host.stats.cx_active.fetch_add(1, Ordering::Relaxed);
        UpstreamCx {
            cluster,
            host,
            _breaker: breaker,
            started: Instant::now(),
            connected_at: None,
            closed_locally: false,
        }
    }

    pub fn connected(&mut self, last_activity: &mut Instant) {
        let now = Instant::now();
        self.cluster.stats().upstream_cx_connect_ms().record(now.duration_since(self.started).as_millis() as u64);
        self.connected_at = Some(now);
        *last_activity = now;
    }
}

impl Drop for UpstreamCx {
    fn drop(&mut self) {
        let stats = &self.cluster.stats();
        stats.upstream_cx_active().dec();
        self.host.stats.cx_active.fetch_sub(1, Ordering::Relaxed);
        stats.upstream_cx_destroy().inc();
        if self.closed_locally {
            stats.upstream_cx_destroy_local().inc();
        } else {
            stats.upstream_cx_destroy_remote().inc();
        }
        if let Some(at) = self.connected_at {
            stats.upstream_cx_length_ms().record(at.elapsed().as_millis() as u64);
        }
    }
}
