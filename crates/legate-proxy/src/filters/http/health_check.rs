//! `envoy.filters.http.health_check` (`envoy.extensions.filters.http.health_check.v3.HealthCheck`),
//! Envoy's "Health check" filter page: answers the health checks of the proxies in front of
//! this one.
//!
//! A request is a health check when it matches every one of `headers`; it is marked as one
//! (`StreamInfo::health_check`). Without `pass_through_mode` the filter answers it: 200, or
//! 503 with `LH` when the admin's `/healthcheck/fail` was called or a cluster of
//! `cluster_min_healthy_percentages` has too few available (healthy or degraded) hosts. In
//! pass-through mode the health check goes upstream, unless the server is failed (503) or
//! `cache_time` holds a recent upstream answer, which is replayed. Answers have no body.
//!
//! While the server is failed, responses to other requests carry
//! `x-envoy-immediate-health-check-fail: true`, so the proxies in front stop sending here at
//! once.
//!
//! Responses to health checks, answered here or passed through, carry
//! `x-envoy-upstream-healthchecked-cluster`: the local node's cluster.
//!
//! Differs from Envoy on purpose: a health check with a body is answered when its headers
//! arrive, without waiting for the body.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::StatusCode;
use legate_config::filters::http::health_check::HealthCheck;
use legate_config::route::HeaderMatcher;
use legate_stats::Scope;

use super::{headers_match, StreamView};
use crate::http::filter::{FilterCallbacks, FilterHeadersStatus, HttpFilter};
use crate::http::{LocalReply, ResponseFlag};
use crate::upstream::Cluster;

/// Set on responses to other requests while the server fails its health checks.
pub use crate::http::headers::X_ENVOY_IMMEDIATE_HEALTH_CHECK_FAIL;

/// On a health check's response: the cluster of the node that answered.
static X_ENVOY_UPSTREAM_HEALTHCHECKED_CLUSTER: HeaderName =
    HeaderName::from_static("x-envoy-upstream-healthchecked-cluster");
/// An upstream (or a cached answer) reports itself degraded.
pub const X_ENVOY_DEGRADED: HeaderName = HeaderName::from_static("x-envoy-degraded");

legate_stats::stats! {
    /// `http.<stat_prefix>.health_check.*`, Envoy's ALL_HEALTH_CHECK_FILTER_STATS: counted for
    /// each health check the filter answers itself.
    pub struct HealthCheckStats {
        counter request_total,
        counter failed,
        counter ok,
        counter cached_response,
        counter failed_cluster_not_found,
        counter failed_cluster_empty,
        counter failed_cluster_unhealthy,
        counter degraded,
    }
}

/// The filter's config, shared by every stream on every worker.
pub struct HealthCheckFilterConfig {
    pub name: String,
    pass_through_mode: bool,
    headers: Vec<HeaderMatcher>,
    /// Cluster name → minimum percentage of available hosts; empty in pass-through mode.
    cluster_min_healthy_percentages: Vec<(String, f64)>,
    cache: Option<HealthCheckCache>,
    stats: HealthCheckStats,
}

impl HealthCheckFilterConfig {
    /// `scope` is the connection manager's `http.<stat_prefix>`.
    pub fn new(name: String, config: &HealthCheck, scope: &Scope) -> Result<Self, String> {
        let pass_through_mode = config.pass_through_mode.ok_or("health_check: pass_through_mode is required")?;
        let cache_time = config.cache_time.map(|d| d.as_std()).filter(|d| !d.is_zero());
        // Envoy's factory refuses this combination.
        if !pass_through_mode && cache_time.is_some() {
            return Err("health_check: cache_time_ms must not be set when path_through_mode is disabled".into());
        }
        let cluster_min_healthy_percentages = if pass_through_mode {
            Vec::new()
        } else {
            config.cluster_min_healthy_percentages.iter().map(|(name, p)| (name.clone(), p.value)).collect()
        };
        Ok(HealthCheckFilterConfig {
            name,
            pass_through_mode,
            headers: config.headers.clone(),
            cluster_min_healthy_percentages,
            cache: cache_time.map(HealthCheckCache::new),
            stats: HealthCheckStats::new(&scope.scope("health_check")),
        })
    }

