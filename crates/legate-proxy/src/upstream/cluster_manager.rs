//! The cluster manager: owns every cluster on the main thread and gives workers a
//! thread-local view (Envoy's `ClusterManagerImpl` and `ThreadLocalClusterManagerImpl`).

use rustc_hash::FxHashMap as HashMap;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use legate_config::cluster::{Cluster as ClusterConfig, DiscoveryType};
use legate_stats::Store;
use tokio::task::AbortHandle;

use super::cluster::{Cluster, PrioritySet};
use super::config_texts::{ConfigText, ConfigTexts};
use super::dns;
use super::host::HostSharedPtr;
use super::load_balancer::LoadBalancer;
use super::stats::ClusterManagerStats;

/// The active clusters by name, as one immutable snapshot that workers read. A set of the
/// clusters themselves, found by the name each holds: an entry is one pointer, where a map
/// keyed by a copy of the name took three words (10,000 clusters: ~25 bytes each).
#[derive(Clone, Default)]
pub struct ClusterMap(rustc_hash::FxHashSet<ByName>);

/// The active clusters as the workers read them: the snapshot, and how many snapshots there
/// have been. A worker's cached view of a cluster is current while that count is unchanged,
/// which a plain load tells (loading the snapshot itself takes two locked instructions, and
/// a request looked it up twice).
pub struct SharedClusters {
    map: ArcSwap<ClusterMap>,
    generation: AtomicU64,
}

impl SharedClusters {
    fn new(map: ClusterMap) -> Self {
        SharedClusters { map: ArcSwap::from_pointee(map), generation: AtomicU64::new(0) }
    }

    pub fn load(&self) -> arc_swap::Guard<Arc<ClusterMap>> {
        self.map.load()
    }

    pub fn load_full(&self) -> Arc<ClusterMap> {
        self.map.load_full()
    }

    /// Publishes `map`; counted after it is in place, so that a worker that sees the new
    /// count finds the new map.
    fn store(&self, map: ClusterMap) {
        self.map.store(Arc::new(map));
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// A cluster in a [`ClusterMap`], hashed and compared by its name.
#[derive(Clone)]
struct ByName(Arc<Cluster>);

impl std::borrow::Borrow<str> for ByName {
    fn borrow(&self) -> &str {
        &self.0.name
    }
}

impl std::hash::Hash for ByName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As the `str` it borrows as, so that a lookup by name finds it.
        (*self.0.name).hash(state);
    }
}

impl PartialEq for ByName {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for ByName {}

impl ClusterMap {
    pub fn get(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.0.get(name).map(|entry| &entry.0)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.0.contains(name)
    }

    /// Adds `cluster` under its name; the cluster it replaces, if any.
    pub fn insert(&mut self, cluster: Arc<Cluster>) -> Option<Arc<Cluster>> {
        self.0.replace(ByName(cluster)).map(|old| old.0)
    }

