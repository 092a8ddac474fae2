//! `envoy.filters.http.ext_authz` (`envoy.extensions.filters.http.ext_authz.v3.ExtAuthz`),
//! Envoy's "External Authorization" filter: the request waits while an authorization service
//! decides, over gRPC (`envoy.service.auth.v3.Authorization/Check`) or plain HTTP.
//!
//! - Allowed: the service's header changes are made to the request (gRPC `ok_response`; HTTP
//!   `allowed_upstream_headers`…) and it goes on; `ext_authz.ok`.
//! - Denied: the service's status (403 when it names none), headers and body go back, flagged
//!   `UAEX`, details `ext_authz_denied`; `ext_authz.denied`.
//! - No decision (unreachable, timed out — `grpc_service.timeout` or `server_uri.timeout`,
//!   200 ms by default —, a 5xx, a gRPC error): `status_on_error` (403), details
//!   `ext_authz_error`, or the request goes on with `failure_mode_allow`;
//!   `ext_authz.error` / `failure_mode_allowed`.
//!
//! Stats go under the connection manager's `http.<stat_prefix>.ext_authz.[<stat_prefix>.]`.
//! Not supported (refused at load): sending the request body, peer certificates, TLS
//! session details, metadata, route cache clearing.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};
use legate_config::filters::http::ext_authz::{ExtAuthz as ExtAuthzConfig, ListStringMatcher};
use legate_config::route::FilterPerRouteConfig;
use legate_stats::Scope;
use prost::Message;

use crate::http::async_client::{self, AsyncRequest, AsyncResponse};
use crate::http::filter::{FilterCallbacks, FilterHeadersStatus, HttpFilter};
use crate::http::{LocalReply, ResponseFlag, StreamInfo};
use crate::worker::WorkerContext;

legate_stats::stats! {
    /// `http.<stat_prefix>.ext_authz.*`.
    pub struct ExtAuthzStats {
        counter ok,
        counter denied,
        counter error,
        counter disabled,
        counter failure_mode_allowed,
    }
}

const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";
static X_ENVOY_AUTH_FAILURE_MODE_ALLOWED: HeaderName = HeaderName::from_static("x-envoy-auth-failure-mode-allowed");
static X_ENVOY_AUTH_HEADERS_TO_REMOVE: HeaderName = HeaderName::from_static("x-envoy-auth-headers-to-remove");

/// The filter's config, shared by every stream on every worker.
pub struct ExtAuthzFilterConfig {
    pub name: String,
    service: Service,
    stats: ExtAuthzStats,
    failure_mode_allow: bool,
    failure_mode_allow_header_add: bool,
    status_on_error: StatusCode,
    allowed_headers: Option<ListStringMatcher>,
    disallowed_headers: Option<ListStringMatcher>,
    filter_enabled: Option<legate_config::core::RuntimeFractionalPercent>,
    /// `ext_authz.[<stat_prefix>.]`, for the route's cluster's counters.
    cluster_stats_prefix: String,
    /// A refusal also counts as the route cluster's response (`charge_cluster_response_stats`).
    charge_cluster_response_stats: bool,
}

enum Service {
    Grpc { cluster: String, authority: String, timeout: Duration },
    Http(Box<HttpService>),
}

struct HttpService {
    cluster: String,
    path_prefix: String,
    timeout: Duration,
    headers_to_add: Vec<(HeaderName, HeaderValue)>,
    allowed_upstream: Option<ListStringMatcher>,
    allowed_upstream_append: Option<ListStringMatcher>,
    allowed_client: Option<ListStringMatcher>,
    allowed_client_on_success: Option<ListStringMatcher>,
}

