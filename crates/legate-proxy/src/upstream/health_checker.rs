//! Active health checking: the main thread probes each host of a cluster and sets or clears
//! its `FAILED_ACTIVE_HC` flag ("Health checking" architecture page,
//! `envoy.config.core.v3.HealthCheck`).
//!
//! [`run`] keeps one session task per host (`spawn_local` on the main thread), started and
//! stopped as the cluster's membership changes. A host starts with `FAILED_ACTIVE_HC` set
//! (Cluster construction and DNS add it), as in Envoy: it takes no traffic until a check passes.
//! Each session loops: wait (first `initial_jitter`, then [`HealthChecker::next_interval`]), run
//! one check bounded by `timeout`, feed the result to [`HostCheckState::on_result`].
//!
//! Lifecycle of a host: unhealthy (initial) → healthy on its first success, or after
//! `healthy_threshold` consecutive successes later; healthy → unhealthy after
//! `unhealthy_threshold` consecutive failures, or at once when an HTTP check answers a status
//! that is neither expected nor retriable, or carries `x-envoy-immediate-health-check-fail`.
//! Each flip republishes the cluster's hosts (`Cluster::refresh_health`).
//!
//! Checkers: HTTP over HTTP/1.1 or h2c (`GET <path>`, `user-agent: Envoy/HC`), TCP (send, then
//! match each `receive` payload in order) and gRPC (`grpc.health.v1.Health/Check` over h2c,
//! passing on `SERVING`). With `event_log_path`, each flip (and, when asked, each failure or
//! success) is appended to the file as one JSON `envoy.data.core.v3.HealthCheckEvent` per line.
//! legate differs on purpose: one health check per cluster (config refuses more).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::network::TransportSocket;
use crate::tls::client::Alpn;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioIo, TokioTimer};
use legate_config::core::HeaderValueOption;
use legate_config::health_check::{
    CodecClientType, GrpcHealthCheck, HealthCheck as HealthCheckConfig, HttpHealthCheck,
};
use legate_config::matcher::Int64Range;
use legate_stats::Scope;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::host::health_flag;
use super::{Cluster, Host, HostSharedPtr};
use crate::http::io::LocalExec;
use crate::router::HeaderParser;

legate_stats::stats! {
    /// `cluster.<name>.health_check.*`, Envoy's ALL_HEALTH_CHECKER_STATS.
    pub struct HealthCheckerStats {
        counter attempt,
        counter success,
        counter failure,
        counter passive_failure,
        counter network_failure,
        counter verify_cluster,
        gauge healthy,
        gauge degraded,
    }
}

/// A cluster's health checker: its config and stats. Sessions run in [`run`].
pub struct HealthChecker {
    config: HealthCheckConfig,
    event_log: Option<EventLog>,
    /// `request_headers_to_add`/`_remove` (HTTP) or `initial_metadata` (gRPC), compiled once
    /// into the routes' header parser, as Envoy's checkers use it.
    request_headers: HeaderParser,
    /// Payloads decoded once (validated at load).
    /// The TCP payload, or the HTTP request body.
    send: Vec<u8>,
    /// What the TCP response, or the start of the HTTP response body, must hold in order.
    receive: Vec<Vec<u8>>,
    pub stats: HealthCheckerStats,
}

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckResult {
    Success,
    /// The host answered wrongly. `immediate`: ignore `unhealthy_threshold` (an HTTP status
    /// neither expected nor retriable, or `x-envoy-immediate-health-check-fail`).
    Failure {
        immediate: bool,
    },
    /// No answer: connect failure, reset, or `timeout`.
    NetworkFailure,
}

/// A flip of a host's health, which picks the next interval (Envoy's `HealthTransition`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The host just turned healthy.
    Healthy,
    /// The host just turned unhealthy.
    Unhealthy,
}

/// One host's counting toward the thresholds, without I/O.
#[derive(Debug)]
pub struct HostCheckState {
    /// No check finished yet: the first success makes the host healthy at once.
    first_check: bool,
    consecutive_successes: u32,
    consecutive_failures: u32,
}

impl Default for HostCheckState {
    fn default() -> Self {
        HostCheckState { first_check: true, consecutive_successes: 0, consecutive_failures: 0 }
    }
}