    pub fn remove(&mut self, name: &str) -> Option<Arc<Cluster>> {
        self.0.take(name).map(|old| old.0)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The clusters, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &Arc<Cluster>> {
        self.0.iter().map(|entry| &entry.0)
    }
}

/// A CDS update as the clusters it added or changed keep it: its `version_info` and when it
/// was applied, one allocation for all of them.
#[derive(Debug)]
pub struct CdsUpdate {
    pub version_info: Box<str>,
    pub last_updated: SystemTime,
}

impl CdsUpdate {
    pub fn new(version_info: &str) -> Arc<CdsUpdate> {
        Arc::new(CdsUpdate { version_info: version_info.into(), last_updated: SystemTime::now() })
    }
}

/// When and in which version a cluster came from CDS, and what it was (`/config_dump`), as
/// compact JSON text: a parsed tree costs ten times the memory, for every cluster. Kept by
/// the cluster itself, where a map by name beside the clusters took ~100 bytes an entry.
#[derive(Clone, Debug)]
pub struct ApiVersion {
    pub update: Arc<CdsUpdate>,
    text: ConfigText,
}

impl ApiVersion {
    /// The cluster's config as it came, as compact JSON text (`name` is the cluster's).
    pub fn raw(&self, name: &str) -> String {
        self.text.restore(name)
    }
}

/// A change of the active set, applied with the next snapshot.
enum Pending {
    Activate(Arc<Cluster>),
    Remove(String),
}

/// The main thread's cluster manager (Envoy's `ClusterManagerImpl`): static clusters from the
/// bootstrap and dynamic ones from CDS. Workers see the active clusters as one snapshot; a CDS
/// cluster waits in `warming` until it has its first hosts (EDS, DNS) and only then joins it.
pub struct ClusterManager {
    clusters: Arc<SharedClusters>,
    pub stats: ClusterManagerStats,
    store: Arc<Store>,
    /// The position the next cluster to become active takes ([`Cluster::set_position`]): the
    /// clusters keep their order themselves, where a list of their names took ~26 bytes a
    /// cluster.
    next_position: std::cell::Cell<u32>,
    warming: RefCell<BTreeMap<Arc<str>, Arc<Cluster>>>,
    /// Warming clusters with their hosts, waiting for their TLS secrets from SDS.
    awaiting_secrets: RefCell<Vec<Arc<Cluster>>>,
    /// Whether waiting for the TLS secret of this name was given up (its
    /// `initial_fetch_timeout` passed); told by the SDS subscriptions.
    secret_gave_up: RefCell<Option<SecretGaveUp>>,
    /// Health checks, outlier sweeps and DNS refreshes of each active cluster; aborted when the
    /// cluster is removed or replaced.
    tasks: RefCell<HashMap<usize, Vec<AbortHandle>>>,
    /// Changes to publish together: one snapshot per batch, not one per cluster (a CDS update
    /// of 10,000 clusters must not copy the map 10,000 times).
    pending: RefCell<Vec<Pending>>,
    flush_scheduled: std::cell::Cell<bool>,
    /// The config texts of the CDS clusters, shared between clusters alike.
    texts: ConfigTexts,
}

/// Whether waiting for the TLS secret of this name was given up.
pub type SecretGaveUp = Box<dyn Fn(&str) -> bool>;

/// What [`ClusterManager::add_or_update_cluster`] did.
pub enum ClusterUpdate {
    /// Same config as now (or a static cluster of that name): nothing changed.
    Unchanged,
    /// A new cluster object is warming; EDS clusters wait for
    /// [`ClusterManager::finish_warming`].
    Warming(Arc<Cluster>),
}

impl ClusterManager {
    /// Creates the static clusters. DNS clusters have no hosts until [`Self::initialize`]. A
    /// TLS context that cannot be built (an unreadable certificate file, a key that does not
    /// match) fails the load, naming the cluster and the field; each is built once.
    pub fn new(configs: &[ClusterConfig], store: &Arc<Store>) -> Result<Self, String> {
        let stats = ClusterManagerStats::new(&store.scope("cluster_manager"));
        let mut map = ClusterMap::default();
        for (index, config) in configs.iter().enumerate() {
            let scope = store.scope(&format!("cluster.{}", config.stat_name()));
            let cluster = Cluster::new(config.clone(), &scope)
                .map_err(|e| format!("static_resources.clusters[{index}] ('{}'): {e}", config.name))?;
            let cluster = Arc::new(cluster);
            stats.cluster_added.inc();
            cluster.set_position(u32::try_from(map.len()).unwrap_or(u32::MAX));
            map.insert(cluster);
        }
        stats.active_clusters.set(map.len() as u64);
        stats.warming_clusters.set(0);
        Ok(ClusterManager {
            clusters: Arc::new(SharedClusters::new(map)),
            stats,
            store: store.clone(),
            next_position: std::cell::Cell::new(u32::try_from(configs.len()).unwrap_or(u32::MAX)),
            warming: RefCell::new(BTreeMap::new()),
            awaiting_secrets: RefCell::new(Vec::new()),
            secret_gave_up: RefCell::new(None),
            tasks: RefCell::new(HashMap::default()),
            pending: RefCell::new(Vec::new()),
            flush_scheduled: std::cell::Cell::new(false),
            texts: ConfigTexts::default(),
        })
    }