impl ExtAuthzFilterConfig {
    /// `scope` is the connection manager's (`http.<stat_prefix>`).
    pub fn new(name: String, config: &ExtAuthzConfig, scope: &Scope) -> Result<Self, String> {
        let stats_scope = match config.stat_prefix.as_str() {
            "" => scope.scope("ext_authz"),
            prefix => scope.scope(&format!("ext_authz.{prefix}")),
        };
        let service = match (&config.grpc_service, &config.http_service) {
            (Some(grpc), _) => {
                let envoy = grpc.envoy_grpc.as_ref().ok_or("ext_authz: an envoy_grpc service is required")?;
                Service::Grpc {
                    cluster: envoy.cluster_name.clone(),
                    authority: if envoy.authority.is_empty() {
                        envoy.cluster_name.clone()
                    } else {
                        envoy.authority.clone()
                    },
                    timeout: grpc
                        .timeout
                        .map(|t| t.as_std())
                        .filter(|t| !t.is_zero())
                        .unwrap_or(ExtAuthzConfig::DEFAULT_TIMEOUT),
                }
            }
            (None, Some(http)) => {
                let uri = http.server_uri.as_ref().ok_or("ext_authz: http_service.server_uri is required")?;
                let request = http.authorization_request.clone().unwrap_or_default();
                let response = http.authorization_response.clone().unwrap_or_default();
                let headers_to_add = request
                    .headers_to_add
                    .iter()
                    .map(|h| {
                        let name = HeaderName::from_bytes(h.key.as_bytes())
                            .map_err(|_| format!("ext_authz: invalid header name '{}'", h.key))?;
                        let value = HeaderValue::from_str(&h.value)
                            .map_err(|_| format!("ext_authz: invalid value of header '{}'", h.key))?;
                        Ok((name, value))
                    })
                    .collect::<Result<_, String>>()?;
                Service::Http(Box::new(HttpService {
                    cluster: uri.cluster.clone(),
                    path_prefix: http.path_prefix.clone(),
                    timeout: uri.timeout.map(|t| t.as_std()).unwrap_or(ExtAuthzConfig::DEFAULT_TIMEOUT),
                    headers_to_add,
                    allowed_upstream: response.allowed_upstream_headers,
                    allowed_upstream_append: response.allowed_upstream_headers_to_append,
                    allowed_client: response.allowed_client_headers,
                    allowed_client_on_success: response.allowed_client_headers_on_success,
                }))
            }
            (None, None) => return Err("ext_authz: one of grpc_service or http_service is required".into()),
        };
        let deprecated_allowed = config
            .http_service
            .as_ref()
            .and_then(|h| h.authorization_request.as_ref())
            .and_then(|r| r.allowed_headers.clone());
        Ok(ExtAuthzFilterConfig {
            name,
            service,
            stats: ExtAuthzStats::new(&stats_scope),
            failure_mode_allow: config.failure_mode_allow,
            failure_mode_allow_header_add: config.failure_mode_allow_header_add,
            status_on_error: StatusCode::from_u16(config.status_on_error()).unwrap_or(StatusCode::FORBIDDEN),
            allowed_headers: config.allowed_headers.clone().or(deprecated_allowed),
            disallowed_headers: config.disallowed_headers.clone(),
            filter_enabled: config.filter_enabled.clone(),
            cluster_stats_prefix: match config.stat_prefix.as_str() {
                "" => "ext_authz.".to_string(),
                prefix => format!("ext_authz.{prefix}."),
            },
            charge_cluster_response_stats: config.charge_cluster_response_stats.unwrap_or(true),
        })
    }

    /// Whether `name` goes to the service: gRPC sends every header unless `allowed_headers`
    /// narrows them; HTTP sends `authorization` and the request line's, and the allowed.
    fn sends(&self, name: &str) -> bool {
        if self.disallowed_headers.as_ref().is_some_and(|d| d.matches(name)) {
            return false;
        }
        let allowed = self.allowed_headers.as_ref().map(|a| a.matches(name));
        match &self.service {
            Service::Grpc { .. } => allowed.unwrap_or(true),
            Service::Http(_) => {
                matches!(name, "authorization" | ":method" | ":path" | ":authority") || allowed.unwrap_or(false)
            }
        }
    }
}

/// The service's decision.
enum Decision {
    Allowed {
        set: Vec<(HeaderName, HeaderValue)>,
        append: Vec<(HeaderName, HeaderValue)>,
        remove: Vec<HeaderName>,
        response_add: Vec<(HeaderName, HeaderValue)>,
    },
    Denied {
        status: StatusCode,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
    },
    Error,
}

type Check = Pin<Box<dyn Future<Output = Decision>>>;

/// One stream's ext_authz filter.
pub struct ExtAuthzFilter {
    config: Arc<ExtAuthzFilterConfig>,
    check: Option<Check>,
    /// Headers the service gave for the response of an allowed request.
    response_add: Vec<(HeaderName, HeaderValue)>,
}