impl HostCheckState {
    /// Counts one result for a host that is currently `unhealthy` (its `FAILED_ACTIVE_HC`
    /// flag) and says whether it flips.
    pub fn on_result(
        &mut self,
        config: &HealthCheckConfig,
        unhealthy: bool,
        result: CheckResult,
    ) -> Option<Transition> {
        let first_check = std::mem::replace(&mut self.first_check, false);
        match result {
            CheckResult::Success => {
                self.consecutive_failures = 0;
                if !unhealthy {
                    return None;
                }
                self.consecutive_successes += 1;
                if first_check || self.consecutive_successes >= config.healthy_threshold() {
                    self.consecutive_successes = 0;
                    return Some(Transition::Healthy);
                }
                None
            }
            CheckResult::Failure { .. } | CheckResult::NetworkFailure => {
                self.consecutive_successes = 0;
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                let immediate = matches!(result, CheckResult::Failure { immediate: true });
                if !unhealthy && (immediate || self.consecutive_failures >= config.unhealthy_threshold()) {
                    return Some(Transition::Unhealthy);
                }
                None
            }
        }
    }
}

impl HealthChecker {
    /// `config` was validated at load: one checker kind, payloads that decode.
    pub fn new(config: &HealthCheckConfig, cluster_scope: &Scope) -> Self {
        let (send, receive) = match (&config.tcp_health_check, &config.http_health_check) {
            (Some(tcp), _) => (tcp.send.as_ref(), tcp.receive.as_slice()),
            (None, Some(http)) => (http.send.as_ref(), http.receive.as_slice()),
            (None, None) => (None, &[][..]),
        };
        let send = send.and_then(|p| p.bytes().ok()).unwrap_or_default();
        let receive = receive.iter().filter_map(|p| p.bytes().ok()).collect();
        let (add, remove): (&[HeaderValueOption], &[String]) =
            match (&config.http_health_check, &config.grpc_health_check) {
                (Some(http), _) => (&http.request_headers_to_add, &http.request_headers_to_remove),
                (None, Some(grpc)) => (&grpc.initial_metadata, &[]),
                (None, None) => (&[], &[]),
            };
        // A header that does not parse is left out on its own, as before (validation refused
        // `%` values and empty names).
        let add: Vec<HeaderValueOption> =
            add.iter().filter(|o| HeaderParser::new(std::slice::from_ref(*o), &[]).is_ok()).cloned().collect();
        let remove: Vec<String> =
            remove.iter().filter(|n| HeaderParser::new(&[], std::slice::from_ref(*n)).is_ok()).cloned().collect();
        HealthChecker {
            config: config.clone(),
            event_log: EventLog::open(config),
            request_headers: HeaderParser::new(&add, &remove).unwrap_or_default(),
            send,
            receive,
            stats: HealthCheckerStats::new(&cluster_scope.scope("health_check")),
        }
    }

    /// Time until the next check of a host (Envoy's `HealthCheckerImplBase::interval`):
    /// `no_traffic_interval` (`no_traffic_healthy_interval` for a healthy host) while the
    /// cluster has never carried a request, else the edge interval right after a flip, else
    /// `unhealthy_interval` or `interval`; plus jitter; within the runtime's bounds.
    pub fn next_interval(&self, unhealthy: bool, transition: Option<Transition>, had_traffic: bool) -> Duration {
        let c = &self.config;
        let base = if !had_traffic {
            if unhealthy {
                c.no_traffic_interval()
            } else {
                c.no_traffic_healthy_interval()
            }
        } else {
            match (transition, unhealthy) {
                (Some(Transition::Unhealthy), _) => c.unhealthy_edge_interval(),
                (Some(Transition::Healthy), _) => c.healthy_edge_interval(),
                (None, true) => c.unhealthy_interval(),
                (None, false) => c.interval(),
            }
        };
        let mut jitter = Duration::ZERO;
        let percent = c.interval_jitter_percent();
        if percent > 0 {
            jitter += random_up_to(base * percent / 100);
        }
        jitter += random_up_to(c.interval_jitter());
        // The runtime bounds it, as Envoy's: at most `health_check.max_interval`, at least
        // `health_check.min_interval` (milliseconds), and at least 1 ms.
        let millis = u64::try_from((base + jitter).as_millis()).unwrap_or(u64::MAX);
        let millis = millis
            .min(crate::runtime::integer("health_check.max_interval", u64::MAX))
            .max(crate::runtime::integer("health_check.min_interval", 0))
            .max(1);
        Duration::from_millis(millis)
    }
}

