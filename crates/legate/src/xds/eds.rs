//! EDS: the endpoints of `EDS` clusters (Envoy's `EdsClusterImpl`). A cluster from CDS warms
//! until its first `ClusterLoadAssignment` arrives, or until `initial_fetch_timeout` (then it
//! serves with no hosts). A cluster that replaces one of its name with the same service starts
//! with the hosts of the one it replaces: the control plane has no reason to send them again.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;

use legate_config::cluster::{DiscoveryType, EdsClusterConfig};
use legate_config::endpoint::ClusterLoadAssignment;
use legate_proxy::upstream::{Cluster, ClusterManager};
use legate_xds::{
    ConfigUpdate, NameSet, ResourceType, SubscriptionCallbacks, SubscriptionStats, UpdateFailure, Watch, XdsClient,
};

pub struct Eds {
    cluster_manager: Rc<ClusterManager>,
    client: Rc<XdsClient>,
    /// The watches by the cluster's name (the cluster's own `Arc<str>`), each holding its
    /// cluster's state.
    clusters: RefCell<HashMap<std::sync::Arc<str>, Watch<EdsCluster>>>,
}

struct EdsCluster {
    cluster: Arc<Cluster>,
    /// `eds_cluster_config.service_name` when set; else the cluster's name is the service.
    /// A boxed `String` is one word where a `Box<str>` is two (most clusters set none): that
    /// puts the watch holding this state in a 160-byte malloc chunk, not a 176-byte one.
    #[allow(clippy::box_collection)]
    service_name: Option<Box<String>>,
    eds: Weak<Eds>,
    initialized: Cell<bool>,
}

impl Eds {
    pub fn new(cluster_manager: Rc<ClusterManager>, client: Rc<XdsClient>) -> Rc<Eds> {
        Rc::new(Eds { cluster_manager, client, clusters: RefCell::new(HashMap::new()) })
    }

    /// Subscribes an `EDS` cluster (new or replacing one of its name) to its service.
    /// `eds_cluster_config` is the cluster's, which the cluster does not keep.
    pub fn cluster_added(
        self: &Rc<Self>,
        cluster: &Arc<Cluster>,
        eds_cluster_config: Option<EdsClusterConfig>,
    ) -> Result<(), String> {
        if cluster.info.discovery_type != DiscoveryType::Eds {
            self.clusters.borrow_mut().remove(&*cluster.name);
            return Ok(());
        }
        let eds_config = eds_cluster_config.unwrap_or_default();
        let source = eds_config.eds_config.unwrap_or_default();
        let service_name = Some(eds_config.service_name).filter(|name| !name.is_empty()).map(Box::new);
        let service = service_name.as_deref().map_or(&*cluster.name, String::as_str);
        // The cluster's name is shared with its watch's, where that is what it asks for.
        let wanted = match &service_name {
            Some(service) => super::one_name(service),
            None => NameSet::One(cluster.name.clone()),
        };
        // A cluster replacing one of its name, for the same service, starts with its hosts.
        let previous = self.clusters.borrow().get(&*cluster.name).and_then(|watch| {
            watch.with_subscriber(|p| (p.service() == service && p.initialized.get()).then(|| p.cluster.clone()))
        });
        let initialized = match previous.flatten() {
            Some(previous) => {
                cluster.copy_hosts_from(&previous);
                self.cluster_manager.finish_warming(cluster);
                true
            }
            None => false,
        };
        let entry = EdsCluster {
            cluster: cluster.clone(),
            service_name,
            eds: Rc::downgrade(self),
            initialized: Cell::new(initialized),
        };
        let stats = SubscriptionStats::new(&cluster.scope);
        let watch = self
            .client
            .subscribe_inline(&source, ResourceType::ClusterLoadAssignment, wanted, entry, stats)
            .map_err(|e| format!("eds_cluster_config.eds_config: {e}"))?;
        self.clusters.borrow_mut().insert(cluster.name.clone(), watch);
        Ok(())
    }

    pub fn cluster_removed(&self, name: &str) {
        self.clusters.borrow_mut().remove(name);
    }

    /// Whether every EDS cluster got its first assignment (or gave up waiting).
    pub fn initialized(&self) -> bool {
        self.clusters.borrow().values().all(|w| w.with_subscriber(|c| c.initialized.get()).unwrap_or(true))
    }
}

impl EdsCluster {
    /// The `ClusterLoadAssignment` this cluster subscribes to.
    fn service(&self) -> &str {
        self.service_name.as_deref().map_or(&self.cluster.name, String::as_str)
    }

    fn apply(&self, assignment: &ClusterLoadAssignment) {
        self.cluster.apply_load_assignment(assignment);
        self.initialized.set(true);
        if let Some(eds) = self.eds.upgrade() {
            eds.cluster_manager.finish_warming(&self.cluster);
        }
    }
}

impl SubscriptionCallbacks for EdsCluster {
    fn on_config_update(&self, update: &ConfigUpdate<'_>) -> Result<(), String> {
        let mut assignment = None;
        for resource in update.resources.iter().filter(|r| r.name == self.service()) {
            let parsed = resource
                .value()
                .and_then(|value| legate_config::resources::cluster_load_assignment(&value))
                .map_err(|e| format!("ClusterLoadAssignment '{}': {e}", resource.name))?;
            assignment = Some(Rc::new(parsed));
        }
        if update.removed.iter().any(|name| name == self.service()) {
            // The control plane withdrew the assignment: the cluster has no hosts now.
            assignment =
                Some(Rc::new(ClusterLoadAssignment { cluster_name: self.service().to_string(), ..Default::default() }));
        }
        let Some(assignment) = assignment else { return Ok(()) };
        self.apply(&assignment);
        crate::memory::release_free_memory_soon();
        Ok(())
    }

    fn on_config_update_failed(&self, failure: &UpdateFailure) {
        if *failure == UpdateFailure::FetchTimedOut {
            tracing::warn!(cluster = %self.cluster.name, "EDS: no endpoints within initial_fetch_timeout");
            self.initialized.set(true);
            if let Some(eds) = self.eds.upgrade() {
                eds.cluster_manager.finish_warming(&self.cluster);
            }
        }
    }
}
