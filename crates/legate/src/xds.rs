//! Dynamic configuration: the bootstrap's `dynamic_resources` and every `ConfigSource` in the
//! static config, wired to the cluster manager and the listener manager (Envoy's `CdsApi`,
//! `EdsClusterImpl`, `LdsApi` and `RdsRouteConfigProvider`). Resources arrive through
//! `legate-xds` in the YAML's JSON shape and are parsed by the same code as the bootstrap.

pub mod cds;
pub mod eds;
pub mod lds;
pub mod rds;
pub mod rtds;
pub mod sds;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use legate_config::Bootstrap;
use legate_proxy::upstream::ClusterManager;
use legate_xds::{NameSet, XdsClient};

/// The subscriptions of a server.
pub struct Xds {
    pub client: Rc<XdsClient>,
    pub eds: Rc<eds::Eds>,
    pub cds: RefCell<Option<Rc<cds::CdsApi>>>,
    pub rtds: rtds::Rtds,
    pub rds: Rc<rds::Rds>,
    pub sds: Rc<sds::Sds>,
    pub lds: RefCell<Option<Rc<lds::LdsApi>>>,
}

impl Xds {
    /// Starts RTDS, and EDS for the static EDS clusters; CDS waits for [`Xds::start_cds`].
    /// Fails on a config source legate cannot use, naming the field.
    pub fn start(
        bootstrap: &Bootstrap,
        cluster_manager: &Rc<ClusterManager>,
        runtime: &Rc<legate_proxy::runtime::Loader>,
    ) -> anyhow::Result<Xds> {
        let dynamic = bootstrap.dynamic_resources.clone().unwrap_or_default();
        let client = XdsClient::new(
            bootstrap.node.clone(),
            dynamic.ads_config.clone(),
            cluster_manager.shared(),
            cluster_manager.store().clone(),
        );
        let eds = eds::Eds::new(cluster_manager.clone(), client.clone());
        let sds = sds::Sds::new(client.clone(), cluster_manager.store().clone(), cluster_manager.clone());
        for (index, config) in bootstrap.static_resources.clusters.iter().enumerate() {
            let Some(cluster) = cluster_manager.get(&config.name) else { continue };
            let at = |e| anyhow::anyhow!("static_resources.clusters[{index}] ('{}'): {e}", cluster.name);
            eds.cluster_added(&cluster, config.eds_cluster_config.clone()).map_err(at)?;
            sds.subscribe_for_cluster(config).map_err(at)?;
        }
        let rtds =
            rtds::Rtds::start(bootstrap, &client, runtime, cluster_manager.store()).map_err(anyhow::Error::msg)?;
        let rds = rds::Rds::new(client.clone(), cluster_manager.clone());
        Ok(Xds { client, eds, cds: RefCell::new(None), rtds, rds, sds, lds: RefCell::new(None) })
    }

    /// Starts CDS, once the runtime layers from RTDS arrived (Envoy's init order: the
    /// clusters CDS brings read the runtime as they are built).
    pub fn start_cds(&self, bootstrap: &Bootstrap, cluster_manager: &Rc<ClusterManager>) -> anyhow::Result<()> {
        let dynamic = bootstrap.dynamic_resources.clone().unwrap_or_default();
        if let Some(source) = &dynamic.cds_config {
            let cds = cds::CdsApi::start(
                source,
                cluster_manager.clone(),
                self.client.clone(),
                self.eds.clone(),
                self.sds.clone(),
            )
            .map_err(|e| anyhow::anyhow!("dynamic_resources.cds_config: {e}"))?;
            *self.cds.borrow_mut() = Some(cds);
        }
        Ok(())
    }

    /// Starts LDS once the workers run (listeners it adds go straight to them), and lets RDS
    /// updates put warming listeners in service.
    pub fn start_lds(server: &Rc<crate::server::Server>) -> anyhow::Result<()> {
        let weak = Rc::downgrade(server);
        *server.xds.rds.on_change.borrow_mut() = Some(Box::new(move || {
            if let Some(server) = weak.upgrade() {
                lds::activate_ready(&server);
            }
        }));
        let weak = Rc::downgrade(server);
        *server.xds.sds.on_change.borrow_mut() = Some(Box::new(move || {
            if let Some(lds) = weak.upgrade().and_then(|s| s.xds.lds.borrow().clone()) {
                lds.retry_pending();
            }
        }));
        let dynamic = server.loaded.bootstrap.dynamic_resources.clone().unwrap_or_default();
        if let Some(source) = &dynamic.lds_config {
            let lds =
                lds::LdsApi::start(source, server, &server.xds.client, server.xds.rds.clone(), server.xds.sds.clone())
                    .map_err(|e| anyhow::anyhow!("dynamic_resources.lds_config: {e}"))?;
            *server.xds.lds.borrow_mut() = Some(lds);
        }
        Ok(())
    }

    /// Whether LDS answered (or timed out) and no listener waits for its routes.
    pub fn listeners_initialized(&self, server: &crate::server::Server) -> bool {
        self.lds.borrow().as_ref().is_none_or(|l| l.initialized())
            && server.listener_manager.borrow().warming.is_empty()
    }

    /// Whether the cluster manager finished initializing: CDS answered (or timed out) and no
    /// cluster waits for its endpoints or TLS secrets (Envoy starts listeners only then).
    pub fn clusters_initialized(&self, cluster_manager: &ClusterManager) -> bool {
        self.cds.borrow().as_ref().is_none_or(|c| c.initialized())
            && cluster_manager.warming_clusters().is_empty()
            && self.eds.initialized()
            && cluster_manager.active_secrets_settled()
    }
}

/// The one name a named subscription asks for.
pub(crate) fn one_name(name: &str) -> NameSet {
    NameSet::One(Arc::from(name))
}
