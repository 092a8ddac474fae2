//! The gRPC xDS stream and the subscriptions it carries (Envoy's `GrpcMuxImpl` for
//! state-of-the-world, `NewGrpcMuxImpl` for delta): one stream per ADS config (every type that
//! uses `ads: {}`), or one per `api_config_source` of `api_type: GRPC`/`DELTA_GRPC` and type.
//!
//! Lifecycle: [`GrpcMux::start`] spawns the stream task. It connects, sends one request per
//! type that has watches (the `node` on the first, or on every request unless
//! `set_node_on_first_message_only`), then answers every response with an ACK or a NACK and
//! every change of interest with a new request. When the stream fails, every watch hears
//! `ConnectionFailure`, `control_plane.connected_state` drops to 0, and the task reconnects
//! after a jittered back-off, re-subscribing from the versions last accepted (SotW:
//! `version_info`; delta: `initial_resource_versions`). What was applied keeps serving.
//!
//! The protocol is the one of Envoy's "xDS REST and gRPC protocol" page:
//! - ACK: `version_info` and `response_nonce` of the response.
//! - NACK: the version accepted before, the response's nonce, and `error_detail` whose
//!   message is the decoder's or the subscriber's error (code 13, INTERNAL, as Envoy).
//! - RDS/EDS/SDS name their resources (`WatchMap::interest`); LDS/CDS are wildcard.
//! - A response for a type nobody subscribed to is ignored with a warning, as Envoy does; an
//!   unknown type inside a response is a NACK.
//! - Under `rate_limit_settings`, requests after the first ones of a stream wait for a token
//!   (`control_plane.rate_limit_enforced`, `control_plane.pending_requests`).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node as NodeMessage;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status;
use legate_config::config_source::ApiConfigSource;
use legate_proxy::upstream::cluster_manager::SharedClusters;
use prost::Message;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::backoff::{Backoff, BASE_INTERVAL, MAX_INTERVAL};
use crate::cluster_connect;
use crate::decode;
use crate::grpc_stream::{GrpcStream, GrpcTarget};
use crate::resource::{DecodedResource, ResourceType};
use crate::stats::ControlPlaneStats;
use crate::subscription::WatchMap;
use crate::token_bucket::{RateLimitSettings, TokenBucket};

/// gRPC's INTERNAL, the code of Envoy's NACKs.
const NACK_CODE: i32 = 13;

/// Which variant of the protocol a stream speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// `DiscoveryRequest`/`DiscoveryResponse`: every response holds every resource.
    StateOfTheWorld,
    /// `DeltaDiscoveryRequest`/`DeltaDiscoveryResponse`: changes and removals only.
    Delta,
}

/// The RPC a stream calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Service {
    /// `envoy.service.discovery.v3.AggregatedDiscoveryService`, every type on one stream.
    Aggregated,
    /// The discovery service of one type (`ClusterDiscoveryService`, …).
    PerType(ResourceType),
}

impl Service {
    fn path(self, protocol: Protocol) -> &'static str {
        use Protocol::{Delta, StateOfTheWorld as Sotw};
        use ResourceType as T;
        match (self, protocol) {
            (Service::Aggregated, Sotw) => {
                "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
            }
            (Service::Aggregated, Delta) => {
                "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
            }
            (Service::PerType(T::Listener), Sotw) => {
                "/envoy.service.listener.v3.ListenerDiscoveryService/StreamListeners"
            }
            (Service::PerType(T::Listener), Delta) => {
                "/envoy.service.listener.v3.ListenerDiscoveryService/DeltaListeners"
            }
            (Service::PerType(T::RouteConfiguration), Sotw) => {
                "/envoy.service.route.v3.RouteDiscoveryService/StreamRoutes"
            }
            (Service::PerType(T::RouteConfiguration), Delta) => {
                "/envoy.service.route.v3.RouteDiscoveryService/DeltaRoutes"
            }
            (Service::PerType(T::Cluster), Sotw) => "/envoy.service.cluster.v3.ClusterDiscoveryService/StreamClusters",
            (Service::PerType(T::Cluster), Delta) => "/envoy.service.cluster.v3.ClusterDiscoveryService/DeltaClusters",
            (Service::PerType(T::ClusterLoadAssignment), Sotw) => {
                "/envoy.service.endpoint.v3.EndpointDiscoveryService/StreamEndpoints"
            }
            (Service::PerType(T::ClusterLoadAssignment), Delta) => {
                "/envoy.service.endpoint.v3.EndpointDiscoveryService/DeltaEndpoints"
            }
            (Service::PerType(T::Secret), Sotw) => "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets",
            (Service::PerType(T::Secret), Delta) => "/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets",
            (Service::PerType(T::Runtime), Sotw) => "/envoy.service.runtime.v3.RuntimeDiscoveryService/StreamRuntime",
            (Service::PerType(T::Runtime), Delta) => "/envoy.service.runtime.v3.RuntimeDiscoveryService/DeltaRuntime",
        }
    }
}

