//! Workers: one OS thread, one single-threaded runtime, one event loop each (Envoy's worker
//! `Dispatcher`). A worker owns its listen sockets; a connection lives and dies on the
//! worker that accepted it, with its filters, upstream connections and timers.
//!
//! The main thread talks to a worker only through its channel ([`WorkerMessage`], Envoy's
//! `post()`); configuration reaches it as immutable `Arc` snapshots.

pub mod clock;
pub mod park;
pub mod reused;

use rustc_hash::FxHashMap as HashMap;
use std::any::Any;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot, watch};

use crate::filters::network::http_connection_manager::stream_boxes::{Reap, REAP_EVERY};
use crate::listener::active_listener;
use crate::listener::drain::{self, WorkerDrains};
use crate::listener::Listener;
use crate::upstream::cluster_manager::{SharedClusters, ThreadLocalClusterManager};
use crate::upstream::pool::HttpPools;
use crate::upstream::Cluster;
use legate_stats::Counter;

/// State shared by the whole server, across workers: connection counts for limits and drain.
pub struct ServerShared {
    /// Downstream connections open on all listeners (`server.total_connections`).
    pub active_connections: AtomicU64,
    /// `overload_manager`'s global downstream connection limit.
    pub global_connection_limit: Option<u64>,
    next_connection_id: AtomicU64,
    /// `/healthcheck/fail` was called: the health check filter answers 503.
    pub health_check_failed: std::sync::atomic::AtomicBool,
    /// Counts filter chain drains started or ended; each worker passes them to its waiting
    /// connections.
    chain_drains: watch::Sender<u64>,
    /// The local node's cluster (`--service-cluster`, `node.cluster`): the health check
    /// filter names it in `x-envoy-upstream-healthchecked-cluster`.
    pub local_cluster_name: String,
}

impl Default for ServerShared {
    fn default() -> Self {
        Self::new(None)
    }
}

impl ServerShared {
    pub fn new(global_connection_limit: Option<u64>) -> Self {
        ServerShared {
            active_connections: AtomicU64::new(0),
            global_connection_limit,
            next_connection_id: AtomicU64::new(0),
            health_check_failed: std::sync::atomic::AtomicBool::new(false),
            chain_drains: watch::Sender::new(0),
            local_cluster_name: String::new(),
        }
    }

    pub fn with_local_cluster_name(mut self, name: &str) -> Self {
        self.local_cluster_name = name.to_string();
        self
    }

