//! The listener manager: builds listeners from config, binds their sockets and hands one to
//! each worker; stops them for drain (Envoy's `ListenerManagerImpl`, static listeners).

use std::net::SocketAddr;
use std::sync::Arc;

use legate_config::Bootstrap;
use legate_stats::Store;
use tokio::sync::oneshot;

use super::stats::ListenerManagerStats;
use super::{socket, Listener};
use crate::worker::{Worker, WorkerMessage};

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
}

struct ActiveListenerEntry {
    listener: Arc<Listener>,
    /// The address the sockets were bound to (port 0 resolved).
    bound: SocketAddr,
    sockets: Vec<std::net::TcpListener>,
}

impl ListenerManager {
    /// Builds and binds every static listener. Binding happens here, on the main thread, so a
    /// port already taken fails start-up with the listener's name.
    pub fn new(bootstrap: &Bootstrap, store: &Arc<Store>, workers: usize) -> Result<Self, BindError> {
        let stats = ListenerManagerStats::new(&store.scope("listener_manager"));
        let mut listeners = Vec::new();
        for (index, config) in bootstrap.static_resources.listeners.iter().enumerate() {
            let limit =
                bootstrap.runtime_u64(&format!("envoy.resource_limits.listener.{}.connection_limit", config.name()));
            let listener =
                Arc::new(Listener::new(config, store, workers, limit).map_err(|message| BindError::Config {
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
            listeners.push(ActiveListenerEntry { listener, bound, sockets });
        }
        Ok(ListenerManager { listeners, stats, stopped: false })
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

    /// Stops accepting on every listener, on every worker (drain, `/drain_listeners`).
    /// Returns one receiver per worker, completed once that worker has closed its sockets.
    pub fn stop_listeners(&mut self, workers: &[Worker]) -> Vec<oneshot::Receiver<()>> {
        if self.stopped {
            return Vec::new();
        }
        self.stopped = true;
        let mut acks = Vec::new();
        for worker in workers {
            let (done, ack) = oneshot::channel();
            worker.post(WorkerMessage::StopListeners { done });
            acks.push(ack);
        }
        self.stats.listener_stopped.add(self.listeners.len() as u64);
        self.stats.total_listeners_active.set(0);
        self.stats.total_listeners_draining.set(self.listeners.len() as u64);
        acks
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Listeners with the address they are bound to, in config order.
    pub fn listeners(&self) -> impl Iterator<Item = (&Arc<Listener>, SocketAddr)> {
        self.listeners.iter().map(|e| (&e.listener, e.bound))
    }
}
