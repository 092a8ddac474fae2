//! Listener filters (`envoy.filters.listener.*`): run on an accepted socket before a filter
//! chain is chosen, to learn what the chain match needs (SNI, ALPN, transport protocol).

pub mod tls_inspector;
