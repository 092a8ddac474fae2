//! `envoy.filters.http.router`: sends a request to its route's cluster and brings back the
//! response, or the local reply that says why not.
//!
//! Per attempt: pick a host (`UH` when none), take a request slot (`max_requests`, else `UO`),
//! get a connection from the worker's pool (pending queue, `connect_timeout`), send. The
//! route `timeout` (15 s) starts when the whole request has been received and spans every
//! attempt; `per_try_timeout` bounds each. Failures that the retry policy names are retried
//! after a jittered back-off while `num_retries` and the cluster's `max_retries` allow and the
//! request body is still replayable.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{HeaderName, HeaderValue, HOST};
use http::{Request, StatusCode, Uri, Version};
use legate_config::cluster::RoutingPriority;

use crate::filters::network::http_connection_manager::response_body::{BodyTimeout, BodyTimers, UpstreamBody};
use crate::filters::network::http_connection_manager::{ConnectionContext, HcmStats};
use crate::http::body::{AttemptBody, BodySource};
use crate::http::h1_client;
use crate::http::headers;
use crate::http::io::DownstreamUpgrade;
use crate::http::{LocalReply, ResponseFlag, StreamInfo};
use crate::router::action::ClusterSpecifier;
use crate::router::{hash_policy, RetryOn, RouteAction};
use crate::upstream::circuit_breakers::ResourceGuard;
use crate::upstream::cluster_manager::ChooseHostError;
use crate::upstream::outlier_detection::OutlierResult;
use crate::upstream::pool::{pool_protocol, Outgoing, PoolFailure, PooledConn, SendError, UpstreamUpgrade};
use crate::upstream::{Cluster, HostSharedPtr};
use crate::worker::clock;
use crate::worker::reused::Reused;

/// One request to the router.
pub struct RouterRequest<'a> {
    pub context: &'a Rc<ConnectionContext>,
    pub info: &'a mut StreamInfo,
    pub action: &'a RouteAction,
    /// The head's authority, when the caller has it (else it is read from the head).
    pub authority: Option<Authority>,
    pub body: Rc<RefCell<BodySource>>,
    /// The `prefix` the route matched, for `prefix_rewrite`.
    pub matched_prefix: Option<&'a str>,
    /// Header mutations of the route, virtual host and route configuration, most specific
    /// first.
    pub header_parsers: HeaderParsers<'a>,
    pub include_attempt_count: bool,
    /// An allowed upgrade: its `upgrade` value (or `CONNECT`) and the downstream side of it.
    pub upgrade: Option<(String, DownstreamUpgrade)>,
    /// The weighted cluster picked with the route: its name and index.
    pub weighted: Option<(Arc<str>, usize)>,
}

/// Envoy's `pickWeightedCluster`: the entry by weight, from the random value in `header_name`
/// when the request has exactly one numeric value there, else a random one; the cluster it
/// names (a `cluster_header` entry names it in the request: empty when absent). `None` for a
/// route that is not weighted or has no entries.
pub fn pick_weighted(cluster: &ClusterSpecifier, headers: &http::HeaderMap) -> Option<(Arc<str>, usize)> {
    let ClusterSpecifier::Weighted { clusters, total, random_value_header } = cluster else { return None };
    let from_header = random_value_header.as_ref().and_then(|h| {
        let mut values = headers.get_all(h).iter();
        let value = values.next()?;
        values.next().is_none().then(|| value.to_str().ok()?.parse::<u64>().ok()).flatten()
    });
    let pick = match (*total, from_header) {
        (0, _) => 0,
        (total, Some(value)) => value % total,
        (total, None) => fastrand::u64(0..total),
    };
    let mut acc = 0;
    let index = clusters
        .iter()
        .position(|c| {
            acc += c.weight;
            pick < acc
        })
        .unwrap_or(0);
    let entry = clusters.get(index)?;
    let name = match &entry.cluster_header {
        Some(header) => Arc::from(headers.get(header).and_then(|v| v.to_str().ok()).unwrap_or_default()),
        None => entry.name.clone(),
    };
    Some((name, index))
}

pub enum RouterOutcome {
    Upstream {
        /// Boxed as it arrives, as the body: both are moved several times on their way to
        /// the downstream codec, and each move of the head by value was a copy of it.
        head: Reused<http::response::Parts>,
        body: Reused<UpstreamBody>,
        /// The chosen weighted cluster, for its response header mutations.
        weighted_index: Option<usize>,
    },
    LocalReply(LocalReply),
}

/// An upstream request's accounting: the `max_requests` slot, `upstream_rq_total`,
/// `upstream_rq_active` and the host's request stats, from when it has a connection (Envoy's
/// pools count a request, and take its slot, as they attach it to one), held until the
/// response ends.
pub struct UpstreamRequestGuard {
    pub cluster: Arc<Cluster>,
    pub host: HostSharedPtr,
    _slot: Option<ResourceGuard>,
    /// The downstream request, whose end `upstream_rq_time` is timed from.
    request: Rc<RefCell<BodySource>>,
    attached: bool,
    done: bool,
    /// A gRPC response whose outcome for the host waits for its `grpc-status` trailer.
    grpc_deferred: bool,
}

impl UpstreamRequestGuard {
    pub(crate) fn new(cluster: Arc<Cluster>, host: HostSharedPtr, request: Rc<RefCell<BodySource>>) -> Self {
        UpstreamRequestGuard { cluster, host, _slot: None, request, attached: false, done: false, grpc_deferred: false }
    }

    /// The trailers of the response: a deferred gRPC outcome is settled by its `grpc-status`.
    pub fn trailers(&mut self, trailers: &http::HeaderMap) {
        if std::mem::take(&mut self.grpc_deferred) {
            charge_host(&self.host, grpc_status_is_error(trailers));
        }
    }

    /// The try has its connection and its `max_requests` slot: it counts as an upstream
    /// request from now on.
    pub(crate) fn attach(&mut self, slot: ResourceGuard) {
        self._slot = Some(slot);
        if std::mem::replace(&mut self.attached, true) {
            return;
        }
        self.cluster.stats().upstream_rq_total().inc();
        self.cluster.stats().upstream_rq_active().inc();
        self.host.stats.rq_total.fetch_add(1, Ordering::Relaxed);
        self.host.stats.rq_active.fetch_add(1, Ordering::Relaxed);
    }

    /// The response ended (`complete`) or was abandoned. `upstream_rq_time` is Envoy's: from
    /// the end of the downstream request to the end of the response, over every try and
    /// back-off; not recorded for a request that never ended.
    pub fn complete(&mut self, complete: bool) {
        if self.done {
            return;
        }
        self.done = true;
        // A gRPC response that ended without its status (or was cut) failed.
        if std::mem::take(&mut self.grpc_deferred) {
            charge_host(&self.host, true);
        }
        if complete {
            let ended = self.request.try_borrow().ok().and_then(|body| body.completed_at);
            if let Some(at) = ended {
                self.cluster.stats().upstream_rq_time().record(clock::since(at).as_millis() as u64);
            }
        }
    }
}

impl Drop for UpstreamRequestGuard {
    fn drop(&mut self) {
        if self.attached {
            self.cluster.stats().upstream_rq_active().dec();
            self.host.stats.rq_active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// A `grpc-timeout` value: up to eight digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`),
/// rounded up to whole milliseconds; `None` when malformed.
fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_millis(n.div_ceil(1000)),
        b'n' => Duration::from_millis(n.div_ceil(1_000_000)),
        _ => return None,
    })
}

