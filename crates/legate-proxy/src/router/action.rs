//! What a matched route does: forward to a cluster (`route`), redirect, or answer directly.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::StatusCode;
use legate_config::cluster::RoutingPriority;
use legate_config::matcher::RegexMatchAndSubstitute;
use legate_config::route::{
    ClusterNotFoundResponseCode, CorsPolicy, HashPolicy, RetryPolicy as RetryPolicyConfig, Route as RouteConfig,
};

use super::header_parser::HeaderParser;
use super::retry_policy::RetryPolicy;

pub enum RouteKind {
    Route(Box<RouteAction>),
    Redirect(Box<Redirect>),
    DirectResponse(DirectResponse),
}

/// What a route takes from its virtual host, and through it the route configuration, when it
/// has none of its own (Envoy's `RouteEntryImplBase`).
#[derive(Clone, Copy, Default)]
pub(crate) struct Inherited<'a> {
    /// The virtual host's `retry_policy` (never merged with a route's).
    pub retry_policy: Option<&'a RetryPolicyConfig>,
    /// The virtual host's `request_mirror_policies`, else the route configuration's.
    pub mirror_policies: &'a [legate_config::route::RequestMirrorPolicy],
}

impl RouteKind {
    pub(crate) fn new(config: &RouteConfig, inherited: Inherited<'_>) -> Result<Self, String> {
        if let Some(action) = &config.route {
            return Ok(RouteKind::Route(Box::new(RouteAction::new(action, inherited)?)));
        }
        if let Some(redirect) = &config.redirect {
            return Ok(RouteKind::Redirect(Box::new(Redirect {
                https: redirect.https_redirect,
                scheme: redirect.scheme_redirect.clone().filter(|s| !s.is_empty()),
                host: (!redirect.host_redirect.is_empty()).then(|| redirect.host_redirect.clone()),
                port: (redirect.port_redirect != 0).then_some(redirect.port_redirect),
                path: redirect.path_redirect.clone().filter(|s| !s.is_empty()),
                prefix_rewrite: redirect.prefix_rewrite.clone().filter(|s| !s.is_empty()),
                regex_rewrite: redirect.regex_rewrite.clone(),
                strip_query: redirect.strip_query,
                status: StatusCode::from_u16(redirect.response_code.status()).unwrap_or(StatusCode::MOVED_PERMANENTLY),
            })));
        }
        if let Some(direct) = &config.direct_response {
            let body = match &direct.body {
                Some(source) => Bytes::from(source.read()?),
                None => Bytes::new(),
            };
            let status = u16::try_from(direct.status)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
                .ok_or_else(|| format!("invalid direct_response status {}", direct.status))?;
            let body_format = direct
                .body_format
                .as_ref()
                .map(|f| crate::access_log::LogFormat::body_format(f).map(Arc::new))
                .transpose()
                .map_err(|e| format!("direct_response.body_format: {e}"))?;
            return Ok(RouteKind::DirectResponse(DirectResponse { status, body, body_format }));
        }
        Err("route needs one of route, redirect, direct_response".into())
    }
}

pub struct WeightedClusterEntry {
    pub name: Arc<str>,
    /// `cluster_header`: the cluster is the value of this request header instead of `name`.
    pub cluster_header: Option<HeaderName>,
    pub weight: u64,
    pub request_headers: HeaderParser,
    pub response_headers: HeaderParser,
    pub host_rewrite_literal: Option<HeaderValue>,
}

pub enum ClusterSpecifier {
    Cluster(Arc<str>),
    /// The cluster named by a request header (`cluster_header`).
    Header(HeaderName),
    Weighted {
        clusters: Vec<WeightedClusterEntry>,
        total: u64,
        /// `header_name`: a request header holding the random value that picks the entry.
        random_value_header: Option<HeaderName>,
    },
}

pub struct Mirror {
    /// The cluster, or the request header naming it.
    pub cluster: ClusterSpecifier,
    /// `runtime_fraction`: every request where absent.
    pub fraction: Option<legate_config::core::RuntimeFractionalPercent>,
    /// Append `-shadow` to the host (Envoy's default).
    pub host_suffix: bool,
}

