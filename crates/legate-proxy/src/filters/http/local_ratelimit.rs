//! `envoy.filters.http.local_ratelimit`
//! (`envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit`), Envoy's "Local rate
//! limit" filter page: a token bucket shared by every worker, checked on each request.
//!
//! `filter_enabled` picks the requests the limit applies to (absent: none, the filter does
//! nothing); of those refused by the bucket, `filter_enforced` picks the ones answered
//! `status` (default 429) with body `local_rate_limited`, `response_headers_to_add` and flag
//! `RL` (absent: none, they are only counted and get `request_headers_to_add_when_not_enforced`).
//! A route or virtual host may carry its own config (`typed_per_filter_config`), with its own
//! bucket and its own stats, replacing the filter's. With `enable_x_ratelimit_headers:
//! DRAFT_VERSION_03` responses carry `x-ratelimit-limit`, `-remaining` and `-reset`.
//!
//! The bucket is Envoy's atomic one (`AtomicTokenBucketImpl`): it starts full with
//! `max_tokens` and earns `tokens_per_fill` every `fill_interval`, continuously, computed from
//! the time of each request; no timer runs.
//!
//! Not supported: `local_rate_limit_per_downstream_connection` (a bucket per downstream
//! connection needs state that lives and dies with the connection, which filters do not see
//! yet): refused on the filter; a route config asking for it is not applied, with a warning.
//! gRPC requests get the plain HTTP answer (`rate_limited_as_resource_exhausted` has no effect).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http::header::{HeaderName, HeaderValue};
use http::StatusCode;
use legate_config::core::TokenBucket;
use legate_config::filters::http::local_ratelimit::{LocalRateLimit, XRateLimitHeadersRfcVersion};
use legate_config::route::FilterPerRouteConfig;
use legate_stats::Scope;

use super::route_state::{Owner, RouteStates};
use super::StreamView;
use crate::http::filter::{FilterCallbacks, FilterHeadersStatus, HttpFilter};
use crate::http::{LocalReply, ResponseFlag};
use crate::router::HeaderParser;

pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

legate_stats::stats! {
    /// `<stat_prefix>.http_local_rate_limit.*` (the filter's own `stat_prefix`, not under
    /// `http.`), Envoy's ALL_LOCAL_RATE_LIMIT_STATS.
    pub struct LocalRateLimitStats {
        counter enabled,
        counter enforced,
        counter rate_limited,
        counter ok,
    }
}

/// The filter's config, shared by every stream on every worker: its own limiter and the
/// limiters of the routes that carry their own config.
pub struct LocalRateLimitFilterConfig {
    pub name: String,
    limiter: RateLimiter,
    routes: RouteStates<RateLimiter>,
    /// The root scope: route configs name their own stat prefix.
    root: Scope,
}

impl LocalRateLimitFilterConfig {
    pub fn new(name: String, config: &LocalRateLimit, root: &Scope) -> Result<Self, String> {
        let limiter = RateLimiter::new(config, root).map_err(|e| format!("local_ratelimit: {e}"))?;
        Ok(LocalRateLimitFilterConfig { name, limiter, routes: RouteStates::default(), root: root.clone() })
    }
}

/// One limit: Envoy's local rate limit `FilterConfig`, built for the filter and for each
/// route config.
struct RateLimiter {
    stats: LocalRateLimitStats,
    status: StatusCode,
    bucket: Option<RateLimitTokenBucket>,
    filter_enabled: Option<legate_config::core::RuntimeFractionalPercent>,
    filter_enforced: Option<legate_config::core::RuntimeFractionalPercent>,
    response_headers_to_add: HeaderParser,
    request_headers_to_add_when_not_enforced: HeaderParser,
    x_ratelimit_headers: bool,
}

