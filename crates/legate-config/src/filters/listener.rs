//! `envoy.extensions.filters.listener.*` configs.

pub mod tls_inspector;
