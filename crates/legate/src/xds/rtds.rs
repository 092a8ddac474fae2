//! RTDS: the runtime layers (`layered_runtime.layers[].rtds_layer`) a control plane delivers
//! as `envoy.service.runtime.v3.Runtime` resources (Envoy's `RtdsSubscription`). One
//! subscription per layer, for the resource its `rtds_layer.name` names; each update replaces
//! the layer, a removal empties it. The server waits for each layer's first update (or its
//! `initial_fetch_timeout`) before CDS and the listeners start, as Envoy's init manager.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use legate_config::bootstrap::Bootstrap;
use legate_proxy::runtime::Loader;
use legate_stats::Store;
use legate_xds::{
    ConfigUpdate, ResourceType, SubscriptionCallbacks, SubscriptionStats, UpdateFailure, Watch, XdsClient,
};

pub struct Rtds {
    layers: Vec<Rc<RtdsLayer>>,
}

struct RtdsLayer {
    /// The runtime layer's name (the loader's key).
    layer: String,
    /// The resource it takes.
    resource: String,
    runtime: Rc<Loader>,
    initialized: Cell<bool>,
    watch: RefCell<Option<Watch>>,
}

impl Rtds {
    /// Subscribes to every RTDS layer of the bootstrap; their stats are `runtime.*`.
    pub fn start(
        bootstrap: &Bootstrap,
        client: &Rc<XdsClient>,
        runtime: &Rc<Loader>,
        store: &Arc<Store>,
    ) -> Result<Rtds, String> {
        let mut layers = Vec::new();
        let configured = bootstrap.layered_runtime.as_ref().map(|r| r.layers.as_slice()).unwrap_or_default();
        for (index, config) in configured.iter().enumerate() {
            let Some(rtds) = &config.rtds_layer else { continue };
            let at = |e: String| format!("layered_runtime.layers[{index}].rtds_layer.rtds_config: {e}");
            let source = rtds.rtds_config.as_ref().ok_or_else(|| at("value is required".into()))?;
            let layer = Rc::new(RtdsLayer {
                layer: config.name.clone(),
                resource: rtds.name.clone(),
                runtime: runtime.clone(),
                initialized: Cell::new(false),
                watch: RefCell::new(None),
            });
            let stats = SubscriptionStats::new(&store.scope("runtime"));
            let watch = client
                .subscribe(source, ResourceType::Runtime, super::one_name(&rtds.name), layer.clone(), stats)
                .map_err(at)?;
            *layer.watch.borrow_mut() = Some(watch);
            layers.push(layer);
        }
        Ok(Rtds { layers })
    }

    /// Whether each layer had its first update, or gave up waiting for it.
    pub fn initialized(&self) -> bool {
        self.layers.iter().all(|l| l.initialized.get())
    }
}

impl SubscriptionCallbacks for RtdsLayer {
    fn on_config_update(&self, update: &ConfigUpdate<'_>) -> Result<(), String> {
        let result = self.apply(update);
        // A refused update readies the layer too: the server does not wait on a bad one.
        if result.is_err() {
            self.initialized.set(true);
        }
        result
    }

    fn on_config_update_failed(&self, failure: &UpdateFailure) {
        if *failure == UpdateFailure::FetchTimedOut {
            tracing::warn!(layer = %self.layer, "RTDS: no runtime layer within initial_fetch_timeout");
            self.initialized.set(true);
        }
    }
}

impl RtdsLayer {
    fn apply(&self, update: &ConfigUpdate<'_>) -> Result<(), String> {
        let resource = update.resources.iter().find(|r| r.name == self.resource);
        match resource {
            Some(resource) => {
                let value = resource.value().map_err(|e| format!("Runtime '{}': {e}", self.resource))?;
                self.runtime
                    .update_rtds(&self.layer, value.get("layer"))
                    .map_err(|e| format!("Runtime '{}': {e}", self.resource))?;
            }
            None if update.removed.contains(&self.resource) => {
                self.runtime.update_rtds(&self.layer, None)?;
            }
            // Envoy takes exactly one resource per update; none at all is refused.
            None if update.state_of_the_world && update.resources.is_empty() => {
                return Err(format!(
                    "Unexpected RTDS resource length, number of added resources 0, number of removed resources {}",
                    update.removed.len()
                ));
            }
            None => return Ok(()),
        }
        self.initialized.set(true);
        Ok(())
    }
}
