//! A test xDS control plane: a tonic server on `127.0.0.1:0` serving state-of-the-world and
//! delta ADS (and the per-type discovery services), on its own thread and runtime, driven by
//! a blocking API from plain `#[test]` functions; plus [`RestControlPlane`], the REST variant
//! (`POST /v3/discovery:<type>`) over HTTP/1.1, in `control_plane/rest.rs`.
//!
//! A test sets resources per type URL (proto3 JSON, camelCase or snake_case, encoded through
//! the descriptors of Envoy's API that legate decodes with) with a version; open streams get
//! the new snapshot at once. Every request legate sends is recorded ([`XdsRequest`]), each
//! `response_nonce` mapped back to the version it answers, so a test waits for "the ACK of
//! version 2" or "a NACK" whatever the protocol variant.
//!
//! The server answers the way go-control-plane's simple cache does, simplified: a new
//! subscription (or new names) gets the current snapshot; a new version goes to every stream
//! subscribed to the type; SotW responses for RDS/EDS/SDS carry only the names asked for.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};

mod per_type;
mod rest;
mod tls;
pub use rest::RestControlPlane;
use tls::{tls_incoming, Conn};

/// The descriptors legate decodes with (`crates/legate-xds/descriptors`), shared rather than
/// depended on: legate-testing stays free of the proxy's crates.
static ENVOY_API: &[u8] = include_bytes!("../../legate-xds/descriptors/envoy-api.bin");

static POOL: std::sync::LazyLock<DescriptorPool> =
    std::sync::LazyLock::new(|| DescriptorPool::decode(ENVOY_API).expect("Envoy API descriptors"));

/// Type URLs of the five resource types.
pub mod type_url {
    /// LDS.
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    /// RDS.
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    /// CDS.
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    /// EDS.
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    /// SDS.
    pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
}

/// How long the `wait_for_*` helpers wait (a loaded 2-core machine builds while tests run).
pub const CONTROL_PLANE_WAIT: Duration = Duration::from_secs(20);

/// Encodes proto3 JSON as the message of `type_url` (`@type` ignored), through Envoy's
/// descriptors.
pub fn encode_json(type_url: &str, json: &Value) -> Result<Vec<u8>, String> {
    let name = type_url.rsplit_once('/').map_or(type_url, |(_, n)| n);
    let descriptor = POOL.get_message_by_name(name).ok_or_else(|| format!("unknown type URL '{type_url}'"))?;
    let mut json = json.clone();
    if let Value::Object(map) = &mut json {
        map.remove("@type");
    }
    let message = DynamicMessage::deserialize(descriptor, json).map_err(|e| format!("{type_url}: {e}"))?;
    Ok(message.encode_to_vec())
}

/// Decodes a message to proto3 JSON with proto field names (what REST answers carry).
fn decode_json(pool: &DescriptorPool, type_url: &str, bytes: &[u8]) -> Result<Value, String> {
    let name = type_url.rsplit_once('/').map_or(type_url, |(_, n)| n);
    let descriptor = pool.get_message_by_name(name).ok_or_else(|| format!("unknown type URL '{type_url}'"))?;
    let message = DynamicMessage::decode(descriptor, bytes).map_err(|e| e.to_string())?;
    let options = SerializeOptions::new().use_proto_field_name(true).skip_default_fields(true);
    message.serialize_with_options(serde_json::value::Serializer, &options).map_err(|e| e.to_string())
}

/// One resource as the control plane holds it.
#[derive(Clone, Debug)]
pub struct XdsResource {
    /// Its name (delta responses carry it beside the body).
    pub name: String,
    /// The body, whatever its bytes: tests send malformed ones on purpose.
    pub any: Any,
}

impl XdsResource {
    /// A resource from proto3 JSON; its name is its `name` (or, for endpoints, `clusterName`).
    pub fn from_json(type_url: &str, json: &Value) -> XdsResource {
        let name = ["name", "clusterName", "cluster_name"]
            .iter()
            .find_map(|f| json.get(f).and_then(Value::as_str))
            .unwrap_or_default()
            .to_string();
        let value = encode_json(type_url, json).unwrap_or_else(|e| panic!("resource {name}: {e}"));
        XdsResource { name, any: Any { type_url: type_url.to_string(), value } }
    }
}

