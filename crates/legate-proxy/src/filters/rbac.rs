//! The RBAC engine (Envoy's `RoleBasedAccessControlEngineImpl`): policies compiled once,
//! evaluated in name order against what a request or connection shows of itself.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use legate_config::matcher::StringMatcher;
use legate_config::rbac::{Permission as PermissionConfig, Principal as PrincipalConfig, Rbac, RbacAction};
use legate_config::route::HeaderMatcher;
use legate_stats::{Counter, Scope};

use crate::listener::filter_chain_match::contains;
use crate::tls::certificate::SubjectAltName;
use crate::tls::SslConnectionInfo;

/// What a decision can look at. `request` is absent for the network filter, where header and
/// path rules never match.
pub struct RbacInput<'a> {
    pub request: Option<(&'a http::request::Parts, &'a str)>,
    pub local: SocketAddr,
    /// The connection's peer.
    pub direct_remote: SocketAddr,
    /// The client as `x-forwarded-for` (when trusted) says.
    pub remote: SocketAddr,
    pub ssl: Option<&'a SslConnectionInfo>,
    pub requested_server_name: Option<&'a str>,
}

/// One `RBAC` message, compiled.
pub struct RbacEngine {
    action: RbacAction,
    /// In name order (Envoy's `std::map`): the first match is the effective policy.
    policies: Vec<(String, Policy)>,
}

/// A decision: allowed or not, and the policy that decided (none when none matched).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'a> {
    pub allowed: bool,
    pub policy: Option<&'a str>,
}

struct Policy {
    permissions: Vec<Permission>,
    principals: Vec<Principal>,
}

enum Permission {
    And(Vec<Permission>),
    Or(Vec<Permission>),
    Any,
    Header(Box<HeaderMatcher>),
    DestinationIp(IpAddr, u8),
    DestinationPort(u16),
    DestinationPortRange(i32, i32),
    Not(Box<Permission>),
    RequestedServerName(Box<StringMatcher>),
    UrlPath(Box<StringMatcher>),
}

enum Principal {
    And(Vec<Principal>),
    Or(Vec<Principal>),
    Any,
    /// `None`: any TLS connection.
    Authenticated(Option<Box<StringMatcher>>),
    DirectRemoteIp(IpAddr, u8),
    RemoteIp(IpAddr, u8),
    Header(Box<HeaderMatcher>),
    Not(Box<Principal>),
    UrlPath(Box<StringMatcher>),
}

impl RbacEngine {
    pub fn new(config: &Rbac) -> Result<Self, String> {
        let policies = config
            .policies
            .iter()
            .map(|(name, p)| {
                let permissions = p.permissions.iter().map(Permission::new).collect::<Result<_, _>>()?;
                let principals = p.principals.iter().map(Principal::new).collect::<Result<_, _>>()?;
                Ok((name.clone(), Policy { permissions, principals }))
            })
            .collect::<Result<_, String>>()?;
        Ok(RbacEngine { action: config.action, policies })
    }

    /// The policy names, in evaluation order.
    pub fn policy_names(&self) -> impl Iterator<Item = &str> {
        self.policies.iter().map(|(name, _)| name.as_str())
    }

    /// Envoy's `handleAction`: ALLOW allows what a policy matches, DENY denies it, LOG
    /// allows everything.
    pub fn decide(&self, input: &RbacInput<'_>) -> Decision<'_> {
        let matched = self
            .policies
            .iter()
            .find(|(_, p)| {
                p.permissions.iter().any(|r| r.matches(input)) && p.principals.iter().any(|r| r.matches(input))
            })
            .map(|(name, _)| name.as_str());
        let allowed = match self.action {
            RbacAction::Allow => matched.is_some(),
            RbacAction::Deny => matched.is_none(),
            RbacAction::Log => true,
        };
        Decision { allowed, policy: matched }
    }
}

/// A rule set and its counters (allowed, denied), in total and per policy.
pub(crate) struct CountedEngine {
    engine: RbacEngine,
    allowed: Counter,
    denied: Counter,
    per_policy: HashMap<String, (Counter, Counter)>,
}

/// Envoy's `statPrefixJoin`: `prefix` and a dot, unless it ends with one.
fn join(prefix: &str) -> String {
    match prefix {
        "" => String::new(),
        p if p.ends_with('.') => p.to_string(),
        p => format!("{p}."),
    }
}

impl CountedEngine {
    pub(crate) fn new(
        config: &legate_config::rbac::Rbac,
        scope: &Scope,
        prefix: &str,
        shadow: bool,
        per_rule: bool,
    ) -> Result<Self, String> {
        let engine = RbacEngine::new(config)?;
        let base = format!("rbac.{}", join(prefix));
        let (allowed, denied) = if shadow { ("shadow_allowed", "shadow_denied") } else { ("allowed", "denied") };
        let per_policy = match per_rule {
            true => engine
                .policy_names()
                .map(|name| {
                    let at = format!("{base}policy.{name}.");
                    (
                        name.to_string(),
                        (scope.counter(&format!("{at}{allowed}")), scope.counter(&format!("{at}{denied}"))),
                    )
                })
                .collect(),
            false => HashMap::new(),
        };
        Ok(CountedEngine {
            allowed: scope.counter(&format!("{base}{allowed}")),
            denied: scope.counter(&format!("{base}{denied}")),
            engine,
            per_policy,
        })
    }