/// Keeps one session per host of `cluster` until the process ends. Runs on the main thread.
pub async fn run(cluster: Arc<Cluster>) {
    let Some(checker) = cluster.health_checker() else { return };
    // Membership changes (DNS) are picked up at this pace; a flip also changes the version.
    const MEMBERSHIP_POLL: Duration = Duration::from_secs(1);
    let mut sessions: Vec<(HostSharedPtr, tokio::task::JoinHandle<()>)> = Vec::new();
    let mut version = None;
    loop {
        let set = cluster.priority_set();
        if version != Some(set.version) {
            version = Some(set.version);
            sessions.retain(|(host, task)| {
                let present = set.all_hosts().any(|h| HostSharedPtr::ptr_eq(h, host));
                if !present {
                    task.abort();
                }
                present
            });
            for host in set.all_hosts() {
                if !sessions.iter().any(|(h, _)| HostSharedPtr::ptr_eq(h, host)) {
                    let task = tokio::task::spawn_local(session(cluster.clone(), host.clone()));
                    sessions.push((host.clone(), task));
                }
            }
            update_healthy_gauge(&cluster, checker);
        }
        tokio::time::sleep(MEMBERSHIP_POLL).await;
    }
}

/// Checks one host forever (until aborted when the host leaves the cluster).
async fn session(cluster: Arc<Cluster>, host: HostSharedPtr) {
    let Some(checker) = cluster.health_checker() else { return };
    let config = &checker.config;
    if host.health_check().disabled {
        return;
    }
    // The endpoint's health_check_config first, then the check's alt_port.
    let port = host.health_check().port.or(config.alt_port.map(|p| p as u16)).unwrap_or(host.address().port());
    let addr = SocketAddr::new(host.health_check().address.unwrap_or(host.address().ip()), port);
    let mut connection = Connection::None;
    let mut state = HostCheckState::default();
    tokio::time::sleep(random_up_to(config.initial_jitter())).await;
    loop {
        checker.stats.attempt.inc();
        let first_check = state.first_check;
        let mut timed_out = false;
        let result = match tokio::time::timeout(
            config.timeout(),
            check(&cluster, checker, addr, &host.health_check().hostname, &mut connection),
        )
        .await
        {
            Ok(result) => result,
            Err(_elapsed) => {
                // Envoy closes the connection of a check that timed out.
                connection = Connection::None;
                timed_out = true;
                CheckResult::NetworkFailure
            }
        };
        if result != CheckResult::Success || !config.reuse_connection() {
            connection = Connection::None;
        }
        match result {
            CheckResult::Success => checker.stats.success.inc(),
            CheckResult::Failure { .. } => checker.stats.failure.inc(),
            CheckResult::NetworkFailure => {
                checker.stats.failure.inc();
                checker.stats.network_failure.inc();
            }
        }
        let unhealthy = host.health_flags() & health_flag::FAILED_ACTIVE_HC != 0;
        let transition = state.on_result(config, unhealthy, result);
        if let Some(log) = &checker.event_log {
            log.on_result(&cluster, &host, result, timed_out, first_check, transition, config);
        }
        if let Some(transition) = transition {
            let now_unhealthy = transition == Transition::Unhealthy;
            if !now_unhealthy {
                // Envoy's slow start window starts when the host passes its check.
                host.restart_slow_start();
                host.set_health_flag(health_flag::EXCLUDED_VIA_IMMEDIATE_HC_FAIL, false);
                host.set_health_flag(health_flag::ACTIVE_HC_TIMEOUT, false);
            } else if timed_out {
                host.set_health_flag(health_flag::ACTIVE_HC_TIMEOUT, true);
            }
            host.set_health_flag(health_flag::FAILED_ACTIVE_HC, now_unhealthy);
            if now_unhealthy && cluster.info.other_config().close_connections_on_host_health_failure {
                // Each worker drains the host's pools at its next request.
                crate::upstream::pool::topology_changed();
            }
            cluster.refresh_health();
            update_healthy_gauge(&cluster, checker);
            tracing::info!(cluster = %cluster.name, host = %host.address(), ?result, "health check: host is now {}",
                if now_unhealthy { "unhealthy" } else { "healthy" });
        } else if result != CheckResult::Success && config.always_log_health_check_failures {
            tracing::info!(cluster = %cluster.name, host = %host.address(), ?result, "health check failed");
        } else if result == CheckResult::Success && config.always_log_health_check_success {
            tracing::info!(cluster = %cluster.name, host = %host.address(), "health check passed");
        }
        if result == CheckResult::Success {
            if let Some(detector) = cluster.outlier_detector() {
                detector.on_active_health_check_passed(&cluster, &host);
            }
        }
        let unhealthy = host.health_flags() & health_flag::FAILED_ACTIVE_HC != 0;
        // Envoy's no-traffic test: the cluster has never opened an upstream connection.
        let had_traffic = cluster.existing_stats().is_some_and(|s| s.upstream_cx_total().value() > 0);
        tokio::time::sleep(checker.next_interval(unhealthy, transition, had_traffic)).await;
    }
}