    /// Resolves the static DNS clusters once (Envoy's cluster initialization), then keeps them
    /// fresh in the background, and starts every static cluster's health checks and outlier
    /// sweeps, on the calling (main) thread's `LocalSet`.
    pub async fn initialize(&self) {
        let snapshot = self.clusters.load_full();
        let dns_clusters: Vec<Arc<Cluster>> = snapshot
            .values()
            .filter(|c| matches!(c.info.discovery_type, DiscoveryType::StrictDns | DiscoveryType::LogicalDns))
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
                let task = tokio::spawn(dns::run(cluster.clone(), resolver, result));
                self.tasks.borrow_mut().entry(task_key(&cluster)).or_default().push(task.abort_handle());
            }
        }
        for cluster in self.clusters() {
            self.start_tasks(&cluster);
        }
    }

    /// Health checks, outlier sweeps and TLS secret reloads of an active cluster.
    fn start_tasks(&self, cluster: &Arc<Cluster>) {
        let mut handles = Vec::new();
        if cluster.health_checker().is_some() {
            handles.push(tokio::task::spawn_local(super::health_checker::run(cluster.clone())).abort_handle());
        }
        if cluster.outlier_detector().is_some() {
            handles.push(tokio::task::spawn_local(super::outlier_detection::run(cluster.clone())).abort_handle());
        }
        // Its TLS secrets from SDS files, read again when they change (a control plane's
        // deliveries go through `secrets_changed`).
        let watched = cluster.transport_socket().map(|tls| tls.watched_files()).unwrap_or_default();
        if !watched.is_empty() {
            handles.push(tokio::task::spawn_local(crate::tls::secret::watch(watched)).abort_handle());
        }
        // No entry for a cluster without tasks (most of 10,000 EDS clusters).
        if !handles.is_empty() {
            self.tasks.borrow_mut().entry(task_key(cluster)).or_default().extend(handles);
        }
    }

    fn stop_tasks(&self, cluster: &Arc<Cluster>) {
        for task in self.tasks.borrow_mut().remove(&task_key(cluster)).unwrap_or_default() {
            task.abort();
        }
    }

    /// The snapshot handle workers read from.
    pub fn shared(&self) -> Arc<SharedClusters> {
        self.clusters.clone()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Cluster>> {
        self.clusters.load().get(name).cloned()
    }

    /// Active clusters in the order they were added (a cluster CDS replaced in the place of
    /// the one it replaced).
    pub fn clusters(&self) -> Vec<Arc<Cluster>> {
        let mut clusters: Vec<Arc<Cluster>> = self.clusters.load().values().cloned().collect();
        clusters.sort_by_key(|c| c.position());
        clusters
    }

    /// Clusters CDS added that wait for their first hosts.
    pub fn warming_clusters(&self) -> Vec<Arc<Cluster>> {
        self.warming.borrow().values().cloned().collect()
    }

    /// Names of the clusters CDS added, active or warming.
    pub fn api_cluster_names(&self) -> Vec<Arc<str>> {
        let active = self.clusters.load();
        let mut names: Vec<Arc<str>> = active.values().filter(|c| c.added_via_api()).map(|c| c.name.clone()).collect();
        names.extend(self.warming.borrow().keys().filter(|name| !active.contains_key(name)).cloned());
        names
    }

    /// Names of the active and warming clusters.
    pub fn cluster_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.clusters.load().values().map(|c| c.name.to_string()).collect();
        names.extend(self.warming.borrow().keys().map(|name| name.to_string()));
        names
    }

