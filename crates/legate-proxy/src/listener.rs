//! Listeners: an address, filter chains chosen by `filter_chain_match`, and the sockets
//! each worker accepts on (Envoy's "Listeners" architecture page).

pub mod active_listener;
pub mod drain;
pub mod filter_chain_match;
pub mod listener_manager;
pub mod socket;
pub mod stats;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use legate_config::listener::{FilterChain as FilterChainConfig, Listener as ListenerConfig};
use legate_stats::{Scope, Store};

use crate::extensions::NetworkFilterFactory;
use crate::filters::listener::ListenerFilter;
use crate::tls::{ServerContext, SslStats};
use filter_chain_match::FilterChainMatcher;
use legate_config::extensions::TransportSocketConfig;
use stats::ListenerStats;

pub use listener_manager::ListenerManager;

/// A listener as workers use it: immutable, shared by all workers.
pub struct Listener {
    pub name: String,
    /// The configured address (port 0 until bound; see `ListenerManager`).
    pub address: SocketAddr,
    pub config: ListenerConfig,
    /// Shared with the listener's next version when an update leaves a chain unchanged: its
    /// connections then go on undisturbed.
    pub filter_chains: Vec<Arc<FilterChain>>,
    pub default_filter_chain: Option<Arc<FilterChain>>,
    pub buffer_limit: usize,
    pub stats: ListenerStats,
    /// Per-worker stats `listener.<addr>.worker_<i>.*`, index = worker.
    pub worker_stats: Vec<stats::PerWorkerListenerStats>,
    /// `envoy.resource_limits.listener.<name>.connection_limit`: the runtime's value, read
    /// at each accept, limits the listener's connections (none without one).
    pub connection_limit_key: Box<str>,
    /// Connections open on this listener, all workers.
    pub active_connections: AtomicU64,
    /// `listener_filters`, in order.
    pub listener_filters: Vec<ListenerFilter>,
    /// `listener_filters_timeout` (15 s default; `None` when 0).
    pub listener_filters_timeout: Option<std::time::Duration>,
    pub continue_on_listener_filters_timeout: bool,
}

/// A filter chain ready to build connections: its match, its transport socket and its network
/// filter factories.
pub struct FilterChain {
    pub name: String,
    /// What it was built from: an update with an equal chain keeps this one.
    pub config: FilterChainConfig,
    pub matcher: FilterChainMatcher,
    /// `envoy.transport_sockets.tls`; `None` is `raw_buffer`.
    pub transport_socket: Option<Arc<ServerContext>>,
    /// How long the TLS handshake may take (no limit when unset, as Envoy).
    pub transport_socket_connect_timeout: Option<std::time::Duration>,
    pub factories: Vec<NetworkFilterFactory>,
    /// Tells the chain's connections to finish, then to close (listener updates and removal).
    pub drain: drain::FilterChainDrain,
}

impl FilterChain {
    /// `at` is the chain's field (`filter_chains[1]`, `default_filter_chain`), for errors;
    /// the TLS context counts under the listener's `scope` (`listener.<prefix>.ssl.*`, created
    /// only for listeners that terminate TLS, as in Envoy).
    /// `egress`: the listener's `traffic_direction` is OUTBOUND (its requests' spans are
    /// client spans).
    fn new(
        config: &FilterChainConfig,
        store: &Arc<Store>,
        at: &str,
        scope: &Scope,
        egress: bool,
    ) -> Result<Self, String> {
        let transport_socket = match config.transport_socket.as_ref().map(|t| &t.config) {
            None | Some(TransportSocketConfig::RawBuffer) => None,
            Some(TransportSocketConfig::DownstreamTls(tls)) => Some(Arc::new(
                ServerContext::new(
                    tls,
                    SslStats::new(scope),
                    scope.counter("server_ssl_socket_factory.ssl_context_update_by_sds"),
                    &store.scope(""),
                )
                .map_err(|e| format!("{at}.transport_socket.typed_config.{e}"))?,
            )),
            Some(TransportSocketConfig::UpstreamTls(_)) => {
                return Err(format!(
                "{at}.transport_socket.typed_config: a filter chain's TLS transport socket is a DownstreamTlsContext"
            ))
            }
        };
        Ok(FilterChain {
            name: config.name.clone(),
            config: config.clone(),
            drain: drain::FilterChainDrain::default(),
            matcher: FilterChainMatcher::new(&config.filter_chain_match),
            transport_socket,
            transport_socket_connect_timeout: config
                .transport_socket_connect_timeout
                .map(|d| d.as_std())
                .filter(|d| !d.is_zero()),
            factories: config
                .filters
                .iter()
                .map(|f| NetworkFilterFactory::new(&f.config, store, scope, egress))
                .collect::<Result<_, _>>()?,
        })
    }
}

