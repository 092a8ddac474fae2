//! A compiled route configuration: virtual hosts by domain, and per virtual host an index
//! over its routes.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

use legate_config::route::{
    CorsPolicy, FilterPerRouteConfig, RouteConfiguration, TlsRequirementType, VirtualHost as VirtualHostConfig,
};

use super::header_parser::HeaderParser;
use super::route::{MatchInput, PathMatch, Route};

pub struct VirtualHost {
    pub name: Arc<str>,
    routes: Vec<Arc<Route>>,
    index: RouteIndex,
    pub request_headers: HeaderParser,
    pub response_headers: HeaderParser,
    pub per_filter_config: BTreeMap<String, FilterPerRouteConfig>,
    pub cors: Option<CorsPolicy>,
    pub include_attempt_count_in_request: bool,
    pub include_attempt_count_in_response: bool,
    pub per_request_buffer_limit_bytes: Option<u32>,
    pub require_tls: TlsRequirementType,
}

impl VirtualHost {
    /// `mirror_policies`: the route configuration's `request_mirror_policies`.
    fn new(
        c: &VirtualHostConfig,
        mirror_policies: &[legate_config::route::RequestMirrorPolicy],
    ) -> Result<Self, String> {
        let inherited = super::action::Inherited {
            retry_policy: c.retry_policy.as_ref(),
            mirror_policies: match c.request_mirror_policies.is_empty() {
                true => mirror_policies,
                false => &c.request_mirror_policies,
            },
        };
        let mut routes = Vec::with_capacity(c.routes.len());
        for (i, r) in c.routes.iter().enumerate() {
            routes.push(Arc::new(
                Route::new(r, inherited).map_err(|e| format!("virtual host '{}' route {i}: {e}", c.name))?,
            ));
        }
        Ok(VirtualHost {
            name: c.name.as_str().into(),
            index: RouteIndex::new(&routes),
            routes,
            request_headers: HeaderParser::new(&c.request_headers_to_add, &c.request_headers_to_remove)?,
            response_headers: HeaderParser::new(&c.response_headers_to_add, &c.response_headers_to_remove)?,
            per_filter_config: c.typed_per_filter_config.clone(),
            cors: c.cors.clone(),
            include_attempt_count_in_request: c.include_request_attempt_count,
            include_attempt_count_in_response: c.include_attempt_count_in_response,
            per_request_buffer_limit_bytes: c.per_request_buffer_limit_bytes,
            require_tls: c.require_tls,
        })
    }

    /// `require_tls`: whether a request with this `scheme` gets Envoy's redirect to https
    /// (`EXTERNAL_ONLY`: unless the connection manager marked it `x-envoy-internal`).
    pub fn redirects_to_https(&self, scheme: &str, headers: &http::HeaderMap) -> bool {
        if scheme == "https" {
            return false;
        }
        match self.require_tls {
            TlsRequirementType::None => false,
            TlsRequirementType::All => true,
            TlsRequirementType::ExternalOnly => headers.get("x-envoy-internal").is_none_or(|v| v.as_bytes() != b"true"),
        }
    }

    /// The first route, in configuration order, that matches.
    pub fn route(&self, input: &MatchInput<'_>) -> Option<&Arc<Route>> {
        // Each candidate list is in route order: its first match is its best, and the lowest
        // of those wins. Nothing is collected, so a lookup allocates nothing.
        let mut best: Option<u32> = None;
        self.index.for_each_candidate_list(input.path, |list| {
            for &i in list {
                if best.is_some_and(|b| i >= b) {
                    break;
                }
                if self.routes.get(i as usize).is_some_and(|r| r.matches(input)) {
                    best = Some(i);
                    break;
                }
            }
        });
        best.and_then(|i| self.routes.get(i as usize))
    }

    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }
}

/// Narrows the routes worth checking for a path. Exact `path` routes are found by hashing,
/// `prefix` routes by hashing each prefix length present; every other route (regex, case
/// insensitive, CONNECT…) is always a candidate.
struct RouteIndex {
    exact: HashMap<String, Vec<u32>>,
    /// Prefix routes grouped by prefix length, shortest first.
    prefixes: Vec<(usize, HashMap<String, Vec<u32>>)>,
    others: Vec<u32>,
}

impl RouteIndex {
    fn new(routes: &[Arc<Route>]) -> Self {
        let mut exact: HashMap<String, Vec<u32>> = HashMap::default();
        let mut by_len: BTreeMap<usize, HashMap<String, Vec<u32>>> = BTreeMap::new();
        let mut others = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let i = i as u32;
            match &route.path {
                PathMatch::Exact(p) if route.case_sensitive => exact.entry(p.clone()).or_default().push(i),
                PathMatch::Prefix(p) if route.case_sensitive => {
                    by_len.entry(p.len()).or_default().entry(p.clone()).or_default().push(i)
                }
                _ => others.push(i),
            }
        }
        RouteIndex { exact, prefixes: by_len.into_iter().collect(), others }
    }

    /// Calls `visit` with each list of routes worth checking for `path` (each in route order).
    fn for_each_candidate_list(&self, path: &str, mut visit: impl FnMut(&[u32])) {
        visit(&self.others);
        if let Some(hits) = self.exact.get(path) {
            visit(hits);
        }
        for (len, table) in &self.prefixes {
            let Some(prefix) = path.get(..*len) else {
                if *len > path.len() {
                    break;
                }
                continue;
            };
            if let Some(hits) = table.get(prefix) {
                visit(hits);
            }
        }
    }
}

