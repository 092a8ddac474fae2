//! Checks that span several fields, after each field parsed: references between resources,
//! uniqueness, address syntax, the shape of filter chains, and the proto rules serde cannot say
//! (oneofs, required messages, ranges). Every problem is reported with its field path; all
//! problems are reported, not only the first. Config modules check their own messages with a
//! `validate(&self, at, &mut Validator)` method called from here.

use std::collections::{HashMap, HashSet};

use crate::bootstrap::Bootstrap;
use crate::cluster::{Cluster, DiscoveryType, HashFunction, LbPolicy, MaglevLbConfig, RingHashLbConfig};
use crate::core::{Address, CidrRange, SocketProtocol};
use crate::extensions::NetworkFilterConfig;
use crate::listener::{FilterChain, Listener};
use crate::path::PathError;

pub fn validate(bootstrap: &Bootstrap) -> Vec<PathError> {
    // With CDS, a static listener may name a cluster that arrives later: it gets 503 (no
    // cluster) until then, as in Envoy with `validate_clusters: false`.
    let mut v = Validator {
        late_clusters: bootstrap.dynamic_resources.as_ref().is_some_and(|d| d.cds_config.is_some()),
        ..Default::default()
    };
    if let Some(admin) = &bootstrap.admin {
        if let Some(address) = &admin.address {
            v.ip_address("admin.address", address);
        }
    }
    if let Some(Err((path, message))) = bootstrap.layered_runtime.as_ref().map(|r| r.validate()) {
        v.error(&path, message);
    }
    let clusters: HashSet<&str> = bootstrap.static_resources.clusters.iter().map(|c| c.name.as_str()).collect();
    if let Some(provider) = bootstrap.tracing.as_ref().and_then(|t| t.http.as_ref()) {
        provider.validate("tracing.http", &mut v, &clusters);
    }
    let mut listener_names = HashMap::new();
    for (i, listener) in bootstrap.static_resources.listeners.iter().enumerate() {
        let at = format!("static_resources.listeners[{i}]");
        if let Some(first) = listener_names.insert(listener.name(), i) {
            v.error(
                &format!("{at}.name"),
                format!("duplicate listener name '{}' (also static_resources.listeners[{first}])", listener.name()),
            );
        }
        v.listener(&at, listener, &clusters);
    }
    let mut cluster_names = HashMap::new();
    for (i, cluster) in bootstrap.static_resources.clusters.iter().enumerate() {
        let at = format!("static_resources.clusters[{i}]");
        if let Some(first) = cluster_names.insert(cluster.name.as_str(), i) {
            v.error(
                &format!("{at}.name"),
                format!(
                    "cluster manager: duplicate cluster '{}' found (also static_resources.clusters[{first}])",
                    cluster.name
                ),
            );
        }
        v.cluster(&at, cluster);
    }
    v.errors
}

/// Collects problems, each with the path of its field.
#[derive(Default)]
pub(crate) struct Validator {
    pub(crate) errors: Vec<PathError>,
    /// Cluster names are not checked: clusters come from CDS and may arrive later.
    pub(crate) late_clusters: bool,
    /// tcp_proxy's cluster names are not checked (an LDS listener: tcp_proxy resolves its
    /// cluster per connection; the check is legate's own, for typos in files).
    pub(crate) late_tcp_proxy_clusters: bool,
}