impl ExtAuthzFilter {
    pub fn new(config: Arc<ExtAuthzFilterConfig>) -> Self {
        ExtAuthzFilter { config, check: None, response_add: Vec::new() }
    }

    fn decided(
        &mut self,
        decision: Decision,
        head: &mut http::request::Parts,
        info: &mut StreamInfo,
        worker: &Rc<WorkerContext>,
    ) -> FilterHeadersStatus {
        let config = &self.config;
        // The route's cluster counts the outcome too (`cluster.<name>.ext_authz.*`), and a
        // refusal as its response (Envoy's `charge_cluster_response_stats`).
        let cluster = info.upstream_cluster.as_ref().map(|c| c.0.clone());
        let charge = |outcome: &str| {
            if let Some(cluster) = &cluster {
                cluster.scope.counter(&format!("{}{outcome}", config.cluster_stats_prefix)).inc();
            }
        };
        match &decision {
            Decision::Allowed { .. } => charge("ok"),
            Decision::Denied { status, .. } => {
                charge("denied");
                if let (Some(cluster), true) = (&cluster, config.charge_cluster_response_stats) {
                    worker.count_upstream_code(cluster, status.as_u16());
                }
            }
            Decision::Error if config.failure_mode_allow => charge("failure_mode_allowed"),
            Decision::Error => charge("error"),
        }
        match decision {
            Decision::Allowed { set, append, remove, response_add } => {
                config.stats.ok.inc();
                for name in remove {
                    if !name.as_str().starts_with(':') && name != http::header::HOST {
                        head.headers.remove(&name);
                    }
                }
                for (name, value) in set {
                    head.headers.insert(name, value);
                }
                for (name, value) in append {
                    head.headers.append(name, value);
                }
                self.response_add = response_add;
                FilterHeadersStatus::Continue
            }
            Decision::Denied { status, headers, body } => {
                config.stats.denied.inc();
                info.set_flag(ResponseFlag::UnauthorizedExternalService);
                let mut reply = LocalReply::new(status, body, "ext_authz_denied")
                    .with_flag(ResponseFlag::UnauthorizedExternalService);
                for (name, value) in headers {
                    reply.headers.append(name, value);
                }
                FilterHeadersStatus::LocalReply(reply)
            }
            Decision::Error if config.failure_mode_allow => {
                config.stats.failure_mode_allowed.inc();
                if config.failure_mode_allow_header_add {
                    head.headers.insert(X_ENVOY_AUTH_FAILURE_MODE_ALLOWED.clone(), HeaderValue::from_static("true"));
                }
                FilterHeadersStatus::Continue
            }
            Decision::Error => {
                config.stats.error.inc();
                info.set_flag(ResponseFlag::UnauthorizedExternalService);
                FilterHeadersStatus::LocalReply(
                    LocalReply::new(config.status_on_error, Bytes::new(), "ext_authz_error")
                        .with_flag(ResponseFlag::UnauthorizedExternalService),
                )
            }
        }
    }
}

impl HttpFilter for ExtAuthzFilter {
    fn decode_headers(
        &mut self,
        head: &mut http::request::Parts,
        _end_stream: bool,
        cb: &mut FilterCallbacks<'_>,
    ) -> FilterHeadersStatus {
        let config = &self.config;
        let per_route = match cb.per_filter_config(&config.name) {
            Some(FilterPerRouteConfig::ExtAuthz(per_route)) => Some(per_route),
            _ => None,
        };
        // Envoy skips the check of a request without a route, and where a route turns it off.
        if cb.route.is_none() || per_route.is_some_and(|p| p.disabled == Some(true)) {
            return FilterHeadersStatus::Continue;
        }
        if config.filter_enabled.as_ref().is_some_and(|f| !crate::runtime::fraction_enabled(f)) {
            config.stats.disabled.inc();
            return FilterHeadersStatus::Continue;
        }
        let context_extensions =
            per_route.and_then(|p| p.check_settings.as_ref()).map(|s| s.context_extensions.clone()).unwrap_or_default();
        let check: Check = match &config.service {
            Service::Grpc { cluster, authority, timeout } => {
                let message = check_request(config, head, cb.stream_info, context_extensions);
                Box::pin(grpc_check(cb.worker.clone(), cluster.clone(), authority.clone(), *timeout, message))
            }
            Service::Http(service) => {
                let request = http_check_request(config, service, head);
                Box::pin(http_check(cb.worker.clone(), config.clone(), request))
            }
        };
        self.check = Some(check);
        FilterHeadersStatus::StopIteration
    }

