//! The xDS client of one server: it starts one subscription per (config source, resource
//! type) and shares it between the watches that name the same source (Envoy's
//! `SubscriptionFactory` and the ADS `GrpcMux`).

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use std::sync::Arc;

use arc_swap::ArcSwap;
use legate_config::config_source::{ApiConfigSource, ConfigSource, ConfigSourceKind};
use legate_config::core::Node;
use legate_proxy::upstream::cluster_manager::ClusterMap;
use legate_stats::Store;

use crate::path_subscription;
use crate::resource::ResourceType;
use crate::stats::SubscriptionStats;
use crate::subscription::{SubscriptionCallbacks, Watch, WatchMap};

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
    pub clusters: Arc<ArcSwap<ClusterMap>>,
    pub store: Arc<Store>,
    subscriptions: RefCell<HashMap<(SourceKey, ResourceType), Rc<WatchMap>>>,
}

impl XdsClient {
    pub fn new(
        node: Option<Node>,
        ads_config: Option<ApiConfigSource>,
        clusters: Arc<ArcSwap<ClusterMap>>,
        store: Arc<Store>,
    ) -> Rc<Self> {
        let mut node = node.unwrap_or_default();
        node.user_agent_name = "legate".to_string();
        node.user_agent_version = Some(env!("CARGO_PKG_VERSION").to_string());
        Rc::new(XdsClient { node, ads_config, clusters, store, subscriptions: RefCell::new(HashMap::new()) })
    }

    /// Subscribes `callbacks` to `names` of `resource_type` (no names: every resource, the
    /// wildcard LDS and CDS use) on `source`. The subscription's stats count into `stats`.
    /// Dropping the returned [`Watch`] ends the interest.
    pub fn subscribe(
        &self,
        source: &ConfigSource,
        resource_type: ResourceType,
        names: BTreeSet<String>,
        callbacks: Rc<dyn SubscriptionCallbacks>,
        stats: SubscriptionStats,
    ) -> Result<Watch, String> {
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
            ConfigSourceKind::Api(_) => Err("'api_config_source' is not supported by legate yet".to_string()),
            ConfigSourceKind::Ads => match &self.ads_config {
                Some(_) => Err("'ads' is not supported by legate yet".to_string()),
                None => Err("'ads' config source without 'dynamic_resources.ads_config'".to_string()),
            },
        }
    }
}
