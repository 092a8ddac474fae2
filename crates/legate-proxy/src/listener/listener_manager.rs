//! The listener manager: builds listeners from config, binds their sockets and hands one to
//! each worker; adds, updates and removes them for LDS; stops them for drain (Envoy's
//! `ListenerManagerImpl`).
//!
//! An LDS listener warms (waits for its RDS routes) before it serves. An update keeps the
//! bound sockets: workers switch their accept loops to the new version, and the filter chains
//! the update changed or dropped drain — their connections are asked to finish and, after
//! `--drain-time-s`, closed. Unchanged chains are shared by both versions and not drained.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use legate_config::core::TrafficDirection;
use legate_config::listener::Listener as ListenerConfig;
use legate_config::Bootstrap;
use legate_stats::Store;
use tokio::sync::oneshot;

use super::drain::DrainPhase;
use super::stats::ListenerManagerStats;
use super::{socket, FilterChain, Listener};
use crate::worker::{ServerShared, Worker, WorkerMessage};

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot bind '{address}' for listener '{name}' (static_resources.listeners[{index}]): {source}")]
    Bind {
        name: String,
        index: usize,
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("listener '{name}' (static_resources.listeners[{index}]): {message}")]
    Config { name: String, index: usize, message: String },
}

pub struct ListenerManager {
    listeners: Vec<ActiveListenerEntry>,
    pub stats: ListenerManagerStats,
    stopped: bool,
    store: Arc<Store>,
    workers: usize,
    /// How long replaced filter chains drain (`--drain-time-s`).
    drain_time: Duration,
    /// LDS listeners waiting for their routes, by name.
    pub warming: Vec<WarmingListener>,
    /// Versions whose chains are draining, with when they close.
    draining: Rc<RefCell<Vec<DrainingListener>>>,
    /// The last rejected or failed LDS listener of each name (`/config_dump` `error_state`).
    pub errors: Vec<ListenerError>,
    /// Where drains are announced to the workers.
    server: Arc<ServerShared>,
}

struct ActiveListenerEntry {
    listener: Arc<Listener>,
    /// The address the sockets were bound to (port 0 resolved).
    bound: SocketAddr,
    sockets: Vec<std::net::TcpListener>,
    /// Set for LDS listeners.
    api: Option<ApiVersion>,
}

/// When and in which version LDS sent a listener, and what it sent (for `/config_dump`).
#[derive(Clone, Debug)]
pub struct ApiVersion {
    pub version_info: String,
    pub last_updated: SystemTime,
    pub raw: serde_json::Value,
}

pub struct WarmingListener {
    pub listener: Arc<Listener>,
    pub api: ApiVersion,
}

pub struct DrainingListener {
    pub listener: Arc<Listener>,
    pub chains: usize,
    pub api: Option<ApiVersion>,
}

/// A listener LDS sent that could not be used.
#[derive(Clone, Debug)]
pub struct ListenerError {
    pub name: String,
    pub raw: serde_json::Value,
    pub details: String,
    pub last_update_attempt: SystemTime,
}

/// What [`ListenerManager::add_or_update`] did.
pub enum ListenerUpdate {
    Unchanged,
    /// The new version warms; [`ListenerManager::activate`] puts it in service.
    Warming(Arc<Listener>),
}