/// `grpc-timeout` for a deadline: milliseconds, or a coarser unit past eight digits.
fn grpc_timeout_text(timeout: Duration) -> String {
    let ms = timeout.as_millis() as u64;
    match ms {
        ms if ms < 100_000_000 => format!("{ms}m"),
        ms if ms / 1000 < 100_000_000 => format!("{}S", ms / 1000),
        ms if ms / 60_000 < 100_000_000 => format!("{}M", ms / 60_000),
        ms => format!("{}H", ms / 3_600_000),
    }
}

/// Envoy's per-host outcome of a request (`/clusters` `rq_success`, `rq_error`).
fn charge_host(host: &HostSharedPtr, error: bool) {
    let counter = if error { &host.stats.rq_error } else { &host.stats.rq_success };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Whether a gRPC status (in trailers, or the head of a trailers-only response) maps to an
/// HTTP 5xx (Envoy's `grpcToHttpStatus`: unknown, deadline exceeded, unimplemented, internal,
/// unavailable, data loss, and a missing or unknown status).
fn grpc_status_is_error(headers: &http::HeaderMap) -> bool {
    let status = headers.get("grpc-status").and_then(|v| std::str::from_utf8(v.as_bytes()).ok()?.parse::<u32>().ok());
    !matches!(status, Some(0 | 1 | 3 | 5..=11 | 16))
}

/// The request head, whose header map goes back to the thread's spares (for the next
/// request's) when the router is done with it.
struct RecycledHead(Reused<http::request::Parts>);

impl Drop for RecycledHead {
    fn drop(&mut self) {
        headers::recycle(std::mem::take(&mut self.0.headers));
    }
}

/// Which timer fired while waiting for response headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timeout {
    Route,
    PerTry,
    PerTryIdle,
    StreamIdle,
    Request,
    MaxStreamDuration,
}

struct Timers {
    stream_start: Instant,
    route: Option<Duration>,
    per_try: Option<Duration>,
    per_try_idle: Option<Duration>,
    stream_idle: Option<Duration>,
    request: Option<Duration>,
    max_stream_duration: Option<Duration>,
    /// `x-envoy-upstream-rq-timeout-alt-response`: an upstream timeout answers 204, not 504.
    alt_timeout_response: bool,
}

impl Timers {
    /// The earliest deadline now known. The route and per-try timers start once the whole
    /// request is in (Envoy's timeline).
    /// `try_start`: when this try got its connection (Envoy arms `per_try_timeout` in
    /// `onPoolReady`: connecting counts against the route timeout only).
    fn next(
        &self,
        body: &BodySource,
        try_start: Option<Instant>,
        last_activity: Instant,
    ) -> Option<(Timeout, Instant)> {
        // Straight-line (this runs on every wake-up of a request waiting upstream); on a tie
        // the timer listed first wins.
        let mut next: Option<(Timeout, Instant)> = None;
        let mut consider = |which: Timeout, at: Instant| {
            if next.is_none_or(|(_, earliest)| at < earliest) {
                next = Some((which, at));
            }
        };
        if let Some(complete) = body.completed_at {
            if let Some(d) = self.route {
                consider(Timeout::Route, complete.max(self.stream_start) + d);
            }
            if let (Some(d), Some(at)) = (self.per_try, try_start) {
                consider(Timeout::PerTry, complete.max(at) + d);
            }
        }
        if let (Some(d), Some(at)) = (self.per_try_idle, try_start) {
            consider(Timeout::PerTryIdle, at.max(last_activity) + d);
        }
        if let Some(d) = self.stream_idle {
            consider(Timeout::StreamIdle, last_activity + d);
        }
        if let Some(d) = self.request.filter(|_| body.completed_at.is_none()) {
            consider(Timeout::Request, self.stream_start + d);
        }
        if let Some(d) = self.max_stream_duration {
            consider(Timeout::MaxStreamDuration, self.stream_start + d);
        }
        next
    }
}

enum Waited<T> {
    Done(T),
    Timeout(Timeout),
}