pub struct RouteAction {
    pub cluster: ClusterSpecifier,
    pub cluster_not_found_response_code: StatusCode,
    pub prefix_rewrite: Option<String>,
    pub regex_rewrite: Option<Box<RegexMatchAndSubstitute>>,
    pub host_rewrite_literal: Option<HeaderValue>,
    pub auto_host_rewrite: bool,
    pub host_rewrite_header: Option<HeaderName>,
    /// `host_rewrite_path_regex`: the host made from the path (its query left out).
    pub host_rewrite_path_regex: Option<Box<RegexMatchAndSubstitute>>,
    pub append_x_forwarded_host: bool,
    /// Route `timeout` (15 s default); zero disables it.
    pub timeout: Duration,
    /// `idle_timeout`: in place of the connection manager's `stream_idle_timeout` when set
    /// (`Some(None)`: set to 0, no idle timeout on this route).
    pub idle_timeout: Option<Option<Duration>>,
    pub retry_policy: RetryPolicy,
    pub priority: RoutingPriority,
    /// `max_stream_duration.max_stream_duration`, in place of the connection manager's when
    /// set (`Some(None)`: set to 0, none on this route).
    pub max_stream_duration: Option<Option<Duration>>,
    /// `grpc_timeout_header_max` (or the deprecated `max_grpc_timeout`): a gRPC request's
    /// `grpc-timeout` is its timeout, capped at this (0: uncapped).
    pub max_grpc_timeout: Option<Duration>,
    /// `grpc_timeout_header_offset` (or `grpc_timeout_offset`), subtracted from it.
    pub grpc_timeout_offset: Option<Duration>,
    /// Set through the deprecated `max_grpc_timeout`: the upstream's `grpc-timeout` is then
    /// rewritten to the deadline it has (Envoy does so only for the old fields).
    pub rewrite_grpc_timeout: bool,
    /// `upgrade_configs` of the route: (upgrade type lowercased, enabled).
    pub upgrades: Vec<(String, bool)>,
    /// A CONNECT upgrade config with `connect_config`: legate terminates CONNECT and tunnels
    /// the payload as raw TCP to the cluster.
    pub connect_terminate: bool,
    pub mirrors: Vec<Mirror>,
    pub hash_policy: Vec<HashPolicy>,
    pub cors: Option<Box<CorsPolicy>>,
}