/// The connection kept between checks when `reuse_connection`.
enum Connection {
    None,
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
    Tcp(TransportSocket),
}

/// Runs one check. Not bounded by itself: the caller applies `timeout`.
async fn check(
    cluster: &Cluster,
    checker: &HealthChecker,
    addr: SocketAddr,
    endpoint_hostname: &str,
    connection: &mut Connection,
) -> CheckResult {
    if let Some(http) = &checker.config.http_health_check {
        http_check(cluster, checker, http, addr, endpoint_hostname, connection).await
    } else if let Some(grpc) = &checker.config.grpc_health_check {
        grpc_check(cluster, grpc, &checker.request_headers, addr, connection).await
    } else if checker.config.tcp_health_check.is_some() {
        tcp_check(cluster, checker, addr, connection).await
    } else {
        // Config validation requires one supported kind.
        CheckResult::NetworkFailure
    }
}

/// Sends `request` on the kept connection, or on a new HTTP/1.1 or h2c one.
async fn send(
    cluster: &Cluster,
    addr: SocketAddr,
    http2: bool,
    connection: &mut Connection,
    request: hyper::Request<Full<Bytes>>,
) -> Option<hyper::Response<hyper::body::Incoming>> {
    let reusable = match connection {
        Connection::Http1(sender) if !http2 => sender.ready().await.is_ok(),
        Connection::Http2(sender) if http2 => sender.ready().await.is_ok(),
        _ => false,
    };
    if !reusable {
        // Through the cluster's transport socket, as Envoy's checks: TLS hosts are checked
        // over TLS.
        let alpn = if http2 { Alpn::Http2 } else { Alpn::Http1 };
        let stream = crate::tls::client::connect(cluster, addr, alpn, None).await.ok()?;
        let io = TokioIo::new(stream);
        *connection = if http2 {
            let mut builder = http2::Builder::new(LocalExec);
            builder.timer(TokioTimer::new());
            let (sender, conn) = builder.handshake::<_, Full<Bytes>>(io).await.ok()?;
            tokio::task::spawn_local(conn);
            Connection::Http2(sender)
        } else {
            let (sender, conn) = http1::handshake::<_, Full<Bytes>>(io).await.ok()?;
            tokio::task::spawn_local(conn);
            Connection::Http1(sender)
        };
    }
    match connection {
        Connection::Http1(sender) => sender.send_request(request).await.ok(),
        Connection::Http2(sender) => sender.send_request(request).await.ok(),
        _ => None,
    }
}

/// The stream info header values are formatted against: checks carry static values only.
fn check_info(addr: SocketAddr) -> crate::http::StreamInfo {
    crate::http::StreamInfo::new(hyper::Version::HTTP_11, 0, addr, addr)
}

/// The URI of a check: absolute (`http://authority/path`) so that HTTP/2 sends `:authority`;
/// HTTP/1.1 sends the path and a `host` header.
fn check_uri(http2: bool, authority: &str, path: &str) -> Option<hyper::Uri> {
    match http2 {
        true => format!("http://{authority}{path}").parse().ok(),
        false => path.parse().ok(),
    }
}