impl ListenerManager {
    /// Builds and binds every static listener. Binding happens here, on the main thread, so a
    /// port already taken fails start-up with the listener's name.
    pub fn new(
        bootstrap: &Bootstrap,
        store: &Arc<Store>,
        workers: usize,
        server: &Arc<ServerShared>,
    ) -> Result<Self, BindError> {
        let stats = ListenerManagerStats::new(&store.scope("listener_manager"));
        // The bootstrap's tracer, which connection managers built below may use.
        crate::trace::configure(bootstrap);
        let mut listeners = Vec::new();
        for (index, config) in bootstrap.static_resources.listeners.iter().enumerate() {
            let listener = Arc::new(Listener::new(config, store, workers).map_err(|message| BindError::Config {
                name: config.name(),
                index,
                message,
            })?);
            let ipv4_compat = config.address.socket().is_some_and(|s| s.ipv4_compat);
            let reuse_port = config.enable_reuse_port.unwrap_or(true);
            let backlog = config.tcp_backlog_size.unwrap_or(128);
            let sockets = if config.bind_to_port.unwrap_or(true) {
                socket::bind(listener.address, workers, reuse_port, backlog, ipv4_compat).map_err(|source| {
                    BindError::Bind { name: listener.name.clone(), index, address: listener.address, source }
                })?
            } else {
                Vec::new()
            };
            let bound = sockets.first().and_then(|s| s.local_addr().ok()).unwrap_or(listener.address);
            stats.listener_added.inc();
            listeners.push(ActiveListenerEntry { listener, bound, sockets, api: None });
        }
        Ok(ListenerManager {
            listeners,
            stats,
            stopped: false,
            store: store.clone(),
            workers,
            drain_time: Duration::from_secs(600),
            warming: Vec::new(),
            draining: Rc::new(RefCell::new(Vec::new())),
            errors: Vec::new(),
            server: server.clone(),
        })
    }

    /// `--drain-time-s`: how long the connections of a replaced filter chain may finish.
    pub fn set_drain_time(&mut self, drain_time: Duration) {
        self.drain_time = drain_time;
    }

    /// Adds or replaces an LDS listener (Envoy's `addOrUpdateListener`). The new version
    /// warms until [`Self::activate`]; the current one serves meanwhile.
    pub fn add_or_update(
        &mut self,
        config: ListenerConfig,
        raw: serde_json::Value,
        version_info: &str,
    ) -> Result<ListenerUpdate, String> {
        let name = config.name();
        let active = self.listeners.iter().find(|e| e.listener.name == name);
        if let Some(entry) = active {
            if entry.api.is_none() {
                return Err(format!("error adding listener '{name}': a static listener of this name exists"));
            }
            let new_address = config.address.socket().map(|s| (s.ip(), s.port_value));
            let old_address = entry.listener.config.address.socket().map(|s| (s.ip(), s.port_value));
            if new_address != old_address {
                return Err(format!(
                    "error updating listener: '{name}' has a different address '{}' from existing listener address '{}'",
                    address_text(&config),
                    address_text(&entry.listener.config)
                ));
            }
        }
        let warming = self.warming.iter().find(|w| w.listener.name == name);
        let current = warming.map(|w| &w.listener.config).or(active.map(|e| &e.listener.config));
        if current == Some(&config) {
            return Ok(ListenerUpdate::Unchanged);
        }
        let mut listener = Listener::new(&config, &self.store, self.workers)
            .map_err(|e| format!("error adding listener '{name}': {e}"))?;
        if let Some(entry) = active {
            listener.keep_unchanged_chains(&entry.listener);
        }
        let listener = Arc::new(listener);
        let api = ApiVersion { version_info: version_info.to_string(), last_updated: SystemTime::now(), raw };
        self.warming.retain(|w| w.listener.name != name);
        self.warming.push(WarmingListener { listener: listener.clone(), api });
        self.errors.retain(|e| e.name != name);
        self.update_gauges();
        Ok(ListenerUpdate::Warming(listener))
    }

    /// Records an LDS listener that was refused, for `/config_dump`.
    pub fn record_error(&mut self, name: &str, raw: serde_json::Value, details: String) {
        self.errors.retain(|e| e.name != name);
        self.errors.push(ListenerError {
            name: name.to_string(),
            raw,
            details,
            last_update_attempt: SystemTime::now(),
        });
    }

    /// Drops a warming version that cannot go on; the serving one, if any, stays.
    pub fn abandon_warming(&mut self, listener: &Arc<Listener>) {
        self.warming.retain(|w| !Arc::ptr_eq(&w.listener, listener));
        self.update_gauges();
    }

