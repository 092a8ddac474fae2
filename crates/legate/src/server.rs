//! The server: loads the bootstrap, starts the cluster manager, listeners, workers and admin,
//! and drains on SIGTERM/SIGINT (Envoy's `InstanceImpl`).
//!
//! Lifecycle, mirrored in `server.state`: `Initializing` (clusters resolve, sockets bind) →
//! `Live` (workers accept) → on SIGTERM/SIGINT `Draining` (listeners stop accepting; open
//! connections get up to `--drain-time-s` to finish) → exit 0. `/quitquitquit` exits without
//! waiting. `/healthcheck/fail` reports `Draining` while the server keeps serving, as Envoy.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use legate_config::LoadedBootstrap;
use legate_proxy::listener::ListenerManager;
use legate_proxy::upstream::ClusterManager;
use legate_proxy::worker::{ServerShared, Worker};
use legate_stats::Store;
use tokio::sync::Notify;

use crate::cli::{Mode, Options};
use crate::logging::LogControl;

legate_stats::stats! {
    /// `server.*`, Envoy's ALL_SERVER_STATS.
    pub struct ServerStats {
        gauge uptime,
        gauge concurrency,
        gauge memory_allocated,
        gauge memory_heap_size,
        gauge memory_physical_size,
        gauge live,
        gauge state,
        gauge parent_connections,
        gauge total_connections,
        gauge version,
        gauge days_until_first_cert_expiring,
        gauge hot_restart_epoch,
        gauge hot_restart_generation,
        counter debug_assertion_failures,
        counter envoy_bug_failures,
        counter dynamic_unknown_fields,
        counter static_unknown_fields,
        counter wip_protos,
        counter dropped_stat_flushes,
        histogram initialization_time_ms,
    }
}

/// Envoy's `envoy.admin.v3.ServerInfo.State`, with the values of the `server.state` gauge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerState {
    Live = 0,
    Draining = 1,
    Initializing = 3,
}

impl ServerState {
    pub fn name(self) -> &'static str {
        match self {
            ServerState::Live => "LIVE",
            ServerState::Draining => "DRAINING",
            ServerState::Initializing => "INITIALIZING",
        }
    }
}

pub struct Server {
    pub options: Options,
    pub loaded: LoadedBootstrap,
    pub store: Arc<Store>,
    pub stats: ServerStats,
    pub cluster_manager: Rc<ClusterManager>,
    pub runtime: Rc<legate_proxy::runtime::Loader>,
    pub xds: crate::xds::Xds,
    pub listener_manager: RefCell<ListenerManager>,
    pub workers: RefCell<Vec<Worker>>,
    pub shared: Arc<ServerShared>,
    pub logging: LogControl,
    pub started: Instant,
    pub started_at: SystemTime,
    state: Cell<ServerState>,
    health_check_failed: Cell<bool>,
    /// `/drain_listeners?graceful` started the drain sequence.
    drain_sequence_started: Cell<bool>,
    /// Set by `/quitquitquit`.
    pub quit: Notify,
    pub admin_address: Cell<Option<SocketAddr>>,
}

