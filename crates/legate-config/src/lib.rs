//! Envoy v3 bootstrap configuration, as legate reads it.
//!
//! The types here are legate's own, named after Envoy's protos (`config::cluster::Cluster` is
//! `envoy.config.cluster.v3.Cluster`) and deserialized from Envoy's YAML or JSON with the same
//! field names. Nothing is silently ignored: an unknown field, an unsupported extension or an
//! invalid value fails the load with the path of the field, e.g.
//! `static_resources.clusters[2].lb_policy: unknown variant "ROUND_ROBBIN"`.
//!
//! Loading is three steps: parse text into a JSON tree ([`load`]), normalise it the way proto3
//! JSON reads it ([`normalize`]: `null` means default, lowerCamelCase keys are accepted), and
//! deserialize it into [`bootstrap::Bootstrap`] with field paths ([`path`]); then
//! [`validate`] checks what spans several fields (cluster references, duplicate names) and the
//! proto rules serde cannot express (oneofs, ranges). [`lint`] reports timeouts that contradict
//! the request timeline, and describes each route's.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod bootstrap;
pub mod cluster;
pub mod config_source;
pub mod core;
pub mod dns;
pub mod duration;
pub mod endpoint;
pub mod extensions;
pub mod filters;
pub mod health_check;
pub mod lint;
pub mod listener;
pub mod load;
pub mod load_balancing_policy;
pub mod matcher;
pub mod merge;
pub mod normalize;
pub mod outlier_detection;
pub mod path;
mod proto_json;
pub mod protocol;
pub mod rbac;
pub mod resources;
pub mod route;
pub mod socket_option;
pub mod tls;
pub mod trace;
pub mod unsupported;
pub mod upstreams_http;
pub mod validate;

pub use bootstrap::Bootstrap;
pub use duration::Duration;
pub use load::{load_bootstrap, parse_bootstrap, ConfigError, LoadedBootstrap};