    /// Decides and counts; the policy that decided.
    pub(crate) fn check(&self, input: &RbacInput<'_>) -> (bool, Option<String>) {
        let decision = self.engine.decide(input);
        let (total, index) = if decision.allowed { (&self.allowed, 0) } else { (&self.denied, 1) };
        total.inc();
        if let Some((allowed, denied)) = decision.policy.and_then(|p| self.per_policy.get(p)) {
            if index == 0 { allowed } else { denied }.inc();
        }
        (decision.allowed, decision.policy.map(str::to_string))
    }
}

fn cidr(range: &legate_config::core::CidrRange) -> Result<(IpAddr, u8), String> {
    range.parse()
}

fn path_matcher(m: &legate_config::rbac::PathMatcher) -> Result<StringMatcher, String> {
    m.path.clone().ok_or_else(|| "rbac: url_path needs a path matcher".to_string())
}

/// The request's `:path` without its query or fragment.
fn bare_path<'a>(input: &RbacInput<'a>) -> Option<&'a str> {
    let (head, _) = input.request?;
    let path = head.uri.path();
    Some(path.split(['?', '#']).next().unwrap_or(path))
}

fn header_matches(m: &HeaderMatcher, input: &RbacInput<'_>) -> bool {
    match input.request {
        Some((head, scheme)) => m.matches(super::http::request_header_value(head, scheme, &m.name).as_deref()),
        None => false,
    }
}

impl Permission {
    fn new(c: &PermissionConfig) -> Result<Self, String> {
        let all = |rules: &[PermissionConfig]| rules.iter().map(Permission::new).collect::<Result<Vec<_>, _>>();
        Ok(if let Some(set) = &c.and_rules {
            Permission::And(all(&set.rules)?)
        } else if let Some(set) = &c.or_rules {
            Permission::Or(all(&set.rules)?)
        } else if c.any.is_some() {
            Permission::Any
        } else if let Some(h) = &c.header {
            Permission::Header(Box::new(h.clone()))
        } else if let Some(ip) = &c.destination_ip {
            let (net, len) = cidr(ip)?;
            Permission::DestinationIp(net, len)
        } else if let Some(port) = c.destination_port {
            Permission::DestinationPort(u16::try_from(port).map_err(|_| "rbac: destination_port above 65535")?)
        } else if let Some(range) = &c.destination_port_range {
            Permission::DestinationPortRange(range.start, range.end)
        } else if let Some(not) = &c.not_rule {
            Permission::Not(Box::new(Permission::new(not)?))
        } else if let Some(m) = &c.requested_server_name {
            Permission::RequestedServerName(Box::new(m.clone()))
        } else if let Some(m) = &c.url_path {
            Permission::UrlPath(Box::new(path_matcher(m)?))
        } else {
            return Err("rbac: a permission needs a rule".into());
        })
    }

    fn matches(&self, input: &RbacInput<'_>) -> bool {
        match self {
            Permission::And(rules) => rules.iter().all(|r| r.matches(input)),
            Permission::Or(rules) => rules.iter().any(|r| r.matches(input)),
            Permission::Any => true,
            Permission::Header(m) => header_matches(m, input),
            Permission::DestinationIp(net, len) => contains(*net, *len, input.local.ip()),
            Permission::DestinationPort(port) => input.local.port() == *port,
            Permission::DestinationPortRange(start, end) => {
                let port = i32::from(input.local.port());
                *start <= port && port < *end
            }
            Permission::Not(rule) => !rule.matches(input),
            Permission::RequestedServerName(m) => m.matches(input.requested_server_name.unwrap_or_default()),
            Permission::UrlPath(m) => bare_path(input).is_some_and(|p| m.matches(p)),
        }
    }
}