/// The next read from the downstream body; never, without a receiver.
async fn body_progress(progress: &mut Option<tokio::sync::watch::Receiver<()>>) {
    match progress {
        Some(receiver) => {
            if receiver.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// Runs `future` until it finishes or a timer fires. The timers are kept by the
/// connection's own timer where it has one.
async fn with_timers<F: Future>(
    future: F,
    timers: &Timers,
    body: &Rc<RefCell<BodySource>>,
    try_start: Option<Instant>,
    context: &ConnectionContext,
) -> Waited<F::Output> {
    tokio::pin!(future);
    // A body already complete never changes: nothing to watch.
    let complete = body.borrow().complete;
    let mut progress = (!complete).then(|| body.borrow_mut().subscribe_progress());
    loop {
        let next = {
            let source = body.borrow();
            timers.next(&source, try_start, source.last_activity)
        };
        if let Some((which, at)) = next {
            if at <= clock::now() {
                return Waited::Timeout(which);
            }
        }
        let sleep = async {
            match next {
                // The connection polls this again by then.
                Some((_, at)) if context.polls_stream_on_time() => {
                    std::future::poll_fn(|_| {
                        if clock::now() >= at {
                            return std::task::Poll::Ready(());
                        }
                        // Asked at every poll: the connection takes the time when it arms
                        // its timer.
                        context.wake_stream_by(at);
                        std::task::Poll::Pending
                    })
                    .await
                }
                Some((_, at)) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        // Biased, the awaited future first: no random draw per poll (this runs on every
        // wake-up of a request waiting upstream).
        tokio::select! {
            biased;
            out = &mut future => return Waited::Done(out),
            () = sleep => {}
            // The sender lives as long as the body source this loop holds.
            _ = body_progress(&mut progress) => {}
        }
    }
}

/// The header mutations that apply to a request or response, in the order they run (route,
/// virtual host, route configuration, or the reverse), empty ones left out.
pub type HeaderParsers<'a> = [Option<&'a crate::router::HeaderParser>; 3];

/// Why an attempt failed before response headers.
enum AttemptFailure {
    Pool(PoolFailure),
    Reset { reason: &'static str, flag: ResponseFlag, refused: bool },
    PerTryTimeout,
    PerTryIdleTimeout,
}

/// Routes `head` (boxed: it goes down a chain of futures, and moving it by value cost a copy
/// of its 224 bytes at each step).
pub async fn route(mut rq: RouterRequest<'_>, head: Reused<http::request::Parts>) -> RouterOutcome {
    let context = rq.context;
    let shared = &context.shared;
    let action = rq.action;
    let mut head = RecycledHead(head);
    let head = &mut *head.0;

    // The cluster.
    let (cluster_name, weighted_index) = match &action.cluster {
        ClusterSpecifier::Cluster(name) => (name.clone(), None),
        ClusterSpecifier::Header(header) => match head.headers.get(header).and_then(|v| v.to_str().ok()) {
            Some(name) => (Arc::from(name), None),
            None => {
                shared.stats.no_cluster.inc();
                return RouterOutcome::LocalReply(LocalReply::cluster_not_found(
                    action.cluster_not_found_response_code,
                ));
            }
        },
        ClusterSpecifier::Weighted { .. } => {
            // Picked with the route, before the filters (see `decode`), else here.
            match rq.weighted.take().or_else(|| pick_weighted(&action.cluster, &head.headers)) {
                Some((name, index)) => (name, Some(index)),
                None => {
                    shared.stats.no_cluster.inc();
                    return RouterOutcome::LocalReply(LocalReply::cluster_not_found(
                        action.cluster_not_found_response_code,
                    ));
                }
            }
        }
    };
    let worker = &context.worker;
    // Resolved with the route when the route names its cluster or picks a weighted one (see
    // `decode`).
    let resolved = rq.info.upstream_cluster.as_ref().filter(|c| c.name() == &*cluster_name).map(|c| c.0.clone());
    let cluster = match resolved {
        Some(cluster) => cluster,
        None => {
            let Some(cluster) = worker.cluster_manager.get(&cluster_name) else {
                shared.stats.no_cluster.inc();
                return RouterOutcome::LocalReply(LocalReply::cluster_not_found(
                    action.cluster_not_found_response_code,
                ));
            };
            rq.info.upstream_cluster = Some(crate::http::stream_info::UpstreamCluster(cluster.clone()));
            cluster
        }
    };

    // Policies, with the x-envoy-* request headers that override them.
    let mut retry_on = action.retry_policy.retry_on;
    let mut num_retries = action.retry_policy.num_retries;
    let mut route_timeout = Some(action.timeout).filter(|d| !d.is_zero());
    // A gRPC request's deadline is its route timeout where the route says so (Envoy's
    // `finalTimeout`): `grpc-timeout` less the offset, capped; no header or no cap means the
    // cap, 0 none.
    if let (true, Some(max)) = (rq.info.grpc_request, action.max_grpc_timeout) {
        let mut grpc =
            head.headers.get(&GRPC_TIMEOUT).and_then(|v| parse_grpc_timeout(v.as_bytes())).unwrap_or_default();
        if let Some(offset) = action.grpc_timeout_offset.filter(|o| *o < grpc) {
            grpc -= offset;
        }
        if !max.is_zero() && (grpc.is_zero() || grpc > max) {
            grpc = max;
        }
        route_timeout = Some(grpc).filter(|d| !d.is_zero());
    }
    let mut per_try = action.retry_policy.per_try_timeout;
    // The x-envoy-* request overrides: looked up only when some x-envoy-* header is present.
    let envoy_headers = head.headers.keys().any(|k| k.as_str().starts_with("x-envoy-"));
    let mut take = |name: &HeaderName| envoy_headers.then(|| take_header(&mut head.headers, name)).flatten();
    if let Some(v) = take(&headers::X_ENVOY_RETRY_ON) {
        retry_on = retry_on.union(RetryOn::parse(&v));
    }
    if let Some(v) = take(&headers::X_ENVOY_RETRY_GRPC_ON) {
        retry_on = retry_on.union(RetryOn::parse(&v));
    }
    // Its presence alone counts.
    let alt_timeout_response = take(&headers::X_ENVOY_UPSTREAM_RQ_TIMEOUT_ALT_RESPONSE).is_some();
    if let Some(n) = take(&headers::X_ENVOY_MAX_RETRIES).and_then(|v| v.parse().ok()) {
        num_retries = n;
    }
    if let Some(ms) = take(&headers::X_ENVOY_UPSTREAM_RQ_TIMEOUT_MS).and_then(|v| v.parse().ok()) {
        route_timeout = Some(Duration::from_millis(ms)).filter(|d| !d.is_zero());
    }
    if let Some(ms) = take(&headers::X_ENVOY_UPSTREAM_RQ_PER_TRY_TIMEOUT_MS).and_then(|v| v.parse().ok()) {
        per_try = Some(Duration::from_millis(ms)).filter(|d| !d.is_zero());
    }
    let per_try = per_try.filter(|p| route_timeout.is_none_or(|t| *p < t));
    if let Some(expected) = per_try.or(route_timeout) {
        if !shared.router.suppress_envoy_headers {
            head.headers.insert(
                headers::X_ENVOY_EXPECTED_RQ_TIMEOUT_MS.clone(),
                headers::decimal_header(expected.as_millis() as u64),
            );
        }
        // The upstream learns the deadline it has (Envoy's `setTimeoutHeaders`, for routes
        // with the deprecated `max_grpc_timeout`).
        if rq.info.grpc_request && action.rewrite_grpc_timeout {
            if let Ok(value) = HeaderValue::from_str(&grpc_timeout_text(expected)) {
                head.headers.insert(GRPC_TIMEOUT.clone(), value);
            }
        }
    }
    let timers = Timers {
        stream_start: rq.info.start,
        route: route_timeout,
        per_try,
        per_try_idle: action.retry_policy.per_try_idle_timeout,
        stream_idle: action.idle_timeout.unwrap_or(shared.stream_idle_timeout),
        request: shared.request_timeout,
        max_stream_duration: action.max_stream_duration.unwrap_or(shared.max_stream_duration),
        alt_timeout_response,
    };

    // The request as it goes upstream. The path and authority share the request's bytes.
    let original = head.uri.path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    // `None`: a rewrite that is not a valid path (the attempt fails as a protocol error).
    let mut upstream_path = Some(original.clone());
    if let Some(rewritten) = action.rewrite_path(original.path(), original.query(), rq.matched_prefix) {
        if !shared.router.suppress_envoy_headers {
            if let Ok(v) = HeaderValue::from_str(original.as_str()) {
                head.headers.insert(headers::X_ENVOY_ORIGINAL_PATH.clone(), v);
            }
        }
        upstream_path = http::uri::PathAndQuery::try_from(rewritten).ok();
    }
    let mut authority = rq.authority.take().unwrap_or_else(|| Authority::of(head));
    let original_authority = authority.clone();
    // Envoy's `finalizeRequestHeaders`: the weighted cluster's mutations, the route's, then
    // the host rewrites (so a header the mutations set can name the host), the weighted
    // cluster's own host last.
    let weighted_entry = match (weighted_index, &action.cluster) {
        (Some(i), ClusterSpecifier::Weighted { clusters, .. }) => clusters.get(i),
        _ => None,
    };
    if let Some(entry) = weighted_entry {
        entry.request_headers.evaluate(&mut head.headers, rq.info);
    }
    for parser in rq.header_parsers.iter().flatten() {
        parser.evaluate(&mut head.headers, rq.info);
    }
    if let Some(host) = &action.host_rewrite_literal {
        authority = Authority(host.clone());
    } else if let Some(header) = &action.host_rewrite_header {
        if let Some(v) = head.headers.get(header).filter(|v| v.to_str().is_ok()) {
            authority = Authority(v.clone());
        }
    } else if let Some(host) = action.host_from_path(original.path()) {
        if let Ok(v) = HeaderValue::from_str(&host) {
            authority = Authority(v);
        }
    }
    if let Some(host) = weighted_entry.and_then(|entry| entry.host_rewrite_literal.as_ref()) {
        authority = Authority(host.clone());
    }
    if action.append_x_forwarded_host && authority.as_str() != original_authority.as_str() {
        // One comma-separated field, as Envoy appends it.
        let forwarded = match head.headers.get(&headers::X_FORWARDED_HOST).and_then(|v| v.to_str().ok()) {
            Some(earlier) => HeaderValue::from_str(&format!("{earlier},{}", original_authority.as_str())).ok(),
            None => Some(original_authority.0.clone()),
        };
        if let Some(value) = forwarded {
            head.headers.insert(headers::X_FORWARDED_HOST.clone(), value);
        }
    }
    let mut downstream_upgrade = rq.upgrade.take();
    // Looked up only for an upgrade: it goes with the hop-by-hop fields below.
    let upgrade_value = downstream_upgrade.as_ref().and_then(|_| head.headers.get(http::header::UPGRADE).cloned());
    headers::strip_hop_by_hop(&mut head.headers);
    if head.method == http::Method::CONNECT && action.connect_terminate {
        if let Some((_, on_upgrade)) = downstream_upgrade.take() {
            return connect_terminate_boxed(&mut rq, &cluster, on_upgrade).await;
        }
    }
    if downstream_upgrade.is_some() {
        if let Some(value) = upgrade_value {
            head.headers.insert(http::header::CONNECTION, HeaderValue::from_static("upgrade"));
            head.headers.insert(http::header::UPGRADE, value);
        }
    }
    // Envoy's router finalizes the downstream request's own headers, which its access logs
    // read afterwards: `%REQ(...)%` shows the route's rewrites and additions (and
    // `x-envoy-original-path`, which is why Envoy's default format asks for it first).
    if let Some(logged) = rq.info.request.as_deref_mut() {
        logged.headers.clone_from(&head.headers);
        if let Some(path) = upstream_path.as_ref().filter(|p| p.as_str() != logged.path) {
            logged.path = path.as_str().to_string();
        }
        if authority.as_str() != logged.authority {
            logged.authority = authority.as_str().to_string();
        }
    }

    for mirror in &action.mirrors {
        if mirror.fraction.as_ref().is_none_or(crate::runtime::fraction_enabled) {
            let name = match &mirror.cluster {
                ClusterSpecifier::Cluster(name) => Some(name.to_string()),
                ClusterSpecifier::Header(h) => head.headers.get(h).and_then(|v| v.to_str().ok()).map(str::to_string),
                ClusterSpecifier::Weighted { .. } => None,
            };
            if let Some(name) = name {
                let authority = match mirror.host_suffix {
                    true => shadow_host(authority.as_str()),
                    false => authority.as_str().to_string(),
                };
                Shadow {
                    context: context.clone(),
                    cluster: name,
                    head: clone_head(head),
                    path_and_query: upstream_path.as_ref().map_or_else(String::new, |p| p.as_str().to_string()),
                    authority,
                    body: rq.body.clone(),
                    timeout: route_timeout,
                    priority: action.priority,
                }
                .spawn();
            }
        }
    }

    // `auto_sni`: the name the upstream TLS connection is made for, from the override header
    // or the authority as it goes upstream (without its port).
    let auto_sni: Option<String> = cluster.auto_sni().and_then(|header| {
        let name = match header {
            Some(h) => head.headers.get(h).and_then(|v| v.to_str().ok())?,
            None => crate::router::action::split_host_port(authority.as_str()).0,
        };
        let name = name.trim_start_matches('[').trim_end_matches(']');
        (!name.is_empty()).then(|| name.to_ascii_lowercase())
    });
    let priority = action.priority;
    let mut attempt = 0u32;
    let mut tried: Vec<HostSharedPtr> = Vec::new();
    let mut retry_slot: Option<ResourceGuard> = None;
    let downstream_version = head.version;
    let request_hash = hash_policy::compute_hash(
        &action.hash_policy,
        head,
        rq.info.downstream_remote_address,
        rq.info.downstream_local_address,
    );
    let hash = request_hash.hash;
    loop {
        attempt += 1;
        rq.info.attempt_count = attempt;
        // The host.
        let mut host = None;
        for _ in 0..action.retry_policy.host_selection_max_attempts.max(1) {
            match worker.cluster_manager.choose_host_with_hash(&cluster_name, hash) {
                Ok(h) => {
                    let seen =
                        action.retry_policy.avoid_previous_hosts && tried.iter().any(|t| HostSharedPtr::ptr_eq(t, &h));
                    host = Some(h);
                    if !seen {
                        break;
                    }
                }
                Err(ChooseHostError::NoCluster) => {
                    shared.stats.no_cluster.inc();
                    return RouterOutcome::LocalReply(LocalReply::cluster_not_found(
                        action.cluster_not_found_response_code,
                    ));
                }
                Err(ChooseHostError::NoHost(c)) => {
                    c.stats().upstream_cx_none_healthy().inc();
                    break;
                }
            }
        }
        // A retry that finds no host is answered as the first try would be (Envoy's `doRetry`
        // sends its "no healthy upstream" reply, whatever the previous try got).
        let Some(host) = host else {
            worker.count_upstream_code(&cluster, 503);
            return RouterOutcome::LocalReply(LocalReply::no_healthy_upstream());
        };
        if action.retry_policy.avoid_previous_hosts {
            tried.push(host.clone());
        }
        rq.info.upstream_host = Some(host.address());

        // One clock read for the attempt's start, its request time and the stream's first
        // upstream byte (clock reads are not free in a VM).
        let attempt_start = clock::now();
        let mut guard = UpstreamRequestGuard::new(cluster.clone(), host.clone(), rq.body.clone());
        if rq.info.first_upstream_tx_byte.is_none() {
            rq.info.first_upstream_tx_byte = Some(attempt_start.saturating_duration_since(rq.info.start));
        }

        // Upgrades switch an HTTP/1.1 connection's protocol: they always use HTTP/1.1.
        let protocol = match downstream_upgrade {
            Some(_) => crate::upstream::pool::PoolProtocol::Http1,
            None => pool_protocol(&cluster, downstream_version),
        };
        let pool = worker.pools().get(&cluster, &host, protocol, auto_sni.as_deref());
        let mut fresh = false;
        let result = loop {
            // Each future is pinned where it is built: moved into `.await` or into
            // `with_timers`, it would be copied whole.
            // In a block of its own, so that the send below reuses the acquire's room.
            let mut conn = {
                let acquire = std::pin::pin!(pool.acquire(priority, fresh));
                let waited = std::pin::pin!(with_timers(acquire, &timers, &rq.body, None, context)).await;
                match waited {
                    Waited::Timeout(which) => break Err(which),
                    Waited::Done(Err(failure)) => break Ok(Err(AttemptFailure::Pool(failure))),
                    Waited::Done(Ok(conn)) => conn,
                }
            };
            // `max_requests` is taken as the request gets its connection (Envoy's
            // `attachStreamToClient`): requests waiting in the pending queue do not hold it.
            let Some(slot) = cluster.breakers(priority).requests.try_acquire() else {
                cluster.stats().upstream_rq_pending_overflow().inc();
                conn.release(true);
                break Ok(Err(AttemptFailure::Pool(PoolFailure::Overflow)));
            };
            guard.attach(slot);
            let try_start = clock::now();
            rq.info.upstream_local_address = conn.local_address();
            // auto_host_rewrite: the chosen host's name (DNS clusters keep it per host).
            let rewritten;
            let attempt_authority = match action.auto_host_rewrite && !host.hostname().is_empty() {
                true => {
                    rewritten = Authority::from_text(host.hostname());
                    &rewritten
                }
                false => &authority,
            };
            let send = match upstream_path.as_ref() {
                // HTTP/1.1 on legate's own client: the head is written as it is, the host and
                // the fields of this attempt beside it (no request is built).
                Some(path) if conn.encodes_heads() => {
                    let chunked = (&http::header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
                    let count = (&headers::X_ENVOY_ATTEMPT_COUNT, headers::decimal_header(u64::from(attempt)));
                    let has_length = head.headers.contains_key(http::header::CONTENT_LENGTH);
                    // A body of unknown length goes chunked.
                    let unknown_length = !has_length && !rq.body.borrow().is_empty_and_complete();
                    let extra = [chunked, count];
                    let extra = match (unknown_length, rq.include_attempt_count) {
                        (true, true) => &extra[..],
                        (true, false) => &extra[..1],
                        (false, true) => &extra[1..],
                        (false, false) => &[],
                    };
                    let request_head = h1_client::RequestHead {
                        method: &head.method,
                        path: path.as_str(),
                        headers: &head.headers,
                        host: Some(&attempt_authority.0),
                        extra,
                    };
                    conn.send_request(Outgoing::Head(&request_head, AttemptBody::new(rq.body.clone())))
                }
                Some(path) => match build_request(head, path, attempt_authority, &conn, &rq, attempt) {
                    Some(request) => conn.send_request(Outgoing::Request(request)),
                    None => break Ok(Err(protocol_error())),
                },
                None => break Ok(Err(protocol_error())),
            };
            // Pinned here, so that `with_timers` holds a pointer rather than a copy of it.
            let send = std::pin::pin!(send);
            let waited = std::pin::pin!(with_timers(send, &timers, &rq.body, Some(try_start), context)).await;
            match waited {
                Waited::Timeout(Timeout::PerTry) => break Ok(Err(AttemptFailure::PerTryTimeout)),
                Waited::Timeout(Timeout::PerTryIdle) => break Ok(Err(AttemptFailure::PerTryIdleTimeout)),
                Waited::Timeout(which) => break Err(which),
                Waited::Done(Ok(response)) => {
                    let (head, body) = response.into_parts();
                    break Ok(Ok((Reused::new(head), body, conn)));
                }
                Waited::Done(Err(e)) => {
                    let replayable = rq.body.borrow().replayable();
                    if !fresh && replayable && stale_connection(&e, conn.reused(), &head.method) {
                        // The keep-alive race (Envoy issue 14981): the upstream closed the
                        // pooled connection as the request went out on it. Not the host's
                        // fault and not a retry: the same attempt goes out again on a new
                        // connection.
                        cluster.stats().upstream_rq_stale_connection_resend().inc();
                        fresh = true;
                        continue;
                    }
                    break Ok(Err(classify(&e)));
                }
            }
        };
        let outcome = match result {
            Err(which) => {
                // A timer of the whole stream fired: no retry.
                return RouterOutcome::LocalReply(stream_timeout(
                    which,
                    rq.context,
                    &cluster,
                    &host,
                    rq.info,
                    rq.body.borrow().complete,
                    timers.alt_timeout_response,
                ));
            }
            Ok(outcome) => outcome,
        };
        let retries_left = attempt <= num_retries;
        let replayable = rq.body.borrow().replayable();
        let failure = match outcome {
            Ok((mut parts, body, conn)) => {
                let status = parts.status;
                cluster.outlier_result(&host, OutlierResult::Http(status.as_u16()));
                // Only a health-checked cluster acts on it: the lookup (a hash of the name)
                // is skipped for the others.
                if cluster.health_checker().is_some()
                    && parts.headers.contains_key(&headers::X_ENVOY_IMMEDIATE_HEALTH_CHECK_FAIL)
                {
                    cluster.on_immediate_health_check_fail(&host);
                }
                let response_at = clock::now();
                rq.info.first_upstream_rx_byte = Some(response_at.saturating_duration_since(rq.info.start));
                let wants_retry =
                    !retry_on.is_empty() && action.retry_policy.retriable_response(retry_on, status, &parts.headers);
                if wants_retry && retries_left && replayable {
                    if take_retry_slot(&cluster, priority, &mut retry_slot, rq.info) {
                        // Envoy counts a response it retries under `retry.`, apart from the
                        // answers: `upstream_rq_5xx` counts what the downstream got.
                        worker.count_retried_code(&cluster, status.as_u16());
                        charge_host(&host, true);
                        drop(parts);
                        drop(body);
                        drop(conn);
                        drop(guard);
                        if let Some(reply) = back_off(&mut rq, attempt, &cluster, &host, &timers).await {
                            return RouterOutcome::LocalReply(reply);
                        }
                        continue;
                    }
                } else if wants_retry && !retries_left {
                    cluster.stats().upstream_rq_retry_limit_exceeded().inc();
                    rq.info.set_flag(ResponseFlag::UpstreamRetryLimitExceeded);
                }
                worker.count_upstream_code(&cluster, status.as_u16());
                // The host's outcome; a gRPC request's answer waits for its status, in the
                // trailers unless the head ends the response (Envoy's router goes by the
                // request, which also spares a header lookup per response).
                if status.is_server_error() {
                    charge_host(&host, true);
                } else if !rq.info.grpc_request {
                    charge_host(&host, false);
                } else if http_body::Body::is_end_stream(&body) {
                    charge_host(&host, grpc_status_is_error(&parts.headers));
                } else {
                    guard.grpc_deferred = true;
                }
                if attempt > 1 && !wants_retry {
                    cluster.stats().upstream_rq_retry_success().inc();
                }
                if parts.status == StatusCode::SWITCHING_PROTOCOLS {
                    if let Some((_, downstream)) = downstream_upgrade.take() {
                        if let Some(upstream) = conn.upgrade(&mut parts.extensions) {
                            tokio::task::spawn_local(tunnel(context.clone(), downstream, upstream));
                        }
                    }
                }
                if let Some(cookie) = &request_hash.set_cookie {
                    parts.headers.append(http::header::SET_COOKIE, cookie.clone());
                }
                let completed_at = rq.body.borrow().completed_at;
                // From the end of the downstream request to the response head, over every try
                // and back-off (Envoy's router); not sent for a request still arriving.
                if let Some(at) = completed_at.filter(|_| !shared.router.suppress_envoy_headers) {
                    let service_ms = response_at.saturating_duration_since(at).as_millis() as u64;
                    parts
                        .headers
                        .insert(headers::X_ENVOY_UPSTREAM_SERVICE_TIME.clone(), headers::decimal_header(service_ms));
                }
                let deadlines = [
                    (
                        BodyTimeout::Route,
                        route_timeout.zip(completed_at).map(|(d, at)| at.max(timers.stream_start) + d),
                    ),
                    (BodyTimeout::MaxDuration, timers.max_stream_duration.map(|d| timers.stream_start + d)),
                ];
                let deadline = deadlines
                    .into_iter()
                    .filter_map(|(w, at)| Some((w, tokio::time::Instant::from_std(at?))))
                    .min_by_key(|(_, at)| *at);
                let body_timers = BodyTimers::new(
                    tokio::time::Instant::from_std(response_at),
                    deadline,
                    [
                        timers.per_try_idle.map(|d| (BodyTimeout::PerTryIdle, d)),
                        timers.stream_idle.map(|d| (BodyTimeout::StreamIdle, d)),
                    ],
                );
                // The request's end went to this attempt when the attempt started (a body
                // already whole) or when the downstream sent it (`US_TX_END`,
                // `%REQUEST_TX_DURATION%`); a body still coming leaves it unset, as a reset would.
                rq.info.last_upstream_tx_byte =
                    completed_at.map(|at| at.max(attempt_start).saturating_duration_since(rq.info.start));
                return RouterOutcome::Upstream {
                    head: parts,
                    body: Reused::new(UpstreamBody { body, conn: Some(conn), request: guard, timers: body_timers }),
                    weighted_index,
                };
            }
            Err(failure) => failure,
        };
        drop(guard);
        let outlier = match &failure {
            AttemptFailure::Pool(PoolFailure::Overflow) => None,
            AttemptFailure::Pool(_) => Some(OutlierResult::LocalOriginConnectFailed),
            AttemptFailure::Reset { .. } => Some(OutlierResult::ExtOriginRequestFailed),
            AttemptFailure::PerTryTimeout | AttemptFailure::PerTryIdleTimeout => {
                Some(OutlierResult::LocalOriginTimeout)
            }
        };
        if let Some(result) = outlier {
            cluster.outlier_result(&host, result);
        }
        if rq.body.borrow().downstream_error {
            // The downstream's body broke (reset, or malformed framing): nothing to retry.
            rq.context.shared.stats.downstream_rq_rx_reset.inc();
            return RouterOutcome::LocalReply(
                LocalReply::new(StatusCode::BAD_REQUEST, bytes::Bytes::new(), "downstream_protocol_error")
                    .with_flag(ResponseFlag::DownstreamProtocolError),
            );
        }
        // The attempt failed before any response header.
        let (reply, retriable) = match failure {
            AttemptFailure::Pool(PoolFailure::Overflow) => {
                rq.info.set_flag(ResponseFlag::UpstreamOverflow);
                let reply = LocalReply::upstream_reset(
                    ResponseFlag::UpstreamOverflow,
                    "overflow",
                    attempt > 1,
                    "upstream_reset_before_response_started{overflow}",
                );
                (reply, false)
            }
            AttemptFailure::Pool(failure) => {
                rq.info.upstream_transport_failure_reason = match &failure {
                    PoolFailure::ConnectFailure(detail) => Some(detail.clone()),
                    _ => None,
                };
                let reason = failure.reason();
                let details = match failure {
                    PoolFailure::ConnectTimeout => "upstream_reset_before_response_started{connection_timeout}",
                    _ => "upstream_reset_before_response_started{remote_connection_failure}",
                };
                let reply =
                    LocalReply::upstream_reset(ResponseFlag::UpstreamConnectionFailure, &reason, attempt > 1, details);
                let retriable = retry_on.contains(RetryOn::CONNECT_FAILURE)
                    || retry_on.contains(RetryOn::FIVE_XX)
                    || retry_on.contains(RetryOn::GATEWAY_ERROR)
                    || retry_on.contains(RetryOn::RESET)
                    || retry_on.contains(RetryOn::RESET_BEFORE_REQUEST);
                (reply, retriable)
            }
            AttemptFailure::Reset { reason, flag, refused } => {
                cluster.stats().upstream_rq_rx_reset().inc();
                let details = format!("upstream_reset_before_response_started{{{}}}", reason.replace(' ', "_"));
                let reply = LocalReply::upstream_reset(flag, reason, attempt > 1, &details);
                let retriable = retry_on.contains(RetryOn::RESET)
                    || retry_on.contains(RetryOn::FIVE_XX)
                    || retry_on.contains(RetryOn::GATEWAY_ERROR)
                    || (refused && retry_on.contains(RetryOn::REFUSED_STREAM));
                (reply, retriable)
            }
            AttemptFailure::PerTryTimeout | AttemptFailure::PerTryIdleTimeout => {
                if matches!(failure, AttemptFailure::PerTryIdleTimeout) {
                    cluster.stats().upstream_rq_per_try_idle_timeout().inc();
                } else {
                    cluster.stats().upstream_rq_per_try_timeout().inc();
                }
                host.stats.rq_timeout.fetch_add(1, Ordering::Relaxed);
                let retriable = retry_on.contains(RetryOn::FIVE_XX) || retry_on.contains(RetryOn::GATEWAY_ERROR);
                (LocalReply::upstream_timeout(timers.alt_timeout_response), retriable)
            }
        };
        if retriable && retries_left && replayable {
            if take_retry_slot(&cluster, priority, &mut retry_slot, rq.info) {
                if let Some(reply) = back_off(&mut rq, attempt, &cluster, &host, &timers).await {
                    return RouterOutcome::LocalReply(reply);
                }
                continue;
            }
        } else if retriable && !retries_left {
            cluster.stats().upstream_rq_retry_limit_exceeded().inc();
            rq.info.set_flag(ResponseFlag::UpstreamRetryLimitExceeded);
        }
        if let Some(flag) = reply.flag {
            rq.info.set_flag(flag);
        }
        // What the downstream gets for the attempt that failed last (Envoy's
        // `chargeUpstreamAbort`: 503 for a reset, a failed connection or an overflow, 504 for a
        // try's timeout, and an error for the host); one that is retried is not counted.
        worker.count_upstream_code(&cluster, reply.status.as_u16());
        charge_host(&host, true);
        return RouterOutcome::LocalReply(reply);
    }
}

/// A retry slot from the cluster's `max_retries` breaker (or retry budget); the one already
/// held is reused. `false` when the breaker refuses: Envoy's router then flags overflow.
fn take_retry_slot(
    cluster: &Arc<Cluster>,
    priority: RoutingPriority,
    held: &mut Option<ResourceGuard>,
    info: &mut StreamInfo,
) -> bool {
    if held.is_none() {
        *held = cluster.breakers(priority).try_acquire_retry();
    }
    if held.is_none() {
        cluster.stats().upstream_rq_retry_overflow().inc();
        info.set_flag(ResponseFlag::UpstreamOverflow);
        return false;
    }
    cluster.stats().upstream_rq_retry().inc();
    true
}

/// Waits the back-off before retry `attempt`; the route timeout's reply when it passes first.
async fn back_off(
    rq: &mut RouterRequest<'_>,
    attempt: u32,
    cluster: &Arc<Cluster>,
    host: &HostSharedPtr,
    timers: &Timers,
) -> Option<LocalReply> {
    cluster.stats().upstream_rq_retry_backoff_exponential().inc();
    let wait = rq.action.retry_policy.back_off(attempt);
    let route_deadline = rq.body.borrow().completed_at.zip(timers.route).map(|(at, d)| at.max(timers.stream_start) + d);
    match route_deadline {
        Some(deadline) if deadline <= clock::now() + wait => {
            tokio::time::sleep_until(deadline.into()).await;
            Some(stream_timeout(Timeout::Route, rq.context, cluster, host, rq.info, true, timers.alt_timeout_response))
        }
        _ => {
            tokio::time::sleep(wait).await;
            None
        }
    }
}

/// The local reply for a stream-wide timer, with its stats and flag.
fn stream_timeout(
    which: Timeout,
    context: &Rc<ConnectionContext>,
    cluster: &Arc<Cluster>,
    host: &HostSharedPtr,
    info: &mut StreamInfo,
    request_complete: bool,
    alt_timeout_response: bool,
) -> LocalReply {
    let stats = &context.shared.stats;
    // Envoy's `maybeRequestTimeoutCode`: 408 while the request is still arriving, 504 once it
    // was received whole.
    let timeout_code = if request_complete { StatusCode::GATEWAY_TIMEOUT } else { StatusCode::REQUEST_TIMEOUT };
    match which {
        Timeout::Route | Timeout::PerTry | Timeout::PerTryIdle => {
            cluster.outlier_result(host, OutlierResult::LocalOriginTimeout);
            cluster.stats().upstream_rq_timeout().inc();
            host.stats.rq_timeout.fetch_add(1, Ordering::Relaxed);
            let reply = LocalReply::upstream_timeout(alt_timeout_response);
            context.worker.count_upstream_code(cluster, reply.status.as_u16());
            charge_host(host, true);
            info.set_flag(ResponseFlag::UpstreamRequestTimeout);
            reply
        }
        Timeout::StreamIdle => {
            stats.downstream_rq_idle_timeout.inc();
            info.set_flag(ResponseFlag::StreamIdleTimeout);
            LocalReply::new(timeout_code, "stream timeout", "stream_idle_timeout")
                .with_flag(ResponseFlag::StreamIdleTimeout)
        }
        Timeout::Request => {
            stats.downstream_rq_timeout.inc();
            LocalReply::new(timeout_code, "request timeout", "request_overall_timeout")
        }
        Timeout::MaxStreamDuration => {
            stats.downstream_rq_max_duration_reached.inc();
            info.set_flag(ResponseFlag::DurationTimeout);
            LocalReply::new(StatusCode::REQUEST_TIMEOUT, "downstream duration timeout", "max_duration_timeout")
                .with_flag(ResponseFlag::DurationTimeout)
        }
    }
}

/// Whether a request that failed before any response can go out again on a new connection
/// without risk of the upstream acting on it twice: never sent (the connection was found
/// closed before dispatch), or sent on a reused HTTP/1.1 connection that the upstream closed
/// or reset without a response byte, when the method is idempotent (RFC 9110 §9.2.2) — the
/// rule HTTP clients such as Go's use for the same race.
fn stale_connection(e: &SendError, reused: bool, method: &http::Method) -> bool {
    let e = match e {
        SendError::Http1(h1_client::Error::NotSent) => return true,
        SendError::Http1(h1_client::Error::Closed(kind)) => {
            let reset = kind.is_none_or(|kind| {
                matches!(
                    kind,
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::UnexpectedEof
                )
            });
            return reused && method.is_idempotent() && reset;
        }
        SendError::Http1(_) => return false,
        SendError::Hyper(e) => e,
    };
    if e.is_canceled() {
        return true;
    }
    if !reused || !method.is_idempotent() {
        return false;
    }
    if e.is_incomplete_message() {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            );
        }
        source = s.source();
    }
    false
}

/// `UPE`: the upstream broke the protocol (or the request could not be encoded for it).
fn protocol_error() -> AttemptFailure {
    AttemptFailure::Reset { reason: "protocol error", flag: ResponseFlag::UpstreamProtocolError, refused: false }
}

fn classify(e: &SendError) -> AttemptFailure {
    let e = match e {
        SendError::Http1(h1_client::Error::Protocol(_)) => return protocol_error(),
        SendError::Http1(_) => return connection_termination(),
        SendError::Hyper(e) => e,
    };
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            if h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return AttemptFailure::Reset {
                    reason: "remote refused stream reset",
                    flag: ResponseFlag::UpstreamRemoteReset,
                    refused: true,
                };
            }
            if h2.is_remote() && h2.is_reset() {
                return AttemptFailure::Reset {
                    reason: "remote reset",
                    flag: ResponseFlag::UpstreamRemoteReset,
                    refused: false,
                };
            }
        }
        source = s.source();
    }
    if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        return protocol_error();
    }
    connection_termination()
}