impl RateLimiter {
    fn new(config: &LocalRateLimit, root: &Scope) -> Result<Self, String> {
        if config.local_rate_limit_per_downstream_connection {
            return Err("local_rate_limit_per_downstream_connection is not supported".into());
        }
        let status =
            StatusCode::from_u16(config.status()).map_err(|_| format!("invalid status {}", config.status()))?;
        Ok(RateLimiter {
            stats: LocalRateLimitStats::new(&root.scope(&format!("{}.http_local_rate_limit", config.stat_prefix))),
            status,
            // Without a bucket (a filter whose routes carry the limits), Envoy limits nothing:
            // an enabled request is allowed and counted `ok`.
            bucket: config.token_bucket.as_ref().map(|bucket| RateLimitTokenBucket::new(bucket, Instant::now())),
            filter_enabled: config.filter_enabled.clone(),
            filter_enforced: config.filter_enforced.clone(),
            response_headers_to_add: HeaderParser::new(&config.response_headers_to_add, &[])?,
            request_headers_to_add_when_not_enforced: HeaderParser::new(
                &config.request_headers_to_add_when_not_enforced,
                &[],
            )?,
            x_ratelimit_headers: config.enable_x_ratelimit_headers == XRateLimitHeadersRfcVersion::DraftVersion03,
        })
    }

    fn enabled(&self) -> bool {
        self.filter_enabled.as_ref().is_some_and(crate::runtime::fraction_enabled)
    }

    fn enforced(&self) -> bool {
        self.filter_enforced.as_ref().is_some_and(crate::runtime::fraction_enabled)
    }
}

/// A token bucket shared across workers, refilled from elapsed time, as a single atomic: the
/// instant at which the bucket will be full again (a "theoretical arrival time"). Each token
/// taken pushes it one token interval (`fill_interval / tokens_per_fill`) further; a request
/// is refused when that would put it more than `max_tokens` intervals ahead of now. This is
/// a bucket of `max_tokens` filled continuously at `tokens_per_fill / fill_interval`,
/// Envoy's `AtomicTokenBucketImpl`, without a lock or a timer.
pub struct RateLimitTokenBucket {
    max_tokens: u32,
    /// Nanoseconds to earn one token (at least 1; rounded down, a nanosecond at most).
    token_interval: u64,
    /// `max_tokens` token intervals.
    capacity: u64,
    /// `1 / fill_rate` in milliseconds, rounded up, as Envoy reports the wait for a token.
    next_token_ms: u64,
    start: Instant,
    /// When the bucket is full again, in nanoseconds since `start`; at or before now: full.
    full_at: AtomicU64,
}

impl RateLimitTokenBucket {
    pub fn new(config: &TokenBucket, start: Instant) -> Self {
        let tokens_per_fill = config.tokens_per_fill().max(1);
        let fill_interval = config.fill_interval.as_std();
        let token_interval =
            u64::try_from(fill_interval.as_nanos() / u128::from(tokens_per_fill)).unwrap_or(u64::MAX).max(1);
        let fill_rate = f64::from(tokens_per_fill) / fill_interval.as_secs_f64();
        RateLimitTokenBucket {
            max_tokens: config.max_tokens,
            token_interval,
            capacity: token_interval.saturating_mul(u64::from(config.max_tokens)),
            next_token_ms: (1000.0 / fill_rate).ceil() as u64,
            start,
            full_at: AtomicU64::new(0),
        }
    }

    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Takes a token if the bucket holds one at `now`.
    pub fn consume(&self, now: Instant) -> bool {
        let now = self.nanos(now);
        let mut full_at = self.full_at.load(Ordering::Relaxed);
        loop {
            let next = full_at.max(now).saturating_add(self.token_interval);
            if next - now > self.capacity {
                return false;
            }
            match self.full_at.compare_exchange_weak(full_at, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(current) => full_at = current,
            }
        }
    }

    pub fn max_tokens(&self) -> u32 {
        self.max_tokens
    }

    /// Whole tokens in the bucket at `now`.
    pub fn remaining_tokens(&self, now: Instant) -> u64 {
        let now = self.nanos(now);
        let owed = self.full_at.load(Ordering::Relaxed).saturating_sub(now);
        self.capacity.saturating_sub(owed) / self.token_interval
    }

