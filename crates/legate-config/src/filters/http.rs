//! `envoy.extensions.filters.http.*` configs.

pub mod buffer;
pub mod compressor;
pub mod cors;
pub mod csrf;
pub mod decompressor;
pub mod ext_authz;
pub mod fault;
pub mod health_check;
pub mod local_ratelimit;
pub mod rbac;
pub mod router;
