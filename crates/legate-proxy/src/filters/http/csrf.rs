//! `envoy.filters.http.csrf` (`envoy.extensions.filters.http.csrf.v3.CsrfPolicy`), Envoy's
//! "CSRF" filter: a state-changing request (POST, PUT, DELETE, PATCH) must come from the
//! origin it goes to — its `origin` (else `referer`) names the request's host, or one of
//! `additional_origins` — or it is refused with 403 `Invalid origin` (`csrf_origin_mismatch`).
//! Under `shadow_enabled` alone requests are checked and counted, never refused. A route's
//! (or virtual host's) policy replaces the filter's.
//!
//! Stats under `http.<stat_prefix>.csrf.`: `missing_source_origin`, `request_invalid`,
//! `request_valid`.

use std::sync::Arc;

use http::header::{ORIGIN, REFERER};
use http::{Method, StatusCode};
use legate_config::filters::http::csrf::CsrfPolicy;
use legate_config::route::FilterPerRouteConfig;
use legate_stats::Scope;

use crate::http::filter::{FilterCallbacks, FilterHeadersStatus, HttpFilter};
use crate::http::LocalReply;

legate_stats::stats! {
    /// `http.<stat_prefix>.csrf.*`.
    pub struct CsrfStats {
        counter missing_source_origin,
        counter request_invalid,
        counter request_valid,
    }
}

/// The filter's config, shared by every stream on every worker.
pub struct CsrfFilterConfig {
    pub name: String,
    policy: CsrfPolicy,
    stats: CsrfStats,
}

impl CsrfFilterConfig {
    /// `scope` is the connection manager's (`http.<stat_prefix>`).
    pub fn new(name: String, policy: &CsrfPolicy, scope: &Scope) -> Self {
        CsrfFilterConfig { name, policy: policy.clone(), stats: CsrfStats::new(&scope.scope("csrf")) }
    }
}

pub struct CsrfFilter {
    config: Arc<CsrfFilterConfig>,
}

impl CsrfFilter {
    pub fn new(config: Arc<CsrfFilterConfig>) -> Self {
        CsrfFilter { config }
    }
}

/// The host (and port) of an origin or referer URL; a value that is no URL, as it is.
fn host_and_port(value: &str) -> &str {
    let Some((_, rest)) = value.split_once("://") else { return value };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority.rsplit_once('@').map_or(authority, |(_, host)| host)
}

impl HttpFilter for CsrfFilter {
    fn decode_headers(
        &mut self,
        head: &mut http::request::Parts,
        _end_stream: bool,
        cb: &mut FilterCallbacks<'_>,
    ) -> FilterHeadersStatus {
        let config = &self.config;
        let policy = match cb.per_filter_config(&config.name) {
            Some(FilterPerRouteConfig::Csrf(policy)) => policy,
            _ => &config.policy,
        };
        let enabled = policy.filter_enabled.as_ref().is_some_and(crate::runtime::fraction_enabled);
        let shadow = policy.shadow_enabled.as_ref().is_some_and(crate::runtime::fraction_enabled);
        let modifies = matches!(head.method, Method::POST | Method::PUT | Method::DELETE | Method::PATCH);
        if (!enabled && !shadow) || !modifies {
            return FilterHeadersStatus::Continue;
        }
        let header =
            |name| head.headers.get(name).and_then(|v: &http::HeaderValue| v.to_str().ok()).unwrap_or_default();
        let source = match host_and_port(header(ORIGIN)) {
            "" => host_and_port(header(REFERER)),
            origin => origin,
        };
        let mut valid = true;
        if source.is_empty() {
            valid = false;
            config.stats.missing_source_origin.inc();
        }
        let target = crate::filters::http::router::authority_of(head);
        let matches = source == target || policy.additional_origins.iter().any(|m| m.matches(source));
        if !matches {
            valid = false;
            config.stats.request_invalid.inc();
        }
        if valid {
            config.stats.request_valid.inc();
            return FilterHeadersStatus::Continue;
        }
        if !enabled {
            return FilterHeadersStatus::Continue;
        }
        FilterHeadersStatus::LocalReply(LocalReply::new(
            StatusCode::FORBIDDEN,
            "Invalid origin",
            "csrf_origin_mismatch",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_compared_by_host_and_port() {
        assert_eq!(host_and_port("https://shop.example"), "shop.example");
        assert_eq!(host_and_port("http://user@shop.example:8080/page?x=1"), "shop.example:8080");
        assert_eq!(host_and_port("null"), "null");
        assert_eq!(host_and_port(""), "");
    }
}