    /// `x-ratelimit-reset`: 0 while a token is left, else the wait for one in whole seconds
    /// (Envoy's `resetSeconds`, which divides the milliseconds by 1000 in integers).
    pub fn reset_seconds(&self, now: Instant) -> u64 {
        if self.remaining_tokens(now) >= 1 {
            0
        } else {
            self.next_token_ms / 1000
        }
    }
}

/// The route config for the filter named `name`, and what holds it: the route's, else the
/// virtual host's.
fn route_config<'a>(stream: &StreamView<'a>, name: &str) -> Option<(Owner, &'a LocalRateLimit)> {
    super::route_state::route_entry(stream, name, |c| match c {
        FilterPerRouteConfig::LocalRateLimit(config) => Some(config),
        _ => None,
    })
}

/// Which limiter a stream used.
enum Used {
    Filter,
    Route(Arc<RateLimiter>),
}

/// One stream's local rate limit filter.
pub struct LocalRateLimitFilter {
    config: Arc<LocalRateLimitFilterConfig>,
    /// Set once the bucket was consulted (Envoy's token bucket context), for the
    /// `x-ratelimit-*` headers.
    used: Option<Used>,
}

impl LocalRateLimitFilter {
    pub fn new(config: Arc<LocalRateLimitFilterConfig>) -> Self {
        LocalRateLimitFilter { config, used: None }
    }

    fn limiter(&self) -> Option<&RateLimiter> {
        match self.used.as_ref()? {
            Used::Filter => Some(&self.config.limiter),
            Used::Route(limiter) => Some(limiter),
        }
    }

    fn on_request(
        &mut self,
        head: &mut http::request::Parts,
        stream: StreamView<'_>,
        now: Instant,
    ) -> FilterHeadersStatus {
        let config = &self.config;
        let route_limiter = match route_config(&stream, &config.name) {
            Some((owner, route_config)) => match config.routes.get(owner, route_config, |c| {
                RateLimiter::new(c, &config.root)
                    .map_err(|e| format!("local_ratelimit: a route's config is not applied: {e}"))
            }) {
                Some(limiter) => Some(limiter),
                None => return FilterHeadersStatus::Continue,
            },
            None => None,
        };
        let limiter = route_limiter.as_deref().unwrap_or(&config.limiter);
        if !limiter.enabled() {
            return FilterHeadersStatus::Continue;
        }
        limiter.stats.enabled.inc();
        let status = if limiter.bucket.as_ref().is_none_or(|bucket| bucket.consume(now)) {
            limiter.stats.ok.inc();
            FilterHeadersStatus::Continue
        } else {
            limiter.stats.rate_limited.inc();
            if limiter.enforced() {
                limiter.stats.enforced.inc();
                let mut reply = LocalReply::new(limiter.status, "local_rate_limited", "local_rate_limited")
                    .with_flag(ResponseFlag::RateLimited);
                limiter.response_headers_to_add.evaluate(&mut reply.headers, stream.info);
                FilterHeadersStatus::LocalReply(reply)
            } else {
                limiter.request_headers_to_add_when_not_enforced.evaluate(&mut head.headers, stream.info);
                FilterHeadersStatus::Continue
            }
        };
        self.used = Some(match route_limiter {
            Some(limiter) => Used::Route(limiter),
            None => Used::Filter,
        });
        status
    }

    fn on_response(&mut self, head: &mut http::response::Parts, now: Instant) {
        let Some(limiter) = self.limiter() else { return };
        if !limiter.x_ratelimit_headers {
            return;
        }
        let Some(bucket) = &limiter.bucket else { return };
        head.headers.append(X_RATELIMIT_LIMIT, HeaderValue::from(bucket.max_tokens()));
        head.headers.append(X_RATELIMIT_REMAINING, HeaderValue::from(bucket.remaining_tokens(now)));
        head.headers.append(X_RATELIMIT_RESET, HeaderValue::from(bucket.reset_seconds(now)));
    }
}

impl HttpFilter for LocalRateLimitFilter {
    fn decode_headers(
        &mut self,
        head: &mut http::request::Parts,
        _end_stream: bool,
        cb: &mut FilterCallbacks<'_>,
    ) -> FilterHeadersStatus {
        self.on_request(head, StreamView::of(cb), Instant::now())
    }

