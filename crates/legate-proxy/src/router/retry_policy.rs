//! A route's retry policy, compiled: which failures retry, how many times, how long to wait.

use std::time::Duration;

use http::{HeaderMap, StatusCode};
use legate_config::route::{HeaderMatcher, RetryPolicy as RetryPolicyConfig};

/// The `retry_on` conditions, as bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryOn(u32);

impl RetryOn {
    pub const FIVE_XX: RetryOn = RetryOn(1);
    pub const GATEWAY_ERROR: RetryOn = RetryOn(1 << 1);
    pub const RESET: RetryOn = RetryOn(1 << 2);
    pub const RESET_BEFORE_REQUEST: RetryOn = RetryOn(1 << 3);
    pub const CONNECT_FAILURE: RetryOn = RetryOn(1 << 4);
    pub const RETRIABLE_4XX: RetryOn = RetryOn(1 << 5);
    pub const REFUSED_STREAM: RetryOn = RetryOn(1 << 6);
    pub const RETRIABLE_STATUS_CODES: RetryOn = RetryOn(1 << 7);
    pub const RETRIABLE_HEADERS: RetryOn = RetryOn(1 << 8);
    pub const ENVOY_RATELIMITED: RetryOn = RetryOn(1 << 9);
    pub const HTTP3_POST_CONNECT_FAILURE: RetryOn = RetryOn(1 << 10);
    pub const GRPC_CANCELLED: RetryOn = RetryOn(1 << 11);
    pub const GRPC_DEADLINE_EXCEEDED: RetryOn = RetryOn(1 << 12);
    pub const GRPC_INTERNAL: RetryOn = RetryOn(1 << 13);
    pub const GRPC_RESOURCE_EXHAUSTED: RetryOn = RetryOn(1 << 14);
    pub const GRPC_UNAVAILABLE: RetryOn = RetryOn(1 << 15);

    /// Any of the gRPC conditions.
    const GRPC_ANY: RetryOn = RetryOn(
        Self::GRPC_CANCELLED.0
            | Self::GRPC_DEADLINE_EXCEEDED.0
            | Self::GRPC_INTERNAL.0
            | Self::GRPC_RESOURCE_EXHAUSTED.0
            | Self::GRPC_UNAVAILABLE.0,
    );

    /// Parses a comma-separated `retry_on` / `x-envoy-retry-on` value; unknown tokens are
    /// skipped (the header is untrusted; config tokens were validated at load).
    pub fn parse(value: &str) -> RetryOn {
        let mut on = RetryOn::default();
        for token in value.split(',').map(str::trim) {
            on.0 |= match token {
                "5xx" => Self::FIVE_XX.0,
                "gateway-error" => Self::GATEWAY_ERROR.0,
                "reset" => Self::RESET.0,
                "reset-before-request" => Self::RESET_BEFORE_REQUEST.0,
                "connect-failure" => Self::CONNECT_FAILURE.0,
                "retriable-4xx" => Self::RETRIABLE_4XX.0,
                "refused-stream" => Self::REFUSED_STREAM.0,
                "retriable-status-codes" => Self::RETRIABLE_STATUS_CODES.0,
                "retriable-headers" => Self::RETRIABLE_HEADERS.0,
                "envoy-ratelimited" => Self::ENVOY_RATELIMITED.0,
                "http3-post-connect-failure" => Self::HTTP3_POST_CONNECT_FAILURE.0,
                "cancelled" => Self::GRPC_CANCELLED.0,
                "deadline-exceeded" => Self::GRPC_DEADLINE_EXCEEDED.0,
                "internal" => Self::GRPC_INTERNAL.0,
                "resource-exhausted" => Self::GRPC_RESOURCE_EXHAUSTED.0,
                "unavailable" => Self::GRPC_UNAVAILABLE.0,
                _ => 0,
            };
        }
        on
    }

    pub fn contains(self, other: RetryOn) -> bool {
        self.0 & other.0 != 0
    }

    pub fn union(self, other: RetryOn) -> RetryOn {
        RetryOn(self.0 | other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub retry_on: RetryOn,
    /// Default 1, as Envoy.
    pub num_retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub per_try_idle_timeout: Option<Duration>,
    pub retriable_status_codes: Vec<u16>,
    pub retriable_headers: Vec<HeaderMatcher>,
    pub retriable_request_headers: Vec<HeaderMatcher>,
    /// `retry_back_off.base_interval`, default 25 ms.
    pub base_interval: Duration,
    /// `retry_back_off.max_interval`, default 10 × base.
    pub max_interval: Duration,
    /// `envoy.retry_host_predicates.previous_hosts`: a retry avoids hosts already tried.
    pub avoid_previous_hosts: bool,
    /// `host_selection_retry_max_attempts` (default 1: one pick, no re-pick).
    pub host_selection_max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retry_on: RetryOn::default(),
            num_retries: 1,
            per_try_timeout: None,
            per_try_idle_timeout: None,
            retriable_status_codes: Vec::new(),
            retriable_headers: Vec::new(),
            retriable_request_headers: Vec::new(),
            base_interval: Duration::from_millis(25),
            max_interval: Duration::from_millis(250),
            avoid_previous_hosts: false,
            host_selection_max_attempts: 1,
        }
    }
}

