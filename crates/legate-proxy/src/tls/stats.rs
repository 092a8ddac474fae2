//! `ssl.*` under a listener (`listener.<address>.ssl.`) or a cluster (`cluster.<name>.ssl.`):
//! Envoy's ALL_SSL_STATS, plus the per-handshake `ciphers.<name>`, `versions.<name>`,
//! `curves.<name>`, `sigalgs.<name>` counters, created on first use as Envoy does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use legate_stats::{Counter, Scope};

legate_stats::stats! {
    /// `<prefix>.ssl.*`, Envoy's ALL_SSL_STATS.
    pub struct SslCounters {
        counter connection_error,
        counter handshake,
        counter session_reused,
        counter no_certificate,
        counter fail_verify_no_cert,
        counter fail_verify_error,
        counter fail_verify_san,
        counter fail_verify_cert_hash,
        counter ocsp_staple_failed,
        counter ocsp_staple_omitted,
        counter ocsp_staple_responses,
        counter ocsp_staple_requests,
        counter was_key_usage_invalid,
    }
}

/// The `ssl.*` stats of one TLS context; shared by all workers (stats shard themselves).
#[derive(Clone, Debug)]
pub struct SslStats {
    pub counters: SslCounters,
    scope: Scope,
    /// `ciphers.X` and friends by kind, then name: a handful per context, created on first
    /// use. Handshakes read the map without a lock; a new name copies it under `insert`.
    dynamic: Arc<ArcSwap<HashMap<&'static str, HashMap<String, Counter>>>>,
    insert: Arc<Mutex<()>>,
}

impl std::ops::Deref for SslStats {
    type Target = SslCounters;
    fn deref(&self) -> &SslCounters {
        &self.counters
    }
}

impl SslStats {
    /// `scope` is the listener's or cluster's scope; the stats go under its `ssl.`.
    pub fn new(scope: &Scope) -> Self {
        let scope = scope.scope("ssl");
        SslStats { counters: SslCounters::new(&scope), scope, dynamic: Arc::default(), insert: Arc::default() }
    }

    /// Counts one handshake property, e.g. `("versions", "TLSv1.3")`.
    pub fn inc_named(&self, kind: &'static str, name: &str) {
        if let Some(counter) = self.dynamic.load().get(kind).and_then(|names| names.get(name)) {
            counter.inc();
            return;
        }
        let _insert = self.insert.lock().unwrap_or_else(|e| e.into_inner());
        let mut map = HashMap::clone(&self.dynamic.load());
        let counter = map
            .entry(kind)
            .or_default()
            .entry(name.to_string())
            .or_insert_with(|| self.scope.counter(&format!("{kind}.{name}")))
            .clone();
        self.dynamic.store(Arc::new(map));
        counter.inc();
    }
}
