//! A live cluster: what the user configured, its stats and breakers, and its current hosts.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use legate_config::cluster::{Cluster as ClusterConfig, DiscoveryType, LbPolicy, RoutingPriority};
use legate_stats::Scope;

use super::circuit_breakers::{CircuitBreakers, ResourceManager};
use super::cluster_info::ClusterInfo;
use super::host::{Host, HostLocality, HostSharedPtr};
use super::stats::{ClusterEndpointStats, ClusterStats};

pub struct Cluster {
    /// The cluster's name, shared with the cluster manager's maps and lists that key on it
    /// (one allocation for them all, where each kept a `String` of its own).
    pub name: Arc<str>,
    /// What the cluster keeps of its config.
    pub info: ClusterInfo,
    /// Traffic stats, see [`Self::stats`]. A `OnceBox` is one pointer (a `OnceLock` two
    /// words); two workers that both make the stats on the first request create handles to
    /// the same stats, and one box is dropped.
    traffic_stats: once_cell::race::OnceBox<ClusterStats>,
    pub endpoint_stats: ClusterEndpointStats,
    /// `cluster.<name>`, for stats named at run time (`upstream_rq_<code>`).
    pub scope: Scope,
    pub circuit_breakers: CircuitBreakers,
    /// Overprovisioning factor of the load assignment, in percent (Envoy's default 140).
    overprovisioning_factor: AtomicU32,
    /// Where it stands among the active clusters (`/clusters`, `/config_dump`): the order they
    /// became active in, a replacement taking the place of the cluster it replaced (see
    /// [`super::cluster_manager::ClusterManager::clusters`]). Set by the cluster manager; in
    /// the 4 bytes of padding beside `overprovisioning_factor`.
    position: AtomicU32,
    /// Where and when CDS sent it; `None` for a cluster of the bootstrap.
    pub api: Option<super::cluster_manager::ApiVersion>,
    /// What few clusters configure (see [`ClusterExtras`]); `None` when it sets none of it.
    extras: Option<Box<ClusterExtras>>,
    priority_set: ArcSwap<PrioritySet>,
    versions: AtomicU64,
    refresh_lock: std::sync::Mutex<()>,
}

/// The parts of a cluster that few clusters configure, in one allocation that most clusters
/// do without: as fields of their own, the four took 32 bytes of every cluster, 10,000
/// clusters carrying them empty.
struct ClusterExtras {
    /// `outlier_detection`.
    outlier_detector: Option<super::outlier_detection::OutlierDetector>,
    /// The first of `health_checks` (config refuses more than one).
    health_checker: Option<super::health_checker::HealthChecker>,
    /// `transport_socket` when it is TLS (`cluster.<name>.ssl.*`); `None` for raw TCP.
    transport_socket: Option<Arc<crate::tls::ClientContext>>,
    /// `auto_sni` of a TLS cluster: each request's upstream connection is made for the name in
    /// this header (`override_auto_sni_header`), or in the request's authority.
    auto_sni: Option<Option<http::HeaderName>>,
}

/// The hosts of a cluster by priority, as one immutable snapshot.
#[derive(Default)]
pub struct PrioritySet {
    /// Index = priority.
    pub host_sets: HostSets,
    /// Increases with each update; load balancers rebuild their state when it changes.
    pub version: u64,
}

/// The host sets of a priority set, read as a slice. Most clusters have one priority: its
/// set is kept inline, where a boxed slice of one took an allocation of its own (a priority
/// set and its one host set were two 48-byte malloc chunks, now one of 64). More sets, or
/// none, are a boxed slice: it never grows once built.
pub enum HostSets {
    One(HostSet),
    Many(Box<[HostSet]>),
}

impl Default for HostSets {
    fn default() -> Self {
        HostSets::Many(Box::default())
    }
}

impl std::ops::Deref for HostSets {
    type Target = [HostSet];

    fn deref(&self) -> &[HostSet] {
        match self {
            HostSets::One(set) => std::slice::from_ref(set),
            HostSets::Many(sets) => sets,
        }
    }
}

/// The hosts of one priority.
#[derive(Default)]
pub struct HostSet {
    pub hosts: Vec<HostSharedPtr>,
    /// The healthy and degraded hosts, when some host is not healthy. `None` when every host
    /// is healthy (the usual case): `hosts` is then the healthy list too, and no host is
    /// degraded, so 10,000 clusters keep neither a copy of their hosts nor two empty lists
    /// (a host set is 32 bytes, was 80).
    partial: Option<Box<PartialHealth>>,
}

