//! DNS for STRICT_DNS and LOGICAL_DNS clusters, on the main thread.
//!
//! STRICT_DNS: every address each endpoint name resolves to is a host. LOGICAL_DNS: one host
//! per cluster, connecting to the first address of the latest answer (Envoy's choice for
//! large web services whose answers rotate). Names are re-resolved every `dns_refresh_rate`
//! (or when the answer's TTL runs out, with `respect_dns_ttl`); a failed resolution keeps the
//! previous hosts, counts `update_failure` and retries after `dns_failure_refresh_rate`
//! (exponential back-off). Hosts whose address did not change are kept, with their stats and
//! connections.
//!
//! Resolvers: the system's `getaddrinfo` (which reads `/etc/hosts` too) unless the cluster
//! names its name servers (`typed_dns_resolver_config` with c-ares `resolvers`, or the
//! older `dns_resolvers`): then hickory's stub resolver asks them directly, uncached, and
//! reports the TTL.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use legate_config::cluster::{DiscoveryType, DnsLookupFamily};

use super::cluster::Cluster;
use super::host::{Host, HostLocality, HostSharedPtr};

/// Envoy's c-ares resolver gives up on a query after 5 s.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// One cluster's resolver.
pub struct DnsResolver {
    /// What a refresh counts.
    stats: super::stats::ClusterUpdateStats,
    family: DnsLookupFamily,
    /// `None`: the system resolver.
    servers: Option<TokioResolver>,
}

impl DnsResolver {
    pub fn new(cluster: &Cluster) -> Self {
        let stats = super::stats::ClusterUpdateStats::new(&cluster.scope);
        let family = cluster.info.other_config().dns_lookup_family;
        let config = cluster.info.other_config().dns_resolver();
        if config.resolvers.is_empty() {
            return DnsResolver { stats, family, servers: None };
        }
        let mut servers = ResolverConfig::from_name_servers(Vec::new());
        for addr in &config.resolvers {
            let mut connection = if config.use_tcp { ConnectionConfig::tcp() } else { ConnectionConfig::udp() };
            connection.port = addr.port();
            servers.add_name_server(NameServerConfig::new(addr.ip(), true, vec![connection]));
        }
        let mut builder = hickory_resolver::Resolver::builder_with_config(servers, TokioRuntimeProvider::default());
        let options = builder.options_mut();
        options.timeout = config.query_timeout;
        options.attempts = config.query_tries.saturating_sub(1) as usize;
        // Each refresh asks the servers, as c-ares (which has no cache) does in Envoy.
        options.cache_size = 0;
        options.use_hosts_file = ResolveHosts::Never;
        options.ip_strategy = match family {
            DnsLookupFamily::V4Only => LookupIpStrategy::Ipv4Only,
            DnsLookupFamily::V6Only => LookupIpStrategy::Ipv6Only,
            DnsLookupFamily::Auto => LookupIpStrategy::Ipv6thenIpv4,
            DnsLookupFamily::V4Preferred => LookupIpStrategy::Ipv4thenIpv6,
            DnsLookupFamily::All => LookupIpStrategy::Ipv4AndIpv6,
        };
        match builder.build() {
            Ok(resolver) => DnsResolver { stats, family, servers: Some(resolver) },
            Err(e) => {
                tracing::error!(cluster = %cluster.name, error = %e, "DNS resolver cannot be built; using the system's");
                DnsResolver { stats, family, servers: None }
            }
        }
    }

    /// The addresses of `name` and, from a name server, how long they are valid.
    async fn resolve(&self, name: &str, port: u16) -> std::io::Result<(Vec<SocketAddr>, Option<Duration>)> {
        let Some(resolver) = &self.servers else {
            return resolve_system(name, port, self.family).await.map(|addrs| (addrs, None));
        };
        let lookup = tokio::time::timeout(RESOLVE_TIMEOUT * 2, resolver.lookup_ip(name))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "DNS resolution timed out"))?
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let ttl = lookup.valid_until().saturating_duration_since(std::time::Instant::now());
        let addrs: Vec<SocketAddr> = lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect();
        if addrs.is_empty() {
            return Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("no address for {name}")));
        }
        Ok((addrs, Some(ttl)))
    }
}