    /// Adds or replaces a CDS cluster (Envoy's `addOrUpdateCluster`). The new cluster warms:
    /// STATIC ones are ready at once, DNS ones after their first resolution, EDS ones when the
    /// caller hands them their endpoints. Until then the previous version keeps serving.
    pub fn add_or_update_cluster(
        self: &Rc<Self>,
        config: ClusterConfig,
        raw: &serde_json::Value,
        update: &Arc<CdsUpdate>,
    ) -> Result<ClusterUpdate, String> {
        let name = config.name.clone();
        let active = self.get(&name);
        if active.as_ref().is_some_and(|c| !c.added_via_api()) {
            // Envoy: a static cluster cannot be changed through the API; the update skips it.
            tracing::warn!(cluster = %name, "CDS update for a static cluster ignored");
            return Ok(ClusterUpdate::Unchanged);
        }
        let current = self.warming.borrow().get(name.as_str()).cloned().or_else(|| active.clone());
        if current.as_ref().is_some_and(|c| c.info.same_config(&config)) {
            return Ok(ClusterUpdate::Unchanged);
        }
        let scope = self.store.scope(&format!("cluster.{}", config.stat_name()));
        let mut cluster = Cluster::new(config, &scope).map_err(|e| format!("cluster '{name}': {e}"))?;
        cluster.api = Some(ApiVersion { update: update.clone(), text: self.texts.keep(&name, raw) });
        let cluster = Arc::new(cluster);
        if current.is_some() {
            self.stats.cluster_modified.inc();
        } else {
            self.stats.cluster_added.inc();
        }
        self.warming.borrow_mut().insert(cluster.name.clone(), cluster.clone());
        self.stats.warming_clusters.set(self.warming.borrow().len() as u64);
        match cluster.info.discovery_type {
            DiscoveryType::StrictDns | DiscoveryType::LogicalDns => {
                let manager = Rc::downgrade(self);
                let warming = cluster.clone();
                tokio::task::spawn_local(async move {
                    let resolver = dns::DnsResolver::new(&warming);
                    let result = dns::refresh(&warming, &resolver).await;
                    let Some(manager) = manager.upgrade() else { return };
                    if manager.finish_warming(&warming) {
                        let task = tokio::spawn(dns::run(warming.clone(), resolver, result));
                        manager.tasks.borrow_mut().entry(task_key(&warming)).or_default().push(task.abort_handle());
                    }
                });
            }
            DiscoveryType::Eds => {}
            _ => {
                self.finish_warming(&cluster);
            }
        }
        Ok(ClusterUpdate::Warming(cluster))
    }

    /// Moves a warming cluster into the active set (its endpoints arrived, or
    /// `initial_fetch_timeout` passed), once its TLS secrets from SDS arrived too (see
    /// [`Self::secrets_changed`]). False when it is no longer the warming version.
    pub fn finish_warming(self: &Rc<Self>, cluster: &Arc<Cluster>) -> bool {
        if !self.warming.borrow().get(&cluster.name).is_some_and(|w| Arc::ptr_eq(w, cluster)) {
            return false;
        }
        if !self.secrets_settled(cluster) {
            let mut awaiting = self.awaiting_secrets.borrow_mut();
            // Versions replaced or removed since wait no more.
            let warming = self.warming.borrow();
            awaiting.retain(|c| warming.get(&c.name).is_some_and(|w| Arc::ptr_eq(w, c)) && !Arc::ptr_eq(c, cluster));
            awaiting.push(cluster.clone());
            return true;
        }
        self.activate(cluster)
    }

    /// Lets the SDS subscriptions say which secrets were given up on (see
    /// [`Self::secrets_changed`]).
    pub fn set_secret_gave_up(&self, gave_up: SecretGaveUp) {
        *self.secret_gave_up.borrow_mut() = Some(gave_up);
    }

    /// Whether a cluster's TLS secrets from SDS are there (or waiting for them was given up, as
    /// Envoy, whose cluster then serves and fails its TLS connections).
    fn secrets_settled(&self, cluster: &Cluster) -> bool {
        let Some(tls) = cluster.transport_socket() else { return true };
        tls.ready()
            || self.secret_gave_up.borrow().as_ref().is_some_and(|gave_up| tls.secret_names().into_iter().any(gave_up))
    }

    /// Whether every active cluster's TLS secrets are settled (start-up waits for the static
    /// clusters' as for CDS clusters' endpoints).
    pub fn active_secrets_settled(&self) -> bool {
        self.clusters.load().values().all(|cluster| self.secrets_settled(cluster))
    }