impl RetryPolicy {
    pub fn from_config(c: &RetryPolicyConfig) -> Self {
        let base_interval =
            c.retry_back_off.as_ref().map(|b| b.base_interval.as_std()).unwrap_or(Duration::from_millis(25));
        let max_interval = c
            .retry_back_off
            .as_ref()
            .and_then(|b| b.max_interval.as_ref())
            .map(|d| d.as_std())
            .unwrap_or(base_interval * 10);
        RetryPolicy {
            retry_on: RetryOn::parse(&c.retry_on),
            num_retries: c.num_retries.unwrap_or(1),
            per_try_timeout: c.per_try_timeout.as_ref().map(|d| d.as_std()).filter(|d| !d.is_zero()),
            per_try_idle_timeout: c.per_try_idle_timeout.as_ref().map(|d| d.as_std()).filter(|d| !d.is_zero()),
            retriable_status_codes: c.retriable_status_codes.iter().filter_map(|c| u16::try_from(*c).ok()).collect(),
            retriable_headers: c.retriable_headers.clone(),
            retriable_request_headers: c.retriable_request_headers.clone(),
            base_interval,
            max_interval: max_interval.max(base_interval),
            avoid_previous_hosts: !c.retry_host_predicate.is_empty(),
            host_selection_max_attempts: u32::try_from(c.host_selection_retry_max_attempts.max(1)).unwrap_or(1),
        }
    }

    /// Whether a response with `status` and `headers` should be retried under `retry_on`.
    pub fn retriable_response(&self, retry_on: RetryOn, status: StatusCode, headers: &HeaderMap) -> bool {
        let code = status.as_u16();
        if retry_on.contains(RetryOn::FIVE_XX) && status.is_server_error() {
            return true;
        }
        if retry_on.contains(RetryOn::GATEWAY_ERROR) && matches!(code, 502..=504) {
            return true;
        }
        if retry_on.contains(RetryOn::RETRIABLE_4XX) && code == 409 {
            return true;
        }
        if retry_on.contains(RetryOn::RETRIABLE_STATUS_CODES) && self.retriable_status_codes.contains(&code) {
            return true;
        }
        if retry_on.contains(RetryOn::ENVOY_RATELIMITED) && headers.contains_key("x-envoy-ratelimited") {
            return true;
        }
        if retry_on.contains(RetryOn::RETRIABLE_HEADERS)
            && self.retriable_headers.iter().any(|m| m.matches(joined(headers, m.name.as_str()).as_deref()))
        {
            return true;
        }
        retry_on.contains(RetryOn::GRPC_ANY) && retry_on.contains(grpc_condition(headers))
    }

    /// Jittered exponential back-off before retry `n` (1-based): uniform in
    /// `[0, min(base × 2^(n-1), max))`, as Envoy.
    pub fn back_off(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1).min(20)).unwrap_or(u32::MAX);
        let ceiling = self.base_interval.saturating_mul(factor).min(self.max_interval);
        let ms = ceiling.as_millis().max(1) as u64;
        Duration::from_millis(fastrand::u64(0..ms))
    }
}

/// The gRPC retry condition a trailers-only response names in its `grpc-status` (Cancelled 1,
/// DeadlineExceeded 4, ResourceExhausted 8, Internal 13, Unavailable 14); none for another
/// status, or none given.
fn grpc_condition(headers: &HeaderMap) -> RetryOn {
    match headers.get("grpc-status").map(|v| v.as_bytes()) {
        Some(b"1") => RetryOn::GRPC_CANCELLED,
        Some(b"4") => RetryOn::GRPC_DEADLINE_EXCEEDED,
        Some(b"8") => RetryOn::GRPC_RESOURCE_EXHAUSTED,
        Some(b"13") => RetryOn::GRPC_INTERNAL,
        Some(b"14") => RetryOn::GRPC_UNAVAILABLE,
        _ => RetryOn::default(),
    }
}

/// All values of a header joined with `,`, as Envoy presents multi-valued headers to matchers.
pub fn joined<K: http::header::AsHeaderName>(headers: &HeaderMap, name: K) -> Option<String> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let mut out = String::from_utf8_lossy(first.as_bytes()).into_owned();
    for v in values {
        out.push(',');
        out.push_str(&String::from_utf8_lossy(v.as_bytes()));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tokens_and_decides() {
        let on = RetryOn::parse("5xx, connect-failure,bogus");
        assert!(on.contains(RetryOn::FIVE_XX) && on.contains(RetryOn::CONNECT_FAILURE));
        assert!(!on.contains(RetryOn::RESET));
        let p = RetryPolicy::default();
        assert!(p.retriable_response(on, StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new()));
        assert!(!p.retriable_response(RetryOn::GATEWAY_ERROR, StatusCode::INTERNAL_SERVER_ERROR, &HeaderMap::new()));
        assert!(p.retriable_response(RetryOn::GATEWAY_ERROR, StatusCode::BAD_GATEWAY, &HeaderMap::new()));
    }

    #[test]
    fn back_off_stays_under_the_ceiling() {
        let p = RetryPolicy::default();
        for n in 1..10 {
            assert!(p.back_off(n) < Duration::from_millis(250));
        }
        assert!(p.back_off(1) < Duration::from_millis(25));
    }
}
