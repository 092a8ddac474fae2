//! SDS from a control plane: the certificates and validation contexts that listeners' and
//! clusters' TLS contexts name with `*_sds_secret_config` over `ads` or `api_config_source`
//! (Envoy's `SdsApi`). One subscription per secret name; a listener waits for its secrets
//! before it is built, a cluster warms until they arrive, and their TLS contexts pick up later
//! deliveries (`legate_proxy::tls::secret`). SDS from files (`path_config_source`) needs none
//! of this: the contexts read the files.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;

use legate_config::cluster::Cluster as ClusterConfig;
use legate_config::extensions::TransportSocketConfig;
use legate_config::listener::Listener as ListenerConfig;
use legate_config::tls::{CommonTlsContext, SdsSecretConfig};
use legate_proxy::tls::secret::{dynamic_secret, DynamicSecret};
use legate_proxy::upstream::ClusterManager;
use legate_stats::Store;
use legate_xds::{
    ConfigUpdate, ResourceType, SubscriptionCallbacks, SubscriptionStats, UpdateFailure, Watch, XdsClient,
};

pub struct Sds {
    client: Rc<XdsClient>,
    store: Arc<Store>,
    cluster_manager: Rc<ClusterManager>,
    subscriptions: RefCell<HashMap<String, Rc<SdsSubscription>>>,
    /// Called when a secret arrives or gives up: listeners waiting for it may go on.
    pub on_change: RefCell<Option<Box<dyn Fn()>>>,
    this: Weak<Sds>,
}

struct SdsSubscription {
    secret: Arc<DynamicSecret>,
    /// `initial_fetch_timeout` passed without it: waiting listeners go on (and fail to build).
    gave_up: Cell<bool>,
    sds: Weak<Sds>,
    watch: RefCell<Option<Watch>>,
}

/// The secrets a listener's TLS contexts take from a control plane.
pub fn dynamic_secret_configs(listener: &ListenerConfig) -> Vec<&SdsSecretConfig> {
    listener
        .filter_chains
        .iter()
        .chain(&listener.default_filter_chain)
        .filter_map(|chain| match chain.transport_socket.as_ref().map(|t| &t.config) {
            Some(TransportSocketConfig::DownstreamTls(tls)) => Some(&tls.common_tls_context),
            _ => None,
        })
        .flat_map(control_plane_secrets)
        .collect()
}

/// The secrets a cluster's TLS context takes from a control plane.
fn cluster_secret_configs(cluster: &ClusterConfig) -> Vec<&SdsSecretConfig> {
    match cluster.transport_socket.as_ref().map(|t| &t.config) {
        Some(TransportSocketConfig::UpstreamTls(tls)) => control_plane_secrets(&tls.common_tls_context).collect(),
        _ => Vec::new(),
    }
}

fn control_plane_secrets(common: &CommonTlsContext) -> impl Iterator<Item = &SdsSecretConfig> {
    common
        .tls_certificate_sds_secret_configs
        .iter()
        .chain(&common.validation_context_sds_secret_config)
        .chain(common.combined_validation_context.as_ref().map(|c| &c.validation_context_sds_secret_config))
        .filter(|config| config.sds_config.as_ref().is_some_and(|s| s.file().is_none() && s.kind().is_some()))
}

impl Sds {
    pub fn new(client: Rc<XdsClient>, store: Arc<Store>, cluster_manager: Rc<ClusterManager>) -> Rc<Sds> {
        let sds = Rc::new_cyclic(|this| Sds {
            client,
            store,
            cluster_manager: cluster_manager.clone(),
            subscriptions: RefCell::new(HashMap::new()),
            on_change: RefCell::new(None),
            this: this.clone(),
        });
        let weak = Rc::downgrade(&sds);
        cluster_manager.set_secret_gave_up(Box::new(move |name| weak.upgrade().is_some_and(|sds| sds.gave_up(name))));
        sds
    }

    /// Subscribes to the secrets `listener` takes from a control plane.
    pub fn subscribe_for(&self, listener: &ListenerConfig) -> Result<(), String> {
        self.subscribe(dynamic_secret_configs(listener))
    }

    /// Subscribes to the secrets `cluster` takes from a control plane.
    pub fn subscribe_for_cluster(&self, cluster: &ClusterConfig) -> Result<(), String> {
        self.subscribe(cluster_secret_configs(cluster))
    }

    fn subscribe(&self, configs: Vec<&SdsSecretConfig>) -> Result<(), String> {
        for config in configs {
            if self.subscriptions.borrow().contains_key(&config.name) {
                continue;
            }
            let Some(source) = &config.sds_config else { continue };
            let subscription = Rc::new(SdsSubscription {
                secret: dynamic_secret(&config.name),
                gave_up: Cell::new(false),
                sds: self.this.clone(),
                watch: RefCell::new(None),
            });
            let stats = SubscriptionStats::new(&self.store.scope(&format!("sds.{}", config.name)));
            let watch = self
                .client
                .subscribe(source, ResourceType::Secret, super::one_name(&config.name), subscription.clone(), stats)
                .map_err(|e| format!("secret '{}': sds_config: {e}", config.name))?;
            *subscription.watch.borrow_mut() = Some(watch);
            self.subscriptions.borrow_mut().insert(config.name.clone(), subscription);
        }
        Ok(())
    }

    /// Whether every secret `listener` names has arrived (or waiting for it was given up).
    pub fn ready(&self, listener: &ListenerConfig) -> bool {
        let subscriptions = self.subscriptions.borrow();
        dynamic_secret_configs(listener)
            .iter()
            .all(|config| subscriptions.get(&config.name).is_some_and(|s| s.gave_up.get() || s.secret.get().is_some()))
    }

    /// Whether `initial_fetch_timeout` passed without the secret `name`.
    pub fn gave_up(&self, name: &str) -> bool {
        self.subscriptions.borrow().get(name).is_some_and(|s| s.gave_up.get())
    }

    fn changed(&self) {
        self.cluster_manager.secrets_changed();
        if let Some(on_change) = self.on_change.borrow().as_ref() {
            on_change();
        }
    }
}

impl SubscriptionCallbacks for SdsSubscription {
    fn on_config_update(&self, update: &ConfigUpdate<'_>) -> Result<(), String> {
        let name = &self.secret.name;
        let Some(resource) = update.resources.iter().find(|r| r.name == *name) else { return Ok(()) };
        let secret = resource
            .value()
            .and_then(|value| legate_config::resources::secret(&value))
            .map_err(|e| format!("Secret '{name}': {e}"))?;
        if secret.tls_certificate.is_none() && secret.validation_context.is_none() {
            return Err(format!("Secret '{name}': neither tls_certificate nor validation_context is set"));
        }
        self.secret.set(secret);
        if let Some(sds) = self.sds.upgrade() {
            sds.changed();
        }
        Ok(())
    }

    fn on_config_update_failed(&self, failure: &UpdateFailure) {
        if *failure == UpdateFailure::FetchTimedOut {
            tracing::warn!(secret = %self.secret.name, "SDS: no secret within initial_fetch_timeout");
            self.gave_up.set(true);
            if let Some(sds) = self.sds.upgrade() {
                sds.changed();
            }
        }
    }
}