/// The healthy and degraded hosts of a host set that is not all healthy.
#[derive(Default)]
struct PartialHealth {
    /// In the order of `hosts`.
    healthy_hosts: Vec<HostSharedPtr>,
    degraded_hosts: Vec<HostSharedPtr>,
}

impl HostSet {
    fn new(hosts: Vec<HostSharedPtr>) -> HostSet {
        if hosts.iter().all(|h| h.healthy()) {
            return HostSet { hosts, partial: None };
        }
        let mut partial = PartialHealth::default();
        for host in &hosts {
            if host.healthy() {
                partial.healthy_hosts.push(host.clone());
            } else if host.degraded() {
                partial.degraded_hosts.push(host.clone());
            }
        }
        // The healthy hosts are a subsequence of the hosts: as many means the same (a flag
        // may have changed since the first look).
        if partial.healthy_hosts.len() == hosts.len() {
            return HostSet { hosts, partial: None };
        }
        partial.healthy_hosts.shrink_to_fit();
        partial.degraded_hosts.shrink_to_fit();
        HostSet { hosts, partial: Some(Box::new(partial)) }
    }

    /// The healthy hosts, in the order of `hosts`.
    pub fn healthy_hosts(&self) -> &[HostSharedPtr] {
        match &self.partial {
            Some(partial) => &partial.healthy_hosts,
            None => &self.hosts,
        }
    }

    /// The degraded hosts (`DEGRADED_EDS_HEALTH` and no other reason), in the order of `hosts`.
    pub fn degraded_hosts(&self) -> &[HostSharedPtr] {
        self.partial.as_ref().map_or(&[], |partial| &partial.degraded_hosts)
    }
}

impl PrioritySet {
    /// The hosts by priority, in their order. Every vector is sized once: vectors grown host
    /// by host and shrunk to fit left freed chunks among the long-lived allocations of 10,000
    /// EDS clusters, resident memory that none of them used.
    pub fn new(mut hosts: Vec<HostSharedPtr>, version: u64) -> Self {
        let levels = hosts.iter().map(|h| h.priority() as usize + 1).max().unwrap_or(0);
        let host_sets = match levels {
            0 => HostSets::default(),
            1 => {
                hosts.shrink_to_fit();
                HostSets::One(HostSet::new(hosts))
            }
            _ => {
                let mut sets: Vec<Vec<HostSharedPtr>> = (0..levels)
                    .map(|level| Vec::with_capacity(hosts.iter().filter(|h| h.priority() as usize == level).count()))
                    .collect();
                for host in hosts {
                    if let Some(set) = sets.get_mut(host.priority() as usize) {
                        set.push(host);
                    }
                }
                HostSets::Many(sets.into_iter().map(HostSet::new).collect())
            }
        };
        PrioritySet { host_sets, version }
    }

    /// The snapshot of a cluster no update reached yet: one for all of them.
    pub fn empty() -> Arc<PrioritySet> {
        static EMPTY: std::sync::OnceLock<Arc<PrioritySet>> = std::sync::OnceLock::new();
        EMPTY.get_or_init(|| Arc::new(PrioritySet::default())).clone()
    }

    pub fn all_hosts(&self) -> impl Iterator<Item = &HostSharedPtr> {
        self.host_sets.iter().flat_map(|s| s.hosts.iter())
    }
}

impl ClusterExtras {
    /// The extras `config` sets, or `None`; `transport_socket` is its TLS context, built.
    fn new(
        config: &ClusterConfig,
        scope: &Scope,
        transport_socket: Option<Arc<crate::tls::ClientContext>>,
    ) -> Option<Box<ClusterExtras>> {
        let tls = matches!(
            config.transport_socket.as_ref().map(|t| &t.config),
            Some(legate_config::extensions::TransportSocketConfig::UpstreamTls(_))
        );
        let options = config.upstream_sni_options();
        let extras = ClusterExtras {
            outlier_detector: config
                .outlier_detection
                .as_ref()
                .map(|o| super::outlier_detection::OutlierDetector::new(o, scope)),
            health_checker: config.health_checks.first().map(|hc| super::health_checker::HealthChecker::new(hc, scope)),
            auto_sni: (tls && options.auto_sni).then(|| {
                http::HeaderName::from_bytes(options.override_auto_sni_header.to_ascii_lowercase().as_bytes()).ok()
            }),
            transport_socket,
        };
        let none = extras.outlier_detector.is_none()
            && extras.health_checker.is_none()
            && extras.transport_socket.is_none()
            && extras.auto_sni.is_none();
        (!none).then(|| Box::new(extras))
    }
}