impl RouteAction {
    fn new(c: &legate_config::route::RouteAction, inherited: Inherited<'_>) -> Result<Self, String> {
        let header_value =
            |s: &str| HeaderValue::from_str(s).map_err(|_| format!("invalid host_rewrite_literal '{s}'"));
        let cluster = if let Some(name) = c.cluster.as_deref().filter(|s| !s.is_empty()) {
            ClusterSpecifier::Cluster(name.into())
        } else if let Some(header) = c.cluster_header.as_deref().filter(|s| !s.is_empty()) {
            ClusterSpecifier::Header(
                HeaderName::from_bytes(header.to_ascii_lowercase().as_bytes())
                    .map_err(|_| format!("invalid cluster_header '{header}'"))?,
            )
        } else if let Some(w) = &c.weighted_clusters {
            let mut clusters = Vec::new();
            for entry in &w.clusters {
                clusters.push(WeightedClusterEntry {
                    name: entry.name.as_str().into(),
                    cluster_header: match entry.cluster_header.as_str() {
                        "" => None,
                        h => Some(
                            HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                                .map_err(|_| format!("invalid weighted cluster_header '{h}'"))?,
                        ),
                    },
                    weight: u64::from(entry.weight.unwrap_or(0)),
                    request_headers: HeaderParser::new(
                        &entry.request_headers_to_add,
                        &entry.request_headers_to_remove,
                    )?,
                    response_headers: HeaderParser::new(
                        &entry.response_headers_to_add,
                        &entry.response_headers_to_remove,
                    )?,
                    host_rewrite_literal: match entry.host_rewrite_literal.as_deref().unwrap_or_default() {
                        "" => None,
                        s => Some(header_value(s)?),
                    },
                });
            }
            let total = clusters.iter().map(|c| c.weight).sum();
            let random_value_header = match w.header_name.as_str() {
                "" => None,
                h => Some(
                    HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                        .map_err(|_| format!("invalid weighted_clusters header_name '{h}'"))?,
                ),
            };
            ClusterSpecifier::Weighted { clusters, total, random_value_header }
        } else {
            return Err("route action needs one of cluster, cluster_header, weighted_clusters".into());
        };
        let retry_policy =
            c.retry_policy.as_deref().or(inherited.retry_policy).map(RetryPolicy::from_config).unwrap_or_default();
        // Only the most specific level's mirror policies apply.
        let mirror_policies = match c.request_mirror_policies.is_empty() {
            true => inherited.mirror_policies,
            false => &c.request_mirror_policies,
        };
        Ok(RouteAction {
            cluster,
            cluster_not_found_response_code: match c.cluster_not_found_response_code {
                ClusterNotFoundResponseCode::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
                ClusterNotFoundResponseCode::NotFound => StatusCode::NOT_FOUND,
                ClusterNotFoundResponseCode::InternalServerError => StatusCode::INTERNAL_SERVER_ERROR,
            },
            prefix_rewrite: (!c.prefix_rewrite.is_empty()).then(|| c.prefix_rewrite.clone()),
            regex_rewrite: c.regex_rewrite.clone(),
            host_rewrite_literal: match c.host_rewrite_literal.as_deref().unwrap_or_default() {
                "" => None,
                s => Some(header_value(s)?),
            },
            auto_host_rewrite: c.auto_host_rewrite.unwrap_or(false),
            host_rewrite_path_regex: c.host_rewrite_path_regex.clone(),
            host_rewrite_header: match c.host_rewrite_header.as_deref().unwrap_or_default() {
                "" => None,
                s => Some(
                    HeaderName::from_bytes(s.to_ascii_lowercase().as_bytes())
                        .map_err(|_| format!("invalid host_rewrite_header '{s}'"))?,
                ),
            },
            append_x_forwarded_host: c.append_x_forwarded_host,
            timeout: c.timeout(),
            idle_timeout: c.idle_timeout.as_ref().map(|d| Some(d.as_std()).filter(|d| !d.is_zero())),
            retry_policy,
            priority: c.priority,
            max_stream_duration: c
                .max_stream_duration
                .as_ref()
                .and_then(|m| m.max_stream_duration.as_ref())
                .map(|d| Some(d.as_std()).filter(|d| !d.is_zero())),
            max_grpc_timeout: c
                .max_stream_duration
                .as_ref()
                .and_then(|m| m.grpc_timeout_header_max)
                .or(c.max_grpc_timeout)
                .map(|d| d.as_std()),
            grpc_timeout_offset: c
                .max_stream_duration
                .as_ref()
                .and_then(|m| m.grpc_timeout_header_offset)
                .or(c.grpc_timeout_offset)
                .map(|d| d.as_std()),
            rewrite_grpc_timeout: c.max_stream_duration.as_ref().is_none_or(|m| m.grpc_timeout_header_max.is_none())
                && c.max_grpc_timeout.is_some(),
            upgrades: c
                .upgrade_configs
                .iter()
                .map(|u| (u.upgrade_type.to_ascii_lowercase(), u.enabled.unwrap_or(true)))
                .collect(),
            connect_terminate: c
                .upgrade_configs
                .iter()
                .any(|u| u.upgrade_type.eq_ignore_ascii_case("CONNECT") && u.connect_config.is_some()),
            mirrors: mirror_policies
                .iter()
                .map(|m| {
                    let cluster = if m.cluster.is_empty() {
                        ClusterSpecifier::Header(
                            HeaderName::from_bytes(m.cluster_header.to_ascii_lowercase().as_bytes())
                                .map_err(|_| format!("invalid mirror cluster_header '{}'", m.cluster_header))?,
                        )
                    } else {
                        ClusterSpecifier::Cluster(m.cluster.as_str().into())
                    };
                    Ok(Mirror {
                        cluster,
                        fraction: m.runtime_fraction.clone(),
                        host_suffix: !m.disable_shadow_host_suffix_append,
                    })
                })
                .collect::<Result<_, String>>()?,
            hash_policy: c.hash_policy.clone(),
            cors: c.cors.clone(),
        })
    }

