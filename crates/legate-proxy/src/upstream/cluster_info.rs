//! What a live cluster keeps of its config (Envoy's `ClusterInfo`, kept apart from the
//! `envoy.config.cluster.v3.Cluster` proto it was made from).
//!
//! Most clusters of a large CDS config set their name, type, `eds_cluster_config` and a few
//! scalars, and leave everything else to Envoy's defaults. Such a *plain* cluster keeps those
//! scalars here and no `config::Cluster` at all (552 bytes inline, plus its boxed members):
//! the rest of its config is, by definition, the defaults. A cluster that sets anything else
//! keeps its whole config, as before. `eds_cluster_config` is read once, by EDS, when the
//! cluster is added, and is not kept; `circuit_breakers` lives on in the cluster's
//! [`super::circuit_breakers::CircuitBreakers`].
//!
//! A STATIC cluster's `load_assignment` is read once, when the cluster builds its hosts, and is
//! then forgotten ([`ClusterInfo::forget_static_endpoints`]): its endpoints were ~1.6 KiB of
//! every static cluster's config (10,000 static clusters: 16 MB).
//!
//! Change detection follows Envoy's `ClusterManagerImpl::addOrUpdateCluster`, which compares a
//! hash of the new proto with the one of the cluster in place: every cluster keeps a hash of
//! its whole config; a cluster that keeps its config is also compared field by field, but for
//! the endpoints it forgot.

use std::hash::Hasher;
use std::sync::LazyLock;
use std::time::Duration;

use legate_config::cluster::{Cluster as ClusterConfig, DiscoveryType, LbPolicy};

pub struct ClusterInfo {
    pub discovery_type: DiscoveryType,
    pub lb_policy: LbPolicy,
    per_connection_buffer_limit_bytes: u32,
    /// `connect_timeout` in nanoseconds: 8 bytes where a `Duration` takes 16, which puts a
    /// cluster in a smaller malloc chunk.
    connect_timeout_ns: u64,
    /// The whole config, when it sets more than a plain cluster does; `None` for a plain one.
    config: Option<Box<ClusterConfig>>,
    /// [`config_hash`] of the whole config, as it came.
    config_hash: u64,
}

impl ClusterInfo {
    pub fn new(mut config: ClusterConfig) -> Self {
        let discovery_type = config.discovery_type;
        let lb_policy = config.lb_policy;
        let per_connection_buffer_limit_bytes = config.per_connection_buffer_limit_bytes();
        let connect_timeout_ns = u64::try_from(config.connect_timeout().as_nanos()).unwrap_or(u64::MAX);
        let config_hash = config_hash(&config);
        let config = (!is_plain(&mut config)).then(|| Box::new(config));
        ClusterInfo {
            discovery_type,
            lb_policy,
            per_connection_buffer_limit_bytes,
            connect_timeout_ns,
            config,
            config_hash,
        }
    }

    /// Drops a STATIC cluster's `load_assignment` once its hosts are built from it (nothing
    /// reads it again), and the whole config if what is left is a plain cluster's.
    pub fn forget_static_endpoints(&mut self) {
        if self.discovery_type != DiscoveryType::Static {
            return;
        }
        let Some(config) = self.config.as_mut() else { return };
        config.load_assignment = None;
        if is_plain(config) {
            self.config = None;
        }
    }

    /// Whether `config` is the config this cluster was made from (a CDS update that changes
    /// nothing leaves the cluster in place).
    pub fn same_config(&self, config: &ClusterConfig) -> bool {
        if self.config_hash != config_hash(config) {
            return false;
        }
        match &self.config {
            // A STATIC cluster's endpoints are forgotten once built: the hash stands for them.
            Some(kept) if self.discovery_type == DiscoveryType::Static => {
                **kept == ClusterConfig { load_assignment: None, ..config.clone() }
            }
            Some(kept) => **kept == *config,
            None => true,
        }
    }

    /// The config's members other than those read through this struct (name, type,
    /// `eds_cluster_config`, `connect_timeout`, `per_connection_buffer_limit_bytes`,
    /// `lb_policy`, `circuit_breakers`): of a plain cluster, Envoy's
    /// defaults, which is what its config says of them; so those members must not be read
    /// from here.
    pub fn other_config(&self) -> &ClusterConfig {
        self.config.as_deref().unwrap_or(&PLAIN)
    }

    /// `connect_timeout` (default 5 s).
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_nanos(self.connect_timeout_ns)
    }

    /// `per_connection_buffer_limit_bytes` (default 1 MiB).
    pub fn per_connection_buffer_limit_bytes(&self) -> u32 {
        self.per_connection_buffer_limit_bytes
    }

    /// The `<name>` of `cluster.<name>.` stats: `alt_stat_name` (a cluster that sets it keeps
    /// its config), else the cluster's name.
    pub fn stat_name<'a>(&'a self, name: &'a str) -> &'a str {
        self.other_config().alt_stat_name.as_deref().unwrap_or(name)
    }
}

/// Whether `config` sets nothing beyond the members [`ClusterInfo`] holds (or that the cluster
/// turned into objects of its own). Those are taken out for the comparison, not copied, and
/// put back.
fn is_plain(config: &mut ClusterConfig) -> bool {
    let taken = (
        std::mem::take(&mut config.name),
        std::mem::take(&mut config.discovery_type),
        config.eds_cluster_config.take(),
        config.connect_timeout.take(),
        config.per_connection_buffer_limit_bytes.take(),
        std::mem::take(&mut config.lb_policy),
        std::mem::take(&mut config.circuit_breakers),
    );
    let plain = *config == *PLAIN;
    (
        config.name,
        config.discovery_type,
        config.eds_cluster_config,
        config.connect_timeout,
        config.per_connection_buffer_limit_bytes,
        config.lb_policy,
        config.circuit_breakers,
    ) = taken;
    plain
}

