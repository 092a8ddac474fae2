//! The xDS client: subscriptions to listeners, routes, clusters, endpoints and secrets from a
//! config source, delivered to the server as the same JSON shape the YAML loader reads.
//!
//! A subscription is one resource type on one [`ConfigSource`](legate_config::config_source::ConfigSource):
//! a file (`path_config_source`), a REST or gRPC control plane (`api_config_source`) or the
//! aggregated stream (`ads`). Whoever subscribes gets a [`Watch`] and hands in
//! [`SubscriptionCallbacks`]; each update arrives as [`ConfigUpdate`] (resources added or
//! changed, names removed), and the callback's verdict becomes the ACK or the NACK. Everything
//! runs on the main thread (Envoy's `GrpcMux`, `WatchMap` and `SubscriptionFactory`).
//!
//! The transports, each driving a `WatchMap`:
//! - files: `path_subscription`;
//! - gRPC, state-of-the-world and delta, ADS or per type: `grpc_mux` over `grpc_stream` (hyper's
//!   HTTP/2 client through the control plane's static cluster, `cluster_connect`), reconnecting
//!   with `backoff`, its requests rate limited by `token_bucket` under `rate_limit_settings`;
//! - REST polling: `http_subscription`.
//!
//! Resources arrive as protobuf `Any`s; [`decode`] turns them into the YAML's JSON shape
//! through the descriptors of Envoy's API, so static and dynamic config share one parser.
#![forbid(unsafe_code)]

mod backoff;
pub mod client;
mod cluster_connect;
pub mod decode;
mod grpc_mux;
mod grpc_stream;
mod http_subscription;
mod node;
pub mod path_subscription;
pub mod resource;
pub mod stats;
pub mod subscription;
mod token_bucket;

pub use client::XdsClient;
pub use resource::{DecodedResource, ResourceType};
pub use stats::{ControlPlaneStats, SubscriptionStats};
pub use subscription::{ConfigUpdate, NameSet, SubscriptionCallbacks, UpdateFailure, Watch};

/// Called once per item of a large update (10,000 clusters, their 10,000 assignments): once
/// the main thread has worked for [`PACE_SLICE`] since it last did, it offers the CPU to the
/// workers. Applying an update is one long synchronous stretch on the main thread; on a machine
/// where it shares a core with a worker the scheduler would otherwise let it run for whole time
/// slices while requests wait.
pub fn pace() {
    thread_local! {
        static LAST: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
    }
    let now = std::time::Instant::now();
    match LAST.get() {
        Some(last) if now.duration_since(last) < PACE_SLICE => {}
        Some(_) => {
            std::thread::yield_now();
            LAST.set(Some(std::time::Instant::now()));
        }
        None => LAST.set(Some(now)),
    }
}

/// How long the main thread works on an update before it yields: well under a scheduler time
/// slice, so that a worker sharing its core waits at most about this long.
pub const PACE_SLICE: std::time::Duration = std::time::Duration::from_micros(250);