/// `UC`: the connection closed or reset before a response.
fn connection_termination() -> AttemptFailure {
    AttemptFailure::Reset {
        reason: "connection termination",
        flag: ResponseFlag::UpstreamConnectionTermination,
        refused: false,
    }
}

fn take_header(headers: &mut http::HeaderMap, name: &HeaderName) -> Option<String> {
    headers.remove(name).and_then(|v| v.to_str().ok().map(str::to_string))
}

/// `:authority`, from the URI (HTTP/2, absolute-form) or the `host` header.
pub fn authority_of(head: &http::request::Parts) -> &str {
    if let Some(a) = head.uri.authority() {
        return a.as_str();
    }
    head.headers.get(HOST).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

/// A request's authority as a header value: from the `host` header it shares the request's
/// bytes (no copy); it becomes the upstream request's `host` (or `:authority`).
#[derive(Clone, Debug)]
pub struct Authority(pub HeaderValue);

impl Authority {
    pub fn of(head: &http::request::Parts) -> Self {
        match head.uri.authority() {
            Some(a) => Self::from_text(a.as_str()),
            None => match head.headers.get(HOST).filter(|v| v.to_str().is_ok()) {
                Some(v) => Authority(v.clone()),
                None => Authority(HeaderValue::from_static("")),
            },
        }
    }

    /// `text` copied into the thread's block of short pieces: an HTTP/2 request's
    /// `:authority` (in its URI, which lends no bytes) cost an allocation for the copy and
    /// another for its first clone, and two frees (callgrind: ~700 instructions of glibc's
    /// allocator per h2c request).
    pub fn from_text(text: &str) -> Self {
        Authority(headers::shared_value(text.as_bytes()))
    }

    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }
}