    /// A TLS secret from a control plane arrived, or waiting for one was given up: active
    /// clusters taking secrets from a control plane read them again (a context whose secrets
    /// did not change finds so at once; files are polled), and warming clusters whose hosts
    /// are ready and whose secrets are now settled become active.
    pub fn secrets_changed(self: &Rc<Self>) {
        for cluster in self.clusters.load().values() {
            if let Some(tls) = cluster.transport_socket().filter(|tls| tls.has_sds()) {
                tls.reload_delivered_secrets();
            }
        }
        let waiting = std::mem::take(&mut *self.awaiting_secrets.borrow_mut());
        for cluster in waiting {
            if let Some(tls) = cluster.transport_socket() {
                tls.reload_delivered_secrets();
            }
            if self.secrets_settled(&cluster) {
                self.activate(&cluster);
            } else {
                self.awaiting_secrets.borrow_mut().push(cluster);
            }
        }
    }

    /// Moves the warming version of a cluster into the active set; false when `cluster` is
    /// not that version (any more).
    fn activate(self: &Rc<Self>, cluster: &Arc<Cluster>) -> bool {
        {
            let mut warming = self.warming.borrow_mut();
            match warming.get(&cluster.name) {
                Some(w) if Arc::ptr_eq(w, cluster) => {
                    warming.remove(&cluster.name);
                }
                _ => return false,
            }
            self.stats.warming_clusters.set(warming.len() as u64);
        }
        self.schedule(Pending::Activate(cluster.clone()));
        true
    }

    /// Drops a warming cluster that cannot go on (its endpoints' source failed); the version
    /// serving now, if any, stays.
    pub fn abandon_warming(&self, cluster: &Arc<Cluster>) {
        let mut warming = self.warming.borrow_mut();
        if warming.get(&cluster.name).is_some_and(|w| Arc::ptr_eq(w, cluster)) {
            warming.remove(&cluster.name);
        }
        self.stats.warming_clusters.set(warming.len() as u64);
    }

    /// The stats store clusters count into.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Removes a CDS cluster (static ones stay). Requests in flight finish on it.
    pub fn remove_cluster(self: &Rc<Self>, name: &str) -> bool {
        let warming = self.warming.borrow_mut().remove(name).is_some();
        if !warming && !self.get(name).is_some_and(|c| c.added_via_api()) {
            return false;
        }
        self.stats.warming_clusters.set(self.warming.borrow().len() as u64);
        self.stats.cluster_removed.inc();
        self.schedule(Pending::Remove(name.to_string()));
        true
    }

    fn schedule(self: &Rc<Self>, change: Pending) {
        self.pending.borrow_mut().push(change);
        if self.flush_scheduled.replace(true) {
            return;
        }
        let manager = Rc::downgrade(self);
        tokio::task::spawn_local(async move {
            if let Some(manager) = manager.upgrade() {
                manager.flush();
            }
        });
    }

    /// Publishes the pending changes as one new snapshot.
    pub fn flush(&self) {
        self.flush_scheduled.set(false);
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        if pending.is_empty() {
            return;
        }
        let mut map = ClusterMap::clone(&self.clusters.load());
        // By name: a batch may activate a cluster and replace it again (a Vec searched per
        // cluster would be quadratic in a 10,000-cluster CDS update).
        let mut started: HashMap<Arc<str>, Arc<Cluster>> = HashMap::default();
        for change in pending {
            match change {
                Pending::Activate(cluster) => {
                    match map.insert(cluster.clone()) {
                        Some(old) => {
                            cluster.set_position(old.position());
                            self.stop_tasks(&old);
                        }
                        None => {
                            let position = self.next_position.get();
                            cluster.set_position(position);
                            self.next_position.set(position.wrapping_add(1));
                        }
                    }
                    started.insert(cluster.name.clone(), cluster);
                }
                Pending::Remove(name) => {
                    if let Some(old) = map.remove(name.as_str()) {
                        self.stop_tasks(&old);
                    }
                    started.remove(name.as_str());
                }
            }
        }
        self.stats.active_clusters.set(map.len() as u64);
        self.clusters.store(map);
        super::pool::topology_changed();
        for cluster in started.values() {
            self.start_tasks(cluster);
        }
    }
}

/// Background tasks belong to one cluster object, not to its name: a replaced cluster's tasks
/// end while the new one's start.
fn task_key(cluster: &Arc<Cluster>) -> usize {
    Arc::as_ptr(cluster) as usize
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
    clusters: Arc<SharedClusters>,
    local: RefCell<HashMap<String, ThreadLocalCluster>>,
}

