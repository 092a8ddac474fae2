//! Where each network filter config becomes its implementation: Envoy's extension name and
//! config type (registered in `legate-config/src/extensions.rs`) → factory → per-connection
//! filter. Factories are built once per listener config and shared by all workers.

use std::rc::Rc;
use std::sync::Arc;

use legate_config::extensions::NetworkFilterConfig;
use legate_stats::{Scope, Store};

use crate::filters::network::connection_limit::{ConnectionLimit, ConnectionLimitShared};
use crate::filters::network::direct_response::DirectResponse;
use crate::filters::network::echo::Echo;
use crate::filters::network::http_connection_manager::{HttpConnectionManager, HttpConnectionManagerShared};
use crate::filters::network::rbac::{NetworkRbacFilter, NetworkRbacShared};
use crate::filters::network::tcp_proxy::{TcpProxy, TcpProxyShared};
use crate::network::FilterManager;
use crate::worker::WorkerContext;

pub enum NetworkFilterFactory {
    /// `envoy.filters.network.tcp_proxy`
    TcpProxy(Arc<TcpProxyShared>),
    /// `envoy.filters.network.echo`
    Echo,
    /// `envoy.filters.network.connection_limit`
    ConnectionLimit(Arc<ConnectionLimitShared>),
    /// `envoy.filters.network.direct_response`
    DirectResponse(Arc<[u8]>),
    /// `envoy.filters.network.http_connection_manager`
    HttpConnectionManager(Arc<HttpConnectionManagerShared>),
    /// `envoy.filters.network.rbac`
    Rbac(Arc<NetworkRbacShared>),
}

impl NetworkFilterFactory {
    /// Fails when a part of the config can only be checked by building it (a route table,
    /// an access log file).
    /// `listener` is the scope of the listener whose filter chain it is in; `egress`, whether
    /// that listener's traffic is OUTBOUND.
    pub fn new(
        config: &NetworkFilterConfig,
        store: &Arc<Store>,
        listener: &Scope,
        egress: bool,
    ) -> Result<Self, String> {
        let root = store.scope("");
        Ok(match config {
            NetworkFilterConfig::HttpConnectionManager(c) => NetworkFilterFactory::HttpConnectionManager(Arc::new(
                HttpConnectionManagerShared::new(c, &root, listener, egress)?,
            )),
            NetworkFilterConfig::TcpProxy(c) => NetworkFilterFactory::TcpProxy(Arc::new(TcpProxyShared::new(c, &root))),
            NetworkFilterConfig::Echo(_) => NetworkFilterFactory::Echo,
            NetworkFilterConfig::Rbac(c) => NetworkFilterFactory::Rbac(Arc::new(NetworkRbacShared::new(c, &root)?)),
            NetworkFilterConfig::ConnectionLimit(c) => {
                NetworkFilterFactory::ConnectionLimit(Arc::new(ConnectionLimitShared::new(c, &root)))
            }
            // Validation read the data source once already; a file that vanished since is
            // served as an empty response rather than failing a running server.
            NetworkFilterConfig::DirectResponse(c) => NetworkFilterFactory::DirectResponse(
                c.response.as_ref().and_then(|r| r.read().ok()).unwrap_or_default().into(),
            ),
        })
    }

    /// Adds this filter, fresh, to a new connection's chain.
    pub fn add_to(&self, filters: &mut FilterManager, worker: &Rc<WorkerContext>) {
        match self {
            NetworkFilterFactory::TcpProxy(shared) => {
                filters.add_read_filter(Box::new(TcpProxy::new(shared.clone(), worker.clone())))
            }
            NetworkFilterFactory::Echo => filters.add_read_filter(Box::new(Echo)),
            NetworkFilterFactory::ConnectionLimit(shared) => {
                filters.add_read_filter(Box::new(ConnectionLimit::new(shared.clone())))
            }
            NetworkFilterFactory::DirectResponse(response) => {
                filters.add_read_filter(Box::new(DirectResponse { response: response.clone() }))
            }
            NetworkFilterFactory::HttpConnectionManager(shared) => {
                filters.add_read_filter(Box::new(HttpConnectionManager::new(shared.clone(), worker.clone())))
            }
            NetworkFilterFactory::Rbac(shared) => {
                filters.add_read_filter(Box::new(NetworkRbacFilter::new(shared.clone())))
            }
        }
    }
}
