//! An `XdsClient` on its own thread, as on the server's main thread (a current-thread runtime
//! in a `LocalSet`), driven from a blocking test next to the blocking test control plane;
//! subscribers that record what they hear and reject on demand.

#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use legate_config::config_source::{ApiConfigSource, ConfigSource};
use legate_proxy::upstream::ClusterManager;
use legate_stats::Store;
use legate_xds::{
    ConfigUpdate, ResourceType, SubscriptionCallbacks, SubscriptionStats, UpdateFailure, Watch, XdsClient,
};
use serde_json::{json, Value};

/// How long a test waits for an update.
pub const WAIT: Duration = Duration::from_secs(20);

/// What a watch heard.
#[derive(Clone, Debug)]
pub enum Event {
    Update { version: String, resources: Vec<(String, Value)>, removed: Vec<String>, state_of_the_world: bool },
    Failed(String),
}

impl Event {
    pub fn names(&self) -> Vec<String> {
        match self {
            Event::Update { resources, .. } => resources.iter().map(|(n, _)| n.clone()).collect(),
            Event::Failed(_) => Vec::new(),
        }
    }
}

#[derive(Default)]
struct Log {
    events: Mutex<HashMap<String, Vec<Event>>>,
    changed: Condvar,
    rejections: Mutex<HashMap<String, String>>,
}

struct Recorder {
    watch: String,
    log: Arc<Log>,
    /// Parse every resource into legate's config type, rejecting what does not parse.
    validate: bool,
}

/// Parses a resource as the server's subscribers do: into legate's config type.
pub fn validate(resource_type: ResourceType, value: Value) -> Result<(), String> {
    fn parse_as<T: serde::de::DeserializeOwned>(value: Value) -> Result<(), String> {
        legate_config::path::from_value::<T>(value).map(|_| ()).map_err(|e| e.to_string())
    }
    match resource_type {
        ResourceType::Listener => parse_as::<legate_config::listener::Listener>(value),
        ResourceType::RouteConfiguration => parse_as::<legate_config::route::RouteConfiguration>(value),
        ResourceType::Cluster => parse_as::<legate_config::cluster::Cluster>(value),
        ResourceType::ClusterLoadAssignment => parse_as::<legate_config::endpoint::ClusterLoadAssignment>(value),
        ResourceType::Secret => parse_as::<legate_config::tls::Secret>(value),
        // `envoy.service.runtime.v3.Runtime`: its layer is a Struct.
        ResourceType::Runtime => match value.get("layer") {
            None | Some(Value::Object(_)) => Ok(()),
            Some(_) => Err("layer: must be a Struct".into()),
        },
    }
}

impl SubscriptionCallbacks for Recorder {
    fn on_config_update(&self, update: &ConfigUpdate<'_>) -> Result<(), String> {
        if let Some(detail) = self.log.rejections.lock().unwrap().get(&self.watch) {
            return Err(detail.clone());
        }
        if self.validate {
            for resource in update.resources {
                validate(update.resource_type, resource.value()?).map_err(|e| format!("{}: {e}", resource.name))?;
            }
        }
        let event = Event::Update {
            version: update.version_info.to_string(),
            resources: update.resources.iter().map(|r| (r.name.clone(), r.value().unwrap())).collect(),
            removed: update.removed.to_vec(),
            state_of_the_world: update.state_of_the_world,
        };
        self.log.events.lock().unwrap().entry(self.watch.clone()).or_default().push(event);
        self.log.changed.notify_all();
        Ok(())
    }

    fn on_config_update_failed(&self, failure: &UpdateFailure) {
        let reason = format!("{failure:?}");
        self.log.events.lock().unwrap().entry(self.watch.clone()).or_default().push(Event::Failed(reason));
        self.log.changed.notify_all();
    }
}

type Command = Box<dyn FnOnce(&mut ClientThread) + Send>;

struct ClientThread {
    client: Rc<XdsClient>,
    watches: HashMap<String, Watch>,
    log: Arc<Log>,
}

/// The client thread and the log of its watches.
pub struct Harness {
    commands: tokio::sync::mpsc::UnboundedSender<Command>,
    log: Arc<Log>,
    pub store: Arc<Store>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A static HTTP/2 cluster named `name` with one host, `address`.
pub fn control_plane_cluster(name: &str, address: SocketAddr) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}
            }
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": address.ip().to_string(), "port_value": address.port()
            }}}}]}]
        }
    })
}

/// `ads_config` (or an `api_config_source`) of `api_type` on the cluster `xds_cluster`.
pub fn grpc_api(api_type: &str) -> Value {
    json!({
        "api_type": api_type,
        "transport_api_version": "V3",
        "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}],
        "set_node_on_first_message_only": true
    })
}

pub fn parse<T: serde::de::DeserializeOwned>(mut value: Value) -> T {
    legate_config::normalize::normalize(&mut value);
    legate_config::path::from_value(value).unwrap_or_else(|e| panic!("{e}"))
}