fn build_request(
    head: &http::request::Parts,
    path_and_query: &http::uri::PathAndQuery,
    authority: &Authority,
    conn: &PooledConn,
    rq: &RouterRequest<'_>,
    attempt: u32,
) -> Option<Request<AttemptBody>> {
    // Room for what is added below, so that no insert grows the map.
    let mut headers = http::HeaderMap::with_capacity(head.headers.len() + 4);
    for (name, value) in &head.headers {
        headers.append(name.clone(), value.clone());
    }
    let mut uri = http::uri::Parts::default();
    uri.path_and_query = Some(path_and_query.clone());
    let http2 = conn.protocol() == crate::upstream::pool::PoolProtocol::Http2;
    let version = if http2 {
        headers.remove(HOST);
        // The request's `:scheme` goes on (Envoy), unless it is to say how this one is sent.
        let match_upstream =
            rq.context.shared.config.scheme_header_transformation.as_ref().is_some_and(|t| t.match_upstream);
        uri.scheme = Some(match match_upstream {
            true if conn.over_tls() => http::uri::Scheme::HTTPS,
            true => http::uri::Scheme::HTTP,
            false => rq.info.scheme.clone(),
        });
        uri.authority = Some(http::uri::Authority::try_from(authority.as_str()).ok()?);
        Version::HTTP_2
    } else {
        headers.insert(HOST, authority.0.clone());
        if !headers.contains_key(http::header::CONTENT_LENGTH) && !rq.body.borrow().is_empty_and_complete() {
            // A body of unknown length goes chunked (hyper would send none for a GET).
            headers.insert(http::header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        }
        Version::HTTP_11
    };
    if rq.include_attempt_count {
        headers.insert(headers::X_ENVOY_ATTEMPT_COUNT.clone(), headers::decimal_header(u64::from(attempt)));
    }
    let mut request = Request::new(AttemptBody::new(rq.body.clone()));
    *request.method_mut() = head.method.clone();
    *request.uri_mut() = Uri::from_parts(uri).ok()?;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    if conn.preserves_header_case() && !http2 {
        // hyper's record of the names' case as the client wrote them.
        *request.extensions_mut() = head.extensions.clone();
    }
    Some(request)
}

/// Copies bytes both ways between an upgraded downstream and upstream until both close.
async fn tunnel(context: Rc<ConnectionContext>, downstream: DownstreamUpgrade, upstream: UpstreamUpgrade) {
    let stats = &context.shared.stats;
    let Some(mut downstream) = downstream.wait().await else { return };
    match upstream {
        UpstreamUpgrade::Http1(mut upstream) => splice(stats, &mut downstream, &mut upstream).await,
        UpstreamUpgrade::Hyper(upstream) => {
            let Ok(upstream) = upstream.await else { return };
            splice(stats, &mut downstream, &mut hyper_util::rt::TokioIo::new(upstream)).await;
        }
    }
}

/// Copies bytes both ways until both sides close, counted as an upgraded connection.
async fn splice<D, U>(stats: &HcmStats, downstream: &mut D, upstream: &mut U)
where
    D: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stats.downstream_cx_upgrades_total.inc();
    stats.downstream_cx_upgrades_active.inc();
    let _ = tokio::io::copy_bidirectional(downstream, upstream).await;
    stats.downstream_cx_upgrades_active.dec();
}