impl Cluster {
    /// Its circuit breakers' resources of `priority`.
    pub fn breakers(&self, priority: RoutingPriority) -> ResourceManager<'_> {
        self.circuit_breakers.for_priority(&self.scope, priority)
    }

    /// `outlier_detection`, when configured.
    pub fn outlier_detector(&self) -> Option<&super::outlier_detection::OutlierDetector> {
        self.extras.as_ref()?.outlier_detector.as_ref()
    }

    /// The first of `health_checks`, when configured.
    pub fn health_checker(&self) -> Option<&super::health_checker::HealthChecker> {
        self.extras.as_ref()?.health_checker.as_ref()
    }

    /// `transport_socket` when it is TLS; `None` for raw TCP.
    pub fn transport_socket(&self) -> Option<&Arc<crate::tls::ClientContext>> {
        self.extras.as_ref()?.transport_socket.as_ref()
    }

    /// `auto_sni` of a TLS cluster: the header that names each request's upstream server
    /// (`None` within: the request's authority).
    pub fn auto_sni(&self) -> Option<&Option<http::HeaderName>> {
        self.extras.as_ref()?.auto_sni.as_ref()
    }

    /// See the field: where it stands among the active clusters.
    pub(crate) fn position(&self) -> u32 {
        self.position.load(Ordering::Relaxed)
    }

    pub(crate) fn set_position(&self, position: u32) {
        self.position.store(position, Ordering::Relaxed);
    }

    /// Whether CDS added it (`/clusters`' `added_via_api`).
    pub fn added_via_api(&self) -> bool {
        self.api.is_some()
    }

    /// The cluster `config` describes. A TLS context that cannot be built fails it (the
    /// error names the field): the start fails, or a CDS update is rejected. The context is
    /// built once.
    pub fn new(config: ClusterConfig, scope: &Scope) -> Result<Self, String> {
        let transport_socket = crate::tls::ClientContext::for_cluster(&config, scope)?;
        let traffic_stats = once_cell::race::OnceBox::new();
        if !scope.store().deferred_creation() {
            let _ = traffic_stats.set(Box::new(ClusterStats::new(scope)));
        }
        let circuit_breakers = CircuitBreakers::new(&config.circuit_breakers, &config.name, scope);
        let overprovisioning_factor = config
            .load_assignment
            .as_ref()
            .map(|a| a.overprovisioning_factor())
            .unwrap_or(legate_config::endpoint::ClusterLoadAssignment::DEFAULT_OVERPROVISIONING_FACTOR);
        let mut cluster = Cluster {
            name: Arc::from(config.name.as_str()),
            traffic_stats,
            endpoint_stats: ClusterEndpointStats::with_unchanged(scope),
            scope: scope.clone(),
            circuit_breakers,
            overprovisioning_factor: AtomicU32::new(overprovisioning_factor),
            position: AtomicU32::new(0),
            api: None,
            extras: ClusterExtras::new(&config, scope, transport_socket),
            priority_set: ArcSwap::new(PrioritySet::empty()),
            versions: AtomicU64::new(0),
            refresh_lock: std::sync::Mutex::new(()),
            info: ClusterInfo::new(config),
        };
        if cluster.info.discovery_type == DiscoveryType::Static {
            cluster.update_hosts(cluster.static_hosts());
            cluster.info.forget_static_endpoints();
        }
        Ok(cluster)
    }

    /// The hosts of a STATIC cluster, straight from its load assignment.
    fn static_hosts(&self) -> Vec<HostSharedPtr> {
        match &self.info.other_config().load_assignment {
            Some(assignment) => self.hosts_of(assignment, &[]),
            None => Vec::new(),
        }
    }

    /// The hosts of `assignment`; a host of `current` equal in address and every attribute is
    /// kept as it is (its health, its stats and, on each worker, its connection pools).
    fn hosts_of(
        &self,
        assignment: &legate_config::endpoint::ClusterLoadAssignment,
        current: &[HostSharedPtr],
    ) -> Vec<HostSharedPtr> {
        // Sized once (see `PrioritySet::new`).
        let mut hosts = Vec::with_capacity(assignment.endpoints.iter().map(|l| l.lb_endpoints.len()).sum());
        let slow_start = self.slow_start();
        for locality in &assignment.endpoints {
            let place =
                HostLocality::new(locality.locality.as_ref(), locality.priority, locality.load_balancing_weight);
            for endpoint in &locality.lb_endpoints {
                let Some(address) = endpoint.endpoint.as_ref().and_then(|e| e.address.socket()) else { continue };
                let Some(ip) = address.ip() else { continue };
                let addr = SocketAddr::new(ip, address.port_value as u16);
                let host = Host::new(
                    addr,
                    endpoint.endpoint.as_ref().map(|e| e.hostname.clone()).unwrap_or_default(),
                    endpoint.load_balancing_weight.unwrap_or(1),
                    place.clone(),
                    endpoint.health_status,
                )
                .with_health_check_config(endpoint.endpoint.as_ref().and_then(|e| e.health_check_config.as_ref()));
                if let Some(same) = current.iter().find(|h| h.same_endpoint(&host)) {
                    hosts.push(same.clone());
                    continue;
                }
                self.on_host_added(&host);
                hosts.push(HostSharedPtr::new(host.with_slow_start(slow_start)));
            }
        }
        hosts
    }

    /// Takes the hosts of a `ClusterLoadAssignment` from EDS. Unchanged hosts stay; requests in
    /// flight to a removed host finish on it.
    pub fn apply_load_assignment(&self, assignment: &legate_config::endpoint::ClusterLoadAssignment) {
        let _serial = self.refresh_lock.lock();
        self.overprovisioning_factor.store(assignment.overprovisioning_factor(), Ordering::Relaxed);
        let current: Vec<HostSharedPtr> = self.priority_set().all_hosts().cloned().collect();
        let hosts = self.hosts_of(assignment, &current);
        let changed =
            hosts.len() != current.len() || hosts.iter().zip(&current).any(|(a, b)| !HostSharedPtr::ptr_eq(a, b));
        if changed {
            self.publish(hosts, true);
        }
    }

    /// Starts with hosts like those of `previous` (a CDS update of this cluster that kept its
    /// EDS service): new host objects, since pools and breakers belong to one cluster object.
    pub fn copy_hosts_from(&self, previous: &Cluster) {
        let _serial = self.refresh_lock.lock();
        self.overprovisioning_factor.store(previous.overprovisioning_factor(), Ordering::Relaxed);
        let slow_start = self.slow_start();
        let hosts: Vec<HostSharedPtr> = previous
            .priority_set()
            .all_hosts()
            .map(|old| {
                let host = Host::new(
                    old.address(),
                    old.hostname().to_string(),
                    old.weight,
                    old.place().clone(),
                    old.health_status,
                )
                .with_health_check_of(old)
                .with_slow_start(slow_start);
                self.on_host_added(&host);
                HostSharedPtr::new(host)
            })
            .collect();
        self.publish(hosts, true);
    }

    /// The `policy.overprovisioning_factor` of the load assignment, in percent.
    pub fn overprovisioning_factor(&self) -> u32 {
        self.overprovisioning_factor.load(Ordering::Relaxed)
    }

    /// Whether the load balancer ramps new hosts up (`slow_start_config` of the policy in
    /// use), so that hosts must keep when they were added.
    pub fn slow_start(&self) -> bool {
        let config = self.info.other_config();
        match self.info.lb_policy {
            LbPolicy::RoundRobin => {
                config.round_robin_lb_config.as_ref().is_some_and(|c| c.slow_start_config.is_some())
            }
            LbPolicy::LeastRequest => {
                config.least_request_lb_config.as_ref().is_some_and(|c| c.slow_start_config.is_some())
            }
            _ => false,
        }
    }

    pub fn on_host_added(&self, host: &Host) {
        if self.health_checker().is_some() && !host.health_check().disabled {
            host.set_health_flag(super::host::health_flag::FAILED_ACTIVE_HC, true);
        }
    }

    /// Every endpoint of the load assignment with its locality and socket address.
    pub fn endpoints(
        &self,
    ) -> impl Iterator<
        Item = (
            &legate_config::endpoint::LocalityLbEndpoints,
            &legate_config::endpoint::LbEndpoint,
            &legate_config::core::SocketAddress,
        ),
    > {
        self.info.other_config().load_assignment.iter().flat_map(|a| {
            a.endpoints.iter().flat_map(|locality| {
                locality.lb_endpoints.iter().filter_map(move |ep| {
                    let address = ep.endpoint.as_ref()?.address.socket()?;
                    Some((locality, ep, address))
                })
            })
        })
    }

    /// The current hosts. Workers hold the returned snapshot for one decision.
    /// `cluster.<name>.upstream_*`: created with the cluster, or on its first use when the
    /// bootstrap defers stat creation (10,000 idle clusters then cost no traffic stats).
    pub fn stats(&self) -> &ClusterStats {
        self.traffic_stats.get_or_init(|| Box::new(ClusterStats::new(&self.scope)))
    }

    /// The traffic stats if they exist (reading them must not create them).
    pub fn existing_stats(&self) -> Option<&ClusterStats> {
        self.traffic_stats.get()
    }

    pub fn priority_set(&self) -> Arc<PrioritySet> {
        self.priority_set.load_full()
    }

    /// The current hosts' version, read without taking a reference to them.
    pub fn priority_set_version(&self) -> u64 {
        self.priority_set.load().version
    }

    /// The version of the latest hosts, a plain load: it is counted before they are published,
    /// so it may be ahead of [`Self::priority_set_version`] for a moment, never behind.
    pub fn hosts_version(&self) -> u64 {
        self.versions.load(Ordering::Acquire)
    }

    /// Publishes a new host list (main thread) and updates membership stats.
    pub fn update_hosts(&self, hosts: Vec<HostSharedPtr>) {
        self.publish(hosts, true);
    }

    /// Republishes the current hosts after a health flag changed (an outlier ejection or
    /// return, an active health check flip), so workers rebuild their load balancers without
    /// the hosts that left. Workers and the main thread both call it: the lock keeps a
    /// snapshot built from older flags from replacing a newer one.
    pub fn refresh_health(&self) {
        let _serial = self.refresh_lock.lock();
        let hosts: Vec<HostSharedPtr> = self.priority_set().all_hosts().cloned().collect();
        self.publish(hosts, false);
    }

    fn publish(&self, hosts: Vec<HostSharedPtr>, membership_changed: bool) {
        let version = self.versions.fetch_add(1, Ordering::AcqRel) + 1;
        let set = PrioritySet::new(hosts, version);
        let total: usize = set.host_sets.iter().map(|s| s.hosts.len()).sum();
        let healthy: usize = set.host_sets.iter().map(|s| s.healthy_hosts().len()).sum();
        let degraded: usize = set.host_sets.iter().map(|s| s.degraded_hosts().len()).sum();
        let excluded = set.all_hosts().filter(|h| h.excluded()).count();
        self.endpoint_stats.membership_total().set(total as u64);
        self.endpoint_stats.membership_healthy().set(healthy as u64);
        self.endpoint_stats.membership_degraded().set(degraded as u64);
        self.endpoint_stats.membership_excluded().set(excluded as u64);
        self.endpoint_stats.max_host_weight().set(set.all_hosts().map(|h| u64::from(h.weight)).max().unwrap_or(0));
        if membership_changed {
            self.endpoint_stats.membership_change().inc();
            super::pool::topology_changed();
        }
        let set = Arc::new(set);
        let previous = self.priority_set.swap(set.clone());
        if let Some(detector) = self.outlier_detector().filter(|_| membership_changed) {
            // Only ejected hosts are looked up in the new set: few, and the sets may be large.
            let removed = previous.all_hosts().filter(|h| {
                h.outlier_if_tracked().is_some_and(|o| o.ejected())
                    && !set.all_hosts().any(|n| HostSharedPtr::ptr_eq(n, h))
            });
            detector.on_hosts_removed(self, removed);
        }
    }

    /// An upstream response carried `x-envoy-immediate-health-check-fail`: with active health
    /// checking, Envoy takes the host out at once (failed and excluded) until it passes its
    /// checks again, counting `health_check.passive_failure`.
    pub fn on_immediate_health_check_fail(&self, host: &Host) {
        let Some(checker) = self.health_checker() else { return };
        if host.excluded() {
            return;
        }
        checker.stats.passive_failure.inc();
        host.set_health_flag(super::host::health_flag::FAILED_ACTIVE_HC, true);
        host.set_health_flag(super::host::health_flag::EXCLUDED_VIA_IMMEDIATE_HC_FAIL, true);
        self.refresh_health();
    }

    /// Reports one request's result to outlier detection, when configured.
    pub fn outlier_result(&self, host: &Host, result: super::outlier_detection::OutlierResult) {
        if let Some(detector) = self.outlier_detector() {
            detector.put_result(self, host, result);
        }
    }

    /// Socket options every upstream connection of this cluster gets: `TCP_NODELAY`, and
    /// `upstream_connection_options.tcp_keepalive` when set (so a peer that vanished without a
    /// FIN is noticed on an idle pooled connection).
    /// Opens a TCP connection to `address` as this cluster's upstream connections are
    /// opened: `upstream_bind_config` (source address, socket options before and after the
    /// bind), then, once connected, no Nagle and `tcp_keepalive`. The future owns what it needs.
    pub fn connect(
        &self,
        address: SocketAddr,
    ) -> impl std::future::Future<Output = std::io::Result<tokio::net::TcpStream>> + 'static {
        let bind = self.info.other_config().upstream_bind_config.clone();
        let keepalive = self.tcp_keepalive();
        async move {
            let socket = match address {
                SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
            };
            if let Some(bind) = &bind {
                use legate_config::socket_option::SocketState;
                crate::network::socket_options::apply(&socket, &bind.socket_options, SocketState::Prebind)?;
                if bind.freebind == Some(true) {
                    crate::network::socket_options::set_freebind(&socket, address)?;
                }
                if let Some(ip) = bind.source_address.as_ref().and_then(|s| s.ip().map(|ip| (ip, s.port_value))) {
                    socket.bind(SocketAddr::new(ip.0, ip.1 as u16))?;
                }
                crate::network::socket_options::apply(&socket, &bind.socket_options, SocketState::Bound)?;
            }
            let stream = socket.connect(address).await?;
            let _ = stream.set_nodelay(true);
            if let Some(params) = &keepalive {
                let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(params);
            }
            Ok(stream)
        }
    }

    fn tcp_keepalive(&self) -> Option<socket2::TcpKeepalive> {
        let keepalive = self.info.other_config().upstream_connection_options.as_ref()?.tcp_keepalive.as_ref()?;
        let mut params = socket2::TcpKeepalive::new();
        if let Some(time) = keepalive.keepalive_time {
            params = params.with_time(std::time::Duration::from_secs(u64::from(time)));
        }
        if let Some(interval) = keepalive.keepalive_interval {
            params = params.with_interval(std::time::Duration::from_secs(u64::from(interval)));
        }
        if let Some(probes) = keepalive.keepalive_probes {
            params = params.with_retries(probes);
        }
        Some(params)
    }

    pub fn connect_timeout(&self) -> std::time::Duration {
        self.info.connect_timeout()
    }

    pub fn per_connection_buffer_limit_bytes(&self) -> usize {
        self.info.per_connection_buffer_limit_bytes() as usize
    }
}