/// Resolves the cluster's names once and publishes the result. Returns whether it succeeded
/// and the shortest TTL of the answers, when the resolver reports one.
pub async fn refresh(cluster: &Cluster, resolver: &DnsResolver) -> (bool, Option<Duration>) {
    resolver.stats.update_attempt.inc();
    let logical = cluster.info.discovery_type == DiscoveryType::LogicalDns;
    let current = cluster.priority_set();
    let existing: HashMap<(SocketAddr, u32), &HostSharedPtr> =
        current.all_hosts().map(|h| ((h.address(), h.priority()), h)).collect();
    let mut hosts: Vec<HostSharedPtr> = Vec::new();
    let mut min_ttl: Option<Duration> = None;
    for (locality, endpoint, address) in cluster.endpoints() {
        let port = address.port_value as u16;
        let resolved = match resolver.resolve(&address.address, port).await {
            Ok((addrs, ttl)) => {
                if let Some(ttl) = ttl {
                    min_ttl = Some(min_ttl.map_or(ttl, |m| m.min(ttl)));
                }
                addrs
            }
            Err(e) => {
                tracing::debug!(cluster = %cluster.name, name = %address.address, error = %e, "DNS resolution failed");
                resolver.stats.update_failure.inc();
                return (false, None);
            }
        };
        let chosen: Vec<SocketAddr> = if logical { resolved.into_iter().take(1).collect() } else { resolved };
        for addr in chosen {
            let host = match existing.get(&(addr, locality.priority)) {
                Some(h) => HostSharedPtr::clone(h),
                None => {
                    let host = Host::new(
                        addr,
                        address.address.clone(),
                        endpoint.load_balancing_weight.unwrap_or(1),
                        HostLocality::new(
                            locality.locality.as_ref(),
                            locality.priority,
                            locality.load_balancing_weight,
                        ),
                        endpoint.health_status,
                    )
                    .with_health_check_config(endpoint.endpoint.as_ref().and_then(|e| e.health_check_config.as_ref()))
                    .with_slow_start(cluster.slow_start());
                    cluster.on_host_added(&host);
                    HostSharedPtr::new(host)
                }
            };
            if !hosts.iter().any(|h| h.address() == host.address() && h.priority() == host.priority()) {
                hosts.push(host);
            }
        }
    }
    resolver.stats.update_success.inc();
    if hosts.is_empty() {
        resolver.stats.update_empty.inc();
    }
    let unchanged =
        hosts.len() == existing.len() && hosts.iter().all(|h| existing.contains_key(&(h.address(), h.priority())));
    if unchanged && current.version > 0 {
        resolver.stats.update_no_rebuild.inc();
    } else {
        cluster.update_hosts(hosts);
    }
    (true, min_ttl)
}

/// Re-resolves forever: every `dns_refresh_rate`, or when the TTL runs out with
/// `respect_dns_ttl`, or after the back-off of `dns_failure_refresh_rate` when resolution
/// failed. Runs on the main thread's runtime; `first` is the result of the start-up refresh.
pub async fn run(cluster: Arc<Cluster>, resolver: DnsResolver, first: (bool, Option<Duration>)) {
    let rate = cluster.info.other_config().dns_refresh_rate();
    let mut last = first;
    let mut failures = 0u32;
    loop {
        let wait = match last {
            (true, ttl) => {
                failures = 0;
                match ttl.filter(|t| cluster.info.other_config().respect_dns_ttl && !t.is_zero()) {
                    Some(ttl) => ttl,
                    None => rate,
                }
            }
            (false, _) => {
                failures = failures.saturating_add(1);
                match &cluster.info.other_config().dns_failure_refresh_rate {
                    // Envoy's jittered exponential back-off: up to base × 2^(failures - 1).
                    Some(backoff) => {
                        let ceiling = backoff.base().saturating_mul(1 << (failures - 1).min(16)).min(backoff.max());
                        let millis = ceiling.as_millis().max(1) as u64;
                        Duration::from_millis(fastrand::u64(millis / 2..=millis))
                    }
                    None => rate,
                }
            }
        };
        tokio::time::sleep(wait).await;
        last = refresh(&cluster, &resolver).await;
    }
}

async fn resolve_system(name: &str, port: u16, family: DnsLookupFamily) -> std::io::Result<Vec<SocketAddr>> {
    let lookup = tokio::net::lookup_host((name, port));
    let addrs: Vec<SocketAddr> = tokio::time::timeout(RESOLVE_TIMEOUT, lookup)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "DNS resolution timed out"))??
        .collect();
    let v4: Vec<SocketAddr> = addrs.iter().copied().filter(SocketAddr::is_ipv4).collect();
    let v6: Vec<SocketAddr> = addrs.iter().copied().filter(SocketAddr::is_ipv6).collect();
    let picked = match family {
        DnsLookupFamily::V4Only => v4,
        DnsLookupFamily::V6Only => v6,
        DnsLookupFamily::Auto => {
            if v6.is_empty() {
                v4
            } else {
                v6
            }
        }
        DnsLookupFamily::V4Preferred => {
            if v4.is_empty() {
                v6
            } else {
                v4
            }
        }
        DnsLookupFamily::All => addrs,
    };
    if picked.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no address of the requested family for {name}"),
        ));
    }
    Ok(picked)
}
