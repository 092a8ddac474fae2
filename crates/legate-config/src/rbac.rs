//! `envoy.config.rbac.v3`: role-based access control policies, as the RBAC filters read them.
//! A policy matches a request when one of its permissions (what is asked) and one of its
//! principals (who asks) match.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::core::CidrRange;
use crate::matcher::StringMatcher;
use crate::route::HeaderMatcher;
use crate::unsupported::Unsupported;
use crate::validate::Validator;

/// `RBAC`: what to do when a policy matches, and the policies by name.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rbac {
    #[serde(default)]
    pub action: RbacAction,
    /// Evaluated in name order, as Envoy's map holds them; the first match decides.
    #[serde(default)]
    pub policies: BTreeMap<String, Policy>,
    pub audit_logging_options: Option<Unsupported>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum RbacAction {
    /// Allowed only when a policy matches.
    #[default]
    #[serde(rename = "ALLOW")]
    Allow,
    /// Denied when a policy matches.
    #[serde(rename = "DENY")]
    Deny,
    /// Always allowed (the match is only recorded).
    #[serde(rename = "LOG")]
    Log,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub permissions: Vec<Permission>,
    #[serde(default)]
    pub principals: Vec<Principal>,
    pub condition: Option<Unsupported>,
    pub checked_condition: Option<Unsupported>,
}

/// `Permission`: one rule about the request (exactly one field set).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Permission {
    pub and_rules: Option<PermissionSet>,
    pub or_rules: Option<PermissionSet>,
    pub any: Option<bool>,
    pub header: Option<HeaderMatcher>,
    pub destination_ip: Option<CidrRange>,
    pub destination_port: Option<u32>,
    pub metadata: Option<Unsupported>,
    pub not_rule: Option<Box<Permission>>,
    pub requested_server_name: Option<StringMatcher>,
    pub url_path: Option<PathMatcher>,
    pub destination_port_range: Option<Int32Range>,
    pub matcher: Option<Unsupported>,
    pub uri_template: Option<Unsupported>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PermissionSet {
    #[serde(default)]
    pub rules: Vec<Permission>,
}

/// `Principal`: one rule about the downstream (exactly one field set).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    pub and_ids: Option<PrincipalSet>,
    pub or_ids: Option<PrincipalSet>,
    pub any: Option<bool>,
    pub authenticated: Option<Authenticated>,
    /// Deprecated for `direct_remote_ip` / `remote_ip`: the connection's peer.
    pub source_ip: Option<CidrRange>,
    pub header: Option<HeaderMatcher>,
    pub metadata: Option<Unsupported>,
    pub not_id: Option<Box<Principal>>,
    pub url_path: Option<PathMatcher>,
    pub direct_remote_ip: Option<CidrRange>,
    pub remote_ip: Option<CidrRange>,
    pub filter_state: Option<Unsupported>,
    pub custom: Option<Unsupported>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PrincipalSet {
    #[serde(default)]
    pub ids: Vec<Principal>,
}

/// `Principal.Authenticated`: a TLS peer, its certificate's URI SANs, DNS SANs or subject
/// matching `principal_name` (any TLS connection without one).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Authenticated {
    pub principal_name: Option<StringMatcher>,
}

/// `envoy.type.matcher.v3.PathMatcher`: the path without its query or fragment.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PathMatcher {
    pub path: Option<StringMatcher>,
}

/// `envoy.type.v3.Int32Range`: `[start, end)`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Int32Range {
    #[serde(default)]
    pub start: i32,
    #[serde(default)]
    pub end: i32,
}

impl Rbac {
    pub(crate) fn validate(&self, at: &str, v: &mut Validator) {
        for (name, policy) in &self.policies {
            let p_at = format!("{at}.policies[\"{name}\"]");
            if policy.permissions.is_empty() {
                v.error(&format!("{p_at}.permissions"), "value must contain at least 1 item(s)");
            }
            if policy.principals.is_empty() {
                v.error(&format!("{p_at}.principals"), "value must contain at least 1 item(s)");
            }
            for (i, permission) in policy.permissions.iter().enumerate() {
                permission.validate(&format!("{p_at}.permissions[{i}]"), v);
            }
            for (i, principal) in policy.principals.iter().enumerate() {
                principal.validate(&format!("{p_at}.principals[{i}]"), v);
            }
        }
    }
}

fn cidr(at: &str, range: &CidrRange, v: &mut Validator) {
    if let Err(e) = range.parse() {
        v.error(at, e);
    }
}

