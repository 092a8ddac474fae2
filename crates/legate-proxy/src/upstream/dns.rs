//! DNS for STRICT_DNS and LOGICAL_DNS clusters, on the main thread.
//!
//! STRICT_DNS: every address each endpoint name resolves to is a host. LOGICAL_DNS: one host
//! per cluster, connecting to the first address of the latest answer (Envoy's choice for
//! large web services whose answers rotate). Names are re-resolved every `dns_refresh_rate`;
//! a failed resolution keeps the previous hosts and counts `update_failure`. Hosts whose
//! address did not change are kept, with their stats and connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use legate_config::cluster::{DiscoveryType, DnsLookupFamily};

use super::cluster::Cluster;
use super::host::Host;

/// Envoy's c-ares resolver gives up on a query after 5 s.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves the cluster's names once and publishes the result. Returns whether it succeeded.
pub async fn refresh(cluster: &Cluster) -> bool {
    cluster.stats.update_attempt.inc();
    let family = cluster.config.dns_lookup_family;
    let logical = cluster.config.discovery_type == DiscoveryType::LogicalDns;
    let current = cluster.priority_set();
    let existing: HashMap<(SocketAddr, u32), &Arc<Host>> =
        current.all_hosts().map(|h| ((h.address, h.priority), h)).collect();
    let mut hosts: Vec<Arc<Host>> = Vec::new();
    for (locality, endpoint, address) in cluster.endpoints() {
        let port = address.port_value as u16;
        let resolved = match resolve(&address.address, port, family).await {
            Ok(addrs) => addrs,
            Err(e) => {
                tracing::debug!(cluster = %cluster.name, name = %address.address, error = %e, "DNS resolution failed");
                cluster.stats.update_failure.inc();
                return false;
            }
        };
        let chosen: Vec<SocketAddr> = if logical { resolved.into_iter().take(1).collect() } else { resolved };
        for addr in chosen {
            let host = match existing.get(&(addr, locality.priority)) {
                Some(h) => Arc::clone(h),
                None => {
                    let host = Host::new(
                        addr,
                        address.address.clone(),
                        endpoint.load_balancing_weight.unwrap_or(1),
                        locality.priority,
                        locality.locality.clone().unwrap_or_default(),
                        endpoint.health_status,
                    )
                    .with_locality_weight(locality.load_balancing_weight);
                    cluster.on_host_added(&host);
                    Arc::new(host)
                }
            };
            if !hosts.iter().any(|h| h.address == host.address && h.priority == host.priority) {
                hosts.push(host);
            }
        }
    }
    cluster.stats.update_success.inc();
    if hosts.is_empty() {
        cluster.stats.update_empty.inc();
    }
    let unchanged =
        hosts.len() == existing.len() && hosts.iter().all(|h| existing.contains_key(&(h.address, h.priority)));
    if unchanged && current.version > 0 {
        cluster.stats.update_no_rebuild.inc();
    } else {
        cluster.update_hosts(hosts);
    }
    true
}

/// Re-resolves forever, every `dns_refresh_rate`. Runs on the main thread's runtime.
pub async fn run(cluster: Arc<Cluster>) {
    let rate = cluster.config.dns_refresh_rate();
    loop {
        tokio::time::sleep(rate).await;
        refresh(&cluster).await;
    }
}

async fn resolve(name: &str, port: u16, family: DnsLookupFamily) -> std::io::Result<Vec<SocketAddr>> {
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