    fn poll_resume(
        &mut self,
        cx: &mut Context<'_>,
        head: &mut http::request::Parts,
        cb: &mut FilterCallbacks<'_>,
    ) -> Poll<FilterHeadersStatus> {
        let Some(check) = self.check.as_mut() else { return Poll::Ready(FilterHeadersStatus::Continue) };
        let decision = std::task::ready!(check.as_mut().poll(cx));
        self.check = None;
        Poll::Ready(self.decided(decision, head, cb.stream_info, cb.worker))
    }

    fn encode_headers(&mut self, head: &mut http::response::Parts, _cb: &mut FilterCallbacks<'_>) {
        for (name, value) in self.response_add.drain(..) {
            head.headers.append(name, value);
        }
    }
}

/// The HTTP check: the request's method and path (after `path_prefix`), the headers the
/// service is sent, and `headers_to_add`; no body.
struct HttpCheckRequest {
    method: Method,
    authority: String,
    path: String,
    headers: HeaderMap,
}

fn http_check_request(
    config: &ExtAuthzFilterConfig,
    service: &HttpService,
    head: &http::request::Parts,
) -> HttpCheckRequest {
    let mut headers = HeaderMap::new();
    for (name, value) in &head.headers {
        if name != http::header::HOST && name != http::header::CONTENT_LENGTH && config.sends(name.as_str()) {
            headers.append(name, value.clone());
        }
    }
    for (name, value) in &service.headers_to_add {
        headers.insert(name, value.clone());
    }
    let path = head.uri.path_and_query().map_or("/", |p| p.as_str());
    HttpCheckRequest {
        method: head.method.clone(),
        authority: crate::filters::http::router::authority_of(head).to_string(),
        path: format!("{}{path}", service.path_prefix),
        headers,
    }
}

async fn http_check(
    worker: Rc<WorkerContext>,
    config: Arc<ExtAuthzFilterConfig>,
    request: HttpCheckRequest,
) -> Decision {
    let Service::Http(service) = &config.service else { return Decision::Error };
    let response = async_client::send(
        &worker,
        AsyncRequest {
            cluster: &service.cluster,
            authority: &request.authority,
            method: request.method,
            path: &request.path,
            headers: request.headers,
            body: Bytes::new(),
            timeout: service.timeout,
            grpc: false,
        },
    )
    .await;
    let AsyncResponse::Answered(answer) = response else { return Decision::Error };
    let async_client::Answer { status, headers, body, .. } = *answer;
    if status.is_server_error() {
        return Decision::Error;
    }
    let pick = |matcher: &Option<ListStringMatcher>| -> Vec<(HeaderName, HeaderValue)> {
        let Some(matcher) = matcher else { return Vec::new() };
        headers.iter().filter(|(n, _)| matcher.matches(n.as_str())).map(|(n, v)| (n.clone(), v.clone())).collect()
    };
    if status == StatusCode::OK {
        let remove = headers
            .get(&X_ENVOY_AUTH_HEADERS_TO_REMOVE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(',').filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok()).collect())
            .unwrap_or_default();
        return Decision::Allowed {
            set: pick(&service.allowed_upstream),
            append: pick(&service.allowed_upstream_append),
            remove,
            response_add: pick(&service.allowed_client_on_success),
        };
    }
    // The refusal carries the service's headers: all of them when `allowed_client_headers` is
    // unset, else those it names and the ones a refusal needs.
    let framing = |n: &HeaderName| {
        matches!(n.as_str(), "content-length" | "transfer-encoding" | "connection" | "keep-alive")
            || n == X_ENVOY_AUTH_HEADERS_TO_REMOVE
    };
    let client = headers
        .iter()
        .filter(|(n, _)| !framing(n))
        .filter(|(n, _)| match &service.allowed_client {
            None => true,
            Some(m) => m.matches(n.as_str()) || matches!(n.as_str(), "www-authenticate" | "location"),
        })
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    Decision::Denied { status, headers: client, body }
}