/// Loads the config and runs the server until it exits; returns the process exit code.
pub fn run(options: Options) -> anyhow::Result<i32> {
    let logging = LogControl::init(&options.log_level)?;
    let (loaded, origin) = load(&options)?;
    if options.mode == Mode::Validate {
        // Build what serving would build (route tables, access log files) without binding.
        let store = Store::new(1);
        // The static clusters, TLS contexts included, as serving builds them.
        ClusterManager::new(&loaded.bootstrap.static_resources.clusters, &store).map_err(anyhow::Error::msg)?;
        for (index, config) in loaded.bootstrap.static_resources.listeners.iter().enumerate() {
            // A listener whose certificates a control plane delivers cannot be built before
            // they arrive; its config parsed and checked, which is what validation can do.
            if !crate::xds::sds::dynamic_secret_configs(config).is_empty() {
                continue;
            }
            legate_proxy::listener::Listener::new(config, &store, 1)
                .map_err(|e| anyhow::anyhow!("static_resources.listeners[{index}] ('{}'): {e}", config.name()))?;
        }
        println!("configuration '{origin}' OK");
        // legate's own check: timeouts that contradict the request timeline (DESIGN.md §3).
        for warning in legate_config::lint::timeline_warnings(&loaded.bootstrap) {
            eprintln!("warning: {warning}");
        }
        for timeline in legate_config::lint::route_timelines(&loaded.bootstrap) {
            println!("{timeline}");
        }
        return Ok(0);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the main thread's runtime")?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, serve(options, loaded, origin, logging))
}

fn load(options: &Options) -> anyhow::Result<(LoadedBootstrap, String)> {
    let (mut loaded, origin) = if options.is_demo() {
        (legate_config::load_bootstrap(None, Some(crate::demo::DEMO_YAML))?, "embedded demo".to_string())
    } else {
        let origin = options
            .config_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "--config-yaml".to_string());
        (legate_config::load_bootstrap(options.config_path.as_deref(), options.config_yaml.as_deref())?, origin)
    };
    // --service-node/--service-cluster/--service-zone override the bootstrap's node, as Envoy.
    let node = loaded.bootstrap.node.get_or_insert_with(Default::default);
    if let Some(id) = &options.service_node {
        node.id = id.clone();
    }
    if let Some(cluster) = &options.service_cluster {
        node.cluster = cluster.clone();
    }
    if let Some(zone) = &options.service_zone {
        node.locality.get_or_insert_with(Default::default).zone = zone.clone();
    }
    Ok((loaded, origin))
}

