//! `envoy.extensions.filters.http.fault.v3.HTTPFault` (`envoy.filters.http.fault`): injects
//! delays and aborts into a fraction of requests. Envoy page: "Fault injection".
//!
//! A `percentage` left out is the proto's default `FractionalPercent`, 0/100: the fault never
//! fires (Envoy's `FaultDelayConfig`/`FaultAbortConfig` take the field as is), so real configs
//! always set it.

use serde::Deserialize;

use crate::core::FractionalPercent;
use crate::duration::Duration;
use crate::extensions::Empty;
use crate::route::HeaderMatcher;
use crate::unsupported::Unsupported;
use crate::validate::Validator;

/// `HTTPFault`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpFault {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
    /// Only requests to this cluster are faulted (empty: all).
    #[serde(default)]
    pub upstream_cluster: String,
    /// Only requests matching all of these are faulted.
    #[serde(default)]
    pub headers: Vec<HeaderMatcher>,
    /// Only requests whose `x-envoy-downstream-service-node` is one of these (empty: all).
    #[serde(default)]
    pub downstream_nodes: Vec<String>,
    /// At most this many requests faulted at once (default: unlimited).
    pub max_active_faults: Option<u32>,
    pub response_rate_limit: Option<Unsupported>,
    /// Runtime keys; empty: Envoy's defaults (`fault.http.*`).
    #[serde(default)]
    pub delay_percent_runtime: String,
    #[serde(default)]
    pub abort_percent_runtime: String,
    #[serde(default)]
    pub delay_duration_runtime: String,
    #[serde(default)]
    pub abort_http_status_runtime: String,
    #[serde(default)]
    pub max_active_faults_runtime: String,
    #[serde(default)]
    pub response_rate_limit_percent_runtime: String,
    #[serde(default)]
    pub abort_grpc_status_runtime: String,
    /// Do not emit the per-downstream-cluster fault stats.
    #[serde(default)]
    pub disable_downstream_cluster_stats: bool,
    pub filter_metadata: Option<Unsupported>,
}

impl HttpFault {
    pub(crate) fn validate(&self, at: &str, v: &mut Validator) {
        if let Some(delay) = &self.delay {
            let d_at = format!("{at}.delay");
            v.oneof(
                &d_at,
                &[("fixed_delay", delay.fixed_delay.is_some()), ("header_delay", delay.header_delay.is_some())],
                true,
            );
            if delay.fixed_delay.is_some_and(|d| d.is_zero()) {
                v.error(&format!("{d_at}.fixed_delay"), "value must be greater than 0s");
            }
        }
        if let Some(abort) = &self.abort {
            let a_at = format!("{at}.abort");
            v.oneof(
                &a_at,
                &[
                    ("http_status", abort.http_status.is_some()),
                    ("grpc_status", abort.grpc_status.is_some()),
                    ("header_abort", abort.header_abort.is_some()),
                ],
                true,
            );
            if let Some(status) = abort.http_status {
                if !(200..600).contains(&status) {
                    v.error(
                        &format!("{a_at}.http_status"),
                        format!("value must be inside range [200, 600) (got {status})"),
                    );
                }
            }
        }
        for (i, h) in self.headers.iter().enumerate() {
            h.validate(&format!("{at}.headers[{i}]"), v);
        }
    }
}

/// `envoy.extensions.filters.common.fault.v3.FaultDelay`: one of `fixed_delay` or
/// `header_delay` (the `x-envoy-fault-delay-request` header gives the delay).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultDelay {
    pub fixed_delay: Option<Duration>,
    pub header_delay: Option<HeaderDelay>,
    /// Absent: 0 %, never delayed.
    pub percentage: Option<FractionalPercent>,
}

/// `FaultDelay.HeaderDelay`: no fields.
pub type HeaderDelay = Empty;

/// `HTTPFault`'s `FaultAbort`: one of `http_status`, `grpc_status` or `header_abort` (the
/// `x-envoy-fault-abort-request` header gives the status).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultAbort {
    /// 200..=599.
    pub http_status: Option<u32>,
    pub grpc_status: Option<u32>,
    pub header_abort: Option<HeaderAbort>,
    /// Absent: 0 %, never aborted.
    pub percentage: Option<FractionalPercent>,
}

/// `FaultAbort.HeaderAbort`: no fields.
pub type HeaderAbort = Empty;