/// `CheckRequest` for a gRPC service.
fn check_request(
    config: &ExtAuthzFilterConfig,
    head: &http::request::Parts,
    info: &StreamInfo,
    context_extensions: BTreeMap<String, String>,
) -> proto::CheckRequest {
    let authority = crate::filters::http::router::authority_of(head).to_string();
    let path = head.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    let pseudo = [
        (":authority", authority.clone()),
        (":method", head.method.as_str().to_string()),
        (":path", path.clone()),
        (":scheme", info.scheme.as_str().to_string()),
    ];
    for (name, value) in pseudo {
        if config.sends(name) {
            headers.insert(name.to_string(), value);
        }
    }
    for (name, value) in &head.headers {
        if name == http::header::HOST || !config.sends(name.as_str()) {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let start = info.start_time().duration_since(std::time::SystemTime::UNIX_EPOCH).unwrap_or_default();
    let peer = |addr: std::net::SocketAddr| proto::Peer {
        address: Some(proto::Address {
            socket_address: Some(proto::SocketAddress {
                protocol: 0,
                address: addr.ip().to_string(),
                port_value: u32::from(addr.port()),
            }),
        }),
    };
    proto::CheckRequest {
        attributes: Some(proto::AttributeContext {
            source: Some(peer(info.downstream_direct_remote_address)),
            destination: Some(peer(info.downstream_local_address)),
            request: Some(proto::Request {
                time: Some(proto::Timestamp { seconds: start.as_secs() as i64, nanos: start.subsec_nanos() as i32 }),
                http: Some(proto::HttpRequest {
                    id: info.connection_id.to_string(),
                    method: head.method.as_str().to_string(),
                    headers,
                    path,
                    host: authority,
                    scheme: info.scheme.as_str().to_string(),
                    size: 0,
                    protocol: match head.version {
                        http::Version::HTTP_10 => "HTTP/1.0",
                        http::Version::HTTP_2 => "HTTP/2",
                        _ => "HTTP/1.1",
                    }
                    .to_string(),
                }),
            }),
            context_extensions,
        }),
    }
}

async fn grpc_check(
    worker: Rc<WorkerContext>,
    cluster: String,
    authority: String,
    timeout: Duration,
    message: proto::CheckRequest,
) -> Decision {
    let frame = crate::http::grpc::frame(0, &message.encode_to_vec());
    let response = async_client::send(
        &worker,
        AsyncRequest {
            cluster: &cluster,
            authority: &authority,
            method: Method::POST,
            path: CHECK_PATH,
            headers: HeaderMap::new(),
            body: frame,
            timeout,
            grpc: true,
        },
    )
    .await;
    if response.grpc_status() != Some(0) {
        return Decision::Error;
    }
    let AsyncResponse::Answered(answer) = response else { return Decision::Error };
    let body = answer.body;
    let Some(message) = crate::http::grpc::message(&body) else { return Decision::Error };
    let Ok(check) = proto::CheckResponse::decode(message) else { return Decision::Error };
    decision_of(check)
}

/// Envoy's `GrpcClientImpl::onSuccess`: status code 0 allows, any other denies (403 unless the
/// denied response names a status).
fn decision_of(check: proto::CheckResponse) -> Decision {
    let header = |o: &proto::HeaderValueOption| {
        let h = o.header.as_ref()?;
        Some((HeaderName::from_bytes(h.key.as_bytes()).ok()?, HeaderValue::from_str(&h.value).ok()?))
    };
    if check.status.as_ref().map_or(0, |s| s.code) == 0 {
        let ok = check.ok_response.unwrap_or_default();
        let (mut set, mut append) = (Vec::new(), Vec::new());
        for option in &ok.headers {
            let Some(pair) = header(option) else { continue };
            match option.append.as_ref().is_some_and(|a| a.value) {
                true => append.push(pair),
                false => set.push(pair),
            }
        }
        let (mut response_add, mut response_set) = (Vec::new(), Vec::new());
        for option in &ok.response_headers_to_add {
            let Some(pair) = header(option) else { continue };
            match option.append.as_ref().map(|a| a.value) {
                Some(false) => response_set.push(pair),
                _ => response_add.push(pair),
            }
        }
        response_add.extend(response_set);
        let remove = ok.headers_to_remove.iter().filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok()).collect();
        return Decision::Allowed { set, append, remove, response_add };
    }
    let denied = check.denied_response.unwrap_or_default();
    let status = denied
        .status
        .and_then(|s| u16::try_from(s.code).ok())
        .filter(|c| *c > 0)
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::FORBIDDEN);
    Decision::Denied {
        status,
        headers: denied.headers.iter().filter_map(header).collect(),
        body: Bytes::from(denied.body),
    }
}

