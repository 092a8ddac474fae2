//! Configs of filters, in modules named after Envoy's proto packages.

pub mod network;