fn path_matcher(at: &str, m: &PathMatcher, v: &mut Validator) {
    match &m.path {
        Some(path) => path.validate(&format!("{at}.path"), v),
        None => v.error(&format!("{at}.path"), "value is required"),
    }
}

impl Permission {
    fn validate(&self, at: &str, v: &mut Validator) {
        v.oneof(
            at,
            &[
                ("and_rules", self.and_rules.is_some()),
                ("or_rules", self.or_rules.is_some()),
                ("any", self.any.is_some()),
                ("header", self.header.is_some()),
                ("destination_ip", self.destination_ip.is_some()),
                ("destination_port", self.destination_port.is_some()),
                ("metadata", false),
                ("not_rule", self.not_rule.is_some()),
                ("requested_server_name", self.requested_server_name.is_some()),
                ("url_path", self.url_path.is_some()),
                ("destination_port_range", self.destination_port_range.is_some()),
                ("matcher", false),
                ("uri_template", false),
            ],
            true,
        );
        for (field, set) in [("and_rules", &self.and_rules), ("or_rules", &self.or_rules)] {
            if let Some(set) = set {
                if set.rules.is_empty() {
                    v.error(&format!("{at}.{field}.rules"), "value must contain at least 1 item(s)");
                }
                for (i, rule) in set.rules.iter().enumerate() {
                    rule.validate(&format!("{at}.{field}.rules[{i}]"), v);
                }
            }
        }
        if self.any == Some(false) {
            v.error(&format!("{at}.any"), "value must equal true");
        }
        if let Some(h) = &self.header {
            h.validate(&format!("{at}.header"), v);
        }
        if let Some(ip) = &self.destination_ip {
            cidr(&format!("{at}.destination_ip"), ip, v);
        }
        if self.destination_port.is_some_and(|p| p > 65535) {
            v.error(&format!("{at}.destination_port"), "value must be less than or equal to 65535");
        }
        if let Some(r) = &self.destination_port_range {
            if !(0 <= r.start && r.start < r.end && r.end <= 65536) {
                v.error(&format!("{at}.destination_port_range"), "range must be 0 <= start < end <= 65536");
            }
        }
        if let Some(not) = &self.not_rule {
            not.validate(&format!("{at}.not_rule"), v);
        }
        if let Some(m) = &self.requested_server_name {
            m.validate(&format!("{at}.requested_server_name"), v);
        }
        if let Some(m) = &self.url_path {
            path_matcher(&format!("{at}.url_path"), m, v);
        }
    }
}

impl Principal {
    fn validate(&self, at: &str, v: &mut Validator) {
        v.oneof(
            at,
            &[
                ("and_ids", self.and_ids.is_some()),
                ("or_ids", self.or_ids.is_some()),
                ("any", self.any.is_some()),
                ("authenticated", self.authenticated.is_some()),
                ("source_ip", self.source_ip.is_some()),
                ("header", self.header.is_some()),
                ("metadata", false),
                ("not_id", self.not_id.is_some()),
                ("url_path", self.url_path.is_some()),
                ("direct_remote_ip", self.direct_remote_ip.is_some()),
                ("remote_ip", self.remote_ip.is_some()),
                ("filter_state", false),
                ("custom", false),
            ],
            true,
        );
        for (field, set) in [("and_ids", &self.and_ids), ("or_ids", &self.or_ids)] {
            if let Some(set) = set {
                if set.ids.is_empty() {
                    v.error(&format!("{at}.{field}.ids"), "value must contain at least 1 item(s)");
                }
                for (i, id) in set.ids.iter().enumerate() {
                    id.validate(&format!("{at}.{field}.ids[{i}]"), v);
                }
            }
        }
        if self.any == Some(false) {
            v.error(&format!("{at}.any"), "value must equal true");
        }
        if let Some(m) = self.authenticated.as_ref().and_then(|a| a.principal_name.as_ref()) {
            m.validate(&format!("{at}.authenticated.principal_name"), v);
        }
        for (field, ip) in [
            ("source_ip", &self.source_ip),
            ("direct_remote_ip", &self.direct_remote_ip),
            ("remote_ip", &self.remote_ip),
        ] {
            if let Some(ip) = ip {
                cidr(&format!("{at}.{field}"), ip, v);
            }
        }
        if let Some(h) = &self.header {
            h.validate(&format!("{at}.header"), v);
        }
        if let Some(not) = &self.not_id {
            not.validate(&format!("{at}.not_id"), v);
        }
        if let Some(m) = &self.url_path {
            path_matcher(&format!("{at}.url_path"), m, v);
        }
    }
}
