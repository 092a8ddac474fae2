//! CDS: clusters from a config source (Envoy's `CdsApiImpl`). Every valid cluster of an update
//! is applied; the invalid ones are named in the NACK and change nothing.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashSet};
use std::rc::Rc;

use legate_config::config_source::ConfigSource;
use legate_proxy::upstream::cluster_manager::{CdsUpdate, ClusterUpdate};
use legate_proxy::upstream::ClusterManager;
use legate_xds::{
    ConfigUpdate, NameSet, ResourceType, SubscriptionCallbacks, SubscriptionStats, UpdateFailure, Watch, XdsClient,
};

use super::eds::Eds;
use super::sds::Sds;

/// A cluster CDS sent that could not be used.
pub struct ClusterError {
    pub name: String,
    pub raw: serde_json::Value,
    pub details: String,
    pub at: std::time::SystemTime,
}

pub struct CdsApi {
    cluster_manager: Rc<ClusterManager>,
    eds: Rc<Eds>,
    sds: Rc<Sds>,
    initialized: Cell<bool>,
    /// The version of the last update applied (`/config_dump`'s `version_info`).
    pub version_info: RefCell<String>,
    /// The clusters the last updates refused, by name (`/config_dump`'s `error_state`).
    pub errors: RefCell<Vec<ClusterError>>,
    watch: RefCell<Option<Watch>>,
}

impl CdsApi {
    pub fn start(
        source: &ConfigSource,
        cluster_manager: Rc<ClusterManager>,
        client: Rc<XdsClient>,
        eds: Rc<Eds>,
        sds: Rc<Sds>,
    ) -> Result<Rc<CdsApi>, String> {
        let stats = SubscriptionStats::new(&cluster_manager.store().scope("cluster_manager.cds"));
        let api = Rc::new(CdsApi {
            cluster_manager,
            eds,
            sds,
            initialized: Cell::new(false),
            version_info: RefCell::new(String::new()),
            errors: RefCell::new(Vec::new()),
            watch: RefCell::new(None),
        });
        let watch = client.subscribe(source, ResourceType::Cluster, NameSet::Empty, api.clone(), stats)?;
        *api.watch.borrow_mut() = Some(watch);
        Ok(api)
    }

    pub fn initialized(&self) -> bool {
        self.initialized.get()
    }
}

impl SubscriptionCallbacks for CdsApi {
    fn on_config_update(&self, update: &ConfigUpdate<'_>) -> Result<(), String> {
        let manager = &self.cluster_manager;
        let mut errors = Vec::new();
        let cds_update = CdsUpdate::new(update.version_info);
        for resource in update.resources.iter() {
            legate_xds::pace();
            // Built for this cluster only, and dropped once it is applied.
            let value = resource.value();
            let result = value.as_ref().map_err(Clone::clone).and_then(|value| {
                let config = legate_config::resources::cluster(value)?;
                // Its TLS secrets from a control plane: the cluster warms until they arrive.
                self.sds.subscribe_for_cluster(&config)?;
                let eds_cluster_config = config.eds_cluster_config.clone();
                match manager.add_or_update_cluster(config, value, &cds_update)? {
                    ClusterUpdate::Unchanged => Ok(()),
                    ClusterUpdate::Warming(cluster) => {
                        self.eds.cluster_added(&cluster, eds_cluster_config).inspect_err(|_| {
                            manager.abandon_warming(&cluster);
                        })
                    }
                }
            });
            let mut refused = self.errors.borrow_mut();
            refused.retain(|e| e.name != resource.name);
            if let Err(e) = result {
                errors.push(format!("cluster '{}': {e}", resource.name));
                refused.push(ClusterError {
                    name: resource.name.clone(),
                    raw: value.unwrap_or_default(),
                    details: e,
                    at: std::time::SystemTime::now(),
                });
            }
        }
        let mut removed: BTreeSet<String> = update.removed.iter().cloned().collect();
        if update.state_of_the_world {
            // Also the clusters a rejected earlier update had added: the response is the set.
            let present: HashSet<&str> = update.resources.iter().map(|r| r.name.as_str()).collect();
            let api_clusters = manager.api_cluster_names();
            removed.extend(api_clusters.iter().filter(|n| !present.contains(&***n)).map(|n| n.to_string()));
        }
        for name in removed {
            if manager.remove_cluster(&name) {
                self.eds.cluster_removed(&name);
            }
        }
        crate::memory::release_free_memory_soon();
        self.initialized.set(true);
        if errors.is_empty() {
            *self.version_info.borrow_mut() = update.version_info.to_string();
            Ok(())
        } else {
            Err(format!("Error adding/updating cluster(s) {}", errors.join(", ")))
        }
    }

    fn on_config_update_failed(&self, failure: &UpdateFailure) {
        if *failure == UpdateFailure::FetchTimedOut {
            tracing::warn!("CDS: no clusters within initial_fetch_timeout; continuing without them");
        }
        self.initialized.set(true);
    }
}