impl Listener {
    /// Fails when a filter cannot be built (e.g. an access log file cannot be opened).
    pub fn new(config: &ListenerConfig, store: &Arc<Store>, workers: usize) -> Result<Self, String> {
        let socket = config.address.socket();
        let ip = socket.and_then(|s| s.ip()).unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
        let port = socket.map_or(0, |s| s.port_value as u16);
        let scope = store.scope(&format!("listener.{}", config.stat_prefix()));
        let egress = config.traffic_direction == legate_config::core::TrafficDirection::Outbound;
        let filter_chains = config
            .filter_chains
            .iter()
            .enumerate()
            .map(|(i, c)| FilterChain::new(c, store, &format!("filter_chains[{i}]"), &scope, egress).map(Arc::new))
            .collect::<Result<_, _>>()?;
        let default_filter_chain = config
            .default_filter_chain
            .as_ref()
            .map(|c| FilterChain::new(c, store, "default_filter_chain", &scope, egress).map(Arc::new))
            .transpose()?;
        Ok(Listener {
            name: config.name(),
            address: SocketAddr::new(ip, port),
            filter_chains,
            default_filter_chain,
            buffer_limit: config.per_connection_buffer_limit_bytes() as usize,
            stats: ListenerStats::new(&scope),
            worker_stats: (0..workers)
                .map(|i| stats::PerWorkerListenerStats::new(&scope.scope(&format!("worker_{i}"))))
                .collect(),
            connection_limit_key: format!("envoy.resource_limits.listener.{}.connection_limit", config.name()).into(),
            active_connections: AtomicU64::new(0),
            listener_filters: config
                .listener_filters
                .iter()
                .map(|f| ListenerFilter::new(&f.config, &store.scope("")))
                .collect(),
            listener_filters_timeout: Some(
                config.listener_filters_timeout.unwrap_or(ListenerConfig::DEFAULT_LISTENER_FILTERS_TIMEOUT).0,
            )
            .filter(|t| !t.is_zero()),
            continue_on_listener_filters_timeout: config.continue_on_listener_filters_timeout,
            config: config.clone(),
        })
    }

    /// The filter chain for a new connection, Envoy's precedence, then the default chain.
    pub fn find_filter_chain(&self, info: &filter_chain_match::ConnectionMetadata<'_>) -> Option<&Arc<FilterChain>> {
        filter_chain_match::find(&self.filter_chains, info).or(self.default_filter_chain.as_ref())
    }
}

impl Listener {
    /// Every filter chain, the default one last.
    pub fn all_filter_chains(&self) -> impl Iterator<Item = &Arc<FilterChain>> {
        self.filter_chains.iter().chain(&self.default_filter_chain)
    }

    /// Takes over the chains of `previous` that this version left unchanged (Envoy's in-place
    /// filter chain update): connections on them are not drained.
    pub fn keep_unchanged_chains(&mut self, previous: &Listener) {
        let find = |chain: &Arc<FilterChain>| {
            previous
                .all_filter_chains()
                .find(|old| old.config == chain.config)
                .cloned()
                .unwrap_or_else(|| chain.clone())
        };
        self.filter_chains = self.filter_chains.iter().map(find).collect();
        self.default_filter_chain = self.default_filter_chain.as_ref().map(find);
    }

    /// The chains of this version that `next` does not keep (all of them when `next` is
    /// `None`: the listener is removed).
    pub fn chains_replaced_by(&self, next: Option<&Listener>) -> Vec<Arc<FilterChain>> {
        self.all_filter_chains()
            .filter(|chain| !next.is_some_and(|n| n.all_filter_chains().any(|c| Arc::ptr_eq(c, chain))))
            .cloned()
            .collect()
    }
}
