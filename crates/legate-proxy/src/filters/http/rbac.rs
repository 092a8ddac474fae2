//! `envoy.filters.http.rbac` (`envoy.extensions.filters.http.rbac.v3.RBAC`), Envoy's "Role
//! Based Access Control" filter: each request is checked against the shadow policies (counted
//! only) and then the enforced ones; a denied request gets 403 `RBAC: access denied` with
//! `rbac_access_denied_matched_policy[<policy>]` as its details.
//!
//! Stats, under the connection manager's `http.<stat_prefix>.`: `rbac.[<rules_stat_prefix>.]
//! allowed` / `denied`, `rbac.[<shadow_rules_stat_prefix>.]shadow_allowed` / `shadow_denied`,
//! and with `track_per_rule_stats` the same per policy (`rbac.policy.<name>.allowed`…). A
//! route (or virtual host) `RBACPerRoute` replaces both rule sets, and one without `rbac` turns
//! the filter off there.

use std::sync::Arc;

use http::StatusCode;
use legate_config::filters::http::rbac::RbacFilter as RbacConfig;
use legate_config::route::FilterPerRouteConfig;
use legate_stats::Scope;

use super::route_state::{route_entry, RouteStates};
use super::StreamView;
use crate::filters::rbac::{CountedEngine, RbacInput};
use crate::http::filter::{FilterCallbacks, FilterHeadersStatus, HttpFilter};
use crate::http::LocalReply;

/// The filter's config, shared by every stream on every worker.
pub struct RbacFilterConfig {
    pub name: String,
    rules: Rules,
    per_route: RouteStates<Rules>,
    /// The connection manager's scope (`http.<stat_prefix>`), where route rules count too.
    scope: Scope,
}

/// An enforced and a shadow rule set, with their stats.
struct Rules {
    enforced: Option<CountedEngine>,
    shadow: Option<CountedEngine>,
}

impl Rules {
    fn new(config: &RbacConfig, scope: &Scope) -> Result<Self, String> {
        let per_rule = config.track_per_rule_stats;
        Ok(Rules {
            enforced: config
                .rules
                .as_ref()
                .map(|r| CountedEngine::new(r, scope, &config.rules_stat_prefix, false, per_rule))
                .transpose()?,
            shadow: config
                .shadow_rules
                .as_ref()
                .map(|r| CountedEngine::new(r, scope, &config.shadow_rules_stat_prefix, true, per_rule))
                .transpose()?,
        })
    }
}

impl RbacFilterConfig {
    /// `scope` is the connection manager's (`http.<stat_prefix>`).
    pub fn new(name: String, config: &RbacConfig, scope: &Scope) -> Result<Self, String> {
        let rules = Rules::new(config, scope).map_err(|e| format!("rbac: {e}"))?;
        Ok(RbacFilterConfig { name, rules, per_route: RouteStates::default(), scope: scope.clone() })
    }
}

/// One stream's RBAC filter.
pub struct RbacFilter {
    config: Arc<RbacFilterConfig>,
}

impl RbacFilter {
    pub fn new(config: Arc<RbacFilterConfig>) -> Self {
        RbacFilter { config }
    }

    fn on_request(&self, head: &http::request::Parts, stream: StreamView<'_>) -> FilterHeadersStatus {
        let config = &self.config;
        let route_rules = match route_entry(&stream, &config.name, |c| match c {
            FilterPerRouteConfig::Rbac(per_route) => Some(per_route),
            _ => None,
        }) {
            Some((_, per_route)) if per_route.rbac.is_none() => return FilterHeadersStatus::Continue,
            Some((owner, per_route)) => config.per_route.get(owner, per_route, |c| {
                let rbac = c.rbac.as_ref().ok_or("rbac: a route without rules")?;
                Rules::new(rbac, &config.scope).map_err(|e| format!("rbac: a route's rules are not applied: {e}"))
            }),
            None => None,
        };
        let rules = route_rules.as_deref().unwrap_or(&config.rules);
        let info = &*stream.info;
        let input = RbacInput {
            request: Some((head, info.scheme.as_str())),
            local: info.downstream_local_address,
            direct_remote: info.downstream_direct_remote_address,
            remote: info.downstream_remote_address,
            ssl: info.downstream_ssl.as_deref(),
            requested_server_name: info.requested_server_name.as_deref(),
        };
        if let Some(shadow) = &rules.shadow {
            shadow.check(&input);
        }
        let Some(enforced) = &rules.enforced else { return FilterHeadersStatus::Continue };
        match enforced.check(&input) {
            (true, _) => FilterHeadersStatus::Continue,
            (false, policy) => {
                let policy = policy.map_or_else(|| "none".to_string(), |p| p.replace(char::is_whitespace, "_"));
                FilterHeadersStatus::LocalReply(LocalReply::new(
                    StatusCode::FORBIDDEN,
                    "RBAC: access denied",
                    format!("rbac_access_denied_matched_policy[{policy}]"),
                ))
            }
        }
    }
}

impl HttpFilter for RbacFilter {
    fn decode_headers(
        &mut self,
        head: &mut http::request::Parts,
        _end_stream: bool,
        cb: &mut FilterCallbacks<'_>,
    ) -> FilterHeadersStatus {
        self.on_request(head, StreamView::of(cb))
    }
}