    /// The local answer to a health check (Envoy's `HealthCheckFilter::onComplete`), given
    /// whether the server is failed and how to find a cluster.
    fn answer(&self, server_failed: bool, cluster: impl Fn(&str) -> Option<Arc<Cluster>>, now: Instant) -> LocalReply {
        let stats = &self.stats;
        stats.request_total.inc();
        if server_failed {
            stats.failed.inc();
            return LocalReply::new(StatusCode::SERVICE_UNAVAILABLE, Bytes::new(), "health_check_failed")
                .with_flag(ResponseFlag::FailedLocalHealthCheck);
        }
        let mut status = StatusCode::OK;
        let mut details = "health_check_ok";
        let mut degraded = false;
        if let Some((code, was_degraded)) = self.cache.as_ref().and_then(|c| c.get(now)) {
            stats.cached_response.inc();
            status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            details = "health_check_cached";
            degraded = was_degraded;
        } else {
            for (name, min_healthy) in &self.cluster_min_healthy_percentages {
                details = "health_check_ok_cluster_healthy";
                let Some(cluster) = cluster(name) else {
                    stats.failed_cluster_not_found.inc();
                    status = StatusCode::SERVICE_UNAVAILABLE;
                    details = "health_check_failed_no_cluster_found";
                    break;
                };
                let (total, available) = membership(&cluster);
                if total == 0 {
                    // An empty cluster is only good enough when nothing is asked of it.
                    if *min_healthy == 0.0 {
                        continue;
                    }
                    stats.failed_cluster_empty.inc();
                    status = StatusCode::SERVICE_UNAVAILABLE;
                    details = "health_check_failed_cluster_empty";
                    break;
                }
                if 100.0 * (available as f64) < (total as f64) * min_healthy {
                    stats.failed_cluster_unhealthy.inc();
                    status = StatusCode::SERVICE_UNAVAILABLE;
                    details = "health_check_failed_cluster_unhealthy";
                    break;
                }
            }
        }
        if degraded {
            stats.degraded.inc();
        }
        let mut reply = LocalReply::new(status, Bytes::new(), details);
        if status.is_success() {
            stats.ok.inc();
        } else {
            stats.failed.inc();
            reply = reply.with_flag(ResponseFlag::FailedLocalHealthCheck);
        }
        if degraded {
            reply = reply.with_header(X_ENVOY_DEGRADED, HeaderValue::from_static(""));
        }
        reply
    }
}

/// Hosts of `cluster`, and how many of them take traffic (healthy or degraded), as Envoy's
/// `membership_total` and `membership_healthy + membership_degraded`. Read from the hosts'
/// live health flags.
fn membership(cluster: &Cluster) -> (u64, u64) {
    let priority_set = cluster.priority_set();
    let (mut total, mut available) = (0, 0);
    for host in priority_set.all_hosts() {
        total += 1;
        if host.healthy() || host.degraded() {
            available += 1;
        }
    }
    (total, available)
}

/// Envoy's `HealthCheckCacheManager`: the last upstream answer to a health check, replayed
/// until the cache is cleared. Envoy clears it on a timer every `cache_time`; here the
/// periods are counted from the config's creation, so a cached answer lives until the end of
/// the period it was stored in, as there.
struct HealthCheckCache {
    cache_time: Duration,
    start: Instant,
    /// 1 + the period in which the answer was stored; 0: nothing stored yet.
    stored_in: AtomicU64,
    code: AtomicU16,
    degraded: AtomicBool,
}

impl HealthCheckCache {
    fn new(cache_time: Duration) -> Self {
        HealthCheckCache {
            cache_time,
            start: Instant::now(),
            stored_in: AtomicU64::new(0),
            code: AtomicU16::new(0),
            degraded: AtomicBool::new(false),
        }
    }

    fn period(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.start).as_nanos();
        u64::try_from(elapsed / self.cache_time.as_nanos().max(1)).unwrap_or(u64::MAX - 1)
    }

    fn set(&self, code: u16, degraded: bool, now: Instant) {
        self.code.store(code, Ordering::Relaxed);
        self.degraded.store(degraded, Ordering::Relaxed);
        self.stored_in.store(self.period(now) + 1, Ordering::Release);
    }

    /// The cached answer, if one was stored in the current period.
    fn get(&self, now: Instant) -> Option<(u16, bool)> {
        if self.stored_in.load(Ordering::Acquire) != self.period(now) + 1 {
            return None;
        }
        Some((self.code.load(Ordering::Relaxed), self.degraded.load(Ordering::Relaxed)))
    }
}