impl Principal {
    fn new(c: &PrincipalConfig) -> Result<Self, String> {
        let all = |ids: &[PrincipalConfig]| ids.iter().map(Principal::new).collect::<Result<Vec<_>, _>>();
        Ok(if let Some(set) = &c.and_ids {
            Principal::And(all(&set.ids)?)
        } else if let Some(set) = &c.or_ids {
            Principal::Or(all(&set.ids)?)
        } else if c.any.is_some() {
            Principal::Any
        } else if let Some(a) = &c.authenticated {
            Principal::Authenticated(a.principal_name.clone().map(Box::new))
        } else if let Some(ip) = c.source_ip.as_ref().or(c.direct_remote_ip.as_ref()) {
            let (net, len) = cidr(ip)?;
            Principal::DirectRemoteIp(net, len)
        } else if let Some(ip) = &c.remote_ip {
            let (net, len) = cidr(ip)?;
            Principal::RemoteIp(net, len)
        } else if let Some(h) = &c.header {
            Principal::Header(Box::new(h.clone()))
        } else if let Some(not) = &c.not_id {
            Principal::Not(Box::new(Principal::new(not)?))
        } else if let Some(m) = &c.url_path {
            Principal::UrlPath(Box::new(path_matcher(m)?))
        } else {
            return Err("rbac: a principal needs an identifier".into());
        })
    }

    fn matches(&self, input: &RbacInput<'_>) -> bool {
        match self {
            Principal::And(ids) => ids.iter().all(|r| r.matches(input)),
            Principal::Or(ids) => ids.iter().any(|r| r.matches(input)),
            Principal::Any => true,
            Principal::Authenticated(name) => {
                let Some(ssl) = input.ssl else { return false };
                let Some(name) = name else { return true };
                let Some(cert) = &ssl.peer_certificate else { return false };
                // URI SANs, then DNS SANs, then the subject (Envoy's `AuthenticatedMatcher`).
                let sans = |uri: bool| {
                    cert.subject_alt_names.iter().filter_map(move |san| match (san, uri) {
                        (SubjectAltName::Uri(v), true) | (SubjectAltName::Dns(v), false) => Some(v.as_str()),
                        _ => None,
                    })
                };
                sans(true).chain(sans(false)).any(|v| name.matches(v)) || name.matches(&cert.subject)
            }
            Principal::DirectRemoteIp(net, len) => contains(*net, *len, input.direct_remote.ip()),
            Principal::RemoteIp(net, len) => contains(*net, *len, input.remote.ip()),
            Principal::Header(m) => header_matches(m, input),
            Principal::Not(id) => !id.matches(input),
            Principal::UrlPath(m) => bare_path(input).is_some_and(|p| m.matches(p)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(yaml: &str) -> RbacEngine {
        let config: Rbac =
            legate_config::path::from_value(serde_yaml_ng::from_str::<serde_json::Value>(yaml).unwrap()).unwrap();
        RbacEngine::new(&config).unwrap()
    }

    fn input<'a>(head: &'a http::request::Parts, remote: &str) -> RbacInput<'a> {
        let peer: SocketAddr = remote.parse().unwrap();
        RbacInput {
            request: Some((head, "http")),
            local: "10.0.0.1:8080".parse().unwrap(),
            direct_remote: peer,
            remote: peer,
            ssl: None,
            requested_server_name: None,
        }
    }

    fn request(method: &str, uri: &str) -> http::request::Parts {
        http::Request::builder().method(method).uri(uri).body(()).unwrap().into_parts().0
    }

    #[test]
    fn policies_decide_in_name_order() {
        let allow = engine(
            r#"
            action: ALLOW
            policies:
              b-reads:
                permissions: [{and_rules: {rules: [{header: {name: ":method", string_match: {exact: GET}}},
                                                  {url_path: {path: {prefix: /public}}}]}}]
                principals: [{any: true}]
              a-office:
                permissions: [{any: true}]
                principals: [{remote_ip: {address_prefix: 192.168.0.0, prefix_len: 16}}]
            "#,
        );
        let get = request("GET", "/public/x?q=/private");
        assert_eq!(allow.decide(&input(&get, "1.2.3.4:5")), Decision { allowed: true, policy: Some("b-reads") });
        assert_eq!(allow.decide(&input(&get, "192.168.1.1:5")).policy, Some("a-office"), "name order");
        let post = request("POST", "/public/x");
        assert_eq!(allow.decide(&input(&post, "1.2.3.4:5")), Decision { allowed: false, policy: None });
        let private = request("GET", "/private?x=/public");
        assert!(!allow.decide(&input(&private, "1.2.3.4:5")).allowed, "the query is not the path");

        let deny = engine(
            r#"
            action: DENY
            policies:
              no-admin:
                permissions: [{not_rule: {destination_port_range: {start: 8000, end: 8080}}}]
                principals: [{not_id: {direct_remote_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}}]
            "#,
        );
        assert_eq!(deny.decide(&input(&get, "1.2.3.4:5")), Decision { allowed: false, policy: Some("no-admin") });
        assert!(deny.decide(&input(&get, "10.1.1.1:5")).allowed);
        assert!(engine("action: DENY").decide(&input(&get, "1.2.3.4:5")).allowed, "no policy, nothing denied");
        assert!(!engine("action: ALLOW").decide(&input(&get, "1.2.3.4:5")).allowed, "no policy, nothing allowed");
    }
}
