//! `envoy.extensions.filters.network.*` configs.

pub mod connection_limit;
pub mod direct_response;
pub mod echo;
pub mod http_connection_manager;
pub mod rbac;
pub mod tcp_proxy;