/// One stream's health check filter.
pub struct HealthCheckFilter {
    config: Arc<HealthCheckFilterConfig>,
    /// The request matched `headers`.
    health_check_request: bool,
}

impl HealthCheckFilter {
    pub fn new(config: Arc<HealthCheckFilterConfig>) -> Self {
        HealthCheckFilter { config, health_check_request: false }
    }

    /// `decode_headers` given whether the server is failed and how to find a cluster.
    fn on_request(
        &mut self,
        head: &http::request::Parts,
        stream: StreamView<'_>,
        server_failed: bool,
        cluster: impl Fn(&str) -> Option<Arc<Cluster>>,
        now: Instant,
    ) -> FilterHeadersStatus {
        let config = &self.config;
        if !headers_match(&config.headers, head, stream.info.scheme.as_str()) {
            return FilterHeadersStatus::Continue;
        }
        self.health_check_request = true;
        stream.info.health_check = true;
        let cached = config.cache.as_ref().is_some_and(|c| c.get(now).is_some());
        if config.pass_through_mode && !server_failed && !cached {
            return FilterHeadersStatus::Continue;
        }
        FilterHeadersStatus::LocalReply(config.answer(server_failed, cluster, now))
    }

    /// `encode_headers` given whether the server is failed and the local node's cluster.
    fn on_response(&mut self, head: &mut http::response::Parts, server_failed: bool, cluster: &str, now: Instant) {
        if self.health_check_request {
            if let Some(cache) = &self.config.cache {
                cache.set(head.status.as_u16(), head.headers.contains_key(X_ENVOY_DEGRADED), now);
            }
            if let Ok(value) = HeaderValue::from_str(cluster) {
                head.headers.insert(X_ENVOY_UPSTREAM_HEALTHCHECKED_CLUSTER.clone(), value);
            }
        } else if server_failed {
            head.headers.insert(X_ENVOY_IMMEDIATE_HEALTH_CHECK_FAIL.clone(), HeaderValue::from_static("true"));
        }
    }
}

impl HttpFilter for HealthCheckFilter {
    fn decode_headers(
        &mut self,
        head: &mut http::request::Parts,
        _end_stream: bool,
        cb: &mut FilterCallbacks<'_>,
    ) -> FilterHeadersStatus {
        let worker = cb.worker.clone();
        let stream = StreamView::of(cb);
        let failed = worker.server.health_check_failed.load(Ordering::Relaxed);
        self.on_request(head, stream, failed, |name| worker.cluster_manager.get(name), Instant::now())
    }

