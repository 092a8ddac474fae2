//! LDS: listeners from a config source (Envoy's `LdsApiImpl`). A listener warms until the
//! route configurations it names have arrived, then serves; an update of a serving listener
//! drains only the filter chains it changed.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashSet};
use std::rc::{Rc, Weak};

use legate_config::config_source::ConfigSource;
use legate_proxy::listener::listener_manager::ListenerUpdate;
use legate_xds::{
    ConfigUpdate, ResourceType, SubscriptionCallbacks, SubscriptionStats, UpdateFailure, Watch, XdsClient,
};

use super::rds::Rds;
use crate::server::Server;

pub struct LdsApi {
    server: Weak<Server>,
    rds: Rc<Rds>,
    initialized: Cell<bool>,
    pub version_info: RefCell<String>,
    watch: RefCell<Option<Watch>>,
}

impl LdsApi {
    pub fn start(
        source: &ConfigSource,
        server: &Rc<Server>,
        client: &XdsClient,
        rds: Rc<Rds>,
    ) -> Result<Rc<LdsApi>, String> {
        let stats = SubscriptionStats::new(&server.store.scope("listener_manager.lds"));
        let api = Rc::new(LdsApi {
            server: Rc::downgrade(server),
            rds,
            initialized: Cell::new(false),
            version_info: RefCell::new(String::new()),
            watch: RefCell::new(None),
        });
        let watch = client.subscribe(source, ResourceType::Listener, BTreeSet::new(), api.clone(), stats)?;
        *api.watch.borrow_mut() = Some(watch);
        Ok(api)
    }

    /// Whether the first update came (or the wait for it ended) and no listener is warming.
    pub fn initialized(&self) -> bool {
        self.initialized.get()
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
        for resource in update.resources {
            let result = legate_config::resources::listener(resource.value.clone(), &clusters).and_then(|config| {
                let update = server.listener_manager.borrow_mut().add_or_update(
                    config,
                    resource.value.clone(),
                    update.version_info,
                )?;
                match update {
                    ListenerUpdate::Unchanged => Ok(()),
                    ListenerUpdate::Warming(listener) => self.rds.subscribe_for(&listener.config).inspect_err(|_| {
                        server.listener_manager.borrow_mut().abandon_warming(&listener);
                    }),
                }
            });
            if let Err(e) = result {
                server.listener_manager.borrow_mut().record_error(&resource.name, resource.value.clone(), e.clone());
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