    fn encode_headers(&mut self, head: &mut http::response::Parts, _cb: &mut FilterCallbacks<'_>) {
        self.on_response(head, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use legate_config::path::from_value;

    use super::super::test_support::*;
    use super::*;

    fn filter_config(text: &str) -> (Arc<legate_stats::Store>, Arc<LocalRateLimitFilterConfig>) {
        let (store, root) = stats();
        let config: LocalRateLimit = from_value(yaml(text)).unwrap();
        let config = LocalRateLimitFilterConfig::new("envoy.filters.http.local_ratelimit".into(), &config, &root);
        (store, Arc::new(config.unwrap()))
    }

    fn bucket(max_tokens: u32, tokens_per_fill: u32, fill_interval: &str) -> RateLimitTokenBucket {
        let config: TokenBucket = from_value(yaml(&format!(
            "{{max_tokens: {max_tokens}, tokens_per_fill: {tokens_per_fill}, fill_interval: {fill_interval}}}"
        )))
        .unwrap();
        RateLimitTokenBucket::new(&config, Instant::now())
    }

    #[test]
    fn bucket_starts_full_and_refills_with_time() {
        let b = bucket(3, 1, "1s");
        let t0 = b.start;
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(b.remaining_tokens(t0), 3);
        assert!(b.consume(t0) && b.consume(t0) && b.consume(t0));
        assert!(!b.consume(at(999)));
        assert_eq!(b.remaining_tokens(at(999)), 0);
        assert_eq!(b.reset_seconds(at(999)), 1);
        assert!(b.consume(at(1000)));
        assert!(!b.consume(at(1000)));
        // Never more than max_tokens, however long it rested.
        assert_eq!(b.remaining_tokens(at(60_000)), 3);
        assert_eq!(b.reset_seconds(at(60_000)), 0);
        assert!(b.consume(at(60_000)) && b.consume(at(60_000)) && b.consume(at(60_000)));
        assert!(!b.consume(at(60_000)));
    }

    #[test]
    fn bucket_earns_tokens_per_fill_each_interval() {
        let b = bucket(10, 5, "0.1s");
        let t0 = b.start;
        for _ in 0..10 {
            assert!(b.consume(t0));
        }
        assert!(!b.consume(t0));
        assert_eq!(b.remaining_tokens(t0 + Duration::from_millis(100)), 5);
        // 20 ms per token: Envoy reports the wait in whole seconds, rounded down.
        assert_eq!(b.reset_seconds(t0), 0);
    }

    #[test]
    fn bucket_is_shared_across_threads() {
        let b = Arc::new(bucket(1000, 1, "3600s"));
        let now = b.start;
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || (0..500).filter(|_| b.consume(now)).count())
            })
            .collect();
        let taken: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(taken, 1000);
    }

    const LIMITED: &str = "
stat_prefix: edge
token_bucket: {max_tokens: 1, tokens_per_fill: 1, fill_interval: 3600s}
filter_enabled: {default_value: {numerator: 100, denominator: HUNDRED}, runtime_key: e}
filter_enforced: {default_value: {numerator: 100, denominator: HUNDRED}, runtime_key: f}
response_headers_to_add:
- header: {key: x-local-rate-limit, value: 'true'}
  append_action: OVERWRITE_IF_EXISTS_OR_ADD
