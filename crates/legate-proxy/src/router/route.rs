//! One route: its match criteria and its action, plus the per-route pieces filters read.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{HeaderMap, Method};
use legate_config::matcher::RegexMatcher;
use legate_config::route::{FilterPerRouteConfig, HeaderMatcher, QueryParameterMatcher, Route as RouteConfig};

use super::action::RouteKind;
use super::header_parser::HeaderParser;
use crate::filters::http::headers_match;

/// What a request is matched on.
pub struct MatchInput<'a> {
    /// `:path` without the query string.
    pub path: &'a str,
    /// The query string, without `?`.
    pub query: Option<&'a str>,
    /// The request's head: its method and headers, and the pseudo-headers a header matcher
    /// may name (`:method`, `:path`, `:authority`).
    pub head: &'a http::request::Parts,
    /// `:scheme` ([`crate::http::StreamInfo::scheme`]).
    pub scheme: &'a str,
    /// Drawn once per request, for `runtime_fraction`.
    pub random: u64,
}

pub(crate) enum PathMatch {
    Prefix(String),
    Exact(String),
    Regex(RegexMatcher),
    SeparatedPrefix(String),
    Connect,
}

pub struct Route {
    pub name: Arc<str>,
    pub(crate) path: PathMatch,
    pub(crate) case_sensitive: bool,
    headers: Vec<HeaderMatcher>,
    query_parameters: Vec<QueryParameterMatcher>,
    cookies: Vec<legate_config::route::CookieMatcher>,
    grpc: bool,
    /// `runtime_fraction`: the runtime's percentage for its key, else its default.
    fraction: Option<legate_config::core::RuntimeFractionalPercent>,
    pub kind: RouteKind,
    pub request_headers: HeaderParser,
    pub response_headers: HeaderParser,
    pub per_filter_config: BTreeMap<String, FilterPerRouteConfig>,
    pub per_request_buffer_limit_bytes: Option<u32>,
    /// The decorator and tracing settings, where the route has them.
    pub trace: Option<Box<crate::trace::RouteTrace>>,
}

impl Route {
    pub(crate) fn new(config: &RouteConfig, inherited: super::action::Inherited<'_>) -> Result<Self, String> {
        let m = &config.r#match;
        let path = if let Some(p) = &m.prefix {
            PathMatch::Prefix(p.clone())
        } else if let Some(p) = &m.path {
            PathMatch::Exact(p.clone())
        } else if let Some(r) = &m.safe_regex {
            PathMatch::Regex(r.clone())
        } else if let Some(p) = &m.path_separated_prefix {
            PathMatch::SeparatedPrefix(p.clone())
        } else if m.connect_matcher.is_some() {
            PathMatch::Connect
        } else {
            return Err("route match needs one of prefix, path, safe_regex, path_separated_prefix".into());
        };
        let case_sensitive = m.case_sensitive.unwrap_or(true);
        let path = match (case_sensitive, path) {
            (false, PathMatch::Prefix(p)) => PathMatch::Prefix(p.to_ascii_lowercase()),
            (false, PathMatch::Exact(p)) => PathMatch::Exact(p.to_ascii_lowercase()),
            (false, PathMatch::SeparatedPrefix(p)) => PathMatch::SeparatedPrefix(p.to_ascii_lowercase()),
            (_, p) => p,
        };
        let fraction = m.runtime_fraction.clone();
        Ok(Route {
            name: config.name.as_str().into(),
            path,
            case_sensitive,
            headers: m.headers.clone(),
            query_parameters: m.query_parameters.clone(),
            cookies: m.cookies.clone(),
            grpc: m.grpc.is_some(),
            fraction,
            kind: RouteKind::new(config, inherited)?,
            request_headers: HeaderParser::new(&config.request_headers_to_add, &config.request_headers_to_remove)?,
            response_headers: HeaderParser::new(&config.response_headers_to_add, &config.response_headers_to_remove)?,
            per_filter_config: config.typed_per_filter_config.clone(),
            per_request_buffer_limit_bytes: config.per_request_buffer_limit_bytes,
            trace: crate::trace::RouteTrace::new(config)?,
        })
    }

