//! The xDS client of one server: it starts one subscription per (config source, resource
//! type) and shares it between the watches that name the same source (Envoy's
//! `SubscriptionFactory` and the ADS `GrpcMux`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use std::sync::Arc;

use legate_config::config_source::{ApiConfigSource, ApiType, ConfigSource, ConfigSourceKind};
use legate_config::core::Node;
use legate_proxy::upstream::cluster_manager::SharedClusters;
use legate_stats::Store;

use crate::grpc_mux::{GrpcMux, Service};
use crate::resource::ResourceType;
use crate::stats::{ControlPlaneStats, SubscriptionStats};
use crate::subscription::{NameSet, SubscriptionCallbacks, Watch, WatchMap};
use crate::{cluster_connect, http_subscription, node, path_subscription};

/// Identifies a subscription: the same file, the same API source or ADS, and one type.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum SourceKey {
    Path(String),
    Api(String),
    Ads,
}

pub struct XdsClient {
    /// The node sent to control planes, `user_agent_name: legate` and its version filled in.
    pub node: Node,
    /// `dynamic_resources.ads_config`.
    pub ads_config: Option<ApiConfigSource>,
    /// The clusters a control plane is reached through (`envoy_grpc.cluster_name`, REST
    /// `cluster_names`): static clusters, as Envoy requires.
    pub clusters: Arc<SharedClusters>,
    pub store: Arc<Store>,
    subscriptions: RefCell<HashMap<(SourceKey, ResourceType), Rc<WatchMap>>>,
    /// The aggregated stream, opened by the first subscription that uses `ads`.
    ads: RefCell<Option<Rc<GrpcMux>>>,
}

impl XdsClient {
    pub fn new(
        node: Option<Node>,
        ads_config: Option<ApiConfigSource>,
        clusters: Arc<SharedClusters>,
        store: Arc<Store>,
    ) -> Rc<Self> {
        let mut node = node.unwrap_or_default();
        node.user_agent_name = "legate".to_string();
        node.user_agent_version = Some(env!("CARGO_PKG_VERSION").to_string());
        Rc::new(XdsClient {
            node,
            ads_config,
            clusters,
            store,
            subscriptions: RefCell::new(HashMap::new()),
            ads: RefCell::new(None),
        })
    }

    /// Subscribes `callbacks` to `names` of `resource_type` (no names: every resource, the
    /// wildcard LDS and CDS use) on `source`. The subscription's stats count into `stats`.
    /// Dropping the returned [`Watch`] ends the interest.
    pub fn subscribe(
        &self,
        source: &ConfigSource,
        resource_type: ResourceType,
        names: NameSet,
        callbacks: Rc<dyn SubscriptionCallbacks>,
        stats: SubscriptionStats,
    ) -> Result<Watch, String> {
        self.subscribe_inline(source, resource_type, names, callbacks, stats).map(Watch::erased)
    }

    /// [`Self::subscribe`] with the subscriber kept by value in the watch's own allocation,
    /// for subscribers there are many of (EDS clusters); the returned watch reaches it.
    pub fn subscribe_inline<C: SubscriptionCallbacks + 'static>(
        &self,
        source: &ConfigSource,
        resource_type: ResourceType,
        names: NameSet,
        callbacks: C,
        stats: SubscriptionStats,
    ) -> Result<Watch<C>, String> {
        let kind =
            source.kind().ok_or("a config source needs one of 'path_config_source', 'api_config_source' or 'ads'")?;
        let key = match kind {
            ConfigSourceKind::Path(path) => SourceKey::Path(path.to_string()),
            ConfigSourceKind::Api(api) => SourceKey::Api(format!("{api:?}")),
            ConfigSourceKind::Ads => SourceKey::Ads,
        };
        let existing = self.subscriptions.borrow().get(&(key.clone(), resource_type)).cloned();
        let map = match existing {
            Some(map) => map,
            None => {
                let map = WatchMap::new(resource_type);
                self.start(source, kind, &map)?;
                self.subscriptions.borrow_mut().insert((key, resource_type), map.clone());
                map
            }
        };
        Ok(map.add(names, callbacks, stats, source.initial_fetch_timeout()))
    }

    fn start(&self, source: &ConfigSource, kind: ConfigSourceKind<'_>, map: &Rc<WatchMap>) -> Result<(), String> {
        match kind {
            ConfigSourceKind::Path(path) => {
                let watched_directory = source
                    .path_config_source
                    .as_ref()
                    .and_then(|p| p.watched_directory.as_ref())
                    .map(|d| d.path.clone());
                path_subscription::start(path.to_string(), watched_directory, map.clone());
                Ok(())
            }
            ConfigSourceKind::Api(api) => match api.api_type {
                ApiType::Rest => {
                    cluster_connect::check_cluster(&self.clusters, api.cluster_name())
                        .map_err(|e| format!("api_config_source.cluster_names: {e}"))?;
                    http_subscription::start(api.clone(), self.node.clone(), self.clusters.clone(), map.clone());
                    Ok(())
                }
                ApiType::Grpc | ApiType::DeltaGrpc => {
                    let mux = self
                        .grpc_mux(api, Service::PerType(map.resource_type))
                        .map_err(|e| format!("api_config_source.{e}"))?;
                    mux.add(map.clone());
                    mux.start();
                    Ok(())
                }
                ApiType::AggregatedGrpc | ApiType::AggregatedDeltaGrpc => {
                    Err("api_config_source: 'AGGREGATED_GRPC' and 'AGGREGATED_DELTA_GRPC' are for 'ads_config' only"
                        .to_string())
                }
            },
            ConfigSourceKind::Ads => {
                let existing = self.ads.borrow().clone();
                let mux = match existing {
                    Some(mux) => mux,
                    None => {
                        let config = self
                            .ads_config
                            .as_ref()
                            .ok_or("'ads' config source without 'dynamic_resources.ads_config'")?;
                        if config.api_type == ApiType::Rest {
                            return Err("dynamic_resources.ads_config: 'REST' cannot be aggregated".to_string());
                        }
                        let mux = self
                            .grpc_mux(config, Service::Aggregated)
                            .map_err(|e| format!("dynamic_resources.ads_config: {e}"))?;
                        mux.start();
                        *self.ads.borrow_mut() = Some(mux.clone());
                        mux
                    }
                };
                mux.add(map.clone());
                Ok(())
            }
        }
    }

    /// A gRPC stream to the control plane of `api`, not yet started.
    fn grpc_mux(&self, api: &ApiConfigSource, service: Service) -> Result<Rc<GrpcMux>, String> {
        GrpcMux::new(
            api,
            service,
            node::node_message(&self.node)?,
            self.clusters.clone(),
            ControlPlaneStats::new(&self.store.scope("control_plane")),
        )
    }
}