enable_x_ratelimit_headers: DRAFT_VERSION_03
";

    fn decode(
        config: &Arc<LocalRateLimitFilterConfig>,
        head: &mut http::request::Parts,
        routes: Option<&Routes>,
    ) -> (LocalRateLimitFilter, FilterHeadersStatus, crate::http::StreamInfo) {
        let mut filter = LocalRateLimitFilter::new(config.clone());
        let mut info = stream_info();
        let (vhost, route) = routes.map(|r| r.find(head)).unwrap_or((None, None));
        let stream =
            StreamView { info: &mut info, route: route.as_ref(), virtual_host: vhost.as_ref(), route_config: None };
        let status = filter.on_request(head, stream, Instant::now());
        (filter, status, info)
    }

    #[test]
    fn enforced_limit_answers_429_local_rate_limited() {
        let (store, config) = filter_config(LIMITED);
        let mut head = request("GET", "/", &[]);
        let (mut first, status, _) = decode(&config, &mut head, None);
        assert!(matches!(status, FilterHeadersStatus::Continue));
        let mut ok = response(200);
        first.on_response(&mut ok, Instant::now());
        assert_eq!(ok.headers[X_RATELIMIT_LIMIT], "1");
        assert_eq!(ok.headers[X_RATELIMIT_REMAINING], "0");
        assert_eq!(ok.headers[X_RATELIMIT_RESET], "3600");

        let (mut second, status, _) = decode(&config, &mut head, None);
        let FilterHeadersStatus::LocalReply(reply) = status else { panic!("expected 429") };
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(&reply.body[..], b"local_rate_limited");
        assert_eq!(reply.details, "local_rate_limited");
        assert_eq!(reply.flag, Some(ResponseFlag::RateLimited));
        assert_eq!(reply.headers["x-local-rate-limit"], "true");
        assert!(!reply.headers.contains_key("x-envoy-ratelimited"));
        let mut limited = response(429);
        second.on_response(&mut limited, Instant::now());
        assert_eq!(limited.headers[X_RATELIMIT_REMAINING], "0");

        for (stat, value) in [("enabled", 2), ("ok", 1), ("rate_limited", 1), ("enforced", 1)] {
            assert_eq!(store.counter_value(&format!("edge.http_local_rate_limit.{stat}")), Some(value), "{stat}");
        }
    }

    #[test]
    fn not_enforced_only_counts_and_tags_the_request() {
        let (store, config) = filter_config(
            "
stat_prefix: edge
status: {code: 503}
token_bucket: {max_tokens: 1, fill_interval: 3600s}
filter_enabled: {default_value: {numerator: 100}}
request_headers_to_add_when_not_enforced:
- header: {key: x-would-limit, value: 'yes'}
",
        );
        let mut head = request("GET", "/", &[]);
        decode(&config, &mut head, None);
        let (mut filter, status, _) = decode(&config, &mut head, None);
        assert!(matches!(status, FilterHeadersStatus::Continue));
        assert_eq!(head.headers["x-would-limit"], "yes");
        // No x-ratelimit headers unless asked for.
        let mut ok = response(200);
        filter.on_response(&mut ok, Instant::now());
        assert!(ok.headers.is_empty());
        assert_eq!(store.counter_value("edge.http_local_rate_limit.rate_limited"), Some(1));
        assert_eq!(store.counter_value("edge.http_local_rate_limit.enforced"), Some(0));
    }

    #[test]
    fn absent_filter_enabled_turns_the_filter_off() {
        let (store, config) = filter_config("stat_prefix: edge\ntoken_bucket: {max_tokens: 1, fill_interval: 3600s}");
        let mut head = request("GET", "/", &[]);
        for _ in 0..3 {
            assert!(matches!(decode(&config, &mut head, None).1, FilterHeadersStatus::Continue));
        }
        assert_eq!(store.counter_value("edge.http_local_rate_limit.enabled"), Some(0));
    }

    /// A filter without a bucket of its own (its routes carry the limits) limits nothing,
    /// as Envoy's: requests are allowed, counted `ok`, and get no x-ratelimit headers.
    #[test]
    fn no_bucket_limits_nothing() {
        let (store, config) = filter_config(
            "stat_prefix: edge\nfilter_enabled: {default_value: {numerator: 100}}\nfilter_enforced: {default_value: {numerator: 100}}\nenable_x_ratelimit_headers: DRAFT_VERSION_03",
        );
        let mut head = request("GET", "/", &[]);
        for _ in 0..3 {
            let (mut filter, status, _) = decode(&config, &mut head, None);
            assert!(matches!(status, FilterHeadersStatus::Continue));
            let mut ok = response(200);
            filter.on_response(&mut ok, Instant::now());
            assert!(ok.headers.is_empty());
        }
        assert_eq!(store.counter_value("edge.http_local_rate_limit.ok"), Some(3));
        assert_eq!(store.counter_value("edge.http_local_rate_limit.rate_limited"), Some(0));
    }

    #[test]
    fn status_below_400_means_429() {
        let (_store, config) =
            filter_config(&LIMITED.replace("stat_prefix: edge", "stat_prefix: edge\nstatus: {code: 302}"));
        let mut head = request("GET", "/", &[]);
        decode(&config, &mut head, None);
        let FilterHeadersStatus::LocalReply(reply) = decode(&config, &mut head, None).1 else { panic!() };
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    }

    const ROUTES: &str = "