/// A cluster config that sets nothing: what a plain cluster's config is, once the members
/// [`ClusterInfo`] holds are taken out. Decoded as any cluster is, so its defaults are the
/// decoder's.
static PLAIN: LazyLock<ClusterConfig> = LazyLock::new(|| {
    legate_config::path::from_value(serde_json::json!({ "name": "" })).expect("a cluster with only a name decodes")
});

/// A hash of everything `config` says (Envoy's `MessageUtil::hash` of the proto): its `Debug`
/// form, which prints every member, fed to SipHash as it is written, without building the text.
fn config_hash(config: &ClusterConfig) -> u64 {
    struct HashWriter(std::hash::DefaultHasher);
    impl std::fmt::Write for HashWriter {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.write(s.as_bytes());
            Ok(())
        }
    }
    let mut writer = HashWriter(std::hash::DefaultHasher::new());
    let _ = std::fmt::write(&mut writer, format_args!("{config:?}"));
    writer.0.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(value: serde_json::Value) -> ClusterConfig {
        legate_config::resources::cluster(&value).unwrap()
    }

    fn eds(name: &str, timeout: &str) -> ClusterConfig {
        config(serde_json::json!({
            "name": name, "type": "EDS", "connect_timeout": timeout,
            "eds_cluster_config": { "eds_config": { "path_config_source": { "path": "/eds.json" } } }
        }))
    }

    #[test]
    fn a_plain_eds_cluster_keeps_no_config() {
        let info = ClusterInfo::new(eds("a", "1s"));
        assert!(info.config.is_none());
        assert_eq!(info.discovery_type, DiscoveryType::Eds);
        assert_eq!(info.connect_timeout(), Duration::from_secs(1));
        assert_eq!(info.per_connection_buffer_limit_bytes(), ClusterConfig::DEFAULT_BUFFER_LIMIT);
        assert_eq!(info.stat_name("a"), "a");
        assert_eq!(*info.other_config(), *PLAIN);
    }

    #[test]
    fn a_cluster_that_sets_more_keeps_its_whole_config() {
        let full = config(serde_json::json!({
            "name": "a", "alt_stat_name": "alt", "connect_timeout": "2s",
            "dns_refresh_rate": "7s", "lb_policy": "LEAST_REQUEST"
        }));
        let info = ClusterInfo::new(full.clone());
        assert_eq!(*info.other_config(), full);
        assert_eq!(info.lb_policy, LbPolicy::LeastRequest);
        assert_eq!(info.stat_name("a"), "alt");
        assert!(info.same_config(&full));
        let mut changed = full;
        changed.connect_timeout = None;
        assert!(!info.same_config(&changed));
    }

    fn static_cluster(port: u16, extra: serde_json::Value) -> ClusterConfig {
        let mut value = serde_json::json!({
            "name": "s", "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": { "cluster_name": "s", "endpoints": [{ "lb_endpoints": [
                { "endpoint": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": port } } } }
            ] }] }
        });
        if let (Some(fields), serde_json::Value::Object(more)) = (value.as_object_mut(), extra) {
            fields.extend(more);
        }
        config(value)
    }

    #[test]
    fn a_static_cluster_forgets_its_endpoints_and_still_sees_them_change() {
        let mut info = ClusterInfo::new(static_cluster(80, serde_json::json!({})));
        assert!(info.config.as_ref().is_some_and(|c| c.load_assignment.is_some()), "kept until the hosts are built");
        info.forget_static_endpoints();
        assert!(info.config.is_none(), "nothing else set: a plain cluster");
        assert!(info.same_config(&static_cluster(80, serde_json::json!({}))));
        assert!(!info.same_config(&static_cluster(81, serde_json::json!({}))), "another endpoint");

        let more = serde_json::json!({ "dns_refresh_rate": "7s" });
        let mut info = ClusterInfo::new(static_cluster(80, more.clone()));
        info.forget_static_endpoints();
        let kept = info.other_config();
        assert!(kept.load_assignment.is_none());
        assert_eq!(kept.dns_refresh_rate, static_cluster(80, more.clone()).dns_refresh_rate);
        assert!(info.same_config(&static_cluster(80, more.clone())));
        assert!(!info.same_config(&static_cluster(81, more)), "another endpoint");
        assert!(!info.same_config(&static_cluster(80, serde_json::json!({ "dns_refresh_rate": "8s" }))));

        let mut eds_info = ClusterInfo::new(eds("a", "1s"));
        eds_info.forget_static_endpoints();
        assert!(eds_info.same_config(&eds("a", "1s")), "not STATIC: nothing forgotten");
    }

    #[test]
    fn a_plain_cluster_is_compared_by_its_whole_config() {
        let info = ClusterInfo::new(eds("a", "1s"));
        assert!(info.same_config(&eds("a", "1s")));
        assert!(!info.same_config(&eds("a", "2s")));
        assert!(!info.same_config(&eds("b", "1s")));
        let mut other_source = eds("a", "1s");
        other_source.eds_cluster_config.as_mut().unwrap().service_name = "s".into();
        assert!(!info.same_config(&other_source));
        let mut more = eds("a", "1s");
        more.respect_dns_ttl = true;
        assert!(!info.same_config(&more));
    }
}