async fn http_check(
    cluster: &Cluster,
    checker: &HealthChecker,
    http: &HttpHealthCheck,
    addr: SocketAddr,
    endpoint_hostname: &str,
    connection: &mut Connection,
) -> CheckResult {
    let http2 = http.codec_client_type == CodecClientType::Http2;
    // Envoy's default `host` is the cluster's name.
    let host = match (endpoint_hostname, http.host.as_str()) {
        ("", "") => &cluster.name,
        ("", configured) => configured,
        (endpoint, _) => endpoint,
    };
    let mut request = hyper::Request::new(Full::new(Bytes::from(checker.send.clone())));
    *request.method_mut() = hyper::Method::from_bytes(http.method().as_bytes()).unwrap_or(hyper::Method::GET);
    let Some(uri) = check_uri(http2, host, &http.path) else { return CheckResult::Failure { immediate: true } };
    *request.uri_mut() = uri;
    if http2 {
        *request.version_mut() = hyper::Version::HTTP_2;
    }
    let headers = request.headers_mut();
    if !http2 {
        if let Ok(value) = hyper::header::HeaderValue::from_str(host) {
            headers.insert(hyper::header::HOST, value);
        }
    }
    headers.insert(hyper::header::USER_AGENT, hyper::header::HeaderValue::from_static("Envoy/HC"));
    checker.request_headers.evaluate(headers, &check_info(addr));

    let Some(response) = send(cluster, addr, http2, connection, request).await else {
        return CheckResult::NetworkFailure;
    };
    let status = i64::from(response.status().as_u16());
    let immediate_fail = response.headers().contains_key(&crate::http::headers::X_ENVOY_IMMEDIATE_HEALTH_CHECK_FAIL);
    let close =
        response.headers().get(hyper::header::CONNECTION).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    // Read the body to its end so the connection can carry the next check.
    let Ok(body) = response.into_body().collect().await else {
        return CheckResult::NetworkFailure;
    };
    if close {
        *connection = Connection::None;
    }
    // Envoy matches `receive` within its response buffer (`response_buffer_size`, 1 KiB).
    let body = body.to_bytes();
    let start = body.get(..body.len().min(HTTP_RESPONSE_BUFFER)).unwrap_or_default();
    if !checker.receive.is_empty() && !contains_in_order(start, &checker.receive) {
        return CheckResult::Failure { immediate: !retriable_status(http, status) };
    }
    http_result(http, status, immediate_fail)
}

/// Envoy's default `response_buffer_size`: how much of an HTTP check's body `receive` sees.
const HTTP_RESPONSE_BUFFER: usize = 1024;

/// A body that does not match fails like a status outside `expected_statuses`: at once,
/// unless the status is retriable.
fn retriable_status(http: &HttpHealthCheck, status: i64) -> bool {
    http.retriable_statuses.iter().any(|r| r.start <= status && status < r.end)
}

/// `grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING`.
const GRPC_SERVING: u64 = 1;

/// Envoy's `GrpcHealthCheckerImpl`: a unary `Check` call; anything but a well-formed
/// `SERVING` answer with `grpc-status: 0` fails (counting toward `unhealthy_threshold`).
async fn grpc_check(
    cluster: &Cluster,
    grpc: &GrpcHealthCheck,
    request_headers: &HeaderParser,
    addr: SocketAddr,
    connection: &mut Connection,
) -> CheckResult {
    let authority = if grpc.authority.is_empty() { &*cluster.name } else { grpc.authority.as_str() };
    let Some(uri) = check_uri(true, authority, "/grpc.health.v1.Health/Check") else {
        return CheckResult::Failure { immediate: true };
    };
    let mut request = hyper::Request::new(Full::new(grpc_check_request(&grpc.service_name)));
    *request.method_mut() = hyper::Method::POST;
    *request.uri_mut() = uri;
    *request.version_mut() = hyper::Version::HTTP_2;
    let headers = request.headers_mut();
    headers.insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/grpc"));
    headers.insert(hyper::header::TE, hyper::header::HeaderValue::from_static("trailers"));
    request_headers.evaluate(headers, &check_info(addr));

    let Some(response) = send(cluster, addr, true, connection, request).await else {
        return CheckResult::NetworkFailure;
    };
    let failed = CheckResult::Failure { immediate: false };
    let grpc_content = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if response.status() != hyper::StatusCode::OK || !grpc_content {
        return failed;
    }
    // A trailers-only answer carries `grpc-status` in its headers.
    let header_status = response.headers().get("grpc-status").cloned();
    let Ok(collected) = response.into_body().collect().await else { return CheckResult::NetworkFailure };
    let grpc_status = collected.trailers().and_then(|t| t.get("grpc-status").cloned()).or(header_status);
    if grpc_status.as_ref().map(|v| v.as_bytes()) != Some(b"0") {
        return failed;
    }
    match grpc_serving_status(&collected.to_bytes()) {
        Some(GRPC_SERVING) => CheckResult::Success,
        _ => failed,
    }
}

