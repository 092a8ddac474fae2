//! `envoy.extensions.upstreams.http.v3.HttpProtocolOptions`: a cluster's HTTP settings, given
//! in its `typed_extension_protocol_options` under the key
//! `envoy.extensions.upstreams.http.v3.HttpProtocolOptions`. It replaces the deprecated
//! per-cluster fields (`http2_protocol_options`, `protocol_selection`, ...); when both are
//! given, this one wins (see `Cluster::http_protocol`).

use serde::Deserialize;

use crate::protocol::{
    Http1ProtocolOptions, Http2ProtocolOptions, HttpProtocolOptions as CommonHttpProtocolOptions,
    UpstreamHttpProtocolOptions,
};
use crate::unsupported::Unsupported;
use crate::validate::Validator;

/// `HttpProtocolOptions`: one of `explicit_http_config`, `use_downstream_protocol_config`
/// (`auto_config` is not supported yet) is required.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpProtocolOptions {
    pub common_http_protocol_options: Option<CommonHttpProtocolOptions>,
    pub upstream_http_protocol_options: Option<UpstreamHttpProtocolOptions>,
    pub explicit_http_config: Option<ExplicitHttpConfig>,
    pub use_downstream_protocol_config: Option<UseDownstreamHttpConfig>,
    pub auto_config: Option<Unsupported>,
    pub http_filters: Option<Unsupported>,
    pub header_validation_config: Option<Unsupported>,
}

impl HttpProtocolOptions {
    pub(crate) fn validate(&self, at: &str, v: &mut Validator) {
        v.oneof(
            at,
            &[
                ("explicit_http_config", self.explicit_http_config.is_some()),
                ("use_downstream_protocol_config", self.use_downstream_protocol_config.is_some()),
            ],
            true,
        );
        if let Some(common) = &self.common_http_protocol_options {
            common.validate(&format!("{at}.common_http_protocol_options"), v);
        }
        if let Some(explicit) = &self.explicit_http_config {
            let e_at = format!("{at}.explicit_http_config");
            v.oneof(
                &e_at,
                &[
                    ("http_protocol_options", explicit.http_protocol_options.is_some()),
                    ("http2_protocol_options", explicit.http2_protocol_options.is_some()),
                ],
                true,
            );
            if let Some(h2) = &explicit.http2_protocol_options {
                h2.validate(&format!("{e_at}.http2_protocol_options"), v);
            }
        }
        if let Some(downstream) = &self.use_downstream_protocol_config {
            if let Some(h2) = &downstream.http2_protocol_options {
                h2.validate(&format!("{at}.use_downstream_protocol_config.http2_protocol_options"), v);
            }
        }
    }
}

/// `HttpProtocolOptions.ExplicitHttpConfig`: always this protocol upstream (exactly one).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExplicitHttpConfig {
    pub http_protocol_options: Option<Http1ProtocolOptions>,
    pub http2_protocol_options: Option<Http2ProtocolOptions>,
    pub http3_protocol_options: Option<Unsupported>,
}

/// `HttpProtocolOptions.UseDownstreamHttpConfig`: the downstream request's protocol, with these
/// settings for each.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UseDownstreamHttpConfig {
    pub http_protocol_options: Option<Http1ProtocolOptions>,
    pub http2_protocol_options: Option<Http2ProtocolOptions>,
    pub http3_protocol_options: Option<Unsupported>,
}