impl Validator {
    pub(crate) fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(PathError { path: path.to_string(), message: message.into() });
    }

    /// A proto `oneof` at `at`: at most one of `fields` set, and one when `required`.
    pub(crate) fn oneof(&mut self, at: &str, fields: &[(&str, bool)], required: bool) {
        let names = || {
            let names: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
            match names.split_last() {
                Some((last, [])) => last.to_string(),
                Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                None => String::new(),
            }
        };
        match fields.iter().filter(|(_, set)| *set).count() {
            0 if required => self.error(at, format!("one of {} is required", names())),
            0 | 1 => {}
            _ => self.error(at, format!("only one of {} may be set", names())),
        }
    }

    /// A string the proto requires to be non-empty.
    pub(crate) fn non_empty(&mut self, at: &str, value: &str) {
        if value.is_empty() {
            self.error(at, "value length must be at least 1 characters");
        }
    }

    /// `envoy.type.v3.Percent`: 0 to 100.
    pub(crate) fn percent(&mut self, at: &str, percent: &crate::core::Percent) {
        if !(0.0..=100.0).contains(&percent.value) {
            self.error(&format!("{at}.value"), "value must be inside range [0, 100]");
        }
    }

    /// An address that must be an IP literal and port (listeners, admin, STATIC hosts).
    fn ip_address(&mut self, at: &str, address: &Address) {
        let Some(socket) = address.socket() else {
            self.error(at, "a socket_address is required");
            return;
        };
        let at = format!("{at}.socket_address");
        if socket.ip().is_none() {
            self.error(&format!("{at}.address"), format!("malformed IP address: {}", socket.address));
        }
        self.port(&format!("{at}.port_value"), socket.port_value);
    }

    fn port(&mut self, at: &str, port: u32) {
        if port > 65535 {
            self.error(at, format!("invalid port {port}: must be at most 65535"));
        }
    }

    pub(crate) fn listener(&mut self, at: &str, listener: &Listener, clusters: &HashSet<&str>) {
        self.ip_address(&format!("{at}.address"), &listener.address);
        if let Some(socket) = listener.address.socket() {
            if socket.protocol == SocketProtocol::Udp {
                self.error(
                    &format!("{at}.address.socket_address.protocol"),
                    "UDP listeners are not supported by legate yet",
                );
            }
        }
        if listener.filter_chains.is_empty() && listener.default_filter_chain.is_none() {
            self.error(&format!("{at}.filter_chains"), "error adding listener: no filter chains specified");
        }
        let mut seen: HashMap<&crate::listener::FilterChainMatch, usize> = HashMap::new();
        for (i, chain) in listener.filter_chains.iter().enumerate() {
            let chain_at = format!("{at}.filter_chains[{i}]");
            if let Some(first) = seen.insert(&chain.filter_chain_match, i) {
                self.error(
                    &format!("{chain_at}.filter_chain_match"),
                    format!(
                        "multiple filter chains with the same matching rules are defined (also filter_chains[{first}])"
                    ),
                );
            }
            self.filter_chain(&chain_at, chain, clusters);
        }
        if let Some(chain) = &listener.default_filter_chain {
            self.filter_chain(&format!("{at}.default_filter_chain"), chain, clusters);
        }
        if listener.per_connection_buffer_limit_bytes == Some(0) {
            self.error(&format!("{at}.per_connection_buffer_limit_bytes"), "must be greater than 0");
        }
    }

    fn filter_chain(&mut self, at: &str, chain: &FilterChain, clusters: &HashSet<&str>) {
        let m = &chain.filter_chain_match;
        let match_at = format!("{at}.filter_chain_match");
        if let Some(port) = m.destination_port {
            if port == 0 || port > 65535 {
                self.error(
                    &format!("{match_at}.destination_port"),
                    format!("invalid port {port}: must be in 1..=65535"),
                );
            }
        }
        for (field, ranges) in [
            ("prefix_ranges", &m.prefix_ranges),
            ("source_prefix_ranges", &m.source_prefix_ranges),
            ("direct_source_prefix_ranges", &m.direct_source_prefix_ranges),
        ] {
            self.cidrs(&format!("{match_at}.{field}"), ranges);
        }
        for (i, port) in m.source_ports.iter().enumerate() {
            self.port(&format!("{match_at}.source_ports[{i}]"), *port);
        }
        if !m.address_suffix.is_empty() || m.suffix_len.is_some() {
            self.error(&format!("{match_at}.address_suffix"), "this Envoy field is not supported by legate yet");
        }
        let last = chain.filters.len().saturating_sub(1);
        for (i, filter) in chain.filters.iter().enumerate() {
            let filter_at = format!("{at}.filters[{i}]");
            let terminal = matches!(
                filter.config,
                NetworkFilterConfig::TcpProxy(_)
                    | NetworkFilterConfig::Echo(_)
                    | NetworkFilterConfig::DirectResponse(_)
                    | NetworkFilterConfig::HttpConnectionManager(_)
            );
            if terminal && i != last {
                self.error(
                    &filter_at,
                    format!(
                        "Error: terminal filter named {} of type {} must be the last filter in a network filter chain.",
                        filter.name,
                        kind_name(&filter.config)
                    ),
                );
            }
            if !terminal && i == last {
                self.error(
                    &filter_at,
                    format!(
                        "Error: non-terminal filter named {} of type {} is the last filter in a network filter chain.",
                        filter.name,
                        kind_name(&filter.config)
                    ),
                );
            }
            let typed_at = format!("{filter_at}.typed_config");
            match &filter.config {
                NetworkFilterConfig::TcpProxy(tcp) => {
                    if tcp.stat_prefix.is_empty() {
                        self.error(&format!("{typed_at}.stat_prefix"), "value length must be at least 1 characters");
                    }
                    match (&tcp.cluster, &tcp.weighted_clusters) {
                        (None, None) => self.error(&typed_at, "one of cluster or weighted_clusters is required"),
                        (Some(_), Some(_)) => {
                            self.error(&typed_at, "only one of cluster or weighted_clusters may be set")
                        }
                        (Some(name), None) => self.cluster_ref(&format!("{typed_at}.cluster"), name, clusters),
                        (None, Some(w)) => {
                            if w.clusters.is_empty() {
                                self.error(
                                    &format!("{typed_at}.weighted_clusters.clusters"),
                                    "value must contain at least 1 item(s)",
                                );
                            }
                            for (j, c) in w.clusters.iter().enumerate() {
                                let c_at = format!("{typed_at}.weighted_clusters.clusters[{j}]");
                                self.cluster_ref(&format!("{c_at}.name"), &c.name, clusters);
                                if c.weight == 0 {
                                    self.error(&format!("{c_at}.weight"), "value must be greater than or equal to 1");
                                }
                            }
                        }
                    }
                    if tcp.max_connect_attempts == Some(0) {
                        self.error(
                            &format!("{typed_at}.max_connect_attempts"),
                            "value must be greater than or equal to 1",
                        );
                    }
                    if let Some(tunnel) = &tcp.tunneling_config {
                        tunnel.validate(&format!("{typed_at}.tunneling_config"), self);
                    }
                    if tcp.max_downstream_connection_duration.is_some_and(|d| d.0 < std::time::Duration::from_millis(1))
                    {
                        self.error(
                            &format!("{typed_at}.max_downstream_connection_duration"),
                            "value must be greater than or equal to 1ms",
                        );
                    }
                }
                NetworkFilterConfig::ConnectionLimit(limit) => {
                    if limit.stat_prefix.is_empty() {
                        self.error(&format!("{typed_at}.stat_prefix"), "value length must be at least 1 characters");
                    }
                    if limit.max_connections == 0 {
                        self.error(&format!("{typed_at}.max_connections"), "value must be greater than or equal to 1");
                    }
                }
                NetworkFilterConfig::DirectResponse(d) => {
                    if let Some(Err(e)) = d.response.as_ref().map(|r| r.read()) {
                        self.error(&format!("{typed_at}.response"), e);
                    }
                }
                NetworkFilterConfig::Echo(_) => {}
                NetworkFilterConfig::Rbac(rbac) => rbac.validate(&typed_at, self),
                NetworkFilterConfig::HttpConnectionManager(hcm) => hcm.validate(&typed_at, self, clusters),
            }
        }
    }

    /// A tcp_proxy cluster name.
    fn cluster_ref(&mut self, at: &str, name: &str, clusters: &HashSet<&str>) {
        if !self.late_clusters && !self.late_tcp_proxy_clusters && !clusters.contains(name) {
            self.error(at, format!("unknown cluster '{name}': no static cluster has this name"));
        }
    }

    fn cidrs(&mut self, at: &str, ranges: &[CidrRange]) {
        for (i, range) in ranges.iter().enumerate() {
            if let Err(message) = range.parse() {
                self.error(&format!("{at}[{i}]"), message);
            }
        }
    }

    fn ring_hash_lb_config(&mut self, at: &str, ring: &RingHashLbConfig) {
        let max = RingHashLbConfig::MAX_RING_SIZE;
        for (field, value) in
            [("minimum_ring_size", ring.minimum_ring_size), ("maximum_ring_size", ring.maximum_ring_size)]
        {
            if value.is_some_and(|v| v > max) {
                self.error(&format!("{at}.{field}"), format!("value must be less than or equal to {max}"));
            }
        }
        let (min, max) = (ring.minimum_ring_size(), ring.maximum_ring_size());
        if min > max {
            // Envoy's RingHashLoadBalancer constructor refuses this too.
            self.error(
                &format!("{at}.minimum_ring_size"),
                format!("minimum_ring_size ({min}) > maximum_ring_size ({max})"),
            );
        }
        if ring.hash_function == HashFunction::MurmurHash2 {
            self.error(&format!("{at}.hash_function"), "MURMUR_HASH_2 is not supported by legate yet (XX_HASH is)");
        }
    }

    fn slow_start_config(&mut self, at: &str, slow: &crate::cluster::SlowStartConfig) {
        if slow.aggression.as_ref().is_some_and(|a| a.default_value.is_nan() || a.default_value <= 0.0) {
            self.error(&format!("{at}.aggression"), "value must be greater than 0.0");
        }
        if slow.min_weight_percent.is_some_and(|p| !(0.0..=100.0).contains(&p.value)) {
            self.error(&format!("{at}.min_weight_percent"), "value must be inside range [0, 100]");
        }
    }

    fn maglev_lb_config(&mut self, at: &str, maglev: &MaglevLbConfig) {
        let size = maglev.table_size();
        if size > MaglevLbConfig::MAX_TABLE_SIZE {
            self.error(
                &format!("{at}.table_size"),
                format!("value must be less than or equal to {}", MaglevLbConfig::MAX_TABLE_SIZE),
            );
        } else if !is_prime(size) {
            // Envoy's MaglevLoadBalancer refuses a composite size: the permutation needs it prime.
            self.error(
                &format!("{at}.table_size"),
                format!("the table size of maglev must be a prime number, got {size}"),
            );
        }
    }

    pub(crate) fn cluster(&mut self, at: &str, cluster: &Cluster) {
        if cluster.name.is_empty() {
            self.error(&format!("{at}.name"), "value length must be at least 1 characters");
        }
        if let Some(outlier) = &cluster.outlier_detection {
            outlier.validate(&format!("{at}.outlier_detection"), self);
        }
        for (i, health_check) in cluster.health_checks.iter().enumerate() {
            health_check.validate(&format!("{at}.health_checks[{i}]"), self);
        }
        if cluster.health_checks.len() > 1 {
            // Envoy runs each independently; legate keeps one FAILED_ACTIVE_HC flag per host.
            self.error(
                &format!("{at}.health_checks"),
                "more than one health check per cluster is not supported by legate yet",
            );
        }
        if cluster.connect_timeout.is_some_and(|t| t.is_zero()) {
            self.error(&format!("{at}.connect_timeout"), "value must be greater than 0s");
        }
        match cluster.discovery_type {
            DiscoveryType::Static | DiscoveryType::StrictDns | DiscoveryType::LogicalDns => {}
            DiscoveryType::Eds => match cluster.eds_cluster_config.as_ref().and_then(|e| e.eds_config.as_ref()) {
                Some(source) if source.kind().is_some() => {}
                _ => self.error(
                    &format!("{at}.eds_cluster_config.eds_config"),
                    "an EDS cluster needs eds_cluster_config.eds_config with a config source",
                ),
            },
            other => self.error(
                &format!("{at}.type"),
                format!(
                    "cluster type {other:?} is not supported by legate yet (STATIC, STRICT_DNS, LOGICAL_DNS and EDS are)"
                ),
            ),
        }
        match cluster.lb_policy {
            LbPolicy::RoundRobin | LbPolicy::LeastRequest | LbPolicy::Random | LbPolicy::RingHash | LbPolicy::Maglev => {}
            other => self.error(
                &format!("{at}.lb_policy"),
                format!(
                    "lb_policy {other:?} is not supported by legate yet (ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH and MAGLEV are)"
                ),
            ),
        }
        if let Some(ring) = &cluster.ring_hash_lb_config {
            self.ring_hash_lb_config(&format!("{at}.ring_hash_lb_config"), ring);
        }
        if let Some(maglev) = &cluster.maglev_lb_config {
            self.maglev_lb_config(&format!("{at}.maglev_lb_config"), maglev);
        }
        cluster.validate_http(at, self);
        if let Some(lr) = &cluster.least_request_lb_config {
            if lr.choice_count.is_some_and(|c| c < 2) {
                self.error(
                    &format!("{at}.least_request_lb_config.choice_count"),
                    "value must be greater than or equal to 2",
                );
            }
            if let Some(slow) = &lr.slow_start_config {
                self.slow_start_config(&format!("{at}.least_request_lb_config.slow_start_config"), slow);
            }
        }
        if let Some(slow) = cluster.round_robin_lb_config.as_ref().and_then(|r| r.slow_start_config.as_ref()) {
            self.slow_start_config(&format!("{at}.round_robin_lb_config.slow_start_config"), slow);
        }
        crate::dns::validate(
            at,
            cluster.typed_dns_resolver_config.as_deref(),
            cluster.dns_resolution_config.as_deref(),
            &cluster.dns_resolvers,
            self,
        );
        let sni = cluster.upstream_sni_options();
        if sni.auto_san_validation && !sni.auto_sni {
            self.error(
                &format!("{at}.upstream_http_protocol_options.auto_san_validation"),
                "is supported by legate together with auto_sni only",
            );
        }
        if let Some(bind) = &cluster.upstream_bind_config {
            bind.validate(&format!("{at}.upstream_bind_config"), self);
        }
        if let Some(rate) = &cluster.dns_failure_refresh_rate {
            if rate.base_interval.is_none_or(|d| d.0 < std::time::Duration::from_millis(1)) {
                self.error(&format!("{at}.dns_failure_refresh_rate.base_interval"), "value must be at least 1ms");
            }
            if rate.max_interval.is_some_and(|m| m.0 < rate.base()) {
                self.error(
                    &format!("{at}.dns_failure_refresh_rate.max_interval"),
                    "value must be greater than or equal to base_interval",
                );
            }
        }
        if let Some(hashing) = &cluster.common_lb_config.consistent_hashing_lb_config {
            let at = format!("{at}.common_lb_config.consistent_hashing_lb_config");
            if hashing.use_hostname_for_hashing {
                self.error(&format!("{at}.use_hostname_for_hashing"), "is not supported by legate yet");
            }
            if hashing.hash_balance_factor.is_some_and(|f| f < 100) {
                self.error(&format!("{at}.hash_balance_factor"), "value must be greater than or equal to 100");
            }
        }
        if cluster.common_lb_config.ignore_new_hosts_until_first_hc {
            let at = format!("{at}.common_lb_config.ignore_new_hosts_until_first_hc");
            self.error(&at, "this Envoy field is not supported by legate yet");
        }
        if cluster.common_lb_config.locality_weighted_lb_config.is_some()
            && matches!(cluster.lb_policy, crate::cluster::LbPolicy::RingHash | crate::cluster::LbPolicy::Maglev)
        {
            self.error(
                &format!("{at}.common_lb_config.locality_weighted_lb_config"),
                "locality-weighted RING_HASH and MAGLEV are not supported by legate yet",
            );
        }
        let Some(assignment) = &cluster.load_assignment else {
            return;
        };
        let mut hosts = 0;
        for (i, locality) in assignment.endpoints.iter().enumerate() {
            let loc_at = format!("{at}.load_assignment.endpoints[{i}]");
            if locality.load_balancing_weight == Some(0) {
                self.error(&format!("{loc_at}.load_balancing_weight"), "value must be greater than or equal to 1");
            }
            if locality.priority > 128 {
                self.error(&format!("{loc_at}.priority"), "value must be less than or equal to 128");
            }
            for (j, lb_endpoint) in locality.lb_endpoints.iter().enumerate() {
                hosts += 1;
                let ep_at = format!("{loc_at}.lb_endpoints[{j}]");
                if lb_endpoint.load_balancing_weight == Some(0) {
                    self.error(&format!("{ep_at}.load_balancing_weight"), "value must be greater than or equal to 1");
                }
                let Some(endpoint) = &lb_endpoint.endpoint else {
                    self.error(&format!("{ep_at}.endpoint"), "an endpoint with an address is required");
                    continue;
                };
                let addr_at = format!("{ep_at}.endpoint.address");
                match cluster.discovery_type {
                    DiscoveryType::Static => self.ip_address(&addr_at, &endpoint.address),
                    _ => match endpoint.address.socket() {
                        Some(s) => self.port(&format!("{addr_at}.socket_address.port_value"), s.port_value),
                        None => self.error(&addr_at, "a socket_address is required"),
                    },
                }
                if let Some(hc) = &endpoint.health_check_config {
                    let hc_at = format!("{ep_at}.endpoint.health_check_config");
                    if hc.port_value > 65535 {
                        self.error(&format!("{hc_at}.port_value"), "value must be less than or equal to 65535");
                    }
                    if let Some(address) = &hc.address {
                        self.ip_address(&format!("{hc_at}.address"), address);
                    }
                }
            }
        }
        if cluster.discovery_type == DiscoveryType::LogicalDns && (assignment.endpoints.len() != 1 || hosts != 1) {
            self.error(
                &format!("{at}.load_assignment"),
                "LOGICAL_DNS clusters must have a single locality_lb_endpoint and a single lb_endpoint",
            );
        }
    }
}

