//! Configs of filters, in modules named after Envoy's proto packages.

pub mod http;
pub mod listener;
pub mod network;