    fn encode_headers(&mut self, head: &mut http::response::Parts, cb: &mut FilterCallbacks<'_>) {
        let server = &cb.worker.server;
        let failed = server.health_check_failed.load(Ordering::Relaxed);
        self.on_response(head, failed, &server.local_cluster_name, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use legate_config::cluster::Cluster as ClusterConfig;
    use legate_config::path::from_value;

    use super::super::test_support::*;
    use super::*;

    fn config(yaml_text: &str) -> (Arc<legate_stats::Store>, Arc<HealthCheckFilterConfig>) {
        let (store, root) = stats();
        let config: HealthCheck = from_value(yaml(yaml_text)).unwrap();
        let config = HealthCheckFilterConfig::new("hc".into(), &config, &root.scope("http.ingress")).unwrap();
        (store, Arc::new(config))
    }

    fn no_cluster(_: &str) -> Option<Arc<Cluster>> {
        None
    }

    fn run(
        filter: &mut HealthCheckFilter,
        head: &http::request::Parts,
        failed: bool,
        cluster: impl Fn(&str) -> Option<Arc<Cluster>>,
        now: Instant,
    ) -> (FilterHeadersStatus, bool) {
        let mut info = stream_info();
        let stream = StreamView { info: &mut info, route: None, virtual_host: None, route_config: None };
        let status = filter.on_request(head, stream, failed, cluster, now);
        (status, info.health_check)
    }

    fn reply(status: FilterHeadersStatus) -> LocalReply {
        match status {
            FilterHeadersStatus::LocalReply(reply) => reply,
            _ => panic!("expected a local reply"),
        }
    }

    const HC: &str = "
pass_through_mode: false
headers:
- name: ':path'
  string_match: {exact: /healthz}
";

    #[test]
    fn answers_200_with_no_body_and_marks_the_stream() {
        let (store, config) = config(HC);
        let mut filter = HealthCheckFilter::new(config);
        let (status, marked) = run(&mut filter, &request("GET", "/healthz", &[]), false, no_cluster, Instant::now());
        let reply = reply(status);
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.body.is_empty());
        assert_eq!(reply.details, "health_check_ok");
        assert_eq!(reply.flag, None);
        assert!(marked);
        assert_eq!(store.counter_value("http.ingress.health_check.request_total"), Some(1));
        assert_eq!(store.counter_value("http.ingress.health_check.ok"), Some(1));

        // A health check response gets no fail header, and names the local node's cluster.
        let mut head = response(200);
        filter.on_response(&mut head, false, "edge", Instant::now());
        assert_eq!(head.headers.len(), 1);
        assert_eq!(head.headers["x-envoy-upstream-healthchecked-cluster"], "edge");
    }

    #[test]
    fn other_requests_pass_and_learn_the_server_is_failed() {
        let (store, config) = config(HC);
        let mut filter = HealthCheckFilter::new(config);
        let (status, marked) = run(&mut filter, &request("GET", "/app", &[]), true, no_cluster, Instant::now());
        assert!(matches!(status, FilterHeadersStatus::Continue));
        assert!(!marked);
        let mut head = response(200);
        filter.on_response(&mut head, true, "edge", Instant::now());
        assert_eq!(head.headers[&X_ENVOY_IMMEDIATE_HEALTH_CHECK_FAIL], "true");
        assert_eq!(store.counter_value("http.ingress.health_check.request_total"), Some(0));
    }

    #[test]
    fn failed_server_answers_503_lh() {
        let (store, config) = config(HC);
        let mut filter = HealthCheckFilter::new(config);
        let (status, _) = run(&mut filter, &request("GET", "/healthz", &[]), true, no_cluster, Instant::now());
        let reply = reply(status);
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.details, "health_check_failed");
        assert_eq!(reply.flag, Some(ResponseFlag::FailedLocalHealthCheck));
        assert!(reply.body.is_empty());
        assert_eq!(store.counter_value("http.ingress.health_check.failed"), Some(1));
    }