fn kind_name(config: &NetworkFilterConfig) -> &'static str {
    match config {
        NetworkFilterConfig::TcpProxy(_) => "envoy.filters.network.tcp_proxy",
        NetworkFilterConfig::Echo(_) => "envoy.filters.network.echo",
        NetworkFilterConfig::ConnectionLimit(_) => "envoy.filters.network.connection_limit",
        NetworkFilterConfig::DirectResponse(_) => "envoy.filters.network.direct_response",
        NetworkFilterConfig::Rbac(_) => "envoy.filters.network.rbac",
        NetworkFilterConfig::HttpConnectionManager(_) => "envoy.filters.network.http_connection_manager",
    }
}

/// Trial division: table sizes are at most 5000011, so at most ~1100 divisions.
fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        // `checked_rem` rather than `is_multiple_of`, which is newer than the workspace's rust-version.
        if n.checked_rem(d) == Some(0) {
            return false;
        }
        d += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use crate::load::load_bootstrap;

    fn errors(yaml: &str) -> String {
        load_bootstrap(None, Some(yaml)).unwrap_err().to_string()
    }

    #[test]
    fn unknown_cluster_and_bad_address_are_reported_together() {
        let err = errors(
            r#"
static_resources:
  listeners:
  - address: {socket_address: {address: not-an-ip, port_value: 1}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: t, cluster: nope}
"#,
        );
        assert!(
            err.contains(
                "static_resources.listeners[0].address.socket_address.address: malformed IP address: not-an-ip"
            ),
            "{err}"
        );
        assert!(err.contains("static_resources.listeners[0].filter_chains[0].filters[0].typed_config.cluster: unknown cluster 'nope'"), "{err}");
    }

    #[test]
    fn ignore_new_hosts_until_first_hc_is_refused_not_ignored() {
        let err = errors(
            r#"
static_resources:
  clusters:
  - {name: a, type: STATIC, common_lb_config: {ignore_new_hosts_until_first_hc: true}}
"#,
        );
        assert!(
            err.contains("static_resources.clusters[0].common_lb_config.ignore_new_hosts_until_first_hc: this Envoy field is not supported by legate yet"),
            "{err}"
        );
    }

    /// The proto's rules: one weighted cluster is enough (`min_items: 1`), and
    /// `max_downstream_connection_duration` is at least 1 ms (0 does not mean "off").
    #[test]
    fn tcp_proxy_weighted_clusters_and_max_duration_follow_the_proto() {
        let tcp = |fields: &str| {
            format!(
                r#"
static_resources:
  clusters:
  - {{name: a, type: STATIC, load_assignment: {{cluster_name: a, endpoints: []}}}}
  listeners:
  - address: {{socket_address: {{address: 127.0.0.1, port_value: 1}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: t, {fields}}}
"#
            )
        };
        assert!(load_bootstrap(None, Some(&tcp("weighted_clusters: {clusters: [{name: a, weight: 1}]}"))).is_ok());
        let err = errors(&tcp("weighted_clusters: {clusters: []}"));
        assert!(
            err.contains("typed_config.weighted_clusters.clusters: value must contain at least 1 item(s)"),
            "{err}"
        );
        let err = errors(&tcp("cluster: a, max_downstream_connection_duration: 0s"));
        assert!(
            err.contains("typed_config.max_downstream_connection_duration: value must be greater than or equal to 1ms"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_filter_chain_match_is_refused() {
        let err = errors(
            r#"
static_resources:
  listeners:
  - address: {socket_address: {address: 127.0.0.1, port_value: 1}}
    filter_chains:
    - filters: [{name: envoy.filters.network.echo}]
    - filters: [{name: envoy.filters.network.echo}]
"#,
        );
        assert!(
            err.contains("filter_chains[1].filter_chain_match: multiple filter chains with the same matching rules"),
            "{err}"
        );
    }

    #[test]
    fn terminal_filter_must_be_last() {
        let err = errors(
            r#"
static_resources:
  listeners:
  - address: {socket_address: {address: 127.0.0.1, port_value: 1}}
    filter_chains:
    - filters: [{name: envoy.filters.network.echo}, {name: envoy.filters.network.echo}]
"#,
        );
        assert!(err.contains("filters[0]: Error: terminal filter named envoy.filters.network.echo"), "{err}");
    }

    /// The shape of Envoy's `front-proxy` and `local_ratelimit` examples.
    const HTTP: &str = r#"
static_resources:
  listeners:
  - address: {socket_address: {address: 127.0.0.1, port_value: 8080}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          codec_type: AUTO
          stat_prefix: ingress_http
          access_log:
          - name: envoy.access_loggers.stdout
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
          route_config:
            name: local_route
            virtual_hosts:
            - name: backend
              domains: ["*"]
              cors:
                allow_origin_string_match: [{safe_regex: {regex: "\\*"}}]
                allow_methods: "GET"
              routes:
              - match: {prefix: "/service/1"}
                route: {cluster: service1}
              - match: {prefix: "/service/2"}
                route: {cluster: service2}
          http_filters:
          - name: envoy.filters.http.local_ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
              stat_prefix: http_local_rate_limiter
              token_bucket: {max_tokens: 2, tokens_per_fill: 2, fill_interval: 5s}
              filter_enabled:
                runtime_key: local_rate_limit_enabled
                default_value: {numerator: 100, denominator: HUNDRED}
              response_headers_to_add:
              - append_action: OVERWRITE_IF_EXISTS_OR_ADD
                header: {key: x-local-rate-limit, value: 'true'}
          - name: envoy.filters.http.cors
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: service1
    type: STRICT_DNS
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}
    load_assignment:
      cluster_name: service1
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: service1, port_value: 8000}}}}]}]
  - name: service2
    type: STRICT_DNS
    load_assignment:
      cluster_name: service2
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: service2, port_value: 8000}}}}]}]
"#;

    #[test]
    fn loads_an_http_front_proxy() {
        let b = load_bootstrap(None, Some(HTTP)).unwrap().bootstrap;
        let crate::extensions::NetworkFilterConfig::HttpConnectionManager(hcm) =
            &b.static_resources.listeners[0].filter_chains[0].filters[0].config
        else {
            panic!("not an HCM")
        };
        assert_eq!(hcm.http_filters.len(), 3);
        assert_eq!(b.static_resources.clusters[0].http_protocol(), crate::cluster::UpstreamProtocol::Http2);
        assert_eq!(b.static_resources.clusters[1].http_protocol(), crate::cluster::UpstreamProtocol::Http1);
    }

    #[test]
    fn unknown_route_cluster_has_the_full_path() {
        let err = errors(&HTTP.replace("route: {cluster: service2}", "route: {cluster: x}"));
        assert_eq!(
            err,
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[1].route.cluster: route: unknown cluster 'x'"
        );
    }

    #[test]
    fn http_connection_manager_is_terminal() {
        let yaml = HTTP.replace("  clusters:\n", "      - name: envoy.filters.network.echo\n  clusters:\n");
        let err = errors(&yaml);
        assert!(
            err.contains("filters[0]: Error: terminal filter named envoy.filters.network.http_connection_manager of type envoy.filters.network.http_connection_manager must be the last filter"),
            "{err}"
        );
    }

    #[test]
    fn bad_regex_fails_the_load_with_its_path() {
        let err = errors(&HTTP.replace(r#"regex: "\\*""#, r#"regex: "*""#));
        assert!(
            err.starts_with("static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].cors.allow_origin_string_match[0].safe_regex.regex: invalid regex '*'"),
            "{err}"
        );
    }

    #[test]
    fn cluster_protocol_options_are_checked() {
        let err = errors(
            &HTTP.replace("http2_protocol_options: {}", "http2_protocol_options: {initial_stream_window_size: 10}"),
        );
        assert_eq!(
            err,
            "static_resources.clusters[0].typed_extension_protocol_options.envoy.extensions.upstreams.http.v3.HttpProtocolOptions.explicit_http_config.http2_protocol_options.initial_stream_window_size: value must be inside range [65535, 2147483647]"
        );
        let err = errors(&HTTP.replace(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions",
        ));
        assert!(err.starts_with("static_resources.clusters[0].typed_extension_protocol_options.envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions: Didn't find a registered implementation"), "{err}");
    }

    #[test]
    fn hashing_lb_configs_are_checked_with_their_paths() {
        let err = errors(
            r#"
static_resources:
  clusters:
  - name: ring
    lb_policy: RING_HASH
    ring_hash_lb_config: {minimum_ring_size: 4096, maximum_ring_size: 1024, hash_function: MURMUR_HASH_2}
  - name: big
    lb_policy: RING_HASH
    ring_hash_lb_config: {maximum_ring_size: 9000000}
  - name: maglev
    lb_policy: MAGLEV
    maglev_lb_config: {table_size: 65536}
"#,
        );
        assert!(
            err.contains("static_resources.clusters[0].ring_hash_lb_config.minimum_ring_size: minimum_ring_size (4096) > maximum_ring_size (1024)"),
            "{err}"
        );
        assert!(err.contains("static_resources.clusters[0].ring_hash_lb_config.hash_function: MURMUR_HASH_2"), "{err}");
        assert!(
            err.contains("static_resources.clusters[1].ring_hash_lb_config.maximum_ring_size: value must be less than or equal to 8388608"),
            "{err}"
        );
        assert!(err.contains("static_resources.clusters[2].maglev_lb_config.table_size: the table size of maglev must be a prime number, got 65536"), "{err}");
    }

    #[test]
    fn hashing_lb_policies_load_with_defaults() {
        let bootstrap = load_bootstrap(
            None,
            Some(
                r#"
static_resources:
  clusters:
  - {name: ring, lb_policy: RING_HASH, ring_hash_lb_config: {minimum_ring_size: 64}}
  - {name: maglev, lb_policy: MAGLEV, maglev_lb_config: {table_size: 5000011}}
"#,
            ),
        )
        .unwrap();
        let clusters = &bootstrap.bootstrap.static_resources.clusters;
        let ring = clusters[0].ring_hash_lb_config.as_ref().unwrap();
        assert_eq!((ring.minimum_ring_size(), ring.maximum_ring_size()), (64, 8 * 1024 * 1024));
        assert_eq!(clusters[1].maglev_lb_config.as_ref().unwrap().table_size(), 5_000_011);
    }
}