/// One gRPC frame (uncompressed, length-prefixed) holding `HealthCheckRequest { service }`.
fn grpc_check_request(service: &str) -> Bytes {
    let mut message = Vec::new();
    if !service.is_empty() {
        message.push(0x0a); // field 1, length-delimited
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    crate::http::grpc::frame(0, &message)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(data: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = data.split_first()?;
        *data = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The `status` of the one uncompressed gRPC frame holding a `HealthCheckResponse` (0, the
/// proto default, when the field is absent); `None` when the bytes are not that.
fn grpc_serving_status(body: &[u8]) -> Option<u64> {
    let mut data = crate::http::grpc::message(body)?;
    let mut status = 0;
    while !data.is_empty() {
        let key = take_varint(&mut data)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = take_varint(&mut data)?,
            (_, 0) => {
                take_varint(&mut data)?;
            }
            (_, 1) => data = data.get(8..)?,
            (_, 2) => {
                let n = usize::try_from(take_varint(&mut data)?).ok()?;
                data = data.get(n..)?;
            }
            (_, 5) => data = data.get(4..)?,
            _ => return None,
        }
    }
    Some(status)
}

/// Envoy's `HttpActiveHealthCheckSession::healthCheckResult`: expected statuses pass,
/// retriable ones count toward `unhealthy_threshold`, any other fails at once.
fn http_result(http: &HttpHealthCheck, status: i64, immediate_fail: bool) -> CheckResult {
    let within = |ranges: &[Int64Range]| ranges.iter().any(|r| r.contains(status));
    if immediate_fail {
        CheckResult::Failure { immediate: true }
    } else if within(&http.expected_statuses()) {
        CheckResult::Success
    } else if within(&http.retriable_statuses) {
        CheckResult::Failure { immediate: false }
    } else {
        CheckResult::Failure { immediate: true }
    }
}

async fn tcp_check(
    cluster: &Cluster,
    checker: &HealthChecker,
    addr: SocketAddr,
    connection: &mut Connection,
) -> CheckResult {
    // Nothing to receive: the check is the connect itself, made afresh each time and closed
    // at once, `send` unwritten (Envoy's TCP checker). A kept connection would pass with no I/O.
    if checker.receive.is_empty() {
        *connection = Connection::None;
        return match crate::tls::client::connect(cluster, addr, Alpn::Configured, None).await {
            Ok(_) => CheckResult::Success,
            Err(_) => CheckResult::NetworkFailure,
        };
    }
    if !matches!(connection, Connection::Tcp(_)) {
        let Ok(stream) = crate::tls::client::connect(cluster, addr, Alpn::Configured, None).await else {
            return CheckResult::NetworkFailure;
        };
        *connection = Connection::Tcp(stream);
    }
    let Connection::Tcp(stream) = connection else { return CheckResult::NetworkFailure };
    if !checker.send.is_empty() && stream.write_all(&checker.send).await.is_err() {
        return CheckResult::NetworkFailure;
    }
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while !contains_in_order(&received, &checker.receive) {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return CheckResult::NetworkFailure,
            Ok(n) => received.extend_from_slice(buf.get(..n).unwrap_or_default()),
        }
    }
    CheckResult::Success
}

/// Whether each of `payloads` occurs in `data`, each after the previous one (Envoy's
/// `TcpHealthCheckMatcher::match`).
fn contains_in_order(data: &[u8], payloads: &[Vec<u8>]) -> bool {
    let mut rest = data;
    for payload in payloads {
        if payload.is_empty() {
            continue;
        }
        match rest.windows(payload.len()).position(|w| w == payload.as_slice()) {
            Some(at) => rest = rest.get(at + payload.len()..).unwrap_or_default(),
            None => return false,
        }
    }
    true
}

/// `event_log_path`: one JSON `envoy.data.core.v3.HealthCheckEvent` per line, as Envoy's
/// event logger prints it (proto field names, primitive fields always present).
struct EventLog {
    file: std::sync::Mutex<std::fs::File>,
    checker_type: &'static str,
    date: crate::access_log::date_formatter::DateFormatter,
}

impl EventLog {
    fn open(config: &HealthCheckConfig) -> Option<EventLog> {
        if config.event_log_path.is_empty() {
            return None;
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&config.event_log_path);
        let file = match file {
            Ok(file) => file,
            Err(e) => {
                tracing::error!(path = %config.event_log_path, error = %e, "health check event log cannot be opened");
                return None;
            }
        };
        let checker_type = if config.http_health_check.is_some() {
            "HTTP"
        } else if config.grpc_health_check.is_some() {
            "GRPC"
        } else {
            "TCP"
        };
        Some(EventLog {
            file: std::sync::Mutex::new(file),
            checker_type,
            date: crate::access_log::date_formatter::DateFormatter::parse("%Y-%m-%dT%H:%M:%E3SZ").ok()?,
        })
    }

    /// Envoy logs each flip, a failure of the host's first check, and every failure or
    /// success when `always_log_health_check_failures` / `_success` ask for it.
    #[allow(clippy::too_many_arguments)]
    fn on_result(
        &self,
        cluster: &Cluster,
        host: &Host,
        result: CheckResult,
        timed_out: bool,
        first_check: bool,
        transition: Option<Transition>,
        config: &HealthCheckConfig,
    ) {
        let failure_type = match result {
            CheckResult::Success => "",
            CheckResult::Failure { .. } => "ACTIVE",
            CheckResult::NetworkFailure if timed_out => "NETWORK_TIMEOUT",
            CheckResult::NetworkFailure => "NETWORK",
        };
        let event = match (transition, result) {
            (Some(Transition::Unhealthy), _) => {
                format!(r#""eject_unhealthy_event":{{"failure_type":"{failure_type}"}}"#)
            }
            (Some(Transition::Healthy), _) => format!(r#""add_healthy_event":{{"first_check":{first_check}}}"#),
            (None, CheckResult::Success) if config.always_log_health_check_success => {
                r#""successful_health_check_event":{}"#.to_string()
            }
            (None, CheckResult::Success) => return,
            (None, _) if first_check || config.always_log_health_check_failures => format!(
                r#""health_check_failure_event":{{"failure_type":"{failure_type}","first_check":{first_check}}}"#
            ),
            (None, _) => return,
        };
        self.write(cluster, host, &event);
    }

    fn write(&self, cluster: &Cluster, host: &Host, event: &str) {
        let mut timestamp = Vec::new();
        self.date.format_into(std::time::SystemTime::now(), &mut timestamp);
        let address = serde_json::Value::from(host.address().ip().to_string());
        let line = format!(
            concat!(
                r#"{{"health_checker_type":"{}","host":{{"socket_address":{{"protocol":"TCP","address":{},"#,
                r#""resolver_name":"","ipv4_compat":false,"port_value":{}}}}},"cluster_name":{},{},"timestamp":"{}"}}"#,
                "\n"
            ),
            self.checker_type,
            address,
            host.address().port(),
            serde_json::Value::from(&*cluster.name),
            event,
            String::from_utf8_lossy(&timestamp),
        );
        use std::io::Write;
        if let Ok(mut file) = self.file.lock() {
            let _ = file.write_all(line.as_bytes());
        }
    }
}

fn update_healthy_gauge(cluster: &Cluster, checker: &HealthChecker) {
    let healthy =
        cluster.priority_set().all_hosts().filter(|h| h.health_flags() & health_flag::FAILED_ACTIVE_HC == 0).count();
    checker.stats.healthy.set(healthy as u64);
}

fn random_up_to(max: Duration) -> Duration {
    let nanos = max.as_nanos().min(u128::from(u64::MAX)) as u64;
    if nanos == 0 {
        Duration::ZERO
    } else {
        Duration::from_nanos(fastrand::u64(0..nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(unhealthy_threshold: u32, healthy_threshold: u32) -> HealthCheckConfig {
        legate_config::path::from_value(serde_json::json!({
            "timeout": "1s",
            "interval": "10s",
            "unhealthy_interval": "3s",
            "healthy_edge_interval": "2s",
            "unhealthy_edge_interval": "1s",
            "no_traffic_interval": "60s",
            "unhealthy_threshold": unhealthy_threshold,
            "healthy_threshold": healthy_threshold,
            "http_health_check": {"path": "/healthz", "retriable_statuses": [{"start": 429, "end": 430}]},
        }))
        .unwrap()
    }

    #[test]
    fn the_first_success_makes_a_new_host_healthy_at_once() {
        let c = config(2, 3);
        let mut s = HostCheckState::default();
        assert_eq!(s.on_result(&c, true, CheckResult::Success), Some(Transition::Healthy));
    }

    #[test]
    fn later_recovery_needs_healthy_threshold_successes() {
        let c = config(2, 3);
        let mut s = HostCheckState::default();
        assert_eq!(s.on_result(&c, true, CheckResult::NetworkFailure), None);
        assert_eq!(s.on_result(&c, true, CheckResult::Success), None);
        assert_eq!(s.on_result(&c, true, CheckResult::Success), None);
        assert_eq!(s.on_result(&c, true, CheckResult::Success), Some(Transition::Healthy));
    }

    #[test]
    fn unhealthy_threshold_counts_consecutive_failures() {
        let c = config(2, 1);
        let mut s = HostCheckState::default();
        s.on_result(&c, true, CheckResult::Success);
        assert_eq!(s.on_result(&c, false, CheckResult::NetworkFailure), None);
        assert_eq!(s.on_result(&c, false, CheckResult::Success), None, "a success resets the count");
        assert_eq!(s.on_result(&c, false, CheckResult::Failure { immediate: false }), None);
        assert_eq!(s.on_result(&c, false, CheckResult::NetworkFailure), Some(Transition::Unhealthy));
    }

    #[test]
    fn an_unexpected_status_fails_at_once_but_a_retriable_one_counts() {
        let c = config(3, 1);
        let http = c.http_health_check.as_ref().unwrap();
        assert_eq!(http_result(http, 200, false), CheckResult::Success);
        assert_eq!(http_result(http, 200, true), CheckResult::Failure { immediate: true });
        assert_eq!(http_result(http, 429, false), CheckResult::Failure { immediate: false });
        assert_eq!(http_result(http, 503, false), CheckResult::Failure { immediate: true });
        let mut s = HostCheckState::default();
        s.on_result(&c, true, CheckResult::Success);
        assert_eq!(s.on_result(&c, false, http_result(http, 503, false)), Some(Transition::Unhealthy));
    }

    #[test]
    fn interval_follows_health_edges_and_traffic() {
        let store = legate_stats::Store::new(1);
        let checker = HealthChecker::new(&config(1, 1), &store.scope("cluster.c"));
        let s = Duration::from_secs;
        assert_eq!(checker.next_interval(true, None, false), s(60));
        assert_eq!(checker.next_interval(false, None, true), s(10));
        assert_eq!(checker.next_interval(true, None, true), s(3));
        assert_eq!(checker.next_interval(true, Some(Transition::Unhealthy), true), s(1));
        assert_eq!(checker.next_interval(false, Some(Transition::Healthy), true), s(2));
    }

    #[test]
    fn grpc_responses_decode_and_malformed_ones_are_refused() {
        let frame = |message: &[u8]| crate::http::grpc::frame(0, message).to_vec();
        assert_eq!(grpc_serving_status(&frame(&[0x08, 0x01])), Some(GRPC_SERVING));
        assert_eq!(grpc_serving_status(&frame(&[0x08, 0x02])), Some(2));
        // An empty message is status 0 (UNKNOWN); unknown fields are skipped.
        assert_eq!(grpc_serving_status(&frame(&[])), Some(0));
        assert_eq!(grpc_serving_status(&frame(&[0x12, 0x02, b'h', b'i', 0x08, 0x01])), Some(1));
        // Truncated, oversized, compressed, or not protobuf: no answer, no panic.
        for bad in [vec![], vec![0u8, 0, 0], frame(&[0x08]), frame(&[0x12, 0x09, 0x01]), frame(&[0x0f])] {
            assert_eq!(grpc_serving_status(&bad), None, "{bad:?}");
        }
        let mut compressed = frame(&[0x08, 0x01]);
        compressed[0] = 1;
        assert_eq!(grpc_serving_status(&compressed), None);
        let mut long = frame(&[0x08, 0x01]);
        long.push(0);
        assert_eq!(grpc_serving_status(&long), None);
        assert_eq!(grpc_check_request("").as_ref(), &[0, 0, 0, 0, 0]);
    }

    #[test]
    fn tcp_payloads_match_in_order() {
        let want = vec![b"AB".to_vec(), b"CD".to_vec()];
        assert!(contains_in_order(b"xxABxxCD", &want));
        assert!(!contains_in_order(b"CDxxAB", &want));
        assert!(!contains_in_order(b"xxAB", &want));
        assert!(contains_in_order(b"", &[]));
    }
}