    #[test]
    fn pass_through_forwards_unless_failed() {
        let (_store, config) =
            config("pass_through_mode: true\nheaders: [{name: ':path', string_match: {exact: /hc}}]");
        let mut filter = HealthCheckFilter::new(config.clone());
        let (status, marked) = run(&mut filter, &request("GET", "/hc", &[]), false, no_cluster, Instant::now());
        assert!(matches!(status, FilterHeadersStatus::Continue));
        assert!(marked);
        let mut filter = HealthCheckFilter::new(config);
        let (status, _) = run(&mut filter, &request("GET", "/hc", &[]), true, no_cluster, Instant::now());
        assert_eq!(reply(status).status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn pass_through_cache_replays_the_upstream_answer_for_its_period() {
        let (store, config) =
            config("pass_through_mode: true\ncache_time: 5s\nheaders: [{name: ':path', string_match: {exact: /hc}}]");
        let start = config.cache.as_ref().unwrap().start;
        let head = request("GET", "/hc", &[]);

        // Nothing cached: goes upstream; the upstream's degraded 503 is remembered.
        let mut filter = HealthCheckFilter::new(config.clone());
        let t1 = start + Duration::from_secs(1);
        assert!(matches!(run(&mut filter, &head, false, no_cluster, t1).0, FilterHeadersStatus::Continue));
        let mut upstream = response(503);
        upstream.headers.insert(X_ENVOY_DEGRADED, HeaderValue::from_static(""));
        filter.on_response(&mut upstream, false, "edge", t1);

        // Same period: answered from the cache.
        let mut filter = HealthCheckFilter::new(config.clone());
        let reply = reply(run(&mut filter, &head, false, no_cluster, start + Duration::from_secs(4)).0);
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.details, "health_check_cached");
        assert_eq!(reply.flag, Some(ResponseFlag::FailedLocalHealthCheck));
        assert!(reply.headers.contains_key(X_ENVOY_DEGRADED));
        assert_eq!(store.counter_value("http.ingress.health_check.cached_response"), Some(1));
        assert_eq!(store.counter_value("http.ingress.health_check.degraded"), Some(1));

        // Next period: cleared, upstream again.
        let mut filter = HealthCheckFilter::new(config);
        let later = start + Duration::from_secs(6);
        assert!(matches!(run(&mut filter, &head, false, no_cluster, later).0, FilterHeadersStatus::Continue));
    }

    #[test]
    fn cache_time_without_pass_through_is_refused() {
        let (_store, root) = stats();
        let config: HealthCheck = from_value(yaml("pass_through_mode: false\ncache_time: 1s")).unwrap();
        let err = HealthCheckFilterConfig::new("hc".into(), &config, &root).err().unwrap();
        assert!(err.contains("cache_time"), "{err}");
    }

    fn cluster(name: &str, health: &[&str]) -> Arc<Cluster> {
        let endpoints: Vec<String> = health
            .iter()
            .enumerate()
            .map(|(i, h)| {
                format!(
                    "{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {}}}}}}}, health_status: {h}}}",
                    1000 + i
                )
            })
            .collect();
        let text = format!(
            "name: {name}\nconnect_timeout: 1s\ntype: STATIC\nload_assignment:\n  cluster_name: {name}\n  endpoints: [{{lb_endpoints: [{}]}}]",
            endpoints.join(", ")
        );
        let config: ClusterConfig = from_value(yaml(&text)).unwrap();
        let (_store, root) = stats();
        Arc::new(Cluster::new(config, &root.scope(&format!("cluster.{name}"))).unwrap())
    }

    #[test]
    fn cluster_min_healthy_percentages_decide_the_answer() {
        let (store, config) = config(
            "
pass_through_mode: false
headers: [{name: ':path', string_match: {exact: /hc}}]
cluster_min_healthy_percentages:
  a: {value: 50}
  b: {value: 75}
",
        );
        let head = request("GET", "/hc", &[]);
        let a = cluster("a", &["HEALTHY", "UNHEALTHY"]);
        let b_good = cluster("b", &["HEALTHY", "DEGRADED", "HEALTHY", "UNHEALTHY"]);
        let b_bad = cluster("b", &["HEALTHY", "UNHEALTHY", "HEALTHY", "UNHEALTHY"]);

        let lookup = |b: &Arc<Cluster>| {
            let (a, b) = (a.clone(), b.clone());
            move |name: &str| match name {
                "a" => Some(a.clone()),
                "b" => Some(b.clone()),
                _ => None,
            }
        };
        let mut filter = HealthCheckFilter::new(config.clone());
        let ok = reply(run(&mut filter, &head, false, lookup(&b_good), Instant::now()).0);
        assert_eq!((ok.status, ok.details.as_str()), (StatusCode::OK, "health_check_ok_cluster_healthy"));

        let mut filter = HealthCheckFilter::new(config.clone());
        let bad = reply(run(&mut filter, &head, false, lookup(&b_bad), Instant::now()).0);
        assert_eq!(
            (bad.status, bad.details.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "health_check_failed_cluster_unhealthy")
        );
        assert_eq!(bad.flag, Some(ResponseFlag::FailedLocalHealthCheck));
        assert_eq!(store.counter_value("http.ingress.health_check.failed_cluster_unhealthy"), Some(1));

        let mut filter = HealthCheckFilter::new(config.clone());
        let only_a = move |name: &str| (name == "a").then(|| a.clone());
        let missing = reply(run(&mut filter, &head, false, only_a, Instant::now()).0);
        assert_eq!(missing.details, "health_check_failed_no_cluster_found");
        assert_eq!(store.counter_value("http.ingress.health_check.failed_cluster_not_found"), Some(1));

        let mut filter = HealthCheckFilter::new(config);
        let empty = cluster("a", &[]);
        let empty_lookup = move |_: &str| Some(empty.clone());
        let reply = reply(run(&mut filter, &head, false, empty_lookup, Instant::now()).0);
        assert_eq!(reply.details, "health_check_failed_cluster_empty");
        assert_eq!(store.counter_value("http.ingress.health_check.failed"), Some(3));
    }
}