    /// Puts a warmed listener in service: an update switches the workers to it and drains the
    /// chains it replaced; a new listener binds its address (a failure is counted in
    /// `listener_create_failure` and kept for `/config_dump`). False if `listener` is no
    /// longer the warming version.
    pub fn activate(&mut self, listener: &Arc<Listener>, workers: &[Worker]) -> bool {
        let Some(position) = self.warming.iter().position(|w| Arc::ptr_eq(&w.listener, listener)) else {
            return false;
        };
        let warmed = self.warming.remove(position);
        let name = listener.name.clone();
        if let Some(entry) = self.listeners.iter_mut().find(|e| e.listener.name == name) {
            for worker in workers {
                worker.post(WorkerMessage::UpdateListener { listener: listener.clone() });
            }
            let old = std::mem::replace(&mut entry.listener, listener.clone());
            let old_api = entry.api.replace(warmed.api);
            self.stats.listener_modified.inc();
            let replaced = old.chains_replaced_by(Some(listener));
            if replaced.len() < old.all_filter_chains().count() {
                self.stats.listener_in_place_updated.inc();
            }
            self.drain(old, replaced, old_api);
            self.update_gauges();
            return true;
        }
        let config = &listener.config;
        let ipv4_compat = config.address.socket().is_some_and(|s| s.ipv4_compat);
        let sockets = if config.bind_to_port.unwrap_or(true) {
            socket::bind(
                listener.address,
                self.workers,
                config.enable_reuse_port.unwrap_or(true),
                config.tcp_backlog_size.unwrap_or(128),
                ipv4_compat,
            )
        } else {
            Ok(Vec::new())
        };
        let sockets = match sockets {
            Ok(sockets) => sockets,
            Err(e) => {
                self.stats.listener_create_failure.inc();
                let details = format!("cannot bind '{}': {e}", listener.address);
                tracing::error!(listener = %name, "{details}");
                self.record_error(&name, warmed.api.raw, details);
                self.update_gauges();
                return true;
            }
        };
        let bound = sockets.first().and_then(|s| s.local_addr().ok()).unwrap_or(listener.address);
        self.stats.listener_added.inc();
        let mut entry = ActiveListenerEntry { listener: listener.clone(), bound, sockets, api: Some(warmed.api) };
        if !workers.is_empty() && !self.stopped {
            for (socket, worker) in std::mem::take(&mut entry.sockets).into_iter().zip(workers) {
                worker.post(WorkerMessage::AddListener { listener: listener.clone(), socket });
            }
            self.stats.listener_create_success.add(workers.len() as u64);
        }
        self.listeners.push(entry);
        self.update_gauges();
        true
    }

    /// Removes an LDS listener: workers stop accepting on it and its connections drain.
    pub fn remove(&mut self, name: &str, workers: &[Worker]) -> bool {
        let was_warming = self.warming.iter().any(|w| w.listener.name == name);
        self.warming.retain(|w| w.listener.name != name);
        let Some(position) = self.listeners.iter().position(|e| e.listener.name == name && e.api.is_some()) else {
            self.update_gauges();
            return was_warming;
        };
        let entry = self.listeners.remove(position);
        for worker in workers {
            worker.post(WorkerMessage::RemoveListener { name: name.to_string() });
        }
        self.stats.listener_removed.inc();
        let chains = entry.listener.chains_replaced_by(None);
        self.drain(entry.listener, chains, entry.api);
        self.update_gauges();
        true
    }

    /// Asks `chains` of `listener` to drain now and closes them after the drain time.
    fn drain(&mut self, listener: Arc<Listener>, chains: Vec<Arc<FilterChain>>, api: Option<ApiVersion>) {
        if chains.is_empty() {
            return;
        }
        for chain in &chains {
            chain.drain.advance(DrainPhase::Draining);
        }
        self.server.announce_chain_drain();
        let server = self.server.clone();
        self.draining.borrow_mut().push(DrainingListener { listener: listener.clone(), chains: chains.len(), api });
        let draining = self.draining.clone();
        let drain_time = self.drain_time;
        let gauges = (self.stats.total_listeners_draining.clone(), self.stats.total_filter_chains_draining.clone());
        set_draining_gauges(&draining.borrow(), &gauges.0, &gauges.1);
        tokio::task::spawn_local(async move {
            tokio::time::sleep(drain_time).await;
            for chain in &chains {
                chain.drain.advance(DrainPhase::Closed);
            }
            server.announce_chain_drain();
            let mut draining = draining.borrow_mut();
            draining.retain(|d| !Arc::ptr_eq(&d.listener, &listener));
            set_draining_gauges(&draining, &gauges.0, &gauges.1);
        });
    }

