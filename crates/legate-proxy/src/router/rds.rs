//! Route configurations from RDS (Envoy's `RdsRouteConfigProvider`): connection managers that
//! name a `route_config_name` share one provider per name, whose table is swapped whole when
//! an update arrives. Requests read the current table once, at their start, and keep it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;
use rustc_hash::FxHashMap as HashMap;

use super::RouteConfig;

/// Where a connection manager's routes come from.
pub enum RouteConfigProvider {
    /// `route_config`: fixed for the life of the listener.
    Static(Arc<RouteConfig>),
    /// `rds`: whatever the control plane sent last.
    Rds(Arc<RdsRouteConfig>),
}

impl RouteConfigProvider {
    /// The table a new request routes with: a static one borrowed (its count is shared by
    /// every worker, and a request holds the provider anyway), an RDS one held.
    pub fn current(&self) -> std::borrow::Cow<'_, Arc<RouteConfig>> {
        match self {
            RouteConfigProvider::Static(config) => std::borrow::Cow::Borrowed(config),
            RouteConfigProvider::Rds(rds) => std::borrow::Cow::Owned(rds.config.load_full()),
        }
    }

    /// Whether the current table's header mutations format request values (the request is
    /// then kept for them).
    pub fn uses_formatters(&self) -> bool {
        match self {
            RouteConfigProvider::Static(config) => config.uses_formatters,
            RouteConfigProvider::Rds(rds) => rds.config.load().uses_formatters,
        }
    }
}

/// One `route_config_name`'s current table.
pub struct RdsRouteConfig {
    pub name: String,
    config: ArcSwap<RouteConfig>,
    initialized: AtomicBool,
}

impl RdsRouteConfig {
    /// Replaces the table; requests already routed keep the one they started with.
    pub fn update(&self, config: RouteConfig) {
        self.config.store(Arc::new(config));
        self.initialized.store(true, Ordering::Release);
    }

    /// Lets listeners waiting for the first table go on with the empty one (every request
    /// gets 404, `NR`): `initial_fetch_timeout` passed.
    pub fn give_up_waiting(&self) {
        self.initialized.store(true, Ordering::Release);
    }

    /// Whether a table arrived (or waiting was given up).
    pub fn initialized(&self) -> bool {
        self.initialized.load(Ordering::Acquire)
    }
}

/// Every live provider by name. Used when listeners are built (main thread), never per request.
static PROVIDERS: Mutex<Option<HashMap<String, Weak<RdsRouteConfig>>>> = Mutex::new(None);

/// The provider of `name`, shared with every connection manager naming it; created empty
/// (no virtual hosts) until RDS delivers.
pub fn provider(name: &str) -> Result<Arc<RdsRouteConfig>, String> {
    let mut providers = PROVIDERS.lock().unwrap_or_else(|e| e.into_inner());
    let providers = providers.get_or_insert_with(HashMap::default);
    if let Some(existing) = providers.get(name).and_then(Weak::upgrade) {
        return Ok(existing);
    }
    // Names no listener uses any more leave with the next new one.
    providers.retain(|_, p| p.strong_count() > 0);
    let empty = legate_config::route::RouteConfiguration { name: name.to_string(), ..Default::default() };
    let provider = Arc::new(RdsRouteConfig {
        name: name.to_string(),
        config: ArcSwap::from_pointee(RouteConfig::new(&empty)?),
        initialized: AtomicBool::new(false),
    });
    providers.insert(name.to_string(), Arc::downgrade(&provider));
    Ok(provider)
}
