//! The cluster manager: owns every cluster on the main thread and gives workers a
//! thread-local view (Envoy's `ClusterManagerImpl` and `ThreadLocalClusterManagerImpl`).

use rustc_hash::FxHashMap as HashMap;
use std::cell::RefCell;
use std::sync::Arc;

use arc_swap::ArcSwap;
use legate_config::cluster::{Cluster as ClusterConfig, DiscoveryType};
use legate_stats::Store;

use super::cluster::{Cluster, PrioritySet};
use super::dns;
use super::host::Host;
use super::load_balancer::LoadBalancer;
use super::stats::ClusterManagerStats;

/// Every cluster by name, as one immutable snapshot.
pub type ClusterMap = HashMap<String, Arc<Cluster>>;

pub struct ClusterManager {
    clusters: Arc<ArcSwap<ClusterMap>>,
    pub stats: ClusterManagerStats,
    /// Insertion order, for `/clusters` and `/config_dump`.
    order: Vec<String>,
}

impl ClusterManager {
    /// Creates the static clusters. DNS clusters have no hosts until [`Self::initialize`].
    pub fn new(configs: &[ClusterConfig], store: &Arc<Store>) -> Self {
        let stats = ClusterManagerStats::new(&store.scope("cluster_manager"));
        let mut map = ClusterMap::default();
        let mut order = Vec::new();
        for config in configs {
            let scope = store.scope(&format!("cluster.{}", config.stat_name()));
            let cluster = Arc::new(Cluster::new(config.clone(), &scope));
            stats.cluster_added.inc();
            order.push(cluster.name.clone());
            map.insert(cluster.name.clone(), cluster);
        }
        stats.active_clusters.set(map.len() as u64);
        stats.warming_clusters.set(0);
        ClusterManager { clusters: Arc::new(ArcSwap::from_pointee(map)), stats, order }
    }

    /// Resolves DNS clusters once (Envoy's cluster initialization), then keeps them fresh in
    /// the background on the calling (main) runtime.
    pub async fn initialize(&self) {
        let snapshot = self.clusters.load_full();
        let dns_clusters: Vec<Arc<Cluster>> = snapshot
            .values()
            .filter(|c| matches!(c.config.discovery_type, DiscoveryType::StrictDns | DiscoveryType::LogicalDns))
            .cloned()
            .collect();
        // First resolutions run concurrently; start-up waits for all of them.
        let mut first = tokio::task::JoinSet::new();
        for cluster in dns_clusters {
            first.spawn(async move {
                let resolver = dns::DnsResolver::new(&cluster);
                let result = dns::refresh(&cluster, &resolver).await;
                (cluster, resolver, result)
            });
        }
        while let Some(done) = first.join_next().await {
            if let Ok((cluster, resolver, result)) = done {
                tokio::spawn(dns::run(cluster, resolver, result));
            }
        }
    }

    /// The snapshot handle workers read from.
    pub fn shared(&self) -> Arc<ArcSwap<ClusterMap>> {
        self.clusters.clone()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Cluster>> {
        self.clusters.load().get(name).cloned()
    }

    /// Clusters in the order they were configured.
    pub fn clusters(&self) -> Vec<Arc<Cluster>> {
        let map = self.clusters.load();
        self.order.iter().filter_map(|n| map.get(n).cloned()).collect()
    }
}

/// Why no host could be chosen.
pub enum ChooseHostError {
    /// No cluster of that name (tcp_proxy: `downstream_cx_no_route`).
    NoCluster,
    /// The cluster has no host (`upstream_cx_none_healthy`).
    NoHost(Arc<Cluster>),
}

/// A worker's view of the clusters, with its own load balancer per cluster.
pub struct ThreadLocalClusterManager {
    clusters: Arc<ArcSwap<ClusterMap>>,
    local: RefCell<HashMap<String, ThreadLocalCluster>>,
}

struct ThreadLocalCluster {
    cluster: Arc<Cluster>,
    priority_set: Arc<PrioritySet>,
    lb: LoadBalancer,
}

impl ThreadLocalClusterManager {
    pub fn new(clusters: Arc<ArcSwap<ClusterMap>>) -> Self {
        ThreadLocalClusterManager { clusters, local: RefCell::new(HashMap::default()) }
    }

    pub fn get(&self, name: &str) -> Option<Arc<Cluster>> {
        self.clusters.load().get(name).cloned()
    }

    /// Picks a host of `cluster_name` with this worker's load balancer. The load balancer is
    /// rebuilt when the cluster or its hosts changed since the last pick.
    pub fn choose_host(&self, cluster_name: &str) -> Result<(Arc<Cluster>, Arc<Host>), ChooseHostError> {
        self.choose_host_with_hash(cluster_name, None)
    }

    /// [`Self::choose_host`] with the request hash of the route's `hash_policy`, which the
    /// hashing policies (`RING_HASH`, `MAGLEV`) pick by; others ignore it.
    pub fn choose_host_with_hash(
        &self,
        cluster_name: &str,
        hash: Option<u64>,
    ) -> Result<(Arc<Cluster>, Arc<Host>), ChooseHostError> {
        let cluster = self.get(cluster_name).ok_or(ChooseHostError::NoCluster)?;
        let priority_set = cluster.priority_set();
        let mut local = self.local.borrow_mut();
        let stale = match local.get(cluster_name) {
            Some(tl) => !Arc::ptr_eq(&tl.cluster, &cluster) || tl.priority_set.version != priority_set.version,
            None => true,
        };
        if stale {
            let lb = LoadBalancer::new(&cluster, &priority_set);
            local.insert(
                cluster_name.to_string(),
                ThreadLocalCluster { cluster: cluster.clone(), priority_set: priority_set.clone(), lb },
            );
        }
        let Some(tl) = local.get_mut(cluster_name) else {
            return Err(ChooseHostError::NoCluster);
        };
        match tl.lb.choose_host(&tl.cluster, &tl.priority_set, hash) {
            Some(host) => Ok((tl.cluster.clone(), host)),
            None => Err(ChooseHostError::NoHost(tl.cluster.clone())),
        }
    }
}