/// One stream and the subscriptions it carries.
pub(crate) struct GrpcMux {
    target: GrpcTarget,
    path: &'static str,
    protocol: Protocol,
    node: NodeMessage,
    set_node_on_first_message_only: bool,
    /// `rate_limit_settings`: requests beyond it wait for a token.
    rate_limit: Option<RateLimitSettings>,
    clusters: Arc<SharedClusters>,
    stats: ControlPlaneStats,
    /// In subscription order, which is the order of the first requests.
    subscriptions: RefCell<Vec<Rc<TypeSubscription>>>,
    /// A subscription's interest changed, or a type was added.
    wake: Notify,
}

/// One type on the stream.
struct TypeSubscription {
    map: Rc<WatchMap>,
    state: RefCell<TypeState>,
    /// The interest changed since the last request.
    dirty: Cell<bool>,
}

/// What the protocol remembers of one type across responses and reconnections.
#[derive(Default)]
struct TypeState {
    /// SotW: the `version_info` last accepted, sent in ACKs, NACKs and after a reconnection.
    accepted_version: String,
    /// The nonce of the last response of this stream.
    nonce: String,
    /// The names last asked for (`None`: wildcard); `None` before the first request too.
    requested: Option<Option<BTreeSet<String>>>,
    /// Delta: each accepted resource's version, sent as `initial_resource_versions`.
    resource_versions: BTreeMap<String, String>,
}

/// A request of either protocol, before the node is set.
enum Request {
    StateOfTheWorld(DiscoveryRequest),
    Delta(DeltaDiscoveryRequest),
}

impl GrpcMux {
    /// Creates the stream an `api_config_source` (or `ads_config`) describes; nothing
    /// connects until [`GrpcMux::start`]. Its control plane cluster must exist.
    pub(crate) fn new(
        api: &ApiConfigSource,
        service: Service,
        node: NodeMessage,
        clusters: Arc<SharedClusters>,
        stats: ControlPlaneStats,
    ) -> Result<Rc<Self>, String> {
        let target = GrpcTarget::new(api)?;
        cluster_connect::check_cluster(&clusters, Some(&target.cluster_name))
            .map_err(|e| format!("grpc_services[0].envoy_grpc.cluster_name: {e}"))?;
        let protocol = if api.is_delta() { Protocol::Delta } else { Protocol::StateOfTheWorld };
        let rate_limit = api.rate_limit_settings.as_ref().map(RateLimitSettings::from_config).transpose()?;
        Ok(Rc::new(GrpcMux {
            target,
            path: service.path(protocol),
            protocol,
            node,
            set_node_on_first_message_only: api.set_node_on_first_message_only,
            rate_limit,
            clusters,
            stats,
            subscriptions: RefCell::new(Vec::new()),
            wake: Notify::new(),
        }))
    }

    /// Carries `map`'s type on this stream from now on.
    pub(crate) fn add(self: &Rc<Self>, map: Rc<WatchMap>) {
        let subscription =
            Rc::new(TypeSubscription { map, state: RefCell::new(TypeState::default()), dirty: Cell::new(true) });
        self.subscriptions.borrow_mut().push(subscription.clone());
        self.wake.notify_one();
        let mux = Rc::downgrade(self);
        tokio::task::spawn_local(async move {
            loop {
                subscription.map.interest_changed.notified().await;
                let Some(mux) = mux.upgrade() else { return };
                subscription.dirty.set(true);
                mux.wake.notify_one();
            }
        });
    }

