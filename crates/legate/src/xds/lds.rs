//! LDS: listeners from a config source (Envoy's `LdsApiImpl`). A listener warms until the
//! route configurations it names have arrived, then serves; an update of a serving listener
//! drains only the filter chains it changed.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashSet};
use std::rc::{Rc, Weak};

use legate_config::config_source::ConfigSource;
use legate_proxy::listener::listener_manager::ListenerUpdate;
use legate_xds::{
    ConfigUpdate, NameSet, ResourceType, SubscriptionCallbacks, SubscriptionStats, UpdateFailure, Watch, XdsClient,
};

use super::rds::Rds;
use super::sds::Sds;
use crate::server::Server;

pub struct LdsApi {
    server: Weak<Server>,
    rds: Rc<Rds>,
    sds: Rc<Sds>,
    initialized: Cell<bool>,
    pub version_info: RefCell<String>,
    /// Listeners waiting for their secrets from SDS before they can be built.
    pending: RefCell<Vec<PendingListener>>,
    watch: RefCell<Option<Watch>>,
}

struct PendingListener {
    name: String,
    config: legate_config::listener::Listener,
    raw: serde_json::Value,
    version_info: String,
}

impl LdsApi {
    pub fn start(
        source: &ConfigSource,
        server: &Rc<Server>,
        client: &XdsClient,
        rds: Rc<Rds>,
        sds: Rc<Sds>,
    ) -> Result<Rc<LdsApi>, String> {
        let stats = SubscriptionStats::new(&server.store.scope("listener_manager.lds"));
        let api = Rc::new(LdsApi {
            server: Rc::downgrade(server),
            rds,
            sds,
            initialized: Cell::new(false),
            version_info: RefCell::new(String::new()),
            pending: RefCell::new(Vec::new()),
            watch: RefCell::new(None),
        });
        let watch = client.subscribe(source, ResourceType::Listener, NameSet::Empty, api.clone(), stats)?;
        *api.watch.borrow_mut() = Some(watch);
        Ok(api)
    }

    /// Whether the first update came (or the wait for it ended) and no listener waits for
    /// its secrets.
    pub fn initialized(&self) -> bool {
        self.initialized.get() && self.pending.borrow().is_empty()
    }

    /// Builds a listener now, or parks it until its SDS secrets arrive.
    fn add(&self, server: &Server, pending: PendingListener) -> Result<(), String> {
        self.sds.subscribe_for(&pending.config)?;
        if !self.sds.ready(&pending.config) {
            self.pending.borrow_mut().retain(|p| p.name != pending.name);
            self.pending.borrow_mut().push(pending);
            return Ok(());
        }
        let update =
            server.listener_manager.borrow_mut().add_or_update(pending.config, pending.raw, &pending.version_info)?;
        match update {
            ListenerUpdate::Unchanged => Ok(()),
            ListenerUpdate::Warming(listener) => {
                self.rds.subscribe_for(&listener.config).inspect_err(|_| {
                    server.listener_manager.borrow_mut().abandon_warming(&listener);
                })?;
                // Certificates from SDS files or a control plane are picked up while it lives.
                let watched: Vec<_> = listener
                    .all_filter_chains()
                    .filter_map(|c| c.transport_socket.as_ref())
                    .flat_map(|tls| tls.watched())
                    .collect();
                if !watched.is_empty() {
                    tokio::task::spawn_local(legate_proxy::tls::secret::watch_while(
                        watched,
                        std::sync::Arc::downgrade(&listener),
                    ));
                }
                Ok(())
            }
        }
    }

    /// Builds the parked listeners whose secrets have arrived.
    pub fn retry_pending(&self) {
        let Some(server) = self.server.upgrade() else { return };
        let ready: Vec<PendingListener> = {
            let mut pending = self.pending.borrow_mut();
            let (ready, waiting): (Vec<_>, Vec<_>) =
                std::mem::take(&mut *pending).into_iter().partition(|p| self.sds.ready(&p.config));
            *pending = waiting;
            ready
        };
        for listener in ready {
            let (name, raw) = (listener.name.clone(), listener.raw.clone());
            if let Err(e) = self.add(&server, listener) {
                tracing::warn!(listener = %name, "LDS: {e}");
                server.listener_manager.borrow_mut().record_error(&name, raw, e);
            }
        }
        activate_ready(&server);
    }
}

/// Puts every warming listener whose routes have arrived in service.
pub fn activate_ready(server: &Server) {
    let ready: Vec<_> = server
        .listener_manager
        .borrow()
        .warming
        .iter()
        .filter(|w| Rds::ready(&w.listener.config))
        .map(|w| w.listener.clone())
        .collect();
    if ready.is_empty() {
        return;
    }
    let workers = server.workers.borrow();
    let mut manager = server.listener_manager.borrow_mut();
    for listener in ready {
        manager.activate(&listener, &workers);
    }
}

impl SubscriptionCallbacks for LdsApi {
    fn on_config_update(&self, update: &ConfigUpdate<'_>) -> Result<(), String> {
        let Some(server) = self.server.upgrade() else { return Ok(()) };
        let names = server.cluster_manager.cluster_names();
        let clusters: HashSet<&str> = names.iter().map(String::as_str).collect();
        let mut errors = Vec::new();
        for resource in update.resources.iter() {
            legate_xds::pace();
            let value = resource.value();
            let result = value.clone().and_then(|value| {
                let config = legate_config::resources::listener(&value, &clusters)?;
                let pending = PendingListener {
                    name: resource.name.clone(),
                    config,
                    raw: value,
                    version_info: update.version_info.to_string(),
                };
                self.add(&server, pending)
            });
            if let Err(e) = result {
                server.listener_manager.borrow_mut().record_error(&resource.name, value.unwrap_or_default(), e.clone());
                errors.push(format!("'{}': {e}", resource.name));
            }
        }
        let mut removed: BTreeSet<String> = update.removed.iter().cloned().collect();
        if update.state_of_the_world {
            let present: HashSet<&str> = update.resources.iter().map(|r| r.name.as_str()).collect();
            let api_listeners = server.listener_manager.borrow().api_listener_names();
            removed.extend(api_listeners.into_iter().filter(|n| !present.contains(n.as_str())));
        }
        {
            let workers = server.workers.borrow();
            let mut manager = server.listener_manager.borrow_mut();
            for name in &removed {
                manager.remove(name, &workers);
            }
        }
        self.pending.borrow_mut().retain(|p| !removed.contains(&p.name));
        activate_ready(&server);
        self.rds.prune();
        crate::memory::release_free_memory_soon();
        self.initialized.set(true);
        if errors.is_empty() {
            *self.version_info.borrow_mut() = update.version_info.to_string();
            Ok(())
        } else {
            Err(format!("Error adding/updating listener(s) {}", errors.join(", ")))
        }
    }

    fn on_config_update_failed(&self, failure: &UpdateFailure) {
        if *failure == UpdateFailure::FetchTimedOut {
            tracing::warn!("LDS: no listeners within initial_fetch_timeout; continuing without them");
        }
        self.initialized.set(true);
    }
}