/// A cluster replaced (CDS) or removed takes its ejections out of `ejections_active`, as
/// Envoy's detector does when it is destroyed: the gauge is the cluster name's, and the next
/// cluster of that name starts with none ejected.
impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(detector) = self.outlier_detector() {
            let set = self.priority_set();
            detector.on_hosts_removed(
                self,
                set.all_hosts().filter(|h| h.outlier_if_tracked().is_some_and(|o| o.ejected())),
            );
        }
    }
}

#[cfg(test)]
mod socket_tests {
    use super::*;

    #[tokio::test]
    async fn upstream_sockets_get_the_configured_keepalive() {
        let store = legate_stats::Store::new(1);
        let config: ClusterConfig = legate_config::path::from_value(serde_json::json!({
            "name": "c",
            "upstream_connection_options": {
                "tcp_keepalive": { "keepalive_time": 42, "keepalive_interval": 7, "keepalive_probes": 3 }
            }
        }))
        .unwrap();
        let cluster = Cluster::new(config, &store.scope("cluster.c")).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = cluster.connect(listener.local_addr().unwrap()).await.unwrap();
        let socket = socket2::SockRef::from(&stream);
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), std::time::Duration::from_secs(42));
        assert_eq!(socket.tcp_keepalive_interval().unwrap(), std::time::Duration::from_secs(7));
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), 3);
        assert!(stream.nodelay().unwrap());
    }

    #[tokio::test]
    async fn upstream_bind_config_sets_the_source_address_and_tcp_user_timeout() {
        let store = legate_stats::Store::new(1);
        let config: ClusterConfig = legate_config::path::from_value(serde_json::json!({
            "name": "c",
            "upstream_bind_config": {
                "source_address": { "address": "127.0.0.2", "port_value": 0 },
                "socket_options": [{ "description": "TCP_USER_TIMEOUT", "level": 6, "name": 18, "int_value": 5000 }]
            }
        }))
        .unwrap();
        let cluster = Cluster::new(config, &store.scope("cluster.c")).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = cluster.connect(listener.local_addr().unwrap()).await.unwrap();
        assert_eq!(stream.local_addr().unwrap().ip(), std::net::IpAddr::from([127, 0, 0, 2]));
        let socket = socket2::SockRef::from(&stream);
        assert_eq!(socket.tcp_user_timeout().unwrap(), Some(std::time::Duration::from_secs(5)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::host::HostLocality;
    use legate_config::endpoint::HealthStatus;

    fn host(port: u16, priority: u32) -> HostSharedPtr {
        let place = HostLocality::new(None, priority, None);
        HostSharedPtr::new(Host::new(([127, 0, 0, 1], port).into(), String::new(), 1, place, HealthStatus::Healthy))
    }

    #[test]
    fn one_priority_is_kept_inline() {
        assert!(std::mem::size_of::<PrioritySet>() <= 40, "{}", std::mem::size_of::<PrioritySet>());
        let one = PrioritySet::new(vec![host(1, 0), host(2, 0)], 1);
        assert!(matches!(one.host_sets, HostSets::One(_)));
        assert_eq!(one.host_sets.len(), 1);
        assert_eq!(one.all_hosts().count(), 2);
        let two = PrioritySet::new(vec![host(1, 0), host(2, 1)], 1);
        assert_eq!(two.host_sets.iter().map(|s| s.hosts.len()).collect::<Vec<_>>(), [1, 1]);
        assert!(PrioritySet::new(Vec::new(), 1).host_sets.is_empty());
    }

    fn host_with(port: u16, priority: u32, health: HealthStatus) -> HostSharedPtr {
        let place = HostLocality::new(None, priority, None);
        HostSharedPtr::new(Host::new(([127, 0, 0, 1], port).into(), String::new(), 1, place, health))
    }

    #[test]
    fn host_sets_are_sized_once_and_split_by_health() {
        // All healthy, one priority: the hosts' own vector, no health lists.
        let hosts = vec![host(1, 0), host(2, 0), host(3, 0)];
        let address = hosts.as_ptr();
        let set = PrioritySet::new(hosts, 1);
        let only = &set.host_sets[0];
        assert!(std::ptr::eq(only.hosts.as_ptr(), address) && only.hosts.capacity() == 3);
        assert!(only.partial.is_none() && only.healthy_hosts().len() == 3 && only.degraded_hosts().is_empty());
        // Priorities 0 and 2 with unhealthy and degraded hosts: an empty set between them,
        // each set exactly as long as its hosts, the health lists in the hosts' order.
        let set = PrioritySet::new(
            vec![
                host_with(1, 2, HealthStatus::Degraded),
                host_with(2, 0, HealthStatus::Healthy),
                host_with(3, 2, HealthStatus::Healthy),
                host_with(4, 2, HealthStatus::Unhealthy),
                host_with(5, 2, HealthStatus::Healthy),
            ],
            2,
        );
        let ports = |hosts: &[HostSharedPtr]| hosts.iter().map(|h| h.address().port()).collect::<Vec<_>>();
        let sets: Vec<_> = set.host_sets.iter().map(|s| (ports(&s.hosts), s.hosts.capacity())).collect();
        assert_eq!(sets, [(vec![2], 1), (vec![], 0), (vec![1, 3, 4, 5], 4)]);
        assert!(set.host_sets[0].partial.is_none());
        assert_eq!(ports(set.host_sets[2].healthy_hosts()), [3, 5]);
        assert_eq!(ports(set.host_sets[2].degraded_hosts()), [1]);
    }
}