    /// The path sent upstream: `prefix_rewrite` replaces the matched prefix, `regex_rewrite`
    /// substitutes in the path (the query string is kept as it was).
    pub fn rewrite_path(&self, path: &str, query: Option<&str>, matched_prefix: Option<&str>) -> Option<String> {
        let rewritten = if let (Some(new_prefix), Some(old)) = (&self.prefix_rewrite, matched_prefix) {
            let rest = path.get(old.len()..).unwrap_or("");
            format!("{new_prefix}{rest}")
        } else if let Some(rr) = &self.regex_rewrite {
            rr.pattern.regex().replace_all(path, re2_substitution(&rr.substitution).as_str()).into_owned()
        } else {
            return None;
        };
        Some(match query {
            Some(q) => format!("{rewritten}?{q}"),
            None => rewritten,
        })
    }

    /// Whether an upgrade of `upgrade_type` is allowed: the route's `upgrade_configs` decide
    /// when they name the type, else the connection manager's (`hcm_enabled`).
    /// `host_rewrite_path_regex`'s host for `path` (without its query).
    pub fn host_from_path(&self, path: &str) -> Option<String> {
        let rewrite = self.host_rewrite_path_regex.as_ref()?;
        Some(rewrite.pattern.regex().replace_all(path, re2_substitution(&rewrite.substitution).as_str()).into_owned())
    }

    pub fn upgrade_allowed(&self, upgrade_type: &str, hcm_enabled: Option<bool>) -> bool {
        match self.upgrades.iter().find(|(t, _)| t.eq_ignore_ascii_case(upgrade_type)) {
            Some((_, enabled)) => *enabled && hcm_enabled.is_some(),
            None => hcm_enabled.unwrap_or(false),
        }
    }
}

pub struct Redirect {
    https: bool,
    scheme: Option<String>,
    host: Option<String>,
    port: Option<u32>,
    path: Option<String>,
    prefix_rewrite: Option<String>,
    regex_rewrite: Option<RegexMatchAndSubstitute>,
    strip_query: bool,
    pub status: StatusCode,
}

impl Redirect {
    /// The `location` for a request to `scheme://host` + `path` (`?query`).
    pub fn location(
        &self,
        scheme: &str,
        host: &str,
        path: &str,
        query: Option<&str>,
        matched_prefix: Option<&str>,
    ) -> String {
        let new_scheme = if self.https { "https" } else { self.scheme.as_deref().unwrap_or(scheme) };
        let (mut host_only, mut port) = split_host_port(self.host.as_deref().unwrap_or(host));
        if self.host.is_some() {
            // A new host drops the old port unless a port is given.
            port = split_host_port(self.host.as_deref().unwrap_or_default()).1;
        }
        if let Some(p) = self.port {
            port = Some(p.to_string());
        } else if new_scheme != scheme {
            // Changing scheme drops the old scheme's default port.
            if matches!((scheme, port.as_deref()), ("http", Some("80")) | ("https", Some("443"))) {
                port = None;
            }
        }
        // Otherwise the request's port stays, a default one too (Envoy's `processRequestHost`).
        let mut new_path = if let Some(p) = &self.path {
            p.clone()
        } else if let (Some(new_prefix), Some(old)) = (&self.prefix_rewrite, matched_prefix) {
            format!("{new_prefix}{}", path.get(old.len()..).unwrap_or(""))
        } else if let Some(rr) = &self.regex_rewrite {
            rr.pattern.regex().replace_all(path, re2_substitution(&rr.substitution).as_str()).into_owned()
        } else {
            path.to_string()
        };
        if !self.strip_query && !new_path.contains('?') {
            if let Some(q) = query {
                new_path.push('?');
                new_path.push_str(q);
            }
        }
        if host_only.is_empty() {
            host_only = host;
        }
        match port {
            Some(p) => format!("{new_scheme}://{host_only}:{p}{new_path}"),
            None => format!("{new_scheme}://{host_only}{new_path}"),
        }
    }
}

