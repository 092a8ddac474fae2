//! Reaching a control plane: a host of the static cluster the config source names, connected
//! the way the proxy connects upstream (the cluster's socket options, `connect_timeout` and TLS
//! transport socket), as Envoy's `envoy_grpc` and REST subscriptions go through the cluster
//! manager.

use std::sync::Arc;

use legate_proxy::network::transport_socket::TransportSocket;
use legate_proxy::tls::client::Alpn;
use legate_proxy::upstream::cluster_manager::SharedClusters;
use legate_proxy::upstream::Cluster;

/// Connects to one host of `cluster_name`: a healthy one when there is one, chosen at random
/// so that a set of control-plane replicas shares the proxies. Returns the cluster too, for
/// its protocol options.
///
/// # Cancel safety
/// Dropping the future abandons the attempt.
pub(crate) async fn connect(
    clusters: &SharedClusters,
    cluster_name: &str,
    alpn: Alpn,
) -> Result<(Arc<Cluster>, TransportSocket), String> {
    let cluster = clusters
        .load()
        .get(cluster_name)
        .cloned()
        .ok_or_else(|| format!("unknown control plane cluster '{cluster_name}'"))?;
    let priority_set = cluster.priority_set();
    let hosts: Vec<_> = priority_set.all_hosts().collect();
    let healthy: Vec<_> = hosts.iter().filter(|h| h.healthy()).collect();
    let candidates = if healthy.is_empty() { hosts.iter().collect() } else { healthy };
    let host = candidates
        .get(fastrand::usize(0..candidates.len().max(1)))
        .ok_or_else(|| format!("control plane cluster '{cluster_name}' has no host"))?;
    let address = host.address();
    let connect = legate_proxy::tls::client::connect(&cluster, address, alpn, None);
    match tokio::time::timeout(cluster.connect_timeout(), connect).await {
        Ok(Ok(socket)) => Ok((cluster, socket)),
        Ok(Err(e)) => Err(format!("{cluster_name} ({address}): {}", e.transport_failure_reason())),
        Err(_) => Err(format!("{cluster_name} ({address}): connect timeout")),
    }
}

/// Whether a cluster of that name exists now: a config source naming an unknown cluster is
/// refused when subscribing, as Envoy refuses it at start-up.
pub(crate) fn check_cluster(clusters: &Arc<SharedClusters>, cluster_name: Option<&str>) -> Result<(), String> {
    let name = cluster_name.filter(|n| !n.is_empty()).ok_or("a control plane cluster name is required")?;
    if clusters.load().contains_key(name) {
        Ok(())
    } else {
        Err(format!("unknown control plane cluster '{name}' (it must be a static cluster)"))
    }
}