/// [`connect_terminate`], boxed and polled through its vtable, out of line. Boxed, its state
/// (1.7 KB) does not size every request's future; behind `dyn` and not inlined, its poll does
/// not add its temporaries (the TLS connect's 1.4 KB among them) to the stack frame that every
/// request's [`route`] polls in: frames the size of the first-level cache push each request's
/// deeper calls onto stack lines that have left it.
#[inline(never)]
fn connect_terminate_boxed<'a>(
    rq: &'a mut RouterRequest<'_>,
    cluster: &'a Arc<Cluster>,
    on_upgrade: DownstreamUpgrade,
) -> Pin<Box<dyn Future<Output = RouterOutcome> + 'a>> {
    Box::pin(connect_terminate(rq, cluster, on_upgrade))
}

/// CONNECT terminated here (`connect_config`): a TCP connection to a host of the cluster,
/// `200` to the downstream, then the payload both ways as raw bytes.
async fn connect_terminate(
    rq: &mut RouterRequest<'_>,
    cluster: &Arc<Cluster>,
    on_upgrade: DownstreamUpgrade,
) -> RouterOutcome {
    let worker = &rq.context.worker;
    let host = match worker.cluster_manager.choose_host(&cluster.name) {
        Ok((_, host)) => host,
        Err(_) => {
            cluster.stats().upstream_cx_none_healthy().inc();
            return RouterOutcome::LocalReply(LocalReply::no_healthy_upstream());
        }
    };
    rq.info.upstream_host = Some(host.address());
    let Some(slot) = cluster.breakers(rq.action.priority).connections.try_acquire() else {
        cluster.stats().upstream_cx_overflow().inc();
        return RouterOutcome::LocalReply(LocalReply::upstream_reset(
            ResponseFlag::UpstreamOverflow,
            "overflow",
            false,
            "upstream_reset_before_response_started{overflow}",
        ));
    };
    let mut cx = crate::upstream::upstream_cx::UpstreamCx::new(cluster.clone(), host.clone(), slot);
    let connect = crate::tls::client::connect(cluster, host.address(), crate::tls::client::Alpn::Http1, None);
    let stream = match tokio::time::timeout(cluster.connect_timeout(), connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            cluster.stats().upstream_cx_connect_fail().inc();
            let detail = e.transport_failure_reason();
            return RouterOutcome::LocalReply(LocalReply::upstream_reset(
                ResponseFlag::UpstreamConnectionFailure,
                &PoolFailure::ConnectFailure(detail).reason(),
                false,
                "upstream_reset_before_response_started{remote_connection_failure}",
            ));
        }
        Err(_) => {
            cluster.stats().upstream_cx_connect_timeout().inc();
            cluster.stats().upstream_cx_connect_fail().inc();
            return RouterOutcome::LocalReply(LocalReply::upstream_reset(
                ResponseFlag::UpstreamConnectionFailure,
                "connection timeout",
                false,
                "upstream_reset_before_response_started{connection_timeout}",
            ));
        }
    };
    let mut activity = Instant::now();
    cx.connected(&mut activity);
    let context = rq.context.clone();
    tokio::task::spawn_local(async move {
        let Some(mut downstream) = on_upgrade.wait().await else { return };
        let mut upstream = stream;
        splice(&context.shared.stats, &mut downstream, &mut upstream).await;
        drop(cx);
    });
    let mut reply = LocalReply::new(StatusCode::OK, bytes::Bytes::new(), "via_upstream");
    reply.tunnel = true;
    RouterOutcome::LocalReply(reply)
}

