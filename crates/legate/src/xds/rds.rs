//! RDS: the route configurations that connection managers name with `rds` (Envoy's
//! `RdsRouteConfigSubscription`). One subscription per name, shared by every connection
//! manager naming it; its stats are `http.<stat_prefix>.rds.<route_config_name>.*` of the
//! first one. A subscription ends when no listener uses the name any more.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::{Rc, Weak};
use std::sync::Arc;

use legate_config::extensions::NetworkFilterConfig;
use legate_config::filters::network::http_connection_manager::Rds as RdsConfig;
use legate_config::listener::Listener as ListenerConfig;
use legate_proxy::router::rds::{self, RdsRouteConfig};
use legate_proxy::router::RouteConfig;
use legate_proxy::upstream::ClusterManager;
use legate_xds::{
    ConfigUpdate, ResourceType, SubscriptionCallbacks, SubscriptionStats, UpdateFailure, Watch, XdsClient,
};

pub struct Rds {
    client: Rc<XdsClient>,
    cluster_manager: Rc<ClusterManager>,
    subscriptions: RefCell<HashMap<String, Rc<RdsSubscription>>>,
    /// Called when a route configuration arrives or gives up: warming listeners may be ready.
    pub on_change: RefCell<Option<Box<dyn Fn()>>>,
    this: Weak<Rds>,
}

pub struct RdsSubscription {
    pub provider: Arc<RdsRouteConfig>,
    pub version_info: RefCell<String>,
    pub last_updated: RefCell<Option<std::time::SystemTime>>,
    /// The last accepted `RouteConfiguration`, for `/config_dump`.
    pub raw: RefCell<Option<serde_json::Value>>,
    rds: Weak<Rds>,
    watch: RefCell<Option<Watch>>,
}

/// The `rds` of each connection manager of a listener, with its stat prefix.
pub fn rds_configs(listener: &ListenerConfig) -> Vec<(&str, &RdsConfig)> {
    listener
        .filter_chains
        .iter()
        .chain(&listener.default_filter_chain)
        .flat_map(|chain| &chain.filters)
        .filter_map(|filter| match &filter.config {
            NetworkFilterConfig::HttpConnectionManager(hcm) => {
                hcm.rds.as_ref().map(|rds| (hcm.stat_prefix.as_str(), rds))
            }
            _ => None,
        })
        .collect()
}

impl Rds {
    pub fn new(client: Rc<XdsClient>, cluster_manager: Rc<ClusterManager>) -> Rc<Rds> {
        Rc::new_cyclic(|this| Rds {
            client,
            cluster_manager,
            subscriptions: RefCell::new(HashMap::new()),
            on_change: RefCell::new(None),
            this: this.clone(),
        })
    }

    /// Subscribes to every route configuration `listener` names that has no subscription yet.
    pub fn subscribe_for(&self, listener: &ListenerConfig) -> Result<(), String> {
        for (stat_prefix, config) in rds_configs(listener) {
            let name = &config.route_config_name;
            if self.subscriptions.borrow().contains_key(name) {
                continue;
            }
            let subscription = Rc::new(RdsSubscription {
                provider: rds::provider(name)?,
                version_info: RefCell::new(String::new()),
                last_updated: RefCell::new(None),
                raw: RefCell::new(None),
                rds: self.this.clone(),
                watch: RefCell::new(None),
            });
            let scope = self.cluster_manager.store().scope(&format!("http.{stat_prefix}.rds.{name}"));
            let watch = self
                .client
                .subscribe(
                    &config.config_source,
                    ResourceType::RouteConfiguration,
                    super::one_name(name),
                    subscription.clone(),
                    SubscriptionStats::new(&scope),
                )
                .map_err(|e| format!("rds.config_source: {e}"))?;
            *subscription.watch.borrow_mut() = Some(watch);
            self.subscriptions.borrow_mut().insert(name.clone(), subscription);
        }
        Ok(())
    }

    /// Whether every route configuration `listener` names has arrived (or given up waiting).
    pub fn ready(listener: &ListenerConfig) -> bool {
        rds_configs(listener)
            .iter()
            .all(|(_, config)| rds::provider(&config.route_config_name).is_ok_and(|p| p.initialized()))
    }

    /// Ends the subscriptions no listener uses any more.
    pub fn prune(&self) {
        self.subscriptions.borrow_mut().retain(|_, s| Arc::strong_count(&s.provider) > 1);
    }

    pub fn subscriptions(&self) -> Vec<Rc<RdsSubscription>> {
        let mut all: Vec<_> = self.subscriptions.borrow().values().cloned().collect();
        all.sort_by(|a, b| a.provider.name.cmp(&b.provider.name));
        all
    }

    fn changed(&self) {
        if let Some(on_change) = self.on_change.borrow().as_ref() {
            on_change();
        }
    }
}

impl SubscriptionCallbacks for RdsSubscription {
    fn on_config_update(&self, update: &ConfigUpdate<'_>) -> Result<(), String> {
        let Some(rds) = self.rds.upgrade() else { return Ok(()) };
        let name = &self.provider.name;
        let Some(resource) = update.resources.iter().find(|r| r.name == *name) else { return Ok(()) };
        let names = rds.cluster_manager.cluster_names();
        let clusters: HashSet<&str> = names.iter().map(String::as_str).collect();
        let value = resource.value().map_err(|e| format!("RouteConfiguration '{name}': {e}"))?;
        let config = legate_config::resources::route_configuration(&value, &clusters)
            .map_err(|e| format!("RouteConfiguration '{name}': {e}"))?;
        let table = RouteConfig::new(&config).map_err(|e| format!("RouteConfiguration '{name}': {e}"))?;
        self.provider.update(table);
        *self.version_info.borrow_mut() = update.version_info.to_string();
        *self.last_updated.borrow_mut() = Some(std::time::SystemTime::now());
        *self.raw.borrow_mut() = Some(value);
        rds.changed();
        crate::memory::release_free_memory_soon();
        Ok(())
    }

    fn on_config_update_failed(&self, failure: &UpdateFailure) {
        if *failure == UpdateFailure::FetchTimedOut {
            tracing::warn!(route_config = %self.provider.name, "RDS: no routes within initial_fetch_timeout");
            self.provider.give_up_waiting();
            if let Some(rds) = self.rds.upgrade() {
                rds.changed();
            }
        }
    }
}
