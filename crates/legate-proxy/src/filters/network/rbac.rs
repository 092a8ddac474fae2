//! `envoy.filters.network.rbac`: a connection allowed or closed by role-based policies on what
//! it shows of itself (its addresses, its TLS peer and SNI), counted under
//! `<stat_prefix>.rbac.allowed` / `denied` (and `shadow_*` for the shadow rules).
//!
//! The decision is taken when the connection is accepted rather than at its first byte (Envoy's
//! `ONE_TIME_ON_FIRST_BYTE`): a network filter's inputs do not change with the bytes, and the
//! HTTP connection manager takes the socket over before any byte is read. `CONTINUOUS`
//! decides the same way, once, for the same reason. Header and path rules never match here.

use std::sync::Arc;
use std::task::Context;
use std::time::Duration;

use bytes::BytesMut;
use legate_config::filters::network::rbac::NetworkRbac;
use legate_stats::Scope;

use crate::filters::rbac::{CountedEngine, RbacInput};
use crate::network::delayed_close::DelayedClose;
use crate::network::{FilterStatus, ReadFilter, ReadFilterCallbacks};

/// Shared by every connection of the filter chain, on every worker.
pub struct NetworkRbacShared {
    enforced: Option<CountedEngine>,
    shadow: Option<CountedEngine>,
    delay_deny: Option<Duration>,
}

impl NetworkRbacShared {
    pub fn new(config: &NetworkRbac, root: &Scope) -> Result<Self, String> {
        let scope = root.scope(config.stat_prefix.trim_end_matches('.'));
        let engine = |rules: Option<&legate_config::rbac::Rbac>, prefix: &str, shadow: bool| {
            rules.map(|r| CountedEngine::new(r, &scope, prefix, shadow, false)).transpose()
        };
        Ok(NetworkRbacShared {
            enforced: engine(config.rules.as_ref(), "", false).map_err(|e| format!("rbac: {e}"))?,
            shadow: engine(config.shadow_rules.as_ref(), &config.shadow_rules_stat_prefix, true)
                .map_err(|e| format!("rbac: {e}"))?,
            delay_deny: config.delay_deny.map(|d| d.0).filter(|d| !d.is_zero()),
        })
    }
}

pub struct NetworkRbacFilter {
    shared: Arc<NetworkRbacShared>,
    /// A denied connection waiting out `delay_deny`.
    delay: DelayedClose,
}

impl NetworkRbacFilter {
    pub fn new(shared: Arc<NetworkRbacShared>) -> Self {
        NetworkRbacFilter { shared, delay: DelayedClose::default() }
    }
}

impl ReadFilter for NetworkRbacFilter {
    fn on_new_connection(&mut self, cb: &mut ReadFilterCallbacks<'_>) -> FilterStatus {
        let info = cb.info();
        let ssl = info.ssl.as_deref();
        let input = RbacInput {
            request: None,
            local: info.local_address,
            direct_remote: info.remote_address,
            remote: info.remote_address,
            ssl,
            requested_server_name: ssl.and_then(|s| s.server_name.as_deref()),
        };
        if let Some(shadow) = &self.shared.shadow {
            shadow.check(&input);
        }
        let allowed = self.shared.enforced.as_ref().is_none_or(|e| e.check(&input).0);
        if allowed {
            return FilterStatus::Continue;
        }
        self.delay.close(self.shared.delay_deny, cb);
        FilterStatus::StopIteration
    }

    fn on_data(&mut self, _data: &mut BytesMut, _end_stream: bool, _cb: &mut ReadFilterCallbacks<'_>) -> FilterStatus {
        if self.delay.pending() {
            return FilterStatus::StopIteration;
        }
        FilterStatus::Continue
    }

    fn poll_io(&mut self, cx: &mut Context<'_>, cb: &mut ReadFilterCallbacks<'_>) {
        self.delay.poll(cx, cb);
    }

    fn needs_events_after_take_over(&self) -> bool {
        false
    }
}