/// `host` → `host-shadow`, before any port, as Envoy names mirrored requests' authority.
fn shadow_host(authority: &str) -> String {
    match crate::router::action::split_host_port(authority) {
        (host, Some(port)) => format!("{host}-shadow:{port}"),
        (host, None) => format!("{host}-shadow"),
    }
}

fn clone_head(head: &http::request::Parts) -> http::request::Parts {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = head.method.clone();
    parts.uri = head.uri.clone();
    parts.version = head.version;
    parts.headers = head.headers.clone();
    parts
}

/// A mirrored request (`request_mirror_policies`): fire and forget, its response discarded.
/// It is sent once the whole request body is in, from the bytes kept for retries; a body too
/// big to keep is not mirrored (`retry_or_shadow_abandoned`), as Envoy.
struct Shadow {
    context: Rc<ConnectionContext>,
    cluster: String,
    head: http::request::Parts,
    path_and_query: String,
    authority: String,
    body: Rc<RefCell<BodySource>>,
    timeout: Option<Duration>,
    priority: RoutingPriority,
}

impl Shadow {
    /// Sends the copy on a task of its own. Out of line: built in [`route`], the task's
    /// future (2 KB) would sit in the stack frame every request's [`route`] polls in.
    #[inline(never)]
    fn spawn(self) {
        tokio::task::spawn_local(self.send());
    }

