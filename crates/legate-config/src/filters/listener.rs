//! `envoy.extensions.filters.listener.*` configs.

pub mod http_inspector;
pub mod proxy_protocol;
pub mod tls_inspector;