    /// Runs the stream, reconnecting for as long as the main thread's `LocalSet` lives.
    pub(crate) fn start(self: &Rc<Self>) {
        let mux = self.clone();
        tokio::task::spawn_local(async move {
            let mut backoff = Backoff::new(BASE_INTERVAL, MAX_INTERVAL);
            loop {
                let pending = mux.subscriptions.borrow().iter().filter(|s| !s.map.is_empty()).count();
                mux.stats.pending_requests.set(pending as u64);
                let mut received = false;
                let reason = mux.run_stream(&mut received).await;
                mux.stats.connected_state.set(0);
                tracing::warn!(cluster = %mux.target.cluster_name, "xDS stream failed: {reason}");
                let subscriptions = mux.subscriptions.borrow().clone();
                for subscription in subscriptions {
                    subscription.map.fail(&reason);
                }
                if received {
                    backoff.reset();
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        });
    }

    /// One stream, from connecting to its failure, which it returns.
    async fn run_stream(&self, received: &mut bool) -> String {
        let mut first = true;
        let mut initial = Vec::new();
        let subscriptions = self.subscriptions.borrow().clone();
        for subscription in &subscriptions {
            subscription.dirty.set(false);
            subscription.on_new_stream();
            if let Some(request) = subscription.interest_request(self.protocol) {
                initial.push(self.encode(request, &mut first).into());
            }
        }
        let mut stream = match GrpcStream::open(&self.clusters, &self.target, self.path, initial).await {
            Ok(stream) => stream,
            Err(e) => return e,
        };
        self.stats.connected_state.set(1);
        self.stats.pending_requests.set(0);
        let mut outbox = Outbox::new(self.rate_limit);
        loop {
            let next_token = outbox.waiting_until(Instant::now());
            // All branches are cancel safe: `next_message` keeps partial messages in the
            // stream, a wake-up lost to another branch is still recorded in `dirty`, and the
            // sleep is recomputed on each turn.
            let response = tokio::select! {
                message = stream.next_message() => match message {
                    Ok(message) => Some(message),
                    Err(e) => return e,
                },
                _ = self.wake.notified() => None,
                _ = tokio::time::sleep_until(next_token.unwrap_or_else(Instant::now)), if next_token.is_some() => None,
            };
            let mut requests = Vec::new();
            if let Some(message) = response {
                *received = true;
                match self.on_response(&message) {
                    Ok(Some(request)) => requests.push(request),
                    Ok(None) => {}
                    Err(e) => return e,
                }
            }
            let subscriptions = self.subscriptions.borrow().clone();
            for subscription in subscriptions {
                if subscription.dirty.replace(false) {
                    requests.extend(subscription.interest_request(self.protocol));
                }
            }
            for request in requests {
                outbox.push(self.encode(request, &mut first), &self.stats);
            }
            while let Some(message) = outbox.pop_ready(Instant::now()) {
                if let Err(e) = stream.send(&message).await {
                    return e;
                }
            }
            self.stats.pending_requests.set(outbox.len() as u64);
        }
    }

    fn encode(&self, request: Request, first: &mut bool) -> Vec<u8> {
        let node = (*first || !self.set_node_on_first_message_only).then(|| self.node.clone());
        *first = false;
        match request {
            Request::StateOfTheWorld(mut request) => {
                request.node = node;
                request.encode_to_vec()
            }
            Request::Delta(mut request) => {
                request.node = node;
                request.encode_to_vec()
            }
        }
    }

    /// Handles one response; the request it returns is its ACK or NACK. `Err` for a message
    /// that is not a response at all: the stream is broken.
    fn on_response(&self, message: &[u8]) -> Result<Option<Request>, String> {
        match self.protocol {
            Protocol::StateOfTheWorld => {
                let response = DiscoveryResponse::decode(message)
                    .map_err(|e| format!("malformed DiscoveryResponse from the control plane: {e}"))?;
                let Some(subscription) = self.subscription(&response.type_url) else {
                    tracing::warn!("ignoring an xDS response for type URL {}: no subscription", response.type_url);
                    return Ok(None);
                };
                Ok(Some(Request::StateOfTheWorld(subscription.on_sotw_response(response))))
            }
            Protocol::Delta => {
                let response = DeltaDiscoveryResponse::decode(message)
                    .map_err(|e| format!("malformed DeltaDiscoveryResponse from the control plane: {e}"))?;
                let Some(subscription) = self.subscription(&response.type_url) else {
                    tracing::warn!("ignoring an xDS response for type URL {}: no subscription", response.type_url);
                    return Ok(None);
                };
                Ok(Some(Request::Delta(subscription.on_delta_response(response))))
            }
        }
    }

    fn subscription(&self, type_url: &str) -> Option<Rc<TypeSubscription>> {
        self.subscriptions.borrow().iter().find(|s| s.map.resource_type.type_url() == type_url).cloned()
    }
}

/// The requests of one stream on their way out: at once, or under `rate_limit_settings` in
/// order as tokens come (Envoy queues them the same way and counts `rate_limit_enforced`).
/// The first requests of a stream are not held back.
struct Outbox {
    bucket: Option<TokenBucket>,
    /// Messages that may go now: a token was taken for each, or there is no limit.
    ready: VecDeque<Vec<u8>>,
    /// Messages waiting for a token, in order.
    waiting: VecDeque<Vec<u8>>,
}

impl Outbox {
    fn new(rate_limit: Option<RateLimitSettings>) -> Self {
        Outbox {
            bucket: rate_limit.map(|s| TokenBucket::new(s, Instant::now())),
            ready: VecDeque::new(),
            waiting: VecDeque::new(),
        }
    }

    fn push(&mut self, message: Vec<u8>, stats: &ControlPlaneStats) {
        let waits = match &mut self.bucket {
            Some(bucket) => !self.waiting.is_empty() || !bucket.consume(Instant::now()),
            None => false,
        };
        if waits {
            stats.rate_limit_enforced.inc();
            self.waiting.push_back(message);
        } else {
            self.ready.push_back(message);
        }
    }

    fn pop_ready(&mut self, now: Instant) -> Option<Vec<u8>> {
        if let Some(message) = self.ready.pop_front() {
            return Some(message);
        }
        let bucket = self.bucket.as_mut()?;
        if !self.waiting.is_empty() && bucket.consume(now) {
            return self.waiting.pop_front();
        }
        None
    }

    /// When the next waiting message may go, if one waits.
    fn waiting_until(&mut self, now: Instant) -> Option<Instant> {
        if self.waiting.is_empty() {
            return None;
        }
        self.bucket.as_mut().map(|b| b.next_token_at(now))
    }

    fn len(&self) -> usize {
        self.waiting.len()
    }
}

// === impl TypeSubscription ===

impl TypeSubscription {
    fn type_url(&self) -> String {
        self.map.resource_type.type_url().to_string()
    }

    /// A new stream: nonces belong to the old one, and the first request is due again.
    fn on_new_stream(&self) {
        let mut state = self.state.borrow_mut();
        state.nonce.clear();
        state.requested = None;
    }

    /// The request that tells the control plane the current interest, if it changed (or none
    /// was sent on this stream yet). A type nobody watches is not asked for until someone does.
    fn interest_request(&self, protocol: Protocol) -> Option<Request> {
        let interest = self.map.interest();
        let mut state = self.state.borrow_mut();
        let never_asked = state.requested.is_none();
        if never_asked && self.map.is_empty() {
            return None;
        }
        if state.requested.as_ref() == Some(&interest) {
            return None;
        }
        let previous = state.requested.replace(interest.clone()).flatten();
        match protocol {
            Protocol::StateOfTheWorld => Some(Request::StateOfTheWorld(DiscoveryRequest {
                version_info: state.accepted_version.clone(),
                resource_names: interest.map(|n| n.into_iter().collect()).unwrap_or_default(),
                type_url: self.type_url(),
                response_nonce: state.nonce.clone(),
                ..Default::default()
            })),
            Protocol::Delta => {
                let (subscribe, unsubscribe) = if never_asked {
                    (interest.clone().unwrap_or_default(), BTreeSet::new())
                } else {
                    let now = interest.clone().unwrap_or_default();
                    let before = previous.unwrap_or_default();
                    (now.difference(&before).cloned().collect(), before.difference(&now).cloned().collect())
                };
                for name in &unsubscribe {
                    state.resource_versions.remove(name);
                }
                // A wildcard subscription wants every version it holds confirmed; a named one
                // only those it still asks for.
                let initial_resource_versions = if never_asked {
                    match &interest {
                        None => state.resource_versions.clone().into_iter().collect(),
                        Some(names) => state
                            .resource_versions
                            .iter()
                            .filter(|(n, _)| names.contains(*n))
                            .map(|(n, v)| (n.clone(), v.clone()))
                            .collect(),
                    }
                } else {
                    Default::default()
                };
                if !never_asked && subscribe.is_empty() && unsubscribe.is_empty() {
                    return None;
                }
                Some(Request::Delta(DeltaDiscoveryRequest {
                    type_url: self.type_url(),
                    resource_names_subscribe: subscribe.into_iter().collect(),
                    resource_names_unsubscribe: unsubscribe.into_iter().collect(),
                    initial_resource_versions,
                    ..Default::default()
                }))
            }
        }
    }

    /// Counts an update attempt and decodes its resources (index, body, version); the first
    /// that does not decode rejects the whole update, naming its index.
    fn decode_all<'a>(
        &self,
        resources: impl Iterator<Item = (usize, &'a envoy_types::pb::google::protobuf::Any, &'a str)>,
    ) -> Result<Vec<DecodedResource>, String> {
        self.map.count_attempt();
        resources
            .map(|(i, any, version)| {
                decode::decode_resource(self.map.resource_type, any, version)
                    .map_err(|e| format!("resources[{i}]: {e}"))
            })
            .collect::<Result<Vec<DecodedResource>, String>>()
            .inspect_err(|_| self.map.count_rejected())
    }

    fn on_sotw_response(&self, response: DiscoveryResponse) -> DiscoveryRequest {
        let resource_type = self.map.resource_type;
        let result = self
            .decode_all(response.resources.iter().enumerate().map(|(i, any)| (i, any, response.version_info.as_str())))
            .and_then(|resources| self.map.deliver_state_of_the_world(&response.version_info, resources));
        let mut state = self.state.borrow_mut();
        state.nonce = response.nonce.clone();
        let error_detail = match result {
            Ok(()) => {
                state.accepted_version = response.version_info.clone();
                None
            }
            Err(detail) => {
                tracing::warn!(
                    "{} update version {:?} rejected: {detail}",
                    resource_type.short_name(),
                    response.version_info
                );
                Some(Status { code: NACK_CODE, message: detail, details: Vec::new() })
            }
        };
        DiscoveryRequest {
            version_info: state.accepted_version.clone(),
            resource_names: state.requested.clone().flatten().map(|n| n.into_iter().collect()).unwrap_or_default(),
            type_url: response.type_url,
            response_nonce: response.nonce,
            error_detail,
            ..Default::default()
        }
    }

    fn on_delta_response(&self, response: DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
        let resource_type = self.map.resource_type;
        let result = self
            .decode_all(
                response
                    .resources
                    .iter()
                    .enumerate()
                    // A resource without a body is a TTL heartbeat: what legate holds stays as it is.
                    .filter_map(|(i, r)| Some((i, r.resource.as_ref()?, r.version.as_str()))),
            )
            .and_then(|resources| {
                self.map.deliver_delta(&response.system_version_info, resources, response.removed_resources.clone())
            });
        let mut state = self.state.borrow_mut();
        state.nonce = response.nonce.clone();
        let error_detail = match result {
            Ok(()) => {
                for resource in &response.resources {
                    state.resource_versions.insert(resource.name.clone(), resource.version.clone());
                }
                for name in &response.removed_resources {
                    state.resource_versions.remove(name);
                }
                None
            }
            Err(detail) => {
                tracing::warn!("{} delta update rejected: {detail}", resource_type.short_name());
                Some(Status { code: NACK_CODE, message: detail, details: Vec::new() })
            }
        };
        DeltaDiscoveryRequest {
            type_url: response.type_url,
            response_nonce: response.nonce,
            error_detail,
            ..Default::default()
        }
    }
}