    async fn send(self) {
        // A body that never completes (the main request failed early) must not hold the
        // shadow forever.
        let limit = self.timeout.unwrap_or(Duration::from_secs(15));
        let _ = tokio::time::timeout(limit, self.exchange()).await;
    }

    async fn exchange(self) {
        let worker = &self.context.worker;
        let Ok((cluster, host)) = worker.cluster_manager.choose_host(&self.cluster) else { return };
        let mut progress = self.body.borrow_mut().subscribe_progress();
        loop {
            let (complete, replayable, failed) = {
                let b = self.body.borrow();
                (b.complete, b.replayable(), b.downstream_error)
            };
            if failed {
                return;
            }
            if !replayable {
                cluster.stats().retry_or_shadow_abandoned().inc();
                return;
            }
            if complete {
                break;
            }
            if progress.changed().await.is_err() {
                return;
            }
        }
        let bytes = self.body.borrow().logged();
        let body = BodySource::buffered(std::iter::once(bytes).filter(|b| !b.is_empty()).collect(), None);
        let mut guard = UpstreamRequestGuard::new(cluster.clone(), host.clone(), body.clone());
        let pool = worker.pools().get(&cluster, &host, pool_protocol(&cluster, self.head.version), None);
        let exchange = async {
            let mut conn = pool.acquire(self.priority, false).await.ok()?;
            let Some(slot) = cluster.breakers(self.priority).requests.try_acquire() else {
                cluster.stats().upstream_rq_pending_overflow().inc();
                conn.release(true);
                return None;
            };
            guard.attach(slot);
            let http2 = conn.protocol() == crate::upstream::pool::PoolProtocol::Http2;
            let mut headers = self.head.headers.clone();
            let mut builder = Request::builder().method(self.head.method.clone());
            if http2 {
                headers.remove(HOST);
                builder = builder.version(Version::HTTP_2).uri(
                    Uri::builder()
                        .scheme("http")
                        .authority(self.authority.as_str())
                        .path_and_query(self.path_and_query.as_str())
                        .build()
                        .ok()?,
                );
            } else {
                headers.insert(HOST, HeaderValue::from_str(&self.authority).ok()?);
                builder = builder.version(Version::HTTP_11).uri(self.path_and_query.as_str());
            }
            let mut request = builder.body(AttemptBody::new(body)).ok()?;
            *request.headers_mut() = headers;
            let response = conn.send_request(Outgoing::Request(request)).await.ok()?;
            worker.count_upstream_code(&cluster, response.status().as_u16());
            let complete = http_body_util::BodyExt::collect(response.into_body()).await.is_ok();
            conn.release(complete);
            Some(complete)
        };
        let done = exchange.await;
        guard.complete(done == Some(true));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_and_print() {
        assert_eq!(parse_grpc_timeout(b"300m"), Some(Duration::from_millis(300)));
        assert_eq!(parse_grpc_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout(b"1500u"), Some(Duration::from_millis(2)), "rounded up");
        assert_eq!(parse_grpc_timeout(b"1n"), Some(Duration::from_millis(1)));
        for bad in [&b""[..], b"m", b"123456789m", b"12x", b"-1S", b"1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout_text(Duration::from_millis(1000)), "1000m");
        assert_eq!(grpc_timeout_text(Duration::from_secs(200_000)), "200000S");
    }
}