async fn serve(
    options: Options,
    loaded: LoadedBootstrap,
    config_origin: String,
    logging: LogControl,
) -> anyhow::Result<i32> {
    let started = Instant::now();
    legate_stats::set_thread_shard(0);
    let concurrency = options.concurrency();
    let store = Store::new(concurrency + 1);
    store.set_deferred_creation(
        loaded.bootstrap.deferred_stat_options.as_ref().is_some_and(|d| d.enable_deferred_creation_stats),
    );
    let stats = ServerStats::new(&store.scope("server"));
    stats.state.set(ServerState::Initializing as u64);
    stats.concurrency.set(concurrency as u64);
    let bootstrap = &loaded.bootstrap;
    tracing::info!("initializing epoch 0 (legate version {})", env!("CARGO_PKG_VERSION"));
    tracing::info!(
        "loading {} listener(s), {} cluster(s) from {config_origin}",
        bootstrap.static_resources.listeners.len(),
        bootstrap.static_resources.clusters.len()
    );

    // The runtime first: clusters and listeners read it as they are built.
    let runtime = legate_proxy::runtime::Loader::new(
        bootstrap.layered_runtime.as_ref(),
        bootstrap.node.as_ref().map_or("", |n| n.cluster.as_str()),
        &store.scope("runtime"),
    )
    .map_err(anyhow::Error::msg)?;
    tokio::task::spawn_local(runtime.clone().watch_disk_layers());
    let cluster_manager =
        Rc::new(ClusterManager::new(&bootstrap.static_resources.clusters, &store).map_err(anyhow::Error::msg)?);
    cluster_manager.initialize().await;
    let xds = crate::xds::Xds::start(bootstrap, &cluster_manager, &runtime)?;
    // RTDS after the static clusters, before CDS (Envoy's init order).
    initialized(|| xds.rtds.initialized()).await;
    xds.start_cds(bootstrap, &cluster_manager)?;
    // Envoy's init order: clusters (CDS, then each cluster's first endpoints) before listeners.
    initialized(|| xds.clusters_initialized(&cluster_manager)).await;
    tracing::info!("all clusters initialized");
    let shared = Arc::new(
        ServerShared::new(bootstrap.overload_manager.as_ref().and_then(|o| o.global_downstream_max_connections()))
            .with_local_cluster_name(bootstrap.node.as_ref().map_or("", |n| n.cluster.as_str())),
    );
    legate_proxy::access_log::install_stats(&store);
    legate_proxy::access_log::set_file_flush_interval(Duration::from_millis(options.file_flush_interval_msec.max(1)));
    // Static listeners whose TLS secrets come from a control plane wait for them.
    for (index, listener) in bootstrap.static_resources.listeners.iter().enumerate() {
        xds.sds
            .subscribe_for(listener)
            .map_err(|e| anyhow::anyhow!("static_resources.listeners[{index}] ('{}'): {e}", listener.name()))?;
    }
    initialized(|| bootstrap.static_resources.listeners.iter().all(|l| xds.sds.ready(l))).await;
    let mut listener_manager = ListenerManager::new(bootstrap, &store, concurrency, &shared)?;
    listener_manager.set_drain_time(Duration::from_secs(options.drain_time_s));
    // Static listeners may take their routes from RDS: subscribe, and start serving once
    // they arrived (or `initial_fetch_timeout` passed), as Envoy's init manager.
    for (index, (listener, _)) in listener_manager.listeners().enumerate() {
        xds.rds
            .subscribe_for(&listener.config)
            .map_err(|e| anyhow::anyhow!("static_resources.listeners[{index}] ('{}'): {e}", listener.name))?;
    }
    initialized(|| listener_manager.listeners().all(|(l, _)| crate::xds::rds::Rds::ready(&l.config))).await;
    // Certificates from SDS files are read again when the files change (main thread).
    let watched: Vec<_> = listener_manager
        .listeners()
        .flat_map(|(l, _)| l.filter_chains.iter().chain(&l.default_filter_chain))
        .filter_map(|c| c.transport_socket.as_ref())
        .flat_map(|tls| tls.watched())
        .collect();
    tokio::task::spawn_local(legate_proxy::tls::secret::watch(watched));

    let admin_listener = match bootstrap.admin.as_ref().and_then(|a| a.address.as_ref()).and_then(|a| a.socket()) {
        Some(socket) => {
            let ip = socket.ip().context("admin.address.socket_address.address")?;
            let address = SocketAddr::new(ip, socket.port_value as u16);
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot bind admin address '{address}' (admin.address)"))?;
            Some(listener)
        }
        None => None,
    };
    // The static clusters and listeners are built; their config is not read again (each
    // cluster and listener keeps what it needs, `/config_dump` reads the raw text): 10,000
    // clusters' config structs and endpoints would stay for nothing (~1.9 KiB each).
    let mut loaded = loaded;
    loaded.bootstrap.static_resources = Default::default();
    // Loading parsed the whole config into trees and copies now dropped: give the pages back.
    crate::memory::release_free_memory_soon();
    // And so do workers, after a burst of streams.
    legate_proxy::worker::set_release_free_memory(crate::memory::release_free_memory_soon);
    let server = Rc::new(Server {
        loaded,
        store,
        stats,
        cluster_manager,
        runtime,
        xds,
        listener_manager: RefCell::new(listener_manager),
        workers: RefCell::new(Vec::new()),
        shared,
        logging,
        started,
        started_at: SystemTime::now(),
        state: Cell::new(ServerState::Initializing),
        health_check_failed: Cell::new(false),
        drain_sequence_started: Cell::new(false),
        quit: Notify::new(),
        admin_address: Cell::new(None),
        options,
    });
    if let Some(listener) = admin_listener {
        let address = listener.local_addr()?;
        server.admin_address.set(Some(address));
        tracing::info!("admin address: {address}");
        if let Some(path) = &server.options.admin_address_path {
            std::fs::write(path, address.to_string())
                .with_context(|| format!("cannot write --admin-address-path {}", path.display()))?;
        }
        tokio::task::spawn_local(crate::admin::serve(server.clone(), listener));
    }
    if server.options.mode == Mode::InitOnly {
        return Ok(0);
    }

    tracing::info!("starting workers");
    let mut workers = Vec::with_capacity(concurrency);
    for index in 0..concurrency {
        workers.push(
            Worker::start(index, server.cluster_manager.shared(), server.shared.clone())
                .context("cannot start worker thread")?,
        );
    }
    server.listener_manager.borrow_mut().start_workers(&workers);
    *server.workers.borrow_mut() = workers;
    crate::xds::Xds::start_lds(&server)?;
    initialized(|| server.xds.listeners_initialized(&server)).await;
    server.set_state(ServerState::Live);
    server.stats.initialization_time_ms.record(started.elapsed().as_millis() as u64);
    tracing::info!("starting main dispatch loop");
    tokio::task::spawn_local(flush_stats(server.clone()));

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let drain = tokio::select! {
        _ = sigterm.recv() => { tracing::warn!("caught SIGTERM"); true }
        _ = sigint.recv() => { tracing::warn!("caught SIGINT"); true }
        _ = server.quit.notified() => { tracing::info!("shutting down: /quitquitquit"); false }
    };
    if drain {
        server.drain().await;
    }
    tracing::info!("shutting down server instance");
    for worker in server.workers.borrow_mut().drain(..) {
        worker.shutdown();
    }
    legate_proxy::access_log::flush_all();
    tracing::info!("exiting");
    Ok(0)
}