virtual_hosts:
- name: vh
  domains: ['*']
  typed_per_filter_config:
    envoy.filters.http.local_ratelimit:
      '@type': type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
      stat_prefix: vhost
      token_bucket: {max_tokens: 2, fill_interval: 3600s}
      filter_enabled: {default_value: {numerator: 100}}
      filter_enforced: {default_value: {numerator: 100}}
  routes:
  - match: {prefix: /own}
    route: {cluster: c}
    typed_per_filter_config:
      envoy.filters.http.local_ratelimit:
        '@type': type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
        stat_prefix: own
        status: {code: 503}
        token_bucket: {max_tokens: 1, fill_interval: 3600s}
        filter_enabled: {default_value: {numerator: 100}}
        filter_enforced: {default_value: {numerator: 100}}
  - match: {prefix: /off}
    route: {cluster: c}
    typed_per_filter_config:
      envoy.filters.http.local_ratelimit:
        '@type': type.googleapis.com/envoy.config.route.v3.FilterConfig
        disabled: true
  - match: {prefix: /}
    route: {cluster: c}
";

    #[test]
    fn route_and_virtual_host_configs_have_their_own_buckets_and_stats() {
        let (store, config) = filter_config(LIMITED);
        let routes = Routes::new(ROUTES);

        let mut own = request("GET", "/own", &[]);
        assert!(matches!(decode(&config, &mut own, Some(&routes)).1, FilterHeadersStatus::Continue));
        let FilterHeadersStatus::LocalReply(reply) = decode(&config, &mut own, Some(&routes)).1 else {
            panic!("route bucket of one token")
        };
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(store.counter_value("own.http_local_rate_limit.enforced"), Some(1));

        // The virtual host's bucket holds two, and is not the route's.
        let mut other = request("GET", "/other", &[]);
        assert!(matches!(decode(&config, &mut other, Some(&routes)).1, FilterHeadersStatus::Continue));
        assert!(matches!(decode(&config, &mut other, Some(&routes)).1, FilterHeadersStatus::Continue));
        assert!(matches!(decode(&config, &mut other, Some(&routes)).1, FilterHeadersStatus::LocalReply(_)));
        assert_eq!(store.counter_value("vhost.http_local_rate_limit.ok"), Some(2));
        assert_eq!(store.counter_value("edge.http_local_rate_limit.enabled"), Some(0));
    }

    #[test]
    fn a_new_route_table_gets_new_buckets() {
        let (_store, config) = filter_config(LIMITED);
        let mut own = request("GET", "/own", &[]);
        let routes = Routes::new(ROUTES);
        decode(&config, &mut own, Some(&routes));
        assert!(matches!(decode(&config, &mut own, Some(&routes)).1, FilterHeadersStatus::LocalReply(_)));
        drop(routes);
        let routes = Routes::new(ROUTES);
        assert!(matches!(decode(&config, &mut own, Some(&routes)).1, FilterHeadersStatus::Continue));
        assert!(config.routes.all_alive());
    }

    #[test]
    fn per_connection_buckets_are_refused() {
        let (_store, root) = stats();
        let config: LocalRateLimit = from_value(yaml(
            "{stat_prefix: x, local_rate_limit_per_downstream_connection: true, token_bucket: {max_tokens: 1, fill_interval: 1s}}",
        ))
        .unwrap();
        let err = LocalRateLimitFilterConfig::new("l".into(), &config, &root).err().unwrap();
        assert!(err.contains("local_rate_limit_per_downstream_connection"), "{err}");
    }
}