    /// A filter chain started or finished draining: the workers wake their connections.
    pub fn announce_chain_drain(&self) {
        self.chain_drains.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Envoy's connection ids are unique across workers.
    pub fn next_connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// A cluster's `upstream_rq_<code>` counter, with the cluster it counts for.
type CodeCounter = (std::sync::Weak<Cluster>, Counter);

/// What a worker's connections and filters use: its index, its clusters view, the server.
pub struct WorkerContext {
    pub index: usize,
    pub cluster_manager: ThreadLocalClusterManager,
    pub server: Arc<ServerShared>,
    /// This worker's HTTP connection pools.
    http_pools: HttpPools,
    /// The connections waiting to hear of a drain (the server's or their filter chain's).
    pub drains: Rc<WorkerDrains>,
    /// Its idle connections, put aside without a task each.
    pub park: Rc<park::Park>,
    /// `cluster.<name>.upstream_rq_<code>` counters by cluster and code, looked up once per
    /// worker. The `Weak` pins the cluster's allocation, so its address (the key) cannot be
    /// taken by a newer cluster.
    code_counters: RefCell<HashMap<(usize, u16), CodeCounter>>,
    /// Spare boxes for the futures of streams, one pool per kind of future (see
    /// [`Self::spare_stream_boxes`]).
    stream_boxes: RefCell<Vec<SparePool>>,
}

/// One kind of spare boxes, twice: to find it by its type, and to reap it.
type SparePool = (Rc<dyn Any>, Rc<dyn Reap>);

impl WorkerContext {
    fn new(index: usize, cluster_manager: ThreadLocalClusterManager, server: Arc<ServerShared>) -> Self {
        clock::Stamp::start_epoch();
        WorkerContext {
            index,
            cluster_manager,
            server,
            http_pools: HttpPools::default(),
            drains: Rc::default(),
            park: Rc::default(),
            code_counters: RefCell::new(HashMap::default()),
            stream_boxes: RefCell::new(Vec::new()),
        }
    }

    /// The worker's spare boxes for streams' futures (`http_connection_manager::stream_boxes`):
    /// one set per worker and kind of future, shared by its connections. Their future's type
    /// is only known where streams start, hence `T`.
    pub fn spare_stream_boxes<T: Any + Default + Reap>(&self) -> Rc<T> {
        let mut pools = self.stream_boxes.borrow_mut();
        if let Some(spare) = pools.iter().find_map(|(any, _)| any.clone().downcast::<T>().ok()) {
            return spare;
        }
        let spare = Rc::new(T::default());
        pools.push((spare.clone(), spare.clone()));
        spare
    }

    /// Frees the spare boxes streams did not need lately (see [`Reap`]); after a burst's worth,
    /// the allocator's free pages go back to the system too ([`set_release_free_memory`]).
    fn reap_spares(&self) {
        let freed: usize = self.stream_boxes.borrow().iter().map(|(_, spare)| spare.reap()).sum();
        if freed >= RELEASE_AFTER_REAPING {
            if let Some(release) = RELEASE_FREE_MEMORY.get() {
                release();
            }
        }
    }

    /// This worker's pools, after draining those of hosts and clusters that went away (xDS
    /// updates): their connections close as their requests end.
    pub fn pools(&self) -> &HttpPools {
        if self.http_pools.stale() {
            self.http_pools.prune(&self.cluster_manager.snapshot());
            self.cluster_manager.forget_removed();
            // Kept across updates: making a counter takes the stats registry's lock, which an
            // admin scrape or a large update may hold for milliseconds.
            self.code_counters.borrow_mut().retain(|_, (cluster, _)| cluster.strong_count() > 0);
        }
        &self.http_pools
    }

    /// Counts the answer `code` into `cluster.<name>.upstream_rq_<code>`, `upstream_rq_<N>xx`
    /// and `upstream_rq_completed`.
    pub fn count_upstream_code(&self, cluster: &Arc<Cluster>, code: u16) {
        cluster.stats().upstream_response_class(code);
        let key = (Arc::as_ptr(cluster) as usize, code);
        let mut counters = self.code_counters.borrow_mut();
        let (_, counter) = counters
            .entry(key)
            .or_insert_with(|| (Arc::downgrade(cluster), cluster.scope.counter(&format!("upstream_rq_{code}"))));
        counter.inc();
    }

    /// A response the router retries: counted under `retry.` (`retry.upstream_rq_completed`,
    /// `retry.upstream_rq_<N>xx`, `retry.upstream_rq_<code>`), as Envoy does, so that the
    /// plain counters hold what the downstream was answered. Rare: looked up by name.
    pub fn count_retried_code(&self, cluster: &Arc<Cluster>, code: u16) {
        let scope = &cluster.scope;
        scope.counter("retry.upstream_rq_completed").inc();
        if (1..=5).contains(&(code / 100)) {
            scope.counter(&format!("retry.upstream_rq_{}xx", code / 100)).inc();
        }
        scope.counter(&format!("retry.upstream_rq_{code}")).inc();
    }
}

/// Requests from the main thread.
pub enum WorkerMessage {
    /// Start accepting on this socket (bound by the main thread with `SO_REUSEPORT`).
    AddListener { listener: Arc<Listener>, socket: std::net::TcpListener },
    /// New connections of the listener of this name use this version (LDS update).
    UpdateListener { listener: Arc<Listener> },
    /// Stop accepting on the listener of this name and close its socket (LDS removal); its
    /// connections drain through their filter chains.
    RemoveListener { name: String },
    /// Stop accepting on every listener (`only`: on the listeners of these names), and tell
    /// the connections of a full stop to finish.
    StopListeners { done: oneshot::Sender<()>, only: Option<Vec<String>> },
    /// Tell every connection to finish (HTTP/1.1 `connection: close`, HTTP/2 GOAWAY), new
    /// ones included, while the listeners keep accepting (`/drain_listeners?graceful`).
    DrainConnections,
}

/// What the embedding binary runs on each worker thread as it starts and as it ends, around
/// its runtime (legate's allocator keeps a shelf of blocks per worker thread). Set once,
/// before the first worker starts; unset, nothing runs.
pub static THREAD_HOOKS: std::sync::OnceLock<ThreadHooks> = std::sync::OnceLock::new();

/// See [`THREAD_HOOKS`].
pub struct ThreadHooks {
    /// Runs first on the worker's thread, before anything of the worker exists.
    pub started: fn(),
    /// Runs last, once the worker's connections and runtime are dropped.
    pub stopping: fn(),
}

/// The main thread's handle to a worker.
pub struct Worker {
    pub index: usize,
    tx: mpsc::UnboundedSender<WorkerMessage>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts worker `index` (0-based); its stats go to shard `index + 1`.
    pub fn start(index: usize, clusters: Arc<SharedClusters>, server: Arc<ServerShared>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let thread = std::thread::Builder::new().name(format!("wrk:worker_{index}")).spawn(move || {
            let hooks = THREAD_HOOKS.get();
            if let Some(hooks) = hooks {
                (hooks.started)();
            }
            legate_stats::set_thread_shard(index + 1);
            let local = tokio::task::LocalSet::new();
            let context = Rc::new(WorkerContext::new(index, ThreadLocalClusterManager::new(clusters), server));
            local.block_on(&runtime, run(context, rx));
            // Dropping the LocalSet drops every connection still open on this worker; the
            // runtime then its sockets' registrations.
            drop(local);
            drop(runtime);
            if let Some(hooks) = hooks {
                (hooks.stopping)();
            }
        })?;
        Ok(Worker { index, tx, thread: Some(thread) })
    }

    pub fn post(&self, message: WorkerMessage) {
        // A worker that is gone has nothing left to do with the message.
        let _ = self.tx.send(message);
    }

    /// Ends the event loop (closing its connections) and waits for the thread.
    pub fn shutdown(mut self) {
        drop(self.tx);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Bytes of spare boxes freed at once past which the allocator is asked to give its free
/// pages back (glibc keeps freed blocks in the middle of its heap resident).
const RELEASE_AFTER_REAPING: usize = 256 << 10;

/// What gives the allocator's free pages back to the system, set by the binary (this crate
/// has no `unsafe`): called on a worker's thread, after it freed a burst's spare boxes.
static RELEASE_FREE_MEMORY: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets what [`WorkerContext`]s call to give the allocator's free pages back (once).
pub fn set_release_free_memory(release: fn()) {
    let _ = RELEASE_FREE_MEMORY.set(release);
}

/// Frees spare boxes every [`REAP_EVERY`], as long as the worker runs.
async fn reap_spares(context: std::rc::Weak<WorkerContext>) {
    let mut every = tokio::time::interval(REAP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(context) = context.upgrade() else { return };
        context.reap_spares();
    }
}

async fn run(context: Rc<WorkerContext>, mut rx: mpsc::UnboundedReceiver<WorkerMessage>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::task::spawn_local(drain::relay(context.drains.clone(), context.server.chain_drains.subscribe()));
    tokio::task::spawn_local(reap_spares(Rc::downgrade(&context)));
    // The version each accept loop serves, by listener name.
    let mut versions: HashMap<String, watch::Sender<Option<Arc<Listener>>>> = HashMap::default();
    while let Some(message) = rx.recv().await {
        match message {
            WorkerMessage::UpdateListener { listener } => {
                if let Some(version) = versions.get(&listener.name) {
                    version.send_replace(Some(listener));
                }
            }
            WorkerMessage::RemoveListener { name } => {
                if let Some(version) = versions.remove(&name) {
                    version.send_replace(None);
                }
            }
            WorkerMessage::AddListener { listener, socket } => {
                match socket.set_nonblocking(true).and_then(|()| tokio::net::TcpListener::from_std(socket)) {
                    Ok(socket) => {
                        let (version, current) = watch::channel(Some(listener.clone()));
                        versions.insert(listener.name.clone(), version);
                        tokio::task::spawn_local(active_listener::run(
                            current,
                            socket,
                            context.clone(),
                            stop_rx.clone(),
                        ));
                    }
                    Err(e) => {
                        tracing::error!(listener = %listener.name, error = %e, "worker {}: cannot use listen socket", context.index)
                    }
                }
            }
            WorkerMessage::DrainConnections => context.drains.announce(true),
            WorkerMessage::StopListeners { done, only: Some(names) } => {
                for name in names {
                    if let Some(version) = versions.remove(&name) {
                        version.send_replace(None);
                    }
                }
                tokio::task::yield_now().await;
                let _ = done.send(());
            }
            WorkerMessage::StopListeners { done, only: None } => {
                let _ = stop_tx.send(true);
                context.drains.set_listeners_stopped();
                context.drains.announce(true);
                // Let the accept loops see the signal and drop their sockets.
                tokio::task::yield_now().await;
                let _ = done.send(());
            }
        }
    }
    context.park.clear();
}
