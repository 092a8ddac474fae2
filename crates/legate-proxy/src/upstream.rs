//! Upstream clusters: hosts, load balancing, circuit breakers, DNS (Envoy's
//! "Cluster manager" architecture page).
//!
//! The [`cluster_manager::ClusterManager`] lives on the main thread and publishes each
//! cluster's hosts as an immutable [`cluster::PrioritySet`] snapshot; workers read snapshots
//! through their [`cluster_manager::ThreadLocalClusterManager`] and keep their own load
//! balancer state. Only circuit-breaker counts, host health and stats are shared across workers.

pub mod circuit_breakers;
pub mod cluster;
pub mod cluster_info;
pub mod cluster_manager;
pub mod config_texts;
pub mod dns;
pub mod health_checker;
pub mod host;
pub mod load_balancer;
pub mod outlier_detection;
pub mod pool;
pub mod stats;
pub mod upstream_cx;

pub use cluster::{Cluster, PrioritySet};
pub use cluster_manager::{ClusterManager, ThreadLocalClusterManager};
pub use host::{Host, HostSharedPtr};