/// An RE2 substitution (`\1` group references, `\\` for a backslash) in the `regex` crate's
/// syntax (`${1}`, `$$` for a literal dollar).
pub fn re2_substitution(substitution: &str) -> String {
    let mut out = String::with_capacity(substitution.len() + 8);
    let mut chars = substitution.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    chars.next();
                    out.push_str(&format!("${{{d}}}"));
                }
                Some('\\') => {
                    chars.next();
                    out.push('\\');
                }
                _ => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

/// `host:port` → (`host`, `port`); IPv6 literals keep their brackets.
pub fn split_host_port(authority: &str) -> (&str, Option<String>) {
    if let Some(end) = authority.rfind(']') {
        return match authority[end + 1..].strip_prefix(':') {
            Some(p) => (&authority[..=end], Some(p.to_string())),
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p.to_string())),
        _ => (authority, None),
    }
}

pub struct DirectResponse {
    pub status: StatusCode,
    pub body: Bytes,
    /// Formats the body per request, with the `content-type` it sets.
    pub body_format: Option<Arc<(crate::access_log::LogFormat, http::HeaderValue)>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect() -> Redirect {
        Redirect {
            https: false,
            scheme: None,
            host: None,
            port: None,
            path: None,
            prefix_rewrite: None,
            regex_rewrite: None,
            strip_query: false,
            status: StatusCode::MOVED_PERMANENTLY,
        }
    }

    #[test]
    fn https_redirect_drops_default_port_and_keeps_query() {
        let r = Redirect { https: true, ..redirect() };
        assert_eq!(r.location("http", "example.com:80", "/a", Some("x=1"), None), "https://example.com/a?x=1");
        assert_eq!(r.location("http", "example.com:8080", "/a", None, None), "https://example.com:8080/a");
        // The request's port stays unless the scheme changes from its default or a port is
        // given, which is then written as given (Envoy's `processRequestHost`).
        assert_eq!(r.location("https", "example.com:443", "/a", None, None), "https://example.com:443/a");
        let same = Redirect { path: Some("/n".into()), ..redirect() };
        assert_eq!(same.location("http", "example.com:80", "/a", None, None), "http://example.com:80/n");
        let port = Redirect { https: true, port: Some(443), ..redirect() };
        assert_eq!(port.location("http", "example.com:80", "/a", None, None), "https://example.com:443/a");
    }

    #[test]
    fn host_path_and_prefix_redirects() {
        let r = Redirect { host: Some("new.example".into()), path: Some("/moved".into()), ..redirect() };
        assert_eq!(r.location("http", "old:8080", "/x", Some("q"), None), "http://new.example/moved?q");
        let r = Redirect { prefix_rewrite: Some("/v2/".into()), strip_query: true, ..redirect() };
        assert_eq!(r.location("http", "h", "/v1/items", Some("q"), Some("/v1/")), "http://h/v2/items");
    }

    #[test]
    fn re2_substitutions_become_regex_crate_ones() {
        assert_eq!(re2_substitution(r"/v2/\2/\1"), "/v2/${2}/${1}");
        assert_eq!(re2_substitution(r"a$b\\c"), r"a$$b\c");
    }

    #[test]
    fn splits_authorities() {
        assert_eq!(split_host_port("a:1"), ("a", Some("1".to_string())));
        assert_eq!(split_host_port("[::1]:8"), ("[::1]", Some("8".to_string())));
        assert_eq!(split_host_port("[::1]"), ("[::1]", None));
        assert_eq!(split_host_port("a"), ("a", None));
    }
}