/// One request legate sent, either variant.
#[derive(Clone, Debug, Default)]
pub struct XdsRequest {
    /// A `DeltaDiscoveryRequest`.
    pub delta: bool,
    /// The stream it came on (streams are numbered from 1 in the order they opened).
    pub stream: u64,
    /// `type_url`.
    pub type_url: String,
    /// SotW `version_info` (empty for delta).
    pub version_info: String,
    /// `response_nonce`.
    pub response_nonce: String,
    /// The version of the response `response_nonce` answers, if it names one.
    pub answers_version: Option<String>,
    /// SotW `resource_names`.
    pub resource_names: Vec<String>,
    /// Delta `resource_names_subscribe`.
    pub subscribe: Vec<String>,
    /// Delta `resource_names_unsubscribe`.
    pub unsubscribe: Vec<String>,
    /// Delta `initial_resource_versions`.
    pub initial_resource_versions: BTreeMap<String, String>,
    /// `error_detail.message`, for a NACK.
    pub error_detail: Option<String>,
    /// `error_detail.code`, for a NACK.
    pub error_code: Option<i32>,
    /// `node.id`, when the request carried a node.
    pub node_id: Option<String>,
    /// The stream's request headers (gRPC metadata): `initial_metadata` shows here.
    pub metadata: BTreeMap<String, String>,
}

impl XdsRequest {
    /// An ACK of `version` of `type_url`.
    pub fn is_ack_of(&self, type_url: &str, version: &str) -> bool {
        self.type_url == type_url && self.error_detail.is_none() && self.answers_version.as_deref() == Some(version)
    }

    /// A NACK of `version` of `type_url`.
    pub fn is_nack_of(&self, type_url: &str, version: &str) -> bool {
        self.type_url == type_url && self.error_detail.is_some() && self.answers_version.as_deref() == Some(version)
    }
}

/// The resources of one type and their version.
#[derive(Clone, Debug, Default)]
struct Snapshot {
    version: String,
    resources: Vec<XdsResource>,
}

#[derive(Default)]
struct State {
    snapshots: BTreeMap<String, Snapshot>,
    requests: Vec<XdsRequest>,
    /// Nonce → the version it was sent with.
    nonces: BTreeMap<String, String>,
    next_nonce: u64,
    next_stream: u64,
    /// The request of `RestControlPlane` to answer with an HTTP status instead.
    rest_status: Option<u16>,
    /// Types pushed on every SotW stream, asked for or not (a misbehaving control plane).
    unrequested: BTreeSet<String>,
}

/// What the server threads share with the test.
struct Shared {
    state: Mutex<State>,
    /// Signalled on every recorded request.
    requested: Condvar,
    /// Bumped on every change of a snapshot.
    changed: watch::Sender<u64>,
}