impl Harness {
    /// Starts a client whose clusters are `clusters` and whose `ads_config` is `ads_config`.
    pub fn start(clusters: Vec<Value>, ads_config: Option<Value>) -> Harness {
        let store = Store::new(1);
        let log = Arc::new(Log::default());
        let (commands, mut receiver) = tokio::sync::mpsc::unbounded_channel::<Command>();
        let thread_store = store.clone();
        let thread_log = log.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, async move {
                let configs: Vec<legate_config::cluster::Cluster> = clusters.into_iter().map(parse).collect();
                let manager = ClusterManager::new(&configs, &thread_store).expect("the test's clusters");
                let node = parse(json!({"id": "test-node", "cluster": "test-cluster"}));
                let ads: Option<ApiConfigSource> = ads_config.map(parse);
                let client = XdsClient::new(Some(node), ads, manager.shared(), thread_store);
                let mut state = ClientThread { client, watches: HashMap::new(), log: thread_log };
                while let Some(command) = receiver.recv().await {
                    command(&mut state);
                }
            });
        });
        Harness { commands, log, store, thread: Some(thread) }
    }

    fn run<R: Send + 'static>(&self, command: impl FnOnce(&mut ClientThread) -> R + Send + 'static) -> R {
        let (sender, receiver) = std::sync::mpsc::channel();
        let _ = self.commands.send(Box::new(move |state| {
            let _ = sender.send(command(state));
        }));
        receiver.recv_timeout(WAIT).expect("client thread answers")
    }

    /// Subscribes the watch `watch` to `names` of `resource_type` on `source`.
    pub fn subscribe(
        &self,
        watch: &str,
        source: Value,
        resource_type: ResourceType,
        names: &[&str],
    ) -> Result<(), String> {
        self.subscribe_with(watch, source, resource_type, names, false)
    }

    /// [`Harness::subscribe`] with a watch that parses every resource into legate's config
    /// types and rejects the update when one does not parse.
    pub fn subscribe_validating(
        &self,
        watch: &str,
        source: Value,
        resource_type: ResourceType,
        names: &[&str],
    ) -> Result<(), String> {
        self.subscribe_with(watch, source, resource_type, names, true)
    }

    fn subscribe_with(
        &self,
        watch: &str,
        source: Value,
        resource_type: ResourceType,
        names: &[&str],
        validate: bool,
    ) -> Result<(), String> {
        let watch = watch.to_string();
        let names: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
        self.run(move |state| {
            let source: ConfigSource = parse(source);
            let callbacks = Rc::new(Recorder { watch: watch.clone(), log: state.log.clone(), validate });
            let stats = SubscriptionStats::new(&state.client.store.scope(&format!("watch.{watch}")));
            let handle = state.client.subscribe(&source, resource_type, names.into(), callbacks, stats)?;
            state.watches.insert(watch, handle);
            Ok(())
        })
    }

    /// Changes the names of a watch.
    pub fn update_names(&self, watch: &str, names: &[&str]) {
        let watch = watch.to_string();
        let names: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
        self.run(move |state| {
            if let Some(handle) = state.watches.get(&watch) {
                handle.update_names(names);
            }
        });
    }

    /// Drops a watch.
    pub fn drop_watch(&self, watch: &str) {
        let watch = watch.to_string();
        self.run(move |state| {
            state.watches.remove(&watch);
        });
    }

    /// From now on the watch rejects every update with `detail` (`None`: accepts again).
    pub fn reject(&self, watch: &str, detail: Option<&str>) {
        let mut rejections = self.log.rejections.lock().unwrap();
        match detail {
            Some(detail) => rejections.insert(watch.to_string(), detail.to_string()),
            None => rejections.remove(watch),
        };
    }

    /// Every event of a watch so far.
    pub fn events(&self, watch: &str) -> Vec<Event> {
        self.log.events.lock().unwrap().get(watch).cloned().unwrap_or_default()
    }

    /// Waits for an event of `watch` that `matches`; panics with the events seen.
    pub fn wait_for(&self, watch: &str, what: &str, matches: impl Fn(&Event) -> bool) -> Event {
        let deadline = Instant::now() + WAIT;
        let mut events = self.log.events.lock().unwrap();
        loop {
            if let Some(event) = events.get(watch).and_then(|e| e.iter().find(|e| matches(e))) {
                return event.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                panic!("watch {watch}: no {what} within {WAIT:?}; events: {:#?}", events.get(watch));
            }
            events = self.log.changed.wait_timeout(events, deadline - now).unwrap().0;
        }
    }

    /// Waits for the update of `version`.
    pub fn wait_for_version(&self, watch: &str, version: &str) -> Event {
        self.wait_for(
            watch,
            &format!("update of version {version}"),
            |e| matches!(e, Event::Update { version: v, .. } if v == version),
        )
    }

    /// Polls a gauge until it reads `expected`.
    pub fn wait_for_gauge(&self, name: &str, expected: u64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let value = self.store.gauge_value(name);
            if value == Some(expected) {
                return;
            }
            assert!(Instant::now() < deadline, "{name}: expected {expected}, last seen {value:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let (closed, _) = tokio::sync::mpsc::unbounded_channel();
        self.commands = closed;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