/// The `envoy.service.auth.v3` messages legate sends and reads, with the fields it uses.
pub mod proto {
    use std::collections::BTreeMap;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CheckRequest {
        #[prost(message, optional, tag = "1")]
        pub attributes: Option<AttributeContext>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AttributeContext {
        #[prost(message, optional, tag = "1")]
        pub source: Option<Peer>,
        #[prost(message, optional, tag = "2")]
        pub destination: Option<Peer>,
        #[prost(message, optional, tag = "4")]
        pub request: Option<Request>,
        #[prost(btree_map = "string, string", tag = "10")]
        pub context_extensions: BTreeMap<String, String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Peer {
        #[prost(message, optional, tag = "1")]
        pub address: Option<Address>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Address {
        #[prost(message, optional, tag = "1")]
        pub socket_address: Option<SocketAddress>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SocketAddress {
        #[prost(int32, tag = "1")]
        pub protocol: i32,
        #[prost(string, tag = "2")]
        pub address: String,
        #[prost(uint32, tag = "3")]
        pub port_value: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Request {
        #[prost(message, optional, tag = "1")]
        pub time: Option<Timestamp>,
        #[prost(message, optional, tag = "2")]
        pub http: Option<HttpRequest>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Timestamp {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HttpRequest {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(string, tag = "2")]
        pub method: String,
        #[prost(btree_map = "string, string", tag = "3")]
        pub headers: BTreeMap<String, String>,
        #[prost(string, tag = "4")]
        pub path: String,
        #[prost(string, tag = "5")]
        pub host: String,
        #[prost(string, tag = "6")]
        pub scheme: String,
        #[prost(int64, tag = "9")]
        pub size: i64,
        #[prost(string, tag = "10")]
        pub protocol: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CheckResponse {
        #[prost(message, optional, tag = "1")]
        pub status: Option<RpcStatus>,
        #[prost(message, optional, tag = "2")]
        pub denied_response: Option<DeniedHttpResponse>,
        #[prost(message, optional, tag = "3")]
        pub ok_response: Option<OkHttpResponse>,
    }

    /// `google.rpc.Status`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RpcStatus {
        #[prost(int32, tag = "1")]
        pub code: i32,
        #[prost(string, tag = "2")]
        pub message: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DeniedHttpResponse {
        #[prost(message, optional, tag = "1")]
        pub status: Option<HttpStatus>,
        #[prost(message, repeated, tag = "2")]
        pub headers: Vec<HeaderValueOption>,
        #[prost(string, tag = "3")]
        pub body: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HttpStatus {
        #[prost(int32, tag = "1")]
        pub code: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct OkHttpResponse {
        #[prost(message, repeated, tag = "2")]
        pub headers: Vec<HeaderValueOption>,
        #[prost(string, repeated, tag = "5")]
        pub headers_to_remove: Vec<String>,
        #[prost(message, repeated, tag = "6")]
        pub response_headers_to_add: Vec<HeaderValueOption>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HeaderValueOption {
        #[prost(message, optional, tag = "1")]
        pub header: Option<HeaderValue>,
        #[prost(message, optional, tag = "2")]
        pub append: Option<BoolValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HeaderValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BoolValue {
        #[prost(bool, tag = "1")]
        pub value: bool,
    }

    impl CheckRequest {
        /// Reads a request (a service's side: tests).
        pub fn decode_from(bytes: &[u8]) -> Result<Self, prost::DecodeError> {
            <Self as prost::Message>::decode(bytes)
        }
    }

    impl CheckResponse {
        /// The message as a gRPC frame (a service's side: tests).
        pub fn to_frame(&self) -> Vec<u8> {
            crate::http::grpc::frame(0, &prost::Message::encode_to_vec(self)).to_vec()
        }
    }
}