impl Shared {
    fn new() -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(State::default()),
            requested: Condvar::new(),
            changed: watch::channel(0).0,
        })
    }

    /// A new stream's number (1, 2, …), as recorded with its requests.
    fn next_stream_id(&self) -> u64 {
        let mut state = self.lock();
        state.next_stream += 1;
        state.next_stream
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, mut request: XdsRequest) {
        let mut state = self.lock();
        request.answers_version = state.nonces.get(&request.response_nonce).cloned();
        state.requests.push(request);
        drop(state);
        self.requested.notify_all();
    }

    fn snapshot(&self, type_url: &str) -> Option<Snapshot> {
        self.lock().snapshots.get(type_url).cloned()
    }

    fn nonce(&self, version: &str) -> String {
        let mut state = self.lock();
        state.next_nonce += 1;
        let nonce = state.next_nonce.to_string();
        state.nonces.insert(nonce.clone(), version.to_string());
        nonce
    }

    fn set(&self, type_url: &str, version: &str, resources: Vec<XdsResource>) {
        self.lock().snapshots.insert(type_url.to_string(), Snapshot { version: version.to_string(), resources });
        self.changed.send_modify(|n| *n += 1);
    }

    fn wait_for(&self, what: &str, matches: impl Fn(&XdsRequest) -> bool) -> XdsRequest {
        self.wait_for_nth(what, 1, matches)
    }

    /// Waits for the `n`th request `matches` accepts (from 1).
    fn wait_for_nth(&self, what: &str, n: usize, matches: impl Fn(&XdsRequest) -> bool) -> XdsRequest {
        let deadline = Instant::now() + CONTROL_PLANE_WAIT;
        let mut state = self.lock();
        loop {
            if let Some(found) = state.requests.iter().filter(|r| matches(r)).nth(n.saturating_sub(1)) {
                return found.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                panic!("control plane: no {what} within {CONTROL_PLANE_WAIT:?}; requests seen: {:#?}", state.requests);
            }
            state = self.requested.wait_timeout(state, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

/// A running control plane; [`ControlPlane::stop`] and [`ControlPlane::restart`] take it
/// down and up again on the same port with the same resources.
pub struct ControlPlane {
    shared: Arc<Shared>,
    address: SocketAddr,
    /// Serve over TLS (ALPN `h2`) with this config.
    tls: Option<Arc<rustls::ServerConfig>>,
    server: Option<ServerThread>,
}

struct ServerThread {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl ControlPlane {
    /// Starts on `127.0.0.1:0`.
    pub fn start() -> ControlPlane {
        Self::start_with(None)
    }

    /// Starts on `127.0.0.1:0` serving TLS with `cert`, offering ALPN `h2`.
    pub fn start_tls(cert: &crate::TestCert) -> ControlPlane {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_no_client_auth()
                .with_single_cert(
                    vec![CertificateDer::from(cert.der.clone())],
                    PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("test key"),
                )
                .expect("control plane certificate");
        config.alpn_protocols = vec![b"h2".to_vec()];
        Self::start_with(Some(Arc::new(config)))
    }

    fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> ControlPlane {
        let shared = Shared::new();
        let (address, server) = serve_grpc(shared.clone(), "127.0.0.1:0".parse().expect("address"), tls.clone());
        ControlPlane { shared, address, tls, server: Some(server) }
    }

    /// Where legate's control plane cluster points.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Replaces the resources of `type_url` with `resources` (proto3 JSON) at `version`.
    pub fn set(&self, type_url: &str, version: &str, resources: Vec<Value>) {
        let resources = resources.iter().map(|r| XdsResource::from_json(type_url, r)).collect();
        self.shared.set(type_url, version, resources);
    }

    /// Replaces the resources of `type_url` with these, bytes as given.
    pub fn set_raw(&self, type_url: &str, version: &str, resources: Vec<XdsResource>) {
        self.shared.set(type_url, version, resources);
    }

    /// Pushes `resources` of `type_url` at `version` on every state-of-the-world stream,
    /// whether it asked for that type or not, as a misbehaving control plane would.
    pub fn push_unrequested(&self, type_url: &str, version: &str, resources: Vec<Value>) {
        let resources = resources.iter().map(|r| XdsResource::from_json(type_url, r)).collect();
        self.shared.lock().unrequested.insert(type_url.to_string());
        self.shared.set(type_url, version, resources);
    }

    /// Removes the named resources of `type_url`, the rest staying, at `version`.
    pub fn remove(&self, type_url: &str, version: &str, names: &[&str]) {
        let mut snapshot = self.shared.snapshot(type_url).unwrap_or_default();
        snapshot.resources.retain(|r| !names.contains(&r.name.as_str()));
        self.shared.set(type_url, version, snapshot.resources);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<XdsRequest> {
        self.shared.lock().requests.clone()
    }

    /// Waits for a request `matches` accepts; panics after [`CONTROL_PLANE_WAIT`] listing the
    /// requests seen.
    pub fn wait_for_request(&self, what: &str, matches: impl Fn(&XdsRequest) -> bool) -> XdsRequest {
        self.shared.wait_for(what, matches)
    }

    /// Waits for the ACK of `version` of `type_url`.
    pub fn wait_for_ack(&self, type_url: &str, version: &str) -> XdsRequest {
        self.wait_for_request(&format!("ACK of {type_url} version {version}"), |r| r.is_ack_of(type_url, version))
    }

    /// Waits for the NACK of `version` of `type_url`.
    pub fn wait_for_nack(&self, type_url: &str, version: &str) -> XdsRequest {
        self.wait_for_request(&format!("NACK of {type_url} version {version}"), |r| r.is_nack_of(type_url, version))
    }

    /// Stops serving: the listener closes and every open stream is reset.
    pub fn stop(&mut self) {
        self.server = None;
    }

    /// Serves again on the same port, with the resources it had.
    pub fn restart(&mut self) {
        self.server = None;
        let (address, server) = serve_grpc(self.shared.clone(), self.address, self.tls.clone());
        self.address = address;
        self.server = Some(server);
    }

    /// Sets the resources of an Envoy Gateway scenario from
    /// `<repo>/../shared/envoy-configs/xds-resources/<prefix>.{listeners,routes,clusters,endpoints}.yaml`
    /// (proto3 JSON as YAML lists), each type at `version`. Missing files leave a type empty.
    pub fn load_scenario(&self, prefix: &str, version: &str) -> Result<(), String> {
        for (kind, url) in [
            ("listeners", type_url::LISTENER),
            ("routes", type_url::ROUTE),
            ("clusters", type_url::CLUSTER),
            ("endpoints", type_url::ENDPOINT),
        ] {
            let path = xds_resources_dir().join(format!("{prefix}.{kind}.yaml"));
            let resources = match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let value: Value =
                        serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
                    match value {
                        Value::Array(items) => items,
                        Value::Null => Vec::new(),
                        _ => return Err(format!("{}: expected a list of resources", path.display())),
                    }
                }
                Err(_) => Vec::new(),
            };
            let resources = resources
                .iter()
                .map(|r| {
                    encode_json(url, r).map(|value| XdsResource {
                        name: ["name", "clusterName"]
                            .iter()
                            .find_map(|f| r.get(f).and_then(Value::as_str))
                            .unwrap_or_default()
                            .to_string(),
                        any: Any { type_url: url.to_string(), value },
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            self.shared.set(url, version, resources);
        }
        Ok(())
    }
}

/// `<repo>/../shared/envoy-configs/xds-resources`: the Envoy Gateway outputs.
pub fn xds_resources_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/envoy-configs/xds-resources")
}

/// The scenario prefixes found in [`xds_resources_dir`], sorted.
pub fn scenarios() -> Vec<String> {
    let mut prefixes = BTreeSet::new();
    if let Ok(entries) = std::fs::read_dir(xds_resources_dir()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            for kind in [".listeners.yaml", ".routes.yaml", ".clusters.yaml", ".endpoints.yaml"] {
                if let Some(prefix) = name.strip_suffix(kind) {
                    prefixes.insert(prefix.to_string());
                }
            }
        }
    }
    prefixes.into_iter().collect()
}

fn serve_grpc(
    shared: Arc<Shared>,
    address: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (SocketAddr, ServerThread) {
    let listener = std::net::TcpListener::bind(address).unwrap_or_else(|e| panic!("control plane bind {address}: {e}"));
    listener.set_nonblocking(true).expect("nonblocking");
    let address = listener.local_addr().expect("local address");
    let (shutdown, on_shutdown) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("control-plane".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let incoming = match tls {
                    None => {
                        Box::pin(tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| s.map(Conn::Tcp)))
                            as Pin<Box<dyn Stream<Item = std::io::Result<Conn>> + Send>>
                    }
                    Some(config) => tls_incoming(listener, config),
                };
                let service = Service(shared);
                let server = tonic::transport::Server::builder()
                    .add_service(AggregatedDiscoveryServiceServer::new(service.clone()))
                    .add_service(per_type::cluster(service.clone()))
                    .add_service(per_type::listener(service.clone()))
                    .add_service(per_type::route(service.clone()))
                    .add_service(per_type::endpoint(service.clone()))
                    .add_service(per_type::secret(service))
                    .serve_with_incoming(incoming);
                tokio::select! {
                    _ = server => {}
                    _ = on_shutdown => {}
                }
            });
            // Dropping the runtime drops every stream task: their connections reset.
        })
        .expect("control plane thread");
    (address, ServerThread { shutdown: Some(shutdown), thread: Some(thread) })
}

/// The discovery services over the shared state.
#[derive(Clone)]
struct Service(Arc<Shared>);

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send + 'static>>;

impl Service {
    fn stream_sotw(
        &self,
        request: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
        only: Option<&'static str>,
    ) -> ResponseStream<DiscoveryResponse> {
        let metadata = metadata_of(request.metadata());
        let mut requests = request.into_inner();
        let shared = self.0.clone();
        let (responses, receiver) = mpsc::channel(64);
        tokio::spawn(async move {
            let stream_id = shared.next_stream_id();
            let mut changed = shared.changed.subscribe();
            // Per type: the names asked for (empty: all) and the version last sent.
            let mut subscribed: BTreeMap<String, (Vec<String>, Option<String>)> = BTreeMap::new();
            loop {
                let mut due = Vec::new();
                tokio::select! {
                    request = requests.next() => {
                        let Some(Ok(request)) = request else { return };
                        if only.is_some_and(|t| t != request.type_url) {
                            return;
                        }
                        shared.record(XdsRequest {
                            stream: stream_id,
                            type_url: request.type_url.clone(),
                            version_info: request.version_info.clone(),
                            response_nonce: request.response_nonce.clone(),
                            resource_names: request.resource_names.clone(),
                            error_detail: request.error_detail.as_ref().map(|s| s.message.clone()),
                            error_code: request.error_detail.as_ref().map(|s| s.code),
                            node_id: request.node.as_ref().map(|n| n.id.clone()),
                            metadata: metadata.clone(),
                            ..Default::default()
                        });
                        let entry = subscribed.entry(request.type_url.clone()).or_insert((Vec::new(), None));
                        let new_names = entry.0 != request.resource_names;
                        entry.0 = request.resource_names.clone();
                        if request.response_nonce.is_empty() || new_names {
                            due.push(request.type_url.clone());
                        }
                    }
                    result = changed.changed() => {
                        if result.is_err() {
                            return;
                        }
                        let unrequested = shared.lock().unrequested.clone();
                        for type_url in unrequested {
                            subscribed.entry(type_url).or_insert((Vec::new(), None));
                        }
                        for (type_url, (_, sent)) in &subscribed {
                            let current = shared.snapshot(type_url).map(|s| s.version);
                            if current.is_some() && &current != sent {
                                due.push(type_url.clone());
                            }
                        }
                    }
                }
                for type_url in due {
                    let Some(snapshot) = shared.snapshot(&type_url) else { continue };
                    let Some((names, sent)) = subscribed.get_mut(&type_url) else { continue };
                    let resources = snapshot
                        .resources
                        .iter()
                        .filter(|r| names.is_empty() || names.contains(&r.name))
                        .map(|r| r.any.clone())
                        .collect();
                    *sent = Some(snapshot.version.clone());
                    let response = DiscoveryResponse {
                        version_info: snapshot.version.clone(),
                        resources,
                        type_url: type_url.clone(),
                        nonce: shared.nonce(&snapshot.version),
                        ..Default::default()
                    };
                    if responses.send(Ok(response)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Box::pin(ReceiverStream::new(receiver))
    }

    fn stream_delta(
        &self,
        request: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
        only: Option<&'static str>,
    ) -> ResponseStream<DeltaDiscoveryResponse> {
        let metadata = metadata_of(request.metadata());
        let mut requests = request.into_inner();
        let shared = self.0.clone();
        let (responses, receiver) = mpsc::channel(64);
        tokio::spawn(async move {
            let stream_id = shared.next_stream_id();
            let mut changed = shared.changed.subscribe();
            let mut subscriptions: BTreeMap<String, DeltaSubscription> = BTreeMap::new();
            loop {
                let mut due = Vec::new();
                tokio::select! {
                    request = requests.next() => {
                        let Some(Ok(request)) = request else { return };
                        if only.is_some_and(|t| t != request.type_url) {
                            return;
                        }
                        shared.record(XdsRequest {
                            delta: true,
                            stream: stream_id,
                            type_url: request.type_url.clone(),
                            response_nonce: request.response_nonce.clone(),
                            subscribe: request.resource_names_subscribe.clone(),
                            unsubscribe: request.resource_names_unsubscribe.clone(),
                            initial_resource_versions: request.initial_resource_versions.clone().into_iter().collect(),
                            error_detail: request.error_detail.as_ref().map(|s| s.message.clone()),
                            error_code: request.error_detail.as_ref().map(|s| s.code),
                            node_id: request.node.as_ref().map(|n| n.id.clone()),
                            metadata: metadata.clone(),
                            ..Default::default()
                        });
                        let first = !subscriptions.contains_key(&request.type_url);
                        let subscription = subscriptions.entry(request.type_url.clone()).or_default();
                        if first {
                            subscription.wildcard = request.resource_names_subscribe.is_empty()
                                || request.resource_names_subscribe.iter().any(|n| n == "*");
                            subscription.known = request.initial_resource_versions.clone().into_iter().collect();
                        }
                        for name in &request.resource_names_subscribe {
                            if name != "*" {
                                subscription.names.insert(name.clone());
                                // Asked again: send it even if the client had it.
                                if !first {
                                    subscription.known.remove(name);
                                }
                            }
                        }
                        for name in &request.resource_names_unsubscribe {
                            subscription.names.remove(name);
                            subscription.known.remove(name);
                        }
                        if first || !request.resource_names_subscribe.is_empty() {
                            due.push((request.type_url.clone(), first));
                        }
                    }
                    result = changed.changed() => {
                        if result.is_err() {
                            return;
                        }
                        due.extend(subscriptions.keys().map(|t| (t.clone(), false)));
                    }
                }
                for (type_url, always) in due {
                    let snapshot = shared.snapshot(&type_url).unwrap_or_default();
                    let Some(subscription) = subscriptions.get_mut(&type_url) else { continue };
                    let mut resources = Vec::new();
                    let mut present = BTreeSet::new();
                    for resource in &snapshot.resources {
                        if !subscription.wildcard && !subscription.names.contains(&resource.name) {
                            continue;
                        }
                        present.insert(resource.name.clone());
                        let version = resource_version(&resource.any);
                        if subscription.known.get(&resource.name) != Some(&version) {
                            subscription.known.insert(resource.name.clone(), version.clone());
                            resources.push(Resource {
                                name: resource.name.clone(),
                                version,
                                resource: Some(resource.any.clone()),
                                ..Default::default()
                            });
                        }
                    }
                    let removed: Vec<String> =
                        subscription.known.keys().filter(|n| !present.contains(*n)).cloned().collect();
                    for name in &removed {
                        subscription.known.remove(name);
                    }
                    if resources.is_empty() && removed.is_empty() && !(always && snapshot_exists(&shared, &type_url)) {
                        continue;
                    }
                    let response = DeltaDiscoveryResponse {
                        system_version_info: snapshot.version.clone(),
                        resources,
                        type_url: type_url.clone(),
                        removed_resources: removed,
                        nonce: shared.nonce(&snapshot.version),
                        ..Default::default()
                    };
                    if responses.send(Ok(response)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Box::pin(ReceiverStream::new(receiver))
    }
}

fn metadata_of(metadata: &tonic::metadata::MetadataMap) -> BTreeMap<String, String> {
    metadata
        .clone()
        .into_headers()
        .iter()
        .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_string())))
        .collect()
}

fn snapshot_exists(shared: &Shared, type_url: &str) -> bool {
    shared.lock().snapshots.contains_key(type_url)
}

/// A delta stream's view of one type.
#[derive(Default)]
struct DeltaSubscription {
    wildcard: bool,
    names: BTreeSet<String>,
    /// What the client holds: name → version.
    known: BTreeMap<String, String>,
}

/// A resource's delta version: a hash of its bytes, so unchanged resources are not resent.
fn resource_version(any: &Any) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    any.type_url.hash(&mut hasher);
    any.value.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Service {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::StreamAggregatedResourcesStream>, tonic::Status> {
        Ok(tonic::Response::new(self.stream_sotw(request, None)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::DeltaAggregatedResourcesStream>, tonic::Status> {
        Ok(tonic::Response::new(self.stream_delta(request, None)))
    }
}