impl Server {
    pub fn state(&self) -> ServerState {
        // Envoy reports a failed health check as draining while it keeps serving.
        match self.state.get() {
            ServerState::Live if self.health_check_failed.get() => ServerState::Draining,
            s => s,
        }
    }

    fn set_state(&self, state: ServerState) {
        self.state.set(state);
        self.update_state_stats();
    }

    fn update_state_stats(&self) {
        self.stats.state.set(self.state() as u64);
        self.stats.live.set(u64::from(self.state() == ServerState::Live));
    }

    /// `/healthcheck/fail` and `/healthcheck/ok`.
    pub fn set_health_check_failed(&self, failed: bool) {
        self.health_check_failed.set(failed);
        self.shared.health_check_failed.store(failed, Ordering::Relaxed);
        self.update_state_stats();
    }

    /// Stops accepting on every listener (SIGTERM, `/drain_listeners`), or only on the
    /// inbound ones. Returns once every worker has closed those sockets.
    pub async fn stop_listeners(&self, inbound_only: bool) {
        let acks = {
            let workers = self.workers.borrow();
            self.listener_manager.borrow_mut().stop_listeners(&workers, inbound_only)
        };
        for ack in acks {
            let _ = ack.await;
        }
    }

    /// `/drain_listeners?graceful`: Envoy's drain sequence. Every connection is told to finish
    /// (new ones too) while the listeners keep accepting for `--drain-time-s`; then the
    /// listeners stop, unless `skip_exit`. A second call while one runs does nothing.
    pub fn start_drain_sequence(self: &Rc<Self>, inbound_only: bool, skip_exit: bool) {
        if self.drain_sequence_started.replace(true) {
            return;
        }
        self.listener_manager.borrow().drain_connections(&self.workers.borrow());
        let server = self.clone();
        tokio::task::spawn_local(async move {
            tokio::time::sleep(Duration::from_secs(server.options.drain_time_s)).await;
            if !skip_exit {
                server.stop_listeners(inbound_only).await;
            }
        });
    }

    /// Stops accepting, then waits up to `--drain-time-s` for open connections to close.
    async fn drain(&self) {
        self.set_state(ServerState::Draining);
        self.stop_listeners(false).await;
        let deadline = Instant::now() + Duration::from_secs(self.options.drain_time_s);
        let open = || self.shared.active_connections.load(Ordering::Relaxed);
        tracing::info!("draining {} open connection(s) for up to {} s", open(), self.options.drain_time_s);
        while open() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if open() > 0 {
            tracing::warn!("drain time elapsed with {} connection(s) open; closing them", open());
        }
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Refreshes the gauges that are read off the process rather than counted.
    pub fn refresh_gauges(&self) {
        let memory = crate::memory::read();
        self.stats.uptime.set(self.uptime().as_secs());
        self.stats.memory_allocated.set(memory.allocated);
        self.stats.memory_heap_size.set(memory.heap_size);
        self.stats.memory_physical_size.set(memory.physical);
        self.stats.total_connections.set(self.shared.active_connections.load(Ordering::Relaxed));
        self.update_state_stats();
    }
}

/// Envoy's stats flush: every `stats_flush_interval` histograms are latched. The process
/// gauges (`server.*`), which Envoy refreshes here too, are refreshed by the admin renders
/// that may show them, their only readers (no stats sinks): reading the allocator's totals
/// walks its free lists, ~4 ms of the main thread every flush with 10,000 clusters.
async fn flush_stats(server: Rc<Server>) {
    let interval = server.loaded.bootstrap.stats_flush_interval();
    loop {
        server.store.latch_histograms();
        tokio::time::sleep(interval).await;
    }
}

/// Start-up's waits for the control plane (Envoy's init manager): until `done`, checked every
/// 10 ms while the subscriptions run on this thread.
async fn initialized(done: impl Fn() -> bool) {
    while !done() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