    /// Whether a header value of this route (or its weighted clusters) is formatted per request.
    pub fn uses_formatters(&self) -> bool {
        let weighted = match &self.kind {
            RouteKind::Route(action) => match &action.cluster {
                super::action::ClusterSpecifier::Weighted { clusters, .. } => {
                    clusters.iter().any(|c| c.request_headers.uses_formatters() || c.response_headers.uses_formatters())
                }
                _ => false,
            },
            _ => false,
        };
        weighted || self.request_headers.uses_formatters() || self.response_headers.uses_formatters()
    }

    /// Whether the request matches every criterion of this route.
    pub fn matches(&self, input: &MatchInput<'_>) -> bool {
        let path_ok = match &self.path {
            PathMatch::Connect => input.head.method == Method::CONNECT,
            PathMatch::Regex(r) => r.is_match(input.path),
            PathMatch::Prefix(p) => self.starts_with(input.path, p),
            PathMatch::Exact(p) => input.path.len() == p.len() && self.starts_with(input.path, p),
            PathMatch::SeparatedPrefix(p) => {
                self.starts_with(input.path, p)
                    && (input.path.len() == p.len() || input.path.as_bytes().get(p.len()) == Some(&b'/'))
            }
        };
        if !path_ok {
            return false;
        }
        if self.grpc && !is_grpc(&input.head.headers) {
            return false;
        }
        if !headers_match(&self.headers, input.head, input.scheme) {
            return false;
        }
        if !self.query_parameters.iter().all(|m| m.matches(query_value(input.query, &m.name))) {
            return false;
        }
        if !self.cookies.iter().all(|m| m.matches(cookie_value(&input.head.headers, &m.name))) {
            return false;
        }
        // Envoy's `featureEnabled(key, default, random)`: the request's one draw, so that
        // routes of the same fraction agree.
        match &self.fraction {
            Some(f) => crate::runtime::enabled_for(&f.runtime_key, &f.default_value, input.random),
            None => true,
        }
    }

    fn starts_with(&self, path: &str, prefix: &str) -> bool {
        if self.case_sensitive {
            path.starts_with(prefix)
        } else {
            path.len() >= prefix.len() && path.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
        }
    }
}

/// The value of the first cookie `name` in the `cookie` headers, its surrounding double quotes
/// removed (Envoy's `parseCookieValue`).
fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value))
}

/// A gRPC message (Envoy's `hasGrpcContentType`): `content-type` exactly `application/grpc`
/// or `application/grpc+…` (so not `application/grpc-web`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(http::header::CONTENT_TYPE).is_some_and(|v| match v.as_bytes().strip_prefix(b"application/grpc") {
        Some(rest) => rest.is_empty() || rest.starts_with(b"+"),
        None => false,
    })
}

/// The first value of query parameter `name` (raw, not percent-decoded, as Envoy matches).
fn query_value<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_is_its_content_type_exactly_or_with_a_suffix() {
        let with = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_str(ct).unwrap());
            is_grpc(&h)
        };
        assert!(with("application/grpc"));
        assert!(with("application/grpc+proto"));
        assert!(!with("application/grpc-web"));
        assert!(!with("application/grpc-web+proto"));
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn query_values() {
        assert_eq!(query_value(Some("a=1&b=2&b=3"), "b"), Some("2"));
        assert_eq!(query_value(Some("flag&x=1"), "flag"), Some(""));
        assert_eq!(query_value(None, "a"), None);
    }
}

#[cfg(test)]
mod cookie_tests {
    use super::*;

    #[test]
    fn cookie_values_are_found_across_headers_and_unquoted() {
        let mut headers = HeaderMap::new();
        headers.append(http::header::COOKIE, "a=1; session=\"abc\"".parse().unwrap());
        headers.append(http::header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(cookie_value(&headers, "session"), Some("abc"));
        assert_eq!(cookie_value(&headers, "b"), Some("2"));
        assert_eq!(cookie_value(&headers, "c"), None);
        let matcher: legate_config::route::CookieMatcher =
            legate_config::path::from_value(serde_json::json!({"name": "b", "string_match": {"exact": "2"}})).unwrap();
        assert!(matcher.matches(cookie_value(&headers, "b")));
        assert!(!matcher.matches(None));
        let inverted = legate_config::route::CookieMatcher { invert_match: true, ..matcher };
        assert!(inverted.matches(None));
    }
}
