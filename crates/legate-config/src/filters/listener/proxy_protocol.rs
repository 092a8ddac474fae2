//! `envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol`.

use serde::Deserialize;

use crate::unsupported::Unsupported;

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProxyProtocol {
    /// TLVs to dynamic metadata: legate has no dynamic metadata yet.
    pub rules: Option<Unsupported>,
    /// Accept a connection without a PROXY header (against the spec), default false.
    #[serde(default)]
    pub allow_requests_without_proxy_protocol: bool,
    pub pass_through_tlvs: Option<Unsupported>,
    /// PROXY versions refused (the connection is closed).
    #[serde(default)]
    pub disallowed_versions: Vec<ProxyProtocolVersion>,
    /// Stats go under `proxy_proto.<stat_prefix>.` (or `proxy_proto.`).
    #[serde(default)]
    pub stat_prefix: String,
}

/// `envoy.config.core.v3.ProxyProtocolConfig.Version`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum ProxyProtocolVersion {
    V1,
    V2,
}