struct ThreadLocalCluster {
    cluster: Arc<Cluster>,
    priority_set: Arc<PrioritySet>,
    lb: LoadBalancer,
    /// The snapshot count when `cluster` was found current ([`SharedClusters`]).
    generation: u64,
}

impl ThreadLocalCluster {
    /// Whether this view is current: no new snapshot since, and the cluster's hosts are the
    /// ones the load balancer was built for. Two plain loads.
    fn current(&self, generation: u64) -> bool {
        self.generation == generation && self.priority_set.version == self.cluster.hosts_version()
    }
}

impl ThreadLocalClusterManager {
    pub fn new(clusters: Arc<SharedClusters>) -> Self {
        ThreadLocalClusterManager { clusters, local: RefCell::new(HashMap::default()) }
    }

    pub fn get(&self, name: &str) -> Option<Arc<Cluster>> {
        if let Some(tl) = self.local.borrow().get(name) {
            if tl.generation == self.clusters.generation() {
                return Some(tl.cluster.clone());
            }
        }
        self.clusters.load().get(name).cloned()
    }

    /// The current clusters.
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<ClusterMap>> {
        self.clusters.load()
    }

    /// Forgets the load balancers of clusters that are gone or replaced.
    pub fn forget_removed(&self) {
        let clusters = self.clusters.load();
        self.local
            .borrow_mut()
            .retain(|name, tl| clusters.get(name.as_str()).is_some_and(|c| Arc::ptr_eq(c, &tl.cluster)));
    }

    /// Picks a host of `cluster_name` with this worker's load balancer. The load balancer is
    /// rebuilt when the cluster or its hosts changed since the last pick.
    pub fn choose_host(&self, cluster_name: &str) -> Result<(Arc<Cluster>, HostSharedPtr), ChooseHostError> {
        self.choose(cluster_name, None, Arc::clone)
    }

    /// [`Self::choose_host`]'s host, picked with the request hash of the route's
    /// `hash_policy`, which the hashing policies (`RING_HASH`, `MAGLEV`) pick by; others
    /// ignore it.
    pub fn choose_host_with_hash(
        &self,
        cluster_name: &str,
        hash: Option<u64>,
    ) -> Result<HostSharedPtr, ChooseHostError> {
        self.choose(cluster_name, hash, |_| ()).map(|((), host)| host)
    }

    /// The pick, with what `with_cluster` takes from the cluster (the router has its cluster
    /// already: a clone it drops would be two atomic operations per request on a count every
    /// worker shares).
    fn choose<R>(
        &self,
        cluster_name: &str,
        hash: Option<u64>,
        with_cluster: impl FnOnce(&Arc<Cluster>) -> R,
    ) -> Result<(R, HostSharedPtr), ChooseHostError> {
        let generation = self.clusters.generation();
        let mut local = self.local.borrow_mut();
        // The common path: the worker's own view is current, and serves without the snapshot.
        let fresh = local.get_mut(cluster_name).filter(|tl| tl.current(generation));
        let tl = match fresh {
            Some(tl) => tl,
            None => {
                let clusters = self.clusters.load();
                let cluster = clusters.get(cluster_name).ok_or(ChooseHostError::NoCluster)?;
                let stale = match local.get_mut(cluster_name) {
                    Some(tl) => {
                        tl.generation = generation;
                        !Arc::ptr_eq(&tl.cluster, cluster) || tl.priority_set.version != cluster.priority_set_version()
                    }
                    None => true,
                };
                if stale {
                    let cluster = cluster.clone();
                    let priority_set = cluster.priority_set();
                    let lb = LoadBalancer::new(&cluster, &priority_set);
                    let tl = ThreadLocalCluster { cluster, priority_set, lb, generation };
                    local.insert(cluster_name.to_string(), tl);
                }
                local.get_mut(cluster_name).ok_or(ChooseHostError::NoCluster)?
            }
        };
        match tl.lb.choose_host(&tl.cluster, &tl.priority_set, hash) {
            Some(host) => Ok((with_cluster(&tl.cluster), host)),
            None => Err(ChooseHostError::NoHost(tl.cluster.clone())),
        }
    }
}