    fn update_gauges(&self) {
        self.stats.total_listeners_warming.set(self.warming.len() as u64);
        if !self.stopped {
            self.stats.total_listeners_active.set(self.listeners.len() as u64);
        }
    }

    /// Listeners whose old versions are draining.
    pub fn draining(&self) -> std::cell::Ref<'_, Vec<DrainingListener>> {
        self.draining.borrow()
    }

    /// The LDS version and time of an active listener (`None` for static ones).
    pub fn api_version(&self, name: &str) -> Option<&ApiVersion> {
        self.listeners.iter().find(|e| e.listener.name == name).and_then(|e| e.api.as_ref())
    }

    /// Names of the listeners LDS added (active or warming).
    pub fn api_listener_names(&self) -> Vec<String> {
        let mut names: Vec<String> =
            self.listeners.iter().filter(|e| e.api.is_some()).map(|e| e.listener.name.clone()).collect();
        names.extend(self.warming.iter().map(|w| w.listener.name.clone()));
        names
    }

    /// Gives each worker its socket of each listener.
    pub fn start_workers(&mut self, workers: &[Worker]) {
        for entry in &mut self.listeners {
            for (socket, worker) in std::mem::take(&mut entry.sockets).into_iter().zip(workers) {
                worker.post(WorkerMessage::AddListener { listener: entry.listener.clone(), socket });
            }
            self.stats.listener_create_success.add(workers.len() as u64);
        }
        self.stats.total_listeners_active.set(self.listeners.len() as u64);
        self.stats.workers_started.set(1);
    }

    /// Stops accepting on every listener, on every worker (drain, `/drain_listeners`), or,
    /// `inbound_only`, on the listeners whose `traffic_direction` is `INBOUND` (Envoy's
    /// `StopListenersType::InboundOnly`; their connections are not told to finish). Returns
    /// one receiver per worker, completed once that worker has closed its sockets.
    pub fn stop_listeners(&mut self, workers: &[Worker], inbound_only: bool) -> Vec<oneshot::Receiver<()>> {
        if self.stopped {
            return Vec::new();
        }
        let only = inbound_only.then(|| {
            self.listeners
                .iter()
                .filter(|e| e.listener.config.traffic_direction == TrafficDirection::Inbound)
                .map(|e| e.listener.name.clone())
                .collect::<Vec<_>>()
        });
        let stopping = only.as_ref().map_or(self.listeners.len(), Vec::len);
        if only.is_none() {
            self.stopped = true;
            self.warming.clear();
            self.stats.total_listeners_warming.set(0);
        }
        let mut acks = Vec::new();
        for worker in workers {
            let (done, ack) = oneshot::channel();
            worker.post(WorkerMessage::StopListeners { done, only: only.clone() });
            acks.push(ack);
        }
        self.stats.listener_stopped.add(stopping as u64);
        let active = &self.stats.total_listeners_active;
        active.set(active.value().saturating_sub(stopping as u64));
        self.stats.total_listeners_draining.add(stopping as u64);
        acks
    }

    /// Tells every connection on every worker to finish while the listeners keep accepting
    /// (the drain sequence of `/drain_listeners?graceful`).
    pub fn drain_connections(&self, workers: &[Worker]) {
        for worker in workers {
            worker.post(WorkerMessage::DrainConnections);
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Listeners with the address they are bound to, in config order.
    pub fn listeners(&self) -> impl Iterator<Item = (&Arc<Listener>, SocketAddr)> {
        self.listeners.iter().map(|e| (&e.listener, e.bound))
    }
}

fn address_text(config: &ListenerConfig) -> String {
    config.address.socket().map(|s| format!("{}:{}", s.address, s.port_value)).unwrap_or_default()
}

fn set_draining_gauges(draining: &[DrainingListener], listeners: &legate_stats::Gauge, chains: &legate_stats::Gauge) {
    let mut names: Vec<&str> = draining.iter().map(|d| d.listener.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    listeners.set(names.len() as u64);
    chains.set(draining.iter().map(|d| d.chains as u64).sum());
}