pub struct RouteConfig {
    pub name: Arc<str>,
    virtual_hosts: Vec<Arc<VirtualHost>>,
    exact: HashMap<String, usize>,
    /// `*.example.com`-style domains, by suffix length, longest first.
    suffixes: Vec<(usize, HashMap<String, usize>)>,
    /// `example.*`-style domains, by prefix length, longest first.
    prefixes: Vec<(usize, HashMap<String, usize>)>,
    default: Option<usize>,
    ignore_port_in_host_matching: bool,
    pub request_headers: HeaderParser,
    pub response_headers: HeaderParser,
    pub most_specific_header_mutations_wins: bool,
    /// Some header value holds command operators (`%REQ(...)%`…).
    pub uses_formatters: bool,
    /// Removed from requests not marked `x-envoy-internal` before the filters run.
    pub internal_only_headers: Vec<http::HeaderName>,
    /// The least specific `typed_per_filter_config`, under the virtual hosts' and routes'.
    pub per_filter_config: BTreeMap<String, FilterPerRouteConfig>,
}

impl RouteConfig {
    pub fn new(c: &RouteConfiguration) -> Result<Self, String> {
        let mut virtual_hosts = Vec::new();
        let mut exact = HashMap::default();
        let mut suffixes: BTreeMap<usize, HashMap<String, usize>> = BTreeMap::new();
        let mut prefixes: BTreeMap<usize, HashMap<String, usize>> = BTreeMap::new();
        let mut default = None;
        for (i, vh) in c.virtual_hosts.iter().enumerate() {
            virtual_hosts.push(Arc::new(VirtualHost::new(vh, &c.request_mirror_policies)?));
            for domain in &vh.domains {
                let domain = domain.to_ascii_lowercase();
                if domain == "*" {
                    default.get_or_insert(i);
                } else if let Some(suffix) = domain.strip_prefix('*') {
                    suffixes.entry(suffix.len()).or_default().entry(suffix.to_string()).or_insert(i);
                } else if let Some(prefix) = domain.strip_suffix('*') {
                    prefixes.entry(prefix.len()).or_default().entry(prefix.to_string()).or_insert(i);
                } else {
                    exact.entry(domain).or_insert(i);
                }
            }
        }
        let request_headers = HeaderParser::new(&c.request_headers_to_add, &c.request_headers_to_remove)?;
        let response_headers = HeaderParser::new(&c.response_headers_to_add, &c.response_headers_to_remove)?;
        let uses_formatters = request_headers.uses_formatters()
            || response_headers.uses_formatters()
            || virtual_hosts.iter().any(|v| {
                v.request_headers.uses_formatters()
                    || v.response_headers.uses_formatters()
                    || v.routes.iter().any(|r| r.uses_formatters())
            });
        Ok(RouteConfig {
            name: c.name.as_str().into(),
            virtual_hosts,
            exact,
            suffixes: suffixes.into_iter().rev().collect(),
            prefixes: prefixes.into_iter().rev().collect(),
            default,
            ignore_port_in_host_matching: c.ignore_port_in_host_matching,
            request_headers,
            response_headers,
            most_specific_header_mutations_wins: c.most_specific_header_mutations_wins,
            uses_formatters,
            per_filter_config: c.typed_per_filter_config.clone(),
            internal_only_headers: c
                .internal_only_headers
                .iter()
                .map(|h| {
                    http::HeaderName::from_bytes(h.as_bytes())
                        .map_err(|_| format!("internal_only_headers: invalid header name '{h}'"))
                })
                .collect::<Result<_, _>>()?,
        })
    }

    /// Envoy's search order: exact domain, then the longest `*suffix`, then the longest
    /// `prefix*`, then `*`. Wildcards never match an empty remainder.
    pub fn virtual_host(&self, authority: &str) -> Option<&Arc<VirtualHost>> {
        // Domains are stored lowercase; most authorities already are (no copy then).
        let lowered;
        let mut host = authority;
        if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = authority.to_ascii_lowercase();
            host = &lowered;
        }
        if self.ignore_port_in_host_matching {
            host = super::action::split_host_port(host).0;
        }
        let index = self
            .exact
            .get(host)
            .copied()
            .or_else(|| {
                self.suffixes.iter().find_map(|(len, table)| {
                    let start = host.len().checked_sub(*len).filter(|s| *s > 0)?;
                    table.get(host.get(start..)?).copied()
                })
            })
            .or_else(|| {
                self.prefixes.iter().find_map(|(len, table)| {
                    if host.len() <= *len {
                        return None;
                    }
                    table.get(host.get(..*len)?).copied()
                })
            })
            .or(self.default)?;
        self.virtual_hosts.get(index)
    }

    pub fn virtual_hosts(&self) -> &[Arc<VirtualHost>] {
        &self.virtual_hosts
    }
}
